package node

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/store"
)

// Config configures a node. Start from a preset; every zero field takes the
// default written on it.
type Config struct {
	// DataDir holds the identity key and the Pebble store. Empty: an
	// in-memory store and a fresh identity each start (tests, simulation).
	DataDir string
	// Listen are the multiaddrs to listen on. Default (LAN/WAN): TCP and
	// QUIC on port 4001 of every interface. Empty: the node listens on
	// nothing and only dials out (its bootstrap peers, say).
	Listen []string
	// Bootstrap are peer multiaddrs (with /p2p/<id>) dialled at start and
	// redialled with backoff while disconnected.
	Bootstrap []string
	// MaxRedialBackoff caps the backoff between redials of a disconnected
	// bootstrap peer (it starts at 1 s and doubles). A connection that was
	// up at least this long is redialled 0.5–1.5 s after it drops; one that
	// dropped sooner, after the backoff reached so far. Default 1 min (local
	// preset: 5 s). Lower heals long partitions sooner; higher dials less.
	MaxRedialBackoff time.Duration
	// ForgetPeers turns off the known-peers record, and removes one an
	// earlier run kept. By default the node
	// keeps the peers it is connected to (up to 32, with their addresses)
	// in its store, written every 5 s when they changed and at a clean
	// shutdown, and dials them, up to three times each, when it starts
	// again: a restarted node finds its cluster at once even if it has
	// no bootstrap peers, or they are down.
	ForgetPeers bool
	// MDNS finds peers on the local network. Default false (LAN preset: true).
	MDNS bool
	// DHT runs a Kademlia DHT (Mycel's own, protocol prefix /mycel) seeded
	// by Bootstrap, and meets the other nodes of each namespace at a
	// rendezvous point in it. Default false (WAN preset: true).
	DHT bool
	// RendezvousInterval is how often each namespace is advertised and its
	// peers looked up in the DHT. Default 1 min (local preset: 1 s).
	RendezvousInterval time.Duration
	// PSK, if set (32 bytes), makes the node part of a private network:
	// only nodes with the same key can connect. libp2p cannot run QUIC in
	// a private network, so QUIC listeners are dropped (and logged).
	PSK []byte
	// AllowPeers, if not empty, is the only set of peers the node connects
	// with (connection gater).
	AllowPeers []peer.ID
	// Writers maps a namespace to its writer allowlist: batches by any
	// other peer are refused by the validator and by sync.
	Writers map[string][]peer.ID
	// NoSync acknowledges writes before fsync (see store.Options.NoSync): a
	// crash can lose the writes of the last 100 ms. Default false:
	// acknowledged writes are durable.
	NoSync bool
	// Limits bound keys (default 1 KiB), values (1 MiB) and decoding.
	Limits crdt.Limits
	// MinFreeBytes is the free space kept on DataDir's disk: below it the
	// node refuses local writes and peers' batches with ErrDiskFull,
	// serves reads, and takes writes again once there is room (sync then
	// brings what it missed). Default 128 MiB (store.DefaultMinFreeBytes);
	// negative turns the check off. Only with DataDir.
	MinFreeBytes int64
	// Retention bounds each namespace's delta log. Defaults 256 MiB, 24 h.
	Retention store.Retention
	// SyncInterval is the mean time between background syncs with a random
	// peer. Default 10 s (local preset: 1 s).
	SyncInterval time.Duration
	// CoalesceWindow is how long local batches wait to be published
	// together. Default 2 ms.
	CoalesceWindow time.Duration
	// DisablePublish turns the gossip fast path off; sync alone replicates.
	DisablePublish bool
	// MeshDegree is gossipsub's target mesh degree D: how many peers each
	// node forwards a batch to (the mesh keeps between about 2/3 D and
	// 2 D); sync repairs what gossip misses,
	// so a small mesh trades a little latency on large, sparsely connected
	// clusters for far fewer duplicate sends: in a 5-node mesh, D=6 sends
	// each batch about 16 times where 4 would do. Default 6 (gossipsub's);
	// 2 to 32.
	MeshDegree int
	// MeshDegreeLow is gossipsub's Dlo: a node with fewer mesh peers than
	// this grafts more at its next heartbeat. Default 0: gossipsub's own 5
	// at MeshDegree 6, else two thirds of MeshDegree, at least 1. At
	// MeshDegree 2 that is 1, so a node may keep a single mesh link, and
	// the mesh of a large cluster splits into islands that hear each
	// other's batches only through IHAVE gossip or sync, a heartbeat later.
	// In the simulator's 100-node runs (sim/testdata/speed-100-d2.yaml) a
	// third of the nodes had one link and the mesh had 8 or 9 parts; with
	// MeshDegreeLow 2 it stayed whole or nearly, and propagation p50 fell
	// from 1.1–1.7 s to 0.4–0.6 s. In small clusters it costs copies, as no
	// node may then be a leaf of a tree: 5 nodes at MeshDegree 2 sent
	// 2,038–2,648 bytes per key against 1,410–1,428 in most runs (`mycel
	// bench` sustained at 1,000 puts/s, with a temporary build setting it;
	// docs/BENCHMARKS.md, Simulator, session 22). 1 to MeshDegree.
	MeshDegreeLow int
	// FloodPublish sends this node's own batches straight to every
	// connected peer in the namespace, not only to its mesh peers (which
	// forward them): one hop fewer for peers outside the writer's mesh, at
	// the cost of duplicates. In a loaded 5-node cluster with MeshDegree 2
	// it sent 2.7–3.6 times the least bytes possible per key against
	// 1.4–2.5 without (`mycel bench` multi-writer), and it made a 100-node
	// simulation 41% slower (132 s against 94 s of wall time); single
	// writes of a small burst converged sooner (0.031–0.042 s against
	// 0.041–0.066 s for 1,000 keys at 5 nodes). With a MeshDegree at or
	// above the peer count every peer is in the mesh and it changes
	// nothing. Default false (gossipsub's default).
	FloodPublish bool
	// PeerExchange makes the node answer a GRAFT it refuses (its mesh is
	// full) or a mesh peer it prunes with up to 16 of its other peers in the
	// namespace, which that peer dials if not connected to them already
	// (gossipsub peer exchange): a way for nodes that know only a bootstrap
	// node or two to spread out. Turn it on for such bootstrap nodes, not
	// for every node: go-libp2p-pubsub advises it for bootstrap and other
	// well-connected nodes, and when every node does it each prune brings
	// new connections, which pile up below ConnHigh, where the connection
	// manager starts trimming (simulated 1,000-node cluster, each node
	// dialling 8 others: ~52 connections per node with it, 2.2–2.6 times
	// the wall time and 2.3 times the memory). Records other nodes hand
	// this one are dialled either way, as Mycel sets no gossipsub peer
	// scoring to refuse them by. Default false.
	PeerExchange bool
	// ConnLow and ConnHigh are the connection manager's watermarks.
	// Defaults 100 and 400.
	ConnLow, ConnHigh int
	// MaxClockDrift bounds how far ahead a remote clock may pull ours.
	// Default 1 min.
	MaxClockDrift time.Duration
	// NAT enables NAT traversal (WAN preset): AutoNAT, UPnP/NAT-PMP port
	// mapping, hole punching, a circuit relay v2 service while publicly
	// reachable, and AutoRelay, which reserves a relay slot with a
	// connected peer offering one while the node is not reachable.
	NAT bool
}

// DefaultLANConfig is for nodes on one network: mDNS on, sync every 10 s.
func DefaultLANConfig() Config {
	return Config{
		DataDir: "mycel-data",
		Listen:  []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"},
		MDNS:    true,
	}
}

// DefaultWANConfig is for nodes across regions: no mDNS, NAT traversal and
// DHT rendezvous on, sync every 30 s (gossip carries the fast path; sync
// repairs). Set PeerExchange on the nodes others bootstrap from.
func DefaultWANConfig() Config {
	return Config{
		DataDir:      "mycel-data",
		Listen:       []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"},
		NAT:          true,
		DHT:          true,
		SyncInterval: 30 * time.Second,
	}
}

// DefaultLocalConfig is for tests and examples: in memory, loopback only,
// an ephemeral TCP port, sync every second.
func DefaultLocalConfig() Config {
	return Config{
		Listen:           []string{"/ip4/127.0.0.1/tcp/0"},
		SyncInterval:     time.Second,
		MaxRedialBackoff: 5 * time.Second,
	}
}

func (c Config) withDefaults() (Config, error) {
	if c.ConnLow <= 0 {
		c.ConnLow = 100
	}
	if c.ConnHigh <= c.ConnLow {
		c.ConnHigh = 4 * c.ConnLow
	}
	if c.SyncInterval <= 0 {
		c.SyncInterval = 10 * time.Second
	}
	if c.RendezvousInterval <= 0 {
		c.RendezvousInterval = time.Minute
	}
	if c.MaxRedialBackoff <= 0 {
		c.MaxRedialBackoff = time.Minute
	}
	if c.MaxRedialBackoff < time.Second {
		c.MaxRedialBackoff = time.Second
	}
	if c.PSK != nil && len(c.PSK) != 32 {
		return c, fmt.Errorf("%w: PSK must be 32 bytes, got %d", ErrConfig, len(c.PSK))
	}
	if c.MeshDegree == 0 {
		c.MeshDegree = DefaultMeshDegree
	}
	if c.MeshDegree < 2 || c.MeshDegree > 32 {
		return c, fmt.Errorf("%w: MeshDegree %d: want 2 to 32", ErrConfig, c.MeshDegree)
	}
	if c.MeshDegreeLow < 0 || c.MeshDegreeLow > c.MeshDegree {
		return c, fmt.Errorf("%w: MeshDegreeLow %d: want 1 to MeshDegree (%d), or 0 for the default (5 at degree 6, else two thirds of the degree, at least 1)", ErrConfig, c.MeshDegreeLow, c.MeshDegree)
	}
	for _, a := range append(append([]string(nil), c.Listen...), c.Bootstrap...) {
		if _, err := multiaddr.NewMultiaddr(a); err != nil {
			return c, fmt.Errorf("%w: multiaddr %q: %v", ErrConfig, a, err)
		}
	}
	for _, a := range c.Bootstrap {
		if _, err := peer.AddrInfoFromString(a); err != nil {
			return c, fmt.Errorf("%w: bootstrap %q needs /p2p/<peer id>: %v", ErrConfig, a, err)
		}
	}
	return c, nil
}

// Option changes what Open injects. Defaults are the real parts.
type Option func(*options) error

type options struct {
	datastore ds.Batching
	identity  crypto.PrivKey
	// identityNew: identity was never used before (WithNewIdentity).
	identityNew bool
	hostOpts    []libp2p.Option
	psOpts      []pubsub.Option
	now         func() time.Time
	rand        *rand.Rand
	logger      *slog.Logger
	// noPortMap leaves UPnP/NAT-PMP out of the NAT preset, for tests,
	// which must not search the network for a gateway; noNATService leaves
	// out the AutoNAT service, whose dialer go-libp2p v0.51 never closes
	// when reachability is forced private (as a test does).
	noPortMap, noNATService bool
}

// WithDatastore stores state in d instead of DataDir's Pebble store (the
// caller keeps ownership of d).
func WithDatastore(d ds.Batching) Option {
	return func(o *options) error {
		if d == nil {
			return errors.New("node: nil datastore")
		}
		o.datastore = d
		return nil
	}
}

// WithIdentity uses key as the node's identity instead of the one in DataDir.
// The key may have written before, on a store now lost: a new store opened
// with it counts this replica's dots and batch numbers from random floors
// no earlier store reached (store.Options.IdentityReused), so that peers
// holding the lost store's writes do not drop the new ones as seen. Use
// WithNewIdentity for a key generated for this node and never used.
func WithIdentity(key crypto.PrivKey) Option {
	return func(o *options) error { o.identity, o.identityNew = key, false; return nil }
}

// WithNewIdentity uses key, which no node has used before, as the node's
// identity: a new store counts from 1, as with a key generated in DataDir.
// Reusing such a key on another store loses writes; see WithIdentity.
func WithNewIdentity(key crypto.PrivKey) Option {
	return func(o *options) error { o.identity, o.identityNew = key, true; return nil }
}

// WithHostOptions adds libp2p options (e.g. a simulated network transport).
func WithHostOptions(opts ...libp2p.Option) Option {
	return func(o *options) error { o.hostOpts = append(o.hostOpts, opts...); return nil }
}

// WithPubSubOptions adds gossipsub options after those replication sets
// (e.g. pubsub.WithRawTracer, to count traffic). Options that change
// signing, message ids or sizes break replication.
func WithPubSubOptions(opts ...pubsub.Option) Option {
	return func(o *options) error { o.psOpts = append(o.psOpts, opts...); return nil }
}

// WithClock replaces time.Now.
func WithClock(now func() time.Time) Option {
	return func(o *options) error { o.now = now; return nil }
}

// WithRand replaces the random source (peer choice, jitter).
func WithRand(r *rand.Rand) Option {
	return func(o *options) error { o.rand = r; return nil }
}

// WithLogger sets the logger. Default slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error { o.logger = l; return nil }
}

// DefaultMeshDegree is the mesh degree a Config of 0 gets: gossipsub's
// own default D.
const DefaultMeshDegree = 6

// meshParams returns gossipsub's parameters with mesh degree d (2 to 32),
// and the bounds around it scaled about as gossipsub's defaults are (D=6:
// Dlo=5, Dhi=12, Dout=2, Dlazy=6): Dlo two thirds of d, at least 1, or lo
// if lo is not 0 (1 to d); Dhi twice d; Dout below Dlo; Dlazy no higher
// than 6. Each message is advertised in IHAVE gossip at one heartbeat
// instead of three (HistoryGossip 1); everything else is gossipsub's
// default.
//
// IHAVE gossip repairs what the mesh failed to deliver; Mycel's sync does
// that too, so three rounds of it bought little and cost much: with one
// small batch per message, the message ids it repeated were more bytes than
// the batches (the simulator's 100-node runs: 163 MB of control traffic
// against 79 MB of data; 5 nodes at 1,000 puts/s: ~40% of the bytes per
// key). docs/BENCHMARKS.md has the runs.
func meshParams(d, lo int) pubsub.GossipSubParams {
	p := pubsub.DefaultGossipSubParams()
	p.HistoryGossip = 1
	if d == DefaultMeshDegree && (lo == 0 || lo == p.Dlo) {
		return p
	}
	p.D = d
	p.Dlo = max(d*2/3, 1)
	if lo != 0 {
		p.Dlo = lo
	}
	p.Dhi = 2 * d
	p.Dout = max(min(p.Dlo-1, d/2-1, d/3), 0)
	p.Dscore = min(p.Dscore, p.Dhi)
	p.Dlazy = min(d, p.Dlazy)
	return p
}
