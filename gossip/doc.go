// Package gossip owns replication between Mycel nodes: the gossipsub fast
// path, which publishes every committed batch of local deltas on the
// namespace's topic /mycel/ns/<namespace>/1, and the repair path, the stream
// protocol /mycel/sync/1.0.0, which makes any two connected replicas converge
// without relying on gossip delivering anything.
//
// The decisions — which batches a peer lacks, when a batch must be replaced
// by state reconciliation, which buckets differ, when a publish batch is full
// — are plain functions and types in plan.go and coalesce.go that tests
// drive without sockets. The libp2p code around them (publish.go, validate.go,
// sync.go) is a thin driver.
//
// Storage is reached through the [Replica] interface defined here; the
// package never opens storage itself. Every byte from a peer is decoded with
// limits (wire.go); malformed input is rejected and counted, never applied.
package gossip
