package store

import "errors"

var (
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrCorrupt: a record read from the datastore could not be decoded.
	// The error names the namespace and key.
	ErrCorrupt = errors.New("store: corrupt record")
	// ErrFailed: an earlier write to the datastore failed; the in-memory
	// state may be ahead of the disk, so the store refuses further writes.
	// Reopen it.
	ErrFailed = errors.New("store: failed, reopen required")
	// ErrDiskFull: the data directory's disk has less free space than the
	// store keeps in reserve (Options.MinFreeBytes), so it refuses writes
	// until there is room again, or too little to open at all. Nothing
	// was written.
	ErrDiskFull = errors.New("store: disk full")
	// ErrInUse: the data directory is held by another process.
	ErrInUse = errors.New("store: data directory already in use")
	// ErrOtherReplica: the datastore holds another replica's store (the
	// node's identity changed under its data).
	ErrOtherReplica = errors.New("store: datastore belongs to another replica")
	// ErrInvalidName: a namespace name is empty, too long or not UTF-8.
	ErrInvalidName = errors.New("store: invalid namespace name")
)
