package sim

import (
	"net"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/marcopolo/simnet"

	"github.com/mycelnet/mycel/crdt"
)

// TestCrashKeepDiskAndWipe: a node crashed with its disk comes back with
// what it held; crashed without, it comes back empty (same identity), and
// an op only it held is accounted as lost_on_wiped, not as a lost write.
// The node is isolated throughout, so nothing can resync it.
func TestCrashKeepDiskAndWipe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		sc := Scenario{Regions: []Region{{Name: "a", Nodes: 3, Latency: 5 * time.Millisecond}}}
		c := openSettled(t, &sc)
		r := &runResult{wiped: map[int]bool{}}
		step := func(f Fault) {
			t.Helper()
			if err := c.apply(ctx, f, r); err != nil {
				t.Fatal(err)
			}
			if err := sleep(ctx, time.Second); err != nil {
				t.Fatal(err)
			}
		}
		c.track.begin(2, time.Now())
		step(Fault{Kind: Isolate, Node: "a-2"})
		r.acks = append(r.acks, c.do(ctx, 0, Op{Node: 2, Kind: OpPut, Key: "r/1", Value: "only-here"}))
		id := c.members[2].id

		step(Fault{Kind: Crash, Node: "a-2"})
		if c.members[2].up || len(c.live()) != 2 {
			t.Fatal("crashed node still up")
		}
		if r.LostOnWiped != 0 {
			t.Fatalf("a crash with its disk lost %d ops", r.LostOnWiped)
		}
		step(Fault{Kind: Restart, Node: "a-2"})
		if v, err := c.members[2].space.Get(ctx, "r/1"); err != nil || string(v) != "only-here" {
			t.Fatalf("after a restart on its disk: %q %v", v, err)
		}
		no := false
		step(Fault{Kind: Crash, Node: "a-2", KeepDisk: &no})
		if r.LostOnWiped != 1 || !r.acks[0].lostOnWipe {
			t.Fatalf("the op only the wiped node held: lost_on_wiped %d", r.LostOnWiped)
		}
		step(Fault{Kind: Restart, Node: "a-2"})
		if _, k := c.members[2].space.Digest(); k != 0 || c.members[2].id != id {
			t.Fatalf("after a wipe the node holds %d keys, identity kept %v", k, c.members[2].id == id)
		}
		step(Fault{Kind: Heal})
		waitEqual(t, c, 30*time.Second)
		spaces := c.liveSpaces()
		if lost := checkLostWrites(ctx, spaces, sc.nodeNames(), newModel(r.acks)); len(lost) != 0 {
			t.Fatalf("lost writes: %+v", lost)
		}
		if err := c.close(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestSkewAndLatency: a skewed node stamps its writes with its own clock;
// a latency fault changes the link both ways, leaving the rest.
func TestSkewAndLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		sc := Scenario{
			Regions: []Region{{Name: "a", Nodes: 1}, {Name: "b", Nodes: 1}},
			Links:   []Link{{A: "a", B: "b", Latency: 20 * time.Millisecond, Loss: 1}},
		}
		sc = sc.withDefaults()
		c, err := openCluster(ctx, &sc, testSeed)
		if err != nil {
			t.Fatal(err)
		}
		defer c.close()
		r := &runResult{}
		if err := c.apply(ctx, Fault{Kind: Skew, Node: "b-0", By: 20 * time.Second}, r); err != nil {
			t.Fatal(err)
		}
		d, err := c.members[1].space.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "k", Value: []byte("v")})
		if err != nil {
			t.Fatal(err)
		}
		stamp := time.UnixMilli(d.Value(0).Registers()[0].Time.Wall)
		if ahead := stamp.Sub(time.Now()); ahead < 19*time.Second || ahead > 21*time.Second {
			t.Fatalf("skewed node's stamp is %v ahead", ahead)
		}
		lat := 300 * time.Millisecond
		if err := c.apply(ctx, Fault{Kind: Latency, Link: []string{"b", "a"}, Latency: &lat}, r); err != nil {
			t.Fatal(err)
		}
		for _, l := range []Link{c.nw.link(0, 1), c.nw.link(1, 0)} {
			if l.Latency != lat || l.Loss != 1 {
				t.Fatalf("link after the change: %+v", l)
			}
		}
		if l := c.nw.link(0, 0); l.Latency != 0 {
			t.Fatalf("region a's own link changed: %+v", l)
		}
		if err := c.close(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestWipedNodeTakesWritesAtOnce: a node restarted with its identity on
// an empty store, cut off from its peers, takes a write at once. Its store
// counts from a floor the lost store never reached, so the write gets a
// dot of its own (not the lost store's first), reaches the peer after the
// heal, and nothing is lost either way.
func TestWipedNodeTakesWritesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		sc := Scenario{Regions: []Region{{Name: "a", Nodes: 2, Latency: 5 * time.Millisecond}}}
		c := openSettled(t, &sc)
		r := &runResult{wiped: map[int]bool{}}
		c.track.begin(2, time.Now())
		r.acks = append(r.acks, c.do(ctx, 0, Op{Node: 1, Kind: OpPut, Key: "r/1", Value: "first"}))
		waitEqual(t, c, 10*time.Second)
		no := false
		for _, f := range []Fault{{Kind: Isolate, Node: "a-1"}, {Kind: Crash, Node: "a-1", KeepDisk: &no}, {Kind: Restart, Node: "a-1"}} {
			if err := c.apply(ctx, f, r); err != nil {
				t.Fatal(err)
			}
		}
		if n := c.members[1].node.Stats().SyncSessions.Load(); n != 0 {
			t.Fatalf("the isolated node synced %d times", n)
		}
		r.acks = append(r.acks, c.do(ctx, 1, Op{Node: 1, Kind: OpPut, Key: "r/2", Value: "second"}))
		if !r.acks[1].ok() {
			t.Fatalf("write on the restarted node: skipped %v, %v", r.acks[1].skipped, r.acks[1].err)
		}
		if a, b := r.acks[0].dot, r.acks[1].dot; a == b || a.Replica != b.Replica {
			t.Fatalf("dots %v and %v: want the same replica, different counters", a, b)
		}
		if err := c.apply(ctx, Fault{Kind: Heal}, r); err != nil {
			t.Fatal(err)
		}
		waitEqual(t, c, 30*time.Second)
		m := newModel(r.acks)
		if m.reused != 0 {
			t.Fatalf("model counted %d reused dots", m.reused)
		}
		if lost := checkLostWrites(ctx, c.liveSpaces(), sc.nodeNames(), m); len(lost) != 0 {
			t.Fatalf("lost: %+v", lost)
		}
		for i, key := range []string{"r/1", "r/2"} {
			for _, mem := range c.members {
				if _, err := mem.space.Get(ctx, key); err != nil {
					t.Fatalf("node %s lacks %s (op %d): %v", mem.name, key, i, err)
				}
			}
		}
		if err := c.close(); err != nil {
			t.Fatal(err)
		}
	})
}

// The reused-dot checker must be able to fail: two acknowledged ops with
// the same dot are counted and judged, also when the first was lost on a
// wipe.
func TestReusedDotIsReported(t *testing.T) {
	var acks []ack
	for i, key := range []string{"r/1", "r/2"} {
		// Two stores of one replica, each counting from 1.
		d, err := crdt.NewNamespace(crdt.Limits{}).Prepare(crdt.Op{Kind: crdt.OpPut, Key: key, Value: []byte("v")}, 7, crdt.Timestamp{Wall: int64(i + 1)})
		if err != nil {
			t.Fatal(err)
		}
		a := ack{id: i, op: Op{Node: 1, Kind: OpPut, Key: key, Value: "v"}, delta: d}
		d.StoreDots(func(x crdt.Dot) { a.dot = x })
		acks = append(acks, a)
	}
	m := newModel(acks)
	if m.reused != 1 || len(m.reusedOps) != 1 || !strings.Contains(m.reusedOps[0], "op 0 (node 1, put \"r/1\"") || !strings.Contains(m.reusedOps[0], "op 1 (node 1, put \"r/2\"") {
		t.Fatalf("model counted %d reused dots: %q", m.reused, m.reusedOps)
	}
	// The first op lost on its node's wipe, the second given its dot after
	// the restart: still a reuse.
	acks[0].lostOnWipe = true
	if m := newModel(acks); m.reused != 1 {
		t.Fatalf("with the first op lost on a wipe, the model counted %d reused dots", m.reused)
	}
	rep := Report{DotsReused: m.reused, Converged: true}
	if f := judge(&rep, Expect{}); len(f) != 1 || f[0] != "1 dots handed out twice (a replica reused its dot counter)" {
		t.Fatalf("judge: %q", f)
	}
}

// openSettled fills in sc's defaults, opens its cluster inside the test's
// synctest bubble and lets it settle; the cluster closes when the test ends.
func openSettled(t *testing.T, sc *Scenario) *cluster {
	t.Helper()
	*sc = sc.withDefaults()
	c, err := openCluster(t.Context(), sc, testSeed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.close() })
	if err := sleep(t.Context(), sc.Settle); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRecoveryAfterAWipeCountsTheRefetch: a node restarted on an empty store
// holds nothing it held before; the restart's recovery time is how long it
// took to get everything back, not 0 because it once held it. It is the
// slowest node; the others held everything already.
func TestRecoveryAfterAWipeCountsTheRefetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		no := false
		sc := Scenario{
			Name:     "wipe",
			Regions:  []Region{{Name: "a", Nodes: 3, Latency: 20 * time.Millisecond}},
			Workload: Workload{Rate: 20, Duration: 3 * time.Second, Keys: 50},
			Faults: []Fault{
				// Not the last node: the slowest is found, not the last.
				{At: 8 * time.Second, Kind: Crash, Node: "a-1", KeepDisk: &no},
				{At: 9 * time.Second, Kind: Restart, Node: "a-1"},
			},
			Expect: Expect{ConvergeWithin: 30 * time.Second},
		}
		rep, err := Run(t.Context(), sc, testSeed)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Passed || len(rep.Heals) != 1 {
			t.Fatalf("passed %v, heals %+v: %q", rep.Passed, rep.Heals, rep.Failures)
		}
		h := rep.Heals[0]
		if h.RecoveredMS <= 0 {
			t.Fatalf("the wiped node's restart recovered in %.1f ms", h.RecoveredMS)
		}
		if h.Slowest != "a-1" || h.Nodes.Count != 3 || h.Nodes.P50 != 0 || h.Nodes.Max != h.RecoveredMS {
			t.Fatalf("per node: slowest %q, %+v; want a-1, 3 nodes, the median 0 and the max the recovery (%.1f ms)", h.Slowest, h.Nodes, h.RecoveredMS)
		}
	})
}

// TestNodeRecovery: the per-node recovery of a heal, from each node's
// time to hold the last op it lacked. Nodes not live are left out; a node
// that never caught up makes the heal unrecovered and names no one; when
// every node held everything already, the recovery is 0 and no node is
// named; of nodes tied for last, the first is named.
func TestNodeRecovery(t *testing.T) {
	names := []string{"a-0", "a-1", "b-0", "b-1"}
	ms := func(n int64) int64 { return n * int64(time.Millisecond) }
	for _, tc := range []struct {
		name        string
		live, never []bool
		latest      []int64
		recovered   float64
		slowest     string
		p50         float64
		count       int
	}{
		{"nothing lacked", []bool{true, true, true, true}, make([]bool, 4), []int64{0, 0, 0, 0}, 0, "", 0, 4},
		{"one lagged", []bool{true, true, true, true}, make([]bool, 4), []int64{0, ms(30), ms(10), 0}, 30, "a-1", 0, 4},
		{"the down node left out", []bool{true, false, true, true}, make([]bool, 4), []int64{ms(5), ms(900), ms(20), ms(10)}, 20, "b-0", 10, 3},
		{"a tie names the first", []bool{true, true, true, true}, make([]bool, 4), []int64{ms(5), ms(40), ms(40), ms(10)}, 40, "a-1", 10, 4},
		{"one never caught up", []bool{true, true, true, true}, []bool{false, false, true, false}, []int64{ms(5), ms(40), 0, 0}, -1, "", 5, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hr HealReport
			nodeRecovery(&hr, tc.live, tc.never, tc.latest, names)
			if hr.RecoveredMS != tc.recovered || hr.Slowest != tc.slowest || hr.Nodes.P50 != tc.p50 || hr.Nodes.Count != tc.count {
				t.Fatalf("recovered %v, slowest %q, nodes %+v; want %v, %q, p50 %v over %d", hr.RecoveredMS, hr.Slowest, hr.Nodes, tc.recovered, tc.slowest, tc.p50, tc.count)
			}
		})
	}
}

// TestLinkBurstIsOneTick: a link lets through at once what its bandwidth
// carries in one delivery tick, at least one packet and at most 65,535
// bytes; and simnet takes it so: eight packets sent together arrive at
// one instant, where with simnet's default MTU they arrive spread out,
// while the link's rate over time stays its bandwidth.
func TestLinkBurstIsOneTick(t *testing.T) {
	for _, tc := range []struct{ bps, want int }{
		{100_000_000, 12_500}, // the default: 100 Mbit/s, 12.5 KB a millisecond
		{20_000_000, 2_500},
		{1_000_000, 1_500},       // less than a packet a tick: one packet
		{10_000_000_000, 65_535}, // 10 Gbit/s: the cap
	} {
		if got := linkBurst(tc.bps); got != tc.want {
			t.Errorf("linkBurst(%d) = %d, want %d", tc.bps, got, tc.want)
		}
	}
	const bps = 100_000_000
	// arrivals sends n packets of 1,200 bytes from one endpoint to another
	// at once and returns when each arrived, relative to the send.
	arrivals := func(mtu, n int) []time.Duration {
		var out []time.Duration
		synctest.Test(t, func(t *testing.T) {
			sim := &simnet.Simnet{LatencyFunc: simnet.StaticLatency(10 * time.Millisecond)}
			link := simnet.LinkSettings{BitsPerSecond: bps, MTU: mtu}
			settings := simnet.NodeBiDiLinkSettings{Uplink: link, Downlink: link}
			a := sim.NewEndpoint(&net.UDPAddr{IP: net.IPv4(1, 0, 0, 1), Port: 1}, settings)
			b := sim.NewEndpoint(&net.UDPAddr{IP: net.IPv4(1, 0, 0, 2), Port: 1}, settings)
			sim.Start()
			defer sim.Close()
			start := time.Now()
			buf := make([]byte, 1200)
			for range n {
				if _, err := a.WriteTo(buf, b.LocalAddr()); err != nil {
					t.Fatal(err)
				}
			}
			for range n {
				if _, _, err := b.ReadFrom(buf); err != nil {
					t.Fatal(err)
				}
				out = append(out, time.Since(start))
			}
		})
		return out
	}
	together := arrivals(linkBurst(bps), 8)
	if together[0] != together[7] {
		t.Errorf("8 packets within a tick's burst arrived from %v to %v, want one instant", together[0], together[7])
	}
	if apart := arrivals(1500, 8); apart[0] == apart[7] {
		t.Errorf("with simnet's default MTU 8 packets arrived at one instant (%v): the test cannot tell", apart[0])
	}
	// 1.2 MB at 100 Mbit/s takes ~96 ms however large the burst.
	many := arrivals(linkBurst(bps), 1000)
	if took := many[999] - many[0]; took < 85*time.Millisecond || took > 110*time.Millisecond {
		t.Errorf("1,000 packets of 1,200 bytes spread over %v, want ~96 ms at 100 Mbit/s", took)
	}
}

// TestArrivalsOnTheGrid: a packet arrives on the delivery grid's tick
// nearest its unrounded arrival (so a link keeps its mean latency), never
// before it was sent; a latency too short for a tick after the send keeps
// its own value.
func TestArrivalsOnTheGrid(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		sent, latency, want time.Duration // sent: offset from a whole tick
	}{
		{0, 2 * time.Millisecond, 2 * time.Millisecond},
		{300 * time.Microsecond, 2 * time.Millisecond, 1700 * time.Microsecond},   // arrives at 2.3 → 2
		{700 * time.Microsecond, 2 * time.Millisecond, 2300 * time.Microsecond},   // 2.7 → 3
		{500 * time.Microsecond, 40 * time.Millisecond, 40500 * time.Microsecond}, // 40.5 → 41 (half up)
		{900 * time.Microsecond, 200 * time.Microsecond, 100 * time.Microsecond},  // 1.1 → 1
		{200 * time.Microsecond, 100 * time.Microsecond, 100 * time.Microsecond},  // 0.3 → 0, not after the send: unrounded
		{0, 0, 0},
	} {
		now := base.Add(tc.sent)
		got := onGrid(now, tc.latency)
		if got != tc.want {
			t.Errorf("sent at +%v with latency %v: %v, want %v", tc.sent, tc.latency, got, tc.want)
		}
	}
	// Over sends spread evenly across a tick, the mean latency stays.
	const latency = 40 * time.Millisecond
	var sum time.Duration
	const n = 1000
	for i := range n {
		sum += onGrid(base.Add(time.Duration(i)*deliveryGrid/n), latency)
	}
	if mean := sum / n; mean < latency-deliveryGrid/100 || mean > latency+deliveryGrid/100 {
		t.Fatalf("mean latency %v over a tick of sends, want %v", mean, latency)
	}
}

// TestReviveWiped: an op judged lost at a wipe that a live replica shows at
// the end is counted again (its copy was still on its way when the wipe
// was judged); one no replica shows stays lost, so does a put whose dot a
// replica knows while what it replaced is still held there (a later op's
// context carried the dot, not the put), and so does one whose dot another
// acknowledged op was also given.
func TestReviveWiped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		sc := Scenario{Regions: []Region{{Name: "a", Nodes: 2}}}
		c := openSettled(t, &sc)
		c.track.begin(3, time.Now())
		shown := c.do(ctx, 0, Op{Node: 0, Kind: OpPut, Key: "r/1", Value: "x"})
		if !shown.ok() {
			t.Fatal(shown.err)
		}
		// The delete must have seen the put, so that it removes something.
		for deadline := time.Now().Add(10 * time.Second); !c.members[1].space.Observed(shown.dot); {
			if time.Now().After(deadline) {
				t.Fatal("node 1 never saw the put")
			}
			time.Sleep(10 * time.Millisecond)
		}
		removed := c.do(ctx, 1, Op{Node: 1, Kind: OpDelete, Key: "r/1"})
		kept := c.do(ctx, 2, Op{Node: 0, Kind: OpPut, Key: "r/2", Value: "y"})
		if !removed.ok() || !kept.ok() {
			t.Fatal(removed.err, kept.err)
		}
		if rc := removed.delta.Context(); !rc.Contains(shown.dot) {
			t.Fatal("the delete did not remove the put")
		}
		waitEqual(t, c, 10*time.Second)
		never := shown
		never.dot.Counter += 1000 // a dot no replica has seen
		// A put whose dot every replica knows (the first put's), whose
		// context covers r/2's entry, which every replica still holds.
		stillHeld := kept
		stillHeld.dot = shown.dot
		spaces := c.liveSpaces()
		for _, tc := range []struct {
			name  string
			acks  []ack
			lost  []bool
			count int
		}{
			{"shown at the end", []ack{shown, removed, kept}, []bool{false, false, false}, 3},
			{"never shown", []ack{never}, []bool{true}, 0},
			{"replaced entry still held", []ack{stillHeld}, []bool{true}, 0},
			{"dot given twice", []ack{shown, shown}, []bool{true, true}, 0},
		} {
			for i := range tc.acks {
				tc.acks[i].lostOnWipe = true
			}
			n := reviveWiped(tc.acks, spaces)
			for i, a := range tc.acks {
				if a.lostOnWipe != tc.lost[i] {
					t.Errorf("%s: ack %d lost %v, want %v", tc.name, i, a.lostOnWipe, tc.lost[i])
				}
			}
			if n != tc.count {
				t.Errorf("%s: %d revived, want %d", tc.name, n, tc.count)
			}
		}
	})
}

// TestFaultWindowsCoverEveryKind: the chart's and the report's fault
// windows span every fault that changes the network or a node until what
// undoes it — latency and clock skew too, not only cuts and crashes.
func TestFaultWindowsCoverEveryKind(t *testing.T) {
	d := func(v time.Duration) *time.Duration { return &v }
	pct := func(v float64) *float64 { return &v }
	sc := &Scenario{
		Regions: []Region{{Name: "a", Nodes: 2, Latency: time.Millisecond}, {Name: "b", Nodes: 1}},
		Links:   []Link{{A: "a", B: "b", Latency: 10 * time.Millisecond}},
	}
	s := time.Second
	got := sc.faultWindows([]Fault{
		{At: 1 * s, Kind: Partition, Groups: [][]string{{"a"}, {"b"}}},
		{At: 2 * s, Kind: Heal},
		{At: 3 * s, Kind: Crash, Node: "a-1"},
		{At: 4 * s, Kind: Restart, Node: "a-1"},
		{At: 5 * s, Kind: Latency, Link: []string{"b", "a"}, Latency: d(100 * time.Millisecond)},
		{At: 6 * s, Kind: Latency, Link: []string{"a", "b"}, Loss: pct(5)}, // still changed
		{At: 7 * s, Kind: Latency, Link: []string{"a", "b"}, Latency: d(10 * time.Millisecond), Loss: pct(0)},
		{At: 8 * s, Kind: Skew, Node: "b-0", By: 5 * s},
		{At: 9 * s, Kind: Skew, Node: "b-0", By: -2 * s},
		{At: 10 * s, Kind: Skew, Node: "b-0"},
		{At: 11 * s, Kind: Latency, Link: []string{"a", "a"}, Latency: d(50 * time.Millisecond)},
	})
	want := []FaultWindow{
		{Kind: "partition a | b (blackhole)", FromMS: 1000, ToMS: 2000},
		{Kind: "crash a-1", FromMS: 3000, ToMS: 4000},
		{Kind: "latency b-a 100ms", FromMS: 5000, ToMS: 7000},
		{Kind: "skew b-0 by 5s", FromMS: 8000, ToMS: 9000},
		{Kind: "skew b-0 by -2s", FromMS: 9000, ToMS: 10000},
		{Kind: "latency a-a 50ms", FromMS: 11000, ToMS: -1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("windows\n%+v\nwant\n%+v", got, want)
	}
}
