// Package store owns Mycel's durable replica state: for each namespace, the
// key states, the causal context, the set of delta batches applied (by
// origin and sequence number) and the log of those batches, on any
// go-datastore Batching datastore — Pebble on disk by default
// ([OpenPebble]), a locked map in memory for tests and the simulator
// ([OpenMemory]).
//
// The state of every namespace is held in memory ([crdt.Namespace]) and
// written through to the datastore. Every change goes through one commit
// loop: a local operation is prepared and applied in memory under the
// namespace lock, its encoded effects are queued, and the loop writes all
// queued effects in one datastore batch — key states, context ranges, the
// new log entry and its sequence number together, so a crash leaves all or
// nothing of a batch — then syncs once for every durable write in it (group
// commit) before acknowledging. The local operations of one commit become one
// batch (origin = this replica, next sequence number), which is what the
// gossip layer publishes, through [Options.OnCommit].
//
// The store does not talk to the network and does not decide what to
// replicate: it applies what it is given and reports what it committed.
//
// Crash safety: a local write is visible in memory just before it is
// durable. So that a crash cannot make this replica reuse a dot that another
// replica may have seen, reopening a namespace skips this replica's dot
// counter ahead by [DotSkip] and announces the skipped range in a batch of
// its own. A store created for an identity that may have written before
// ([Options.IdentityReused]) counts this replica's dots and batch numbers
// from a random floor at or above [FloorBase] in every namespace, so that
// it never hands out what a lost store of the same identity gave to peers.
// Its own numbers form one run from the floor; it never counts on from
// numbers of the same identity that peers pass on (a lost store's, whose
// next ones may still be on their way).
package store
