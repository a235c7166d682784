package gossip

import (
	"slices"
	"strings"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// MeshWatch tells a Replicator when gossipsub adds a peer to this node's
// mesh in a namespace's topic. Gossipsub sends a message only to the mesh
// peers of the moment (and to no one while the mesh is empty), and never
// sends a new mesh peer what it published before: batches a node wrote
// in its first milliseconds in a namespace, before the mesh formed, would
// reach that peer only by the gap check or the periodic sync, a second or
// more later. So the Replicator pulls the namespace from a peer new in
// its mesh at once, once per connection (Stats.SyncMeshPulls).
//
// Pass it to gossipsub with pubsub.WithRawTracer when making the PubSub,
// and to New in Config.MeshWatch. Its methods run on gossipsub's event
// loop and never block.
type MeshWatch struct {
	r atomic.Pointer[Replicator]
}

// NewMeshWatch returns a MeshWatch for one Replicator.
func NewMeshWatch() *MeshWatch { return &MeshWatch{} }

var _ pubsub.RawTracer = (*MeshWatch)(nil)

// Graft implements pubsub.RawTracer: p joined this node's mesh in topic.
func (w *MeshWatch) Graft(p peer.ID, topic string) {
	ns, ok := strings.CutPrefix(topic, topicPrefix)
	if !ok {
		return
	}
	if ns, ok = strings.CutSuffix(ns, topicSuffix); !ok {
		return
	}
	if r := w.r.Load(); r != nil {
		r.grafted(p, ns)
	}
}

func (*MeshWatch) AddPeer(peer.ID, protocol.ID)                         {}
func (*MeshWatch) RemovePeer(peer.ID)                                   {}
func (*MeshWatch) Join(string)                                          {}
func (*MeshWatch) Leave(string)                                         {}
func (*MeshWatch) Prune(peer.ID, string)                                {}
func (*MeshWatch) ValidateMessage(*pubsub.Message)                      {}
func (*MeshWatch) DeliverMessage(*pubsub.Message)                       {}
func (*MeshWatch) RejectMessage(*pubsub.Message, string)                {}
func (*MeshWatch) DuplicateMessage(*pubsub.Message)                     {}
func (*MeshWatch) ThrottlePeer(peer.ID)                                 {}
func (*MeshWatch) RecvRPC(*pubsub.RPC)                                  {}
func (*MeshWatch) SendRPC(*pubsub.RPC, peer.ID)                         {}
func (*MeshWatch) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (*MeshWatch) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (*MeshWatch) UndeliverableMessage(*pubsub.Message)                 {}
func (*MeshWatch) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (*MeshWatch) OnClosedOutboundStream(peer.ID)                       {}

// meshPull is a peer new in this node's mesh in a namespace.
type meshPull struct {
	p  peer.ID
	ns string
}

// grafted queues a pull of ns from p for the sync loop. It runs on
// gossipsub's event loop, so it takes no lock (Join holds r.mu while it
// waits on that loop) and drops the pull when the queue is full: the gap
// check and the periodic sync still bring what it would have.
func (r *Replicator) grafted(p peer.ID, ns string) {
	select {
	case r.meshPulls <- meshPull{p, ns}:
	default:
	}
}

// queueMeshPull queues a full sync of the namespace with the peer new in
// its mesh, once per connection: a pull for an earlier graft on the same
// connection, or the sync every new connection starts (its batches were
// all pulled then), covers what gossipsub's later grafts and prunes of
// the peer could leave out, which multi-hop gossip and the gap check
// bring. The caller holds r.mu.
func (r *Replicator) queueMeshPull(m meshPull) {
	s := r.spaces[m.ns]
	if s == nil {
		return
	}
	since := r.connectedSince(m.p)
	if since.IsZero() {
		return // gone again: its next connection syncs
	}
	if last, ok := s.meshPulled[m.p]; ok && !last.Before(since) {
		return
	}
	if q := r.syncing[m.p]; q != nil && slices.Contains(q.spaces, s) {
		return // its first sync, queued, brings the same
	}
	if !r.queueWork(m.p, func(q *syncQueue) bool { q.meshSpaces = append(q.meshSpaces, s); return true }) {
		return
	}
	if s.meshPulled == nil || len(s.meshPulled) >= maxMeshPulled {
		// Forget them all: at worst a peer's next graft on a connection
		// already pulled pulls once more.
		s.meshPulled = make(map[peer.ID]time.Time)
	}
	s.meshPulled[m.p] = time.Now()
	r.stats.SyncMeshPulls.Add(1)
}

// maxMeshPulled bounds a namespace's memory of mesh pulls.
const maxMeshPulled = 1024

// connectedSince returns when the oldest open connection to p was opened;
// zero if there is none.
func (r *Replicator) connectedSince(p peer.ID) time.Time {
	var since time.Time
	for _, c := range r.cfg.Host.Network().ConnsToPeer(p) {
		if o := c.Stat().Opened; since.IsZero() || o.Before(since) {
			since = o
		}
	}
	return since
}
