package sim

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that runs outside synctest bubbles (real time) stop
// every goroutine too; inside a bubble synctest itself checks that.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Process-wide workers of libp2p dependencies, started once per
		// process and owned by no node (as in node's TestMain).
		goleak.IgnoreTopFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}
