package crdt

import (
	"math"
	"strings"
	"testing"
)

// TestKeyDigestEncodedLongEntries: keys and values too long for the
// one-buffer path hash the same as KeyDigest (the property tests cover
// small entries of every kind).
func TestKeyDigestEncodedLongEntries(t *testing.T) {
	st := NewNamespace(Limits{})
	for _, c := range []struct {
		key   string
		value int
	}{
		{"k", 0}, {"k", 100}, {"k", 300}, {strings.Repeat("k", 40), 100}, {strings.Repeat("k", 300), 5000},
	} {
		d, err := st.Prepare(Op{Kind: OpPut, Key: c.key, Value: make([]byte, c.value)}, 1, Timestamp{Wall: 1})
		if err != nil {
			t.Fatal(err)
		}
		v := d.Value(0)
		if KeyDigestEncoded(c.key, v.Encode(nil)) != KeyDigest(c.key, v) {
			t.Fatalf("key of %d bytes, value of %d: digests differ", len(c.key), c.value)
		}
	}
}

// TestCounterSumIsExactThenClamped: concurrent shares that add up past
// int64 read as its bound on every replica, and shares that come back
// within it read exactly (found by review: the sum wrapped around).
func TestCounterSumIsExactThenClamped(t *testing.T) {
	for _, c := range []struct {
		adds []int64 // one replica each, concurrent
		want int64
	}{
		{[]int64{math.MaxInt64, 1}, math.MaxInt64},
		{[]int64{math.MinInt64, -1}, math.MinInt64},
		{[]int64{math.MaxInt64, 1, -2}, math.MaxInt64 - 1},
		{[]int64{math.MaxInt64, math.MaxInt64, math.MinInt64, math.MinInt64}, -2},
		{[]int64{5, -7}, -2},
	} {
		joined := NewNamespace(Limits{})
		for i, n := range c.adds {
			src := NewNamespace(Limits{})
			d, err := src.Prepare(Op{Kind: OpCounterAdd, Key: "c", N: n}, ReplicaID(i+1), Timestamp{Wall: 1})
			if err != nil {
				t.Fatal(err)
			}
			joined.ApplyDelta(d, nil)
		}
		v, _ := joined.Get("c")
		if got := v.Counter(); got != c.want {
			t.Errorf("%v: Counter() = %d, want %d", c.adds, got, c.want)
		}
	}
}
