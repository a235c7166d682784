package gossip

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/libp2p/go-libp2p/core/crypto"
	cryptopb "github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	voied25519 "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"

	"github.com/mycelnet/mycel/crdt"
)

// Batch authentication.
//
// An origin signs its batches in groups — a gossip message, or a page of a
// sync session — with one signature: the batches' signing inputs are the
// leaves of a Merkle tree, and the origin signs the root. A message costs
// one signature and one verification however many batches it carries.
// Every batch keeps its own proof of origin, its auth: the group's
// signature, the batch's place in the group and the sibling hashes from its
// leaf to the root. Any node can relay a batch by sync with its auth, and
// the receiver checks that batch alone.

// ErrForged: a batch or message's origin signature is missing or does not
// verify.
var ErrForged = errors.New("gossip: batch signature does not verify")

const (
	// maxSignerBytes bounds a signer's peer id (an Ed25519 one is 38 bytes).
	maxSignerBytes = 128
	// maxRawSigBytes bounds one signature (Ed25519: 64 bytes).
	maxRawSigBytes = 256
	// maxGroupBatches bounds the batches signed together, so a proof has
	// at most maxGroupDepth sibling hashes.
	maxGroupBatches = 1 << maxGroupDepth
	maxGroupDepth   = 16
	// MaxAuthBytes bounds a batch's auth: a signature, its place in the
	// group and its sibling hashes. A store that keeps batches for sync
	// must keep auths this long.
	MaxAuthBytes = 3*binary.MaxVarintLen32 + maxRawSigBytes + maxGroupDepth*sha256.Size
)

type hash = [sha256.Size]byte

// Domain tags keep leaves, inner nodes and roots apart, so no hash can
// stand for another kind.
const (
	leafTag = "mycel/batch/2\x00"
	nodeTag = "mycel/node/1\x00"
	rootTag = "mycel/root/1\x00"
)

// BatchSigningInput is a batch's leaf in its group's tree: the namespace,
// origin and sequence number and the hash of the delta's encoding.
func BatchSigningInput(ns string, origin crdt.ReplicaID, seq uint64, encoded []byte) []byte {
	h := sha256.Sum256(encoded)
	b := make([]byte, 0, len(leafTag)+binary.MaxVarintLen64+len(ns)+16+len(h))
	b = append(b, leafTag...)
	b = binary.AppendUvarint(b, uint64(len(ns)))
	b = append(b, ns...)
	b = binary.BigEndian.AppendUint64(b, uint64(origin))
	b = binary.BigEndian.AppendUint64(b, seq)
	return append(b, h[:]...)
}

func leafHash(ns string, b *Batch) hash {
	return sha256.Sum256(BatchSigningInput(ns, b.Origin, b.Seq, b.Encoded))
}

func parentHash(l, r hash) hash {
	var in [len(nodeTag) + 2*sha256.Size]byte
	n := copy(in[:], nodeTag)
	n += copy(in[n:], l[:])
	copy(in[n:], r[:])
	return sha256.Sum256(in[:])
}

// rootSigningInput is what the origin signs for a group.
func rootSigningInput(root hash) []byte {
	return append([]byte(rootTag), root[:]...)
}

// groupTree is the Merkle tree over a group's batches: levels[0] holds the
// leaves; each level pairs its nodes left to right, and an odd last node
// moves up unchanged.
type groupTree struct{ levels [][]hash }

func newGroupTree(ns string, bs []Batch) (*groupTree, error) {
	if len(bs) == 0 || len(bs) > maxGroupBatches {
		return nil, fmt.Errorf("gossip: %d batches in a signed group, want 1..%d", len(bs), maxGroupBatches)
	}
	lv := make([]hash, len(bs))
	for i := range bs {
		lv[i] = leafHash(ns, &bs[i])
	}
	t := &groupTree{levels: [][]hash{lv}}
	for len(lv) > 1 {
		up := make([]hash, (len(lv)+1)/2)
		for j := range up {
			if 2*j+1 < len(lv) {
				up[j] = parentHash(lv[2*j], lv[2*j+1])
			} else {
				up[j] = lv[2*j]
			}
		}
		t.levels = append(t.levels, up)
		lv = up
	}
	return t, nil
}

func (t *groupTree) root() hash { return t.levels[len(t.levels)-1][0] }

// auth encodes batch i's auth: uvarint signature length, signature, uvarint
// index, uvarint group size, then the sibling hashes from leaf to root.
// Index and size only shape the climb; the signature does not cover them,
// so one batch can have more than one valid auth (the last of 3 climbs
// like the second of 2). What an auth proves is only that the batch is a
// leaf of a tree whose root the origin signed.
func (t *groupTree) auth(sig []byte, i int) []byte {
	count := len(t.levels[0])
	b := make([]byte, 0, 3*binary.MaxVarintLen32+len(sig)+(len(t.levels)-1)*sha256.Size)
	b = binary.AppendUvarint(b, uint64(len(sig)))
	b = append(b, sig...)
	b = binary.AppendUvarint(b, uint64(i))
	b = binary.AppendUvarint(b, uint64(count))
	for _, lv := range t.levels[:len(t.levels)-1] {
		if s := i ^ 1; s < len(lv) {
			b = append(b, lv[s][:]...)
		}
		i /= 2
	}
	return b
}

// sign signs the group's root with key.
func (t *groupTree) sign(key crypto.PrivKey) ([]byte, error) {
	if key == nil {
		return nil, errors.New("gossip: no private key to sign with")
	}
	r := t.root()
	return key.Sign(rootSigningInput(r))
}

// authRoot parses auth and climbs from leaf to the root it proves. Any
// malformation wraps ErrForged.
func authRoot(auth []byte, leaf hash) (root hash, sig []byte, err error) {
	bad := func(what string) (hash, []byte, error) {
		return hash{}, nil, fmt.Errorf("%w: auth: %s", ErrForged, what)
	}
	if len(auth) > MaxAuthBytes {
		return bad("too long")
	}
	n, k := binary.Uvarint(auth)
	if k != uvarintLen(n) || n == 0 || n > maxRawSigBytes || uint64(len(auth)-k) < n {
		return bad("signature length")
	}
	sig, auth = auth[k:k+int(n)], auth[k+int(n):]
	index, k := binary.Uvarint(auth)
	if k != uvarintLen(index) {
		return bad("index")
	}
	auth = auth[k:]
	count, k := binary.Uvarint(auth)
	if k != uvarintLen(count) || count == 0 || count > maxGroupBatches || index >= count {
		return bad("group size")
	}
	auth = auth[k:]
	h, i := leaf, index
	for size := count; size > 1; size = (size + 1) / 2 {
		if s := i ^ 1; s < size {
			if len(auth) < sha256.Size {
				return bad("proof too short")
			}
			sib := hash(auth[:sha256.Size])
			auth = auth[sha256.Size:]
			if i&1 == 0 {
				h = parentHash(h, sib)
			} else {
				h = parentHash(sib, h)
			}
		}
		i /= 2
	}
	if len(auth) != 0 {
		return bad("trailing bytes")
	}
	return h, sig, nil
}

// splitAuth splits an auth into its signature (possibly empty) and the
// rest: index, group size and siblings.
func splitAuth(auth []byte) (sig, rest []byte, ok bool) {
	n, k := binary.Uvarint(auth)
	if k != uvarintLen(n) || n > maxRawSigBytes || uint64(len(auth)-k) < n {
		return nil, nil, false
	}
	return auth[k : k+int(n)], auth[k+int(n):], true
}

// uvarintLen is the length of x's shortest uvarint encoding: auths admit
// no other, so that one auth has one encoding of its numbers.
func uvarintLen(x uint64) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

// authStream carries batch auths along one sync stream without repeating
// what an earlier batch frame said: a frame whose signer and signature are
// those of the last frame that carried them in full leaves out the signer
// and gives its auth a signature of length 0. The batches of one group (a
// message, a page) travel together, so most frames say only where their
// batch sits in the group. The receiving side's expand restores the full
// auth before anything checks or keeps it.
type authStream struct {
	signer, sig []byte
}

// compact returns the signer and auth a frame carries for signer and auth,
// after the frames this stream has already carried. An auth it cannot
// read goes as it is, signer included, and changes nothing: the receiver
// refuses that batch alone.
func (a *authStream) compact(signer, auth []byte) (wireSigner, wireAuth []byte) {
	sig, rest, ok := splitAuth(auth)
	if !ok || len(sig) == 0 || len(signer) == 0 {
		return signer, auth
	}
	if a.sig != nil && bytes.Equal(signer, a.signer) && bytes.Equal(sig, a.sig) {
		return nil, append([]byte{0}, rest...)
	}
	a.signer, a.sig = signer, sig
	return signer, auth
}

// expand restores the signer and auth a frame carried. A frame without a
// signer refers to the last signer and signature carried in full; one with
// a signer is taken as it is (verification judges it). Errors wrap
// ErrMalformed.
func (a *authStream) expand(wireSigner, wireAuth []byte) (signer, auth []byte, err error) {
	if len(wireAuth) > MaxAuthBytes || len(wireSigner) > maxSignerBytes {
		return nil, nil, fmt.Errorf("%w: batch signer of %d bytes or auth of %d", ErrMalformed, len(wireSigner), len(wireAuth))
	}
	sig, rest, ok := splitAuth(wireAuth)
	if len(wireSigner) > 0 {
		if ok && len(sig) > 0 {
			// Copies: the frame's buffer may be large, and this outlives it.
			a.signer, a.sig = bytes.Clone(wireSigner), bytes.Clone(sig)
		}
		return wireSigner, wireAuth, nil
	}
	if !ok || len(sig) != 0 {
		return nil, nil, fmt.Errorf("%w: batch frame without a signer gives a signature", ErrMalformed)
	}
	if a.sig == nil {
		return nil, nil, fmt.Errorf("%w: batch frame refers to a signature not sent", ErrMalformed)
	}
	auth = binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen16+len(a.sig)+len(rest)), uint64(len(a.sig)))
	auth = append(append(auth, a.sig...), rest...)
	if len(auth) > MaxAuthBytes {
		return nil, nil, fmt.Errorf("%w: batch auth of %d bytes", ErrMalformed, len(auth))
	}
	return a.signer, auth, nil
}

// errSignerKey: a signer's peer id holds a key no signature can verify
// under (an Ed25519 key that is no point on the curve).
var errSignerKey = errors.New("signer key unusable")

// knownSigner is what checking a signer's peer id yields: the replica id
// it derives, its public key and, for an Ed25519 key, the key expanded for
// signature checks.
type knownSigner struct {
	origin crdt.ReplicaID
	pub    crypto.PubKey
	ed     *voied25519.ExpandedPublicKey // nil: not Ed25519
}

// checkSigner checks that signer is a peer id whose replica id is origin.
func checkSigner(signer []byte, origin crdt.ReplicaID) (*knownSigner, error) {
	if len(signer) == 0 || len(signer) > maxSignerBytes {
		return nil, fmt.Errorf("%w: no signer", ErrForged)
	}
	pid, err := peer.IDFromBytes(signer)
	if err != nil {
		return nil, fmt.Errorf("%w: signer: %v", ErrForged, err)
	}
	if crdt.DeriveReplicaID(signer) != origin {
		return nil, fmt.Errorf("%w: signed by %s, not by origin %v", ErrForged, pid, origin)
	}
	pub, err := pid.ExtractPublicKey()
	if err != nil {
		return nil, fmt.Errorf("%w: signer key: %v", ErrForged, err)
	}
	k, err := newKnownSigner(pub)
	if err != nil {
		return nil, err
	}
	k.origin = origin
	return k, nil
}

// newKnownSigner prepares pub for signature checks.
func newKnownSigner(pub crypto.PubKey) (*knownSigner, error) {
	k := &knownSigner{pub: pub}
	if pub.Type() == cryptopb.KeyType_Ed25519 {
		raw, err := pub.Raw()
		if err != nil || len(raw) != voied25519.PublicKeySize {
			return nil, fmt.Errorf("%w: %w: not 32 bytes", ErrForged, errSignerKey)
		}
		if k.ed, err = voied25519.NewExpandedPublicKey(raw); err != nil {
			// Not a point on the curve: no signature by it holds.
			return nil, fmt.Errorf("%w: %w: %v", ErrForged, errSignerKey, err)
		}
	}
	return k, nil
}

// holds reports whether sig is k's signature of msg.
//
// Every node checks every message's signature once, so this is one of the
// largest costs of replication with small batches (the simulator's 100-node
// runs: ~24% of the CPU). Ed25519 keys, the kind every node makes, are
// checked with curve25519-voi, each signer's key expanded once (see
// signerCache): 19.0 µs a check on this project's benchmark machine
// against 22.6 µs with the key decompressed each time (23–24.6 µs for a
// signer met the first time) and 35.3 µs for crypto/ed25519
// (BenchmarkSignatureCheck). Its
// default rules are cofactored RFC 8032 verification that refuses
// small-order and non-canonical public keys; every signature that Go's
// (or libp2p's) Ed25519 signer makes passes them. Other key types go
// through libp2p.
func (k *knownSigner) holds(msg, sig []byte) bool {
	if k.ed != nil {
		return voied25519.VerifyExpanded(k.ed, msg, sig)
	}
	ok, err := k.pub.Verify(msg, sig)
	return err == nil && ok
}

// signerCache is a node's memory of the signers it has checked, so that
// each message costs a map lookup where it cost parsing the signer's peer
// id, hashing it to its replica id and decompressing its key: an expanded
// key makes each check ~16% cheaper (19.0 against 22.6 µs,
// BenchmarkSignatureCheck; expanding one costs ~3.7 µs), and the rest of
// the signer check was ~1% of the CPU of the simulator's 100-node runs. An
// expanded key takes ~1.5 KB, so the cache is bounded: full, it forgets an
// arbitrary entry. A nil cache checks every time.
type signerCache struct {
	mu sync.Mutex
	m  map[string]*knownSigner
}

// maxKnownSigners bounds a signerCache: a node with more writers than this
// re-checks the ones it forgot (~220 KB at most per node).
const maxKnownSigners = 128

// lookup returns the checked signer for signer, which must be origin's:
// the cached one, or one checked now and not yet kept.
func (c *signerCache) lookup(signer []byte, origin crdt.ReplicaID) (*knownSigner, error) {
	if c != nil {
		c.mu.Lock()
		k, ok := c.m[string(signer)]
		c.mu.Unlock()
		if ok {
			if k.origin != origin {
				return nil, fmt.Errorf("%w: signed by %s, not by origin %v", ErrForged, peer.ID(signer), origin)
			}
			return k, nil
		}
	}
	return checkSigner(signer, origin)
}

// keep remembers k, the checked signer for signer, once a signature of
// its has held: keys that sign nothing valid never displace the ones that
// do (found by review: a peer making up signers could otherwise evict the
// writers' keys before any signature was checked).
func (c *signerCache) keep(signer []byte, k *knownSigner) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[string(signer)]; ok {
		return
	}
	if c.m == nil {
		c.m = make(map[string]*knownSigner)
	}
	if len(c.m) >= maxKnownSigners {
		for old := range c.m {
			delete(c.m, old)
			break
		}
	}
	c.m[string(signer)] = k
}

// VerifyBatch checks b's auth: Signer is a peer id whose replica id is
// b.Origin, and its public key signed a group whose tree holds b in
// namespace ns. Any failure wraps ErrForged.
func VerifyBatch(ns string, b Batch) error {
	var v batchVerifier
	return v.verify(ns, b)
}

// batchVerifier verifies batches' auths. groups remembers the groups whose
// signature it checked, so that the batches of one group a sync session
// relays cost one signature check between them: the node's memory when
// set (shared with its gossip validator), else the verifier's own.
// signers, if set, is the node's cache of checked signers.
type batchVerifier struct {
	groups  *verifiedGroups
	signers *signerCache
}

func (v *batchVerifier) verify(ns string, b Batch) error {
	if len(b.Signer) == 0 || len(b.Sig) == 0 {
		return fmt.Errorf("%w: batch (%v, %d) is unsigned", ErrForged, b.Origin, b.Seq)
	}
	k, err := v.signers.lookup(b.Signer, b.Origin)
	if err != nil {
		return fmt.Errorf("batch (%v, %d): %w", b.Origin, b.Seq, err)
	}
	root, sig, err := authRoot(b.Sig, leafHash(ns, &b))
	if err != nil {
		return fmt.Errorf("batch (%v, %d): %w", b.Origin, b.Seq, err)
	}
	if v.groups == nil {
		v.groups = new(verifiedGroups)
	}
	if !checkGroup(k, b.Signer, root, sig, v.signers, v.groups) {
		return fmt.Errorf("%w: batch (%v, %d)", ErrForged, b.Origin, b.Seq)
	}
	return nil
}

// checkGroup reports whether sig is k's signature of a group's root, the
// one way both sync and gossip check a group: a group in groups holds
// without a check; one checked now joins groups, and its signer joins
// signers. Either memory may be nil.
func checkGroup(k *knownSigner, signer []byte, root hash, sig []byte, signers *signerCache, groups *verifiedGroups) bool {
	key := groupKey(signer, root, sig)
	if groups.has(key) {
		return true
	}
	if !k.holds(rootSigningInput(root), sig) {
		return false
	}
	signers.keep(signer, k)
	groups.add(key)
	return true
}

// verifiedGroups is a node's memory of the signed groups (signer, root,
// signature) whose signature it has checked. A group can reach a node
// twice: by sync, then as the gossip message it was published in, which
// the node forwards only once it knows the message genuine (8% of the
// 100-node simulation's signature checks were such second checks). The
// memory makes that one check. A key is the SHA-256 of signer, root and
// signature, so a hit proves the very triple was checked. Two generations
// of at most maxVerifiedGroups keys bound it (~270 KB) without forgetting
// every recent group at once. Safe for concurrent use; the zero value is
// empty.
type verifiedGroups struct {
	mu        sync.Mutex
	cur, prev map[hash]struct{}
}

// maxVerifiedGroups is one generation of a verifiedGroups: ten seconds
// of the simulator's 100-node cluster at 200 groups a second.
const maxVerifiedGroups = 2048

func groupKey(signer []byte, root hash, sig []byte) hash {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	h.Write(binary.AppendUvarint(n[:0], uint64(len(signer))))
	h.Write(signer)
	h.Write(root[:])
	h.Write(sig)
	var k hash
	h.Sum(k[:0])
	return k
}

func (g *verifiedGroups) has(k hash) bool {
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.cur[k]; ok {
		return true
	}
	_, ok := g.prev[k]
	return ok
}

func (g *verifiedGroups) add(k hash) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.cur) >= maxVerifiedGroups {
		g.prev, g.cur = g.cur, nil
	}
	if g.cur == nil {
		g.cur = make(map[hash]struct{}, maxVerifiedGroups/8)
	}
	g.cur[k] = struct{}{}
}

// Sign signs m's batches as one group with key, the origin's private key:
// it sets m.Signer to key's peer id and m.Sig to the signature of the
// group's root in namespace ns.
func (m *Message) Sign(ns string, key crypto.PrivKey) error {
	pid, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return fmt.Errorf("gossip: signer id: %w", err)
	}
	_, err = m.sign(ns, key, []byte(pid))
	return err
}

func (m *Message) sign(ns string, key crypto.PrivKey, signer []byte) (*groupTree, error) {
	t, err := newGroupTree(ns, m.Batches)
	if err != nil {
		return nil, err
	}
	sig, err := t.sign(key)
	if err != nil {
		return nil, fmt.Errorf("gossip: sign message: %w", err)
	}
	m.Signer, m.Sig = signer, sig
	return t, nil
}

// verify checks m's signature over its batches in namespace ns (the
// signer's replica id must be the origin: checkSigner) and gives each
// batch its auth, so that sync can relay it. Failures wrap ErrForged.
func (m *Message) verify(ns string, signers *signerCache) error {
	k, err := m.checkSigner(signers)
	if err != nil {
		return err
	}
	return m.verifyAs(ns, k, signers, nil)
}

// verifyAs is verify with m's signer checked already (k); signers keeps k
// if the signature holds. groups, if not nil, is the node's memory of
// checked groups: a group in it is not checked again, and a group checked
// now joins it.
func (m *Message) verifyAs(ns string, k *knownSigner, signers *signerCache, groups *verifiedGroups) error {
	if len(m.Sig) == 0 {
		return fmt.Errorf("%w: message is unsigned", ErrForged)
	}
	t, err := newGroupTree(ns, m.Batches)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrForged, err)
	}
	if !checkGroup(k, m.Signer, t.root(), m.Sig, signers, groups) {
		return fmt.Errorf("%w: message (%v, %d-%d)", ErrForged, m.Origin, m.Batches[0].Seq, m.Batches[len(m.Batches)-1].Seq)
	}
	for i := range m.Batches {
		m.Batches[i].Signer, m.Batches[i].Sig = m.Signer, t.auth(m.Sig, i)
	}
	return nil
}

// checkSigner checks that m's signer is a peer id whose replica id is the
// message's origin (signers, if not nil, holds the ones checked before).
func (m *Message) checkSigner(signers *signerCache) (*knownSigner, error) {
	return signers.lookup(m.Signer, m.Origin)
}

// SignBatches signs bs, batches of key's replica in namespace ns, as one
// group with key and gives each its signer and auth. Replication signs its
// own batches this way when they leave; it is exported for tools and tests
// that make batches a node must accept.
func SignBatches(ns string, key crypto.PrivKey, bs []Batch) error {
	pid, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return fmt.Errorf("gossip: signer id: %w", err)
	}
	return signGroup(ns, key, []byte(pid), bs)
}

func signGroup(ns string, key crypto.PrivKey, signer []byte, bs []Batch) error {
	t, err := newGroupTree(ns, bs)
	if err != nil {
		return err
	}
	sig, err := t.sign(key)
	if err != nil {
		return fmt.Errorf("gossip: sign batches: %w", err)
	}
	for i := range bs {
		bs[i].Signer, bs[i].Sig = signer, t.auth(sig, i)
	}
	return nil
}

// signOwnGroup gives this replica's unsigned batches among bs an auth,
// signing them as one group. Own batches are signed when they leave (sync
// serves them), not when committed: signing stays off the path of a
// durable write, and Ed25519 signatures are deterministic.
func (r *Replicator) signOwnGroup(ns string, bs []Batch) error {
	var own []Batch
	var at []int
	for i := range bs {
		if bs[i].Origin == r.cfg.Replica && len(bs[i].Sig) == 0 {
			own = append(own, bs[i])
			at = append(at, i)
		}
	}
	if len(own) == 0 {
		return nil
	}
	if err := signGroup(ns, r.key, r.signer, own); err != nil {
		return fmt.Errorf("gossip: %s: %w", r.cfg.Host.ID(), err)
	}
	for j, i := range at {
		bs[i] = own[j]
	}
	return nil
}
