package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
)

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
// leaves nodes on one link: in each of six runs two to four of these eight
// nodes still had a single mesh peer after 60 s. The count is the node's
// own (Namespace.MeshPeers, which the mesh-peers metric reports).
//
// The wait is bounded at two and a half times gossipsub's prune backoff
// (1 min): a node that several full peers pruned in the same heartbeats
// may graft none of them again before its backoff with them ends, and in
// one CI run under the race detector a node was still on one link at
// 60 s. With Dlo 1 a node on one link never grafts again, so the bound
// still tells the two apart.
func TestMeshDegreeLowKeepsTwoLinks(t *testing.T) {
	const nodes = 8
	all := make([]*Node, nodes)
	for i := range all {
		cfg := DefaultLocalConfig()
		cfg.MeshDegree, cfg.MeshDegreeLow = 2, 2
		n, err := Open(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		all[i] = n
		t.Cleanup(func() { n.Close() })
	}
	mesh(t, all)
	spaces := make([]*Namespace, nodes)
	for i, n := range all {
		spaces[i] = mustNS(t, n, "links")
	}
	began := time.Now()
	bound := 5 * pubsub.GossipSubPruneBackoff / 2
	deadline := began.Add(bound)
	for {
		var short []string
		for i, s := range spaces {
			if c := len(s.MeshPeers()); c < 2 {
				short = append(short, fmt.Sprintf("node %d: %d mesh peers", i, c))
			}
		}
		// Heartbeats (1 s) first prune meshes over Dhi, then graft those
		// left under Dlo: judge after three.
		if len(short) == 0 && time.Since(began) > 3*time.Second {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", bound, short)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
