package gossip

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mycelnet/mycel/crdt"
)

// ErrForged: a log batch's origin signature is missing or does not verify.
var ErrForged = errors.New("gossip: batch signature does not verify")

// maxSignerBytes and maxSigBytes bound a batch's signer id and signature
// (an Ed25519 peer id is 38 bytes, its signature 64).
const (
	maxSignerBytes = 128
	maxSigBytes    = 256
)

// BatchSigningInput is what the origin of a log batch signs: the batch's
// namespace, origin and sequence number and the hash of its delta's
// encoding. Sync carries the signature with the batch, so that a peer
// serving another origin's batches cannot forge them.
func BatchSigningInput(ns string, origin crdt.ReplicaID, seq uint64, encoded []byte) []byte {
	h := sha256.Sum256(encoded)
	b := make([]byte, 0, 32+len(ns)+16+len(h))
	b = append(b, "mycel/batch/1\x00"...)
	b = binary.AppendUvarint(b, uint64(len(ns)))
	b = append(b, ns...)
	b = binary.BigEndian.AppendUint64(b, uint64(origin))
	b = binary.BigEndian.AppendUint64(b, seq)
	return append(b, h[:]...)
}

// VerifyBatch checks b's origin signature: Signer is a peer id whose
// replica id is b.Origin, and its public key verifies Sig over the batch
// in namespace ns. Any failure wraps ErrForged.
func VerifyBatch(ns string, b Batch) error {
	if len(b.Signer) == 0 || len(b.Sig) == 0 {
		return fmt.Errorf("%w: batch (%v, %d) is unsigned", ErrForged, b.Origin, b.Seq)
	}
	pid, err := peer.IDFromBytes(b.Signer)
	if err != nil {
		return fmt.Errorf("%w: batch (%v, %d): signer: %v", ErrForged, b.Origin, b.Seq, err)
	}
	if crdt.DeriveReplicaID(b.Signer) != b.Origin {
		return fmt.Errorf("%w: batch (%v, %d) signed by %s, not its origin", ErrForged, b.Origin, b.Seq, pid)
	}
	pub, err := pid.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("%w: batch (%v, %d): signer key: %v", ErrForged, b.Origin, b.Seq, err)
	}
	ok, err := pub.Verify(BatchSigningInput(ns, b.Origin, b.Seq, b.Encoded), b.Sig)
	if err != nil || !ok {
		return fmt.Errorf("%w: batch (%v, %d)", ErrForged, b.Origin, b.Seq)
	}
	return nil
}

// signOwn signs b if it is one of this replica's batches and unsigned.
// Own batches are signed when they leave (published, or served by sync),
// not when committed: signing is off the path of a durable write, and an
// Ed25519 signature is deterministic, so every copy carries the same one.
func (r *Replicator) signOwn(ns string, b *Batch) error {
	if b.Origin != r.cfg.Replica || len(b.Sig) > 0 {
		return nil
	}
	if r.key == nil {
		return fmt.Errorf("gossip: no private key for %s", r.cfg.Host.ID())
	}
	sig, err := r.key.Sign(BatchSigningInput(ns, b.Origin, b.Seq, b.Encoded))
	if err != nil {
		return fmt.Errorf("gossip: sign batch %d: %w", b.Seq, err)
	}
	b.Signer, b.Sig = r.signer, sig
	return nil
}
