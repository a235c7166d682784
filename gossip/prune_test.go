package gossip

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	p2ptest "github.com/libp2p/go-libp2p/core/test"

	"github.com/mycelnet/mycel/crdt"
)

func loopbackHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// TestPerPeerStateIsBounded: a node that meets thousands of peers over its
// life keeps a bounded number of session budgets and sync statuses, and
// never forgets a connected peer's status or a budget still in use.
func TestPerPeerStateIsBounded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h, other := loopbackHost(t), loopbackHost(t)
	ps, err := pubsub.NewGossipSub(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Unix(1_000_000, 0)
	r, err := New(Config{Host: h, PubSub: ps, Replica: crdt.DeriveReplicaID([]byte(h.ID())), Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := h.Connect(ctx, peer.AddrInfo{ID: other.ID(), Addrs: other.Addrs()}); err != nil {
		t.Fatal(err)
	}
	// A connected peer whose status is the oldest of all, and a peer with
	// a session open.
	r.noteStatus(other.ID(), "ns", func(ps *PeerSync) { ps.LastPull = clock })
	busy := p2ptest.RandPeerIDFatal(t)
	if !r.admit(busy) {
		t.Fatal("first session refused")
	}
	for i := range 3000 {
		clock = clock.Add(time.Second)
		p := p2ptest.RandPeerIDFatal(t)
		if !r.admit(p) {
			t.Fatalf("peer %d refused its first session", i)
		}
		r.done(p)
		r.wg.Done()
		r.noteStatus(p, "ns", func(ps *PeerSync) { ps.LastServed = clock })
	}
	r.mu.Lock()
	served, status := len(r.served), len(r.status)
	_, busyKept := r.served[busy]
	_, otherKept := r.status[statusKey{other.ID(), "ns"}]
	r.mu.Unlock()
	if served > maxTrackedPeers+1 || status > maxTrackedPeers*4 {
		t.Errorf("after 3,000 peers: %d budgets, %d statuses; want at most %d and %d", served, status, maxTrackedPeers+1, maxTrackedPeers*4)
	}
	if !busyKept {
		t.Error("the budget of a peer with a session open was pruned")
	}
	if !otherKept {
		t.Error("the status of a connected peer was pruned")
	}
	r.done(busy)
	r.wg.Done()
}
