package node

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
)

// maxJitter makes redialBackoff's waits their largest (×1.5), minJitter
// their smallest (×0.5).
func maxJitter(n int64) int64 { return n - 1 }
func minJitter(int64) int64   { return 0 }

func TestRedialBackoffDoublesOnFailures(t *testing.T) {
	b := newRedialBackoff(8 * time.Second)
	var got []time.Duration
	for range 6 {
		got = append(got, b.failed(minJitter))
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second, 4 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("waits %v, want %v (×0.5 jitter)", got, want)
		}
	}
}

// A connection up for a long time is redialled within 1.5 s of its loss,
// however long it was up: the polling this replaced let the backoff grow
// while connected, to a wait of up to 1.5 MaxRedialBackoff.
func TestRedialAfterAStableConnectionIsPrompt(t *testing.T) {
	b := newRedialBackoff(time.Minute)
	t0 := time.Unix(1_700_000_000, 0)
	for range 4 {
		b.failed(minJitter) // the peer was down at first
	}
	b.connected(t0)
	b.connected(t0.Add(time.Hour)) // a wake-up while still connected
	if w := b.disconnected(t0.Add(2*time.Hour), maxJitter); w >= 1500*time.Millisecond {
		t.Fatalf("redial %v after losing a connection up for 2 h, want under 1.5 s", w)
	}
}

// A peer that drops each connection at once is not redialled in a loop.
func TestRedialAfterShortConnectionsBacksOff(t *testing.T) {
	b := newRedialBackoff(time.Minute)
	t0 := time.Unix(1_700_000_000, 0)
	var last time.Duration
	for i := range 8 {
		b.connected(t0)
		last = b.disconnected(t0.Add(100*time.Millisecond), minJitter)
		t0 = t0.Add(time.Minute)
		if i == 0 && last != 500*time.Millisecond {
			t.Fatalf("first redial %v, want 0.5 s", last)
		}
	}
	if last != 30*time.Second {
		t.Fatalf("redial after eight short connections %v, want the maximum's half (30 s, ×0.5 jitter)", last)
	}
}

// TestBootstrapPeerRedialledAfterItDrops: a node whose bootstrap peer
// closes the connection connects again, each time (real hosts on
// loopback). The peer is a bare libp2p host, which never dials back (a
// Mycel node would: its syncs dial the peers they pick). MaxRedialBackoff
// is an hour: nothing polls while connected, so each redial comes from the
// loss being noticed.
func TestBootstrapPeerRedialledAfterItDrops(t *testing.T) {
	boot, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer boot.Close()
	cfg := DefaultLocalConfig()
	cfg.Bootstrap = []string{boot.Addrs()[0].String() + "/p2p/" + boot.ID().String()}
	cfg.MaxRedialBackoff = time.Hour
	n, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	connected := func() bool { return boot.Network().Connectedness(n.ID()) == network.Connected }
	waitFor(t, "the first connection", 20*time.Second, connected)
	for range 3 {
		if err := boot.Network().ClosePeer(n.ID()); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the redial", 20*time.Second, connected)
	}
}
