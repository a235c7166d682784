package crdt

import (
	"runtime"
	"strconv"
	"testing"
	"time"
)

func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
	}
	return keys
}

// BenchmarkRegisterPut measures a local register write: prepare the delta
// and join it into a namespace of 10,000 keys.
func BenchmarkRegisterPut(b *testing.B) {
	ns := NewNamespace(Limits{})
	keys := benchKeys(10_000)
	val := make([]byte, 100)
	var clock Clock
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d, err := ns.Prepare(Op{Kind: OpPut, Key: keys[i%len(keys)], Value: val}, 1, clock.Now(int64(i)))
		if err != nil {
			b.Fatal(err)
		}
		ns.ApplyDelta(d, nil)
	}
}

// BenchmarkCounterAdd measures a local counter add, prepare and join, over
// 1,000 counters.
func BenchmarkCounterAdd(b *testing.B) {
	ns := NewNamespace(Limits{})
	keys := benchKeys(1_000)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d, err := ns.Prepare(Op{Kind: OpCounterAdd, Key: keys[i%len(keys)], N: 1}, 1, Timestamp{})
		if err != nil {
			b.Fatal(err)
		}
		ns.ApplyDelta(d, nil)
	}
}

// BenchmarkSetAdd measures adding one new element to one of 100 sets, each
// growing to b.N/100 elements.
func BenchmarkSetAdd(b *testing.B) {
	ns := NewNamespace(Limits{})
	keys := benchKeys(100)
	elems := benchKeys(1 << 16)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		op := Op{Kind: OpSetUpdate, Key: keys[i%len(keys)], Add: []string{elems[(i/len(keys))%len(elems)]}}
		d, err := ns.Prepare(op, 1, Timestamp{})
		if err != nil {
			b.Fatal(err)
		}
		ns.ApplyDelta(d, nil)
	}
}

// batchOf returns a batch of n register writes of 100-byte values by one
// replica, joined as the gossip layer coalesces them.
func batchOf(b *testing.B, n int) Delta {
	ns := NewNamespace(Limits{})
	var db DeltaBuilder
	val := make([]byte, 100)
	for i, k := range benchKeys(n) {
		d, err := ns.Prepare(Op{Kind: OpPut, Key: k, Value: val}, 7, Timestamp{Wall: int64(1_700_000_000_000 + i)})
		if err != nil {
			b.Fatal(err)
		}
		ns.ApplyDelta(d, nil)
		db.Add(d)
	}
	return db.Build()
}

// BenchmarkEncodeBatch1000 measures encoding a 1,000-key delta batch.
func BenchmarkEncodeBatch1000(b *testing.B) {
	batch := batchOf(b, 1000)
	buf := batch.Encode(nil)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = batch.Encode(buf[:0])
	}
}

// BenchmarkDecodeBatch1000 measures decoding (with all checks) a 1,000-key
// delta batch.
func BenchmarkDecodeBatch1000(b *testing.B) {
	buf := batchOf(b, 1000).Encode(nil)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeDelta(buf, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCoalesce512 measures joining 512 single-write deltas into one
// batch, the gossip fast path's coalescing step.
func BenchmarkCoalesce512(b *testing.B) {
	ns := NewNamespace(Limits{})
	val := make([]byte, 100)
	ds := make([]Delta, 512)
	for i, k := range benchKeys(512) {
		d, _ := ns.Prepare(Op{Kind: OpPut, Key: k, Value: val}, 7, Timestamp{Wall: int64(i)})
		ns.ApplyDelta(d, nil)
		ds[i] = d
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = JoinDeltas(ds...)
	}
}

// BenchmarkApplyRemoteBatch measures joining a 512-write batch from another
// replica into a namespace of 100,000 keys.
func BenchmarkApplyRemoteBatch(b *testing.B) {
	ns := NewNamespace(Limits{})
	keys := benchKeys(100_000)
	val := make([]byte, 100)
	batches := make([]Delta, 0, 200)
	src := NewNamespace(Limits{})
	for j := 0; j < 200; j++ {
		var db DeltaBuilder
		for i := 0; i < 512; i++ {
			d, _ := src.Prepare(Op{Kind: OpPut, Key: keys[(j*512+i)%len(keys)], Value: val}, 9, Timestamp{Wall: int64(j*512 + i)})
			src.ApplyDelta(d, nil)
			db.Add(d)
		}
		batches = append(batches, db.Build())
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ns.ApplyDelta(batches[i%len(batches)], nil)
	}
	b.ReportMetric(float64(b.N*512)/b.Elapsed().Seconds(), "keys/s")
}

// BenchmarkKeyDigest measures the per-key digest of a 100-byte register.
func BenchmarkKeyDigest(b *testing.B) {
	ns := NewNamespace(Limits{})
	d, _ := ns.Prepare(Op{Kind: OpPut, Key: "some-key-0001", Value: make([]byte, 100)}, 1, Timestamp{Wall: 1})
	ns.ApplyDelta(d, nil)
	v, _ := ns.Get("some-key-0001")
	b.ReportAllocs()
	for b.Loop() {
		_ = KeyDigest("some-key-0001", v)
	}
}

// TestContextStaysCompactUnderInOrderDelivery shows causal-context memory is
// O(replicas): 50 replicas each write 2,000 times, delivered in order; the
// receiving context holds one range per replica, whatever the write count.
func TestContextStaysCompactUnderInOrderDelivery(t *testing.T) {
	const replicas, writes = 50, 2_000
	srcs := make([]*Namespace, replicas)
	for i := range srcs {
		srcs[i] = NewNamespace(Limits{})
	}
	sink := NewNamespace(Limits{})
	keys := benchKeys(100)
	for w := 0; w < writes; w++ {
		for r, src := range srcs {
			d, err := src.Prepare(Op{Kind: OpPut, Key: keys[(w+r)%len(keys)], Value: []byte("v")}, ReplicaID(r+1), Timestamp{Wall: int64(w)})
			if err != nil {
				t.Fatal(err)
			}
			src.ApplyDelta(d, nil)
			sink.ApplyDelta(d, nil)
		}
		if got := sink.ContextRanges(); got > replicas {
			t.Fatalf("after %d rounds the context holds %d ranges for %d replicas", w+1, got, replicas)
		}
	}
	if got := sink.ContextRanges(); got != replicas {
		t.Fatalf("context holds %d ranges, want %d", got, replicas)
	}
}

// BenchmarkNamespaceGC measures what a namespace of 1,000,000 100-byte
// registers costs the garbage collector: the time of one full collection
// with the namespace live (most of it marking the keys' values), and the
// heap bytes and objects per key.
func BenchmarkNamespaceGC(b *testing.B) {
	const n = 1_000_000
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ns := NewNamespace(Limits{})
	val := make([]byte, 100)
	for i := 0; i < n; i++ {
		d, err := ns.Prepare(Op{Kind: OpPut, Key: "key-" + strconv.Itoa(i), Value: val}, 1, Timestamp{Wall: int64(i + 1)})
		if err != nil {
			b.Fatal(err)
		}
		ns.ApplyDelta(d, nil)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		runtime.GC()
		total += time.Since(start)
	}
	runtime.KeepAlive(ns)
	b.ReportMetric(float64(total.Microseconds())/1e3/float64(b.N), "ms/gc")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/key")
	b.ReportMetric(float64(after.HeapObjects-before.HeapObjects)/n, "objects/key")
}

// BenchmarkContextMergeInterleaved merges a context of 50,000 holes into
// one of 50,000 holes interleaved with them, what a writer's batches can
// carry: one pass over both lists, where adding the ranges one by one
// shifted the tail for each (O(m·n)).
func BenchmarkContextMergeInterleaved(b *testing.B) {
	var x, y Context
	for i := range uint64(50_000) {
		x.AddRange(1, 4*i+1, 4*i+1)
		y.AddRange(1, 4*i+3, 4*i+3)
	}
	for b.Loop() {
		c := x.Clone()
		c.Merge(y)
		if c.Ranges() != 100_000 {
			b.Fatalf("%d ranges", c.Ranges())
		}
	}
}
