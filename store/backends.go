package store

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	pebbleds "github.com/ipfs/go-ds-pebble"
)

// OpenMemory opens a store on an in-memory datastore: for tests and the
// simulator. Nothing survives Close.
func OpenMemory(ctx context.Context, opts Options) (*Store, error) {
	if opts.FlushEvery == 0 {
		opts.FlushEvery = -1 // nothing to sync
	}
	return open(ctx, dssync.MutexWrap(ds.NewMapDatastore()), opts, nil)
}

// OpenPebble opens (creating if needed) a store on a Pebble database in dir,
// the default on-disk backend. Writes go to Pebble unsynced and the commit
// loop syncs the WAL once per group commit. A directory held by another
// process or store fails with ErrInUse.
func OpenPebble(ctx context.Context, dir string, opts Options) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", dir, err)
	}
	// Our own lock, taken before Pebble's, so a second opener fails fast
	// with a clear error (and before Pebble starts anything).
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	space := newDiskSpace(dir, opts.MinFreeBytes, logger)
	if space != nil {
		if err := roomToOpen(dir, space.free); err != nil {
			lock.Close()
			return nil, err
		}
	}
	events := &pebbleEvents{logger: logger}
	popts := &pebble.Options{
		// Larger memtables mean fewer flushes and less write amplification
		// for a workload that writes every change twice (state and log).
		MemTableSize:  memTableBytes,
		EventListener: events.listener(),
	}
	d, err := pebbleds.NewDatastore(dir, pebbleds.WithPebbleOpts(popts), pebbleds.WithPebbleWriteOptions(pebble.NoSync))
	if err != nil {
		lock.Close()
		if isLockErr(err) {
			return nil, fmt.Errorf("%w: %s: %v", ErrInUse, dir, err)
		}
		return nil, fmt.Errorf("store: open pebble in %s: %w", dir, err)
	}
	if err := os.Remove(filepath.Join(dir, flushedMark)); err != nil && !os.IsNotExist(err) {
		logger.Warn("store: cannot remove the flushed mark; an open after a crash may not check for room to replay the log", "err", err)
	}
	// Once: a failed open closes the store, which closes the datastore,
	// and then closes it again here; Pebble panics on a second Close.
	closeAll := sync.OnceValue(func() error {
		var err error
		if space != nil && !roomToFlush(dir, d.DB, space.free) {
			// go-ds-pebble's Close flushes the memtable first, and a flush
			// that finds no room is retried for ever: Close never
			// returned. Pebble's own Close syncs the write-ahead log, which
			// the next open replays; go-ds-pebble's Close adds nothing else
			// here (no cache of its own, no query running).
			logger.Warn("store: closing without flushing: too little disk space; the next open replays the write-ahead log", "dir", dir)
			err = d.DB.Close()
		} else if err = d.Close(); err == nil && space != nil {
			// Flushed: the next open replays no log (see roomToOpen).
			_ = os.WriteFile(filepath.Join(dir, flushedMark), nil, 0o600)
		}
		lock.Close()
		return err
	})
	opts.space = space
	s, err := open(ctx, pebbleStore{d}, opts, closeAll)
	if err != nil {
		_ = closeAll()
		return nil, err
	}
	events.store.Store(s)
	return s, nil
}

// pebbleEvents takes Pebble's reports of corruption. Pebble's default, with
// go-ds-pebble's logger, is Fatalf: one bad block on disk ended the
// process. Instead, the read that meets a bad block gets ErrCorrupt naming
// the record (see pebbleStore); a compaction that meets one fails the
// store (Store.Err; the daemon exits) and closes it. Pebble retries that
// compaction at once, about a thousand times a second, which kept a core
// busy, and with writes going on level 0 filled until writes, and Close
// (which flushes), stalled for good. Reads the store serves from memory
// go on; the rest return ErrFailed or ErrClosed.
type pebbleEvents struct {
	logger *slog.Logger
	store  atomic.Pointer[Store] // once open
	closed sync.Once

	mu      sync.Mutex
	logged  time.Time
	skipped int
}

func (e *pebbleEvents) listener() *pebble.EventListener {
	return &pebble.EventListener{
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			e.log("store: on-disk corruption", "file", info.Path, "keys", info.Bounds.String(), "err", firstLine(info.Details))
		},
		BackgroundError: func(err error) {
			if pebble.IsCorruptionError(err) {
				if s := e.store.Load(); s != nil {
					s.fail(fmt.Errorf("%w: found by a compaction: %s", ErrCorrupt, firstLine(err)))
					// Not here: Close waits for Pebble's compactions,
					// this one among them.
					e.closed.Do(func() { go s.Close() })
				}
			}
			e.log("store: pebble background error", "err", firstLine(err))
		},
	}
}

// log logs at most once a second, with how many it left out since: Pebble
// retries a failed compaction of level 0 at once, hundreds of times a
// second (a 5-minute run logged 170,000 lines).
func (e *pebbleEvents) log(msg string, args ...any) {
	e.mu.Lock()
	now := time.Now()
	if now.Sub(e.logged) < time.Second {
		e.skipped++
		e.mu.Unlock()
		return
	}
	skipped := e.skipped
	e.logged, e.skipped = now, 0
	e.mu.Unlock()
	if skipped > 0 {
		args = append(args, "left_out", skipped)
	}
	e.logger.Error(msg, args...)
}

// lockDir takes an exclusive, non-blocking lock on dir/mycel.lock. The
// kernel drops it when the process dies, so a crash never leaves it held.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "mycel.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: lock %s: %w", dir, err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		if isLockErr(err) {
			return nil, fmt.Errorf("%w: %s is held by another process or store", ErrInUse, dir)
		}
		return nil, fmt.Errorf("store: lock %s: %w", dir, err)
	}
	return f, nil
}

func isLockErr(err error) bool {
	return errLockHeld(err) ||
		strings.Contains(err.Error(), "lock held") || strings.Contains(err.Error(), "resource temporarily unavailable")
}

// pebbleStore is go-ds-pebble's datastore with a direct prefix scan for
// loading state at open: an iterator instead of a goroutine and a channel
// per record. Its reads report Pebble's corruption errors (a block whose
// checksum does not match, on open or on a later read) as ErrCorrupt,
// naming the record read, or for a scan where it broke off.
type pebbleStore struct {
	*pebbleds.Datastore
}

// corruptRead wraps err, from reading what (see describeRecord; built
// only for an error), in ErrCorrupt if Pebble found the bytes on disk
// corrupt.
func corruptRead(what func() string, err error) error {
	if err == nil || !pebble.IsCorruptionError(err) {
		return err
	}
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, what(), firstLine(err))
}

// firstLine is the first line of err's message: Pebble's goes on over
// lines of detail and stack traces.
func firstLine(err error) string {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return msg
}

// scanBroke names where a scan of [lower, …) met an error: after the last
// key it read, or at its start.
func scanBroke(lower, last string, err error) error {
	return corruptRead(func() string {
		if last == "" {
			return describeRecord(lower) + ", at the start"
		}
		ns, what := recordName(last)
		if lowerNS, _ := recordName(lower); lowerNS == "" || ns != lowerNS {
			what = describeRecord(last) // name its namespace, too
		}
		return describeRecord(lower) + ", after " + what
	}, err)
}

func (p pebbleStore) Get(ctx context.Context, k ds.Key) ([]byte, error) {
	v, err := p.Datastore.Get(ctx, k)
	return v, corruptRead(func() string { return describeRecord(k.String()) }, err)
}

func (p pebbleStore) Has(ctx context.Context, k ds.Key) (bool, error) {
	ok, err := p.Datastore.Has(ctx, k)
	return ok, corruptRead(func() string { return describeRecord(k.String()) }, err)
}

func (p pebbleStore) GetSize(ctx context.Context, k ds.Key) (int, error) {
	n, err := p.Datastore.GetSize(ctx, k)
	return n, corruptRead(func() string { return describeRecord(k.String()) }, err)
}

func (p pebbleStore) scanPrefix(ctx context.Context, prefix string, fn func(key string, val []byte) error) error {
	// '0' is the byte after '/'.
	return p.scanRange(ctx, prefix+"/", prefix+"0", func(k string, v []byte) (bool, error) { return true, fn(k, v) })
}

func (p pebbleStore) scanRange(ctx context.Context, lower, upper string, fn func(key string, val []byte) (bool, error)) error {
	it, err := p.DB.NewIter(&pebble.IterOptions{LowerBound: []byte(lower), UpperBound: []byte(upper)})
	if err != nil {
		return err
	}
	defer it.Close()
	last := ""
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return scanBroke(lower, last, err)
		}
		last = string(it.Key())
		more, err := fn(last, v)
		if err != nil || !more {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return scanBroke(lower, last, it.Error())
}

func (p pebbleStore) scanKeys(ctx context.Context, lower, upper string, fn func(key string) bool) error {
	it, err := p.DB.NewIter(&pebble.IterOptions{LowerBound: []byte(lower), UpperBound: []byte(upper)})
	if err != nil {
		return err
	}
	defer it.Close()
	last := ""
	for ok := it.First(); ok; ok = it.Next() {
		last = string(it.Key())
		if !fn(last) || ctx.Err() != nil {
			break
		}
	}
	return scanBroke(lower, last, it.Error())
}

// ForgetCleanClose makes the next open of the store in d treat the last
// Close as a crash: positions and this replica's batch numbers then start
// above everything the closed store can have handed out. For simulators,
// whose crashes close the store but must not count as clean.
func ForgetCleanClose(ctx context.Context, d ds.Datastore) error {
	if err := d.Delete(ctx, ds.RawKey(keyClean)); err != nil && !isNotFound(err) {
		return fmt.Errorf("store: forget the clean close: %w", err)
	}
	return nil
}
