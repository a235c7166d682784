package gossip

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// pullWait is how long a session holding its namespace's pull turn may go
// without a frame while another session waits: without its first frame
// (counted from when it got the turn), or between frames while it
// reconciles state. maxHold is how long a session pulling batches keeps
// the turn once another session waits for it, however it progresses: one
// that trickles (a lossy, long link that also drains gossip after a healed
// blackhole) would otherwise keep the others from fetching the rest from
// faster peers. In a simulated 15 s blackhole among 30 nodes, one such
// session held the turn for 12 s, and its node held every op written
// before the heal 11.6 s after it. maxPullWait bounds any wait for the
// turn.
//
// Shorter limits were measured in session 21 (docs/BENCHMARKS.md,
// Simulator): 1 s for any holder, answered or not, cut the 30-node
// recovery after a blackhole by a third under virtual time, but in a
// loaded real-time run (100 nodes on two cores, where every server answers
// late) the extra sessions pulled 1.4–1.9× the bytes by sync and slowed
// the heals; stopping the old holder instead, and waiting for a first
// frame only four times as long as recent answers took, did worse still
// there.
const (
	pullWait    = 3 * time.Second
	maxHold     = pullWait
	maxPullWait = 60 * time.Second
)

// pullTurns admits one client sync session of a namespace at a time.
//
// A node that reconnects to many peers at once (a healed partition) would
// otherwise pull the same missing batches from each of them. Taking turns,
// each session's Hello carries what the previous ones brought, so later
// peers send only what is still missing.
//
// A session that pulls batches keeps the turn for maxHold after a waiter
// comes; one reconciling state keeps it while frames come, losing it after
// pullWait without one (it reconciles: the next session's Hello would not
// show what the reconciliation brings, so it could start a second one);
// one whose server has not answered loses it pullWait after it got it.
// Then one waiting session takes the turn over, and the old holder runs on
// without it. The others go on waiting for the new holder. (A fixed wait
// let every waiter go ahead at once, each pulling the same batches, and
// cut short sessions that were still receiving.)
//
// A holder whose server has not answered at all is abandoned when its
// turn is taken over: its stream is reset. Its Hello is the oldest in
// play, and once the link heals (a blackhole keeps connections up) every
// such session would resume at once, each sent the same batches. In a
// simulated 15 s blackhole among 30 nodes that was 85% of the batches sync
// delivered. A holder that has received frames is left to run: its server
// is alive, and cutting a long state reconciliation short could make it
// start over for ever.
//
// A waiter judges an unanswered or reconciling holder from when it got the
// turn and when the last frame came, not from when the waiter began to
// wait: a session opened during a blackhole may have held the turn,
// unanswered, for many seconds when the first waiter arrives after the
// heal. (Judged from the waiter's arrival, as until session 20, a node
// whose gap pulls came 1.4 s after a heal waited 3 s more for such a
// holder before it pulled what an in-region peer held already.)
//
// The last frame is noted per namespace, not per session: frames a session
// that runs without the turn receives also keep a reconciling holder's
// turn. The namespace is being pulled either way, and the wait stays
// bounded.
type pullTurns struct {
	mu      sync.Mutex
	holder  uint64    // the holding session's ticket; 0 when the turn is free
	holding *turn     // the holder, while holder != 0
	since   time.Time // when the holder got the turn
	issued  uint64
	// freed wakes one waiter when the turn is released (a hint: waiters
	// check under mu, and also when the holder's next limit is due).
	freed chan struct{}
	// lastFrame is when a client session last received a frame, as an
	// offset from base (monotonic; 0: never).
	base      time.Time
	lastFrame atomic.Int64
	// takeovers counts turns taken from a holder past its limit;
	// abandoned, the unanswered holders reset on a takeover.
	takeovers, abandoned *atomic.Int64
}

func newPullTurns(takeovers, abandoned *atomic.Int64) *pullTurns {
	return &pullTurns{base: time.Now(), freed: make(chan struct{}, 1), takeovers: takeovers, abandoned: abandoned}
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
func (t *pullTurns) received() { t.lastFrame.Store(int64(time.Since(t.base))) }

// take waits for the turn, takes it over from a holder past its limit
// (see pullTurns), or gives up waiting after maxPullWait or when ctx ends
// (then the session runs without the turn). abandon, if not nil, ends the
// session should its turn be taken over before its first frame.
func (t *pullTurns) take(ctx context.Context, abandon context.CancelCauseFunc) *turn {
	u := &turn{t: t, abandon: abandon}
	arrived := time.Now()
	tick := time.NewTimer(maxHold)
	defer tick.Stop()
	deadline := time.NewTimer(maxPullWait)
	defer deadline.Stop()
	for range 1000 { // each pass waits for a release or the holder's limit; the deadline ends them sooner
		t.mu.Lock()
		if t.holder == 0 {
			return t.grant(u)
		}
		now := time.Now()
		var wait time.Duration
		switch h := t.holding; {
		case !h.answered.Load():
			// From its grant: a session opened during a blackhole may
			// have waited for its answer long before this waiter came.
			wait = pullWait - now.Sub(t.since)
		case h.reconciling.Load():
			progress := t.since
			if last := t.base.Add(time.Duration(t.lastFrame.Load())); last.After(progress) {
				progress = last
			}
			wait = pullWait - now.Sub(progress)
		default:
			// A batch puller that works keeps the turn for maxHold from
			// when this waiter came, or from its grant if that is later.
			start := t.since
			if arrived.After(start) {
				start = arrived
			}
			wait = maxHold - now.Sub(start)
		}
		if wait <= 0 {
			if ctx.Err() != nil { // a waiter that will not run leaves the holder its turn
				t.mu.Unlock()
				return u
			}
			t.takeovers.Add(1)
			if old := t.holding; old.abandon != nil && !old.answered.Load() {
				t.abandoned.Add(1)
				old.abandon(errAbandoned)
			}
			return t.grant(u)
		}
		t.mu.Unlock()
		tick.Reset(wait)
		select {
		case <-t.freed:
		case <-tick.C:
		case <-deadline.C:
			return u
		case <-ctx.Done():
			return u
		}
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
