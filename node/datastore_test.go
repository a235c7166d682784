package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dstest "github.com/ipfs/go-datastore/test"
)

// TestDatastoreSuite runs go-datastore's own conformance suite against a
// namespace's Datastore view.
func TestDatastoreSuite(t *testing.T) {
	n := cluster(t, 1, nil)[0]
	dstest.SubtestAll(t, mustNS(t, n, "ds").Datastore())
}

func TestDatastoreReplicates(t *testing.T) {
	ctx := context.Background()
	nodes := cluster(t, 2, nil)
	connect(t, nodes[0], nodes[1])
	a, b := mustNS(t, nodes[0], "ds").Datastore(), mustNS(t, nodes[1], "ds").Datastore()
	batch, _ := a.Batch(ctx)
	for _, k := range []string{"/blocks/1", "/blocks/2", "/meta"} {
		if err := batch.Put(ctx, ds.NewKey(k), []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the batch on the other node", 10*time.Second, func() bool {
		ok, _ := b.Has(ctx, ds.NewKey("/blocks/2"))
		return ok
	})
	v, err := b.Get(ctx, ds.NewKey("/meta"))
	if err != nil || string(v) != "/meta" {
		t.Fatalf("get: %q %v", v, err)
	}
}

// TestDatastoreBatchIsAllOrNothing: a batch with one write the node refuses
// applies none of its writes and can be fixed and committed again; a good
// batch is seen by readers all at once (found by review: writes were
// applied one by one, in map order, up to the first refused one).
func TestDatastoreBatchIsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	n := cluster(t, 1, nil)[0]
	ns := mustNS(t, n, "d")
	if err := ns.Counter("/taken").Add(ctx, 1); err != nil {
		t.Fatal(err)
	}
	d := ns.Datastore()
	b, err := d.Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := b.Put(ctx, ds.NewKey(fmt.Sprint("k", i)), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Put(ctx, ds.NewKey("taken"), []byte("v")); err != nil { // a counter's key
		t.Fatal(err)
	}
	before, _ := ns.Digest()
	if err := b.Commit(ctx); !errors.Is(err, ErrWrongType) {
		t.Fatalf("commit with a write on a counter: %v, want ErrWrongType", err)
	}
	if after, _ := ns.Digest(); after != before {
		t.Fatal("a refused batch applied some of its writes")
	}
	if err := b.Delete(ctx, ds.NewKey("taken")); err != nil {
		t.Fatal(err)
	}
	// Readers see the batch whole or not at all.
	stop := make(chan struct{})
	torn := make(chan int, 1)
	go func() {
		for {
			select {
			case <-stop:
				close(torn)
				return
			default:
			}
			if c := len(ns.Keys("/k", "", 0)); c != 0 && c != 50 {
				torn <- c
				return
			}
		}
	}()
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	close(stop)
	if c, ok := <-torn; ok {
		t.Fatalf("a reader saw %d of the batch's 50 keys", c)
	}
	if c := len(ns.Keys("/k", "", 0)); c != 50 {
		t.Fatalf("%d keys after the commit, want 50", c)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(ctx, ds.NewKey("/")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sync after Close: %v, want ErrClosed", err)
	}
}

// TestDatastoreEdges: fixes from a review of the datastore view. Deleting
// what is not there succeeds and changes nothing (no watch event), even
// for keys no register could hold; a query sees a batch all or none; a
// batch takes writes from many goroutines; a resume after Close is
// ErrClosed.
func TestDatastoreEdges(t *testing.T) {
	ctx := t.Context()
	n, ns, events := watchedNS(t, "ds")
	d := ns.Datastore()
	pos := ns.Position()
	for _, k := range []ds.Key{ds.NewKey("/never"), ds.NewKey(strings.Repeat("a", 2000)), ds.RawKey("/bad\xff")} {
		if err := d.Delete(ctx, k); err != nil {
			t.Fatalf("delete of missing %.20q: %v", k.String(), err)
		}
	}
	if err := ns.Delete(ctx, "/never"); err != nil {
		t.Fatal(err)
	}
	b, err := d.Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Delete(ctx, ds.NewKey(strings.Repeat("b", 2000)))
	if err := b.Commit(ctx); err != nil {
		t.Fatalf("batched delete of a missing key no register could hold: %v", err)
	}
	if ns.Position() != pos {
		t.Fatalf("deletes of nothing moved the position %d → %d", pos, ns.Position())
	}
	select {
	case ev := <-events:
		t.Fatalf("event for a delete of nothing: %+v", ev)
	default:
	}

	// Many writers into one batch, then queries racing batches that
	// rewrite every key: each query sees one generation only.
	const keys = 50
	write := func(gen int) {
		b, err := d.Batch(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		var wg sync.WaitGroup
		for i := range keys {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = b.Put(ctx, ds.NewKey(fmt.Sprintf("/k%02d", i)), []byte(fmt.Sprint(gen)))
			}()
		}
		wg.Wait()
		if err := b.Commit(ctx); err != nil {
			t.Error(err)
		}
	}
	write(0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for gen := 1; gen <= 30; gen++ {
			write(gen)
		}
	}()
	for queries := 0; ; queries++ {
		select {
		case <-done:
			if t.Failed() {
				t.FailNow()
			}
			goto closed
		default:
		}
		res, err := d.Query(ctx, query.Query{Prefix: "/"})
		if err != nil {
			t.Fatal(err)
		}
		all, err := res.Rest()
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, e := range all {
			seen[string(e.Value)] = true
		}
		if len(all) != keys || len(seen) != 1 {
			t.Fatalf("query %d saw %d keys of generations %v", queries, len(all), seen)
		}
	}
closed:
	p := ns.Position()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.WatchFrom(ctx, "", p); !errors.Is(err, ErrClosed) {
		t.Fatalf("WatchFrom after Close: %v", err)
	}
}
