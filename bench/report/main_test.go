package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mycelnet/mycel/bench"
)

func result(sys, w string, n, k int, conv, p50, p99 float64) *bench.Result {
	return &bench.Result{
		System: sys, Params: bench.Params{Workload: w, N: n, K: k, ValueSize: 100, Store: "mem", Topology: "mesh", Transport: "tcp"},
		ConvergenceS: conv, PropP50MS: p50, PropP99MS: p99, BytesPerKey: 900, FloorBytesPerKey: 448, PutsPerS: 1000, RSSPeakMiB: 100,
	}
}

func writeLines(t *testing.T, path string, rs ...*bench.Result) {
	t.Helper()
	var b strings.Builder
	for _, r := range rs {
		line, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReportPairsAndWrites(t *testing.T) {
	dir := t.TempDir()
	writeLines(t, filepath.Join(dir, "m.jsonl"),
		result("mycel", bench.SingleWriter, 5, 1000, 0.05, 10, 20),
		result("mycel", bench.MultiWriter, 3, 1000, 0.04, 9, 30), // no peer run: left out
	)
	writeLines(t, filepath.Join(dir, "p.jsonl"), result("go-ds-crdt", bench.SingleWriter, 5, 1000, 5, 900, 4000))
	doc := filepath.Join(dir, "doc.md")
	os.WriteFile(doc, []byte("# B\n<!-- compare:begin -->\nold\n<!-- compare:end -->\ntail\n"), 0o644)
	svg := filepath.Join(dir, "c.svg")
	if err := run([]string{filepath.Join(dir, "m.jsonl"), filepath.Join(dir, "p.jsonl")}, doc, "", svg); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(doc)
	s := string(b)
	if strings.Contains(s, "old") || !strings.Contains(s, "tail") || !strings.Contains(s, "single-writer") || strings.Contains(s, "multi-writer") {
		t.Fatalf("doc:\n%s", s)
	}
	if !strings.Contains(s, "0.050 / 5.000 (100×)") {
		t.Errorf("convergence cell with ratio missing:\n%s", s)
	}
	c, _ := os.ReadFile(svg)
	if !strings.HasPrefix(string(c), "<svg") || !strings.Contains(string(c), "go-ds-crdt") {
		t.Errorf("chart:\n%s", c)
	}
}

func TestReportRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte("{\"system\":\"mycel\"}\n"), 0o644)
	if err := run([]string{bad}, "", "", ""); err == nil || !strings.Contains(err.Error(), "bad.jsonl:1") {
		t.Errorf("err = %v, want the file and line", err)
	}
	garbage := filepath.Join(dir, "g.jsonl")
	os.WriteFile(garbage, []byte("not json\n"), 0o644)
	if err := run([]string{garbage}, "", "", ""); err == nil {
		t.Error("garbage accepted")
	}
	if err := run(nil, "", "", ""); err == nil {
		t.Error("no files accepted")
	}
}

// FuzzParseResults: arbitrary bytes as a results file never panic, and
// what is accepted can be tabulated and charted.
func FuzzParseResults(f *testing.F) {
	line, _ := json.Marshal(result("mycel", bench.SingleWriter, 5, 1000, 0.05, 10, 20))
	peer, _ := json.Marshal(result("go-ds-crdt", bench.SingleWriter, 5, 1000, 5, 900, 4000))
	f.Add(append(append(line, '\n'), peer...))
	f.Add([]byte(`{"system":"x","workload":"single-writer","n":-3,"k":0,"prop_p99_ms":-1}`))
	f.Add([]byte("{\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := parseResults(strings.NewReader(string(data)), "fuzz")
		if err != nil {
			return
		}
		pairs := pairUp(rs)
		if len(pairs) == 0 {
			return
		}
		var b strings.Builder
		writeTables(&b, pairs)
		var c bytes.Buffer
		writeChart(&c, pairs)
	})
}
