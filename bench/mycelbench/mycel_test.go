package mycelbench

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/mycelnet/mycel/bench/benchtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, benchtest.IgnoredGoroutines...) }

// TestSmoke runs every workload with a small K on real Mycel nodes (libp2p
// hosts on 127.0.0.1); see benchtest.Smoke.
func TestSmoke(t *testing.T) { benchtest.Smoke(t, System{}, 300) }
