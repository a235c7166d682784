// Package benchtest holds what the systems plugged into the bench harness
// test alike: a smoke run of every workload, and the goroutines libp2p and
// its dependencies keep process-wide (for goleak). It is imported only by
// tests.
package benchtest

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mycelnet/mycel/bench"
)

// IgnoredGoroutines are process-wide workers of libp2p and its
// dependencies that outlive every node; goleak must not count them.
var IgnoredGoroutines = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
	goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/net/swarm.(*Swarm).dialWorkerLoop"),
	goleak.IgnoreAnyFunction("github.com/libp2p/go-flow-metrics.(*sweeper).run"),
	goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
	goleak.IgnoreAnyFunction("github.com/quic-go/quic-go.(*Transport).listen"),
	goleak.IgnoreTopFunction("github.com/jbenet/goprocess/periodic.callOnTicker.func1"),
	goleak.IgnoreAnyFunction("github.com/cockroachdb/pebble/v2/internal/cache.(*shard).releaseLoop"),
}

// Smoke runs every workload on sys with 3 nodes and k keys: each must
// converge, pass the harness's own count check and produce every figure it
// promises, labelled with sys's name. The variants cover both stores, both
// transports and the chain topology.
func Smoke(t *testing.T, sys bench.System, k int) {
	variants := map[string]bench.Params{
		bench.SingleWriter:  {Store: "pebble", Transport: "quic"},
		bench.MultiWriter:   {Topology: "chain"},
		bench.PartitionHeal: {},
		bench.LateJoiner:    {Store: "pebble"},
		bench.Sustained:     {Rate: 200, Duration: bench.Seconds(time.Second)},
	}
	for _, w := range bench.Workloads {
		t.Run(w, func(t *testing.T) {
			p := variants[w]
			p.Workload, p.N, p.K, p.Writers = w, 3, k, 8
			p.Timeout = bench.Seconds(time.Minute)
			res, err := bench.Run(context.Background(), sys, p)
			if err != nil {
				t.Fatal(err)
			}
			if m := res.Missing(); len(m) > 0 {
				t.Fatalf("figures missing or zero: %v\n%+v", m, res)
			}
			if res.System != sys.Name() || res.Store != p.WithDefaults().Store {
				t.Errorf("result labelled %s/%s", res.System, res.Store)
			}
		})
	}
}
