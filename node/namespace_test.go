package node

import (
	"strings"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/mycelnet/mycel/store/storetest"
)

// TestNamespaceOpenWhileAnotherRegisters: while a new namespace's registry
// record waits for its fsync, the node's open namespaces are still found
// and listed; the new one opens once the sync ends.
func TestNamespaceOpenWhileAnotherRegisters(t *testing.T) {
	ctx := t.Context()
	// The store's namespace registry records ("/node/ns/…").
	d := storetest.NewHeldSync(dssync.MutexWrap(ds.NewMapDatastore()), func(k ds.Key) bool {
		return strings.HasPrefix(k.String(), "/node/ns/")
	})
	d.Disarm()
	nd, err := Open(ctx, DefaultLocalConfig(), WithDatastore(d))
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	defer d.Release() // before Close, should the test fail
	old, err := nd.Namespace(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	d.Arm()
	opened := make(chan error, 1)
	go func() {
		_, err := nd.Namespace(ctx, "new")
		opened <- err
	}()
	select {
	case <-d.Entered():
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
	d.Release()
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
	if !nd.HasNamespace("new") {
		t.Fatal("the new namespace is not held after its registration")
	}
}
