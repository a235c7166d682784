package sim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/node"
)

// ack is the outcome of one planned op.
type ack struct {
	id int
	op Op
	// skipped: the op's node was down, nothing was attempted.
	skipped bool
	err     error
	at      time.Time // when it returned
	// delta is what the op committed; dot the dot it created (zero for a
	// delete or set remove, which create none).
	delta crdt.Delta
	dot   crdt.Dot
	// lostOnWipe: acknowledged only on nodes whose store was then wiped
	// (crash with keep_disk: false), so gone by the scenario's own doing.
	lostOnWipe bool
}

func (a *ack) ok() bool { return !a.skipped && a.err == nil }

// newDot returns the dot an op's delta created, if any: the one live dot
// the workload's single-key, single-element ops ever create.
func newDot(d crdt.Delta) (crdt.Dot, bool) {
	var out crdt.Dot
	var found bool
	d.StoreDots(func(x crdt.Dot) { out, found = x, true })
	return out, found
}

// entry is one dot the model holds.
type entry struct {
	key   string
	kind  OpKind
	value string // a register's value or a set's element
	time  crdt.Timestamp
	share int64
}

// model is the reference final state, built naively from the acknowledged
// ops' committed deltas: every dot any op created, minus every dot some
// op's context covered without holding it (the observed-remove rule: a
// put replaces the register entries it saw, a delete removes what its node
// had seen, a set remove the adds of the element its node had seen; a
// concurrent write is untouched). Registers read their surviving entries,
// winner by HLC then replica then counter; sets the elements with a
// surviving add (add-wins); counters are the sum of every acknowledged add.
type model struct {
	keys     map[string]OpKind
	byKey    map[string][]crdt.Dot
	created  map[crdt.Dot]entry
	removed  map[crdt.Dot]bool
	counters map[string]int64
	// reused counts dots two different ops created: a replica handed out a
	// dot twice, which no model can reconcile.
	reused int
}

func newModel(acks []ack) *model {
	m := &model{keys: make(map[string]OpKind), byKey: make(map[string][]crdt.Dot), created: make(map[crdt.Dot]entry), removed: make(map[crdt.Dot]bool), counters: make(map[string]int64)}
	byReplica := make(map[crdt.ReplicaID][]uint64)
	for i := range acks {
		a := &acks[i]
		if !a.ok() || a.lostOnWipe {
			continue
		}
		kind := a.op.Kind
		if kind == OpDelete {
			kind = OpPut
		} else if kind == OpSetRemove {
			kind = OpSetAdd
		}
		if _, ok := m.keys[a.op.Key]; !ok {
			m.keys[a.op.Key] = kind
		}
		if a.op.Kind == OpCounterAdd {
			m.counters[a.op.Key] += a.op.Amount
		}
		if a.dot == (crdt.Dot{}) {
			continue
		}
		e := entry{key: a.op.Key, kind: a.op.Kind, value: a.op.Value}
		if regs := a.delta.Value(0).Registers(); len(regs) == 1 {
			e.time = regs[0].Time
		}
		if _, dup := m.created[a.dot]; dup {
			m.reused++
		}
		m.created[a.dot] = e
		m.byKey[a.op.Key] = append(m.byKey[a.op.Key], a.dot)
		byReplica[a.dot.Replica] = append(byReplica[a.dot.Replica], a.dot.Counter)
	}
	for r := range byReplica {
		slices.Sort(byReplica[r])
	}
	for i := range acks {
		a := &acks[i]
		if !a.ok() || a.lostOnWipe {
			continue
		}
		ctx := a.delta.Context()
		ctx.ForEachRange(func(r crdt.ReplicaID, lo, hi uint64) {
			cs := byReplica[r]
			for j, _ := slices.BinarySearch(cs, lo); j < len(cs) && cs[j] <= hi; j++ {
				if d := (crdt.Dot{Replica: r, Counter: cs[j]}); d != a.dot {
					m.removed[d] = true
				}
			}
		})
	}
	return m
}

// want returns key's expected value, rendered for comparison, and whether
// the key should exist.
func (m *model) want(key string) (string, bool) {
	switch m.keys[key] {
	case OpCounterAdd:
		return strconv.FormatInt(m.counters[key], 10), true
	case OpSetAdd:
		var elems []string
		for _, d := range m.byKey[key] {
			if !m.removed[d] {
				elems = append(elems, m.created[d].value)
			}
		}
		slices.Sort(elems)
		elems = slices.Compact(elems)
		return strings.Join(elems, ","), len(elems) > 0
	default:
		type reg struct {
			d crdt.Dot
			e entry
		}
		var regs []reg
		for _, d := range m.byKey[key] {
			if !m.removed[d] {
				regs = append(regs, reg{d, m.created[d]})
			}
		}
		// The winner last, as Namespace.GetAll lists them.
		slices.SortFunc(regs, func(a, b reg) int {
			return cmp.Or(cmp.Compare(a.e.time.Wall, b.e.time.Wall), cmp.Compare(a.e.time.Logical, b.e.time.Logical),
				cmp.Compare(a.d.Replica, b.d.Replica), cmp.Compare(a.d.Counter, b.d.Counter))
		})
		vals := make([]string, len(regs))
		for i, r := range regs {
			vals[i] = r.e.value
		}
		return strings.Join(vals, ","), len(vals) > 0
	}
}

// got renders key's value on one node like want, and whether it exists.
func got(ctx context.Context, s *node.Namespace, key string, kind OpKind) (string, bool, error) {
	switch kind {
	case OpCounterAdd:
		v, ok := s.Value(key)
		if !ok {
			return "0", false, nil
		}
		return strconv.FormatInt(v.Counter(), 10), true, nil
	case OpSetAdd:
		v, ok := s.Value(key)
		if !ok {
			return "", false, nil
		}
		elems := v.SetElements()
		sort.Strings(elems)
		return strings.Join(elems, ","), len(elems) > 0, nil
	default:
		vals, err := s.GetAll(ctx, key)
		if errors.Is(err, node.ErrNotFound) {
			return "", false, nil
		}
		if err != nil {
			return "", false, err
		}
		out := make([]string, len(vals))
		for i, v := range vals {
			out[i] = string(v)
		}
		return strings.Join(out, ","), true, nil
	}
}

// checkLostWrites compares every live node's final state with the model
// and returns each difference: a key missing, holding other values than
// the model's (a lost write, a resurrected one, or wrong siblings), or a
// key no acknowledged op wrote (phantom).
func checkLostWrites(ctx context.Context, spaces []*node.Namespace, names []string, m *model) []LostWrite {
	var out []LostWrite
	keys := make([]string, 0, len(m.keys))
	for k := range m.keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	wants := make(map[string]string, len(keys))
	present := make(map[string]bool, len(keys))
	for _, k := range keys {
		wants[k], present[k] = m.want(k)
	}
	for n, s := range spaces {
		if s == nil {
			continue
		}
		for _, key := range s.Keys("", "", 0) {
			if _, ok := m.keys[key]; !ok {
				out = append(out, LostWrite{Node: names[n], Key: key, Reason: "phantom"})
			}
		}
		for _, key := range keys {
			g, exists, err := got(ctx, s, key, m.keys[key])
			want := wants[key]
			switch {
			case err != nil:
				out = append(out, LostWrite{Node: names[n], Key: key, Want: want, Reason: err.Error()})
			case present[key] && !exists:
				out = append(out, LostWrite{Node: names[n], Key: key, Want: want, Reason: "missing"})
			case !present[key] && exists && g != "" && g != "0":
				out = append(out, LostWrite{Node: names[n], Key: key, Got: g, Reason: "resurrected"})
			case present[key] && g != want:
				out = append(out, LostWrite{Node: names[n], Key: key, Want: want, Got: g, Reason: "wrong " + kindName(m.keys[key])})
			}
		}
	}
	return out
}

func kindName(k OpKind) string {
	switch k {
	case OpCounterAdd:
		return "counter"
	case OpSetAdd:
		return "set"
	}
	return "register"
}

// markWiped marks the acknowledged ops that only wiped nodes held as
// lostOnWipe: after node w's store is wiped, an op acknowledged by a node
// that has ever been wiped survives only if some other node's store (up,
// or down with its disk) has observed it — for a remove, has observed
// every dot it removed and holds none of them. Ops of nodes never wiped
// survive on their own node.
func markWiped(acks []ack, w int, wiped map[int]bool, spaces []*node.Namespace) (lost int) {
	for i := range acks {
		a := &acks[i]
		if !a.ok() || a.lostOnWipe || !wiped[a.op.Node] {
			continue
		}
		held := false
		for n, s := range spaces {
			if n == w || s == nil {
				continue
			}
			if heldBy(a, s) {
				held = true
				break
			}
		}
		if !held {
			a.lostOnWipe = true
			lost++
		}
	}
	return lost
}

// heldBy reports whether replica s has the op's effect.
func heldBy(a *ack, s *node.Namespace) bool {
	if a.dot != (crdt.Dot{}) {
		return s.Observed(a.dot)
	}
	ctx := a.delta.Context()
	live := make(map[crdt.Dot]bool)
	if v, ok := s.Value(a.op.Key); ok {
		v.Dots(func(d crdt.Dot) { live[d] = true })
	}
	held, budget := true, 100_000
	ctx.ForEachRange(func(r crdt.ReplicaID, lo, hi uint64) {
		for c := lo; c <= hi && held && budget > 0; c++ {
			budget--
			d := crdt.Dot{Replica: r, Counter: c}
			if !s.Observed(d) || live[d] {
				held = false
			}
		}
	})
	return held
}

// String renders an ack for failure messages.
func (a *ack) String() string {
	return fmt.Sprintf("%s %s on node %d", a.op.Kind, a.op.Key, a.op.Node)
}
