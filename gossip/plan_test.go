package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"testing"
	"time"

	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/mycelnet/mycel/crdt"
)

// ctxOf builds a context from (replica, lo, hi) triples.
func ctxOf(ranges ...[3]uint64) crdt.Context {
	var c crdt.Context
	for _, r := range ranges {
		c.AddRange(crdt.ReplicaID(r[0]), r[1], r[2])
	}
	return c
}

func dots(ds ...[2]uint64) []crdt.Dot {
	out := make([]crdt.Dot, 0, len(ds))
	for _, d := range ds {
		out = append(out, crdt.Dot{Replica: crdt.ReplicaID(d[0]), Counter: d[1]})
	}
	return out
}

func TestPlanSend(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		seen, kept, gone, them crdt.Context
		held                   crdt.Context // on their way by gossip
		max                    int
		want                   []crdt.Dot
		compacted, more, later bool
	}{
		{
			name: "client has everything",
			seen: ctxOf([3]uint64{1, 1, 3}), kept: ctxOf([3]uint64{1, 1, 3}),
			them: ctxOf([3]uint64{1, 1, 5}, [3]uint64{9, 1, 1}), max: 10,
		},
		{
			name: "lacking batches in origin then sequence order",
			seen: ctxOf([3]uint64{2, 1, 2}, [3]uint64{1, 1, 4}), kept: ctxOf([3]uint64{1, 1, 4}, [3]uint64{2, 1, 2}),
			them: ctxOf([3]uint64{1, 1, 1}, [3]uint64{1, 3, 3}), max: 10,
			want: dots([2]uint64{1, 2}, [2]uint64{1, 4}, [2]uint64{2, 1}, [2]uint64{2, 2}),
		},
		{
			name: "cap reached with more to send",
			seen: ctxOf([3]uint64{1, 1, 3}, [3]uint64{2, 1, 2}), kept: ctxOf([3]uint64{1, 1, 3}, [3]uint64{2, 1, 2}),
			max:  4,
			want: dots([2]uint64{1, 1}, [2]uint64{1, 2}, [2]uint64{1, 3}, [2]uint64{2, 1}), more: true,
		},
		{
			name: "cap reached with nothing left",
			seen: ctxOf([3]uint64{1, 1, 3}), kept: ctxOf([3]uint64{1, 1, 3}),
			max:  3,
			want: dots([2]uint64{1, 1}, [2]uint64{1, 2}, [2]uint64{1, 3}),
		},
		{
			name: "gone batches: compacted, the rest still sent",
			seen: ctxOf([3]uint64{1, 1, 5}), kept: ctxOf([3]uint64{1, 3, 5}), gone: ctxOf([3]uint64{1, 1, 2}),
			max:  10,
			want: dots([2]uint64{1, 3}, [2]uint64{1, 4}, [2]uint64{1, 5}), compacted: true,
		},
		{
			name: "gone batches the client has: not compacted",
			seen: ctxOf([3]uint64{1, 1, 5}), kept: ctxOf([3]uint64{1, 3, 5}), gone: ctxOf([3]uint64{1, 1, 2}),
			them: ctxOf([3]uint64{1, 1, 3}), max: 10,
			want: dots([2]uint64{1, 4}, [2]uint64{1, 5}),
		},
		{
			name: "seen but neither kept nor gone: still being committed, skipped",
			seen: ctxOf([3]uint64{1, 1, 3}), kept: ctxOf([3]uint64{1, 1, 1}, [3]uint64{1, 3, 3}),
			max:  10,
			want: dots([2]uint64{1, 1}, [2]uint64{1, 3}),
		},
		{
			name: "only uncommitted batches lacking",
			seen: ctxOf([3]uint64{1, 1, 3}), kept: ctxOf([3]uint64{1, 1, 2}),
			them: ctxOf([3]uint64{1, 1, 2}), max: 10,
		},
		{
			// A batch numbered MaxUint64 is a valid gossip message: the
			// plan must not wrap around to sequence number 0.
			name: "last sequence number",
			seen: ctxOf([3]uint64{1, 1, 2}, [3]uint64{1, math.MaxUint64, math.MaxUint64}),
			kept: ctxOf([3]uint64{1, 1, 2}, [3]uint64{1, math.MaxUint64, math.MaxUint64}),
			them: ctxOf([3]uint64{1, 1, 2}), max: 10,
			want: dots([2]uint64{1, math.MaxUint64}),
		},
		{
			// Seen ranges merged from a peer's state can span most of the
			// counter space; planning must not walk them dot by dot.
			name: "huge ranges of gone and uncommitted batches",
			seen: ctxOf([3]uint64{1, 1, math.MaxUint64}, [3]uint64{2, 1, 1 << 62}),
			kept: ctxOf([3]uint64{1, 1 << 40, 1<<40 + 1}),
			gone: ctxOf([3]uint64{2, 1, 1 << 62}),
			max:  10,
			want: dots([2]uint64{1, 1 << 40}, [2]uint64{1, 1<<40 + 1}), compacted: true,
		},
		{
			name: "batches gossip is bringing are held back",
			seen: ctxOf([3]uint64{1, 1, 5}, [3]uint64{2, 1, 2}), kept: ctxOf([3]uint64{1, 1, 5}, [3]uint64{2, 1, 2}),
			them: ctxOf([3]uint64{1, 1, 1}), held: ctxOf([3]uint64{1, 4, 9}, [3]uint64{2, 2, 2}), max: 10,
			want: dots([2]uint64{1, 2}, [2]uint64{1, 3}, [2]uint64{2, 1}), later: true,
		},
		{
			name: "held batches the client has: nothing to ask again for",
			seen: ctxOf([3]uint64{1, 1, 5}), kept: ctxOf([3]uint64{1, 1, 5}),
			them: ctxOf([3]uint64{1, 1, 4}), held: ctxOf([3]uint64{1, 1, 4}), max: 10,
			want: dots([2]uint64{1, 5}),
		},
		{
			name: "held back, and gone batches still reconcile",
			seen: ctxOf([3]uint64{1, 1, 5}), kept: ctxOf([3]uint64{1, 3, 5}), gone: ctxOf([3]uint64{1, 1, 2}),
			held: ctxOf([3]uint64{1, 5, 5}), max: 10,
			want: dots([2]uint64{1, 3}, [2]uint64{1, 4}), compacted: true, later: true,
		},
		{
			name: "huge kept range stops at the cap",
			seen: ctxOf([3]uint64{1, 1, math.MaxUint64}), kept: ctxOf([3]uint64{1, 1, math.MaxUint64}),
			max:  2,
			want: dots([2]uint64{1, 1}, [2]uint64{1, 2}), more: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan sendPlan, 1)
			go func() {
				done <- planSend(tc.seen, tc.kept, tc.gone, tc.them, func() crdt.Context { return tc.held }, tc.max)
			}()
			var p sendPlan
			select {
			case p = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("planSend did not return")
			}
			if !slices.Equal(p.batches, tc.want) || p.compacted != tc.compacted || p.more != tc.more || p.held != tc.later {
				t.Fatalf("planSend = %v compacted %v more %v held %v, want %v compacted %v more %v held %v",
					p.batches, p.compacted, p.more, p.held, tc.want, tc.compacted, tc.more, tc.later)
			}
		})
	}
}

func TestBucketCount(t *testing.T) {
	for _, tc := range []struct{ keys, want int }{
		{0, 1}, {1, 1}, {8, 1}, {9, 2}, {16, 2}, {17, 4}, {8192, 1024}, {8193, 2048},
		{8 * maxBuckets, maxBuckets}, {1 << 40, maxBuckets},
	} {
		if got := bucketCount(tc.keys); got != tc.want {
			t.Errorf("bucketCount(%d) = %d, want %d", tc.keys, got, tc.want)
		}
	}
	for keys := 0; keys < 5000; keys += 7 {
		n := bucketCount(keys)
		if !isPow2(n) || n*8 < keys || n > 1 && (n/2)*8 >= keys {
			t.Fatalf("bucketCount(%d) = %d: not the least power of two with at most 8 keys each", keys, n)
		}
	}
}

func TestBucketOf(t *testing.T) {
	counts := make([]int, 16)
	for i := range 1000 {
		k := "key-" + strconv.Itoa(i)
		if b := bucketOf(k, 1); b != 0 {
			t.Fatalf("bucketOf(%q, 1) = %d", k, b)
		}
		b := bucketOf(k, 16)
		if b >= 16 || bucketOf(k, 16) != b {
			t.Fatalf("bucketOf(%q, 16) = %d, not stable or out of range", k, b)
		}
		counts[b]++
		// Buckets refine: doubling the count splits each bucket in two, so
		// peers with different key counts still agree on coarse buckets.
		if wide := bucketOf(k, 32); wide%16 != b {
			t.Fatalf("bucketOf(%q, 32) = %d, bucketOf(%q, 16) = %d", k, wide, k, b)
		}
		if b := bucketOf(k, maxBuckets); b >= maxBuckets {
			t.Fatalf("bucketOf(%q, %d) = %d", k, maxBuckets, b)
		}
	}
	for b, n := range counts {
		if n < 1000/16/2 {
			t.Errorf("bucket %d of 16 holds %d of 1000 keys", b, n)
		}
	}
}

func TestDifferingBuckets(t *testing.T) {
	sums := func(bs ...byte) []bucketSum {
		out := make([]bucketSum, len(bs))
		for i, b := range bs {
			out[i][0] = b
		}
		return out
	}
	for _, tc := range []struct {
		name         string
		mine, theirs []bucketSum
		want         []uint32
	}{
		{"equal", sums(1, 2, 3, 4), sums(1, 2, 3, 4), nil},
		{"some differ", sums(1, 2, 3, 4), sums(1, 9, 3, 9), []uint32{1, 3}},
		{"last byte differs", sums(0, 0), func() []bucketSum { s := sums(0, 0); s[1][39] = 1; return s }(), []uint32{1}},
		{"theirs shorter", sums(1, 2, 3, 4), sums(1, 2), []uint32{2, 3}},
		{"theirs longer", sums(1, 2), sums(1, 2, 3, 4), nil},
		{"none of theirs", sums(1, 2), nil, []uint32{0, 1}},
		{"none of mine", nil, sums(1), nil},
	} {
		if got := differingBuckets(tc.mine, tc.theirs); !slices.Equal(got, tc.want) {
			t.Errorf("%s: differingBuckets = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Replicas differing in one key differ in that key's bucket only.
	h := fuzzBuildHistory(t)
	a := h.a.ns.Clone()
	b := a.Clone()
	d, err := b.Prepare(crdt.Op{Kind: crdt.OpCounterAdd, Key: "visits", N: 1}, h.b.id, crdt.Timestamp{Wall: 1_800_000_000_000})
	if err != nil {
		t.Fatal(err)
	}
	b.ApplyDelta(d, nil)
	n := bucketCount(a.Len())
	got := differingBuckets(bucketSums(a, n), bucketSums(b, n))
	if want := []uint32{bucketOf("visits", n)}; !slices.Equal(got, want) {
		t.Fatalf("one key changed: differing buckets %v, want %v", got, want)
	}
}

// coalescerBatch is a batch naming ops keys whose encoding is size bytes:
// the coalescer only counts them.
func coalescerBatch(t *testing.T, seq uint64, ops, size int) Batch {
	t.Helper()
	ns := crdt.NewNamespace(crdt.Limits{})
	var db crdt.DeltaBuilder
	for i := range ops {
		d, err := ns.Prepare(crdt.Op{Kind: crdt.OpPut, Key: "k" + strconv.Itoa(i), Value: []byte("v")}, 1, crdt.Timestamp{Wall: int64(seq)})
		if err != nil {
			t.Fatal(err)
		}
		ns.ApplyDelta(d, nil)
		db.Add(d)
	}
	return Batch{Origin: 1, Seq: seq, Delta: db.Build(), Encoded: make([]byte, size)}
}

// poll does what the publish loop does at time now: take the queue if it
// is full or due.
func poll(c *coalescer, now time.Time) []Batch {
	if due, ok := c.due(); ok && (c.full() || !now.Before(due)) {
		return c.take(now)
	}
	return nil
}

func TestCoalescerPublishesAtOnceWhenIdle(t *testing.T) {
	c := &coalescer{window: 10 * time.Millisecond, maxOps: 100, maxBytes: 1000}
	if _, ok := c.due(); ok {
		t.Fatal("an empty queue is due")
	}
	t0 := time.Unix(1_700_000_000, 0)
	c.add(coalescerBatch(t, 1, 1, 10), t0)
	if got := poll(c, t0); len(got) != 1 || got[0].Seq != 1 {
		t.Fatalf("first batch: published %v, want it at once", got)
	}
	// Idle for longer than a window: the next batch goes out at once too.
	t1 := t0.Add(25 * time.Millisecond)
	c.add(coalescerBatch(t, 2, 1, 10), t1)
	if got := poll(c, t1); len(got) != 1 || got[0].Seq != 2 {
		t.Fatalf("batch after an idle window: published %v, want it at once", got)
	}
	if _, ok := c.due(); ok {
		t.Fatal("queue still due after taking everything")
	}
}

func TestCoalescerOneMessagePerWindow(t *testing.T) {
	const window = 10 * time.Millisecond
	c := &coalescer{window: window, maxOps: 1000, maxBytes: 1 << 20}
	t0 := time.Unix(1_700_000_000, 0)
	var sentAt []time.Time
	var sent []uint64
	seq := uint64(0)
	// A batch every millisecond for 45 ms, polled every millisecond, then
	// polled until the queue drains.
	for ms := 0; ms < 80; ms++ {
		now := t0.Add(time.Duration(ms) * time.Millisecond)
		if ms < 45 {
			seq++
			c.add(coalescerBatch(t, seq, 1, 10), now)
		}
		if got := poll(c, now); len(got) > 0 {
			sentAt = append(sentAt, now)
			for _, b := range got {
				sent = append(sent, b.Seq)
			}
		}
	}
	if !sentAt[0].Equal(t0) {
		t.Fatalf("first message at %v, want at once", sentAt[0].Sub(t0))
	}
	for i := 1; i < len(sentAt); i++ {
		if gap := sentAt[i].Sub(sentAt[i-1]); gap < window {
			t.Fatalf("messages %d and %d only %v apart", i-1, i, gap)
		}
	}
	if len(sentAt) > 6 {
		t.Fatalf("%d messages for 45 ms of batches with a 10 ms window", len(sentAt))
	}
	for i, s := range sent {
		if s != uint64(i+1) {
			t.Fatalf("batches published in order %v", sent)
		}
	}
	if len(sent) != int(seq) {
		t.Fatalf("published %d batches of %d", len(sent), seq)
	}
}

func TestCoalescerFull(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	c := &coalescer{window: time.Hour, maxOps: 5, maxBytes: 100}
	c.take(t0) // just published: the next message waits for the window
	c.add(coalescerBatch(t, 1, 2, 10), t0)
	c.add(coalescerBatch(t, 2, 2, 10), t0)
	if c.full() || poll(c, t0) != nil {
		t.Fatal("4 ops and 20 bytes: full, want waiting for the window")
	}
	c.add(coalescerBatch(t, 3, 1, 10), t0)
	if !c.full() {
		t.Fatal("5 ops: not full")
	}
	if got := poll(c, t0); len(got) != 3 {
		t.Fatalf("full queue: published %d batches, want 3", len(got))
	}

	c = &coalescer{window: time.Hour, maxOps: 100, maxBytes: 100}
	c.take(t0)
	c.add(coalescerBatch(t, 1, 1, 60), t0)
	if c.full() {
		t.Fatal("60 bytes: full")
	}
	c.add(coalescerBatch(t, 2, 1, 40), t0)
	if !c.full() {
		t.Fatal("100 bytes: not full")
	}
}

func TestCoalescerTakeRespectsMaxBytes(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	c := &coalescer{window: time.Millisecond, maxOps: 100, maxBytes: 100}
	for i, size := range []int{40, 40, 40, 150, 10} {
		c.add(coalescerBatch(t, uint64(i+1), 1, size), t0)
	}
	take := func(want ...uint64) {
		t.Helper()
		var got []uint64
		for _, b := range c.take(t0) {
			got = append(got, b.Seq)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("take = %v, want %v", got, want)
		}
	}
	take(1, 2) // 80 bytes; a third would make 120
	if c.ops != 3 || c.bytes != 200 || !c.full() {
		t.Fatalf("after take: %d ops, %d bytes queued, want 3 and 200", c.ops, c.bytes)
	}
	take(3)
	take(4) // larger than maxBytes: goes alone
	take(5)
	if _, ok := c.due(); ok || c.ops != 0 || c.bytes != 0 {
		t.Fatal("queue not empty after taking everything")
	}
}

// TestMessageIDBindsThePayload: pubsub acts on ids before the validator
// runs, so a forged message must never share the real one's id — not when
// it claims the same batches, nor when it copies them with another
// signature or signer.
func TestMessageIDBindsThePayload(t *testing.T) {
	_, group := signedSeedGroup(3)
	priv, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	real := Message{Origin: group[0].Origin, Batches: group}
	real.Signer, real.Sig = group[0].Signer, bytes.Repeat([]byte{1}, 64)
	other := real
	if err := other.Sign("ns", priv); err != nil {
		t.Fatal(err)
	}
	badSig := real
	badSig.Sig = bytes.Repeat([]byte{2}, 64)
	unsigned := Message{Origin: real.Origin, Batches: group}
	id := messageID(&pb.Message{Data: real.Encode(nil)})
	if again := messageID(&pb.Message{Data: real.Encode(nil), From: []byte("x"), Seqno: []byte{9}}); again != id {
		t.Fatal("the id depends on more than the payload")
	}
	for name, m := range map[string]Message{"other signer": other, "other signature": badSig, "unsigned": unsigned} {
		if messageID(&pb.Message{Data: m.Encode(nil)}) == id {
			t.Errorf("%s: shares the real message's id", name)
		}
	}
	// The same message re-encoded (an overlong origin tag) would have an
	// id of its own: the validator refuses everything but the canonical
	// bytes.
	data := real.Encode(nil)
	if _, err := decodeCanonical(data, Limits{}); err != nil {
		t.Fatalf("the canonical encoding: %v", err)
	}
	longer := append(wireLongVarint(nil, protowire.EncodeTag(fMsgOrigin, protowire.Fixed64Type)), data[1:]...)
	if _, err := DecodeMessage(longer, Limits{}); err != nil {
		t.Fatalf("the re-encoding does not decode: %v", err)
	}
	if _, err := decodeCanonical(longer, Limits{}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a re-encoding of a genuine message: %v, want ErrMalformed", err)
	}
}

// TestCoalescerWindowAdapts: busy messages widen the window up to its
// maximum; quiet ones narrow it back to the base.
func TestCoalescerWindowAdapts(t *testing.T) {
	base := 2 * time.Millisecond
	c := &coalescer{window: base, maxWindow: 8 * base, maxOps: 1 << 20, maxBytes: 1 << 30}
	now := time.Unix(0, 0)
	busy := Batch{Delta: deltaWithKeys(16)}
	for i := 0; i < 5; i++ {
		c.add(busy, now)
		c.take(now)
	}
	if c.current() != 8*base {
		t.Fatalf("window %v after busy messages, want %v", c.current(), 8*base)
	}
	quiet := Batch{Delta: deltaWithKeys(1)}
	for i := 0; i < 5; i++ {
		c.add(quiet, now)
		c.take(now)
	}
	if c.current() != base {
		t.Fatalf("window %v after quiet messages, want %v", c.current(), base)
	}
}

// deltaWithKeys returns a batch delta naming n keys.
func deltaWithKeys(n int) crdt.Delta {
	ns := crdt.NewNamespace(crdt.Limits{})
	var db crdt.DeltaBuilder
	for i := 0; i < n; i++ {
		d, err := ns.Prepare(crdt.Op{Kind: crdt.OpPut, Key: fmt.Sprint("k", i), Value: []byte("v")}, 1, crdt.Timestamp{Wall: int64(i + 1)})
		if err != nil {
			panic(err)
		}
		ns.ApplyDelta(d, nil)
		db.Add(d)
	}
	return db.Build()
}

// TestCoalescerTakeRespectsMaxBatches: a message never carries more
// batches than receivers accept (Limits.MaxBatches), however small they
// are; batches that carry no operation (a dot skip) still count.
func TestCoalescerTakeRespectsMaxBatches(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	c := &coalescer{window: time.Hour, maxOps: 1000, maxBytes: 1 << 20, maxBatches: 3}
	c.take(t0)
	for i := range 7 {
		c.add(coalescerBatch(t, uint64(i+1), 0, 10), t0)
		if full := c.full(); full != (i+1 >= 3) {
			t.Fatalf("%d batches queued: full %v", i+1, full)
		}
	}
	for _, want := range []int{3, 3, 1} {
		if got := len(c.take(t0)); got != want {
			t.Fatalf("take = %d batches, want %d", got, want)
		}
	}
	// What the receivers' decoder makes of a full message.
	lim := Limits{MaxBatches: 3}
	for seq := range uint64(4) {
		b := coalescerBatch(t, 8+seq, 1, 0)
		b.Encoded = b.Delta.Encode(nil)
		c.add(b, t0)
	}
	m := Message{Origin: 1, Batches: c.take(t0)}
	if _, err := DecodeMessage(m.Encode(nil), lim); err != nil {
		t.Fatalf("a message the coalescer built is refused: %v", err)
	}
}
