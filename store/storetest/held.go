// Package storetest holds test doubles for the datastore under a store.
// Only tests import it; it knows nothing of the store's layout.
package storetest

import (
	"context"
	"sync"
	"sync/atomic"

	ds "github.com/ipfs/go-datastore"
)

// HeldSync is a datastore that, once armed, holds every Sync of a key
// that match accepts until Release (or the Sync's context ends). It counts
// the Puts of those keys.
type HeldSync struct {
	ds.Batching
	match            func(ds.Key) bool
	armed            atomic.Bool
	entered, release chan struct{}
	enterOnce        sync.Once
	releaseOnce      sync.Once
	puts             atomic.Int64
}

// NewHeldSync wraps d; it starts armed.
func NewHeldSync(d ds.Batching, match func(ds.Key) bool) *HeldSync {
	h := &HeldSync{Batching: d, match: match, entered: make(chan struct{}), release: make(chan struct{})}
	h.armed.Store(true)
	return h
}

// Disarm lets every Sync through until Arm.
func (h *HeldSync) Disarm() { h.armed.Store(false) }

// Arm holds the matching Syncs from now on.
func (h *HeldSync) Arm() { h.armed.Store(true) }

// Entered is closed when the first matching Sync is held.
func (h *HeldSync) Entered() <-chan struct{} { return h.entered }

// Release lets the held Syncs, and every later one, through. It may be
// called more than once (a test defers it before the store's Close, so
// that a failing test does not leave Close waiting behind a held Sync).
func (h *HeldSync) Release() { h.releaseOnce.Do(func() { close(h.release) }) }

// Puts returns how many Puts of matching keys were made.
func (h *HeldSync) Puts() int64 { return h.puts.Load() }

func (h *HeldSync) Put(ctx context.Context, k ds.Key, v []byte) error {
	if h.match(k) {
		h.puts.Add(1)
	}
	return h.Batching.Put(ctx, k, v)
}

func (h *HeldSync) Sync(ctx context.Context, k ds.Key) error {
	if h.armed.Load() && h.match(k) {
		h.enterOnce.Do(func() { close(h.entered) })
		select {
		case <-h.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return h.Batching.Sync(ctx, k)
}
