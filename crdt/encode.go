package crdt

import (
	"slices"
	"sort"

	"google.golang.org/protobuf/encoding/protowire"
)

// The wire format is protobuf (see docs/wire.proto), written by hand so that
// it is canonical: fields in ascending order, zero scalars omitted, repeated
// entries sorted by their key, no map fields. Field numbers:
const (
	// Range
	fRangeReplica = 1 // fixed64
	fRangeLo      = 2 // varint
	fRangeHi      = 3 // varint
	// Context
	fCtxRange = 1 // Range
	// Dot
	fDotReplica = 1 // fixed64
	fDotCounter = 2 // varint
	// RegEntry
	fRegDot     = 1 // Dot
	fRegWall    = 2 // varint (int64)
	fRegLogical = 3 // varint
	fRegValue   = 4 // bytes
	// CounterEntry
	fCtrDot = 1 // Dot
	fCtrN   = 2 // zigzag varint
	// SetEntry
	fSetElem = 1 // bytes (UTF-8)
	fSetDot  = 2 // Dot
	// FieldEntry
	fFieldName  = 1 // bytes (UTF-8)
	fFieldValue = 2 // Value
	// Value
	fValReg    = 1 // RegEntry
	fValCtr    = 2 // CounterEntry
	fValSet    = 3 // SetEntry
	fValField  = 4 // FieldEntry
	fValFlag   = 5 // Dot
	fValCovers = 6 // varint bool
	// KeyEntry
	fKeyKey   = 1 // bytes (UTF-8)
	fKeyValue = 2 // Value
	// State and Delta
	fStateCtx   = 1 // Context
	fStateEntry = 2 // KeyEntry
)

func sizeTag(num protowire.Number) int { return protowire.SizeTag(num) }

func sizeMsg(num protowire.Number, n int) int { return sizeTag(num) + protowire.SizeBytes(n) }

func appendMsgHeader(b []byte, num protowire.Number, n int) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(n))
}

func appendUvarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func sizeUvarintField(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return sizeTag(num) + protowire.SizeVarint(v)
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendStringField(b []byte, num protowire.Number, v string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, v)
}

// --- dots and contexts ---

func sizeDotBody(d Dot) int {
	return sizeTag(fDotReplica) + 8 + sizeUvarintField(fDotCounter, d.Counter)
}

func appendDotBody(b []byte, d Dot) []byte {
	b = protowire.AppendTag(b, fDotReplica, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, uint64(d.Replica))
	return appendUvarintField(b, fDotCounter, d.Counter)
}

func sizeDotField(num protowire.Number, d Dot) int { return sizeMsg(num, sizeDotBody(d)) }

func appendDotField(b []byte, num protowire.Number, d Dot) []byte {
	b = appendMsgHeader(b, num, sizeDotBody(d))
	return appendDotBody(b, d)
}

func sizeRangeBody(r dotRange) int {
	return sizeTag(fRangeReplica) + 8 + sizeUvarintField(fRangeLo, r.Lo) + sizeUvarintField(fRangeHi, r.Hi)
}

func sizeContextBody(c *Context) int {
	n := 0
	for _, r := range c.ranges {
		n += sizeMsg(fCtxRange, sizeRangeBody(r))
	}
	return n
}

func appendContextBody(b []byte, c *Context) []byte {
	for _, r := range c.ranges {
		b = appendMsgHeader(b, fCtxRange, sizeRangeBody(r))
		b = protowire.AppendTag(b, fRangeReplica, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, uint64(r.Replica))
		b = appendUvarintField(b, fRangeLo, r.Lo)
		b = appendUvarintField(b, fRangeHi, r.Hi)
	}
	return b
}

// Encode appends the canonical encoding of the context to b. It grows b
// once to the exact size: a context holds a range per replica, and growing
// by appends copied a 100-replica context's encoding several times over.
func (c *Context) Encode(b []byte) []byte {
	return appendContextBody(slices.Grow(b, sizeContextBody(c)), c)
}

// --- values ---

func sizeRegBody(e *RegEntry) int {
	return sizeDotField(fRegDot, e.Dot) + sizeUvarintField(fRegWall, uint64(e.Time.Wall)) +
		sizeUvarintField(fRegLogical, uint64(e.Time.Logical)) + sizeMsg(fRegValue, len(e.Value))
}

func sizeCtrBody(e *counterEntry) int {
	return sizeDotField(fCtrDot, e.Dot) + sizeUvarintField(fCtrN, protowire.EncodeZigZag(e.N))
}

func sizeSetBody(elem string, ds []Dot) int {
	n := sizeMsg(fSetElem, len(elem))
	for _, d := range ds {
		n += sizeDotField(fSetDot, d)
	}
	return n
}

func sizeValueBody(v *Value) int {
	n := 0
	for i := range v.reg {
		n += sizeMsg(fValReg, sizeRegBody(&v.reg[i]))
	}
	e := v.ext
	if e == nil {
		return n
	}
	for i := range e.ctr {
		n += sizeMsg(fValCtr, sizeCtrBody(&e.ctr[i]))
	}
	for elem, ds := range e.set {
		n += sizeMsg(fValSet, sizeSetBody(elem, ds))
	}
	for name, f := range e.fields {
		n += sizeMsg(fValField, sizeMsg(fFieldName, len(name))+sizeMsg(fFieldValue, sizeValueBody(&f)))
	}
	for _, d := range e.flag {
		n += sizeDotField(fValFlag, d)
	}
	if e.covers {
		n += sizeUvarintField(fValCovers, 1)
	}
	return n
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Size returns the length of the value's encoding (Encode), without
// encoding it.
func (v Value) Size() int { return sizeValueBody(&v) }

func appendValueBody(b []byte, v *Value) []byte {
	for i := range v.reg {
		e := &v.reg[i]
		b = appendMsgHeader(b, fValReg, sizeRegBody(e))
		b = appendDotField(b, fRegDot, e.Dot)
		b = appendUvarintField(b, fRegWall, uint64(e.Time.Wall))
		b = appendUvarintField(b, fRegLogical, uint64(e.Time.Logical))
		b = appendStringField(b, fRegValue, e.Value)
	}
	e := v.ext
	if e == nil {
		return b
	}
	for i := range e.ctr {
		c := &e.ctr[i]
		b = appendMsgHeader(b, fValCtr, sizeCtrBody(c))
		b = appendDotField(b, fCtrDot, c.Dot)
		b = appendUvarintField(b, fCtrN, protowire.EncodeZigZag(c.N))
	}
	if len(e.set) > 0 {
		for _, elem := range sortedKeys(e.set) {
			ds := e.set[elem]
			b = appendMsgHeader(b, fValSet, sizeSetBody(elem, ds))
			b = appendStringField(b, fSetElem, elem)
			for _, d := range ds {
				b = appendDotField(b, fSetDot, d)
			}
		}
	}
	if len(e.fields) > 0 {
		for _, name := range sortedKeys(e.fields) {
			f := e.fields[name]
			fs := sizeValueBody(&f)
			b = appendMsgHeader(b, fValField, sizeMsg(fFieldName, len(name))+sizeMsg(fFieldValue, fs))
			b = appendStringField(b, fFieldName, name)
			b = appendMsgHeader(b, fFieldValue, fs)
			b = appendValueBody(b, &f)
		}
	}
	for _, d := range e.flag {
		b = appendDotField(b, fValFlag, d)
	}
	if e.covers {
		b = appendUvarintField(b, fValCovers, 1)
	}
	return b
}

// Encode appends the value's canonical encoding to b.
func (v Value) Encode(b []byte) []byte { return appendValueBody(b, &v) }

func sizeEntryBody(key string, v *Value) int {
	return sizeMsg(fKeyKey, len(key)) + sizeMsg(fKeyValue, sizeValueBody(v))
}

func appendEntry(b []byte, key string, v *Value) []byte {
	vs := sizeValueBody(v)
	b = appendMsgHeader(b, fStateEntry, sizeMsg(fKeyKey, len(key))+sizeMsg(fKeyValue, vs))
	b = appendStringField(b, fKeyKey, key)
	b = appendMsgHeader(b, fKeyValue, vs)
	return appendValueBody(b, v)
}

func appendStateHeader(b []byte, c *Context) []byte {
	if len(c.ranges) == 0 {
		return b
	}
	b = appendMsgHeader(b, fStateCtx, sizeContextBody(c))
	return appendContextBody(b, c)
}

// Encode appends the delta's canonical encoding to b.
func (d Delta) Encode(b []byte) []byte {
	b = appendStateHeader(b, &d.ctx)
	for i := range d.entries {
		b = appendEntry(b, d.entries[i].key, &d.entries[i].val)
	}
	return b
}

// Encode appends the namespace state's canonical encoding to b.
func (n *Namespace) Encode(b []byte) []byte {
	b = appendStateHeader(b, &n.ctx)
	var one [1]RegEntry
	for _, k := range n.Keys("") {
		v := n.keys.at(k).read(k, &one)
		b = appendEntry(b, k, &v)
	}
	return b
}

// Size returns the length of the delta's encoding, without encoding it.
func (d Delta) Size() int {
	n := 0
	if len(d.ctx.ranges) > 0 {
		n += sizeMsg(fStateCtx, sizeContextBody(&d.ctx))
	}
	for i := range d.entries {
		n += sizeMsg(fStateEntry, sizeEntryBody(d.entries[i].key, &d.entries[i].val))
	}
	return n
}
