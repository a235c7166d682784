package node

import (
	"context"
	"strings"
	"sync"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/store"
)

// Event is one change to a key, local or remote.
type Event struct {
	Namespace string
	Key       string
	// Value is the key's value just after the change (empty if removed).
	Value crdt.Value
	// Origin is the replica whose batch made the change.
	Origin crdt.ReplicaID
	// Seq is the batch's sequence number in Origin's log.
	Seq uint64
	// Position orders events on this node: it increases with every event
	// delivered to any watcher of this node since it started.
	Position uint64
}

// maxWatchBacklog bounds the events queued for one slow watcher; past it
// the watcher's channel is closed (it can resubscribe and re-read).
const maxWatchBacklog = 1 << 20

// watcher queues events for one subscriber. The commit goroutine only
// appends to the queue; a pump goroutine moves events to the channel, so a
// slow reader never stalls commits.
type watcher struct {
	ns, prefix string
	ch         chan Event
	stop       func() bool // detaches the context callback

	mu     sync.Mutex
	queue  []Event
	wake   chan struct{}
	done   chan struct{}
	closed bool
}

func (w *watcher) push(ev Event) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || len(w.queue) >= maxWatchBacklog {
		return false
	}
	w.queue = append(w.queue, ev)
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return true
}

func (w *watcher) pump(wg *sync.WaitGroup) {
	defer wg.Done()
	defer close(w.ch)
	for {
		w.mu.Lock()
		batch := w.queue
		w.queue = nil
		w.mu.Unlock()
		for _, ev := range batch {
			select {
			case w.ch <- ev:
			case <-w.done:
				return
			}
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-w.wake:
		case <-w.done:
			return
		}
	}
}

func (w *watcher) shut() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		close(w.done)
	}
}

// watchHub fans committed changes out to watchers.
type watchHub struct {
	mu       sync.Mutex
	watchers map[*watcher]bool
	pos      uint64
	closed   bool
	wg       sync.WaitGroup
}

func newWatchHub() *watchHub { return &watchHub{watchers: make(map[*watcher]bool)} }

func (h *watchHub) add(ctx context.Context, ns, prefix string) <-chan Event {
	w := &watcher{ns: ns, prefix: prefix, ch: make(chan Event, 64), wake: make(chan struct{}, 1), done: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(w.ch)
		return w.ch
	}
	h.watchers[w] = true
	h.wg.Add(1)
	go w.pump(&h.wg)
	w.stop = context.AfterFunc(ctx, func() { h.remove(w) })
	return w.ch
}

func (h *watchHub) remove(w *watcher) {
	h.mu.Lock()
	delete(h.watchers, w)
	h.mu.Unlock()
	w.shut()
}

// publish is called from the store's commit goroutine and never blocks.
// value reads a key's current value.
func (h *watchHub) publish(c store.Commit, value func(key string) crdt.Value) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := 0; i < c.Delta.Len(); i++ {
		key := c.Delta.Key(i)
		var v *crdt.Value
		for w := range h.watchers {
			if w.ns != c.Namespace || !strings.HasPrefix(key, w.prefix) {
				continue
			}
			if v == nil {
				x := value(key)
				v = &x
			}
			h.pos++
			if !w.push(Event{Namespace: c.Namespace, Key: key, Value: *v, Origin: c.Origin, Seq: c.Seq, Position: h.pos}) {
				w.stop()
				delete(h.watchers, w)
				w.shut()
			}
		}
	}
}

func (h *watchHub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watchers)
}

func (h *watchHub) close() {
	h.mu.Lock()
	h.closed = true
	for w := range h.watchers {
		w.stop()
		delete(h.watchers, w)
		w.shut()
	}
	h.mu.Unlock()
	h.wg.Wait()
}
