package mycelbench

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mycelnet/mycel/bench"
	"github.com/mycelnet/mycel/bench/benchtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, benchtest.IgnoredGoroutines...) }

// TestSmoke runs every workload with a small K on real Mycel nodes (libp2p
// hosts on 127.0.0.1); see benchtest.Smoke.
func TestSmoke(t *testing.T) { benchtest.Smoke(t, System{}, 300) }

// TestName: results name the knobs set, so runs with different settings
// are not mixed up.
func TestName(t *testing.T) {
	for want, s := range map[string]System{
		"mycel":                           {},
		"mycel/mesh-degree=2":             {MeshDegree: 2},
		"mycel/mesh-degree=2,dlo=2":       {MeshDegree: 2, MeshDegreeLow: 2},
		"mycel/mesh-degree=2,dlo=2,flood": {MeshDegree: 2, MeshDegreeLow: 2, FloodPublish: true},
	} {
		if got := s.Name(); got != want {
			t.Errorf("%+v: name %q, want %q", s, got, want)
		}
	}
}

// TestDupFactor: the results give the gossip copies per delivery, between
// 1 (each node got each message once) and n: each of n nodes, the writer
// among them (a copy echoed back to it counts, with no delivery), gets at
// most one copy from each of the n-1 others. (An upper bound of n-1, which
// forgot the echoes, failed a CI run at 2.17.)
func TestDupFactor(t *testing.T) {
	p := bench.Params{Workload: bench.SingleWriter, N: 3, K: 200, Timeout: bench.Seconds(time.Minute)}
	res, err := bench.Run(context.Background(), System{}, p)
	if err != nil {
		t.Fatal(err)
	}
	if res.DupFactor < 1 || res.DupFactor > float64(p.N) {
		t.Fatalf("dup factor %v, want 1 to %d", res.DupFactor, p.N)
	}
}
