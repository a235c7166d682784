package main

import (
	"context"
	"errors"
	"strings"
	"sync"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
)

// errStoreClosed is returned by a guardedStore after Close.
var errStoreClosed = errors.New("dscrdt-bench: store closed")

// guardedStore is a replica's store as go-ds-crdt sees it. It does two
// things.
//
// It reports keys visible when they are readable. go-ds-crdt's PutHook
// fires while the set is still writing a delta's elements into a
// datastore batch, before that batch is committed, so a Count right after
// the hook can miss the key. The hook only marks the key pending; when a
// batch that wrote the key's value entry (<namespace>/s/k/<key>/v) has
// committed, the pending key is passed to visible.
//
// It refuses reads and writes once closed. go-ds-crdt starts
// goroutines that its Close does not wait for (with MultiHeadProcessing,
// one per head; in either mode, one per processed DAG node to queue its
// children); one of them may still read a block or mark the store dirty
// just after Close returns, and Pebble panics on use after close. The
// guard turns that into an error those goroutines log.
type guardedStore struct {
	ds.Batching
	valuePrefix string           // <namespace>/s/k/
	visible     func(key string) // called once a pending key's value is committed

	mu     sync.RWMutex
	closed bool

	pmu     sync.Mutex
	pending map[string]bool // keys PutHook reported, value not yet committed
}

func newGuardedStore(s ds.Batching, namespace string, visible func(string)) *guardedStore {
	return &guardedStore{
		Batching:    s,
		valuePrefix: namespace + "/s/k/",
		visible:     visible,
		pending:     make(map[string]bool),
	}
}

// putHook is go-ds-crdt's PutHook.
func (g *guardedStore) putHook(k ds.Key, _ []byte) {
	g.pmu.Lock()
	g.pending[keyName(k)] = true
	g.pmu.Unlock()
}

// committed reports the pending keys among keys.
func (g *guardedStore) committed(keys []string) {
	var ready []string
	g.pmu.Lock()
	for _, k := range keys {
		if g.pending[k] {
			delete(g.pending, k)
			ready = append(ready, k)
		}
	}
	g.pmu.Unlock()
	for _, k := range ready {
		g.visible(k)
	}
}

// valueKey returns the user key whose value entry k is.
func (g *guardedStore) valueKey(k ds.Key) (string, bool) {
	s := k.String()
	if !strings.HasPrefix(s, g.valuePrefix) || !strings.HasSuffix(s, "/v") {
		return "", false
	}
	return strings.TrimSuffix(strings.TrimPrefix(s, g.valuePrefix), "/v"), true
}

func (g *guardedStore) do(f func() error) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return errStoreClosed
	}
	return f()
}

func (g *guardedStore) Get(ctx context.Context, k ds.Key) (v []byte, err error) {
	err = g.do(func() error { v, err = g.Batching.Get(ctx, k); return err })
	return v, err
}

func (g *guardedStore) Has(ctx context.Context, k ds.Key) (ok bool, err error) {
	err = g.do(func() error { ok, err = g.Batching.Has(ctx, k); return err })
	return ok, err
}

func (g *guardedStore) GetSize(ctx context.Context, k ds.Key) (n int, err error) {
	err = g.do(func() error { n, err = g.Batching.GetSize(ctx, k); return err })
	return n, err
}

func (g *guardedStore) Query(ctx context.Context, q query.Query) (r query.Results, err error) {
	err = g.do(func() error { r, err = g.Batching.Query(ctx, q); return err })
	return r, err
}

func (g *guardedStore) Put(ctx context.Context, k ds.Key, v []byte) error {
	return g.do(func() error { return g.Batching.Put(ctx, k, v) })
}

func (g *guardedStore) Delete(ctx context.Context, k ds.Key) error {
	return g.do(func() error { return g.Batching.Delete(ctx, k) })
}

func (g *guardedStore) Sync(ctx context.Context, prefix ds.Key) error {
	return g.do(func() error { return g.Batching.Sync(ctx, prefix) })
}

func (g *guardedStore) Batch(ctx context.Context) (b ds.Batch, err error) {
	err = g.do(func() error { b, err = g.Batching.Batch(ctx); return err })
	if err != nil {
		return nil, err
	}
	return &guardedBatch{Batch: b, g: g}, nil
}

// Close waits for operations in progress, then closes the store.
func (g *guardedStore) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	return g.Batching.Close()
}

type guardedBatch struct {
	ds.Batch
	g      *guardedStore
	values []string // keys whose value entry this batch writes
}

func (b *guardedBatch) Put(ctx context.Context, k ds.Key, v []byte) error {
	if key, ok := b.g.valueKey(k); ok {
		b.values = append(b.values, key)
	}
	return b.Batch.Put(ctx, k, v)
}

func (b *guardedBatch) Commit(ctx context.Context) error {
	if err := b.g.do(func() error { return b.Batch.Commit(ctx) }); err != nil {
		return err
	}
	b.g.committed(b.values)
	return nil
}
