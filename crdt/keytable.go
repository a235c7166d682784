package crdt

import (
	"encoding/binary"
	"maps"
	"math/bits"
	"slices"
	"strings"
)

// slot is what a namespace's key table holds for one key, as a lookup
// returns it. A plain register (one entry, nothing else) is packed with its
// key into cell: in a slab of the table (see keyTable), or, too large for
// one, a string of its own. Every other value is boxed in val.
type slot struct {
	cell string // a plain register: cellHeader, the key, the value
	val  *Value // anything else, boxed by holdValue
}

// cellHeader is the size of a cell's fixed part: the entry's dot (replica,
// counter) and time (wall, logical), little-endian.
const cellHeader = 8 + 8 + 8 + 4

// putCellHeader writes e's dot and time as a cell's header.
func putCellHeader(h *[cellHeader]byte, e *RegEntry) {
	binary.LittleEndian.PutUint64(h[0:], uint64(e.Dot.Replica))
	binary.LittleEndian.PutUint64(h[8:], e.Dot.Counter)
	binary.LittleEndian.PutUint64(h[16:], uint64(e.Time.Wall))
	binary.LittleEndian.PutUint32(h[24:], e.Time.Logical)
}

// newCell packs key and the register entry e into one string of its own.
func newCell(key string, e *RegEntry) string {
	var h [cellHeader]byte
	putCellHeader(&h, e)
	var b strings.Builder // String does not copy
	b.Grow(cellHeader + len(key) + len(e.Value))
	b.Write(h[:])
	b.WriteString(key)
	b.WriteString(e.Value)
	return b.String()
}

// cellKey returns the key packed in cell, whose length is klen: a
// substring, so the key map's key shares the cell's memory.
func cellKey(cell string, klen int) string { return cell[cellHeader : cellHeader+klen] }

// cellDot returns the dot of the entry packed in cell.
func cellDot(cell string) Dot {
	return Dot{
		Replica: ReplicaID(le64(cell[0:8])),
		Counter: le64(cell[8:16]),
	}
}

// cellEntry returns the entry packed in cell under a key of length klen.
// Its value is a substring of the cell: no copy.
func cellEntry(cell string, klen int) RegEntry {
	return RegEntry{
		Dot: cellDot(cell),
		Time: Timestamp{
			Wall:    int64(le64(cell[16:24])),
			Logical: uint32(cell[24]) | uint32(cell[25])<<8 | uint32(cell[26])<<16 | uint32(cell[27])<<24,
		},
		Value: cell[cellHeader+klen:],
	}
}

// le64 reads a little-endian uint64 from the first 8 bytes of s, without
// the copy a []byte conversion makes (the compiler turns it into one load).
func le64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// value returns the value s holds under key. A packed register's entry is
// returned in a slice of its own, so the caller may keep or change it.
func (s slot) value(key string) Value {
	if s.cell != "" {
		return Value{reg: []RegEntry{cellEntry(s.cell, len(key))}}
	}
	return s.read(key, nil)
}

// read is value for a caller that only looks at the value while one is
// in use: a packed register's entry is unpacked into one, so reading costs
// no allocation when one does not escape.
func (s slot) read(key string, one *[1]RegEntry) Value {
	switch {
	case s.val != nil:
		return *s.val
	case s.cell == "":
		return Value{}
	}
	one[0] = cellEntry(s.cell, len(key))
	return Value{reg: one[:]}
}

// dots calls fn with every dot of the value s holds.
func (s slot) dots(fn func(Dot)) {
	if s.val != nil {
		s.val.Dots(fn)
	} else if s.cell != "" {
		fn(cellDot(s.cell))
	}
}

// packable reports whether v is a plain register, which a cell can hold.
func packable(v *Value) bool { return len(v.reg) == 1 && v.ext == nil }

// set stores the non-empty value v under key, packed if it can be.
func (n *Namespace) set(key string, v Value) { n.keys.set(key, v) }

// keyTable is a namespace's key map. Packed registers live in slabs: a few
// large strings that their cells are appended to, found through index, a
// map from the key's hash to where its cell is. Neither holds a pointer
// per key, so the garbage collector neither scans the index nor marks the
// cells one by one: on a store holding millions of keys, marking one heap
// object per key (what a map of strings costs) was still 15% of the
// cluster benchmark's CPU. Boxed values, cells too large for a slab, and a
// key whose hash a packed key already holds (a collision, which a
// deterministic hash lets anyone make) are kept in other, a map of
// strings as before. A key is in one of the two, never both.
//
// Slabs are append-only and a cell is never changed: a replaced or
// removed cell is garbage until its slab has lost half its bytes, when
// the live cells left are copied to the slab being filled and the slab is
// dropped. Strings read from a table (cells, and keys and values in them)
// stay valid for as long as they are held, and hold their slab's memory.
type keyTable struct {
	index map[uint64]cellRef // packed registers, by keyHash
	other map[string]slot
	slabs []string // cells, as written; "" for a dropped slab
	live  []int    // bytes of each slab's cells index still refers to
	free  []int    // dropped slabs' numbers, for reuse
	// fill builds slab number filling, the one appended to (-1: none).
	// A clone has the number but no builder: that slab is its original's,
	// so its first append starts a slab of its own.
	fill    *strings.Builder
	filling int
}

// cellRef is where a cell is: slab number and offset, 32 bits each.
type cellRef uint64

func (r cellRef) slab() int   { return int(r >> 32) }
func (r cellRef) offset() int { return int(uint32(r)) }

const (
	minSlab     = 1 << 10  // the first slab's size; each next doubles
	maxSlab     = 64 << 10 // size of a slab: small enough to drop often
	maxSlabCell = 8 << 10  // larger cells are heap strings in other
)

func newKeyTable(size int) keyTable {
	return keyTable{index: make(map[uint64]cellRef, size), other: make(map[string]slot), filling: -1}
}

// hashKey is the index's hash: keyHash, or in tests one that collides.
var hashKey = keyHash

// keyHash hashes a key for the index: deterministic (crdt draws no
// randomness), 8 bytes per 128-bit multiply; collisions cost a map
// lookup more, never a wrong answer.
func keyHash(k string) uint64 {
	const m1, m2 = 0xa0761d6478bd642f, 0xe7037ed1a0b428db
	h := uint64(len(k)) ^ m2
	for len(k) >= 8 {
		hi, lo := bits.Mul64(le64(k)^m1, h^m2)
		h ^= hi ^ lo // a zero product (a chunk equal to m1) keeps the state
		k = k[8:]
	}
	var t uint64
	for i := 0; i < len(k); i++ {
		t |= uint64(k[i]) << (8 * i)
	}
	hi, lo := bits.Mul64(t^m1, h^m2)
	hi, lo = bits.Mul64(hi^lo^m2, m1)
	return hi ^ lo
}

// cellAt returns the cell at r, the length of its key, and the bytes it
// takes in its slab: a cell there is prefixed with the lengths of its key
// and value, as uvarints.
func (t *keyTable) cellAt(r cellRef) (cell string, klen, size int) {
	s := t.slabs[r.slab()][r.offset():]
	k, n1 := uvarintString(s)
	v, n2 := uvarintString(s[n1:])
	end := n1 + n2 + cellHeader + int(k) + int(v)
	return s[n1+n2 : end], int(k), end
}

// uvarintString is binary.Uvarint for a string; written cells are well
// formed, so it does not check for overflow.
func uvarintString(s string) (uint64, int) {
	var x uint64
	for i := 0; ; i++ {
		b := s[i]
		x |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			return x, i + 1
		}
	}
}

// lookup returns the slot under key and whether the key is there.
func (t *keyTable) lookup(key string) (slot, bool) {
	if r, ok := t.index[hashKey(key)]; ok {
		if cell, klen, _ := t.cellAt(r); klen == len(key) && cellKey(cell, klen) == key {
			return slot{cell: cell}, true
		}
	}
	if len(t.other) == 0 {
		return slot{}, false
	}
	s, ok := t.other[key]
	return s, ok
}

// at returns the slot under key: the zero slot when key has no value.
func (t *keyTable) at(key string) slot {
	s, _ := t.lookup(key)
	return s
}

func (t *keyTable) len() int { return len(t.index) + len(t.other) }

// set stores the non-empty value v under key, packed if it can be.
func (t *keyTable) set(key string, v Value) {
	h := hashKey(key)
	old, inIndex := t.index[h]
	mine, oldSize := false, 0
	if inIndex {
		cell, klen, size := t.cellAt(old)
		mine, oldSize = klen == len(key) && cellKey(cell, klen) == key, size
	}
	if mine {
		// Out of the index before anything is appended: a slab compacted
		// meanwhile must not copy the old cell.
		delete(t.index, h)
		t.release(old, oldSize)
	}
	if packable(&v) {
		e := &v.reg[0]
		if size := cellHeader + len(key) + len(e.Value); size <= maxSlabCell && (mine || !inIndex) {
			if !mine && len(t.other) > 0 {
				delete(t.other, key)
			}
			t.index[h] = t.appendCell(key, e)
			return
		}
		cell := newCell(key, e)
		// The cell's own substring as the map's key (string keys are
		// rewritten on assignment): the caller's key is not kept alive.
		t.other[cellKey(cell, len(key))] = slot{cell: cell}
		return
	}
	// Copies of the key and of the register entries' values: they may be
	// part of a slab (a packed entry joined with a concurrent one), which
	// the box would keep alive long after the slab is dropped.
	v.reg = copyEntries(v.reg)
	t.other[strings.Clone(key)] = slot{val: holdValue(v)}
}

// del removes key.
func (t *keyTable) del(key string) {
	h := hashKey(key)
	if r, ok := t.index[h]; ok {
		if cell, klen, size := t.cellAt(r); klen == len(key) && cellKey(cell, klen) == key {
			delete(t.index, h)
			t.release(r, size)
			return
		}
	}
	delete(t.other, key)
}

// appendCell writes key's cell to the slab being filled, starting a new
// one when it has no room, and returns where.
func (t *keyTable) appendCell(key string, e *RegEntry) cellRef {
	var pre [2 * binary.MaxVarintLen64]byte
	p := binary.PutUvarint(pre[:], uint64(len(key)))
	p += binary.PutUvarint(pre[p:], uint64(len(e.Value)))
	size := p + cellHeader + len(key) + len(e.Value)
	if t.fill == nil || t.fill.Cap()-t.fill.Len() < size {
		t.startSlab(size)
	}
	off := t.fill.Len()
	var h [cellHeader]byte
	putCellHeader(&h, e)
	t.fill.Write(pre[:p])
	t.fill.Write(h[:])
	t.fill.WriteString(key)
	t.fill.WriteString(e.Value)
	// The builder never changes bytes it has written and, having room
	// (startSlab sizes the slab for the cells it moves in and this one),
	// does not move them: its String shares them, and so do the cells
	// sliced from it. Were it to move them, refs (offsets) would still
	// hold, and strings read before would keep the old copy.
	t.slabs[t.filling] = t.fill.String()
	t.live[t.filling] += size
	return cellRef(uint64(t.filling)<<32 | uint64(off))
}

// startSlab starts a slab with room for at least size bytes: twice the
// size of the last one started, up to maxSlab. The slab filled so far may
// be mostly garbage already (one key overwritten again and again, or a
// clone's share of the slab its original fills): it is compacted into the
// new one now, as release would have, and the new one has room for that.
func (t *keyTable) startSlab(size int) {
	c := minSlab
	if t.fill != nil {
		c = min(2*t.fill.Cap(), maxSlab)
	}
	last := t.filling
	compact := last >= 0 && 2*t.live[last] < len(t.slabs[last])
	if compact {
		size += t.live[last]
	}
	t.fill = new(strings.Builder)
	t.fill.Grow(max(c, size))
	if n := len(t.free); n > 0 {
		t.filling, t.free = t.free[n-1], t.free[:n-1]
	} else {
		t.filling = len(t.slabs)
		t.slabs = append(t.slabs, "")
		t.live = append(t.live, 0)
	}
	if compact {
		t.compact(last)
	}
}

// release notes that the cell at r, size bytes in its slab (as cellAt
// gave them to the caller), is no longer referred to, and compacts its
// slab once half of it is garbage.
func (t *keyTable) release(r cellRef, size int) {
	i := r.slab()
	t.live[i] -= size
	if i != t.filling && 2*t.live[i] < len(t.slabs[i]) {
		t.compact(i)
	}
}

// compact copies the cells of slab i that index still refers to into the
// slab being filled, and drops slab i. A cell's own key tells whether
// index still refers to it. Every slab but the one being filled is thus
// at least half live: garbage never takes more than the live cells do.
func (t *keyTable) compact(i int) {
	slab := t.slabs[i]
	for off := 0; off < len(slab) && t.live[i] > 0; {
		at := cellRef(uint64(i)<<32 | uint64(off))
		cell, klen, size := t.cellAt(at)
		off += size
		key := cellKey(cell, klen)
		if h := hashKey(key); t.refersTo(h, at) {
			e := cellEntry(cell, klen)
			t.index[h] = t.appendCell(key, &e)
			t.live[i] -= size
		}
	}
	t.slabs[i], t.live[i] = "", 0
	t.free = append(t.free, i)
}

// refersTo reports whether the index holds r under h (a missing entry reads
// as ref 0, where slab 0's first cell is).
func (t *keyTable) refersTo(h uint64, r cellRef) bool {
	got, ok := t.index[h]
	return ok && got == r
}

// each calls fn with every key and its slot until fn returns false. Keys
// fn stores into t may or may not be visited again (a key can move
// between index and other), as with a map changed while ranged over.
func (t *keyTable) each(fn func(key string, s slot) bool) {
	for k, s := range t.other {
		if !fn(k, s) {
			return
		}
	}
	for _, r := range t.index {
		cell, klen, _ := t.cellAt(r)
		if !fn(cellKey(cell, klen), slot{cell: cell}) {
			return
		}
	}
}

// clone returns a copy of t that shares its cells: they are immutable,
// and each table appends to slabs of its own. c never appends to the slab
// t fills (t alone writes past what c's copy of its string shows), but
// keeps it as its filling slab, so that its first append compacts it if
// it is mostly garbage.
func (t *keyTable) clone() keyTable {
	c := keyTable{
		index:   maps.Clone(t.index),
		other:   make(map[string]slot, len(t.other)),
		slabs:   slices.Clone(t.slabs),
		live:    slices.Clone(t.live),
		free:    slices.Clone(t.free),
		filling: t.filling, // with no fill: the first append checks it
	}
	for k, s := range t.other {
		if s.val != nil {
			s.val = holdValue(s.val.clone())
		}
		c.other[k] = s
	}
	return c
}
