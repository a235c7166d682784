package sim

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestNetnsExpectationCatchesLoss: the netns backend's checker finds each
// kind of damage in a node's final state, and accepts every outcome the
// ops allow (unknown ops may or may not have applied; a delete or remove
// excuses an absence).
func TestNetnsExpectationCatchesLoss(t *testing.T) {
	at := time.Unix(0, 0)
	ack := func(op Op, s ackState) netnsAck { return netnsAck{op: op, state: s, at: at} }
	acks := []netnsAck{
		ack(Op{Kind: OpPut, Key: "r/1", Value: "v1"}, acked),
		ack(Op{Kind: OpPut, Key: "r/1", Value: "v2"}, unknown),
		ack(Op{Kind: OpPut, Key: "r/2", Value: "w"}, acked),
		ack(Op{Kind: OpDelete, Key: "r/2"}, unknown),
		ack(Op{Kind: OpPut, Key: "r/3", Value: "never"}, refused),
		ack(Op{Kind: OpCounterAdd, Key: "c/1", Amount: 5}, acked),
		ack(Op{Kind: OpCounterAdd, Key: "c/1", Amount: 2}, unknown),
		ack(Op{Kind: OpSetAdd, Key: "s/1", Value: "e1"}, acked),
		ack(Op{Kind: OpSetAdd, Key: "s/1", Value: "e2"}, acked),
		ack(Op{Kind: OpSetRemove, Key: "s/1", Value: "e2"}, acked),
		ack(Op{Kind: OpMapPut, Key: "m/1", Field: "f0", Value: "a"}, acked),
		ack(Op{Kind: OpMapPut, Key: "m/1", Field: "f1", Value: "b"}, acked),
		ack(Op{Kind: OpMapDelete, Key: "m/1", Field: "f1"}, unknown),
	}
	e := expect(acks, nil)
	f0, f1 := mapFieldKey("m/1", "f0"), mapFieldKey("m/1", "f1")
	good := []nodeState{
		{registers: map[string]string{"r/1": "v1", "r/2": "w", f0: "a", f1: "b"}, counters: map[string]int64{"c/1": 5}, sets: map[string][]string{"s/1": {"e1"}}},
		{registers: map[string]string{"r/1": "v2", f0: "a"}, counters: map[string]int64{"c/1": 7}, sets: map[string][]string{"s/1": {"e1", "e2"}}},
	}
	for i, st := range good {
		if lost := e.check("n", st); len(lost) != 0 {
			t.Errorf("allowed state %d reported: %+v", i, lost)
		}
	}
	bad := map[string]nodeState{
		"missing":         {registers: map[string]string{"r/2": "w", f0: "a"}, counters: map[string]int64{"c/1": 5}, sets: map[string][]string{"s/1": {"e1"}}},
		"phantom":         {registers: map[string]string{"r/1": "v9", f0: "a"}, counters: map[string]int64{"c/1": 5}, sets: map[string][]string{"s/1": {"e1"}}},
		"wrong counter":   {registers: map[string]string{"r/1": "v1", f0: "a"}, counters: map[string]int64{"c/1": 4}, sets: map[string][]string{"s/1": {"e1"}}},
		"counter over":    {registers: map[string]string{"r/1": "v1", f0: "a"}, counters: map[string]int64{"c/1": 8}, sets: map[string][]string{"s/1": {"e1"}}},
		"set element":     {registers: map[string]string{"r/1": "v1", f0: "a"}, counters: map[string]int64{"c/1": 5}, sets: map[string][]string{"s/1": {}}},
		"refused put":     {registers: map[string]string{"r/1": "v1", "r/3": "never", f0: "a"}, counters: map[string]int64{"c/1": 5}, sets: map[string][]string{"s/1": {"e1"}}},
		"phantom elem":    {registers: map[string]string{"r/1": "v1", f0: "a"}, counters: map[string]int64{"c/1": 5}, sets: map[string][]string{"s/1": {"e1", "zz"}}},
		"map field lost":  {registers: map[string]string{"r/1": "v1"}, counters: map[string]int64{"c/1": 5}, sets: map[string][]string{"s/1": {"e1"}}},
		"map field wrong": {registers: map[string]string{"r/1": "v1", f0: "b"}, counters: map[string]int64{"c/1": 5}, sets: map[string][]string{"s/1": {"e1"}}},
		"map field extra": {registers: map[string]string{"r/1": "v1", f0: "a", mapFieldKey("m/1", "f9"): "a"}, counters: map[string]int64{"c/1": 5}, sets: map[string][]string{"s/1": {"e1"}}},
	}
	for name, st := range bad {
		if lost := e.check("n", st); len(lost) != 1 {
			t.Errorf("%s: %d reports, want 1: %+v", name, len(lost), lost)
		}
	}
	// An op its node may have lost with its disk is not required.
	lenient := expect(acks, func(a netnsAck) bool { return a.op.Key == "r/1" })
	if lost := lenient.check("n", nodeState{registers: map[string]string{"r/2": "w", f0: "a"}, counters: map[string]int64{"c/1": 5}, sets: map[string][]string{"s/1": {"e1"}}}); len(lost) != 0 {
		t.Errorf("a lenient put still required: %+v", lost)
	}
}

// TestValidateNetns: what real namespaces cannot do is refused before
// anything starts, naming each problem; a scenario without it passes.
func TestValidateNetns(t *testing.T) {
	sc, err := LoadScenario("scenarios/three-regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	err = sc.ValidateNetns()
	if !errors.Is(err, ErrScenario) || !strings.Contains(err.Error(), "latency, jitter or loss") || !strings.Contains(err.Error(), "netem") {
		t.Fatalf("three-regions on netns: %v", err)
	}
	skew, err := LoadScenario("scenarios/clock-skew.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := skew.ValidateNetns(); err == nil || !strings.Contains(err.Error(), "skew") {
		t.Fatalf("clock-skew on netns: %v", err)
	}
	ok, err := LoadScenario("scenarios/netns-split.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := ok.ValidateNetns(); err != nil {
		t.Fatalf("netns-split: %v", err)
	}
	slow := ok
	slow.Regions = slices.Clone(ok.Regions)
	slow.Regions[1].Bandwidth = 5
	if err := slow.ValidateNetns(); !errors.Is(err, ErrScenario) || !strings.Contains(err.Error(), "region b: a bandwidth under 8000 bit/s") {
		t.Fatalf("netns-split with 5 bit/s: %v", err)
	}
	if err := slow.Validate(); err != nil {
		t.Fatalf("5 bit/s on simnet: %v", err)
	}
	if m := ok.Workload.Mix; m.MapPut == 0 || m.MapDelete == 0 {
		t.Fatalf("netns-split writes no maps (%+v): the daemons' map route goes unexercised", m)
	}
}
