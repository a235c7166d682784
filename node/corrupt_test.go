package node

import (
	"context"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
)

// TestCorruptLogEntryServedAsCompacted: a node whose log holds an entry it
// cannot read still brings a new peer up to date: sync serves that entry
// as compacted, and the peer reconciles state. (As an error it failed every
// sync session that reached it, and the peer never caught up.)
func TestCorruptLogEntryServedAsCompacted(t *testing.T) {
	ctx := context.Background()
	disk := dssync.MutexWrap(ds.NewMapDatastore())
	a, err := Open(ctx, DefaultLocalConfig(), WithDatastore(disk))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	ns := mustNS(t, a, "c")
	for i := range 40 {
		if err := ns.Put(ctx, fmt.Sprint("k", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	// Garble a log entry in the middle (the store's layout: /ns/<hex
	// name>/l/<origin>/<seq>).
	res, err := disk.Query(ctx, query.Query{Prefix: "/ns/" + hex.EncodeToString([]byte("c")) + "/l", KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := res.Rest()
	if err != nil || len(entries) < 10 {
		t.Fatalf("log entries: %d (%v)", len(entries), err)
	}
	if err := disk.Put(ctx, ds.NewKey(entries[len(entries)/2].Key), []byte{0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	b := cluster(t, 1, nil)[0]
	mustNS(t, b, "c")
	connect(t, b, a)
	waitConverged(t, []*Node{a, b}, "c", 40, 30*time.Second)
}
