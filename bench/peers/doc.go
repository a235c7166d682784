// Command dscrdt-bench runs Mycel's cluster benchmark harness (package
// github.com/mycelnet/mycel/bench) on go-ds-crdt v0.6.8: the same
// workloads, flags and JSON fields as `mycel bench`. It is its own Go
// module so that Mycel's module does not depend on go-ds-crdt.
//
// Each node is a go-ds-crdt replica set up as its README recommends, on
// the same libp2p, gossipsub and Pebble versions as Mycel (the main
// module's, chosen by MVS):
//
//   - a libp2p host on 127.0.0.1 (tcp or quic), with a connection gater
//     (Isolate blocks both ways and closes connections) and the harness's
//     bench.ByteCounter, so both systems' bytes are counted alike;
//   - gossipsub with go-ds-crdt's PubSubBroadcaster on one topic, with
//     Mycel's outbound and validation queue sizes (1024) so that neither
//     system loses messages to a smaller queue;
//   - a real bitswap DAG syncer per replica (boxo bitswap, blockservice,
//     merkledag) over the replica's own blockstore, kept under /blocks in
//     its own store as ipfs-lite does; no blockstore is shared;
//   - the store: "mem" is a mutex-wrapped map datastore, "pebble" is
//     go-ds-pebble in a temp dir per node with Mycel's MemTableSize, written
//     NoSync and synced (crdt.Datastore.Sync) once per commit before the
//     puts in it return: go-ds-crdt's documented way to make an
//     asynchronous store durable, one WAL fsync per group as Mycel does.
//
// Puts go through a group-commit batcher (batcher.go), because the harness
// calls Put from many goroutines and go-ds-crdt's recommended way to write
// many keys is Batch → Put… → Commit (one delta, one DAG node, one
// broadcast per batch). It uses Mycel's coalescer policy and defaults: at
// most one commit per 2 ms window, a put after a quiet window commits at
// once, a group holds at most 512 puts.
//
// go-ds-crdt options: crdt.DefaultOptions() except
//
//   - RebroadcastInterval 1 s (default 1 min): go-ds-crdt's only
//     anti-entropy; 1 s is Mycel's local-preset SyncInterval, so a healed
//     or joining node hears of the heads as soon as Mycel's would sync;
//   - PutHook marks every key whose value becomes the visible one, local
//     or remote (local deltas are merged through the same path before
//     Commit returns). The hook fires before the set's datastore batch is
//     committed, so the key is reported to the harness when that batch has
//     committed (store.go), not at the hook.
//
// Left at their defaults, and why: MaxBatchDeltaSize 1 MiB (a 512-put
// group is about 60 KiB, so it never splits a group); NumWorkers 5;
// DAGSyncerTimeout 5 min (a per-fetch limit that only matters when a fetch
// fails); RepairInterval 1 h (repair runs only on a dirty store);
// MultiHeadProcessing false. MultiHeadProcessing true processes each
// received head in its own goroutine: much faster here (received heads
// fetch in parallel, so bitswap's 20 ms minimum gap between messages to a
// peer no longer serialises the DAG walk), but in v0.6.8 those goroutines
// write a shared variable (crdt.go:369, a data race `go test -race`
// reports) and Close does not wait for them. DSCRDT_MULTIHEAD=1 turns it
// on for a run; the smoke test keeps the default.
package main
