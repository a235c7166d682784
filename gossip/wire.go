package gossip

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/mycelnet/mycel/crdt"
)

// ErrMalformed: bytes from a peer are not a valid message or frame.
var ErrMalformed = errors.New("gossip: malformed message")

// Batch is one entry of an origin's delta log, as carried on the wire.
type Batch struct {
	Origin crdt.ReplicaID
	Seq    uint64
	// Delta is decoded; Encoded is its canonical encoding.
	Delta   crdt.Delta
	Encoded []byte
	// Signer is the origin's peer id (its bytes) and Sig the batch's auth:
	// the signature of the group it was signed in, and its proof of
	// membership (see auth.go). A gossip message carries neither per
	// batch, only its own signer and signature; receivers derive each
	// batch's auth from them.
	Signer []byte
	Sig    []byte
}

// Message is the payload of one gossipsub message: consecutive batches of
// one origin, signed together as one group.
type Message struct {
	Origin  crdt.ReplicaID
	Batches []Batch
	// Signer is the origin's peer id; Sig its signature of the batches'
	// group (Message.Sign).
	Signer []byte
	Sig    []byte
}

// Wire field numbers (see docs/wire.proto).
const (
	fMsgOrigin  = 1 // fixed64
	fMsgBatch   = 2 // BatchFrame
	fMsgSigner  = 3 // bytes (origin's peer id)
	fMsgSig     = 4 // bytes (signature of the batches' group root)
	fBatchSeq   = 1 // varint
	fBatchDelta = 2 // bytes (crdt delta encoding)
)

// Encode appends the message's encoding to b.
func (m *Message) Encode(b []byte) []byte {
	b = protowire.AppendTag(b, fMsgOrigin, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, uint64(m.Origin))
	for i := range m.Batches {
		bt := &m.Batches[i]
		n := protowire.SizeTag(fBatchSeq) + protowire.SizeVarint(bt.Seq) +
			protowire.SizeTag(fBatchDelta) + protowire.SizeBytes(len(bt.Encoded))
		b = protowire.AppendTag(b, fMsgBatch, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		b = protowire.AppendTag(b, fBatchSeq, protowire.VarintType)
		b = protowire.AppendVarint(b, bt.Seq)
		b = protowire.AppendTag(b, fBatchDelta, protowire.BytesType)
		b = protowire.AppendBytes(b, bt.Encoded)
	}
	if len(m.Signer) > 0 {
		b = protowire.AppendTag(b, fMsgSigner, protowire.BytesType)
		b = protowire.AppendBytes(b, m.Signer)
	}
	if len(m.Sig) > 0 {
		b = protowire.AppendTag(b, fMsgSig, protowire.BytesType)
		b = protowire.AppendBytes(b, m.Sig)
	}
	return b
}

// Limits bound what a peer can make us decode.
type Limits struct {
	// MaxMessageBytes bounds one gossip message or sync frame. Default 4 MiB.
	MaxMessageBytes int
	// MaxBatches bounds the batches in one message. Default 1,024.
	MaxBatches int
	// Delta bounds each delta.
	Delta crdt.Limits
}

func (l Limits) withDefaults() Limits {
	if l.MaxMessageBytes <= 0 {
		l.MaxMessageBytes = 4 << 20
	}
	if l.MaxBatches <= 0 {
		l.MaxBatches = 1024
	}
	// The crdt decoders default zero fields themselves, but gossip also
	// reads these two (key frames, keys per state session): a zero there
	// would refuse every key.
	d := crdt.DefaultLimits()
	if l.Delta.MaxKeyBytes <= 0 {
		l.Delta.MaxKeyBytes = d.MaxKeyBytes
	}
	if l.Delta.MaxBytes <= 0 {
		l.Delta.MaxBytes = d.MaxBytes
	}
	if l.Delta.MaxElements <= 0 {
		l.Delta.MaxElements = d.MaxElements
	}
	return l
}

// DecodeMessage decodes and checks a gossip message: every batch decodes
// within limits, sequence numbers strictly increase, and every dot a batch
// holds is one of the origin's (a writer creates only its own dots). Fields
// come in order — origin, batches, signer, signature — and the signer and
// signature are both present or both absent; whether the signature
// verifies is the validator's business.
func DecodeMessage(b []byte, lim Limits) (Message, error) {
	lim = lim.withDefaults()
	if len(b) > lim.MaxMessageBytes {
		return Message{}, fmt.Errorf("%w: %d bytes, max %d", ErrMalformed, len(b), lim.MaxMessageBytes)
	}
	var m Message
	seenOrigin := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return Message{}, fmt.Errorf("%w: bad tag", ErrMalformed)
		}
		b = b[n:]
		switch {
		case num == fMsgOrigin && typ == protowire.Fixed64Type && !seenOrigin && len(m.Batches) == 0:
			v, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return Message{}, fmt.Errorf("%w: bad origin", ErrMalformed)
			}
			m.Origin, seenOrigin = crdt.ReplicaID(v), true
			b = b[n:]
		case num == fMsgBatch && typ == protowire.BytesType && seenOrigin && m.Signer == nil && m.Sig == nil:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Message{}, fmt.Errorf("%w: bad batch", ErrMalformed)
			}
			b = b[n:]
			if len(m.Batches) >= lim.MaxBatches {
				return Message{}, fmt.Errorf("%w: more than %d batches", ErrMalformed, lim.MaxBatches)
			}
			bt, err := decodeBatchFrame(v, m.Origin, lim.Delta)
			if err != nil {
				return Message{}, err
			}
			if k := len(m.Batches); k > 0 && bt.Seq <= m.Batches[k-1].Seq {
				return Message{}, fmt.Errorf("%w: batch sequence numbers not increasing", ErrMalformed)
			}
			m.Batches = append(m.Batches, bt)
		case num == fMsgSigner && typ == protowire.BytesType && len(m.Batches) > 0 && m.Signer == nil && m.Sig == nil:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || len(v) == 0 || len(v) > maxSignerBytes {
				return Message{}, fmt.Errorf("%w: bad signer", ErrMalformed)
			}
			m.Signer, b = v, b[n:]
		case num == fMsgSig && typ == protowire.BytesType && m.Signer != nil && m.Sig == nil:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || len(v) == 0 || len(v) > maxRawSigBytes {
				return Message{}, fmt.Errorf("%w: bad signature", ErrMalformed)
			}
			m.Sig, b = v, b[n:]
		default:
			return Message{}, fmt.Errorf("%w: unexpected field %d", ErrMalformed, num)
		}
	}
	if !seenOrigin || m.Origin == 0 || len(m.Batches) == 0 {
		return Message{}, fmt.Errorf("%w: no origin or no batch", ErrMalformed)
	}
	if (m.Signer == nil) != (m.Sig == nil) {
		return Message{}, fmt.Errorf("%w: a signer without a signature", ErrMalformed)
	}
	return m, nil
}

func decodeBatchFrame(b []byte, origin crdt.ReplicaID, lim crdt.Limits) (Batch, error) {
	bt := Batch{Origin: origin}
	seenSeq, seenDelta := false, false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return Batch{}, fmt.Errorf("%w: bad batch tag", ErrMalformed)
		}
		b = b[n:]
		switch {
		case num == fBatchSeq && typ == protowire.VarintType && !seenSeq && !seenDelta:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return Batch{}, fmt.Errorf("%w: bad sequence number", ErrMalformed)
			}
			bt.Seq, seenSeq = v, true
			b = b[n:]
		case num == fBatchDelta && typ == protowire.BytesType && !seenDelta:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Batch{}, fmt.Errorf("%w: bad delta", ErrMalformed)
			}
			b = b[n:]
			d, err := crdt.DecodeDelta(v, lim)
			if err != nil {
				return Batch{}, fmt.Errorf("%w: batch %d: %v", ErrMalformed, bt.Seq, err)
			}
			bt.Delta, bt.Encoded, seenDelta = d, v, true
		default:
			return Batch{}, fmt.Errorf("%w: unexpected batch field %d", ErrMalformed, num)
		}
	}
	if bt.Seq == 0 {
		return Batch{}, fmt.Errorf("%w: batch without a sequence number", ErrMalformed)
	}
	if err := checkOwnDots(bt.Delta, origin); err != nil {
		return Batch{}, err
	}
	return bt, nil
}

// checkOwnDots verifies that every dot a log batch holds was created by its
// origin: a replica's log holds only its own writes.
func checkOwnDots(d crdt.Delta, origin crdt.ReplicaID) error {
	var bad *crdt.Dot
	d.StoreDots(func(x crdt.Dot) {
		if bad == nil && x.Replica != origin {
			bad = &x
		}
	})
	if bad != nil {
		return fmt.Errorf("%w: batch of %s holds dot %v of another replica", ErrMalformed, origin, *bad)
	}
	return nil
}
