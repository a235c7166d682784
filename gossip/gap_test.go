package gossip

import (
	"context"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mycelnet/mycel/crdt"
)

// gapHarness drives a gapWatch against a set of held batches.
type gapHarness struct {
	t     *testing.T
	w     gapWatch
	held  crdt.Context
	now   time.Time
	conns map[peer.ID]bool
	busy  map[peer.ID]bool // a sync with the peer runs: pull refuses it
}

const testGrace = time.Second

func newGapHarness(t *testing.T) *gapHarness {
	return &gapHarness{t: t, now: time.Unix(1_700_000_000, 0), conns: map[peer.ID]bool{}, busy: map[peer.ID]bool{}}
}

func (h *gapHarness) has(o crdt.ReplicaID, seq uint64) bool {
	return h.held.Contains(crdt.Dot{Replica: o, Counter: seq})
}

func (h *gapHarness) missing(o crdt.ReplicaID, seq uint64) crdt.Context {
	var want crdt.Context
	want.AddRange(o, 1, seq)
	return h.held.Missing(want)
}

// deliver applies batch (o, seq) as gossip would and notes it.
func (h *gapHarness) deliver(o crdt.ReplicaID, seq uint64, from peer.ID) bool {
	h.held.Add(crdt.Dot{Replica: o, Counter: seq})
	return h.w.note(o, peer.ID("origin-"+string(rune('a'+int(o%26)))), seq, from, h.now, testGrace, h.has)
}

// check returns the pulls started and when to check next.
func (h *gapHarness) check() ([]peer.ID, time.Time) {
	var pulled []peer.ID
	next := h.w.check(h.now, testGrace, h.missing, func(p peer.ID) bool { return h.conns[p] }, func(p peer.ID) bool {
		if h.busy[p] {
			return false
		}
		pulled = append(pulled, p)
		return true
	})
	return pulled, next
}

func (h *gapHarness) hold(o crdt.ReplicaID, lo, hi uint64) { h.held.AddRange(o, lo, hi) }

func TestGapWatchReorderedWithinGraceIsNotPulled(t *testing.T) {
	h := newGapHarness(t)
	h.hold(1, 1, 2)
	if !h.deliver(1, 4, "f") {
		t.Fatal("batch 4 without 3: no gap watched")
	}
	h.now = h.now.Add(testGrace / 2)
	h.deliver(1, 3, "g") // the other path's copy, late
	h.now = h.now.Add(testGrace / 2)
	if pull, next := h.check(); len(pull) != 0 || !next.IsZero() {
		t.Fatalf("filled gap: pull %v, next %v", pull, next)
	}
}

func TestGapWatchNothingToWatch(t *testing.T) {
	h := newGapHarness(t)
	if h.deliver(1, 1, "f") {
		t.Fatal("an origin's first batch watched")
	}
	if h.deliver(1, 2, "f") {
		t.Fatal("a batch whose predecessor is held watched")
	}
	if pull, next := h.check(); len(pull) != 0 || !next.IsZero() {
		t.Fatalf("nothing watched: pull %v, next %v", pull, next)
	}
}

func TestGapWatchPullsForwarderThenOrigin(t *testing.T) {
	h := newGapHarness(t)
	h.hold(1, 1, 3)
	h.deliver(1, 5, "f")
	h.now = h.now.Add(testGrace / 2)
	if pull, next := h.check(); len(pull) != 0 || !next.Equal(h.now.Add(testGrace/2)) {
		t.Fatalf("before the grace: pull %v, next %v", pull, next)
	}
	h.deliver(1, 6, "g") // g carries the origin's batches now
	h.now = h.now.Add(testGrace / 2)
	pull, next := h.check()
	if !slices.Equal(pull, []peer.ID{"g"}) || !next.Equal(h.now.Add(testGrace)) {
		t.Fatalf("first pull %v (want the latest forwarder g), next %v", pull, next)
	}
	origin := peer.ID("origin-b")
	h.conns[origin] = true
	h.now = next
	if pull, _ = h.check(); !slices.Equal(pull, []peer.ID{origin}) {
		t.Fatalf("second pull %v, want the connected origin", pull)
	}
	h.now = h.now.Add(testGrace)
	pull, next = h.check()
	if !slices.Equal(pull, []peer.ID{"g"}) || !next.IsZero() {
		t.Fatalf("last pull %v, next %v: want g, then nothing left", pull, next)
	}
	h.now = h.now.Add(testGrace)
	if pull, _ := h.check(); len(pull) != 0 {
		t.Fatalf("pulled %v after maxGapPulls", pull)
	}
}

func TestGapWatchSecondPullStaysWithForwarderWhenOriginNotConnected(t *testing.T) {
	h := newGapHarness(t)
	h.hold(1, 1, 3)
	h.deliver(1, 5, "f")
	for i := range 2 {
		h.now = h.now.Add(testGrace)
		if pull, _ := h.check(); !slices.Equal(pull, []peer.ID{"f"}) {
			t.Fatalf("pull %d: %v, want f", i, pull)
		}
	}
}

func TestGapWatchOlderHoleKeepsTheGapOpen(t *testing.T) {
	h := newGapHarness(t)
	h.hold(1, 1, 1) // 2 is missing: dropped earlier, never noticed
	h.hold(1, 3, 4)
	h.deliver(1, 6, "f")
	h.deliver(1, 5, "g") // the watched one arrives by another path
	h.now = h.now.Add(testGrace)
	if pull, _ := h.check(); !slices.Equal(pull, []peer.ID{"g"}) {
		t.Fatalf("batch 2 still missing: pull %v, want g", pull)
	}
	h.hold(1, 2, 2) // the pull brought it
	h.now = h.now.Add(testGrace)
	if pull, next := h.check(); len(pull) != 0 || !next.IsZero() {
		t.Fatalf("filled: pull %v, next %v", pull, next)
	}
}

func TestGapWatchUnfillableHoleIsNotPulledAgain(t *testing.T) {
	h := newGapHarness(t)
	h.hold(1, 1, 10) // 11..99 never used: the origin restarted from a floor
	h.deliver(1, 100, "f")
	pulls := 0
	for range maxGapPulls + 2 {
		h.now = h.now.Add(testGrace)
		pull, _ := h.check()
		pulls += len(pull)
	}
	if pulls != maxGapPulls {
		t.Fatalf("%d pulls for an unfillable hole, want %d", pulls, maxGapPulls)
	}
	// A later gap of the same origin counts only its own batches.
	h.hold(1, 101, 101)
	h.deliver(1, 103, "f")
	h.now = h.now.Add(testGrace / 2)
	h.deliver(1, 102, "g")
	h.now = h.now.Add(testGrace)
	if pull, next := h.check(); len(pull) != 0 || !next.IsZero() {
		t.Fatalf("the later gap filled, the old hole pulled again: pull %v, next %v", pull, next)
	}
}

func TestGapWatchOnePullPerPeer(t *testing.T) {
	h := newGapHarness(t)
	for o := crdt.ReplicaID(1); o <= 3; o++ {
		h.deliver(o, 5, "f") // three origins' gaps, one forwarder
	}
	h.now = h.now.Add(testGrace)
	if pull, _ := h.check(); !slices.Equal(pull, []peer.ID{"f"}) {
		t.Fatalf("pull %v, want f once", pull)
	}
}

func TestGapWatchBoundsOrigins(t *testing.T) {
	h := newGapHarness(t)
	for o := range crdt.ReplicaID(maxGapOrigins) {
		if !h.deliver(o+1, 5, "f") {
			t.Fatalf("origin %d not watched", o+1)
		}
	}
	if h.deliver(maxGapOrigins+1, 5, "f") {
		t.Fatalf("more than %d origins watched", maxGapOrigins)
	}
	if len(h.w.gaps) != maxGapOrigins {
		t.Fatalf("%d gaps watched", len(h.w.gaps))
	}
}

func TestGapWatchTriesAnotherPeerWhenOneIsBusy(t *testing.T) {
	h := newGapHarness(t)
	h.hold(1, 1, 3)
	h.deliver(1, 5, "f")
	h.deliver(1, 6, "g") // g latest, f before it
	h.busy["g"] = true   // its sync is stalled on the link the gap came from
	h.now = h.now.Add(testGrace)
	if pull, _ := h.check(); !slices.Equal(pull, []peer.ID{"f"}) {
		t.Fatalf("pull %v, want f (g busy, origin not connected)", pull)
	}
	h.busy["f"] = true
	h.now = h.now.Add(testGrace)
	if pull, next := h.check(); len(pull) != 0 || next.IsZero() {
		t.Fatalf("every candidate busy: pull %v, next %v (want none, and another check)", pull, next)
	}
	// Checks that started nothing do not use the gap's pulls up.
	for range 3 {
		h.now = h.now.Add(testGrace)
		h.check()
	}
	h.busy["f"], h.busy["g"] = false, false
	pulls := 0
	for range maxGapPulls + 2 {
		h.now = h.now.Add(testGrace)
		pull, _ := h.check()
		pulls += len(pull)
	}
	if pulls != maxGapPulls-1 { // one came before the peers were busy
		t.Fatalf("%d pulls once the peers were free, want %d", pulls, maxGapPulls-1)
	}
}

// A gap whose peers stay busy is given up after maxGapChecks, and not
// counted unfillable: a later gap of the origin pulls it again.
func TestGapWatchGivesUpWhilePeersStayBusy(t *testing.T) {
	h := newGapHarness(t)
	h.hold(1, 1, 3)
	h.deliver(1, 5, "f")
	h.busy["f"] = true
	for i := range maxGapChecks {
		h.now = h.now.Add(testGrace)
		pull, next := h.check()
		if len(pull) != 0 {
			t.Fatalf("pulled %v from a busy peer", pull)
		}
		if last := i == maxGapChecks-1; last != next.IsZero() {
			t.Fatalf("check %d: next %v", i+1, next)
		}
	}
	h.busy["f"] = false
	h.deliver(1, 7, "f") // 6 missing too, and 4 still
	h.now = h.now.Add(testGrace)
	if pull, _ := h.check(); !slices.Equal(pull, []peer.ID{"f"}) {
		t.Fatalf("pull %v, want f", pull)
	}
}

// A newer hole of a watched origin keeps the gap open after the first
// one fills.
func TestGapWatchFollowsANewerHole(t *testing.T) {
	h := newGapHarness(t)
	h.hold(1, 1, 3)
	h.deliver(1, 5, "f") // 4 missing: watched
	h.deliver(1, 7, "f") // 6 missing too
	h.deliver(1, 4, "g") // gossip fills 4
	h.now = h.now.Add(testGrace)
	if pull, _ := h.check(); !slices.Equal(pull, []peer.ID{"g"}) {
		t.Fatalf("batch 6 still missing: pull %v, want g", pull)
	}
}

// However many gaps are due, one check starts at most
// maxGapPullsPerCheck syncs.
func TestGapWatchBoundsPullsPerCheck(t *testing.T) {
	h := newGapHarness(t)
	for o := crdt.ReplicaID(1); o <= 10; o++ {
		h.deliver(o, 5, peer.ID(rune('a'+o))) // ten gaps, ten forwarders
	}
	h.now = h.now.Add(testGrace)
	if pull, _ := h.check(); len(pull) != maxGapPullsPerCheck {
		t.Fatalf("%d pulls in one check, want %d", len(pull), maxGapPullsPerCheck)
	}
}

// TestGapInGossipIsPulled wires the watch to real sync sessions (two hosts
// on loopback, a scripted server): a batch delivered past a missing one
// starts a sync with the peer that forwarded it a grace later; a gap that
// gossip fills within the grace starts none.
func TestGapInGossipIsPulled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	server, client := loopbackHost(t), loopbackHost(t)
	var sessions atomic.Int64
	server.SetStreamHandler(ProtocolSync, func(s network.Stream) {
		defer s.Close()
		c := newConn(s, Limits{}.withDefaults())
		if _, err := c.expect(frameHello); err != nil {
			s.Reset()
			return
		}
		sessions.Add(1)
		_ = c.send(&frame{kind: frameDone})
	})
	if err := client.Connect(ctx, server.Peerstore().PeerInfo(server.ID())); err != nil {
		t.Fatal(err)
	}
	const grace = 100 * time.Millisecond
	cfg := Config{Host: client, Limits: Limits{}.withDefaults(), SyncGrace: grace, SyncTimeout: 10 * time.Second,
		SyncRate: 5, SyncBurst: 20, Now: time.Now, Logger: slog.New(slog.DiscardHandler)}
	r := &Replicator{cfg: cfg, ctx: ctx, paced: map[peer.ID]*admission{}, status: map[statusKey]*PeerSync{},
		spaces: map[string]*space{}, syncing: map[peer.ID]*syncQueue{}}
	rep := &seenReplica{}
	s := &space{r: r, name: "a", rep: rep, ctx: ctx, pull: newPullTurns(&r.stats.SyncTurnsTakenOver, &r.stats.SyncSessionsAbandoned)}
	r.spaces["a"] = s
	defer func() {
		cancel()
		r.wg.Wait()
	}()
	origin := crdt.DeriveReplicaID([]byte(server.ID()))
	gapsLeft := func() int {
		s.gapMu.Lock()
		defer s.gapMu.Unlock()
		return len(s.gaps.gaps)
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}

	// Filled within the grace: dropped unpulled.
	deliver := func(seq uint64) {
		b := Batch{Origin: origin, Seq: seq, Signer: []byte(server.ID())}
		_, _ = rep.ApplyBatch(ctx, b)
		s.noteGap(b, server.ID())
	}
	deliver(1)
	deliver(3)
	deliver(2)
	waitUntil("the filled gap to be dropped", func() bool { return gapsLeft() == 0 })
	if n, pulls := sessions.Load(), r.stats.SyncGapPulls.Load(); n != 0 || pulls != 0 {
		t.Fatalf("a filled gap started %d sessions (%d pulls)", n, pulls)
	}

	// Left open: pulled from the forwarder.
	deliver(5)
	waitUntil("a sync session", func() bool { return sessions.Load() >= 1 })
	if pulls := r.stats.SyncGapPulls.Load(); pulls < 1 {
		t.Fatalf("%d gap pulls counted", pulls)
	}
}
