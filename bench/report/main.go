// Command report turns the JSON lines of `mycel bench` and the go-ds-crdt
// peer harness into the side-by-side tables and the propagation chart of
// docs/BENCHMARKS.md. It reads result files, pairs runs that share every
// parameter but the system, and writes:
//
//	-md FILE   markdown tables, one per workload (Mycel | go-ds-crdt | ratio)
//	-svg FILE  a chart of propagation delay p50/p99 per configuration
//
// With -doc FILE the markdown replaces the text between the markers
// "<!-- compare:begin -->" and "<!-- compare:end -->" in FILE.
//
// Usage: go run ./bench/report -doc docs/BENCHMARKS.md -svg docs/bench-propagation.svg bench/results/*.jsonl
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mycelnet/mycel/bench"
)

const (
	beginMarker = "<!-- compare:begin -->"
	endMarker   = "<!-- compare:end -->"
)

func main() {
	doc := flag.String("doc", "", "markdown file whose compare markers receive the tables")
	md := flag.String("md", "", "write the tables to this file")
	svg := flag.String("svg", "", "write the propagation chart to this file")
	flag.Parse()
	if err := run(flag.Args(), *doc, *md, *svg); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(files []string, doc, md, svg string) error {
	if len(files) == 0 {
		return errors.New("no result files given")
	}
	var results []*bench.Result
	for _, f := range files {
		rs, err := readResults(f)
		if err != nil {
			return err
		}
		results = append(results, rs...)
	}
	pairs := pairUp(results)
	if len(pairs) == 0 {
		return errors.New("no configuration was run on two systems")
	}
	var tables bytes.Buffer
	writeTables(&tables, pairs)
	if md != "" {
		if err := os.WriteFile(md, tables.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if doc != "" {
		if err := replaceBetweenMarkers(doc, tables.String()); err != nil {
			return err
		}
	}
	if svg != "" {
		var b bytes.Buffer
		writeChart(&b, pairs)
		if err := os.WriteFile(svg, b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func readResults(path string) ([]*bench.Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseResults(f, path)
}

// parseResults reads JSON lines of bench results; name labels errors.
func parseResults(r io.Reader, name string) ([]*bench.Result, error) {
	var out []*bench.Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var r bench.Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		if r.System == "" || r.Workload == "" {
			return nil, fmt.Errorf("%s:%d: not a bench result (no system or workload)", name, line)
		}
		out = append(out, &r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

// pair is one configuration measured on Mycel and on the peer system.
type pair struct {
	mycel, peer *bench.Result
}

// config identifies a run apart from its system and start time.
func config(r *bench.Result) string {
	return fmt.Sprintf("%s n=%d k=%d v=%d %s %s %s writers=%d rate=%g duration=%v", r.Workload, r.N, r.K, r.ValueSize, r.Store, r.Topology, r.Transport,
		r.Writers, r.Rate, time.Duration(r.Duration))
}

// pairUp matches each Mycel result (system "mycel" or a named variant such
// as "mycel/mesh-degree=2") with the other system's result of the same
// configuration; the last of repeated runs wins.
func pairUp(results []*bench.Result) []pair {
	mycel := map[string]*bench.Result{}
	peer := map[string]*bench.Result{}
	var order []string
	for _, r := range results {
		c := config(r)
		if strings.HasPrefix(r.System, "mycel") {
			if mycel[c] == nil && peer[c] == nil {
				order = append(order, c)
			}
			mycel[c] = r
		} else {
			if mycel[c] == nil && peer[c] == nil {
				order = append(order, c)
			}
			peer[c] = r
		}
	}
	var out []pair
	for _, c := range order {
		if mycel[c] != nil && peer[c] != nil {
			out = append(out, pair{mycel[c], peer[c]})
		}
	}
	slices.SortStableFunc(out, func(a, b pair) int {
		wa, wb := slices.Index(bench.Workloads, a.mycel.Workload), slices.Index(bench.Workloads, b.mycel.Workload)
		if wa != wb {
			return wa - wb
		}
		if a.mycel.N != b.mycel.N {
			return a.mycel.N - b.mycel.N
		}
		return a.mycel.K - b.mycel.K
	})
	return out
}

// figure is one column group of a workload's table.
type figure struct {
	name   string
	get    func(*bench.Result) float64
	format string
	// lowerIsBetter decides how the ratio column reads.
	lowerIsBetter bool
}

var (
	convergence = figure{"convergence s", func(r *bench.Result) float64 { return r.ConvergenceS }, "%.3f", true}
	putsPerS    = figure{"puts/s", func(r *bench.Result) float64 { return r.PutsPerS }, "%.0f", false}
	replicated  = figure{"replicated puts/s", func(r *bench.Result) float64 { return r.ReplicatedPerS }, "%.0f", false}
	propP50     = figure{"prop p50 ms", func(r *bench.Result) float64 { return r.PropP50MS }, "%.1f", true}
	propP99     = figure{"prop p99 ms", func(r *bench.Result) float64 { return r.PropP99MS }, "%.1f", true}
	bytesPerKey = figure{"bytes/key (× floor)", func(r *bench.Result) float64 { return r.BytesPerKey }, "%.0f", true}
	healS       = figure{"heal s", func(r *bench.Result) float64 { return r.HealS }, "%.3f", true}
	healBytes   = figure{"heal bytes/key", func(r *bench.Result) float64 { return float64(r.HealBytes) / float64(r.K) }, "%.0f", true}
	keysPerS    = figure{"keys/s", func(r *bench.Result) float64 { return r.KeysPerS }, "%.0f", false}
	achieved    = figure{"achieved puts/s", func(r *bench.Result) float64 { return r.AchievedPerS }, "%.0f", false}
	dupFactor   = figure{"Mycel's gossip copies per delivery", func(r *bench.Result) float64 { return r.DupFactor }, "%.2f", true}
	rss         = figure{"RSS MiB", func(r *bench.Result) float64 { return r.RSSPeakMiB }, "%.0f", true}
	cpu         = figure{"CPU s", func(r *bench.Result) float64 { return r.CPUS }, "%.2f", true}
)

var figuresOf = map[string][]figure{
	bench.SingleWriter:  {convergence, putsPerS, replicated, propP50, propP99, bytesPerKey, dupFactor, rss},
	bench.MultiWriter:   {convergence, putsPerS, replicated, propP50, propP99, bytesPerKey, dupFactor, rss},
	bench.PartitionHeal: {healS, healBytes, convergence, bytesPerKey, dupFactor, rss},
	bench.LateJoiner:    {convergence, keysPerS, bytesPerKey, rss},
	bench.Sustained:     {achieved, propP50, propP99, bytesPerKey, dupFactor, cpu, rss},
}

func writeTables(w io.Writer, pairs []pair) {
	peerName := pairs[0].peer.System
	for _, wl := range bench.Workloads {
		var rows []pair
		for _, p := range pairs {
			if p.mycel.Workload == wl {
				rows = append(rows, p)
			}
		}
		if len(rows) == 0 {
			continue
		}
		figs := figuresOf[wl]
		fmt.Fprintf(w, "\n**%s** — each cell: %s / %s (ratio: how many times better Mycel is; below 1, worse)\n\n", wl, rows[0].mycel.System, peerName)
		fmt.Fprint(w, "| n | k |")
		for _, f := range figs {
			fmt.Fprintf(w, " %s |", f.name)
		}
		fmt.Fprint(w, "\n| --- | --- |")
		for range figs {
			fmt.Fprint(w, " --- |")
		}
		fmt.Fprintln(w)
		for _, p := range rows {
			fmt.Fprintf(w, "| %d | %d |", p.mycel.N, p.mycel.K)
			for _, f := range figs {
				fmt.Fprintf(w, " %s |", cell(f, p))
			}
			fmt.Fprintln(w)
		}
	}
}

// cell shows both figures and how many times better Mycel's is; the
// duplicate factor, Mycel's alone (go-ds-crdt's data travels by bitswap,
// each block pulled once per replica: its bytes are the comparison).
func cell(f figure, p pair) string {
	a, b := f.get(p.mycel), f.get(p.peer)
	if f.name == dupFactor.name {
		if a == 0 {
			return "-"
		}
		return fmt.Sprintf(f.format, a)
	}
	s := fmt.Sprintf(f.format+" / "+f.format, a, b)
	if f.name == bytesPerKey.name && p.mycel.FloorBytesPerKey > 0 {
		s = fmt.Sprintf("%.0f (%.1f×) / %.0f (%.1f×)", a, a/p.mycel.FloorBytesPerKey, b, b/p.peer.FloorBytesPerKey)
	}
	if a > 0 && b > 0 {
		ratio := b / a
		if !f.lowerIsBetter {
			ratio = a / b
		}
		s += fmt.Sprintf(" (%s)", ratioText(ratio))
	}
	return s
}

func ratioText(r float64) string {
	switch {
	case r >= 10:
		return fmt.Sprintf("%.0f×", r)
	default:
		return fmt.Sprintf("%.2g×", r)
	}
}

// writeChart draws, for each single- and multi-writer configuration, the
// propagation delay p50 (bar) and p99 (tick) of both systems on a log
// scale, so a hundredfold gap and a few milliseconds both read.
func writeChart(w io.Writer, pairs []pair) {
	var rows []pair
	for _, p := range pairs {
		if (p.mycel.Workload == bench.SingleWriter || p.mycel.Workload == bench.MultiWriter) && p.mycel.PropP99MS > 0 && p.peer.PropP99MS > 0 {
			rows = append(rows, p)
		}
	}
	const (
		left, right, top, rowH, barH = 230.0, 30.0, 50.0, 44.0, 14.0
		width                        = 900.0
	)
	height := top + rowH*float64(len(rows)) + 60
	lo, hi := 1.0, 10.0
	for _, p := range rows {
		for _, v := range []float64{p.mycel.PropP50MS, p.peer.PropP50MS} {
			lo = math.Min(lo, v)
		}
		for _, v := range []float64{p.mycel.PropP99MS, p.peer.PropP99MS} {
			hi = math.Max(hi, v)
		}
	}
	lo = math.Pow(10, math.Floor(math.Log10(math.Max(lo, 0.01))))
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))
	x := func(v float64) float64 {
		v = math.Max(v, lo)
		return left + (width-left-right)*(math.Log10(v)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))
	}
	peerName := "peer"
	if len(rows) > 0 {
		peerName = rows[0].peer.System
	}
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(w, `<text x="%.0f" y="22" font-size="15" font-weight="bold">Propagation delay: acknowledgement → visible on every node (ms, log scale)</text>`+"\n", left-200)
	fmt.Fprintf(w, `<text x="%.0f" y="40" fill="#555">bar: p50, whisker to p99 — blue: Mycel, orange: %s</text>`+"\n", left-200, esc(peerName))
	for d := lo; d <= hi*1.0001; d *= 10 {
		fmt.Fprintf(w, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#ddd"/>`+"\n", x(d), top-5, x(d), height-45)
		fmt.Fprintf(w, `<text x="%.1f" y="%.0f" text-anchor="middle" fill="#555">%s</text>`+"\n", x(d), height-30, trimFloat(d))
	}
	for i, p := range rows {
		y := top + rowH*float64(i)
		fmt.Fprintf(w, `<text x="%.0f" y="%.1f" text-anchor="end">%s n=%d k=%d</text>`+"\n", left-10, y+rowH/2+4, esc(p.mycel.Workload), p.mycel.N, p.mycel.K)
		for j, r := range []*bench.Result{p.mycel, p.peer} {
			color := []string{"#1f77b4", "#ff7f0e"}[j]
			by := y + 6 + float64(j)*(barH+4)
			fmt.Fprintf(w, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.0f" fill="%s"/>`+"\n", left, by, x(r.PropP50MS)-left, barH, color)
			fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n", x(r.PropP50MS), by+barH/2, x(r.PropP99MS), by+barH/2, color)
			fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n", x(r.PropP99MS), by+2, x(r.PropP99MS), by+barH-2, color)
			fmt.Fprintf(w, `<text x="%.1f" y="%.1f" fill="#333">%s / %s</text>`+"\n", x(r.PropP99MS)+5, by+barH-3, trimFloat(r.PropP50MS), trimFloat(r.PropP99MS))
		}
	}
	fmt.Fprintln(w, "</svg>")
}

func trimFloat(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.1f", v), "0"), ".")
	default:
		return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
	}
}

var xmlEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")

func esc(s string) string { return xmlEscaper.Replace(s) }

// replaceBetweenMarkers puts text between the compare markers of path.
func replaceBetweenMarkers(path, text string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i := strings.Index(s, beginMarker)
	j := strings.Index(s, endMarker)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %s … %s section", path, beginMarker, endMarker)
	}
	s = s[:i+len(beginMarker)] + "\n" + text + "\n" + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}
