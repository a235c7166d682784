package store

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	ds "github.com/ipfs/go-datastore"

	"github.com/mycelnet/mycel/crdt"
)

// DotSkip is how far reopening a namespace moves this replica's dot counter
// ahead. It must exceed the dots that can be applied in memory but not yet
// durable when the process dies: at most MaxPending operations of at most
// Limits.MaxElements+1 dots each (4,096 × 1,000,001 < 2^32 with defaults).
const DotSkip = 1 << 40

// Options configure a Store. The zero value of each field means its default.
type Options struct {
	// Replica is this node's replica id (crdt.DeriveReplicaID of its peer
	// id). Required.
	Replica crdt.ReplicaID
	// Limits bound keys, values and decoded records. Default crdt.DefaultLimits().
	Limits crdt.Limits
	// NoSync acknowledges writes once they are written to the datastore,
	// without waiting for an fsync: faster, but a crash — of the machine,
	// or of the process, since Pebble keeps a partly filled WAL block in
	// memory until a sync — can lose the writes acknowledged in the last
	// FlushEvery. Default false: every acknowledged write is durable. Per
	// call, see WithDurability.
	NoSync bool
	// FlushEvery bounds how long a commit written without a sync (NoSync
	// writes, remote batches) waits before the store syncs it anyway.
	// Default 100 ms; negative: only the next durable write or Close syncs
	// it. OpenMemory, which has nothing to sync, disables it. Local NoSync
	// commits reported through OnCommit are synced sooner, within about
	// 10 ms (see OnSynced).
	FlushEvery time.Duration
	// MaxPending bounds the operations applied but not yet committed;
	// writers wait beyond it (backpressure). Default 4,096.
	MaxPending int
	// Retention bounds each namespace's delta log. Defaults: 256 MiB, 24 h.
	Retention Retention
	// CompactEvery is how often the log is trimmed to Retention.
	// Default 1 minute; negative disables the background trim.
	CompactEvery time.Duration
	// MaxClockDrift is how far ahead of local time a remote register
	// timestamp may be and still advance the local hybrid clock. Default 1 min.
	MaxClockDrift time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// OnCommit, if set, is called once per committed batch, in commit
	// order, from the commit goroutine. It must not block or call back into
	// the store's write methods.
	OnCommit func(Commit)
	// OnSynced, if set, is called once every commit reported with Report
	// up to upTo is durable; a commit reported with Synced set already
	// was. A commit reported unsynced (a NoSync write) may still be lost
	// in a crash, so a replicator must not send it to peers before this
	// call: a peer holding a batch its origin lost keeps the batch's
	// removals of what it overwrote, and the origin's restart can only
	// announce that its values never happened (see DotSkip). The store
	// syncs unsynced local commits at once, off the writers' path. Called
	// from the store's goroutines, possibly concurrently and out of
	// order; it must not block.
	OnSynced func(upTo uint64)
	// Logger receives warnings. Default slog.Default().
	Logger *slog.Logger
	// MinFreeBytes is the free space a store opened with OpenPebble keeps
	// on its data directory's disk: below it, local writes and peers'
	// batches are refused with ErrDiskFull (reads go on) until there is
	// room again. Pebble cannot survive running out: a failed log write
	// ends the process, and a reopen on a full disk never returns. Default
	// DefaultMinFreeBytes (128 MiB); negative turns the check off. Other
	// datastores are not checked.
	MinFreeBytes int64
	// IdentityReused says Replica may have written before, on a store that
	// is now lost: the identity was kept or injected, but the datastore is
	// new. Peers may hold that lost store's dots and batch numbers, and
	// counting from 1 again would hand them out a second time (peers drop
	// such writes as already seen). A store created with it set gives each
	// namespace it creates a random floor in the upper half of the counter
	// space for this replica's dots and batch numbers (see FloorBase). The
	// choice is recorded with the store and holds for its whole life;
	// opening an existing store ignores the option.
	IdentityReused bool
	// Rand draws those floors. Default: crypto/rand.
	Rand func() uint64

	// space is OpenPebble's free-space check (MinFreeBytes), set before
	// the store's goroutines start.
	space *diskSpace
}

// FloorBase is the lowest counter floor a store with a reused identity
// gives a namespace; floors are drawn from [FloorBase, FloorBase+2^62).
// A store that counts from 1 stays below it for as long as it reopens fewer
// than 2^23 times (each reopen skips DotSkip = 2^40), so a reused identity's
// first new store never collides with the lost one; a second lost store in
// a row collides only if two random draws land within the counters the two
// used (about reopens × 2^-21).
const FloorBase = uint64(1) << 63

// Retention bounds a namespace's delta log. Compaction removes whole log
// entries, oldest first; it never changes key states.
type Retention struct {
	MaxBytes int64         // total encoded bytes kept
	MaxAge   time.Duration // entries older than this are removed
}

func (o Options) withDefaults() (Options, error) {
	if o.Replica == 0 {
		return o, errors.New("store: Options.Replica is required")
	}
	o.Limits = withDefaultLimits(o.Limits)
	if o.MaxPending <= 0 {
		o.MaxPending = 4096
	}
	if o.Retention.MaxBytes <= 0 {
		o.Retention.MaxBytes = 256 << 20
	}
	if o.Retention.MaxAge <= 0 {
		o.Retention.MaxAge = 24 * time.Hour
	}
	if o.CompactEvery == 0 {
		o.CompactEvery = time.Minute
	}
	if o.FlushEvery == 0 {
		o.FlushEvery = 100 * time.Millisecond
	}
	if o.MaxClockDrift <= 0 {
		o.MaxClockDrift = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Rand == nil {
		o.Rand = cryptoUint64
	}
	return o, nil
}

func withDefaultLimits(l crdt.Limits) crdt.Limits { return l.WithDefaults() }

func cryptoUint64() uint64 {
	var b [8]byte
	_, _ = crand.Read(b[:]) // never fails on supported platforms
	return binary.BigEndian.Uint64(b[:])
}

// Commit describes one committed batch.
type Commit struct {
	Namespace string
	Origin    crdt.ReplicaID
	Seq       uint64
	Delta     crdt.Delta
	// Encoded is Delta's canonical encoding, as logged.
	Encoded []byte
	// Signer and Sig are the origin's id and signature of a remote batch,
	// as logged (replication signs local batches as they leave).
	Signer, Sig []byte
	// Local is true for a batch of this replica's own operations.
	Local bool
	// Position numbers the batches of this namespace in the order this
	// replica committed them, from 1; it survives restarts (see
	// Namespace.Replay). A state reconciliation has a position but no
	// origin, sequence number or log entry.
	Position uint64
	// Report numbers the commits reported by this store, from 1, in the
	// order OnCommit saw them (see Options.OnSynced).
	Report uint64
	// Synced is true if the commit was durable when reported.
	Synced bool
}

// Store is the durable state of all namespaces of one node. Its methods are
// safe for concurrent use.
type Store struct {
	ds     ds.Batching
	opts   Options
	closer func() error // closes ds when the store owns it

	clockMu sync.Mutex
	clock   crdt.Clock

	reused bool // see Options.IdentityReused; fixed at open

	nsMu sync.RWMutex
	ns   map[string]*Namespace
	// creating holds the namespaces being registered (see Namespace); under
	// nsMu.
	creating map[string]*nsCreation

	compactMu sync.Mutex // one Compact at a time

	// dsMu guards the datastore against Close: calls outside the commit
	// and sync loops hold it for reading (use), and Close takes it before
	// closing the datastore, which then answers nothing (Pebble panics on
	// use after close).
	dsMu     sync.RWMutex
	dsClosed bool

	slots chan struct{} // backpressure: one per pending operation

	qMu     sync.Mutex
	queue   []*pending
	qNotify chan struct{}
	synced  chan *group // written batches waiting for a sync
	// reported counts the commits reported (only the sync loop adds);
	// flushNow asks the flusher to sync them (see Options.OnSynced)
	reported atomic.Uint64
	flushNow chan struct{}
	// ackedWaiters is how many writers waiting on their answer the sync
	// loop's last acknowledgement released (see gather)
	ackedWaiters atomic.Int64

	// space refuses writes while the disk is nearly full (nil: no check;
	// see Options.MinFreeBytes)
	space *diskSpace

	failMu sync.Mutex
	failed error

	closing   chan struct{}
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

// Open loads every namespace in the datastore and starts the commit loop.
// The caller keeps ownership of d: Close does not close it.
func Open(ctx context.Context, d ds.Batching, opts Options) (*Store, error) {
	return open(ctx, d, opts, nil)
}

func open(ctx context.Context, d ds.Batching, opts Options, closer func() error) (*Store, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Store{
		space:    opts.space,
		ds:       d,
		opts:     opts,
		closer:   closer,
		ns:       make(map[string]*Namespace),
		slots:    make(chan struct{}, opts.MaxPending),
		qNotify:  make(chan struct{}, 1),
		synced:   make(chan *group), // unbuffered: see run
		flushNow: make(chan struct{}, 1),
		closing:  make(chan struct{}),
	}
	s.clock.MaxDrift = opts.MaxClockDrift.Milliseconds()
	if err := s.loadClock(ctx); err != nil {
		return nil, err
	}
	names, err := s.registry(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.loadOwner(ctx, len(names) == 0); err != nil {
		return nil, err
	}
	// The clean mark is consumed: until this incarnation's Close writes it
	// again, a crash counts as unclean.
	_, err = s.ds.Get(ctx, ds.RawKey(keyClean))
	clean := err == nil
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	for _, name := range names {
		n, err := loadNamespace(ctx, s, name, clean)
		if err != nil {
			return nil, err
		}
		s.ns[name] = n
	}
	if clean {
		if err := s.ds.Delete(ctx, ds.RawKey(keyClean)); err != nil {
			return nil, fmt.Errorf("store: clear the clean mark: %w", err)
		}
	}
	if len(names) > 0 || clean {
		// The floors (loadNamespace) and the cleared mark are durable
		// before any position or batch number of this incarnation is
		// handed out.
		if err := s.ds.Sync(ctx, ds.RawKey("/")); err != nil {
			return nil, fmt.Errorf("store: sync floors: %w", err)
		}
	}
	s.wg.Add(3)
	go s.run()
	go s.syncLoop()
	go s.flusher()
	if opts.CompactEvery > 0 {
		s.wg.Add(1)
		go s.compactLoop()
	}
	// Skip ahead of any dot that may have been used but not persisted
	// before this open, and announce the skipped range.
	for _, n := range s.ns {
		if err := n.skipDots(ctx, clean); err != nil {
			_ = s.Close()
			return nil, err
		}
	}
	return s, nil
}

func (s *Store) loadClock(ctx context.Context) error {
	b, err := s.ds.Get(ctx, ds.RawKey(keyHLC))
	if errors.Is(err, ds.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: read clock: %w", err)
	}
	t, err := decodeTimestamp(b)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, keyHLC, err)
	}
	s.clock.Observe(t)
	return nil
}

// loadOwner reads the record of which replica owns this store and whether
// its identity was reused, writing it (durably) on a store's first open.
// A store without the record but with namespaces or a clock predates it:
// it counted from 1, so its identity is taken as not reused.
func (s *Store) loadOwner(ctx context.Context, noNamespaces bool) error {
	b, err := s.ds.Get(ctx, ds.RawKey(keyOwner))
	switch {
	case err == nil:
		replica, reused, err := parseOwner(b)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrCorrupt, keyOwner, err)
		}
		if replica != s.opts.Replica {
			return fmt.Errorf("%w (%v); this node is replica %v: its identity key changed under its data", ErrOtherReplica, replica, s.opts.Replica)
		}
		s.reused = reused
		return nil
	case !errors.Is(err, ds.ErrNotFound):
		return fmt.Errorf("store: read %s: %w", keyOwner, err)
	}
	_, hlcErr := s.ds.Get(ctx, ds.RawKey(keyHLC))
	fresh := noNamespaces && errors.Is(hlcErr, ds.ErrNotFound)
	s.reused = fresh && s.opts.IdentityReused
	if err := s.ds.Put(ctx, ds.RawKey(keyOwner), ownerRecord(s.opts.Replica, s.reused)); err != nil {
		return fmt.Errorf("store: write %s: %w", keyOwner, err)
	}
	if err := s.ds.Sync(ctx, ds.RawKey(keyOwner)); err != nil {
		return fmt.Errorf("store: write %s: %w", keyOwner, err)
	}
	return nil
}

func ownerRecord(r crdt.ReplicaID, reused bool) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 9), uint64(r))
	if reused {
		return append(b, 1)
	}
	return append(b, 0)
}

func parseOwner(b []byte) (crdt.ReplicaID, bool, error) {
	if len(b) != 9 || b[8] > 1 {
		return 0, false, fmt.Errorf("owner record of %d bytes", len(b))
	}
	return crdt.ReplicaID(binary.BigEndian.Uint64(b)), b[8] == 1, nil
}

// IdentityReused reports whether this store counts its own dots from
// random floors (see Options.IdentityReused).
func (s *Store) IdentityReused() bool { return s.reused }

// registry lists the namespaces the store holds. It goes through scan,
// which on Pebble reports a bad block (go-ds-pebble's Query ends quietly
// at one, and the store then opened without the namespaces past it).
func (s *Store) registry(ctx context.Context) ([]string, error) {
	var names []string
	err := scan(ctx, s, prefixRegistry[:len(prefixRegistry)-1], false, func(k string, _ []byte) error {
		name, err := decodeHexName(lastSegment(k))
		if err != nil {
			return fmt.Errorf("%w: namespace registry key: %v", ErrCorrupt, err)
		}
		names = append(names, name)
		return nil
	})
	switch {
	case errors.Is(err, ErrCorrupt):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("store: list namespaces: %w", err)
	}
	return names, nil
}

// Replica returns this node's replica id.
func (s *Store) Replica() crdt.ReplicaID { return s.opts.Replica }

// Limits returns the limits in force.
func (s *Store) Limits() crdt.Limits { return s.opts.Limits }

// now returns a hybrid-clock reading for a local write.
func (s *Store) now() crdt.Timestamp {
	s.clockMu.Lock()
	defer s.clockMu.Unlock()
	return s.clock.Now(s.opts.Now().UnixMilli())
}

// observe folds a remote timestamp into the clock. A reading beyond the
// drift bound is not absorbed; the batch is still applied.
func (s *Store) observe(t crdt.Timestamp) {
	if t.IsZero() {
		return
	}
	s.clockMu.Lock()
	err := s.clock.Update(t, s.opts.Now().UnixMilli())
	s.clockMu.Unlock()
	if err != nil {
		s.opts.Logger.Debug("store: remote clock ahead", "err", err)
	}
}

// ValidName checks a namespace name.
func ValidName(name string, l crdt.Limits) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidName)
	case len(name) > min(withDefaultLimits(l).MaxKeyBytes, crdt.MaxNamespaceNameBytes):
		return fmt.Errorf("%w: %d bytes, max %d", ErrInvalidName, len(name), min(withDefaultLimits(l).MaxKeyBytes, crdt.MaxNamespaceNameBytes))
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidName)
	}
	return nil
}

// Namespace returns the named namespace, creating it (durably) if needed.
//
// A new namespace is registered, and its record synced, outside the lock
// that guards the namespaces: lookups of the others go on meanwhile,
// instead of waiting out an fsync behind it. Callers asking for the same
// new namespace wait for its one registration.
func (s *Store) Namespace(ctx context.Context, name string) (*Namespace, error) {
	s.nsMu.RLock()
	n := s.ns[name]
	s.nsMu.RUnlock()
	if n != nil {
		// Held already, so valid when made: a name longer than a key
		// limit lowered since stays usable.
		return n, nil
	}
	if err := ValidName(name, s.opts.Limits); err != nil {
		return nil, err
	}
	// A new namespace is written to disk (its registry record) at once.
	if err := s.space.room(int64(len(name)) + 64); err != nil {
		return nil, err
	}
	// Waiting on another caller's registration is bounded: a waiter retries
	// only when that caller's own context ended it.
	var last error
	for range maxCreationWaits {
		n, c, mine, err := s.startCreation(name)
		if err != nil || n != nil {
			return n, err
		}
		if mine {
			s.create(ctx, name, c)
			return c.n, c.err
		}
		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if !c.callerGone {
			return c.n, c.err
		}
		last = c.err
	}
	return nil, fmt.Errorf("store: register namespace %q: %d other callers' registrations ended with their contexts, the last with: %w", name, maxCreationWaits, last)
}

// create carries out registration c of name and publishes its outcome,
// even if the datastore panics (a caller that recovers must not leave
// the name waited on forever).
func (s *Store) create(ctx context.Context, name string, c *nsCreation) {
	panicked := true // the panic itself goes on to the caller
	defer func() {
		if panicked {
			c.n, c.err = nil, fmt.Errorf("store: register namespace %q: the datastore panicked", name)
		}
		s.endCreation(name, c)
	}()
	c.n, c.err = s.register(ctx, name, c.floor)
	c.callerGone = c.err != nil && ctx.Err() != nil
	panicked = false
}

// endCreation publishes registration c's outcome: the namespace, if
// registered, and the end to its waiters.
func (s *Store) endCreation(name string, c *nsCreation) {
	s.nsMu.Lock()
	delete(s.creating, name)
	if c.err == nil {
		s.ns[name] = c.n
	}
	s.nsMu.Unlock()
	close(c.done)
}

// maxCreationWaits bounds how many other callers' registrations of one
// namespace a caller waits for before it gives up.
const maxCreationWaits = 16

// nsCreation is one registration of a new namespace; done is closed when it
// ended, with n or err set, and callerGone if it failed because its
// caller's context ended (its waiters then try again).
type nsCreation struct {
	floor      uint64
	done       chan struct{}
	n          *Namespace
	err        error
	callerGone bool
}

// startCreation returns the namespace if it exists now, or else the
// registration under way (mine false), or a new one for the caller to
// carry out (mine true).
func (s *Store) startCreation(name string) (n *Namespace, c *nsCreation, mine bool, err error) {
	s.nsMu.Lock()
	defer s.nsMu.Unlock()
	if n := s.ns[name]; n != nil {
		return n, nil, false, nil
	}
	if c := s.creating[name]; c != nil {
		return nil, c, false, nil
	}
	if err := s.check(); err != nil {
		return nil, nil, false, err
	}
	c = &nsCreation{done: make(chan struct{})}
	if s.reused {
		// Drawn under the lock: Options.Rand need not be safe for
		// concurrent use.
		c.floor = FloorBase + s.opts.Rand()>>2
	}
	if s.creating == nil {
		s.creating = make(map[string]*nsCreation)
	}
	s.creating[name] = c
	return nil, c, true, nil
}

// register records a new namespace durably and returns it.
func (s *Store) register(ctx context.Context, name string, floor uint64) (*Namespace, error) {
	release, err := s.use()
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.ds.Put(ctx, registryKey(name), registryRecord(floor)); err != nil {
		return nil, fmt.Errorf("store: register namespace %q: %w", name, err)
	}
	if err := s.ds.Sync(ctx, registryKey(name)); err != nil {
		return nil, fmt.Errorf("store: register namespace %q: %w", name, err)
	}
	n := newNamespace(s, name)
	n.setFloor(floor)
	return n, nil
}

// Namespaces returns the names of all namespaces, in no particular order.
func (s *Store) Namespaces() []string {
	s.nsMu.RLock()
	defer s.nsMu.RUnlock()
	out := make([]string, 0, len(s.ns))
	for name := range s.ns {
		out = append(out, name)
	}
	return out
}

// GetMeta reads caller metadata stored under name; ok is false if absent.
func (s *Store) GetMeta(ctx context.Context, name string) (val []byte, ok bool, err error) {
	release, err := s.use()
	if err != nil {
		return nil, false, err
	}
	defer release()
	b, err := s.ds.Get(ctx, metaKey(name))
	if errors.Is(err, ds.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: read meta %q: %w", name, err)
	}
	return b, true, nil
}

// PutMeta durably stores caller metadata under name.
func (s *Store) PutMeta(ctx context.Context, name string, val []byte) error {
	return s.changeMeta(ctx, name, func(k ds.Key) error {
		if err := s.ds.Put(ctx, k, val); err != nil {
			return fmt.Errorf("store: write meta %q: %w", name, err)
		}
		return nil
	})
}

// DeleteMeta durably removes the caller metadata stored under name; one
// that is absent is no error.
func (s *Store) DeleteMeta(ctx context.Context, name string) error {
	return s.changeMeta(ctx, name, func(k ds.Key) error {
		if err := s.ds.Delete(ctx, k); err != nil && !errors.Is(err, ds.ErrNotFound) {
			return fmt.Errorf("store: delete meta %q: %w", name, err)
		}
		return nil
	})
}

// changeMeta makes change to name's key in a sound, open store, then syncs
// it.
func (s *Store) changeMeta(ctx context.Context, name string, change func(ds.Key) error) error {
	if err := s.check(); err != nil {
		return err
	}
	release, err := s.use()
	if err != nil {
		return err
	}
	defer release()
	if err := change(metaKey(name)); err != nil {
		return err
	}
	if err := s.ds.Sync(ctx, metaKey(name)); err != nil {
		return fmt.Errorf("store: sync meta %q: %w", name, err)
	}
	return nil
}

// Err returns the error that failed the store — a write or sync the
// datastore refused, or corruption Pebble found on disk while compacting —
// or nil while it is sound. A failed store refuses writes (ErrFailed) and
// needs reopening.
func (s *Store) Err() error { return s.failure() }

// failure returns the error that failed the store, or nil.
func (s *Store) failure() error {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	return s.failed
}

// check returns the store's failure if a write failed (so the commit loop
// never writes past a failed batch, not even while closing), else ErrClosed
// once Close began, else nil.
func (s *Store) check() error {
	if failed := s.failure(); failed != nil {
		return failed
	}
	select {
	case <-s.closing:
		return ErrClosed
	default:
	}
	return nil
}

func (s *Store) fail(err error) error {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	if s.failed == nil {
		s.failed = fmt.Errorf("%w: %v", ErrFailed, err)
		s.opts.Logger.Error("store: failed; refusing further writes", "err", err)
	}
	return s.failed
}

// acquire takes a pending slot, waiting while MaxPending operations are in
// flight.
func (s *Store) acquire(ctx context.Context) error {
	if err := s.check(); err != nil {
		return err
	}
	select {
	case s.slots <- struct{}{}:
		// Close may have won the race: the commit loop stops once it sees
		// closing with no slot taken, so a slot taken after that would
		// never be committed.
		select {
		case <-s.closing:
			s.release()
			return ErrClosed
		default:
			return nil
		}
	case <-s.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) release() {
	<-s.slots
	// Wake the commit loop: while closing, it waits for free slots.
	select {
	case s.qNotify <- struct{}{}:
	default:
	}
}

// Flush waits until every operation applied so far is committed and synced.
func (s *Store) Flush(ctx context.Context) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	p := &pending{kind: pendingFlush, durable: true, waits: true, done: make(chan error, 1)}
	s.enqueue(p)
	return p.wait(ctx)
}

// Compact trims every namespace's log to the retention policy now.
func (s *Store) Compact(ctx context.Context) error {
	// One compaction at a time: two would pick the same victims and count
	// their bytes out of the log twice.
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	// A snapshot of the namespaces, taken before the datastore.
	s.nsMu.RLock()
	list := make([]*Namespace, 0, len(s.ns))
	for _, n := range s.ns {
		list = append(list, n)
	}
	s.nsMu.RUnlock()
	release, err := s.use()
	if err != nil {
		return err
	}
	defer release()
	// One namespace's trouble does not hold back the others' retention.
	var errs []error
	for _, n := range list {
		if err := n.compact(ctx); err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrFailed) || errors.Is(err, ErrClosed) {
				return err
			}
			errs = append(errs, fmt.Errorf("namespace %q: %w", n.name, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Store) compactLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.CompactEvery)
	defer t.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), s.opts.CompactEvery)
			if err := s.Compact(ctx); err != nil && !errors.Is(err, ErrClosed) {
				s.opts.Logger.Warn("store: log compaction failed", "err", err)
			}
			cancel()
		}
	}
}

// Close commits what is queued, stops the store's goroutines and, if the
// store opened its datastore, closes it. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.wg.Wait()
		s.closeErr = s.markClean()
		s.dsMu.Lock()
		s.dsClosed = true
		s.dsMu.Unlock()
		if s.closer != nil {
			if err := s.closer(); s.closeErr == nil {
				s.closeErr = err
			}
		}
	})
	return s.closeErr
}

// use holds the datastore open until release; ErrClosed once Close closed
// it.
func (s *Store) use() (release func(), err error) {
	s.dsMu.RLock()
	if s.dsClosed {
		s.dsMu.RUnlock()
		return nil, ErrClosed
	}
	return s.dsMu.RUnlock, nil
}

// markClean syncs everything committed and records that it did, so the
// next open continues positions and batch numbers where they stopped. A
// store that failed is left unmarked.
func (s *Store) markClean() error {
	if s.failure() != nil {
		return nil
	}
	ctx := context.Background()
	// Each namespace's next open continues after its last position even
	// if the index is trimmed away by then (or was already).
	s.nsMu.RLock()
	for _, n := range s.ns {
		if err := n.savePosFloor(ctx, n.posDone.Load()); err != nil {
			s.nsMu.RUnlock()
			return fmt.Errorf("store: close: %w", err)
		}
	}
	s.nsMu.RUnlock()
	if err := s.ds.Put(ctx, ds.RawKey(keyClean), []byte{1}); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	if err := s.ds.Sync(ctx, ds.RawKey("/")); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}
