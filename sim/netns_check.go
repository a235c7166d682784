package sim

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// ackState is what a real daemon's API answered to one op.
type ackState int

const (
	// acked: the API answered with success, so the op is durable on that
	// node.
	acked ackState = iota
	// unknown: no answer (timeout, connection cut by a crash): the op may
	// or may not have been applied.
	unknown
	// refused: the API answered with an error: not applied.
	refused
	// skipped: the node was down; nothing was sent.
	skipped
)

// netnsAck is one op's outcome in a netns run.
type netnsAck struct {
	op    Op
	state ackState
	at    time.Time // when the answer came
}

// nodeState is one node's final state of the keys the workload touched,
// read over its API.
type nodeState struct {
	registers map[string]string // absent key: not in the map; a map field under mapFieldKey
	counters  map[string]int64
	sets      map[string][]string
}

// expectation is what the acknowledged ops require of every node's final
// state, built without knowing how concurrent ops were ordered: the
// netns backend sees only the API's answers, not the deltas (the simnet
// backend's model is exact; this one is a bound).
type expectation struct {
	// registers: the values any put tried (an acknowledged or unknown
	// one); acked: whether some put was acknowledged; deletes: whether a
	// delete was tried (then absence is allowed).
	regTried   map[string]map[string]bool
	regAcked   map[string]bool
	regDeletes map[string]bool
	// counters: the sum of acknowledged adds, and of adds with no answer.
	cntAcked, cntUnknown map[string]int64
	// sets: per key and element, whether an add was acknowledged, tried
	// at all, and whether a remove was tried.
	setAdded, setTried, setRemoved map[string]map[string]bool
}

// expect builds the expectation from every op's outcome. Ops for which
// lenient is true count as unknown even if acknowledged (their node lost
// its disk before they could reach another).
func expect(acks []netnsAck, lenient func(netnsAck) bool) *expectation {
	e := &expectation{
		regTried: map[string]map[string]bool{}, regAcked: map[string]bool{}, regDeletes: map[string]bool{},
		cntAcked: map[string]int64{}, cntUnknown: map[string]int64{},
		setAdded: map[string]map[string]bool{}, setTried: map[string]map[string]bool{}, setRemoved: map[string]map[string]bool{},
	}
	mark := func(m map[string]map[string]bool, k, v string) {
		if m[k] == nil {
			m[k] = map[string]bool{}
		}
		m[k][v] = true
	}
	for _, a := range acks {
		state := a.state
		if state == acked && lenient != nil && lenient(a) {
			state = unknown
		}
		if state != acked && state != unknown {
			continue
		}
		op := a.op
		switch op.Kind {
		case OpPut:
			mark(e.regTried, op.Key, op.Value)
			if state == acked {
				e.regAcked[op.Key] = true
			}
		case OpDelete:
			e.regDeletes[op.Key] = true
		case OpMapPut:
			mark(e.regTried, mapFieldKey(op.Key, op.Field), op.Value)
			if state == acked {
				e.regAcked[mapFieldKey(op.Key, op.Field)] = true
			}
		case OpMapDelete:
			e.regDeletes[mapFieldKey(op.Key, op.Field)] = true
		case OpCounterAdd:
			if state == acked {
				e.cntAcked[op.Key] += op.Amount
			} else {
				e.cntUnknown[op.Key] += op.Amount
			}
		case OpSetAdd:
			mark(e.setTried, op.Key, op.Value)
			if state == acked {
				mark(e.setAdded, op.Key, op.Value)
			}
		case OpSetRemove:
			mark(e.setRemoved, op.Key, op.Value)
		}
	}
	return e
}

// mapFieldKey names a map's register field where the checker keeps
// registers (a map field is checked as a register of its own).
func mapFieldKey(key, field string) string { return key + " field " + field }

// check returns every way node's final state breaks the expectation:
// an acknowledged put's key missing where no delete was tried (missing),
// a value no put tried (phantom), a counter below its acknowledged adds
// (lost) or above every add tried (phantom), an acknowledged set element
// missing where no remove was tried (missing), an element no add tried
// (phantom).
func (e *expectation) check(node string, st nodeState) []LostWrite {
	var out []LostWrite
	for _, k := range sortedKeys(e.regTried) {
		v, ok := st.registers[k]
		switch {
		case !ok && e.regAcked[k] && !e.regDeletes[k]:
			out = append(out, LostWrite{Node: node, Key: k, Reason: "missing"})
		case ok && !e.regTried[k][v]:
			out = append(out, LostWrite{Node: node, Key: k, Got: v, Reason: "phantom"})
		}
	}
	for k, v := range st.registers {
		if e.regTried[k] == nil {
			out = append(out, LostWrite{Node: node, Key: k, Got: v, Reason: "phantom"})
		}
	}
	counters := map[string]bool{}
	for k := range e.cntAcked {
		counters[k] = true
	}
	for k := range e.cntUnknown {
		counters[k] = true
	}
	for k := range st.counters {
		counters[k] = true
	}
	for _, k := range sortedKeys(counters) {
		got, lo, hi := st.counters[k], e.cntAcked[k], e.cntAcked[k]+e.cntUnknown[k]
		switch {
		case got < lo:
			out = append(out, LostWrite{Node: node, Key: k, Want: fmt.Sprintf("at least %d", lo), Got: fmt.Sprint(got), Reason: "wrong counter"})
		case got > hi:
			out = append(out, LostWrite{Node: node, Key: k, Want: fmt.Sprintf("at most %d", hi), Got: fmt.Sprint(got), Reason: "phantom"})
		}
	}
	for _, k := range sortedKeys(e.setTried) {
		have := map[string]bool{}
		for _, el := range st.sets[k] {
			have[el] = true
		}
		for _, el := range sortedKeys(e.setAdded[k]) {
			if !have[el] && !e.setRemoved[k][el] {
				out = append(out, LostWrite{Node: node, Key: k, Want: el, Reason: "missing"})
			}
		}
	}
	for _, k := range sortedKeys(st.sets) {
		for _, el := range st.sets[k] {
			if !e.setTried[k][el] {
				out = append(out, LostWrite{Node: node, Key: k, Got: el, Reason: "phantom"})
			}
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// minNetnsBandwidth is the lowest bandwidth the netns backend shapes: tc
// takes rates in whole bytes per second (under 8 bit/s it refuses the
// qdisc), and slower links could not carry a connection's handshake in any
// useful time.
const minNetnsBandwidth = 8_000

// netnsUnsupported lists what a scenario asks of the network that real
// network namespaces on this kernel cannot give (no netem: no latency,
// jitter or loss; no per-process clocks; the daemon has no switch to turn
// publishing or sync off). Bandwidth they can: a token bucket (tbf) on
// each end of the node's veth pair. Empty: the scenario can run on that
// backend.
func (sc *Scenario) netnsUnsupported() []string {
	var out []string
	for _, r := range sc.Regions {
		if r.Latency != 0 {
			out = append(out, fmt.Sprintf("region %s: latency", r.Name))
		}
		if r.Bandwidth > 0 && r.Bandwidth < minNetnsBandwidth {
			out = append(out, fmt.Sprintf("region %s: a bandwidth under %d bit/s (tc shapes whole bytes per second)", r.Name, minNetnsBandwidth))
		}
	}
	for _, l := range sc.Links {
		if l.Latency != 0 || l.Jitter != 0 || l.Loss != 0 {
			out = append(out, fmt.Sprintf("link %s-%s: latency, jitter or loss", l.A, l.B))
		}
	}
	for i, f := range sc.Faults {
		if f.Kind == Latency || f.Kind == Skew {
			out = append(out, fmt.Sprintf("faults[%d]: %s", i, f.Kind))
		}
	}
	if sc.Random != nil {
		for _, k := range sc.Random.Kinds {
			if k == string(Latency) || k == string(Skew) {
				out = append(out, "random: "+k)
			}
		}
	}
	if sc.DisablePublish {
		out = append(out, "disable_publish")
	}
	if sc.DisableSync {
		out = append(out, "disable_sync")
	}
	if n := sc.totalNodes(); n > maxNetnsNodes {
		out = append(out, fmt.Sprintf("%d nodes (at most %d processes)", n, maxNetnsNodes))
	}
	return out
}

// maxNetnsNodes bounds a netns run: each node is a daemon process of its
// own (~60 MB).
const maxNetnsNodes = 48

// ValidateNetns is Validate plus what the netns backend cannot do.
func (sc *Scenario) ValidateNetns() error {
	if err := sc.Validate(); err != nil {
		return err
	}
	if bad := sc.netnsUnsupported(); len(bad) > 0 {
		return fmt.Errorf("%w: the netns backend cannot run %s (this kernel has no netem, and real processes share the host's clock); use the simnet backend", ErrScenario, strings.Join(bad, ", "))
	}
	return nil
}

// crossing reads an IPv4 packet's addresses: ip is false for anything that
// is not a whole IPv4 header; crossed is true if sides puts its source and
// destination in different groups of the standing cut (nil: none).
func crossing(pkt []byte, sides map[[4]byte]int) (ip, crossed bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return false, false
	}
	if sides == nil {
		return true, false
	}
	src, okSrc := sides[[4]byte(pkt[12:16])]
	dst, okDst := sides[[4]byte(pkt[16:20])]
	return true, okSrc && okDst && src != dst
}
