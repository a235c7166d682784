package node

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// TestNATPresetReservesRelay: with NAT on, a node that finds itself
// publicly reachable offers a circuit relay, and a node behind a NAT
// reserves a slot with the peer it bootstrapped from — with no relay
// configured anywhere — so a third host that cannot dial it directly
// reaches it through that peer.
func TestNATPresetReservesRelay(t *testing.T) {
	noPortMap := func(o *options) error { o.noPortMap = true; return nil }
	pubCfg := DefaultLocalConfig()
	pubCfg.NAT = true
	public, err := Open(context.Background(), pubCfg, noPortMap, WithHostOptions(libp2p.ForceReachabilityPublic()))
	if err != nil {
		t.Fatal(err)
	}
	defer public.Close()
	natCfg := DefaultLocalConfig()
	natCfg.NAT = true
	natCfg.Bootstrap = []string{public.Addrs()[0]}
	// Forced private; without the AutoNAT service (see options.noNATService).
	noService := func(o *options) error { o.noNATService = true; return nil }
	private, err := Open(context.Background(), natCfg, noPortMap, noService, WithHostOptions(libp2p.ForceReachabilityPrivate()))
	if err != nil {
		t.Fatal(err)
	}
	defer private.Close()

	// The third host knows the private node only by its relayed address.
	third, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	circuit, err := multiaddr.NewMultiaddr(public.Addrs()[0] + "/p2p-circuit")
	if err != nil {
		t.Fatal(err)
	}
	target := peer.AddrInfo{ID: private.ID(), Addrs: []multiaddr.Multiaddr{circuit}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := third.Connect(ctx, target)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no way to the private node through %s after 60 s: %v", public.ID(), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	conns := third.Network().ConnsToPeer(private.ID())
	if len(conns) == 0 || !conns[0].Stat().Limited {
		t.Fatalf("connected to the private node, but not through the relay: %v", conns)
	}
}

// TestRelayCandidatesWaitForTheHost: AutoRelay may ask for relays while
// libp2p.New is still making the host. The answer must wait for the host
// and then offer its relays: an answer closed at once left a node behind
// a NAT without a relayed address for AutoRelay's 30 s re-ask interval
// (TestNATPresetReservesRelay took 34 s).
func TestRelayCandidatesWaitForTheHost(t *testing.T) {
	relay, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.EnableRelayService(), libp2p.ForceReachabilityPublic())
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	n := &Node{relayReady: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	candidates := n.relayCandidates(ctx, 1) // asked before the host is made

	ctxConnect, cancelConnect := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelConnect()
	if err := h.Connect(ctxConnect, peer.AddrInfo{ID: relay.ID(), Addrs: relay.Addrs()}); err != nil {
		t.Fatal(err)
	}
	n.relayHost.Store(&h)
	close(n.relayReady)

	select {
	case c, ok := <-candidates:
		if !ok {
			t.Fatal("no relay offered: the answer ended before the host was made")
		}
		if c.ID != relay.ID() {
			t.Fatalf("offered %s, want the relay %s", c.ID, relay.ID())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no relay offered after 60 s")
	}
	select {
	case _, ok := <-candidates:
		if ok {
			t.Fatal("more relays offered than asked for")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("answer not closed after num relays")
	}

	// No host made (libp2p.New failed): the answer ends empty.
	failed := &Node{relayReady: make(chan struct{})}
	empty := failed.relayCandidates(ctx, 1)
	close(failed.relayReady)
	if _, ok := <-empty; ok {
		t.Fatal("a relay offered with no host")
	}
	// AutoRelay gives up before the host is made: the answer ends.
	waiting := &Node{relayReady: make(chan struct{})}
	ctxGone, cancelGone := context.WithCancel(context.Background())
	abandoned := waiting.relayCandidates(ctxGone, 1)
	cancelGone()
	if _, ok := <-abandoned; ok {
		t.Fatal("a relay offered after AutoRelay cancelled")
	}
}
