package store

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/mycelnet/mycel/crdt"
)

// On one processor a yield runs every runnable goroutine before it returns,
// so what gather lets in is exact.
func withOneProc(t *testing.T) {
	t.Helper()
	prev := runtime.GOMAXPROCS(1)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

// concurrentWriters is a store whose last acknowledgement released
// several waiting writers: the case gather is for.
func concurrentWriters() *Store {
	s := &Store{}
	s.ackedWaiters.Store(2) // the least that gathers
	return s
}

func TestGatherLetsRunnableDurableWritersQueue(t *testing.T) {
	withOneProc(t)
	s := concurrentWriters()
	s.enqueue(&pending{durable: true})
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { // runnable, not yet run: a writer just acknowledged
			defer wg.Done()
			s.enqueue(&pending{durable: true})
		}()
	}
	s.gather()
	if n, _ := s.queued(); n != 4 {
		t.Fatalf("after gather %d changes queued, want the 4 runnable writers' all in", n)
	}
	wg.Wait()
}

func TestGatherIsBounded(t *testing.T) {
	withOneProc(t)
	s := concurrentWriters()
	s.enqueue(&pending{durable: true})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a writer that never stops queueing
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			s.enqueue(&pending{durable: true})
			runtime.Gosched()
		}
	}()
	s.gather() // returns: the test would hang otherwise
	close(stop)
	wg.Wait()
	if n, _ := s.queued(); n < 2 {
		t.Fatalf("%d changes queued, want the busy writer's too", n)
	}
}

// Gather does not yield for writes acknowledged unsynced (nothing waits
// for a sync), nor after an acknowledgement that released a lone writer,
// which waits for each answer before its next write: it would only wait
// for others.
func TestGatherDoesNotWait(t *testing.T) {
	for _, c := range []struct {
		name    string
		waiters int64
		durable bool
	}{
		{"unsynced writes", 2, false},
		{"after a lone writer", 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			withOneProc(t)
			s := &Store{}
			s.ackedWaiters.Store(c.waiters)
			s.enqueue(&pending{durable: c.durable})
			release := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // runnable, not yet run
				defer wg.Done()
				s.enqueue(&pending{durable: c.durable})
				close(release)
			}()
			s.gather()
			if n, _ := s.queued(); n != 1 {
				t.Fatalf("after gather %d changes queued, want 1: no yield", n)
			}
			<-release
			wg.Wait()
		})
	}
}

// The sync loop counts the writers each acknowledgement releases that
// wait for their answer; a write made without waiting is not one.
func TestSyncLoopCountsAcknowledgedWaiters(t *testing.T) {
	ctx := t.Context()
	s, err := OpenMemory(ctx, Options{Replica: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n, err := s.Namespace(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	waiters := func(want int64) {
		t.Helper()
		// The count is stored once the whole acknowledgement is done,
		// just after the writer got its answer.
		deadline := time.Now().Add(10 * time.Second)
		for s.ackedWaiters.Load() != want {
			if time.Now().After(deadline) {
				t.Fatalf("the last acknowledgement released %d waiting writers, want %d", s.ackedWaiters.Load(), want)
			}
			time.Sleep(time.Millisecond) // polling interval
		}
	}
	if _, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "a", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	waiters(1)
	if _, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "b", Value: []byte("v")}, WithoutWait()); err != nil {
		t.Fatal(err)
	}
	waiters(0)
}
