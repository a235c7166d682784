package gossip

import "time"

// coalescer decides when queued local batches are published: as soon as the
// window since the first queued batch has passed, or the queue holds enough
// operations or bytes. It holds no clock; callers pass the time.
type coalescer struct {
	window   time.Duration
	maxOps   int
	maxBytes int

	queue []Batch
	ops   int
	bytes int
	since time.Time
}

// add queues a batch at time now.
func (c *coalescer) add(b Batch, now time.Time) {
	if len(c.queue) == 0 {
		c.since = now
	}
	c.queue = append(c.queue, b)
	c.ops += b.Delta.Len()
	c.bytes += len(b.Encoded)
}

// full reports whether the queue must be published now, whatever the time.
func (c *coalescer) full() bool {
	return c.ops >= c.maxOps || c.bytes >= c.maxBytes
}

// due returns when the queue must be published; ok is false if it is empty.
func (c *coalescer) due() (at time.Time, ok bool) {
	if len(c.queue) == 0 {
		return time.Time{}, false
	}
	return c.since.Add(c.window), true
}

// take returns the queued batches, at most maxBytes worth unless a single
// batch is larger, and keeps the rest.
func (c *coalescer) take() []Batch {
	n, bytes := 0, 0
	for n < len(c.queue) && (n == 0 || bytes+len(c.queue[n].Encoded) <= c.maxBytes) {
		bytes += len(c.queue[n].Encoded)
		n++
	}
	out := c.queue[:n:n]
	c.queue = append([]Batch(nil), c.queue[n:]...)
	c.ops, c.bytes = 0, 0
	for _, b := range c.queue {
		c.ops += b.Delta.Len()
		c.bytes += len(b.Encoded)
	}
	return out
}
