package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/mycelnet/mycel/crdt"
)

// TestSeenNeverGoesBackwards: a state reconciliation racing local commits
// must not write back an older view of this replica's own batches (which
// would let a restart reuse a sequence number).
func TestSeenNeverGoesBackwards(t *testing.T) {
	ctx := context.Background()
	const self = crdt.ReplicaID(9)
	for attempt := 0; attempt < 20; attempt++ {
		d := dssync.MutexWrap(ds.NewMapDatastore())
		s, err := Open(ctx, d, Options{Replica: self, CompactEvery: -1})
		if err != nil {
			t.Fatal(err)
		}
		n := mustNS(t, s, "x")
		put(t, n, "a", "1")
		peerSeen := crdt.ContextOf(crdt.Dot{Replica: self, Counter: 1})
		for i := 0; i < 500; i++ {
			if _, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: fmt.Sprint("k", i%50), Value: []byte{byte(i)}}, WithoutWait()); err != nil {
				t.Fatal(err)
			}
		}
		if err := n.ApplyState(ctx, nil, peerSeen, crdt.Context{}, n.RemoteApplies()); err != nil {
			t.Fatal(err)
		}
		kept := n.Kept()
		s.Close()
		s2, err := Open(ctx, d, Options{Replica: self, CompactEvery: -1})
		if err != nil {
			t.Fatal(err)
		}
		after := mustNS(t, s2, "x").Seen()
		if after.Max(self) <= kept.Max(self) {
			t.Fatalf("attempt %d: sequence reused: logged up to %d, seen after reopen %d", attempt, kept.Max(self), after.Max(self))
		}
		s2.Close()
	}
}

// TestStateMergeSkippedAfterRemoteApply: if a remote batch arrives between
// a state reconciliation's snapshot and its application, the peer's context
// is not merged (a key no delta names may differ); replicas still converge.
func TestStateMergeSkippedAfterRemoteApply(t *testing.T) {
	ctx := context.Background()
	open := func(r crdt.ReplicaID) *Namespace {
		s, err := OpenMemory(ctx, Options{Replica: r})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return mustNS(t, s, "x")
	}
	w, srv, cli := open(3), open(4), open(5)
	put(t, w, "k", "v")
	if _, err := w.Apply(ctx, crdt.Op{Kind: crdt.OpDelete, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	b1, _, _ := w.ReadLog(ctx, 3, 1)
	b2, _, _ := w.ReadLog(ctx, 3, 2)
	for _, b := range []Batch{b1, b2} {
		if _, err := srv.ApplyBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	epoch := cli.RemoteApplies() // the client's snapshot: k absent, no key differs
	var seen, cctx crdt.Context
	srv.View(func(st *crdt.Namespace, sn *crdt.Context) { seen, cctx = sn.Clone(), st.Context() })
	if _, err := cli.ApplyBatch(ctx, b1); err != nil { // gossip delivers B1 meanwhile
		t.Fatal(err)
	}
	if err := cli.ApplyState(ctx, nil, seen, cctx, epoch); err != nil {
		t.Fatal(err)
	}
	if applied, err := cli.ApplyBatch(ctx, b2); err != nil || !applied {
		t.Fatalf("B2 after the state session: applied=%v err=%v (it was wrongly marked seen)", applied, err)
	}
	dc, _ := cli.Digest()
	dsrv, _ := srv.Digest()
	if dc != dsrv {
		t.Fatal("client and server differ")
	}
}

// TestStateReconciliationSurvivesReopen: the keys a state reconciliation
// brings are written with the context and seen batches it merges, so a
// reopened store holds them (found by review: each delta's key writes
// replaced the previous ones', and the context-only delta applied last
// left none).
func TestStateReconciliationSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	w := memoryNS(t, Options{Replica: 3}, "x")
	for i := 0; i < 20; i++ {
		put(t, w, fmt.Sprint("k", i), fmt.Sprint("v", i))
	}
	if _, err := w.Apply(ctx, crdt.Op{Kind: crdt.OpCounterAdd, Key: "c", N: 5}); err != nil {
		t.Fatal(err)
	}
	// What a state session sends: one delta per differing key, then the
	// server's seen batches and context.
	var deltas []crdt.Delta
	var seen, cctx crdt.Context
	w.View(func(st *crdt.Namespace, sn *crdt.Context) {
		for _, k := range st.Keys("") {
			deltas = append(deltas, st.KeyDelta(k, nil))
		}
		seen, cctx = sn.Clone(), st.Context()
	})
	for _, withContext := range []bool{true, false} {
		t.Run(fmt.Sprintf("context merged %v", withContext), func(t *testing.T) {
			d := dssync.MutexWrap(ds.NewMapDatastore())
			s, err := Open(ctx, d, Options{Replica: 4, CompactEvery: -1})
			if err != nil {
				t.Fatal(err)
			}
			n := mustNS(t, s, "x")
			epoch := n.RemoteApplies()
			if !withContext {
				epoch++ // as if a batch arrived during the session
			}
			if err := n.ApplyState(ctx, deltas, seen, cctx, epoch); err != nil {
				t.Fatal(err)
			}
			before, keys := n.Digest()
			n = reopenNS(t, s, d, Options{Replica: 4, CompactEvery: -1}, "x")
			after, keysAfter := n.Digest()
			if keysAfter != keys || after != before || keys != len(deltas) {
				t.Fatalf("reopened: %d keys, digest equal %v; before: %d keys (%d sent)", keysAfter, after == before, keys, len(deltas))
			}
			if withContext {
				if want, _ := w.Digest(); after != want {
					t.Fatal("reopened replica differs from the source")
				}
			}
		})
	}
}

// failingBatches is a datastore whose next batch commit, once armed, waits
// for release and then fails; later commits succeed.
type failingBatches struct {
	ds.Batching
	armed   chan struct{} // closed: the next commit fails
	entered chan struct{} // closed by the failing commit as it starts
	release chan struct{} // closed by the test: the failing commit returns
	fired   atomic.Bool   // only one commit fails
}

func (f *failingBatches) Batch(ctx context.Context) (ds.Batch, error) {
	b, err := f.Batching.Batch(ctx)
	return &failingBatch{Batch: b, f: f}, err
}

type failingBatch struct {
	ds.Batch
	f *failingBatches
}

func (b *failingBatch) Commit(ctx context.Context) error {
	select {
	case <-b.f.armed:
		if b.f.fired.CompareAndSwap(false, true) {
			close(b.f.entered)
			<-b.f.release
			return fmt.Errorf("disk on fire")
		}
	default:
	}
	return b.Batch.Commit(ctx)
}

// TestNothingWrittenAfterAFailedCommit: once a commit fails the store
// writes nothing more, not even the operations queued behind it when Close
// begins (found by review: closing let them through, and their records
// described the failed batch's effects as if it had been written).
func TestNothingWrittenAfterAFailedCommit(t *testing.T) {
	ctx := context.Background()
	under := dssync.MutexWrap(ds.NewMapDatastore())
	f := &failingBatches{Batching: under, armed: make(chan struct{}), entered: make(chan struct{}), release: make(chan struct{})}
	s, err := Open(ctx, f, Options{Replica: 7, CompactEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	n := mustNS(t, s, "x")
	put(t, n, "before", "1")
	close(f.armed)
	failed := make(chan error, 1)
	go func() {
		_, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "a", Value: []byte("1")})
		failed <- err
	}()
	<-f.entered
	// Queued behind the failing commit; their own outcome arrives later.
	var queued []chan error
	for _, k := range []string{"b", "c"} {
		ch := make(chan error, 1)
		queued = append(queued, ch)
		go func() {
			_, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: k, Value: []byte("1")})
			ch <- err
		}()
	}
	waitFor(t, "two writes queued", func() bool { s.qMu.Lock(); defer s.qMu.Unlock(); return len(s.queue) == 2 })
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	<-s.closing
	close(f.release)
	if err := <-failed; !errors.Is(err, ErrFailed) {
		t.Fatalf("the failed commit's write: %v, want ErrFailed", err)
	}
	for _, ch := range queued {
		if err := <-ch; !errors.Is(err, ErrFailed) {
			t.Fatalf("a write queued behind the failed commit: %v, want ErrFailed", err)
		}
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, under, Options{Replica: 7, CompactEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n = mustNS(t, s, "x")
	for _, k := range []string{"a", "b", "c"} {
		if _, ok := n.Get(k); ok {
			t.Errorf("%q was written after the failed commit", k)
		}
	}
	if _, ok := n.Get("before"); !ok {
		t.Error("the write before the failure is gone")
	}
}

// waitFor polls cond until it holds, failing after 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 20 s for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPositionsNeverReused: after an unclean shutdown a namespace's
// positions and this replica's batch numbers start above every one the
// earlier incarnations can have handed out (some may have been announced
// and then lost in a crash), also after the index was trimmed away
// entirely; replay passes over the skipped range. After a clean Close they
// continue where they stopped.
func TestPositionsNeverReused(t *testing.T) {
	ctx := context.Background()
	d := dssync.MutexWrap(ds.NewMapDatastore())
	now := time.Unix(1_700_000_000, 0)
	opts := Options{Replica: 7, CompactEvery: -1, Now: func() time.Time { return now }}
	reopen := func(s *Store, crash bool) (*Store, *Namespace) {
		t.Helper()
		if s != nil {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if crash { // as if the process had died: no clean mark
				if err := d.Delete(ctx, ds.RawKey(keyClean)); err != nil {
					t.Fatal(err)
				}
			}
		}
		s, err := Open(ctx, d, opts)
		if err != nil {
			t.Fatal(err)
		}
		return s, mustNS(t, s, "x")
	}
	s, n := reopen(nil, false)
	var positions []uint64
	write := func(k string) {
		t.Helper()
		put(t, n, k, "v")
		positions = append(positions, n.Position())
	}
	write("a")
	write("b")
	seen := n.Seen()
	seqBefore := seen.Max(7)
	s, n = reopen(s, false)
	write("c")
	if got, want := positions[2], positions[1]+2; got != want { // +1 for the dot-skip batch at open
		t.Fatalf("after a clean close: position %d, want %d", got, want)
	}
	s, n = reopen(s, true)
	if p := n.Position(); p < positions[2]+positionSkip {
		t.Fatalf("after a crash, positions restart at %d, not above %d + %d", p, positions[2], positionSkip)
	}
	seen = n.Seen()
	if seq := seen.Max(7); seq < seqBefore+positionSkip {
		t.Fatalf("after a crash, batch numbers restart at %d, not above %d + %d", seq, seqBefore, positionSkip)
	}
	write("d")
	var keys []string
	err := n.Replay(ctx, positions[0], n.Position(), func(c Commit) error {
		for i := 0; i < c.Delta.Len(); i++ {
			keys = append(keys, c.Delta.Key(i))
		}
		return nil
	})
	if err != nil || fmt.Sprint(keys) != "[b c d]" {
		t.Fatalf("replay from %d across the restarts: %v %v, want [b c d]", positions[0], keys, err)
	}
	// Everything expires and is trimmed: the index is empty, yet the next
	// incarnation after a crash still starts above every position used.
	now = now.Add(48 * time.Hour)
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	last := n.Position()
	if err := n.Replay(ctx, positions[0], last, func(Commit) error { return nil }); !errors.Is(err, ErrCompacted) {
		t.Fatalf("replay of trimmed positions: %v, want ErrCompacted", err)
	}
	s, n = reopen(s, false)
	if p := n.Position(); p < last {
		t.Fatalf("after the index was trimmed away, a clean reopen starts at %d, below %d", p, last)
	}
	write("e")
	last = n.Position()
	now = now.Add(48 * time.Hour)
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	s, n = reopen(s, true)
	defer s.Close()
	if p := n.Position(); p <= last {
		t.Fatalf("after the index was trimmed away, reopened at %d, not above %d", p, last)
	}
}

// TestConcurrentCompactionsCountOnce: Compact may run beside the background
// compaction; the log's size stays the sum of what it holds (found by
// review: two compactions could remove the same entry and subtract its
// size twice, so trimming by size stopped too early).
func TestConcurrentCompactionsCountOnce(t *testing.T) {
	ctx := context.Background()
	d := dssync.MutexWrap(ds.NewMapDatastore())
	now := time.Unix(1_700_000_000, 0)
	s, err := Open(ctx, d, Options{Replica: 7, CompactEvery: -1, Retention: Retention{MaxBytes: 1, MaxAge: time.Hour}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := mustNS(t, s, "x")
	for i := range 200 {
		put(t, n, fmt.Sprint("k", i), "v")
	}
	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- s.Compact(ctx) }()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var held int64
	if err := scan(ctx, s, n.layout.logPrefix(), false, func(_ string, v []byte) error { held += int64(len(v)); return nil }); err != nil {
		t.Fatal(err)
	}
	if got := n.LogBytes(); got != held {
		t.Fatalf("log size %d, but the log holds %d bytes", got, held)
	}
}

// TestUseAfterCloseIsAnError: reads that go to the datastore after Close
// return ErrClosed (or fall back to memory) instead of reaching a closed
// Pebble, which panics (found by review: Keys with a limit and a watch
// replay during shutdown crashed the process).
func TestUseAfterCloseIsAnError(t *testing.T) {
	ctx := context.Background()
	s := openPebble(t, t.TempDir(), Options{CompactEvery: -1})
	n := mustNS(t, s, "x")
	put(t, n, "a", "1")
	put(t, n, "b", "2")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if keys := n.Keys("", "", 10); fmt.Sprint(keys) != "[a b]" {
		t.Fatalf("Keys after Close: %v", keys)
	}
	if _, _, err := n.ReadLog(ctx, 7, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReadLog after Close: %v", err)
	}
	if err := n.Replay(ctx, 0, 2, func(Commit) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Replay after Close: %v", err)
	}
	if _, _, err := s.GetMeta(ctx, "m"); !errors.Is(err, ErrClosed) {
		t.Fatalf("GetMeta after Close: %v", err)
	}
	if err := s.Compact(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Compact after Close: %v", err)
	}
	if _, err := s.Namespace(ctx, "new"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Namespace after Close: %v", err)
	}
}

// memoryNS opens an in-memory store (closed when the test ends) and
// returns its namespace ns.
func memoryNS(t *testing.T, opts Options, ns string) *Namespace {
	t.Helper()
	s, err := OpenMemory(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return mustNS(t, s, ns)
}

// reopenNS closes s, opens a store on its datastore d again (closed when
// the test ends) and returns its namespace ns.
func reopenNS(t *testing.T, s *Store, d ds.Batching, opts Options, ns string) *Namespace {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), d, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return mustNS(t, s, ns)
}

// copyDatastore returns a copy of everything in d: a disk as a crash left it.
func copyDatastore(t *testing.T, d ds.Datastore) ds.Batching {
	t.Helper()
	ctx := context.Background()
	out := dssync.MutexWrap(ds.NewMapDatastore())
	res, err := d.Query(ctx, query.Query{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	for e := range res.Next() {
		if e.Error != nil {
			t.Fatal(e.Error)
		}
		if err := out.Put(ctx, ds.NewKey(e.Key), e.Value); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// commitLog records the commits a store reports (Options.OnCommit).
type commitLog struct {
	mu  sync.Mutex
	all []Commit
}

func (l *commitLog) record(c Commit) {
	l.mu.Lock()
	l.all = append(l.all, c)
	l.mu.Unlock()
}

func (l *commitLog) last() Commit {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all[len(l.all)-1]
}

func (l *commitLog) snapshot() []Commit {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.all)
}

// openLoggedOrigin opens replica 1 on a fresh in-memory disk, recording
// its commits in log; the test copies the disk to play a crash.
func openLoggedOrigin(t *testing.T, log *commitLog) (*Store, ds.Datastore) {
	t.Helper()
	disk := dssync.MutexWrap(ds.NewMapDatastore())
	origin, err := Open(context.Background(), disk, Options{Replica: 1, OnCommit: log.record})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { origin.Close() })
	return origin, disk
}

// restartLoggedOrigin reopens replica 1 on its crashed disk, recording
// its commits in log, and returns its namespace "x".
func restartLoggedOrigin(t *testing.T, crashed ds.Batching, log *commitLog) *Namespace {
	t.Helper()
	restarted, err := Open(context.Background(), crashed, Options{Replica: 1, OnCommit: log.record})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { restarted.Close() })
	return mustNS(t, restarted, "x")
}

// A batch that reached a peer and was then lost in its origin's crash: the
// origin's dot-skip announcement removes its value on the peer too, durably,
// and the batch relayed back to the origin changes nothing there, so the two
// agree.
func TestSkipAnnouncementRemovesALostBatch(t *testing.T) {
	ctx := context.Background()
	var log commitLog
	last := log.last
	origin, disk := openLoggedOrigin(t, &log)
	peerDisk := dssync.MutexWrap(ds.NewMapDatastore())
	var peerCommits []Commit
	peer, err := Open(ctx, peerDisk, Options{Replica: 2, CompactEvery: -1, OnCommit: func(c Commit) { peerCommits = append(peerCommits, c) }})
	if err != nil {
		t.Fatal(err)
	}
	o, p := mustNS(t, origin, "x"), mustNS(t, peer, "x")
	deliver := func(n *Namespace, c Commit) {
		t.Helper()
		if _, err := n.ApplyBatch(ctx, Batch{Origin: c.Origin, Seq: c.Seq, Delta: c.Delta, Encoded: c.Encoded}); err != nil {
			t.Fatal(err)
		}
	}
	put(t, o, "k", "y")
	put(t, o, "keep", "1")
	for _, c := range log.snapshot() {
		deliver(p, c)
	}
	crashed := copyDatastore(t, disk) // the origin's disk when it dies
	put(t, o, "k", "x")               // published, never durable
	lost := last()
	deliver(p, lost)
	if v, _ := getString(p, "k"); v != "x" {
		t.Fatalf("peer k = %q before the crash", v)
	}

	r := restartLoggedOrigin(t, crashed, &log)
	skip := last()
	if skip.Delta.Len() != 0 || skip.Origin != 1 {
		t.Fatalf("restart committed %d keys from %v, want the skip announcement", skip.Delta.Len(), skip.Origin)
	}
	peerCommits = nil
	deliver(p, skip)
	if _, ok := p.Get("k"); ok {
		t.Fatal("the peer kept the lost batch's value after the skip announcement")
	}
	if len(peerCommits) != 1 || peerCommits[0].Delta.Len() != 1 || peerCommits[0].Delta.Key(0) != "k" {
		t.Fatalf("the peer's commit of the announcement does not name k: %+v", peerCommits)
	}
	// The log holds the announcement as it came (naming nothing), so a
	// replay across its position cannot show the removal: it says so.
	at := peerCommits[0].Position
	if err := p.Replay(ctx, at-1, at, func(Commit) error { return nil }); !errors.Is(err, ErrCompacted) {
		t.Fatalf("replay across the removal: %v, want ErrCompacted", err)
	}
	deliver(r, lost) // sync relays it from the peer's log
	want, _ := r.Digest()
	if got, _ := p.Digest(); got != want || fullDigest(p) != want {
		t.Fatal("peer and restarted origin differ")
	}
	if v, _ := getString(p, "keep"); v != "1" {
		t.Fatalf("keep = %q", v)
	}
	// The removal is durable.
	if got, _ := reopenNS(t, peer, peerDisk, Options{Replica: 2, CompactEvery: -1}, "x").Digest(); got != want {
		t.Fatal("the reopened peer differs from the origin")
	}
}

// TestLostFirstWriteIsNotReused: a namespace whose only local write was
// published and then lost in a crash does not hand out that write's dot
// and batch number again after the restart (found by review: with no dot
// of its own on disk it skipped nothing, so its next write reused dot 1
// and batch 1, every peer that held the lost one dropped it as seen, and
// the replicas stayed different for good).
func TestLostFirstWriteIsNotReused(t *testing.T) {
	ctx := context.Background()
	var log commitLog
	last := log.last
	origin, disk := openLoggedOrigin(t, &log)
	peer, err := OpenMemory(ctx, Options{Replica: 2, CompactEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	o, p := mustNS(t, origin, "x"), mustNS(t, peer, "x")
	deliver := func(c Commit) {
		t.Helper()
		if _, err := p.ApplyBatch(ctx, Batch{Origin: c.Origin, Seq: c.Seq, Delta: c.Delta, Encoded: c.Encoded}); err != nil {
			t.Fatal(err)
		}
	}
	crashed := copyDatastore(t, disk) // registered, nothing written yet
	put(t, o, "k", "lost")            // published, never durable
	lost := last()
	deliver(lost)

	r := restartLoggedOrigin(t, crashed, &log)
	skip := last()
	if skip.Delta.Len() != 0 || skip.Seq == lost.Seq {
		t.Fatalf("restart committed %d keys as batch %d (the lost one was %d), want a skip announcement under a new number", skip.Delta.Len(), skip.Seq, lost.Seq)
	}
	deliver(skip)
	if _, ok := p.Get("k"); ok {
		t.Fatal("the peer kept the lost write after the skip announcement")
	}
	put(t, r, "k", "new")
	next := last()
	if next.Seq == lost.Seq || next.Seq == skip.Seq {
		t.Fatalf("the new write took batch number %d again", next.Seq)
	}
	deliver(next)
	if v, _ := getString(p, "k"); v != "new" {
		t.Fatalf("peer k = %q, want the write after the restart", v)
	}
	want, _ := r.Digest()
	if got, _ := p.Digest(); got != want {
		t.Fatal("peer and restarted origin differ")
	}
}

// A delete of a key, field or element that is not there changes nothing,
// so nothing is logged, replicated or reported (it was a batch, a gossip
// message and a watch event each).
func TestDeleteOfNothingCommitsNothing(t *testing.T) {
	ctx := context.Background()
	var commits atomic.Int64
	s, err := OpenMemory(ctx, Options{Replica: 1, OnCommit: func(Commit) { commits.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := mustNS(t, s, "x")
	put(t, n, "k", "v")
	if _, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "m", Path: []string{"f"}, Value: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	before, pos := commits.Load(), n.Position()
	for _, op := range []crdt.Op{
		{Kind: crdt.OpDelete, Key: "never"},
		{Kind: crdt.OpDelete, Key: "m", Path: []string{"never"}},
		{Kind: crdt.OpSetUpdate, Key: "never", Remove: []string{"e"}},
	} {
		d, err := n.Apply(ctx, op)
		if err != nil || !d.ChangesNothing() {
			t.Fatalf("%+v: %v, changes nothing %v", op, err, d.ChangesNothing())
		}
	}
	if err := n.ApplyAll(ctx, []crdt.Op{{Kind: crdt.OpDelete, Key: "a"}, {Kind: crdt.OpDelete, Key: "b"}}); err != nil {
		t.Fatal(err)
	}
	if got := commits.Load(); got != before || n.Position() != pos {
		t.Fatalf("%d commits and position %d→%d for deletes of nothing", got-before, pos, n.Position())
	}
	// A delete of something still commits.
	if err := n.ApplyAll(ctx, []crdt.Op{{Kind: crdt.OpDelete, Key: "k"}, {Kind: crdt.OpDelete, Key: "b"}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Get("k"); ok || commits.Load() != before+1 {
		t.Fatalf("delete of k: still there %v, %d commits", ok, commits.Load()-before)
	}
}

// A change tracker names the keys changed since it was made — local
// writes and remote batches, not the deltas applied with it — and a
// tracked merge happens only when nothing changed since the last Take
// (found by review: the epoch a reconciliation checked missed local
// writes, and under steady remote writes it never let the merge happen).
func TestChangeTrackerGuardsTheMerge(t *testing.T) {
	ctx := context.Background()
	w := memoryNS(t, Options{Replica: 3}, "x")
	put(t, w, "theirs", "1")
	var keyDelta crdt.Delta
	var seen, cctx crdt.Context
	w.View(func(st *crdt.Namespace, sn *crdt.Context) {
		keyDelta = st.KeyDelta("theirs", nil)
		seen, cctx = sn.Clone(), st.Context()
	})

	s, err := OpenMemory(ctx, Options{Replica: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := mustNS(t, s, "x")
	tr := n.TrackChanges()
	defer tr.Stop()
	put(t, n, "local", "1")
	if keys, over := tr.Take(); over || len(keys) != 1 || keys[0] != "local" {
		t.Fatalf("after a local write: %v %v", keys, over)
	}
	// Its own deltas are not changes; another write is.
	if merged, err := n.ApplyStateTracked(ctx, []crdt.Delta{keyDelta}, crdt.Context{}, crdt.Context{}, tr, false); err != nil || merged {
		t.Fatalf("page: merged %v, %v", merged, err)
	}
	put(t, n, "again", "1")
	if merged, err := n.ApplyStateTracked(ctx, nil, seen, cctx, tr, true); err != nil || merged {
		t.Fatalf("merged over a change not yet taken: %v, %v", merged, err)
	}
	if keys, _ := tr.Take(); len(keys) != 1 || keys[0] != "again" {
		t.Fatalf("changes: %v", keys)
	}
	if merged, err := n.ApplyStateTracked(ctx, nil, seen, cctx, tr, true); err != nil || !merged {
		t.Fatalf("clean merge: %v, %v", merged, err)
	}
	if got := n.Seen(); !got.Covers(seen) {
		t.Fatal("the merge did not take the peer's seen batches")
	}
}

// TestMergedStatePastTheLimitsReopens: remote batches, each within the
// limits, join into a key state past them (a set with more elements than
// MaxElements); the store persists it and must open it again (found by
// review: the next open refused the store's own data as corrupt, so the
// node could not restart).
func TestMergedStatePastTheLimitsReopens(t *testing.T) {
	ctx := context.Background()
	lim := crdt.Limits{MaxElements: 10}
	disk := dssync.MutexWrap(ds.NewMapDatastore())
	opts := Options{Replica: 1, Limits: lim, CompactEvery: -1}
	s, err := Open(ctx, disk, opts)
	if err != nil {
		t.Fatal(err)
	}
	n := mustNS(t, s, "x")
	for r := crdt.ReplicaID(2); r <= 3; r++ {
		src := crdt.NewNamespace(lim)
		var add []string
		for i := range 8 {
			add = append(add, fmt.Sprintf("r%d-e%d", r, i))
		}
		d, err := src.Prepare(crdt.Op{Kind: crdt.OpSetUpdate, Key: "set", Add: add}, r, crdt.Timestamp{Wall: 1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.ApplyBatch(ctx, Batch{Origin: r, Seq: 1, Delta: d, Encoded: d.Encode(nil)}); err != nil {
			t.Fatal(err)
		}
	}
	v, _ := n.Get("set")
	if got := v.SetLen(); got != 16 {
		t.Fatalf("merged set holds %d elements, want 16", got)
	}
	want, _ := n.Digest()
	if got, _ := reopenNS(t, s, disk, opts, "x").Digest(); got != want {
		t.Fatal("the reopened namespace differs")
	}
}

// failingSync is a datastore whose next Sync, once armed, waits for
// release and then fails; it counts batch commits.
type failingSync struct {
	ds.Batching
	armed, entered, release chan struct{}
	fired                   atomic.Bool
	commits                 atomic.Int64
}

func (f *failingSync) Sync(ctx context.Context, k ds.Key) error {
	select {
	case <-f.armed:
		if f.fired.CompareAndSwap(false, true) {
			close(f.entered)
			<-f.release
			return fmt.Errorf("disk on fire")
		}
	default:
	}
	return f.Batching.Sync(ctx, k)
}

func (f *failingSync) Batch(ctx context.Context) (ds.Batch, error) {
	b, err := f.Batching.Batch(ctx)
	return &countingBatch{Batch: b, n: &f.commits}, err
}

type countingBatch struct {
	ds.Batch
	n *atomic.Int64
}

func (b *countingBatch) Commit(ctx context.Context) error {
	err := b.Batch.Commit(ctx)
	b.n.Add(1)
	return err
}

// TestNothingAcknowledgedAfterAFailedSync: a group written while the
// previous group's fsync fails is not acknowledged or reported, though a
// later sync succeeds (found by review: it was, so a write whose bytes
// follow a failed fsync in the log was acknowledged and published).
func TestNothingAcknowledgedAfterAFailedSync(t *testing.T) {
	ctx := context.Background()
	f := &failingSync{Batching: dssync.MutexWrap(ds.NewMapDatastore()), armed: make(chan struct{}), entered: make(chan struct{}), release: make(chan struct{})}
	var reported atomic.Int64
	s, err := Open(ctx, f, Options{Replica: 7, CompactEvery: -1, OnCommit: func(Commit) { reported.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := mustNS(t, s, "x")
	put(t, n, "before", "1")
	close(f.armed)
	first := make(chan error, 1)
	go func() {
		_, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "a", Value: []byte("1")})
		first <- err
	}()
	<-f.entered // the first group's fsync is under way
	written := f.commits.Load()
	second := make(chan error, 1)
	go func() {
		_, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "b", Value: []byte("1")})
		second <- err
	}()
	waitFor(t, "the second group written", func() bool { return f.commits.Load() > written })
	before := reported.Load()
	close(f.release)
	if err := <-first; !errors.Is(err, ErrFailed) {
		t.Fatalf("the write whose fsync failed: %v, want ErrFailed", err)
	}
	if err := <-second; !errors.Is(err, ErrFailed) {
		t.Fatalf("the write behind the failed fsync: %v, want ErrFailed", err)
	}
	if got := reported.Load(); got != before {
		t.Fatalf("%d commits reported after the failure", got-before)
	}
}

func TestGrowHintIsCapped(t *testing.T) {
	for _, c := range []struct {
		saved uint64
		want  int
	}{{0, 0}, {1000, 1000}, {1 << 21, 1 << 21}, {1 << 40, 1 << 21}, {math.MaxUint64, 1 << 21}} {
		if got := growHint(c.saved); got != c.want {
			t.Errorf("growHint(%d) = %d, want %d", c.saved, got, c.want)
		}
	}
}

// TestUnsyncedLocalCommitsAreReportedSyncedSoon: a NoSync local commit is
// reported unsynced (so replication holds it back) and OnSynced covers it
// promptly, without a durable write or the flush interval; a durable
// commit is reported synced.
func TestUnsyncedLocalCommitsAreReportedSyncedSoon(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var commits []Commit
	var synced atomic.Uint64
	s, err := Open(ctx, dssync.MutexWrap(ds.NewMapDatastore()), Options{
		Replica: 1, CompactEvery: -1, FlushEvery: time.Hour,
		OnCommit: func(c Commit) { mu.Lock(); commits = append(commits, c); mu.Unlock() },
		OnSynced: func(upTo uint64) {
			for {
				cur := synced.Load()
				if upTo <= cur || synced.CompareAndSwap(cur, upTo) {
					return
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := mustNS(t, s, "x")
	if _, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "fast", Value: []byte("1")}, WithDurability(false)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	fast := commits[len(commits)-1]
	mu.Unlock()
	if fast.Synced || fast.Report == 0 {
		t.Fatalf("NoSync commit reported synced %v, report %d", fast.Synced, fast.Report)
	}
	waitFor(t, "the NoSync commit synced", func() bool { return synced.Load() >= fast.Report })
	put(t, n, "slow", "1")
	mu.Lock()
	slow := commits[len(commits)-1]
	mu.Unlock()
	if !slow.Synced || slow.Report <= fast.Report {
		t.Fatalf("durable commit reported synced %v, report %d after %d", slow.Synced, slow.Report, fast.Report)
	}
}

// TestCorruptLogEntryDoesNotStopRetention: a log entry that no longer
// parses is removed by compaction, which goes on, in its namespace and in
// the others (found by review: compaction stopped at it with an error
// naming no entry, every minute, and every log grew without bound).
func TestCorruptLogEntryDoesNotStopRetention(t *testing.T) {
	ctx := context.Background()
	disk := dssync.MutexWrap(ds.NewMapDatastore())
	s, err := Open(ctx, disk, Options{Replica: 1, CompactEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := mustNS(t, s, "x")
	for _, k := range []string{"a", "b"} {
		put(t, x, k, "1")
	}
	kept := x.Kept()
	first := kept.Min(1)
	if err := disk.Put(ctx, x.layout.logKey(1, first), []byte{0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(ctx); err != nil {
		t.Fatalf("Compact: %v", err)
	}
	if _, ok, err := x.ReadLog(ctx, 1, first); ok || err != nil {
		t.Fatalf("the corrupt entry: ok %v, err %v; want removed", ok, err)
	}
	if gone := x.Gone(); !gone.Contains(crdt.Dot{Replica: 1, Counter: first}) {
		t.Fatal("the removed entry is not counted as gone")
	}
	if _, ok, err := x.ReadLog(ctx, 1, first+1); !ok || err != nil {
		t.Fatalf("the next entry: ok %v, err %v; want kept", ok, err)
	}
}

// TestResumeAfterALostPositionFails: a watcher that saw the position of a
// NoSync write which a crash then lost cannot resume after it: the replay
// answers ErrCompacted rather than passing over the write's undoing in
// silence (found by review). A cursor at a surviving position resumes.
func TestResumeAfterALostPositionFails(t *testing.T) {
	ctx := context.Background()
	disk := dssync.MutexWrap(ds.NewMapDatastore())
	var mu sync.Mutex
	var positions []uint64
	s, err := Open(ctx, disk, Options{Replica: 1, CompactEvery: -1, OnCommit: func(c Commit) {
		mu.Lock()
		positions = append(positions, c.Position)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := mustNS(t, s, "x")
	put(t, x, "a", "1")
	crashed := copyDatastore(t, disk)
	put(t, x, "b", "lost")
	mu.Lock()
	kept, lost := positions[0], positions[1]
	mu.Unlock()

	restarted, err := Open(ctx, crashed, Options{Replica: 1, CompactEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer restarted.Close()
	r := mustNS(t, restarted, "x")
	put(t, r, "c", "1")
	last := r.pos.Load()
	nop := func(Commit) error { return nil }
	if err := r.Replay(ctx, lost, last, nop); !errors.Is(err, ErrCompacted) {
		t.Fatalf("resume after the lost position: %v, want ErrCompacted", err)
	}
	var got []string
	if err := r.Replay(ctx, kept, last, func(c Commit) error {
		for i := range c.Delta.Len() {
			got = append(got, c.Delta.Key(i))
		}
		return nil
	}); err != nil {
		t.Fatalf("resume after the surviving position: %v", err)
	}
	if !slices.Equal(got, []string{"c"}) {
		t.Fatalf("replayed keys %v, want [c] (the skip announcement names none)", got)
	}
}
