package sim

import "github.com/mycelnet/mycel/gossip"

// Report is the outcome of one run. Its JSON form is the simulator's
// output contract (DESIGN.md §8): the top level always has converged,
// convergence_ms, lost_writes, ops, messages, bytes and propagation_ms.
type Report struct {
	Scenario string `json:"scenario"`
	Seed     uint64 `json:"seed"`
	Nodes    int    `json:"nodes"`
	// Backend is simnet (nodes in this process over a simulated network)
	// or netns (daemon processes in network namespaces).
	Backend string `json:"backend"`

	// Passed: every budget of the scenario's Expect was met; Failures
	// says which were not and by how much.
	Passed   bool     `json:"passed"`
	Failures []string `json:"failures,omitempty"`

	// Converged: every node's digest was equal within the deadline after
	// the last heal and the last write.
	Converged bool `json:"converged"`
	// ConvergenceMS is the time from the last heal or write (whichever is
	// later) until every digest was equal, polled every 50 ms; -1 if
	// they never were.
	ConvergenceMS float64 `json:"convergence_ms"`
	// LostWrites counts the differences between the nodes' final states
	// and the reference model, one per node and key; Lost lists up to
	// maxLostListed of them.
	LostWrites int         `json:"lost_writes"`
	Lost       []LostWrite `json:"lost,omitempty"`

	// LostOnWiped counts acknowledged ops that only nodes crashed without
	// their disk held when the store was wiped and that no live node shows
	// at the end: gone by the scenario's own doing, so left out of the
	// model and not counted as lost writes.
	LostOnWiped int `json:"lost_on_wiped"`
	// DotsReused counts dots two ops were given: a replica reused its dot
	// counter (after a wipe), which loses writes however they merge.
	DotsReused int `json:"dots_reused"`
	// DotsReusedOps names the ops behind the first ten reused dots.
	DotsReusedOps []string `json:"dots_reused_ops,omitempty"`

	// Ops is the number of acknowledged ops; FailedOps those that returned
	// an error on a running node; SkippedOps those planned on a crashed
	// node, or on a wiped one before its first sync (not attempted).
	Ops        int `json:"ops"`
	FailedOps  int `json:"failed_ops"`
	SkippedOps int `json:"skipped_ops"`
	// Messages and Bytes count the UDP packets (QUIC: gossip, sync and
	// transport control together) and their bytes delivered by the
	// simulated network.
	Messages int64 `json:"messages"`
	Bytes    int64 `json:"bytes"`
	// Dropped counts packets the network discarded.
	Dropped Dropped `json:"dropped"`
	// Mesh (simnet backend) is the shape of the live nodes' gossip mesh at
	// the end of the run.
	Mesh *MeshShape `json:"mesh,omitempty"`
	// CrossedCut (netns backend) counts packets the hub's bridge carried
	// between two nodes while a standing partition separated them, seen
	// by a packet socket in the hub from the moment every route of the cut
	// was in place to the heal: 0 unless the cut leaks, and a run with any
	// fails. The simnet backend proves its cuts in TestPartitionIsolation
	// instead (its links also deliver what was in flight when a cut began).
	CrossedCut *int64 `json:"crossed_cut,omitempty"`
	// Cost splits what the nodes sent by protocol, per op.
	Cost Cost `json:"cost"`
	// Divergence samples, every 100 ms from the first op until the checks
	// end, how many distinct replica states the live nodes hold (1: all
	// equal). FaultWindows are the faults' spans, for the chart.
	Divergence   []Sample      `json:"divergence"`
	FaultWindows []FaultWindow `json:"fault_windows"`
	// Propagation is the delay from an op's acknowledgement until every
	// node live at the end held it (the op or one that replaced it), over
	// the ops that create a dot (not deletes and set removes) and reached
	// them all; Unpropagated counts those that did not.
	Propagation  Percentiles `json:"propagation_ms"`
	Unpropagated int         `json:"unpropagated"`
	// PropagationByPair is the same per (writer's region, reader's
	// region): the delay until every live node of the reader's region held
	// the op.
	PropagationByPair []PairPropagation `json:"propagation_by_pair"`
	// Heals gives, for each heal and restart, how long after it every live
	// node held every op acknowledged before it.
	Heals []HealReport `json:"heals"`
	// Regions gives per-region detail.
	Regions []RegionReport `json:"regions"`
	// Replication sums the nodes' replication counters.
	Replication Replication `json:"replication"`
	// MaxLagMS is how late, at worst, an op started against its planned
	// time (each node's client starts its ops in order, each after the
	// one before was answered): about 0 under virtual time; in real time,
	// how far the machine fell behind the scenario (it keeps up if this
	// stays small).
	MaxLagMS float64 `json:"max_lag_ms"`
	// SimulatedMS is the run's length in (virtual or real) time, from the
	// first node's start to the last check.
	SimulatedMS float64 `json:"simulated_ms"`
}

// PairPropagation is propagation from one region to another.
type PairPropagation struct {
	From string `json:"from"`
	To   string `json:"to"`
	Percentiles
}

// HealReport is the recovery after one heal or restart.
type HealReport struct {
	AtMS  float64 `json:"at_ms"`
	Fault string  `json:"fault"`
	// RecoveredMS: from the heal until every live node held every op
	// acknowledged before it; -1 if some never did.
	RecoveredMS float64 `json:"recovered_ms"`
	// Nodes: each live node's own recovery, from the heal until it held
	// every op acknowledged before it, over the nodes that did (Count).
	// The last node alone makes RecoveredMS; the median shows whether the
	// rest of the cluster was quick.
	Nodes Percentiles `json:"nodes_ms"`
	// Slowest names the node that recovered last (of several at the same
	// moment, the first in the scenario's order; "" when every node
	// already held everything, or when some node never did).
	Slowest string `json:"slowest,omitempty"`
}

// RegionReport is one region's share of the run.
type RegionReport struct {
	Name  string `json:"name"`
	Nodes int    `json:"nodes"`
	// Live is how many of its nodes ran at the end.
	Live int `json:"live"`
	// Ops is how many ops its nodes acknowledged.
	Ops int `json:"ops"`
}

// Traffic is messages (stream writes) and bytes sent.
type Traffic struct {
	Messages int64 `json:"messages"`
	Bytes    int64 `json:"bytes"`
}

// Cost splits the traffic the nodes sent (libp2p stream writes, counted
// at the sender) by protocol: gossip (gossipsub: delta batches and its
// control), sync (/mycel/sync/1.0.0), other (identify, ping, ...).
type Cost struct {
	Gossip Traffic `json:"gossip"`
	// GossipData and GossipControl split gossipsub's RPCs as queued for
	// each peer (before stream framing): published messages (delta
	// batches), and subscriptions and IHAVE/IWANT/GRAFT/PRUNE.
	GossipData    Traffic `json:"gossip_data"`
	GossipControl Traffic `json:"gossip_control"`
	Sync          Traffic `json:"sync"`
	Other         Traffic `json:"other"`
	MessagesPerOp float64 `json:"messages_per_op"`
	BytesPerOp    float64 `json:"bytes_per_op"`
	// DuplicatesRatio is the share of published-message copies a node
	// received that it already had (gossipsub's seen-cache drops them
	// before Mycel's validator): duplicates / (duplicates + deliveries).
	// Copies Mycel's validator ignores as already applied are
	// Replication.GossipDuplicates.
	DuplicatesRatio float64 `json:"duplicates_ratio"`
	// GossipThrottled counts received messages gossipsub dropped before
	// Mycel's validator saw them (validation queue full), and
	// GossipDroppedRPCs outgoing RPCs it dropped (a peer's queue full).
	// Sync repairs what they miss; many mean the nodes are overloaded.
	GossipThrottled   int64 `json:"gossip_throttled"`
	GossipDroppedRPCs int64 `json:"gossip_dropped_rpcs"`
}

// maxLostListed bounds Report.Lost.
const maxLostListed = 100

// Percentiles summarises delays in milliseconds.
type Percentiles struct {
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
	Count int     `json:"count"`
}

// Dropped counts discarded packets by cause.
type Dropped struct {
	Partition int64 `json:"partition"`
	Loss      int64 `json:"loss"`
}

// Replication sums gossip.Stats over the nodes (every incarnation).
type Replication struct {
	GossipMessagesPublished int64 `json:"gossip_messages_published"`
	GossipBytesPublished    int64 `json:"gossip_bytes_published"`
	GossipMessagesReceived  int64 `json:"gossip_messages_received"`
	GossipDuplicates        int64 `json:"gossip_duplicates"`
	GossipBatchesApplied    int64 `json:"gossip_batches_applied"`
	SyncSessions            int64 `json:"sync_sessions"`
	SyncBatchesIn           int64 `json:"sync_batches_in"`
	// SyncBatchesHeld: of those, the ones applied already when they came.
	SyncBatchesHeld int64 `json:"sync_batches_held"`
	// SyncTurnsTakenOver: client sessions that took their namespace's pull
	// turn over from a holder past its limit (see gossip's pull turns).
	SyncTurnsTakenOver int64 `json:"sync_turns_taken_over"`
	// SyncSessionsAbandoned: of those, the stalled sessions ended because
	// their server had not answered at all (a blackholed link).
	SyncSessionsAbandoned int64 `json:"sync_sessions_abandoned"`
	// SyncGapPulls: syncs started with a peer that forwarded a batch past
	// a gap gossip had left open for the grace (see gossip's gapWatch).
	SyncGapPulls  int64 `json:"sync_gap_pulls"`
	SyncBytesIn   int64 `json:"sync_bytes_in"`
	StateSessions int64 `json:"state_sessions"`
	StateKeysIn   int64 `json:"state_keys_in"`
}

func (r *Replication) add(s *gossip.Stats) {
	r.GossipMessagesPublished += s.MessagesPublished.Load()
	r.GossipBytesPublished += s.BytesPublished.Load()
	r.GossipMessagesReceived += s.MessagesReceived.Load()
	r.GossipDuplicates += s.IgnoredDuplicate.Load()
	r.GossipBatchesApplied += s.BatchesApplied.Load()
	r.SyncSessions += s.SyncSessions.Load()
	r.SyncBatchesIn += s.SyncBatchesIn.Load()
	r.SyncBatchesHeld += s.SyncBatchesHeld.Load()
	r.SyncTurnsTakenOver += s.SyncTurnsTakenOver.Load()
	r.SyncSessionsAbandoned += s.SyncSessionsAbandoned.Load()
	r.SyncGapPulls += s.SyncGapPulls.Load()
	r.SyncBytesIn += s.SyncBytesIn.Load()
	r.StateSessions += s.StateSessions.Load()
	r.StateKeysIn += s.StateKeysIn.Load()
}

// LostWrite is one difference between a node's final state and the model.
type LostWrite struct {
	Node string `json:"node"`
	Key  string `json:"key"`
	Want string `json:"want,omitempty"`
	Got  string `json:"got,omitempty"`
	// Reason: missing, wrong register|counter|set, resurrected, phantom,
	// or a read error.
	Reason string `json:"reason"`
}

// Sample is one divergence reading.
type Sample struct {
	TMS      float64 `json:"t_ms"`
	Distinct int     `json:"distinct"`
}

// FaultWindow is a span of the run under a fault (a partition until its
// heal, a latency change until the link is back, …; ToMS -1: until the
// end). Kind describes the fault.
type FaultWindow struct {
	Kind   string  `json:"kind"`
	FromMS float64 `json:"from_ms"`
	ToMS   float64 `json:"to_ms"`
}
