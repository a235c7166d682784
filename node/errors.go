package node

import (
	"errors"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/store"
)

var (
	// ErrNotFound: the key holds no value.
	ErrNotFound = errors.New("node: not found")
	// ErrConfig: the configuration is invalid.
	ErrConfig = errors.New("node: invalid config")
	// ErrClosed: the node was closed.
	ErrClosed = errors.New("node: closed")
	// ErrWrongType: the key holds a value of another type (crdt.ErrWrongType).
	ErrWrongType = crdt.ErrWrongType
	// ErrInvalid: a key, value or name is empty, too long or not UTF-8.
	ErrInvalid = crdt.ErrInvalidOp
	// ErrTooLarge: a key or value exceeds the configured limits.
	ErrTooLarge = crdt.ErrLimit
	// ErrInUse: the data directory is held by another process.
	ErrInUse = store.ErrInUse
	// ErrCompacted: a watch position is older than the history kept.
	ErrCompacted = errors.New("node: watch position compacted; re-read and watch again")
)
