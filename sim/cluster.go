package sim

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	lpnet "github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"

	"github.com/mycelnet/mycel/gossip"
	"github.com/mycelnet/mycel/node"
)

// simNamespace is the namespace every simulated node joins and writes.
const simNamespace = "sim"

// maxBootstrap bounds how many earlier nodes each node dials (and keeps
// redialling): a full mesh for small clusters, a random graph for large.
const maxBootstrap = 8

// redialBackoff caps each node's bootstrap redial backoff (as in the local
// preset): a healed disconnect or a restarted node is redialled within it.
const redialBackoff = 5 * time.Second

// cluster is the running simulation: the network and the nodes, each of
// which can crash and restart.
type cluster struct {
	sc      *Scenario
	seed    uint64
	nw      *network
	quiet   *slog.Logger
	members []*member
	track   *tracker
	bw      *bandwidth
	ps      *gossipTracer

	progress func(Progress) // optional, called from the sampler
	acked    atomic.Int64   // ops acknowledged so far
	// beforeOp, if set (tests), is called by a node's client before each
	// of its ops.
	beforeOp func(ctx context.Context, node int)

	// cutMode is the mode of the partition standing ("" if none) and
	// cutGroups its node groups; only the driver goroutine touches them.
	cutMode   string
	cutGroups [][]int

	// mu guards the members' node, space and up against the sampler.
	mu        sync.RWMutex
	liveCount atomic.Int64
	// repl sums the replication counters of every node incarnation that
	// has stopped.
	repl Replication

	closeOnce sync.Once
	closeErr  error
}

// member is one simulated node across its crashes and restarts.
type member struct {
	index, region int
	name          string
	key           crypto.PrivKey
	id            peer.ID
	listen        string
	boot          []string  // bootstrap multiaddrs
	bootIDs       []peer.ID // and their peers
	clock         *skewClock

	// Only the driver goroutine changes these, while no op is in flight
	// (a fault waits for every op dispatched before it); the nodes'
	// clients read them for the ops they are handed, the checkers after
	// the run.
	ds          datastore.Batching
	node        *node.Node
	space       *node.Namespace
	up          bool
	diskLost    bool // crashed without its disk, not yet restarted
	incarnation uint64
	watchCancel context.CancelFunc
	watchDone   chan struct{}
}

// skewClock is a node's clock: the run's clock plus an offset that a skew
// fault sets.
type skewClock struct{ offset atomic.Int64 }

func (c *skewClock) now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// openCluster starts the network and every node, each with its own
// in-memory store and an identity and random source derived from seed, and
// waits until every node is connected to the peers it bootstraps from.
func openCluster(ctx context.Context, sc *Scenario, seed uint64) (_ *cluster, err error) {
	quiet := slog.New(slog.DiscardHandler)
	c := &cluster{sc: sc, seed: seed, nw: newNetwork(sc, seed, quiet), quiet: quiet, bw: newBandwidth(), ps: &gossipTracer{}}
	c.nw.sim.Start()
	defer func() {
		if err != nil {
			err = errors.Join(err, c.close())
		}
	}()
	regions := sc.nodeRegions()
	names := sc.nodeNames()
	c.track = newTracker(len(regions), regions)
	topo := rand.New(rand.NewPCG(seed, 0x746f706f))
	perRegion := make([]int, len(sc.Regions))
	for i, r := range regions {
		key, err := nodeKey(seed, i)
		if err != nil {
			return nil, err
		}
		id, err := peer.IDFromPrivateKey(key)
		if err != nil {
			return nil, err
		}
		ua := regionAddr(r, perRegion[r])
		perRegion[r]++
		m := &member{
			index: i, region: r, name: names[i], key: key, id: id,
			listen: fmt.Sprintf("/ip4/%s/udp/%d/quic-v1", ua.IP, ua.Port),
			clock:  &skewClock{},
			ds:     dssync.MutexWrap(datastore.NewMapDatastore()),
		}
		for _, j := range bootstrapPeers(topo, i) {
			m.boot = append(m.boot, c.members[j].listen+"/p2p/"+c.members[j].id.String())
			m.bootIDs = append(m.bootIDs, c.members[j].id)
		}
		c.members = append(c.members, m)
		if err := c.start(ctx, m); err != nil {
			return nil, err
		}
	}
	if err := c.waitConnected(ctx, time.Minute); err != nil {
		return nil, err
	}
	return c, nil
}

// start opens m's node on its datastore and watches its namespace.
func (c *cluster) start(ctx context.Context, m *member) error {
	cfg := node.Config{
		Listen:           []string{m.listen},
		Bootstrap:        m.boot,
		SyncInterval:     c.sc.SyncInterval,
		DisablePublish:   c.sc.DisablePublish,
		MeshDegree:       c.sc.MeshDegree,
		MeshDegreeLow:    c.sc.MeshDegreeLow,
		FloodPublish:     c.sc.FloodPublish,
		PeerExchange:     c.sc.PeerExchange,
		MaxRedialBackoff: redialBackoff,
	}
	inc := m.incarnation
	// The first start's key is new; later starts reuse it, possibly on a
	// wiped store, as a real node keeping its key would.
	identity := node.WithIdentity(m.key)
	if inc == 0 {
		identity = node.WithNewIdentity(m.key)
	}
	n, err := node.Open(ctx, cfg,
		node.WithDatastore(m.ds),
		identity,
		node.WithClock(m.clock.now),
		node.WithRand(rand.New(rand.NewPCG(c.seed, uint64(m.index)+1<<32+inc<<40))),
		node.WithLogger(c.quiet),
		node.WithPubSubOptions(pubsub.WithRawTracer(c.ps)),
		node.WithHostOptions(
			c.nw.hostOption(m.region, m.index, c.sc.Regions[m.region].Bandwidth, inc),
			// simnet carries UDP only: QUIC is the one transport. The
			// rest of the host (identify, resource manager, metrics) is
			// the node's own.
			libp2p.Transport(libp2pquic.NewTransport),
			libp2p.BandwidthReporter(c.bw),
		),
	)
	if err != nil {
		return fmt.Errorf("sim: open node %s: %w", m.name, err)
	}
	if c.sc.DisableSync {
		n.Host().RemoveStreamHandler(gossip.ProtocolSync)
	}
	ns, err := n.Namespace(ctx, simNamespace)
	if err != nil {
		return errors.Join(fmt.Errorf("sim: node %s: %w", m.name, err), n.Close())
	}
	c.mu.Lock()
	m.node, m.space, m.up, m.diskLost = n, ns, true, false
	c.mu.Unlock()
	c.liveCount.Add(1)
	m.incarnation++
	wctx, cancel := context.WithCancel(context.Background())
	events := ns.Watch(wctx, "")
	m.watchCancel, m.watchDone = cancel, make(chan struct{})
	c.track.attach(m.index, ns)
	go func() {
		defer close(m.watchDone)
		for ev := range events {
			c.track.observe(m.index, ev.Key)
		}
	}()
	return nil
}

// stop closes m's node and its watcher.
func (c *cluster) stop(m *member) error {
	if !m.up {
		return nil
	}
	c.mu.Lock()
	m.up = false
	c.mu.Unlock()
	c.liveCount.Add(-1)
	c.track.detach(m.index)
	err := m.node.Close()
	m.watchCancel()
	<-m.watchDone
	c.repl.add(m.node.Stats())
	return err
}

// crash stops node n; unless keepDisk, its store is replaced by an empty
// one for the restart (the identity stays).
func (c *cluster) crash(n int, keepDisk bool) error {
	m := c.members[n]
	// A crash is abrupt: the connections go first (their streams reset),
	// so nothing in the node waits on a peer; then the node closes. (Close
	// alone waits up to the sync timeout for a session with an unreachable
	// peer.)
	if m.up {
		_ = m.node.Host().Network().Close()
	}
	err := c.stop(m)
	if !keepDisk {
		m.ds = dssync.MutexWrap(datastore.NewMapDatastore())
		m.diskLost = true
		c.track.wipe(n, time.Now())
	} else if ferr := node.ForgetCleanClose(context.Background(), m.ds); err == nil {
		// The node was closed, but a crash is not a clean close: the
		// restart must take the store's crash path.
		err = ferr
	}
	return err
}

// restart starts crashed node n again, at the same address, and applies
// the disconnect partition standing to it.
func (c *cluster) restart(ctx context.Context, n int) error {
	m := c.members[n]
	if m.up {
		return nil
	}
	if err := c.start(ctx, m); err != nil {
		return err
	}
	if c.cutMode == Disconnect {
		c.block(c.cutGroups, true)
	}
	return nil
}

// bootstrapPeers picks which earlier nodes node i dials: all of them up to
// maxBootstrap, else a seeded random choice.
func bootstrapPeers(rng *rand.Rand, i int) []int {
	if i <= maxBootstrap {
		out := make([]int, i)
		for j := range out {
			out[j] = j
		}
		return out
	}
	return rng.Perm(i)[:maxBootstrap]
}

// nodeKey derives node i's Ed25519 identity from the seed, so peer ids,
// and with them gossipsub's choices, repeat with the seed.
func nodeKey(seed uint64, i int) (crypto.PrivKey, error) {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[0:], seed)
	binary.LittleEndian.PutUint64(s[8:], uint64(i))
	copy(s[16:], "mycel-sim-ident")
	k, _, err := crypto.GenerateEd25519Key(rand.NewChaCha8(s))
	return k, err
}

// waitConnected waits until every node is connected to its bootstrap peers.
func (c *cluster) waitConnected(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		missing := 0
		for _, m := range c.members {
			for _, p := range m.bootIDs {
				if m.node.Host().Network().Connectedness(p) != lpnet.Connected {
					missing++
				}
			}
		}
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sim: %d bootstrap connections still down after %v", missing, limit)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// live returns the members whose node runs.
func (c *cluster) live() []*member {
	var out []*member
	for _, m := range c.members {
		if m.up {
			out = append(out, m)
		}
	}
	return out
}

// distinct returns how many different replica states the live nodes hold.
func (c *cluster) distinct() int {
	seen := make(map[[32]byte]bool, len(c.members))
	for _, m := range c.live() {
		d, _ := m.space.Digest()
		seen[d] = true
	}
	return len(seen)
}

// liveSpaces returns each node's namespace, nil for a crashed node.
func (c *cluster) liveSpaces() []*node.Namespace {
	out := make([]*node.Namespace, len(c.members))
	for i, m := range c.members {
		if m.up {
			out[i] = m.space
		}
	}
	return out
}

// distinctShared is distinct for goroutines other than the driver.
func (c *cluster) distinctShared() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.distinct()
}

// digestsEqual reports whether every live node holds the same replica.
func (c *cluster) digestsEqual() bool { return c.distinct() <= 1 }

// block makes every node of each group block (on) or unblock every node
// of the other groups: the gaters close the connections and refuse
// redials both ways. Blocking closes the pair's connection, and closing a
// QUIC connection waits for its loop to end: one after another, the 2,448
// Block calls of the 100-node scenario's disconnect took 5 s of real time,
// during which the workload stood still. So blockWorkers goroutines share
// them (0.9 s), and block returns when all are done. Unblocking only
// clears the gaters, in line.
func (c *cluster) block(groups [][]int, on bool) {
	type pair struct {
		m    *member
		peer peer.ID
	}
	pairs := make(chan pair)
	var wg sync.WaitGroup
	if on {
		for range blockWorkers {
			wg.Go(func() {
				for p := range pairs {
					p.m.node.Block(p.peer)
				}
			})
		}
	}
	for g, ns := range groups {
		for _, a := range ns {
			ma := c.members[a]
			if !ma.up {
				continue
			}
			for h, others := range groups {
				if g == h {
					continue
				}
				for _, b := range others {
					if on {
						pairs <- pair{ma, c.members[b].id}
					} else {
						ma.node.Unblock(c.members[b].id)
					}
				}
			}
		}
	}
	close(pairs)
	wg.Wait()
}

// blockWorkers bounds the goroutines that apply a disconnect partition:
// enough that the closes overlap, few enough for a 1,000-node split
// (250,000 pairs and more).
const blockWorkers = 256

// close stops every node, then the network. It is safe to call more than
// once.
func (c *cluster) close() error {
	c.closeOnce.Do(func() {
		var errs []error
		// The swarms first: a node closing while its peers still run
		// would keep them busy, and one closing after its peers would wait
		// on sync sessions with them (see crash).
		for _, m := range c.members {
			if m.up {
				_ = m.node.Host().Network().Close()
			}
		}
		for _, m := range c.members {
			if err := c.stop(m); err != nil {
				errs = append(errs, fmt.Errorf("sim: close node %s: %w", m.name, err))
			}
		}
		c.nw.sim.Close()
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
