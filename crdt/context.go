package crdt

import "sort"

// dotRange is the dots Replica:Lo ..= Replica:Hi.
type dotRange struct {
	Replica ReplicaID
	Lo, Hi  uint64
}

// Context is a causal context: the set of dots a replica has seen. It is
// kept as sorted, disjoint, non-adjacent ranges per replica. A range that
// starts at 1 is the replica's version-vector entry; any further ranges are
// the dot cloud (dots seen out of order). Adding a dot that closes a gap
// merges ranges, so under in-order delivery a context holds exactly one
// range per replica: its memory is O(replicas).
//
// The zero Context is empty and ready to use. A Context is a value with
// slice semantics: use [Context.Clone] before mutating a shared one.
type Context struct {
	ranges []dotRange
}

// search returns the index of the first range with (Replica, Hi) >= (r, c).
func (c *Context) search(r ReplicaID, ctr uint64) int {
	rs := c.ranges
	lo, hi := 0, len(rs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		x := rs[m]
		if x.Replica < r || (x.Replica == r && x.Hi < ctr) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// Contains reports whether d is in the context.
func (c *Context) Contains(d Dot) bool {
	i := c.search(d.Replica, d.Counter)
	return i < len(c.ranges) && c.ranges[i].Replica == d.Replica && c.ranges[i].Lo <= d.Counter
}

// Add inserts one dot.
func (c *Context) Add(d Dot) {
	if d.Counter == 0 {
		return
	}
	c.addRange(dotRange{d.Replica, d.Counter, d.Counter})
}

// addRange inserts [r.Lo, r.Hi] for r.Replica, merging with neighbours.
func (c *Context) addRange(r dotRange) {
	rs := c.ranges
	// First range of the same replica that ends at or after r.Lo-1 (so that
	// an adjacent range is merged too).
	lo := r.Lo
	if lo > 1 {
		lo--
	}
	i := c.search(r.Replica, lo)
	if i == len(rs) || rs[i].Replica != r.Replica || rs[i].Lo > sat(r.Hi) {
		// No overlap or adjacency: insert.
		if i == len(rs) && (i == 0 || rs[i-1].Replica != r.Replica || rs[i-1].Hi+1 < r.Lo) {
			c.ranges = append(rs, r)
			return
		}
		c.ranges = append(rs, dotRange{})
		copy(c.ranges[i+1:], c.ranges[i:])
		c.ranges[i] = r
		return
	}
	// Fast path: extend one range without touching others.
	x := &rs[i]
	if r.Lo < x.Lo {
		x.Lo = r.Lo
	}
	if r.Hi <= x.Hi {
		return
	}
	x.Hi = r.Hi
	// Swallow following ranges of the same replica that now overlap or touch.
	j := i + 1
	for j < len(rs) && rs[j].Replica == r.Replica && rs[j].Lo <= sat(x.Hi) {
		if rs[j].Hi > x.Hi {
			x.Hi = rs[j].Hi
		}
		j++
	}
	if j > i+1 {
		c.ranges = append(rs[:i+1], rs[j:]...)
	}
}

// sat returns n+1 without overflowing.
func sat(n uint64) uint64 {
	if n == ^uint64(0) {
		return n
	}
	return n + 1
}

// Merge adds every dot of o to c.
func (c *Context) Merge(o Context) {
	switch {
	case len(c.ranges) == 0:
		c.ranges = append([]dotRange(nil), o.ranges...)
	case len(o.ranges) <= mergeInPlace:
		// A delta's context: a range or two, each found by binary search
		// and usually extending one of c's in place.
		for _, r := range o.ranges {
			c.addRange(r)
		}
	default:
		// Inserting many ranges one by one shifts c's tail for each: a
		// context of m holes merged into one of n would cost O(m·n)
		// (a peer's batch can carry tens of thousands of ranges). One
		// pass over both sorted lists costs O(m+n).
		c.ranges = mergeRanges(c.ranges, o.ranges)
	}
}

// mergeInPlace is the most ranges Merge adds one at a time.
const mergeInPlace = 8

// mergeRanges returns the union of two valid range lists, valid: sorted,
// with overlapping and adjacent ranges of a replica joined.
func mergeRanges(a, b []dotRange) []dotRange {
	out := make([]dotRange, 0, len(a)+len(b))
	for i, j := 0, 0; i < len(a) || j < len(b); {
		var r dotRange
		if j == len(b) || (i < len(a) && (a[i].Replica < b[j].Replica || (a[i].Replica == b[j].Replica && a[i].Lo <= b[j].Lo))) {
			r, i = a[i], i+1
		} else {
			r, j = b[j], j+1
		}
		if n := len(out); n > 0 && out[n-1].Replica == r.Replica && r.Lo <= sat(out[n-1].Hi) {
			out[n-1].Hi = max(out[n-1].Hi, r.Hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// Max returns the highest counter seen from r, or 0.
func (c *Context) Max(r ReplicaID) uint64 {
	// Index just past r's ranges. r+1 would wrap to 0 for the highest id,
	// whose ranges, if any, are the last.
	i := len(c.ranges)
	if r != ^ReplicaID(0) {
		i = c.search(r+1, 0)
	}
	if i > 0 && c.ranges[i-1].Replica == r {
		return c.ranges[i-1].Hi
	}
	return 0
}

// NextGap returns the lowest counter of r at or above from that the
// context lacks, or 0 if it holds every one up to 2^64-1 (from 0 counts
// from 1). Ranges are non-adjacent, so it is one past the range holding
// from, if any.
func (c *Context) NextGap(r ReplicaID, from uint64) uint64 {
	from = max(from, 1)
	i := c.search(r, from)
	if i < len(c.ranges) && c.ranges[i].Replica == r && c.ranges[i].Lo <= from {
		return c.ranges[i].Hi + 1 // wraps to 0 past the last counter
	}
	return from
}

// Next returns the dot a write by r should take: one past the highest seen.
func (c *Context) Next(r ReplicaID) Dot { return Dot{r, c.Max(r) + 1} }

// VersionVector returns, per replica, the highest counter n such that all of
// 1..n are in the context (replicas with none are omitted), sorted by replica.
func (c *Context) VersionVector() []Dot {
	var vv []Dot
	for _, r := range c.ranges {
		if r.Lo == 1 {
			vv = append(vv, Dot{r.Replica, r.Hi})
		}
	}
	return vv
}

// Replicas returns the replicas with at least one dot, sorted.
func (c *Context) Replicas() []ReplicaID {
	var out []ReplicaID
	for i, r := range c.ranges {
		if i == 0 || c.ranges[i-1].Replica != r.Replica {
			out = append(out, r.Replica)
		}
	}
	return out
}

// Ranges returns how many ranges the context holds: one per replica under
// in-order delivery, more while dots are missing.
func (c *Context) Ranges() int { return len(c.ranges) }

// Len returns the number of dots in the context.
func (c *Context) Len() uint64 {
	var n uint64
	for _, r := range c.ranges {
		n += r.Hi - r.Lo + 1
	}
	return n
}

// Covers reports whether every dot of o is in c.
func (c *Context) Covers(o Context) bool {
	for _, r := range o.ranges {
		i := c.search(r.Replica, r.Hi)
		if i == len(c.ranges) || c.ranges[i].Replica != r.Replica || c.ranges[i].Lo > r.Lo {
			return false
		}
	}
	return true
}

// Equal reports whether both contexts hold the same dots.
func (c *Context) Equal(o Context) bool {
	if len(c.ranges) != len(o.ranges) {
		return false
	}
	for i := range c.ranges {
		if c.ranges[i] != o.ranges[i] {
			return false
		}
	}
	return true
}

// Clone returns an independent copy.
func (c Context) Clone() Context {
	return Context{ranges: append([]dotRange(nil), c.ranges...)}
}

// Missing returns the dots of o that are not in c, as a context.
func (c *Context) Missing(o Context) Context {
	var out Context
	for _, r := range o.ranges {
		lo := r.Lo
		for lo <= r.Hi {
			i := c.search(r.Replica, lo)
			if i == len(c.ranges) || c.ranges[i].Replica != r.Replica || c.ranges[i].Lo > r.Hi {
				out.ranges = append(out.ranges, dotRange{r.Replica, lo, r.Hi})
				break
			}
			x := c.ranges[i]
			if x.Lo > lo {
				out.ranges = append(out.ranges, dotRange{r.Replica, lo, x.Lo - 1})
			}
			if x.Hi >= r.Hi {
				break
			}
			lo = x.Hi + 1
		}
	}
	return out
}

// ForEachRange calls fn for every range of consecutive dots, in order.
func (c *Context) ForEachRange(fn func(r ReplicaID, lo, hi uint64)) {
	for _, x := range c.ranges {
		fn(x.Replica, x.Lo, x.Hi)
	}
}

// ContextOf returns a context holding exactly the given dots.
func ContextOf(dots ...Dot) Context {
	ds := append([]Dot(nil), dots...)
	sort.Slice(ds, func(i, j int) bool { return ds[i].Less(ds[j]) })
	var c Context
	for _, d := range ds {
		c.Add(d)
	}
	return c
}

// valid reports whether the ranges are sorted, disjoint and non-adjacent.
func (c *Context) valid() bool {
	for i, r := range c.ranges {
		if r.Lo == 0 || r.Lo > r.Hi {
			return false
		}
		if i > 0 {
			p := c.ranges[i-1]
			// sat: a range ending at the last counter leaves no room
			// after it (p.Hi+1 would wrap to 0).
			if p.Replica > r.Replica || (p.Replica == r.Replica && sat(p.Hi) >= r.Lo) {
				return false
			}
		}
	}
	return true
}

// AddRange inserts the dots r:lo ..= r:hi.
func (c *Context) AddRange(r ReplicaID, lo, hi uint64) {
	if lo == 0 || hi < lo {
		return
	}
	c.addRange(dotRange{r, lo, hi})
}

// Of returns the part of the context that holds r's dots.
func (c *Context) Of(r ReplicaID) Context {
	i := c.search(r, 0)
	j := i
	for j < len(c.ranges) && c.ranges[j].Replica == r {
		j++
	}
	return Context{ranges: append([]dotRange(nil), c.ranges[i:j]...)}
}

// Min returns the lowest counter held for r, or 0.
func (c *Context) Min(r ReplicaID) uint64 {
	i := c.search(r, 0)
	if i < len(c.ranges) && c.ranges[i].Replica == r {
		return c.ranges[i].Lo
	}
	return 0
}

// Remove deletes the dots r:lo ..= r:hi.
func (c *Context) Remove(r ReplicaID, lo, hi uint64) {
	if lo == 0 || hi < lo {
		return
	}
	var out []dotRange
	for _, x := range c.ranges {
		if x.Replica != r || x.Hi < lo || x.Lo > hi {
			out = append(out, x)
			continue
		}
		if x.Lo < lo {
			out = append(out, dotRange{r, x.Lo, lo - 1})
		}
		if x.Hi > hi {
			out = append(out, dotRange{r, hi + 1, x.Hi})
		}
	}
	c.ranges = out
}

// Intersect returns the dots in both c and o.
func (c *Context) Intersect(o Context) Context {
	var out Context
	i, j := 0, 0
	for i < len(c.ranges) && j < len(o.ranges) {
		a, b := c.ranges[i], o.ranges[j]
		switch {
		case a.Replica < b.Replica || (a.Replica == b.Replica && a.Hi < b.Lo):
			i++
		case b.Replica < a.Replica || (a.Replica == b.Replica && b.Hi < a.Lo):
			j++
		default:
			out.ranges = append(out.ranges, dotRange{a.Replica, max(a.Lo, b.Lo), min(a.Hi, b.Hi)})
			if a.Hi < b.Hi {
				i++
			} else {
				j++
			}
		}
	}
	return out
}
