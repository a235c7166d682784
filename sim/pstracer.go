package sim

import (
	"sync/atomic"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/mycelnet/mycel/gossip"
)

// gossipTracer is a pubsub.RawTracer shared by every node: it splits the
// RPCs gossipsub sends into data (published messages: Mycel's delta
// batches) and control (subscriptions, IHAVE/IWANT, GRAFT/PRUNE), and
// counts the copies its seen-cache drops as duplicates. It must not block:
// atomics only.
type gossipTracer struct {
	gossip.NopTracer
	dataMsgs, dataBytes       atomic.Int64
	controlMsgs, controlBytes atomic.Int64
	duplicates, delivered     atomic.Int64
	// throttled counts received messages gossipsub dropped before Mycel's
	// validator saw them (its validation queue or throttle was full);
	// droppedRPCs the RPCs it dropped because a peer's outbound queue was
	// full. Sync repairs both; a run that shows many is overloaded.
	throttled, droppedRPCs atomic.Int64
}

var _ pubsub.RawTracer = (*gossipTracer)(nil)

// SendRPC counts one RPC queued for a peer: each published message in it
// as a data message, its control part and subscriptions (if any) as one
// control message. Sizes are the fields' bytes (protobuf framing, a few
// bytes a field, left out, to keep this cheap on the hot path).
func (g *gossipTracer) SendRPC(rpc *pubsub.RPC, _ peer.ID) {
	var data int
	for _, m := range rpc.Publish {
		data += len(m.Data) + len(m.From) + len(m.Seqno) + len(m.Signature) + len(m.Key) + len(m.GetTopic())
	}
	g.dataMsgs.Add(int64(len(rpc.Publish)))
	g.dataBytes.Add(int64(data))
	if len(rpc.Subscriptions) > 0 || rpc.Control != nil {
		ctl := 0
		for _, s := range rpc.Subscriptions {
			ctl += len(s.GetTopicid()) + 2
		}
		if rpc.Control != nil {
			ctl += proto.Size(rpc.Control)
		}
		g.controlMsgs.Add(1)
		g.controlBytes.Add(int64(ctl))
	}
}

func (g *gossipTracer) DuplicateMessage(*pubsub.Message) { g.duplicates.Add(1) }
func (g *gossipTracer) DeliverMessage(*pubsub.Message)   { g.delivered.Add(1) }
func (g *gossipTracer) DropRPC(*pubsub.RPC, peer.ID)     { g.droppedRPCs.Add(1) }

func (g *gossipTracer) RejectMessage(_ *pubsub.Message, reason string) {
	if reason == pubsub.RejectValidationQueueFull || reason == pubsub.RejectValidationThrottled {
		g.throttled.Add(1)
	}
}
