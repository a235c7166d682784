package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

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

	// SyncInterval is each node's mean time between background syncs.
	// Default 1 s.
	SyncInterval time.Duration `yaml:"sync_interval"`
	// DisablePublish turns every node's gossip fast path off (sync alone
	// replicates). Default false.
	DisablePublish bool `yaml:"disable_publish"`
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
	// second. Default 100 Mbit/s.
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
	// Loss is the fraction (0 to 1) of packets lost at random.
	Loss float64 `yaml:"loss"`
}

// Workload is a stream of register puts. Each writer node writes its own
// keys (no key has two writers), so the reference model of the final state
// is exact: every key ends with its writer's last acknowledged value.
type Workload struct {
	// Rate is the number of puts per second, over all writers.
	Rate float64 `yaml:"rate"`
	// Duration is how long the workload runs.
	Duration time.Duration `yaml:"duration"`
	// Keys is the number of keys each writer node writes to.
	Keys int `yaml:"keys"`
	// Writers names the regions whose nodes write. Empty: every region.
	Writers []string `yaml:"writers"`
}

// FaultKind names a fault.
type FaultKind string

// Fault kinds.
const (
	// Partition blackholes every packet between regions of different
	// groups: nothing arrives and no connection is told.
	Partition FaultKind = "partition"
	// Heal ends the partition.
	Heal FaultKind = "heal"
)

// Fault is one timed event of the fault schedule.
type Fault struct {
	At   time.Duration `yaml:"at"`
	Kind FaultKind     `yaml:"kind"`
	// Groups (partition only) are sets of region names; regions in
	// different groups cannot reach each other, regions in no group are
	// untouched.
	Groups [][]string `yaml:"groups"`
}

// Op is one planned register put.
type Op struct {
	// At is the time from the workload's start.
	At time.Duration
	// Node is the writer's index (regions in order, nodes in order).
	Node  int
	Key   string
	Value string
	// Index numbers the writes to Key from 1.
	Index int
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
	if err := sc.validateLinks(idx); err != nil {
		return err
	}
	w := sc.Workload
	switch {
	case w.Rate < 0:
		return invalid([]any{"workload", "rate"}, "negative rate")
	case w.Duration < 0:
		return invalid([]any{"workload", "duration"}, "negative duration")
	case w.Keys < 0:
		return invalid([]any{"workload", "keys"}, "negative keys")
	case w.Rate > 0 && w.Keys == 0:
		return invalid([]any{"workload", "keys"}, "a rate but no keys")
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
	case e.P99PropagationMS < 0:
		return invalid([]any{"expect", "p99_propagation_ms"}, "negative budget")
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
		case l.Loss < 0 || l.Loss > 1:
			return invalid(append(at, "loss"), "loss %v: a fraction from 0 to 1", l.Loss)
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

func (sc *Scenario) validateFaults(idx map[string]int) error {
	for i, f := range sc.Faults {
		at := []any{"faults", i}
		if f.At < 0 {
			return invalid(append(at, "at"), "negative time")
		}
		switch f.Kind {
		case Heal:
			if len(f.Groups) > 0 {
				return invalid(append(at, "groups"), "heal takes no groups")
			}
		case Partition:
			if len(f.Groups) < 2 {
				return invalid(append(at, "groups"), "a partition needs at least two groups")
			}
			in := make(map[string]bool)
			for g, group := range f.Groups {
				if len(group) == 0 {
					return invalid(append(at, "groups", g), "empty group")
				}
				for k, r := range group {
					if _, ok := idx[r]; !ok {
						return invalid(append(at, "groups", g, k), "region %q does not exist", r)
					}
					if in[r] {
						return invalid(append(at, "groups", g, k), "region %q is in two groups", r)
					}
					in[r] = true
				}
			}
		default:
			return invalid(append(at, "kind"), "unknown fault kind %q (partition, heal)", f.Kind)
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

// Plan resolves the workload and the fault schedule for seed: the same
// scenario and seed always give the same plan.
func (sc *Scenario) Plan(seed uint64) Plan {
	regions := sc.nodeRegions()
	writerRegion := make(map[int]bool)
	idx := sc.regionIndex()
	for _, name := range sc.Workload.Writers {
		writerRegion[idx[name]] = true
	}
	var writers []int
	for n, r := range regions {
		if len(writerRegion) == 0 || writerRegion[r] {
			writers = append(writers, n)
		}
	}
	var p Plan
	w := sc.Workload
	if w.Rate > 0 && w.Keys > 0 && len(writers) > 0 {
		rng := rand.New(rand.NewPCG(seed, 0x776f726b))
		count := int(w.Rate * w.Duration.Seconds())
		step := time.Duration(float64(time.Second) / w.Rate)
		writes := make(map[string]int)
		for i := range count {
			n := writers[rng.IntN(len(writers))]
			key := fmt.Sprintf("n%04d/k%04d", n, rng.IntN(w.Keys))
			writes[key]++
			p.Ops = append(p.Ops, Op{
				At: time.Duration(i) * step, Node: n, Key: key, Index: writes[key],
				Value: key + "#" + strconv.Itoa(writes[key]),
			})
		}
	}
	p.Faults = slices.Clone(sc.Faults)
	sort.SliceStable(p.Faults, func(i, j int) bool { return p.Faults[i].At < p.Faults[j].At })
	return p
}

// writeIndex recovers Op.Index from a value the workload wrote.
func writeIndex(key string, val []byte) (int, bool) {
	s, ok := strings.CutPrefix(string(val), key+"#")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n > 0
}
