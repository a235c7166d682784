package sim

// Report is the outcome of one run. Its JSON form is the simulator's
// output contract (DESIGN.md §8): the top level always has converged,
// convergence_ms, lost_writes, ops, messages, bytes and propagation_ms.
type Report struct {
	Scenario string `json:"scenario"`
	Seed     uint64 `json:"seed"`
	Nodes    int    `json:"nodes"`

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

	// Ops is the number of acknowledged writes; FailedOps those whose put
	// returned an error.
	Ops       int `json:"ops"`
	FailedOps int `json:"failed_ops"`
	// Messages and Bytes count the UDP packets (QUIC: gossip, sync and
	// transport control together) and their bytes delivered by the
	// simulated network.
	Messages int64 `json:"messages"`
	Bytes    int64 `json:"bytes"`
	// Dropped counts packets the network discarded.
	Dropped Dropped `json:"dropped"`
	// Divergence samples, every 100 ms from the first write until the
	// checks end, how many distinct replica states the live nodes hold (1:
	// all equal). FaultWindows are the partitions, for the chart.
	Divergence   []Sample      `json:"divergence"`
	FaultWindows []FaultWindow `json:"fault_windows"`
	// Propagation is the delay from a write's acknowledgement until every
	// node held it, over the writes that reached every node; Unpropagated
	// counts the acknowledged writes that did not.
	Propagation  Percentiles `json:"propagation_ms"`
	Unpropagated int         `json:"unpropagated"`
	// Replication sums the nodes' replication counters.
	Replication Replication `json:"replication"`
	// SimulatedMS is the run's length in (virtual or real) time, from the
	// first node's start to the last check.
	SimulatedMS float64 `json:"simulated_ms"`
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

// Replication sums gossip.Stats over the nodes.
type Replication struct {
	GossipMessagesPublished int64 `json:"gossip_messages_published"`
	GossipBatchesApplied    int64 `json:"gossip_batches_applied"`
	SyncSessions            int64 `json:"sync_sessions"`
	SyncBatchesIn           int64 `json:"sync_batches_in"`
	SyncBytesIn             int64 `json:"sync_bytes_in"`
}

// LostWrite is one difference between a node's final state and the model.
type LostWrite struct {
	Node int    `json:"node"`
	Key  string `json:"key"`
	Want string `json:"want,omitempty"`
	Got  string `json:"got,omitempty"`
	// Reason: missing, stale, siblings, phantom, or a read error.
	Reason string `json:"reason"`
}

// Sample is one divergence reading.
type Sample struct {
	TMS      float64 `json:"t_ms"`
	Distinct int     `json:"distinct"`
}

// FaultWindow is a span of the run under a fault (a partition until its
// heal, or until the end).
type FaultWindow struct {
	Kind   string  `json:"kind"`
	FromMS float64 `json:"from_ms"`
	ToMS   float64 `json:"to_ms"`
}
