package gossip

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
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
// It also keeps each namespace's mesh peers (MeshPeers): a node on a
// single mesh link, or none, hears its namespace's batches late (see
// node.Config.MeshDegreeLow).
//
// Pass it to gossipsub with pubsub.WithRawTracer when making the PubSub,
// and to New in Config.MeshWatch. Its tracer methods run on gossipsub's
// event loop and never block; MeshPeers may be called from any goroutine.
type MeshWatch struct {
	NopTracer
	r atomic.Pointer[Replicator]

	mu   sync.Mutex
	mesh map[string]map[peer.ID]bool // namespace -> mesh peers
}

// NewMeshWatch returns a MeshWatch for one Replicator.
func NewMeshWatch() *MeshWatch { return &MeshWatch{} }

var _ pubsub.RawTracer = (*MeshWatch)(nil)

// Graft implements pubsub.RawTracer: p joined this node's mesh in topic.
func (w *MeshWatch) Graft(p peer.ID, topic string) {
	ns, ok := namespaceOf(topic)
	if !ok {
		return
	}
	w.mu.Lock()
	if w.mesh == nil {
		w.mesh = make(map[string]map[peer.ID]bool)
	}
	if w.mesh[ns] == nil {
		w.mesh[ns] = make(map[peer.ID]bool)
	}
	w.mesh[ns][p] = true
	w.mu.Unlock()
	if r := w.r.Load(); r != nil {
		r.grafted(p, ns)
	}
}

// Prune implements pubsub.RawTracer: p left this node's mesh in topic.
func (w *MeshWatch) Prune(p peer.ID, topic string) {
	ns, ok := namespaceOf(topic)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.mesh[ns], p)
}

// OnClosedOutboundStream implements pubsub.RawTracer: gossipsub drops a
// peer whose stream closed from every mesh, with no Prune.
func (w *MeshWatch) OnClosedOutboundStream(p peer.ID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, peers := range w.mesh {
		delete(peers, p)
	}
}

// MeshPeers returns the peers this node's gossipsub mesh holds in the
// namespace, in no particular order.
func (w *MeshWatch) MeshPeers(ns string) []peer.ID {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]peer.ID, 0, len(w.mesh[ns]))
	for p := range w.mesh[ns] {
		out = append(out, p)
	}
	return out
}

// namespaceOf returns the namespace whose gossip topic is topic.
func namespaceOf(topic string) (string, bool) {
	ns, ok := strings.CutPrefix(topic, topicPrefix)
	if !ok {
		return "", false
	}
	return strings.CutSuffix(ns, topicSuffix)
}

// NopTracer is a pubsub.RawTracer that does nothing: a tracer embeds it
// and implements only the events it watches.
type NopTracer struct{}

func (NopTracer) Join(string)                                          {}
func (NopTracer) Leave(string)                                         {}
func (NopTracer) Graft(peer.ID, string)                                {}
func (NopTracer) Prune(peer.ID, string)                                {}
func (NopTracer) ValidateMessage(*pubsub.Message)                      {}
func (NopTracer) DeliverMessage(*pubsub.Message)                       {}
func (NopTracer) RejectMessage(*pubsub.Message, string)                {}
func (NopTracer) DuplicateMessage(*pubsub.Message)                     {}
func (NopTracer) ThrottlePeer(peer.ID)                                 {}
func (NopTracer) RecvRPC(*pubsub.RPC)                                  {}
func (NopTracer) SendRPC(*pubsub.RPC, peer.ID)                         {}
func (NopTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (NopTracer) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (NopTracer) UndeliverableMessage(*pubsub.Message)                 {}
func (NopTracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (NopTracer) OnClosedOutboundStream(peer.ID)                       {}

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
// its mesh, once per connection: the pull for an earlier graft on the same
// connection covers what gossipsub's later prunes and grafts of the peer
// could leave out, which multi-hop gossip and the gap check bring. Not
// while a full sync of every namespace with the peer is queued and not
// started (a new connection's): it brings the same. The caller holds r.mu.
func (r *Replicator) queueMeshPull(m meshPull) {
	s := r.spaces[m.ns]
	if s == nil {
		return
	}
	conn := r.oldestConn(m.p)
	if conn == "" {
		return // gone again: its next connection syncs
	}
	if s.meshPulled[m.p] == conn {
		return
	}
	if q := r.syncing[m.p]; q != nil && q.all && !q.periodic {
		return
	}
	if !r.queueWork(m.p, func(q *syncQueue) bool { q.meshSpaces = append(q.meshSpaces, s); return true }) {
		return
	}
	if len(s.meshPulled) >= maxMeshPulled {
		for p := range s.meshPulled {
			if r.oldestConn(p) == "" {
				delete(s.meshPulled, p)
			}
		}
		if len(s.meshPulled) >= maxMeshPulled {
			// Forget them all: at worst a peer's next graft on a
			// connection already pulled pulls once more.
			clear(s.meshPulled)
		}
	}
	if s.meshPulled == nil {
		s.meshPulled = make(map[peer.ID]string)
	}
	s.meshPulled[m.p] = conn
	r.stats.SyncMeshPulls.Add(1)
}

// maxMeshPulled bounds a namespace's memory of mesh pulls.
const maxMeshPulled = 1024

// oldestConn names the connection to p that was opened first of those
// open (the smaller id of two opened at once); "" if there is none. A pull
// is remembered by connection, not by time: in the simulator's virtual
// time a reconnection can happen at the very instant of a pull.
func (r *Replicator) oldestConn(p peer.ID) string {
	var oldest network.Conn
	for _, c := range r.cfg.Host.Network().ConnsToPeer(p) {
		if oldest == nil {
			oldest = c
			continue
		}
		o, co := oldest.Stat().Opened, c.Stat().Opened
		if co.Before(o) || (co.Equal(o) && c.ID() < oldest.ID()) {
			oldest = c
		}
	}
	if oldest == nil {
		return ""
	}
	return oldest.ID()
}
