// Package crdt owns Mycel's replicated data types: delta-state CRDTs
// (Almeida, Shoker, Baquero, "Delta State Replicated Data Types", 2018) over
// one shared causal context per namespace, the hybrid logical clock that
// orders register writes, and the canonical binary encoding of states and
// deltas.
//
// The package is a pure value library. It starts no goroutines, takes no
// locks, reads no clock, draws no random numbers and does no I/O: replica
// ids, clock readings and limits are passed in by the caller, and a lint test
// (purity_test.go) rejects imports that would break this. Callers that share
// a value between goroutines must serialise access themselves.
//
// # Model
//
// A [Namespace] is a keyspace. Each key holds a [Value], a set of dot stores
// tagged by kind: a multi-value [KindRegister] read last-writer-wins by
// [Timestamp] then replica, a causal PN [KindCounter], an add-wins
// observed-remove [KindSet], an observed-remove [KindMap] of nested values and
// an enable-wins [KindFlag]. Every write creates a fresh [Dot] (replica,
// counter); removal is expressed by the causal [Context] alone, so no
// tombstones are kept.
//
// The local write path is two steps:
//
//	d, err := ns.Prepare(op, replica, clock.Now(physicalMillis)) // read-only
//	// persist d (store/), then:
//	ns.ApplyDelta(d)
//
// A [Delta] is itself a state fragment: deltas from any replica can be
// joined in any order, any number of times, and give the same state.
// [JoinDeltas] coalesces many deltas into one batch for the wire.
//
// # Encoding
//
// States, deltas and contexts have one canonical byte form (protobuf wire
// format with fields in ascending order, repeated entries sorted, no map
// fields; see docs/wire.proto). Two states are equal iff their canonical bytes
// are equal, which is what [Namespace.Digest] hashes. Decoders take [Limits]
// and return errors wrapping [ErrMalformed] or [ErrLimit]; they never panic.
package crdt
