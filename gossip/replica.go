package gossip

import (
	"context"
	"sync/atomic"

	"github.com/mycelnet/mycel/crdt"
)

// Replica is what replication needs of a namespace's storage. Implementations
// must be safe for concurrent use.
type Replica interface {
	// Seen returns the batches applied, as dots (origin, seq).
	Seen() crdt.Context
	// HasSeen reports whether batch (origin, seq) was applied.
	HasSeen(origin crdt.ReplicaID, seq uint64) bool
	// Kept returns the batches held in the log.
	Kept() crdt.Context
	// Gone returns the batches seen that the log will never serve again
	// (compacted, or received as state). Seen batches neither kept nor gone
	// are still being written.
	Gone() crdt.Context
	// ReadLog returns a logged batch; ok is false if it is not in the log.
	ReadLog(ctx context.Context, origin crdt.ReplicaID, seq uint64) (b Batch, ok bool, err error)
	// ApplyBatch applies a batch of origin's log; it may return before the
	// batch is written (a lost batch is fetched again by sync).
	ApplyBatch(ctx context.Context, b Batch) (applied bool, err error)
	// View calls fn with a consistent snapshot of the state and the batches
	// seen, under a read lock; fn must not keep them.
	View(fn func(st *crdt.Namespace, seen *crdt.Context))
	// Flush waits until everything applied so far is durable. A server
	// calls it before sending, so that no peer ever sees a write this
	// replica could still lose in a crash (and then reuse its dot).
	Flush(ctx context.Context) error
	// TrackChanges starts recording the keys changed from now on; a
	// reconciliation makes one before its snapshot.
	TrackChanges() ChangeTracker
	// ApplyState applies key deltas from a state reconciliation (not
	// recorded in t), then, if merge is set and t recorded no change since
	// its last Take, the peer's seen batches and context as of its
	// snapshot; it reports whether it merged them.
	ApplyState(ctx context.Context, deltas []crdt.Delta, seen, cctx crdt.Context, t ChangeTracker, merge bool) (merged bool, err error)
}

// ChangeTracker records the keys changed in a replica since it was made.
type ChangeTracker interface {
	// Take returns the keys changed since the last Take and forgets
	// them; overflow reports that too many changed to name (for good).
	Take() (keys []string, overflow bool)
	// Stop ends the recording.
	Stop()
}

// Stats counts what replication did. All fields are safe to read while the
// replicator runs.
type Stats struct {
	MessagesPublished     atomic.Int64 // gossip messages published
	PublishNoPeers        atomic.Int64 // batches not published: no peer in the topic
	BatchesPublished      atomic.Int64
	BytesPublished        atomic.Int64
	MessagesReceived      atomic.Int64 // accepted gossip messages from others
	BatchesReceived       atomic.Int64
	BatchesApplied        atomic.Int64 // batches that were new
	BytesReceived         atomic.Int64
	RejectMalformed       atomic.Int64 // messages or frames that did not decode
	RejectOrigin          atomic.Int64 // batch origin is not the signer
	RejectNotWriter       atomic.Int64 // signer not in the namespace's writer allowlist
	RejectForged          atomic.Int64 // gossip messages and sync batches whose origin signature is missing or does not verify
	IgnoredDuplicate      atomic.Int64 // gossip messages whose every batch was applied already (forwarded if genuine, not applied again)
	IgnoredAhead          atomic.Int64 // batches whose context runs far ahead of another replica's writes held here
	SyncSessions          atomic.Int64 // sync sessions completed as client
	SyncServed            atomic.Int64 // sync sessions served
	SyncRefused           atomic.Int64 // sync requests refused by rate limits
	SyncHeldBack          atomic.Int64 // sessions served that left batches to gossip (see Config.SyncGrace)
	SyncFollowUps         atomic.Int64 // sessions run again after a server held batches back
	SyncTurnsTakenOver    atomic.Int64 // client sessions that took their namespace's pull turn over from a holder past its limit (see pullTurns)
	SyncSessionsAbandoned atomic.Int64 // client sessions reset when their turn was taken over before their server answered
	SyncPeersHeardAgain   atomic.Int64 // syncs started with peers whose session was abandoned, once one of them forwarded a gossip message
	SyncGapPulls          atomic.Int64 // syncs started with a peer that forwarded a batch past a gap gossip left open (see gapWatch)
	SyncMeshPulls         atomic.Int64 // full syncs of a namespace queued with a peer new in its mesh (see MeshWatch)
	SyncBatchesIn         atomic.Int64
	SyncBatchesHeld       atomic.Int64 // sync batches that were applied already when they came (not checked or applied again)
	SyncBatchesOut        atomic.Int64
	SyncBytesIn           atomic.Int64
	SyncBytesOut          atomic.Int64
	StateSessions         atomic.Int64 // sync sessions that reconciled state
	StateKeysIn           atomic.Int64
	// StateMergesSkipped counts reconciliations that applied their key
	// deltas but left the merge of the server's seen batches and context
	// to a later session: keys kept changing while they ran.
	StateMergesSkipped atomic.Int64
	// StateKeysTooLarge counts keys left out of a state answer because
	// their delta would not fit in a sync frame (grown past it by
	// concurrent remote writes); such a key stays diverged until a write
	// shrinks it, and the answer's merge is skipped.
	StateKeysTooLarge atomic.Int64
}
