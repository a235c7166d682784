package bench

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// ByteCounter is a libp2p bandwidth reporter (libp2p.BandwidthReporter)
// that counts stream bytes exactly, as they are written and read, in
// total and per protocol. libp2p's own BandwidthCounter feeds meters that
// a sweeper updates once a second, too coarse for runs that converge in
// milliseconds. Both systems' hosts use this one, so their bytes are
// counted alike: stream payload, without transport, security and muxer
// framing.
type ByteCounter struct {
	sent, recv atomic.Int64

	mu      sync.Mutex
	perSent map[protocol.ID]int64
}

var _ metrics.Reporter = (*ByteCounter)(nil)

// NewByteCounter returns an empty counter.
func NewByteCounter() *ByteCounter {
	return &ByteCounter{perSent: make(map[protocol.ID]int64)}
}

// Traffic returns what was counted so far.
func (c *ByteCounter) Traffic() Traffic {
	c.mu.Lock()
	per := make(map[string]int64, len(c.perSent))
	for p, n := range c.perSent {
		per[string(p)] = n
	}
	c.mu.Unlock()
	return Traffic{Sent: c.sent.Load(), Received: c.recv.Load(), SentByProtocol: per}
}

// LogSentMessage implements metrics.Reporter.
func (c *ByteCounter) LogSentMessage(n int64) { c.sent.Add(n) }

// LogRecvMessage implements metrics.Reporter.
func (c *ByteCounter) LogRecvMessage(n int64) { c.recv.Add(n) }

// LogSentMessageStream implements metrics.Reporter.
func (c *ByteCounter) LogSentMessageStream(n int64, p protocol.ID, _ peer.ID) {
	c.mu.Lock()
	c.perSent[p] += n
	c.mu.Unlock()
}

// LogRecvMessageStream implements metrics.Reporter.
func (c *ByteCounter) LogRecvMessageStream(int64, protocol.ID, peer.ID) {}

// GetBandwidthForPeer implements metrics.Reporter (not tracked).
func (c *ByteCounter) GetBandwidthForPeer(peer.ID) metrics.Stats { return metrics.Stats{} }

// GetBandwidthForProtocol implements metrics.Reporter.
func (c *ByteCounter) GetBandwidthForProtocol(p protocol.ID) metrics.Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return metrics.Stats{TotalOut: c.perSent[p]}
}

// GetBandwidthTotals implements metrics.Reporter.
func (c *ByteCounter) GetBandwidthTotals() metrics.Stats {
	return metrics.Stats{TotalIn: c.recv.Load(), TotalOut: c.sent.Load()}
}

// GetBandwidthByPeer implements metrics.Reporter (not tracked).
func (c *ByteCounter) GetBandwidthByPeer() map[peer.ID]metrics.Stats { return nil }

// GetBandwidthByProtocol implements metrics.Reporter.
func (c *ByteCounter) GetBandwidthByProtocol() map[protocol.ID]metrics.Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[protocol.ID]metrics.Stats, len(c.perSent))
	for p, n := range c.perSent {
		out[p] = metrics.Stats{TotalOut: n}
	}
	return out
}

// Reset implements metrics.Reporter; the counts are kept, as the harness
// measures differences.
func (c *ByteCounter) Reset() {}

// TrimIdle implements metrics.Reporter.
func (c *ByteCounter) TrimIdle(time.Time) {}
