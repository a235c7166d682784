package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/mycelnet/mycel/crdt"
)

type pendingKind uint8

const (
	pendingLocal  pendingKind = iota // a local operation's delta
	pendingRemote                    // a batch from another replica (or our own, resent)
	pendingFlush                     // a barrier: nothing to write, but sync
	pendingState                     // the result of a state reconciliation
)

// pending is one change applied in memory and waiting to be committed. The
// writer fills it under the namespace lock with the encoded effects, so the
// commit loop never reads namespace state it does not own.
type pending struct {
	kind    pendingKind
	ns      *Namespace
	durable bool
	delta   crdt.Delta
	// remote batches
	origin  crdt.ReplicaID
	seq     uint64
	encoded []byte
	signer  []byte // the origin's id and signature, logged with the batch
	sig     []byte
	// state reconciliation: the peer's seen batches merged by this change
	stateSeen crdt.Context
	// notReplayable: what was applied differs from the logged batch, so
	// its position is indexed like a state reconciliation's
	notReplayable bool
	// effects
	keys []keyWrite
	ctxs []ctxWrite
	sum  []byte // the namespace's digest sum after this change
	done chan error
	// waits: its writer waits for the answer (see gather). Set before it
	// is queued, so the sync loop never acknowledges it uncounted.
	waits bool
	// charged: the bytes it counts as admitted and not yet written (see
	// diskSpace), until the commit loop wrote it
	charged int64
}

type keyWrite struct {
	key ds.Key // the state record's datastore key, built by the writer
	val []byte // nil: delete
}

type ctxWrite struct {
	replica crdt.ReplicaID
	ranges  []byte
}

func (p *pending) wait(ctx context.Context) error {
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		// The change is applied in memory and will still be committed.
		return ctx.Err()
	}
}

func (s *Store) enqueue(p *pending) {
	if s.space != nil {
		p.charged = pendingBytes(p)
		s.space.charge(p.charged)
	}
	s.qMu.Lock()
	s.queue = append(s.queue, p)
	s.qMu.Unlock()
	select {
	case s.qNotify <- struct{}{}:
	default:
	}
}

// run is the commit loop: it takes everything queued and writes it as one
// datastore batch, then hands the batch to the sync loop. Writing the next
// batch overlaps with syncing the previous one, but the loop never runs more
// than one batch ahead (the hand-off is unbuffered): while it waits, writers
// queue up, so the next batch carries all of them — that is what makes
// group commit group.
func (s *Store) run() {
	defer s.wg.Done()
	defer close(s.synced)
	for {
		s.gather()
		s.qMu.Lock()
		items := s.queue
		s.queue = nil
		s.qMu.Unlock()
		if len(items) > 0 {
			s.commit(items)
			continue
		}
		select {
		case <-s.qNotify:
		case <-s.closing:
			// Writers holding a slot may still enqueue: drain until
			// every slot is free, then stop.
			if len(s.slots) == 0 {
				s.qMu.Lock()
				empty := len(s.queue) == 0
				s.qMu.Unlock()
				if empty {
					return
				}
			}
			<-s.qNotify
		}
	}
}

// gather lets writers about to queue do so before the commit loop takes
// the queue. The loop is let go by the sync loop's hand-off, right after
// the sync loop acknowledged a group; writers waiting on their own
// acknowledgement to write again (64 closed-loop writers, or a node's
// request handlers) are then runnable but not yet queued. Taken at once,
// the queue leaves them for the batch after, and each of their writes
// waits out three syncs instead of two. So while yielding lets the queue
// grow, the loop yields, a bounded number of times, and stops after two
// yields in a row that let no one in (one may return before the runnable
// writers ran: the scheduler serves its global queue, where a yield goes,
// first every 61st tick). With nothing else to run, a yield returns at
// once.
//
// It gathers only for a durable write (it waits for the sync, which the
// late comers then share; unsynced writes would only wait longer), and
// only when the last acknowledgement released two or more waiting
// writers: a lone writer has no one to wait for, and on an overloaded
// host a yield waits behind every runnable goroutine, which a writer that
// waits for each answer before its next write pays on every write (the
// simulator's real-time driver started its ops up to 5.6–7.9 s late
// without this rule; 1.3–2.0 s before gather, 2.3 s with the rule).
// Measured, alternating with the commit loop before gather:
// BenchmarkDurablePut64 (-benchtime 200000x) 32 puts per commit against
// 26, 121,500–129,300 puts/s against 108,100–117,700 (119,500 / 127,800
// against 112,100 / 125,800 with the waiting-writers rule); the durable
// 5-node cluster benchmark 66,700–76,800 replicated puts/s against
// 46,300–55,100 (65,700 against 47,200 with the rule; docs/BENCHMARKS.md).
// The loop also gets here woken from idle, with the last count: after a
// burst, a lone writer's first write may still pay the yields once.
func (s *Store) gather() {
	if s.ackedWaiters.Load() < 2 {
		return
	}
	n, durable := s.queued()
	if !durable {
		return
	}
	idle := 0
	for range maxGatherYields {
		runtime.Gosched()
		m := s.queueLen()
		if m == n {
			if idle++; idle == 2 {
				return
			}
			continue
		}
		n, idle = m, 0
	}
}

// maxGatherYields bounds gather: more than a group's writers need to come
// back on two cores, and too few to delay a lone writer measurably.
const maxGatherYields = 8

func (s *Store) queueLen() int {
	s.qMu.Lock()
	defer s.qMu.Unlock()
	return len(s.queue)
}

// queued reports how many changes are queued, and whether one of them is a
// durable write.
func (s *Store) queued() (n int, durable bool) {
	s.qMu.Lock()
	defer s.qMu.Unlock()
	for _, p := range s.queue {
		if p.durable {
			return len(s.queue), true
		}
	}
	return len(s.queue), false
}

// group is one written datastore batch waiting for its sync.
type group struct {
	items   []*pending
	outs    []batchOut
	durable bool
	err     error
}

// syncLoop syncs written batches, as many per sync as are waiting, then
// acknowledges them and reports them through OnCommit, in commit order.
// Groups with no durable write are acknowledged unsynced, and synced within
// FlushEvery unless a durable write syncs them first.
func (s *Store) syncLoop() {
	defer s.wg.Done()
	flush := time.NewTimer(time.Hour)
	flush.Stop()
	defer flush.Stop()
	unsynced := false
	for {
		var g *group
		select {
		case next, ok := <-s.synced:
			if !ok {
				return // Close: the datastore's own close persists the rest
			}
			g = next
		case <-flush.C:
			if unsynced {
				mark := s.reported.Load()
				if err := s.ds.Sync(context.Background(), ds.RawKey("/")); err != nil {
					s.fail(fmt.Errorf("sync: %w", err))
				} else {
					s.notifySynced(mark)
				}
				unsynced = false
			}
			continue
		}
		groups := []*group{g}
	drain:
		for {
			select {
			case more, ok := <-s.synced:
				if !ok {
					break drain
				}
				groups = append(groups, more)
			default:
				break drain
			}
		}
		// Once the store has failed (an earlier group's sync, or a write),
		// no later group is acknowledged or reported: its bytes follow a
		// failed sync in the log, and whether they ever reach the disk is
		// unknown (found by review: a group written while the previous
		// one's fsync failed was still acknowledged and published).
		if failed := s.failure(); failed != nil {
			for _, g := range groups {
				if g.err == nil {
					g.err = failed
				}
			}
		}
		durable, written := false, false
		for _, g := range groups {
			durable = durable || (g.durable && g.err == nil)
			written = written || (g.err == nil && len(g.outs) > 0)
		}
		var syncErr error
		if durable {
			mark := s.reported.Load()
			if err := s.ds.Sync(context.Background(), ds.RawKey("/")); err != nil {
				syncErr = s.fail(fmt.Errorf("sync: %w", err))
			} else {
				s.notifySynced(mark) // earlier unsynced commits first
			}
			unsynced = false
		} else if written && !unsynced && s.opts.FlushEvery > 0 {
			unsynced = true
			flush.Reset(s.opts.FlushEvery)
		}
		localUnsynced := false
		waiters := int64(0)
		for _, g := range groups {
			err := g.err
			if err == nil {
				err = syncErr
			}
			// Report before acknowledging: a writer that got its answer
			// finds its change among those reported (watch positions).
			if err == nil && s.opts.OnCommit != nil {
				for _, o := range g.outs {
					o.commit.Report = s.reported.Add(1)
					o.commit.Synced = durable
					if !durable && o.commit.Local {
						localUnsynced = true
					}
					s.opts.OnCommit(o.commit)
				}
			}
			for _, p := range g.items {
				if p.waits {
					waiters++
				}
				p.done <- err
				s.release()
			}
		}
		s.ackedWaiters.Store(waiters)
		if localUnsynced {
			select {
			case s.flushNow <- struct{}{}:
			default: // a flush is asked for already; it covers these
			}
		}
	}
}

// flusher syncs unsynced local commits as soon as they are reported, off
// the writers' path, so that they may leave for peers (Options.OnSynced).
func (s *Store) flusher() {
	defer s.wg.Done()
	var last time.Time
	for {
		select {
		case <-s.closing:
			return // Close syncs the rest
		case <-s.flushNow:
		}
		// At most one sync per flushGap: under steady NoSync writes each
		// then covers many commits, and the syncs leave the disk and the
		// CPU to the writers.
		if wait := flushGap - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-s.closing:
				t.Stop()
				return
			case <-t.C:
			}
		}
		last = time.Now()
		if s.failure() != nil {
			continue
		}
		mark := s.reported.Load()
		if err := s.ds.Sync(context.Background(), ds.RawKey("/")); err != nil {
			s.fail(fmt.Errorf("sync: %w", err))
			continue
		}
		s.notifySynced(mark)
	}
}

// flushGap is the least time between the flusher's syncs.
const flushGap = 10 * time.Millisecond

// notifySynced reports that every commit reported up to mark is durable.
func (s *Store) notifySynced(mark uint64) {
	if s.opts.OnSynced != nil && mark > 0 {
		s.opts.OnSynced(mark)
	}
}

// batchOut is one batch committed, reported through OnCommit.
type batchOut struct {
	ns            *Namespace
	commit        Commit
	notReplayable bool
}

func (s *Store) commit(items []*pending) {
	ctx := context.Background()
	err := s.check()
	if errors.Is(err, ErrClosed) {
		err = nil // closing: still commit what was accepted
	}
	g := &group{items: items}
	if err == nil {
		g.outs, g.durable, err = s.write(ctx, items)
	}
	for _, p := range items {
		s.space.wrote(p.charged)
	}
	if err != nil {
		g.err = s.fail(err)
	}
	s.synced <- g
}

func (s *Store) write(ctx context.Context, items []*pending) (outs []batchOut, sync bool, err error) {
	b, err := s.ds.Batch(ctx)
	if err != nil {
		return nil, false, err
	}
	var logged []loggedEntry
	// The seen records written are those of durableSeen, which only this
	// loop changes and only with what this batch commits: never ahead of
	// the data, never behind an earlier commit.
	type seenSlot struct {
		ns     *Namespace
		origin crdt.ReplicaID
	}
	seenDirty := make(map[seenSlot]bool)
	// Local operations become log batches of at most maxLocalBatchBytes,
	// so every batch fits in one gossip message or sync frame.
	type localBatch struct {
		ns    *Namespace
		db    crdt.DeltaBuilder
		bytes int
	}
	var locals []*localBatch
	current := make(map[*Namespace]*localBatch)
	// Context ranges of one replica are rewritten by every change that
	// touches them: write only the last version of each.
	type ctxSlot struct {
		ns      *Namespace
		replica crdt.ReplicaID
	}
	lastCtx := make(map[ctxSlot][]byte)
	lastSum := make(map[*Namespace][]byte)
	for _, p := range items {
		sync = sync || p.durable
		if p.kind == pendingFlush {
			continue
		}
		l := p.ns.layout
		for _, kw := range p.keys {
			if kw.val == nil {
				err = b.Delete(ctx, kw.key)
			} else {
				err = b.Put(ctx, kw.key, kw.val)
			}
			if err != nil {
				return nil, false, err
			}
		}
		for _, cw := range p.ctxs {
			lastCtx[ctxSlot{p.ns, cw.replica}] = cw.ranges
		}
		if p.sum != nil {
			lastSum[p.ns] = p.sum
		}
		switch p.kind {
		case pendingRemote:
			rec := logRecord(s.opts.Now().UnixMilli(), p.encoded, p.signer, p.sig)
			if err := b.Put(ctx, l.logKey(p.origin, p.seq), rec); err != nil {
				return nil, false, err
			}
			p.ns.durableSeen.Add(crdt.Dot{Replica: p.origin, Counter: p.seq})
			seenDirty[seenSlot{p.ns, p.origin}] = true
			logged = append(logged, loggedEntry{p.ns, p.origin, p.seq, len(rec)})
			outs = append(outs, batchOut{ns: p.ns, commit: Commit{Namespace: p.ns.name, Origin: p.origin, Seq: p.seq, Delta: p.delta, Encoded: p.encoded, Signer: p.signer, Sig: p.sig}, notReplayable: p.notReplayable})
		case pendingLocal:
			size := p.delta.Size()
			lb := current[p.ns]
			if lb == nil || (lb.bytes > 0 && lb.bytes+size > maxLocalBatchBytes) {
				lb = &localBatch{ns: p.ns}
				current[p.ns] = lb
				locals = append(locals, lb)
			}
			lb.db.Add(p.delta)
			lb.bytes += size
		case pendingState:
			p.ns.durableSeen.Merge(p.stateSeen)
			for _, origin := range p.stateSeen.Replicas() {
				seenDirty[seenSlot{p.ns, origin}] = true
			}
			outs = append(outs, batchOut{ns: p.ns, commit: Commit{Namespace: p.ns.name, Delta: p.delta}})
		}
	}
	for n, sum := range lastSum {
		if err := b.Put(ctx, n.layout.sumKey(), sum); err != nil {
			return nil, false, err
		}
	}
	for slot, ranges := range lastCtx {
		if err := b.Put(ctx, slot.ns.layout.ctxKey(slot.replica), ranges); err != nil {
			return nil, false, err
		}
	}
	// Each namespace's local operations of this commit form its batches.
	for _, lb := range locals {
		n := lb.ns
		d := lb.db.Build()
		// Encode straight into the log record, after its header.
		size := d.Size()
		rec := binary.AppendUvarint(make([]byte, 0, 4096), uint64(s.opts.Now().UnixMilli()))
		rec = binary.AppendUvarint(rec, uint64(size))
		hdr := len(rec)
		rec = d.Encode(rec)
		enc := rec[hdr:len(rec):len(rec)]
		seq := n.sealLocal()
		// Local batches are logged unsigned: replication signs them as
		// they leave, off the path of the write.
		rec = appendLogAuth(rec, nil, nil)
		n.durableSeen.Add(crdt.Dot{Replica: s.opts.Replica, Counter: seq})
		if err := b.Put(ctx, n.layout.logKey(s.opts.Replica, seq), rec); err != nil {
			return nil, false, err
		}
		seenDirty[seenSlot{n, s.opts.Replica}] = true
		logged = append(logged, loggedEntry{n, s.opts.Replica, seq, len(rec)})
		outs = append(outs, batchOut{ns: n, commit: Commit{Namespace: n.name, Origin: s.opts.Replica, Seq: seq, Delta: d, Encoded: enc, Local: true}})
	}
	for slot := range seenDirty {
		c := slot.ns.durableSeen.Of(slot.origin)
		if err := b.Put(ctx, slot.ns.layout.seenKey(slot.origin), c.Encode(nil)); err != nil {
			return nil, false, err
		}
	}
	// Number every batch in the order this replica committed it, and keep
	// an index from position to batch, so watchers can resume.
	for i := range outs {
		o := &outs[i]
		o.commit.Position = o.ns.pos.Add(1)
		origin, seq := o.commit.Origin, o.commit.Seq
		if o.notReplayable {
			origin, seq = 0, 0 // replayed as a state reconciliation: ErrCompacted
		}
		if err := b.Put(ctx, o.ns.layout.posKey(o.commit.Position), posRecord(origin, seq)); err != nil {
			return nil, false, err
		}
	}
	if len(locals) > 0 {
		s.clockMu.Lock()
		t := s.clock.Last()
		s.clockMu.Unlock()
		if err := b.Put(ctx, ds.RawKey(keyHLC), encodeTimestamp(t)); err != nil {
			return nil, false, err
		}
	}
	if err := b.Commit(ctx); err != nil {
		return nil, false, fmt.Errorf("commit batch: %w", err)
	}
	// Only now is it in the datastore: compaction and sync may look for it.
	for _, e := range logged {
		e.ns.noteLogged(e.origin, e.seq, e.size)
	}
	for i := range outs {
		outs[i].ns.posDone.Store(outs[i].commit.Position)
		if outs[i].notReplayable || outs[i].commit.Origin == 0 {
			// Indexed, and never kept: an unreplayable batch or a state
			// reconciliation.
			outs[i].ns.trimDue.Store(true)
		}
	}
	return outs, sync, nil
}

type loggedEntry struct {
	ns     *Namespace
	origin crdt.ReplicaID
	seq    uint64
	size   int
}

// maxLocalBatchBytes bounds a local log batch (the sum of its operations'
// encoded deltas): well under the 4 MiB a gossip message or sync frame may
// carry, so that every batch can be replicated. One operation larger than
// this still forms its own batch; MaxOpBytes refuses any operation that
// could not.
const maxLocalBatchBytes = 1 << 20

// logRecord is a log entry's value: when it was logged, then the delta.
func logRecord(unixMillis int64, delta, signer, sig []byte) []byte {
	b := make([]byte, 0, 3*binary.MaxVarintLen64+len(delta)+len(signer)+len(sig)+2)
	b = binary.AppendUvarint(b, uint64(unixMillis))
	b = binary.AppendUvarint(b, uint64(len(delta)))
	b = append(b, delta...)
	return appendLogAuth(b, signer, sig)
}

// appendLogAuth appends a log record's trailer: the origin's signer id and
// signature, each length-prefixed (empty: the batch is unsigned).
func appendLogAuth(b, signer, sig []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(signer)))
	b = append(b, signer...)
	b = binary.AppendUvarint(b, uint64(len(sig)))
	return append(b, sig...)
}

// Bounds of a log record's signer id and signature (replication's auth: a
// signature and a Merkle proof). ApplyBatch refuses larger ones, so every
// record it writes parses again.
const (
	MaxBatchSignerBytes = 128
	MaxBatchSigBytes    = 1024
)

// parseLogRecord splits a log record: when it was logged, the delta's
// encoding, the origin's signer id and signature. The slices alias b.
func parseLogRecord(b []byte) (unixMillis int64, delta, signer, sig []byte, err error) {
	t, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, nil, nil, errors.New("bad log record header")
	}
	b = b[n:]
	field := func(max uint64) ([]byte, error) {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > max || l > uint64(len(b)-n) {
			return nil, errors.New("bad log record length")
		}
		v := b[n : n+int(l) : n+int(l)]
		b = b[n+int(l):]
		return v, nil
	}
	if delta, err = field(uint64(len(b))); err != nil {
		return 0, nil, nil, nil, err
	}
	if signer, err = field(MaxBatchSignerBytes); err != nil {
		return 0, nil, nil, nil, err
	}
	if sig, err = field(MaxBatchSigBytes); err != nil {
		return 0, nil, nil, nil, err
	}
	if len(b) != 0 {
		return 0, nil, nil, nil, errors.New("trailing bytes in log record")
	}
	if len(signer) == 0 {
		signer = nil
	}
	if len(sig) == 0 {
		sig = nil
	}
	return int64(t), delta, signer, sig, nil
}

// posRecord is a position index entry: the batch's origin and sequence
// number (both zero for a state reconciliation, which no log entry holds).
func posRecord(origin crdt.ReplicaID, seq uint64) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(origin))
	return binary.BigEndian.AppendUint64(b, seq)
}

func parsePosRecord(b []byte) (crdt.ReplicaID, uint64, error) {
	if len(b) != 16 {
		return 0, 0, errors.New("bad position record")
	}
	return crdt.ReplicaID(binary.BigEndian.Uint64(b)), binary.BigEndian.Uint64(b[8:]), nil
}

func encodeTimestamp(t crdt.Timestamp) []byte {
	b := binary.AppendUvarint(nil, uint64(t.Wall))
	return binary.AppendUvarint(b, uint64(t.Logical))
}

func decodeTimestamp(b []byte) (crdt.Timestamp, error) {
	w, n := binary.Uvarint(b)
	if n <= 0 {
		return crdt.Timestamp{}, errors.New("bad timestamp")
	}
	l, m := binary.Uvarint(b[n:])
	if m <= 0 || n+m != len(b) || l > uint64(^uint32(0)) {
		return crdt.Timestamp{}, errors.New("bad timestamp")
	}
	return crdt.Timestamp{Wall: int64(w), Logical: uint32(l)}, nil
}
