package crdt

import "sort"

// Delta is a state fragment produced by a mutator, or the join of several.
// It names every key (and, below a key, every set element and map field)
// whose dots its context may cover, so that it can be joined into a large
// state by visiting only what it names. Deltas are immutable: nothing
// changes one after it is built.
type Delta struct {
	ctx     Context
	entries []entry // sorted by key, unique
}

type entry struct {
	key string
	val Value
}

// Len returns the number of keys the delta names.
func (d Delta) Len() int { return len(d.entries) }

// IsZero reports whether the delta names nothing and covers nothing.
func (d Delta) IsZero() bool { return len(d.entries) == 0 && d.ctx.Ranges() == 0 }

// Key returns the i-th key named, in key order.
func (d Delta) Key(i int) string { return d.entries[i].key }

// Value returns the i-th key's value fragment.
func (d Delta) Value(i int) Value { return d.entries[i].val }

// Context returns a copy of the delta's causal context.
func (d Delta) Context() Context { return d.ctx.Clone() }

// StoreDots calls fn for every dot held in the delta's values (not those
// only in its context).
func (d Delta) StoreDots(fn func(Dot)) {
	for i := range d.entries {
		d.entries[i].val.Dots(fn)
	}
}

// ChangesNothing reports whether joining d into any state leaves it as it
// was: d covers no dot (so removes nothing) and holds none (so adds
// nothing) — a delete of a key, field or element its writer did not hold.
func (d Delta) ChangesNothing() bool {
	if d.ctx.Ranges() > 0 {
		return false
	}
	held := false
	d.StoreDots(func(Dot) { held = true })
	return !held
}

// DeltaBuilder joins deltas into one, for coalescing many local writes into
// a batch. The zero DeltaBuilder is ready to use.
type DeltaBuilder struct {
	ctx  Context
	keys map[string]Value
}

// Add joins d into the batch being built.
func (b *DeltaBuilder) Add(d Delta) {
	if b.keys == nil {
		b.keys = make(map[string]Value, len(d.entries))
	}
	for i := range d.entries {
		e := &d.entries[i]
		a := b.keys[e.key]
		joinValue(&a, &b.ctx, e.val, &d.ctx, true, true)
		b.keys[e.key] = a
	}
	b.ctx.Merge(d.ctx)
}

// Len returns how many keys the batch names so far.
func (b *DeltaBuilder) Len() int { return len(b.keys) }

// Build returns the joined delta and resets the builder.
func (b *DeltaBuilder) Build() Delta {
	d := Delta{ctx: b.ctx, entries: make([]entry, 0, len(b.keys))}
	for k, v := range b.keys {
		d.entries = append(d.entries, entry{key: k, val: v})
	}
	sort.Slice(d.entries, func(i, j int) bool { return d.entries[i].key < d.entries[j].key })
	*b = DeltaBuilder{}
	return d
}

// JoinDeltas returns the join of the given deltas.
func JoinDeltas(ds ...Delta) Delta {
	if len(ds) == 1 {
		return ds[0]
	}
	var b DeltaBuilder
	for _, d := range ds {
		b.Add(d)
	}
	return b.Build()
}

// ContextDelta returns a delta that names no key and carries only c. It is
// for announcing dots that were never used for any write (a replica that
// skips counters after a crash announces the skipped range this way); a
// context covering dots that some key holds would not be key-complete.
func ContextDelta(c Context) Delta { return Delta{ctx: c.Clone()} }

// MaxTimestamp returns the latest register timestamp held in the delta.
func (d Delta) MaxTimestamp() Timestamp {
	var t Timestamp
	for i := range d.entries {
		d.entries[i].val.maxTime(&t)
	}
	return t
}

func (v Value) maxTime(t *Timestamp) {
	for i := range v.reg {
		if t.Less(v.reg[i].Time) {
			*t = v.reg[i].Time
		}
	}
	if v.ext != nil {
		for _, f := range v.ext.fields {
			f.maxTime(t)
		}
	}
}

// ContextMax returns the highest dot of replica r in the delta's context (0
// if none): how far the delta claims to have seen r's writes.
func (d Delta) ContextMax(r ReplicaID) uint64 { return d.ctx.Max(r) }

// Replicas returns the replicas with dots in the delta's context, sorted.
func (d Delta) Replicas() []ReplicaID { return d.ctx.Replicas() }
