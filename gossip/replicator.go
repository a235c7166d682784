package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mycelnet/mycel/crdt"
)

// ProtocolSync is the repair protocol's id.
const ProtocolSync = "/mycel/sync/1.0.0"

// defaultSyncGrace is Config.SyncGrace's default.
const defaultSyncGrace = time.Second

// TopicName returns the gossipsub topic of a namespace.
func TopicName(ns string) string { return topicPrefix + ns + topicSuffix }

const topicPrefix, topicSuffix = "/mycel/ns/", "/1"

// Config configures a Replicator. Zero fields take the documented defaults.
type Config struct {
	// Host is the libp2p host. Required.
	Host host.Host
	// PubSub is a gossipsub router on Host, made with the options from
	// PubSubOptions. Required.
	PubSub *pubsub.PubSub
	// Replica is this node's replica id. Required.
	Replica crdt.ReplicaID
	// Limits bound what peers can make us decode.
	Limits Limits
	// CoalesceWindow is how long local batches wait to be published
	// together. Default 2 ms.
	CoalesceWindow time.Duration
	// MaxCoalesceWindow is how far the window may widen while the node is
	// busy (messages carrying many changes). Default 10 × CoalesceWindow;
	// equal to CoalesceWindow, the window is fixed.
	MaxCoalesceWindow time.Duration
	// MaxPublishOps publishes as soon as this many key changes are queued.
	// Default 512.
	MaxPublishOps int
	// MaxPublishBytes bounds one published message. Default 1 MiB.
	MaxPublishBytes int
	// DisablePublish turns the gossip fast path off (sync alone then
	// replicates): for tests and for measuring the repair path.
	DisablePublish bool
	// SyncInterval is the mean time between background syncs with a random
	// peer (jittered ±50%). Default 10 s.
	SyncInterval time.Duration
	// SyncGrace is how long a batch this node passed on by gossip is left
	// to gossip: a sync session on a connection older than that does not
	// send it again to a peer in the namespace's topic, and tells the peer
	// to ask once more after the grace (see recentLog). Default 1 s;
	// negative: sync sends everything the client lacks.
	SyncGrace time.Duration
	// SyncTimeout bounds one sync session. Default 30 s.
	SyncTimeout time.Duration
	// MaxSyncBatches bounds the log batches sent in one session; the client
	// syncs again for the rest. Default 4,096.
	MaxSyncBatches int
	// MaxSyncsPerPeer bounds concurrent sync sessions served to one peer.
	// Default 2.
	MaxSyncsPerPeer int
	// SyncBurst and SyncRate bound sessions served to one peer: a bucket of
	// SyncBurst sessions refilled at SyncRate per second. Defaults 20, 5.
	SyncBurst int
	SyncRate  float64
	// Rand drives sync peer choice and jitter. Default: seeded from the
	// replica id.
	Rand *rand.Rand
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger. Default slog.Default().
	Logger *slog.Logger
	// MeshWatch, given to PubSub as a raw tracer, lets the replicator pull
	// a namespace from each peer new in its mesh (see MeshWatch). Nil: the
	// gap check and periodic sync alone bring what a new mesh peer
	// published before it joined the mesh.
	MeshWatch *MeshWatch
}

func (c Config) withDefaults() (Config, error) {
	if c.Host == nil || c.PubSub == nil || c.Replica == 0 {
		return c, errors.New("gossip: Config needs Host, PubSub and Replica")
	}
	c.Limits = c.Limits.withDefaults()
	if c.CoalesceWindow <= 0 {
		c.CoalesceWindow = 2 * time.Millisecond
	}
	if c.MaxCoalesceWindow <= 0 {
		c.MaxCoalesceWindow = 10 * c.CoalesceWindow
	}
	if c.MaxPublishOps <= 0 {
		c.MaxPublishOps = 512
	}
	if c.MaxPublishBytes <= 0 {
		c.MaxPublishBytes = 1 << 20
	}
	if c.MaxPublishBytes > c.Limits.MaxMessageBytes/2 {
		c.MaxPublishBytes = c.Limits.MaxMessageBytes / 2
	}
	if c.SyncInterval <= 0 {
		c.SyncInterval = 10 * time.Second
	}
	if c.SyncGrace == 0 {
		c.SyncGrace = defaultSyncGrace
	}
	if c.SyncTimeout <= 0 {
		c.SyncTimeout = 30 * time.Second
	}
	if c.MaxSyncBatches <= 0 {
		c.MaxSyncBatches = 4096
	}
	if c.MaxSyncsPerPeer <= 0 {
		c.MaxSyncsPerPeer = 2
	}
	if c.SyncBurst <= 0 {
		c.SyncBurst = 20
	}
	if c.SyncRate <= 0 {
		c.SyncRate = 5
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewPCG(uint64(c.Replica), 0x6d7963656c))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// PubSubOptions returns the gossipsub options replication relies on: no
// pubsub signatures (a message carries its origin's own signature over its
// batches, checked by the topic validator), message ids that hash the
// payload, and queues sized for batched traffic.
func PubSubOptions(lim Limits) []pubsub.Option {
	lim = lim.withDefaults()
	return []pubsub.Option{
		// No pubsub author, sequence number or signature: with an author,
		// pubsub would still send From unsigned, and a relay could set it
		// to an honest peer, which would then never be sent the message and
		// drop it when fetched as "from itself". Without one, pubsub refuses
		// messages that carry any of the three.
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(messageID),
		pubsub.WithMaxMessageSize(lim.MaxMessageBytes + 4096),
		pubsub.WithPeerOutboundQueueSize(1024),
		pubsub.WithValidateQueueSize(1024),
		// Peer exchange is left to the caller (node.Config.PeerExchange).
	}
}

// Replicator replicates joined namespaces over one host.
type Replicator struct {
	cfg   Config
	stats Stats

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool // set by Close under mu: no new goroutines after it
	spaces map[string]*space
	// client side: the sync work queued for each peer, worked through by
	// at most one goroutine per peer (syncWorker)
	syncing map[peer.ID]*syncQueue
	// server side: per-peer admission, and a bound on the state
	// reconciliations served at once (each hashes every key of its
	// namespace under the read lock): after a partition heals, every peer
	// would otherwise reconcile with us at the same moment
	served      map[peer.ID]*admission
	stateServes chan struct{}
	// client side: per-peer session budget (see pace)
	paced map[peer.ID]*admission
	// key signs this replica's batches as they leave (published, or
	// served by sync: signOwnGroup); signer is
	// its peer id. Looked up once: the host's identity does not change.
	key    crypto.PrivKey
	signer []byte
	// signers: the peer ids this node has checked as batch signers;
	// groups: the signed groups it has checked, by gossip or sync
	signers signerCache
	groups  verifiedGroups
	// per peer and namespace: the last sync sessions
	status map[statusKey]*PeerSync
	// unanswered holds the peers whose sync session was abandoned (see
	// heard); unansweredN, its size, keeps the validator's check lock-free
	// while it is empty.
	unanswered  map[peer.ID]struct{}
	unansweredN atomic.Int64
	randMu      sync.Mutex

	kick      chan peer.ID
	meshPulls chan meshPull // from cfg.MeshWatch (see grafted)
	notifiee  *network.NotifyBundle
	closeOnce sync.Once
}

// New starts replication on cfg.Host: the sync protocol handler, a listener
// for new connections, and the background sync loop. Close stops them.
func New(cfg Config) (*Replicator, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Replicator{
		cfg:         cfg,
		ctx:         ctx,
		cancel:      cancel,
		spaces:      make(map[string]*space),
		syncing:     make(map[peer.ID]*syncQueue),
		served:      make(map[peer.ID]*admission),
		stateServes: make(chan struct{}, maxStateServes),
		paced:       make(map[peer.ID]*admission),
		status:      make(map[statusKey]*PeerSync),
		kick:        make(chan peer.ID, 256),
		meshPulls:   make(chan meshPull, 256),
		key:         cfg.Host.Peerstore().PrivKey(cfg.Host.ID()),
		signer:      []byte(cfg.Host.ID()),
	}
	cfg.Host.SetStreamHandler(ProtocolSync, r.serve)
	r.notifiee = &network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		select {
		case r.kick <- c.RemotePeer():
		default: // the periodic sync will get to it
		}
	}}
	cfg.Host.Network().Notify(r.notifiee)
	r.wg.Add(1)
	go r.syncLoop()
	if cfg.MeshWatch != nil {
		cfg.MeshWatch.r.Store(r)
	}
	return r, nil
}

// Stats returns live counters.
func (r *Replicator) Stats() *Stats { return &r.stats }

// Close leaves every namespace and stops every goroutine the replicator
// started. It is safe to call more than once.
func (r *Replicator) Close() error {
	r.closeOnce.Do(func() {
		r.cfg.Host.RemoveStreamHandler(ProtocolSync)
		r.cfg.Host.Network().StopNotify(r.notifiee)
		if r.cfg.MeshWatch != nil {
			r.cfg.MeshWatch.r.CompareAndSwap(r, nil)
		}
		r.cancel()
		r.mu.Lock()
		r.closed = true
		spaces := make([]*space, 0, len(r.spaces))
		for _, s := range r.spaces {
			spaces = append(spaces, s)
		}
		r.mu.Unlock()
		for _, s := range spaces {
			s.close()
		}
		r.wg.Wait()
	})
	return nil
}

// ErrClosed is returned by calls on a closed Replicator.
var ErrClosed = errors.New("gossip: replicator closed")

// Join starts replicating namespace ns held by rep. writers, if not empty,
// is the namespace's writer allowlist: batches from other peers are refused.
//
// Join also starts pulling ns from every peer connected at that moment
// (the namespace's first sync), without waiting for it: a namespace joined
// after its peers connected would otherwise get what they hold only at the
// next periodic sync. WaitFirstSync waits for it.
func (r *Replicator) Join(ns string, rep Replica, writers []peer.ID) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		return ErrClosed
	}
	if _, ok := r.spaces[ns]; ok {
		return fmt.Errorf("gossip: namespace %q already joined", ns)
	}
	s, err := r.newSpace(ns, rep, writers)
	if err != nil {
		return err
	}
	r.spaces[ns] = s
	for _, p := range r.cfg.Host.Network().Peers() {
		if r.queueSync(p, s, false) {
			s.firstPending++
		}
	}
	if s.firstPending == 0 {
		close(s.firstSync)
	}
	return nil
}

// WaitFirstSync waits until the first sync of ns (see Join) has ended with
// every peer it started with — completed, or failed, as it does at once
// with a peer that has not joined ns — or until ctx ends (returning its
// error). It returns nil at once if no peer was connected when ns was
// joined, and ErrClosed once the replicator closes. With a ctx that has
// already ended it only checks: nil if the first sync has ended.
func (r *Replicator) WaitFirstSync(ctx context.Context, ns string) error {
	s := r.space(ns)
	if s == nil {
		return fmt.Errorf("gossip: namespace %q not joined", ns)
	}
	select {
	case <-s.firstSync:
		return nil
	default:
	}
	select {
	case <-s.firstSync:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ctx.Done():
		return ErrClosed
	}
}

// Publish queues a committed local batch of ns for publishing. It never
// blocks; call it from the store's commit callback.
func (r *Replicator) Publish(ns string, b Batch) {
	r.mu.Lock()
	s := r.spaces[ns]
	r.mu.Unlock()
	if s != nil && !r.cfg.DisablePublish {
		s.enqueue(b)
	}
}

func (r *Replicator) space(ns string) *space {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.spaces[ns]
}

func (r *Replicator) spaceList() []*space {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*space, 0, len(r.spaces))
	for _, s := range r.spaces {
		out = append(out, s)
	}
	return out
}

// syncLoop syncs with each newly connected peer, and every SyncInterval
// (jittered) with one random connected peer.
func (r *Replicator) syncLoop() {
	defer r.wg.Done()
	timer := time.NewTimer(r.jitter())
	defer timer.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case p := <-r.kick:
			r.startSync(p, false)
		case m := <-r.meshPulls:
			r.mu.Lock()
			r.queueMeshPull(m)
			r.mu.Unlock()
		case <-timer.C:
			if p, ok := r.randomPeer(); ok {
				r.startSync(p, true)
			}
			timer.Reset(r.jitter())
		}
	}
}

func (r *Replicator) jitter() time.Duration {
	r.randMu.Lock()
	defer r.randMu.Unlock()
	return r.cfg.SyncInterval/2 + time.Duration(r.cfg.Rand.Int64N(int64(r.cfg.SyncInterval)))
}

func (r *Replicator) randomPeer() (peer.ID, bool) {
	peers := r.cfg.Host.Network().Peers()
	if len(peers) == 0 {
		return "", false
	}
	r.randMu.Lock()
	defer r.randMu.Unlock()
	return peers[r.cfg.Rand.IntN(len(peers))], true
}

// startSync syncs every namespace with p in the background, unless such
// a sync with p is already running or queued. A periodic sync may leave
// to gossip what gossip is bringing (Config.SyncGrace); one for a new
// connection may not: what was published before it never reached p.
func (r *Replicator) startSync(p peer.ID, periodic bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queueSync(p, nil, periodic)
}

// syncQueue is the client sync work queued for one peer. One goroutine
// (syncWorker) works through it, so this node runs its background sessions
// with a peer one after another, as the peer's admission limits expect.
type syncQueue struct {
	all        bool     // a sync of every namespace is queued
	periodic   bool     // ... and only a periodic one (see startSync)
	runningAll bool     // a sync of every namespace is running
	runningPer bool     // ... a periodic one
	spaces     []*space // namespaces whose first sync is queued
	meshSpaces []*space // namespaces to pull in full: p is new in their mesh
}

// queueSync queues a sync of s (nil: of every namespace) with p and starts
// p's worker if none runs. It reports whether the work was queued: not
// after Close, and a sync of every namespace is not queued while one is
// queued or running, unless it is a full one and that one periodic. The
// caller holds r.mu.
func (r *Replicator) queueSync(p peer.ID, s *space, periodic bool) bool {
	return r.queueWork(p, func(q *syncQueue) bool {
		switch {
		case s != nil:
			q.spaces = append(q.spaces, s)
		case q.all:
			q.periodic = q.periodic && periodic
		case q.runningAll && (periodic || !q.runningPer):
			return false
		default:
			q.all, q.periodic = true, periodic
		}
		return true
	})
}

// queueWork has add queue work on p's sync queue and starts p's worker if
// none runs; add reports whether it queued anything. Nothing is queued
// after Close. The caller holds r.mu.
func (r *Replicator) queueWork(p peer.ID, add func(*syncQueue) bool) bool {
	if r.closed {
		return false
	}
	q := r.syncing[p]
	if q == nil {
		q = &syncQueue{}
		r.syncing[p] = q
		r.wg.Add(1)
		go r.syncWorker(p, q)
	}
	return add(q)
}

// syncWorker runs the syncs queued for p until none is left: first syncs
// of newly joined namespaces first (a reader may be waiting for them),
// then pulls of namespaces whose mesh p joined (see MeshWatch), then a
// sync of every namespace.
func (r *Replicator) syncWorker(p peer.ID, q *syncQueue) {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		spaces, mesh, all, periodic := q.spaces, q.meshSpaces, q.all, q.periodic
		q.spaces, q.meshSpaces, q.all, q.runningAll, q.runningPer = nil, nil, false, all, all && periodic
		if len(spaces) == 0 && len(mesh) == 0 && !all {
			delete(r.syncing, p)
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		for _, s := range spaces {
			if _, err := r.syncNamespace(r.ctx, p, s, true); err != nil && r.ctx.Err() == nil {
				r.cfg.Logger.Debug("gossip: first sync failed", "peer", p, "err", err)
			}
			r.firstSyncEnded(s)
		}
		for _, s := range mesh {
			// In full: what p held back as "gossip is bringing it" is
			// what gossip did not bring here.
			if _, err := r.syncNamespace(r.ctx, p, s, true); err != nil && r.ctx.Err() == nil {
				r.cfg.Logger.Debug("gossip: mesh pull failed", "peer", p, "ns", s.name, "err", err)
			}
		}
		if all {
			if err := r.syncAll(r.ctx, p, !periodic); err != nil && r.ctx.Err() == nil {
				r.cfg.Logger.Debug("gossip: sync failed", "peer", p, "err", err)
			}
		}
	}
}

// firstSyncEnded counts one peer's first sync of s as ended.
func (r *Replicator) firstSyncEnded(s *space) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.firstPending--; s.firstPending == 0 {
		close(s.firstSync)
	}
}

// SyncWith syncs every joined namespace with p now, as the client: it pulls
// what this replica lacks. Both sides pulling makes them converge.
func (r *Replicator) SyncWith(ctx context.Context, p peer.ID) error {
	return r.syncAll(ctx, p, true)
}

// syncAll syncs every joined namespace with p. Unless full, a server may
// leave batches to gossip; the namespaces where one did are synced once
// more after the grace, all after one wait: what was held back then is
// fresh again under steady writes, and the next periodic sync brings
// whatever gossip did not.
func (r *Replicator) syncAll(ctx context.Context, p peer.ID, full bool) error {
	var errs []error
	var later []*space
	for _, s := range r.spaceList() {
		held, err := r.syncNamespace(ctx, p, s, full)
		if errors.Is(err, errAbandoned) {
			// p did not answer, twice: its other namespaces would wait
			// the same way. The next sync with p tries them.
			return errors.Join(append(errs, err)...)
		}
		if err != nil {
			errs = append(errs, err)
		} else if held && !full { // a full sync asked for everything
			later = append(later, s)
		}
	}
	if len(later) > 0 {
		if err := sleepCtx(ctx, r.cfg.SyncGrace); err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, s := range later {
			r.stats.SyncFollowUps.Add(1)
			if _, err := r.syncNamespace(ctx, p, s, false); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// syncNamespace pulls s from p: client sessions, each taking s's pull turn,
// until the server has nothing more to send. Unless full, the server may
// leave batches to gossip; held reports that it did.
func (r *Replicator) syncNamespace(ctx context.Context, p peer.ID, s *space, full bool) (held bool, err error) {
	// Batches refused for good in this run (forged, from a non-writer) are
	// claimed as seen in its later rounds: otherwise a server holding more
	// of them than one round carries sends the same ones every round, and
	// nothing after them ever arrives. (One ignored as "context ahead" is
	// not: a later round may bring what it saw.) The next run offers them
	// again.
	var refused crdt.Context
	retried := false
	for round := 0; round < 64; round++ { // each round is bounded; "more" asks for another
		if err := r.pace(ctx, p); err != nil {
			return false, fmt.Errorf("namespace %q: %w", s.name, err)
		}
		sessCtx, abandon := context.WithCancelCause(ctx)
		turn := s.pull.take(sessCtx, abandon)
		next, err := r.syncSpace(sessCtx, p, s, turn, &refused, full)
		turn.done()
		if err != nil && errors.Is(context.Cause(sessCtx), errAbandoned) {
			err = errAbandoned // not the reset stream's error
		}
		abandon(nil)
		if errors.Is(err, errAbandoned) {
			r.markUnanswered(p)
			if !retried && ctx.Err() == nil {
				// Once more, with a Hello from when the turn comes back:
				// the peer may only have been slow to answer (its first
				// frame waits for a flush and a log read). Abandoned
				// again, the session ends; the next periodic sync tries
				// again.
				retried = true
				continue
			}
		}
		if errors.Is(err, ErrMalformed) {
			r.stats.RejectMalformed.Add(1) // a server's bad frame
		}
		if err != nil {
			return false, fmt.Errorf("namespace %q: %w", s.name, err)
		}
		if next != syncMore {
			return next == syncLater, nil
		}
	}
	return false, nil
}

// markUnanswered notes that a sync session with p was abandoned: p did not
// answer it at all.
func (r *Replicator) markUnanswered(p peer.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.unanswered[p]; ok || len(r.unanswered) >= maxTrackedPeers {
		return // bounded: the periodic sync still reaches the others
	}
	if r.unanswered == nil {
		r.unanswered = make(map[peer.ID]struct{}) // made on first use
	}
	r.unanswered[p] = struct{}{}
	r.unansweredN.Add(1)
}

// heard notes a gossip message forwarded by p. If a sync session with p
// was abandoned unanswered, p's link works again (a healed blackhole: the
// connection outlived it) and syncs start at once, with fresh Hellos. The
// abandoned sessions would have resumed by themselves, each with a stale
// one; without them a healed node waited for its periodic syncs to pick a
// peer across the cut (in a 30-node simulation of a 15 s blackhole,
// propagation's p99 rose from 17.6–17.8 s to 19.3–19.5 s).
func (r *Replicator) heard(p peer.ID) {
	if r.unansweredN.Load() == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.unanswered[p]; !ok {
		return
	}
	// The others abandoned were most likely cut off with p (one
	// partition): their links may work again too. Syncs with them take
	// the pull turns one after another, each Hello fresh, so the first
	// brings what is missing and the rest little; one that still gets no
	// answer is abandoned again.
	for q := range r.unanswered {
		delete(r.unanswered, q)
		if r.queueSync(q, nil, false) {
			r.stats.SyncPeersHeardAgain.Add(1)
		}
	}
	r.unansweredN.Store(0)
}

// gapGrace is how long a gap in what gossip delivered stays open before
// it is pulled (see gapWatch): SyncGrace, the time a sync server leaves
// to gossip too, or its default when sync leaves nothing to gossip.
func (r *Replicator) gapGrace() time.Duration {
	if r.cfg.SyncGrace > 0 {
		return r.cfg.SyncGrace
	}
	return defaultSyncGrace
}

// pullGap syncs every namespace with p, which may hold batches gossip
// skipped (see gapWatch). It reports false if a sync with p is running
// already, and true if one is queued now or was queued already (that one
// brings the batches too).
func (r *Replicator) pullGap(p peer.ID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.queueSync(p, nil, true) {
		return false
	}
	r.stats.SyncGapPulls.Add(1)
	return true
}

// sleepCtx waits for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pace waits until this node may open another sync session with p: it
// spends sessions with a peer no faster than a server admits them with the
// default budget (SyncBurst at once, SyncRate per second after), mirrored
// from this node's own settings. Without it a node holding many namespaces
// opened a session per namespace back to back and most were refused: 60
// namespaces took 72 s and 4,117 refused sessions to converge after a
// connection (TestManyNamespacesConverge). Real time, not cfg.Now: it is a
// rate, and a test clock may stand still.
func (r *Replicator) pace(ctx context.Context, p peer.ID) error {
	rate, burst := r.cfg.SyncRate, float64(r.cfg.SyncBurst)
	for range 1000 { // each wait refills at least one session: ends in two
		r.mu.Lock()
		now := time.Now()
		b := r.paced[p]
		if b == nil {
			if len(r.paced) >= maxTrackedPeers {
				r.pruneBudgets(r.paced, now)
			}
			b = &admission{tokens: burst, last: now}
			r.paced[p] = b
		}
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
		b.last = now
		if b.tokens >= 1 {
			b.tokens--
			r.mu.Unlock()
			return nil
		}
		wait := time.Duration((1 - b.tokens) / rate * float64(time.Second))
		r.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	return nil
}

// maxTrackedPeers is how many peers the per-peer session budgets and the
// sync status hold before they are pruned: peers come and go, and a node
// that runs for months must not keep every peer it has ever met.
const maxTrackedPeers = 256

// pruneBudgets forgets the session budgets (client pacing or server
// admission) that have refilled and have no session open: a new one is the
// same. The caller holds r.mu.
func (r *Replicator) pruneBudgets(m map[peer.ID]*admission, now time.Time) {
	full := time.Duration(float64(r.cfg.SyncBurst) / r.cfg.SyncRate * float64(time.Second))
	for p, b := range m {
		if b.active == 0 && now.Sub(b.last) >= full {
			delete(m, p)
		}
	}
}

type statusKey struct {
	peer peer.ID
	ns   string
}

// PeerSync is what replication knows of one peer for one namespace.
type PeerSync struct {
	Peer      peer.ID
	Namespace string
	// LastPull is when this node last completed a sync pulling from the
	// peer; LastServed when it last served the peer's pull.
	LastPull, LastServed time.Time
	// WeLacked is how many batches the last pull brought; PeerLacks is how
	// many batches of ours the peer reported missing at that moment (it
	// fetches them with its own pull).
	WeLacked, PeerLacks uint64
	// StateSynced is true if the last pull needed state reconciliation.
	StateSynced bool
	// LastError is the last pull's error, if it failed.
	LastError string
}

func (r *Replicator) noteStatus(p peer.ID, ns string, fn func(*PeerSync)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := statusKey{p, ns}
	st := r.status[k]
	if st == nil {
		if len(r.status) >= maxTrackedPeers*4 {
			r.pruneStatus()
		}
		st = &PeerSync{Peer: p, Namespace: ns}
		r.status[k] = st
	}
	fn(st)
}

// pruneStatus forgets the sync status of peers that are not connected,
// those seen longest ago first, until a quarter of the room is free. The
// status of connected peers stays: it is bounded by the connections times
// the namespaces. The caller holds r.mu.
func (r *Replicator) pruneStatus() {
	type gone struct {
		k    statusKey
		last time.Time
	}
	var old []gone
	for k, st := range r.status {
		if r.cfg.Host.Network().Connectedness(k.peer) != network.Connected {
			old = append(old, gone{k, maxTime(st.LastPull, st.LastServed)})
		}
	}
	slices.SortFunc(old, func(a, b gone) int { return a.last.Compare(b.last) })
	for _, g := range old {
		if len(r.status) < maxTrackedPeers*3 {
			return
		}
		delete(r.status, g.k)
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// PeerStatus returns the sync status of every peer and namespace seen.
func (r *Replicator) PeerStatus() []PeerSync {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]PeerSync, 0, len(r.status))
	for _, st := range r.status {
		out = append(out, *st)
	}
	return out
}
