package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"
)

// nemesisKinds are the kinds a random nemesis may draw.
var nemesisKinds = []string{"partition", "isolate", "crash", "wipe", "latency", "skew"}

// validateFaults checks each fault on its own, then the schedule as a
// whole (in time order): no partition over a standing one, no heal without
// one, no crash of a crashed node, no restart of a running one.
func (sc *Scenario) validateFaults(regions map[string]int) error {
	for i, f := range sc.Faults {
		if err := sc.validateFault(f, []any{"faults", i}, regions); err != nil {
			return err
		}
	}
	if err := sc.validateNemesis(); err != nil {
		return err
	}
	faults := slices.Clone(sc.Faults)
	for i := range faults {
		faults[i].origin = i
	}
	sortFaults(faults)
	return sc.checkSchedule(faults)
}

func sortFaults(faults []Fault) {
	sort.SliceStable(faults, func(i, j int) bool { return faults[i].At < faults[j].At })
}

func (sc *Scenario) validateFault(f Fault, at []any, regions map[string]int) error {
	if f.At < 0 {
		return invalid(append(at, "at"), "negative time")
	}
	nodes := sc.nodeIndex()
	needNode := func() error {
		if f.Node == "" {
			return invalid(at, "%s needs a node", f.Kind)
		}
		if _, ok := nodes[f.Node]; !ok {
			return invalid(append(at, "node"), "node %q does not exist (nodes are <region>-<i>, i from 0)", f.Node)
		}
		return nil
	}
	// Fields a kind does not take are refused, so a typo'd schedule does
	// not silently mean something else.
	takes := map[FaultKind][]string{
		Partition: {"groups", "mode"}, Isolate: {"node", "mode"}, Heal: nil,
		Crash: {"node", "keep_disk"}, Restart: {"node"}, Skew: {"node", "by"},
		Latency: {"link", "latency", "jitter", "loss"},
	}
	allowed, known := takes[f.Kind]
	if !known {
		return invalid(append(at, "kind"), "unknown fault kind %q (partition, isolate, heal, crash, restart, latency, skew)", f.Kind)
	}
	set := map[string]bool{
		"groups": len(f.Groups) > 0, "mode": f.Mode != "", "node": f.Node != "", "keep_disk": f.KeepDisk != nil,
		"by": f.By != 0, "link": len(f.Link) > 0, "latency": f.Latency != nil, "jitter": f.Jitter != nil, "loss": f.Loss != nil,
	}
	for _, field := range []string{"groups", "mode", "node", "keep_disk", "by", "link", "latency", "jitter", "loss"} {
		if set[field] && !slices.Contains(allowed, field) {
			return invalid(append(at, field), "%s takes no %s", f.Kind, field)
		}
	}
	if f.Mode != "" && f.Mode != Blackhole && f.Mode != Disconnect {
		return invalid(append(at, "mode"), "unknown mode %q (blackhole, disconnect)", f.Mode)
	}
	switch f.Kind {
	case Partition:
		if len(f.Groups) < 2 {
			return invalid(append(at, "groups"), "a partition needs at least two groups")
		}
		in := make(map[int]string)
		for g, group := range f.Groups {
			if len(group) == 0 {
				return invalid(append(at, "groups", g), "empty group")
			}
			for k, name := range group {
				ms, ok := sc.members(name)
				if !ok {
					return invalid(append(at, "groups", g, k), "no region or node %q", name)
				}
				for _, m := range ms {
					if prev, dup := in[m]; dup {
						return invalid(append(at, "groups", g, k), "%q overlaps %q: node %s would be in two groups", name, prev, sc.nodeNames()[m])
					}
					in[m] = name
				}
			}
		}
	case Isolate, Crash, Restart, Skew:
		if err := needNode(); err != nil {
			return err
		}
		if f.Kind == Skew && (f.By > time.Hour || f.By < -time.Hour) {
			return invalid(append(at, "by"), "skew %v: at most an hour either way", f.By)
		}
	case Latency:
		if len(f.Link) != 2 {
			return invalid(append(at, "link"), "a link is two region names")
		}
		for k, name := range f.Link {
			if _, ok := regions[name]; !ok {
				return invalid(append(at, "link", k), "region %q does not exist", name)
			}
		}
		switch {
		case f.Latency == nil && f.Jitter == nil && f.Loss == nil:
			return invalid(at, "latency changes nothing: give latency, jitter or loss")
		case f.Latency != nil && *f.Latency < 0:
			return invalid(append(at, "latency"), "negative latency")
		case f.Jitter != nil && *f.Jitter < 0:
			return invalid(append(at, "jitter"), "negative jitter")
		case f.Loss != nil && !(*f.Loss >= 0 && *f.Loss <= 100): // NaN too
			return invalid(append(at, "loss"), "loss %v: a percentage from 0 to 100", *f.Loss)
		}
	}
	return nil
}

// checkSchedule walks faults (in time order) through the states they
// change. Errors name the fault's place in Scenario.Faults, or "random"
// for a fault the nemesis drew.
func (sc *Scenario) checkSchedule(faults []Fault) error {
	nodes := sc.nodeIndex()
	names := sc.nodeNames()
	down := make(map[int]bool)
	cut := false
	for _, f := range faults {
		at := []any{"random"}
		if f.origin >= 0 {
			at = []any{"faults", f.origin}
		}
		switch f.Kind {
		case Partition, Isolate:
			if cut {
				return invalid(at, "%s at %v overlaps the partition standing (heal it first)", f.Kind, f.At)
			}
			cut = true
		case Heal:
			if !cut {
				return invalid(at, "heal at %v with no partition standing", f.At)
			}
			cut = false
		case Crash:
			n := nodes[f.Node]
			if down[n] {
				return invalid(at, "crash at %v of %s, already crashed", f.At, names[n])
			}
			down[n] = true
		case Restart:
			n := nodes[f.Node]
			if !down[n] {
				return invalid(at, "restart at %v of %s, which is not crashed", f.At, names[n])
			}
			down[n] = false
		}
	}
	crashed := 0
	for _, d := range down {
		if d {
			crashed++
		}
	}
	if crashed == len(names) {
		return invalid([]any{"faults"}, "every node ends crashed: nothing left to check")
	}
	return nil
}

func (sc *Scenario) validateNemesis() error {
	r := sc.Random
	if r == nil {
		return nil
	}
	at := []any{"random"}
	switch {
	case r.Every <= 0:
		return invalid(append(at, "every"), "every must be positive")
	case r.Hold < 0 || (r.Hold > 0 && r.Hold >= r.Every):
		return invalid(append(at, "hold"), "hold %v: positive and less than every (%v)", r.Hold, r.Every)
	case r.Until < 0:
		return invalid(append(at, "until"), "negative time")
	case len(r.Kinds) == 0:
		return invalid(append(at, "kinds"), "no kinds (%s)", strings.Join(nemesisKinds, ", "))
	}
	for i, k := range r.Kinds {
		if !slices.Contains(nemesisKinds, k) {
			return invalid(append(at, "kinds", i), "unknown kind %q (%s)", k, strings.Join(nemesisKinds, ", "))
		}
		if k == "partition" && len(sc.Regions) < 2 && sc.totalNodes() < 2 {
			return invalid(append(at, "kinds", i), "a partition needs two nodes")
		}
	}
	if len(sc.Faults) > 0 {
		return invalid(at, "random and faults together: use one or the other")
	}
	return nil
}

func (sc *Scenario) totalNodes() int {
	n := 0
	for _, r := range sc.Regions {
		n += r.Nodes
	}
	return n
}

// nemesis draws the random fault schedule for seed: every Every one fault,
// undone Hold later, so no two overlap.
func (sc *Scenario) nemesis(seed uint64) []Fault {
	r := sc.Random
	if r == nil {
		return nil
	}
	rng := rand.New(rand.NewPCG(seed, 0x6e656d65))
	hold := r.Hold
	if hold == 0 {
		hold = r.Every / 2
	}
	until := r.Until
	if until == 0 {
		until = sc.Workload.Duration
	}
	names := sc.nodeNames()
	var out []Fault
	for t := r.Every; t+hold <= until && len(out) < 100_000; t += r.Every {
		kind := r.Kinds[rng.IntN(len(r.Kinds))]
		node := names[rng.IntN(len(names))]
		mode := Blackhole
		if rng.IntN(2) == 1 {
			mode = Disconnect
		}
		start, end := Fault{At: t, origin: -1}, Fault{At: t + hold, origin: -1}
		switch kind {
		case "partition":
			start.Kind, start.Mode, start.Groups = Partition, mode, sc.randomSplit(rng)
			end.Kind = Heal
		case "isolate":
			start.Kind, start.Mode, start.Node = Isolate, mode, node
			end.Kind = Heal
		case "crash", "wipe":
			keep := kind == "crash"
			start.Kind, start.Node, start.KeepDisk = Crash, node, &keep
			end.Kind, end.Node = Restart, node
		case "latency":
			a := sc.Regions[rng.IntN(len(sc.Regions))].Name
			b := sc.Regions[rng.IntN(len(sc.Regions))].Name
			base := sc.link(a, b)
			lat := base.Latency*time.Duration(2+rng.IntN(4)) + 20*time.Millisecond
			loss := 5.0 // percent
			start.Kind, start.Link, start.Latency, start.Loss = Latency, []string{a, b}, &lat, &loss
			end.Kind, end.Link, end.Latency, end.Loss = Latency, []string{a, b}, &base.Latency, &base.Loss
		case "skew":
			by := time.Duration(1+rng.IntN(20)) * time.Second
			if rng.IntN(2) == 1 {
				by = -by
			}
			start.Kind, start.Node, start.By = Skew, node, by
			end.Kind, end.Node = Skew, node
		}
		out = append(out, start, end)
	}
	return out
}

// randomSplit divides the regions (or, with one region, its nodes) into
// two non-empty groups.
func (sc *Scenario) randomSplit(rng *rand.Rand) [][]string {
	var names []string
	if len(sc.Regions) >= 2 {
		for _, r := range sc.Regions {
			names = append(names, r.Name)
		}
	} else {
		names = sc.nodeNames()
	}
	rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	k := 1 + rng.IntN(len(names)-1)
	return [][]string{slices.Clone(names[:k]), slices.Clone(names[k:])}
}

// link returns the scenario's link between regions a and b (a region's own
// latency when a == b).
func (sc *Scenario) link(a, b string) Link {
	if a == b {
		for _, r := range sc.Regions {
			if r.Name == a {
				return Link{A: a, B: a, Latency: r.Latency}
			}
		}
	}
	for _, l := range sc.Links {
		if (l.A == a && l.B == b) || (l.A == b && l.B == a) {
			return l
		}
	}
	return Link{A: a, B: b}
}

// describe renders a fault for reports and errors.
func (f Fault) describe() string {
	switch f.Kind {
	case Partition:
		parts := make([]string, len(f.Groups))
		for i, g := range f.Groups {
			parts[i] = strings.Join(g, "+")
		}
		return fmt.Sprintf("partition %s (%s)", strings.Join(parts, " | "), f.mode())
	case Isolate:
		return fmt.Sprintf("isolate %s (%s)", f.Node, f.mode())
	case Crash:
		if f.wipes() {
			return "crash " + f.Node + " (disk wiped)"
		}
		return "crash " + f.Node
	case Restart:
		return "restart " + f.Node
	case Skew:
		return fmt.Sprintf("skew %s by %v", f.Node, f.By)
	case Latency:
		d := "latency " + strings.Join(f.Link, "-")
		if f.Latency != nil {
			d += " " + f.Latency.String()
		}
		if f.Jitter != nil {
			d += fmt.Sprintf(" jitter %v", *f.Jitter)
		}
		if f.Loss != nil {
			d += fmt.Sprintf(" loss %g%%", *f.Loss)
		}
		return d
	}
	return string(f.Kind)
}

func (f Fault) mode() string {
	if f.Mode == "" {
		return Blackhole
	}
	return f.Mode
}
