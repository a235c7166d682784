package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/ipfs/boxo/bitswap"
	"github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	crdt "github.com/ipfs/go-ds-crdt"
	pebbleds "github.com/ipfs/go-ds-pebble"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"

	"github.com/mycelnet/mycel/bench"
)

// Settings; the package doc and README.md say why each has its value.
const (
	topic     = "mycel-bench" // the PubSubBroadcaster's topic
	namespace = "/crdt"       // go-ds-crdt's key prefix in each node's store

	groupWindow = 2 * time.Millisecond // batcher: Mycel's CoalesceWindow
	groupMaxOps = 512                  // batcher: Mycel's coalescer op limit

	rebroadcastInterval = time.Second // Mycel's local-preset SyncInterval
	maxBatchDeltaSize   = 1 << 20     // go-ds-crdt default
	numWorkers          = 5           // go-ds-crdt default
	dagSyncerTimeout    = 5 * time.Minute
	repairInterval      = time.Hour // go-ds-crdt default

	pubsubQueue = 1024     // Mycel's gossipsub peer-outbound and validate queues
	memTable    = 64 << 20 // Mycel's Pebble MemTableSize
)

// crdtSystem is go-ds-crdt as a bench.System.
type crdtSystem struct {
	// multiHead sets go-ds-crdt's MultiHeadProcessing (default false; see
	// the package doc: faster, but racy in v0.6.8). The command sets it
	// from DSCRDT_MULTIHEAD=1.
	multiHead bool
}

func (crdtSystem) Name() string { return "go-ds-crdt" }

func (s crdtSystem) Start(ctx context.Context, p bench.Params, hooks bench.Hooks) (bench.Cluster, error) {
	dir, err := os.MkdirTemp("", "dscrdt-bench-")
	if err != nil {
		return nil, err
	}
	c := &cluster{sys: s, p: p, hooks: hooks, dir: dir}
	for range p.N {
		if _, err := c.open(ctx); err != nil {
			return nil, errors.Join(err, c.Close())
		}
	}
	for i := range p.N {
		for _, j := range bench.Neighbours(c.p, i) {
			if j > i {
				if err := c.dial(ctx, i, j); err != nil {
					return nil, errors.Join(err, c.Close())
				}
			}
		}
	}
	return c, nil
}

type cluster struct {
	sys   crdtSystem
	p     bench.Params
	hooks bench.Hooks
	dir   string

	mu       sync.Mutex
	replicas []*replica
	closed   bool
}

// replica is one go-ds-crdt node and everything it runs on.
type replica struct {
	host   host.Host
	gater  *gater
	bw     *bench.ByteCounter
	cancel context.CancelFunc // pubsub, its broadcaster and bitswap
	bswap  *bitswap.Bitswap
	store  *guardedStore
	crdt   *crdt.Datastore
	b      *batcher
}

func (c *cluster) replica(i int) (*replica, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 0 || i >= len(c.replicas) {
		return nil, fmt.Errorf("dscrdt-bench: no node %d", i)
	}
	return c.replicas[i], nil
}

// open starts one more replica. Its parts are closed by replica.close,
// which copes with a replica only partly built.
func (c *cluster) open(_ context.Context) (_ int, err error) {
	c.mu.Lock()
	i := len(c.replicas)
	c.mu.Unlock()
	r := &replica{gater: newGater(), bw: bench.NewByteCounter()}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("dscrdt-bench: open node %d: %w", i, err), r.close())
		}
	}()

	var store ds.Batching
	if c.p.Store == "pebble" {
		// NoSync writes, and the batcher syncs the WAL once per commit
		// (crdt.Datastore.Sync): go-ds-crdt's documented way to make an
		// asynchronous store durable, one fsync per group as Mycel does.
		opts := &pebble.Options{MemTableSize: memTable}
		store, err = pebbleds.NewDatastore(filepath.Join(c.dir, fmt.Sprintf("node-%d", i)),
			pebbleds.WithPebbleOpts(opts), pebbleds.WithPebbleWriteOptions(pebble.NoSync))
	} else {
		store = dssync.MutexWrap(ds.NewMapDatastore())
	}
	if err != nil {
		return 0, err
	}
	r.store = newGuardedStore(store, namespace, func(key string) { c.hooks.Visible(i, key) })

	listen := "/ip4/127.0.0.1/tcp/0"
	if c.p.Transport == "quic" {
		listen = "/ip4/127.0.0.1/udp/0/quic-v1"
	}
	cm, err := connmgr.NewConnManager(100, 400, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return 0, err
	}
	r.host, err = libp2p.New(
		libp2p.ListenAddrStrings(listen),
		libp2p.ConnectionManager(cm),
		libp2p.ConnectionGater(r.gater),
		libp2p.BandwidthReporter(r.bw),
		libp2p.UserAgent("dscrdt-bench"),
	)
	if err != nil {
		return 0, err
	}

	nctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	ps, err := pubsub.NewGossipSub(nctx, r.host,
		pubsub.WithPeerOutboundQueueSize(pubsubQueue),
		pubsub.WithValidateQueueSize(pubsubQueue),
		pubsub.WithPeerExchange(true),
	)
	if err != nil {
		return 0, err
	}
	bcast, err := crdt.NewPubSubBroadcaster(nctx, ps, topic)
	if err != nil {
		return 0, err
	}

	// The DAG syncer: the node's own blockstore (under /blocks in its
	// store, as ipfs-lite keeps it) served and fetched over bitswap.
	bstore := blockstore.NewBlockstore(r.store)
	r.bswap = bitswap.New(nctx, bsnet.NewFromIpfsHost(r.host), nil, bstore)
	dag := merkledag.NewDAGService(blockservice.New(bstore, r.bswap))

	opts := crdt.DefaultOptions()
	opts.RebroadcastInterval = rebroadcastInterval
	opts.MaxBatchDeltaSize = maxBatchDeltaSize
	opts.NumWorkers = numWorkers
	opts.DAGSyncerTimeout = dagSyncerTimeout
	opts.RepairInterval = repairInterval
	opts.MultiHeadProcessing = c.sys.multiHead
	opts.PutHook = r.store.putHook
	r.crdt, err = crdt.New(r.store, ds.NewKey(namespace), dag, bcast, opts)
	if err != nil {
		return 0, err
	}
	r.b = newBatcher(r.crdt, c.p.Store == "pebble", groupWindow, groupMaxOps)

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, errClosed
	}
	c.replicas = append(c.replicas, r)
	return i, nil
}

// keyName is the harness's key for a go-ds-crdt key: bench keys have no
// slash, so ds.NewKey(name) is "/"+name.
func keyName(k ds.Key) string { return strings.TrimPrefix(k.String(), "/") }

// close stops r's parts in dependency order: no more puts, the broadcaster
// (go-ds-crdt asks for it before Datastore.Close), the datastore, bitswap,
// the host, the store.
func (r *replica) close() error {
	var errs []error
	if r.b != nil {
		r.b.close()
	}
	if r.cancel != nil {
		r.cancel()
	}
	if r.crdt != nil {
		errs = append(errs, r.crdt.Close())
	}
	if r.bswap != nil {
		errs = append(errs, r.bswap.Close())
	}
	if r.host != nil {
		errs = append(errs, r.host.Close())
	}
	if r.store != nil {
		errs = append(errs, r.store.Close())
	}
	return errors.Join(errs...)
}

func (c *cluster) dial(ctx context.Context, from, to int) error {
	a, err := c.replica(from)
	if err != nil {
		return err
	}
	b, err := c.replica(to)
	if err != nil {
		return err
	}
	if err := a.host.Connect(ctx, peer.AddrInfo{ID: b.host.ID(), Addrs: b.host.Addrs()}); err != nil {
		return fmt.Errorf("dscrdt-bench: connect node %d to %d: %w", from, to, err)
	}
	return nil
}

func (c *cluster) Put(ctx context.Context, i int, key string, value []byte) error {
	r, err := c.replica(i)
	if err != nil {
		return err
	}
	return r.b.put(ctx, ds.NewKey(key), value)
}

// Count queries the replica's keys (KeysOnly).
func (c *cluster) Count(ctx context.Context, i int) (int, error) {
	r, err := c.replica(i)
	if err != nil {
		return 0, err
	}
	res, err := r.crdt.Query(ctx, query.Query{KeysOnly: true})
	if err != nil {
		return 0, err
	}
	defer res.Close()
	n := 0
	for e := range res.Next() {
		if e.Error != nil {
			return 0, e.Error
		}
		n++
	}
	return n, nil
}

func (c *cluster) others(i int) []*replica {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*replica
	for j, r := range c.replicas {
		if j != i {
			out = append(out, r)
		}
	}
	return out
}

// Isolate blocks i at every other node and every other node at i, and
// closes their connections.
func (c *cluster) Isolate(_ context.Context, i int) error {
	r, err := c.replica(i)
	if err != nil {
		return err
	}
	for _, o := range c.others(i) {
		r.gater.block(o.host.ID())
		o.gater.block(r.host.ID())
		_ = r.host.Network().ClosePeer(o.host.ID())
		_ = o.host.Network().ClosePeer(r.host.ID())
	}
	return nil
}

// Rejoin unblocks i and dials its topology neighbours.
func (c *cluster) Rejoin(ctx context.Context, i int) error {
	r, err := c.replica(i)
	if err != nil {
		return err
	}
	for _, o := range c.others(i) {
		r.gater.unblock(o.host.ID())
		o.gater.unblock(r.host.ID())
	}
	for _, j := range bench.Neighbours(c.p, i) {
		if err := c.dial(ctx, i, j); err != nil {
			return err
		}
	}
	return nil
}

// Join opens an empty replica and connects it to node 0.
func (c *cluster) Join(ctx context.Context) (int, error) {
	i, err := c.open(ctx)
	if err != nil {
		return 0, err
	}
	return i, c.dial(ctx, i, 0)
}

func (c *cluster) Traffic(i int) bench.Traffic {
	r, err := c.replica(i)
	if err != nil {
		return bench.Traffic{}
	}
	return r.bw.Traffic()
}

// Close stops every replica and removes the stores. It is idempotent.
func (c *cluster) Close() error {
	c.mu.Lock()
	rs := c.replicas
	c.replicas = nil
	c.closed = true
	c.mu.Unlock()
	var errs []error
	for i, r := range rs {
		if err := r.close(); err != nil {
			errs = append(errs, fmt.Errorf("dscrdt-bench: close node %d: %w", i, err))
		}
	}
	if c.dir != "" {
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, err)
		}
		c.dir = ""
	}
	return errors.Join(errs...)
}
