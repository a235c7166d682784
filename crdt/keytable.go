package crdt

import (
	"encoding/binary"
	"strings"
)

// slot is what a namespace's key map holds for one key. A plain register
// (one entry, nothing else) is packed with its key into cell, and the map's
// key is a substring of that cell: the whole key costs one heap object
// that holds no pointers, so the garbage collector marks it and follows
// nothing. Boxed in a Value, the same key was three objects (key, box,
// value bytes) and a box to scan; on a store holding millions of keys the
// collector's marking, one cache miss per object, was a quarter of the
// CPU (BenchmarkNamespaceGC, and the cluster benchmark's profile). Every
// other value is boxed in val.
type slot struct {
	cell string // a plain register: cellHeader, the key, the value
	val  *Value // anything else, boxed by holdValue
}

// cellHeader is the size of a cell's fixed part: the entry's dot (replica,
// counter) and time (wall, logical), little-endian.
const cellHeader = 8 + 8 + 8 + 4

// newCell packs key and the register entry e into one string.
func newCell(key string, e *RegEntry) string {
	var h [cellHeader]byte
	binary.LittleEndian.PutUint64(h[0:], uint64(e.Dot.Replica))
	binary.LittleEndian.PutUint64(h[8:], e.Dot.Counter)
	binary.LittleEndian.PutUint64(h[16:], uint64(e.Time.Wall))
	binary.LittleEndian.PutUint32(h[24:], e.Time.Logical)
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
func (n *Namespace) set(key string, v Value) {
	if packable(&v) {
		cell := newCell(key, &v.reg[0])
		// Assigning with the cell's own substring makes the map keep that
		// as its key (string keys are rewritten on assignment), so a
		// caller's key string is not kept alive.
		n.keys[cellKey(cell, len(key))] = slot{cell: cell}
		return
	}
	n.keys[key] = slot{val: holdValue(v)}
}
