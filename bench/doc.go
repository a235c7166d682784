// Package bench owns the cluster benchmark harness behind `mycel bench`:
// the workloads (single-writer, multi-writer, partition-heal, late-joiner,
// sustained), how their figures are measured, the command-line flags and
// the JSON line format of the results.
//
// The harness does not know what it measures. A system under test plugs in
// as a System that starts a Cluster of real nodes; Mycel's is in
// bench/mycelbench, go-ds-crdt's in the separate module bench/peers, so
// both run the same workloads, flags and JSON fields. This package must not
// import Mycel's replication packages: the peer module builds it against
// another replication stack.
//
// Figures are measured the same way for every system: a put is timed from
// call to return (acknowledgement); a key is visible on a node when the
// system reports it there (Hooks.Visible); convergence is the time from the
// first put until every node has every key, confirmed afterwards by asking
// each node how many keys it holds (Cluster.Count); bytes are the libp2p
// stream bytes every node sent, counted by each host's bandwidth reporter.
package bench
