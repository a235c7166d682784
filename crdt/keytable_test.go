package crdt

import (
	"fmt"
	"maps"
	"math"
	"strings"
	"testing"
	"unsafe"
)

// checkPacked fails unless every plain register of n is packed in a slab
// cell the index finds it by, every other value is boxed, and each reads
// back as want says: the register's value followed by its number of
// siblings (one digit).
func checkPacked(t *testing.T, n *Namespace, want map[string]string) {
	t.Helper()
	if n.keys.len() != len(want) {
		t.Fatalf("%d keys, want %d", n.keys.len(), len(want))
	}
	for k, s := range n.keys.other {
		if s.cell != "" {
			t.Fatalf("key %q: a small register's cell is outside the slabs", k)
		}
		if unsafe.StringData(k) == nil {
			t.Fatalf("key %q: empty key", k)
		}
	}
	n.keys.each(func(k string, s slot) bool {
		v := s.value(k)
		w := want[k]
		if packable(&v) != (s.cell != "") || (s.cell != "") == (s.val != nil) || (w != "" && (w[len(w)-1] == '1') != (s.cell != "")) {
			t.Fatalf("key %q: packable %v, cell %d bytes, boxed %v", k, packable(&v), len(s.cell), s.val != nil)
		}
		if s.cell != "" {
			if r, ok := n.keys.index[hashKey(k)]; !ok {
				t.Fatalf("key %q: packed but not in the index", k)
			} else if cell, _, _ := n.keys.cellAt(r); unsafe.StringData(cell) != unsafe.StringData(s.cell) {
				t.Fatalf("key %q: read from elsewhere than its index entry", k)
			}
		}
		got, sib, ok := v.Register()
		if w == "" || !ok || string(got) != w[:len(w)-1] || sib != int(w[len(w)-1]-'0') {
			t.Fatalf("key %q: %q with %d siblings (ok %v), want %q", k, got, sib, ok, w)
		}
		return true
	})
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
	if s := a.ns.keys.at("k"); s.val == nil {
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
			slow.keys.del("k")
			slow.keys.other["k"] = slot{val: holdValue(Value{reg: []RegEntry{e1}})} // boxed: no fast path
			var fastChanged, slowChanged Value
			fast.ApplyDelta(delta, func(_ string, v Value) { fastChanged = v })
			slow.ApplyDelta(delta, func(_ string, v Value) { slowChanged = v })
			if !fast.Equal(slow) || string(fastChanged.Encode(nil)) != string(slowChanged.Encode(nil)) {
				t.Fatalf("packed join gave %v (reported %v), boxed %v (reported %v)", fast.value("k"), fastChanged, slow.value("k"), slowChanged)
			}
		})
	}
}

// checkTable fails unless t's bookkeeping holds: every index entry is a
// live cell under its own key's hash, each slab's live count is the bytes
// of the cells the index refers to in it, every slab but the one being
// filled is at least half live, every dropped slab's number is free for
// reuse, and no key is both packed and in other.
func checkTable(t *testing.T, kt *keyTable) {
	t.Helper()
	live := make([]int, len(kt.slabs))
	for h, r := range kt.index {
		if r.slab() >= len(kt.slabs) || kt.slabs[r.slab()] == "" {
			t.Fatalf("index entry %x refers to dropped slab %d", h, r.slab())
		}
		cell, klen, size := kt.cellAt(r)
		key := cellKey(cell, klen)
		if hashKey(key) != h {
			t.Fatalf("index entry %x holds key %q of hash %x", h, key, hashKey(key))
		}
		if _, ok := kt.other[key]; ok {
			t.Fatalf("key %q is both packed and in other", key)
		}
		live[r.slab()] += size
	}
	dropped := 0
	for i, s := range kt.slabs {
		if s == "" {
			dropped++
		}
		if live[i] != kt.live[i] {
			t.Fatalf("slab %d: %d live bytes counted, %d referred to", i, kt.live[i], live[i])
		}
		if s != "" && i != kt.filling && 2*live[i] < len(s) {
			t.Fatalf("slab %d: %d of %d bytes live, not compacted", i, live[i], len(s))
		}
	}
	if dropped != len(kt.free) {
		t.Fatalf("%d slabs dropped, %d numbers free for reuse", dropped, len(kt.free))
	}
}

// TestKeyTableMatchesAMap: random puts (small, large, boxed), overwrites,
// deletes and clones over a small key space, checked against a plain map
// and the table's own bookkeeping after every step, on both the table
// and the clones taken along the way.
func TestKeyTableMatchesAMap(t *testing.T) {
	t.Run("keyHash", testKeyTableMatchesAMap)
	// Four hash values for 300 keys: most keys collide with the one the
	// index holds under their hash and live in other, as a hostile
	// writer's colliding keys would.
	t.Run("colliding", func(t *testing.T) {
		hashKey = func(k string) uint64 { return uint64(len(k)+int(k[len(k)-1])) % 4 }
		defer func() { hashKey = keyHash }()
		testKeyTableMatchesAMap(t)
	})
}

func testKeyTableMatchesAMap(t *testing.T) {
	type table struct {
		kt   keyTable
		want map[string]string // "" for a boxed counter
	}
	tables := []*table{{kt: newKeyTable(0), want: map[string]string{}}}
	rng := uint64(1)
	next := func(n int) int {
		rng ^= rng << 13
		rng ^= rng >> 7
		rng ^= rng << 17
		return int(rng % uint64(n))
	}
	var held [][2]string // cells read along the way, and copies of them
	for step := range 20_000 {
		tb := tables[next(len(tables))]
		key := fmt.Sprintf("key-%d", next(300))
		switch op := next(20); {
		case op < 12:
			val := fmt.Sprintf("v%d-%s", step, make([]byte, next(200)))
			if next(50) == 0 {
				val += string(make([]byte, maxSlabCell)) // too large for a slab
			}
			tb.kt.set(key, Value{reg: []RegEntry{{Dot: Dot{1, uint64(step + 1)}, Value: val}}})
			tb.want[key] = val
		case op < 14:
			tb.kt.set(key, Value{ext: &valueExt{ctr: []counterEntry{{Dot: Dot{2, uint64(step + 1)}, N: int64(step)}}}})
			tb.want[key] = ""
		case op < 19:
			tb.kt.del(key)
			delete(tb.want, key)
		default:
			if len(tables) < 6 {
				tables = append(tables, &table{kt: tb.kt.clone(), want: maps.Clone(tb.want)})
			}
		}
		for _, tb := range tables {
			checkTable(t, &tb.kt)
			if tb.kt.len() != len(tb.want) {
				tb.kt.each(func(k string, s slot) bool {
					if !hasKey(tb.want, k) {
						t.Logf("extra %q cell %d val %v", k, len(s.cell), s.val != nil)
					}
					return true
				})
				t.Fatalf("step %d: %d keys, want %d", step, tb.kt.len(), len(tb.want))
			}
		}
		if s, ok := tb.kt.lookup(key); ok && s.cell != "" && step%50 == 0 {
			held = append(held, [2]string{s.cell, strings.Clone(s.cell)})
		}
		if s, ok := tb.kt.lookup(key); ok != (tb.want[key] != "" || hasKey(tb.want, key)) {
			t.Fatalf("step %d: key %q present %v", step, key, ok)
		} else if w := tb.want[key]; ok && w != "" && cellEntry(s.cell, len(key)).Value != w && (s.val == nil || s.val.reg[0].Value != w) {
			t.Fatalf("step %d: key %q has another value", step, key)
		}
	}
	// Cells read earlier never change, although their slabs were compacted
	// and their numbers reused; and compaction keeps the slabs at most
	// twice the live cells (plus the slab being filled).
	for _, h := range held {
		if h[0] != h[1] {
			t.Fatalf("a cell read earlier changed: %.40q, was %.40q", h[0], h[1])
		}
	}
	for _, tb := range tables {
		var written, live int
		for i, s := range tb.kt.slabs {
			written, live = written+len(s), live+tb.kt.live[i]
		}
		if written > 2*live+maxSlab {
			t.Fatalf("slabs hold %d bytes for %d live", written, live)
		}
		for k, w := range tb.want {
			s, ok := tb.kt.lookup(k)
			if !ok {
				t.Fatalf("key %q lost", k)
			}
			v := s.value(k)
			if got, _, isReg := v.Register(); w != "" && (!isReg || string(got) != w) {
				t.Fatalf("key %q: %.20q, want %.20q", k, got, w)
			}
		}
	}
}

func hasKey(m map[string]string, k string) bool { _, ok := m[k]; return ok }

// TestKeysAndGetCopyOutOfSlabs: keys from Keys and values from Get are
// copies, so a caller keeping one does not keep a slab (up to 64 KiB)
// alive; the package's own reads (Range) share the slab instead.
func TestKeysAndGetCopyOutOfSlabs(t *testing.T) {
	a := newReplica(t, 1)
	for i := range 100 {
		a.do(Op{Kind: OpPut, Key: fmt.Sprintf("key-%03d", i), Value: []byte("value")})
	}
	inSlab := func(s string) bool {
		p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
		for _, slab := range a.ns.keys.slabs {
			if b := uintptr(unsafe.Pointer(unsafe.StringData(slab))); slab != "" && p >= b && p < b+uintptr(len(slab)) {
				return true
			}
		}
		return false
	}
	keys := a.ns.Keys("")
	if len(keys) != 100 {
		t.Fatalf("%d keys", len(keys))
	}
	for _, k := range keys {
		v, _ := a.ns.Get(k)
		got, ok := v.RegisterString()
		if !ok || got != "value" || inSlab(k) || inSlab(got) {
			t.Fatalf("key %q: value %q, key in a slab %v, value in a slab %v", k, got, inSlab(k), inSlab(got))
		}
	}
	shared := 0
	a.ns.Range(func(k string, v Value) bool {
		if got, _ := v.RegisterString(); inSlab(k) && inSlab(got) {
			shared++
		}
		return true
	})
	if shared != 100 {
		t.Fatalf("Range shared %d of 100 keys' cells: the test no longer sees the slabs", shared)
	}
}
