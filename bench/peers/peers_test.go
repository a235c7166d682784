package main

import (
	"testing"

	ds "github.com/ipfs/go-datastore"
	"go.uber.org/goleak"

	"github.com/mycelnet/mycel/bench/benchtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, benchtest.IgnoredGoroutines...) }

// TestSmoke runs every workload with a small K on real go-ds-crdt replicas
// (libp2p hosts on 127.0.0.1, gossipsub, bitswap); see benchtest.Smoke.
func TestSmoke(t *testing.T) { benchtest.Smoke(t, crdtSystem{}, 200) }

// TestKeyName checks that the harness's keys round-trip through
// go-ds-crdt's keys.
func TestKeyName(t *testing.T) {
	for _, k := range []string{"k00-00000001", "warm-0-1"} {
		if got := keyName(ds.NewKey(k)); got != k {
			t.Errorf("keyName(NewKey(%q)) = %q", k, got)
		}
	}
}
