package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	lpnet "github.com/libp2p/go-libp2p/core/network"
)

const testSeed = 20261125

// threeRegions is the bundled scenarios/three-regions.yaml: 9 nodes in
// us/eu/ap (40-150 ms apart, 1% loss), every node writing 20 puts/s in all
// for 40 s, us cut off from eu+ap from 10 s to 25 s.
func threeRegions(t *testing.T) Scenario {
	t.Helper()
	sc, err := LoadScenario("scenarios/three-regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

// TestThreeRegionsPartitionHeal: a 9-node, 3-region cluster written from
// every node through a 15 s split of us from eu+ap converges after the
// heal with every acknowledged write in place.
func TestThreeRegionsPartitionHeal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sc := threeRegions(t)
		rep, err := Run(t.Context(), sc, testSeed)
		if err != nil {
			t.Fatal(err)
		}
		js, _ := json.Marshal(rep)
		t.Logf("seed %d report: %s", testSeed, js)
		if !rep.Passed || !rep.Converged || rep.ConvergenceMS < 0 {
			t.Errorf("failed %v: %+v", rep.Failures, rep)
		}
		if rep.LostWrites != 0 {
			t.Errorf("%d lost writes: %+v", rep.LostWrites, rep.Lost)
		}
		if want := len(sc.Plan(testSeed).Ops); rep.Ops != want || rep.FailedOps != 0 {
			t.Errorf("ops %d acknowledged, %d failed; planned %d", rep.Ops, rep.FailedOps, want)
		}
		if rep.Unpropagated != 0 || rep.Propagation.Count != rep.Ops {
			t.Errorf("propagation: %+v, %d writes never everywhere", rep.Propagation, rep.Unpropagated)
		}
		// Writes made during the split reach the other side only after the
		// heal, up to 15 s later: the tail must show it; the median write
		// (outside the split) crosses at about the slowest link's latency.
		if rep.Propagation.Max < 1000 || rep.Propagation.P50 > 1000 {
			t.Errorf("propagation percentiles implausible: %+v", rep.Propagation)
		}
		if rep.Dropped.Partition == 0 || rep.Dropped.Loss == 0 || rep.Messages == 0 || rep.Bytes == 0 {
			t.Errorf("network counters: %d messages, %d bytes, dropped %+v", rep.Messages, rep.Bytes, rep.Dropped)
		}
		// The divergence series shows the split (several states during the
		// partition) and ends with one state; the partition is a window.
		peak := 0
		for _, smp := range rep.Divergence {
			peak = max(peak, smp.Distinct)
		}
		if n := len(rep.Divergence); n < 10 || peak < 2 || rep.Divergence[n-1].Distinct != 1 {
			t.Errorf("divergence series: %d samples, peak %d, last %+v", n, peak, rep.Divergence[max(n-1, 0)])
		}
		if len(rep.FaultWindows) != 1 || rep.FaultWindows[0].ToMS <= rep.FaultWindows[0].FromMS {
			t.Errorf("fault windows %+v", rep.FaultWindows)
		}
	})
}

// TestPartitionIsolation: while a blackhole partition stands, not one
// packet or byte crosses it (counted where packets are delivered), traffic
// inside each side goes on, the connections across stay open (the cut is
// silent), and writes stay on their side until the heal.
func TestPartitionIsolation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		sc := Scenario{
			Regions: []Region{{Name: "a", Nodes: 2}, {Name: "b", Nodes: 2}},
			Links:   []Link{{A: "a", B: "b", Latency: 20 * time.Millisecond}},
		}
		sc = sc.withDefaults()
		c, err := openCluster(ctx, &sc, testSeed)
		if err != nil {
			t.Fatal(err)
		}
		defer c.close()
		if err := sleep(ctx, sc.Settle); err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, 0, "before", "v")
		waitEqual(t, c, 10*time.Second)

		c.apply(Fault{Kind: Partition, Groups: [][]string{{"a"}, {"b"}}})
		// Packets already past the cut when it fell still land: wait for
		// them (well over the 20 ms link), then nothing more may.
		if err := sleep(ctx, time.Second); err != nil {
			t.Fatal(err)
		}
		abP, abB := c.nw.crossing(0, 1)
		baP, baB := c.nw.crossing(1, 0)
		aaP, _ := c.nw.crossing(0, 0)
		bbP, _ := c.nw.crossing(1, 1)
		cut := c.nw.droppedCut.Load()

		for i := range 20 {
			mustPut(t, c, 0, fmt.Sprintf("a%d", i), "v")
			mustPut(t, c, 2, fmt.Sprintf("b%d", i), "v")
			if err := sleep(ctx, 500*time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}

		if p, b := c.nw.crossing(0, 1); p != abP || b != abB {
			t.Errorf("a→b across the cut: %d packets, %d bytes", p-abP, b-abB)
		}
		if p, b := c.nw.crossing(1, 0); p != baP || b != baB {
			t.Errorf("b→a across the cut: %d packets, %d bytes", p-baP, b-baB)
		}
		if p, _ := c.nw.crossing(0, 0); p == aaP {
			t.Error("no traffic inside region a during the partition")
		}
		if p, _ := c.nw.crossing(1, 1); p == bbP {
			t.Error("no traffic inside region b during the partition")
		}
		if c.nw.droppedCut.Load() == cut {
			t.Error("the partition dropped nothing: no traffic tried to cross")
		}
		if got := c.nodes[0].Host().Network().Connectedness(c.nodes[2].ID()); got != lpnet.Connected {
			t.Errorf("the blackhole closed the connection across it: %v", got)
		}
		// Each side has its own writes and none of the other's.
		for n, own := range []string{"a", "a", "b", "b"} {
			keys := strings.Join(c.spaces[n].Keys("", "", 0), " ")
			other := map[string]string{"a": "b", "b": "a"}[own]
			if !strings.Contains(keys, own+"19") || strings.Contains(keys, other+"0") {
				t.Errorf("node %d in region %s holds: %s", n, own, keys)
			}
		}

		c.apply(Fault{Kind: Heal})
		waitEqual(t, c, 30*time.Second)
		if _, k := c.spaces[3].Digest(); k != 41 {
			t.Errorf("after the heal node 3 holds %d keys, want 41", k)
		}
		if err := c.close(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestCheckersCatchNoReplication: with the gossip fast path off and
// background sync once an hour, writes made after the nodes connect never
// spread; the run must be reported as not converged, with lost writes and
// unpropagated writes.
func TestCheckersCatchNoReplication(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sc := Scenario{
			Name:           "no-replication",
			Regions:        []Region{{Name: "a", Nodes: 2}, {Name: "b", Nodes: 2}},
			Links:          []Link{{A: "a", B: "b", Latency: 30 * time.Millisecond}},
			Workload:       Workload{Rate: 10, Duration: 5 * time.Second, Keys: 3},
			DisablePublish: true,
			SyncInterval:   time.Hour,
			Expect:         Expect{ConvergeWithin: 5 * time.Second},
		}
		rep, err := Run(t.Context(), sc, testSeed)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Converged || rep.ConvergenceMS != -1 {
			t.Errorf("reported converged: %+v", rep)
		}
		if rep.LostWrites == 0 || len(rep.Lost) == 0 || rep.Lost[0].Reason != "missing" {
			t.Errorf("no lost writes reported: %d %+v", rep.LostWrites, rep.Lost)
		}
		if rep.Unpropagated == 0 {
			t.Errorf("every write reported as propagated: %+v", rep.Propagation)
		}
		if rep.Passed || len(rep.Failures) != 3 || !strings.HasPrefix(rep.Failures[0], "not converged within 5s") ||
			!strings.Contains(rep.Failures[1], "lost writes") || !strings.Contains(rep.Failures[2], "never reached") {
			t.Errorf("failures: %q", rep.Failures)
		}
	})
}

// TestSamePlanForSameSeed: the seed alone decides the workload and the
// fault schedule.
func TestSamePlanForSameSeed(t *testing.T) {
	sc := threeRegions(t)
	sc.Faults = []Fault{sc.Faults[1], sc.Faults[0]} // out of order on purpose
	a, b := sc.Plan(7), sc.Plan(7)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, different plans")
	}
	if len(a.Ops) != 800 {
		t.Fatalf("%d ops planned, want 20/s × 40 s", len(a.Ops))
	}
	if a.Faults[0].Kind != Partition || a.Faults[1].Kind != Heal {
		t.Fatalf("faults not in time order: %+v", a.Faults)
	}
	if reflect.DeepEqual(a.Ops, sc.Plan(8).Ops) {
		t.Fatal("seeds 7 and 8 planned the same workload")
	}
	writer := make(map[string]int)
	for _, op := range a.Ops {
		if w, ok := writer[op.Key]; ok && w != op.Node {
			t.Fatalf("key %s written by nodes %d and %d", op.Key, w, op.Node)
		}
		writer[op.Key] = op.Node
		if i, ok := writeIndex(op.Key, []byte(op.Value)); !ok || i != op.Index {
			t.Fatalf("value %q does not carry index %d", op.Value, op.Index)
		}
	}
}

func TestValidate(t *testing.T) {
	base := func() Scenario { return threeRegions(t) }
	cases := map[string]func(*Scenario){
		"no regions":      func(s *Scenario) { s.Regions = nil },
		"missing link":    func(s *Scenario) { s.Links = s.Links[:2] },
		"unknown region":  func(s *Scenario) { s.Faults[0].Groups = [][]string{{"us"}, {"mars"}} },
		"overlap":         func(s *Scenario) { s.Faults[0].Groups = [][]string{{"us", "eu"}, {"eu"}} },
		"negative rate":   func(s *Scenario) { s.Workload.Rate = -1 },
		"loss above one":  func(s *Scenario) { s.Links[0].Loss = 2 },
		"unknown fault":   func(s *Scenario) { s.Faults[0].Kind = "meteor" },
		"unknown writers": func(s *Scenario) { s.Workload.Writers = []string{"mars"} },
		"negative budget": func(s *Scenario) { s.Expect.LostWrites = -1 },
	}
	for name, change := range cases {
		sc := base()
		change(&sc)
		if err := sc.Validate(); !errors.Is(err, ErrScenario) {
			t.Errorf("%s: %v", name, err)
		}
	}
	sc := base()
	if err := sc.Validate(); err != nil {
		t.Fatal(err)
	}
}

func mustPut(t *testing.T, c *cluster, n int, key, val string) {
	t.Helper()
	if err := c.spaces[n].Put(context.Background(), key, []byte(val)); err != nil {
		t.Fatal(err)
	}
}

// waitEqual polls (in the bubble's virtual time) until every digest is
// equal, or fails.
func waitEqual(t *testing.T, c *cluster, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !c.digestsEqual() {
		if time.Now().After(deadline) {
			t.Fatalf("digests not equal after %v", limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLongPartitionReconnects: a cut longer than QUIC's 30 s idle timeout
// closes the connections across it; after the heal the nodes redial (the
// bootstrap backoff) and sync repairs what gossip missed.
func TestLongPartitionReconnects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		sc := Scenario{
			Regions: []Region{{Name: "a", Nodes: 2}, {Name: "b", Nodes: 2}},
			Links:   []Link{{A: "a", B: "b", Latency: 50 * time.Millisecond}},
		}
		sc = sc.withDefaults()
		c, err := openCluster(ctx, &sc, testSeed)
		if err != nil {
			t.Fatal(err)
		}
		defer c.close()
		c.apply(Fault{Kind: Partition, Groups: [][]string{{"a"}, {"b"}}})
		for i := range 10 {
			mustPut(t, c, 1, fmt.Sprintf("a%d", i), "v")
			mustPut(t, c, 3, fmt.Sprintf("b%d", i), "v")
			if err := sleep(ctx, 5*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		if got := c.nodes[2].Host().Network().Connectedness(c.nodes[0].ID()); got == lpnet.Connected {
			t.Fatalf("still connected across a 50 s blackhole")
		}
		c.apply(Fault{Kind: Heal})
		waitEqual(t, c, 2*time.Minute)
		if _, k := c.spaces[0].Digest(); k != 20 {
			t.Fatalf("node 0 holds %d keys after the heal, want 20", k)
		}
		if err := c.close(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestRealTimeRun: Run also works in real time (as `mycel sim run` uses
// it): a 3-node, 2-second run with a 1-second cut converges with nothing
// lost, and leaves no goroutine behind (TestMain).
func TestRealTimeRun(t *testing.T) {
	if testing.Short() {
		t.Skip("3 s of wall time")
	}
	sc := Scenario{
		Regions:  []Region{{Name: "a", Nodes: 2}, {Name: "b", Nodes: 1}},
		Links:    []Link{{A: "a", B: "b", Latency: 20 * time.Millisecond}},
		Workload: Workload{Rate: 20, Duration: 2 * time.Second, Keys: 3},
		Settle:   time.Second,
		Faults: []Fault{
			{At: 500 * time.Millisecond, Kind: Partition, Groups: [][]string{{"a"}, {"b"}}},
			{At: 1500 * time.Millisecond, Kind: Heal},
		},
	}
	rep, err := Run(t.Context(), sc, testSeed)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Passed || !rep.Converged || rep.LostWrites != 0 || rep.Ops != 40 || rep.Dropped.Partition == 0 {
		t.Fatalf("report: %+v", rep)
	}
}

// TestJudgeBudgets: a run within every budget passes; each missed budget
// is named.
func TestJudgeBudgets(t *testing.T) {
	ok := Report{Converged: true, Propagation: Percentiles{P99: 700}}
	if f := judge(&ok, Expect{P99PropagationMS: 800}); len(f) != 0 {
		t.Fatalf("within budgets, failed: %q", f)
	}
	slow := ok
	slow.Propagation.P99 = 900
	if f := judge(&slow, Expect{P99PropagationMS: 800}); len(f) != 1 || f[0] != "p99 propagation 900 ms (budget 800 ms)" {
		t.Fatalf("slow run: %q", f)
	}
	lossy := ok
	lossy.LostWrites = 2
	if f := judge(&lossy, Expect{LostWrites: 1}); len(f) != 1 || f[0] != "2 lost writes (budget 1)" {
		t.Fatalf("lossy run: %q", f)
	}
}

func TestReportSVG(t *testing.T) {
	r := &Report{Scenario: "x<y", Seed: 1, Nodes: 3, Passed: true, Converged: true, ConvergenceMS: 12,
		Divergence:   []Sample{{0, 1}, {100, 2}, {200, 3}, {300, 1}},
		FaultWindows: []FaultWindow{{Kind: "partition", FromMS: 50, ToMS: 250}}}
	var b strings.Builder
	if err := WriteSVG(&b, r); err != nil {
		t.Fatal(err)
	}
	svg := b.String()
	for _, want := range []string{"<svg", `class="fault"`, "<polyline", "x&lt;y", "converged 12 ms"} {
		if !strings.Contains(svg, want) {
			t.Fatalf("svg lacks %q:\n%s", want, svg)
		}
	}
}

// TestBundledScenarios runs every scenario in scenarios/ under virtual time
// (except the 1000-node and soak ones, by name) and requires its budgets.
func TestBundledScenarios(t *testing.T) {
	files, err := filepath.Glob("scenarios/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bundled scenarios: %v", err)
	}
	for _, f := range files {
		if strings.Contains(f, "1000") || strings.Contains(f, "soak") {
			continue
		}
		if filepath.Base(f) == "three-regions.yaml" {
			continue // TestThreeRegionsPartitionHeal runs it with closer checks
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sc, err := LoadScenario(f)
				if err != nil {
					t.Fatal(err)
				}
				rep, err := Run(t.Context(), sc, testSeed)
				if err != nil {
					t.Fatal(err)
				}
				if !rep.Passed || rep.LostWrites != 0 || !rep.Converged {
					js, _ := json.Marshal(rep)
					t.Fatalf("%s failed %v: %s", f, rep.Failures, js)
				}
				t.Logf("%s: converged %.0f ms after quiet, p99 %.0f ms, %d ops", f, rep.ConvergenceMS, rep.Propagation.P99, rep.Ops)
			})
		})
	}
}
