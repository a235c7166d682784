package node

import (
	"context"
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
	n := cluster(t, 1, func(_ int, c *Config) { c.DataDir = dir })[0]
	ns := mustNS(t, n, "x")
	for _, k := range []string{"nokey", "nokey2"} {
		if err := ns.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	p := ns.Position()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = cluster(t, 1, func(_ int, c *Config) { c.DataDir = dir })[0]
	if _, err := mustNS(t, n, "x").WatchFrom(ctx, "", p-1); err != nil {
		t.Fatalf("WatchFrom(%d) after restart: %v", p-1, err)
	}
}
