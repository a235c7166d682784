package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/gossip"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

// TestHostilePeer joins a raw libp2p peer to a namespace topic and has it
// publish garbage, an oversized message, batches claiming another origin, a
// replayed message and batches holding another replica's dots, and send
// garbage on the sync protocol. Nothing may be applied; every rejection is
// counted; the node keeps working.
// evilPeer starts a raw libp2p host with gossipsub, joins namespace ns's
// topic and waits until victim is a topic peer of it. signed builds what
// it publishes.
func evilPeer(t *testing.T, ctx context.Context, victim *Node, ns string, opts ...libp2p.Option) (host.Host, *pubsub.Topic) {
	t.Helper()
	evil, err := libp2p.New(append([]libp2p.Option{libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { evil.Close() })
	ps, err := pubsub.NewGossipSub(ctx, evil, append(gossip.PubSubOptions(gossip.Limits{}), pubsub.WithMaxMessageSize(16<<20))...)
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(gossip.TopicName(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { topic.Close() })
	if err := evil.Connect(ctx, peer.AddrInfo{ID: victim.ID(), Addrs: victim.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the victim in the evil peer's topic", 10*time.Second, func() bool {
		for _, p := range topic.ListPeers() {
			if p == victim.ID() {
				return true
			}
		}
		return false
	})
	return evil, topic
}

// signed encodes a gossip message of origin's batches in namespace ns,
// signed (as a group) by h's key, whoever origin is.
func signed(t *testing.T, h host.Host, ns string, origin crdt.ReplicaID, batches ...gossip.Batch) []byte {
	t.Helper()
	m := gossip.Message{Origin: origin, Batches: batches}
	if err := m.Sign(ns, h.Peerstore().PrivKey(h.ID())); err != nil {
		t.Fatal(err)
	}
	return m.Encode(nil)
}

// victimPair starts two connected nodes with namespace "h" open on both,
// for an evil peer to attack the first.
func victimPair(t *testing.T) ([]*Node, *Namespace, *Namespace) {
	t.Helper()
	victim := cluster(t, 2, nil)
	connect(t, victim[0], victim[1])
	return victim, mustNS(t, victim[0], "h"), mustNS(t, victim[1], "h")
}

// TestContextFarAheadIsIgnored: a peer publishing, in its own name, a batch
// whose context claims all of another replica's writes to come (which would
// make receivers drop that replica's next writes as removed and leave it no
// dot counter) is ignored; the named replica keeps writing and replicating.
func TestContextFarAheadIsIgnored(t *testing.T) {
	ctx := t.Context()
	victim, ns, writer := victimPair(t)
	if err := writer.Put(ctx, "k", []byte("1")); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, victim, "h", 1, 10*time.Second)
	evil, topic := evilPeer(t, ctx, victim[0], "h")

	var all crdt.Context
	all.AddRange(victim[1].Replica(), 1, math.MaxUint64)
	d := crdt.ContextDelta(all)
	origin := crdt.DeriveReplicaID([]byte(evil.ID()))
	st := victim[0].Stats()
	for seq := uint64(1); seq <= 3; seq++ {
		m := signed(t, evil, "h", origin, gossip.Batch{Origin: origin, Seq: seq, Delta: d, Encoded: d.Encode(nil)})
		if err := topic.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the batch to be ignored", 10*time.Second, func() bool { return st.IgnoredAhead.Load() >= 1 })
	if err := writer.Put(ctx, "k", []byte("2")); err != nil {
		t.Fatalf("the named replica cannot write: %v", err)
	}
	waitFor(t, "the named replica's next write to arrive", 10*time.Second, func() bool {
		v, err := ns.Get(ctx, "k")
		return err == nil && string(v) == "2"
	})
	waitConverged(t, victim, "h", 1, 10*time.Second)
}

func TestHostilePeer(t *testing.T) {
	ctx := t.Context()
	victim, ns, _ := victimPair(t)
	if err := ns.Put(ctx, "legit", []byte("1")); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, victim, "h", 1, 10*time.Second)
	before, _ := ns.Digest()

	evil, topic := evilPeer(t, ctx, victim[0], "h")

	// A valid-looking batch from the victim's own replica, to claim and replay.
	src := crdt.NewNamespace(crdt.Limits{})
	d, _ := src.Prepare(crdt.Op{Kind: crdt.OpPut, Key: "stolen", Value: []byte("x")}, victim[1].Replica(), crdt.Timestamp{Wall: 1})
	claimed := signed(t, evil, "h", victim[1].Replica(), gossip.Batch{Origin: victim[1].Replica(), Seq: 99, Delta: d, Encoded: d.Encode(nil)})
	// Batches in the evil peer's own name but holding another replica's dots.
	self := crdt.DeriveReplicaID([]byte(evil.ID()))
	foreignDots := signed(t, evil, "h", self, gossip.Batch{Origin: self, Seq: 1, Delta: d, Encoded: d.Encode(nil)})
	// A batch of its own, but signed for another namespace, and one unsigned.
	own, _ := crdt.NewNamespace(crdt.Limits{}).Prepare(crdt.Op{Kind: crdt.OpPut, Key: "own", Value: []byte("x")}, self, crdt.Timestamp{Wall: 1})
	ownBatch := gossip.Batch{Origin: self, Seq: 1, Delta: own, Encoded: own.Encode(nil)}
	wrongNS := signed(t, evil, "elsewhere", self, ownBatch)
	unsigned := (&gossip.Message{Origin: self, Batches: []gossip.Batch{ownBatch}}).Encode(nil)
	garbage := make([]byte, 300)
	rand.Read(garbage)
	oversized := append(bytes.Repeat([]byte{0x09}, 1), make([]byte, 4<<20+100)...)

	st := victim[0].Stats()
	for _, payload := range [][]byte{garbage, oversized, claimed, claimed, foreignDots, wrongNS, unsigned} {
		if err := topic.Publish(ctx, payload); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "rejections to be counted", 10*time.Second, func() bool {
		return st.RejectMalformed.Load() >= 3 && st.RejectOrigin.Load() >= 1 && st.RejectForged.Load() >= 2
	})

	// Garbage on the sync protocol.
	for _, junk := range [][]byte{garbage, {0x0a, 0x02, 'h'}} {
		s, err := evil.NewStream(ctx, victim[0].ID(), gossip.ProtocolSync)
		if err != nil {
			t.Fatal(err)
		}
		_ = msgio.NewVarintWriter(s).WriteMsg(junk)
		_ = s.CloseWrite()
		buf := make([]byte, 1)
		_, _ = s.Read(buf) // the node resets the stream
		s.Close()
	}
	waitFor(t, "sync garbage to be counted", 10*time.Second, func() bool { return st.RejectMalformed.Load() >= 5 })

	after, _ := ns.Digest()
	if after != before {
		t.Fatal("hostile input changed the replica")
	}
	if _, err := ns.Get(ctx, "stolen"); err != ErrNotFound {
		t.Fatal("a batch claiming another origin was applied")
	}
	if _, err := ns.Get(ctx, "own"); err != ErrNotFound {
		t.Fatal("a batch whose message signature does not verify was applied")
	}
	// The node still replicates.
	if err := ns.Put(ctx, "after", []byte("2")); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, victim, "h", 2, 10*time.Second)
}

func TestPSKMismatchCannotConnect(t *testing.T) {
	keyA, keyB := make([]byte, 32), make([]byte, 32)
	rand.Read(keyA)
	rand.Read(keyB)
	nodes := cluster(t, 3, func(i int, c *Config) {
		c.PSK = keyA
		if i == 2 {
			c.PSK = keyB
		}
		c.Listen = append(c.Listen, "/ip4/127.0.0.1/udp/0/quic-v1") // dropped with a PSK
	})
	for _, n := range nodes {
		for _, a := range n.Addrs() {
			if bytes.Contains([]byte(a), []byte("quic")) {
				t.Fatalf("a node with a PSK listens on QUIC: %s", a)
			}
		}
	}
	connect(t, nodes[0], nodes[1])
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := nodes[0].Connect(ctx, nodes[2].Addrs()[0]); err == nil {
		t.Fatal("nodes with different pre-shared keys connected")
	}
}

func TestWriterAllowlist(t *testing.T) {
	ctx := context.Background()
	nodes := cluster(t, 3, nil)
	writers := []peer.ID{nodes[0].ID(), nodes[1].ID()}
	// Peer ids are known only once the nodes exist; the allowlist is read
	// when a namespace is opened, which happens below.
	for _, n := range nodes {
		n.cfg.Writers = map[string][]peer.ID{"w": writers}
	}
	mesh(t, nodes)
	for _, n := range nodes {
		mustNS(t, n, "w")
	}
	if err := mustNS(t, nodes[0], "w").Put(ctx, "by-writer", []byte("ok")); err != nil {
		t.Fatal(err)
	}
	if err := mustNS(t, nodes[2], "w").Put(ctx, "by-outsider", []byte("no")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the writer's key everywhere", 10*time.Second, func() bool {
		_, err := mustNS(t, nodes[2], "w").Get(ctx, "by-writer")
		_, err1 := mustNS(t, nodes[1], "w").Get(ctx, "by-writer")
		return err == nil && err1 == nil
	})
	waitFor(t, "the outsider's batches refused", 10*time.Second, func() bool {
		return nodes[0].Stats().RejectNotWriter.Load() > 0 && nodes[1].Stats().RejectNotWriter.Load() > 0
	})
	// Also through sync: force sessions both ways.
	for _, n := range nodes[:2] {
		if err := n.SyncWith(ctx, nodes[2].ID()); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes[:2] {
		if _, err := mustNS(t, n, "w").Get(ctx, "by-outsider"); err != ErrNotFound {
			t.Fatalf("a non-writer's write was applied: %v", err)
		}
	}
}

// TestSyncFloodIsRateLimited: a peer opening sync sessions as fast as it
// can is refused past its budget, and the node keeps serving others.
func TestSyncFloodIsRateLimited(t *testing.T) {
	ctx := context.Background()
	victim := cluster(t, 1, nil)[0]
	mustNS(t, victim, "f")
	evil, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer evil.Close()
	if err := evil.Connect(ctx, peer.AddrInfo{ID: victim.ID(), Addrs: victim.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	hello := []byte{0x0a, 0x05, 0x0a, 0x01, 'f', 0x12, 0x00} // Hello{ns: "f", seen: {}}
	for i := 0; i < 60; i++ {
		s, err := evil.NewStream(ctx, victim.ID(), gossip.ProtocolSync)
		if err != nil {
			continue
		}
		_ = msgio.NewVarintWriter(s).WriteMsg(hello)
		buf := make([]byte, 64)
		_, _ = s.Read(buf)
		s.Reset()
	}
	if victim.Stats().SyncRefused.Load() == 0 {
		t.Fatal("60 back-to-back sync sessions from one peer were all served")
	}
	// Another peer is still served.
	other := cluster(t, 1, nil)[0]
	mustNS(t, other, "f")
	connect(t, other, victim)
	if err := other.SyncWith(ctx, victim.ID()); err != nil {
		t.Fatalf("an honest peer was refused: %v", err)
	}
}

func TestPeerAllowlist(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	friends := cluster(t, 2, nil)
	guarded := cluster(t, 1, func(_ int, c *Config) { c.AllowPeers = []peer.ID{friends[0].ID()} })[0]
	if err := friends[0].Connect(ctx, guarded.Addrs()[0]); err != nil {
		t.Fatalf("an allowed peer could not connect: %v", err)
	}
	// The dialer may finish its side of the handshake before the guarded
	// node's gater refuses the secured connection; what matters is that no
	// connection survives and no stream can be opened.
	_ = friends[1].Connect(ctx, guarded.Addrs()[0])
	waitFor(t, "the refused connection to close", 10*time.Second, func() bool {
		return len(guarded.Host().Network().ConnsToPeer(friends[1].ID())) == 0 &&
			len(friends[1].Host().Network().ConnsToPeer(guarded.ID())) == 0
	})
	mustNS(t, guarded, "g")
	mustNS(t, friends[1], "g")
	if err := friends[1].SyncWith(ctx, guarded.ID()); err == nil {
		t.Fatal("a peer outside the allowlist could sync")
	}
	if err := guarded.Connect(ctx, friends[1].Addrs()[0]); err == nil {
		t.Fatal("the guarded node dialled a peer outside its allowlist")
	}
}

// TestCloseDuringStalledSync: a peer accepts sync streams and then says
// nothing, and another opens a session with the node and says nothing —
// what a blackholed link looks like. Close must not wait for the sessions'
// 30 s deadline: it resets them and returns.
func TestCloseDuringStalledSync(t *testing.T) {
	ctx := context.Background()
	n := cluster(t, 1, nil)[0]
	mustNS(t, n, "s")
	mute, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	accepted := make(chan struct{}, 8)
	release := make(chan struct{})
	defer close(release)
	mute.SetStreamHandler(gossip.ProtocolSync, func(s network.Stream) {
		accepted <- struct{}{}
		<-release // read nothing, answer nothing
		s.Reset()
	})
	if err := n.Connect(ctx, mute.Addrs()[0].String()+"/p2p/"+mute.ID().String()); err != nil {
		t.Fatal(err)
	}
	// A server-side session the node holds open: a Hello-less stream.
	in, err := mute.NewStream(ctx, n.ID(), gossip.ProtocolSync)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Reset()
	go func() { _ = n.SyncWith(ctx, mute.ID()) }() // the client side stalls
	select {
	case <-accepted:
	case <-time.After(30 * time.Second):
		t.Fatal("the node never opened a sync stream")
	}
	start := time.Now()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("Close took %v with stalled sync sessions", el)
	}
}

// TestForgedSyncBatchRefused: a peer serving sync can relay any origin's
// batches, so it could serve a batch stamped with a real writer's origin
// and next sequence number. Without the origin's signature the client
// would apply it and then drop the writer's genuine batch as already seen.
// Unsigned, wrongly signed and misattributed batches are refused, and the
// genuine one still applies.
func TestForgedSyncBatchRefused(t *testing.T) {
	ctx := context.Background()
	nodes := cluster(t, 2, nil)
	writer, client := nodes[0], nodes[1]
	mustNS(t, writer, "x")
	mustNS(t, client, "x")
	evil, d := newRelayer(t, writer)
	origin := writer.Replica()
	enc := d.Encode(nil)
	// A well-formed auth, but made with the evil peer's key.
	evilSigned := []gossip.Batch{{Origin: origin, Seq: 1, Delta: d, Encoded: enc}}
	if err := gossip.SignBatches("x", evil.Peerstore().PrivKey(evil.ID()), evilSigned); err != nil {
		t.Fatal(err)
	}
	evilSig := evilSigned[0].Sig
	batchFrame := func(signer, sig []byte) []byte { return syncBatchFrame(origin, 1, enc, signer, sig) }
	serveSyncFrames(t, evil, client,
		batchFrame(nil, nil),                     // unsigned
		batchFrame([]byte(evil.ID()), evilSig),   // signed by its relayer
		batchFrame([]byte(writer.ID()), evilSig), // attributed to the writer, not signed by it
	)
	if n := client.Stats().RejectForged.Load(); n < 3 {
		t.Fatalf("%d forged batches refused, want 3", n)
	}
	if _, err := mustNS(t, client, "x").Get(ctx, "k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a forged batch was applied: %v", err)
	}
	// The writer's genuine first batch still reaches the client.
	putGenuineAndWait(t, writer, client)
}

// newRelayer starts a libp2p host for a test to serve hand-made sync
// frames from, and makes a forged first put of writer's for it to relay.
func newRelayer(t *testing.T, writer *Node) (host.Host, crdt.Delta) {
	t.Helper()
	evil, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { evil.Close() })
	d, err := crdt.NewNamespace(crdt.Limits{}).Prepare(crdt.Op{Kind: crdt.OpPut, Key: "k", Value: []byte("forged")}, writer.Replica(), crdt.Timestamp{Wall: 1})
	if err != nil {
		t.Fatal(err)
	}
	return evil, d
}

// putGenuineAndWait has writer put "genuine" under k in namespace x,
// connects client to it and waits until client holds the value.
func putGenuineAndWait(t *testing.T, writer, client *Node) {
	t.Helper()
	ctx := context.Background()
	if err := mustNS(t, writer, "x").Put(ctx, "k", []byte("genuine")); err != nil {
		t.Fatal(err)
	}
	connect(t, client, writer)
	waitFor(t, "the genuine write on the client", 20*time.Second, func() bool {
		v, err := mustNS(t, client, "x").Get(ctx, "k")
		return err == nil && string(v) == "genuine"
	})
}

// syncBatchFrame is a sync batch frame as a server writes it (signer and
// sig left out when sig is nil).
func syncBatchFrame(origin crdt.ReplicaID, seq uint64, enc, signer, sig []byte) []byte {
	var body []byte
	body = protowire.AppendTag(body, 1, protowire.Fixed64Type)
	body = protowire.AppendFixed64(body, uint64(origin))
	body = protowire.AppendTag(body, 2, protowire.VarintType)
	body = protowire.AppendVarint(body, seq)
	body = protowire.AppendTag(body, 3, protowire.BytesType)
	body = protowire.AppendBytes(body, enc)
	if sig != nil {
		body = protowire.AppendTag(body, 4, protowire.BytesType)
		body = protowire.AppendBytes(body, signer)
		body = protowire.AppendTag(body, 5, protowire.BytesType)
		body = protowire.AppendBytes(body, sig)
	}
	return protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), body)
}

// serveSyncFrames makes server answer every sync hello with frames and a
// done frame, and has client sync with it once.
func serveSyncFrames(t *testing.T, server host.Host, client *Node, frames ...[]byte) {
	t.Helper()
	done := protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), nil)
	server.SetStreamHandler(gossip.ProtocolSync, func(s network.Stream) {
		defer s.Close()
		r, w := msgio.NewVarintReaderSize(s, 1<<20), msgio.NewVarintWriter(s)
		if _, err := r.ReadMsg(); err != nil { // the client's hello
			return
		}
		for _, f := range append(frames, done) {
			if err := w.WriteMsg(f); err != nil {
				return
			}
		}
	})
	ctx := context.Background()
	if err := client.Connect(ctx, server.Addrs()[0].String()+"/p2p/"+server.ID().String()); err != nil {
		t.Fatal(err)
	}
	if err := client.SyncWith(ctx, server.ID()); err != nil {
		t.Fatal(err)
	}
}

// TestSyncSkipsBatchesHeld: a batch a sync server relays that the client
// applied already is neither checked nor applied again: here a copy of the
// writer's first batch with a signature that does not verify is counted as
// held, not as forged, and the value stays the writer's.
func TestSyncSkipsBatchesHeld(t *testing.T) {
	nodes := cluster(t, 2, nil)
	writer, client := nodes[0], nodes[1]
	mustNS(t, writer, "x")
	mustNS(t, client, "x")
	putGenuineAndWait(t, writer, client)
	before, _ := mustNS(t, client, "x").Digest()
	forged0, held0 := client.Stats().RejectForged.Load(), client.Stats().SyncBatchesHeld.Load()
	evil, d := newRelayer(t, writer)
	serveSyncFrames(t, evil, client, syncBatchFrame(writer.Replica(), 1, d.Encode(nil), []byte(writer.ID()), make([]byte, 64)))
	// At least 1: the client syncs with the relayer on connecting too.
	if n := client.Stats().SyncBatchesHeld.Load() - held0; n < 1 {
		t.Fatalf("%d sync batches counted as held, want the relayer's", n)
	}
	if n := client.Stats().RejectForged.Load(); n != forged0 {
		t.Fatalf("the held batch was checked: %d refused as forged", n-forged0)
	}
	if after, _ := mustNS(t, client, "x").Digest(); after != before {
		t.Fatal("a held batch changed the namespace")
	}
}

// TestGarbageFromSyncServer: a sync server answering with garbage ends the
// session with an error, is counted, and changes nothing.
func TestGarbageFromSyncServer(t *testing.T) {
	ctx := context.Background()
	client := cluster(t, 1, nil)[0]
	mustNS(t, client, "x")
	before, _ := mustNS(t, client, "x").Digest()
	evil, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer evil.Close()
	evil.SetStreamHandler(gossip.ProtocolSync, func(s network.Stream) {
		defer s.Close()
		r, w := msgio.NewVarintReaderSize(s, 1<<20), msgio.NewVarintWriter(s)
		if _, err := r.ReadMsg(); err != nil {
			return
		}
		_ = w.WriteMsg([]byte{0x12, 0x03, 0xff, 0xff, 0xff}) // a batch frame that does not decode
	})
	if err := client.Connect(ctx, evil.Addrs()[0].String()+"/p2p/"+evil.ID().String()); err != nil {
		t.Fatal(err)
	}
	if err := client.SyncWith(ctx, evil.ID()); !errors.Is(err, gossip.ErrMalformed) {
		t.Fatalf("sync with a garbage server: %v, want ErrMalformed", err)
	}
	if client.Stats().RejectMalformed.Load() == 0 {
		t.Fatal("the server's bad frame was not counted")
	}
	if after, _ := mustNS(t, client, "x").Digest(); after != before {
		t.Fatal("garbage changed the namespace")
	}
}

// TestRefusedSyncBatchesDoNotCrowdOutTheRest: a server holding more batches
// the client refuses (here a writer the server accepts and the client's
// writer allowlist does not name) than one session carries, ordered before
// a genuine batch, must not keep that batch from the client: later rounds
// of the run claim the refused ones as seen.
func TestRefusedSyncBatchesDoNotCrowdOutTheRest(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	server := cluster(t, 1, nil)[0]
	client := cluster(t, 1, func(_ int, c *Config) { c.Writers = map[string][]peer.ID{"h": {server.ID()}} })[0]
	ns := mustNS(t, server, "h")
	mustNS(t, client, "h")
	// An evil writer whose batches sort before the server's own.
	var key crypto.PrivKey
	for i := 0; ; i++ {
		k, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := peer.IDFromPrivateKey(k)
		if crdt.DeriveReplicaID([]byte(id)) < server.Replica() {
			key = k
			break
		}
		if i == 1000 {
			t.Fatal("no key found")
		}
	}
	evil, topic := evilPeer(t, ctx, server, "h", libp2p.Identity(key))
	origin := crdt.DeriveReplicaID([]byte(evil.ID()))
	const refused = 4096 + 200 // more than one session's MaxSyncBatches
	src := crdt.NewNamespace(crdt.Limits{})
	var batches []gossip.Batch
	for seq := uint64(1); seq <= refused; seq++ {
		d, err := src.Prepare(crdt.Op{Kind: crdt.OpPut, Key: fmt.Sprint("e", seq), Value: []byte("x")}, origin, crdt.Timestamp{Wall: 1})
		if err != nil {
			t.Fatal(err)
		}
		src.ApplyDelta(d, nil)
		batches = append(batches, gossip.Batch{Origin: origin, Seq: seq, Delta: d, Encoded: d.Encode(nil)})
		if len(batches) == 500 || seq == refused {
			if err := topic.Publish(ctx, signed(t, evil, "h", origin, batches...)); err != nil {
				t.Fatal(err)
			}
			batches = nil
		}
	}
	waitFor(t, "the server to apply the evil writer's batches", 30*time.Second, func() bool {
		_, keys := ns.Digest()
		return keys == refused
	})
	if err := ns.Put(ctx, "genuine", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := client.Connect(ctx, server.Addrs()[0]); err != nil {
		t.Fatal(err)
	}
	cns := mustNS(t, client, "h")
	waitFor(t, "the genuine batch to reach the client by sync", 60*time.Second, func() bool {
		_ = client.SyncWith(ctx, server.ID())
		v, err := cns.Get(ctx, "genuine")
		return err == nil && string(v) == "1"
	})
	if got := client.Stats().RejectNotWriter.Load(); got < refused {
		t.Fatalf("the client refused %d batches, want at least %d", got, refused)
	}
}
