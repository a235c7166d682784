package sim

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mycelnet/mycel/node"
)

// notFinite reports NaN and the infinities, which YAML spells .nan and .inf
// and every comparison with a bound lets through.
func notFinite(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) }

// ErrScenario is wrapped by every scenario validation error.
var ErrScenario = errors.New("sim: invalid scenario")

// Scenario describes one simulation: the regions and links of the network,
// the workload, the faults and the budgets the checkers apply.
type Scenario struct {
	// Name labels the report.
	Name    string   `yaml:"name"`
	Regions []Region `yaml:"regions"`
	// Links gives the one-way latency, jitter and loss between each pair of
	// distinct regions (both directions). Every pair must be listed.
	Links    []Link   `yaml:"links"`
	Workload Workload `yaml:"workload"`
	// Faults is the fault schedule; times are from the workload's start.
	Faults []Fault `yaml:"faults"`
	// Random adds a seeded random fault schedule to Faults.
	Random *Nemesis `yaml:"random"`

	// SyncInterval is each node's mean time between background syncs.
	// Default 1 s.
	SyncInterval time.Duration `yaml:"sync_interval"`
	// DisablePublish turns every node's gossip fast path off (sync alone
	// replicates). Default false.
	DisablePublish bool `yaml:"disable_publish"`
	// MeshDegree is every node's gossipsub mesh degree (node.Config's
	// MeshDegree). Default 0: the node default, 6.
	MeshDegree int `yaml:"mesh_degree"`
	// MeshDegreeLow is every node's gossipsub Dlo (node.Config's
	// MeshDegreeLow), 1 to the mesh degree. Default 0: the node default
	// (5 at degree 6, else two thirds of the degree, at least 1).
	MeshDegreeLow int `yaml:"mesh_degree_low"`
	// FloodPublish makes every node send its own batches straight to
	// every connected peer too (node.Config's FloodPublish). Default false.
	FloodPublish bool `yaml:"flood_publish"`
	// PeerExchange makes every node hand the peers it prunes from its
	// gossipsub mesh others to dial (node.Config's PeerExchange). Default
	// false, the node default: the simulated nodes find each other through
	// their bootstrap lists.
	PeerExchange bool `yaml:"peer_exchange"`
	// DisableSync removes every node's sync protocol handler, so that
	// gossip alone replicates and nothing repairs what it misses: for
	// proving that the checkers catch lost writes. Default false.
	DisableSync bool `yaml:"disable_sync"`
	// Settle is how long the cluster runs, fully connected, before the
	// workload starts (gossipsub meshes form on heartbeats). Default 3 s.
	Settle time.Duration `yaml:"settle"`
	// Expect holds the budgets the run must meet.
	Expect Expect `yaml:"expect"`
}

// Expect holds a scenario's budgets. A run that misses one is reported as
// failed (Report.Passed false), with the reason in Report.Failures.
type Expect struct {
	// ConvergeWithin is the convergence deadline, counted from the later of
	// the last heal and the last write. Default 30 s.
	ConvergeWithin time.Duration `yaml:"converge_within"`
	// LostWrites is how many differences from the reference model are
	// tolerated. Default 0: the model is exact, any loss is a bug.
	LostWrites int `yaml:"lost_writes"`
	// P99PropagationMS bounds the 99th percentile of ack → visible
	// everywhere, in milliseconds. 0: no bound.
	P99PropagationMS float64 `yaml:"p99_propagation_ms"`
}

// Region is a group of nodes close to each other.
type Region struct {
	Name  string `yaml:"name"`
	Nodes int    `yaml:"nodes"`
	// Latency is the one-way latency between two nodes of the region.
	// Default 0.
	Latency time.Duration `yaml:"latency"`
	// Bandwidth is each node's uplink and downlink rate in bits per
	// second. Default 100 Mbit/s on simnet; on the netns backend, unset
	// leaves the links unshaped.
	Bandwidth int `yaml:"bandwidth"`
}

// Link is the path between two regions, the same both ways.
type Link struct {
	// A and B are the two regions.
	A string `yaml:"a"`
	B string `yaml:"b"`
	// Latency is the one-way latency.
	Latency time.Duration `yaml:"latency"`
	// Jitter adds a uniform random delay in [0, Jitter) to each packet
	// (packets may then be reordered).
	Jitter time.Duration `yaml:"jitter"`
	// Loss is the percentage (0 to 100) of packets lost at random: 1
	// loses one packet in a hundred.
	Loss float64 `yaml:"loss"`
}

// Workload is a stream of operations from the writer nodes, at a fixed
// rate, over a shared key space per value type.
type Workload struct {
	// Rate is the number of operations per second, over all writers.
	Rate float64 `yaml:"rate"`
	// Duration is how long the workload runs.
	Duration time.Duration `yaml:"duration"`
	// Keys is the number of keys of each type in use (registers r/…,
	// counters c/…, sets s/…); every writer may write every key.
	Keys int `yaml:"keys"`
	// Mix weighs the kinds of operation. Default: puts only.
	Mix Mix `yaml:"mix"`
	// Distribution picks keys: uniform (default) or zipf (s = 1.1, key 0
	// hottest).
	Distribution string `yaml:"distribution"`
	// ValueSize is the size in bytes of each put's value. Default 16
	// (values name their op, so never less).
	ValueSize int `yaml:"value_size"`
	// Writers names the regions whose nodes write. Empty: every region.
	Writers []string `yaml:"writers"`
}

// Mix weighs operation kinds; weights need not sum to 1.
type Mix struct {
	Put        float64 `yaml:"put"`
	Delete     float64 `yaml:"delete"`
	CounterAdd float64 `yaml:"counter_add"`
	SetAdd     float64 `yaml:"set_add"`
	SetRemove  float64 `yaml:"set_remove"`
	// MapPut writes a register field of a map; MapDelete removes a field.
	MapPut    float64 `yaml:"map_put"`
	MapDelete float64 `yaml:"map_delete"`
}

func (m Mix) total() float64 {
	return m.Put + m.Delete + m.CounterAdd + m.SetAdd + m.SetRemove + m.MapPut + m.MapDelete
}

// Nemesis is a seeded random fault schedule: every Every, one fault of a
// kind drawn from Kinds, undone (heal, restart, restore) Hold later.
type Nemesis struct {
	Every time.Duration `yaml:"every"`
	// Kinds to draw from: partition, isolate, crash, wipe (crash without
	// disk), latency, skew.
	Kinds []string `yaml:"kinds"`
	// Hold is how long each fault lasts. Default Every/2; less than Every.
	Hold time.Duration `yaml:"hold"`
	// Until is when the nemesis stops starting faults. Default the
	// workload's duration.
	Until time.Duration `yaml:"until"`
}

// FaultKind names a fault.
type FaultKind string

// Fault kinds.
const (
	// Partition cuts the groups (regions or nodes) off from each other.
	Partition FaultKind = "partition"
	// Isolate cuts one node off from every other.
	Isolate FaultKind = "isolate"
	// Heal ends the partition or isolation standing.
	Heal FaultKind = "heal"
	// Crash stops a node (its store kept, or wiped with keep_disk: false).
	Crash FaultKind = "crash"
	// Restart starts a crashed node again, same identity and address.
	Restart FaultKind = "restart"
	// Latency changes a link's latency, jitter or loss.
	Latency FaultKind = "latency"
	// Skew sets a node's clock offset.
	Skew FaultKind = "skew"
)

// Partition modes.
const (
	// Blackhole drops every packet across the cut; nothing is closed and
	// the nodes find out by timeouts.
	Blackhole = "blackhole"
	// Disconnect closes the connections across the cut and refuses
	// redials both ways (each node blocks the others in its gater).
	Disconnect = "disconnect"
)

// Fault is one timed event of the fault schedule. Nodes are named
// <region>-<i>, i from 0.
type Fault struct {
	At   time.Duration `yaml:"at"`
	Kind FaultKind     `yaml:"kind"`
	// Groups (partition) are sets of region or node names; nodes in
	// different groups cannot reach each other, nodes in no group are
	// untouched.
	Groups [][]string `yaml:"groups"`
	// Mode (partition, isolate): blackhole (default) or disconnect.
	Mode string `yaml:"mode"`
	// Node (isolate, crash, restart, skew) names the node.
	Node string `yaml:"node"`
	// KeepDisk (crash): keep the node's store for the restart (default
	// true); false restarts it empty, with the same identity.
	KeepDisk *bool `yaml:"keep_disk"`
	// Link (latency) names the two regions of the link (the same name
	// twice for a region's own latency); Latency, Jitter and Loss are
	// the new values, unset ones unchanged.
	Link    []string       `yaml:"link"`
	Latency *time.Duration `yaml:"latency"`
	Jitter  *time.Duration `yaml:"jitter"`
	Loss    *float64       `yaml:"loss"`
	// By (skew) is the node's clock offset from now on (0 restores it).
	By time.Duration `yaml:"by"`

	// origin is the fault's place in Scenario.Faults, -1 for the nemesis.
	origin int
}

// wipes reports whether a crash fault loses the node's store.
func (f Fault) wipes() bool { return f.Kind == Crash && f.KeepDisk != nil && !*f.KeepDisk }

// OpKind names a workload operation.
type OpKind string

// Operation kinds.
const (
	OpPut        OpKind = "put"
	OpDelete     OpKind = "delete"
	OpCounterAdd OpKind = "counter_add"
	OpSetAdd     OpKind = "set_add"
	OpSetRemove  OpKind = "set_remove"
	OpMapPut     OpKind = "map_put"
	OpMapDelete  OpKind = "map_delete"
)

// Op is one planned operation.
type Op struct {
	// At is the time from the workload's start.
	At time.Duration
	// Node is the writer's index (regions in order, nodes in order).
	Node int
	Kind OpKind
	Key  string
	// Value is a put's value (a map put's too) or a set operation's
	// element.
	Value string
	// Field is a map operation's field.
	Field string
	// Amount is a counter add's increment.
	Amount int64
}

// Plan is what a scenario and a seed decide before anything runs.
type Plan struct {
	Ops    []Op
	Faults []Fault
}

func (sc *Scenario) withDefaults() Scenario {
	c := *sc
	c.Regions = slices.Clone(sc.Regions)
	for i := range c.Regions {
		if c.Regions[i].Bandwidth <= 0 {
			c.Regions[i].Bandwidth = 100_000_000
		}
	}
	if c.SyncInterval <= 0 {
		c.SyncInterval = time.Second
	}
	if c.Settle <= 0 {
		c.Settle = 3 * time.Second
	}
	if c.Expect.ConvergeWithin <= 0 {
		c.Expect.ConvergeWithin = 30 * time.Second
	}
	return c
}

func (sc *Scenario) regionIndex() map[string]int {
	idx := make(map[string]int, len(sc.Regions))
	for i, r := range sc.Regions {
		idx[r.Name] = i
	}
	return idx
}

// ScenarioError is one problem with a scenario. It wraps ErrScenario.
type ScenarioError struct {
	// Path locates the problem: field names as written in a scenario file
	// and list indexes, e.g. faults[1].groups[0][2].
	Path []any
	// Line is the line in the scenario file, 0 if not from a file.
	Line int
	Msg  string
}

func (e *ScenarioError) Error() string {
	var b strings.Builder
	b.WriteString("sim: invalid scenario")
	if e.Line > 0 {
		fmt.Fprintf(&b, ", line %d", e.Line)
	}
	if len(e.Path) > 0 {
		b.WriteString(", ")
		for i, p := range e.Path {
			switch p := p.(type) {
			case int:
				fmt.Fprintf(&b, "[%d]", p)
			default:
				if i > 0 {
					b.WriteByte('.')
				}
				fmt.Fprint(&b, p)
			}
		}
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

func (e *ScenarioError) Unwrap() error { return ErrScenario }

func invalid(path []any, format string, args ...any) error {
	return &ScenarioError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// Validate reports the first problem that would stop the scenario from
// running as written, as a *ScenarioError.
func (sc *Scenario) Validate() error {
	if sc.MeshDegree != 0 && (sc.MeshDegree < 2 || sc.MeshDegree > 32) {
		return invalid([]any{"mesh_degree"}, "%d: want 2 to 32 (or leave it out)", sc.MeshDegree)
	}
	if d := cmp.Or(sc.MeshDegree, node.DefaultMeshDegree); sc.MeshDegreeLow < 0 || sc.MeshDegreeLow > d {
		return invalid([]any{"mesh_degree_low"}, "%d: want 1 to the mesh degree (%d), or leave it out", sc.MeshDegreeLow, d)
	}
	if len(sc.Regions) == 0 {
		return invalid([]any{"regions"}, "no regions")
	}
	if len(sc.Regions) > 250 {
		return invalid([]any{"regions"}, "%d regions: at most 250", len(sc.Regions))
	}
	idx := make(map[string]int)
	for i, r := range sc.Regions {
		at := []any{"regions", i}
		if r.Name == "" {
			return invalid(at, "region has no name")
		}
		if _, dup := idx[r.Name]; dup {
			return invalid(append(at, "name"), "region %q listed twice", r.Name)
		}
		idx[r.Name] = i
		if r.Nodes < 1 || r.Nodes > 65000 {
			return invalid(append(at, "nodes"), "%d nodes: 1 to 65000", r.Nodes)
		}
		if r.Latency < 0 {
			return invalid(append(at, "latency"), "negative latency")
		}
		if r.Bandwidth < 0 {
			return invalid(append(at, "bandwidth"), "negative bandwidth")
		}
	}
	// Faults name regions and nodes (<region>-<i>) in the same places, so
	// no region may be spelled like another region's node.
	for i, r := range sc.Regions {
		cut := strings.LastIndexByte(r.Name, '-')
		if cut < 0 {
			continue
		}
		n, err := strconv.Atoi(r.Name[cut+1:])
		if j, ok := idx[r.Name[:cut]]; ok && err == nil && n >= 0 && n < sc.Regions[j].Nodes && strconv.Itoa(n) == r.Name[cut+1:] {
			return invalid([]any{"regions", i, "name"}, "region %q has the name of node %d of region %q", r.Name, n, r.Name[:cut])
		}
	}
	if err := sc.validateLinks(idx); err != nil {
		return err
	}
	w := sc.Workload
	switch {
	case notFinite(w.Rate):
		return invalid([]any{"workload", "rate"}, "rate %v is not a number of ops per second", w.Rate)
	case w.Rate < 0:
		return invalid([]any{"workload", "rate"}, "negative rate")
	case w.Duration < 0:
		return invalid([]any{"workload", "duration"}, "negative duration")
	case w.Keys < 0:
		return invalid([]any{"workload", "keys"}, "negative keys")
	case w.Rate > 0 && w.Keys == 0:
		return invalid([]any{"workload", "keys"}, "a rate but no keys")
	case w.ValueSize < 0 || w.ValueSize > 1<<20:
		return invalid([]any{"workload", "value_size"}, "value size %d: 0 to 1 MiB", w.ValueSize)
	case w.Distribution != "" && w.Distribution != "uniform" && w.Distribution != "zipf":
		return invalid([]any{"workload", "distribution"}, "unknown distribution %q (uniform, zipf)", w.Distribution)
	case w.Rate*w.Duration.Seconds() > 10_000_000:
		return invalid([]any{"workload"}, "%.0f ops: at most 10,000,000", w.Rate*w.Duration.Seconds())
	}
	for _, m := range []struct {
		name string
		v    float64
	}{{"put", w.Mix.Put}, {"delete", w.Mix.Delete}, {"counter_add", w.Mix.CounterAdd}, {"set_add", w.Mix.SetAdd}, {"set_remove", w.Mix.SetRemove},
		{"map_put", w.Mix.MapPut}, {"map_delete", w.Mix.MapDelete}} {
		if notFinite(m.v) || m.v < 0 {
			return invalid([]any{"workload", "mix", m.name}, "weight %v: want a number of 0 or more", m.v)
		}
	}
	for i, r := range w.Writers {
		if _, ok := idx[r]; !ok {
			return invalid([]any{"workload", "writers", i}, "region %q does not exist", r)
		}
	}
	if sc.SyncInterval < 0 {
		return invalid([]any{"sync_interval"}, "negative interval")
	}
	if sc.Settle < 0 {
		return invalid([]any{"settle"}, "negative settle time")
	}
	e := sc.Expect
	switch {
	case e.ConvergeWithin < 0:
		return invalid([]any{"expect", "converge_within"}, "negative deadline")
	case e.LostWrites < 0:
		return invalid([]any{"expect", "lost_writes"}, "negative budget")
	case notFinite(e.P99PropagationMS) || e.P99PropagationMS < 0:
		return invalid([]any{"expect", "p99_propagation_ms"}, "budget %v: want milliseconds, 0 or more", e.P99PropagationMS)
	}
	return sc.validateFaults(idx)
}

func (sc *Scenario) validateLinks(idx map[string]int) error {
	seen := make(map[[2]int]bool)
	for i, l := range sc.Links {
		at := []any{"links", i}
		a, okA := idx[l.A]
		if !okA {
			return invalid(append(at, "a"), "region %q does not exist", l.A)
		}
		b, okB := idx[l.B]
		if !okB {
			return invalid(append(at, "b"), "region %q does not exist", l.B)
		}
		if a == b {
			return invalid(at, "link joins %s to itself (set the region's latency)", l.A)
		}
		if a > b {
			a, b = b, a
		}
		if seen[[2]int{a, b}] {
			return invalid(at, "link %s-%s listed twice", l.A, l.B)
		}
		seen[[2]int{a, b}] = true
		switch {
		case l.Latency < 0:
			return invalid(append(at, "latency"), "negative latency")
		case l.Jitter < 0:
			return invalid(append(at, "jitter"), "negative jitter")
		case !(l.Loss >= 0 && l.Loss <= 100): // NaN too
			return invalid(append(at, "loss"), "loss %v: a percentage from 0 to 100", l.Loss)
		}
	}
	for a := range sc.Regions {
		for b := a + 1; b < len(sc.Regions); b++ {
			if !seen[[2]int{a, b}] {
				return invalid([]any{"links"}, "no link between %s and %s", sc.Regions[a].Name, sc.Regions[b].Name)
			}
		}
	}
	return nil
}

// nodeRegions returns each node's region index (regions in order).
func (sc *Scenario) nodeRegions() []int {
	var out []int
	for r, reg := range sc.Regions {
		for range reg.Nodes {
			out = append(out, r)
		}
	}
	return out
}

// nodeNames returns each node's name, <region>-<i>.
func (sc *Scenario) nodeNames() []string {
	var out []string
	for _, reg := range sc.Regions {
		for i := range reg.Nodes {
			out = append(out, reg.Name+"-"+strconv.Itoa(i))
		}
	}
	return out
}

// nodeIndex maps node names to node indexes.
func (sc *Scenario) nodeIndex() map[string]int {
	names := sc.nodeNames()
	idx := make(map[string]int, len(names))
	for i, n := range names {
		idx[n] = i
	}
	return idx
}

// members resolves a region or node name to node indexes.
func (sc *Scenario) members(name string) ([]int, bool) {
	first := 0
	for _, reg := range sc.Regions {
		if reg.Name == name {
			out := make([]int, reg.Nodes)
			for i := range out {
				out[i] = first + i
			}
			return out, true
		}
		first += reg.Nodes
	}
	if n, ok := sc.nodeIndex()[name]; ok {
		return []int{n}, true
	}
	return nil, false
}

// cutGroups resolves a partition or isolate fault into groups of node
// indexes: an isolated node against every other one, or each group's
// regions and nodes.
func (sc *Scenario) cutGroups(f Fault) [][]int {
	if f.Kind == Isolate {
		n := sc.nodeIndex()[f.Node]
		var rest []int
		for i := range sc.totalNodes() {
			if i != n {
				rest = append(rest, i)
			}
		}
		return [][]int{{n}, rest}
	}
	var groups [][]int
	for _, g := range f.Groups {
		var members []int
		for _, name := range g {
			ms, _ := sc.members(name)
			members = append(members, ms...)
		}
		groups = append(groups, members)
	}
	return groups
}
