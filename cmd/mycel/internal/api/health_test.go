package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/mycelnet/mycel/node"
)

// brokenDisk is a datastore whose writes start failing when broken is set,
// as a full or failing disk's would.
type brokenDisk struct {
	ds.Batching
	broken atomic.Bool
}

var errDisk = errors.New("the disk refused the write")

func (d *brokenDisk) Batch(ctx context.Context) (ds.Batch, error) {
	b, err := d.Batching.Batch(ctx)
	return brokenBatch{b, d}, err
}

func (d *brokenDisk) Sync(ctx context.Context, k ds.Key) error {
	if d.broken.Load() {
		return errDisk
	}
	return d.Batching.Sync(ctx, k)
}

type brokenBatch struct {
	ds.Batch
	d *brokenDisk
}

func (b brokenBatch) Commit(ctx context.Context) error {
	if b.d.broken.Load() {
		return errDisk
	}
	return b.Batch.Commit(ctx)
}

// TestHealthzReportsAFailedStore: /healthz answers 503 with the reason once
// the node's store has failed (here, a write the disk refused), so that a
// supervisor restarts a node that can no longer take writes.
func TestHealthzReportsAFailedStore(t *testing.T) {
	disk := &brokenDisk{Batching: dssync.MutexWrap(ds.NewMapDatastore())}
	_, _, hs := serveOnLoopback(t, Options{}, node.WithDatastore(disk))
	health := func() (int, map[string]string) {
		t.Helper()
		resp, err := http.Get(hs.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	put := func() int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, hs.URL+"/v1/ns/t/kv/k", strings.NewReader("v"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := put(); code != http.StatusNoContent {
		t.Fatalf("put: %d", code)
	}
	if code, body := health(); code != http.StatusOK || body["status"] != "ok" {
		t.Fatalf("healthz of a sound node: %d %v", code, body)
	}
	disk.broken.Store(true)
	if code := put(); code < 500 {
		t.Fatalf("put to a broken disk: %d", code)
	}
	code, body := health()
	if code != http.StatusServiceUnavailable || body["status"] != "failed" || !strings.Contains(body["error"], errDisk.Error()) {
		t.Fatalf("healthz of a node whose store failed: %d %v", code, body)
	}
}
