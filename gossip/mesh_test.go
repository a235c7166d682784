package gossip

import (
	"context"
	"log/slog"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mycelnet/mycel/crdt"
)

// TestNewMeshPeerIsPulled: a graft of a peer into a namespace's mesh
// starts a full sync of that namespace with it (a scripted server records
// each Hello), once per connection; another namespace's graft, or the same
// peer's after it reconnected, start their own. The periodic sync is an
// hour away and nothing is published, so only these pull.
func TestNewMeshPeerIsPulled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	server, client := loopbackHost(t), loopbackHost(t)
	hellos := serveHellos(server, func(c *conn, _ *frame, _ int) error {
		return c.send(&frame{kind: frameDone})
	})
	got := hellos.list
	waitHellos := func(what string, n int) []helloAt {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for len(got()) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d sessions, want %d: %+v", what, len(got()), n, got())
			}
			time.Sleep(5 * time.Millisecond) // polling interval
		}
		return got()
	}
	cps, err := pubsub.NewGossipSub(ctx, client, PubSubOptions(Limits{})...)
	if err != nil {
		t.Fatal(err)
	}
	watch := NewMeshWatch() // not given to gossipsub: the test grafts
	r, err := New(Config{Host: client, PubSub: cps, Replica: crdt.DeriveReplicaID([]byte(client.ID())),
		SyncInterval: time.Hour, MeshWatch: watch, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, ns := range []string{"a", "b"} {
		if err := r.Join(ns, &seenReplica{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	connectTo := func() {
		t.Helper()
		if err := client.Connect(ctx, server.Peerstore().PeerInfo(server.ID())); err != nil {
			t.Fatal(err)
		}
	}
	connectTo()
	// A new connection syncs every namespace.
	start := len(waitHellos("sync on connecting", 2))

	watch.Graft(server.ID(), TopicName("a"))
	if h := waitHellos("pull on a graft", start+1); !(h[start].ns == "a" && h[start].full) {
		t.Fatalf("graft of a: session %+v, want a full one of a", h[start])
	}
	// Again on the same connection: nothing. Not namespaces: nothing.
	// Then b's graft, which the loop handles after those.
	watch.Graft(server.ID(), TopicName("a"))
	watch.Graft(server.ID(), "/other/topic")
	watch.Graft(server.ID(), TopicName("unjoined"))
	watch.Graft(server.ID(), TopicName("b"))
	if h := waitHellos("pull on b's graft", start+2); !(h[start+1].ns == "b" && h[start+1].full) {
		t.Fatalf("graft of b: session %+v, want a full one of b", h[start+1])
	}
	if n := r.Stats().SyncMeshPulls.Load(); n != 2 {
		t.Fatalf("%d mesh pulls, want 2: a and b once each", n)
	}

	// A new connection, and a graft on it: pulled again.
	if err := client.Network().ClosePeer(server.ID()); err != nil {
		t.Fatal(err)
	}
	connectTo()
	start = len(waitHellos("sync on reconnecting", start+4))
	watch.Graft(server.ID(), TopicName("a"))
	if h := waitHellos("pull on a graft after reconnecting", start+1); !(h[start].ns == "a" && h[start].full) {
		t.Fatalf("graft of a after reconnecting: session %+v, want a full one of a", h[start])
	}
	if n := r.Stats().SyncMeshPulls.Load(); n != 3 {
		t.Fatalf("%d mesh pulls, want 3", n)
	}
}

// TestMeshWatchCountsMeshPeers: MeshPeers follows grafts, prunes and peers
// whose stream closed (gossipsub's removal without a prune), per
// namespace, and ignores topics that are not a namespace's.
func TestMeshWatchCountsMeshPeers(t *testing.T) {
	w := NewMeshWatch()
	a, b, c := peer.ID("a"), peer.ID("b"), peer.ID("c")
	topic := func(ns string) string { return topicPrefix + ns + topicSuffix }
	w.Graft(a, topic("x"))
	w.Graft(b, topic("x"))
	w.Graft(b, topic("x")) // again: still one peer
	w.Graft(c, topic("y"))
	w.Graft(c, "/other/topic")
	if got := []int{len(w.MeshPeers("x")), len(w.MeshPeers("y")), len(w.MeshPeers("z"))}; got[0] != 2 || got[1] != 1 || got[2] != 0 {
		t.Fatalf("after grafts: x, y, z = %v, want 2, 1, 0", got)
	}
	w.Prune(a, topic("x"))
	w.Prune(c, topic("x")) // not in x's mesh: nothing
	w.OnClosedOutboundStream(c)
	if got := []int{len(w.MeshPeers("x")), len(w.MeshPeers("y"))}; got[0] != 1 || got[1] != 0 {
		t.Fatalf("after a prune and a closed stream: x, y = %v, want 1, 0", got)
	}
}
