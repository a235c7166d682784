package node

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
)

// heldRegistry is a datastore that, once armed, holds the Sync of every
// namespace registry record (the store's "/node/ns/" keys) until release.
type heldRegistry struct {
	ds.Batching
	armed            atomic.Bool
	entered, release chan struct{}
	once             sync.Once
}

func (d *heldRegistry) Sync(ctx context.Context, k ds.Key) error {
	if d.armed.Load() && strings.HasPrefix(k.String(), "/node/ns/") {
		d.once.Do(func() { close(d.entered) })
		select {
		case <-d.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return d.Batching.Sync(ctx, k)
}

// TestNamespaceOpenWhileAnotherRegisters: while a new namespace's registry
// record waits for its fsync, the node's open namespaces are still found
// and listed; the new one opens once the sync ends.
func TestNamespaceOpenWhileAnotherRegisters(t *testing.T) {
	ctx := t.Context()
	d := &heldRegistry{Batching: dssync.MutexWrap(ds.NewMapDatastore()), entered: make(chan struct{}), release: make(chan struct{})}
	nd, err := Open(ctx, DefaultLocalConfig(), WithDatastore(d))
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	var released sync.Once
	release := func() { released.Do(func() { close(d.release) }) }
	defer release() // before Close, should the test fail
	old, err := nd.Namespace(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	d.armed.Store(true)
	opened := make(chan error, 1)
	go func() {
		_, err := nd.Namespace(ctx, "new")
		opened <- err
	}()
	select {
	case <-d.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the new namespace's registration never reached its sync")
	}
	found := make(chan *Namespace, 1)
	go func() {
		s, _ := nd.Namespace(ctx, "old")
		nd.Namespaces()
		nd.HasNamespace("old")
		found <- s
	}()
	select {
	case s := <-found:
		if s != old {
			t.Fatal("another namespace returned for \"old\"")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("opening an open namespace waited for another one's registration")
	}
	release()
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
	if !nd.HasNamespace("new") {
		t.Fatal("the new namespace is not held after its registration")
	}
}
