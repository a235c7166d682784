package main

import (
	"context"
	"errors"
	"time"

	ds "github.com/ipfs/go-datastore"
	crdt "github.com/ipfs/go-ds-crdt"
)

// errClosed is returned by puts on a replica that is closing.
var errClosed = errors.New("dscrdt-bench: replica closed")

// batcher is a group commit in front of one go-ds-crdt replica. The harness
// calls Put from many goroutines and times each call to its return;
// go-ds-crdt's way to write many keys is Batch → Put… → Commit, which makes
// one delta, one DAG node and one broadcast per batch. The batcher turns
// concurrent puts into such batches with the same policy as Mycel's
// publish coalescer (gossip/coalesce.go): at most one commit per window; a
// put arriving after a quiet window commits at once, under load puts wait
// for the window to close or for maxOps of them. Each put returns when its
// batch's Commit (and, on Pebble, the WAL sync) has returned.
//
// One goroutine (run) owns the go-ds-crdt batch: go-ds-crdt keeps a single
// current delta per datastore, so two batches in flight would mix.
type batcher struct {
	store  *crdt.Datastore
	sync   bool // Sync after each Commit: the store is on disk
	window time.Duration
	maxOps int

	reqs chan putReq
	stop chan struct{}
	done chan struct{}
}

type putReq struct {
	key   ds.Key
	value []byte
	done  chan error // buffered: run never blocks on a caller that left
}

func newBatcher(store *crdt.Datastore, sync bool, window time.Duration, maxOps int) *batcher {
	b := &batcher{
		store: store, sync: sync, window: window, maxOps: maxOps,
		reqs: make(chan putReq),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go b.run()
	return b
}

// put queues key = value and waits for its batch to commit.
func (b *batcher) put(ctx context.Context, key ds.Key, value []byte) error {
	r := putReq{key: key, value: value, done: make(chan error, 1)}
	select {
	case b.reqs <- r:
	case <-b.stop:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close stops taking puts, commits the group being collected and waits for
// run to return. Call once.
func (b *batcher) close() {
	close(b.stop)
	<-b.done
}

func (b *batcher) run() {
	defer close(b.done)
	var last time.Time // start of the last commit
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var group []putReq
		select {
		case r := <-b.reqs:
			group = append(group, r)
		case <-b.stop:
			return
		}
		stopping := false
		if wait := time.Until(last.Add(b.window)); wait > 0 {
			timer.Reset(wait)
		collect:
			for len(group) < b.maxOps {
				select {
				case r := <-b.reqs:
					group = append(group, r)
				case <-timer.C:
					break collect
				case <-b.stop:
					stopping = true
					break collect
				}
			}
			// Since Go 1.23 Stop leaves no stale tick for the next Reset.
			timer.Stop()
		} else {
			// Quiet for a window: commit now, with whatever else is
			// already waiting.
		drain:
			for len(group) < b.maxOps {
				select {
				case r := <-b.reqs:
					group = append(group, r)
				default:
					break drain
				}
			}
		}
		last = time.Now()
		err := b.commit(group)
		for _, r := range group {
			r.done <- err
		}
		if stopping {
			return
		}
	}
}

// commit writes group as one go-ds-crdt batch: one delta, one DAG node,
// one broadcast. On Pebble the WAL is then synced once for the group.
func (b *batcher) commit(group []putReq) error {
	ctx := context.Background() // the callers' contexts must not abort each other's batch
	bt, err := b.store.Batch(ctx)
	if err != nil {
		return err
	}
	for _, r := range group {
		if err := bt.Put(ctx, r.key, r.value); err != nil {
			return err
		}
	}
	if err := bt.Commit(ctx); err != nil {
		return err
	}
	if b.sync {
		return b.store.Sync(ctx, ds.NewKey("/"))
	}
	return nil
}
