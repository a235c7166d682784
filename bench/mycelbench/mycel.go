// Package mycelbench plugs Mycel into the bench harness: each benchmark
// node is a real node.Node with a libp2p host on 127.0.0.1, its own store
// (in memory, or Pebble in a temp dir) and a bandwidth reporter. It owns
// nothing but that wiring; the workloads and figures are package bench's.
package mycelbench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"

	"github.com/mycelnet/mycel/bench"
	"github.com/mycelnet/mycel/gossip"
	"github.com/mycelnet/mycel/node"
)

// namespace is the namespace every benchmark node writes.
const namespace = "bench"

// System is Mycel as a bench.System. The zero value uses each node's
// default configuration (DefaultLocalConfig) apart from listen address and
// store.
type System struct {
	// MeshDegree, if set, is every node's Config.MeshDegree; results then
	// name it ("mycel/mesh-degree=2").
	MeshDegree int
	// MeshDegreeLow, if set, is every node's Config.MeshDegreeLow
	// (gossipsub's Dlo); results then name it ("mycel/mesh-degree=2,dlo=2").
	MeshDegreeLow int
	// FloodPublish, if set, is every node's Config.FloodPublish; results
	// then name it ("mycel/mesh-degree=2,flood").
	FloodPublish bool
	// Configure, if set, changes each node's configuration before it opens.
	Configure func(i int, cfg *node.Config)
}

// Name implements bench.System.
func (s System) Name() string {
	var knobs []string
	if s.MeshDegree != 0 {
		knobs = append(knobs, fmt.Sprintf("mesh-degree=%d", s.MeshDegree))
	}
	if s.MeshDegreeLow != 0 {
		knobs = append(knobs, fmt.Sprintf("dlo=%d", s.MeshDegreeLow))
	}
	if s.FloodPublish {
		knobs = append(knobs, "flood")
	}
	if len(knobs) == 0 {
		return "mycel"
	}
	return "mycel/" + strings.Join(knobs, ",")
}

// Start implements bench.System.
func (s System) Start(ctx context.Context, p bench.Params, hooks bench.Hooks) (bench.Cluster, error) {
	dir, err := os.MkdirTemp("", "mycel-bench-")
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	c := &cluster{sys: s, p: p, hooks: hooks, dir: dir, watchCtx: wctx, stopWatch: cancel}
	for range p.N {
		if _, err := c.open(ctx); err != nil {
			return nil, errors.Join(err, c.Close())
		}
	}
	for i := range p.N {
		if err := c.connect(ctx, i); err != nil {
			return nil, errors.Join(err, c.Close())
		}
	}
	return c, nil
}

type cluster struct {
	sys       System
	p         bench.Params
	hooks     bench.Hooks
	dir       string
	watchCtx  context.Context
	stopWatch context.CancelFunc
	watchers  sync.WaitGroup

	mu      sync.Mutex
	members []*member
}

type member struct {
	n      *node.Node
	ns     *node.Namespace
	bw     *bench.ByteCounter
	copies *gossipCounter
}

// gossipCounter counts the gossip messages a node receives from peers:
// each on its first arrival (gossipsub's ValidateMessage, which it reports
// for peers' messages only), and every other copy that arrived
// (DuplicateMessage, and the copies dropped on a full validation queue).
type gossipCounter struct {
	gossip.NopTracer
	first, dups atomic.Int64
}

func (g *gossipCounter) ValidateMessage(*pubsub.Message)  { g.first.Add(1) }
func (g *gossipCounter) DuplicateMessage(*pubsub.Message) { g.dups.Add(1) }
func (g *gossipCounter) RejectMessage(_ *pubsub.Message, reason string) {
	if reason == pubsub.RejectValidationQueueFull {
		g.dups.Add(1)
	}
}

func (c *cluster) member(i int) (*member, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 0 || i >= len(c.members) {
		return nil, fmt.Errorf("mycelbench: no node %d", i)
	}
	return c.members[i], nil
}

// open starts one more node and its watcher.
func (c *cluster) open(ctx context.Context) (int, error) {
	c.mu.Lock()
	i := len(c.members)
	c.mu.Unlock()
	cfg := node.DefaultLocalConfig()
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	if c.p.Transport == "quic" {
		cfg.Listen = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	}
	bw := bench.NewByteCounter()
	copies := new(gossipCounter)
	opts := []node.Option{
		node.WithLogger(slog.New(slog.DiscardHandler)),
		node.WithHostOptions(libp2p.BandwidthReporter(bw)),
		node.WithPubSubOptions(pubsub.WithRawTracer(copies)),
	}
	if c.p.Store == "pebble" {
		cfg.DataDir = filepath.Join(c.dir, fmt.Sprintf("node-%d", i))
	} else {
		opts = append(opts, node.WithDatastore(dssync.MutexWrap(datastore.NewMapDatastore())))
	}
	if c.sys.MeshDegree != 0 {
		cfg.MeshDegree = c.sys.MeshDegree
	}
	cfg.MeshDegreeLow = c.sys.MeshDegreeLow
	cfg.FloodPublish = c.sys.FloodPublish
	if c.sys.Configure != nil {
		c.sys.Configure(i, &cfg)
	}
	n, err := node.Open(ctx, cfg, opts...)
	if err != nil {
		return 0, fmt.Errorf("mycelbench: open node %d: %w", i, err)
	}
	ns, err := n.Namespace(ctx, namespace)
	if err != nil {
		return 0, errors.Join(fmt.Errorf("mycelbench: node %d: %w", i, err), n.Close())
	}
	events := ns.Watch(c.watchCtx, "")
	c.watchers.Go(func() { c.watch(i, ns, events) })
	c.mu.Lock()
	c.members = append(c.members, &member{n: n, ns: ns, bw: bw, copies: copies})
	c.mu.Unlock()
	return i, nil
}

// watch reports every key that becomes visible on node i. Mycel closes a
// watch that falls too far behind (a million events or 64 MiB queued): the
// harness then resumes after the last event it got, as a client would, or,
// past the replayable history, subscribes afresh and reports every key
// the node holds (a key already reported is ignored).
func (c *cluster) watch(i int, ns *node.Namespace, events <-chan node.Event) {
	var last node.Event
	for idle := 0; c.watchCtx.Err() == nil && idle < 3; idle++ {
		for ev := range events {
			c.hooks.Visible(i, ev.Key)
			last, idle = ev, 0
		}
		if c.watchCtx.Err() != nil {
			return
		}
		var err error
		switch {
		case last.Position == 0:
			err = errors.New("no event yet")
		case last.LastInCommit:
			events, err = ns.WatchFrom(c.watchCtx, "", last.Position)
		default:
			events, err = ns.WatchAfter(c.watchCtx, "", last.Position, last.Index)
		}
		if err != nil {
			events = ns.Watch(c.watchCtx, "")
			for _, k := range ns.Keys("", "", 0) {
				c.hooks.Visible(i, k)
			}
		}
	}
}

// connect dials i's neighbours with higher indexes (each pair once).
func (c *cluster) connect(ctx context.Context, i int) error {
	for _, j := range bench.Neighbours(c.p, i) {
		if j > i {
			if err := c.dial(ctx, i, j); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *cluster) dial(ctx context.Context, from, to int) error {
	a, err := c.member(from)
	if err != nil {
		return err
	}
	b, err := c.member(to)
	if err != nil {
		return err
	}
	if err := a.n.Connect(ctx, b.n.Addrs()[0]); err != nil {
		return fmt.Errorf("mycelbench: connect node %d to %d: %w", from, to, err)
	}
	return nil
}

func (c *cluster) Put(ctx context.Context, i int, key string, value []byte) error {
	m, err := c.member(i)
	if err != nil {
		return err
	}
	return m.ns.Put(ctx, key, value)
}

func (c *cluster) Count(_ context.Context, i int) (int, error) {
	m, err := c.member(i)
	if err != nil {
		return 0, err
	}
	_, keys := m.ns.Digest()
	return keys, nil
}

func (c *cluster) others(i int) []*member {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*member
	for j, m := range c.members {
		if j != i {
			out = append(out, m)
		}
	}
	return out
}

// Isolate blocks i at every other node and every other node at i: the
// gaters close the connections and refuse dials either way.
func (c *cluster) Isolate(_ context.Context, i int) error {
	m, err := c.member(i)
	if err != nil {
		return err
	}
	for _, o := range c.others(i) {
		m.n.Block(o.n.ID())
		o.n.Block(m.n.ID())
	}
	return nil
}

// Rejoin unblocks i and dials its topology neighbours.
func (c *cluster) Rejoin(ctx context.Context, i int) error {
	m, err := c.member(i)
	if err != nil {
		return err
	}
	for _, o := range c.others(i) {
		m.n.Unblock(o.n.ID())
		o.n.Unblock(m.n.ID())
	}
	for _, j := range bench.Neighbours(c.p, i) {
		if err := c.dial(ctx, i, j); err != nil {
			return err
		}
	}
	return nil
}

// Join opens an empty node and connects it to node 0.
func (c *cluster) Join(ctx context.Context) (int, error) {
	i, err := c.open(ctx)
	if err != nil {
		return 0, err
	}
	return i, c.dial(ctx, i, 0)
}

func (c *cluster) Traffic(i int) bench.Traffic {
	m, err := c.member(i)
	if err != nil {
		return bench.Traffic{}
	}
	t := m.bw.Traffic()
	first := m.copies.first.Load()
	t.GossipFirst, t.GossipCopies = first, first+m.copies.dups.Load()
	return t
}

// Close stops every node and its watcher and removes the stores.
func (c *cluster) Close() error {
	c.mu.Lock()
	members := c.members
	c.members = nil
	c.mu.Unlock()
	var errs []error
	for i, m := range members {
		if err := m.n.Close(); err != nil {
			errs = append(errs, fmt.Errorf("mycelbench: close node %d: %w", i, err))
		}
	}
	c.stopWatch()
	c.watchers.Wait()
	if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
