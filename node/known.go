package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/multiformats/go-multiaddr"
)

// The node remembers the peers it was connected to, in its store, and dials
// them when it starts again. Without it, a restarted node reached only its
// bootstrap peers: one with none (the first node of a cluster, which the
// others bootstrap from) waited for the others' redials, whose backoff had
// grown while it was down — 2 to 12 s in the simulator's soak (5 s cap), up
// to 90 s with the default 1 min cap — before it heard of any write.
const (
	knownPeersMeta = "known-peers"
	// maxKnownPeers and maxKnownAddrs bound the record: enough to find the
	// cluster again, small enough to dial at once.
	maxKnownPeers = 32
	maxKnownAddrs = 4
	// maxKnownPeersBytes bounds the record a decoder accepts.
	maxKnownPeersBytes = 64 << 10
	// knownPeersEvery is how often the record is brought up to date (only
	// written when the set of peers changed).
	knownPeersEvery = 5 * time.Second
	// knownPeerTries is how many times a remembered peer is dialled at
	// start, the waits between doubling from knownPeerRetry.
	knownPeerTries = 3
	knownPeerRetry = 2 * time.Second
)

// knownPeer is one remembered peer as stored.
type knownPeer struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

// encodeKnownPeers returns the record for peers (at most maxKnownPeers,
// each with at most maxKnownAddrs addresses).
func encodeKnownPeers(peers []peer.AddrInfo) []byte {
	out := make([]knownPeer, 0, len(peers))
	for _, ai := range peers {
		kp := knownPeer{ID: ai.ID.String(), Addrs: []string{}}
		for _, a := range ai.Addrs {
			kp.Addrs = append(kp.Addrs, a.String())
		}
		out = append(out, kp)
	}
	b, _ := json.Marshal(out) // strings only: cannot fail
	return b
}

// decodeKnownPeers parses a known-peers record. Anything it does not
// expect — other fields, too many peers or addresses, an id or address
// that does not parse, a peer twice — makes the whole record an error.
func decodeKnownPeers(b []byte) ([]peer.AddrInfo, error) {
	if len(b) > maxKnownPeersBytes {
		return nil, fmt.Errorf("%d bytes, max %d", len(b), maxKnownPeersBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var kps []knownPeer
	if err := dec.Decode(&kps); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the list")
	}
	if len(kps) > maxKnownPeers {
		return nil, fmt.Errorf("%d peers, max %d", len(kps), maxKnownPeers)
	}
	out := make([]peer.AddrInfo, 0, len(kps))
	seen := make(map[peer.ID]bool, len(kps))
	for i, kp := range kps {
		id, err := peer.Decode(kp.ID)
		if err != nil {
			return nil, fmt.Errorf("peer %d: id: %w", i, err)
		}
		if seen[id] {
			return nil, fmt.Errorf("peer %d: %s listed twice", i, id)
		}
		seen[id] = true
		if len(kp.Addrs) == 0 || len(kp.Addrs) > maxKnownAddrs {
			return nil, fmt.Errorf("peer %d: %d addresses, want 1 to %d", i, len(kp.Addrs), maxKnownAddrs)
		}
		ai := peer.AddrInfo{ID: id}
		for _, s := range kp.Addrs {
			a, err := multiaddr.NewMultiaddr(s)
			if err != nil {
				return nil, fmt.Errorf("peer %d: address %q: %w", i, s, err)
			}
			ai.Addrs = append(ai.Addrs, a)
		}
		out = append(out, ai)
	}
	return out, nil
}

// connectedPeers returns up to maxKnownPeers peers this node is connected
// to, with up to maxKnownAddrs of the addresses the peerstore holds for
// each (those the peer announced, and the one it was reached at), sorted
// by id. Peers with no address are left out.
func (n *Node) connectedPeers() []peer.AddrInfo {
	ids := n.host.Network().Peers()
	slices.Sort(ids)
	var out []peer.AddrInfo
	for _, id := range ids {
		if len(out) == maxKnownPeers {
			break
		}
		addrs := n.host.Peerstore().Addrs(id)
		if len(addrs) == 0 {
			continue
		}
		slices.SortFunc(addrs, func(a, b multiaddr.Multiaddr) int { return bytes.Compare(a.Bytes(), b.Bytes()) })
		out = append(out, peer.AddrInfo{ID: id, Addrs: addrs[:min(len(addrs), maxKnownAddrs)]})
	}
	return out
}

// rememberPeers loads the peers of the last run, dials them, and keeps
// the record up to date until the node closes (see saveKnownPeers).
func (n *Node) rememberPeers(ctx context.Context) {
	b, ok, err := n.st.GetMeta(ctx, knownPeersMeta)
	switch {
	case err != nil:
		n.log.Warn("node: read the known peers", "err", err)
	case ok:
		peers, err := decodeKnownPeers(b)
		if err != nil {
			// Only a hint for finding the cluster sooner: start without
			// it, and write a sound one over it.
			n.log.Warn("node: the known peers record does not decode; ignored", "err", err)
			break
		}
		n.knownPeers = b
		n.dialKnownPeers(peers)
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		t := time.NewTicker(knownPeersEvery)
		defer t.Stop()
		for {
			select {
			case <-n.ctx.Done():
				return
			case <-t.C:
			}
			n.saveKnownPeers(n.ctx)
		}
	}()
}

// forgetPeers removes a record an earlier run kept: a node told to forget
// its peers keeps none on disk. A failure is only logged, as the record is
// never read while ForgetPeers is set.
func (n *Node) forgetPeers(ctx context.Context) {
	if _, ok, err := n.st.GetMeta(ctx, knownPeersMeta); err != nil || !ok {
		return
	}
	if err := n.st.DeleteMeta(ctx, knownPeersMeta); err != nil {
		n.log.Warn("node: remove the known peers record", "err", err)
	}
}

// saveKnownPeers writes the connected peers over the record when they
// differ from it. With no peer connected (a partition, a restart still
// dialling, a crash that took the network first) it keeps the old one.
// Called from one goroutine at a time: the saver, then Close.
func (n *Node) saveKnownPeers(ctx context.Context) {
	peers := n.connectedPeers()
	if len(peers) == 0 {
		return
	}
	b := encodeKnownPeers(peers)
	if bytes.Equal(b, n.knownPeers) {
		return
	}
	if err := n.st.PutMeta(ctx, knownPeersMeta, b); err != nil {
		if ctx.Err() == nil {
			n.log.Warn("node: write the known peers", "err", err)
		}
		return
	}
	n.knownPeers = b
}

// dialKnownPeers dials each remembered peer that is not this node, all at
// once, up to knownPeerTries times while it is not connected.
func (n *Node) dialKnownPeers(peers []peer.AddrInfo) {
	self := n.host.ID()
	for _, ai := range peers {
		if ai.ID == self {
			continue
		}
		// The peerstore keeps the addresses while dials go on; identify
		// adds the peer's own once connected.
		n.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			wait := knownPeerRetry
			for try := 1; ; try++ {
				if n.host.Network().Connectedness(ai.ID) == network.Connected {
					return
				}
				ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
				err := n.host.Connect(ctx, ai)
				cancel()
				if err == nil {
					return
				}
				if try == knownPeerTries {
					n.log.Debug("node: known peer not reached", "peer", ai.ID, "err", err)
					return
				}
				select {
				case <-n.ctx.Done():
					return
				case <-time.After(wait):
				}
				wait *= 2
			}
		}()
	}
}
