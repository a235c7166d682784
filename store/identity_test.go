package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/mycelnet/mycel/crdt"
)

// memStore opens an in-memory store that closes when the test ends.
func memStore(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := OpenMemory(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// seqRand returns a deterministic Rand.
func seqRand(seed uint64) func() uint64 {
	return func() uint64 { seed = seed*6364136223846793005 + 1442695040888963407; return seed }
}

// logged collects the batches a store commits.
func logged(t *testing.T, s *Store, n *Namespace) []Batch {
	t.Helper()
	var out []Batch
	seen := n.Seen()
	seen.ForEachRange(func(origin crdt.ReplicaID, lo, hi uint64) {
		for seq := lo; ; seq++ {
			b, ok, err := n.ReadLog(context.Background(), origin, seq)
			if err != nil || !ok {
				t.Fatalf("batch (%v, %d): ok %v, %v", origin, seq, ok, err)
			}
			out = append(out, b)
			if seq == hi {
				break
			}
		}
	})
	return out
}

// A node that keeps its identity but loses its store must not hand out
// the dots and batch numbers its lost store gave to peers: they would drop
// the new writes as already seen, and the replicas would never converge.
func TestReusedIdentityCountsFromFloor(t *testing.T) {
	ctx := context.Background()
	lost := memStore(t, Options{Replica: testReplica})
	ln := mustNS(t, lost, "ns")
	put(t, ln, "a", "before the wipe")
	put(t, ln, "b", "before the wipe")

	// The same replica on an empty store, with the identity marked reused.
	fresh, err := OpenMemory(ctx, Options{Replica: testReplica, IdentityReused: true, Rand: seqRand(1)})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if !fresh.IdentityReused() {
		t.Fatal("a new store with a reused identity does not say so")
	}
	fn := mustNS(t, fresh, "ns")
	d, err := fn.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "c", Value: []byte("after the wipe")})
	if err != nil {
		t.Fatal(err)
	}
	d.StoreDots(func(x crdt.Dot) {
		if x.Counter < FloorBase {
			t.Fatalf("first dot after the wipe %v, want >= %d", x, FloorBase)
		}
	})
	if seen := fn.Seen(); seen.Max(testReplica) < FloorBase {
		t.Fatalf("first batch after the wipe numbered %d, want >= %d", seen.Max(testReplica), FloorBase)
	}
	// Each side takes the other's batches: none is mistaken for one it has.
	for _, b := range logged(t, lost, ln) {
		if applied, err := fn.ApplyBatch(ctx, b); err != nil || !applied {
			t.Fatalf("lost store's batch %d on the new store: applied %v, %v", b.Seq, applied, err)
		}
	}
	for _, b := range logged(t, fresh, fn) {
		if b.Seq < FloorBase {
			continue // the lost store's own, already there
		}
		if applied, err := ln.ApplyBatch(ctx, b); err != nil || !applied {
			t.Fatalf("new store's batch %d on a peer holding the lost store: applied %v, %v", b.Seq, applied, err)
		}
	}
	for _, n := range []*Namespace{ln, fn} {
		for _, k := range []string{"a", "b", "c"} {
			if _, ok := getString(n, k); !ok {
				t.Fatalf("key %q missing", k)
			}
		}
	}
	if da, _ := ln.Digest(); da != func() crdt.Digest { d, _ := fn.Digest(); return d }() {
		t.Fatal("replicas differ")
	}
}

// Whether the identity was reused is decided once, when the store is
// created, and kept: namespaces created later and reopened namespaces keep
// counting from a floor.
func TestReusedIdentityIsRecorded(t *testing.T) {
	ctx := context.Background()
	d := dssync.MutexWrap(ds.NewMapDatastore())
	s, err := Open(ctx, d, Options{Replica: testReplica, IdentityReused: true, Rand: seqRand(2)})
	if err != nil {
		t.Fatal(err)
	}
	a := mustNS(t, s, "a")
	put(t, a, "k", "v")
	floorA := a.floor
	if floorA < FloorBase {
		t.Fatalf("floor %d", floorA)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopened without the option: the record decides.
	s, err = Open(ctx, d, Options{Replica: testReplica, Rand: seqRand(3)})
	if err != nil {
		t.Fatal(err)
	}
	if !s.IdentityReused() {
		t.Fatal("the reused flag was not kept")
	}
	a = mustNS(t, s, "a")
	if a.floor != floorA {
		t.Fatalf("floor after reopen %d, want %d", a.floor, floorA)
	}
	dl, err := a.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "k2", Value: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	dl.StoreDots(func(x crdt.Dot) {
		if x.Counter <= floorA+DotSkip {
			t.Fatalf("dot after reopen %v, want past the skip above the floor", x)
		}
	})
	if b := mustNS(t, s, "b"); b.floor < FloorBase || b.floor == floorA {
		t.Fatalf("new namespace floor %d", b.floor)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A store created normally is not turned into a reused one later.
	d2 := dssync.MutexWrap(ds.NewMapDatastore())
	s, err = Open(ctx, d2, Options{Replica: testReplica})
	if err != nil {
		t.Fatal(err)
	}
	put(t, mustNS(t, s, "a"), "k", "v")
	s.Close()
	s, err = Open(ctx, d2, Options{Replica: testReplica, IdentityReused: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.IdentityReused() || mustNS(t, s, "c").floor != 0 {
		t.Fatal("an existing store became reused")
	}
}

// A store written by one replica is not silently adopted by another.
func TestOtherReplicaRefused(t *testing.T) {
	dir := t.TempDir()
	s := openPebble(t, dir, Options{})
	put(t, mustNS(t, s, "ns"), "k", "v")
	s.Close()
	_, err := OpenPebble(context.Background(), dir, Options{Replica: testReplica + 1})
	if !errors.Is(err, ErrOtherReplica) {
		t.Fatalf("opened another replica's store: %v", err)
	}
	s = openPebble(t, dir, Options{}) // the owner still can
	s.Close()
}

// Bad owner and registry records are errors that name the record.
func TestCorruptOwnerAndRegistry(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		key ds.Key
		val []byte
	}{
		{ds.RawKey(keyOwner), []byte{1, 2, 3}},
		{ds.RawKey(keyOwner), append(ownerRecord(testReplica, false)[:8], 7)},
		{registryKey("ns"), []byte{3}},
		{registryKey("ns"), registryRecord(5)},
	} {
		d := dssync.MutexWrap(ds.NewMapDatastore())
		s, err := Open(ctx, d, Options{Replica: testReplica})
		if err != nil {
			t.Fatal(err)
		}
		mustNS(t, s, "ns")
		s.Close()
		if err := d.Put(ctx, tc.key, tc.val); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(ctx, d, Options{Replica: testReplica}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s = %x: open err %v, want ErrCorrupt", tc.key, tc.val, err)
		}
	}
}

// Operations that could never replicate are refused before anything
// changes: a delta over MaxOpBytes, or a collection grown past
// MaxKeyStateBytes. Puts of the largest value the limits allow are not.
func TestUnreplicableOpsRefused(t *testing.T) {
	ctx := context.Background()
	n := mustNS(t, memStore(t, Options{Replica: testReplica}), "ns")
	elems := func(prefix string, count, size int) []string {
		out := make([]string, count)
		for i := range out {
			e := fmt.Sprintf("%s-%07d-", prefix, i)
			out[i] = e + strings.Repeat("x", size-len(e))
		}
		return out
	}
	before, _ := n.Digest()
	// One update carrying 3 MiB of elements.
	_, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpSetUpdate, Key: "big", Add: elems("a", 3<<10, 1<<10)})
	if !errors.Is(err, crdt.ErrLimit) {
		t.Fatalf("3 MiB set update: %v, want ErrLimit", err)
	}
	if after, _ := n.Digest(); after != before {
		t.Fatal("a refused operation changed the state")
	}
	// A set grown 1 MiB at a time stops before MaxKeyStateBytes.
	refused := false
	for i := 0; i < 8 && !refused; i++ {
		_, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpSetUpdate, Key: "grow", Add: elems(fmt.Sprint("g", i), 1<<10, 1<<10)})
		switch {
		case errors.Is(err, crdt.ErrLimit):
			refused = true
		case err != nil:
			t.Fatal(err)
		}
	}
	v, _ := n.Get("grow")
	if !refused || v.Size() > MaxKeyStateBytes {
		t.Fatalf("set grew to %d bytes (refused %v), bound %d", v.Size(), refused, MaxKeyStateBytes)
	}
	// The largest value the limits allow, put again and again on one key.
	big := make([]byte, crdt.DefaultLimits().MaxValueBytes)
	for i := 0; i < 4; i++ {
		if _, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "reg", Value: big}); err != nil {
			t.Fatalf("put %d of a %d-byte value: %v", i, len(big), err)
		}
	}
}

// A replica on its second lost store in a row can learn, from peers, some
// of the writes of the store lost before it, whose floor was higher than
// its own. It must not continue counting right after the highest it
// learned: the lost store may have handed out the next dots and batch
// numbers too, in batches still on their way (found by the soak
// scenario: one dot handed out twice, and replicas that never converged).
func TestLearnedDotsOfALostStoreAreNotReused(t *testing.T) {
	ctx := context.Background()
	high := func() uint64 { return ^uint64(0) }
	low := func() uint64 { return 0 }
	lost := memStore(t, Options{Replica: testReplica, IdentityReused: true, Rand: high})
	ln := mustNS(t, lost, "ns")
	for _, k := range []string{"a", "b", "c"} {
		put(t, ln, k, "lost store")
	}
	batches := logged(t, lost, ln)
	if len(batches) != 3 {
		t.Fatalf("%d batches, want 3", len(batches))
	}
	var lostDots []crdt.Dot
	for _, b := range batches {
		b.Delta.StoreDots(func(x crdt.Dot) { lostDots = append(lostDots, x) })
	}

	fresh := memStore(t, Options{Replica: testReplica, IdentityReused: true, Rand: low})
	fn := mustNS(t, fresh, "ns")
	if fn.floor >= ln.floor {
		t.Fatalf("floors %d and %d: the test needs the new store's lower", fn.floor, ln.floor)
	}
	// A peer passed on the lost store's first two batches; the third is
	// still on its way.
	for _, b := range batches[:2] {
		if applied, err := fn.ApplyBatch(ctx, b); err != nil || !applied {
			t.Fatalf("batch %d: applied %v, %v", b.Seq, applied, err)
		}
	}
	d, err := fn.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "d", Value: []byte("new store")})
	if err != nil {
		t.Fatal(err)
	}
	d.StoreDots(func(x crdt.Dot) {
		for _, l := range lostDots {
			if x.Counter <= l.Counter+1 {
				t.Fatalf("new dot %v does not clear the lost store's %v", x, l)
			}
		}
	})
	mine := logged(t, fresh, fn)
	last := mine[len(mine)-1]
	if last.Seq <= batches[2].Seq {
		t.Fatalf("new batch numbered %d, the lost store's third was %d", last.Seq, batches[2].Seq)
	}
	// The third batch arrives: it is new here, and the new store's batch is
	// new to a peer that holds all of the lost store's.
	if applied, err := fn.ApplyBatch(ctx, batches[2]); err != nil || !applied {
		t.Fatalf("the lost store's third batch: applied %v, %v", applied, err)
	}
	if applied, err := ln.ApplyBatch(ctx, last); err != nil || !applied {
		t.Fatalf("the new store's batch on a peer: applied %v, %v", applied, err)
	}
	for _, n := range []*Namespace{ln, fn} {
		for _, k := range []string{"a", "b", "c", "d"} {
			if _, ok := getString(n, k); !ok {
				t.Fatalf("key %q missing", k)
			}
		}
	}
	if da, _ := ln.Digest(); da != func() crdt.Digest { d, _ := fn.Digest(); return d }() {
		t.Fatal("replicas differ")
	}
}

// The floor moved past learned numbers holds after a restart: the restart
// neither counts on from them nor announces a skipped range that would
// declare the lost store's batches still on their way deleted.
func TestLearnedDotsOfALostStoreSurviveARestart(t *testing.T) {
	ctx := context.Background()
	lost := memStore(t, Options{Replica: testReplica, IdentityReused: true, Rand: func() uint64 { return ^uint64(0) }})
	ln := mustNS(t, lost, "ns")
	for _, k := range []string{"a", "b", "c"} {
		put(t, ln, k, "lost store")
	}
	batches := logged(t, lost, ln)
	var third crdt.Dot
	batches[2].Delta.StoreDots(func(x crdt.Dot) { third = x })

	d := dssync.MutexWrap(ds.NewMapDatastore())
	opts := Options{Replica: testReplica, IdentityReused: true, Rand: func() uint64 { return 0 }}
	s, err := Open(ctx, d, opts)
	if err != nil {
		t.Fatal(err)
	}
	fn := mustNS(t, s, "ns")
	for _, b := range batches[:2] {
		if applied, err := fn.ApplyBatch(ctx, b); err != nil || !applied {
			t.Fatalf("batch %d: applied %v, %v", b.Seq, applied, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, clean := range []bool{false, true} {
		if !clean {
			if err := ForgetCleanClose(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		s, err = Open(ctx, d, opts)
		if err != nil {
			t.Fatal(err)
		}
		fn = mustNS(t, s, "ns")
		dl, err := fn.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: fmt.Sprintf("after %v", clean), Value: []byte("v")})
		if err != nil {
			t.Fatal(err)
		}
		dl.StoreDots(func(x crdt.Dot) {
			if x.Counter <= third.Counter {
				t.Fatalf("clean %v: dot after the restart %v, the lost store's third %v", clean, x, third)
			}
		})
		for _, b := range logged(t, s, fn) {
			if c := b.Delta.Context(); b.Delta.Len() == 0 && c.Contains(third) {
				t.Fatalf("clean %v: the restart's skip (batch %d) covers the lost store's dot %v", clean, b.Seq, third)
			}
			if b.Seq == batches[2].Seq {
				t.Fatalf("clean %v: batch number %d handed out again", clean, b.Seq)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	s, err = Open(ctx, d, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if applied, err := mustNS(t, s, "ns").ApplyBatch(ctx, batches[2]); err != nil || !applied {
		t.Fatalf("the lost store's third batch after the restarts: applied %v, %v", applied, err)
	}
	if _, ok := getString(mustNS(t, s, "ns"), "c"); !ok {
		t.Fatal("the lost store's third write is not held")
	}
}

// The same holds when the numbers are learned through a state
// reconciliation with a peer instead of batch by batch.
func TestLearnedDotsOfALostStoreThroughState(t *testing.T) {
	ctx := context.Background()
	lost := memStore(t, Options{Replica: testReplica, IdentityReused: true, Rand: func() uint64 { return ^uint64(0) }})
	ln := mustNS(t, lost, "ns")
	for _, k := range []string{"a", "b", "c"} {
		put(t, ln, k, "lost store")
	}
	batches := logged(t, lost, ln)
	var third crdt.Dot
	batches[2].Delta.StoreDots(func(x crdt.Dot) { third = x })
	peer := mustNS(t, memStore(t, Options{Replica: testReplica + 1}), "ns")
	for _, b := range batches[:2] {
		if applied, err := peer.ApplyBatch(ctx, b); err != nil || !applied {
			t.Fatalf("batch %d on the peer: applied %v, %v", b.Seq, applied, err)
		}
	}
	var deltas []crdt.Delta
	var seen, cctx crdt.Context
	peer.View(func(st *crdt.Namespace, sn *crdt.Context) {
		for _, k := range st.Keys("") {
			deltas = append(deltas, st.KeyDelta(k, nil))
		}
		seen, cctx = sn.Clone(), st.Context()
	})
	fn := mustNS(t, memStore(t, Options{Replica: testReplica, IdentityReused: true, Rand: func() uint64 { return 0 }}), "ns")
	if err := fn.ApplyState(ctx, deltas, seen, cctx, fn.RemoteApplies()); err != nil {
		t.Fatal(err)
	}
	d, err := fn.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "d", Value: []byte("new store")})
	if err != nil {
		t.Fatal(err)
	}
	d.StoreDots(func(x crdt.Dot) {
		if x.Counter <= third.Counter {
			t.Fatalf("new dot %v does not clear the lost store's %v", x, third)
		}
	})
	if s := fn.Seen(); s.Contains(crdt.Dot{Replica: testReplica, Counter: batches[2].Seq}) {
		t.Fatalf("batch number %d handed out again", batches[2].Seq)
	}
	if applied, err := fn.ApplyBatch(ctx, batches[2]); err != nil || !applied {
		t.Fatalf("the lost store's third batch: applied %v, %v", applied, err)
	}
}
