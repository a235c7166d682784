package node

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/gossip"
)

// TestGossipGapIsPulled: a node that gets, by gossip, an origin's batch 3
// without its batch 2 starts a sync with the peer that forwarded it, a
// grace later, with no periodic sync due for an hour (a raw libp2p peer
// as the origin, publishing on the topic and answering the sync protocol;
// real hosts on loopback). This is the path from pubsub through the
// receive loop to a sync session.
func TestGossipGapIsPulled(t *testing.T) {
	ctx := t.Context()
	victim := cluster(t, 1, func(_ int, c *Config) { c.SyncInterval = time.Hour })[0]
	mustNS(t, victim, "g")
	origin, topic := evilPeer(t, ctx, victim, "g")
	var hellos atomic.Int64
	origin.SetStreamHandler(gossip.ProtocolSync, func(s network.Stream) {
		defer s.Close()
		// Count the session and end it: a reset is enough for the
		// client, which logs it.
		buf := make([]byte, 1)
		if _, err := s.Read(buf); err == nil {
			hellos.Add(1)
		}
		s.Reset()
	})
	self := crdt.DeriveReplicaID([]byte(origin.ID()))
	st := crdt.NewNamespace(crdt.Limits{})
	publish := func(seq uint64, key string) {
		d, err := st.Prepare(crdt.Op{Kind: crdt.OpPut, Key: key, Value: []byte("v")}, self, crdt.Timestamp{Wall: int64(seq)})
		if err != nil {
			t.Fatal(err)
		}
		st.ApplyDelta(d, nil)
		b := gossip.Batch{Origin: self, Seq: seq, Delta: d, Encoded: d.Encode(nil)}
		if seq == 2 {
			return // lost on the way
		}
		if err := topic.Publish(ctx, signed(t, origin, "g", self, b)); err != nil {
			t.Fatal(err)
		}
	}
	ns := mustNS(t, victim, "g")
	publish(1, "a")
	waitFor(t, "batch 1", 10*time.Second, func() bool { _, err := ns.Get(ctx, "a"); return err == nil })
	before := hellos.Load() // the sync on connecting, if it reached the handler
	publish(2, "b")
	publish(3, "c")
	waitFor(t, "batch 3", 10*time.Second, func() bool { _, err := ns.Get(ctx, "c"); return err == nil })
	waitFor(t, "a sync with the forwarder", 20*time.Second, func() bool { return hellos.Load() > before })
	if n := victim.Stats().SyncGapPulls.Load(); n < 1 {
		t.Fatalf("%d gap pulls counted", n)
	}
}
