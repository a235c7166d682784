package gossip

import "time"

// coalescer decides when queued local batches are published. At most one
// message goes out per window: a batch queued when nothing was published in
// the last window goes out at once (no added latency at low rates); under
// load, batches wait for the window to close and go out together, or as
// soon as the queue holds enough operations or bytes. With maxWindow set,
// the window adapts: it doubles (up to maxWindow) while messages carry many
// operations, and halves back (down to window) when they carry few, so a
// busy node sends fewer, larger signed messages — every receiver verifies
// every signature — while a quiet one keeps the short window. It holds no
// clock; callers pass the time.
type coalescer struct {
	window    time.Duration
	maxWindow time.Duration // 0: the window is fixed
	maxOps    int
	maxBytes  int
	// maxBatches bounds the batches in one message: receivers refuse a
	// message with more (Limits.MaxBatches) however small they are.
	maxBatches int

	cur time.Duration // current window when adaptive

	queue    []Batch
	ops      int
	bytes    int
	lastSent time.Time
}

// add queues a batch at time now.
func (c *coalescer) add(b Batch, _ time.Time) {
	c.queue = append(c.queue, b)
	c.ops += b.Delta.Len()
	c.bytes += len(b.Encoded)
}

// full reports whether the queue must be published now, whatever the time.
func (c *coalescer) full() bool {
	return c.ops >= c.maxOps || c.bytes >= c.maxBytes || (c.maxBatches > 0 && len(c.queue) >= c.maxBatches)
}

// due returns when the queue must be published; ok is false if it is empty.
func (c *coalescer) due() (at time.Time, ok bool) {
	if len(c.queue) == 0 {
		return time.Time{}, false
	}
	return c.lastSent.Add(c.current()), true
}

func (c *coalescer) current() time.Duration {
	if c.cur < c.window {
		return c.window
	}
	return c.cur
}

// busyOps is how many operations in one message count as busy: more widen
// the adaptive window, fewer than half narrow it.
const busyOps = 8

// take returns the queued batches, at most maxBytes worth unless a single
// batch is larger and at most maxBatches of them, and keeps the rest; now is
// when they are sent.
func (c *coalescer) take(now time.Time) []Batch {
	c.lastSent = now
	n, bytes := 0, 0
	for n < len(c.queue) && (n == 0 || bytes+len(c.queue[n].Encoded) <= c.maxBytes) && (c.maxBatches <= 0 || n < c.maxBatches) {
		bytes += len(c.queue[n].Encoded)
		n++
	}
	out := c.queue[:n:n]
	c.queue = append([]Batch(nil), c.queue[n:]...)
	if c.maxWindow > c.window {
		sent := 0
		for _, b := range out {
			sent += b.Delta.Len()
		}
		switch {
		case sent >= busyOps:
			c.cur = min(2*c.current(), c.maxWindow)
		case sent < busyOps/2:
			c.cur = max(c.current()/2, c.window)
		}
	}
	c.ops, c.bytes = 0, 0
	for _, b := range c.queue {
		c.ops += b.Delta.Len()
		c.bytes += len(b.Encoded)
	}
	return out
}
