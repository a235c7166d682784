package main

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/ipld/merkledag"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	crdt "github.com/ipfs/go-ds-crdt"
)

// offlineReplica is a go-ds-crdt datastore with no broadcaster and an
// offline DAG service, over a guardedStore that records visible keys.
func offlineReplica(t *testing.T) (*crdt.Datastore, *guardedStore, func() []string) {
	t.Helper()
	var (
		mu   sync.Mutex
		seen []string
	)
	g := newGuardedStore(dssync.MutexWrap(ds.NewMapDatastore()), namespace, func(k string) {
		mu.Lock()
		seen = append(seen, k)
		mu.Unlock()
	})
	bs := blockstore.NewBlockstore(g)
	dag := merkledag.NewDAGService(blockservice.New(bs, offline.Exchange(bs)))
	opts := crdt.DefaultOptions()
	opts.PutHook = g.putHook
	c, err := crdt.New(g, ds.NewKey(namespace), dag, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
		if err := g.Close(); err != nil {
			t.Error(err)
		}
	})
	return c, g, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// TestVisibleAfterCommit checks that a key is reported visible only once
// it is readable, for local puts (which go-ds-crdt merges through the same
// path as remote deltas).
func TestVisibleAfterCommit(t *testing.T) {
	ctx := context.Background()
	c, g, _ := offlineReplica(t)
	visible := 0
	g.visible = func(k string) {
		visible++
		if ok, err := c.Has(ctx, ds.NewKey(k)); err != nil || !ok {
			t.Errorf("%s reported visible but Has = %v, %v", k, ok, err)
		}
	}
	b, err := c.Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"k00-00000001", "k00-00000002"} {
		if err := b.Put(ctx, ds.NewKey(k), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if visible != 2 {
		t.Errorf("%d keys reported visible, want 2", visible)
	}
	g.pmu.Lock()
	defer g.pmu.Unlock()
	if len(g.pending) != 0 {
		t.Errorf("keys still pending after commit: %v", g.pending)
	}
}

// TestBatcherGroups checks that puts arriving within one window become
// one go-ds-crdt commit (one DAG node), and that every put is visible
// once it returns.
func TestBatcherGroups(t *testing.T) {
	ctx := context.Background()
	c, _, seen := offlineReplica(t)
	b := newBatcher(c, false, 500*time.Millisecond, 512)
	defer b.close()
	// The first put after a quiet window commits at once (height 1) and
	// opens a window; the next ones arrive inside it.
	if err := b.put(ctx, ds.NewKey("k00-00000000"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			if err := b.put(ctx, ds.NewKey(key(i)), []byte("v")); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if h := c.InternalStats(ctx).MaxHeight; h != 2 {
		t.Errorf("DAG height %d after two windows, want 2 (one node per batch)", h)
	}
	if got := len(seen()); got != 11 {
		t.Errorf("%d keys reported visible, want 11", got)
	}
}

func key(i int) string { return "k01-0000000" + string(rune('0'+i)) }
