package node

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// Gater is the node's connection gater: an optional static allowlist and a
// run-time blocklist. Blocking a peer refuses dials both ways and closes
// the connections the caller holds to it (see Node.Block).
type Gater struct {
	allow map[peer.ID]bool // nil: everyone allowed

	mu      sync.RWMutex
	blocked map[peer.ID]bool
}

func newGater(allow []peer.ID) *Gater {
	g := &Gater{blocked: make(map[peer.ID]bool)}
	if len(allow) > 0 {
		g.allow = make(map[peer.ID]bool, len(allow))
		for _, p := range allow {
			g.allow[p] = true
		}
	}
	return g
}

func (g *Gater) ok(p peer.ID) bool {
	if g.allow != nil && !g.allow[p] {
		return false
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	return !g.blocked[p]
}

// Block refuses connections with p until Unblock.
func (g *Gater) Block(p peer.ID) {
	g.mu.Lock()
	g.blocked[p] = true
	g.mu.Unlock()
}

// Unblock allows connections with p again.
func (g *Gater) Unblock(p peer.ID) {
	g.mu.Lock()
	delete(g.blocked, p)
	g.mu.Unlock()
}

func (g *Gater) InterceptPeerDial(p peer.ID) bool                        { return g.ok(p) }
func (g *Gater) InterceptAddrDial(p peer.ID, _ multiaddr.Multiaddr) bool { return g.ok(p) }
func (g *Gater) InterceptAccept(network.ConnMultiaddrs) bool             { return true }
func (g *Gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.ok(p)
}
func (g *Gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// Block cuts this node off from p: dials either way are refused and the
// current connections are closed.
func (n *Node) Block(p peer.ID) {
	n.gater.Block(p)
	_ = n.host.Network().ClosePeer(p)
}

// Unblock lets this node connect with p again.
func (n *Node) Unblock(p peer.ID) { n.gater.Unblock(p) }
