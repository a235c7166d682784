package crdt

import (
	"encoding/binary"
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
	for k, s := range kt.other {
		if s.cell == "" || len(s.cell) > maxSlabCell {
			continue
		}
		// A cell a slab could take is kept apart only when its key's hash
		// was another key's when it was written (that key may be gone
		// since: the cell stays where it is until rewritten).
		r, ok := kt.index[hashKey(k)]
		if !ok && !colliding {
			t.Fatalf("key %q: a %d-byte cell outside the slabs, its hash free", k, len(s.cell))
		}
		if ok {
			if cell, klen, _ := kt.cellAt(r); cellKey(cell, klen) == k {
				t.Fatalf("key %q: in the index and in other", k)
			}
		}
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
	// 64 hash values for 300 keys: most keys collide with the one the
	// index holds under their hash and live in other, as a hostile
	// writer's colliding keys would.
	t.Run("colliding", func(t *testing.T) {
		hashKey, colliding = func(k string) uint64 { return keyHash(k) % 64 }, true
		defer func() { hashKey, colliding = keyHash, false }()
		testKeyTableMatchesAMap(t)
	})
}

// colliding is set while hashKey makes collisions.
var colliding bool

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
		num := next(300)
		key := fmt.Sprintf("key-%d", num)
		if num%7 == 0 { // lengths around a uvarint's one-byte limit
			key += strings.Repeat("k", 127+num%3-len(key))
		}
		switch op := next(20); {
		case op < 12:
			val := fmt.Sprintf("v%d-%s", step, make([]byte, next(200)))
			switch next(50) {
			case 0:
				val += string(make([]byte, maxSlabCell)) // too large for a slab
			case 1, 2: // the largest cell a slab takes, and one byte more
				val = fmt.Sprintf("%*d", maxSlabCell-cellHeader-len(key)+next(2), step)
			case 3:
				val = ""
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
			// Clones all along, some right after a run of overwrites
			// (the slab being filled mostly garbage): up to six tables,
			// then a clone replaces one.
			if next(3) == 0 {
				for i := range 20 {
					tb.kt.set(key, Value{reg: []RegEntry{{Dot: Dot{1, uint64(step*100 + i + 1)}, Value: "again"}}})
				}
				tb.want[key] = "again"
			}
			c := &table{kt: tb.kt.clone(), want: maps.Clone(tb.want)}
			if len(tables) < 6 {
				tables = append(tables, c)
			} else {
				tables[next(len(tables))] = c
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

// inSlab reports whether s's bytes lie in one of n's slabs.
func inSlab(n *Namespace, s string) bool {
	p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
	for _, slab := range n.keys.slabs {
		if b := uintptr(unsafe.Pointer(unsafe.StringData(slab))); slab != "" && p >= b && p < b+uintptr(len(slab)) {
			return true
		}
	}
	return false
}

// TestKeptValuesHoldNoSlab: what outlives a read keeps no slab (up to 64
// KiB) alive: a box made by joining a packed register with a concurrent
// write copies the packed entry's value out, and Value.Clone copies
// register values; Get, Keys and Range share the slab, for reads that
// end under the caller's lock.
func TestKeptValuesHoldNoSlab(t *testing.T) {
	a, b := newReplica(t, 1), newReplica(t, 2)
	for i := range 100 {
		a.do(Op{Kind: OpPut, Key: fmt.Sprintf("key-%03d", i), Value: []byte("from-a")})
	}
	a.recv(b.do(Op{Kind: OpPut, Key: "key-007", Value: []byte("from-b")}))
	s := a.ns.keys.at("key-007")
	if s.val == nil || len(s.val.reg) != 2 {
		t.Fatalf("concurrent writes: %+v, want two boxed siblings", s)
	}
	for _, e := range s.val.reg {
		if inSlab(a.ns, e.Value) {
			t.Fatalf("the box's entry %q lies in a slab", e.Value)
		}
	}
	shared := 0
	for _, k := range a.ns.Keys("") {
		v, _ := a.ns.Get(k)
		got, _ := v.RegisterString()
		if inSlab(a.ns, k) && inSlab(a.ns, got) {
			shared++
		}
		kept, _ := v.Clone().RegisterString()
		if kept != got || inSlab(a.ns, kept) {
			t.Fatalf("key %q: clone %q of %q, in a slab %v", k, kept, got, inSlab(a.ns, kept))
		}
	}
	if shared != 99 {
		t.Fatalf("%d of 99 packed keys read from their slab: the test no longer sees the slabs", shared)
	}
}

// TestClonesReadWhileTheOriginalWrites: a clone shares the original's
// slabs, including the one the original goes on filling; reading the
// clone in another goroutine while the original writes is no race (run
// with -race), and neither sees the other's writes.
func TestClonesReadWhileTheOriginalWrites(t *testing.T) {
	a := newReplica(t, 1)
	for i := range 50 {
		a.do(Op{Kind: OpPut, Key: fmt.Sprintf("key-%03d", i), Value: []byte("before")})
	}
	c := a.ns.Clone()
	want := c.Digest()
	done := make(chan string)
	go func() {
		for range 200 {
			if c.Digest() != want {
				done <- "the clone changed"
				return
			}
			for _, k := range c.Keys("") {
				if v, _ := c.Get(k); v.IsEmpty() {
					done <- "key " + k + " lost"
					return
				}
			}
		}
		done <- ""
	}()
	for i := range 2000 {
		a.do(Op{Kind: OpPut, Key: fmt.Sprintf("key-%03d", i%80), Value: []byte(fmt.Sprintf("after-%d", i))})
	}
	if msg := <-done; msg != "" {
		t.Fatal(msg)
	}
	if v, _ := a.ns.Get("key-001"); v.IsEmpty() || c.Len() != 50 || a.ns.Len() != 80 {
		t.Fatalf("original %d keys, clone %d", a.ns.Len(), c.Len())
	}
	checkTable(t, &a.ns.keys)
	checkTable(t, &c.keys)
}

// TestJoinMovesKeysBetweenIndexAndOther: a join whose keys go from packed
// to packed (half of them, so slabs are compacted while it ranges over
// them) and from packed to boxed gives the same state in either direction.
func TestJoinMovesKeysBetweenIndexAndOther(t *testing.T) {
	a, b := newReplica(t, 1), newReplica(t, 2)
	for i := range 3000 {
		k := fmt.Sprintf("key-%04d", i)
		d := a.do(Op{Kind: OpPut, Key: k, Value: []byte(fmt.Sprintf("a-%d", i))})
		switch i % 4 {
		case 0, 1: // b overwrites it: packed to packed
			b.recv(d)
			b.do(Op{Kind: OpPut, Key: k, Value: []byte("b")})
		case 2: // b writes concurrently: packed to boxed siblings
			b.do(Op{Kind: OpPut, Key: k, Value: []byte("b")})
		case 3: // a counter beside the register: packed to boxed
			b.do(Op{Kind: OpCounterAdd, Key: k, N: 1})
		}
	}
	ab, ba := a.ns.Clone(), b.ns.Clone()
	ab.Join(b.ns)
	ba.Join(a.ns)
	if !ab.Equal(ba) || ab.Digest() != ba.Digest() {
		t.Fatal("the two joins differ")
	}
	checkTable(t, &ab.keys)
	checkTable(t, &ba.keys)
	for _, n := range []*Namespace{ab, ba} {
		for k, s := range n.keys.other {
			if inSlab(n, k) || (s.val != nil && len(s.val.reg) > 0 && inSlab(n, s.val.reg[0].Value)) {
				t.Fatalf("boxed key %q keeps a slab alive", k)
			}
		}
	}
	if len(ab.keys.other) != 1500 || len(ab.keys.index) != 1500 || len(ab.keys.free) == 0 {
		t.Fatalf("%d keys boxed, %d packed, %d slabs dropped: the test no longer moves keys or compacts", len(ab.keys.other), len(ab.keys.index), len(ab.keys.free))
	}
}

// TestKeyHashKeepsEarlierChunks: a chunk that zeroes the multiply (equal
// to the mixing constant) does not erase what came before it, and 200,000
// ordinary keys do not collide. Collisions cost speed only, but a hash
// that a single chunk resets would make them free to produce.
func TestKeyHashKeepsEarlierChunks(t *testing.T) {
	var m1 [8]byte
	binary.LittleEndian.PutUint64(m1[:], 0xa0761d6478bd642f)
	if a, b := keyHash("AAAAAAAA"+string(m1[:])+"tail"), keyHash("BBBBBBBB"+string(m1[:])+"tail"); a == b {
		t.Fatalf("keys differing before a zeroing chunk collide: %x", a)
	}
	seen := make(map[uint64]string, 200_000)
	for i := range 200_000 {
		k := fmt.Sprintf("/user/%d/profile", i)
		if o, ok := seen[keyHash(k)]; ok {
			t.Fatalf("%q and %q collide", k, o)
		}
		seen[keyHash(k)] = k
	}
}
