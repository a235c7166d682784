package store

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/mycelnet/mycel/crdt"
)

// Namespace is one replicated keyspace held by the store. Its methods are
// safe for concurrent use.
type Namespace struct {
	s      *Store
	name   string
	layout layout

	mu    sync.RWMutex
	state *crdt.Namespace
	sum   crdt.DigestSum
	// seen holds, as dots (origin, seq), every batch applied.
	seen crdt.Context
	// kept holds, as dots (origin, seq), the batches still in the log.
	kept crdt.Context
	// remoteApplies counts remote batches and state reconciliations
	// applied, so a reconciliation can tell whether anything arrived since
	// its snapshot.
	remoteApplies uint64
	// trackers record the keys changed for reconciliations in progress;
	// applyingFor is the one whose own deltas are being applied.
	trackers    []*ChangeTracker
	applyingFor *ChangeTracker
	// durableSeen is seen as of the last commit; only the commit loop
	// touches it after load.
	durableSeen crdt.Context
	// gone holds the batches seen that will never be in the log: removed
	// by compaction, or known only through state reconciliation. A batch
	// seen but neither kept nor gone is still being committed.
	gone     crdt.Context
	logBytes int64

	// pos is the last commit position; only the commit loop advances it.
	// posLow is the lowest position still indexed.
	pos    atomic.Uint64
	posLow atomic.Uint64
	// posDone is the last position whose index entry is in the datastore.
	posDone atomic.Uint64
	// trimDue: the position index may start with entries whose batches
	// are not in the log (set at open, when compaction removes a batch,
	// and when an unreplayable batch or a state reconciliation is
	// indexed). Without it compaction scanned the index every round,
	// which on a datastore without range scans (the in-memory one) is a
	// sort of the namespace's whole log: ~3% of the CPU of the
	// simulator's 100-node runs.
	trimDue atomic.Bool
	// floor is where this replica's dots and batch numbers count from in
	// a store whose identity was reused (0: from the highest seen): its
	// own form one run from there (see nextSeq). Set before the namespace
	// is shared.
	floor uint64
	// seqFloor is where this replica's batch numbers count from after an
	// unclean shutdown (see loadNamespace). Set before the namespace is
	// shared.
	seqFloor uint64
}

// setFloor makes this replica's dots and batch numbers count from at
// least floor (see Options.IdentityReused).
func (n *Namespace) setFloor(floor uint64) {
	n.floor = floor
	n.state.SetDotFloor(n.s.opts.Replica, floor)
}

func newNamespace(s *Store, name string) *Namespace {
	return &Namespace{s: s, name: name, layout: newLayout(name), state: crdt.NewNamespace(s.opts.Limits)}
}

// Name returns the namespace's name.
func (n *Namespace) Name() string { return n.name }

// WriteOption changes one write.
type WriteOption func(*writeOpts)

type writeOpts struct{ durable, noWait bool }

// WithoutWait returns as soon as the change is applied in memory and queued
// for commit, without waiting for it to be written. For replication, where
// a lost batch is fetched again by sync.
func WithoutWait() WriteOption { return func(o *writeOpts) { o.noWait = true } }

// WithDurability overrides the store's NoSync setting for one write: true
// waits for an fsync, false only for the datastore write.
func WithDurability(durable bool) WriteOption { return func(o *writeOpts) { o.durable = durable } }

// Apply performs a local operation. It returns once the operation is
// committed (and, unless NoSync, durable). The returned delta is what the
// operation changed, for callers that notify or replicate.
func (n *Namespace) Apply(ctx context.Context, op crdt.Op, opts ...WriteOption) (crdt.Delta, error) {
	wo := writeOpts{durable: !n.s.opts.NoSync}
	for _, o := range opts {
		o(&wo)
	}
	s := n.s
	if err := s.space.room(opBytes(op)); err != nil {
		return crdt.Delta{}, err
	}
	if err := s.acquire(ctx); err != nil {
		return crdt.Delta{}, err
	}
	n.mu.Lock()
	d, err := n.state.Prepare(op, s.opts.Replica, s.now())
	if err == nil {
		err = n.replicable(op, d)
	}
	if err != nil {
		n.mu.Unlock()
		s.release()
		return crdt.Delta{}, err
	}
	p := &pending{kind: pendingLocal, ns: n, durable: wo.durable, waits: !wo.noWait, delta: d, done: make(chan error, 1)}
	if d.ChangesNothing() {
		// A delete of what is not there: nothing to log, replicate or
		// report. It still waits for what was committed before it, so
		// that a delete it observed is as durable as its answer says.
		p.kind, p.ns, p.delta = pendingFlush, nil, crdt.Delta{}
	} else {
		n.applyLocked(d, p)
	}
	s.enqueue(p)
	n.mu.Unlock()
	if wo.noWait {
		return d, nil
	}
	return d, p.wait(ctx)
}

// ApplyAll performs local operations on distinct keys as one unit: if any
// would be refused, none is applied; otherwise all are applied under one
// hold of the namespace lock (readers see all or none) and committed as one
// log batch in one datastore batch (a crash keeps all or none). Their
// joined delta must fit in one batch (MaxOpBytes); callers split larger
// sets.
func (n *Namespace) ApplyAll(ctx context.Context, ops []crdt.Op, opts ...WriteOption) error {
	if len(ops) == 0 {
		return nil
	}
	wo := writeOpts{durable: !n.s.opts.NoSync}
	for _, o := range opts {
		o(&wo)
	}
	keys := make(map[string]bool, len(ops))
	for _, op := range ops {
		if keys[op.Key] {
			return fmt.Errorf("%w: two operations on key %q in one unit", crdt.ErrInvalidOp, op.Key)
		}
		keys[op.Key] = true
	}
	s := n.s
	if err := s.space.room(opsBytes(ops)); err != nil {
		return err
	}
	if err := s.acquire(ctx); err != nil {
		return err
	}
	n.mu.Lock()
	now := s.now()
	// First check every operation against the state as it is. Each touches
	// only its own key, so applying the others cannot change its outcome,
	// and the applying pass below cannot fail.
	size := 0
	for _, op := range ops {
		d, err := n.state.Prepare(op, s.opts.Replica, now)
		if err == nil {
			err = n.replicable(op, d)
		}
		if size += d.Size(); err == nil && size > MaxOpBytes {
			err = fmt.Errorf("%w: the operations' deltas are over the %d one batch may carry", crdt.ErrLimit, MaxOpBytes)
		}
		if err != nil {
			n.mu.Unlock()
			s.release()
			return err
		}
	}
	p := &pending{kind: pendingLocal, ns: n, durable: wo.durable, waits: !wo.noWait, done: make(chan error, 1)}
	deltas := make([]crdt.Delta, 0, len(ops))
	for _, op := range ops {
		d, err := n.state.Prepare(op, s.opts.Replica, now)
		if err != nil {
			// Checked above: cannot happen. Commit what was applied, so
			// memory and disk agree, and report it.
			err = fmt.Errorf("store: operation on %q refused after its check: %w", op.Key, err)
			if len(deltas) > 0 {
				p.delta = crdt.JoinDeltas(deltas...)
				s.enqueue(p)
			} else {
				s.release()
			}
			n.mu.Unlock()
			return err
		}
		if d.ChangesNothing() {
			continue // a delete of what is not there (see Apply)
		}
		n.applyLocked(d, p)
		deltas = append(deltas, d)
	}
	if len(deltas) == 0 {
		p.kind, p.ns = pendingFlush, nil
	} else {
		p.delta = crdt.JoinDeltas(deltas...)
	}
	s.enqueue(p)
	n.mu.Unlock()
	if wo.noWait {
		return nil
	}
	return p.wait(ctx)
}

// Batch is a delta batch from some replica's log: what gossip carries and
// sync resends.
type Batch struct {
	Origin crdt.ReplicaID
	Seq    uint64
	Delta  crdt.Delta
	// Encoded is Delta's encoding if the caller has it (saves re-encoding).
	Encoded []byte
	// Signer and Sig are the origin's id and signature of the batch, kept
	// in the log beside it and returned by ReadLog (the store does not
	// check them; replication does).
	Signer, Sig []byte
}

// ApplyBatch applies a batch from the log of replica b.Origin. A batch
// already applied is skipped (applied false). It returns once the batch is
// committed (not synced: a lost batch is fetched again by sync).
func (n *Namespace) ApplyBatch(ctx context.Context, b Batch, opts ...WriteOption) (applied bool, err error) {
	var wo writeOpts
	for _, o := range opts {
		o(&wo)
	}
	if b.Origin == 0 || b.Seq == 0 {
		return false, fmt.Errorf("store: batch with zero origin or sequence")
	}
	if len(b.Signer) > MaxBatchSignerBytes || len(b.Sig) > MaxBatchSigBytes {
		return false, fmt.Errorf("store: batch signer of %d bytes or signature of %d, max %d and %d", len(b.Signer), len(b.Sig), MaxBatchSignerBytes, MaxBatchSigBytes)
	}
	s := n.s
	if err := s.space.room(2 * int64(len(b.Encoded))); err != nil {
		return false, err
	}
	if err := s.acquire(ctx); err != nil {
		return false, err
	}
	n.mu.Lock()
	id := crdt.Dot{Replica: b.Origin, Counter: b.Seq}
	if n.seen.Contains(id) {
		n.mu.Unlock()
		s.release()
		return false, nil
	}
	s.observe(b.Delta.MaxTimestamp())
	n.seen.Add(id)
	n.remoteApplies++
	enc := b.Encoded
	if enc == nil {
		enc = b.Delta.Encode(nil)
	}
	p := &pending{
		kind: pendingRemote, ns: n, delta: b.Delta, origin: b.Origin, seq: b.Seq,
		encoded: enc, signer: b.Signer, sig: b.Sig, waits: !wo.noWait, done: make(chan error, 1),
	}
	if b.Delta.Len() == 0 {
		// A batch that names no key announces dots its origin skipped
		// after a crash; some may belong to a lost batch that reached us:
		// remove the origin's dots where we hold them (the keys named
		// reach watchers; a replay of the log, which holds the batch as
		// it came, cannot name them, so its position is not replayable).
		if rd := n.state.RemovalDelta(b.Delta.Context(), b.Origin); rd.Len() > 0 {
			n.applyLocked(rd, p)
			p.delta, p.notReplayable = crdt.JoinDeltas(rd, b.Delta), true
		}
	}
	n.applyLocked(b.Delta, p)
	s.enqueue(p)
	n.mu.Unlock()
	if wo.noWait {
		return true, nil
	}
	return true, p.wait(ctx)
}

// MaxOpBytes bounds the delta of one local operation: one operation
// forms at most one log batch, and every batch must fit in a gossip message
// and a sync frame (4 MiB by default) to replicate at all. MaxKeyStateBytes
// bounds the state a local operation may grow one key to: state
// reconciliation carries a key's state in one sync frame. Operations past
// either are refused (crdt.ErrLimit) before anything changes; remote
// batches are applied whatever they make of a key.
const (
	MaxOpBytes       = 2 << 20
	MaxKeyStateBytes = 3 << 20
)

// replicable refuses a prepared local delta that could not replicate. An
// operation that adds to a collection (a set, or a field of a map) can grow
// its key's state to at most its current state plus the delta's entry;
// a top-level put, delete, counter add or flag replaces or folds what it
// observed, so it is bounded by the delta alone. n.mu is held.
func (n *Namespace) replicable(op crdt.Op, d crdt.Delta) error {
	if size := d.Size(); size > MaxOpBytes {
		return fmt.Errorf("%w: the operation's delta is %d bytes, over the %d one batch may carry", crdt.ErrLimit, size, MaxOpBytes)
	}
	if op.Kind != crdt.OpSetUpdate && len(op.Path) == 0 {
		return nil
	}
	for i := 0; i < d.Len(); i++ {
		k := d.Key(i)
		cur, _ := n.state.Get(k)
		if size := cur.Size() + d.Value(i).Size(); size > MaxKeyStateBytes {
			return fmt.Errorf("%w: key %q would hold up to %d bytes of state, over the %d a sync frame may carry", crdt.ErrLimit, k, size, MaxKeyStateBytes)
		}
	}
	return nil
}

// applyLocked joins d into the state, keeps the digest sum current and
// adds the encoded effects to p: a state reconciliation applies many deltas
// to one pending change, and every one's key writes must reach the disk.
// n.mu is held.
func (n *Namespace) applyLocked(d crdt.Delta, p *pending) {
	if len(n.trackers) > 0 {
		n.track(d)
	}
	for i := 0; i < d.Len(); i++ {
		k := d.Key(i)
		if v, ok := n.state.Get(k); ok {
			n.sum.Remove(crdt.KeyDigest(k, v))
		}
	}
	p.keys = slices.Grow(p.keys, d.Len())
	n.state.ApplyDelta(d, func(k string, v crdt.Value) {
		if v.IsEmpty() {
			p.keys = append(p.keys, keyWrite{key: n.layout.stateKey(k)})
			return
		}
		enc := v.Encode(make([]byte, 0, v.Size())) // one allocation, not a regrowth per field
		n.sum.Add(crdt.KeyDigestEncoded(k, enc))
		p.keys = append(p.keys, keyWrite{key: n.layout.stateKey(k), val: enc})
	})
	for _, r := range d.Replicas() {
		c := n.state.ContextOf(r)
		p.ctxs = append(p.ctxs, ctxWrite{replica: r, ranges: c.Encode(nil)})
	}
	p.sum = n.sum.Bytes()
}

// sealLocal assigns the next sequence number to a local batch being
// committed.
func (n *Namespace) sealLocal() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	self := n.s.opts.Replica
	seq := n.nextSeq()
	n.seen.Add(crdt.Dot{Replica: self, Counter: seq})
	return seq
}

// nextSeq returns the number this replica's next local batch takes: one
// past the highest of its batches seen, or, counting from a floor (see
// Options.IdentityReused), the lowest number from the floor (or the
// batch-number floor of an unclean restart, if higher) that seen lacks —
// never one past numbers that another store of the same identity handed
// out (see crdt.Namespace.SetDotFloor). n.mu is held.
func (n *Namespace) nextSeq() uint64 {
	self := n.s.opts.Replica
	if n.floor > 0 {
		if seq := n.seen.NextGap(self, max(n.floor, n.seqFloor)); seq != 0 {
			return seq
		}
	}
	return max(n.seen.Max(self)+1, n.seqFloor)
}

func (n *Namespace) noteLogged(origin crdt.ReplicaID, seq uint64, size int) {
	n.mu.Lock()
	n.kept.Add(crdt.Dot{Replica: origin, Counter: seq})
	n.logBytes += int64(size)
	n.mu.Unlock()
}

// skipDots moves this replica's dot counter DotSkip ahead and commits a
// batch announcing the skipped range (see DotSkip). After an unclean
// shutdown it does so even when no dot of this replica is on disk: the
// namespace's first writes may have been published and then lost, and
// their dots must not be used again.
func (n *Namespace) skipDots(ctx context.Context, clean bool) error {
	s := n.s
	self := s.opts.Replica
	if err := s.acquire(ctx); err != nil {
		return err
	}
	n.mu.Lock()
	// Skip from this replica's own last dot: counting from a floor, the
	// end of its run from the floor, never announcing the dots another
	// store of the same identity handed out, above the floor or below.
	hi := n.state.NextDot(self) - 1
	if hi == 0 && clean {
		n.mu.Unlock()
		s.release()
		return nil
	}
	var skipped crdt.Context
	skipped.AddRange(self, hi+1, hi+DotSkip)
	d := crdt.ContextDelta(skipped)
	p := &pending{kind: pendingLocal, ns: n, durable: true, waits: true, delta: d, done: make(chan error, 1)}
	n.applyLocked(d, p)
	s.enqueue(p)
	n.mu.Unlock()
	return p.wait(ctx)
}

// Get returns a copy of the value under key.
func (n *Namespace) Get(key string) (crdt.Value, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	v, ok := n.state.Get(key)
	if !ok {
		return crdt.Value{}, false
	}
	return v.Clone(), true
}

// Keys returns up to limit keys (all if limit <= 0) that have the prefix
// and sort after the key after, in order.
func (n *Namespace) Keys(prefix, after string, limit int) []string {
	if rs, ok := n.s.ds.(rangeScanner); ok && limit > 0 {
		if release, err := n.s.use(); err == nil {
			keys, err := n.keysFromDisk(rs, prefix, after, limit)
			release()
			if err == nil {
				return keys
			}
		}
		// On a read error, or once closed, sort the keys in memory.
	}
	n.mu.RLock()
	all := n.state.Keys(prefix)
	n.mu.RUnlock()
	i := sort.SearchStrings(all, after)
	if i < len(all) && all[i] == after {
		i++
	}
	all = all[i:]
	if limit > 0 && len(all) > limit {
		all = all[:limit]
	}
	out := make([]string, len(all))
	for i, k := range all {
		out[i] = strings.Clone(k) // the state's keys share its storage
	}
	return out
}

// rangeScanner is implemented by datastores that iterate keys in order
// (Pebble): a page of keys then costs O(page), not a sort of every key.
type rangeScanner interface {
	scanKeys(ctx context.Context, lower, upper string, fn func(key string) bool) error
}

// keysFromDisk pages through the state records in key order (hex keys sort
// like the keys themselves). A key written but not yet committed is not
// listed yet; a key removed in memory but not yet committed is skipped.
func (n *Namespace) keysFromDisk(rs rangeScanner, prefix, after string, limit int) ([]string, error) {
	base := n.layout.statePrefix() + "/"
	lower := base + hex.EncodeToString([]byte(prefix))
	if after > prefix {
		lower = base + hex.EncodeToString([]byte(after))
	}
	upper := base + hex.EncodeToString([]byte(prefix)) + "g" // 'g' sorts after every hex digit
	var out []string
	err := rs.scanKeys(context.Background(), lower, upper, func(k string) bool {
		key, err := decodeHexName(strings.TrimPrefix(k, base))
		if err != nil || key <= after || !strings.HasPrefix(key, prefix) {
			return true
		}
		n.mu.RLock()
		_, live := n.state.Get(key)
		n.mu.RUnlock()
		if live {
			out = append(out, key)
		}
		return len(out) < limit
	})
	return out, err
}

// Len returns the number of keys holding a value.
func (n *Namespace) Len() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.state.Len()
}

// Digest returns the namespace digest and key count: equal digests mean
// equal replicas. It is maintained per write, not computed by a scan.
func (n *Namespace) Digest() (crdt.Digest, int) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.state.DigestWithSum(&n.sum), n.state.Len()
}

// Seen returns the batches applied, as dots (origin, seq).
func (n *Namespace) Seen() crdt.Context {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.seen.Clone()
}

// Kept returns the batches still held in the log, as dots (origin, seq).
// Where Seen has a batch that Kept lacks, the log was compacted past it.
func (n *Namespace) Kept() crdt.Context {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.kept.Clone()
}

// Flush waits until every change applied so far (in any namespace) is
// committed and synced.
func (n *Namespace) Flush(ctx context.Context) error { return n.s.Flush(ctx) }

// Gone returns the batches seen that the log can no longer serve (compacted,
// or received as state): a peer lacking one of them needs state
// reconciliation.
func (n *Namespace) Gone() crdt.Context {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.gone.Clone()
}

// LogBytes returns the encoded size of the log.
func (n *Namespace) LogBytes() int64 {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.logBytes
}

// View calls fn with the namespace state and the batches seen, under the
// read lock, so both are one consistent snapshot. fn must not keep them or
// call back into n.
func (n *Namespace) View(fn func(st *crdt.Namespace, seen *crdt.Context)) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	fn(n.state, &n.seen)
}

// HasSeen reports whether the batch (origin, seq) was applied.
func (n *Namespace) HasSeen(origin crdt.ReplicaID, seq uint64) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.seen.Contains(crdt.Dot{Replica: origin, Counter: seq})
}

// RemoteApplies returns how many remote batches and state reconciliations
// this namespace has applied since it was opened.
func (n *Namespace) RemoteApplies() uint64 {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.remoteApplies
}

// ApplyState applies the result of a state reconciliation: key deltas
// (which are not log batches and are not logged), then the peer's seen
// batches and causal context as of the snapshot the deltas were cut from.
// The caller guarantees the deltas cover every key where the two replicas
// differed at its own snapshot, taken when RemoteApplies was epoch. If
// anything remote was applied since, a key may differ that no delta names,
// and merging the peer's context and seen batches would be unsound: then
// only the key deltas (self-contained) are applied, and a later session
// completes the job.
func (n *Namespace) ApplyState(ctx context.Context, deltas []crdt.Delta, seen, cctx crdt.Context, epoch uint64) error {
	_, err := n.applyState(ctx, deltas, seen, cctx, nil, func() bool { return n.remoteApplies == epoch })
	return err
}

// ApplyStateTracked is ApplyState for a reconciliation that tracks the
// changes made since its snapshot with t (made before the snapshot): the
// deltas are applied without being recorded in t, and, if merge is set,
// the peer's seen batches and context are merged only if t recorded no
// change since its last Take (under the same lock hold as the merge). It
// reports whether they were merged. Unlike the epoch of ApplyState, t also
// sees local writes, and it names the keys changed, which the caller can
// reconcile again before merging.
func (n *Namespace) ApplyStateTracked(ctx context.Context, deltas []crdt.Delta, seen, cctx crdt.Context, t *ChangeTracker, merge bool) (merged bool, err error) {
	return n.applyState(ctx, deltas, seen, cctx, t, func() bool { return merge && !t.over && len(t.keys) == 0 })
}

func (n *Namespace) applyState(ctx context.Context, deltas []crdt.Delta, seen, cctx crdt.Context, t *ChangeTracker, mergeOK func() bool) (merged bool, err error) {
	s := n.s
	if err := s.space.room(0); err != nil {
		return false, err
	}
	if err := s.acquire(ctx); err != nil {
		return false, err
	}
	n.mu.Lock()
	p := &pending{kind: pendingState, ns: n, durable: !s.opts.NoSync, waits: true, done: make(chan error, 1)}
	n.applyingFor = t
	for _, d := range deltas {
		s.observe(d.MaxTimestamp())
		n.applyLocked(d, p)
	}
	p.delta = crdt.JoinDeltas(deltas...)
	if merged = mergeOK(); merged {
		n.applyLocked(crdt.ContextDelta(cctx), p)
		n.gone.Merge(n.seen.Missing(seen))
		n.seen.Merge(seen)
		p.stateSeen = seen
	}
	n.applyingFor = nil
	n.remoteApplies++
	s.enqueue(p)
	n.mu.Unlock()
	return merged, p.wait(ctx)
}

// ChangeTracker records the keys whose state changes in a namespace from
// when it is made until Stop: local writes, remote batches and other state
// reconciliations alike, but not the deltas applied with it
// (ApplyStateTracked). Past maxTrackedKeys it only records that it
// overflowed.
type ChangeTracker struct {
	n    *Namespace
	keys map[string]struct{} // guarded by n.mu
	over bool
}

const maxTrackedKeys = 1 << 16

// TrackChanges starts recording the keys changed from now on.
func (n *Namespace) TrackChanges() *ChangeTracker {
	t := &ChangeTracker{n: n, keys: make(map[string]struct{})}
	n.mu.Lock()
	n.trackers = append(n.trackers, t)
	n.mu.Unlock()
	return t
}

// Take returns the keys changed since the tracker was made or last taken,
// sorted, and forgets them; overflow reports that more changed than it
// could hold (then it stays set: no merge can be proven sound).
func (t *ChangeTracker) Take() (keys []string, overflow bool) {
	t.n.mu.Lock()
	defer t.n.mu.Unlock()
	for k := range t.keys {
		keys = append(keys, k)
	}
	clear(t.keys)
	slices.Sort(keys)
	return keys, t.over
}

// Stop ends the recording.
func (t *ChangeTracker) Stop() {
	t.n.mu.Lock()
	defer t.n.mu.Unlock()
	t.n.trackers = slices.DeleteFunc(t.n.trackers, func(x *ChangeTracker) bool { return x == t })
}

// track records in every tracker but the one applying that d's keys
// changed. n.mu is held.
func (n *Namespace) track(d crdt.Delta) {
	for _, t := range n.trackers {
		if t == n.applyingFor || t.over {
			continue
		}
		for i := 0; i < d.Len(); i++ {
			t.keys[d.Key(i)] = struct{}{}
		}
		if len(t.keys) > maxTrackedKeys {
			t.over = true
			clear(t.keys)
		}
	}
}

// ReadLog returns the logged batch (origin, seq), or ok false if it is not
// in the log.
func (n *Namespace) ReadLog(ctx context.Context, origin crdt.ReplicaID, seq uint64) (b Batch, ok bool, err error) {
	release, err := n.s.use()
	if err != nil {
		return Batch{}, false, err
	}
	defer release()
	return n.readLog(ctx, origin, seq)
}

// readLog is ReadLog with the datastore already in use.
func (n *Namespace) readLog(ctx context.Context, origin crdt.ReplicaID, seq uint64) (b Batch, ok bool, err error) {
	raw, err := n.s.ds.Get(ctx, n.layout.logKey(origin, seq))
	if err != nil {
		if isNotFound(err) {
			return Batch{}, false, nil
		}
		return Batch{}, false, fmt.Errorf("store: read log %s/%d of %q: %w", origin, seq, n.name, err)
	}
	_, enc, signer, sig, err := parseLogRecord(raw)
	if err == nil {
		var d crdt.Delta
		d, err = crdt.DecodeDelta(enc, storedLimits(n.s.opts.Limits))
		if err == nil {
			return Batch{Origin: origin, Seq: seq, Delta: d, Encoded: enc, Signer: signer, Sig: sig}, true, nil
		}
	}
	return Batch{}, false, fmt.Errorf("%w: namespace %q log entry %s/%d: %v", ErrCorrupt, n.name, origin, seq, err)
}

// loadNamespace reads a namespace back: context, key states, seen batches
// and the log's bookkeeping. Any record that does not decode is an error
// naming the namespace and key.
func loadNamespace(ctx context.Context, s *Store, name string, clean bool) (*Namespace, error) {
	n := newNamespace(s, name)
	rec, err := s.ds.Get(ctx, registryKey(name))
	if err != nil {
		return nil, fmt.Errorf("store: namespace %q: registry: %w", name, err)
	}
	floor, err := parseRegistryRecord(rec)
	if err != nil {
		return nil, corrupt(name, fmt.Errorf("registry: %v", err))
	}
	n.setFloor(floor)
	lim := storedLimits(s.opts.Limits)
	var c crdt.Context
	err = scan(ctx, s, n.layout.ctxPrefix(), false, func(key string, val []byte) error {
		r, ok := parseHex16(lastSegment(key))
		if !ok {
			return errors.New("bad replica id")
		}
		part, err := crdt.DecodeContext(val, lim)
		if err != nil {
			return err
		}
		if reps := part.Replicas(); len(reps) != 1 || reps[0] != crdt.ReplicaID(r) {
			return errors.New("ranges of another replica")
		}
		c.Merge(part)
		return nil
	})
	if err != nil {
		return nil, corrupt(name, err)
	}
	n.state.RestoreContext(c)
	// The digest sum is persisted with every commit; with it, loading need
	// not hash every key, and the key map can be sized up front.
	var saved *crdt.DigestSum
	if b, err := s.ds.Get(ctx, n.layout.sumKey()); err == nil {
		sum, err := crdt.ParseDigestSum(b)
		if err != nil {
			return nil, corrupt(name, fmt.Errorf("digest sum: %v", err))
		}
		saved = &sum
		n.state.Grow(growHint(sum.Len()))
	} else if !isNotFound(err) {
		return nil, err
	}
	err = scan(ctx, s, n.layout.statePrefix(), false, func(key string, val []byte) error {
		k, err := decodeHexName(lastSegment(key))
		if err != nil {
			return err
		}
		v, err := crdt.DecodeValue(val, lim)
		if err != nil {
			return fmt.Errorf("key %q: %w", k, err)
		}
		if err := n.state.Restore(k, v); err != nil {
			return fmt.Errorf("key %q: %w", k, err)
		}
		if saved == nil {
			n.sum.Add(crdt.KeyDigest(k, v))
		}
		return nil
	})
	if err != nil {
		return nil, corrupt(name, err)
	}
	if saved != nil {
		if saved.Len() != uint64(n.state.Len()) {
			// The sum does not match what was loaded: recompute it.
			s.opts.Logger.Warn("store: digest sum does not match the keys; recomputing", "namespace", name)
			n.state.Range(func(k string, v crdt.Value) bool {
				n.sum.Add(crdt.KeyDigest(k, v))
				return true
			})
		} else {
			n.sum = *saved
		}
	}
	err = scan(ctx, s, n.layout.seenPrefix(), false, func(key string, val []byte) error {
		part, err := crdt.DecodeContext(val, lim)
		if err != nil {
			return err
		}
		n.seen.Merge(part)
		return nil
	})
	if err != nil {
		return nil, corrupt(name, err)
	}
	err = scan(ctx, s, n.layout.logPrefix(), true, func(key string, val []byte) error {
		rest := strings.TrimPrefix(key, n.layout.logPrefix()+"/")
		o, seq, ok := strings.Cut(rest, "/")
		origin, ok1 := parseHex16(o)
		sq, ok2 := parseHex16(seq)
		if !ok || !ok1 || !ok2 || origin == 0 || sq == 0 {
			return errors.New("bad log entry key")
		}
		n.kept.Add(crdt.Dot{Replica: crdt.ReplicaID(origin), Counter: sq})
		n.logBytes += int64(len(val))
		return nil
	})
	if err != nil {
		return nil, corrupt(name, err)
	}
	// A log entry is written with its seen record, so the log can only
	// confirm what seen says; merging it is a safety net.
	n.seen.Merge(n.kept)
	n.durableSeen = n.seen.Clone()
	n.gone = n.kept.Missing(n.seen)
	var low, high uint64
	err = scan(ctx, s, n.layout.posPrefix(), true, func(key string, _ []byte) error {
		p, ok := parseHex16(lastSegment(key))
		if !ok || p == 0 {
			return errors.New("bad position key")
		}
		if low == 0 || p < low {
			low = p
		}
		high = max(high, p)
		return nil
	})
	if err != nil {
		return nil, corrupt(name, err)
	}
	// After an unclean shutdown, positions and this replica's batch
	// numbers handed out before the open may be lost (a commit written
	// but not synced when the process died: watchers saw its position,
	// and a NoSync batch may have been published) and must not name
	// another commit now. Start far above every one that can have been
	// used, and remember where, so that the next open starts above this
	// one's even if the index or the log is trimmed away meanwhile. A
	// clean Close synced everything first: continue where it left off.
	skip := uint64(positionSkip)
	if clean {
		skip = 0
	}
	posFloor, err := readFloor(ctx, s, n.layout.posFloorKey())
	if err != nil {
		return nil, corrupt(name, err)
	}
	start := max(high, posFloor) + skip
	if start < max(high, posFloor) {
		return nil, corrupt(name, fmt.Errorf("positions exhausted (floor %d, highest %d)", posFloor, high))
	}
	if err := s.ds.Put(ctx, n.layout.posFloorKey(), posFloorRecord(start)); err != nil {
		return nil, fmt.Errorf("store: namespace %q: position floor: %w", name, err)
	}
	seqFloor, err := readFloor(ctx, s, n.layout.seqFloorKey())
	if err != nil {
		return nil, corrupt(name, err)
	}
	// This replica's last batch number on disk (nextSeq reads the floor
	// of the restart before, which its numbers continued from).
	n.seqFloor = seqFloor
	if self := n.nextSeq() - 1; !clean {
		// Batch numbers in the gap are never used: no replica holds or
		// asks for them. Raised even when none of ours is on disk: a
		// batch numbered 1 may have been published and then lost. A store
		// counting from a floor raises it from its own last number, not
		// from the highest seen (another store's of the same identity).
		seqFloor = max(self, seqFloor) + positionSkip
		if seqFloor < positionSkip {
			return nil, corrupt(name, errors.New("batch numbers exhausted"))
		}
		if err := s.ds.Put(ctx, n.layout.seqFloorKey(), posFloorRecord(seqFloor)); err != nil {
			return nil, fmt.Errorf("store: namespace %q: batch-number floor: %w", name, err)
		}
	}
	n.seqFloor = seqFloor
	if low == 0 {
		low = start + 1 // nothing before start can be replayed
	}
	n.pos.Store(start)
	n.posDone.Store(start)
	n.posLow.Store(low)
	n.trimDue.Store(true)
	return n, nil
}

// growHint is how many keys to size the state's map for, from the key
// count saved with the digest sum: capped, because a corrupt count must not
// make the open ask for terabytes (found by review: a flipped high byte
// asked for hundreds of gigabytes and the runtime died). The count is
// checked against the keys loaded afterwards.
func growHint(saved uint64) int {
	const maxHint = 1 << 21
	return int(min(saved, maxHint))
}

// storedLimits are the limits for decoding the records this store wrote
// itself: its key states, contexts and seen batches. Joining remote
// batches can take a state past the element and byte limits that bound
// each batch (seven replicas each adding 165,000 elements to one set
// apart make a set of over a million), and a store that wrote it must
// open it again (found by review: the next open refused the store's own
// valid data as corrupt). Keys and values written under higher limits
// than today's (a lowered --max-key-bytes or --max-value-bytes) load too,
// up to what one operation can carry: a configuration change must not
// turn stored data into "corrupt" records (found by review). The decoders
// allocate no more than the bytes they are given, so a corrupt record
// costs at most its size.
func storedLimits(l crdt.Limits) crdt.Limits {
	l = l.WithDefaults()
	l.MaxElements = math.MaxInt32
	l.MaxBytes = math.MaxInt
	l.MaxKeyBytes = max(l.MaxKeyBytes, MaxOpBytes)
	l.MaxValueBytes = max(l.MaxValueBytes, MaxOpBytes)
	return l
}

// positionSkip is how far above every position (and batch number of this
// replica) used before, a namespace's start after an unclean shutdown: far
// more commits than can be written without a sync reaching the disk.
const positionSkip = 1 << 20

// readFloor reads a position or batch-number floor (0 if absent).
func readFloor(ctx context.Context, s *Store, key ds.Key) (uint64, error) {
	b, err := s.ds.Get(ctx, key)
	if isNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return parsePosFloor(b)
}

// ErrCompacted: a watch position is older than the change index kept.
var ErrCompacted = errors.New("store: position compacted; re-read the state")

// Position returns the namespace's last commit position in the datastore.
func (n *Namespace) Position() uint64 { return n.posDone.Load() }

// Replay calls fn, in order, with every batch committed at positions
// from+1 ..= to. It fails with ErrCompacted if any of them is no longer in
// the index or the log (or was a state reconciliation, which the log does
// not hold). Positions skipped at an open (see positionSkip) name no
// commit and are passed over.
func (n *Namespace) Replay(ctx context.Context, from, to uint64, fn func(Commit) error) error {
	if low := n.posLow.Load(); from+1 < low && from < to {
		return fmt.Errorf("%w: position %d, oldest kept %d", ErrCompacted, from, low)
	}
	release, err := n.s.use()
	if err != nil {
		return err
	}
	defer release()
	// Every position handed out from the lowest kept on has an index
	// entry, written with its commit, unless the commit never became
	// durable: a NoSync write a crash lost, whose position a watcher saw.
	// Resuming after it would pass over its undoing in silence (found by
	// review: the restart's skip announcement names no key).
	if low := n.posLow.Load(); from > 0 && from >= low && from < to {
		if _, err := n.s.ds.Get(ctx, n.layout.posKey(from)); isNotFound(err) {
			if n.posLow.Load() <= from { // not trimmed meanwhile
				return fmt.Errorf("%w: position %d was lost in a crash", ErrCompacted, from)
			}
		} else if err != nil {
			return fmt.Errorf("store: namespace %q: position %d: %w", n.name, from, err)
		}
	}
	err = n.scanPositions(ctx, from, to, func(p uint64, origin crdt.ReplicaID, seq uint64) (bool, error) {
		if origin == 0 {
			return false, fmt.Errorf("%w: position %d is a state reconciliation", ErrCompacted, p)
		}
		b, ok, err := n.readLog(ctx, origin, seq)
		if err != nil {
			return false, err
		}
		if !ok {
			return false, fmt.Errorf("%w: position %d", ErrCompacted, p)
		}
		c := Commit{Namespace: n.name, Origin: origin, Seq: seq, Delta: b.Delta, Encoded: b.Encoded, Local: origin == n.s.opts.Replica, Position: p}
		return true, fn(c)
	})
	if err != nil {
		return err
	}
	// Trimming may have removed entries after from while the scan ran,
	// which the scan would pass over like skipped positions.
	if low := n.posLow.Load(); from+1 < low && from < to {
		return fmt.Errorf("%w: position %d, oldest kept %d", ErrCompacted, from, low)
	}
	return nil
}

// scanPositions calls fn, in order, with every position index entry after
// from and up to to, while fn returns true.
func (n *Namespace) scanPositions(ctx context.Context, from, to uint64, fn func(p uint64, origin crdt.ReplicaID, seq uint64) (bool, error)) error {
	if from >= to {
		return nil
	}
	lower := n.layout.posKey(from + 1).String()
	upper := n.layout.posKey(to).String() + "\x00" // just past to's key
	entry := func(key string, val []byte) (bool, error) {
		p, ok := parseHex16(lastSegment(key))
		if !ok || p <= from || p > to {
			return !ok || p <= from, nil // skip what a plain query returns outside the range
		}
		origin, seq, err := parsePosRecord(val)
		if err != nil {
			return false, corrupt(n.name, fmt.Errorf("position %d: %v", p, err))
		}
		return fn(p, origin, seq)
	}
	if rs, ok := n.s.ds.(rangeValueScanner); ok {
		return rs.scanRange(ctx, lower, upper, entry)
	}
	q := query.Query{Prefix: n.layout.posPrefix(), Orders: []query.Order{query.OrderByKey{}}}
	return queryEach(ctx, n.s, q, func(k string, v []byte) (bool, error) {
		if k < lower {
			return true, nil
		}
		return entry(k, v)
	})
}

// queryEach runs q through go-datastore's Query (for datastores without a
// faster scan) and calls fn with each entry while it returns true.
func queryEach(ctx context.Context, s *Store, q query.Query, fn func(key string, val []byte) (bool, error)) error {
	res, err := s.ds.Query(ctx, q)
	if err != nil {
		return err
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return r.Error
		}
		more, err := fn(r.Key, r.Value)
		if err != nil || !more {
			return err
		}
	}
	return ctx.Err()
}

// rangeValueScanner is implemented by datastores that iterate a key range
// in order (Pebble): a replay from a position reads only what follows it.
type rangeValueScanner interface {
	scanRange(ctx context.Context, lower, upper string, fn func(key string, val []byte) (bool, error)) error
}

func corrupt(ns string, err error) error {
	if errors.Is(err, ErrCorrupt) {
		return err // named already, by the read that found it (pebbleStore)
	}
	return fmt.Errorf("%w: namespace %q: %v", ErrCorrupt, ns, err)
}

// scan calls fn for every entry under prefix.
func scan(ctx context.Context, s *Store, prefix string, sizesOnly bool, fn func(key string, val []byte) error) error {
	if ps, ok := s.ds.(prefixScanner); ok {
		return ps.scanPrefix(ctx, prefix, func(k string, v []byte) error {
			if err := fn(k, v); err != nil {
				return fmt.Errorf("record %s: %w", k, err)
			}
			return nil
		})
	}
	return queryEach(ctx, s, query.Query{Prefix: prefix}, func(k string, v []byte) (bool, error) {
		if err := fn(k, v); err != nil {
			return false, fmt.Errorf("record %s: %w", k, err)
		}
		return true, nil
	})
}

// prefixScanner is implemented by datastores that can iterate a prefix
// faster than go-datastore's channel-based Query (Pebble, when opened by
// OpenPebble). fn's value is only valid during the call.
type prefixScanner interface {
	scanPrefix(ctx context.Context, prefix string, fn func(key string, val []byte) error) error
}

func decodeHexName(h string) (string, error) {
	b, err := hex.DecodeString(h)
	if err != nil {
		return "", err
	}
	if len(b) == 0 || !utf8.Valid(b) {
		return "", errors.New("not a valid name")
	}
	return string(b), nil
}
