package node

import (
	"slices"
	"testing"

	"github.com/mycelnet/mycel/store"
)

// TestUnsyncedBatchesWaitForTheirSync: local batches committed without a
// sync are published only once the store reports them durable, and always
// in commit order: a synced commit (which makes every earlier one durable)
// first releases the held ones (found by review: publishing out of order
// made receivers refuse the whole message).
func TestUnsyncedBatchesWaitForTheirSync(t *testing.T) {
	var u unsyncedBatches
	var out []uint64
	publish := func(c store.Commit) { out = append(out, c.Report) }
	c := func(report uint64, synced bool) store.Commit {
		return store.Commit{Report: report, Synced: synced, Seq: report}
	}
	for _, r := range []uint64{1, 2, 3} {
		u.hold(c(r, false), publish)
	}
	if len(out) != 0 {
		t.Fatalf("unsynced commits published at once: %v", out)
	}
	u.release(1, publish)
	if !slices.Equal(out, []uint64{1}) {
		t.Fatalf("release(1): %v", out)
	}
	u.hold(c(4, true), publish) // synced: 2 and 3 go first
	if !slices.Equal(out, []uint64{1, 2, 3, 4}) {
		t.Fatalf("after a synced commit: %v", out)
	}
	u.release(2, publish) // out of order: covers nothing new
	u.hold(c(5, false), publish)
	u.release(6, publish)
	u.hold(c(6, false), publish) // the store's mark covered it already
	if !slices.Equal(out, []uint64{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("in the end: %v", out)
	}
	if len(u.held) != 0 {
		t.Fatalf("%d still held", len(u.held))
	}
}
