package node

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/gossip"
	"github.com/mycelnet/mycel/store"
)

// TestApplyReturnsDeltaAndObserved: Apply hands back the committed delta
// (a put's new dot and HLC stamp; a delete's context covering that dot),
// and Observed tells which replicas hold a dot, locally and after
// replication.
func TestApplyReturnsDeltaAndObserved(t *testing.T) {
	ctx := context.Background()
	nodes := cluster(t, 2, nil)
	a, b := mustNS(t, nodes[0], "obs"), mustNS(t, nodes[1], "obs")
	d, err := a.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "k", Value: []byte("v1")})
	if err != nil {
		t.Fatal(err)
	}
	if d.Len() != 1 || d.Key(0) != "k" {
		t.Fatalf("delta names %d keys", d.Len())
	}
	regs := d.Value(0).Registers()
	if len(regs) != 1 || regs[0].Value != "v1" || regs[0].Dot.Replica != nodes[0].Replica() || regs[0].Time.IsZero() {
		t.Fatalf("put delta registers: %+v", regs)
	}
	dot := regs[0].Dot
	if !a.Observed(dot) || b.Observed(dot) {
		t.Fatalf("before replication: a %v, b %v", a.Observed(dot), b.Observed(dot))
	}
	del, err := a.Apply(ctx, crdt.Op{Kind: crdt.OpDelete, Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if c := del.Context(); !c.Contains(dot) {
		t.Fatal("the delete's context does not cover the put's dot")
	}
	connect(t, nodes[0], nodes[1])
	deadline := time.Now().Add(10 * time.Second)
	for !b.Observed(dot) {
		if time.Now().After(deadline) {
			t.Fatal("b never observed the put")
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	if err := nodes[0].Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "k", Value: []byte("v2")}); err != ErrClosed {
		t.Fatalf("apply on a closed node: %v", err)
	}
}

// countingTracer counts the RPCs gossipsub sends.
type countingTracer struct{ sent atomic.Int64 }

func (c *countingTracer) SendRPC(*pubsub.RPC, peer.ID)                         { c.sent.Add(1) }
func (c *countingTracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (c *countingTracer) OnClosedOutboundStream(peer.ID)                       {}
func (c *countingTracer) Join(string)                                          {}
func (c *countingTracer) Leave(string)                                         {}
func (c *countingTracer) Graft(peer.ID, string)                                {}
func (c *countingTracer) Prune(peer.ID, string)                                {}
func (c *countingTracer) ValidateMessage(*pubsub.Message)                      {}
func (c *countingTracer) DeliverMessage(*pubsub.Message)                       {}
func (c *countingTracer) RejectMessage(*pubsub.Message, string)                {}
func (c *countingTracer) DuplicateMessage(*pubsub.Message)                     {}
func (c *countingTracer) ThrottlePeer(peer.ID)                                 {}
func (c *countingTracer) RecvRPC(*pubsub.RPC)                                  {}
func (c *countingTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (c *countingTracer) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (c *countingTracer) UndeliverableMessage(*pubsub.Message)                 {}

// TestWithPubSubOptions: gossipsub options reach the node's pubsub (here a
// raw tracer that sees the publish go out).
func TestWithPubSubOptions(t *testing.T) {
	ctx := context.Background()
	tr := &countingTracer{}
	a, err := Open(ctx, DefaultLocalConfig(), WithPubSubOptions(pubsub.WithRawTracer(tr)))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(ctx, DefaultLocalConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sa, sb := mustNS(t, a, "tr"), mustNS(t, b, "tr")
	connect(t, a, b)
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		if err := sa.Put(ctx, fmt.Sprintf("k%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
		if _, err := sb.Get(ctx, "k0"); err == nil && tr.sent.Load() > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tracer saw %d RPCs sent", tr.sent.Load())
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

// TestStoreKeepsEveryAuth: the store must log every batch auth replication
// can hand it, or a relayed batch would fail to parse when read back.
func TestStoreKeepsEveryAuth(t *testing.T) {
	if gossip.MaxAuthBytes > store.MaxBatchSigBytes {
		t.Fatalf("gossip auths reach %d bytes, the store keeps %d", gossip.MaxAuthBytes, store.MaxBatchSigBytes)
	}
}
