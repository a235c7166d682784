package store

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/mycelnet/mycel/crdt"
)

// DefaultMinFreeBytes is the free space OpenPebble keeps on the data
// directory's disk (Options.MinFreeBytes): room for Pebble to flush a full
// memtable (64 MiB) and compact, with a margin.
const DefaultMinFreeBytes = 128 << 20

// minReserveBytes is the least reserve a Pebble store keeps, whatever
// MinFreeBytes asks: a memtable's flush writes up to its 64 MiB into a
// table while its log is still on disk.
const minReserveBytes = memTableBytes + 16<<20

// memTableBytes is OpenPebble's memtable size.
const memTableBytes = 64 << 20

// spaceCheckEvery bounds how old the free-space reading a write is
// admitted on may be. What was written since it and what is admitted but
// not yet written are counted apart (diskSpace.inflight, .written), so
// a burst cannot overrun the reserve between readings.
const spaceCheckEvery = 50 * time.Millisecond

// diskSpace keeps a store's writes off a full disk. Pebble treats a WAL
// write that fails for want of space as fatal: go-ds-pebble's logger then
// ends the process ("pebble: fatal commit error: … no space left on
// device"); a flush that finds no room stalls writes for ever; and a store
// that reopens on a full disk fares no better: Pebble flushes the
// replayed WAL, fails, and retries about a thousand times a second, and
// Open never returns. So writes are refused (ErrDiskFull) while the disk
// would be left with less than min free, and resume by themselves once
// there is room; reads go on.
type diskSpace struct {
	dir    string
	min    uint64
	free   func(dir string) (uint64, error)
	logger *slog.Logger
	base   time.Time // readings are timed from here, on the monotonic clock

	checked atomic.Int64  // nanoseconds since base of the last reading
	last    atomic.Uint64 // free bytes at the last reading
	known   atomic.Bool   // the last reading succeeded
	// inflight: bytes admitted and not yet written; written: bytes
	// written since the last reading (which did not see them).
	inflight, written atomic.Int64
	full              atomic.Bool // for logging the changes only
}

func newDiskSpace(dir string, min int64, logger *slog.Logger) *diskSpace {
	if min < 0 {
		return nil
	}
	if min == 0 {
		min = DefaultMinFreeBytes
	}
	min = max(min, minReserveBytes)
	return &diskSpace{dir: dir, min: uint64(min), free: diskFreeBytes, logger: logger, base: time.Now()}
}

// diskFreeBytes is the space on dir's disk that an unprivileged writer
// may use.
func diskFreeBytes(dir string) (uint64, error) {
	u, err := vfs.Default.GetDiskUsage(dir)
	if err != nil {
		return 0, err
	}
	return u.AvailBytes, nil
}

// room returns ErrDiskFull, with the figures, if writing about size more
// bytes would leave the disk with less than the reserve free, counting
// what was admitted and not yet written and what was written since the
// last reading. The write, once built, is charged exactly (Store.enqueue).
// It reads again once the reading is older than spaceCheckEvery; one
// caller takes each reading.
func (d *diskSpace) room(size int64) error {
	if d == nil {
		return nil
	}
	now := int64(time.Since(d.base))
	last := d.checked.Load()
	if (last == 0 || now-last >= int64(spaceCheckEvery)) && d.checked.CompareAndSwap(last, max(now, 1)) {
		d.read()
	}
	if !d.known.Load() {
		return nil // not knowing is no reason to refuse: the disk answers then
	}
	free := int64(d.last.Load()) - d.written.Load() - d.inflight.Load() - size
	if free >= int64(d.min) {
		if d.full.CompareAndSwap(true, false) {
			d.logger.Warn("store: disk space back; writes resume", "dir", d.dir, "free", sizeString(uint64(max(free, 0))))
		}
		return nil
	}
	if d.full.CompareAndSwap(false, true) {
		d.logger.Error("store: disk nearly full; refusing writes until there is room", "dir", d.dir, "free", sizeString(d.last.Load()), "min_free", sizeString(d.min))
	}
	return fmt.Errorf("%w: %s free on the disk of %s, writes need %s free (min-free-bytes)",
		ErrDiskFull, sizeString(d.last.Load()), d.dir, sizeString(d.min))
}

func (d *diskSpace) read() {
	free, err := d.free(d.dir)
	if err != nil {
		d.known.Store(false)
		return
	}
	d.written.Store(0) // this reading sees them (give or take a write racing it)
	d.last.Store(free)
	d.known.Store(true)
}

// charge counts n bytes as admitted; wrote moves them to written once the
// commit loop wrote them (or failed to).
func (d *diskSpace) charge(n int64) {
	if d != nil {
		d.inflight.Add(n)
	}
}

func (d *diskSpace) wrote(n int64) {
	if d != nil && n != 0 {
		d.inflight.Add(-n)
		d.written.Add(n)
	}
}

// pendingBytes estimates what p writes: its key states and its log entry
// (about as large as the changes), each with its datastore key.
func pendingBytes(p *pending) int64 {
	n := int64(len(p.encoded) + len(p.sum))
	for _, k := range p.keys {
		n += int64(2*len(k.val) + len(k.key.String()) + 64)
	}
	for _, c := range p.ctxs {
		n += int64(len(c.ranges) + 64)
	}
	return n
}

// roomToOpen checks that the disk of dir has room for Pebble to open: to
// replay its write-ahead log, which it flushes into a table about as
// large, unless the last close flushed (flushedMark). Without it, Pebble's
// open retries the flush for ever. The log files on disk overstate what
// is left to replay (Pebble keeps flushed ones for reuse), but never by
// more than the memtables Pebble lets pile up before it stops writes.
func roomToOpen(dir string, freeBytes func(string) (uint64, error)) error {
	free, err := freeBytes(dir)
	if err != nil {
		return nil
	}
	var wal uint64
	if _, err := os.Stat(filepath.Join(dir, flushedMark)); err != nil {
		logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		for _, p := range logs {
			if fi, err := os.Stat(p); err == nil {
				wal += uint64(fi.Size())
			}
		}
		wal = min(wal, maxUnflushedBytes)
	}
	need := wal + openMarginBytes
	if free < need {
		return fmt.Errorf("%w: %s free on the disk of %s; opening needs about %s to replay the write-ahead log (%s) — free some space and start again",
			ErrDiskFull, sizeString(free), dir, sizeString(need), sizeString(wal))
	}
	return nil
}

// flushedMark names the file a close that flushed Pebble's memtables
// leaves in the directory; an open removes it.
const flushedMark = "mycel.flushed"

// maxUnflushedBytes bounds the data in memtables not yet flushed: Pebble
// stops writes at two full memtables (MemTableStopWritesThreshold).
const maxUnflushedBytes = 2 * memTableBytes

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

// opBytes and opsBytes estimate what operations write before they are
// built: each key and value twice (key state and log entry).
func opBytes(op crdt.Op) int64 {
	n := len(op.Key) + len(op.Value)
	for _, part := range [][]string{op.Path, op.Add, op.Remove} {
		for _, e := range part {
			n += len(e)
		}
	}
	return 2 * int64(n)
}

func opsBytes(ops []crdt.Op) int64 {
	var n int64
	for _, op := range ops {
		n += opBytes(op)
	}
	return n
}
