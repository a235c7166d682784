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
	"github.com/libp2p/go-libp2p/core/crypto"
	lpnet "github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"

	"github.com/mycelnet/mycel/node"
)

// simNamespace is the namespace every simulated node joins and writes.
const simNamespace = "sim"

// maxBootstrap bounds how many earlier nodes each node dials (and keeps
// redialling): a full mesh for small clusters, a random graph for large.
const maxBootstrap = 8

// cluster is the running simulation: the network, the nodes, and one
// watcher per node that records when each write became visible there.
type cluster struct {
	sc      *Scenario
	nw      *network
	regions []int // node → region
	nodes   []*node.Node
	spaces  []*node.Namespace
	boot    [][]peer.ID // node → the peers it bootstraps from
	seen    []*visibility

	progress func(Progress) // optional, called from the sampler
	acked    atomic.Int64   // writes acknowledged so far

	watchCancel context.CancelFunc
	watchWG     sync.WaitGroup
	closeOnce   sync.Once
	closeErr    error
}

// openCluster starts the network and every node, each with its own
// in-memory store and an identity and random source derived from seed, and
// waits until every node is connected to the peers it bootstraps from.
func openCluster(ctx context.Context, sc *Scenario, seed uint64) (_ *cluster, err error) {
	quiet := slog.New(slog.DiscardHandler)
	c := &cluster{sc: sc, nw: newNetwork(sc, seed, quiet), regions: sc.nodeRegions()}
	c.nw.sim.Start()
	var wctx context.Context
	wctx, c.watchCancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			err = errors.Join(err, c.close())
		}
	}()
	topo := rand.New(rand.NewPCG(seed, 0x746f706f))
	var addrs []string
	perRegion := make([]int, len(sc.Regions))
	for i, r := range c.regions {
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
		listen := fmt.Sprintf("/ip4/%s/udp/%d/quic-v1", ua.IP, ua.Port)
		cfg := node.Config{
			Listen:         []string{listen},
			SyncInterval:   sc.SyncInterval,
			DisablePublish: sc.DisablePublish,
		}
		var boot []peer.ID
		for _, j := range bootstrapPeers(topo, i) {
			cfg.Bootstrap = append(cfg.Bootstrap, addrs[j])
			boot = append(boot, c.nodes[j].ID())
		}
		n, err := node.Open(ctx, cfg,
			node.WithDatastore(dssync.MutexWrap(datastore.NewMapDatastore())),
			node.WithIdentity(key),
			node.WithRand(rand.New(rand.NewPCG(seed, uint64(i)+1<<32))),
			node.WithLogger(quiet),
			node.WithHostOptions(
				c.nw.hostOption(r, i, sc.Regions[r].Bandwidth),
				// simnet carries UDP only: QUIC is the one transport. The
				// rest of the host (identify, resource manager, metrics) is
				// the node's own.
				libp2p.Transport(libp2pquic.NewTransport),
			),
		)
		if err != nil {
			return nil, fmt.Errorf("sim: open node %d: %w", i, err)
		}
		c.nodes = append(c.nodes, n)
		c.boot = append(c.boot, boot)
		ns, err := n.Namespace(ctx, simNamespace)
		if err != nil {
			return nil, fmt.Errorf("sim: node %d: %w", i, err)
		}
		c.spaces = append(c.spaces, ns)
		addrs = append(addrs, listen+"/p2p/"+id.String())
		v := &visibility{seen: make(map[string][]time.Time)}
		c.seen = append(c.seen, v)
		events := ns.Watch(wctx, "")
		c.watchWG.Go(func() {
			for ev := range events {
				v.observe(ev)
			}
		})
	}
	if err := c.waitConnected(ctx, time.Minute); err != nil {
		return nil, err
	}
	return c, nil
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
		for i, n := range c.nodes {
			for _, p := range c.boot[i] {
				if n.Host().Network().Connectedness(p) != lpnet.Connected {
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

// distinct returns how many different replica states the nodes hold.
func (c *cluster) distinct() int {
	seen := make(map[[32]byte]bool, len(c.spaces))
	for _, s := range c.spaces {
		d, _ := s.Digest()
		seen[d] = true
	}
	return len(seen)
}

// digestsEqual reports whether every node holds the same replica.
func (c *cluster) digestsEqual() bool {
	first, _ := c.spaces[0].Digest()
	for _, s := range c.spaces[1:] {
		if d, _ := s.Digest(); d != first {
			return false
		}
	}
	return true
}

// close stops every node, then the watchers, then the network. It is safe
// to call more than once.
func (c *cluster) close() error {
	c.closeOnce.Do(func() {
		var errs []error
		for i, n := range c.nodes {
			if err := n.Close(); err != nil {
				errs = append(errs, fmt.Errorf("sim: close node %d: %w", i, err))
			}
		}
		c.watchCancel()
		c.watchWG.Wait()
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
