package crdt

import "errors"

var (
	// ErrWrongType: the operation's kind does not match what the key or
	// field already holds.
	ErrWrongType = errors.New("crdt: wrong type for existing value")
	// ErrInvalidOp: the operation is not well formed (empty key, unknown
	// kind, empty set change, ...).
	ErrInvalidOp = errors.New("crdt: invalid operation")
	// ErrClockDrift: a remote timestamp is further ahead of the local
	// physical clock than the configured maximum drift.
	ErrClockDrift = errors.New("crdt: remote clock too far ahead")
	// ErrMalformed: encoded bytes are not a valid state, delta or context.
	ErrMalformed = errors.New("crdt: malformed encoding")
	// ErrLimit: encoded bytes or an operation exceed a configured limit.
	ErrLimit = errors.New("crdt: limit exceeded")
)
