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
