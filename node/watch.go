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
	// Value is the key's value after the change (empty if removed).
	Value crdt.Value
	// Origin is the replica whose batch made the change.
	Origin crdt.ReplicaID
	// Seq is the batch's sequence number in Origin's log.
	Seq uint64
	// Position orders events on this node: it increases by one per event
	// delivered to any watcher of this node since it started.
	Position uint64
}

type watcher struct {
	ns, prefix string
	ch         chan Event
	stop       func() bool // detaches the context callback
}

// watchHub fans committed changes out to watchers. A watcher that does not
// keep up (its buffer fills) is closed rather than allowed to block commits;
// the caller sees its channel close and can resubscribe and re-read.
type watchHub struct {
	mu       sync.Mutex
	watchers map[*watcher]bool
	pos      uint64
	closed   bool
}

func newWatchHub() *watchHub { return &watchHub{watchers: make(map[*watcher]bool)} }

func (h *watchHub) add(ctx context.Context, ns, prefix string, buffer int) <-chan Event {
	w := &watcher{ns: ns, prefix: prefix, ch: make(chan Event, buffer)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(w.ch)
		return w.ch
	}
	h.watchers[w] = true
	w.stop = context.AfterFunc(ctx, func() { h.remove(w) })
	return w.ch
}

func (h *watchHub) remove(w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.watchers[w] {
		delete(h.watchers, w)
		close(w.ch)
	}
}

// publish is called from the store's commit goroutine: it must not block.
// value reads a key's current value.
func (h *watchHub) publish(c store.Commit, value func(key string) crdt.Value) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.watchers) == 0 {
		return
	}
	for i := 0; i < c.Delta.Len(); i++ {
		key := c.Delta.Key(i)
		for w := range h.watchers {
			if w.ns != c.Namespace || !strings.HasPrefix(key, w.prefix) {
				continue
			}
			h.pos++
			ev := Event{Namespace: c.Namespace, Key: key, Value: value(key), Origin: c.Origin, Seq: c.Seq, Position: h.pos}
			select {
			case w.ch <- ev:
			default:
				w.stop()
				delete(h.watchers, w)
				close(w.ch)
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
	defer h.mu.Unlock()
	h.closed = true
	for w := range h.watchers {
		w.stop()
		delete(h.watchers, w)
		close(w.ch)
	}
}
