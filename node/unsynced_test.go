package node

import (
	"testing"

	"github.com/mycelnet/mycel/store"
)

// TestUnsyncedBatchesWaitForTheirSync: local batches committed without a
// sync are published only once the store reports them durable, in commit
// order; synced ones, and unsynced ones the store already covered, go at
// once.
func TestUnsyncedBatchesWaitForTheirSync(t *testing.T) {
	var u unsyncedBatches
	c := func(report uint64, synced bool) store.Commit {
		return store.Commit{Report: report, Synced: synced, Seq: report}
	}
	for _, r := range []uint64{1, 2, 3} {
		if u.hold(c(r, false)) {
			t.Fatalf("unsynced commit %d published at once", r)
		}
	}
	if !u.hold(c(4, true)) {
		t.Fatal("a synced commit was held")
	}
	got := u.release(2)
	if len(got) != 2 || got[0].Report != 1 || got[1].Report != 2 {
		t.Fatalf("release(2) = %v", got)
	}
	if got := u.release(1); len(got) != 0 { // out of order: covers nothing new
		t.Fatalf("release(1) after release(2) = %v", got)
	}
	// Reported after the store's sync already covered it.
	if !u.hold(c(2, false)) {
		t.Fatal("a commit under the synced mark was held")
	}
	if got := u.release(10); len(got) != 1 || got[0].Report != 3 {
		t.Fatalf("release(10) = %v", got)
	}
	if len(u.held) != 0 {
		t.Fatalf("%d still held", len(u.held))
	}
}
