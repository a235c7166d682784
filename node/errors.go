package node

import (
	"errors"
	"fmt"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/gossip"
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
	// ErrDiskFull: the data directory's disk has less free space than
	// Config.MinFreeBytes; the write changed nothing. Writes resume once
	// there is room.
	ErrDiskFull = store.ErrDiskFull
	// ErrCompacted: a watch position is older than the history kept.
	ErrCompacted = errors.New("node: watch position compacted; re-read and watch again")
)

// ValidNamespaceName checks a namespace name against the limits (as
// Namespace will): ErrInvalid if it is empty, too long or not UTF-8.
func ValidNamespaceName(name string, l crdt.Limits) error {
	if err := store.ValidName(name, l); err != nil {
		return fmt.Errorf("%w: namespace: %v", ErrInvalid, err)
	}
	return nil
}

// DefaultMinFreeBytes is Config.MinFreeBytes's default (128 MiB).
const DefaultMinFreeBytes = store.DefaultMinFreeBytes

// MaxOpBytes bounds the delta of one operation (store.MaxOpBytes): an
// operation whose delta is larger is refused with ErrTooLarge, whatever
// the key and value limits allow.
const MaxOpBytes = store.MaxOpBytes

// mapErr gives errors from the layers below the node's own identity: a
// closed store or replicator is ErrClosed.
func mapErr(err error) error {
	if err != nil && !errors.Is(err, ErrClosed) && (errors.Is(err, store.ErrClosed) || errors.Is(err, gossip.ErrClosed)) {
		return fmt.Errorf("%w: %v", ErrClosed, err)
	}
	return err
}
