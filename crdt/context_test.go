package crdt

import (
	"math"
	"testing"
)

func TestContextIntersect(t *testing.T) {
	var a, b Context
	a.AddRange(1, 1, 10)
	a.AddRange(1, 20, 30)
	a.AddRange(2, 5, 5)
	b.AddRange(1, 8, 25)
	b.AddRange(2, 1, math.MaxUint64)
	b.AddRange(3, 1, 4)
	got := a.Intersect(b)
	var want Context
	want.AddRange(1, 8, 10)
	want.AddRange(1, 20, 25)
	want.AddRange(2, 5, 5)
	if !got.Equal(want) || !got.valid() {
		t.Fatalf("intersection %v, want %v", got.ranges, want.ranges)
	}
	if x := a.Intersect(Context{}); x.Ranges() != 0 {
		t.Fatal("intersection with empty is not empty")
	}
}

func TestNamespaceContextContains(t *testing.T) {
	n := NewNamespace(DefaultLimits())
	d, err := n.Prepare(Op{Kind: OpPut, Key: "k", Value: []byte("v")}, 7, Timestamp{Wall: 1})
	if err != nil {
		t.Fatal(err)
	}
	if n.ContextContains(Dot{7, 1}) {
		t.Fatal("context holds a dot before its delta is applied")
	}
	n.ApplyDelta(d, nil)
	if !n.ContextContains(Dot{7, 1}) || n.ContextContains(Dot{7, 2}) || n.ContextContains(Dot{8, 1}) {
		t.Fatal("ContextContains disagrees with the applied delta")
	}
}

// TestContextMergeOfManyRanges: merging a context of many ranges (one
// pass over both lists) gives what adding its ranges one by one gives —
// overlapping, adjacent, interleaved, across replicas, at the counter's
// ends — and stays valid.
func TestContextMergeOfManyRanges(t *testing.T) {
	rng := uint64(7)
	next := func(n uint64) uint64 {
		rng ^= rng << 13
		rng ^= rng >> 7
		rng ^= rng << 17
		return rng % n
	}
	random := func(n int) Context {
		var c Context
		for range n {
			r := ReplicaID(1 + next(4))
			lo := 1 + next(400)
			if next(20) == 0 {
				lo = math.MaxUint64 - next(3)
			}
			hi := lo + next(5)
			if hi < lo {
				hi = math.MaxUint64
			}
			c.AddRange(r, lo, hi)
		}
		return c
	}
	for round := range 300 {
		a, b := random(int(next(60))), random(int(next(60)))
		var want Context
		want.ranges = append(want.ranges, a.ranges...)
		for _, r := range b.ranges {
			want.addRange(r)
		}
		got := a.Clone()
		got.Merge(b)
		if !got.Equal(want) || !got.valid() {
			t.Fatalf("round %d: merged %v and %v into %v, want %v", round, a.ranges, b.ranges, got.ranges, want.ranges)
		}
	}
}
