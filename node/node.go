package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	circuitproto "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	"github.com/multiformats/go-multiaddr"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/gossip"
	"github.com/mycelnet/mycel/store"
)

// Node is one Mycel replica: a libp2p host, a store and replication.
type Node struct {
	cfg     Config
	opts    options
	log     *slog.Logger
	replica crdt.ReplicaID
	// identityReused: the key existed before this open (see WithIdentity).
	identityReused bool
	// storeRand draws the store's counter floors: crypto/rand unless a
	// random source was injected.
	storeRand func() uint64
	// knownPeers is the known-peers record as stored (see rememberPeers);
	// used by its saver goroutine, then by Close.
	knownPeers []byte

	host host.Host
	// relayHost publishes host to AutoRelay's goroutine (relayCandidates),
	// which may start before openHost has stored it; relayReady is closed
	// once openHost has stored it, or failed to make it.
	relayHost  atomic.Pointer[host.Host]
	relayReady chan struct{}
	dht        *dht.IpfsDHT
	gater      *Gater
	ps         *pubsub.PubSub
	mesh       *gossip.MeshWatch // gossipsub's grafts, for rep
	// meshParams are the gossipsub parameters the node runs with.
	meshParams pubsub.GossipSubParams
	rep        *gossip.Replicator
	// repReady publishes rep to the store's commit goroutine.
	repReady atomic.Pointer[gossip.Replicator]
	// unsynced holds local batches committed without a sync (NoSync)
	// until the store reports them durable: only then are they published
	// (see store.Options.OnSynced)
	unsynced unsyncedBatches
	st       *store.Store
	mdns     mdns.Service

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	spaces   map[string]*Namespace
	watchers *watchHub
	lag      lagTracker

	closeOnce sync.Once
	closeErr  error
}

// Open starts a node: identity, store, libp2p host, gossipsub, replication,
// discovery. Close stops all of it.
func Open(ctx context.Context, cfg Config, opts ...Option) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	n := &Node{cfg: cfg, opts: o, log: o.logger, spaces: make(map[string]*Namespace), watchers: newWatchHub()}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if err := n.open(ctx); err != nil {
		_ = n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) open(ctx context.Context) error {
	key, keyNew, err := n.identity()
	if err != nil {
		return err
	}
	// A key that existed before this open may have written on a store
	// that is gone; only a key made now (or declared new) cannot have.
	n.identityReused = !keyNew
	pid, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return err
	}
	// Receivers check a batch's signature with the key its signer's peer
	// id holds; ids of RSA and ECDSA keys hold only a hash of the key, so
	// no peer could check this node's batches, and its writes would never
	// replicate.
	if _, err := pid.ExtractPublicKey(); err != nil {
		return fmt.Errorf("%w: identity key of type %v: its peer id does not hold the public key peers need to check its signatures; use Ed25519 (or secp256k1)", ErrConfig, key.Type())
	}
	n.replica = crdt.DeriveReplicaID([]byte(pid))
	if n.opts.rand != nil {
		n.storeRand = rand.New(rand.NewPCG(n.opts.rand.Uint64(), n.opts.rand.Uint64())).Uint64
	}
	if o := n.opts; o.rand == nil {
		n.opts.rand = rand.New(rand.NewPCG(uint64(n.replica), uint64(o.now().UnixNano())))
	}
	if err := n.openStore(ctx); err != nil {
		return err
	}
	if err := n.checkFingerprint(ctx); err != nil {
		return err
	}
	if err := n.openHost(key); err != nil {
		return err
	}
	lim := gossip.Limits{Delta: n.st.Limits()}
	n.mesh = gossip.NewMeshWatch()
	n.meshParams = meshParams(n.cfg.MeshDegree, n.cfg.MeshDegreeLow)
	n.ps, err = pubsub.NewGossipSub(n.ctx, n.host,
		append(append(gossip.PubSubOptions(lim),
			pubsub.WithRawTracer(n.mesh),
			pubsub.WithGossipSubParams(n.meshParams),
			pubsub.WithFloodPublish(n.cfg.FloodPublish),
			pubsub.WithPeerExchange(n.cfg.PeerExchange)), n.opts.psOpts...)...)
	if err != nil {
		return fmt.Errorf("node: gossipsub: %w", err)
	}
	n.rep, err = gossip.New(gossip.Config{
		Host: n.host, PubSub: n.ps, Replica: n.replica, Limits: lim,
		CoalesceWindow: n.cfg.CoalesceWindow, DisablePublish: n.cfg.DisablePublish,
		SyncInterval: n.cfg.SyncInterval, Now: n.opts.now, Logger: n.log,
		MeshWatch: n.mesh,
		// Its own source, derived from ours: the two are used under
		// different locks.
		Rand: rand.New(rand.NewPCG(n.opts.rand.Uint64(), n.opts.rand.Uint64())),
	})
	if err != nil {
		return err
	}
	n.repReady.Store(n.rep)
	for _, name := range n.st.Namespaces() {
		if _, err := n.Namespace(ctx, name); err != nil {
			return err
		}
	}
	if n.cfg.MDNS {
		n.mdns = mdns.NewMdnsService(n.host, "mycel", mdnsNotifee{n})
		if err := n.mdns.Start(); err != nil {
			return fmt.Errorf("node: mdns: %w", err)
		}
	}
	n.keepBootstrapConnected()
	if n.cfg.ForgetPeers {
		n.forgetPeers(ctx)
	} else {
		n.rememberPeers(ctx)
	}
	if n.cfg.DHT {
		if err := n.startDHT(ctx); err != nil {
			return err
		}
	}
	return nil
}

// identity loads the node key from DataDir (creating it, mode 0600), or
// takes the injected one, or makes an ephemeral one. keyNew says the key was
// made now (or declared new): no store can have used it before.
func (n *Node) identity() (key crypto.PrivKey, keyNew bool, err error) {
	if n.opts.identity != nil {
		return n.opts.identity, n.opts.identityNew, nil
	}
	if n.cfg.DataDir == "" {
		k, _, err := crypto.GenerateEd25519Key(nil)
		return k, true, err
	}
	if err := os.MkdirAll(n.cfg.DataDir, 0o700); err != nil {
		return nil, false, fmt.Errorf("node: data dir: %w", err)
	}
	path := filepath.Join(n.cfg.DataDir, "identity.key")
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := crypto.UnmarshalPrivateKey(b)
		if err != nil {
			return nil, false, fmt.Errorf("node: identity key %s is corrupt: %w", path, err)
		}
		return k, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("node: read identity: %w", err)
	}
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, false, err
	}
	b, err = crypto.MarshalPrivateKey(k)
	if err != nil {
		return nil, false, err
	}
	// Durable before the store records this replica as its owner: a key
	// lost to a power cut would leave a store no new key may open.
	created, err := createFileSynced(path, b, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("node: write identity: %w", err)
	}
	if !created {
		// Another process starting on this directory made its key
		// first: that one is the identity (and that process holds, or
		// will hold, the store).
		if b, err = os.ReadFile(path); err != nil {
			return nil, false, fmt.Errorf("node: read identity: %w", err)
		}
		if k, err = crypto.UnmarshalPrivateKey(b); err != nil {
			return nil, false, fmt.Errorf("node: identity key %s is corrupt: %w", path, err)
		}
		return k, false, nil
	}
	return k, true, nil
}

func (n *Node) openStore(ctx context.Context) error {
	so := store.Options{
		Replica: n.replica, Limits: n.cfg.Limits, NoSync: n.cfg.NoSync, Retention: n.cfg.Retention,
		MinFreeBytes:  n.cfg.MinFreeBytes,
		MaxClockDrift: n.cfg.MaxClockDrift, Now: n.opts.now, OnCommit: n.onCommit, OnSynced: n.onSynced, Logger: n.log,
		IdentityReused: n.identityReused, Rand: n.storeRand,
	}
	var err error
	switch {
	case n.opts.datastore != nil:
		n.st, err = store.Open(ctx, n.opts.datastore, so)
	case n.cfg.DataDir != "":
		n.st, err = store.OpenPebble(ctx, filepath.Join(n.cfg.DataDir, "store"), so)
	default:
		n.st, err = store.Open(ctx, dssync.MutexWrap(ds.NewMapDatastore()), so)
	}
	return err
}

func (n *Node) openHost(key crypto.PrivKey) error {
	listen := n.cfg.Listen
	if n.cfg.PSK != nil {
		var tcpOnly []string
		for _, a := range listen {
			if ma, _ := multiaddr.NewMultiaddr(a); ma != nil {
				if _, err := ma.ValueForProtocol(multiaddr.P_QUIC_V1); err == nil {
					n.log.Warn("node: private network: QUIC cannot run with a pre-shared key; not listening on it", "addr", a)
					continue
				}
			}
			tcpOnly = append(tcpOnly, a)
		}
		if len(listen) > 0 && len(tcpOnly) == 0 {
			return fmt.Errorf("%w: private network: every listen address is QUIC, which cannot run with a pre-shared key; add a TCP one", ErrConfig)
		}
		listen = tcpOnly
	}
	// No listen address means a node that only dials, never libp2p's
	// default of every interface and transport.
	listenOpt := libp2p.ListenAddrStrings(listen...)
	if len(listen) == 0 {
		n.log.Info("node: no listen address: this node only dials out")
		listenOpt = libp2p.NoListenAddrs
	}
	cm, err := connmgr.NewConnManager(n.cfg.ConnLow, n.cfg.ConnHigh, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return err
	}
	n.gater = newGater(n.cfg.AllowPeers)
	hopts := []libp2p.Option{
		libp2p.Identity(key),
		listenOpt,
		libp2p.ConnectionManager(cm),
		libp2p.ConnectionGater(n.gater),
		libp2p.UserAgent("mycel"),
	}
	if n.cfg.PSK != nil {
		hopts = append(hopts, libp2p.PrivateNetwork(pnet.PSK(n.cfg.PSK)))
	}
	if n.cfg.NAT {
		if !n.opts.noPortMap {
			hopts = append(hopts, libp2p.NATPortMap())
		}
		if !n.opts.noNATService {
			hopts = append(hopts, libp2p.EnableNATService())
		}
		hopts = append(hopts, libp2p.EnableHolePunching(), libp2p.EnableRelay(),
			// A node found publicly reachable relays for its peers (with
			// the relay's default limits), and one behind a NAT reserves a
			// slot with such a peer, so that others can reach it and hole
			// punching has a relayed connection to start from. One
			// candidate is enough: a small cluster may have one public node.
			libp2p.EnableRelayService(),
			libp2p.EnableAutoRelayWithPeerSource(n.relayCandidates, autorelay.WithMinCandidates(1)))
	}
	hopts = append(hopts, n.opts.hostOpts...)
	n.relayReady = make(chan struct{})
	defer close(n.relayReady)
	n.host, err = libp2p.New(hopts...)
	if err != nil {
		// libp2p does not close the connection manager on every failure
		// path, and it runs a goroutine.
		_ = cm.Close()
		return fmt.Errorf("node: libp2p host: %w", err)
	}
	n.relayHost.Store(&n.host)
	return nil
}

// relayCandidates is AutoRelay's source of relays (NAT on): the peers this
// node is connected to that offer a circuit relay v2, those connected now
// and then each one identified later, until num are sent or AutoRelay
// cancels ctx. Public Mycel nodes offer a relay, so a node behind a NAT
// needs no list of relays: its bootstrap peers serve.
//
// AutoRelay may ask while libp2p.New is still making the host (a node
// known to be private from the start, e.g. ForceReachabilityPrivate):
// the answer then waits for the host. An empty answer would do no good,
// as AutoRelay asks its source again only after its minimum interval,
// 30 s, and the node would have no relayed address until then.
func (n *Node) relayCandidates(ctx context.Context, num int) <-chan peer.AddrInfo {
	out := make(chan peer.AddrInfo)
	go func() {
		defer close(out)
		select {
		case <-n.relayReady:
		case <-ctx.Done():
			return
		}
		hp := n.relayHost.Load()
		if hp == nil {
			return // no host was made
		}
		h := *hp
		// Subscribed before the peers are listed: none identified in
		// between is missed.
		sub, err := h.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
		if err != nil {
			return
		}
		defer sub.Close()
		sent := 0
		offer := func(p peer.ID) (more bool) {
			if hop, _ := h.Peerstore().SupportsProtocols(p, circuitproto.ProtoIDv2Hop); len(hop) == 0 {
				return true
			}
			select {
			case out <- peer.AddrInfo{ID: p, Addrs: h.Peerstore().Addrs(p)}:
				sent++
				return sent < num
			case <-ctx.Done():
				return false
			}
		}
		for _, p := range h.Network().Peers() {
			if !offer(p) {
				return
			}
		}
		for {
			select {
			case e, ok := <-sub.Out():
				if !ok || !offer(e.(event.EvtPeerIdentificationCompleted).Peer) {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// onCommit receives every batch the store commits: local ones are
// published, and watchers hear of every change.
func (n *Node) onCommit(c store.Commit) {
	// The store commits (skip announcements) before replication starts:
	// those batches reach peers through sync.
	if rep := n.repReady.Load(); c.Local && rep != nil {
		n.unsynced.hold(c, func(c store.Commit) { publishCommit(rep, c) })
	}
	n.lag.note(c, n.opts.now())
	n.watchers.publish(c, func(key string) crdt.Value {
		ns, err := n.st.Namespace(n.ctx, c.Namespace)
		if err != nil {
			return crdt.Value{}
		}
		v, _ := ns.Get(key)
		return v
	})
}

// onSynced publishes the local batches the store now reports durable.
func (n *Node) onSynced(upTo uint64) {
	rep := n.repReady.Load()
	n.unsynced.release(upTo, func(c store.Commit) {
		if rep != nil {
			publishCommit(rep, c)
		}
	})
}

func publishCommit(rep *gossip.Replicator, c store.Commit) {
	rep.Publish(c.Namespace, gossip.Batch{Origin: c.Origin, Seq: c.Seq, Delta: c.Delta, Encoded: c.Encoded})
}

// unsyncedBatches holds local commits until they are durable. A NoSync
// batch published before its sync and then lost in a crash stayed with
// the peers that had it, together with its removal of what it overwrote,
// while its origin no longer had it: the restart's skip announcement then
// removed its values everywhere, and what it overwrote was gone too. A
// lost put acted as a delete of the key, and a lost counter add erased
// every earlier add of that replica (found by review).
//
// Batches are published in commit order, under the lock: receivers refuse
// a message whose batches' numbers go back, and the coalescer joins what
// is queued into one message (found by review: a held batch released by
// the flusher could be published after a newer one the sync loop
// reported synced meanwhile).
type unsyncedBatches struct {
	mu     sync.Mutex
	synced uint64 // highest mark the store reported durable
	held   []store.Commit
}

// hold publishes c, after every earlier held commit, if it is durable (a
// synced commit makes every earlier one durable too); otherwise it keeps
// c until release covers it.
func (u *unsyncedBatches) hold(c store.Commit, publish func(store.Commit)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if c.Synced {
		u.synced = max(u.synced, c.Report)
	}
	if c.Report > u.synced {
		u.held = append(u.held, c)
		return
	}
	u.releaseLocked(publish)
	publish(c)
}

// release publishes, in commit order, the held commits reported up to
// upTo.
func (u *unsyncedBatches) release(upTo uint64, publish func(store.Commit)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.synced = max(u.synced, upTo)
	u.releaseLocked(publish)
}

func (u *unsyncedBatches) releaseLocked(publish func(store.Commit)) {
	i := 0
	for i < len(u.held) && u.held[i].Report <= u.synced {
		publish(u.held[i])
		i++
	}
	if i == 0 {
		return
	}
	n := copy(u.held, u.held[i:])
	clear(u.held[n:]) // release the deltas, not only the slots
	u.held = u.held[:n]
	if n == 0 && cap(u.held) > 1024 {
		u.held = nil // a burst does not keep its peak
	}
}

func (n *Node) randInt64(max int64) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.opts.rand.Int64N(max)
}

type mdnsNotifee struct{ n *Node }

func (m mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == m.n.host.ID() {
		return
	}
	ctx, cancel := context.WithTimeout(m.n.ctx, 10*time.Second)
	defer cancel()
	_ = m.n.host.Connect(ctx, ai)
}

// ID returns the node's peer id.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Err returns what failed the node's store — a write or sync the disk
// refused, or corruption found on it — or nil while it is sound. A node
// whose store failed refuses writes, local and remote (store.ErrFailed);
// it needs reopening, and if the store is corrupt, its data directory
// restored or cleared first. The daemon exits on it.
func (n *Node) Err() error { return n.st.Err() }

// Replica returns the node's replica id.
func (n *Node) Replica() crdt.ReplicaID { return n.replica }

// Addrs returns the node's listen addresses with its /p2p/ id appended:
// each can be given to another node as a bootstrap address.
func (n *Node) Addrs() []string {
	var out []string
	for _, a := range n.host.Addrs() {
		out = append(out, a.String()+"/p2p/"+n.host.ID().String())
	}
	return out
}

// Host returns the libp2p host (for tests and the simulator).
func (n *Node) Host() host.Host { return n.host }

// Gater returns the connection gater, which can block peers at run time.
func (n *Node) Gater() *Gater { return n.gater }

// Stats returns replication counters.
func (n *Node) Stats() *gossip.Stats { return n.rep.Stats() }

// Connect dials a peer by multiaddr (with /p2p/<id>).
func (n *Node) Connect(ctx context.Context, addr string) error {
	ai, err := peer.AddrInfoFromString(addr)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return n.host.Connect(ctx, *ai)
}

// SyncWith runs a sync of every namespace with p now.
func (n *Node) SyncWith(ctx context.Context, p peer.ID) error { return n.rep.SyncWith(ctx, p) }

// Close syncs the store, stops replication, discovery and the host, then
// closes the store. It is safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.st != nil {
			// Acknowledged writes first (NoSync ones are not yet
			// durable): tearing down the network can take longer than
			// a shutdown deadline allows.
			// A failure is the store's, reported again by its Close.
			_ = n.st.Flush(context.Background())
		}
		if n.mdns != nil {
			errs = append(errs, n.mdns.Close())
		}
		if n.rep != nil {
			errs = append(errs, n.rep.Close())
		}
		n.watchers.close()
		n.cancel()
		n.wg.Wait()
		if n.host != nil && n.rep != nil && !n.cfg.ForgetPeers {
			// The peers of a clean shutdown, for the next start; the
			// saver may not have run since the last change.
			n.saveKnownPeers(context.Background())
		}
		if n.dht != nil {
			errs = append(errs, n.dht.Close())
		}
		if n.host != nil {
			errs = append(errs, n.host.Close())
		}
		if n.st != nil {
			errs = append(errs, n.st.Close())
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// checkFingerprint records a fingerprint of the settings that shape stored
// and replicated data (limits, private network, writer allowlists) in the
// store, and warns when a restart changes them.
func (n *Node) checkFingerprint(ctx context.Context) error {
	h := sha256.New()
	lim := n.st.Limits()
	fmt.Fprintf(h, "limits %d %d %d %d %d\n", lim.MaxKeyBytes, lim.MaxValueBytes, lim.MaxDepth, lim.MaxElements, lim.MaxBytes)
	fmt.Fprintf(h, "psk %x\n", sha256.Sum256(n.cfg.PSK))
	names := make([]string, 0, len(n.cfg.Writers))
	for ns := range n.cfg.Writers {
		names = append(names, ns)
	}
	sort.Strings(names)
	for _, ns := range names {
		fmt.Fprintf(h, "writers %q %v\n", ns, n.cfg.Writers[ns])
	}
	fp := h.Sum(nil)
	old, ok, err := n.st.GetMeta(ctx, "config-fingerprint")
	if err != nil {
		return err
	}
	if ok && !bytes.Equal(old, fp) {
		n.log.Warn("node: limits, private network or writer allowlists changed since the last start")
	}
	if !ok || !bytes.Equal(old, fp) {
		return n.st.PutMeta(ctx, "config-fingerprint", fp)
	}
	return nil
}

// createExclusive writes b to path, which must not exist, and syncs it.
func createExclusive(path string, b []byte, perm os.FileMode) (created bool, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, os.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return false, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return false, err
	}
	return true, f.Close()
}

// createFileSynced creates path holding b, durably, unless path exists:
// then it writes nothing and reports created false. The bytes go to a synced
// temporary file that is linked to path (a link never replaces a file), so
// two processes creating the same file at once cannot both succeed, and a
// reader never sees a partly written one.
func createFileSynced(path string, b []byte, perm os.FileMode) (created bool, err error) {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return false, err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return false, err
	}
	if err := f.Chmod(perm); err != nil && runtime.GOOS != "windows" {
		f.Close()
		return false, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return false, err
	}
	if err := f.Close(); err != nil {
		return false, err
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return false, nil
		}
		// A file system without hard links (FAT, some network and FUSE
		// mounts): create the file exclusively instead, giving up only
		// the guarantee that a crash never leaves it partly written.
		return createExclusive(path, b, perm)
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return false, err
	}
	defer dir.Close()
	if err := dir.Sync(); err != nil && runtime.GOOS != "windows" {
		return false, err
	}
	return true, nil
}
