package node

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mycelnet/mycel/gossip"
)

// meshPeers is a pubsub.RawTracer that keeps one node's gossip mesh per
// topic, from its GRAFT and PRUNE events and its peers leaving.
type meshPeers struct {
	gossip.NopTracer
	mu   sync.Mutex
	mesh map[string]map[peer.ID]bool
}

var _ pubsub.RawTracer = (*meshPeers)(nil)

func (m *meshPeers) Graft(p peer.ID, topic string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mesh == nil {
		m.mesh = make(map[string]map[peer.ID]bool)
	}
	if m.mesh[topic] == nil {
		m.mesh[topic] = make(map[peer.ID]bool)
	}
	m.mesh[topic][p] = true
}

func (m *meshPeers) Prune(p peer.ID, topic string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.mesh[topic], p)
}

// OnClosedOutboundStream is how gossipsub removes a peer that went away
// from its meshes: it calls no Prune for it.
func (m *meshPeers) OnClosedOutboundStream(p peer.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, peers := range m.mesh {
		delete(peers, p)
	}
}

// count returns the node's mesh sizes, one per topic.
func (m *meshPeers) count() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]int, len(m.mesh))
	for topic, peers := range m.mesh {
		out[topic] = len(peers)
	}
	return out
}

// TestMeshDegreeLowReachesGossipsub: the node runs gossipsub with the Dlo
// its Config asks for, and gossipsub's own at the default degree.
func TestMeshDegreeLowReachesGossipsub(t *testing.T) {
	for _, c := range []struct{ d, lo, want int }{{2, 2, 2}, {2, 0, 1}, {0, 0, pubsub.GossipSubDlo}, {0, 2, 2}, {8, 8, 8}} {
		cfg := DefaultLocalConfig()
		cfg.MeshDegree, cfg.MeshDegreeLow = c.d, c.lo
		n, err := Open(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := n.meshParams.Dlo; got != c.want {
			t.Errorf("MeshDegree %d, MeshDegreeLow %d: gossipsub Dlo %d, want %d", c.d, c.lo, got, c.want)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMeshDegreeLowKeepsTwoLinks: at mesh degree 2 with MeshDegreeLow 2,
// every node of a fully connected cluster has at least two mesh peers in
// the namespace once a few heartbeats have pruned the meshes that grew past
// Dhi, so no pair of nodes forms a mesh island of its own. With the default
// Dlo of 1 the meshes start the same (each node grafts 2), but pruning
// leaves nodes on one link: in each of four runs two of these eight nodes
// still had a single mesh peer after 60 s.
func TestMeshDegreeLowKeepsTwoLinks(t *testing.T) {
	const nodes = 8
	tracers := make([]*meshPeers, nodes)
	all := make([]*Node, nodes)
	for i := range all {
		tracers[i] = &meshPeers{}
		cfg := DefaultLocalConfig()
		cfg.MeshDegree, cfg.MeshDegreeLow = 2, 2
		n, err := Open(context.Background(), cfg, WithPubSubOptions(pubsub.WithRawTracer(tracers[i])))
		if err != nil {
			t.Fatal(err)
		}
		all[i] = n
		t.Cleanup(func() { n.Close() })
	}
	mesh(t, all)
	for _, n := range all {
		mustNS(t, n, "links")
	}
	began := time.Now()
	deadline := began.Add(60 * time.Second)
	for {
		var short []string
		for i, tr := range tracers {
			counts := tr.count()
			if len(counts) != 1 {
				short = append(short, fmt.Sprintf("node %d: meshes %v", i, counts))
				continue
			}
			for topic, c := range counts {
				if c < 2 {
					short = append(short, fmt.Sprintf("node %d: %d mesh peers in %s", i, c, topic))
				}
			}
		}
		// Heartbeats (1 s) first prune meshes over Dhi, then graft those
		// left under Dlo: judge after three.
		// The node's own count (Namespace.MeshPeers, the metric's) must
		// show two or more as well.
		for i, n := range all {
			if c := mustNS(t, n, "links").MeshPeers(); c < 2 {
				short = append(short, fmt.Sprintf("node %d: Namespace.MeshPeers %d", i, c))
			}
		}
		if len(short) == 0 && time.Since(began) > 3*time.Second {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s: %v", short)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
