package crdt

import (
	"fmt"
	"unicode/utf8"
)

// OpKind says what an [Op] does.
type OpKind uint8

// The operations a caller can prepare.
const (
	// OpPut writes Value to a register.
	OpPut OpKind = iota + 1
	// OpDelete removes the key (or, with a Path, the map field) and every
	// value under it that this replica has observed. A concurrent write
	// survives.
	OpDelete
	// OpCounterAdd adds N (negative to subtract) to a counter.
	OpCounterAdd
	// OpSetUpdate removes the elements in Remove, then adds those in Add,
	// of a set; an element in both ends up present.
	OpSetUpdate
	// OpFlag enables (Enable true) or disables a flag.
	OpFlag
)

var opNames = [...]string{"invalid", "put", "delete", "counter-add", "set-update", "flag"}

func (k OpKind) String() string {
	if int(k) < len(opNames) {
		return opNames[k]
	}
	return fmt.Sprintf("op(%d)", k)
}

// kind returns the value kind the op writes (0 for a delete).
func (k OpKind) kind() Kind {
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

// Op is one local operation on a namespace.
type Op struct {
	Kind OpKind
	// Key is the namespace key. It must be non-empty valid UTF-8.
	Key string
	// Path names nested map fields below Key: the operation applies to
	// Key.Path[0].Path[1]... Empty means the key itself.
	Path []string
	// Value is written by OpPut. It is copied.
	Value []byte
	// N is added by OpCounterAdd.
	N int64
	// Add and Remove are the elements changed by OpSetUpdate.
	Add, Remove []string
	// Enable is the new state for OpFlag.
	Enable bool
}

// MaxNamespaceNameBytes bounds a namespace's name, whatever Limits say
// of keys: the name travels in every sync session's first frame, whose
// decoder takes names up to this size (found by review: a longer name,
// allowed by a raised key limit, made a namespace no peer could sync).
const MaxNamespaceNameBytes = 1 << 10

// Limits bounds what an operation may write and what a decoder accepts.
// Zero fields take the defaults of [DefaultLimits].
type Limits struct {
	// MaxKeyBytes bounds keys, map field names and set elements. Default 1 KiB.
	MaxKeyBytes int
	// MaxValueBytes bounds one register value. Default 1 MiB.
	MaxValueBytes int
	// MaxDepth bounds map nesting. Default 8.
	MaxDepth int
	// MaxElements bounds the entries of any one collection decoded (keys,
	// set elements, fields, dots, context ranges). Default 1,000,000.
	MaxElements int
	// MaxBytes bounds one encoded state or delta. Default 256 MiB.
	MaxBytes int
}

// DefaultLimits returns the limits Mycel uses unless configured otherwise.
func DefaultLimits() Limits {
	return Limits{
		MaxKeyBytes:   1 << 10,
		MaxValueBytes: 1 << 20,
		MaxDepth:      8,
		MaxElements:   1_000_000,
		MaxBytes:      256 << 20,
	}
}

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits { return l.withDefaults() }

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxKeyBytes <= 0 {
		l.MaxKeyBytes = d.MaxKeyBytes
	}
	if l.MaxValueBytes <= 0 {
		l.MaxValueBytes = d.MaxValueBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxElements <= 0 {
		l.MaxElements = d.MaxElements
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = d.MaxBytes
	}
	return l
}

// CheckName reports whether s is acceptable as a key, field or element.
func (l Limits) CheckName(what, s string) error {
	l = l.withDefaults()
	switch {
	case s == "":
		return fmt.Errorf("%w: empty %s", ErrInvalidOp, what)
	case len(s) > l.MaxKeyBytes:
		return fmt.Errorf("%w: %s is %d bytes, max %d", ErrLimit, what, len(s), l.MaxKeyBytes)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidOp, what)
	}
	return nil
}

// Validate checks the op against the limits without looking at any state.
func (op *Op) Validate(l Limits) error {
	l = l.withDefaults()
	if err := l.CheckName("key", op.Key); err != nil {
		return err
	}
	if len(op.Path) >= l.MaxDepth {
		return fmt.Errorf("%w: path depth %d, max %d", ErrLimit, len(op.Path), l.MaxDepth-1)
	}
	for _, f := range op.Path {
		if err := l.CheckName("field", f); err != nil {
			return err
		}
	}
	switch op.Kind {
	case OpPut:
		if len(op.Value) > l.MaxValueBytes {
			return fmt.Errorf("%w: value is %d bytes, max %d", ErrLimit, len(op.Value), l.MaxValueBytes)
		}
	case OpDelete, OpCounterAdd, OpFlag:
	case OpSetUpdate:
		if len(op.Add) == 0 && len(op.Remove) == 0 {
			return fmt.Errorf("%w: set update with no elements", ErrInvalidOp)
		}
		if len(op.Add)+len(op.Remove) > l.MaxElements {
			return fmt.Errorf("%w: %d set elements in one op", ErrLimit, len(op.Add)+len(op.Remove))
		}
		for _, e := range op.Add {
			if err := l.CheckName("set element", e); err != nil {
				return err
			}
		}
		for _, e := range op.Remove {
			if err := l.CheckName("set element", e); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("%w: unknown op kind %d", ErrInvalidOp, op.Kind)
	}
	return nil
}
