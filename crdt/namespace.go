package crdt

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// Namespace is the replicated state of one keyspace: every key's [Value] and
// the causal context shared by all of them. The zero Namespace is not ready;
// use [NewNamespace].
type Namespace struct {
	ctx    Context
	keys   keyTable // only non-empty values (see slot)
	limits Limits
	// floor is where new dots of floorReplica start counting (see
	// SetDotFloor); zero: from the highest seen.
	floorReplica ReplicaID
	floor        uint64
}

// NewNamespace returns an empty namespace that checks operations against
// limits (zero fields take defaults).
func NewNamespace(limits Limits) *Namespace {
	return &Namespace{keys: newKeyTable(0), limits: limits.withDefaults()}
}

// Limits returns the limits the namespace enforces.
func (n *Namespace) Limits() Limits { return n.limits }

// SetDotFloor makes r's new dots count from floor instead of from the
// highest counter of r seen: Prepare gives r the lowest counter at or above
// floor that the context lacks. A replica whose earlier history may be lost
// (its identity outlived its store) counts, from a random floor, within a
// range of its own: from the floor, its own dots form one run in the
// context (a restart's skipped range joins it), so the next dot is found
// again after a restart, while dots of r that other incarnations handed
// out elsewhere — seen or not yet seen, above the floor or below it — are
// never followed. (Following the highest seen reused, in the simulator's
// soak, a dot an earlier lost store had given to a batch still on its
// way.) Nothing is claimed about the counters below the floor (the
// context is not changed). One replica has a floor at a time; floor 0
// removes it.
func (n *Namespace) SetDotFloor(r ReplicaID, floor uint64) {
	n.floorReplica, n.floor = r, floor
}

// lastCounter is the counter r's new dots count up from: the highest seen,
// or, for the replica with a floor, just below its lowest counter from the
// floor up that the context lacks (math.MaxUint64 if none is left).
func (n *Namespace) lastCounter(r ReplicaID) uint64 {
	if r == n.floorReplica && n.floor > 0 {
		return n.ctx.NextGap(r, n.floor) - 1 // 0 - 1: none left
	}
	return n.ctx.Max(r)
}

// NextDot returns the counter Prepare gives r's next new dot.
func (n *Namespace) NextDot(r ReplicaID) uint64 { return n.lastCounter(r) + 1 }

// Len returns the number of keys holding a value.
func (n *Namespace) Len() int { return n.keys.len() }

// Get returns the value under key. Its strings may share the namespace's
// storage (a slab of cells, up to 64 KiB): a caller keeping the value
// beyond a short read keeps a copy ([Value.Clone]).
func (n *Namespace) Get(key string) (Value, bool) {
	s, ok := n.keys.lookup(key)
	if !ok {
		return Value{}, false
	}
	return s.value(key), true
}

// value returns the value under key, or the empty value.
func (n *Namespace) value(key string) Value { return n.keys.at(key).value(key) }

// Context returns a copy of the namespace's causal context.
func (n *Namespace) Context() Context { return n.ctx.Clone() }

// ContextContains reports whether the causal context holds d, without
// copying the context.
func (n *Namespace) ContextContains(d Dot) bool { return n.ctx.Contains(d) }

// ContextRanges returns how many ranges the causal context holds: one per
// replica when nothing is missing.
func (n *Namespace) ContextRanges() int { return n.ctx.Ranges() }

// Keys returns the keys with the given prefix, sorted. Like values, they
// may share the namespace's storage: a caller keeping them for long keeps
// copies (strings.Clone).
func (n *Namespace) Keys(prefix string) []string {
	var out []string
	if prefix == "" {
		out = make([]string, 0, n.keys.len())
	}
	n.keys.each(func(k string, _ slot) bool {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
		return true
	})
	sort.Strings(out)
	return out
}

// Range calls fn for every key in key order until fn returns false. The
// key and value fn gets may share the namespace's storage, as Get's do.
func (n *Namespace) Range(fn func(key string, v Value) bool) {
	for _, k := range n.Keys("") {
		if !fn(k, n.keys.at(k).value(k)) {
			return
		}
	}
}

// Clone returns a deep copy.
func (n *Namespace) Clone() *Namespace {
	return &Namespace{ctx: n.ctx.Clone(), keys: n.keys.clone(), limits: n.limits}
}

// heldValue is how a register with one entry and an extension (a value
// left with mixed kinds) is boxed: with its entry in the box instead of a
// slice of its own, one heap object fewer. A plain register is packed in a
// cell instead (see slot); other values are boxed as a bare Value.
type heldValue struct {
	v   Value
	one [1]RegEntry // written once, when the box is made: v.reg may
	// point here, and copies of v handed out share it
}

// holdValue returns a new box holding v: a heldValue for a value with one
// register entry (and more, or it would be packed), a bare Value for the
// rest, which have no single entry to hold
// (a counter's box would grow from 32 to 80 bytes for nothing).
func holdValue(v Value) *Value {
	if len(v.reg) != 1 {
		return &v
	}
	h := &heldValue{v: v}
	h.one[0] = v.reg[0]
	h.v.reg = h.one[:]
	return &h.v
}

// put stores key's value v, joined from what s held (the zero slot:
// nothing) and read from it with editable into v, whose register entries
// are then ed's. An empty v removes the key. A box is reused while v's
// register entries are its own; a changed register gets a new box,
// because the box's entries may be shared by copies of the value handed
// out earlier. A packed register the join left as it was stays packed.
func (n *Namespace) put(key string, s slot, ed []RegEntry, v Value) {
	switch {
	case v.IsEmpty():
		if s != (slot{}) {
			n.keys.del(key)
		}
	case s.val != nil && sameEntries(s.val.reg, v.reg) && !packable(&v):
		*s.val = v
	case s.cell != "" && packable(&v) && sameEntries(ed, v.reg):
		// unchanged: the cell holds v already
	default:
		n.set(key, v)
	}
}

// editable returns a copy of the value s holds under key (the zero slot:
// the empty value) for joinValue to update. Its ext is a copy too: copies
// of the value handed out earlier share the box's, and their counters and
// flags must stay as they were read (joinValue replaces those slices in
// the ext it is given).
func (s slot) editable(key string) Value {
	v := s.value(key)
	if v.ext != nil {
		e := *v.ext
		v.ext = &e
	}
	return v
}

// sameEntries reports whether a and b are the same slice of entries.
func sameEntries(a, b []RegEntry) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// Prepare computes the delta of a local operation by replica r at clock
// reading ts, without changing n. The caller persists the delta and then
// applies it with [Namespace.ApplyDelta]; it must apply one prepared delta
// before preparing the next, since the next dot is taken from n's context.
func (n *Namespace) Prepare(op Op, r ReplicaID, ts Timestamp) (Delta, error) {
	if err := op.Validate(n.limits); err != nil {
		return Delta{}, err
	}
	if r == 0 {
		return Delta{}, fmt.Errorf("%w: replica id 0", ErrInvalidOp)
	}
	// New dots count up from the highest seen, which a peer's context can
	// set as high as it likes: refuse rather than wrap to counter 0.
	need := uint64(1) // dots the op may take
	switch op.Kind {
	case OpDelete:
		need = 0
	case OpSetUpdate:
		need = uint64(len(op.Add))
	}
	last := n.lastCounter(r)
	if last > math.MaxUint64-need {
		return Delta{}, fmt.Errorf("%w: replica %v has no dot counters left", ErrLimit, r)
	}
	// One allocation holds what the delta needs and the state never
	// retains (the entry list, the context ranges, the top extension).
	s := new(prepScratch)
	p := preparer{op: &s.op, next: last + 1, replica: r, ts: ts, scratch: s}
	p.ownLo, p.ownHi = 1, math.MaxUint64
	if r == n.floorReplica && n.floor > 0 {
		// The first gap from the floor may be followed by counters seen
		// (another incarnation's, in the unlikely case the two runs
		// meet): an op taking several dots skips those.
		p.seen = &n.ctx
		p.ownLo, p.ownHi = n.floor, last
	}
	s.op = op
	p.ctx.ranges = s.ranges[:0]
	var one [1]RegEntry
	v, err := p.at(n.keys.at(op.Key).read(op.Key, &one), 0)
	if err == nil && p.exhausted {
		err = fmt.Errorf("%w: replica %v has no dot counters left", ErrLimit, r)
	}
	if err != nil {
		return Delta{}, err
	}
	s.entries[0] = entry{key: op.Key, val: v}
	return Delta{ctx: p.ctx, entries: s.entries[:]}, nil
}

type prepScratch struct {
	op      Op
	entries [1]entry
	ranges  [3]dotRange
	ext     valueExt
}

type preparer struct {
	op      *Op
	replica ReplicaID
	next    uint64
	ts      Timestamp
	ctx     Context
	scratch *prepScratch
	// seen, if set, holds counters of replica that new dots must skip;
	// exhausted: none was left.
	seen      *Context
	exhausted bool
	// ownLo and ownHi bound the dots this incarnation of replica handed
	// out: with a floor, its run from there; else all of them.
	ownLo, ownHi uint64
}

// newExt returns an empty extension for the delta, from the scratch space
// the first time.
func (p *preparer) newExt() *valueExt {
	if s := p.scratch; s != nil {
		p.scratch = nil
		return &s.ext
	}
	return &valueExt{}
}

func (p *preparer) dot() Dot {
	switch {
	case p.next == 0:
		p.exhausted = true // wrapped past the last counter
	case p.seen != nil:
		if p.next = p.seen.NextGap(p.replica, p.next); p.next == 0 {
			p.exhausted = true
		}
	}
	d := Dot{p.replica, p.next}
	p.next++
	p.ctx.Add(d)
	return d
}

// at returns the delta value for the op applied below cur at path depth.
func (p *preparer) at(cur Value, depth int) (Value, error) {
	op := p.op
	if depth < len(op.Path) {
		if op.Kind == OpDelete && cur.Kinds()&KindMap == 0 {
			return Value{}, nil // nothing there to delete
		}
		if k := cur.Kinds(); k != 0 && k&KindMap == 0 {
			return Value{}, fmt.Errorf("%w: %s holds a %s, not a map", ErrWrongType, p.where(depth), k)
		}
		name := op.Path[depth]
		child, _ := cur.Field(name)
		cd, err := p.at(child, depth+1)
		if err != nil {
			return Value{}, err
		}
		out := Value{ext: p.newExt()}
		out.ext.fields = map[string]Value{name: cd}
		if op.Kind != OpDelete {
			p.heal(cur, KindMap, &out)
		}
		return out, nil
	}
	if op.Kind == OpDelete {
		cur.addDotsTo(&p.ctx)
		out := Value{ext: p.newExt()}
		out.ext.covers = true
		return out, nil
	}
	want := op.Kind.kind()
	if k := cur.Kinds(); k != 0 && k&want == 0 {
		return Value{}, fmt.Errorf("%w: %s holds a %s, not a %s", ErrWrongType, p.where(depth), k, want)
	}
	var out Value
	switch op.Kind {
	case OpPut:
		for i := range cur.reg {
			p.ctx.Add(cur.reg[i].Dot)
		}
		out.reg = []RegEntry{{Dot: p.dot(), Time: p.ts, Value: string(op.Value)}}
	case OpCounterAdd:
		var share int64
		if cur.ext != nil {
			for _, e := range cur.ext.ctr {
				// Only this incarnation's entries are folded in: an
				// entry of another incarnation of the replica (a lost
				// store's) is left as it is, for that incarnation's
				// later add, which may still be on its way and holds
				// its share, replaces it; folded in, the share would
				// count twice.
				if e.Dot.Replica == p.replica && e.Dot.Counter >= p.ownLo && e.Dot.Counter <= p.ownHi {
					// Entries of the run from before a restart are
					// folded too: add with care.
					if (e.N > 0 && share > math.MaxInt64-e.N) || (e.N < 0 && share < math.MinInt64-e.N) {
						return Value{}, fmt.Errorf("%w: counter overflow", ErrLimit)
					}
					share += e.N
					p.ctx.Add(e.Dot)
				}
			}
		}
		if (op.N > 0 && share > math.MaxInt64-op.N) || (op.N < 0 && share < math.MinInt64-op.N) {
			return Value{}, fmt.Errorf("%w: counter overflow", ErrLimit)
		}
		out.ext = p.newExt()
		out.ext.ctr = []counterEntry{{Dot: p.dot(), N: share + op.N}}
	case OpSetUpdate:
		set := make(map[string][]Dot, len(op.Add)+len(op.Remove))
		for _, e := range op.Remove {
			if ds := cur.setDots(e); len(ds) > 0 {
				for _, d := range ds {
					p.ctx.Add(d)
				}
				set[e] = nil
			}
		}
		for _, e := range op.Add {
			if ds, seen := set[e]; seen && ds != nil {
				continue // listed twice
			}
			for _, d := range cur.setDots(e) {
				p.ctx.Add(d)
			}
			set[e] = []Dot{p.dot()}
		}
		out.ext = p.newExt()
		out.ext.set = set
	case OpFlag:
		if cur.ext != nil {
			for _, d := range cur.ext.flag {
				p.ctx.Add(d)
			}
		}
		out.ext = p.newExt()
		if op.Enable {
			out.ext.flag = []Dot{p.dot()}
		}
	}
	p.heal(cur, want, &out)
	return out, nil
}

// heal makes a write of kind keep observe-remove every other kind held at
// cur, so a value left with mixed kinds by concurrent writers becomes one
// kind again.
func (p *preparer) heal(cur Value, keep Kind, out *Value) {
	other := cur.Kinds() &^ keep
	if other == 0 {
		return
	}
	for i := range cur.reg {
		if keep != KindRegister {
			p.ctx.Add(cur.reg[i].Dot)
		}
	}
	e := cur.ext
	if e == nil {
		return
	}
	if keep != KindCounter {
		for _, c := range e.ctr {
			p.ctx.Add(c.Dot)
		}
	}
	if keep != KindFlag {
		for _, d := range e.flag {
			p.ctx.Add(d)
		}
	}
	if other&(KindSet|KindMap) != 0 {
		if keep != KindSet {
			for _, ds := range e.set {
				for _, d := range ds {
					p.ctx.Add(d)
				}
			}
		}
		if keep != KindMap {
			for _, f := range e.fields {
				f.addDotsTo(&p.ctx)
			}
		}
		// The context now covers entries the delta does not name.
		if out.ext == nil {
			out.ext = p.newExt()
		}
		out.ext.covers = true
	}
}

func (p *preparer) where(depth int) string {
	return fmt.Sprintf("%q", strings.Join(append([]string{p.op.Key}, p.op.Path[:depth]...), "."))
}

func (v Value) setDots(elem string) []Dot {
	if v.ext == nil {
		return nil
	}
	return v.ext.set[elem]
}

// ApplyDelta joins a delta into n. The delta must come from [Namespace.Prepare]
// (here or on another replica), [JoinDeltas], [DeltaBuilder] or a decoder:
// such deltas name every key their context can affect, so only those keys
// are visited. changed, if not nil, is called for each key the delta names
// with the key's new value (empty if the key is now gone).
func (n *Namespace) ApplyDelta(d Delta, changed func(key string, v Value)) {
	for i := range d.entries {
		e := &d.entries[i]
		s := n.keys.at(e.key)
		if s.cell != "" && packable(&e.val) && n.joinCell(e.key, s, e.val.reg[0], &d.ctx, changed) {
			continue
		}
		a := s.editable(e.key)
		ed := a.reg
		joinValue(&a, &n.ctx, e.val, &d.ctx, false, false)
		n.put(e.key, s, ed, a)
		if changed != nil {
			changed(e.key, a)
		}
	}
	n.ctx.Merge(d.ctx)
}

// joinCell joins the plain register entry b, from a delta with context cb,
// into the register packed in s under key, without unpacking it, when the
// join keeps at most one of the two entries (an overwrite, a batch applied
// again, a removal): it is then joinValue's result for two values without
// extensions, found without allocating. It reports false, changing
// nothing, when both entries survive (concurrent writes) or share a dot
// with different payloads: joinValue decides those.
func (n *Namespace) joinCell(key string, s slot, b RegEntry, cb *Context, changed func(string, Value)) bool {
	a := cellDot(s.cell)
	var keepA, keepB bool
	if a == b.Dot {
		if e := cellEntry(s.cell, len(key)); e.Time != b.Time || e.Value != b.Value {
			return false
		}
		keepA = true
	} else {
		keepA, keepB = !cb.Contains(a), !n.ctx.Contains(b.Dot)
		if keepA && keepB {
			return false
		}
	}
	switch {
	case keepA:
		if changed != nil {
			changed(key, s.value(key))
		}
	case keepB:
		v := Value{reg: []RegEntry{b}}
		n.set(key, v)
		if changed != nil {
			changed(key, v)
		}
	default:
		n.keys.del(key)
		if changed != nil {
			changed(key, Value{})
		}
	}
	return true
}

// RemovalDelta returns the delta that removes r's dots in removed wherever
// n holds them: those dots as its context, and every key holding one of
// them named with an empty value that covers the whole key. The rest of
// removed (other replicas' dots) is for the caller to join as it is, naming
// no key, so that no replica removes them where others would not.
//
// A delta that names no key (replica r's announcement of the dot range it
// skipped after a crash) still covers dots: those of r's batches that were
// published and then lost in the crash. Applied as it is, it would remove
// them nowhere, so replicas that applied such a batch would keep its values
// while the others drop the batch when it reaches them. Applied as
// RemovalDelta(its context, r), it removes them everywhere, in any order.
// Only r's dots are looked for: such a delta may undo r's own writes, never
// another replica's. It visits every key, but only when n has seen one of
// the removed dots.
func (n *Namespace) RemovalDelta(removed Context, r ReplicaID) Delta {
	d := Delta{ctx: removed.Of(r)}
	seen := n.ctx.Intersect(d.ctx)
	if seen.Ranges() == 0 {
		return d
	}
	n.keys.each(func(key string, s slot) bool {
		held := false
		s.dots(func(dot Dot) { held = held || seen.Contains(dot) })
		if held {
			var empty Value
			empty.extension().covers = true
			d.entries = append(d.entries, entry{key: strings.Clone(key), val: empty})
		}
		return true
	})
	sort.Slice(d.entries, func(i, j int) bool { return d.entries[i].key < d.entries[j].key })
	return d
}

// Join joins the whole state o into n: the lattice join of two replicas.
// It visits every key of both. A key of n may be visited twice (its value
// moved between packed and boxed while n's keys are ranged over): joining
// o's value again changes nothing.
func (n *Namespace) Join(o *Namespace) {
	var add []string // o's keys n lacks, joined after n's own
	o.keys.each(func(k string, _ slot) bool {
		if _, ok := n.keys.lookup(k); !ok {
			add = append(add, k)
		}
		return true
	})
	n.keys.each(func(k string, s slot) bool {
		a := s.editable(k)
		ed := a.reg
		joinValue(&a, &n.ctx, o.value(k), &o.ctx, true, false)
		n.put(k, s, ed, a)
		return true
	})
	for _, k := range add {
		var a Value
		joinValue(&a, &n.ctx, o.value(k), &o.ctx, true, false)
		n.put(k, slot{}, nil, a)
	}
	n.ctx.Merge(o.ctx)
}

// KeyDelta returns a delta that carries key's value in n to a replica that
// holds the dots theirs under key: joining it there gives that replica n's
// value for key, including removals (those of its dots that n has seen but
// no longer holds are in the delta's context).
func (n *Namespace) KeyDelta(key string, theirs []Dot) Delta {
	return n.KeyDeltaOf(key, ContextOf(theirs...))
}

// KeyDeltaOf is KeyDelta with the peer's dots as a context (ranges), so a
// peer's claim costs what its encoding costs, however many dots it spans.
func (n *Namespace) KeyDeltaOf(key string, theirs Context) Delta {
	v := n.value(key)
	var ctx Context
	v.addDotsTo(&ctx)
	ctx.Merge(n.ctx.Intersect(theirs))
	val := v
	if !v.IsEmpty() || theirs.Ranges() > 0 {
		val = v.clone()
		val.extension().covers = true
	}
	return Delta{ctx: ctx, entries: []entry{{key: key, val: val}}}
}

// ValueDots returns every dot held under key, sorted.
func (n *Namespace) ValueDots(key string) []Dot {
	var ds []Dot
	n.value(key).Dots(func(d Dot) { ds = append(ds, d) })
	sort.Slice(ds, func(i, j int) bool { return ds[i].Less(ds[j]) })
	return ds
}

// ContextOf returns the part of the causal context holding r's dots.
func (n *Namespace) ContextOf(r ReplicaID) Context { return n.ctx.Of(r) }

// MaxDot returns the highest counter seen from r.
func (n *Namespace) MaxDot(r ReplicaID) uint64 { return n.ctx.Max(r) }

// Grow makes room for count keys in an empty namespace, so that loading a
// large state does not rehash the key map as it grows.
func (n *Namespace) Grow(count int) {
	if n.keys.len() == 0 && count > 0 {
		n.keys = newKeyTable(count)
	}
}
