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
