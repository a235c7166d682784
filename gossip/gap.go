package gossip

import (
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mycelnet/mycel/crdt"
)

// Bounds of the gap watch: the origins watched at once; the syncs one gap
// starts, and the checks it gets (a check whose every candidate peer is
// busy starts none); the syncs one check starts, whatever the number of
// gaps (a writer that skips numbers on purpose gets every receiver to
// sync, but no faster than this). A gap nobody can fill (an origin that
// restarted from a seq floor left numbers unused) is then left to the
// periodic syncs, which find nothing to send for it.
const (
	maxGapOrigins       = 64
	maxGapPulls         = 3
	maxGapChecks        = 10
	maxGapPullsPerCheck = 2
)

// gapWatch notices, from what gossip delivers, batches this node lacks: a
// batch whose predecessor from the same origin is not held. Two batches of
// one origin can take different paths through the mesh and arrive out of
// order, so a gap counts only if it is still open a grace later; then the
// node pulls from the peer that last forwarded a batch of that origin (its
// link works: it just delivered, and it held at least that batch), and a
// grace after that, if the gap is still open, from the origin itself when
// connected to it (see check for the order).
//
// Without it such a gap waits for a periodic sync with a random peer: up
// to 1.5 SyncInterval (45 s in the WAN preset), and that peer may lack the
// batch too. Gossip leaves gaps when a peer's outbound queue overflows: a
// mesh peer behind a blackholed link, whose queue fills while the link is
// down, gets the messages after the dropped ones when it heals.
//
// Not safe for concurrent use.
type gapWatch struct {
	gaps map[crdt.ReplicaID]*gap
	// unfillable: batches still missing when a gap's pulls ran out (one of
	// them from the origin itself, if connected): numbers an origin never
	// used, most likely, so later gaps do not count them. The periodic
	// syncs still fetch them if they exist.
	unfillable crdt.Context
}

// maxUnfillable bounds the ranges unfillable keeps; past it, it starts over.
const maxUnfillable = 1024

// gap is one origin's watched gap.
type gap struct {
	originPeer peer.ID
	seq        uint64 // the missing batch
	due        time.Time
	from       peer.ID // the latest peer to forward a batch of the origin
	before     peer.ID // the one before it
	pulls      int     // syncs started for it
	checks     int
}

// note records batch (origin, seq), signed by originPeer, that gossip
// delivered from peer from at now; has reports whether a batch is held.
// It reports whether a gap is newly watched: the caller runs check a grace
// later.
func (w *gapWatch) note(origin crdt.ReplicaID, originPeer peer.ID, seq uint64, from peer.ID, now time.Time, grace time.Duration, has func(crdt.ReplicaID, uint64) bool) bool {
	if g := w.gaps[origin]; g != nil {
		if g.from != from {
			g.before, g.from = g.from, from
		}
		if seq-1 > g.seq && !has(origin, seq-1) {
			g.seq = seq - 1 // a newer hole: the check covers both
		}
		return false
	}
	if seq <= 1 || len(w.gaps) >= maxGapOrigins || has(origin, seq-1) {
		return false
	}
	if w.gaps == nil {
		w.gaps = make(map[crdt.ReplicaID]*gap)
	}
	w.gaps[origin] = &gap{originPeer: originPeer, seq: seq - 1, due: now.Add(grace), from: from}
	return true
}

// check looks at the gaps due by now; missing returns the batches of an
// origin numbered up to a seq that are not held. Filled gaps are dropped;
// for each open one it asks pull to start a sync with a peer that may hold
// the batches, and pull reports whether it started one (false: a sync with
// that peer is running already, perhaps stalled on the link the gap came
// from). The candidates: the latest forwarder, then the origin if
// connected, then the forwarder before; on a gap's second pull the origin
// first. A peer asked once in a check is not asked again in it, and a
// check starts at most maxGapPullsPerCheck syncs. next is when to check
// again; zero when nothing is left to watch.
//
// A gap is open while any batch of its origin up to the missing one is
// (unless found unfillable before): gossip may fill the missing one by
// another path and still leave older ones out, as each peer's queue
// dropped different messages.
func (w *gapWatch) check(now time.Time, grace time.Duration, missing func(crdt.ReplicaID, uint64) crdt.Context, connected func(peer.ID) bool, pull func(peer.ID) bool) (next time.Time) {
	var asked []peer.ID
	started := 0
	for origin, g := range w.gaps {
		if now.Before(g.due) {
			if next.IsZero() || g.due.Before(next) {
				next = g.due
			}
			continue
		}
		m := missing(origin, g.seq)
		if open := w.unfillable.Missing(m); open.Len() == 0 {
			delete(w.gaps, origin) // filled
			continue
		}
		g.checks++
		if started < maxGapPullsPerCheck {
			candidates := []peer.ID{g.from, "", g.before}
			if g.originPeer != "" && connected(g.originPeer) {
				candidates[1] = g.originPeer
			}
			if g.pulls == 1 {
				candidates[0], candidates[1] = candidates[1], candidates[0]
			}
			for _, p := range candidates {
				if p == "" || slices.Contains(asked, p) {
					continue
				}
				asked = append(asked, p)
				if pull(p) {
					g.pulls++
					started++
					break
				}
			}
		}
		switch {
		case g.pulls >= maxGapPulls:
			// Pulled from the peers most likely to hold it and still
			// missing: numbers the origin never used, most likely.
			delete(w.gaps, origin)
			if w.unfillable.Ranges() > maxUnfillable {
				w.unfillable = crdt.Context{}
			}
			w.unfillable.Merge(m) // m as of before this last pull
			continue
		case g.checks >= maxGapChecks:
			delete(w.gaps, origin) // the peers stayed busy: periodic syncs take it
			continue
		}
		g.due = now.Add(grace) // the pull gets its grace too
		if next.IsZero() || g.due.Before(next) {
			next = g.due
		}
	}
	return next
}
