package node

import (
	"context"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
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
