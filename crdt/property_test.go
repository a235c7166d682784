package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// Property tests for the CRDT laws (DESIGN.md §3):
//
//   - TestJoinIsSemilattice: Join is commutative, associative, idempotent;
//   - TestApplyDeltaIsJoin: applying a delta or a batch is joining the state
//     it stands for (deltas are key-complete);
//   - TestDeltaJoinIsStateJoin: exchanging deltas ends where exchanging
//     states does;
//   - TestConvergesToReferenceModel: replicas converge, and read what a
//     naive reference model says, under any delivery;
//   - TestEncodingRoundTrip: states and deltas round-trip the encoding;
//   - TestKeyDeltaRepairsOneKey: KeyDelta brings one key up to the join.
//
// Every case runs a small random history: 2-4 replicas issue up to 25 ops of
// every kind on a tiny alphabet of keys, fields and elements (so that they
// collide), while deltas travel in random order, duplicated, singly or in
// batches, some over the wire encoding, many held back (dropped) until the
// end, and replicas now and then join each other's full states. TestMain
// (main_test.go) runs 1,000 cases per law unless -rapid.checks is given.

var (
	propKeys   = []string{"a", "b"}
	propFields = []string{"x", "y"}
	propElems  = []string{"p", "q", "r"}
	propValues = []string{"", "1", "2"}
	// Replica ids include the extremes of the fixed64 encoding.
	propIDs = []ReplicaID{1, 2, 3, 1 << 32, 1<<63 + 5, ^ReplicaID(0)}
)

var propKinds = []OpKind{OpPut, OpDelete, OpCounterAdd, OpSetUpdate, OpFlag}

// propHabit is how a history mostly uses one key: as one kind of value, at
// one depth. Habits make same-kind writes meet more often than random ops
// would, while stray ops still mix kinds.
type propHabit struct {
	kind  OpKind
	depth int
}

func propGenHabits(t *rapid.T) map[string]propHabit {
	hs := make(map[string]propHabit, len(propKeys))
	for _, k := range propKeys {
		hs[k] = propHabit{
			kind:  rapid.SampledFrom([]OpKind{OpPut, OpCounterAdd, OpSetUpdate, OpFlag}).Draw(t, "habit kind"),
			depth: rapid.IntRange(0, 2).Draw(t, "habit depth"),
		}
	}
	return hs
}

func propGenOp(t *rapid.T, habits map[string]propHabit) Op {
	op := Op{Key: rapid.SampledFrom(propKeys).Draw(t, "key")}
	var depth int
	if h := habits[op.Key]; rapid.IntRange(0, 3).Draw(t, "stray") != 0 {
		op.Kind = rapid.SampledFrom([]OpKind{h.kind, h.kind, h.kind, OpDelete}).Draw(t, "kind")
		depth = h.depth
	} else {
		op.Kind = rapid.SampledFrom(propKinds).Draw(t, "kind")
		depth = rapid.SampledFrom([]int{0, 0, 0, 1, 1, 2}).Draw(t, "depth")
	}
	for range depth {
		op.Path = append(op.Path, rapid.SampledFrom(propFields).Draw(t, "field"))
	}
	switch op.Kind {
	case OpPut:
		op.Value = []byte(rapid.SampledFrom(propValues).Draw(t, "value"))
	case OpCounterAdd:
		op.N = rapid.Int64Range(-3, 3).Draw(t, "n")
	case OpSetUpdate:
		elems := rapid.SampledFrom(propElems)
		op.Add = rapid.SliceOfN(elems, 0, 2).Draw(t, "add")
		op.Remove = rapid.SliceOfN(elems, 0, 2).Draw(t, "remove")
		if len(op.Add)+len(op.Remove) == 0 {
			op.Add = []string{elems.Draw(t, "elem")}
		}
	case OpFlag:
		op.Enable = rapid.Bool().Draw(t, "enable")
	}
	return op
}

func propOpString(op Op, ts Timestamp) string {
	at := strings.Join(append([]string{op.Key}, op.Path...), ".")
	switch op.Kind {
	case OpPut:
		return fmt.Sprintf("put %s=%q @%d.%d", at, op.Value, ts.Wall, ts.Logical)
	case OpCounterAdd:
		return fmt.Sprintf("add %s%+d", at, op.N)
	case OpSetUpdate:
		return fmt.Sprintf("set %s +%v -%v", at, op.Add, op.Remove)
	case OpFlag:
		return fmt.Sprintf("flag %s=%v", at, op.Enable)
	}
	return fmt.Sprintf("%v %s", op.Kind, at)
}

// propGenTime draws a clock reading from a tiny range, so that concurrent
// writes tie on time and are ordered by replica, and a causally later write
// may carry an earlier time.
func propGenTime(t *rapid.T) Timestamp {
	return Timestamp{
		Wall:    rapid.Int64Range(1, 3).Draw(t, "wall"),
		Logical: rapid.Uint32Range(0, 1).Draw(t, "logical"),
	}
}

// propWorld is one random history.
type propWorld struct {
	ids    []ReplicaID
	reps   []*Namespace
	deltas []Delta      // every delta prepared, in order
	seen   [][]bool     // seen[r][i]: deltas[i] was delivered to replica r
	snaps  []*Namespace // replica states captured along the way
	model  *propModel   // nil unless the history is checked against it
	check  bool         // check every delivery against Join(stateOf(d))
	ops    int          // successful ops
	tried  int          // ops prepared, including refused ones
}

// propMaxOps bounds the ops of one history.
const propMaxOps = 25

// What propRun checks as the history runs.
const (
	propCheckModel = 1 << iota // each replica against the reference model, after every step
	propCheckApply             // each delivery against joining the state it stands for
)

// propRun runs a random history on minReplicas to 4 replicas, of 20 to 80
// steps, about half of them ops (at most propMaxOps), the rest deliveries
// and snapshots, checking what checks asks for.
func propRun(t *rapid.T, minReplicas, checks int) *propWorld {
	n := rapid.IntRange(minReplicas, 4).Draw(t, "replicas")
	w := &propWorld{ids: rapid.Permutation(propIDs).Draw(t, "ids")[:n]}
	for range n {
		w.reps = append(w.reps, NewNamespace(Limits{}))
		w.seen = append(w.seen, nil)
	}
	if checks&propCheckModel != 0 {
		w.model = &propModel{}
	}
	w.check = checks&propCheckApply != 0
	habits := propGenHabits(t)
	steps := rapid.IntRange(20, 80).Draw(t, "steps")
	for s := range steps {
		r := rapid.IntRange(0, n-1).Draw(t, "replica")
		// Action 0, where failing cases shrink to, does nothing.
		act := rapid.IntRange(0, 11).Draw(t, "action")
		switch {
		case s == 0 || act >= 1 && act <= 5 && w.tried < propMaxOps:
			w.do(t, r, propGenOp(t, habits), propGenTime(t))
		case act >= 6 && act <= 8:
			i := w.pickDelta(t, r)
			d := w.deltas[i]
			if rapid.Bool().Draw(t, "wire") {
				d = propViaWire(t, d)
			}
			t.Logf("deliver d%d to r%d", i, r)
			w.deliver(t, r, w.reps[r], d, i)
		case act == 9:
			idx := propSubset(t, len(w.deltas), 4)
			t.Logf("deliver batch %v to r%d", idx, r)
			w.deliver(t, r, w.reps[r], propBatch(t, w.deltas, idx), idx...)
		case act == 10:
			w.snaps = append(w.snaps, w.reps[r].Clone())
		case act == 11:
			// State-based anti-entropy: join another replica's full state.
			q := rapid.IntRange(0, n-1).Draw(t, "from")
			t.Logf("r%d joins the state of r%d", r, q)
			w.reps[r].Join(w.reps[q])
			for i, seen := range w.seen[q] {
				w.seen[r][i] = w.seen[r][i] || seen
			}
		}
		if w.model != nil {
			w.checkModel(t, r)
		}
	}
	return w
}

// do prepares op on replica r and applies it there.
func (w *propWorld) do(t *rapid.T, r int, op Op, ts Timestamp) {
	ns := w.reps[r]
	w.tried++
	before := ns.Encode(nil)
	d, err := ns.Prepare(op, w.ids[r], ts)
	if !bytes.Equal(ns.Encode(nil), before) {
		t.Fatalf("Prepare(%+v) changed the state", op)
	}
	var vis []int
	if w.model != nil {
		vis = w.model.visible(w.seen[r])
		if want := w.model.wrongType(vis, op); want != errors.Is(err, ErrWrongType) {
			t.Fatalf("replica %d: Prepare(%+v) = %v; model says wrong type: %v", r, op, err, want)
		}
	}
	if errors.Is(err, ErrWrongType) {
		t.Logf("r%d: %s: wrong type", r, propOpString(op, ts))
		return
	}
	if err != nil {
		t.Fatalf("Prepare(%+v): %v", op, err)
	}
	t.Logf("r%d: %s = d%d", r, propOpString(op, ts), len(w.deltas))
	if w.model != nil {
		w.model.record(vis, w.seen[r], w.ids[r], op, ts)
	}
	w.ops++
	w.deltas = append(w.deltas, d)
	for i := range w.seen {
		w.seen[i] = append(w.seen[i], false)
	}
	w.deliver(t, r, ns, d, len(w.deltas)-1)
}

// pickDelta draws a delta to send replica r: mostly one it has not been
// delivered yet, in random order, sometimes any (a duplicate).
func (w *propWorld) pickDelta(t *rapid.T, r int) int {
	var pending []int
	for i, seen := range w.seen[r] {
		if !seen {
			pending = append(pending, i)
		}
	}
	if len(pending) == 0 || rapid.IntRange(0, 3).Draw(t, "duplicate") == 3 {
		return rapid.IntRange(0, len(w.deltas)-1).Draw(t, "delta")
	}
	return rapid.SampledFrom(pending).Draw(t, "pending")
}

// deliver applies d, standing for w.deltas[idx...], to ns, which is replica
// r's state.
func (w *propWorld) deliver(t *rapid.T, r int, ns *Namespace, d Delta, idx ...int) {
	if w.check {
		propApplyChecked(t, fmt.Sprintf("r%d: deltas %v", r, idx), ns, d)
	} else {
		ns.ApplyDelta(d, nil)
	}
	for _, i := range idx {
		w.seen[r][i] = true
	}
}

// deliverAll sends replica r every delta of the history, in random order,
// some twice, singly or in batches.
func (w *propWorld) deliverAll(t *rapid.T, r int, ns *Namespace) {
	all := make([]int, len(w.deltas))
	for i := range all {
		all[i] = i
	}
	order := append(all, rapid.SliceOfN(rapid.IntRange(0, len(w.deltas)-1), 0, 4).Draw(t, "resend")...)
	order = rapid.Permutation(order).Draw(t, "order")
	for len(order) > 0 {
		k := min(rapid.IntRange(1, 3).Draw(t, "batch"), len(order))
		idx := order[:k]
		order = order[k:]
		w.deliver(t, r, ns, propBatch(t, w.deltas, idx), idx...)
	}
}

// pool returns every state of the history: snapshots and final replicas.
func (w *propWorld) pool() []*Namespace {
	return append(slices.Clone(w.snaps), w.reps...)
}

// propSubset draws 1..max distinct indices below n, in random order.
func propSubset(t *rapid.T, n, max int) []int {
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	all = rapid.Permutation(all).Draw(t, "subset")
	return all[:rapid.IntRange(1, min(max, n)).Draw(t, "size")]
}

// propBatch joins the deltas named by idx into one, by JoinDeltas or by a
// DeltaBuilder fed with two sub-batches.
func propBatch(t *rapid.T, ds []Delta, idx []int) Delta {
	parts := make([]Delta, len(idx))
	for i, j := range idx {
		parts[i] = ds[j]
	}
	if len(parts) == 1 || rapid.Bool().Draw(t, "joinDeltas") {
		return JoinDeltas(parts...)
	}
	cut := rapid.IntRange(1, len(parts)-1).Draw(t, "cut")
	var b DeltaBuilder
	b.Add(JoinDeltas(parts[:cut]...))
	b.Add(JoinDeltas(parts[cut:]...))
	return b.Build()
}

// propViaWire encodes and decodes d, as a peer would receive it.
func propViaWire(t *rapid.T, d Delta) Delta {
	got, err := DecodeDelta(d.Encode(nil), Limits{})
	if err != nil {
		t.Fatalf("decode own delta: %v", err)
	}
	return got
}

// stateOf turns a delta into the state it stands for: the delta's context,
// and its values without removal markers (empty set elements, fields and
// keys) and covers marks.
func stateOf(d Delta) *Namespace {
	n := NewNamespace(Limits{})
	n.ctx = d.ctx.Clone()
	var empty Context
	for _, e := range d.entries {
		var v Value
		joinValue(&v, &empty, e.val, &d.ctx, true, false)
		n.put(e.key, slot{}, nil, v)
	}
	return n
}

func propJoin(a, b *Namespace) *Namespace {
	x := a.Clone()
	x.Join(b.Clone())
	return x
}

// propEqual fails unless a and b are the same state by every measure the
// package offers.
func propEqual(t *rapid.T, what string, a, b *Namespace) {
	t.Helper()
	if !a.Equal(b) || !b.Equal(a) || a.Digest() != b.Digest() || !bytes.Equal(a.Encode(nil), b.Encode(nil)) {
		t.Fatalf("%s: states differ\n%s\nvs\n%s", what, propDump(a), propDump(b))
	}
}

func propDump(n *Namespace) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ctx %v\n", n.ctx.ranges)
	b.WriteString(propRender(n))
	return b.String()
}

// Law 1: Join is commutative, associative and idempotent on reachable
// states, and leaves its argument alone.
func TestJoinIsSemilattice(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := propRun(t, 2, 0)
		pool := w.pool()
		pick := func(label string) *Namespace {
			return pool[rapid.IntRange(0, len(pool)-1).Draw(t, label)]
		}
		a, b, c := pick("a"), pick("b"), pick("c")
		propEqual(t, "a⊔b = b⊔a", propJoin(a, b), propJoin(b, a))
		propEqual(t, "(a⊔b)⊔c = a⊔(b⊔c)", propJoin(propJoin(a, b), c), propJoin(a, propJoin(b, c)))
		propEqual(t, "a⊔a = a", propJoin(a, a), a)
		propEqual(t, "(a⊔b)⊔b = a⊔b", propJoin(propJoin(a, b), b), propJoin(a, b))

		// Neither Join nor later changes to its result touch the argument.
		before := b.Encode(nil)
		x := a.Clone()
		x.Join(b)
		for _, d := range w.deltas {
			x.ApplyDelta(d, nil)
		}
		x.Join(a.Clone())
		if !bytes.Equal(b.Encode(nil), before) {
			t.Fatalf("Join changed its argument")
		}
	})
}

// Law 2: applying a delta (one op's, or a batch of several replicas') is
// joining the state it stands for, although ApplyDelta visits only what the
// delta names.
func TestApplyDeltaIsJoin(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		// Every delivery of the history, and of all deltas to one replica
		// at its end, is checked against the state that receives it.
		w := propRun(t, 2, propCheckApply)
		pool := w.pool()
		r := rapid.IntRange(0, len(w.reps)-1).Draw(t, "receiver")
		w.deliverAll(t, r, w.reps[r].Clone())
		// So are other pairs: some state of the history with each delta
		// and with a batch.
		s := pool[rapid.IntRange(0, len(pool)-1).Draw(t, "state")]
		for i, d := range w.deltas {
			propApplyChecked(t, fmt.Sprintf("d%d", i), s.Clone(), d)
		}
		idx := propSubset(t, len(w.deltas), 5)
		got := s.Clone()
		propApplyChecked(t, fmt.Sprintf("batch %v", idx), got, propBatch(t, w.deltas, idx))

		// Applying the parts one by one, in any order, is the same.
		seq := s.Clone()
		for _, i := range rapid.Permutation(idx).Draw(t, "parts") {
			seq.ApplyDelta(w.deltas[i], nil)
		}
		propEqual(t, "batch vs its parts", seq, got)
	})
}

// propApplyChecked applies d to s and checks that this gives s joined with
// stateOf(d), leaves d alone and reports every key d names.
func propApplyChecked(t *rapid.T, what string, got *Namespace, d Delta) {
	t.Helper()
	enc := d.Encode(nil)
	st := stateOf(d)
	if _, err := DecodeNamespace(st.Encode(nil), Limits{}); err != nil {
		t.Fatalf("%s: stateOf gave an invalid state: %v", what, err)
	}
	want := got.Clone()
	want.Join(st)

	// A store keeps the namespace digest up to date from the callback.
	var sum DigestSum
	got.Range(func(key string, v Value) bool {
		sum.Add(KeyDigest(key, v))
		return true
	})
	old := map[string]Digest{}
	for i := range d.Len() {
		if v, ok := got.Get(d.Key(i)); ok {
			old[d.Key(i)] = KeyDigest(d.Key(i), v)
		}
	}

	changed := map[string]Value{}
	got.ApplyDelta(d, func(key string, v Value) { changed[key] = v })
	if !got.Equal(want) {
		t.Fatalf("%s: ApplyDelta(d) vs Join(stateOf(d)): states differ\n%s\nvs\n%s", what, propDump(got), propDump(want))
	}
	if !bytes.Equal(d.Encode(nil), enc) {
		t.Fatalf("%s: ApplyDelta changed the delta", what)
	}
	if len(changed) != d.Len() {
		t.Fatalf("%s: callback saw %d keys, delta names %d", what, len(changed), d.Len())
	}
	for i := range d.Len() {
		v, ok := changed[d.Key(i)]
		cur, has := got.Get(d.Key(i))
		if !ok || has == v.IsEmpty() || !bytes.Equal(v.Encode(nil), cur.Encode(nil)) {
			t.Fatalf("%s: callback for %q: %v (in state: %v)", what, d.Key(i), ok, has)
		}
		if dg, ok := old[d.Key(i)]; ok {
			sum.Remove(dg)
		}
		if !v.IsEmpty() {
			sum.Add(KeyDigest(d.Key(i), v))
			if KeyDigestEncoded(d.Key(i), v.Encode(nil)) != KeyDigest(d.Key(i), v) {
				t.Fatalf("%s: KeyDigestEncoded differs from KeyDigest for %q", what, d.Key(i))
			}
		}
	}
	if ctx := got.Context(); NamespaceDigest(&ctx, &sum) != got.Digest() || sum.Len() != uint64(got.Len()) {
		t.Fatalf("%s: digest kept from the callback differs from Digest()", what)
	}
	if got.DigestWithSum(&sum) != got.Digest() {
		t.Fatalf("%s: DigestWithSum differs from Digest()", what)
	}
}

// Law 3: replicas that exchange only deltas end equal to replicas that join
// each other's full states.
func TestDeltaJoinIsStateJoin(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := propRun(t, 2, 0)
		n := len(w.reps)
		var viaDeltas, viaStates []*Namespace
		for r := range n {
			d := w.reps[r].Clone()
			w.deliverAll(t, r, d)
			viaDeltas = append(viaDeltas, d)

			s := w.reps[r].Clone()
			others := append(rapid.Permutation(w.reps).Draw(t, "joins"), w.reps[r])
			for _, o := range others {
				s.Join(o)
			}
			viaStates = append(viaStates, s)
		}
		fresh := NewNamespace(Limits{})
		for _, i := range propSubset(t, len(w.deltas), len(w.deltas)) {
			fresh.ApplyDelta(w.deltas[i], nil)
		}
		for _, d := range w.deltas {
			fresh.ApplyDelta(d, nil)
		}
		for r := range n {
			propEqual(t, fmt.Sprintf("replica %d: deltas vs states", r), viaDeltas[r], viaStates[r])
			propEqual(t, fmt.Sprintf("replica %d vs 0", r), viaDeltas[r], viaDeltas[0])
		}
		propEqual(t, "fresh replica fed every delta", fresh, viaDeltas[0])
	})
}

// Law 4: under random delivery with duplicates and drops, every replica
// matches the reference model after every step, and after full delivery all
// replicas are equal and match the model.
func TestConvergesToReferenceModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := propRun(t, 3, propCheckModel)
		for r := range w.reps {
			w.deliverAll(t, r, w.reps[r])
			w.checkModel(t, r)
		}
		want := w.model.render(w.model.finalVisible())
		for r, ns := range w.reps {
			if ns.Digest() != w.reps[0].Digest() {
				t.Fatalf("replica %d and 0 differ after full delivery\n%s\nvs\n%s", r, propDump(ns), propDump(w.reps[0]))
			}
			if got := propRender(ns); got != want {
				t.Fatalf("replica %d after full delivery:\n%s\nobserved-set model:\n%s", r, got, want)
			}
		}
	})
}

// Law 5: the canonical encoding round-trips states and deltas exactly.
func TestEncodingRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := propRun(t, 2, 0)
		for _, s := range w.pool() {
			enc := s.Encode(nil)
			got, err := DecodeNamespace(enc, Limits{})
			if err != nil {
				t.Fatalf("DecodeNamespace: %v\n%s", err, propDump(s))
			}
			propEqual(t, "decoded state", got, s)
			if !bytes.Equal(got.Encode(nil), enc) {
				t.Fatalf("state does not re-encode to the same bytes")
			}
			// As a store loads it: the context, then each key's value.
			ctx, err := DecodeContext(s.ctx.Encode(nil), Limits{})
			if err != nil || !ctx.Equal(s.ctx) {
				t.Fatalf("context round trip: %v", err)
			}
			loaded := NewNamespace(Limits{})
			loaded.RestoreContext(ctx)
			s.Range(func(key string, v Value) bool {
				got, err := DecodeValue(v.Encode(nil), Limits{})
				if err != nil || !bytes.Equal(got.Encode(nil), v.Encode(nil)) {
					t.Fatalf("value of %q round trip: %v", key, err)
				}
				if err := loaded.Restore(key, got); err != nil {
					t.Fatalf("Restore(%q): %v", key, err)
				}
				return true
			})
			propEqual(t, "state restored key by key", loaded, s)
		}
		ds := append(slices.Clone(w.deltas), propBatch(t, w.deltas, propSubset(t, len(w.deltas), 6)))
		target := w.pool()[0]
		for _, d := range ds {
			enc := d.Encode(nil)
			got, err := DecodeDelta(enc, Limits{})
			if err != nil {
				t.Fatalf("DecodeDelta: %v", err)
			}
			if !bytes.Equal(got.Encode(nil), enc) {
				t.Fatalf("delta does not re-encode to the same bytes")
			}
			a, b := target.Clone(), target.Clone()
			a.ApplyDelta(d, nil)
			b.ApplyDelta(got, nil)
			propEqual(t, "applying the decoded delta", b, a)
		}
	})
}

// KeyDelta carries one key's value to a peer: applied there, the key reads
// as in the join of both states, and nothing else changes.
func TestKeyDeltaRepairsOneKey(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := propRun(t, 2, 0)
		pool := w.pool()
		n := pool[rapid.IntRange(0, len(pool)-1).Draw(t, "from")]
		p := pool[rapid.IntRange(0, len(pool)-1).Draw(t, "to")]
		both := propJoin(p, n)
		for _, key := range propKeys {
			got := p.Clone()
			got.ApplyDelta(n.KeyDelta(key, p.ValueDots(key)), nil)
			for _, k := range propKeys {
				want := p
				if k == key {
					want = both
				}
				gv, _ := got.Get(k)
				wv, _ := want.Get(k)
				if !bytes.Equal(gv.Encode(nil), wv.Encode(nil)) {
					t.Fatalf("KeyDelta(%q): key %q reads\n%s\nwant\n%s", key, k, propDump(got), propDump(want))
				}
			}
			got.Join(n)
			propEqual(t, fmt.Sprintf("KeyDelta(%q) then a full join", key), got, both)
		}
	})
}

// --- the reference model ---
//
// The model knows nothing of dots, contexts or joins. It records every
// successful op with the set of ops its replica had been delivered when it
// was issued (observed), the atoms it wrote (a register write, a counter
// share, one added set element, an enabled flag) and the atoms it removed:
// those visible at its replica within its scope. An atom is visible at a
// replica if its op was delivered there and no op delivered there removed
// it (tombstones, as in an op-based OR-set). After full delivery the model
// also gives the answer from the observed sets alone: an atom is gone iff
// some op that observed it has it in scope.
//
// Scopes follow the documented semantics: a delete removes everything at
// and below its path; a write of kind K at path P removes everything at and
// below P that is not of kind K at P (a value left with mixed kinds by
// concurrent writers heals to one kind), everything held directly at the
// maps above P, and of kind K at P: every register write, its own replica's
// counter share, the set elements it adds or removes, every flag enable.
//
// A counter add replaces its replica's share with share+N, where share is
// what that replica saw of its own share (the causal counter of Almeida et
// al.). So a counter is not the sum of the adds no delete observed: an add
// concurrent with a delete carries forward the share the delete removed.
// If A adds 5, B sees it and deletes the key, and A concurrently adds 2,
// every replica ends at 7, not 2.

type propAtom struct {
	op    int // index of the op (and delta) that wrote it
	key   string
	path  []string
	kind  Kind
	elem  string    // set element
	val   string    // register value
	ts    Timestamp // register clock reading
	rep   ReplicaID
	total int64 // counter: the writer's whole share
}

type propModelOp struct {
	rep      ReplicaID
	op       Op
	observed []bool // observed[i]: op i was delivered to the issuer first
	atoms    []int
	removes  []int
}

type propModel struct {
	atoms []propAtom
	ops   []propModelOp
}

func propHasPrefix(path, prefix []string) bool {
	return len(path) >= len(prefix) && slices.Equal(path[:len(prefix)], prefix)
}

func propKindOf(k OpKind) Kind {
	switch k {
	case OpPut:
		return KindRegister
	case OpCounterAdd:
		return KindCounter
	case OpSetUpdate:
		return KindSet
	case OpFlag:
		return KindFlag
	}
	return 0
}

// inScope reports whether o removes atom x if o's replica holds it.
func (o *propModelOp) inScope(x *propAtom) bool {
	p := o.op.Path
	switch {
	case x.key != o.op.Key:
		return false
	case !propHasPrefix(x.path, p):
		// Held directly by a map above the write's path.
		return o.op.Kind != OpDelete && propHasPrefix(p, x.path)
	case o.op.Kind == OpDelete:
		return true
	case x.kind != propKindOf(o.op.Kind) || len(x.path) != len(p):
		return true
	case x.kind == KindCounter:
		return x.rep == o.rep
	case x.kind == KindSet:
		return slices.Contains(o.op.Add, x.elem) || slices.Contains(o.op.Remove, x.elem)
	}
	return true
}

// visible returns the atoms visible at a replica that has been delivered the
// ops marked in seen.
func (m *propModel) visible(seen []bool) []int {
	in := make([]bool, len(m.atoms))
	gone := make([]bool, len(m.atoms))
	for i := range seen {
		if seen[i] {
			for _, a := range m.ops[i].atoms {
				in[a] = true
			}
			for _, a := range m.ops[i].removes {
				gone[a] = true
			}
		}
	}
	var out []int
	for a := range m.atoms {
		if in[a] && !gone[a] {
			out = append(out, a)
		}
	}
	return out
}

// finalVisible returns the atoms visible once every op is delivered
// everywhere, from the observed sets alone.
func (m *propModel) finalVisible() []int {
	var out []int
	for a := range m.atoms {
		x := &m.atoms[a]
		gone := false
		for i := range m.ops {
			o := &m.ops[i]
			if x.op < len(o.observed) && o.observed[x.op] && o.inScope(x) {
				gone = true
				break
			}
		}
		if !gone {
			out = append(out, a)
		}
	}
	return out
}

// kindsAt returns the kinds held at key/path among the visible atoms.
func (m *propModel) kindsAt(vis []int, key string, path []string) Kind {
	var k Kind
	for _, a := range vis {
		x := &m.atoms[a]
		if x.key != key || !propHasPrefix(x.path, path) {
			continue
		}
		if len(x.path) == len(path) {
			k |= x.kind
		} else {
			k |= KindMap
		}
	}
	return k
}

// wrongType reports whether op must be refused: a map along its path, or
// its target, holds only other kinds.
func (m *propModel) wrongType(vis []int, op Op) bool {
	if op.Kind == OpDelete {
		return false
	}
	for d := range op.Path {
		if k := m.kindsAt(vis, op.Key, op.Path[:d]); k != 0 && k&KindMap == 0 {
			return true
		}
	}
	k := m.kindsAt(vis, op.Key, op.Path)
	return k != 0 && k&propKindOf(op.Kind) == 0
}

// record adds a successful op issued by rep at a replica that sees vis and
// has been delivered the ops in seen.
func (m *propModel) record(vis []int, seen []bool, rep ReplicaID, op Op, ts Timestamp) {
	o := propModelOp{rep: rep, op: op, observed: slices.Clone(seen)}
	var share int64
	for _, a := range vis {
		x := &m.atoms[a]
		if !o.inScope(x) {
			continue
		}
		o.removes = append(o.removes, a)
		if op.Kind == OpCounterAdd && x.kind == KindCounter && slices.Equal(x.path, op.Path) {
			share += x.total
		}
	}
	add := func(x propAtom) {
		x.op, x.key, x.path, x.rep = len(m.ops), op.Key, slices.Clone(op.Path), rep
		o.atoms = append(o.atoms, len(m.atoms))
		m.atoms = append(m.atoms, x)
	}
	switch op.Kind {
	case OpPut:
		add(propAtom{kind: KindRegister, val: string(op.Value), ts: ts})
	case OpCounterAdd:
		add(propAtom{kind: KindCounter, total: share + op.N})
	case OpSetUpdate:
		added := map[string]bool{}
		for _, e := range op.Add {
			if !added[e] {
				added[e] = true
				add(propAtom{kind: KindSet, elem: e})
			}
		}
	case OpFlag:
		if op.Enable {
			add(propAtom{kind: KindFlag})
		}
	}
	m.ops = append(m.ops, o)
}

// checkModel compares replica r with the model's view of what it was
// delivered.
func (w *propWorld) checkModel(t *rapid.T, r int) {
	t.Helper()
	want := w.model.render(w.model.visible(w.seen[r]))
	if got := propRender(w.reps[r]); got != want {
		t.Fatalf("replica %d differs from the model\ngot:\n%s\nwant:\n%s", r, got, want)
	}
}

// propNode is the model's value at one key or field.
type propNode struct {
	regs   []*propAtom
	ctr    bool
	sum    int64
	elems  []string
	flag   bool
	fields map[string]*propNode
}

// render prints the visible atoms in the format of propRender.
func (m *propModel) render(vis []int) string {
	keys := map[string]*propNode{}
	for _, a := range vis {
		x := &m.atoms[a]
		n := keys[x.key]
		if n == nil {
			n = &propNode{}
			keys[x.key] = n
		}
		for _, f := range x.path {
			if n.fields == nil {
				n.fields = map[string]*propNode{}
			}
			c := n.fields[f]
			if c == nil {
				c = &propNode{}
				n.fields[f] = c
			}
			n = c
		}
		switch x.kind {
		case KindRegister:
			n.regs = append(n.regs, x)
		case KindCounter:
			n.ctr = true
			n.sum += x.total
		case KindSet:
			if !slices.Contains(n.elems, x.elem) {
				n.elems = append(n.elems, x.elem)
			}
		case KindFlag:
			n.flag = true
		}
	}
	var b strings.Builder
	for _, k := range propSorted(keys) {
		b.WriteString(k)
		keys[k].render(&b)
		b.WriteByte('\n')
	}
	return b.String()
}

func (n *propNode) render(b *strings.Builder) {
	b.WriteByte('{')
	if len(n.regs) > 0 {
		// Winner last: by time, then replica, then issue order (which is
		// one replica's dot order).
		sort.Slice(n.regs, func(i, j int) bool {
			x, y := n.regs[i], n.regs[j]
			if x.ts.Wall != y.ts.Wall {
				return x.ts.Wall < y.ts.Wall
			}
			if x.ts.Logical != y.ts.Logical {
				return x.ts.Logical < y.ts.Logical
			}
			if x.rep != y.rep {
				return x.rep < y.rep
			}
			return x.op < y.op
		})
		b.WriteString(" reg[")
		for _, x := range n.regs {
			fmt.Fprintf(b, " %q@%d.%d/%x", x.val, x.ts.Wall, x.ts.Logical, uint64(x.rep))
		}
		fmt.Fprintf(b, " ]=%q", n.regs[len(n.regs)-1].val)
	}
	if n.ctr {
		fmt.Fprintf(b, " ctr=%d", n.sum)
	}
	if len(n.elems) > 0 {
		sort.Strings(n.elems)
		fmt.Fprintf(b, " set%v", n.elems)
	}
	if n.flag {
		b.WriteString(" flag")
	}
	for _, f := range propSorted(n.fields) {
		fmt.Fprintf(b, " %s:", f)
		n.fields[f].render(b)
	}
	b.WriteString(" }")
}

func propSorted[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// propRender prints what a namespace's reads return, in a form the model
// can produce independently.
func propRender(ns *Namespace) string {
	var b strings.Builder
	ns.Range(func(key string, v Value) bool {
		b.WriteString(key)
		propRenderValue(&b, v)
		b.WriteByte('\n')
		return true
	})
	return b.String()
}

func propRenderValue(b *strings.Builder, v Value) {
	b.WriteByte('{')
	if regs := v.Registers(); len(regs) > 0 {
		b.WriteString(" reg[")
		for _, e := range regs {
			fmt.Fprintf(b, " %q@%d.%d/%x", e.Value, e.Time.Wall, e.Time.Logical, uint64(e.Dot.Replica))
		}
		val, siblings, ok := v.Register()
		if !ok || siblings != len(regs) {
			fmt.Fprintf(b, " siblings=%d ok=%v", siblings, ok)
		}
		fmt.Fprintf(b, " ]=%q", val)
	}
	if v.Kinds()&KindCounter != 0 {
		fmt.Fprintf(b, " ctr=%d", v.Counter())
	}
	if els := v.SetElements(); len(els) > 0 {
		if v.SetLen() != len(els) || !v.SetContains(els[0]) {
			b.WriteString(" set-reads-disagree")
		}
		fmt.Fprintf(b, " set%v", els)
	}
	if v.Flag() {
		b.WriteString(" flag")
	}
	for _, f := range v.Fields() {
		fv, _ := v.Field(f)
		fmt.Fprintf(b, " %s:", f)
		propRenderValue(b, fv)
	}
	b.WriteString(" }")
}
