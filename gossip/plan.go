package gossip

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/mycelnet/mycel/crdt"
)

// maxBuckets bounds state reconciliation's key buckets.
const maxBuckets = 1 << 16

// sendPlan is what a sync server sends a client: the log batches it lacks,
// in (origin, seq) order, and whether some it lacks are no longer in the log.
type sendPlan struct {
	batches   []crdt.Dot // (origin, seq)
	compacted bool
	more      bool // stopped at the cap; the client should sync again
	held      bool // some the client lacks are in held: it should sync again after the grace
}

// planSend decides what to send a client that has seen theirs, given what
// this replica has seen, keeps in its log and has lost from it, sending at
// most max batches. A batch seen but neither kept nor gone is still being
// committed here; the client gets it next time. Batches in held() (on
// their way to the client by gossip; called only if there is something to
// send) are left out.
func planSend(seen, kept, gone, theirs crdt.Context, held func() crdt.Context, max int) sendPlan {
	var p sendPlan
	// Work on ranges, never dot by dot: a peer's state can make seen and
	// gone span most of the counter space.
	lack := theirs.Missing(seen)
	unlogged := kept.Missing(lack)       // lacked, not in the log
	committing := gone.Missing(unlogged) // of those, not gone either
	p.compacted = !committing.Equal(unlogged)
	send := unlogged.Missing(lack) // lacked and in the log
	if send.Ranges() > 0 && held != nil {
		if h := held(); h.Ranges() > 0 {
			rest := h.Missing(send)
			p.held = !rest.Equal(send)
			send = rest
		}
	}
	send.ForEachRange(func(origin crdt.ReplicaID, lo, hi uint64) {
		for seq := lo; !p.more; seq++ {
			if len(p.batches) >= max {
				p.more = true
				return
			}
			p.batches = append(p.batches, crdt.Dot{Replica: origin, Counter: seq})
			if seq == hi { // hi may be the last counter: stop before wrapping
				return
			}
		}
	})
	return p
}

// bucketOf returns the bucket of key among n (a power of two).
func bucketOf(key string, n int) uint32 {
	h := sha256.Sum256([]byte(key))
	return uint32(binary.BigEndian.Uint64(h[:8]) & uint64(n-1))
}

// bucketCount chooses how many buckets state reconciliation uses for a
// replica of the given size: about eight keys per bucket, so that the
// traffic is proportional to the keys that differ.
func bucketCount(keys int) int {
	n := 1
	for n < maxBuckets && n*8 < keys {
		n <<= 1
	}
	return n
}

// sumBytes renders a digest sum for the wire.
func sumBytes(s *crdt.DigestSum) bucketSum {
	var b bucketSum
	copy(b[:], s.Bytes())
	return b
}

// differingBuckets lists the buckets whose sums differ.
func differingBuckets(mine, theirs []bucketSum) []uint32 {
	var out []uint32
	for i := range mine {
		if i >= len(theirs) || mine[i] != theirs[i] {
			out = append(out, uint32(i))
		}
	}
	return out
}
