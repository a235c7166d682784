package gossip

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// pullWait is how long a client sync session waits, without the session
// holding its namespace's pull turn receiving a frame, before it takes the
// turn over; maxPullWait bounds the wait however the holder progresses.
const (
	pullWait    = 3 * time.Second
	maxPullWait = 60 * time.Second
)

// maxHold is how long a session pulling batches keeps the turn while
// another session waits, however it progresses: one that trickles (a
// lossy, long link that also drains gossip after a healed blackhole) would
// otherwise keep the others from fetching the rest from faster peers. In a
// simulated 15 s blackhole among 30 nodes, one such session held the turn
// for 12 s, and its node held every op written before the heal 11.6 s
// after it. A session reconciling state keeps the turn while it receives:
// the next session's Hello would not show what the reconciliation brings,
// so it could start a second one. maxHold equals pullWait, so for a batch
// pull a stall and a long hold end the turn at the same check.
const maxHold = pullWait

// pullTurns admits one client sync session of a namespace at a time.
//
// A node that reconnects to many peers at once (a healed partition) would
// otherwise pull the same missing batches from each of them. Taking turns,
// each session's Hello carries what the previous ones brought, so later
// peers send only what is still missing.
//
// A session that pulls batches keeps the turn for up to maxHold while
// others wait; one reconciling state keeps it while it receives frames.
// One that stops (a peer behind a blackholed link answers nothing until
// the session times out) loses it after pullWait. Either way one waiting
// session takes the turn over, and the old holder runs on without it. The
// others go on waiting for the new holder. (A fixed wait let every waiter
// go ahead at once, each pulling the same batches, and cut short sessions
// that were still receiving.)
//
// A stalled holder whose server has not answered at all is abandoned when
// its turn is taken over: its stream is reset. Its Hello is the oldest in
// play, and once the link heals (a blackhole keeps connections up) every
// such session would resume at once, each sent the same batches. In a
// simulated 15 s blackhole among 30 nodes that was 85% of the batches sync
// delivered. A holder that has received frames is left to run: its server
// is alive, and cutting a long state reconciliation short could make it
// start over for ever.
//
// Frames are counted per namespace, not per session: frames a session
// that runs without the turn receives also keep a reconciling holder's
// turn (and keep a batch puller from counting as stalled before maxHold,
// which ends its turn at the same check anyway). The namespace is being
// pulled either way, and the wait stays bounded.
type pullTurns struct {
	mu      sync.Mutex
	holder  uint64    // the holding session's ticket; 0 when the turn is free
	holding *turn     // the holder, while holder != 0
	since   time.Time // when the holder got the turn
	issued  uint64
	// freed wakes one waiter when the turn is released (a hint: waiters
	// check under mu, and also every pullWait).
	freed chan struct{}
	// frames counts the frames client sessions received.
	frames atomic.Int64
	// takeovers counts turns taken from a stalled holder or one past
	// maxHold; abandoned, the unanswered holders reset on a takeover.
	takeovers, abandoned *atomic.Int64
}

func newPullTurns(takeovers, abandoned *atomic.Int64) *pullTurns {
	return &pullTurns{freed: make(chan struct{}, 1), takeovers: takeovers, abandoned: abandoned}
}

// errAbandoned ends a client session whose server had not answered when
// another session took its pull turn over.
var errAbandoned = errors.New("abandoned: the peer had not answered when another session took the pull turn over")

// turn is one client session's place in its namespace's pull turns.
type turn struct {
	t        *pullTurns
	ticket   uint64 // 0: the session runs without the turn
	abandon  context.CancelCauseFunc
	answered atomic.Bool
	// reconciling: the session reconciles state; maxHold does not apply.
	reconciling atomic.Bool
}

// reconcile notes that the session has started state reconciliation.
func (u *turn) reconcile() { u.reconciling.Store(true) }

// received notes a frame received by the session.
func (u *turn) received() {
	u.answered.Store(true)
	u.t.received()
}

// done ends the turn, unless it was taken over.
func (u *turn) done() {
	if u.ticket == 0 {
		return
	}
	t := u.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.holder != u.ticket {
		return // taken over
	}
	t.holder, t.holding = 0, nil
	select {
	case t.freed <- struct{}{}:
	default:
	}
}

// received notes a frame received by a client session.
func (t *pullTurns) received() { t.frames.Add(1) }

// take waits for the turn, takes it over from a holder that received no
// frame for pullWait or pulled batches for maxHold, or gives up waiting
// after maxPullWait or when ctx ends (then the session runs without the
// turn). abandon, if not nil, ends the session should its turn be taken
// over before its first frame.
func (t *pullTurns) take(ctx context.Context, abandon context.CancelCauseFunc) *turn {
	u := &turn{t: t, abandon: abandon}
	tick := time.NewTimer(pullWait)
	defer tick.Stop()
	deadline := time.NewTimer(maxPullWait)
	defer deadline.Stop()
	var watched uint64 // the holder seen at the last check, and its frames then
	var frames int64
	for range 1000 { // each pass waits for a release or pullWait; the deadline ends them sooner
		t.mu.Lock()
		switch {
		case t.holder == 0:
			return t.grant(u)
		case t.holder != watched:
			// A new holder (one that took a freed turn first, or took
			// one over) gets a whole pullWait to receive its first frame.
			watched, frames = t.holder, t.frames.Load()
			tick.Reset(pullWait)
		}
		t.mu.Unlock()
		select {
		case <-t.freed:
			continue
		case <-tick.C:
		case <-deadline.C:
			return u
		case <-ctx.Done():
			return u
		}
		tick.Reset(pullWait)
		t.mu.Lock()
		stalled := t.holder == watched && t.frames.Load() == frames
		heldLong := t.holder != 0 && !t.holding.reconciling.Load() && time.Since(t.since) >= maxHold
		if stalled || heldLong {
			t.takeovers.Add(1)
			if old := t.holding; old.abandon != nil && !old.answered.Load() {
				t.abandoned.Add(1)
				old.abandon(errAbandoned)
			}
			return t.grant(u) // stalled for pullWait, or held for maxHold
		}
		watched, frames = t.holder, t.frames.Load() // watch the next pullWait
		t.mu.Unlock()
	}
	return u
}

// grant gives u the turn; t.mu is held and is released.
func (t *pullTurns) grant(u *turn) *turn {
	t.issued++
	u.ticket = t.issued
	t.holder, t.holding, t.since = u.ticket, u, time.Now()
	t.mu.Unlock()
	return u
}
