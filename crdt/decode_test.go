package crdt

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// The wire* helpers build encodings field by field with protowire, without
// encode.go's size arithmetic, so that a test can break exactly one rule.
// They write every field they are given, zero or not.

func wireCat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func wireMsg(num protowire.Number, parts ...[]byte) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendBytes(b, wireCat(parts...))
}

func wireVarint(num protowire.Number, v uint64) []byte {
	b := protowire.AppendTag(nil, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func wireFixed64(num protowire.Number, v uint64) []byte {
	b := protowire.AppendTag(nil, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, v)
}

func wireString(num protowire.Number, s string) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// wireDot is a Dot message as field num.
func wireDot(num protowire.Number, r ReplicaID, ctr uint64) []byte {
	return wireMsg(num, wireFixed64(fDotReplica, uint64(r)), wireVarint(fDotCounter, ctr))
}

// wireRange is one Range as a Context entry.
func wireRange(r ReplicaID, lo, hi uint64) []byte {
	return wireMsg(fCtxRange, wireFixed64(fRangeReplica, uint64(r)), wireVarint(fRangeLo, lo), wireVarint(fRangeHi, hi))
}

// wireCtx is a State's context field.
func wireCtx(ranges ...[]byte) []byte { return wireMsg(fStateCtx, ranges...) }

// wireKey is a State's key entry holding a Value made of parts.
func wireKey(key string, parts ...[]byte) []byte {
	return wireMsg(fStateEntry, wireString(fKeyKey, key), wireMsg(fKeyValue, parts...))
}

// wireReg is a Value's register entry, without a timestamp.
func wireReg(r ReplicaID, ctr uint64, val string) []byte {
	return wireMsg(fValReg, wireDot(fRegDot, r, ctr), wireString(fRegValue, val))
}

// wireSet is a Value's set entry with the given dots.
func wireSet(elem string, dots ...Dot) []byte {
	parts := [][]byte{wireString(fSetElem, elem)}
	for _, d := range dots {
		parts = append(parts, wireDot(fSetDot, d.Replica, d.Counter))
	}
	return wireMsg(fValSet, parts...)
}

// wireField is a Value's map field holding a Value made of parts.
func wireField(name string, parts ...[]byte) []byte {
	return wireMsg(fValField, wireString(fFieldName, name), wireMsg(fFieldValue, parts...))
}

func wireCovers() []byte { return wireVarint(fValCovers, 1) }

// wireNested returns a value whose map fields nest depth levels below the
// top, with a register at the bottom.
func wireNested(depth int) []byte {
	v := wireReg(1, 1, "leaf")
	for i := 0; i < depth; i++ {
		v = wireField("f", v)
	}
	return v
}

// The wire helpers must produce exactly what the encoder writes for valid
// input, or the hostile cases below might be refused for the wrong reason.
func TestWireHelpersMatchEncoder(t *testing.T) {
	ns := NewNamespace(Limits{})
	ops := []Op{
		{Kind: OpPut, Key: "a", Value: []byte("v")},
		{Kind: OpSetUpdate, Key: "b", Add: []string{"x"}},
		{Kind: OpPut, Key: "c", Path: []string{"f"}, Value: []byte("w")},
	}
	for _, op := range ops {
		d, err := ns.Prepare(op, 1, Timestamp{})
		if err != nil {
			t.Fatal(err)
		}
		ns.ApplyDelta(d, nil)
	}
	want := wireCat(
		wireCtx(wireRange(1, 1, 3)),
		wireKey("a", wireReg(1, 1, "v")),
		wireKey("b", wireSet("x", Dot{1, 2})),
		wireKey("c", wireField("f", wireReg(1, 3, "w"))),
	)
	if got := ns.Encode(nil); !bytes.Equal(got, want) {
		t.Fatalf("encoder and wire helpers differ:\nencoder %q\nhelpers %q", got, want)
	}
	del, err := ns.Prepare(Op{Kind: OpDelete, Key: "a"}, 1, Timestamp{})
	if err != nil {
		t.Fatal(err)
	}
	want = wireCat(wireCtx(wireRange(1, 1, 1)), wireKey("a", wireCovers()))
	if got := del.Encode(nil); !bytes.Equal(got, want) {
		t.Fatalf("delete delta: encoder %q, helpers %q", got, want)
	}
}

// hostileDecoders decode with one of the four public decoders, by name.
var hostileDecoders = map[string]func([]byte, Limits) error{
	"delta": func(b []byte, l Limits) error {
		_, err := DecodeDelta(b, l)
		return err
	},
	"namespace": func(b []byte, l Limits) error {
		_, err := DecodeNamespace(b, l)
		return err
	},
	"context": func(b []byte, l Limits) error {
		_, err := DecodeContext(b, l)
		return err
	},
	"value": func(b []byte, l Limits) error {
		_, err := DecodeValue(b, l)
		return err
	},
}

type hostileCase struct {
	name string
	on   []string // decoders that must refuse it
	in   []byte
	lim  Limits
	want error  // ErrMalformed or ErrLimit
	msg  string // the error names the problem
}

var (
	onStates = []string{"delta", "namespace"}
	onAll    = []string{"delta", "namespace", "value"}
)

func hostileCases() []hostileCase {
	ctx := wireCtx(wireRange(1, 1, 3))
	reg1 := wireReg(1, 1, "v")
	return []hostileCase{
		// Dots and the context.
		{"dot not in context", onStates, wireCat(ctx, wireKey("a", wireReg(1, 4, "v"))), Limits{}, ErrMalformed, "held but not in the context"},
		{"dot of unknown replica", onStates, wireCat(ctx, wireKey("a", wireReg(2, 1, "v"))), Limits{}, ErrMalformed, "held but not in the context"},
		{"dot without any context", onStates, wireKey("a", reg1), Limits{}, ErrMalformed, "held but not in the context"},
		{"same dot in two keys", onStates, wireCat(ctx, wireKey("a", reg1), wireKey("b", reg1)), Limits{}, ErrMalformed, "held twice"},
		{"same dot in register and set", onStates, wireCat(ctx, wireKey("a", reg1, wireSet("x", Dot{1, 1}))), Limits{}, ErrMalformed, "held twice"},
		{"same dot in two set elements", onAll, wireCat(ctx, wireKey("a", wireSet("x", Dot{1, 2}), wireSet("y", Dot{1, 2}))), Limits{}, ErrMalformed, "held twice"},
		{"same dot in two map fields", []string{"value"}, wireCat(wireField("f", reg1), wireField("g", reg1)), Limits{}, ErrMalformed, "held twice"},
		{"zero dot counter (omitted)", onAll, wireCat(ctx, wireKey("a", wireMsg(fValReg, wireMsg(fRegDot, wireFixed64(fDotReplica, 1))))), Limits{}, ErrMalformed, "zero replica or counter"},
		{"zero dot counter (explicit)", onAll, wireCat(ctx, wireKey("a", wireReg(1, 0, "v"))), Limits{}, ErrMalformed, "zero replica or counter"},
		{"zero dot replica", onAll, wireCat(ctx, wireKey("a", wireReg(0, 1, "v"))), Limits{}, ErrMalformed, "zero replica or counter"},
		{"register without a dot", onAll, wireCat(ctx, wireKey("a", wireMsg(fValReg, wireString(fRegValue, "v")))), Limits{}, ErrMalformed, "without a dot"},

		// Contexts.
		{"overlapping ranges", []string{"context"}, wireCat(wireRange(1, 1, 5), wireRange(1, 3, 8)), Limits{}, ErrMalformed, "not sorted, disjoint"},
		{"overlapping ranges in a state", onStates, wireCtx(wireRange(1, 1, 5), wireRange(1, 3, 8)), Limits{}, ErrMalformed, "not sorted, disjoint"},
		{"range inside a range", []string{"context"}, wireCat(wireRange(1, 1, 9), wireRange(1, 3, 4)), Limits{}, ErrMalformed, "not sorted, disjoint"},
		{"range after one ending at the last counter", []string{"context"}, wireCat(wireRange(1, 1, math.MaxUint64), wireRange(1, 5, 6)), Limits{}, ErrMalformed, "not sorted, disjoint"},
		{"adjacent ranges", []string{"context"}, wireCat(wireRange(1, 1, 5), wireRange(1, 6, 8)), Limits{}, ErrMalformed, "not sorted, disjoint"},
		{"duplicate range", []string{"context"}, wireCat(wireRange(1, 1, 5), wireRange(1, 1, 5)), Limits{}, ErrMalformed, "not sorted, disjoint"},
		{"ranges out of replica order", []string{"context"}, wireCat(wireRange(2, 1, 1), wireRange(1, 1, 1)), Limits{}, ErrMalformed, "not sorted, disjoint"},
		{"range with lo above hi", []string{"context"}, wireRange(1, 5, 3), Limits{}, ErrMalformed, "not sorted, disjoint"},
		{"range from counter zero", []string{"context"}, wireRange(1, 0, 3), Limits{}, ErrMalformed, "not sorted, disjoint"},
		{"range of replica zero", []string{"context"}, wireRange(0, 1, 3), Limits{}, ErrMalformed, "replica 0"},

		// Order and duplicates.
		{"keys out of order", onStates, wireCat(ctx, wireKey("b", reg1), wireKey("a", wireReg(1, 2, "v"))), Limits{}, ErrMalformed, `key "a" out of order`},
		{"key duplicated", onStates, wireCat(ctx, wireKey("a", reg1), wireKey("a", wireReg(1, 2, "v"))), Limits{}, ErrMalformed, `key "a" out of order`},
		{"context after the entries", onStates, wireCat(wireKey("a", reg1), ctx), Limits{}, ErrMalformed, "out of order"},
		{"context twice", onStates, wireCat(ctx, ctx, wireKey("a", reg1)), Limits{}, ErrMalformed, "out of order"},
		{"set elements out of order", onAll, wireCat(ctx, wireKey("a", wireSet("y", Dot{1, 1}), wireSet("x", Dot{1, 2}))), Limits{}, ErrMalformed, `set element "x" out of order`},
		{"set element duplicated", onAll, wireCat(ctx, wireKey("a", wireSet("x", Dot{1, 1}), wireSet("x", Dot{1, 2}))), Limits{}, ErrMalformed, `set element "x" out of order`},
		{"map fields out of order", onAll, wireCat(ctx, wireKey("a", wireField("g", reg1), wireField("f", wireReg(1, 2, "v")))), Limits{}, ErrMalformed, `map field "f" out of order`},
		{"map field duplicated", onAll, wireCat(ctx, wireKey("a", wireField("f", reg1), wireField("f", wireReg(1, 2, "v")))), Limits{}, ErrMalformed, `map field "f" out of order`},
		{"register dots not sorted", onAll, wireCat(ctx, wireKey("a", wireReg(1, 2, "v"), reg1)), Limits{}, ErrMalformed, "not sorted"},
		{"set dots not sorted", onAll, wireCat(ctx, wireKey("a", wireSet("x", Dot{1, 2}, Dot{1, 1}))), Limits{}, ErrMalformed, "not sorted"},
		{"value fields out of order", onAll, wireCat(ctx, wireKey("a", wireSet("x", Dot{1, 2}), reg1)), Limits{}, ErrMalformed, "field 1 out of order"},
		{"dot counter before replica", onAll, wireCat(ctx, wireKey("a", wireMsg(fValReg, wireMsg(fRegDot, wireVarint(fDotCounter, 1), wireFixed64(fDotReplica, 1))))), Limits{}, ErrMalformed, "out of order"},

		// Unknown fields and wire types.
		{"unknown field in state", onStates, wireCat(ctx, wireString(3, "x")), Limits{}, ErrMalformed, "unknown field 3"},
		{"unknown field in value", onAll, wireCat(ctx, wireKey("a", reg1, wireString(7, "x"))), Limits{}, ErrMalformed, "unknown field 7"},
		{"unknown field in dot", onAll, wireCat(ctx, wireKey("a", wireMsg(fValReg, wireMsg(fRegDot, wireFixed64(fDotReplica, 1), wireVarint(fDotCounter, 1), wireVarint(3, 1))))), Limits{}, ErrMalformed, "unknown field 3"},
		{"unknown field in range", []string{"context"}, wireMsg(fCtxRange, wireFixed64(fRangeReplica, 1), wireVarint(fRangeLo, 1), wireVarint(fRangeHi, 1), wireVarint(4, 1)), Limits{}, ErrMalformed, "unknown field 4"},
		{"unknown field in context", []string{"context"}, wireVarint(2, 1), Limits{}, ErrMalformed, "unknown field 2"},
		{"key entry as varint", onStates, wireCat(ctx, wireVarint(fStateEntry, 1)), Limits{}, ErrMalformed, "wire type 0, want 2"},
		{"dot replica as varint", onAll, wireCat(ctx, wireKey("a", wireMsg(fValReg, wireMsg(fRegDot, wireVarint(fDotReplica, 1), wireVarint(fDotCounter, 1))))), Limits{}, ErrMalformed, "wire type 0, want 1"},
		{"range replica as varint", []string{"context"}, wireMsg(fCtxRange, wireVarint(fRangeReplica, 1), wireVarint(fRangeLo, 1), wireVarint(fRangeHi, 1)), Limits{}, ErrMalformed, "wire type 0, want 1"},
		{"covers as bytes", []string{"delta"}, wireCat(ctx, wireKey("a", wireString(fValCovers, "\x01"))), Limits{}, ErrMalformed, "wire type 2, want 0"},
		{"fixed32 wire type", onAll, wireCat(ctx, wireKey("a", protowire.AppendFixed32(protowire.AppendTag(nil, fValReg, protowire.Fixed32Type), 1))), Limits{}, ErrMalformed, "unsupported wire type 5"},
		{"group wire type", onStates, protowire.AppendTag(nil, fStateEntry, protowire.StartGroupType), Limits{}, ErrMalformed, "unsupported wire type 3"},
		{"field number zero", onStates, []byte{0x02, 0x00}, Limits{}, ErrMalformed, "bad tag"},
		{"length beyond the input", onStates, protowire.AppendVarint(protowire.AppendTag(nil, fStateEntry, protowire.BytesType), 1<<40), Limits{}, ErrMalformed, "unexpected EOF"},

		// Names and scalars.
		{"empty key", onStates, wireCat(ctx, wireKey("", reg1)), Limits{}, ErrMalformed, "empty key"},
		{"key not UTF-8", onStates, wireCat(ctx, wireKey("\xff", reg1)), Limits{}, ErrMalformed, "not valid UTF-8"},
		{"logical clock over 32 bits", onAll, wireCat(ctx, wireKey("a", wireMsg(fValReg, wireDot(fRegDot, 1, 1), wireVarint(fRegLogical, 1<<32)))), Limits{}, ErrMalformed, "logical clock"},

		// Marks that only deltas may carry.
		{"covers mark in a state", []string{"namespace", "value"}, wireCat(ctx, wireKey("a", reg1, wireCovers())), Limits{}, ErrMalformed, "covers mark outside a delta"},
		{"covers mark alone in a state", []string{"namespace"}, wireCat(ctx, wireKey("a", wireCovers())), Limits{}, ErrMalformed, "covers mark outside a delta"},
		{"covers mark nested in a state", []string{"namespace", "value"}, wireCat(ctx, wireKey("a", wireField("f", reg1, wireCovers()))), Limits{}, ErrMalformed, "covers mark outside a delta"},
		{"covers mark other than 1", []string{"delta"}, wireCat(ctx, wireKey("a", wireVarint(fValCovers, 2))), Limits{}, ErrMalformed, "covers mark"},
		{"covers mark twice", []string{"delta"}, wireCat(ctx, wireKey("a", wireCovers(), wireCovers())), Limits{}, ErrMalformed, "field 6 out of order"},
		{"set removal marker in a state", []string{"namespace", "value"}, wireCat(ctx, wireKey("a", reg1, wireSet("x"))), Limits{}, ErrMalformed, `set element "x" has no dots`},
		{"map removal marker in a state", []string{"namespace", "value"}, wireCat(ctx, wireKey("a", reg1, wireField("f"))), Limits{}, ErrMalformed, `map field "f" is empty`},
		{"empty key value in a state", []string{"namespace"}, wireCat(ctx, wireKey("a")), Limits{}, ErrMalformed, `key "a" has an empty value`},
		{"empty value", []string{"value"}, nil, Limits{}, ErrMalformed, "empty value"},

		// Limits.
		{"nesting deeper than MaxDepth", onAll, wireCat(ctx, wireKey("a", wireNested(3))), Limits{MaxDepth: 2}, ErrLimit, "nesting deeper than 2"},
		{"removal marker deeper than MaxDepth", onAll, wireCat(ctx, wireKey("a", wireField("f", wireField("g", wireMsg(fValField, wireString(fFieldName, "h")))))), Limits{MaxDepth: 2}, ErrLimit, "nesting deeper than 2"},
		{"nesting deeper than default MaxDepth", onAll, wireCat(ctx, wireKey("a", wireNested(DefaultLimits().MaxDepth+1))), Limits{}, ErrLimit, "nesting deeper than 8"},
		{"register value over MaxValueBytes", onAll, wireCat(ctx, wireKey("a", wireReg(1, 1, "12345"))), Limits{MaxValueBytes: 4}, ErrLimit, "register value is 5 bytes, max 4"},
		{"key over MaxKeyBytes", onStates, wireCat(ctx, wireKey("abcde", reg1)), Limits{MaxKeyBytes: 4}, ErrLimit, "key is 5 bytes, max 4"},
		{"set element over MaxKeyBytes", onAll, wireCat(ctx, wireKey("a", wireSet("abcde", Dot{1, 1}))), Limits{MaxKeyBytes: 4}, ErrLimit, "set element is 5 bytes"},
		{"more keys than MaxElements", onStates, wireCat(ctx, wireKey("a", reg1), wireKey("b", wireReg(1, 2, "v")), wireKey("c", wireReg(1, 3, "v"))), Limits{MaxElements: 2}, ErrLimit, "more than 2 keys"},
		{"more set elements than MaxElements", onAll, wireCat(ctx, wireKey("a", wireSet("x", Dot{1, 1}), wireSet("y", Dot{1, 2}), wireSet("z", Dot{1, 3}))), Limits{MaxElements: 2}, ErrLimit, "more than 2 set elements"},
		{"more element dots than MaxElements", onAll, wireCat(ctx, wireKey("a", wireSet("x", Dot{1, 1}, Dot{1, 2}, Dot{1, 3}))), Limits{MaxElements: 2}, ErrLimit, "more than 2 dots of one element"},
		{"more register entries than MaxElements", onAll, wireCat(ctx, wireKey("a", reg1, wireReg(1, 2, "v"), wireReg(1, 3, "v"))), Limits{MaxElements: 2}, ErrLimit, "more than 2 register entries"},
		{"more map fields than MaxElements", onAll, wireCat(ctx, wireKey("a", wireField("f", reg1), wireField("g", wireReg(1, 2, "v")), wireField("h", wireReg(1, 3, "v")))), Limits{MaxElements: 2}, ErrLimit, "more than 2 map fields"},
		{"more flag dots than MaxElements", onAll, wireCat(ctx, wireKey("a", wireDot(fValFlag, 1, 1), wireDot(fValFlag, 1, 2), wireDot(fValFlag, 1, 3))), Limits{MaxElements: 2}, ErrLimit, "more than 2 flag dots"},
		{"more context ranges than MaxElements", []string{"context"}, wireCat(wireRange(1, 1, 1), wireRange(1, 3, 3), wireRange(1, 5, 5)), Limits{MaxElements: 2}, ErrLimit, "more than 2 context ranges"},
		{"state over MaxBytes", onAll, wireCat(ctx, wireKey("a", reg1)), Limits{MaxBytes: 8}, ErrLimit, "max 8"},
		{"context over MaxBytes", []string{"context"}, wireCat(wireRange(1, 1, 1), wireRange(1, 3, 3)), Limits{MaxBytes: 8}, ErrLimit, "max 8"},
	}
}

// For the "value" decoder a case is the value inside the single key entry
// of a state, if it is one; otherwise the bytes as they are.
func hostileValueBytes(in []byte) []byte {
	var entry []byte
	for b := in; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return in
		}
		body, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			return in
		}
		if num == fStateEntry {
			if entry != nil {
				return in
			}
			entry = body
		}
		b = b[n+m:]
	}
	for b := entry; len(b) > 0; {
		num, _, n := protowire.ConsumeTag(b)
		body, m := protowire.ConsumeBytes(b[n:])
		if num == fKeyValue {
			return body
		}
		b = b[n+m:]
	}
	return in
}

func TestDecodeRefusesHostileInput(t *testing.T) {
	for _, tc := range hostileCases() {
		for _, on := range tc.on {
			t.Run(tc.name+"/"+on, func(t *testing.T) {
				in := tc.in
				if on == "value" {
					in = hostileValueBytes(in)
				}
				err := hostileDecoders[on](in, tc.lim)
				if err == nil {
					t.Fatalf("accepted %q", in)
				}
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				other := ErrLimit
				if tc.want == ErrLimit {
					other = ErrMalformed
				}
				if errors.Is(err, other) {
					t.Fatalf("err = %v wraps both sentinels", err)
				}
				if !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.msg)
				}
			})
		}
	}
}

// Each limit is inclusive: input exactly at the limit is accepted, so the
// cases above are refused for crossing it, not for something else.
func TestDecodeAcceptsInputAtTheLimits(t *testing.T) {
	ctx := wireCtx(wireRange(1, 1, 3))
	reg1 := wireReg(1, 1, "v")
	cases := []struct {
		name string
		on   []string
		in   []byte
		lim  Limits
	}{
		{"nesting at MaxDepth", onAll, wireCat(ctx, wireKey("a", wireNested(2))), Limits{MaxDepth: 2}},
		{"register value at MaxValueBytes", onAll, wireCat(ctx, wireKey("a", wireReg(1, 1, "1234"))), Limits{MaxValueBytes: 4}},
		{"key at MaxKeyBytes", onStates, wireCat(ctx, wireKey("abcd", reg1)), Limits{MaxKeyBytes: 4}},
		{"keys at MaxElements", onStates, wireCat(ctx, wireKey("a", reg1), wireKey("b", wireReg(1, 2, "v"))), Limits{MaxElements: 2}},
		{"ranges at MaxElements", []string{"context"}, wireCat(wireRange(1, 1, 1), wireRange(1, 3, 3)), Limits{MaxElements: 2}},
		{"range ending at the last counter", []string{"context"}, wireCat(wireRange(1, 1, math.MaxUint64), wireRange(2, 5, 6)), Limits{}},
		{"covers mark in a delta", []string{"delta"}, wireCat(ctx, wireKey("a", reg1, wireCovers())), Limits{}},
		{"removal markers in a delta", []string{"delta"}, wireCat(ctx, wireKey("a", wireSet("x"), wireField("f")), wireKey("b")), Limits{}},
		{"context alone", onStates, ctx, Limits{}},
		{"nothing", []string{"delta", "namespace", "context"}, nil, Limits{}},
	}
	for _, tc := range cases {
		for _, on := range tc.on {
			in := tc.in
			if on == "value" {
				in = hostileValueBytes(in)
			}
			if err := hostileDecoders[on](in, tc.lim); err != nil {
				t.Errorf("%s/%s: %v", tc.name, on, err)
			}
		}
	}
}

// Every prefix of a valid encoding that cuts a field short is refused; a
// prefix that ends between two top-level fields is a shorter valid message.
func TestDecodeRefusesTruncatedInput(t *testing.T) {
	ns := NewNamespace(Limits{})
	var ds []Delta
	for _, op := range []Op{
		{Kind: OpPut, Key: "a", Value: []byte("hello")},
		{Kind: OpSetUpdate, Key: "b", Add: []string{"x", "y"}},
		{Kind: OpCounterAdd, Key: "c", Path: []string{"f", "g"}, N: -7},
		{Kind: OpFlag, Key: "d", Enable: true},
		{Kind: OpDelete, Key: "a"},
	} {
		d, err := ns.Prepare(op, DeriveReplicaID([]byte("peer")), Timestamp{Wall: 1_700_000_000_000, Logical: 3})
		if err != nil {
			t.Fatal(err)
		}
		ns.ApplyDelta(d, nil)
		ds = append(ds, d)
	}
	inputs := map[string][]byte{
		"delta":     JoinDeltas(ds...).Encode(nil),
		"namespace": ns.Encode(nil),
	}
	ctx := ns.Context()
	inputs["context"] = ctx.Encode(nil)
	v, _ := ns.Get("c")
	inputs["value"] = v.Encode(nil)
	for on, full := range inputs {
		boundary := map[int]bool{0: true}
		for off := 0; off < len(full); {
			_, _, n := protowire.ConsumeField(full[off:])
			if n < 0 {
				t.Fatalf("%s: bad encoding %q", on, full)
			}
			off += n
			boundary[off] = true
		}
		if err := hostileDecoders[on](full, Limits{}); err != nil {
			t.Fatalf("%s: full input refused: %v", on, err)
		}
		for i := 0; i < len(full); i++ {
			err := hostileDecoders[on](full[:i], Limits{})
			switch {
			case err == nil && !boundary[i]:
				t.Errorf("%s: prefix of %d/%d bytes accepted", on, i, len(full))
			case err != nil && !errors.Is(err, ErrMalformed):
				t.Errorf("%s: prefix of %d bytes: err = %v, want ErrMalformed", on, i, err)
			}
		}
	}
}

// A peer's delta can claim any dots in its context, including the last
// counters of our own replica. Local writes must then be refused, not take
// counter 0 (which wraps, is in no context and makes our state undecodable).
func TestPrepareAfterContextClaimsLastCounters(t *testing.T) {
	const me = ReplicaID(7)
	d, err := DecodeDelta(wireCat(wireCtx(wireRange(me, 1, math.MaxUint64-1)), wireKey("a", wireReg(me, math.MaxUint64-1, "v"))), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	ns := NewNamespace(Limits{})
	ns.ApplyDelta(d, nil)
	put, err := ns.Prepare(Op{Kind: OpPut, Key: "a", Value: []byte("w")}, me, Timestamp{Wall: 1})
	if err != nil {
		t.Fatalf("the last counter is still free: %v", err)
	}
	ns.ApplyDelta(put, nil)
	for _, op := range []Op{
		{Kind: OpPut, Key: "a", Value: []byte("x")},
		{Kind: OpSetUpdate, Key: "s", Add: []string{"e"}},
		{Kind: OpFlag, Key: "f", Enable: true},
	} {
		if _, err := ns.Prepare(op, me, Timestamp{Wall: 1}); !errors.Is(err, ErrLimit) {
			t.Fatalf("%v with no counters left: err = %v, want ErrLimit", op.Kind, err)
		}
	}
	del, err := ns.Prepare(Op{Kind: OpDelete, Key: "a"}, me, Timestamp{Wall: 1})
	if err != nil {
		t.Fatalf("a delete takes no dot: %v", err)
	}
	ns.ApplyDelta(del, nil)
	if _, err := DecodeNamespace(ns.Encode(nil), Limits{}); err != nil {
		t.Fatalf("state no longer decodes: %v", err)
	}
}

// A floor moves where a replica's new dots start without claiming the
// counters below it: a later delta holding those dots still applies.
func TestDotFloor(t *testing.T) {
	const me, other = ReplicaID(7), ReplicaID(8)
	const floor = uint64(1) << 63
	ns := NewNamespace(Limits{})
	ns.SetDotFloor(me, floor)
	put, err := ns.Prepare(Op{Kind: OpPut, Key: "a", Value: []byte("new")}, me, Timestamp{Wall: 2})
	if err != nil {
		t.Fatal(err)
	}
	var dots []Dot
	put.StoreDots(func(d Dot) { dots = append(dots, d) })
	if len(dots) != 1 || dots[0] != (Dot{me, floor}) {
		t.Fatalf("first dot %v, want counter %d", dots, floor)
	}
	if c := put.Context(); c.Contains(Dot{me, 1}) || !c.Contains(Dot{me, floor}) {
		t.Fatalf("delta context %v claims counters below the floor", c)
	}
	ns.ApplyDelta(put, nil)
	// Another replica's dots are not affected.
	o, err := ns.Prepare(Op{Kind: OpPut, Key: "b", Value: []byte("x")}, other, Timestamp{Wall: 2})
	if err != nil {
		t.Fatal(err)
	}
	o.StoreDots(func(d Dot) {
		if d != (Dot{other, 1}) {
			t.Fatalf("other replica's dot %v", d)
		}
	})
	ns.ApplyDelta(o, nil)
	// An earlier incarnation's write under the same replica, learned
	// later, is not covered by the floor and still applies.
	old := NewNamespace(Limits{})
	oldPut, err := old.Prepare(Op{Kind: OpPut, Key: "c", Value: []byte("old")}, me, Timestamp{Wall: 1})
	if err != nil {
		t.Fatal(err)
	}
	ns.ApplyDelta(oldPut, nil)
	if v, ok := ns.Get("c"); !ok || v.IsEmpty() {
		t.Fatal("the earlier incarnation's write was dropped")
	}
	next, err := ns.Prepare(Op{Kind: OpPut, Key: "a", Value: []byte("newer")}, me, Timestamp{Wall: 3})
	if err != nil {
		t.Fatal(err)
	}
	next.StoreDots(func(d Dot) {
		if d != (Dot{me, floor + 1}) {
			t.Fatalf("second dot %v, want %d", d, floor+1)
		}
	})
	ns.ApplyDelta(next, nil)
	// Dots of the same replica that another incarnation handed out above
	// the run from the floor are skipped where seen, never followed: the
	// next dot is the first gap from the floor up.
	other2 := NewNamespace(Limits{})
	other2.SetDotFloor(me, floor+2)
	learned, err := other2.Prepare(Op{Kind: OpPut, Key: "d", Value: []byte("elsewhere")}, me, Timestamp{Wall: 3})
	if err != nil {
		t.Fatal(err)
	}
	other2.ApplyDelta(learned, nil)
	far, err := other2.Prepare(Op{Kind: OpPut, Key: "e", Value: []byte("far")}, me, Timestamp{Wall: 3})
	if err != nil {
		t.Fatal(err)
	}
	farDot := floor + 2
	far.StoreDots(func(d Dot) { farDot = d.Counter })
	if farDot != floor+3 {
		t.Fatalf("the other incarnation's second dot %d", farDot)
	}
	ns.ApplyDelta(learned, nil) // floor+2, contiguous with the run: skipped (far is not learned)
	third, err := ns.Prepare(Op{Kind: OpPut, Key: "a", Value: []byte("third")}, me, Timestamp{Wall: 4})
	if err != nil {
		t.Fatal(err)
	}
	third.StoreDots(func(d Dot) {
		if d != (Dot{me, floor + 3}) {
			t.Fatalf("third dot %v, want the first gap %d", d, floor+3)
		}
	})
	// A seen dot far above the run is not followed.
	ns.ApplyDelta(third, nil)
	var high Context
	high.Add(Dot{me, floor + 1000})
	ns.ApplyDelta(ContextDelta(high), nil)
	fourth, err := ns.Prepare(Op{Kind: OpPut, Key: "a", Value: []byte("fourth")}, me, Timestamp{Wall: 5})
	if err != nil {
		t.Fatal(err)
	}
	fourth.StoreDots(func(d Dot) {
		if d != (Dot{me, floor + 4}) {
			t.Fatalf("fourth dot %v, want %d, not past the seen %d", d, floor+4, floor+1000)
		}
	})
	if got := ns.NextDot(other); got != 2 {
		t.Fatalf("another replica's next dot %d, want one past its highest", got)
	}
}

func TestContextNextGap(t *testing.T) {
	var c Context
	c.AddRange(1, 5, 9)
	c.AddRange(1, 20, 20)
	c.AddRange(2, 1, 3)
	c.AddRange(3, 10, ^uint64(0))
	for _, tc := range []struct {
		r          ReplicaID
		from, want uint64
	}{
		{1, 0, 1}, {1, 1, 1}, {1, 5, 10}, {1, 7, 10}, {1, 9, 10}, {1, 10, 10}, {1, 20, 21}, {1, 21, 21},
		{2, 1, 4}, {2, 4, 4}, {4, 1, 1}, {3, 9, 9}, {3, 10, 0}, {3, ^uint64(0), 0},
	} {
		if got := c.NextGap(tc.r, tc.from); got != tc.want {
			t.Errorf("NextGap(%d, %d) = %d, want %d", tc.r, tc.from, got, tc.want)
		}
	}
}

// An op taking several dots skips counters of its replica the context
// holds above the first gap from the floor (found by review: a set add of
// three elements took a counter seen from another incarnation).
func TestDotFloorSkipsSeenCounters(t *testing.T) {
	const me = ReplicaID(7)
	const floor = uint64(1) << 63
	ns := NewNamespace(Limits{})
	ns.SetDotFloor(me, floor)
	var seen Context
	seen.AddRange(me, floor+1, floor+1)
	seen.AddRange(me, floor+3, floor+4)
	ns.ApplyDelta(ContextDelta(seen), nil)
	d, err := ns.Prepare(Op{Kind: OpSetUpdate, Key: "s", Add: []string{"a", "b", "c"}}, me, Timestamp{Wall: 1})
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	d.StoreDots(func(x Dot) { got = append(got, x.Counter-floor) })
	slices.Sort(got)
	if !slices.Equal(got, []uint64{0, 2, 5}) {
		t.Fatalf("dots floor+%v, want floor+[0 2 5]", got)
	}
	// No counter left past the seen ones: refused, not wrapped.
	full := NewNamespace(Limits{})
	full.SetDotFloor(me, floor)
	var rest Context
	rest.AddRange(me, floor+1, ^uint64(0))
	full.ApplyDelta(ContextDelta(rest), nil)
	if _, err := full.Prepare(Op{Kind: OpSetUpdate, Key: "s", Add: []string{"a", "b"}}, me, Timestamp{Wall: 1}); !errors.Is(err, ErrLimit) {
		t.Fatalf("an add with one counter left: %v, want ErrLimit", err)
	}
	if _, err := full.Prepare(Op{Kind: OpPut, Key: "r", Value: []byte("v")}, me, Timestamp{Wall: 1}); err != nil {
		t.Fatalf("a put with one counter left: %v", err)
	}
}

// A replica counting from a floor folds into its counter entry only the
// entries of its own run. An entry of another incarnation of the same
// replica (a lost store's) stays as it is: that incarnation's later add,
// still on its way, replaces it and already holds its share, so folding
// it in would count it twice (found by the soak scenario: a counter
// above the sum of the acknowledged adds on every replica).
func TestFloorCounterKeepsOtherIncarnationsEntries(t *testing.T) {
	const me = ReplicaID(7)
	const lowFloor, highFloor = uint64(1) << 63, uint64(1)<<63 + 1<<40
	lost := NewNamespace(Limits{})
	lost.SetDotFloor(me, highFloor)
	add := func(ns *Namespace, n int64) Delta {
		t.Helper()
		d, err := ns.Prepare(Op{Kind: OpCounterAdd, Key: "c", N: n}, me, Timestamp{Wall: 1})
		if err != nil {
			t.Fatal(err)
		}
		ns.ApplyDelta(d, nil)
		return d
	}
	first := add(lost, 10)
	second := add(lost, 2) // on its way when the store is lost
	fresh := NewNamespace(Limits{})
	fresh.SetDotFloor(me, lowFloor)
	fresh.ApplyDelta(first, nil)
	mine := add(fresh, 1)
	mine2 := add(fresh, 4)
	// A peer that gets everything, in any order, counts 10+2+1+4.
	for _, order := range [][]Delta{{first, second, mine, mine2}, {mine2, mine, second, first}, {first, mine, second, mine2}} {
		peer := NewNamespace(Limits{})
		for _, d := range order {
			peer.ApplyDelta(d, nil)
		}
		v, _ := peer.Get("c")
		if got := v.Counter(); got != 17 {
			t.Fatalf("counter %d, want 17", got)
		}
	}
	fresh.ApplyDelta(second, nil)
	if v, _ := fresh.Get("c"); v.Counter() != 17 {
		t.Fatalf("the new store's counter %v, want 17", v)
	}
}
