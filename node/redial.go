package node

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// redialBackoff decides when a bootstrap peer is dialled again: after a
// failed dial, 1 s doubling to the maximum; after a connection drops, 1 s
// again if it had been up for the maximum (a restart or a blip), else the
// backoff reached so far (a peer that drops each connection at once is not
// redialled in a loop). Waits are jittered, ×0.5 to ×1.5. Pure: the
// caller passes the clock and the random source.
type redialBackoff struct {
	max     time.Duration
	next    time.Duration // the next wait before jitter
	upSince time.Time     // zero while not connected
}

func newRedialBackoff(max time.Duration) *redialBackoff {
	return &redialBackoff{max: max, next: time.Second}
}

// connected notes a connection up at now.
func (b *redialBackoff) connected(now time.Time) {
	if b.upSince.IsZero() {
		b.upSince = now
	}
}

// disconnected notes the connection lost at now and returns how long to
// wait before dialling; rand(n) returns a number in [0, n).
func (b *redialBackoff) disconnected(now time.Time, rand func(int64) int64) time.Duration {
	if !b.upSince.IsZero() && now.Sub(b.upSince) >= b.max {
		b.next = time.Second
	}
	b.upSince = time.Time{}
	return b.wait(rand)
}

// failed notes a failed dial and returns how long to wait before the next.
func (b *redialBackoff) failed(rand func(int64) int64) time.Duration { return b.wait(rand) }

func (b *redialBackoff) wait(rand func(int64) int64) time.Duration {
	d := b.next/2 + time.Duration(rand(int64(b.next)))
	b.next = min(2*b.next, b.max)
	return d
}

// keepBootstrapConnected starts a goroutine per bootstrap peer that dials
// it and redials it whenever it is not connected (see redialBackoff). A
// connection's loss wakes the goroutine at once: until session 13 it
// polled, with the backoff doubling while connected, so a peer lost after
// a few minutes up was redialled only 0.5–1.5 MaxRedialBackoff later (up
// to 90 s by default), and a node that only dialled out (a restarted
// bootstrap node does not dial back) stayed cut off that long.
func (n *Node) keepBootstrapConnected() {
	if len(n.cfg.Bootstrap) == 0 {
		return
	}
	lost := make(map[peer.ID]chan struct{}, len(n.cfg.Bootstrap))
	var peers []peer.AddrInfo
	for _, a := range n.cfg.Bootstrap {
		ai, _ := peer.AddrInfoFromString(a) // checked by withDefaults
		if _, dup := lost[ai.ID]; dup {
			continue
		}
		lost[ai.ID] = make(chan struct{}, 1)
		peers = append(peers, *ai)
	}
	notifee := &network.NotifyBundle{DisconnectedF: func(_ network.Network, c network.Conn) {
		if ch := lost[c.RemotePeer()]; ch != nil {
			select {
			case ch <- struct{}{}:
			default: // a wake-up is pending already
			}
		}
	}}
	// Registered for the host's life: Close closes the host, and a
	// notification after the goroutines stop only fills a buffered slot.
	n.host.Network().Notify(notifee)
	for _, ai := range peers {
		n.wg.Add(1)
		go n.keepConnected(ai, lost[ai.ID])
	}
}

// keepConnected keeps this node connected to the bootstrap peer ai; lost
// receives a signal whenever one of its connections closes.
func (n *Node) keepConnected(ai peer.AddrInfo, lost <-chan struct{}) {
	defer n.wg.Done()
	b := newRedialBackoff(n.cfg.MaxRedialBackoff)
	var wait time.Duration
	for {
		if wait > 0 {
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		if n.host.Network().Connectedness(ai.ID) != network.Connected {
			ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
			err := n.host.Connect(ctx, ai)
			cancel()
			if err != nil {
				n.log.Debug("node: bootstrap dial failed", "peer", ai.ID, "err", err)
				wait = b.failed(n.randInt64)
				continue
			}
		}
		b.connected(time.Now())
		// Connected: wait for a connection to close, then look again
		// (the peer may still have another).
		select {
		case <-n.ctx.Done():
			return
		case <-lost:
		}
		if n.host.Network().Connectedness(ai.ID) == network.Connected {
			wait = 0
			continue
		}
		wait = b.disconnected(time.Now(), n.randInt64)
	}
}
