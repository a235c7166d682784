package node

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	p2ptest "github.com/libp2p/go-libp2p/core/test"
	"github.com/multiformats/go-multiaddr"
)

// A restarted node dials the peers it was connected to, though none of
// them is a bootstrap peer of it and none dials it: it hears of the writes
// made while it was down at once, not when some peer's redial comes round.
func TestRestartDialsKnownPeers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := cluster(t, 1, nil)[0]
	b := cluster(t, 1, func(_ int, c *Config) { c.DataDir = dir })[0]
	connect(t, a, b)
	if err := mustNS(t, a, "ns").Put(ctx, "before", []byte("1")); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, []*Node{a, b}, "ns", 1, 20*time.Second)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := mustNS(t, a, "ns").Put(ctx, "while down", []byte("2")); err != nil {
		t.Fatal(err)
	}
	back := cluster(t, 1, func(_ int, c *Config) { c.DataDir = dir })[0]
	waitFor(t, "the restarted node to dial its known peer", 20*time.Second, func() bool {
		return back.Host().Network().Connectedness(a.ID()) == network.Connected
	})
	waitConverged(t, []*Node{a, back}, "ns", 2, 20*time.Second)
}

// A known-peers record that does not decode is ignored (the node starts
// and works) and replaced by a sound one.
func TestBadKnownPeersRecordIsReplaced(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b := cluster(t, 1, func(_ int, c *Config) { c.DataDir = dir })[0]
	if err := b.st.PutMeta(ctx, knownPeersMeta, []byte(`[{"id":"not a peer","addrs":["/ip4/127.0.0.1/tcp/1"]}]`)); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil { // no peer connected: the record stays
		t.Fatal(err)
	}
	a := cluster(t, 1, nil)[0]
	back := cluster(t, 1, func(_ int, c *Config) { c.DataDir = dir })[0]
	connect(t, back, a)
	if err := back.Close(); err != nil {
		t.Fatal(err)
	}
	again := cluster(t, 1, func(_ int, c *Config) { c.DataDir = dir })[0]
	rec, ok, err := again.st.GetMeta(ctx, knownPeersMeta)
	if err != nil || !ok {
		t.Fatalf("record: ok %v, %v", ok, err)
	}
	peers, err := decodeKnownPeers(rec)
	if err != nil || len(peers) != 1 || peers[0].ID != a.ID() {
		t.Fatalf("record %s: %v, %v", rec, peers, err)
	}
	waitFor(t, "the node to dial the peer of the record", 20*time.Second, func() bool {
		return again.Host().Network().Connectedness(a.ID()) == network.Connected
	})
}

// TestForgetPeersRemovesTheRecord: a node started with ForgetPeers
// neither dials the peers an earlier run kept nor keeps their record, and
// keeps none while it runs.
func TestForgetPeersRemovesTheRecord(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := cluster(t, 1, nil)[0]
	b := cluster(t, 1, func(_ int, c *Config) { c.DataDir = dir })[0]
	connect(t, b, a)
	if err := b.Close(); err != nil { // a clean close writes the record
		t.Fatal(err)
	}
	forgets := cluster(t, 1, func(_ int, c *Config) { c.DataDir = dir; c.ForgetPeers = true })[0]
	if _, ok, err := forgets.st.GetMeta(ctx, knownPeersMeta); err != nil || ok {
		t.Fatalf("record after a start with ForgetPeers: ok %v, %v", ok, err)
	}
	connect(t, forgets, a)
	if err := forgets.Close(); err != nil {
		t.Fatal(err)
	}
	again := cluster(t, 1, func(_ int, c *Config) { c.DataDir = dir; c.ForgetPeers = true })[0]
	if _, ok, err := again.st.GetMeta(ctx, knownPeersMeta); err != nil || ok {
		t.Fatalf("record after a run with ForgetPeers: ok %v, %v", ok, err)
	}
}

func TestDecodeKnownPeers(t *testing.T) {
	id := p2ptest.RandPeerIDFatal(t)
	addr := "/ip4/127.0.0.1/tcp/4001"
	good := `[{"id":"` + id.String() + `","addrs":["` + addr + `"]}]`
	peers, err := decodeKnownPeers([]byte(good))
	if err != nil || len(peers) != 1 || peers[0].ID != id || peers[0].Addrs[0].String() != addr {
		t.Fatalf("good record: %v, %v", peers, err)
	}
	if back := encodeKnownPeers(peers); string(back) != good {
		t.Fatalf("encoded again: %s", back)
	}
	many := make([]string, maxKnownAddrs+1)
	for i := range many {
		many[i] = `"` + addr + `"`
	}
	for name, rec := range map[string]string{
		"not json":        `{`,
		"not a list":      `{"id":"x"}`,
		"other field":     `[{"id":"` + id.String() + `","addrs":["` + addr + `"],"x":1}]`,
		"bad id":          `[{"id":"nope","addrs":["` + addr + `"]}]`,
		"bad address":     `[{"id":"` + id.String() + `","addrs":["/ip4/999.0.0.1/tcp/1"]}]`,
		"no address":      `[{"id":"` + id.String() + `","addrs":[]}]`,
		"many addresses":  `[{"id":"` + id.String() + `","addrs":[` + strings.Join(many, ",") + `]}]`,
		"twice":           `[` + good[1:len(good)-1] + `,` + good[1:len(good)-1] + `]`,
		"trailing data":   good + `[]`,
		"too many peers":  `[` + strings.Repeat(`{"id":"`+id.String()+`","addrs":["`+addr+`"]},`, maxKnownPeers) + good[1:],
		"too many bytes":  `[` + strings.Repeat(" ", maxKnownPeersBytes) + `]`,
		"null entry addr": `[{"id":"` + id.String() + `","addrs":null}]`,
	} {
		if peers, err := decodeKnownPeers([]byte(rec)); err == nil {
			t.Errorf("%s: decoded %v", name, peers)
		}
	}
}

// FuzzKnownPeers: the known-peers record is read from disk. No input
// panics; whatever decodes is within the bounds and encodes to a record
// that decodes to the same peers.
func FuzzKnownPeers(f *testing.F) {
	id := "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp"
	f.Add([]byte(`[{"id":"` + id + `","addrs":["/ip4/127.0.0.1/tcp/4001","/ip6/::1/udp/4001/quic-v1"]}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[{"id":"` + id + `","addrs":["/dns4/example.com/tcp/1"]},{"id":"x","addrs":[]}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		peers, err := decodeKnownPeers(b)
		if err != nil {
			return
		}
		if len(peers) > maxKnownPeers {
			t.Fatalf("%d peers", len(peers))
		}
		for _, ai := range peers {
			if len(ai.Addrs) == 0 || len(ai.Addrs) > maxKnownAddrs {
				t.Fatalf("%d addresses", len(ai.Addrs))
			}
		}
		again, err := decodeKnownPeers(encodeKnownPeers(peers))
		if err != nil {
			t.Fatalf("re-encoded record refused: %v", err)
		}
		if !slices.EqualFunc(peers, again, func(x, y peer.AddrInfo) bool {
			return x.ID == y.ID && slices.EqualFunc(x.Addrs, y.Addrs, func(p, q multiaddr.Multiaddr) bool { return p.Equal(q) })
		}) {
			t.Fatalf("round trip: %v, then %v", peers, again)
		}
	})
}

// The record is written while the node runs, not only at a clean close: a
// node whose network went first (as in a crash) still finds its peer
// after the restart.
func TestKnownPeersRecordedWhileRunning(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := cluster(t, 1, nil)[0]
	b := cluster(t, 1, func(_ int, c *Config) { c.DataDir = dir })[0]
	connect(t, a, b)
	waitFor(t, "the known-peers record", 4*knownPeersEvery, func() bool {
		rec, ok, err := b.st.GetMeta(ctx, knownPeersMeta)
		if err != nil || !ok {
			return false
		}
		peers, err := decodeKnownPeers(rec)
		return err == nil && len(peers) == 1 && peers[0].ID == a.ID()
	})
	_ = b.Host().Network().Close() // the connections go first, as in a crash
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	back := cluster(t, 1, func(_ int, c *Config) { c.DataDir = dir })[0]
	waitFor(t, "the restarted node to dial its known peer", 20*time.Second, func() bool {
		return back.Host().Network().Connectedness(a.ID()) == network.Connected
	})
}
