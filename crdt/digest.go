package crdt

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"math/bits"
)

// Digest is a SHA-256 hash of canonical bytes.
type Digest [32]byte

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// KeyDigest hashes one key and its value: equal digests mean equal key
// states (up to SHA-256 collisions).
func KeyDigest(key string, v Value) Digest {
	var buf [256]byte
	b := appendEntry(buf[:0], key, &v)
	return sha256.Sum256(b)
}

// KeyDigestEncoded is KeyDigest of key and the value whose encoding
// (Value.Encode) is enc: a writer that encodes the value anyway hashes it
// without encoding it twice.
func KeyDigestEncoded(key string, enc []byte) Digest {
	var buf [256]byte
	b := appendMsgHeader(buf[:0], fStateEntry, sizeMsg(fKeyKey, len(key))+sizeMsg(fKeyValue, len(enc)))
	b = appendStringField(b, fKeyKey, key)
	b = appendMsgHeader(b, fKeyValue, len(enc))
	if len(b)+len(enc) <= len(buf) {
		return sha256.Sum256(append(b, enc...))
	}
	h := sha256.New()
	h.Write(b)
	h.Write(enc)
	var d Digest
	h.Sum(d[:0])
	return d
}

// DigestSum is an order-independent sum of key digests, modulo 2^256, so a
// namespace digest can be kept up to date as single keys change: subtract
// the key's old digest, add the new one.
type DigestSum struct {
	limbs [4]uint64
	n     uint64 // number of digests added minus removed
}

// Add adds one key digest.
func (s *DigestSum) Add(d Digest) {
	var carry uint64
	for i := 3; i >= 0; i-- {
		s.limbs[i], carry = bits.Add64(s.limbs[i], binary.BigEndian.Uint64(d[i*8:]), carry)
	}
	s.n++
}

// Remove subtracts a key digest added before.
func (s *DigestSum) Remove(d Digest) {
	var borrow uint64
	for i := 3; i >= 0; i-- {
		s.limbs[i], borrow = bits.Sub64(s.limbs[i], binary.BigEndian.Uint64(d[i*8:]), borrow)
	}
	s.n--
}

// Len returns the number of key digests in the sum.
func (s *DigestSum) Len() uint64 { return s.n }

// NamespaceDigest combines a context and the sum of the namespace's key
// digests into the namespace digest.
func NamespaceDigest(ctx *Context, sum *DigestSum) Digest {
	h := sha256.New()
	var b [48]byte
	for i, l := range sum.limbs {
		binary.BigEndian.PutUint64(b[i*8:], l)
	}
	binary.BigEndian.PutUint64(b[32:], sum.n)
	h.Write(b[:40])
	h.Write(ctx.Encode(nil))
	var d Digest
	h.Sum(d[:0])
	return d
}

// Digest returns the namespace digest: a hash of the causal context and of
// every key's digest. Two replicas have equal digests iff they hold equal
// states. It scans every key; stores keep a [DigestSum] instead.
func (n *Namespace) Digest() Digest {
	var sum DigestSum
	var one [1]RegEntry
	n.keys.each(func(k string, s slot) bool {
		sum.Add(KeyDigest(k, s.read(k, &one)))
		return true
	})
	return NamespaceDigest(&n.ctx, &sum)
}

// DigestWithSum is Digest for a caller that keeps the sum of the key
// digests itself (a store, incrementally): it hashes the causal context in
// place, without the copy Context returns.
func (n *Namespace) DigestWithSum(sum *DigestSum) Digest { return NamespaceDigest(&n.ctx, sum) }

// Equal reports whether two namespaces hold the same state.
func (n *Namespace) Equal(o *Namespace) bool {
	if n.keys.len() != o.keys.len() || !n.ctx.Equal(o.ctx) {
		return false
	}
	equal := true
	n.keys.each(func(k string, s slot) bool {
		w, ok := o.keys.lookup(k)
		var one, other [1]RegEntry
		equal = ok && string(s.read(k, &one).Encode(nil)) == string(w.read(k, &other).Encode(nil))
		return equal
	})
	return equal
}

// Restore puts a persisted value back under key while loading a namespace
// from storage: it checks that every dot of v is in the namespace's context
// and replaces whatever key held. Use [Namespace.RestoreContext] first.
func (n *Namespace) Restore(key string, v Value) error {
	// Any length: the key was within the limits in force when it was
	// written, and lowering them later must not make it unloadable.
	lifted := n.limits
	lifted.MaxKeyBytes = math.MaxInt
	if err := lifted.CheckName("key", key); err != nil {
		return err
	}
	var missing *Dot
	v.Dots(func(d Dot) {
		if missing == nil && !n.ctx.Contains(d) {
			missing = &d
		}
	})
	if missing != nil {
		return fmt.Errorf("%w: key %q holds dot %v that is not in the context", ErrMalformed, key, *missing)
	}
	if v.IsEmpty() {
		n.keys.del(key)
		return nil
	}
	n.set(key, v)
	return nil
}

// RestoreContext sets the namespace's causal context while loading it from
// storage.
func (n *Namespace) RestoreContext(c Context) { n.ctx = c.Clone() }

// Bytes returns the sum and count as 40 bytes, for comparing sums across
// replicas.
func (s *DigestSum) Bytes() []byte {
	b := make([]byte, 40)
	for i, l := range s.limbs {
		binary.BigEndian.PutUint64(b[i*8:], l)
	}
	binary.BigEndian.PutUint64(b[32:], s.n)
	return b
}

// ParseDigestSum reads a sum written by DigestSum.Bytes.
func ParseDigestSum(b []byte) (DigestSum, error) {
	var s DigestSum
	if len(b) != 40 {
		return s, fmt.Errorf("%w: digest sum of %d bytes", ErrMalformed, len(b))
	}
	for i := range s.limbs {
		s.limbs[i] = binary.BigEndian.Uint64(b[i*8:])
	}
	s.n = binary.BigEndian.Uint64(b[32:])
	return s, nil
}
