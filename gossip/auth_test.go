package gossip

import (
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mycelnet/mycel/crdt"
)

func TestVerifyBatch(t *testing.T) {
	good := signedSeedBatch()
	if err := VerifyBatch("ns", good); err != nil {
		t.Fatalf("a genuine batch: %v", err)
	}
	other, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	otherID, _ := peer.IDFromPrivateKey(other)
	otherSig, _ := other.Sign(BatchSigningInput("ns", good.Origin, good.Seq, good.Encoded))
	d, _ := crdt.NewNamespace(crdt.Limits{}).Prepare(crdt.Op{Kind: crdt.OpPut, Key: "k", Value: []byte("forged")}, good.Origin, crdt.Timestamp{Wall: 2})
	for name, b := range map[string]Batch{
		"unsigned":            {Origin: good.Origin, Seq: good.Seq, Delta: good.Delta, Encoded: good.Encoded},
		"signed by another":   {Origin: good.Origin, Seq: good.Seq, Delta: good.Delta, Encoded: good.Encoded, Signer: []byte(otherID), Sig: otherSig},
		"misattributed":       {Origin: good.Origin, Seq: good.Seq, Delta: good.Delta, Encoded: good.Encoded, Signer: good.Signer, Sig: otherSig},
		"other sequence":      {Origin: good.Origin, Seq: good.Seq + 1, Delta: good.Delta, Encoded: good.Encoded, Signer: good.Signer, Sig: good.Sig},
		"other content":       {Origin: good.Origin, Seq: good.Seq, Delta: d, Encoded: d.Encode(nil), Signer: good.Signer, Sig: good.Sig},
		"garbage signer":      {Origin: good.Origin, Seq: good.Seq, Delta: good.Delta, Encoded: good.Encoded, Signer: []byte{1, 2, 3}, Sig: good.Sig},
		"truncated signature": {Origin: good.Origin, Seq: good.Seq, Delta: good.Delta, Encoded: good.Encoded, Signer: good.Signer, Sig: good.Sig[:10]},
	} {
		if err := VerifyBatch("ns", b); !errors.Is(err, ErrForged) {
			t.Errorf("%s: %v, want ErrForged", name, err)
		}
	}
	if err := VerifyBatch("another-ns", good); !errors.Is(err, ErrForged) {
		t.Errorf("replayed into another namespace: %v, want ErrForged", err)
	}
	// A signed batch survives the gossip wire and the sync frame.
	m := Message{Origin: good.Origin, Batches: []Batch{good}}
	got, err := DecodeMessage(m.Encode(nil), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	got.Batches[0].Signer = good.Signer // gossip carries the signer as the message's
	if err := VerifyBatch("ns", got.Batches[0]); err != nil {
		t.Fatalf("after the gossip wire: %v", err)
	}
	f, err := decodeFrame(encodeFrame(&frame{kind: frameBatch, batch: good}), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyBatch("ns", f.batch); err != nil {
		t.Fatalf("after a sync frame: %v", err)
	}
}
