package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mycelnet/mycel/crdt"
)

// TestOpeningANamespaceSyncsItAtOnce: a namespace opened after the peers
// connected is pulled from them right away, not at the next periodic sync
// (an hour away here), and WaitFirstSync returns once that pull has ended
// with every peer, including one that does not hold the namespace.
func TestOpeningANamespaceSyncsItAtOnce(t *testing.T) {
	ctx := context.Background()
	nodes := cluster(t, 3, func(_ int, c *Config) { c.SyncInterval = time.Hour })
	writer, reader, stranger := nodes[0], nodes[1], nodes[2]
	w := mustNS(t, writer, "late")
	for k := range 20 {
		if err := w.Put(ctx, fmt.Sprintf("k%02d", k), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	connect(t, reader, writer)
	connect(t, reader, stranger) // never opens "late": its sync fails at once

	r := mustNS(t, reader, "late")
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := r.WaitFirstSync(wctx); err != nil {
		t.Fatalf("WaitFirstSync: %v after %v", err, time.Since(start))
	}
	t.Logf("first sync ended after %v", time.Since(start))
	if got, want := r.Keys("", "", 0), 20; len(got) != want {
		t.Fatalf("after the first sync the reader holds %d keys, want %d", len(got), want)
	}
	if wd, _ := w.Digest(); wd != digestOf(r) {
		t.Fatal("reader and writer differ after the first sync")
	}
	// Opened again, the namespace is the same one: no new first sync.
	if err := mustNS(t, reader, "late").WaitFirstSync(ctx); err != nil {
		t.Fatal(err)
	}
}

func digestOf(ns *Namespace) crdt.Digest {
	d, _ := ns.Digest()
	return d
}

// TestFirstSyncWithoutPeersEndsAtOnce: with nobody connected there is
// nothing to wait for.
func TestFirstSyncWithoutPeersEndsAtOnce(t *testing.T) {
	n := cluster(t, 1, nil)[0]
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a wait would fail; an ended first sync returns nil
	if err := mustNS(t, n, "alone").WaitFirstSync(ctx); err != nil {
		t.Fatalf("WaitFirstSync with no peers: %v", err)
	}
}
