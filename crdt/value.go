package crdt

import (
	"math"
	"math/bits"
	"sort"
	"strings"
)

// Kind is a bit set of the CRDT types a value holds. A value normally holds
// one kind; concurrent writes of different kinds to one key leave several
// until a later write of one kind observes and clears the others.
type Kind uint8

// The kinds of value.
const (
	KindRegister Kind = 1 << iota
	KindCounter
	KindSet
	KindMap
	KindFlag
)

var kindNames = [...]string{"register", "counter", "set", "map", "flag"}

func (k Kind) String() string {
	if k == 0 {
		return "none"
	}
	var b []byte
	for i, name := range kindNames {
		if k&(1<<i) != 0 {
			if len(b) > 0 {
				b = append(b, '|')
			}
			b = append(b, name...)
		}
	}
	return string(b)
}

// RegEntry is one write held by a register: its dot, its clock reading and
// the bytes written. The bytes are held as a string: immutable, and 8 bytes
// smaller than a slice, which keeps an entry in a 48-byte allocation.
type RegEntry struct {
	Dot   Dot
	Time  Timestamp
	Value string
}

// regLess orders entries so that the winner sorts last: by time, then
// replica, then dot counter.
func regLess(a, b *RegEntry) bool {
	if c := a.Time.Compare(b.Time); c != 0 {
		return c < 0
	}
	return a.Dot.Less(b.Dot)
}

type counterEntry struct {
	Dot Dot
	N   int64
}

// Value is the replicated value under one key or map field: a bundle of dot
// stores, one per kind. The zero Value is empty.
//
// Slices inside a Value are never modified in place once built, so a Value
// read from a [Namespace] stays valid for registers, counters and flags. Set
// elements and map fields live in maps that the owning Namespace updates in
// place: read those under the owner's lock.
type Value struct {
	reg []RegEntry // sorted by dot
	ext *valueExt  // nil for a plain register: keeps the common case small
}

type valueExt struct {
	ctr    []counterEntry   // sorted by dot
	set    map[string][]Dot // element -> dots, each sorted; nil slice = removal marker in deltas
	fields map[string]Value // field -> nested value; empty value = removal marker in deltas
	flag   []Dot            // sorted
	// covers is set only in deltas: the delta's context may cover any dot
	// below this value, so joining it into a state must visit every entry
	// of the state's value here, not just the entries the delta names.
	covers bool
}

// Kinds returns the kinds present.
func (v Value) Kinds() Kind {
	var k Kind
	if len(v.reg) > 0 {
		k |= KindRegister
	}
	if e := v.ext; e != nil {
		if len(e.ctr) > 0 {
			k |= KindCounter
		}
		if len(e.set) > 0 {
			k |= KindSet
		}
		if len(e.fields) > 0 {
			k |= KindMap
		}
		if len(e.flag) > 0 {
			k |= KindFlag
		}
	}
	return k
}

// IsEmpty reports whether the value holds nothing.
func (v Value) IsEmpty() bool { return v.Kinds() == 0 }

// Registers returns every concurrent write held by the register, winner
// last (ordered by timestamp, then replica). Callers must not modify it.
func (v Value) Registers() []RegEntry {
	if len(v.reg) <= 1 {
		return v.reg
	}
	out := append([]RegEntry(nil), v.reg...)
	sort.Slice(out, func(i, j int) bool { return regLess(&out[i], &out[j]) })
	return out
}

// Register returns the winning write's bytes (highest timestamp, ties broken
// by replica id), how many concurrent writes (siblings) are held, and
// whether the register holds anything.
func (v Value) Register() (val []byte, siblings int, ok bool) {
	w := v.winner()
	if w == nil {
		return nil, 0, false
	}
	return []byte(w.Value), len(v.reg), true
}

// RegisterString returns the register's winning value without copying it
// (strings are immutable; ok false if the value holds no register): cheap
// enough to take under a lock and convert after.
func (v Value) RegisterString() (val string, ok bool) {
	if w := v.winner(); w != nil {
		return w.Value, true
	}
	return "", false
}

func (v Value) winner() *RegEntry {
	if len(v.reg) == 0 {
		return nil
	}
	w := &v.reg[0]
	for i := 1; i < len(v.reg); i++ {
		if regLess(w, &v.reg[i]) {
			w = &v.reg[i]
		}
	}
	return w
}

// Counter returns the counter's value: the sum of every replica's share,
// held at the int64 bounds if it is past them. Each replica keeps its own
// share within int64, but concurrent shares can add up past it; the exact
// sum is taken and then clamped, so every replica reads the same value
// (found by review: the sum wrapped, and MaxInt64 plus 1 read MinInt64).
func (v Value) Counter() int64 {
	if v.ext == nil {
		return 0
	}
	// A 128-bit two's complement sum: hi is the upper word.
	var hi int64
	var lo uint64
	for _, e := range v.ext.ctr {
		var carry uint64
		lo, carry = bits.Add64(lo, uint64(e.N), 0)
		hi += int64(carry)
		if e.N < 0 {
			hi-- // sign extension of e.N
		}
	}
	switch {
	case hi > 0 || (hi == 0 && lo > math.MaxInt64):
		return math.MaxInt64
	case hi < -1 || (hi == -1 && lo < 1<<63):
		return math.MinInt64
	}
	return int64(lo)
}

// SetElements returns the set's elements, sorted.
func (v Value) SetElements() []string {
	if v.ext == nil || len(v.ext.set) == 0 {
		return nil
	}
	out := make([]string, 0, len(v.ext.set))
	for e := range v.ext.set {
		out = append(out, e)
	}
	sort.Strings(out)
	return out
}

// SetContains reports whether elem is in the set.
func (v Value) SetContains(elem string) bool {
	return v.ext != nil && len(v.ext.set[elem]) > 0
}

// SetLen returns the number of elements.
func (v Value) SetLen() int {
	if v.ext == nil {
		return 0
	}
	return len(v.ext.set)
}

// Flag reports whether the flag is enabled.
func (v Value) Flag() bool { return v.ext != nil && len(v.ext.flag) > 0 }

// Field returns the nested value of a map field.
func (v Value) Field(name string) (Value, bool) {
	if v.ext == nil {
		return Value{}, false
	}
	f, ok := v.ext.fields[name]
	return f, ok
}

// Fields returns the map's field names, sorted.
func (v Value) Fields() []string {
	if v.ext == nil || len(v.ext.fields) == 0 {
		return nil
	}
	out := make([]string, 0, len(v.ext.fields))
	for f := range v.ext.fields {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// Dots calls fn for every dot held anywhere in the value.
func (v Value) Dots(fn func(Dot)) {
	for i := range v.reg {
		fn(v.reg[i].Dot)
	}
	e := v.ext
	if e == nil {
		return
	}
	for i := range e.ctr {
		fn(e.ctr[i].Dot)
	}
	for _, ds := range e.set {
		for _, d := range ds {
			fn(d)
		}
	}
	for _, f := range e.fields {
		f.Dots(fn)
	}
	for _, d := range e.flag {
		fn(d)
	}
}

// dotsOf returns the value's dots as a context.
func (v Value) addDotsTo(c *Context) { v.Dots(c.Add) }

func (v *Value) extension() *valueExt {
	if v.ext == nil {
		v.ext = &valueExt{}
	}
	return v.ext
}

// clone returns a copy that shares no mutable map with v. Immutable slices
// are shared.
func (v Value) clone() Value {
	out := Value{reg: v.reg}
	if v.ext == nil {
		return out
	}
	e := &valueExt{ctr: v.ext.ctr, flag: v.ext.flag, covers: v.ext.covers}
	if len(v.ext.set) > 0 {
		e.set = make(map[string][]Dot, len(v.ext.set))
		for k, ds := range v.ext.set {
			e.set[k] = ds
		}
	}
	if len(v.ext.fields) > 0 {
		e.fields = make(map[string]Value, len(v.ext.fields))
		for k, f := range v.ext.fields {
			e.fields[k] = f.clone()
		}
	}
	out.ext = e
	return out
}

func (v Value) covers() bool { return v.ext != nil && v.ext.covers }

// normalize drops an empty extension so equal values compare equal.
func (v *Value) normalize() {
	if e := v.ext; e != nil && len(e.ctr) == 0 && len(e.set) == 0 && len(e.fields) == 0 && len(e.flag) == 0 && !e.covers {
		v.ext = nil
	}
}

// joinValue joins b (with context cb) into a (with context ca), in place.
//
// a is owned by the caller and may be updated in place; b is read only and
// nothing of b that is mutable ends up shared with a. Visiting a value always
// joins its register, counter and flag entries. Set elements and map fields
// are visited as follows: with visitAll, every entry of both sides; without
// it, only the entries b names, because the caller guarantees that cb covers
// no dot of a elsewhere (b is a mutator's delta, or a join of such). A delta
// that removes a whole subtree carries a covers mark there, which turns
// visitAll back on below it.
//
// keepMarkers is for joining two deltas: every entry either side names is
// kept, empty or not, so the joined delta still names all it may affect.
func joinValue(a *Value, ca *Context, b Value, cb *Context, visitAll, keepMarkers bool) {
	if b.covers() {
		visitAll = true
	}
	a.reg = joinSorted(a.reg, ca, b.reg, cb, regDot, preferReg)
	if a.ext == nil && b.ext == nil {
		return
	}
	ae := a.extension()
	var be valueExt
	if b.ext != nil {
		be = *b.ext
	}
	ae.ctr = joinSorted(ae.ctr, ca, be.ctr, cb, ctrDot, preferCtr)
	ae.flag = joinSorted(ae.flag, ca, be.flag, cb, idDot, preferNone)
	if keepMarkers && be.covers {
		ae.covers = true
	}
	if visitAll || len(be.set) > 0 {
		joinSet(ae, ca, be.set, cb, visitAll, keepMarkers)
	}
	if visitAll || len(be.fields) > 0 {
		joinFields(ae, ca, be.fields, cb, visitAll, keepMarkers)
	}
	a.normalize()
}

func joinSet(ae *valueExt, ca *Context, bs map[string][]Dot, cb *Context, visitAll, keepMarkers bool) {
	if visitAll {
		for elem, ds := range ae.set {
			if _, inB := bs[elem]; inB {
				continue
			}
			kept := joinSorted(ds, ca, nil, cb, idDot, preferNone)
			switch {
			case len(kept) > 0:
				ae.set[elem] = kept
			case keepMarkers:
				ae.set[elem] = nil
			default:
				delete(ae.set, elem)
			}
		}
	}
	for elem, bds := range bs {
		ads, inA := ae.set[elem]
		kept := joinSorted(ads, ca, bds, cb, idDot, preferNone)
		if len(kept) == 0 {
			if !keepMarkers {
				if inA {
					delete(ae.set, elem)
				}
				continue
			}
			kept = nil
		}
		if ae.set == nil {
			ae.set = make(map[string][]Dot, len(bs))
		}
		ae.set[elem] = kept
	}
}

func joinFields(ae *valueExt, ca *Context, bf map[string]Value, cb *Context, visitAll, keepMarkers bool) {
	if visitAll {
		for name, f := range ae.fields {
			if _, inB := bf[name]; inB {
				continue
			}
			joinValue(&f, ca, Value{}, cb, true, keepMarkers)
			if f.IsEmpty() && !keepMarkers {
				delete(ae.fields, name)
			} else {
				ae.fields[name] = f
			}
		}
	}
	for name, bv := range bf {
		// A field new to a starts empty, so nothing mutable of b is shared.
		av, inA := ae.fields[name]
		joinValue(&av, ca, bv, cb, visitAll, keepMarkers)
		if av.IsEmpty() && !keepMarkers {
			if inA {
				delete(ae.fields, name)
			}
			continue
		}
		if ae.fields == nil {
			ae.fields = make(map[string]Value, len(bf))
		}
		ae.fields[name] = av
	}
}

func regDot(e *RegEntry) Dot     { return e.Dot }
func ctrDot(e *counterEntry) Dot { return e.Dot }
func idDot(d *Dot) Dot           { return *d }

// The prefer functions choose between two payloads for the same dot: they
// return > 0 if y is strictly preferred, < 0 if x is, 0 if both are equal.
// Honest replicas never create two payloads for one dot; the choice is still
// deterministic so that a faulty writer cannot make replicas diverge.
func preferReg(x, y *RegEntry) int {
	if c := y.Time.Compare(x.Time); c != 0 {
		return c
	}
	return strings.Compare(y.Value, x.Value)
}

func preferCtr(x, y *counterEntry) int {
	switch {
	case y.N > x.N:
		return 1
	case y.N < x.N:
		return -1
	}
	return 0
}

func preferNone(_, _ *Dot) int { return 0 }

// joinSorted joins two dot-sorted stores: an entry in both is kept, an entry
// in one only is kept unless the other side's context has seen its dot. It
// returns a or b itself when the result equals one of them, so the common
// case (a write that overwrites what it observed) allocates nothing.
func joinSorted[T any](a []T, ca *Context, b []T, cb *Context, dot func(*T) Dot, prefer func(x, y *T) int) []T {
	if len(b) == 0 && len(a) == 0 {
		return a
	}
	keptA, keptB, kept := 0, 0, 0
	aWins, bWins := false, false // some shared dot's payload differs
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch c := cmpAt(a, i, b, j, dot); {
		case c == 0:
			if p := prefer(&a[i], &b[j]); p > 0 {
				bWins = true
			} else if p < 0 {
				aWins = true
			}
			keptA++
			keptB++
			kept++
			i++
			j++
		case c < 0:
			if !cb.Contains(dot(&a[i])) {
				keptA++
				kept++
			}
			i++
		default:
			if !ca.Contains(dot(&b[j])) {
				keptB++
				kept++
			}
			j++
		}
	}
	if kept == 0 {
		return nil
	}
	if keptA == len(a) && kept == len(a) && !bWins {
		return a
	}
	if keptB == len(b) && kept == len(b) && !aWins {
		return b
	}
	out := make([]T, 0, kept)
	i, j = 0, 0
	for i < len(a) || j < len(b) {
		switch c := cmpAt(a, i, b, j, dot); {
		case c == 0:
			if prefer(&a[i], &b[j]) > 0 {
				out = append(out, b[j])
			} else {
				out = append(out, a[i])
			}
			i++
			j++
		case c < 0:
			if !cb.Contains(dot(&a[i])) {
				out = append(out, a[i])
			}
			i++
		default:
			if !ca.Contains(dot(&b[j])) {
				out = append(out, b[j])
			}
			j++
		}
	}
	return out
}

// cmpAt compares a[i] and b[j] by dot; an exhausted side sorts last.
func cmpAt[T any](a []T, i int, b []T, j int, dot func(*T) Dot) int {
	switch {
	case i == len(a):
		return 1
	case j == len(b):
		return -1
	}
	return compareDots(dot(&a[i]), dot(&b[j]))
}

// Clone returns a copy of v that shares no mutable state with it, safe to
// read after the owning namespace changes, and whose register values are
// copies too: keeping it keeps none of the namespace's storage.
func (v Value) Clone() Value {
	c := v.clone()
	c.reg = copyEntries(c.reg)
	return c
}

// copyEntries returns a copy of reg whose values are copies too (nil for
// none), so that holding it holds no memory reg's values shared.
func copyEntries(reg []RegEntry) []RegEntry {
	if len(reg) == 0 {
		return reg
	}
	out := make([]RegEntry, len(reg))
	for i, e := range reg {
		e.Value = strings.Clone(e.Value)
		out[i] = e
	}
	return out
}
