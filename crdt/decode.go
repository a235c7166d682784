package crdt

import (
	"fmt"
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// decoder reads the canonical encoding back, enforcing limits. It accepts
// fields in ascending order only and rejects unknown fields, so anything it
// accepts re-encodes to bytes it accepts again with the same meaning.
type decoder struct {
	lim   Limits
	delta bool // removal markers and covers marks are allowed
	dots  []Dot
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

func overLimit(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrLimit}, args...)...)
}

// field is one decoded protobuf field.
type field struct {
	num protowire.Number
	typ protowire.Type
	u   uint64 // varint or fixed64 value
	b   []byte // bytes value
}

// each calls fn for every field of msg in order; repeated fields may repeat,
// others (per single) must not, and numbers must not go down.
func each(msg []byte, single func(protowire.Number) bool, fn func(f field) error) error {
	var last protowire.Number
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return malformed("bad tag: %v", protowire.ParseError(n))
		}
		msg = msg[n:]
		if num < last || (num == last && single(num)) {
			return malformed("field %d out of order", num)
		}
		last = num
		f := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			f.u, n = protowire.ConsumeVarint(msg)
		case protowire.Fixed64Type:
			f.u, n = protowire.ConsumeFixed64(msg)
		case protowire.BytesType:
			f.b, n = protowire.ConsumeBytes(msg)
		default:
			return malformed("field %d has unsupported wire type %d", num, typ)
		}
		if n < 0 {
			return malformed("field %d: %v", num, protowire.ParseError(n))
		}
		msg = msg[n:]
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

func never(protowire.Number) bool  { return false }
func always(protowire.Number) bool { return true }

func want(f field, typ protowire.Type) error {
	if f.typ != typ {
		return malformed("field %d has wire type %d, want %d", f.num, f.typ, typ)
	}
	return nil
}

func unknown(f field) error { return malformed("unknown field %d", f.num) }

func (dec *decoder) name(what string, b []byte) (string, error) {
	switch {
	case len(b) == 0:
		return "", malformed("empty %s", what)
	case len(b) > dec.lim.MaxKeyBytes:
		return "", overLimit("%s is %d bytes, max %d", what, len(b), dec.lim.MaxKeyBytes)
	case !utf8.Valid(b):
		return "", malformed("%s is not valid UTF-8", what)
	}
	return string(b), nil
}

func (dec *decoder) count(what string, n int) error {
	if n > dec.lim.MaxElements {
		return overLimit("more than %d %s", dec.lim.MaxElements, what)
	}
	return nil
}

func (dec *decoder) dot(b []byte) (Dot, error) {
	var d Dot
	err := each(b, always, func(f field) error {
		switch f.num {
		case fDotReplica:
			if err := want(f, protowire.Fixed64Type); err != nil {
				return err
			}
			d.Replica = ReplicaID(f.u)
		case fDotCounter:
			if err := want(f, protowire.VarintType); err != nil {
				return err
			}
			d.Counter = f.u
		default:
			return unknown(f)
		}
		return nil
	})
	if err != nil {
		return Dot{}, err
	}
	if d.Replica == 0 || d.Counter == 0 {
		return Dot{}, malformed("dot %v has a zero replica or counter", d)
	}
	dec.dots = append(dec.dots, d)
	return d, nil
}

func (dec *decoder) context(b []byte) (Context, error) {
	var c Context
	err := each(b, never, func(f field) error {
		if f.num != fCtxRange {
			return unknown(f)
		}
		if err := want(f, protowire.BytesType); err != nil {
			return err
		}
		if err := dec.count("context ranges", len(c.ranges)+1); err != nil {
			return err
		}
		var r dotRange
		err := each(f.b, always, func(g field) error {
			switch g.num {
			case fRangeReplica:
				if err := want(g, protowire.Fixed64Type); err != nil {
					return err
				}
				r.Replica = ReplicaID(g.u)
			case fRangeLo, fRangeHi:
				if err := want(g, protowire.VarintType); err != nil {
					return err
				}
				if g.num == fRangeLo {
					r.Lo = g.u
				} else {
					r.Hi = g.u
				}
			default:
				return unknown(g)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if r.Replica == 0 {
			return malformed("context range with replica 0")
		}
		c.ranges = append(c.ranges, r)
		return nil
	})
	if err != nil {
		return Context{}, err
	}
	if !c.valid() {
		return Context{}, malformed("context ranges not sorted, disjoint and non-empty")
	}
	return c, nil
}

func sortedDots(ds []Dot) bool {
	for i := 1; i < len(ds); i++ {
		if !ds[i-1].Less(ds[i]) {
			return false
		}
	}
	return true
}

func (dec *decoder) value(b []byte, depth int) (Value, error) {
	if depth > dec.lim.MaxDepth {
		return Value{}, overLimit("nesting deeper than %d", dec.lim.MaxDepth)
	}
	var v Value
	var e valueExt
	var lastElem, lastField string
	err := each(b, func(n protowire.Number) bool { return n == fValCovers }, func(f field) error {
		if f.num == fValCovers {
			if err := want(f, protowire.VarintType); err != nil {
				return err
			}
			if !dec.delta || f.u != 1 {
				return malformed("covers mark outside a delta")
			}
			e.covers = true
			return nil
		}
		if err := want(f, protowire.BytesType); err != nil {
			return err
		}
		switch f.num {
		case fValReg:
			if err := dec.count("register entries", len(v.reg)+1); err != nil {
				return err
			}
			r, err := dec.regEntry(f.b)
			if err != nil {
				return err
			}
			v.reg = append(v.reg, r)
		case fValCtr:
			if err := dec.count("counter entries", len(e.ctr)+1); err != nil {
				return err
			}
			c, err := dec.counterEntry(f.b)
			if err != nil {
				return err
			}
			e.ctr = append(e.ctr, c)
		case fValSet:
			if err := dec.count("set elements", len(e.set)+1); err != nil {
				return err
			}
			elem, ds, err := dec.setEntry(f.b)
			if err != nil {
				return err
			}
			if e.set != nil && elem <= lastElem {
				return malformed("set element %q out of order", elem)
			}
			if len(ds) == 0 && !dec.delta {
				return malformed("set element %q has no dots", elem)
			}
			if e.set == nil {
				e.set = make(map[string][]Dot)
			}
			e.set[elem], lastElem = ds, elem
		case fValField:
			if err := dec.count("map fields", len(e.fields)+1); err != nil {
				return err
			}
			// Checked here, not only when the field's value is decoded:
			// a removal marker may omit its (empty) value.
			if depth+1 > dec.lim.MaxDepth {
				return overLimit("nesting deeper than %d", dec.lim.MaxDepth)
			}
			name, fv, err := dec.fieldEntry(f.b, depth)
			if err != nil {
				return err
			}
			if e.fields != nil && name <= lastField {
				return malformed("map field %q out of order", name)
			}
			if fv.IsEmpty() && !dec.delta {
				return malformed("map field %q is empty", name)
			}
			if e.fields == nil {
				e.fields = make(map[string]Value)
			}
			e.fields[name], lastField = fv, name
		case fValFlag:
			if err := dec.count("flag dots", len(e.flag)+1); err != nil {
				return err
			}
			d, err := dec.dot(f.b)
			if err != nil {
				return err
			}
			e.flag = append(e.flag, d)
		default:
			return unknown(f)
		}
		return nil
	})
	if err != nil {
		return Value{}, err
	}
	if !sortedRegs(v.reg) {
		return Value{}, malformed("register entries not sorted by dot")
	}
	if !sortedCtrs(e.ctr) || !sortedDots(e.flag) {
		return Value{}, malformed("counter or flag dots not sorted")
	}
	if len(e.ctr) > 0 || len(e.set) > 0 || len(e.fields) > 0 || len(e.flag) > 0 || e.covers {
		v.ext = &e
	}
	return v, nil
}

func sortedRegs(rs []RegEntry) bool {
	for i := 1; i < len(rs); i++ {
		if !rs[i-1].Dot.Less(rs[i].Dot) {
			return false
		}
	}
	return true
}

func sortedCtrs(cs []counterEntry) bool {
	for i := 1; i < len(cs); i++ {
		if !cs[i-1].Dot.Less(cs[i].Dot) {
			return false
		}
	}
	return true
}

func (dec *decoder) regEntry(b []byte) (RegEntry, error) {
	var r RegEntry
	seenDot := false
	err := each(b, always, func(f field) error {
		switch f.num {
		case fRegDot:
			if err := want(f, protowire.BytesType); err != nil {
				return err
			}
			d, err := dec.dot(f.b)
			r.Dot, seenDot = d, true
			return err
		case fRegWall:
			if err := want(f, protowire.VarintType); err != nil {
				return err
			}
			r.Time.Wall = int64(f.u)
		case fRegLogical:
			if err := want(f, protowire.VarintType); err != nil {
				return err
			}
			if f.u > uint64(^uint32(0)) {
				return malformed("logical clock %d overflows", f.u)
			}
			r.Time.Logical = uint32(f.u)
		case fRegValue:
			if err := want(f, protowire.BytesType); err != nil {
				return err
			}
			if len(f.b) > dec.lim.MaxValueBytes {
				return overLimit("register value is %d bytes, max %d", len(f.b), dec.lim.MaxValueBytes)
			}
			r.Value = string(f.b)
		default:
			return unknown(f)
		}
		return nil
	})
	if err == nil && !seenDot {
		err = malformed("register entry without a dot")
	}
	return r, err
}

func (dec *decoder) counterEntry(b []byte) (counterEntry, error) {
	var c counterEntry
	seenDot := false
	err := each(b, always, func(f field) error {
		switch f.num {
		case fCtrDot:
			if err := want(f, protowire.BytesType); err != nil {
				return err
			}
			d, err := dec.dot(f.b)
			c.Dot, seenDot = d, true
			return err
		case fCtrN:
			if err := want(f, protowire.VarintType); err != nil {
				return err
			}
			c.N = protowire.DecodeZigZag(f.u)
		default:
			return unknown(f)
		}
		return nil
	})
	if err == nil && !seenDot {
		err = malformed("counter entry without a dot")
	}
	return c, err
}

func (dec *decoder) setEntry(b []byte) (string, []Dot, error) {
	var elem string
	var ds []Dot
	seenElem := false
	err := each(b, func(n protowire.Number) bool { return n == fSetElem }, func(f field) error {
		if err := want(f, protowire.BytesType); err != nil {
			return err
		}
		switch f.num {
		case fSetElem:
			var err error
			elem, err = dec.name("set element", f.b)
			seenElem = true
			return err
		case fSetDot:
			if err := dec.count("dots of one element", len(ds)+1); err != nil {
				return err
			}
			d, err := dec.dot(f.b)
			ds = append(ds, d)
			return err
		}
		return unknown(f)
	})
	if err != nil {
		return "", nil, err
	}
	if !seenElem {
		return "", nil, malformed("set entry without an element")
	}
	if !sortedDots(ds) {
		return "", nil, malformed("dots of set element %q not sorted", elem)
	}
	return elem, ds, nil
}

func (dec *decoder) fieldEntry(b []byte, depth int) (string, Value, error) {
	var name string
	var v Value
	seenName := false
	err := each(b, always, func(f field) error {
		if err := want(f, protowire.BytesType); err != nil {
			return err
		}
		switch f.num {
		case fFieldName:
			var err error
			name, err = dec.name("map field", f.b)
			seenName = true
			return err
		case fFieldValue:
			var err error
			v, err = dec.value(f.b, depth+1)
			if err != nil {
				return fmt.Errorf("field %q: %w", name, err)
			}
			return nil
		}
		return unknown(f)
	})
	if err == nil && !seenName {
		err = malformed("map field without a name")
	}
	return name, v, err
}

// state decodes a state or delta body into a context and sorted entries.
func (dec *decoder) state(b []byte) (Context, []entry, error) {
	if len(b) > dec.lim.MaxBytes {
		return Context{}, nil, overLimit("%d bytes, max %d", len(b), dec.lim.MaxBytes)
	}
	var ctx Context
	var entries []entry
	err := each(b, func(n protowire.Number) bool { return n == fStateCtx }, func(f field) error {
		if err := want(f, protowire.BytesType); err != nil {
			return err
		}
		switch f.num {
		case fStateCtx:
			var err error
			ctx, err = dec.context(f.b)
			return err
		case fStateEntry:
			if err := dec.count("keys", len(entries)+1); err != nil {
				return err
			}
			key, v, err := dec.keyEntry(f.b)
			if err != nil {
				return fmt.Errorf("key %d: %w", len(entries), err)
			}
			if n := len(entries); n > 0 && key <= entries[n-1].key {
				return malformed("key %q out of order", key)
			}
			entries = append(entries, entry{key: key, val: v})
			return nil
		}
		return unknown(f)
	})
	if err != nil {
		return Context{}, nil, err
	}
	if err := dec.checkDots(&ctx); err != nil {
		return Context{}, nil, err
	}
	return ctx, entries, nil
}

func (dec *decoder) keyEntry(b []byte) (string, Value, error) {
	var key string
	var v Value
	seenKey := false
	err := each(b, always, func(f field) error {
		if err := want(f, protowire.BytesType); err != nil {
			return err
		}
		switch f.num {
		case fKeyKey:
			var err error
			key, err = dec.name("key", f.b)
			seenKey = true
			return err
		case fKeyValue:
			var err error
			v, err = dec.value(f.b, 0)
			if err != nil {
				return fmt.Errorf("key %q: %w", key, err)
			}
			return nil
		}
		return unknown(f)
	})
	if err == nil && !seenKey {
		err = malformed("entry without a key")
	}
	if err == nil && v.IsEmpty() && !dec.delta {
		err = malformed("key %q has an empty value", key)
	}
	return key, v, err
}

// checkDots verifies that every dot held is in the context and that no dot
// is held twice: a dot names one write, in one place.
func (dec *decoder) checkDots(ctx *Context) error {
	ds := dec.dots
	slices.SortFunc(ds, compareDots)
	for i, d := range ds {
		if i > 0 && ds[i-1] == d {
			return malformed("dot %v held twice", d)
		}
		if !ctx.Contains(d) {
			return malformed("dot %v held but not in the context", d)
		}
	}
	return nil
}

// DecodeDelta decodes a delta encoded by [Delta.Encode].
func DecodeDelta(b []byte, lim Limits) (Delta, error) {
	dec := decoder{lim: lim.withDefaults(), delta: true}
	ctx, entries, err := dec.state(b)
	if err != nil {
		return Delta{}, fmt.Errorf("decode delta: %w", err)
	}
	return Delta{ctx: ctx, entries: entries}, nil
}

// DecodeNamespace decodes a state encoded by [Namespace.Encode].
func DecodeNamespace(b []byte, lim Limits) (*Namespace, error) {
	dec := decoder{lim: lim.withDefaults()}
	ctx, entries, err := dec.state(b)
	if err != nil {
		return nil, fmt.Errorf("decode namespace: %w", err)
	}
	n := NewNamespace(lim)
	n.ctx = ctx
	for _, e := range entries {
		n.put(e.key, slot{}, nil, e.val)
	}
	return n, nil
}

// DecodeContext decodes a context encoded by [Context.Encode].
func DecodeContext(b []byte, lim Limits) (Context, error) {
	dec := decoder{lim: lim.withDefaults()}
	if len(b) > dec.lim.MaxBytes {
		return Context{}, overLimit("context is %d bytes, max %d", len(b), dec.lim.MaxBytes)
	}
	c, err := dec.context(b)
	if err != nil {
		return Context{}, fmt.Errorf("decode context: %w", err)
	}
	return c, nil
}

// DecodeValue decodes one state value encoded by [Value.Encode] (a value held
// in a namespace, not a delta fragment). It checks the value's own shape;
// whether its dots are in a context is for the caller to check with
// [Namespace.Restore].
func DecodeValue(b []byte, lim Limits) (Value, error) {
	dec := decoder{lim: lim.withDefaults()}
	if len(b) > dec.lim.MaxBytes {
		return Value{}, overLimit("value is %d bytes, max %d", len(b), dec.lim.MaxBytes)
	}
	v, err := dec.value(b, 0)
	if err == nil && v.IsEmpty() {
		err = malformed("empty value")
	}
	if err == nil {
		slices.SortFunc(dec.dots, compareDots)
		for i := 1; i < len(dec.dots); i++ {
			if dec.dots[i-1] == dec.dots[i] {
				err = malformed("dot %v held twice", dec.dots[i])
				break
			}
		}
	}
	if err != nil {
		return Value{}, fmt.Errorf("decode value: %w", err)
	}
	return v, nil
}
