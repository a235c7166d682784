package gossip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"

	"github.com/mycelnet/mycel/crdt"
)

// The sync protocol, one namespace per stream, the client pulling:
//
//	client: Hello{ns, seen}
//	server: Batch* Done{more, compacted}
//	if compacted (the server no longer has some batches the client lacks):
//	client: Buckets{sums}         (keys hashed into 2^k buckets)
//	server: Differ{bucket ids}
//	client: KeyDots* EndKeys      (its keys in those buckets and their dots)
//	server: KeyDelta* State{seen, ctx}
//
// Traffic is the batches the client lacks, or, past a compacted log, the
// bucket sums plus the keys in differing buckets.

type conn struct {
	s   network.Stream
	r   msgio.ReadCloser
	w   msgio.WriteCloser
	lim Limits
	in  int64
	out int64
	// batch auths sent and received without repeating signer and signature
	authOut, authIn authStream
	// State reconciliation runs as long as it makes progress: progress
	// pushes the session's deadline out (and calls onExtend with the time
	// left) every progressEvery frames moved, but never past end.
	timeout  time.Duration
	now      func() time.Time
	end      time.Time
	onExtend func(left time.Duration)
	frames   int
	// onFrame, if set, is called for every frame received: a client
	// session reports to its namespace's pull turns that it is working,
	// in the batch phase and in state reconciliation alike.
	onFrame func()
}

// setTimeouts makes the session end timeout from now unless progress
// pushes it out, and at the latest maxSessionTimeouts timeouts from now.
func (c *conn) setTimeouts(timeout time.Duration, now func() time.Time) {
	c.timeout, c.now = timeout, now
	c.end = now().Add(maxSessionTimeouts * timeout)
}

// progressEvery is how many state-phase frames move between deadline
// extensions; maxSessionTimeouts bounds a session however it progresses
// (10 minutes with the default 30 s), so a peer that trickles frames cannot
// hold it for ever.
const (
	progressEvery      = 256
	maxSessionTimeouts = 20
)

// progress notes one frame moved in the state phase.
func (c *conn) progress() {
	c.frames++
	if c.frames%progressEvery != 0 || c.timeout <= 0 {
		return
	}
	now := c.now()
	deadline := now.Add(c.timeout)
	if deadline.After(c.end) {
		deadline = c.end
	}
	_ = c.s.SetDeadline(deadline)
	if c.onExtend != nil {
		c.onExtend(deadline.Sub(now))
	}
}

func newConn(s network.Stream, lim Limits) *conn {
	return &conn{s: s, r: msgio.NewVarintReaderSize(s, lim.MaxMessageBytes), w: msgio.NewVarintWriter(s), lim: lim}
}

func (c *conn) send(f *frame) error {
	if f.kind == frameBatch && len(f.batch.Sig) > 0 {
		g := *f
		g.batch.Signer, g.batch.Sig = c.authOut.compact(f.batch.Signer, f.batch.Sig)
		f = &g
	}
	b := encodeFrame(f)
	c.out += int64(len(b))
	return c.w.WriteMsg(b)
}

func (c *conn) recv() (*frame, error) {
	msg, err := c.r.ReadMsg()
	if err != nil {
		return nil, err
	}
	b := append([]byte(nil), msg...)
	c.r.ReleaseMsg(msg)
	c.in += int64(len(b))
	f, err := decodeFrame(b, c.lim)
	if err == nil && f.kind == frameBatch && len(f.batch.Sig) > 0 {
		f.batch.Signer, f.batch.Sig, err = c.authIn.expand(f.batch.Signer, f.batch.Sig)
	}
	if err != nil {
		return nil, err
	}
	if c.onFrame != nil {
		c.onFrame()
	}
	return f, nil
}

func (c *conn) expect(kind frameKind) (*frame, error) {
	f, err := c.recv()
	if err != nil {
		return nil, err
	}
	if f.kind != kind {
		return nil, fmt.Errorf("%w: frame %d where %d was expected", ErrMalformed, f.kind, kind)
	}
	return f, nil
}

// syncSpace runs one client session for s with p. more reports that the
// server stopped early and another session should follow.
// syncNext is what a client does after a session, as its server asked.
type syncNext int

const (
	syncDone  syncNext = iota
	syncMore           // the server stopped at its cap: another session now
	syncLater          // the server left batches to gossip: another after the grace
)

func (r *Replicator) syncSpace(ctx context.Context, p peer.ID, s *space, turn *turn, refused *crdt.Context, full bool) (next syncNext, err error) {
	// SyncTimeout bounds the session, but state reconciliation pushes it
	// out while it makes progress (see conn.progress).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	expire := time.AfterFunc(r.cfg.SyncTimeout, cancel)
	defer expire.Stop()
	st, err := r.cfg.Host.NewStream(network.WithAllowLimitedConn(ctx, "sync"), p, ProtocolSync)
	if err != nil {
		return syncDone, err
	}
	defer st.Close()
	_ = st.SetDeadline(r.cfg.Now().Add(r.cfg.SyncTimeout))
	// A deadline alone would let Close wait up to SyncTimeout on a peer
	// that stopped answering (a blackholed link): cancelling resets the
	// stream, which fails any read or write in progress.
	defer context.AfterFunc(ctx, func() { st.Reset() })()
	c := newConn(st, r.cfg.Limits)
	c.setTimeouts(r.cfg.SyncTimeout, r.cfg.Now)
	c.onExtend = func(left time.Duration) { expire.Reset(left) }
	c.onFrame = turn.received
	defer func() {
		r.stats.SyncBytesIn.Add(c.in)
		r.stats.SyncBytesOut.Add(c.out)
		if err != nil {
			st.Reset()
		}
	}()
	seen := s.rep.Seen()
	seen.Merge(*refused)
	seen.Merge(s.pending.claimed(time.Now().Add(-r.cfg.SyncGrace)))
	if err := c.send(&frame{kind: frameHello, ns: s.name, seen: seen, full: full}); err != nil {
		return syncDone, err
	}
	refuse := func(b Batch) { refused.Add(crdt.Dot{Replica: b.Origin, Counter: b.Seq}) }
	verifier := batchVerifier{groups: &r.groups, signers: &r.signers} // a group checked once
	var got uint64
	defer func() {
		r.noteStatus(p, s.name, func(ps *PeerSync) {
			ps.WeLacked += got
			if err != nil {
				ps.LastError = err.Error()
			}
		})
	}()
	defer func() { // runs first: the status notes why
		if err != nil && errors.Is(context.Cause(ctx), errAbandoned) {
			err = errAbandoned // not the reset stream's error
		}
	}()
	for {
		f, err := c.recv()
		if err != nil {
			return syncDone, err
		}
		switch f.kind {
		case frameBatch:
			r.stats.SyncBatchesIn.Add(1)
			if !s.writerOK(f.batch.Origin) {
				r.stats.RejectNotWriter.Add(1)
				refuse(f.batch)
				continue
			}
			// Held already (gossip or another session brought it since
			// our hello): nothing to check or apply. After a heal a node
			// syncs with several peers at once and they relay the same
			// batches; checking each copy's signature was most of the CPU
			// a 100-node simulation spent on sync (31 s of 42 s).
			if s.rep.HasSeen(f.batch.Origin, f.batch.Seq) {
				r.stats.SyncBatchesHeld.Add(1)
				continue
			}
			// The server relays batches of any origin: only the origin's
			// signature shows one is genuine. Its own batches are checked
			// too (one check per page: it signs a page's as one group),
			// because we keep the auth and relay it: a server that signs
			// its batches wrongly must not pass them on through us. A
			// forged one is skipped, not applied, so the genuine batch
			// under that number still can be.
			if err := verifier.verify(s.name, f.batch); err != nil {
				r.stats.RejectForged.Add(1)
				r.cfg.Logger.Debug("gossip: sync batch refused", "peer", p, "ns", s.name, "err", err)
				refuse(f.batch)
				continue
			}
			if s.contextAhead(f.batch) {
				r.stats.IgnoredAhead.Add(1)
				// Not claimed as seen: the next round may bring what it
				// saw, and then it applies (a transient refusal).
				continue
			}
			if _, err := s.rep.ApplyBatch(ctx, f.batch); err != nil {
				return syncDone, err
			}
			got++
		case frameDone:
			if f.compacted {
				turn.reconcile()
				if err := r.reconcileState(ctx, c, s); err != nil {
					return syncDone, fmt.Errorf("state reconciliation: %w", err)
				}
			}
			r.stats.SyncSessions.Add(1)
			r.noteStatus(p, s.name, func(ps *PeerSync) {
				ps.LastPull, ps.PeerLacks, ps.StateSynced, ps.LastError = r.cfg.Now(), f.lacks, f.compacted, ""
				ps.WeLacked = 0 // counted by the deferred note for this session
			})
			switch {
			case f.more:
				return syncMore, nil
			case f.held:
				return syncLater, nil
			}
			return syncDone, nil
		default:
			return syncDone, fmt.Errorf("%w: unexpected frame %d", ErrMalformed, f.kind)
		}
	}
}

// bucketSums computes the digest sum of each of n buckets of keys.
func bucketSums(st *crdt.Namespace, n int) []bucketSum {
	sums := make([]crdt.DigestSum, n)
	st.Range(func(k string, v crdt.Value) bool {
		sums[bucketOf(k, n)].Add(crdt.KeyDigest(k, v))
		return true
	})
	out := make([]bucketSum, n)
	for i := range sums {
		out[i] = sumBytes(&sums[i])
	}
	return out
}

// reconcileState is the client side of state reconciliation.
//
// The server's seen batches and context, merged at the end, describe its
// snapshot; merging them is sound only for keys the client has not changed
// since its own snapshot (a key it changed may have been changed again at
// the server, by a batch the merge would mark seen without applying). A
// tracker made before the snapshot names the keys changed since — local
// writes, remote batches, other reconciliations — and the client asks the
// server for those keys again (from its current state) until a merge finds
// none changed, for at most maxStateRounds rounds; then it leaves the merge
// to a later session.
func (r *Replicator) reconcileState(ctx context.Context, c *conn, s *space) error {
	var sums []bucketSum
	tr := s.rep.TrackChanges() // before the snapshot
	defer tr.Stop()
	s.rep.View(func(st *crdt.Namespace, _ *crdt.Context) {
		sums = bucketSums(st, bucketCount(st.Len()))
	})
	if err := c.send(&frame{kind: frameBuckets, buckets: sums}); err != nil {
		return err
	}
	f, err := c.expect(frameDiffer)
	if err != nil {
		return err
	}
	differ := make(map[uint32]bool, len(f.differ))
	for _, id := range f.differ {
		if int(id) >= len(sums) {
			return fmt.Errorf("%w: bucket %d of %d", ErrMalformed, id, len(sums))
		}
		differ[id] = true
	}
	var keys []string
	s.rep.View(func(st *crdt.Namespace, _ *crdt.Context) {
		for _, k := range st.Keys("") {
			if differ[bucketOf(k, len(sums))] {
				keys = append(keys, k)
			}
		}
	})
	inRound := func(k string) bool { return differ[bucketOf(k, len(sums))] }
	var state *frame
	var total answerTotal
	incomplete := false // the server left a key out: no merge
	for round := 0; ; round++ {
		final, err := r.stateRound(ctx, c, s, tr, keys, inRound, &total)
		if err != nil {
			if round > 0 {
				// The deltas applied stay; a server that ends the session
				// after its first answer (an older one) leaves the merge
				// to a later session, as does a broken stream.
				break
			}
			return err
		}
		state = final
		incomplete = incomplete || final.incomplete
		changed, overflow := tr.Take()
		if overflow || incomplete {
			break // keys converged through their deltas; the merge waits
		}
		if len(changed) == 0 {
			merged, err := s.rep.ApplyState(ctx, nil, state.seen, state.cctx, tr, true)
			if err != nil {
				return err
			}
			if merged {
				r.stats.StateSessions.Add(1)
				return nil
			}
			if changed, overflow = tr.Take(); overflow || len(changed) == 0 {
				break
			}
		}
		if round == maxStateRounds {
			break
		}
		// Again, for the keys changed meanwhile, wherever they are.
		keys = changed
		asked := make(map[string]bool, len(changed))
		for _, k := range changed {
			asked[k] = true
		}
		inRound = func(k string) bool { return asked[k] }
	}
	r.stats.StateSessions.Add(1)
	r.stats.StateMergesSkipped.Add(1)
	return nil
}

// stateRound sends the client's dots for keys, then takes the server's key
// deltas (each for a key inRound accepts) and applies them in pages as they
// come: each is self-contained, so memory stays bounded by a page, and
// what a broken session applied stays (the next one finds those buckets
// equal). It returns the server's closing State frame.
// answerTotal is what a server sent in all rounds of one session.
type answerTotal struct{ keys, bytes int64 }

func (r *Replicator) stateRound(ctx context.Context, c *conn, s *space, tr ChangeTracker, keys []string, inRound func(string) bool, total *answerTotal) (state *frame, err error) {
	for start := 0; start < len(keys); start += statePageKeys {
		var page []frame
		s.rep.View(func(st *crdt.Namespace, _ *crdt.Context) {
			for _, k := range keys[start:min(start+statePageKeys, len(keys))] {
				page = append(page, frame{kind: frameKeyDots, key: k, dots: crdt.ContextOf(st.ValueDots(k)...)})
			}
		})
		for i := range page {
			if err := c.send(&page[i]); err != nil {
				return nil, err
			}
			c.progress()
		}
	}
	if err := c.send(&frame{kind: frameEndKeys}); err != nil {
		return nil, err
	}
	var deltas []crdt.Delta
	var pageBytes int64
	maxKeys, maxBytes := int64(r.cfg.Limits.Delta.MaxElements), int64(r.cfg.Limits.Delta.MaxBytes)
	apply := func() error {
		if len(deltas) == 0 {
			return nil
		}
		_, err := s.rep.ApplyState(ctx, deltas, crdt.Context{}, crdt.Context{}, tr, false)
		r.stats.StateKeysIn.Add(int64(len(deltas)))
		deltas, pageBytes = deltas[:0], 0
		return err
	}
	for {
		f, err := c.recv()
		if err != nil {
			return nil, err
		}
		c.progress()
		switch f.kind {
		case frameKeyDelta:
			if !inRound(f.delta.Key(0)) {
				return nil, fmt.Errorf("%w: key delta for a key not asked about", ErrMalformed)
			}
			if err := s.checkKeyDelta(f.delta); err != nil {
				return nil, err
			}
			// Bound the answer as a whole too: a server cannot stream
			// keys for ever.
			total.keys++
			total.bytes += int64(f.delta.Size())
			if total.keys > stateAnswerFactor*maxKeys || total.bytes > stateAnswerFactor*maxBytes {
				return nil, fmt.Errorf("%w: state reconciliation over %d times the key or byte limit", ErrMalformed, stateAnswerFactor)
			}
			deltas = append(deltas, f.delta)
			if pageBytes += int64(f.delta.Size()); len(deltas) >= statePageKeys || pageBytes >= statePageBytes {
				if err := apply(); err != nil {
					return nil, err
				}
			}
		case frameState:
			return f, apply()
		default:
			return nil, fmt.Errorf("%w: unexpected frame %d", ErrMalformed, f.kind)
		}
	}
}

// maxStateRounds bounds the extra rounds a reconciliation spends on keys
// changed while it ran.
const maxStateRounds = 3

// State reconciliation pages: the client applies key deltas in pages of at
// most statePageKeys keys or statePageBytes bytes; an answer may run to
// stateAnswerFactor times the delta limits (Limits.Delta: 1,000,000 keys,
// 256 MiB by default) in all.
const (
	statePageKeys     = 4096
	statePageBytes    = 16 << 20
	stateAnswerFactor = 16
)

// checkKeyDelta refuses a key delta holding writes of non-writers.
func (s *space) checkKeyDelta(d crdt.Delta) error {
	if s.writers == nil {
		return nil
	}
	var bad bool
	d.StoreDots(func(x crdt.Dot) { bad = bad || !s.writers[x.Replica] })
	if bad {
		s.r.stats.RejectNotWriter.Add(1)
		return errors.New("gossip: key delta holds a non-writer's write")
	}
	return nil
}

// admission limits the sync sessions one peer may open.
type admission struct {
	active int
	tokens float64
	last   time.Time
}

// admit decides whether to serve a session for p and, if so, counts it in
// r.wg — under r.mu, so that Close (which marks closed under r.mu before
// waiting) never races an Add.
func (r *Replicator) admit(p peer.ID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	a := r.served[p]
	now := r.cfg.Now()
	if a == nil {
		if len(r.served) >= maxTrackedPeers {
			r.pruneBudgets(r.served, now)
		}
		a = &admission{tokens: float64(r.cfg.SyncBurst), last: now}
		r.served[p] = a
	}
	a.tokens = min(float64(r.cfg.SyncBurst), a.tokens+now.Sub(a.last).Seconds()*r.cfg.SyncRate)
	a.last = now
	if a.active >= r.cfg.MaxSyncsPerPeer || a.tokens < 1 {
		return false
	}
	a.tokens--
	a.active++
	r.wg.Add(1)
	return true
}

func (r *Replicator) done(p peer.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a := r.served[p]; a != nil {
		a.active--
	}
}

// serve is the server side of the sync protocol.
func (r *Replicator) serve(st network.Stream) {
	p := st.Conn().RemotePeer()
	if !r.admit(p) {
		r.stats.SyncRefused.Add(1)
		st.Reset()
		return
	}
	defer r.wg.Done()
	defer r.done(p)
	_ = st.SetDeadline(r.cfg.Now().Add(r.cfg.SyncTimeout))
	defer context.AfterFunc(r.ctx, func() { st.Reset() })() // Close ends the session now
	c := newConn(st, r.cfg.Limits)
	c.setTimeouts(r.cfg.SyncTimeout, r.cfg.Now)
	err := r.serveSession(c)
	r.stats.SyncBytesIn.Add(c.in)
	r.stats.SyncBytesOut.Add(c.out)
	if err != nil {
		if errors.Is(err, ErrMalformed) {
			r.stats.RejectMalformed.Add(1)
		}
		if !errors.Is(err, io.EOF) {
			r.cfg.Logger.Debug("gossip: serving sync failed", "peer", p, "err", err)
		}
		st.Reset()
		return
	}
	r.stats.SyncServed.Add(1)
	st.Close()
}

func (r *Replicator) serveSession(c *conn) error {
	hello, err := c.expect(frameHello)
	if err != nil {
		return err
	}
	s := r.space(hello.ns)
	if s == nil {
		return fmt.Errorf("gossip: namespace %q not joined here", hello.ns)
	}
	// Flushes and log reads end with the session too: a stuck disk must
	// not hold the peer's slot for ever.
	ctx, cancel := context.WithDeadline(r.ctx, c.end)
	defer cancel()
	seen := s.rep.Seen()
	held := func() crdt.Context { return r.onTheirWay(c.s.Conn(), s) }
	if hello.full {
		held = nil
	}
	plan := planSend(seen, s.rep.Kept(), s.rep.Gone(), hello.seen, held, r.cfg.MaxSyncBatches)
	lacks := seen.Missing(hello.seen)
	if len(plan.batches) > 0 || plan.compacted {
		if err := s.rep.Flush(ctx); err != nil {
			return err
		}
	}
	// Read and send in pages, so that this node's own batches in a page
	// are signed together: one signature per page, not per batch.
	for len(plan.batches) > 0 {
		page, err := r.readPage(ctx, s, &plan)
		if err != nil {
			return err
		}
		if err := r.signOwnGroup(s.name, page); err != nil {
			return err
		}
		for i := range page {
			if err := c.send(&frame{kind: frameBatch, batch: page[i]}); err != nil {
				return err
			}
			r.stats.SyncBatchesOut.Add(1)
		}
	}
	if plan.held {
		r.stats.SyncHeldBack.Add(1)
	}
	if err := c.send(&frame{kind: frameDone, more: plan.more, held: plan.held, compacted: plan.compacted, lacks: lacks.Len()}); err != nil {
		return err
	}
	r.noteStatus(c.s.Conn().RemotePeer(), s.name, func(ps *PeerSync) { ps.LastServed = r.cfg.Now() })
	if !plan.compacted {
		return nil
	}
	return r.serveState(ctx, c, s)
}

// Bounds of one page of logged batches a sync server reads before it sends.
const (
	pageBatches = 256
	pageBytes   = 1 << 20
)

// readPage reads the next page of plan's batches from the log and takes
// them off the plan; batches compacted since the plan was made mark it
// compacted.
func (r *Replicator) readPage(ctx context.Context, s *space, plan *sendPlan) ([]Batch, error) {
	var page []Batch
	size := 0
	for len(plan.batches) > 0 && len(page) < pageBatches && size < pageBytes {
		id := plan.batches[0]
		plan.batches = plan.batches[1:]
		b, ok, err := s.rep.ReadLog(ctx, id.Replica, id.Counter)
		if err != nil {
			return nil, err
		}
		if !ok { // compacted since the plan was made
			plan.compacted = true
			continue
		}
		page = append(page, b)
		size += len(b.Encoded)
	}
	return page, nil
}

// onTheirWay returns the batches that gossip is bringing the client on
// conn already: those this node passed on by gossip within the grace
// period. None when gossip may not reach the client: it is not in the
// namespace's topic, or the connection is younger than the grace period
// (a partition healed by reconnecting: what was published before it never
// reached the client, and the first sync must bring all of it at once).
// Clients ask for everything (a full hello) on a new connection, for a
// namespace's first sync and for an explicit SyncWith; only periodic syncs
// let the server hold batches back.
func (r *Replicator) onTheirWay(conn network.Conn, s *space) crdt.Context {
	grace, opened := r.cfg.SyncGrace, conn.Stat().Opened
	if grace <= 0 || s.topic == nil || opened.IsZero() || time.Since(opened) < grace || !slices.Contains(s.topic.ListPeers(), conn.RemotePeer()) {
		return crdt.Context{}
	}
	return s.recent.since(time.Now().Add(-grace))
}

// maxStateServes bounds the state reconciliations a node serves at once;
// a client past it fails its session and reconciles at a later sync.
const maxStateServes = 4

// serveState is the server side of state reconciliation.
func (r *Replicator) serveState(ctx context.Context, c *conn, s *space) error {
	f, err := c.expect(frameBuckets)
	if err != nil {
		return err
	}
	if r.stateServes != nil {
		select {
		case r.stateServes <- struct{}{}:
			defer func() { <-r.stateServes }()
		default:
			r.stats.SyncRefused.Add(1)
			return fmt.Errorf("gossip: %d state reconciliations are being served; later", maxStateServes)
		}
	}
	n := len(f.buckets)
	var mine []bucketSum
	var seen, cctx crdt.Context
	s.rep.View(func(st *crdt.Namespace, sn *crdt.Context) {
		mine = bucketSums(st, n)
		seen, cctx = sn.Clone(), st.Context()
	})
	// The snapshot may hold writes not yet durable: wait for them.
	if err := s.rep.Flush(ctx); err != nil {
		return err
	}
	differ := differingBuckets(mine, f.buckets)
	if err := c.send(&frame{kind: frameDiffer, differ: differ}); err != nil {
		return err
	}
	inDiffer := make(map[uint32]bool, len(differ))
	for _, id := range differ {
		inDiffer[id] = true
	}
	theirs, err := r.readKeyList(c, func(k string) bool { return inDiffer[bucketOf(k, n)] })
	if err != nil {
		return err
	}
	// The keys to answer for: ours in the differing buckets and theirs.
	var keys []string
	s.rep.View(func(st *crdt.Namespace, _ *crdt.Context) {
		for _, k := range st.Keys("") {
			if _, both := theirs[k]; !both && inDiffer[bucketOf(k, n)] {
				keys = append(keys, k)
			}
		}
	})
	for k := range theirs {
		keys = append(keys, k)
	}
	state := &frame{kind: frameState, seen: seen, cctx: cctx}
	if err := r.answerRound(ctx, c, s, keys, theirs, state); err != nil {
		return err
	}
	// The client may ask again, for keys it changed meanwhile, from our
	// state as it is now; the seen batches and context stay the
	// snapshot's. It ends the session by closing the stream.
	for round := 0; round < maxStateRounds; round++ {
		theirs, err := r.readKeyList(c, func(string) bool { return true })
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		keys := make([]string, 0, len(theirs))
		for k := range theirs {
			keys = append(keys, k)
		}
		if err := r.answerRound(ctx, c, s, keys, theirs, state); err != nil {
			return err
		}
	}
	return nil
}

// answerRound answers one round of a state reconciliation: the key deltas,
// then the state frame (the snapshot's seen batches and context), marked
// incomplete if a key was left out.
func (r *Replicator) answerRound(ctx context.Context, c *conn, s *space, keys []string, theirs map[string]crdt.Context, state *frame) error {
	incomplete, err := r.answerKeys(ctx, c, s, keys, theirs)
	if err != nil {
		return err
	}
	f := *state
	f.incomplete = incomplete
	return c.send(&f)
}

// readKeyList reads a client's key list (KeyDots frames up to EndKeys),
// each key one accept takes, bounded in keys and bytes as the client bounds
// what it takes from us. io.EOF: the client closed the stream instead.
func (r *Replicator) readKeyList(c *conn, accept func(string) bool) (map[string]crdt.Context, error) {
	maxBytes := int64(r.cfg.Limits.Delta.MaxBytes)
	listStart := c.in
	theirs := make(map[string]crdt.Context)
	for {
		f, err := c.recv()
		if err != nil {
			return nil, err
		}
		c.progress()
		if f.kind == frameEndKeys {
			return theirs, nil
		}
		if f.kind != frameKeyDots || !accept(f.key) || len(theirs) >= r.cfg.Limits.Delta.MaxElements {
			return nil, fmt.Errorf("%w: unexpected frame in key list", ErrMalformed)
		}
		if c.in-listStart > maxBytes {
			return nil, fmt.Errorf("%w: key list over %d bytes", ErrMalformed, maxBytes)
		}
		theirs[f.key] = f.dots
	}
}

// answerKeys sends a key delta for each of keys against the client's dots,
// in pages each cut under one read lock, so the answer need not fit in
// memory (nor in the client's) at once. Each page waits for what it holds
// to be durable before it leaves: it is cut from the live state, which may
// hold a NoSync write a crash could still lose (found by review: only the
// snapshot before the first page was flushed).
func (r *Replicator) answerKeys(ctx context.Context, c *conn, s *space, keys []string, theirs map[string]crdt.Context) (incomplete bool, err error) {
	maxBytes := int64(r.cfg.Limits.Delta.MaxBytes)
	maxKeys := int64(stateAnswerFactor * r.cfg.Limits.Delta.MaxElements)
	var outKeys, outBytes int64
	for start := 0; start < len(keys); start += statePageKeys {
		var page []frame
		s.rep.View(func(st *crdt.Namespace, _ *crdt.Context) {
			for _, k := range keys[start:min(start+statePageKeys, len(keys))] {
				d := st.KeyDeltaOf(k, theirs[k])
				if d.Size()+len(k)+frameOverhead > c.lim.MaxMessageBytes {
					// A key grown past a frame by concurrent remote
					// writes: leave it out, answer the rest, and say so.
					incomplete = true
					r.stats.StateKeysTooLarge.Add(1)
					continue
				}
				outBytes += int64(d.Size())
				page = append(page, frame{kind: frameKeyDelta, delta: d})
			}
		})
		if outKeys += int64(len(page)); outKeys > maxKeys || outBytes > stateAnswerFactor*maxBytes {
			return incomplete, fmt.Errorf("state reconciliation over %d times the key or byte limit (%d bytes, %d keys)", stateAnswerFactor, maxBytes, r.cfg.Limits.Delta.MaxElements)
		}
		if len(page) > 0 {
			if err := s.rep.Flush(ctx); err != nil {
				return incomplete, err
			}
		}
		for i := range page {
			if err := c.send(&page[i]); err != nil {
				return incomplete, err
			}
			c.progress()
		}
	}
	return incomplete, nil
}

// frameOverhead bounds what a key delta frame adds to the delta and key.
const frameOverhead = 64
