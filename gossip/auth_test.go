package gossip

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math/rand"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	voied25519 "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"

	"github.com/mycelnet/mycel/crdt"
)

// TestGroupAuthEveryPlace: every batch of groups of every size up to 17
// (odd levels included) verifies alone with the auth it was given.
func TestGroupAuthEveryPlace(t *testing.T) {
	for n := 1; n <= 17; n++ {
		_, group := signedSeedGroup(n)
		for i, b := range group {
			if err := VerifyBatch("ns", b); err != nil {
				t.Fatalf("group of %d, batch %d: %v", n, i, err)
			}
		}
	}
}

func TestVerifyBatchRefusesForgeries(t *testing.T) {
	_, group := signedSeedGroup(4)
	good := group[2]
	other, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	otherID, _ := peer.IDFromPrivateKey(other)
	// The same batches signed by another key.
	forged := Message{Origin: good.Origin, Batches: append([]Batch(nil), group...)}
	for i := range forged.Batches {
		forged.Batches[i].Signer, forged.Batches[i].Sig = nil, nil
	}
	tree, err := forged.sign("ns", other, []byte(otherID))
	if err != nil {
		t.Fatal(err)
	}
	otherAuth := tree.auth(forged.Sig, 2)
	d, _ := crdt.NewNamespace(crdt.Limits{}).Prepare(crdt.Op{Kind: crdt.OpPut, Key: "k", Value: []byte("forged")}, good.Origin, crdt.Timestamp{Wall: 2})
	with := func(f func(b *Batch)) Batch {
		b := good
		b.Sig = bytes.Clone(good.Sig)
		f(&b)
		return b
	}
	flip := func(at int) Batch { return with(func(b *Batch) { b.Sig[at] ^= 1 }) }
	sigLen := 1 + 64 // uvarint length, then the signature
	for name, b := range map[string]Batch{
		"unsigned":             with(func(b *Batch) { b.Signer, b.Sig = nil, nil }),
		"no auth":              with(func(b *Batch) { b.Sig = nil }),
		"signed by another":    with(func(b *Batch) { b.Signer, b.Sig = []byte(otherID), otherAuth }),
		"misattributed":        with(func(b *Batch) { b.Sig = otherAuth }),
		"other sequence":       with(func(b *Batch) { b.Seq++ }),
		"other content":        with(func(b *Batch) { b.Delta, b.Encoded = d, d.Encode(nil) }),
		"garbage signer":       with(func(b *Batch) { b.Signer = []byte{1, 2, 3} }),
		"signature bit":        flip(10),
		"index":                flip(sigLen),
		"group size":           flip(sigLen + 1),
		"sibling hash":         flip(sigLen + 2 + 5),
		"last sibling hash":    flip(len(good.Sig) - 1),
		"truncated proof":      with(func(b *Batch) { b.Sig = b.Sig[:len(b.Sig)-1] }),
		"a sibling missing":    with(func(b *Batch) { b.Sig = b.Sig[:len(b.Sig)-sha256.Size] }),
		"trailing byte":        with(func(b *Batch) { b.Sig = append(b.Sig, 0) }),
		"truncated signature":  with(func(b *Batch) { b.Sig = b.Sig[:10] }),
		"index past the group": with(func(b *Batch) { b.Sig[sigLen] = 4 }),
		"zero group":           with(func(b *Batch) { b.Sig[sigLen+1] = 0 }),
		"another's place":      with(func(b *Batch) { b.Sig = group[1].Sig }),
		"overlong sig length":  with(func(b *Batch) { b.Sig = append([]byte{0xc0, 0x00}, b.Sig[1:]...) }),
	} {
		if err := VerifyBatch("ns", b); !errors.Is(err, ErrForged) {
			t.Errorf("%s: %v, want ErrForged", name, err)
		}
	}
	if err := VerifyBatch("another-ns", good); !errors.Is(err, ErrForged) {
		t.Errorf("replayed into another namespace: %v, want ErrForged", err)
	}
	if _, _, err := authRoot(binary.AppendUvarint(nil, 0), hash{}); !errors.Is(err, ErrForged) {
		t.Errorf("empty signature: %v", err)
	}
}

// TestVerifierChecksEachGroupOnce: the batches of one group cost one
// signature check, and the remembered group does not let a batch of
// another content through.
func TestVerifierChecksEachGroupOnce(t *testing.T) {
	_, group := signedSeedGroup(8)
	var v batchVerifier
	for _, b := range group {
		if err := v.verify("ns", b); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(v.groups.cur) + len(v.groups.prev); n != 1 {
		t.Fatalf("%d groups remembered, want 1", n)
	}
	b := group[3]
	b.Seq = 99
	if err := v.verify("ns", b); !errors.Is(err, ErrForged) {
		t.Fatalf("a changed batch of a remembered group: %v, want ErrForged", err)
	}
}

// TestGroupCheckedOnceAcrossSyncAndGossip: a group whose signature a sync
// session checked is not checked again when its gossip message arrives
// (the message verifies even with a signer key that verifies nothing),
// and the memory lets nothing else through: not the message without it,
// not a changed batch, not the group replayed into another namespace.
func TestGroupCheckedOnceAcrossSyncAndGossip(t *testing.T) {
	_, group := signedSeedGroup(3)
	var groups verifiedGroups
	v := batchVerifier{groups: &groups}
	for _, b := range group {
		if err := v.verify("ns", b); err != nil {
			t.Fatal(err)
		}
	}
	otherKey, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{9}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := newKnownSigner(otherKey.GetPublic())
	if err != nil {
		t.Fatal(err)
	}

	_, m := signedSeedMessage(3)
	if err := m.verifyAs("ns", wrong, nil, &groups); err != nil {
		t.Fatalf("message of a checked group: %v", err)
	}
	for _, b := range m.Batches {
		if err := VerifyBatch("ns", b); err != nil {
			t.Fatalf("auth given from memory: %v", err)
		}
	}
	_, m = signedSeedMessage(3)
	if err := m.verifyAs("ns", wrong, nil, nil); !errors.Is(err, ErrForged) {
		t.Fatalf("without the memory: %v, want ErrForged", err)
	}
	_, m = signedSeedMessage(3)
	m.Batches[1].Seq = 99
	if err := m.verifyAs("ns", wrong, nil, &groups); !errors.Is(err, ErrForged) {
		t.Fatalf("a changed batch: %v, want ErrForged", err)
	}
	_, m = signedSeedMessage(3)
	if err := m.verifyAs("other-ns", wrong, nil, &groups); !errors.Is(err, ErrForged) {
		t.Fatalf("replayed into another namespace: %v, want ErrForged", err)
	}
	// The key binds the signature and the signer too.
	_, m = signedSeedMessage(3)
	m.Sig = bytes.Clone(m.Sig)
	m.Sig[0] ^= 1
	if err := m.verifyAs("ns", wrong, nil, &groups); !errors.Is(err, ErrForged) {
		t.Fatalf("another signature over a remembered root: %v, want ErrForged", err)
	}
	otherID, err := peer.IDFromPublicKey(otherKey.GetPublic())
	if err != nil {
		t.Fatal(err)
	}
	_, m = signedSeedMessage(3)
	m.Signer = []byte(otherID)
	if err := m.verifyAs("ns", wrong, nil, &groups); !errors.Is(err, ErrForged) {
		t.Fatalf("a remembered group claimed by another signer: %v, want ErrForged", err)
	}
	// And on the sync path: a batch of the remembered group with its
	// signature changed is checked, and refused.
	b := group[1]
	b.Sig = bytes.Clone(b.Sig)
	b.Sig[1] ^= 1 // the first signature byte (after its length)
	if err := v.verify("ns", b); !errors.Is(err, ErrForged) {
		t.Fatalf("a remembered group's batch with another signature: %v, want ErrForged", err)
	}
}

// TestVerifiedGroupsBounded: the memory keeps two generations, so a key
// outlives maxVerifiedGroups newer ones but not twice as many.
func TestVerifiedGroupsBounded(t *testing.T) {
	var g verifiedGroups
	key := func(i int) hash { return groupKey([]byte("signer"), hash{byte(i), byte(i >> 8)}, []byte("sig")) }
	g.add(key(0))
	for i := 1; i <= maxVerifiedGroups; i++ {
		g.add(key(i))
	}
	if !g.has(key(0)) || !g.has(key(maxVerifiedGroups)) {
		t.Fatal("a key forgotten after maxVerifiedGroups newer ones")
	}
	for i := maxVerifiedGroups + 1; i <= 2*maxVerifiedGroups; i++ {
		g.add(key(i))
	}
	if g.has(key(0)) {
		t.Fatal("a key kept after 2×maxVerifiedGroups newer ones")
	}
	if n := len(g.cur) + len(g.prev); n > 2*maxVerifiedGroups || !g.has(key(2*maxVerifiedGroups)) {
		t.Fatalf("%d keys held", n)
	}
}

// TestAuthSurvivesTheWire: a message signed by its origin verifies after
// the gossip wire, gives every batch an auth, and those auths verify after
// a sync frame.
func TestAuthSurvivesTheWire(t *testing.T) {
	_, m := signedSeedMessage(3)
	got, err := DecodeMessage(m.Encode(nil), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := got.verify("ns", &signerCache{}); err != nil {
		t.Fatalf("after the gossip wire: %v", err)
	}
	for i, b := range got.Batches {
		f, err := decodeFrame(encodeFrame(&frame{kind: frameBatch, batch: b}), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyBatch("ns", f.batch); err != nil {
			t.Fatalf("batch %d after a sync frame: %v", i, err)
		}
	}
	if err := got.verify("other", &signerCache{}); !errors.Is(err, ErrForged) {
		t.Fatalf("a message replayed into another namespace: %v", err)
	}
	got.Sig[0] ^= 1
	if err := got.verify("ns", nil); !errors.Is(err, ErrForged) {
		t.Fatalf("a message with a bad signature: %v", err)
	}
}

// TestAuthStreamCarriesSignaturesOnce: along a sync stream, the batches of
// one group carry the signer and signature once; the receiving side
// restores every auth exactly, and a stream mixing groups switches back
// to full auths at each change.
func TestAuthStreamCarriesSignaturesOnce(t *testing.T) {
	_, g1 := signedSeedGroup(6)
	other, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	oid, _ := peer.IDFromPrivateKey(other)
	g2 := []Batch{{Origin: crdt.DeriveReplicaID([]byte(oid)), Seq: 1, Encoded: []byte{1}}, {Origin: crdt.DeriveReplicaID([]byte(oid)), Seq: 2, Encoded: []byte{2}}}
	if err := SignBatches("ns", other, g2); err != nil {
		t.Fatal(err)
	}
	stream := append(append(append([]Batch(nil), g1[:3]...), g2...), g1[3:]...)
	var out, in authStream
	want, sent := 0, 0
	for i, b := range stream {
		ws, wa := out.compact(b.Signer, b.Sig)
		want += len(b.Signer) + len(b.Sig)
		if i > 0 && bytes.Equal(stream[i-1].Signer, b.Signer) {
			want -= len(b.Signer) + 64 // signer and signature left out (64 bytes, length 64 → 0: same width)
		}
		sent += len(ws) + len(wa)
		if first := i == 0 || !bytes.Equal(stream[i-1].Signer, b.Signer); first != (ws != nil) {
			t.Fatalf("frame %d: signer sent %v, want %v", i, ws != nil, first)
		}
		signer, auth, err := in.expand(ws, wa)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(signer, b.Signer) || !bytes.Equal(auth, b.Sig) {
			t.Fatalf("frame %d: restored a different signer or auth", i)
		}
	}
	if sent != want {
		t.Fatalf("sent %d bytes of auth, want %d", sent, want)
	}

	// A frame that refers to no earlier signature, or leaves out the
	// signer but gives a signature, breaks the stream.
	_, rest, _ := splitAuth(g1[1].Sig)
	var fresh authStream
	if _, _, err := fresh.expand(nil, append([]byte{0}, rest...)); !errors.Is(err, ErrMalformed) {
		t.Errorf("a reference to no earlier signature: %v, want ErrMalformed", err)
	}
	if _, _, err := fresh.expand(nil, g1[0].Sig); !errors.Is(err, ErrMalformed) {
		t.Errorf("a signature without its signer: %v, want ErrMalformed", err)
	}
	// A frame with a signer is taken as it is, and an auth that does not
	// parse neither breaks the stream nor changes it: verification refuses
	// that batch alone.
	for _, bad := range [][]byte{{0xff}, {0, 0, 1}} {
		s, a, err := fresh.expand(g1[0].Signer, bad)
		if err != nil || !bytes.Equal(s, g1[0].Signer) || !bytes.Equal(a, bad) {
			t.Errorf("auth %x: restored %x (%v), want it unchanged", bad, a, err)
		}
		if fresh.sig != nil {
			t.Errorf("auth %x changed the stream", bad)
		}
		if err := VerifyBatch("ns", Batch{Origin: g1[0].Origin, Seq: 1, Encoded: g1[0].Encoded, Signer: s, Sig: a}); !errors.Is(err, ErrForged) {
			t.Errorf("auth %x: %v, want ErrForged", bad, err)
		}
	}
	// The sender never elides around an auth it cannot read.
	var out2 authStream
	out2.compact(g1[0].Signer, g1[0].Sig)
	if s, a := out2.compact(g1[0].Signer, []byte{0xff}); s == nil || !bytes.Equal(a, []byte{0xff}) {
		t.Errorf("an unreadable auth was compacted to %x, %x", s, a)
	}
}

// signatureHolds reports whether sig is pub's signature of msg, checked
// as replication checks it (knownSigner.holds).
func signatureHolds(pub crypto.PubKey, msg, sig []byte) bool {
	k, err := newKnownSigner(pub)
	return err == nil && k.holds(msg, sig)
}

// TestSignatureCheckAgreesWithLibp2p: on genuine Ed25519 signatures and on
// every one-bit change of a signature or message, signatureHolds and
// libp2p's own check give the same answer.
func TestSignatureCheckAgreesWithLibp2p(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for i := range 50 {
		priv, pub, err := crypto.GenerateEd25519Key(rng)
		if err != nil {
			t.Fatal(err)
		}
		msg := make([]byte, i+1)
		rng.Read(msg)
		sig, err := priv.Sign(msg)
		if err != nil {
			t.Fatal(err)
		}
		check := func(what string, msg, sig []byte, want bool) {
			t.Helper()
			theirs, _ := pub.Verify(msg, sig)
			if ours := signatureHolds(pub, msg, sig); ours != theirs || ours != want {
				t.Fatalf("key %d, %s: signatureHolds %v, libp2p %v, want %v", i, what, ours, theirs, want)
			}
		}
		check("genuine", msg, sig, true)
		bit := rng.Intn(len(sig) * 8)
		bad := bytes.Clone(sig)
		bad[bit/8] ^= 1 << (bit % 8)
		check("signature bit flipped", msg, bad, false)
		bit = rng.Intn(len(msg) * 8)
		bad = bytes.Clone(msg)
		bad[bit/8] ^= 1 << (bit % 8)
		check("message bit flipped", bad, sig, false)
		check("short signature", msg, sig[:63], false)
		check("no signature", msg, nil, false)
	}
}

// TestSignatureCheckRefusesSmallOrderKeys: the identity point as a public
// key, with R the identity and S zero, is a "signature" of every message
// under cofactorless checks with no key validation (crypto/ed25519, and so
// libp2p, accept it). signatureHolds refuses it: no honest key is of small
// order.
func TestSignatureCheckRefusesSmallOrderKeys(t *testing.T) {
	identity := make([]byte, 32)
	identity[0] = 1
	pub, err := crypto.UnmarshalEd25519PublicKey(identity)
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	sig[0] = 1
	for _, msg := range []string{"a", "any message at all"} {
		if ok, _ := pub.Verify([]byte(msg), sig); !ok {
			t.Fatalf("libp2p refuses the small-order forgery of %q: the premise changed", msg)
		}
		if signatureHolds(pub, []byte(msg), sig) {
			t.Fatalf("signatureHolds accepts a small-order key's forgery of %q", msg)
		}
	}
}

// TestSignatureCheckOtherKeyTypes: keys that are not Ed25519 go through
// libp2p's check.
func TestSignatureCheckOtherKeyTypes(t *testing.T) {
	priv, pub, err := crypto.GenerateSecp256k1Key(rand.New(rand.NewSource(8)))
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("root")
	sig, err := priv.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if !signatureHolds(pub, msg, sig) {
		t.Fatal("a genuine secp256k1 signature is refused")
	}
	if signatureHolds(pub, []byte("toor"), sig) {
		t.Fatal("a secp256k1 signature of another message is accepted")
	}
}

// TestSignerCache: a cached signer still has its signatures checked and
// its replica id compared with each message's origin; a signer is kept
// only once a signature of its held, so made-up signers cannot evict the
// writers; keys that are not points are refused as unusable; the cache
// stays within its bound.
func TestSignerCache(t *testing.T) {
	_, m := signedSeedMessage(2)
	var c signerCache
	verify := func(m Message) error {
		t.Helper()
		m.Batches = slices.Clone(m.Batches) // verify gives them auths
		return m.verify("ns", &c)
	}
	if err := verify(m); err != nil {
		t.Fatal(err)
	}
	if len(c.m) != 1 {
		t.Fatalf("%d signers cached, want 1", len(c.m))
	}
	forged := m
	forged.Sig = bytes.Clone(m.Sig)
	forged.Sig[5] ^= 1
	if err := verify(forged); !errors.Is(err, ErrForged) {
		t.Fatalf("a cached signer's forged signature: %v, want ErrForged", err)
	}
	other := m
	other.Origin++
	if err := verify(other); !errors.Is(err, ErrForged) {
		t.Fatalf("a cached signer claiming another origin: %v, want ErrForged", err)
	}
	// Signers whose signatures do not hold are not kept.
	rng := rand.New(rand.NewSource(9))
	newSigner := func() ([]byte, crdt.ReplicaID) {
		t.Helper()
		_, pub, err := crypto.GenerateEd25519Key(rng)
		if err != nil {
			t.Fatal(err)
		}
		pid, err := peer.IDFromPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(pid), crdt.DeriveReplicaID([]byte(pid))
	}
	for range maxKnownSigners + 20 {
		made := m
		made.Signer, made.Origin = newSigner()
		if err := verify(made); !errors.Is(err, ErrForged) {
			t.Fatalf("a made-up signer's message: %v, want ErrForged", err)
		}
	}
	if _, ok := c.m[string(m.Signer)]; !ok || len(c.m) != 1 {
		t.Fatalf("after made-up signers: %d cached, the writer's kept: %v", len(c.m), ok)
	}
	// The y-coordinate 2 is not on the curve: libp2p takes the bytes as a
	// key, the check must not.
	notPoint := make([]byte, 32)
	notPoint[0] = 2
	pub, err := crypto.UnmarshalEd25519PublicKey(notPoint)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.lookup([]byte(pid), crdt.DeriveReplicaID([]byte(pid))); !errors.Is(err, ErrForged) || !errors.Is(err, errSignerKey) {
		t.Fatalf("a signer whose key is no point: %v, want ErrForged and errSignerKey", err)
	}
	for range maxKnownSigners + 20 {
		signer, origin := newSigner()
		k, err := c.lookup(signer, origin)
		if err != nil {
			t.Fatal(err)
		}
		c.keep(signer, k)
	}
	if len(c.m) != maxKnownSigners {
		t.Fatalf("%d signers cached, want the bound %d", len(c.m), maxKnownSigners)
	}
}

// BenchmarkSignatureCheck: one Ed25519 check of a root signing input, by
// a signer's cached key, by a signer met for the first time, by
// curve25519-voi on the raw key (the check before the cache) and by
// libp2p's key (crypto/ed25519).
func BenchmarkSignatureCheck(b *testing.B) {
	priv, pub, err := crypto.GenerateEd25519Key(rand.New(rand.NewSource(1)))
	if err != nil {
		b.Fatal(err)
	}
	msg := rootSigningInput(hash{1, 2, 3})
	sig, err := priv.Sign(msg)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("mycel", func(b *testing.B) {
		// As a node checks a signer it has met before: its key expanded.
		k, err := newKnownSigner(pub)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if !k.holds(msg, sig) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("mycel-first", func(b *testing.B) {
		// A signer met for the first time: its key expanded, then checked.
		for b.Loop() {
			if !signatureHolds(pub, msg, sig) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("voi-raw", func(b *testing.B) {
		// The check before signers were cached: curve25519-voi on the
		// raw key, decompressed every time.
		raw, err := pub.Raw()
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if !voied25519.Verify(raw, msg, sig) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("libp2p", func(b *testing.B) {
		for b.Loop() {
			if ok, _ := pub.Verify(msg, sig); !ok {
				b.Fatal("refused")
			}
		}
	})
}
