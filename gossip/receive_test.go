package gossip

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"

	"github.com/mycelnet/mycel/crdt"
)

// deliveries is a pubsub.RawTracer that keeps the messages pubsub handed
// to subscribers: the same *pubsub.Message its message cache keeps.
type deliveries struct {
	NopTracer
	mu   sync.Mutex
	msgs []*pubsub.Message
}

func (d *deliveries) DeliverMessage(msg *pubsub.Message) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.msgs = append(d.msgs, msg)
}

func (d *deliveries) delivered() []*pubsub.Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.msgs)
}

// TestReceivedMessageLetsGoOfItsDecoding: once a gossip message's batches
// are applied, the pubsub message no longer carries the decoded message
// the validator attached. Gossipsub's message cache keeps the pubsub
// message for its gossip window, and with the decoding attached a busy
// node kept every decoded batch of the last five heartbeats alive (~2
// million objects in the 5-node cluster benchmark).
func TestReceivedMessageLetsGoOfItsDecoding(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	server, client := loopbackHost(t), loopbackHost(t)
	tracer := &deliveries{}
	sps, err := pubsub.NewGossipSub(ctx, server, append(PubSubOptions(Limits{}), pubsub.WithRawTracer(tracer))...)
	if err != nil {
		t.Fatal(err)
	}
	cps, err := pubsub.NewGossipSub(ctx, client, PubSubOptions(Limits{})...)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Host: server, PubSub: sps, Replica: crdt.DeriveReplicaID([]byte(server.ID())),
		SyncInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rep := &seenReplica{} // records what it applies (recent_test.go)
	if err := r.Join("ns", rep, nil); err != nil {
		t.Fatal(err)
	}
	topic, err := cps.Join(TopicName("ns"))
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Connect(ctx, server.Peerstore().PeerInfo(server.ID())); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !slices.Contains(topic.ListPeers(), server.ID()) {
		if time.Now().After(deadline) {
			t.Fatal("the server never joined the client's view of the topic")
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	_, m := signedSeedMessage(2)
	if err := topic.Publish(ctx, m.Encode(nil)); err != nil {
		t.Fatal(err)
	}
	for _, b := range m.Batches {
		for !rep.HasSeen(b.Origin, b.Seq) {
			if time.Now().After(deadline) {
				t.Fatalf("batch %d never applied", b.Seq)
			}
			time.Sleep(10 * time.Millisecond) // polling interval
		}
	}
	// The receive loop let go of the decoding before it applied the
	// batches, so it did before they were seen above.
	msgs := tracer.delivered()
	if len(msgs) == 0 {
		t.Fatal("pubsub delivered no message")
	}
	for _, msg := range msgs {
		if msg.ValidatorData != nil {
			t.Fatalf("a delivered message still carries its decoding (%T)", msg.ValidatorData)
		}
	}
}
