package sim

import (
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// bandwidth is a libp2p metrics.Reporter shared by every simulated host: it
// counts the stream writes (messages) and bytes each protocol sends. Unlike
// libp2p's BandwidthCounter it keeps no rate meters, so it starts no
// goroutine and reads no clock.
type bandwidth struct {
	mu     sync.Mutex
	byProt map[protocol.ID]metrics.Stats
}

var _ metrics.Reporter = (*bandwidth)(nil)

func newBandwidth() *bandwidth { return &bandwidth{byProt: make(map[protocol.ID]metrics.Stats)} }

func (b *bandwidth) LogSentMessage(int64) {}
func (b *bandwidth) LogRecvMessage(int64) {}

// LogSentMessageStream counts one message of size bytes on proto. Only the
// sending side counts, so a message is counted once.
func (b *bandwidth) LogSentMessageStream(size int64, proto protocol.ID, _ peer.ID) {
	b.mu.Lock()
	s := b.byProt[proto]
	s.TotalOut += size
	s.TotalIn++ // used as the message count
	b.byProt[proto] = s
	b.mu.Unlock()
}

func (b *bandwidth) LogRecvMessageStream(int64, protocol.ID, peer.ID) {}
func (b *bandwidth) GetBandwidthForPeer(peer.ID) metrics.Stats        { return metrics.Stats{} }
func (b *bandwidth) GetBandwidthForProtocol(p protocol.ID) metrics.Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.byProt[p]
}
func (b *bandwidth) GetBandwidthTotals() metrics.Stats                     { return metrics.Stats{} }
func (b *bandwidth) GetBandwidthByPeer() map[peer.ID]metrics.Stats         { return nil }
func (b *bandwidth) GetBandwidthByProtocol() map[protocol.ID]metrics.Stats { return nil }
func (b *bandwidth) Reset()                                                {}
func (b *bandwidth) TrimIdle(time.Time)                                    {}

// split sums messages and bytes sent by kind of protocol: gossip
// (gossipsub), sync (/mycel/sync) and other (identify, ping, ...).
func (b *bandwidth) split() (gossip, sync, other Traffic) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for p, s := range b.byProt {
		t := &other
		switch {
		case strings.HasPrefix(string(p), "/meshsub/"), strings.HasPrefix(string(p), "/floodsub/"):
			t = &gossip
		case strings.HasPrefix(string(p), "/mycel/sync/"):
			t = &sync
		}
		t.Messages += s.TotalIn
		t.Bytes += s.TotalOut
	}
	return gossip, sync, other
}
