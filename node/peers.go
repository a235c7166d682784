package node

import (
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mycelnet/mycel/gossip"
)

// PeerInfo describes a peer this node knows.
type PeerInfo struct {
	ID        peer.ID
	Addrs     []string
	Connected bool
	// LastSync is the latest completed sync with the peer, either way, over
	// all namespaces; zero if none yet.
	LastSync time.Time
}

// Peers returns the peers this node is connected to or has synced with,
// sorted by id.
func (n *Node) Peers() []PeerInfo {
	byID := make(map[peer.ID]*PeerInfo)
	get := func(p peer.ID) *PeerInfo {
		pi := byID[p]
		if pi == nil {
			pi = &PeerInfo{ID: p, Connected: n.host.Network().Connectedness(p) == network.Connected}
			for _, a := range n.host.Peerstore().Addrs(p) {
				pi.Addrs = append(pi.Addrs, a.String())
			}
			byID[p] = pi
		}
		return pi
	}
	for _, p := range n.host.Network().Peers() {
		get(p)
	}
	for _, st := range n.rep.PeerStatus() {
		pi := get(st.Peer)
		for _, t := range []time.Time{st.LastPull, st.LastServed} {
			if t.After(pi.LastSync) {
				pi.LastSync = t
			}
		}
	}
	out := make([]PeerInfo, 0, len(byID))
	for _, pi := range byID {
		out = append(out, *pi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// SyncStatus returns, per peer, the state of sync for this namespace: when
// this node last pulled from the peer and served its pull, how many batches
// the last pull brought, and how many of ours the peer lacked then.
func (s *Namespace) SyncStatus() []gossip.PeerSync {
	var out []gossip.PeerSync
	for _, st := range s.n.rep.PeerStatus() {
		if st.Namespace == s.Name() {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}
