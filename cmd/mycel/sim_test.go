package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/mycelnet/mycel/sim"
)

// readReport reads the JSON report at path into rep and returns its bytes.
func readReport(t *testing.T, path string, rep any) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, rep); err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestSimRun(t *testing.T) {
	out := filepath.Join(t.TempDir(), "report.json")
	svg := filepath.Join(t.TempDir(), "divergence.svg")
	cmd := exec.Command(binary, "sim", "run", "testdata/tiny.yaml", "--seed", "3", "--json", out, "--svg", svg)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mycel sim run: %v\n%s", err, b)
	}
	if !strings.Contains(string(b), "seed 3") || !strings.Contains(string(b), "budgets      passed") || !strings.Contains(string(b), "mesh         1 part at the end") {
		t.Fatalf("output:\n%s", b)
	}
	var rep map[string]any
	raw := readReport(t, out, &rep)
	for _, field := range []string{"converged", "convergence_ms", "lost_writes", "ops", "messages", "bytes", "propagation_ms"} {
		if _, ok := rep[field]; !ok {
			t.Fatalf("report lacks %q", field)
		}
	}
	cost, _ := rep["cost"].(map[string]any)
	if cost == nil || cost["gossip_data"] == nil || cost["gossip_control"] == nil || rep["heals"] == nil || rep["propagation_by_pair"] == nil || rep["regions"] == nil {
		t.Fatalf("report lacks the detail (cost split, heals, pairs, regions): %s", raw)
	}
	if mesh, _ := rep["mesh"].(map[string]any); mesh == nil || mesh["parts"] != 1.0 || mesh["largest"] != rep["nodes"] {
		t.Fatalf("report's mesh: %v (nodes %v)", rep["mesh"], rep["nodes"])
	}
	if rep["converged"] != true || rep["lost_writes"].(float64) != 0 || rep["ops"].(float64) == 0 {
		t.Fatalf("report: %s", raw)
	}
	chart, err := os.ReadFile(svg)
	if err != nil || !strings.HasPrefix(string(chart), "<svg") || !strings.Contains(string(chart), "<polyline") || !strings.Contains(string(chart), `class="fault"`) {
		t.Fatalf("svg: %v\n%.300s", err, chart)
	}
}

// TestSimRunMissedBudgetExitsOne: a run that misses an expect budget
// still writes its report, names the budget it missed, and exits 1 (bad
// input exits 2, a passing run 0).
func TestSimRunMissedBudgetExitsOne(t *testing.T) {
	out := filepath.Join(t.TempDir(), "report.json")
	b, err := exec.Command(binary, "sim", "run", "testdata/missed-budget.yaml", "--json", out).CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("mycel sim run: %v, want exit 1\n%s", err, b)
	}
	if !strings.Contains(string(b), "budgets      FAILED") || !strings.Contains(string(b), "p99 propagation") {
		t.Fatalf("output does not say which budget failed:\n%s", b)
	}
	var rep struct {
		Passed    bool     `json:"passed"`
		Converged bool     `json:"converged"`
		Failures  []string `json:"failures"`
	}
	readReport(t, out, &rep)
	if rep.Passed || !rep.Converged || len(rep.Failures) != 1 {
		t.Fatalf("report: passed %v, converged %v, failures %q", rep.Passed, rep.Converged, rep.Failures)
	}
}

func TestSimRunRefusesBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"sim", "run", "testdata/bad.yaml"}, "line 5"},
		{[]string{"sim", "run", "testdata/missing.yaml"}, "missing.yaml"},
		{[]string{"sim", "run", "testdata/tiny.yaml", "--seed", "x"}, "invalid argument"},
		{[]string{"sim", "run"}, "arg"},
		{[]string{"sim", "run", "testdata/tiny.yaml", "--backend", "docker"}, "simnet or netns"},
		{[]string{"sim", "run", "testdata/tiny.yaml", "--json", "no-such-dir/report.json"}, "--json: open no-such-dir/report.json"},
		{[]string{"sim", "run", "testdata/tiny.yaml", "--svg", "testdata"}, "--svg: open testdata: is a directory"},
		{[]string{"sim", "run", "../../sim/scenarios/three-regions.yaml", "--backend", "netns"}, "link us-eu: latency, jitter or loss"},
	} {
		b, err := exec.Command(binary, c.args...).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 || !strings.Contains(string(b), c.msg) {
			t.Fatalf("mycel %v: %v, output %q; want exit 2 mentioning %q", c.args, err, b, c.msg)
		}
	}
}

// TestSimNetns runs the bundled netns scenario on real daemon processes in
// network namespaces: a blackhole split, a node crashed without its disk
// and restarted, an isolation with prohibit routes. It needs root and
// iproute2 (CI has both) and leaves no namespace behind.
func TestSimNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	out := filepath.Join(t.TempDir(), "report.json")
	cmd := exec.Command(binary, "sim", "run", "../../sim/scenarios/netns-split.yaml", "--backend", "netns", "--json", out)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mycel sim run --backend netns: %v\n%s", err, b)
	}
	var rep struct {
		Backend    string `json:"backend"`
		Converged  bool   `json:"converged"`
		LostWrites int    `json:"lost_writes"`
		Ops        int    `json:"ops"`
		FailedOps  int    `json:"failed_ops"`
		Messages   int64  `json:"messages"`
		Divergence []struct {
			TMS      float64 `json:"t_ms"`
			Distinct int     `json:"distinct"`
		} `json:"divergence"`
		Propagation struct{ P50 float64 } `json:"propagation_ms"`
		CrossedCut  *int64                `json:"crossed_cut"`
		Heals       []struct {
			RecoveredMS float64 `json:"recovered_ms"`
			Nodes       struct {
				Max   float64 `json:"max"`
				Count int     `json:"count"`
			} `json:"nodes_ms"`
			Slowest string `json:"slowest"`
		} `json:"heals"`
	}
	raw := readReport(t, out, &rep)
	// No op refused: every route the workload uses (maps too) answers.
	if rep.Backend != "netns" || !rep.Converged || rep.LostWrites != 0 || rep.Ops < 500 || rep.FailedOps != 0 || rep.Messages == 0 || rep.Propagation.P50 <= 0 || rep.CrossedCut == nil || *rep.CrossedCut != 0 {
		t.Fatalf("report: %s", raw)
	}
	// The split (3 s to 8 s) really cut the regions apart.
	split := false
	for _, s := range rep.Divergence {
		if s.TMS > 3500 && s.TMS < 8000 && s.Distinct >= 2 {
			split = true
		}
	}
	if !split {
		t.Fatalf("the replicas never diverged during the split: %s", raw)
	}
	// Each heal and restart reports every node's own recovery, and which
	// node was last.
	if len(rep.Heals) == 0 {
		t.Fatalf("no heals reported: %s", raw)
	}
	for _, h := range rep.Heals {
		if h.Nodes.Count == 0 || (h.RecoveredMS > 0 && (h.Slowest == "" || h.Nodes.Max != h.RecoveredMS)) {
			t.Fatalf("heal %+v: want each node's recovery, and the slowest named", h)
		}
	}
	left, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(left), "mycelsim-") {
		t.Fatalf("namespaces left behind:\n%s", left)
	}
}

// The summary says when the host fell behind real time, and only then.
func TestSimSummaryWarnsWhenBehind(t *testing.T) {
	for _, c := range []struct {
		lag  float64
		warn bool
	}{{9, false}, {overloadLagMS - 1, false}, {overloadLagMS, true}, {5100, true}} {
		var out strings.Builder
		cmd := &cobra.Command{}
		cmd.SetOut(&out)
		r := &sim.Report{Backend: "simnet", Passed: true, MaxLagMS: c.lag}
		r.Cost.GossipDroppedRPCs = 421881
		printReport(cmd, r)
		got := strings.Contains(out.String(), "warning")
		if got != c.warn {
			t.Errorf("lag %.0f ms: warning %v, want %v:\n%s", c.lag, got, c.warn, out.String())
		}
		if c.warn && (!strings.Contains(out.String(), fmt.Sprintf("%.0f ms late", c.lag)) || !strings.Contains(out.String(), "421881 RPCs")) {
			t.Errorf("lag %.0f ms: the warning lacks the figures:\n%s", c.lag, out.String())
		}
	}
	// The netns backend counts no gossipsub drops: the warning names none.
	var out strings.Builder
	cmd := &cobra.Command{}
	cmd.SetOut(&out)
	printReport(cmd, &sim.Report{Backend: "netns", Passed: true, MaxLagMS: 1200})
	if !strings.Contains(out.String(), "warning") || !strings.Contains(out.String(), "1200 ms late") || strings.Contains(out.String(), "RPCs") {
		t.Errorf("netns: %s", out.String())
	}
}
