package node

import (
	"context"
	"fmt"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/discovery"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
)

// rendezvous returns the DHT rendezvous string of a namespace.
func rendezvous(ns string) string { return "mycel/ns/" + ns }

// startDHT runs a Kademlia DHT (protocol prefix /mycel, so it is Mycel's
// own network, not IPFS's) seeded with the bootstrap peers, and a loop that
// advertises every joined namespace and connects to the other peers that
// advertise it.
func (n *Node) startDHT(ctx context.Context) error {
	var boot []peer.AddrInfo
	for _, a := range n.cfg.Bootstrap {
		ai, _ := peer.AddrInfoFromString(a)
		boot = append(boot, *ai)
	}
	mode := dht.ModeServer
	if n.cfg.NAT {
		mode = dht.ModeAutoServer
	}
	d, err := dht.New(n.host, dht.Mode(mode), dht.ProtocolPrefix("/mycel"), dht.BootstrapPeers(boot...))
	if err != nil {
		return fmt.Errorf("node: dht: %w", err)
	}
	n.dht = d
	if err := d.Bootstrap(ctx); err != nil {
		return fmt.Errorf("node: dht bootstrap: %w", err)
	}
	disc := drouting.NewRoutingDiscovery(d)
	n.wg.Add(1)
	go n.rendezvousLoop(disc)
	return nil
}

func (n *Node) rendezvousLoop(disc *drouting.RoutingDiscovery) {
	defer n.wg.Done()
	interval := n.cfg.RendezvousInterval
	for {
		for _, ns := range n.Namespaces() {
			n.rendezvousOnce(disc, ns)
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

func (n *Node) rendezvousOnce(disc *drouting.RoutingDiscovery, ns string) {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.RendezvousInterval)
	defer cancel()
	if _, err := disc.Advertise(ctx, rendezvous(ns)); err != nil {
		n.log.Debug("node: dht advertise failed", "ns", ns, "err", err)
	}
	peers, err := disc.FindPeers(ctx, rendezvous(ns), discovery.Limit(32))
	if err != nil {
		n.log.Debug("node: dht find peers failed", "ns", ns, "err", err)
		return
	}
	for ai := range peers {
		if ai.ID == n.host.ID() || len(ai.Addrs) == 0 || n.host.Network().Connectedness(ai.ID) == network.Connected {
			continue
		}
		if err := n.host.Connect(ctx, ai); err != nil {
			n.log.Debug("node: dial of a namespace peer failed", "peer", ai.ID, "err", err)
		}
	}
}
