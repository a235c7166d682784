package gossip

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"testing"
	"unicode/utf8"

	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/mycelnet/mycel/crdt"
)

// The fuzz targets feed arbitrary bytes to the decoders of what peers send:
// gossip messages and sync frames. For every input, under the default
// limits and under each of fuzzSmallLimits:
//
//   - decoding never panics, and a refusal wraps ErrMalformed;
//   - what is accepted respects the limits it was decoded under, and every
//     log batch in it holds only dots of its origin;
//   - it re-encodes to bytes that decode again (MaxMessageBytes and the
//     delta's MaxBytes aside: the canonical form may be longer) and
//     re-encode identically;
//   - tighter limits only refuse more: what they accept, the defaults
//     accept, with the same re-encoding.
//
// FuzzDecodeMessage also checks that the message id, which pubsub computes
// before validation, depends on the payload alone.

// fuzzSmallLimits returns the tight limits every input is also decoded
// under.
func fuzzSmallLimits() []Limits {
	return []Limits{
		{MaxBatches: 2, MaxMessageBytes: 512, Delta: crdt.Limits{MaxDepth: 2}},
		{MaxBatches: 1, Delta: crdt.Limits{MaxDepth: 1, MaxElements: 4, MaxKeyBytes: 4, MaxValueBytes: 8}},
		{MaxMessageBytes: 256, Delta: crdt.Limits{MaxElements: 2, MaxBytes: 128}},
	}
}

func FuzzDecodeMessage(f *testing.F) {
	for _, s := range fuzzMessageSeeds(f) {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, ok := fuzzRoundTrip(t, data, DecodeMessage, func(m Message) []byte { return m.Encode(nil) }, fuzzCheckMessage)
		if h, id := sha256.Sum256(data), messageID(&pb.Message{Data: data}); id != string(h[:messageIDBytes]) {
			t.Fatalf("messageID %x is not the first %d bytes of the payload's SHA-256", id, messageIDBytes)
		}
		// The validator takes only the canonical encoding, so that one
		// genuine message cannot be re-encoded into many ids.
		_, cerr := decodeCanonical(data, Limits{})
		if canonical := ok && bytes.Equal(m.Encode(nil), data); (cerr == nil) != canonical {
			t.Fatalf("decodeCanonical: %v, canonical %v", cerr, canonical)
		}
		if !ok {
			return
		}
		if (m.Signer == nil) != (m.Sig == nil) || len(m.Signer) > maxSignerBytes || len(m.Sig) > maxRawSigBytes {
			t.Fatalf("message signer %d bytes, signature %d bytes", len(m.Signer), len(m.Sig))
		}
		// Whatever was accepted, checking its signature never panics, and
		// fails: nothing here holds the keys.
		if err := m.verify("ns", nil); err == nil {
			t.Fatal("a fuzzed message verified")
		}
	})
}

// FuzzVerifyBatchAuth feeds arbitrary auths (a signature, a place in a
// group and a Merkle proof, as sync frames and log records carry them) to
// the batch verifier with a genuine batch: it never panics, a refusal
// wraps ErrForged, and an auth it accepts proves the root the key signed.
func FuzzVerifyBatchAuth(f *testing.F) {
	_, group := signedSeedGroup(5)
	for _, b := range group {
		f.Add(b.Seq, b.Sig)
	}
	f.Add(uint64(1), []byte{})
	f.Add(uint64(1), []byte{64})
	f.Add(uint64(2), append(bytes.Clone(group[1].Sig), 0))
	tree, err := newGroupTree("ns", group)
	if err != nil {
		f.Fatal(err)
	}
	root := tree.root()
	f.Fuzz(func(t *testing.T, seq uint64, auth []byte) {
		b := group[seq%uint64(len(group))]
		b.Sig = auth
		err := VerifyBatch("ns", b)
		if err != nil {
			if !errors.Is(err, ErrForged) {
				t.Fatalf("refusal %v does not wrap ErrForged", err)
			}
			return
		}
		got, _, err := authRoot(auth, leafHash("ns", &b))
		if err != nil || got != root {
			t.Fatalf("accepted an auth proving root %x (err %v), the key signed %x", got, err, root)
		}
	})
}

// FuzzAuthStreamExpand feeds arbitrary signers and auths, as sync batch
// frames carry them, to a stream that has seen one genuine frame: it never
// panics, refusals wrap ErrMalformed, and what it restores is a full auth
// within bounds.
func FuzzAuthStreamExpand(f *testing.F) {
	_, group := signedSeedGroup(4)
	var out authStream
	for _, b := range group {
		s, a := out.compact(b.Signer, b.Sig)
		f.Add(s, a)
	}
	f.Add([]byte(nil), []byte{0})
	f.Add(group[0].Signer, []byte{0, 1, 2})
	f.Fuzz(func(t *testing.T, signer, auth []byte) {
		var in authStream
		if _, _, err := in.expand(group[0].Signer, group[0].Sig); err != nil {
			t.Fatal(err)
		}
		gotSigner, got, err := in.expand(signer, auth)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("refusal %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(signer) > 0 {
			// Taken as it is; verification judges it.
			if !bytes.Equal(gotSigner, signer) || !bytes.Equal(got, auth) {
				t.Fatalf("a frame with a signer came out changed: %x/%x", gotSigner, got)
			}
			return
		}
		sig, _, ok := splitAuth(got)
		if !ok || len(sig) == 0 || len(got) > MaxAuthBytes || len(gotSigner) == 0 {
			t.Fatalf("restored signer %d bytes, auth %x", len(gotSigner), got)
		}
	})
}

// FuzzAuthStreamRoundTrip sends arbitrary (signer, auth) pairs, three
// in a row, through one stream's compact and another's expand: what comes
// out is what went in, whatever the sender was given.
func FuzzAuthStreamRoundTrip(f *testing.F) {
	_, group := signedSeedGroup(3)
	f.Add(group[0].Signer, group[0].Sig, group[1].Signer, group[1].Sig, group[2].Signer, group[2].Sig)
	f.Add(group[0].Signer, group[0].Sig, group[1].Signer, []byte{0xff}, group[2].Signer, group[2].Sig)
	f.Add(group[0].Signer, []byte{0, 0, 1}, group[1].Signer, group[1].Sig, []byte{1}, group[2].Sig)
	f.Fuzz(func(t *testing.T, s1, a1, s2, a2, s3, a3 []byte) {
		var out, in authStream
		for i, p := range [][2][]byte{{s1, a1}, {s2, a2}, {s3, a3}} {
			signer, auth := p[0], p[1]
			if len(signer) == 0 || len(signer) > maxSignerBytes || len(auth) == 0 || len(auth) > MaxAuthBytes {
				continue // not what a server holds: the log and decoders bound both
			}
			ws, wa := out.compact(signer, auth)
			gs, ga, err := in.expand(ws, wa)
			if err != nil || !bytes.Equal(gs, signer) || !bytes.Equal(ga, auth) {
				t.Fatalf("frame %d: sent %x/%x, restored %x/%x (%v)", i, signer, auth, gs, ga, err)
			}
		}
	})
}

func FuzzDecodeFrame(f *testing.F) {
	for _, s := range fuzzFrameSeeds(f) {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, ok := fuzzRoundTrip(t, data, decodeFrame, encodeFrame, fuzzCheckFrame)
		if !ok {
			return
		}
		// What the sync code does with a frame it accepted.
		switch fr.kind {
		case frameBuckets:
			n := len(fr.buckets)
			if d := differingBuckets(fr.buckets, fr.buckets); len(d) != 0 {
				t.Fatalf("buckets differ from themselves: %v", d)
			}
			if d := differingBuckets(make([]bucketSum, n), fr.buckets); len(d) > n {
				t.Fatalf("%d differing buckets of %d", len(d), n)
			}
			if b := bucketOf("k", n); int(b) >= n {
				t.Fatalf("bucket %d of %d", b, n)
			}
		case frameKeyDelta:
			if b := bucketOf(fr.delta.Key(0), 8); b >= 8 {
				t.Fatalf("bucket %d of 8", b)
			}
		}
	})
}

// fuzzRoundTrip decodes data under the default and the small limits and
// checks the properties common to both decoders. It returns what the
// default limits decoded, and whether they accepted data.
func fuzzRoundTrip[T any](t *testing.T, data []byte, decode func([]byte, Limits) (T, error), encode func(T) []byte, check func(*testing.T, T, Limits)) (T, bool) {
	t.Helper()
	x, err := decode(data, Limits{})
	var enc []byte
	if err != nil {
		fuzzCheckErr(t, err)
	} else {
		check(t, x, Limits{})
		enc = fuzzCanonical(t, x, Limits{}, decode, encode, check)
	}
	for _, lim := range fuzzSmallLimits() {
		y, serr := decode(data, lim)
		if serr != nil {
			fuzzCheckErr(t, serr)
			continue
		}
		if err != nil {
			t.Fatalf("limits %+v accept what the defaults refuse (%v)", lim, err)
		}
		if max := lim.withDefaults().MaxMessageBytes; len(data) > max {
			t.Fatalf("limits %+v accept %d bytes", lim, len(data))
		}
		check(t, y, lim)
		if got := fuzzCanonical(t, y, lim, decode, encode, check); !bytes.Equal(got, enc) {
			t.Fatalf("limits %+v re-encode to %q, defaults to %q", lim, got, enc)
		}
	}
	return x, err == nil
}

// fuzzCanonical checks that x's encoding decodes under lim, size limits
// aside, and re-encodes to itself. It returns the encoding.
func fuzzCanonical[T any](t *testing.T, x T, lim Limits, decode func([]byte, Limits) (T, error), encode func(T) []byte, check func(*testing.T, T, Limits)) []byte {
	t.Helper()
	lim.MaxMessageBytes, lim.Delta.MaxBytes = 0, 0
	enc := encode(x)
	y, err := decode(enc, lim)
	if err != nil {
		t.Fatalf("re-encoding %q is refused under limits %+v: %v", enc, lim, err)
	}
	check(t, y, lim)
	if again := encode(y); !bytes.Equal(again, enc) {
		t.Fatalf("canonical form is not a fixed point:\nfirst  %q\nsecond %q", enc, again)
	}
	return enc
}

func fuzzCheckErr(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("error does not wrap ErrMalformed: %v", err)
	}
}

// fuzzDeltaLimits fills the zero fields of l as the crdt decoders do.
func fuzzDeltaLimits(l crdt.Limits) crdt.Limits {
	d := crdt.DefaultLimits()
	for _, f := range []struct{ v, def *int }{
		{&l.MaxKeyBytes, &d.MaxKeyBytes}, {&l.MaxValueBytes, &d.MaxValueBytes},
		{&l.MaxDepth, &d.MaxDepth}, {&l.MaxElements, &d.MaxElements}, {&l.MaxBytes, &d.MaxBytes},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	return l
}

func fuzzCheckMessage(t *testing.T, m Message, lim Limits) {
	t.Helper()
	lim = lim.withDefaults()
	if m.Origin == 0 || len(m.Batches) == 0 || len(m.Batches) > lim.MaxBatches {
		t.Fatalf("accepted a message from %v with %d batches (max %d)", m.Origin, len(m.Batches), lim.MaxBatches)
	}
	for i, bt := range m.Batches {
		if bt.Origin != m.Origin {
			t.Fatalf("batch %d has origin %v in a message from %v", i, bt.Origin, m.Origin)
		}
		if bt.Seq == 0 || i > 0 && bt.Seq <= m.Batches[i-1].Seq {
			t.Fatalf("batch %d has sequence number %d", i, bt.Seq)
		}
		fuzzCheckBatch(t, bt, fuzzDeltaLimits(lim.Delta))
	}
}

func fuzzCheckFrame(t *testing.T, f *frame, lim Limits) {
	t.Helper()
	dl := fuzzDeltaLimits(lim.Delta)
	checkCtx := func(what string, c crdt.Context) {
		t.Helper()
		if c.Ranges() > dl.MaxElements {
			t.Fatalf("%s: %d context ranges, max %d", what, c.Ranges(), dl.MaxElements)
		}
	}
	switch f.kind {
	case frameHello:
		if f.ns == "" || len(f.ns) > 1024 || !utf8.ValidString(f.ns) {
			t.Fatalf("hello names namespace %q", f.ns)
		}
		checkCtx("hello", f.seen)
	case frameBatch:
		if f.batch.Origin == 0 || f.batch.Seq == 0 {
			t.Fatalf("batch %v/%d", f.batch.Origin, f.batch.Seq)
		}
		if (len(f.batch.Sig) == 0 && len(f.batch.Signer) > 0) || len(f.batch.Signer) > maxSignerBytes || len(f.batch.Sig) > MaxAuthBytes {
			t.Fatalf("batch signer %d bytes, signature %d bytes", len(f.batch.Signer), len(f.batch.Sig))
		}
		// Whatever was accepted, verifying it never panics.
		_ = VerifyBatch("ns", f.batch)
		fuzzCheckBatch(t, f.batch, dl)
	case frameDone, frameEndKeys:
	case frameBuckets:
		if n := len(f.buckets); n == 0 || n > maxBuckets || n&(n-1) != 0 {
			t.Fatalf("%d buckets", n)
		}
	case frameDiffer:
		if len(f.differ) > maxBuckets {
			t.Fatalf("%d differing buckets", len(f.differ))
		}
	case frameKeyDots:
		if f.key == "" || len(f.key) > dl.MaxKeyBytes || !utf8.ValidString(f.key) {
			t.Fatalf("key dots for key %q", f.key)
		}
		checkCtx("key dots", f.dots)
	case frameKeyDelta:
		if f.delta.Len() != 1 {
			t.Fatalf("key delta names %d keys", f.delta.Len())
		}
		if err := fuzzDeltaWithin(f.delta, dl); err != nil {
			t.Fatalf("key delta: %v", err)
		}
	case frameState:
		checkCtx("state seen", f.seen)
		checkCtx("state context", f.cctx)
	default:
		t.Fatalf("accepted a frame of kind %d", f.kind)
	}
}

// fuzzCheckBatch checks a decoded log batch: its delta holds only its
// origin's dots, respects lim, and is what its encoding decodes to.
func fuzzCheckBatch(t *testing.T, bt Batch, lim crdt.Limits) {
	t.Helper()
	bt.Delta.StoreDots(func(d crdt.Dot) {
		if d.Replica != bt.Origin {
			t.Fatalf("batch %v/%d holds dot %v", bt.Origin, bt.Seq, d)
		}
	})
	if len(bt.Encoded) > lim.MaxBytes {
		t.Fatalf("batch %v/%d: delta of %d bytes, max %d", bt.Origin, bt.Seq, len(bt.Encoded), lim.MaxBytes)
	}
	if err := fuzzDeltaWithin(bt.Delta, lim); err != nil {
		t.Fatalf("batch %v/%d: %v", bt.Origin, bt.Seq, err)
	}
	d, err := crdt.DecodeDelta(bt.Encoded, lim)
	if err != nil {
		t.Fatalf("batch %v/%d: its encoding does not decode: %v", bt.Origin, bt.Seq, err)
	}
	if a, b := d.Encode(nil), bt.Delta.Encode(nil); !bytes.Equal(a, b) {
		t.Fatalf("batch %v/%d: delta %q is not its encoding's %q", bt.Origin, bt.Seq, b, a)
	}
}

// fuzzDeltaWithin checks what the crdt API shows of d against lim (filled).
func fuzzDeltaWithin(d crdt.Delta, lim crdt.Limits) error {
	c := d.Context()
	if c.Ranges() > lim.MaxElements || d.Len() > lim.MaxElements {
		return fmt.Errorf("%d context ranges and %d keys, max %d", c.Ranges(), d.Len(), lim.MaxElements)
	}
	for i := 0; i < d.Len(); i++ {
		k := d.Key(i)
		if len(k) > lim.MaxKeyBytes {
			return fmt.Errorf("key of %d bytes", len(k))
		}
		if err := fuzzValueWithin(d.Value(i), lim, 0); err != nil {
			return fmt.Errorf("key %q: %w", k, err)
		}
	}
	return nil
}

func fuzzValueWithin(v crdt.Value, lim crdt.Limits, depth int) error {
	if depth > lim.MaxDepth {
		return fmt.Errorf("value at depth %d", depth)
	}
	regs, elems, fields := v.Registers(), v.SetElements(), v.Fields()
	if len(regs) > lim.MaxElements || len(elems) > lim.MaxElements || len(fields) > lim.MaxElements {
		return fmt.Errorf("%d registers, %d elements, %d fields", len(regs), len(elems), len(fields))
	}
	for _, r := range regs {
		if len(r.Value) > lim.MaxValueBytes {
			return fmt.Errorf("register value of %d bytes", len(r.Value))
		}
	}
	for _, e := range elems {
		if len(e) > lim.MaxKeyBytes {
			return fmt.Errorf("set element of %d bytes", len(e))
		}
	}
	for _, name := range fields {
		if len(name) > lim.MaxKeyBytes {
			return fmt.Errorf("field name of %d bytes", len(name))
		}
		f, _ := v.Field(name)
		if err := fuzzValueWithin(f, lim, depth+1); err != nil {
			return fmt.Errorf("field %q: %w", name, err)
		}
	}
	return nil
}

// --- seeds ---

// fuzzSeed is one seed input. Its name says what it is; the committed
// corpus holds it under that name.
type fuzzSeed struct {
	name string
	data []byte
}

// fuzzWriter is one replica writing through the crdt API and cutting its
// writes into log batches, as the store does.
type fuzzWriter struct {
	tb    testing.TB
	id    crdt.ReplicaID
	ns    *crdt.Namespace
	clock crdt.Clock
	now   int64
	seq   uint64
	b     crdt.DeltaBuilder
	log   []Batch
}

func (w *fuzzWriter) do(ops ...crdt.Op) {
	w.tb.Helper()
	for _, op := range ops {
		w.now += 5
		d, err := w.ns.Prepare(op, w.id, w.clock.Now(w.now))
		if err != nil {
			w.tb.Fatalf("replica %v: %v %q: %v", w.id, op.Kind, op.Key, err)
		}
		w.ns.ApplyDelta(d, nil)
		w.b.Add(d)
	}
}

// seal makes the writes since the last seal the next log batch.
func (w *fuzzWriter) seal() Batch {
	d := w.b.Build()
	w.seq++
	bt := Batch{Origin: w.id, Seq: w.seq, Delta: d, Encoded: d.Encode(nil)}
	w.log = append(w.log, bt)
	return bt
}

func (w *fuzzWriter) recv(bs ...Batch) {
	for _, bt := range bs {
		w.ns.ApplyDelta(bt.Delta, nil)
	}
}

// fuzzHistory is two replicas' logs: every op kind, nested maps, deletes,
// concurrent writes, a register over 512 bytes, nesting deeper than 2 and
// one write small enough for every limit of fuzzSmallLimits.
type fuzzHistory struct {
	a, b *fuzzWriter
}

func fuzzBuildHistory(tb testing.TB) *fuzzHistory {
	tb.Helper()
	w := func(peer string, now int64) *fuzzWriter {
		return &fuzzWriter{tb: tb, id: crdt.DeriveReplicaID([]byte(peer)), ns: crdt.NewNamespace(crdt.Limits{}), now: now}
	}
	a, b := w("peer-a", 1_700_000_000_000), w("peer-b", 1_700_000_000_002)
	a.do(
		crdt.Op{Kind: crdt.OpPut, Key: "greeting", Value: []byte("hello")},
		crdt.Op{Kind: crdt.OpSetUpdate, Key: "tags", Add: []string{"x", "y"}},
		crdt.Op{Kind: crdt.OpCounterAdd, Key: "visits", N: 5},
	)
	a.seal()
	a.do(
		crdt.Op{Kind: crdt.OpPut, Key: "user", Path: []string{"name"}, Value: []byte("ann")},
		crdt.Op{Kind: crdt.OpSetUpdate, Key: "user", Path: []string{"roles"}, Add: []string{"admin"}},
		crdt.Op{Kind: crdt.OpFlag, Key: "enabled", Enable: true},
	)
	a.seal()
	a.do(crdt.Op{Kind: crdt.OpPut, Key: "blob", Value: bytes.Repeat([]byte{0, 1, 0xfe, 0xff}, 150)})
	a.seal()
	b.recv(a.log[:2]...)
	a.do(
		crdt.Op{Kind: crdt.OpDelete, Key: "greeting"},
		crdt.Op{Kind: crdt.OpSetUpdate, Key: "tags", Remove: []string{"x"}},
		crdt.Op{Kind: crdt.OpCounterAdd, Key: "visits", N: -2},
		crdt.Op{Kind: crdt.OpPut, Key: "user", Path: []string{"prefs", "theme", "color"}, Value: []byte("blue")},
	)
	a.seal()
	// Concurrent with a's fourth batch.
	b.do(
		crdt.Op{Kind: crdt.OpPut, Key: "greeting", Value: []byte("hey")},
		crdt.Op{Kind: crdt.OpSetUpdate, Key: "tags", Add: []string{"w"}},
		crdt.Op{Kind: crdt.OpSetUpdate, Key: "user", Path: []string{"roles"}, Add: []string{"ops"}},
	)
	b.seal()
	b.do(crdt.Op{Kind: crdt.OpFlag, Key: "enabled", Enable: false})
	b.seal()
	b.do(crdt.Op{Kind: crdt.OpPut, Key: "k", Value: []byte("v")})
	b.seal()
	return &fuzzHistory{a: a, b: b}
}

func fuzzMessageSeeds(tb testing.TB) []fuzzSeed {
	h := fuzzBuildHistory(tb)
	a, b := h.a, h.b
	msg := func(w *fuzzWriter, seqs ...int) []byte {
		m := Message{Origin: w.id}
		for _, s := range seqs {
			m.Batches = append(m.Batches, w.log[s-1])
		}
		return m.Encode(nil)
	}
	ao, bo := uint64(a.id), uint64(b.id)
	d1, bd1 := a.log[0].Encoded, b.log[0].Encoded
	three := msg(a, 1, 2, 4)
	signer, sig := bytes.Repeat([]byte{0x12}, 38), bytes.Repeat([]byte{0x5a}, 64)
	signed := appendBytesField(appendBytesField(msg(a, 1, 2), fMsgSigner, signer), fMsgSig, sig)
	// Every tag, length and number one byte longer than it needs.
	nonMinimal := protowire.AppendFixed64(wireLongVarint(nil, protowire.EncodeTag(fMsgOrigin, protowire.Fixed64Type)), ao)
	body := wireLongVarint(wireLongVarint(nil, protowire.EncodeTag(fBatchSeq, protowire.VarintType)), 1)
	body = append(wireLongVarint(wireLongVarint(body, protowire.EncodeTag(fBatchDelta, protowire.BytesType)), uint64(len(d1))), d1...)
	nonMinimal = wireLongVarint(wireLongVarint(nonMinimal, protowire.EncodeTag(fMsgBatch, protowire.BytesType)), uint64(len(body)))
	nonMinimal = append(nonMinimal, body...)
	return []fuzzSeed{
		{"valid-one-batch", msg(a, 1)},
		{"valid-two-batches", msg(a, 1, 2)},
		{"valid-batches-with-gap", three},
		{"valid-four-batches", msg(a, 1, 2, 3, 4)},
		{"valid-large-register", msg(a, 3)},
		{"valid-deep-nesting", msg(a, 4)},
		{"valid-concurrent-writer", msg(b, 1, 2)},
		{"valid-small", msg(b, 3)},
		{"edge-batch-without-delta", wireMessage(ao, wireVarintField(fBatchSeq, 7))},
		{"edge-max-seq", wireMessage(ao, wireBatch(1, d1), wireBatch(math.MaxUint64, nil))},
		{"edge-non-minimal-varints", nonMinimal},
		{"hostile-empty", nil},
		{"hostile-origin-truncated", []byte{0x09, 1, 2, 3}},
		{"hostile-origin-only", wireMessage(ao)},
		{"hostile-origin-zero", wireMessage(0, wireBatch(1, nil))},
		{"hostile-origin-twice", append(wireMessage(ao), wireMessage(ao, wireBatch(1, d1))...)},
		{"hostile-origin-after-batch", append(wireMessage(ao, wireBatch(1, d1)), wireMessage(ao)...)},
		{"hostile-batch-before-origin", append(appendBytesField(nil, fMsgBatch, wireBatch(1, d1)), wireMessage(ao)...)},
		{"hostile-seq-decreasing", wireMessage(ao, wireBatch(2, a.log[1].Encoded), wireBatch(1, d1))},
		{"hostile-seq-repeated", wireMessage(ao, wireBatch(1, d1), wireBatch(1, d1))},
		{"hostile-seq-zero", wireMessage(ao, wireBatch(0, d1))},
		{"hostile-foreign-dots", wireMessage(ao, wireBatch(1, bd1))},
		{"hostile-claimed-origin", wireMessage(bo, wireBatch(1, d1))},
		{"hostile-delta-before-seq", wireMessage(ao, append(appendBytesField(nil, fBatchDelta, d1), wireVarintField(fBatchSeq, 1)...))},
		{"hostile-delta-twice", wireMessage(ao, append(wireBatch(1, d1), appendBytesField(nil, fBatchDelta, d1)...))},
		{"hostile-seq-twice", wireMessage(ao, append(wireVarintField(fBatchSeq, 1), wireBatch(2, d1)...))},
		{"hostile-bad-delta", wireMessage(ao, wireBatch(1, []byte{0xff}))},
		{"hostile-unknown-field", append(wireMessage(ao, wireBatch(1, d1)), wireVarintField(3, 1)...)},
		{"hostile-batch-unknown-field", wireMessage(ao, append(wireBatch(1, d1), wireVarintField(3, 1)...))},
		{"hostile-batch-length-overflow", protowire.AppendVarint(protowire.AppendTag(wireMessage(ao), fMsgBatch, protowire.BytesType), math.MaxUint64)},
		{"hostile-truncated", three[:len(three)-len(three)/3]},
		{"hostile-batch-as-varint", append(wireMessage(ao), wireVarintField(fMsgBatch, 1)...)},
		{"valid-signed", signed},
		{"hostile-signer-without-signature", appendBytesField(msg(a, 1), fMsgSigner, signer)},
		{"hostile-signature-without-signer", appendBytesField(msg(a, 1), fMsgSig, sig)},
		{"hostile-signature-before-signer", appendBytesField(appendBytesField(msg(a, 1), fMsgSig, sig), fMsgSigner, signer)},
		{"hostile-batch-after-signature", append(bytes.Clone(signed), appendBytesField(nil, fMsgBatch, wireBatch(9, d1))...)},
		{"hostile-signer-twice", appendBytesField(appendBytesField(appendBytesField(msg(a, 1), fMsgSigner, signer), fMsgSigner, signer), fMsgSig, sig)},
		{"hostile-empty-signer", appendBytesField(appendBytesField(msg(a, 1), fMsgSigner, nil), fMsgSig, sig)},
		{"hostile-signature-too-long", appendBytesField(appendBytesField(msg(a, 1), fMsgSigner, signer), fMsgSig, make([]byte, maxRawSigBytes+1))},
		{"hostile-batch-signature-field", wireMessage(ao, appendBytesField(wireBatch(1, d1), 3, sig))},
	}
}

func fuzzFrameSeeds(tb testing.TB) []fuzzSeed {
	h := fuzzBuildHistory(tb)
	a, b := h.a, h.b
	var seen crdt.Context
	for _, w := range []*fuzzWriter{a, b} {
		for _, bt := range w.log {
			seen.Add(crdt.Dot{Replica: bt.Origin, Counter: bt.Seq})
		}
	}
	var partial crdt.Context
	partial.AddRange(a.id, 1, 2)
	n := bucketCount(a.ns.Len())
	sums := bucketSums(a.ns, n)
	four := bucketSums(a.ns, 4)
	differ := differingBuckets(four, bucketSums(b.ns, 4))
	keyDelta := a.ns.KeyDelta("user", b.ns.ValueDots("user"))
	twoKeys := crdt.JoinDeltas(a.ns.KeyDelta("user", nil), a.ns.KeyDelta("tags", nil))
	enc := func(f frame) []byte { return encodeFrame(&f) }
	ab := a.log[1]
	ctxA := a.ns.Context()
	return []fuzzSeed{
		{"valid-hello", enc(frame{kind: frameHello, ns: "notes/2024", seen: seen})},
		{"valid-hello-nothing-seen", enc(frame{kind: frameHello, ns: "ü"})},
		{"valid-batch", enc(frame{kind: frameBatch, batch: ab})},
		{"valid-batch-signed", enc(frame{kind: frameBatch, batch: signedSeedBatch()})},
		{"hostile-batch-sig-without-signer", wireFrame(frameBatch, wireFixed64Field(1, uint64(ab.Origin)), wireVarintField(2, ab.Seq), appendBytesField(nil, 3, ab.Encoded), appendBytesField(nil, 5, make([]byte, 64)))},
		{"hostile-hello-with-signature", wireFrame(frameHello, appendBytesField(nil, 1, []byte("ns")), appendBytesField(nil, 5, make([]byte, 64)))},
		{"valid-batch-large-register", enc(frame{kind: frameBatch, batch: a.log[2]})},
		{"valid-batch-deep-nesting", enc(frame{kind: frameBatch, batch: a.log[3]})},
		{"valid-done", enc(frame{kind: frameDone})},
		{"valid-done-more-compacted", enc(frame{kind: frameDone, more: true, compacted: true})},
		{"valid-buckets", enc(frame{kind: frameBuckets, buckets: sums})},
		{"valid-buckets-four", enc(frame{kind: frameBuckets, buckets: four})},
		{"valid-differ", enc(frame{kind: frameDiffer, differ: append(differ, 3)})},
		{"valid-differ-none", enc(frame{kind: frameDiffer})},
		{"valid-key-dots", enc(frame{kind: frameKeyDots, key: "tags", dots: crdt.ContextOf(b.ns.ValueDots("tags")...)})},
		{"valid-key-dots-short", enc(frame{kind: frameKeyDots, key: "u", dots: partial})},
		{"valid-end-keys", enc(frame{kind: frameEndKeys})},
		{"valid-key-delta", enc(frame{kind: frameKeyDelta, delta: keyDelta})},
		{"valid-key-delta-removal", enc(frame{kind: frameKeyDelta, delta: a.ns.KeyDelta("greeting", b.ns.ValueDots("greeting"))})},
		{"valid-state", enc(frame{kind: frameState, seen: seen, cctx: ctxA})},
		{"edge-done-more-two", wireFrame(frameDone, wireVarintField(1, 2))},
		{"edge-batch-seq-fixed64", wireFrame(frameBatch, wireFixed64Field(1, uint64(ab.Origin)), wireFixed64Field(2, ab.Seq), appendBytesField(nil, 3, ab.Encoded))},
		{"edge-hello-fields-reversed", wireFrame(frameHello, appendBytesField(nil, 2, seen.Encode(nil)), appendBytesField(nil, 1, []byte("ns")))},
		{"hostile-empty", nil},
		{"hostile-kind-zero", wireFrame(0)},
		{"hostile-kind-ten", wireFrame(10)},
		{"hostile-kind-varint", wireVarintField(protowire.Number(frameDone), 1)},
		{"hostile-trailing-bytes", append(enc(frame{kind: frameEndKeys}), 0)},
		{"hostile-length-overflow", protowire.AppendVarint(protowire.AppendTag(nil, protowire.Number(frameHello), protowire.BytesType), math.MaxUint64)},
		{"hostile-field-twice", wireFrame(frameDone, wireVarintField(1, 1), wireVarintField(1, 0))},
		{"hostile-field-four", wireFrame(frameDone, wireVarintField(4, 1))},
		{"hostile-group", wireFrame(frameDone, protowire.AppendTag(nil, 1, protowire.StartGroupType))},
		{"hostile-fixed32", wireFrame(frameDone, protowire.AppendFixed32(protowire.AppendTag(nil, 1, protowire.Fixed32Type), 1))},
		{"hostile-hello-no-name", wireFrame(frameHello, appendBytesField(nil, 2, seen.Encode(nil)))},
		{"hostile-hello-bad-utf8", wireFrame(frameHello, appendBytesField(nil, 1, []byte{0xc3, 0x28}))},
		{"hostile-hello-long-name", wireFrame(frameHello, appendBytesField(nil, 1, bytes.Repeat([]byte("n"), 1025)))},
		{"hostile-hello-bad-context", wireFrame(frameHello, appendBytesField(nil, 1, []byte("ns")), appendBytesField(nil, 2, []byte{0xff}))},
		{"hostile-batch-origin-varint", wireFrame(frameBatch, wireVarintField(1, uint64(ab.Origin)), wireVarintField(2, ab.Seq), appendBytesField(nil, 3, ab.Encoded))},
		{"hostile-batch-origin-zero", wireFrame(frameBatch, wireFixed64Field(1, 0), wireVarintField(2, 1), appendBytesField(nil, 3, ab.Encoded))},
		{"hostile-batch-seq-zero", wireFrame(frameBatch, wireFixed64Field(1, uint64(ab.Origin)), wireVarintField(2, 0), appendBytesField(nil, 3, ab.Encoded))},
		{"hostile-batch-foreign-dots", enc(frame{kind: frameBatch, batch: Batch{Origin: a.id, Seq: 9, Encoded: b.log[0].Encoded}})},
		{"hostile-buckets-three", wireFrame(frameBuckets, appendBytesField(nil, 1, make([]byte, 120)))},
		{"hostile-buckets-odd-bytes", wireFrame(frameBuckets, appendBytesField(nil, 1, make([]byte, 41)))},
		{"hostile-buckets-none", wireFrame(frameBuckets)},
		{"hostile-differ-odd-bytes", wireFrame(frameDiffer, appendBytesField(nil, 1, make([]byte, 5)))},
		{"hostile-key-dots-no-key", wireFrame(frameKeyDots, appendBytesField(nil, 2, partial.Encode(nil)))},
		{"hostile-key-dots-long-key", wireFrame(frameKeyDots, appendBytesField(nil, 1, bytes.Repeat([]byte("k"), 1025)))},
		{"hostile-key-delta-two-keys", enc(frame{kind: frameKeyDelta, delta: twoKeys})},
		{"hostile-key-delta-no-key", enc(frame{kind: frameKeyDelta, delta: crdt.ContextDelta(ctxA)})},
		{"hostile-state-bad-context", wireFrame(frameState, appendBytesField(nil, 1, seen.Encode(nil)), appendBytesField(nil, 2, []byte{0x0a, 0x03, 0x09}))},
	}
}

// wireLongVarint appends v as a varint one byte longer than minimal.
func wireLongVarint(b []byte, v uint64) []byte {
	b = protowire.AppendVarint(b, v)
	b[len(b)-1] |= 0x80
	return append(b, 0)
}

func wireVarintField(num protowire.Number, v uint64) []byte { return appendVarintField(nil, num, v) }

func wireFixed64Field(num protowire.Number, v uint64) []byte {
	return protowire.AppendFixed64(protowire.AppendTag(nil, num, protowire.Fixed64Type), v)
}

// wireMessage is a gossip message from origin holding the batch bodies.
func wireMessage(origin uint64, batches ...[]byte) []byte {
	b := wireFixed64Field(fMsgOrigin, origin)
	for _, bt := range batches {
		b = appendBytesField(b, fMsgBatch, bt)
	}
	return b
}

// wireBatch is a batch body; a nil delta is left out.
func wireBatch(seq uint64, delta []byte) []byte {
	b := wireVarintField(fBatchSeq, seq)
	if delta != nil {
		b = appendBytesField(b, fBatchDelta, delta)
	}
	return b
}

// wireFrame is a frame of kind whose body is the fields given.
func wireFrame(kind frameKind, fields ...[]byte) []byte {
	return appendBytesField(nil, protowire.Number(kind), bytes.Join(fields, nil))
}

// signedSeedBatch returns a one-put batch of the replica of a fixed
// Ed25519 key, with its auth from that key (so that it verifies).
func signedSeedBatch() Batch {
	_, g := signedSeedGroup(1)
	return g[0]
}

// signedSeedMessage returns a message of n one-put batches of the fixed
// key's replica (those of signedSeedGroup, without their auths), signed
// by that key for namespace "ns", and the key.
func signedSeedMessage(n int) (crypto.PrivKey, Message) {
	priv, group := signedSeedGroup(n)
	m := Message{Origin: group[0].Origin}
	for _, b := range group {
		b.Signer, b.Sig = nil, nil
		m.Batches = append(m.Batches, b)
	}
	if err := m.Sign("ns", priv); err != nil {
		panic(err)
	}
	return priv, m
}

// signedSeedGroup returns n one-put batches (seqs 1..n) of the replica of a
// fixed Ed25519 key, signed as one group in namespace "ns", each with its
// auth, and the key.
func signedSeedGroup(n int) (crypto.PrivKey, []Batch) {
	priv, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{7}, 64)))
	if err != nil {
		panic(err)
	}
	pid, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		panic(err)
	}
	origin := crdt.DeriveReplicaID([]byte(pid))
	m := Message{Origin: origin}
	for i := 1; i <= n; i++ {
		d, err := crdt.NewNamespace(crdt.Limits{}).Prepare(crdt.Op{Kind: crdt.OpPut, Key: fmt.Sprint("k", i), Value: []byte("v")}, origin, crdt.Timestamp{Wall: 1_700_000_000_000})
		if err != nil {
			panic(err)
		}
		m.Batches = append(m.Batches, Batch{Origin: origin, Seq: uint64(i), Delta: d, Encoded: d.Encode(nil)})
	}
	if err := m.Sign("ns", priv); err != nil {
		panic(err)
	}
	if err := m.verify("ns", nil); err != nil {
		panic(err)
	}
	return priv, m.Batches
}
