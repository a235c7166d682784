package crdt

import (
	"fmt"
	"math"
)

// Timestamp is a hybrid logical clock reading: physical milliseconds since
// the Unix epoch, and a logical counter that orders events within one
// millisecond or while the physical clock lags a remote one.
type Timestamp struct {
	Wall    int64
	Logical uint32
}

// Compare returns -1, 0 or +1.
func (t Timestamp) Compare(o Timestamp) int {
	switch {
	case t.Wall < o.Wall:
		return -1
	case t.Wall > o.Wall:
		return 1
	case t.Logical < o.Logical:
		return -1
	case t.Logical > o.Logical:
		return 1
	}
	return 0
}

// Less reports whether t is before o.
func (t Timestamp) Less(o Timestamp) bool { return t.Compare(o) < 0 }

// IsZero reports whether t is the zero timestamp.
func (t Timestamp) IsZero() bool { return t == Timestamp{} }

func (t Timestamp) String() string { return fmt.Sprintf("%d.%d", t.Wall, t.Logical) }

// Clock is a hybrid logical clock. It never reads the time itself: the
// caller passes physical milliseconds to [Clock.Now] and [Clock.Update].
// Readings are strictly increasing, and a reading taken after Update(t) is
// after t, so causally related writes are ordered even across skewed clocks.
// The zero Clock accepts any drift; set MaxDrift to bound it.
type Clock struct {
	// MaxDrift is how far (ms) a remote timestamp may be ahead of the
	// local physical clock before Update rejects it. 0 means no bound.
	MaxDrift int64

	last Timestamp
}

// NewClock returns a clock that rejects remote readings more than
// maxDriftMillis ahead of local physical time.
func NewClock(maxDriftMillis int64) *Clock { return &Clock{MaxDrift: maxDriftMillis} }

// Now returns a reading for a local event at physical time pt (ms).
func (c *Clock) Now(pt int64) Timestamp {
	if pt > c.last.Wall {
		c.last = Timestamp{Wall: pt}
	} else {
		c.tick()
	}
	return c.last
}

func (c *Clock) tick() {
	if c.last.Logical == ^uint32(0) {
		// The logical counter is exhausted within one millisecond:
		// borrow the next millisecond rather than wrap. At the end of
		// time the clock saturates instead of overflowing.
		if c.last.Wall < math.MaxInt64 {
			c.last = Timestamp{Wall: c.last.Wall + 1}
		}
		return
	}
	c.last.Logical++
}

// Update folds in a remote reading rt observed at local physical time pt.
// A reading more than MaxDrift ahead of pt is rejected with ErrClockDrift and
// leaves the clock unchanged.
func (c *Clock) Update(rt Timestamp, pt int64) error {
	// Compared without overflow: any two int64 differ by less than 2^64.
	if c.MaxDrift > 0 && rt.Wall > pt && uint64(rt.Wall)-uint64(pt) > uint64(c.MaxDrift) {
		return fmt.Errorf("%w: remote %d ms ahead, max %d ms", ErrClockDrift, uint64(rt.Wall)-uint64(pt), c.MaxDrift)
	}
	switch {
	case pt > c.last.Wall && pt > rt.Wall:
		c.last = Timestamp{Wall: pt}
	case rt.Compare(c.last) > 0:
		c.last = rt
		c.tick()
	default:
		c.tick()
	}
	return nil
}

// Last returns the latest reading handed out or observed.
func (c *Clock) Last() Timestamp { return c.last }

// Observe raises the clock to at least t without a drift check; use it when
// restoring a persisted clock.
func (c *Clock) Observe(t Timestamp) {
	if t.Compare(c.last) > 0 {
		c.last = t
	}
}
