package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/store"
)

// cluster starts n nodes on loopback with cfg (DefaultLocalConfig if nil
// change), each with its own in-memory store unless dirs are given.
func cluster(t *testing.T, n int, change func(i int, c *Config)) []*Node {
	t.Helper()
	nodes := make([]*Node, n)
	for i := range nodes {
		cfg := DefaultLocalConfig()
		if change != nil {
			change(i, &cfg)
		}
		nd, err := Open(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = nd
		t.Cleanup(func() { nd.Close() })
	}
	return nodes
}

func connect(t *testing.T, a, b *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, b.Addrs()[0]); err != nil {
		t.Fatal(err)
	}
}

// mesh connects every pair; chain connects i to i+1.
func mesh(t *testing.T, nodes []*Node) {
	for i := range nodes {
		for j := i + 1; j < len(nodes); j++ {
			connect(t, nodes[i], nodes[j])
		}
	}
}

func chain(t *testing.T, nodes []*Node) {
	for i := 0; i+1 < len(nodes); i++ {
		connect(t, nodes[i], nodes[i+1])
	}
}

func mustNS(t *testing.T, n *Node, name string) *Namespace {
	t.Helper()
	ns, err := n.Namespace(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// waitConverged polls until every node's digest of ns is equal (and, if
// keys >= 0, holds that many keys), or fails after timeout.
func waitConverged(t *testing.T, nodes []*Node, ns string, keys int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var first crdt.Digest
		same := true
		detail := ""
		for i, n := range nodes {
			d, k := mustNS(t, n, ns).Digest()
			detail += fmt.Sprintf(" node%d:%d keys", i, k)
			if i == 0 {
				first = d
			}
			if d != first || (keys >= 0 && k != keys) {
				same = false
			}
		}
		if same {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged after %v:%s", timeout, detail)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not a wait for a condition
	}
}

func TestThreeNodesConverge(t *testing.T) {
	nodes := cluster(t, 3, nil)
	chain(t, nodes)
	ctx := context.Background()
	for i, n := range nodes {
		ns := mustNS(t, n, "demo")
		for k := 0; k < 50; k++ {
			if err := ns.Put(ctx, fmt.Sprintf("n%d-k%d", i, k), []byte("v")); err != nil {
				t.Fatal(err)
			}
		}
		if err := ns.Counter("hits").Add(ctx, int64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	waitConverged(t, nodes, "demo", 151, 20*time.Second)
	v, err := mustNS(t, nodes[2], "demo").Counter("hits").Value(ctx)
	if err != nil || v != 6 {
		t.Fatalf("counter %d %v", v, err)
	}
}

func TestPeersAndSyncStatus(t *testing.T) {
	ctx := context.Background()
	nodes := cluster(t, 2, func(_ int, c *Config) { c.DisablePublish = true })
	a, b := mustNS(t, nodes[0], "s"), mustNS(t, nodes[1], "s")
	for k := 0; k < 10; k++ {
		if err := a.Put(ctx, fmt.Sprint("k", k), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	connect(t, nodes[1], nodes[0])
	if err := nodes[1].SyncWith(ctx, nodes[0].ID()); err != nil {
		t.Fatal(err)
	}
	// The pull (this one or the one the new connection started) brought
	// every batch: b holds all, and the status records the pull.
	if _, k := b.Digest(); k != 10 || nodes[1].Stats().SyncBatchesIn.Load() == 0 {
		t.Fatalf("after a pull: %d keys, %d batches in", k, nodes[1].Stats().SyncBatchesIn.Load())
	}
	st := b.SyncStatus()
	if len(st) != 1 || st[0].Peer != nodes[0].ID() || st[0].LastPull.IsZero() || st[0].LastError != "" {
		t.Fatalf("sync status after a pull: %+v", st)
	}
	peers := nodes[1].Peers()
	if len(peers) != 1 || !peers[0].Connected || peers[0].LastSync.IsZero() || len(peers[0].Addrs) == 0 {
		t.Fatalf("peers: %+v", peers)
	}
}

// TestDHTRendezvous: two nodes that only know a bootstrap node find each
// other through the namespace's rendezvous in the DHT, and replicate.
func TestDHTRendezvous(t *testing.T) {
	ctx := context.Background()
	boot := cluster(t, 1, func(_ int, c *Config) { c.DHT = true; c.RendezvousInterval = 200 * time.Millisecond })[0]
	mustNS(t, boot, "other") // the bootstrap node does not hold "dht"
	nodes := cluster(t, 2, func(_ int, c *Config) {
		c.DHT = true
		c.RendezvousInterval = 200 * time.Millisecond
		c.Bootstrap = []string{boot.Addrs()[0]}
	})
	a, b := mustNS(t, nodes[0], "dht"), mustNS(t, nodes[1], "dht")
	waitFor(t, "the two nodes to meet through the DHT", 30*time.Second, func() bool {
		return len(nodes[0].Host().Network().ConnsToPeer(nodes[1].ID())) > 0
	})
	if err := a.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the write to replicate", 20*time.Second, func() bool {
		v, err := b.Get(ctx, "k")
		return err == nil && string(v) == "v"
	})
}

func TestIdentityKeptAndPrivate(t *testing.T) {
	dir := t.TempDir()
	a := cluster(t, 1, func(_ int, c *Config) { c.DataDir = dir })[0]
	id := a.ID()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity key mode %v, want 0600", fi.Mode().Perm())
	}
	b := cluster(t, 1, func(_ int, c *Config) { c.DataDir = dir })[0]
	if b.ID() != id {
		t.Fatal("restart changed the peer id")
	}
	// A second node on the same data directory fails fast.
	cfg := DefaultLocalConfig()
	cfg.DataDir = dir
	if _, err := Open(context.Background(), cfg); !errors.Is(err, ErrInUse) {
		t.Fatalf("second node on one data dir: %v", err)
	}
}

// TestIdentityMustCarryItsPublicKey: an identity whose peer id holds only a
// hash of its key (ECDSA here, RSA alike) is refused at Open, since no
// peer could check its batches' signatures; an Ed25519 one is taken.
func TestIdentityMustCarryItsPublicKey(t *testing.T) {
	ecdsaKey, _, err := crypto.GenerateECDSAKeyPair(nil)
	if err != nil {
		t.Fatal(err)
	}
	if nd, err := Open(context.Background(), DefaultLocalConfig(), WithNewIdentity(ecdsaKey)); !errors.Is(err, ErrConfig) {
		if err == nil {
			nd.Close()
		}
		t.Fatalf("an ECDSA identity: %v, want ErrConfig", err)
	}
	edKey, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	nd, err := Open(context.Background(), DefaultLocalConfig(), WithNewIdentity(edKey))
	if err != nil {
		t.Fatalf("an Ed25519 identity: %v", err)
	}
	nd.Close()
}

// Nodes starting together on a fresh data directory agree on one identity
// key, the one on disk: the loser of the store lock must not leave its own
// key behind for the winner's next start to trip over.
func TestConcurrentFirstStartsAgreeOnIdentity(t *testing.T) {
	for round := 0; round < 20; round++ {
		dir := t.TempDir()
		const starters = 6
		ids := make([]string, starters)
		errs := make([]error, starters)
		var wg sync.WaitGroup
		for i := range starters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := &Node{cfg: Config{DataDir: dir}}
				k, _, err := n.identity()
				if err == nil {
					var b []byte
					b, err = crypto.MarshalPrivateKey(k)
					ids[i] = string(b)
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		onDisk, err := os.ReadFile(filepath.Join(dir, "identity.key"))
		if err != nil {
			t.Fatal(err)
		}
		for i := range starters {
			if errs[i] != nil {
				t.Fatalf("round %d starter %d: %v", round, i, errs[i])
			}
			if ids[i] != string(onDisk) {
				t.Fatalf("round %d: starter %d uses a key that is not the one on disk", round, i)
			}
		}
		if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(left) > 0 {
			t.Fatalf("temporary files left: %v", left)
		}
	}
}

func TestReplicationLagIsRecorded(t *testing.T) {
	ctx := context.Background()
	nodes := cluster(t, 2, nil)
	connect(t, nodes[0], nodes[1])
	mustNS(t, nodes[1], "lag")
	if err := mustNS(t, nodes[0], "lag").Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a lag record for node 0", 10*time.Second, func() bool {
		for _, l := range nodes[1].ReplicationLag() {
			if l.Origin == nodes[0].Replica() && l.Namespace == "lag" && l.Last < time.Minute {
				return true
			}
		}
		return false
	})
}

// A node whose store is lost but whose identity key is kept (the data
// dir's store removed, identity.key left) takes writes at once, before any
// peer is reachable, and loses none: its new store counts from a floor the
// lost one never reached, so peers do not drop the new writes as seen.
func TestLostStoreKeptIdentity(t *testing.T) {
	ctx := context.Background()
	dirs := []string{t.TempDir(), t.TempDir()}
	nodes := cluster(t, 2, func(i int, c *Config) { c.DataDir = dirs[i] })
	connect(t, nodes[0], nodes[1])
	if err := mustNS(t, nodes[1], "ns").Put(ctx, "before", []byte("1")); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, nodes, "ns", 1, 20*time.Second)
	id := nodes[1].ID()
	if err := nodes[1].Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dirs[1], "store")); err != nil {
		t.Fatal(err)
	}
	back := cluster(t, 1, func(_ int, c *Config) { c.DataDir = dirs[1] })[0]
	if back.ID() != id {
		t.Fatal("the kept key gave another peer id")
	}
	d, err := mustNS(t, back, "ns").Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "after", Value: []byte("2")})
	if err != nil {
		t.Fatal(err)
	}
	d.StoreDots(func(x crdt.Dot) {
		if x.Counter < store.FloorBase {
			t.Fatalf("write after losing the store took dot %v, below the floor", x)
		}
	})
	connect(t, nodes[0], back)
	waitConverged(t, []*Node{nodes[0], back}, "ns", 2, 20*time.Second)
	for _, n := range []*Node{nodes[0], back} {
		for _, k := range []string{"before", "after"} {
			if _, err := mustNS(t, n, "ns").Get(ctx, k); err != nil {
				t.Fatalf("node %s lacks %q: %v", n.ID(), k, err)
			}
		}
	}
	// A first start with a key made now counts from 1.
	fresh := cluster(t, 1, func(_ int, c *Config) { c.DataDir = t.TempDir() })[0]
	d, err = mustNS(t, fresh, "ns").Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "k", Value: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	d.StoreDots(func(x crdt.Dot) {
		if x.Counter != 1 {
			t.Fatalf("a new key's first write took dot %v", x)
		}
	})
}

// TestEmptyListenListensNowhere: no listen address is a node that only
// dials, not libp2p's default of every interface; a private network whose
// listen addresses are all QUIC is refused.
func TestEmptyListenListensNowhere(t *testing.T) {
	a := cluster(t, 1, func(_ int, c *Config) { c.Listen = nil })[0]
	if addrs := a.Host().Network().ListenAddresses(); len(addrs) != 0 {
		t.Fatalf("listening on %v", addrs)
	}
	b := cluster(t, 1, nil)[0]
	if err := a.Connect(context.Background(), b.Addrs()[0]); err != nil {
		t.Fatalf("a dial-only node cannot dial: %v", err)
	}
	cfg := DefaultLocalConfig()
	cfg.PSK = make([]byte, 32)
	cfg.Listen = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	if _, err := Open(context.Background(), cfg); !errors.Is(err, ErrConfig) {
		t.Fatalf("private network on QUIC only: %v", err)
	}
}

// TestLagEntriesAreBounded: origins come and go (fresh identities,
// re-installed peers); the lag kept per origin, a metric series each, is
// bounded, and the origins heard from last are the ones kept.
func TestLagEntriesAreBounded(t *testing.T) {
	var tr lagTracker
	ns := crdt.NewNamespace(crdt.Limits{})
	d, err := ns.Prepare(crdt.Op{Kind: crdt.OpPut, Key: "k", Value: []byte("v")}, 1, crdt.Timestamp{Wall: 1_000})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(10, 0)
	const origins = 3 * maxLagEntries
	for i := range origins {
		tr.note(store.Commit{Namespace: "x", Origin: crdt.ReplicaID(i + 1), Seq: 1, Delta: d}, start.Add(time.Duration(i)*time.Millisecond))
	}
	if len(tr.lags) != maxLagEntries {
		t.Fatalf("%d lag entries kept for %d origins", len(tr.lags), origins)
	}
	if _, ok := tr.lags[lagKey{"x", crdt.ReplicaID(origins)}]; !ok {
		t.Fatal("the latest origin was not kept")
	}
}
