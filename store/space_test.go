package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mycelnet/mycel/crdt"
)

// fakeFree gives a diskSpace free-space readings from v.
func fakeFree(v *atomic.Uint64) func(string) (uint64, error) {
	return func(string) (uint64, error) { return v.Load(), nil }
}

// untilErr polls f (the free-space reading is refreshed every
// spaceCheckEvery) until it returns an error that is target, or nil when
// target is nil.
func untilErr(t *testing.T, what string, target error, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if (target == nil && err == nil) || (target != nil && errors.Is(err, target)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v, want %v", what, err, target)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDiskNearlyFullRefusesWrites: with less free space than the reserve,
// local writes and a peer's batches get ErrDiskFull and change nothing,
// reads go on, and once there is room again writes resume by themselves.
func TestDiskNearlyFullRefusesWrites(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openPebble(t, dir, Options{MinFreeBytes: 1 << 20})
	var free atomic.Uint64
	free.Store(1 << 30)
	s.space.free = fakeFree(&free)
	n := mustNS(t, s, "ns")
	put(t, n, "a", "before")

	peer, err := OpenMemory(ctx, Options{Replica: 0xdef})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	pn := mustNS(t, peer, "ns")
	put(t, pn, "p", "from a peer")
	batches := logged(t, peer, pn)

	free.Store(512 << 10)
	putB := func() error {
		_, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "b", Value: []byte("after")})
		return err
	}
	untilErr(t, "a put on a nearly full disk", ErrDiskFull, putB)
	digest, keys := n.Digest()
	seen := n.Seen()
	if err := putB(); !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "512.0 KiB free") {
		t.Fatalf("put: %v, want ErrDiskFull with the free space", err)
	}
	if err := n.ApplyAll(ctx, []crdt.Op{{Kind: crdt.OpPut, Key: "u", Value: []byte("x")}}); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("ApplyAll: %v, want ErrDiskFull", err)
	}
	var peerSeen crdt.Context
	pn.View(func(_ *crdt.Namespace, seen *crdt.Context) { peerSeen = seen.Clone() })
	if err := n.ApplyState(ctx, nil, peerSeen, crdt.Context{}, 0); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("a peer's state: %v, want ErrDiskFull", err)
	}
	if _, err := n.ApplyBatch(ctx, batches[0]); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("a peer's batch: %v, want ErrDiskFull", err)
	}
	if d, k := n.Digest(); d != digest || k != keys || !eqContext(n.Seen(), seen) {
		t.Fatal("a refused write changed the namespace")
	}
	if v, ok := getString(n, "a"); !ok || v != "before" {
		t.Fatalf("read on a nearly full disk: %q %v", v, ok)
	}
	if s.Err() != nil {
		t.Fatalf("a nearly full disk failed the store: %v", s.Err())
	}

	free.Store(1 << 30)
	untilErr(t, "a put once there is room", nil, putB)
	if _, err := n.ApplyBatch(ctx, batches[0]); err != nil {
		t.Fatalf("a peer's batch once there is room: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openPebble(t, dir, Options{})
	defer s.Close()
	n = mustNS(t, s, "ns")
	for _, k := range []string{"a", "b", "p"} {
		if _, ok := getString(n, k); !ok {
			t.Errorf("key %q lost across the reopen", k)
		}
	}
	if _, ok := getString(n, "u"); ok {
		t.Error("the refused unit's key is there")
	}
}

// TestCloseOnANearlyFullDisk: go-ds-pebble's Close flushes the memtable,
// and a flush that finds no room is retried for ever. With too little room
// the store closes without it, and the next open replays the log.
func TestCloseOnANearlyFullDisk(t *testing.T) {
	dir := t.TempDir()
	s := openPebble(t, dir, Options{})
	n := mustNS(t, s, "ns")
	for i := range 100 {
		put(t, n, "k"+string(rune('a'+i%26))+strings.Repeat("x", i), "v")
	}
	var free atomic.Uint64 // no room at all
	s.space.free = fakeFree(&free)
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Close on a full disk did not return")
	}
	if ssts, _ := filepath.Glob(filepath.Join(dir, "*.sst")); len(ssts) != 0 {
		t.Fatalf("Close flushed %d tables with no room reported", len(ssts))
	}
	s = openPebble(t, dir, Options{})
	defer s.Close()
	if got := mustNS(t, s, "ns").Len(); got != 100 {
		t.Fatalf("%d keys after the reopen, want 100", got)
	}
}

// TestRoomToOpen: an open needs room for the write-ahead log it replays.
func TestRoomToOpen(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "000004.log"), make([]byte, 3<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	var free atomic.Uint64
	free.Store(5 << 20)
	err := roomToOpen(dir, fakeFree(&free))
	if !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "write-ahead log (3.0 MiB)") || !strings.Contains(err.Error(), "5.0 MiB free") {
		t.Fatalf("open with 5 MiB free and a 3 MiB log: %v, want ErrDiskFull naming both", err)
	}
	free.Store(8 << 20)
	if err := roomToOpen(dir, fakeFree(&free)); err != nil {
		t.Fatalf("open with 8 MiB free and a 3 MiB log: %v", err)
	}
	unknown := func(string) (uint64, error) { return 0, errors.New("statfs: not supported") }
	if err := roomToOpen(dir, unknown); err != nil {
		t.Fatalf("open with free space unknown: %v", err)
	}
}

// TestMinFreeBytesNegativeTurnsTheCheckOff: no reserve, no check.
func TestMinFreeBytesNegativeTurnsTheCheckOff(t *testing.T) {
	s := openPebble(t, t.TempDir(), Options{MinFreeBytes: -1})
	defer s.Close()
	if s.space != nil {
		t.Fatal("MinFreeBytes -1 still checks the disk")
	}
	d := openPebble(t, t.TempDir(), Options{})
	defer d.Close()
	if d.space == nil || d.space.min != DefaultMinFreeBytes {
		t.Fatalf("default reserve %+v, want %d", d.space, DefaultMinFreeBytes)
	}
}

func eqContext(a, b crdt.Context) bool { return a.Equal(b) }

// TestBurstCannotOverrunTheReserve: writes admitted but not yet written,
// and those written since the last reading, count against the reserve. A
// writer that does not wait for its answers (as gossip and sync apply
// peers' batches) queued hundreds of batches on one reading before.
func TestBurstCannotOverrunTheReserve(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openPebble(t, dir, Options{})
	defer s.Close()
	n := mustNS(t, s, "ns")
	const room = 4 << 20 // above the reserve at the start
	// The disk as the store fills it: the reserve plus room, less what
	// the store's files grew by.
	start := dirBytes(t, dir)
	var reads atomic.Int64
	s.space.free = func(string) (uint64, error) {
		reads.Add(1)
		return uint64(int64(s.space.min) + room - (dirBytes(t, dir) - start)), nil
	}
	s.space.checked.Store(0) // read afresh at the next write
	value := make([]byte, 256<<10)
	accepted := 0
	for i := range 200 {
		_, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: fmt.Sprintf("k%03d", i), Value: value}, WithoutWait())
		if errors.Is(err, ErrDiskFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		accepted++
	}
	// Each put writes its value twice (key state and log entry).
	if maxPuts := room / (2 * len(value)); accepted == 0 || accepted > maxPuts {
		t.Fatalf("%d puts of 256 KiB accepted with 4 MiB above the reserve, want 1 to %d (%d readings)", accepted, maxPuts, reads.Load())
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.space.inflight.Load(); got != 0 {
		t.Fatalf("%d bytes still counted in flight after a flush", got)
	}
}

func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && !e.IsDir() {
			n += fi.Size()
		}
	}
	return n
}

// TestCleanCloseLeavesNothingToReplay: a close that flushed leaves its
// mark, so the next open needs no room for the log files Pebble keeps for
// reuse; an open removes the mark. Closing twice is harmless.
func TestCleanCloseLeavesNothingToReplay(t *testing.T) {
	dir := t.TempDir()
	s := openPebble(t, dir, Options{})
	put(t, mustNS(t, s, "ns"), "a", "b")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.closer(); err != nil { // a second close of the datastore: no panic
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, flushedMark)); err != nil {
		t.Fatalf("no flushed mark after a clean close: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "999999.log"), make([]byte, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	var free atomic.Uint64
	free.Store(openMarginBytes)
	if err := roomToOpen(dir, fakeFree(&free)); err != nil {
		t.Fatalf("open after a flushed close with only the margin free: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, "999999.log")); err != nil {
		t.Fatal(err)
	}
	s = openPebble(t, dir, Options{})
	defer s.Close()
	if _, err := os.Stat(filepath.Join(dir, flushedMark)); !os.IsNotExist(err) {
		t.Fatalf("the flushed mark outlived the open: %v", err)
	}
	if err := roomToOpen(dir, fakeFree(&free)); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("open without the mark and a log to replay, margin free: %v, want ErrDiskFull", err)
	}
}
