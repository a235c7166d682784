package node

import (
	"testing"
	"time"
)

// TestGraftsReachTheReplicator: the node hands gossipsub's grafts to its
// replicator, which pulls the namespace from each new mesh peer (the pull
// itself: gossip's TestNewMeshPeerIsPulled). Real hosts on loopback.
func TestGraftsReachTheReplicator(t *testing.T) {
	nodes := cluster(t, 2, func(_ int, c *Config) { c.SyncInterval = time.Hour })
	connect(t, nodes[0], nodes[1])
	mustNS(t, nodes[0], "m")
	mustNS(t, nodes[1], "m")
	for _, nd := range nodes {
		waitFor(t, "a pull on a graft", 20*time.Second, func() bool { return nd.Stats().SyncMeshPulls.Load() > 0 })
	}
}
