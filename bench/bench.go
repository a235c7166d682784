package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// Workload names, as given to --workload.
const (
	SingleWriter  = "single-writer"
	MultiWriter   = "multi-writer"
	PartitionHeal = "partition-heal"
	LateJoiner    = "late-joiner"
	Sustained     = "sustained"
)

// Workloads lists every workload in the order `--workload all` runs them.
var Workloads = []string{SingleWriter, MultiWriter, PartitionHeal, LateJoiner, Sustained}

// ErrParams is wrapped by every invalid-parameter error.
var ErrParams = errors.New("bench: invalid parameters")

// Params are one benchmark run's settings. Every field is carried into the
// JSON result, so two results can be told apart and diffed.
type Params struct {
	// Workload is one of the Workload names.
	Workload string `json:"workload"`
	// N is the number of nodes (late-joiner: the cluster before the joiner).
	// Default 5.
	N int `json:"n"`
	// K is the number of keys written. Default 10,000.
	K int `json:"k"`
	// ValueSize is each value's length in bytes. Default 100.
	ValueSize int `json:"value_size"`
	// Store is "mem" or "pebble" (a Pebble store in a temp dir per node,
	// each write durable before it is acknowledged). Default mem.
	Store string `json:"store"`
	// Topology is "mesh" (every node dials every other) or "chain" (node i
	// dials node i+1 only). Default mesh.
	Topology string `json:"topology"`
	// Transport is "tcp" or "quic", on 127.0.0.1. Default tcp.
	Transport string `json:"transport"`
	// Duration is how long the sustained workload offers load. Default 10 s.
	Duration Seconds `json:"duration_s"`
	// Rate is the sustained workload's offered puts per second over all
	// nodes. Default 2,000.
	Rate float64 `json:"rate"`
	// Writers is the number of concurrent put callers on each writing node.
	// Default 64.
	Writers int `json:"writers"`
	// Timeout bounds each wait (convergence, heal, join). Default 5 min.
	Timeout Seconds `json:"timeout_s"`
}

// Seconds is a duration written as seconds in JSON.
type Seconds time.Duration

// MarshalJSON writes the duration as a number of seconds.
func (s Seconds) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, "%g", time.Duration(s).Seconds()), nil
}

// UnmarshalJSON reads a number of seconds, so results read back (the
// report) hold what was written.
func (s *Seconds) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("bench: seconds: %w", err)
	}
	if f < 0 || f > float64(math.MaxInt64)/float64(time.Second) || math.IsNaN(f) {
		return fmt.Errorf("bench: seconds %g out of range", f)
	}
	*s = Seconds(time.Duration(f * float64(time.Second)))
	return nil
}

// WithDefaults fills unset fields.
func (p Params) WithDefaults() Params {
	if p.N == 0 {
		p.N = 5
	}
	if p.K == 0 {
		p.K = 10_000
	}
	if p.ValueSize == 0 {
		p.ValueSize = 100
	}
	if p.Store == "" {
		p.Store = "mem"
	}
	if p.Topology == "" {
		p.Topology = "mesh"
	}
	if p.Transport == "" {
		p.Transport = "tcp"
	}
	if p.Duration == 0 {
		p.Duration = Seconds(10 * time.Second)
	}
	if p.Rate == 0 {
		p.Rate = 2000
	}
	if p.Writers == 0 {
		p.Writers = 64
	}
	if p.Timeout == 0 {
		p.Timeout = Seconds(5 * time.Minute)
	}
	return p
}

// Limits on parameters: a benchmark must finish on a laptop.
const (
	maxNodes     = 64
	maxKeys      = 10_000_000
	maxValueSize = 1 << 20
	maxWriters   = 4096
	maxDuration  = time.Hour
	maxRate      = 10_000_000
)

// Validate checks p (after WithDefaults).
func (p Params) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrParams, fmt.Sprintf(format, a...))
	}
	known := false
	for _, w := range Workloads {
		known = known || w == p.Workload
	}
	switch {
	case !known:
		return bad("unknown workload %q (want one of %v)", p.Workload, Workloads)
	case p.N < 1 || p.N > maxNodes:
		return bad("-n %d: want 1 to %d nodes", p.N, maxNodes)
	case p.N < 2 && p.Workload != LateJoiner:
		return bad("-n %d: workload %s needs at least 2 nodes", p.N, p.Workload)
	case p.K < 1 || p.K > maxKeys:
		return bad("-k %d: want 1 to %d keys", p.K, maxKeys)
	case p.ValueSize < 1 || p.ValueSize > maxValueSize:
		return bad("--value-size %d: want 1 to %d bytes", p.ValueSize, maxValueSize)
	case p.Store != "mem" && p.Store != "pebble":
		return bad("--store %q: want mem or pebble", p.Store)
	case p.Topology != "mesh" && p.Topology != "chain":
		return bad("--topology %q: want mesh or chain", p.Topology)
	case p.Transport != "tcp" && p.Transport != "quic":
		return bad("--transport %q: want tcp or quic", p.Transport)
	case p.Duration <= 0 || time.Duration(p.Duration) > maxDuration:
		return bad("--duration %v: want more than 0 and at most %v", time.Duration(p.Duration), maxDuration)
	case !(p.Rate > 0 && p.Rate <= maxRate):
		return bad("--rate %g: want more than 0 and at most %d", p.Rate, maxRate)
	case p.Workload == Sustained && p.Rate*time.Duration(p.Duration).Seconds() < 1:
		return bad("--rate %g for --duration %v offers no put", p.Rate, time.Duration(p.Duration))
	case p.Writers < 1 || p.Writers > maxWriters:
		return bad("--writers %d: want 1 to %d", p.Writers, maxWriters)
	case p.Timeout <= 0:
		return bad("--timeout %v: want more than 0", time.Duration(p.Timeout))
	}
	return nil
}

// Hooks are the harness's callbacks into which a Cluster reports.
type Hooks struct {
	// Visible must be called when key becomes readable on node (the node's
	// index in the cluster), by local write or replication. Calls for the
	// same key and node after the first are ignored. It is safe for
	// concurrent use and cheap.
	Visible func(node int, key string)
}

// System is a replication stack under test.
type System interface {
	// Name labels results ("mycel", "go-ds-crdt").
	Name() string
	// Start opens p.N nodes with p's store and transport, connects them in
	// p's topology, and returns once they are connected. Every node reports
	// keys through hooks.
	Start(ctx context.Context, p Params, hooks Hooks) (Cluster, error)
}

// Cluster is a running set of nodes, numbered from 0.
type Cluster interface {
	// Put writes key = value on node and returns once the node
	// acknowledges it (as durable as the store allows).
	Put(ctx context.Context, node int, key string, value []byte) error
	// Count returns how many keys node holds, read from the node itself
	// (not from hooks).
	Count(ctx context.Context, node int) (int, error)
	// Isolate cuts node off from every other node: connections are closed
	// and dials either way refused.
	Isolate(ctx context.Context, node int) error
	// Rejoin undoes Isolate and reconnects node to its topology
	// neighbours.
	Rejoin(ctx context.Context, node int) error
	// Join starts one more empty node, connects it to node 0 and returns
	// its index.
	Join(ctx context.Context) (int, error)
	// Traffic returns the libp2p stream bytes node has sent and received
	// so far, over every protocol.
	Traffic(node int) Traffic
	// Close stops every node and removes their stores.
	Close() error
}

// Traffic is a node's byte count.
type Traffic struct {
	Sent, Received int64
	// SentByProtocol splits Sent by libp2p protocol id.
	SentByProtocol map[string]int64
	// GossipFirst counts the gossip data messages the node received from
	// peers, each once, and GossipCopies every copy that arrived: the
	// first ones, later ones, and a node's own messages echoed back to it
	// (its publishes carry no author to drop them by). A system whose data
	// does not travel as gossip leaves both 0.
	GossipFirst, GossipCopies int64
}

// Neighbours returns the nodes that node i of a p.N-node cluster connects
// to in p's topology: every other node (mesh), or i-1 and i+1 (chain).
// Both adapters dial by it, so the two systems see the same graph.
func Neighbours(p Params, i int) []int {
	var out []int
	if p.Topology == "chain" {
		if i > 0 {
			out = append(out, i-1)
		}
		if i+1 < p.N {
			out = append(out, i+1)
		}
		return out
	}
	for j := range p.N {
		if j != i {
			out = append(out, j)
		}
	}
	return out
}
