package main

import (
	"context"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"go.uber.org/goleak"

	"github.com/mycelnet/mycel/bench"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// libp2p and its dependencies keep a few process-wide workers.
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/net/swarm.(*Swarm).dialWorkerLoop"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-flow-metrics.(*sweeper).run"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		goleak.IgnoreAnyFunction("github.com/quic-go/quic-go.(*Transport).listen"),
		goleak.IgnoreTopFunction("github.com/jbenet/goprocess/periodic.callOnTicker.func1"),
		goleak.IgnoreAnyFunction("github.com/cockroachdb/pebble/v2/internal/cache.(*shard).releaseLoop"),
	)
}

// TestSmoke runs every workload with a small K on real go-ds-crdt replicas
// (libp2p hosts on 127.0.0.1, gossipsub, bitswap): each must converge, pass
// the harness's own count check, and produce every figure it promises.
// Both stores and transports and the chain topology are covered.
func TestSmoke(t *testing.T) {
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
			p.Workload, p.N, p.K, p.Writers = w, 3, 200, 8
			p.Timeout = bench.Seconds(time.Minute)
			res, err := bench.Run(context.Background(), crdtSystem{}, p)
			if err != nil {
				t.Fatal(err)
			}
			if m := res.Missing(); len(m) > 0 {
				t.Fatalf("figures missing or zero: %v\n%+v", m, res)
			}
			if res.System != "go-ds-crdt" || res.Store != p.WithDefaults().Store {
				t.Errorf("result labelled %s/%s", res.System, res.Store)
			}
		})
	}
}

// TestKeyName checks that the harness's keys round-trip through
// go-ds-crdt's keys.
func TestKeyName(t *testing.T) {
	for _, k := range []string{"k00-00000001", "warm-0-1"} {
		if got := keyName(ds.NewKey(k)); got != k {
			t.Errorf("keyName(NewKey(%q)) = %q", k, got)
		}
	}
}
