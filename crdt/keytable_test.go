package crdt

import (
	"fmt"
	"math"
	"testing"
	"unsafe"
)

// checkPacked fails unless every plain register of n is packed in a cell
// that its map key shares (one heap object per key), every other value is
// boxed, and each reads back as want says: the register's value followed
// by its number of siblings (one digit).
func checkPacked(t *testing.T, n *Namespace, want map[string]string) {
	t.Helper()
	if len(n.keys) != len(want) {
		t.Fatalf("%d keys, want %d", len(n.keys), len(want))
	}
	for k, s := range n.keys {
		v := s.value(k)
		w := want[k]
		if packable(&v) != (s.cell != "") || (s.cell != "") == (s.val != nil) || (w != "" && (w[len(w)-1] == '1') != (s.cell != "")) {
			t.Fatalf("key %q: packable %v, cell %d bytes, boxed %v", k, packable(&v), len(s.cell), s.val != nil)
		}
		if s.cell != "" && unsafe.StringData(k) != unsafe.StringData(s.cell[cellHeader:]) {
			t.Fatalf("key %q: the map's key is not the cell's own (it keeps another string alive)", k)
		}
		got, sib, ok := v.Register()
		if w == "" || !ok || string(got) != w[:len(w)-1] || sib != int(w[len(w)-1]-'0') {
			t.Fatalf("key %q: %q with %d siblings (ok %v), want %q", k, got, sib, ok, w)
		}
	}
}

// TestPlainRegistersArePacked: a plain register, written locally or
// received, overwritten or made concurrent and then resolved, is one
// packed cell whenever it has one entry, and reads back the same as a
// boxed value would.
func TestPlainRegistersArePacked(t *testing.T) {
	a, b := newReplica(t, 1), newReplica(t, 2)
	b.recv(a.do(Op{Kind: OpPut, Key: "k", Value: []byte("v1")}))
	b.recv(a.do(Op{Kind: OpPut, Key: "other", Value: []byte("o")}))
	checkPacked(t, b.ns, map[string]string{"k": "v11", "other": "o1"})
	old, _ := b.ns.Get("k")

	// An overwrite received: a new cell, and the value read before stays.
	b.recv(a.do(Op{Kind: OpPut, Key: "k", Value: []byte("v2")}))
	checkPacked(t, b.ns, map[string]string{"k": "v21", "other": "o1"})
	if v, _, _ := old.Register(); string(v) != "v1" {
		t.Fatalf("a value read earlier changed to %q", v)
	}

	// Concurrent writes: two siblings, boxed; b's later clock wins.
	b.now = 5_000
	db := b.do(Op{Kind: OpPut, Key: "k", Value: []byte("b")})
	da := a.do(Op{Kind: OpPut, Key: "k", Value: []byte("a")})
	b.recv(da)
	checkPacked(t, b.ns, map[string]string{"k": "b2", "other": "o1"})
	a.recv(db)
	checkPacked(t, a.ns, map[string]string{"k": "b2", "other": "o1"})

	// A write that observed both resolves them: packed again.
	b.recv(a.do(Op{Kind: OpPut, Key: "k", Value: []byte("v3")}))
	checkPacked(t, b.ns, map[string]string{"k": "v31", "other": "o1"})

	// A batch applied again changes nothing; a delete removes the cell.
	d := a.do(Op{Kind: OpDelete, Key: "other"})
	b.recv(d, d)
	checkPacked(t, b.ns, map[string]string{"k": "v31"})

	// The packed state is the state: same digest and encoding as the
	// writer's, through a clone, a join and a decode.
	if a.ns.Digest() != b.ns.Digest() {
		t.Fatal("digests differ")
	}
	c := NewNamespace(Limits{})
	c.Join(b.ns.Clone())
	dec, err := DecodeNamespace(b.ns.Encode(nil), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	// Restore: how a store loads its state records at open.
	restored := NewNamespace(Limits{})
	restored.RestoreContext(b.ns.Context())
	b.ns.Range(func(k string, v Value) bool {
		if err := restored.Restore(k, v); err != nil {
			t.Fatal(err)
		}
		return true
	})
	for _, n := range []*Namespace{c, dec, restored} {
		checkPacked(t, n, map[string]string{"k": "v31"})
		if !n.Equal(b.ns) {
			t.Fatal("copy differs")
		}
	}
}

// TestMixedValueLosingItsCounterIsPacked: a register that shared its key
// with a concurrent counter is boxed; once the counter is removed (here by
// its writer's dot-skip announcement) it is a plain register again, and
// packed.
func TestMixedValueLosingItsCounterIsPacked(t *testing.T) {
	a, b := newReplica(t, 1), newReplica(t, 2)
	dp := a.do(Op{Kind: OpPut, Key: "k", Value: []byte("v")})
	dc := b.do(Op{Kind: OpCounterAdd, Key: "k", N: 1})
	a.recv(dc)
	if s := a.ns.keys["k"]; s.val == nil {
		t.Fatal("a register with a counter beside it is not boxed")
	}
	b.recv(dp)
	var skipped Context
	skipped.AddRange(2, 1, 1<<40)
	a.recvBatch(ContextDelta(skipped))
	checkPacked(t, a.ns, map[string]string{"k": "v1"})
}

// TestCellRoundTrip: a cell gives back every field of the entry it packs,
// at the ends of each field's range.
func TestCellRoundTrip(t *testing.T) {
	for _, c := range []struct {
		key string
		e   RegEntry
	}{
		{"", RegEntry{}},
		{"k", RegEntry{Dot: Dot{^ReplicaID(0), math.MaxUint64}, Time: Timestamp{Wall: math.MaxInt64, Logical: math.MaxUint32}, Value: "v"}},
		{"key/with/\x00", RegEntry{Dot: Dot{1, 1}, Time: Timestamp{Wall: math.MinInt64, Logical: 1 << 31}, Value: string(make([]byte, 4096))}},
		{"k", RegEntry{Dot: Dot{0x0102030405060708, 0x1112131415161718}, Time: Timestamp{Wall: -1, Logical: 0x21222324}, Value: ""}},
	} {
		cell := newCell(c.key, &c.e)
		if got := cellKey(cell, len(c.key)); got != c.key {
			t.Errorf("key %q came back as %q", c.key, got)
		}
		if got := cellEntry(cell, len(c.key)); got != c.e {
			t.Errorf("entry %+v came back as %+v", c.e, got)
		}
		if got := cellDot(cell); got != c.e.Dot {
			t.Errorf("dot %v came back as %v", c.e.Dot, got)
		}
	}
}

// TestPackedReadsDoNotAllocate: a batch applied again, and the digest of
// a packed namespace, unpack nothing onto the heap.
func TestPackedReadsDoNotAllocate(t *testing.T) {
	a, b := newReplica(t, 1), newReplica(t, 2)
	var ds []Delta
	for i := range 64 {
		ds = append(ds, a.do(Op{Kind: OpPut, Key: fmt.Sprintf("key-%d", i), Value: []byte("value")}))
	}
	batch := JoinDeltas(ds...)
	b.recv(batch)
	if n := testing.AllocsPerRun(20, func() { b.ns.ApplyDelta(batch, nil) }); n != 0 {
		t.Errorf("applying a held batch again: %.0f allocations", n)
	}
	if n := testing.AllocsPerRun(20, func() { _ = b.ns.Digest() }); n > 2 {
		t.Errorf("digest of 64 packed keys: %.0f allocations", n)
	}
}

// TestJoinCellMatchesJoinValue: the packed fast path gives what the
// general join gives, for every way one register entry can meet another.
func TestJoinCellMatchesJoinValue(t *testing.T) {
	e1 := RegEntry{Dot: Dot{1, 5}, Time: Timestamp{Wall: 10}, Value: "one"}
	e2 := RegEntry{Dot: Dot{2, 7}, Time: Timestamp{Wall: 20}, Value: "two"}
	forged := RegEntry{Dot: e1.Dot, Time: Timestamp{Wall: 99}, Value: "forged"}
	otherValue := RegEntry{Dot: e1.Dot, Time: e1.Time, Value: "other"}
	otherTime := RegEntry{Dot: e1.Dot, Time: Timestamp{Wall: 10, Logical: 1}, Value: e1.Value}
	cases := []struct {
		name   string
		b      RegEntry
		ctxB   Context
		stateC Context
	}{
		{"overwrite", e2, ContextOf(e1.Dot, e2.Dot), ContextOf(e1.Dot)},
		{"old batch again", e1, ContextOf(e1.Dot), ContextOf(e1.Dot)},
		{"outdated", e2, ContextOf(e2.Dot), ContextOf(e1.Dot, e2.Dot)},
		{"concurrent", e2, ContextOf(e2.Dot), ContextOf(e1.Dot)},
		{"removed both", e2, ContextOf(e1.Dot, e2.Dot), ContextOf(e1.Dot, e2.Dot)},
		{"same dot, other payload", forged, ContextOf(e1.Dot), ContextOf(e1.Dot)},
		{"same dot and time, other value", otherValue, ContextOf(e1.Dot), ContextOf(e1.Dot)},
		{"same dot and value, other time", otherTime, ContextOf(e1.Dot), ContextOf(e1.Dot)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			delta := Delta{ctx: c.ctxB, entries: []entry{{key: "k", val: Value{reg: []RegEntry{c.b}}}}}
			fast := NewNamespace(Limits{})
			fast.ctx = c.stateC.Clone()
			fast.set("k", Value{reg: []RegEntry{e1}})
			slow := fast.Clone()
			slow.keys["k"] = slot{val: holdValue(Value{reg: []RegEntry{e1}})} // boxed: no fast path
			var fastChanged, slowChanged Value
			fast.ApplyDelta(delta, func(_ string, v Value) { fastChanged = v })
			slow.ApplyDelta(delta, func(_ string, v Value) { slowChanged = v })
			if !fast.Equal(slow) || string(fastChanged.Encode(nil)) != string(slowChanged.Encode(nil)) {
				t.Fatalf("packed join gave %v (reported %v), boxed %v (reported %v)", fast.value("k"), fastChanged, slow.value("k"), slowChanged)
			}
		})
	}
}
