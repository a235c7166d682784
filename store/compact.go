package store

import (
	"context"
	"errors"

	ds "github.com/ipfs/go-datastore"

	"github.com/mycelnet/mycel/crdt"
)

func isNotFound(err error) bool { return errors.Is(err, ds.ErrNotFound) }

// compact removes log entries, oldest first per origin, until the log is
// within the retention policy. Key states are never touched; Seen still
// lists the removed batches, which is how sync learns it must reconcile
// state instead of replaying the log.
func (n *Namespace) compact(ctx context.Context) error {
	s := n.s
	cutoff := s.opts.Now().Add(-s.opts.Retention.MaxAge).UnixMilli()
next:
	for {
		if err := s.check(); err != nil {
			return err
		}
		n.mu.RLock()
		kept := n.kept.Clone()
		over := n.logBytes > s.opts.Retention.MaxBytes
		n.mu.RUnlock()
		// Candidates: the oldest entry of each origin.
		var victim crdt.Dot
		var victimTime int64
		var victimSize int
		found := false
		for _, origin := range kept.Replicas() {
			seq := kept.Min(origin)
			raw, err := s.ds.Get(ctx, n.layout.logKey(origin, seq))
			if isNotFound(err) {
				// Bookkeeping ahead of the datastore: drop it.
				n.forget(origin, seq, 0)
				continue
			}
			if err != nil && !errors.Is(err, ErrCorrupt) {
				return err
			}
			var t int64
			if err == nil {
				t, _, _, _, err = parseLogRecord(raw)
			}
			if err != nil {
				// It can never be served: remove it now, as compaction
				// would (the key states hold its effects; a peer that
				// lacks it reconciles state). Stopping here instead
				// stopped retention for every namespace, for good
				// (found by review).
				// An entry Pebble cannot read (ErrCorrupt from Get) goes
				// too. Its size is unknown: it counts as the log's mean
				// entry (counting none left LogBytes too high, and
				// retention, going by it, trimming the log to nothing).
				s.opts.Logger.Warn("store: removing a corrupt log entry", "namespace", n.name, "origin", origin, "seq", seq, "err", err)
				if err := s.ds.Delete(ctx, n.layout.logKey(origin, seq)); err != nil {
					return err
				}
				size := len(raw)
				if raw == nil {
					n.mu.RLock()
					if k := n.kept.Len(); k > 0 {
						size = int(n.logBytes / int64(k))
					}
					n.mu.RUnlock()
				}
				n.forget(origin, seq, size)
				// Look again: this origin's next entry may be due too
				// (continuing with the next origin ended the pass when
				// there was none, one corrupt entry a pass).
				continue next
			}
			if !found || t < victimTime {
				victim, victimTime, victimSize, found = crdt.Dot{Replica: origin, Counter: seq}, t, len(raw), true
			}
		}
		if !found || (!over && victimTime >= cutoff) {
			if !n.trimDue.Swap(false) {
				return nil
			}
			err := n.trimPositions(ctx)
			if err != nil {
				n.trimDue.Store(true)
			}
			return err
		}
		if err := s.ds.Delete(ctx, n.layout.logKey(victim.Replica, victim.Counter)); err != nil {
			return err
		}
		n.forget(victim.Replica, victim.Counter, victimSize)
	}
}

func (n *Namespace) forget(origin crdt.ReplicaID, seq uint64, size int) {
	n.mu.Lock()
	n.kept.Remove(origin, seq, seq)
	n.gone.Add(crdt.Dot{Replica: origin, Counter: seq})
	n.logBytes -= int64(size)
	n.mu.Unlock()
	n.trimDue.Store(true)
}

// trimPositions drops the oldest position index entries whose batches are
// no longer in the log.
func (n *Namespace) trimPositions(ctx context.Context) error {
	var victims []uint64
	low, done := n.posLow.Load(), n.posDone.Load()
	newLow := done + 1 // if every entry goes
	err := n.scanPositions(ctx, max(low, 1)-1, done, func(p uint64, origin crdt.ReplicaID, seq uint64) (bool, error) {
		n.mu.RLock()
		kept := origin != 0 && n.kept.Contains(crdt.Dot{Replica: origin, Counter: seq})
		n.mu.RUnlock()
		if kept {
			newLow = p
			return false, nil
		}
		victims = append(victims, p)
		return true, nil
	})
	if err != nil {
		return err
	}
	if newLow > done && len(victims) > 0 {
		// The index is about to be empty: the positions used must still
		// be known to the next open. Written before the deletions, so a
		// crash that keeps them keeps it.
		if err := n.savePosFloor(ctx, done); err != nil {
			return err
		}
	}
	// The floor moves before the entries go: a replay that checked it
	// before and scans after a deletion must find it moved and answer
	// ErrCompacted, not pass over the deleted entry as a skipped position
	// (found by review: moving it after each deletion left that window).
	if len(victims) > 0 {
		n.posLow.Store(max(victims[len(victims)-1]+1, n.posLow.Load()))
	}
	for _, p := range victims {
		if err := n.s.ds.Delete(ctx, n.layout.posKey(p)); err != nil {
			return err
		}
	}
	n.posLow.Store(max(newLow, n.posLow.Load()))
	return nil
}

// savePosFloor records that positions up to p were used: the next open
// starts above it.
func (n *Namespace) savePosFloor(ctx context.Context, p uint64) error {
	cur, err := readFloor(ctx, n.s, n.layout.posFloorKey())
	if err != nil || cur >= p {
		return err
	}
	return n.s.ds.Put(ctx, n.layout.posFloorKey(), posFloorRecord(p))
}
