package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// The fuzz targets feed arbitrary bytes to the four decoders. For every
// input, under the default limits and under each of fuzzSmallLimits:
//
//   - decoding never panics, and a refusal wraps ErrMalformed or ErrLimit;
//   - what is accepted respects the limits it was decoded under, and
//     re-encodes to bytes that decode again under the same limits (MaxBytes
//     aside) and re-encode identically (canonical form is a fixed point);
//   - tighter limits only refuse more: what they accept decodes to the same
//     canonical bytes as under the defaults.
//
// Each target then checks what the decoded thing is used for: a delta is
// applied, twice, to an empty and to a non-empty namespace, and local writes
// follow it; a state is joined; a value is restored and written over; a
// context is merged.

// fuzzSmallLimits returns the tight limits every input is also decoded
// under.
func fuzzSmallLimits() []Limits {
	return []Limits{
		{MaxDepth: 2, MaxElements: 16},
		{MaxDepth: 1, MaxElements: 4, MaxKeyBytes: 4, MaxValueBytes: 8},
		{MaxElements: 2, MaxBytes: 256},
		{MaxDepth: 3, MaxKeyBytes: 2, MaxValueBytes: 1},
	}
}

// fuzzLocal is the replica id local writes in the fuzz targets use.
const fuzzLocal = ReplicaID(0x10ca1)

func FuzzDecodeDelta(f *testing.F) {
	h := fuzzBuildHistory(f)
	for _, b := range h.deltaSeeds() {
		f.Add(b)
	}
	for _, b := range h.stateSeeds() {
		f.Add(b) // a state also decodes as a delta
	}
	for _, b := range fuzzHostileSeeds() {
		f.Add(b)
	}
	base := h.states[0]
	f.Fuzz(func(t *testing.T, data []byte) {
		d, ok := fuzzRoundTrip(t, data, DecodeDelta, Delta.Encode, fuzzCheckDeltaLimits)
		if !ok {
			return
		}
		enc := d.Encode(nil)
		for _, n := range []*Namespace{NewNamespace(Limits{}), base.Clone()} {
			fuzzApplyTwice(t, n, d)
			fuzzWriteAfter(t, n, d)
		}
		if again := d.Encode(nil); !bytes.Equal(again, enc) {
			t.Fatalf("applying the delta changed it:\nbefore %q\nafter  %q", enc, again)
		}
		// A delta joined with itself is the same delta.
		dd := JoinDeltas(d, d)
		if got := dd.Encode(nil); !bytes.Equal(got, enc) {
			t.Fatalf("JoinDeltas(d, d) != d:\nd     %q\njoined %q", enc, got)
		}
	})
}

func FuzzDecodeNamespace(f *testing.F) {
	h := fuzzBuildHistory(f)
	for _, b := range h.stateSeeds() {
		f.Add(b)
	}
	for _, b := range h.deltaSeeds() {
		f.Add(b) // most carry marks a state may not hold
	}
	for _, b := range fuzzHostileSeeds() {
		f.Add(b)
	}
	base := h.states[1]
	f.Fuzz(func(t *testing.T, data []byte) {
		n, ok := fuzzRoundTrip(t, data, DecodeNamespace, (*Namespace).Encode, fuzzCheckNamespaceLimits)
		if !ok {
			return
		}
		fuzzCheckState(t, n, "decoded state")
		// The join is idempotent and commutative.
		self := n.Clone()
		self.Join(n)
		if self.Digest() != n.Digest() {
			t.Fatalf("n ⊔ n != n:\nn     %q\njoined %q", n.Encode(nil), self.Encode(nil))
		}
		x, y := n.Clone(), base.Clone()
		x.Join(base)
		y.Join(n)
		if x.Digest() != y.Digest() {
			t.Fatalf("n ⊔ base != base ⊔ n:\n%q\n%q", x.Encode(nil), y.Encode(nil))
		}
		fuzzCheckState(t, x, "joined state")
		once := x.Digest()
		x.Join(base)
		if x.Digest() != once {
			t.Fatal("joining base twice differs from once")
		}
		// Each key's value, encoded alone, is a state value.
		n.Range(func(k string, v Value) bool {
			if _, err := DecodeValue(v.Encode(nil), Limits{}); err != nil {
				t.Fatalf("key %q of a decoded state: %v", k, err)
			}
			return true
		})
	})
}

func FuzzDecodeContext(f *testing.F) {
	h := fuzzBuildHistory(f)
	for _, b := range h.contextSeeds() {
		f.Add(b)
	}
	for _, b := range fuzzHostileSeeds() {
		f.Add(b)
	}
	base := h.states[2].Context()
	f.Fuzz(func(t *testing.T, data []byte) {
		c, ok := fuzzRoundTrip(t, data, DecodeContext, func(c Context, b []byte) []byte { return c.Encode(b) }, fuzzCheckContextLimits)
		if !ok {
			return
		}
		if !c.valid() {
			t.Fatalf("decoded context is not sorted, disjoint and non-adjacent: %v", c.ranges)
		}
		c.ForEachRange(func(r ReplicaID, lo, hi uint64) {
			if !c.Contains(Dot{r, lo}) || !c.Contains(Dot{r, hi}) {
				t.Fatalf("range %v:%d..%d: an end is not contained", r, lo, hi)
			}
			if lo > 1 && c.Contains(Dot{r, lo - 1}) {
				t.Fatalf("range %v:%d..%d: dot before it is contained", r, lo, hi)
			}
			if hi < math.MaxUint64 && c.Contains(Dot{r, hi + 1}) {
				t.Fatalf("range %v:%d..%d: dot after it is contained", r, lo, hi)
			}
			if c.Max(r) < hi {
				t.Fatalf("Max(%v) = %d below range end %d", r, c.Max(r), hi)
			}
		})
		_, _ = c.VersionVector(), c.Replicas()
		if !c.Covers(c) {
			t.Fatal("context does not cover itself")
		}
		if m := c.Missing(c); m.Ranges() != 0 {
			t.Fatalf("c.Missing(c) = %v", m.ranges)
		}
		self := c.Clone()
		self.Merge(c)
		if !self.Equal(c) {
			t.Fatalf("c ∪ c = %v, want %v", self.ranges, c.ranges)
		}
		x, y := c.Clone(), base.Clone()
		x.Merge(base)
		y.Merge(c)
		if !x.Equal(y) || !x.valid() {
			t.Fatalf("merge not commutative or not valid:\n%v\n%v", x.ranges, y.ranges)
		}
		if !x.Covers(c) || !x.Covers(base) {
			t.Fatal("merge does not cover its inputs")
		}
		// What base misses of c, added to base, gives the merge.
		miss := base.Missing(c)
		if !miss.valid() {
			t.Fatalf("Missing returned invalid ranges %v", miss.ranges)
		}
		z := base.Clone()
		z.Merge(miss)
		if !z.Equal(x) {
			t.Fatalf("base ∪ (c \\ base) = %v, want %v", z.ranges, x.ranges)
		}
	})
}

func FuzzDecodeValue(f *testing.F) {
	h := fuzzBuildHistory(f)
	for _, b := range h.valueSeeds() {
		f.Add(b)
	}
	for _, b := range fuzzHostileSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, ok := fuzzRoundTrip(t, data, DecodeValue, Value.Encode, fuzzCheckValueLimits)
		if !ok {
			return
		}
		_, _, _ = v.Register()
		_, _, _, _, _ = v.Registers(), v.Counter(), v.SetElements(), v.Fields(), v.Kinds().String()
		// Restored under a context holding its dots, it is a valid state.
		n := NewNamespace(Limits{})
		var c Context
		v.Dots(c.Add)
		n.RestoreContext(c)
		if err := n.Restore("k", v); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		fuzzCheckState(t, n, "restored state")
		// Local writes over it are deltas peers accept.
		d := Delta{entries: []entry{{key: "k"}}}
		fuzzWriteAfter(t, n, d)
	})
}

// fuzzRoundTrip decodes data under the default and the small limits and
// checks the properties common to every decoder. It returns what the
// default limits decoded, and whether they accepted data.
func fuzzRoundTrip[T any](t *testing.T, data []byte, decode func([]byte, Limits) (T, error), encode func(T, []byte) []byte, limits func(T, Limits) error) (T, bool) {
	t.Helper()
	x, err := decode(data, Limits{})
	if err != nil {
		fuzzCheckErr(t, err)
	} else {
		if err := limits(x, DefaultLimits()); err != nil {
			t.Fatalf("default limits not respected: %v", err)
		}
		fuzzCanonical(t, x, Limits{}, decode, encode)
	}
	for _, lim := range fuzzSmallLimits() {
		y, serr := decode(data, lim)
		if serr != nil {
			fuzzCheckErr(t, serr)
			continue
		}
		if err != nil {
			t.Fatalf("limits %+v accept what the defaults refuse (%v)", lim, err)
		}
		if len(data) > lim.withDefaults().MaxBytes {
			t.Fatalf("limits %+v accept %d bytes", lim, len(data))
		}
		if err := limits(y, lim.withDefaults()); err != nil {
			t.Fatalf("limits %+v not respected: %v", lim, err)
		}
		if a, b := encode(x, nil), encode(y, nil); !bytes.Equal(a, b) {
			t.Fatalf("limits %+v decode to %q, defaults to %q", lim, b, a)
		}
		// The canonical form passes the same limits, except MaxBytes: it
		// may be longer than a non-canonical input.
		relaxed := lim
		relaxed.MaxBytes = 0
		fuzzCanonical(t, y, relaxed, decode, encode)
	}
	return x, err == nil
}

func fuzzCheckErr(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrLimit) {
		t.Fatalf("error wraps neither ErrMalformed nor ErrLimit: %v", err)
	}
}

// fuzzCanonical checks that x's encoding decodes under lim and re-encodes
// to itself.
func fuzzCanonical[T any](t *testing.T, x T, lim Limits, decode func([]byte, Limits) (T, error), encode func(T, []byte) []byte) {
	t.Helper()
	enc := encode(x, nil)
	y, err := decode(enc, lim)
	if err != nil {
		t.Fatalf("re-encoding %q is refused under limits %+v: %v", enc, lim, err)
	}
	if again := encode(y, nil); !bytes.Equal(again, enc) {
		t.Fatalf("canonical form is not a fixed point:\nfirst  %q\nsecond %q", enc, again)
	}
}

// fuzzCheckState checks that n is a valid state: its encoding decodes as a
// namespace with the same digest.
func fuzzCheckState(t *testing.T, n *Namespace, what string) {
	t.Helper()
	enc := n.Encode(nil)
	m, err := DecodeNamespace(enc, Limits{})
	if err != nil {
		t.Fatalf("%s does not decode: %v\n%q", what, err, enc)
	}
	if m.Digest() != n.Digest() || !bytes.Equal(m.Encode(nil), enc) {
		t.Fatalf("%s changes through its encoding", what)
	}
}

// fuzzApplyTwice applies d to n twice: the second time changes nothing.
func fuzzApplyTwice(t *testing.T, n *Namespace, d Delta) {
	t.Helper()
	named := 0
	n.ApplyDelta(d, func(string, Value) { named++ })
	if named != d.Len() {
		t.Fatalf("ApplyDelta reported %d changed keys, the delta names %d", named, d.Len())
	}
	if !n.ctx.Covers(d.ctx) {
		t.Fatal("namespace context does not cover the applied delta's")
	}
	fuzzCheckState(t, n, "state after ApplyDelta")
	once, enc := n.Digest(), n.Encode(nil)
	n.ApplyDelta(d, nil)
	if n.Digest() != once {
		t.Fatalf("applying a delta twice differs from once:\nonce  %q\ntwice %q", enc, n.Encode(nil))
	}
}

// fuzzWriteAfter makes local writes to keys the delta named, by the local
// replica and by replicas whose dots the delta claims, and checks that each
// write is a delta peers accept and that it wins over what it observed.
func fuzzWriteAfter(t *testing.T, n *Namespace, d Delta) {
	t.Helper()
	replicas := append([]ReplicaID{fuzzLocal}, d.ctx.Replicas()...)
	if len(replicas) > 3 {
		replicas = replicas[:3]
	}
	for i := 0; i < d.Len() && i < 2; i++ {
		key := d.Key(i)
		for _, r := range replicas {
			for _, op := range []Op{
				{Kind: OpPut, Key: key, Value: []byte("w")},
				{Kind: OpSetUpdate, Key: key, Add: []string{"e1", "e2"}},
				{Kind: OpCounterAdd, Key: key, Path: []string{"f"}, N: 1},
				{Kind: OpDelete, Key: key},
			} {
				pd, err := n.Prepare(op, r, Timestamp{Wall: 1})
				if err != nil {
					if !errors.Is(err, ErrWrongType) && !errors.Is(err, ErrLimit) {
						t.Fatalf("Prepare %v %q by %v: %v", op.Kind, key, r, err)
					}
					continue
				}
				enc := pd.Encode(nil)
				if _, err := DecodeDelta(enc, Limits{}); err != nil {
					t.Fatalf("Prepare %v %q by %v gave a delta peers refuse: %v\n%q", op.Kind, key, r, err, enc)
				}
				n.ApplyDelta(pd, nil)
				fuzzCheckState(t, n, fmt.Sprintf("state after a local %v", op.Kind))
				if err := fuzzLocalWriteWon(n, op); err != nil {
					t.Fatalf("local %v %q by %v: %v", op.Kind, key, r, err)
				}
			}
		}
	}
}

// fuzzLocalWriteWon checks what a local write leaves: it observed every
// write before it, so nothing else remains at its place.
func fuzzLocalWriteWon(n *Namespace, op Op) error {
	v, ok := n.Get(op.Key)
	switch op.Kind {
	case OpDelete:
		if ok {
			return fmt.Errorf("key still holds %v", v.Kinds())
		}
		return nil
	case OpCounterAdd:
		v, _ = v.Field(op.Path[0])
	}
	if k := v.Kinds(); k != op.Kind.kind() {
		return fmt.Errorf("holds %v", k)
	}
	switch op.Kind {
	case OpPut:
		if val, sib, _ := v.Register(); sib != 1 || !bytes.Equal(val, op.Value) {
			return fmt.Errorf("register %q with %d siblings", val, sib)
		}
	case OpSetUpdate:
		for _, e := range op.Add {
			if !v.SetContains(e) {
				return fmt.Errorf("set lacks %q", e)
			}
		}
	}
	return nil
}

// --- limits ---

func fuzzCheckDeltaLimits(d Delta, lim Limits) error {
	if err := fuzzCheckContextLimits(d.ctx, lim); err != nil {
		return err
	}
	return fuzzCheckEntries(d.entries, lim)
}

func fuzzCheckNamespaceLimits(n *Namespace, lim Limits) error {
	if err := fuzzCheckContextLimits(n.ctx, lim); err != nil {
		return err
	}
	var es []entry
	n.Range(func(k string, v Value) bool {
		es = append(es, entry{key: k, val: v})
		return true
	})
	return fuzzCheckEntries(es, lim)
}

func fuzzCheckEntries(es []entry, lim Limits) error {
	if len(es) > lim.MaxElements {
		return fmt.Errorf("%d keys", len(es))
	}
	for _, e := range es {
		if len(e.key) > lim.MaxKeyBytes {
			return fmt.Errorf("key of %d bytes", len(e.key))
		}
		if err := fuzzValueLimits(e.val, lim, 0); err != nil {
			return fmt.Errorf("key %q: %w", e.key, err)
		}
	}
	return nil
}

func fuzzCheckContextLimits(c Context, lim Limits) error {
	if c.Ranges() > lim.MaxElements {
		return fmt.Errorf("%d context ranges", c.Ranges())
	}
	return nil
}

func fuzzCheckValueLimits(v Value, lim Limits) error { return fuzzValueLimits(v, lim, 0) }

// fuzzValueLimits checks v, found at nesting depth, against lim.
func fuzzValueLimits(v Value, lim Limits, depth int) error {
	if depth > lim.MaxDepth {
		return fmt.Errorf("value at depth %d", depth)
	}
	if len(v.reg) > lim.MaxElements {
		return fmt.Errorf("%d register entries", len(v.reg))
	}
	for _, r := range v.reg {
		if len(r.Value) > lim.MaxValueBytes {
			return fmt.Errorf("register value of %d bytes", len(r.Value))
		}
	}
	e := v.ext
	if e == nil {
		return nil
	}
	if len(e.ctr) > lim.MaxElements || len(e.set) > lim.MaxElements || len(e.fields) > lim.MaxElements || len(e.flag) > lim.MaxElements {
		return fmt.Errorf("a collection over %d entries", lim.MaxElements)
	}
	for elem, ds := range e.set {
		if len(elem) > lim.MaxKeyBytes || len(ds) > lim.MaxElements {
			return fmt.Errorf("set element of %d bytes with %d dots", len(elem), len(ds))
		}
	}
	for name, f := range e.fields {
		if len(name) > lim.MaxKeyBytes {
			return fmt.Errorf("field name of %d bytes", len(name))
		}
		if err := fuzzValueLimits(f, lim, depth+1); err != nil {
			return fmt.Errorf("field %q: %w", name, err)
		}
	}
	return nil
}

// --- seeds ---

// fuzzHistory is a small replicated history made through the public API:
// three replicas, every op kind, nested map paths, deletes, concurrent
// writes (register siblings, add/remove of one element, remove of a field
// against an update below it, writes of different kinds to one key) and
// out-of-order delivery. Its encodings seed the fuzz targets.
type fuzzHistory struct {
	deltas  []Delta
	batches []Delta // joins of several deltas, and key deltas
	states  []*Namespace
}

type fuzzReplica struct {
	tb    testing.TB
	id    ReplicaID
	ns    *Namespace
	clock Clock
	now   int64
	h     *fuzzHistory
}

func (r *fuzzReplica) do(op Op) Delta {
	r.tb.Helper()
	r.now += 7
	d, err := r.ns.Prepare(op, r.id, r.clock.Now(r.now))
	if err != nil {
		r.tb.Fatalf("replica %v: %v %q: %v", r.id, op.Kind, op.Key, err)
	}
	r.ns.ApplyDelta(d, nil)
	r.h.deltas = append(r.h.deltas, d)
	return d
}

func (r *fuzzReplica) recv(ds ...Delta) {
	for _, d := range ds {
		r.ns.ApplyDelta(d, nil)
	}
}

func fuzzBuildHistory(tb testing.TB) *fuzzHistory {
	tb.Helper()
	h := &fuzzHistory{}
	rep := func(peer string, now int64) *fuzzReplica {
		return &fuzzReplica{tb: tb, id: DeriveReplicaID([]byte(peer)), ns: NewNamespace(Limits{}), now: now, h: h}
	}
	a, b, c := rep("peer-a", 1_700_000_000_000), rep("peer-b", 1_700_000_000_003), rep("peer-c", 1_699_999_999_000)

	var first []Delta
	for _, op := range []Op{
		{Kind: OpPut, Key: "greeting", Value: []byte("hello")},
		{Kind: OpSetUpdate, Key: "tags", Add: []string{"x", "y", "z"}},
		{Kind: OpCounterAdd, Key: "visits", N: 5},
		{Kind: OpFlag, Key: "enabled", Enable: true},
		{Kind: OpPut, Key: "user", Path: []string{"name"}, Value: []byte("ann")},
		{Kind: OpSetUpdate, Key: "user", Path: []string{"roles"}, Add: []string{"admin", "dev"}},
		{Kind: OpFlag, Key: "user", Path: []string{"prefs", "dark"}, Enable: true},
		{Kind: OpCounterAdd, Key: "user", Path: []string{"stats", "logins"}, N: 3},
		{Kind: OpPut, Key: "blob", Value: bytes.Repeat([]byte{0, 1, 0xfe, 0xff}, 40)},
		{Kind: OpPut, Key: "empty", Value: nil},
	} {
		first = append(first, a.do(op))
	}
	b.recv(first...)
	h.batches = append(h.batches, JoinDeltas(first...))

	// Concurrent writes by a and b.
	var fromA, fromB []Delta
	fromA = append(fromA,
		a.do(Op{Kind: OpPut, Key: "greeting", Value: []byte("hi")}),
		a.do(Op{Kind: OpSetUpdate, Key: "tags", Remove: []string{"x"}}),
		a.do(Op{Kind: OpDelete, Key: "user", Path: []string{"roles"}}),
		a.do(Op{Kind: OpCounterAdd, Key: "visits", N: math.MinInt64 / 2}),
	)
	fromB = append(fromB,
		b.do(Op{Kind: OpPut, Key: "greeting", Value: []byte("hey")}),
		b.do(Op{Kind: OpSetUpdate, Key: "tags", Add: []string{"x"}, Remove: []string{"y"}}),
		b.do(Op{Kind: OpSetUpdate, Key: "user", Path: []string{"roles"}, Add: []string{"ops"}}),
		b.do(Op{Kind: OpCounterAdd, Key: "visits", N: -2}),
		b.do(Op{Kind: OpFlag, Key: "enabled", Enable: false}),
		b.do(Op{Kind: OpDelete, Key: "blob"}),
	)
	// c knows nothing yet: writes of other kinds to the same keys.
	fromC := []Delta{
		c.do(Op{Kind: OpPut, Key: "tags", Value: []byte("not-a-set")}),
		c.do(Op{Kind: OpPut, Key: "user", Value: []byte("flat")}),
		c.do(Op{Kind: OpSetUpdate, Key: "visits", Add: []string{"v"}}),
	}
	h.batches = append(h.batches, JoinDeltas(fromB...), JoinDeltas(fromC...))
	a.recv(fromB...)
	a.recv(fromC...)
	b.recv(fromA...)
	// c hears a few of a's writes, out of order: its context has gaps.
	c.recv(first[6], first[2], fromA[1])

	// Later writes that observed the concurrent ones: they heal mixed kinds
	// and remove siblings.
	var later []Delta
	later = append(later,
		a.do(Op{Kind: OpSetUpdate, Key: "tags", Add: []string{"w"}}),
		a.do(Op{Kind: OpPut, Key: "user", Path: []string{"prefs", "theme", "color"}, Value: []byte("dark-blue")}),
		a.do(Op{Kind: OpDelete, Key: "greeting"}),
		a.do(Op{Kind: OpCounterAdd, Key: "visits", N: 1}),
		a.do(Op{Kind: OpFlag, Key: "enabled", Enable: true}),
	)
	b.recv(later...)
	later = append(later, b.do(Op{Kind: OpDelete, Key: "user", Path: []string{"stats"}}))
	h.batches = append(h.batches, JoinDeltas(later...), JoinDeltas(h.deltas...))
	for _, key := range []string{"tags", "user", "visits", "greeting"} {
		h.batches = append(h.batches, a.ns.KeyDelta(key, c.ns.ValueDots(key)))
	}
	h.states = []*Namespace{a.ns, b.ns, c.ns}
	return h
}

func (h *fuzzHistory) deltaSeeds() [][]byte {
	var out [][]byte
	for _, d := range h.deltas {
		out = append(out, d.Encode(nil))
	}
	for _, d := range h.batches {
		out = append(out, d.Encode(nil))
	}
	return out
}

func (h *fuzzHistory) stateSeeds() [][]byte {
	var out [][]byte
	for _, n := range h.states {
		out = append(out, n.Encode(nil))
	}
	return out
}

func (h *fuzzHistory) contextSeeds() [][]byte {
	var out [][]byte
	for _, n := range h.states {
		c := n.Context()
		out = append(out, c.Encode(nil))
	}
	for _, d := range h.batches {
		c := d.Context()
		out = append(out, c.Encode(nil))
	}
	return out
}

func (h *fuzzHistory) valueSeeds() [][]byte {
	var out [][]byte
	var add func(v Value)
	add = func(v Value) {
		out = append(out, v.Encode(nil))
		for _, name := range v.Fields() {
			f, _ := v.Field(name)
			add(f)
		}
	}
	for _, n := range h.states {
		n.Range(func(_ string, v Value) bool {
			add(v)
			return true
		})
	}
	return out
}

// fuzzHostileSeeds are hand-made inputs at the edges of the format. Each is
// a whole state; the targets also get its context and its first value.
func fuzzHostileSeeds() [][]byte {
	ctx := wireCtx(wireRange(1, 1, 3))
	states := [][]byte{
		nil,
		{0x00},
		{0xff},
		{0x0b}, // field 1, start group
		protowire.AppendVarint(protowire.AppendTag(nil, fStateEntry, protowire.BytesType), math.MaxUint64),
		// Valid, then cut short and with an unknown field appended.
		wireCat(ctx, wireKey("a", wireReg(1, 1, "v"))),
		wireCat(ctx, wireKey("a", wireReg(1, 1, "v")))[:20],
		wireCat(ctx, wireKey("a", wireReg(1, 1, "v")), wireString(9, "?")),
		// Non-minimal varints and explicit zeros: accepted, re-encoded
		// canonically.
		wireCat(wireCtx(wireMsg(fCtxRange, wireFixed64(fRangeReplica, 1), []byte{0x10, 0x81, 0x80, 0x00}, []byte{0x18, 0x83, 0x00})),
			wireKey("a", wireMsg(fValReg, wireDot(fRegDot, 1, 1), wireVarint(fRegWall, 0), wireVarint(fRegLogical, 0), wireString(fRegValue, "")))),
		// Deep nesting, a covers mark and removal markers.
		wireCat(ctx, wireKey("a", wireNested(9))),
		wireCat(ctx, wireKey("a", wireField("f", wireField("g", wireCovers())), wireSet("s"), wireCovers()), wireKey("b")),
		// A dot held twice, and one not in the context.
		wireCat(ctx, wireKey("a", wireReg(1, 1, "v")), wireKey("b", wireReg(1, 1, "v"))),
		wireCat(ctx, wireKey("a", wireReg(1, 4, "v"))),
		// Overlapping and adjacent ranges.
		wireCtx(wireRange(1, 1, 5), wireRange(1, 3, 8)),
		wireCtx(wireRange(1, 1, 5), wireRange(1, 6, 8)),
		// A range reaching the last counter, then another: accepted once
		// by an overflow in Context.valid.
		wireCtx(wireRange(1, 1, math.MaxUint64), wireRange(1, 5, 6)),
		// A context claiming every counter of fuzzLocal and of replica 1,
		// with a key to write to: local writes must not overflow.
		wireCat(wireCtx(wireRange(1, 1, math.MaxUint64), wireRange(fuzzLocal, 1, math.MaxUint64)), wireKey("a", wireReg(1, 1, "v"))),
		wireCat(wireCtx(wireRange(1, 1, math.MaxUint64-1)), wireKey("a", wireReg(1, math.MaxUint64-1, "v"))),
		// Extreme scalars.
		wireCat(ctx, wireKey("a", wireMsg(fValReg, wireDot(fRegDot, 1, 1), wireVarint(fRegWall, math.MaxUint64), wireVarint(fRegLogical, math.MaxUint32)),
			wireMsg(fValCtr, wireDot(fCtrDot, 1, 2), wireVarint(fCtrN, math.MaxUint64)),
			wireMsg(fValCtr, wireDot(fCtrDot, 1, 3), wireVarint(fCtrN, math.MaxUint64-1)))),
	}
	out := append([][]byte(nil), states...)
	for _, s := range states {
		if c := fuzzFieldBody(s, fStateCtx); c != nil {
			out = append(out, c)
		}
		if v := hostileValueBytes(s); !bytes.Equal(v, s) {
			out = append(out, v)
		}
	}
	return out
}

// fuzzFieldBody returns the body of the first top-level field num of b if
// it is length-delimited, or nil.
func fuzzFieldBody(b []byte, num protowire.Number) []byte {
	for len(b) > 0 {
		n, typ, m := protowire.ConsumeTag(b)
		if m < 0 {
			return nil
		}
		b = b[m:]
		if n == num && typ == protowire.BytesType {
			body, _ := protowire.ConsumeBytes(b)
			return body
		}
		if m = protowire.ConsumeFieldValue(n, typ, b); m < 0 {
			return nil
		}
		b = b[m:]
	}
	return nil
}
