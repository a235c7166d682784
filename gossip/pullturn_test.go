package gossip

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// A session waiting for its namespace's pull turn keeps waiting while the
// session holding it receives frames, for up to maxHold; once the holder
// stalls for pullWait or has held the turn for maxHold, one waiter takes
// the turn over and the others wait for it; no wait outlasts maxPullWait
// or its context.
func TestPullTurns(t *testing.T) {
	newTurns := func() (*pullTurns, *atomic.Int64) {
		var n, abandoned atomic.Int64
		return newPullTurns(&n, &abandoned), &n
	}
	// take runs pt.take in a goroutine and reports how long it waited,
	// keeping the turn until release is closed (nil: released at once).
	take := func(ctx context.Context, pt *pullTurns, release <-chan struct{}) <-chan time.Duration {
		ch := make(chan time.Duration, 1)
		start := time.Now()
		go func() {
			u := pt.take(ctx, nil)
			ch <- time.Since(start)
			if release != nil {
				<-release
			}
			u.done()
		}()
		return ch
	}
	// receiving has frames come every 100 ms until the returned stop is
	// called: a holder that never stops receiving.
	receiving := func(pt *pullTurns) (stop func()) {
		done, stopped := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(stopped)
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
					pt.received()
				case <-done:
					return
				}
			}
		}()
		return func() { close(done); <-stopped }
	}
	waiting := func(t *testing.T, ch <-chan time.Duration, what string) {
		t.Helper()
		select {
		case d := <-ch:
			t.Fatalf("%s went ahead after %v", what, d)
		default:
		}
	}

	t.Run("released turn passes on", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			pt, takeovers := newTurns()
			release := pt.take(t.Context(), nil).done
			got := take(t.Context(), pt, nil)
			time.Sleep(2 * time.Second)
			release()
			if d := <-got; d != 2*time.Second {
				t.Fatalf("waiter went ahead after %v, want when the turn was released (2s)", d)
			}
			wantTakeovers(t, takeovers, 0)
		})
	})

	t.Run("a stalled holder loses the turn to one waiter", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			pt, takeovers := newTurns()
			stalled := pt.take(t.Context(), nil).done
			hold := make(chan struct{})
			first := take(t.Context(), pt, hold) // holds what it takes until hold closes
			time.Sleep(pullWait - time.Millisecond)
			waiting(t, first, "waiter")
			if d := <-first; d != pullWait {
				t.Fatalf("waiter took over after %v, want pullWait (%v)", d, pullWait)
			}
			wantTakeovers(t, takeovers, 1)
			// The stalled session ending later does not free the turn the
			// waiter took over.
			stalled()
			third := take(t.Context(), pt, nil)
			time.Sleep(pullWait / 2)
			waiting(t, third, "a session after the stalled one ended")
			close(hold) // the waiter that took over ends its turn: the third gets it
			if d := <-third; d != pullWait/2 {
				t.Fatalf("third session went ahead after %v, want when the turn was released (%v)", d, pullWait/2)
			}
		})
	})

	t.Run("a working holder keeps the turn for maxHold", func(t *testing.T) {
		// A session that trickles keeps receiving frames: it must not keep
		// the others waiting for long (found in a simulated heal, where
		// one held the turn for 12 s).
		synctest.Test(t, func(t *testing.T) {
			pt, takeovers := newTurns()
			holder := pt.take(t.Context(), nil)
			defer holder.done()
			holder.received()
			defer receiving(pt)()
			got := take(t.Context(), pt, nil)
			time.Sleep(maxHold - time.Millisecond)
			waiting(t, got, "waiter")
			if d := <-got; d != maxHold {
				t.Fatalf("waiter took over after %v, want maxHold (%v)", d, maxHold)
			}
			wantTakeovers(t, takeovers, 1)
		})
	})

	t.Run("a holder reconciling state keeps the turn while it receives", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			pt, takeovers := newTurns()
			holder := pt.take(t.Context(), nil)
			holder.received() // the Done frame that starts the reconciliation
			holder.reconcile()
			got := take(t.Context(), pt, nil)
			for range 100 { // frames every 100 ms for 10 s
				time.Sleep(100 * time.Millisecond)
				pt.received()
			}
			waiting(t, got, "waiter")
			// The reconciliation stalls: the waiter takes over pullWait
			// after the last frame.
			if d := <-got; d != 10*time.Second+pullWait {
				t.Fatalf("waiter took over after %v, want pullWait after the last frame at 10s (%v)", d, 10*time.Second+pullWait)
			}
			wantTakeovers(t, takeovers, 1)
			holder.done() // a no-op: taken over
		})
	})

	t.Run("a holder is judged from its own progress, not the waiter's arrival", func(t *testing.T) {
		// Found in a simulated heal: a session opened during a blackhole
		// held the turn unanswered for 14 s, and the first waiter after
		// the heal waited a whole pullWait more before taking it over.
		synctest.Test(t, func(t *testing.T) {
			pt, takeovers := newTurns()
			stale, abandonStale := context.WithCancelCause(t.Context())
			defer abandonStale(nil)
			pt.take(stale, abandonStale)
			time.Sleep(10 * pullWait)
			if d := <-take(t.Context(), pt, nil); d != 0 {
				t.Fatalf("waiter took over a holder unanswered for %v after %v, want at once", 10*pullWait, d)
			}
			if !errors.Is(context.Cause(stale), errAbandoned) {
				t.Fatalf("the unanswered stale holder: cause %v, want errAbandoned", context.Cause(stale))
			}
			wantTakeovers(t, takeovers, 1)

			// Other sessions' frames do not keep an unanswered holder's
			// turn: after a heal, answered sessions that lost the turn
			// run on and receive.
			unanswered, abandonUnanswered := context.WithCancelCause(t.Context())
			defer abandonUnanswered(nil)
			second := pt.take(unanswered, abandonUnanswered) // the turn is free: the waiter above released it
			defer second.done()
			others := receiving(pt)
			time.Sleep(time.Second)
			if d := <-take(t.Context(), pt, nil); d != pullWait-time.Second {
				t.Fatalf("waiter took over an unanswered holder after %v while other sessions received, want pullWait after its grant (%v)", d, pullWait-time.Second)
			}
			others()
			if !errors.Is(context.Cause(unanswered), errAbandoned) {
				t.Fatalf("the unanswered holder: cause %v, want errAbandoned", context.Cause(unanswered))
			}
			wantTakeovers(t, takeovers, 2)

			// One reconciling state whose last frame came a second
			// before the waiter arrived is taken over pullWait after that
			// frame.
			holder := pt.take(t.Context(), nil)
			holder.received()
			holder.reconcile()
			time.Sleep(time.Second)
			holder.received()
			time.Sleep(time.Second)
			if d := <-take(t.Context(), pt, nil); d != pullWait-time.Second {
				t.Fatalf("waiter took over after %v, want pullWait after the holder's last frame (%v)", d, pullWait-time.Second)
			}
			wantTakeovers(t, takeovers, 3)

			// One that pulls batches and still receives keeps the turn
			// for maxHold after the waiter came, however long it has held
			// it: it works, and a second session would pull the same.
			puller := pt.take(t.Context(), nil)
			puller.received()
			stop := receiving(pt)
			time.Sleep(2 * maxHold)
			if d := <-take(t.Context(), pt, nil); d != maxHold {
				t.Fatalf("waiter took over a working batch puller after %v, want maxHold (%v)", d, maxHold)
			}
			stop()
			wantTakeovers(t, takeovers, 4)
		})
	})

	t.Run("one waiter takes over, the next waits for it", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			pt, takeovers := newTurns()
			release := pt.take(t.Context(), nil).done
			defer release()
			hold := make(chan struct{})
			a, b := take(t.Context(), pt, hold), take(t.Context(), pt, hold)
			var took time.Duration
			var other <-chan time.Duration
			select { // one of them takes over after pullWait
			case took = <-a:
				other = b
			case took = <-b:
				other = a
			}
			if took != pullWait {
				t.Fatalf("takeover after %v, want pullWait (%v)", took, pullWait)
			}
			// Frames come for a while (the namespace's: the new holder
			// itself has no answer yet), less than pullWait after its
			// grant: the other keeps waiting.
			for range 2 {
				time.Sleep(time.Second)
				pt.received()
			}
			waiting(t, other, "second waiter")
			close(hold) // the new holder ends its turn: the other gets it
			if d := <-other; d != pullWait+2*time.Second {
				t.Fatalf("second waiter went ahead after %v, want %v", d, pullWait+2*time.Second)
			}
			wantTakeovers(t, takeovers, 1)
		})
	})

	t.Run("a newcomer first to a freed turn gets a whole pullWait", func(t *testing.T) {
		// Found by review: a waiter woken by a release that a newcomer
		// beat to the turn kept its old timer, and took the turn from the
		// newcomer before its first frame could come.
		synctest.Test(t, func(t *testing.T) {
			pt, takeovers := newTurns()
			first := pt.take(t.Context(), nil)
			got := take(t.Context(), pt, nil)
			time.Sleep(pullWait - 100*time.Millisecond)
			// The holder releases and its next round takes the turn again
			// before the woken waiter can look: under mu, so the waiter
			// cannot run in between (with two calls it sometimes did, and
			// the test failed).
			pt.mu.Lock()
			if pt.holder != first.ticket {
				t.Fatal("the first session does not hold the turn")
			}
			pt.holder, pt.holding = 0, nil
			pt.freed <- struct{}{}
			again := pt.grant(&turn{t: pt})
			defer again.done()
			time.Sleep(pullWait - 200*time.Millisecond)
			waiting(t, got, "woken waiter")
			if d := <-got; d != 2*pullWait-100*time.Millisecond {
				t.Fatalf("waiter took over after %v, want a whole pullWait after the newcomer took the turn (%v)", d, 2*pullWait-100*time.Millisecond)
			}
			wantTakeovers(t, takeovers, 1)
		})
	})

	t.Run("an unanswered holder is abandoned, an answered one is not", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var takeovers, abandoned atomic.Int64
			pt := newPullTurns(&takeovers, &abandoned)
			// Two stalled holders, one after the other: the first never
			// got a frame, the second got one and then stalled.
			unanswered, abandonUnanswered := context.WithCancelCause(t.Context())
			defer abandonUnanswered(nil)
			first := pt.take(unanswered, abandonUnanswered)
			answered, abandonAnswered := context.WithCancelCause(t.Context())
			defer abandonAnswered(nil)
			second := pt.take(answered, abandonAnswered)
			if !errors.Is(context.Cause(unanswered), errAbandoned) {
				t.Fatalf("unanswered holder after a takeover: cause %v, want errAbandoned", context.Cause(unanswered))
			}
			first.done() // a no-op: taken over
			second.received()
			third := pt.take(t.Context(), nil)
			defer third.done()
			if context.Cause(answered) != nil {
				t.Fatalf("a holder that had been answered was ended: %v", context.Cause(answered))
			}
			second.done()
			if n, a := takeovers.Load(), abandoned.Load(); n != 2 || a != 1 {
				t.Fatalf("takeovers %d, abandoned %d; want 2, 1", n, a)
			}
		})
	})

	t.Run("wait is bounded", func(t *testing.T) {
		// Holders lose the turn one per pullWait (none is answered, and
		// the namespace's frames do not keep an unanswered holder's
		// turn); waiters still queued at maxPullWait go ahead without it.
		synctest.Test(t, func(t *testing.T) {
			pt, _ := newTurns()
			release := pt.take(t.Context(), nil).done
			defer release()
			defer receiving(pt)()
			hold := make(chan struct{})
			defer close(hold)
			const waiters = 2 * int(maxPullWait/maxHold)
			var waits []<-chan time.Duration
			for range waiters {
				waits = append(waits, take(t.Context(), pt, hold))
			}
			atBound := 0
			for _, w := range waits {
				d := <-w
				if d > maxPullWait {
					t.Fatalf("a waiter went ahead after %v, past maxPullWait (%v)", d, maxPullWait)
				}
				if d == maxPullWait {
					atBound++
				}
			}
			if atBound == 0 {
				t.Fatalf("no waiter went ahead at maxPullWait (%v)", maxPullWait)
			}
		})
	})

	t.Run("cancelled wait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			pt, takeovers := newTurns()
			release := pt.take(t.Context(), nil).done
			defer release()
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			if d := <-take(ctx, pt, nil); d != time.Second {
				t.Fatalf("waiter returned after %v, want when its context ended (1s)", d)
			}
			if n := takeovers.Load(); n != 0 {
				t.Fatalf("takeovers = %d after a cancelled wait, want 0", n)
			}
		})
	})

	t.Run("a cancelled waiter leaves a stale holder its turn", func(t *testing.T) {
		// Found by review: a waiter that found the holder past its limit
		// took the turn over, and abandoned the holder, before it looked
		// at its own context.
		synctest.Test(t, func(t *testing.T) {
			pt, takeovers := newTurns()
			holder, abandonHolder := context.WithCancelCause(t.Context())
			defer abandonHolder(nil)
			first := pt.take(holder, abandonHolder)
			defer first.done()
			time.Sleep(10 * pullWait)
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			if u := pt.take(ctx, nil); u.ticket != 0 {
				t.Fatalf("a cancelled waiter got ticket %d, want to go without the turn", u.ticket)
			}
			if n := takeovers.Load(); n != 0 || context.Cause(holder) != nil {
				t.Fatalf("takeovers %d, holder's cause %v; want 0, none", n, context.Cause(holder))
			}
		})
	})
}

// TestUnansweredSessionIsAbandoned: a client session whose server never
// answers (a blackholed link keeps the connection up) loses its pull turn
// to the next session after pullWait and ends at once, not at SyncTimeout:
// otherwise every such session resumes when the link heals, each sent the
// same batches. It tries once more (the server may only have been slow)
// and, abandoned again, gives up, leaving the peer's other namespaces to
// the next sync. The first gossip message the peer forwards after that
// (its link works again) starts a sync with it at once.
func TestUnansweredSessionIsAbandoned(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	silent, answering, client := loopbackHost(t), loopbackHost(t), loopbackHost(t)
	var hellos, resets atomic.Int64
	var helloNS sync.Map // namespace → true
	silent.SetStreamHandler(ProtocolSync, func(s network.Stream) {
		c := newConn(s, Limits{}.withDefaults())
		hello, err := c.expect(frameHello)
		if err != nil {
			s.Reset()
			return
		}
		helloNS.Store(hello.ns, true)
		hellos.Add(1)
		if _, err := c.recv(); err != nil { // nothing comes: ends when the client resets
			resets.Add(1)
		}
		s.Reset()
	})
	answering.SetStreamHandler(ProtocolSync, func(s network.Stream) {
		defer s.Close()
		c := newConn(s, Limits{}.withDefaults())
		if _, err := c.expect(frameHello); err != nil {
			s.Reset()
			return
		}
		_ = c.send(&frame{kind: frameDone})
	})
	for _, h := range []host.Host{silent, answering} {
		if err := client.Connect(ctx, h.Peerstore().PeerInfo(h.ID())); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{Host: client, Limits: Limits{}.withDefaults(), SyncTimeout: 30 * time.Second,
		SyncRate: 5, SyncBurst: 20, Now: time.Now}
	r := &Replicator{cfg: cfg, paced: map[peer.ID]*admission{}, status: map[statusKey]*PeerSync{}, ctx: ctx, spaces: map[string]*space{},
		syncing: map[peer.ID]*syncQueue{}}
	r.cfg.Logger = slog.New(slog.DiscardHandler)
	defer r.wg.Wait() // the sync started below, after cancel
	defer cancel()
	for _, name := range []string{"a", "b"} {
		r.spaces[name] = &space{r: r, name: name, rep: &seenReplica{}, pull: newPullTurns(&r.stats.SyncTurnsTakenOver, &r.stats.SyncSessionsAbandoned)}
	}
	poll := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond) // polling, deadline above
		}
	}

	began := time.Now()
	stalled := make(chan error, 1)
	go func() { stalled <- r.syncAll(ctx, silent.ID(), false) }()
	// Each time the stalled session holds its namespace's turn, a session
	// with the answering peer waits pullWait, takes the turn over and syncs.
	var stuck string
	for try := int64(1); try <= 2; try++ {
		poll("the silent peer's Hello", func() bool { return hellos.Load() == try })
		helloNS.Range(func(k, _ any) bool { stuck = k.(string); return false })
		if _, err := r.syncNamespace(ctx, answering.ID(), r.spaces[stuck], false); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-stalled:
		if !errors.Is(err, errAbandoned) {
			t.Fatalf("stalled session ended with %v, want errAbandoned", err)
		}
	case <-ctx.Done():
		t.Fatal("the stalled session did not end")
	}
	if d := time.Since(began); d >= cfg.SyncTimeout/2 {
		t.Fatalf("stalled session ended after %v: not when abandoned (two takeovers, ~%v)", d, 2*pullWait)
	}
	poll("the silent server's streams to be reset", func() bool { return resets.Load() == 2 })
	if h, n, a := hellos.Load(), r.stats.SyncTurnsTakenOver.Load(), r.stats.SyncSessionsAbandoned.Load(); h != 2 || n != 2 || a != 2 {
		t.Fatalf("silent peer got %d sessions; takeovers %d, abandoned %d; want 2, 2, 2 (one retry)", h, n, a)
	}
	helloNS.Range(func(k, _ any) bool {
		if k != stuck {
			t.Errorf("the silent peer was asked for namespace %q too after it did not answer twice", k)
		}
		return true
	})
	r.mu.Lock()
	st := r.status[statusKey{silent.ID(), stuck}]
	r.mu.Unlock()
	if st == nil || !strings.Contains(st.LastError, "abandoned") {
		t.Fatalf("silent peer's sync status %+v, want its last error to say the session was abandoned", st)
	}

	// The peer forwards a gossip message (malformed or not: its link
	// works): a sync with it starts, once.
	garbage := &pubsub.Message{Message: &pb.Message{Data: []byte("not a message")}, ReceivedFrom: silent.ID()}
	for range 2 {
		if res := r.spaces["a"].validate(ctx, silent.ID(), garbage); res != pubsub.ValidationReject {
			t.Fatalf("garbage validated as %v", res)
		}
	}
	poll("a sync with the peer heard again", func() bool { return hellos.Load() == 3 })
	if n := r.stats.SyncPeersHeardAgain.Load(); n != 1 {
		t.Fatalf("syncs started on hearing the peer again: %d, want 1", n)
	}
}

// wantTakeovers fails t unless the turns were taken over want times.
func wantTakeovers(t *testing.T, takeovers *atomic.Int64, want int64) {
	t.Helper()
	if n := takeovers.Load(); n != want {
		t.Fatalf("takeovers = %d, want %d", n, want)
	}
}
