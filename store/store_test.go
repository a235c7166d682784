package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/store/storetest"
)

const testReplica crdt.ReplicaID = 0xabc

func openPebble(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	if opts.Replica == 0 {
		opts.Replica = testReplica
	}
	s, err := OpenPebble(context.Background(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustNS(t *testing.T, s *Store, name string) *Namespace {
	t.Helper()
	n, err := s.Namespace(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func put(t *testing.T, n *Namespace, key, val string) {
	t.Helper()
	if _, err := n.Apply(context.Background(), crdt.Op{Kind: crdt.OpPut, Key: key, Value: []byte(val)}); err != nil {
		t.Fatal(err)
	}
}

func getString(n *Namespace, key string) (string, bool) {
	v, ok := n.Get(key)
	if !ok {
		return "", false
	}
	b, _, ok := v.Register()
	return string(b), ok
}

// fullDigest recomputes the digest by scanning, to check the incremental one.
func fullDigest(n *Namespace) crdt.Digest {
	var d crdt.Digest
	n.View(func(st *crdt.Namespace, _ *crdt.Context) { d = st.Digest() })
	return d
}

func TestReopenKeepsEverything(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openPebble(t, dir, Options{})
	n := mustNS(t, s, "inv/entory") // slashes are fine in names
	for i := 0; i < 100; i++ {
		put(t, n, fmt.Sprintf("k/%03d", i), fmt.Sprint("v", i))
	}
	for _, op := range []crdt.Op{
		{Kind: crdt.OpCounterAdd, Key: "hits", N: 41},
		{Kind: crdt.OpCounterAdd, Key: "hits", N: 1},
		{Kind: crdt.OpSetUpdate, Key: "tags", Add: []string{"a", "b", "c"}},
		{Kind: crdt.OpSetUpdate, Key: "tags", Remove: []string{"b"}},
		{Kind: crdt.OpPut, Key: "user", Path: []string{"name"}, Value: []byte("ann")},
		{Kind: crdt.OpDelete, Key: "k/000"},
	} {
		if _, err := n.Apply(ctx, op); err != nil {
			t.Fatal(err)
		}
	}
	digest, keys := n.Digest()
	if digest != fullDigest(n) {
		t.Fatal("incremental digest differs from a full scan")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openPebble(t, dir, Options{})
	defer s.Close()
	n = mustNS(t, s, "inv/entory")
	if got, ok := getString(n, "k/042"); !ok || got != "v42" {
		t.Fatalf("k/042 = %q %v", got, ok)
	}
	if _, ok := n.Get("k/000"); ok {
		t.Fatal("deleted key came back")
	}
	v, _ := n.Get("hits")
	if v.Counter() != 42 {
		t.Fatalf("counter %d", v.Counter())
	}
	v, _ = n.Get("tags")
	if got := strings.Join(v.SetElements(), ","); got != "a,c" {
		t.Fatalf("set %q", got)
	}
	if _, k := n.Digest(); k != keys {
		t.Fatalf("%d keys after reopen, want %d", k, keys)
	}
	// Reopening skipped this replica's dots ahead: the context differs from
	// before only by the announced skip, and the digest is still exact.
	d2, _ := n.Digest()
	if d2 != fullDigest(n) {
		t.Fatal("digest after reopen differs from a full scan")
	}
	if got := n.Keys("k/", "k/097", 0); strings.Join(got, ",") != "k/098,k/099" {
		t.Fatalf("keys after k/097: %v", got)
	}
	if got := n.Keys("k/", "", 3); strings.Join(got, ",") != "k/001,k/002,k/003" {
		t.Fatalf("first keys: %v", got)
	}
}

func TestReopenSkipsDots(t *testing.T) {
	dir := t.TempDir()
	s := openPebble(t, dir, Options{})
	n := mustNS(t, s, "ns")
	put(t, n, "a", "1")
	s.Close()
	s = openPebble(t, dir, Options{})
	defer s.Close()
	n = mustNS(t, s, "ns")
	d, err := n.Apply(context.Background(), crdt.Op{Kind: crdt.OpPut, Key: "b", Value: []byte("2")})
	if err != nil {
		t.Fatal(err)
	}
	var dot crdt.Dot
	d.StoreDots(func(x crdt.Dot) { dot = x })
	if dot.Counter <= DotSkip {
		t.Fatalf("first write after reopen took dot %v, want > %d", dot, DotSkip)
	}
	if c := n.Seen(); c.Max(testReplica) != 3 {
		t.Fatalf("seen %d local batches, want 3 (write, skip, write)", c.Max(testReplica))
	}
}

func TestReplicationThroughCommitHook(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var batches []Commit
	a, err := OpenMemory(ctx, Options{Replica: 1, OnCommit: func(c Commit) {
		mu.Lock()
		batches = append(batches, c)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := OpenMemory(ctx, Options{Replica: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	na, nb := mustNS(t, a, "x"), mustNS(t, b, "x")
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				_, _ = na.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: fmt.Sprintf("w%d-%d", w, i), Value: []byte("v")})
				_, _ = na.Apply(ctx, crdt.Op{Kind: crdt.OpCounterAdd, Key: "c", N: 1})
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	got := append([]Commit(nil), batches...)
	mu.Unlock()
	// Deliver in reverse, twice: duplicates are skipped.
	for round := 0; round < 2; round++ {
		for i := len(got) - 1; i >= 0; i-- {
			c := got[i]
			applied, err := nb.ApplyBatch(ctx, Batch{Origin: c.Origin, Seq: c.Seq, Delta: c.Delta, Encoded: c.Encoded})
			if err != nil {
				t.Fatal(err)
			}
			if applied != (round == 0) {
				t.Fatalf("round %d batch %d applied=%v", round, c.Seq, applied)
			}
		}
	}
	da, ka := na.Digest()
	db, kb := nb.Digest()
	if da != db || ka != kb || ka != 401 {
		t.Fatalf("replicas differ: %d vs %d keys", ka, kb)
	}
	v, _ := nb.Get("c")
	if v.Counter() != 400 {
		t.Fatalf("counter %d", v.Counter())
	}
	if len(got) >= 800 {
		t.Logf("no group commit happened: %d batches for 800 ops", len(got))
	}
	// The log of b holds a's batches and can serve them.
	bb, ok, err := nb.ReadLog(ctx, 1, got[0].Seq)
	if err != nil || !ok || string(bb.Encoded) != string(got[0].Encoded) {
		t.Fatalf("log read: ok=%v err=%v", ok, err)
	}
}

func TestOversizedValueRefusedBeforeWrite(t *testing.T) {
	ctx := context.Background()
	mem := ds.NewMapDatastore()
	s, err := Open(ctx, mem, Options{Replica: 1, Limits: crdt.Limits{MaxValueBytes: 10, MaxKeyBytes: 8}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := mustNS(t, s, "ns")
	put(t, n, "ok", "small")
	before, _ := n.Digest()
	countBefore := countRecords(t, mem)
	for _, op := range []crdt.Op{
		{Kind: crdt.OpPut, Key: "big", Value: make([]byte, 11)},
		{Kind: crdt.OpPut, Key: "much-too-long-key", Value: []byte("x")},
		{Kind: crdt.OpPut, Key: "", Value: []byte("x")},
		{Kind: crdt.OpPut, Key: "bad\xff", Value: []byte("x")},
		{Kind: crdt.OpCounterAdd, Key: "ok", N: 1}, // wrong type
	} {
		if _, err := n.Apply(ctx, op); err == nil {
			t.Fatalf("op %+v accepted", op)
		}
	}
	after, _ := n.Digest()
	if before != after || countRecords(t, mem) != countBefore {
		t.Fatal("a refused op changed state")
	}
	if _, err := s.Namespace(ctx, ""); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("empty namespace name: %v", err)
	}
}

// TestOversizedAuthRefused: a remote batch whose signer or auth the log
// could not read back is refused before anything is written.
func TestOversizedAuthRefused(t *testing.T) {
	ctx := context.Background()
	mem := ds.NewMapDatastore()
	s, err := Open(ctx, mem, Options{Replica: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := mustNS(t, s, "ns")
	d, err := crdt.NewNamespace(crdt.Limits{}).Prepare(crdt.Op{Kind: crdt.OpPut, Key: "k", Value: []byte("v")}, 2, crdt.Timestamp{Wall: 1})
	if err != nil {
		t.Fatal(err)
	}
	before := countRecords(t, mem)
	for _, b := range []Batch{
		{Origin: 2, Seq: 1, Delta: d, Signer: make([]byte, MaxBatchSignerBytes+1), Sig: []byte{1}},
		{Origin: 2, Seq: 1, Delta: d, Signer: []byte{1}, Sig: make([]byte, MaxBatchSigBytes+1)},
	} {
		if _, err := n.ApplyBatch(ctx, b); err == nil {
			t.Fatal("an oversized auth was accepted")
		}
	}
	if countRecords(t, mem) != before {
		t.Fatal("a refused batch changed the store")
	}
	ok := Batch{Origin: 2, Seq: 1, Delta: d, Signer: make([]byte, MaxBatchSignerBytes), Sig: make([]byte, MaxBatchSigBytes)}
	if applied, err := n.ApplyBatch(ctx, ok); err != nil || !applied {
		t.Fatalf("a batch at the bounds: %v %v", applied, err)
	}
	if err := n.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, found, err := n.ReadLog(ctx, 2, 1)
	if err != nil || !found || len(got.Sig) != MaxBatchSigBytes || len(got.Signer) != MaxBatchSignerBytes {
		t.Fatalf("read back: found %v, err %v", found, err)
	}
}

func countRecords(t *testing.T, d ds.Datastore) int {
	t.Helper()
	n := 0
	if err := scan(context.Background(), &Store{ds: d.(ds.Batching)}, "/", false, func(string, []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCorruptRecordIsNamed(t *testing.T) {
	ctx := context.Background()
	mem := ds.NewMapDatastore()
	s, err := Open(ctx, mem, Options{Replica: 1})
	if err != nil {
		t.Fatal(err)
	}
	n := mustNS(t, s, "orders")
	put(t, n, "order-17", "paid")
	s.Close()
	k := newLayout("orders").stateKey("order-17")
	good, _ := mem.Get(ctx, k)
	for name, bad := range map[string][]byte{
		"truncated": good[:len(good)-3],
		"garbage":   []byte("\xff\xff\xff"),
		"empty":     {},
	} {
		if err := mem.Put(ctx, k, bad); err != nil {
			t.Fatal(err)
		}
		_, err := Open(ctx, mem, Options{Replica: 1})
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `"orders"`) || !strings.Contains(err.Error(), `"order-17"`) {
			t.Fatalf("%s: error %v does not name namespace and key", name, err)
		}
	}
}

func TestSecondOpenIsInUse(t *testing.T) {
	dir := t.TempDir()
	s := openPebble(t, dir, Options{})
	defer s.Close()
	_, err := OpenPebble(context.Background(), dir, Options{Replica: 2})
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second open: %v", err)
	}
}

func TestLogRetention(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	s, err := OpenMemory(ctx, Options{Replica: 1, Now: clock, CompactEvery: -1,
		Retention: Retention{MaxBytes: 2_000, MaxAge: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := mustNS(t, s, "ns")
	for i := 0; i < 100; i++ {
		put(t, n, fmt.Sprint("k", i), strings.Repeat("x", 50))
	}
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if n.LogBytes() > 2_000 {
		t.Fatalf("log holds %d bytes after compaction", n.LogBytes())
	}
	kept, seen := n.Kept(), n.Seen()
	if kept.Min(1) <= 1 || seen.Min(1) != 1 || kept.Max(1) != seen.Max(1) {
		t.Fatalf("kept %d..%d, seen %d..%d", kept.Min(1), kept.Max(1), seen.Min(1), seen.Max(1))
	}
	if _, ok, _ := n.ReadLog(ctx, 1, 1); ok {
		t.Fatal("compacted entry still readable")
	}
	if n.Len() != 100 {
		t.Fatal("compaction touched key states")
	}
	// Age: two hours later everything goes.
	clockMu.Lock()
	now = now.Add(2 * time.Hour)
	clockMu.Unlock()
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if k := n.Kept(); k.Len() != 0 || n.LogBytes() != 0 {
		t.Fatalf("%d entries, %d bytes left after max age", k.Len(), n.LogBytes())
	}
}

func TestCloseIsIdempotentAndRefusesWrites(t *testing.T) {
	s, err := OpenMemory(context.Background(), Options{Replica: 1})
	if err != nil {
		t.Fatal(err)
	}
	n := mustNS(t, s, "ns")
	s.Close()
	s.Close()
	if _, err := n.Apply(context.Background(), crdt.Op{Kind: crdt.OpPut, Key: "k", Value: []byte("v")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

func TestReplayAfterCompaction(t *testing.T) {
	ctx := context.Background()
	s, err := OpenMemory(ctx, Options{Replica: 1, CompactEvery: -1, Retention: Retention{MaxBytes: 300, MaxAge: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := mustNS(t, s, "ns")
	for i := 0; i < 20; i++ {
		put(t, n, fmt.Sprint("k", i), strings.Repeat("x", 40))
	}
	var got []uint64
	if err := n.Replay(ctx, 10, n.Position(), func(c Commit) error { got = append(got, c.Position); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 10 || got[0] != 11 {
		t.Fatalf("replayed positions %v", got)
	}
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Replay(ctx, 0, n.Position(), func(Commit) error { return nil }); !errors.Is(err, ErrCompacted) {
		t.Fatalf("replay past compaction: %v", err)
	}
}

// TestLocalBatchesStayReplicable: many large concurrent writes are split
// into log batches small enough for one gossip message or sync frame.
func TestLocalBatchesStayReplicable(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	largest := 0
	s, err := OpenMemory(ctx, Options{Replica: 1, OnCommit: func(c Commit) {
		mu.Lock()
		largest = max(largest, len(c.Encoded))
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := mustNS(t, s, "big")
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: fmt.Sprint("k", i), Value: make([]byte, 900<<10)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if largest > 2*maxLocalBatchBytes {
		t.Fatalf("a local batch of %d bytes", largest)
	}
}

// TestKeysPageInOrder: paging through keys gives the same answer on Pebble
// (ordered scan of the state records) as in memory (sort), including keys
// with bytes that need escaping, prefixes, and deletions.
func TestKeysPageInOrder(t *testing.T) {
	ctx := context.Background()
	disk := openPebble(t, t.TempDir(), Options{})
	defer disk.Close()
	mem, err := OpenMemory(ctx, Options{Replica: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	keys := []string{"a", "a/b", "a/c", "ab", "b", "b\u00e9", "c", "z/1", "z/2", "z/3"}
	for _, s := range []*Store{disk, mem} {
		n := mustNS(t, s, "p")
		for _, k := range keys {
			put(t, n, k, "v")
		}
		if _, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpDelete, Key: "a/c"}); err != nil {
			t.Fatal(err)
		}
	}
	dn, mn := mustNS(t, disk, "p"), mustNS(t, mem, "p")
	for _, c := range []struct {
		prefix, after string
		limit         int
	}{{"", "", 3}, {"", "ab", 3}, {"a", "", 10}, {"a/", "a/b", 5}, {"z/", "", 2}, {"z/", "z/2", 2}, {"q", "", 5}, {"", "z/3", 5}} {
		d, m := dn.Keys(c.prefix, c.after, c.limit), mn.Keys(c.prefix, c.after, c.limit)
		if strings.Join(d, ",") != strings.Join(m, ",") {
			t.Fatalf("Keys(%q, %q, %d): pebble %q, memory %q", c.prefix, c.after, c.limit, d, m)
		}
	}
	if got := strings.Join(dn.Keys("", "", 4), ","); got != "a,a/b,ab,b" {
		t.Fatalf("first page %q", got)
	}
}

// countingQueries counts the queries run on a datastore.
type countingQueries struct {
	ds.Batching
	n atomic.Int64
}

func (c *countingQueries) Query(ctx context.Context, q query.Query) (query.Results, error) {
	c.n.Add(1)
	return c.Batching.Query(ctx, q)
}

// TestCompactionScansPositionsOnlyWhenDue: compaction scans the position
// index after it removed a batch, after a state reconciliation and once
// after a reopen, and not in a round that removes nothing (on a datastore without range scans each scan
// sorted the namespace's whole log).
func TestCompactionScansPositionsOnlyWhenDue(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	later := func(d time.Duration) { clockMu.Lock(); now = now.Add(d); clockMu.Unlock() }
	d := &countingQueries{Batching: dssync.MutexWrap(ds.NewMapDatastore())}
	opts := Options{Replica: 1, Now: clock, CompactEvery: -1, Retention: Retention{MaxBytes: 1 << 20, MaxAge: time.Hour}}
	s, err := Open(ctx, d, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	n := mustNS(t, s, "ns")
	for i := 0; i < 10; i++ {
		put(t, n, fmt.Sprint("k", i), "v")
	}
	compact := func() int64 {
		t.Helper()
		before := d.n.Load()
		if err := s.Compact(ctx); err != nil {
			t.Fatal(err)
		}
		return d.n.Load() - before
	}
	if q := compact(); q != 0 {
		t.Fatalf("a compaction that removed nothing ran %d queries", q)
	}
	later(2 * time.Hour)
	if q := compact(); q == 0 {
		t.Fatal("a compaction that removed batches did not scan the position index")
	}
	if err := n.Replay(ctx, 0, n.Position(), func(Commit) error { return nil }); !errors.Is(err, ErrCompacted) {
		t.Fatalf("replay of positions whose batches were removed: %v, want ErrCompacted", err)
	}
	if q := compact(); q != 0 {
		t.Fatalf("a compaction after the index was trimmed ran %d queries", q)
	}
	// Written, then expired while the store is closed: the first round
	// after the reopen removes the batches, and the index goes with them.
	for i := 0; i < 10; i++ {
		put(t, n, fmt.Sprint("j", i), "v")
	}
	mark := n.Position()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	later(2 * time.Hour)
	if s, err = Open(ctx, d, opts); err != nil {
		t.Fatal(err)
	}
	n = mustNS(t, s, "ns")
	if q := compact(); q == 0 {
		t.Fatal("the first compaction after a reopen did not scan the position index")
	}
	if err := n.Replay(ctx, mark-1, n.Position(), func(Commit) error { return nil }); !errors.Is(err, ErrCompacted) {
		t.Fatalf("replay of positions removed after the reopen: %v, want ErrCompacted", err)
	}
	if q := compact(); q != 0 {
		t.Fatalf("a second compaction after the reopen ran %d queries", q)
	}
	// State reconciliations are indexed but never in the log: the next
	// round trims them even though it removes no batch (found by review:
	// in a namespace whose log never sheds a batch they stayed, and the
	// index grew with each one).
	n = mustNS(t, s, "state")
	for range 5 {
		if err := n.ApplyState(ctx, nil, crdt.Context{}, crdt.Context{}, n.RemoteApplies()); err != nil {
			t.Fatal(err)
		}
	}
	// indexed counts the index's entries that name no batch.
	indexed := func() int {
		t.Helper()
		count := 0
		err := n.scanPositions(ctx, 0, n.posDone.Load(), func(_ uint64, origin crdt.ReplicaID, _ uint64) (bool, error) {
			if origin == 0 {
				count++
			}
			return true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return count
	}
	if got := indexed(); got != 5 {
		t.Fatalf("%d positions of state reconciliations indexed after 5 of them, want 5", got)
	}
	if q := compact(); q == 0 {
		t.Fatal("a compaction after state reconciliations did not scan the position index")
	}
	if got := indexed(); got != 0 {
		t.Fatalf("%d state reconciliation positions left in the index", got)
	}
}

// heldRegistry is a memory datastore that holds the Sync of the named
// namespace's registry record.
func heldRegistry(name string) *storetest.HeldSync {
	key := registryKey(name)
	return storetest.NewHeldSync(dssync.MutexWrap(ds.NewMapDatastore()), func(k ds.Key) bool { return k == key })
}

// TestNamespaceCreationDoesNotBlockOthers: while a new namespace's
// registration waits for its sync, the namespaces already open are still
// found and listed, a second caller asking for the new one waits for the
// same registration (one record written, one *Namespace), and a waiter
// whose context ends gives up alone.
func TestNamespaceCreationDoesNotBlockOthers(t *testing.T) {
	ctx := t.Context()
	slow := heldRegistry("new")
	s, err := Open(ctx, slow, Options{Replica: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer slow.Release() // before Close: a failing test must not leave the sync held
	old, err := s.Namespace(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		n   *Namespace
		err error
	}
	first, second := make(chan result, 1), make(chan result, 1)
	go func() {
		n, err := s.Namespace(ctx, "new")
		first <- result{n, err}
	}()
	select {
	case <-slow.Entered():
	case <-time.After(10 * time.Second):
		t.Fatal("the registration never reached its sync")
	}
	go func() {
		n, err := s.Namespace(ctx, "new")
		second <- result{n, err}
	}()
	// Lookups of the open namespace answer while the sync waits.
	found := make(chan *Namespace, 1)
	go func() {
		n, _ := s.Namespace(ctx, "old")
		s.Namespaces()
		found <- n
	}()
	select {
	case n := <-found:
		if n != old {
			t.Fatal("another namespace returned for \"old\"")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("looking up an open namespace waited for another one's registration")
	}
	// A waiter whose own context ends returns with it; the registration
	// goes on.
	short, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Namespace(short, "new"); !errors.Is(err, context.Canceled) {
		t.Fatalf("waiter with a cancelled context: %v", err)
	}
	slow.Release()
	a, b := <-first, <-second
	if a.err != nil || b.err != nil {
		t.Fatalf("registrations: %v, %v", a.err, b.err)
	}
	if a.n != b.n || a.n == nil {
		t.Fatal("two callers got different namespaces for one name")
	}
	if n := slow.Puts(); n != 1 {
		t.Fatalf("%d registry records written for one namespace, want 1", n)
	}
	if got, err := s.Namespace(ctx, "new"); err != nil || got != a.n {
		t.Fatalf("after the registration: %v, %v", got, err)
	}
}

// TestNamespaceWaiterRetriesWhenTheRegistrationsContextEnds: a caller
// waiting for another caller's registration of the same namespace does
// not inherit that caller's cancelled context: it registers the
// namespace itself.
func TestNamespaceWaiterRetriesWhenTheRegistrationsContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		slow := heldRegistry("new")
		s, err := Open(ctx, slow, Options{Replica: 1, CompactEvery: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		defer slow.Release() // before Close, should the test fail
		first, cancel := context.WithCancel(ctx)
		firstErr := make(chan error, 1)
		go func() {
			_, err := s.Namespace(first, "new")
			firstErr <- err
		}()
		<-slow.Entered()
		type result struct {
			n   *Namespace
			err error
		}
		second := make(chan result, 1)
		go func() {
			n, err := s.Namespace(ctx, "new")
			second <- result{n, err}
		}()
		// The second caller waits for the first's registration, which
		// its caller's context then ends.
		synctest.Wait()
		cancel()
		if err := <-firstErr; !errors.Is(err, context.Canceled) {
			t.Fatalf("first caller: %v, want its context's end", err)
		}
		// The second caller's own registration waits for its sync, which
		// passes now.
		synctest.Wait()
		slow.Release()
		r := <-second
		if r.err != nil || r.n == nil {
			t.Fatalf("second caller: %v", r.err)
		}
		if got, err := s.Namespace(ctx, "new"); err != nil || got != r.n {
			t.Fatalf("after: %v, %v", got, err)
		}
	})
}

// panickyRegistry panics on the first Put of one key.
type panickyRegistry struct {
	ds.Batching
	key   ds.Key
	fired atomic.Bool
}

func (d *panickyRegistry) Put(ctx context.Context, k ds.Key, v []byte) error {
	if k == d.key && d.fired.CompareAndSwap(false, true) {
		panic("disk driver bug")
	}
	return d.Batching.Put(ctx, k, v)
}

// TestNamespaceRegistrationPanicLeavesNameUsable: a datastore that panics
// while a namespace is registered (recovered by the caller, as net/http
// does) does not leave the name waited on forever.
func TestNamespaceRegistrationPanicLeavesNameUsable(t *testing.T) {
	ctx := t.Context()
	d := &panickyRegistry{Batching: dssync.MutexWrap(ds.NewMapDatastore()), key: registryKey("p")}
	s, err := Open(ctx, d, Options{Replica: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Fatal("the datastore's panic did not reach the caller")
			}
		}()
		s.Namespace(ctx, "p")
	}()
	short, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if n, err := s.Namespace(short, "p"); err != nil || n == nil {
		t.Fatalf("after a panicked registration: %v", err)
	}
}

// TestLowerLimitsKeepStoredData: a store reopened with lower key and value
// limits (a daemon restarted with a lower --max-key-bytes) loads and serves
// what it wrote under the higher ones, namespace names included, and
// applies the new limits to new writes only.
func TestLowerLimitsKeepStoredData(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	long := strings.Repeat("k", 100)
	s := openPebble(t, dir, Options{})
	n := mustNS(t, s, "a namespace with a name of forty bytes!!")
	put(t, n, long, strings.Repeat("v", 500))
	if _, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpSetUpdate, Key: "set", Add: []string{long}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	low := crdt.Limits{MaxKeyBytes: 16, MaxValueBytes: 64}
	s = openPebble(t, dir, Options{Limits: low})
	defer s.Close()
	n, err := s.Namespace(ctx, "a namespace with a name of forty bytes!!")
	if err != nil {
		t.Fatalf("the stored namespace: %v", err)
	}
	if v, ok := getString(n, long); !ok || len(v) != 500 {
		t.Fatalf("stored key: %d bytes, found %v", len(v), ok)
	}
	kept := n.Kept()
	if _, found, err := n.ReadLog(ctx, testReplica, kept.Min(testReplica)); err != nil || !found {
		t.Fatalf("stored log entry: found %v, %v", found, err)
	}
	if _, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: long, Value: []byte("v")}); !errors.Is(err, crdt.ErrLimit) {
		t.Fatalf("a new write over the lowered key limit: %v", err)
	}
	if _, err := s.Namespace(ctx, "another namespace of forty bytes!!!!!!!"); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("a new namespace over the lowered limit: %v", err)
	}
}

// TestNamespaceNamesStayWithinSyncs: a raised key limit does not raise the
// namespace name limit past what a sync session's first frame carries
// (crdt.MaxNamespaceNameBytes): a longer name made a namespace that took
// writes but no peer could sync.
func TestNamespaceNamesStayWithinSyncs(t *testing.T) {
	raised := crdt.Limits{MaxKeyBytes: 4096}
	if err := ValidName(strings.Repeat("n", crdt.MaxNamespaceNameBytes), raised); err != nil {
		t.Fatalf("a name at the bound: %v", err)
	}
	if err := ValidName(strings.Repeat("n", crdt.MaxNamespaceNameBytes+1), raised); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("a name past the bound: %v", err)
	}
	if err := ValidName(strings.Repeat("n", 17), crdt.Limits{MaxKeyBytes: 16}); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("a name past a lowered key limit: %v", err)
	}
}
