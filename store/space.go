package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// DefaultMinFreeBytes is the free space OpenPebble keeps on the data
// directory's disk (Options.MinFreeBytes): room for Pebble to flush a full
// memtable (64 MiB) and compact, with a margin.
const DefaultMinFreeBytes = 128 << 20

// spaceCheckEvery bounds how stale the free-space reading a write is
// admitted on may be: at 100 MB/s a write path fills 5 MB in that time,
// far inside the reserve.
const spaceCheckEvery = 50 * time.Millisecond

// errSpaceUnknown: the platform cannot tell a disk's free space.
var errSpaceUnknown = errors.New("free space unknown on this platform")

// diskSpace keeps a store's writes off a full disk. Pebble treats a WAL
// write that fails for want of space as fatal: go-ds-pebble's logger then
// ends the process ("pebble: fatal commit error: … no space left on
// device"). A store that reopens on a full disk fares no better: Pebble
// flushes the replayed WAL, fails, and retries about a thousand times a
// second, and Open never returns. So writes are refused (ErrDiskFull)
// while the disk has less than min free, and resume by themselves once
// it has more; reads go on.
type diskSpace struct {
	dir    string
	min    uint64
	free   func(dir string) (uint64, error)
	logger *slog.Logger

	checked atomic.Int64          // unix nanoseconds of the last reading
	full    atomic.Pointer[error] // nil while there is room
}

func newDiskSpace(dir string, min int64, logger *slog.Logger) *diskSpace {
	if min < 0 {
		return nil
	}
	if min == 0 {
		min = DefaultMinFreeBytes
	}
	return &diskSpace{dir: dir, min: uint64(min), free: freeBytes, logger: logger}
}

// room returns ErrDiskFull, with the figures, if the disk had less than the
// reserve free at the last reading; it reads again once the reading is
// older than spaceCheckEvery. One caller takes each new reading; the rest
// use the last one meanwhile.
func (d *diskSpace) room() error {
	if d == nil {
		return nil
	}
	now := time.Now().UnixNano()
	last := d.checked.Load()
	if now-last >= int64(spaceCheckEvery) && d.checked.CompareAndSwap(last, now) {
		d.read()
	}
	if p := d.full.Load(); p != nil {
		return *p
	}
	return nil
}

func (d *diskSpace) read() {
	free, err := d.free(d.dir)
	if err != nil {
		// Not knowing is no reason to refuse writes: the disk is what
		// answers then.
		d.full.Store(nil)
		return
	}
	if free >= d.min {
		if d.full.Swap(nil) != nil {
			d.logger.Warn("store: disk space back; writes resume", "dir", d.dir, "free", sizeString(free))
		}
		return
	}
	err = fmt.Errorf("%w: %s free on the disk of %s, writes need %s free (min-free-bytes)",
		ErrDiskFull, sizeString(free), d.dir, sizeString(d.min))
	if d.full.Swap(&err) == nil {
		d.logger.Error("store: disk nearly full; refusing writes until there is room", "dir", d.dir, "free", sizeString(free), "min_free", sizeString(d.min))
	}
}

// roomToOpen checks that the disk of dir has room for Pebble to replay its
// write-ahead log at open, which it flushes into a table about as large:
// without it, Pebble's open retries the flush for ever.
func roomToOpen(dir string, freeBytes func(string) (uint64, error)) error {
	free, err := freeBytes(dir)
	if err != nil {
		return nil
	}
	var wal uint64
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, p := range logs {
		if fi, err := os.Stat(p); err == nil {
			wal += uint64(fi.Size())
		}
	}
	need := wal + openMarginBytes
	if free < need {
		return fmt.Errorf("%w: %s free on the disk of %s; opening needs about %s to replay the write-ahead log (%s) — free some space and start again",
			ErrDiskFull, sizeString(free), dir, sizeString(need), sizeString(wal))
	}
	return nil
}

// roomToFlush reports whether dir's disk has room for db to flush its
// memtables (as large as the memory they hold, at most) at close. Unknown
// free space counts as room.
func roomToFlush(dir string, db *pebble.DB, freeBytes func(string) (uint64, error)) bool {
	free, err := freeBytes(dir)
	if err != nil {
		return true
	}
	return free >= uint64(db.Metrics().MemTable.Size)+openMarginBytes
}

// openMarginBytes is what an open writes beside the replayed log: a new
// WAL, manifest and options file.
const openMarginBytes = 4 << 20

// sizeString gives a byte count in the unit that reads best.
func sizeString(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
