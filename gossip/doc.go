// Package gossip owns replication between Mycel nodes: the gossipsub fast
// path, which publishes every committed batch of local deltas on the
// namespace's topic /mycel/ns/<namespace>/1, and the repair path, the stream
// protocol /mycel/sync/1.0.0, which makes any two connected replicas converge
// without relying on gossip delivering anything.
//
// The decisions — which batches a peer lacks, when a batch must be replaced
// by state reconciliation, which buckets differ, when a publish batch is full
// — are plain functions and types in plan.go and coalesce.go that tests
// drive without sockets. The libp2p code around them (replicator.go:
// joining, sessions, pacing; space.go: publishing and the validator;
// sync.go: both ends of the sync protocol) is a thin driver.
//
// Storage is reached through the [Replica] interface defined here; the
// package never opens storage itself. Every byte from a peer is decoded with
// limits (wire.go, frames.go); malformed input is rejected and counted, never
// applied. Log batches carry their origin's signature (auth.go): the origin
// signs its own as they leave, a group at a time (a message, a sync page)
// under one Merkle root; a gossip receiver checks the message and keeps
// each batch's proof, and a sync client verifies every batch a server
// relays.
package gossip
