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

// A node holding many namespaces converges with a new peer in all of them,
// without having its sync sessions refused: the client spends sessions
// with a peer at the rate servers admit them (gossip pace). Before, each
// namespace's session went out back to back and most were refused: 60
// namespaces took 72 s and 4,117 refused sessions to converge.
func TestManyNamespacesConverge(t *testing.T) {
	ctx := context.Background()
	const count = 45 // more than a server admits at once (20)
	nodes := cluster(t, 2, nil)
	for i := 0; i < count; i++ {
		name := fmt.Sprintf("ns%02d", i)
		if err := mustNS(t, nodes[0], name).Put(ctx, "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
		mustNS(t, nodes[1], name)
	}
	connect(t, nodes[0], nodes[1])
	waitFor(t, "every namespace to converge", 60*time.Second, func() bool {
		for i := 0; i < count; i++ {
			if _, err := mustNS(t, nodes[1], fmt.Sprintf("ns%02d", i)).Get(ctx, "k"); err != nil {
				return false
			}
		}
		return true
	})
	var refused int64
	for _, n := range nodes {
		refused += n.Stats().SyncRefused.Load()
	}
	// Both budgets start full and refill at the same rate; a refusal or
	// two can come from the two clocks reading a hair apart.
	if refused > 3 {
		t.Fatalf("%d sync sessions refused", refused)
	}
}
