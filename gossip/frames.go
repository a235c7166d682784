package gossip

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/mycelnet/mycel/crdt"
)

// frameKind tags one frame of the sync protocol. Each frame is a protobuf
// message with exactly one field set, whose number is the kind.
type frameKind protowire.Number

const (
	frameHello    frameKind = 1 // client: namespace and batches it has seen
	frameBatch    frameKind = 2 // server: one log batch the client lacks
	frameDone     frameKind = 3 // server: end of the log phase
	frameBuckets  frameKind = 4 // client: digest sums of its key buckets
	frameDiffer   frameKind = 5 // server: the buckets that differ
	frameKeyDots  frameKind = 6 // client: one key of a differing bucket and its dots
	frameEndKeys  frameKind = 7 // client: no more keys
	frameKeyDelta frameKind = 8 // server: the state of one key, as a delta
	frameState    frameKind = 9 // server: end of state phase: its seen batches and context
)

// frame is one decoded sync frame; which fields matter depends on kind.
type frame struct {
	kind frameKind
	ns   string
	seen crdt.Context // hello, state
	// hello: send everything the client lacks, holding nothing back for
	// gossip (field 3; a server that predates it ignores it)
	full  bool
	cctx  crdt.Context // state
	batch Batch        // batch
	more  bool         // done: the server stopped early; sync again
	// done: the server held back batches that gossip is bringing; sync
	// again after the grace period (field 1 = 2: a server that predates
	// it never sends it, and a client that predates it reads "no more")
	held      bool
	compacted bool // done: some batches are gone from the log
	// state: some key was left out (its delta would not fit in a frame),
	// so the answer does not cover every difference: do not merge
	incomplete bool
	lacks      uint64       // done: batches of the client's the server lacks
	buckets    []bucketSum  // buckets
	differ     []uint32     // differ
	key        string       // keyDots
	dots       crdt.Context // keyDots (dots held under key)
	delta      crdt.Delta   // keyDelta
}

// bucketSum is the digest sum of one bucket of keys.
type bucketSum [40]byte

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// encodeFrame returns the frame's encoding: the kind's field holding the
// body's bytes.
func encodeFrame(f *frame) []byte {
	var body []byte
	switch f.kind {
	case frameHello:
		body = appendBytesField(body, 1, []byte(f.ns))
		body = appendBytesField(body, 2, f.seen.Encode(nil))
		if f.full {
			body = appendVarintField(body, 3, 1)
		}
	case frameBatch:
		body = protowire.AppendTag(body, 1, protowire.Fixed64Type)
		body = protowire.AppendFixed64(body, uint64(f.batch.Origin))
		body = appendVarintField(body, 2, f.batch.Seq)
		body = appendBytesField(body, 3, f.batch.Encoded)
		if len(f.batch.Signer) > 0 {
			body = appendBytesField(body, 4, f.batch.Signer)
		}
		if len(f.batch.Sig) > 0 {
			body = appendBytesField(body, 5, f.batch.Sig)
		}
	case frameDone:
		next := boolInt(f.more)
		if f.held && !f.more {
			next = 2
		}
		body = appendVarintField(body, 1, next)
		body = appendVarintField(body, 2, boolInt(f.compacted))
		body = appendVarintField(body, 3, f.lacks)
	case frameBuckets:
		sums := make([]byte, 0, len(f.buckets)*40)
		for _, s := range f.buckets {
			sums = append(sums, s[:]...)
		}
		body = appendBytesField(body, 1, sums)
	case frameDiffer:
		ids := make([]byte, 0, len(f.differ)*4)
		for _, id := range f.differ {
			ids = binary.BigEndian.AppendUint32(ids, id)
		}
		body = appendBytesField(body, 1, ids)
	case frameKeyDots:
		body = appendBytesField(body, 1, []byte(f.key))
		body = appendBytesField(body, 2, f.dots.Encode(nil))
	case frameEndKeys:
	case frameKeyDelta:
		body = appendBytesField(body, 1, f.delta.Encode(nil))
	case frameState:
		body = appendBytesField(body, 1, f.seen.Encode(nil))
		body = appendBytesField(body, 2, f.cctx.Encode(nil))
		if f.incomplete {
			body = appendVarintField(body, 3, 1)
		}
	}
	return appendBytesField(nil, protowire.Number(f.kind), body)
}

func boolInt(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// decodeFrame decodes one sync frame with limits. Anything unexpected is an
// error wrapping ErrMalformed.
func decodeFrame(b []byte, lim Limits) (*frame, error) {
	lim = lim.withDefaults()
	if len(b) > lim.MaxMessageBytes {
		return nil, fmt.Errorf("%w: frame of %d bytes", ErrMalformed, len(b))
	}
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || typ != protowire.BytesType || num < 1 || num > protowire.Number(frameState) {
		return nil, fmt.Errorf("%w: bad frame header", ErrMalformed)
	}
	body, m := protowire.ConsumeBytes(b[n:])
	if m < 0 || n+m != len(b) {
		return nil, fmt.Errorf("%w: bad frame length", ErrMalformed)
	}
	f := &frame{kind: frameKind(num)}
	fields, err := frameFields(body)
	if err != nil {
		return nil, err
	}
	bytesOf := func(num protowire.Number) []byte { return fields[num].b }
	if f.kind != frameBatch {
		// Fields 4 and 5 (signer, signature) belong to batch frames only.
		if _, ok := fields[4]; ok {
			return nil, fmt.Errorf("%w: bad field", ErrMalformed)
		}
		if _, ok := fields[5]; ok {
			return nil, fmt.Errorf("%w: bad field", ErrMalformed)
		}
	}
	switch f.kind {
	case frameHello:
		ns := bytesOf(1)
		if len(ns) == 0 || len(ns) > crdt.MaxNamespaceNameBytes || !utf8.Valid(ns) {
			return nil, fmt.Errorf("%w: bad namespace name", ErrMalformed)
		}
		f.ns = string(ns)
		if f.seen, err = crdt.DecodeContext(bytesOf(2), lim.Delta); err != nil {
			return nil, fmt.Errorf("%w: hello: %v", ErrMalformed, err)
		}
		f.full = fields[3].u == 1
	case frameBatch:
		o, s := fields[1], fields[2]
		if !o.fixed || o.u == 0 || s.u == 0 {
			return nil, fmt.Errorf("%w: batch without origin or sequence", ErrMalformed)
		}
		d, err := crdt.DecodeDelta(bytesOf(3), lim.Delta)
		if err != nil {
			return nil, fmt.Errorf("%w: batch: %v", ErrMalformed, err)
		}
		f.batch = Batch{Origin: crdt.ReplicaID(o.u), Seq: s.u, Delta: d, Encoded: bytesOf(3)}
		// A signer without an auth is malformed; an auth without a signer
		// refers to the previous frame's (authStream, which the session
		// applies after decoding).
		if signer, sig := bytesOf(4), bytesOf(5); len(sig) > 0 || len(signer) > 0 {
			if len(signer) > maxSignerBytes || len(sig) == 0 || len(sig) > MaxAuthBytes {
				return nil, fmt.Errorf("%w: bad batch signature", ErrMalformed)
			}
			f.batch.Signer, f.batch.Sig = signer, sig
		}
		if err := checkOwnDots(d, f.batch.Origin); err != nil {
			return nil, err
		}
	case frameDone:
		f.more, f.held, f.compacted, f.lacks = fields[1].u == 1, fields[1].u == 2, fields[2].u == 1, fields[3].u
	case frameBuckets:
		sums := bytesOf(1)
		if len(sums)%40 != 0 || len(sums)/40 > maxBuckets || !isPow2(len(sums)/40) {
			return nil, fmt.Errorf("%w: bad bucket sums", ErrMalformed)
		}
		f.buckets = make([]bucketSum, len(sums)/40)
		for i := range f.buckets {
			copy(f.buckets[i][:], sums[i*40:])
		}
	case frameDiffer:
		ids := bytesOf(1)
		if len(ids)%4 != 0 || len(ids)/4 > maxBuckets {
			return nil, fmt.Errorf("%w: bad bucket list", ErrMalformed)
		}
		for i := 0; i < len(ids); i += 4 {
			f.differ = append(f.differ, binary.BigEndian.Uint32(ids[i:]))
		}
	case frameKeyDots:
		key := bytesOf(1)
		if len(key) == 0 || len(key) > lim.Delta.MaxKeyBytes || !utf8.Valid(key) {
			return nil, fmt.Errorf("%w: bad key", ErrMalformed)
		}
		f.key = string(key)
		if f.dots, err = crdt.DecodeContext(bytesOf(2), lim.Delta); err != nil {
			return nil, fmt.Errorf("%w: key dots: %v", ErrMalformed, err)
		}
	case frameEndKeys:
	case frameKeyDelta:
		if f.delta, err = crdt.DecodeDelta(bytesOf(1), lim.Delta); err != nil {
			return nil, fmt.Errorf("%w: key delta: %v", ErrMalformed, err)
		}
		if f.delta.Len() != 1 {
			return nil, fmt.Errorf("%w: key delta names %d keys", ErrMalformed, f.delta.Len())
		}
	case frameState:
		if f.seen, err = crdt.DecodeContext(bytesOf(1), lim.Delta); err != nil {
			return nil, fmt.Errorf("%w: state: %v", ErrMalformed, err)
		}
		if f.cctx, err = crdt.DecodeContext(bytesOf(2), lim.Delta); err != nil {
			return nil, fmt.Errorf("%w: state: %v", ErrMalformed, err)
		}
		f.incomplete = fields[3].u == 1
	}
	return f, nil
}

type fieldVal struct {
	u     uint64
	b     []byte
	fixed bool
}

// frameFields reads the fields of a frame body: each number at most once,
// numbers 1..3 only.
func frameFields(b []byte) (map[protowire.Number]fieldVal, error) {
	out := make(map[protowire.Number]fieldVal, 3)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num < 1 || num > 5 {
			return nil, fmt.Errorf("%w: bad field", ErrMalformed)
		}
		if _, dup := out[num]; dup {
			return nil, fmt.Errorf("%w: field %d twice", ErrMalformed, num)
		}
		b = b[n:]
		var v fieldVal
		switch typ {
		case protowire.VarintType:
			v.u, n = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			v.u, n = protowire.ConsumeFixed64(b)
			v.fixed = true
		case protowire.BytesType:
			v.b, n = protowire.ConsumeBytes(b)
		default:
			return nil, fmt.Errorf("%w: wire type %d", ErrMalformed, typ)
		}
		if n < 0 {
			return nil, fmt.Errorf("%w: truncated field %d", ErrMalformed, num)
		}
		b = b[n:]
		out[num] = v
	}
	return out, nil
}

func isPow2(n int) bool { return n > 0 && n&(n-1) == 0 }
