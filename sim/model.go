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
	// delete, set remove or map delete, which create none).
	delta crdt.Delta
	dot   crdt.Dot
	// lostOnWipe: acknowledged only on nodes whose store was then wiped
	// (crash with keep_disk: false), so gone by the scenario's own doing;
	// cleared again if a live node shows the op at the end (reviveWiped).
	lostOnWipe bool
}

func (a *ack) ok() bool { return !a.skipped && a.err == nil }

// describe names the op and its outcome, for a report's detail.
func (a *ack) describe() string {
	var dots []crdt.Dot
	a.delta.StoreDots(func(x crdt.Dot) { dots = append(dots, x) })
	return fmt.Sprintf("op %d (node %d, %s %q field %q at %v, returned at %v, lost on a wipe %v, the delta's dots %v)",
		a.id, a.op.Node, a.op.Kind, a.op.Key, a.op.Field, a.op.At, a.at.Format("15:04:05.000"), a.lostOnWipe, dots)
}

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
	field string // a map entry's field
	value string // a register's value (a map field's too) or a set's element
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
// surviving add (add-wins); counters are the sum of every acknowledged add;
// maps each field with a surviving entry, read as a register.
type model struct {
	keys     map[string]OpKind
	byKey    map[string][]crdt.Dot
	created  map[crdt.Dot]entry
	removed  map[crdt.Dot]bool
	counters map[string]int64
	// reused counts dots two different acknowledged ops created, lost on
	// a wipe or not: a replica handed out a dot twice, which no model can
	// reconcile. (A replica restarted on a wiped store reusing its old
	// counters is the case to catch, and there the op before the wipe is
	// usually the one lost.)
	reused int
	// reusedOps names the ops behind the first few reused dots, to trace
	// one back.
	reusedOps []string
}

func newModel(acks []ack) *model {
	m := &model{keys: make(map[string]OpKind), byKey: make(map[string][]crdt.Dot), created: make(map[crdt.Dot]entry), removed: make(map[crdt.Dot]bool), counters: make(map[string]int64)}
	byReplica := make(map[crdt.ReplicaID][]uint64)
	given := make(map[crdt.Dot]*ack)
	for i := range acks {
		if a := &acks[i]; a.ok() && a.dot != (crdt.Dot{}) {
			if first := given[a.dot]; first != nil {
				m.reused++
				if len(m.reusedOps) < 10 {
					m.reusedOps = append(m.reusedOps, fmt.Sprintf("dot %v: %s; %s", a.dot, first.describe(), a.describe()))
				}
				continue
			}
			given[a.dot] = a
		}
	}
	for i := range acks {
		a := &acks[i]
		if !a.ok() || a.lostOnWipe {
			continue
		}
		kind := a.op.Kind
		switch kind {
		case OpDelete:
			kind = OpPut
		case OpSetRemove:
			kind = OpSetAdd
		case OpMapDelete:
			kind = OpMapPut
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
		e := entry{key: a.op.Key, kind: a.op.Kind, field: a.op.Field, value: a.op.Value}
		v := a.delta.Value(0)
		if a.op.Kind == OpMapPut {
			v, _ = v.Field(a.op.Field)
		}
		if regs := v.Registers(); len(regs) == 1 {
			e.time = regs[0].Time
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
	case OpMapPut:
		fields := make(map[string][]crdt.RegEntry)
		for _, d := range m.byKey[key] {
			if !m.removed[d] {
				e := m.created[d]
				fields[e.field] = append(fields[e.field], crdt.RegEntry{Dot: d, Time: e.time, Value: e.value})
			}
		}
		return renderFields(fields), len(fields) > 0
	default:
		var regs []crdt.RegEntry
		for _, d := range m.byKey[key] {
			if !m.removed[d] {
				e := m.created[d]
				regs = append(regs, crdt.RegEntry{Dot: d, Time: e.time, Value: e.value})
			}
		}
		return renderRegisters(regs), len(regs) > 0
	}
}

// renderRegisters renders a register's entries, the winner last (as
// Namespace.GetAll lists them): by HLC, then replica, then counter.
func renderRegisters(regs []crdt.RegEntry) string {
	slices.SortFunc(regs, func(a, b crdt.RegEntry) int {
		return cmp.Or(cmp.Compare(a.Time.Wall, b.Time.Wall), cmp.Compare(a.Time.Logical, b.Time.Logical),
			cmp.Compare(a.Dot.Replica, b.Dot.Replica), cmp.Compare(a.Dot.Counter, b.Dot.Counter))
	})
	vals := make([]string, len(regs))
	for i, r := range regs {
		vals[i] = r.Value
	}
	return strings.Join(vals, ",")
}

// renderFields renders a map of register fields: each field with entries,
// in field order, as field=entries, joined by ";".
func renderFields(fields map[string][]crdt.RegEntry) string {
	names := make([]string, 0, len(fields))
	for f := range fields {
		names = append(names, f)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, f := range names {
		parts[i] = f + "=" + renderRegisters(fields[f])
	}
	return strings.Join(parts, ";")
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
	case OpMapPut:
		v, ok := s.Value(key)
		if !ok {
			return "", false, nil
		}
		fields := make(map[string][]crdt.RegEntry)
		for _, f := range v.Fields() {
			fv, _ := v.Field(f)
			if regs := fv.Registers(); len(regs) > 0 {
				fields[f] = slices.Clone(regs) // sorted again in place
			}
		}
		return renderFields(fields), len(fields) > 0, nil
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
	case OpMapPut:
		return "map"
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

// reviveWiped clears lostOnWipe on each op that a live replica's final
// state shows after all, and returns how many. markWiped judges at the
// moment of the wipe, when a copy of the op may still be on its way: in a
// gossip message on the wire, or received and not yet committed. Such an
// op survives, and its effects with it (a put that replaced siblings has
// removed them everywhere it reached), so the model must count it. An op
// whose dot another acknowledged op was also given is left lost: the dot
// seen at the end may be the other op's.
func reviveWiped(acks []ack, spaces []*node.Namespace) (revived int) {
	given := make(map[crdt.Dot]int)
	for i := range acks {
		if a := &acks[i]; a.ok() && a.dot != (crdt.Dot{}) {
			given[a.dot]++
		}
	}
	for i := range acks {
		a := &acks[i]
		if !a.lostOnWipe || (a.dot != (crdt.Dot{}) && given[a.dot] > 1) {
			continue
		}
		for _, s := range spaces {
			if s != nil && heldBy(a, s) {
				a.lostOnWipe = false
				revived++
				break
			}
		}
	}
	return revived
}

// heldBy reports whether replica s has the op's effect: its dot observed,
// if it made one, and every other dot its context covers (what it replaced
// or removed) observed and no longer held. Knowing the dot alone is not
// enough: a later op of the same node carries it in its context, so a
// replica can know a put's dot without the put ever reaching it, and then
// still hold what the put replaced.
func heldBy(a *ack, s *node.Namespace) bool {
	if a.dot != (crdt.Dot{}) && !s.Observed(a.dot) {
		return false
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
			if d != a.dot && (!s.Observed(d) || live[d]) {
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
