package node

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestStoreClosingUnderARunningNode: the store closes itself when a
// compaction meets corruption (store.pebbleEvents), while the node goes
// on: peers keep sending it batches, syncs and watchers keep reading. The
// node must not crash, its writes must fail with an error, its in-memory
// reads keep answering, and Close must return.
func TestStoreClosingUnderARunningNode(t *testing.T) {
	ctx := context.Background()
	dirs := []string{t.TempDir(), t.TempDir()}
	nodes := cluster(t, 2, func(i int, c *Config) { c.DataDir = dirs[i]; c.NoSync = true })
	connect(t, nodes[0], nodes[1])
	a, b := mustNS(t, nodes[0], "s"), mustNS(t, nodes[1], "s")
	for i := range 50 {
		if err := a.Put(ctx, fmt.Sprint("k", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	waitConverged(t, nodes, "s", 50, 30*time.Second)
	events := b.Watch(ctx, "")
	// What the compaction's corruption does to node 1's store.
	if err := nodes[1].st.Close(); err != nil {
		t.Fatal(err)
	}
	// Node 0 keeps writing; node 1 keeps receiving and syncing.
	deadline := time.Now().Add(3 * time.Second)
	for i := 50; time.Now().Before(deadline); i++ {
		if err := a.Put(ctx, fmt.Sprint("k", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // a steady trickle of writes, not a wait for a condition
	}
	if err := b.Put(ctx, "on-closed", []byte("v")); err == nil {
		t.Fatal("a write to a closed store succeeded")
	}
	if v, err := b.Get(ctx, "k0"); err != nil || string(v) != "v" {
		t.Fatalf("in-memory read after the store closed: %q, %v", v, err)
	}
	for len(events) > 0 {
		<-events
	}
	done := make(chan error, 1)
	go func() { done <- nodes[1].Close() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Close hangs")
	}
}
