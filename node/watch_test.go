package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func nextEvent(t *testing.T, ch <-chan Event) Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return Event{}
}

func TestWatchResumesAcrossRestart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	n := cluster(t, 1, func(_ int, c *Config) { c.DataDir = dir })[0]
	ns := mustNS(t, n, "w")
	ch := ns.Watch(ctx, "k")
	var seen uint64
	for i := 0; i < 10; i++ {
		if err := ns.Put(ctx, fmt.Sprint("k", i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		if i < 5 {
			ev := nextEvent(t, ch)
			if ev.Key != fmt.Sprint("k", i) || ev.Position <= seen {
				t.Fatalf("event %d: %+v after position %d", i, ev, seen)
			}
			seen = ev.Position
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = cluster(t, 1, func(_ int, c *Config) { c.DataDir = dir })[0]
	ns = mustNS(t, n, "w")
	ch, err := ns.WatchFrom(ctx, "k", seen)
	if err != nil {
		t.Fatal(err)
	}
	for i := 5; i < 10; i++ {
		ev := nextEvent(t, ch)
		if ev.Key != fmt.Sprint("k", i) {
			t.Fatalf("replayed %q, want k%d", ev.Key, i)
		}
		seen = ev.Position
	}
	if err := ns.Put(ctx, "k-live", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, ch); ev.Key != "k-live" || ev.Position <= seen {
		t.Fatalf("live event %+v after %d", ev, seen)
	}
	if _, err := ns.WatchFrom(ctx, "k", ns.Position()+5); err == nil {
		t.Fatal("a position ahead of the node was accepted")
	}
}

// TestWatchFromAfterRestartWithoutLocalWrites: positions survive a restart
// even for a namespace with no local dots (no skip batch is published).
func TestWatchFromAfterRestartWithoutLocalWrites(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	nodes := cluster(t, 2, func(i int, c *Config) {
		if i == 0 {
			c.DataDir = dir
		}
	})
	n, w := nodes[0], nodes[1]
	ns := mustNS(t, n, "x")
	connect(t, n, w)
	// Changes that are all remote: no local dot, no skip batch at reopen.
	wns := mustNS(t, w, "x")
	for _, k := range []string{"k", "k2"} {
		if err := wns.Put(ctx, k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	waitConverged(t, nodes, "x", 2, 20*time.Second)
	waitFor(t, "both commits to be watchable", 10*time.Second, func() bool { return ns.Position() >= 2 })
	p := ns.Position()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = cluster(t, 1, func(_ int, c *Config) { c.DataDir = dir })[0]
	if _, err := mustNS(t, n, "x").WatchFrom(ctx, "", p-1); err != nil {
		t.Fatalf("WatchFrom(%d) after restart: %v", p-1, err)
	}
}

// TestWatchAfterResumesInsideACommit: one commit can change many keys
// (concurrent puts share a group commit); a watcher that stopped after any
// of its events resumes with exactly the events after that one.
func TestWatchAfterResumesInsideACommit(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := cluster(t, 1, func(_ int, c *Config) { c.DataDir = t.TempDir() })[0]
	ns := mustNS(t, n, "w")
	ch := ns.Watch(ctx, "")
	var all []Event
	inside := -1 // an event that is not its commit's last
	for round := 0; round < 50 && inside < 0; round++ {
		const writers = 32
		errs := make(chan error, writers)
		for i := range writers {
			go func() { errs <- ns.Put(ctx, fmt.Sprintf("k-%02d-%02d", round, i), []byte("v")) }()
		}
		for range writers {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		for range writers {
			all = append(all, nextEvent(t, ch))
		}
		for i, ev := range all {
			if !ev.LastInCommit && i > 0 && all[i-1].Position == ev.Position {
				inside = i // in the middle of a commit of three or more keys
				break
			}
		}
	}
	if inside < 0 {
		t.Fatal("no commit of three or more keys in 50 rounds of 32 concurrent puts")
	}
	// Events of one commit arrive together, numbered in key order, the
	// last one marked.
	for i, ev := range all {
		switch {
		case i > 0 && all[i-1].Position == ev.Position:
			if all[i-1].LastInCommit || ev.Index != all[i-1].Index+1 || ev.Key <= all[i-1].Key {
				t.Fatalf("events %d and %d of one commit: %+v then %+v", i-1, i, all[i-1], ev)
			}
		case ev.Index != 0:
			t.Fatalf("event %d opens commit %d with index %d", i, ev.Position, ev.Index)
		}
		if i > 0 && all[i-1].Position != ev.Position && !all[i-1].LastInCommit {
			t.Fatalf("commit %d ended without its last event marked", all[i-1].Position)
		}
	}
	at := all[inside]
	resumed, err := ns.WatchAfter(ctx, "", at.Position, at.Index)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range all[inside+1:] {
		got := nextEvent(t, resumed)
		if got.Key != want.Key || got.Position != want.Position || got.Index != want.Index || got.LastInCommit != want.LastInCommit {
			t.Fatalf("resumed event %d after (%d, %d): %+v, want %+v", i, at.Position, at.Index, got, want)
		}
	}
	if err := ns.Put(ctx, "live", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, resumed); ev.Key != "live" || !ev.LastInCommit {
		t.Fatalf("live event after the replay: %+v", ev)
	}
	// Events that cannot exist are refused.
	for _, c := range []struct {
		pos   uint64
		index int
	}{{0, 0}, {at.Position, -1}, {at.Position, 1000}, {ns.Position() + 5, 0}} {
		if _, err := ns.WatchAfter(ctx, "", c.pos, c.index); !errors.Is(err, ErrInvalid) {
			t.Errorf("WatchAfter(%d, %d) = %v, want ErrInvalid", c.pos, c.index, err)
		}
	}
}

// TestWatchReplayIsBounded: a resumed watch further behind than
// maxWatchReplay events is refused (re-read instead) rather than held in
// memory.
func TestWatchReplayIsBounded(t *testing.T) {
	ctx := context.Background()
	n := cluster(t, 1, nil)[0]
	ns := mustNS(t, n, "w")
	start := ns.Position()
	const puts = maxWatchReplay + 1000
	putKeysConcurrently(t, ns, 64, puts, func(i int) string { return fmt.Sprint("k", i) }, []byte("v"))
	if _, err := ns.WatchFrom(ctx, "", start); !errors.Is(err, ErrCompacted) {
		t.Fatalf("resuming %d changes behind: %v, want ErrCompacted", puts, err)
	}
	// Within the bound: the replay works.
	ch, err := ns.WatchFrom(ctx, "", ns.Position()-3)
	if err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, ch)
	if v, _, _ := ev.Value.Register(); ev.Position <= ns.Position()-3 || string(v) != "v" {
		t.Fatalf("replayed %+v", ev)
	}
}

// TestPositionCoversAcknowledgedWrites: once a write returns, Position
// includes it and WatchFrom(Position()) succeeds (found by review: Position
// ran ahead of what watchers had been given, so resuming from it could be
// refused as ahead of the node).
func TestPositionCoversAcknowledgedWrites(t *testing.T) {
	ctx := t.Context()
	_, ns, ch := watchedNS(t, "w")
	for i := range 200 {
		if err := ns.Put(ctx, fmt.Sprint("k", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
		p := ns.Position()
		if _, err := ns.WatchFrom(ctx, "", p); err != nil {
			t.Fatalf("WatchFrom(Position()) after put %d: %v", i, err)
		}
		if ev := nextEvent(t, ch); ev.Position > p {
			t.Fatalf("put %d acknowledged at position %d, but Position() was %d", i, ev.Position, p)
		}
	}
}

// TestWatchBacklogIsBoundedInBytes: a watcher that does not read is
// dropped once its queue holds maxWatchBacklogBytes of values, long before
// maxWatchBacklog events, when the values are large.
func TestWatchBacklogIsBoundedInBytes(t *testing.T) {
	ctx := t.Context()
	_, ns, ch := watchedNS(t, "w")
	val := bytes.Repeat([]byte("v"), 512<<10)
	const puts = 2 * maxWatchBacklogBytes / (512 << 10)
	for i := range puts {
		if err := ns.Put(ctx, fmt.Sprint("k", i%8), val); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	timeout := time.After(30 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				if got >= puts {
					t.Fatalf("all %d events delivered", got)
				}
				return
			}
			got++
		case <-timeout:
			t.Fatalf("the watcher of %d unread 512 KiB changes is still open after %d events", puts, got)
		}
	}
}

// watchedNS starts one node, opens namespace name on it and watches all of
// it until the test ends.
func watchedNS(t *testing.T, name string) (*Node, *Namespace, <-chan Event) {
	t.Helper()
	n := cluster(t, 1, nil)[0]
	ns := mustNS(t, n, name)
	return n, ns, ns.Watch(t.Context(), "")
}
