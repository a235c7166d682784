package store

import (
	"runtime"
	"sync"
	"testing"
)

// On one processor a yield runs every runnable goroutine before it returns,
// so what gather lets in is exact.
func withOneProc(t *testing.T) {
	t.Helper()
	prev := runtime.GOMAXPROCS(1)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

func TestGatherLetsRunnableDurableWritersQueue(t *testing.T) {
	withOneProc(t)
	s := &Store{}
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

func TestGatherDoesNotWaitForUnsyncedWrites(t *testing.T) {
	withOneProc(t)
	s := &Store{}
	s.enqueue(&pending{durable: false})
	release := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.enqueue(&pending{durable: false})
		close(release)
	}()
	s.gather()
	if n, _ := s.queued(); n != 1 {
		t.Fatalf("after gather %d changes queued, want 1: nothing durable waits for a sync", n)
	}
	<-release
	wg.Wait()
}

func TestGatherIsBounded(t *testing.T) {
	withOneProc(t)
	s := &Store{}
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
