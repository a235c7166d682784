package store

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/store/storetest"
)

// corruptOnDisk writes 2,000 keys and "target" into namespace "orders"
// on Pebble in dir, closes the store, has Pebble flush everything into
// one sstable (so records sit in checksummed blocks, not the WAL), and
// returns the sstable's path and bytes.
func corruptOnDisk(t *testing.T, dir, targetValue string) (string, []byte) {
	t.Helper()
	s := openPebble(t, dir, Options{})
	n := mustNS(t, s, "orders")
	for i := range 2000 {
		if i == 1000 {
			// In the middle of the log, so that its block holds log
			// entries only (the last one also holds the records that
			// sort after the log).
			put(t, n, "target", targetValue)
		}
		put(t, n, fmt.Sprintf("order-%04d", i), fmt.Sprintf("order %d: paid", i))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return storetest.FlushAll(t, dir)
}

// TestCorruptBytesOnDiskAreNamed flips bytes in Pebble's files on disk:
// the read that meets them fails with ErrCorrupt naming the namespace and
// the record (a key, or the log entry), where Pebble's default had ended
// the process (Fatalf on data corruption); nothing is skipped silently.
func TestCorruptBytesOnDiskAreNamed(t *testing.T) {
	ctx := context.Background()
	t.Run("key state", func(t *testing.T) {
		dir := t.TempDir()
		path, b := corruptOnDisk(t, dir, "the target's value")
		// The key's hex name is in the state record's key and nowhere
		// else ("target" sorts after every "order-", so its key is not
		// prefix-compressed away).
		mark := []byte(hex.EncodeToString([]byte("target")))
		if c := bytes.Count(b, mark); c != 1 {
			t.Fatalf("state key found %d times", c)
		}
		storetest.FlipAt(t, path, b, mark, 0)
		s, err := OpenPebble(ctx, dir, Options{Replica: testReplica})
		if err == nil {
			s.Close()
			t.Fatal("a store with a corrupt key-state block opened")
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `namespace "orders" key states, after key "order-`) || !strings.Contains(err.Error(), "checksum") {
			t.Fatalf("error %v does not name the namespace, the key and the checksum", err)
		}
		t.Log(err)
		// Unchanged: the store fails the same way again.
		if _, err2 := OpenPebble(ctx, dir, Options{Replica: testReplica}); err2 == nil || err2.Error() != err.Error() {
			t.Fatalf("second open: %v, first %v", err2, err)
		}
	})
	t.Run("log entry", func(t *testing.T) {
		dir := t.TempDir()
		// Found twice, in the key state, then in the log.
		path, b := corruptOnDisk(t, dir, storetest.Unrepeated)
		mark := []byte(storetest.Unrepeated)
		if c := bytes.Count(b, mark); c != 2 {
			t.Fatalf("value found %d times", c)
		}
		storetest.FlipAt(t, path, b, mark, 1) // the log's: log entries sort after key states
		s, err := OpenPebble(ctx, dir, Options{Replica: testReplica})
		if err == nil {
			s.Close()
			t.Fatal("a store with a corrupt log block opened")
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `namespace "orders" log`) || !strings.Contains(err.Error(), "checksum") {
			t.Fatalf("error %v does not name the namespace and the log", err)
		}
	})
}

// TestCorruptLogFoundWhileRunning: a block of the log that goes bad after
// the store opened (flushed, then flipped on disk) fails the reads of the
// entries it holds with ErrCorrupt naming each, the other entries still
// read, and compaction removes the unreadable ones instead of stopping
// the log's retention.
func TestCorruptLogFoundWhileRunning(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openPebble(t, dir, Options{CompactEvery: -1})
	defer s.Close()
	n := mustNS(t, s, "orders")
	for i := range 2000 {
		if i == 1000 {
			put(t, n, "target", storetest.Unrepeated)
		}
		put(t, n, fmt.Sprintf("order-%04d", i), fmt.Sprintf("order %d: paid", i))
	}
	if err := s.ds.(pebbleStore).DB.Flush(); err != nil {
		t.Fatal(err)
	}
	path, b := storetest.OnlySST(t, dir)
	storetest.FlipAt(t, path, b, []byte(storetest.Unrepeated), 1)

	n.mu.RLock()
	lo, hi := n.kept.Min(testReplica), n.kept.Max(testReplica)
	n.mu.RUnlock()
	bad, good := 0, 0
	for seq := lo; seq <= hi; seq++ {
		_, found, err := n.ReadLog(ctx, testReplica, seq)
		switch {
		case err == nil && found:
			good++
		case errors.Is(err, ErrCorrupt) && strings.Contains(err.Error(), fmt.Sprintf(`namespace "orders" log entry %s/%s`, hex16(uint64(testReplica)), hex16(seq))):
			bad++
		default:
			t.Fatalf("log entry %d: found %v, error %v", seq, found, err)
		}
	}
	if bad == 0 || good < 1900 {
		t.Fatalf("%d entries unreadable, %d read: want the corrupt block's few", bad, good)
	}

	// Retention down to nothing: compaction goes through the whole log,
	// the corrupt block included, and finishes.
	s.opts.Retention = Retention{MaxBytes: 1, MaxAge: time.Hour}
	if err := s.Compact(ctx); err != nil {
		t.Fatalf("compaction stopped at the corrupt block: %v", err)
	}
	n.mu.RLock()
	left := n.kept.Len()
	n.mu.RUnlock()
	if left != 0 {
		t.Fatalf("%d log entries kept after compacting to 1 byte", left)
	}
}

// TestCorruptRegistryFailsOpen: a bad block in the namespace registry
// fails Open with ErrCorrupt. (Listed with go-ds-pebble's Query, the
// listing ended quietly at the block and the store opened without the
// namespaces past it; a later write to one of them registered it anew, as
// an empty namespace.)
func TestCorruptRegistryFailsOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openPebble(t, dir, Options{CompactEvery: -1})
	// "target" sorts between the a- and z- names, so its registry key is
	// in a middle block (the long names spread the registry over many)
	// and not prefix-compressed away.
	long := strings.Repeat("-", 60)
	for i := range 200 {
		mustNS(t, s, fmt.Sprintf("a-%03d%s", i, long))
		mustNS(t, s, fmt.Sprintf("z-%03d%s", i, long))
	}
	mustNS(t, s, "target")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path, b := storetest.FlushAll(t, dir)
	storetest.FlipAt(t, path, b, []byte(hex.EncodeToString([]byte("target"))), 0) // the registry's: /node/ sorts before /ns/
	s, err := OpenPebble(ctx, dir, Options{Replica: testReplica})
	if err == nil {
		n := len(s.Namespaces())
		s.Close()
		t.Fatalf("a store with a corrupt registry block opened, with %d of 401 namespaces", n)
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `namespace registry, after namespace "a-`) {
		t.Fatalf("error %v does not name the registry", err)
	}
}

// TestCorruptionFoundByCompactionFailsTheStore: when Pebble's compaction
// meets a bad block, the store fails (refuses writes, Err says why) rather
// than writing on: Pebble retries that compaction without end, level 0
// would fill, and writes and Close, which flushes, would stall for good.
func TestCorruptionFoundByCompactionFailsTheStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openPebble(t, dir, Options{CompactEvery: -1})
	n := mustNS(t, s, "orders")
	db := s.ds.(pebbleStore).DB
	put(t, n, "target", storetest.Unrepeated)
	for i := range 200 {
		put(t, n, fmt.Sprintf("order-%04d", i), "paid")
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	path, b := storetest.OnlySST(t, dir)
	storetest.FlipAt(t, path, b, []byte(storetest.Unrepeated), 0)
	// More level-0 files over the same keys, until Pebble compacts them
	// with the bad one (bounded: it does at four).
	for round := 0; round < 20 && s.Err() == nil; round++ {
		for i := range 200 {
			if _, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: fmt.Sprintf("order-%04d", i), Value: []byte(fmt.Sprint(round))}); err != nil {
				break
			}
		}
		// Held through the flush: the store closes itself once the
		// compaction's report comes, and Pebble panics on a closed DB.
		release, err := s.use()
		if err != nil {
			break
		}
		err = db.Flush()
		release()
		if err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling for the compaction's report
	}
	if err := s.Err(); !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "found by a compaction") {
		t.Fatalf("store error %v, want failed by the compaction's corruption", err)
	}
	if _, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "after", Value: []byte("x")}); !errors.Is(err, ErrFailed) {
		t.Fatalf("a write to the failed store: %v", err)
	}
	// It closed itself, stopping Pebble's retries of the compaction.
	dsClosed := func() bool {
		release, err := s.use()
		if err == nil {
			release()
		}
		return errors.Is(err, ErrClosed)
	}
	for !dsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling for the close
	}
	if !dsClosed() {
		t.Fatal("the failed store did not close")
	}
	if v, ok := getString(n, "order-0000"); !ok || v == "" {
		t.Fatalf("a read from memory after the close: %q, %v", v, ok)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close hangs")
	}
}
