package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

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
	popts := &pebble.Options{
		// Larger memtables mean fewer flushes and less write amplification
		// for a workload that writes every change twice (state and log).
		MemTableSize: 64 << 20,
	}
	d, err := pebbleds.NewDatastore(dir, pebbleds.WithPebbleOpts(popts), pebbleds.WithPebbleWriteOptions(pebble.NoSync))
	if err != nil {
		lock.Close()
		if isLockErr(err) {
			return nil, fmt.Errorf("%w: %s: %v", ErrInUse, dir, err)
		}
		return nil, fmt.Errorf("store: open pebble in %s: %w", dir, err)
	}
	closeAll := func() error {
		err := d.Close()
		lock.Close()
		return err
	}
	s, err := open(ctx, pebbleStore{d}, opts, closeAll)
	if err != nil {
		_ = closeAll()
		return nil, err
	}
	return s, nil
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
// per record.
type pebbleStore struct {
	*pebbleds.Datastore
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
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		more, err := fn(string(it.Key()), v)
		if err != nil || !more {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return it.Error()
}

func (p pebbleStore) scanKeys(ctx context.Context, lower, upper string, fn func(key string) bool) error {
	it, err := p.DB.NewIter(&pebble.IterOptions{LowerBound: []byte(lower), UpperBound: []byte(upper)})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if !fn(string(it.Key())) || ctx.Err() != nil {
			break
		}
	}
	return it.Error()
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
