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
	// Value is the key's value when the event is published (empty if
	// removed): it includes this change and may include later changes to
	// the key already applied in memory (their own events follow), so the
	// last event of a key carries its current value.
	Value crdt.Value
	// Origin is the replica whose batch made the change.
	Origin crdt.ReplicaID
	// Seq is the batch's sequence number in Origin's log.
	Seq uint64
	// Position is the commit position of the batch in this namespace on
	// this node. It survives restarts: WatchFrom(ctx, prefix, p) resumes
	// after position p.
	Position uint64
	// Index is the key's place (from 0, in key order) among the keys its
	// commit changed, and LastInCommit says it is the commit's last key.
	// One commit can change many keys (group commit, a remote batch), so
	// a watcher that stopped inside a commit resumes with
	// WatchAfter(ctx, prefix, Position, Index); after the commit's last
	// key, WatchFrom(ctx, prefix, Position) does the same.
	Index        int
	LastInCommit bool
}

// maxWatchBacklog and maxWatchBacklogBytes bound the events queued for one
// slow watcher, in number and in the bytes of their keys and values; past
// either the watcher's channel is closed (it can resubscribe and re-read).
const (
	maxWatchBacklog      = 1 << 20
	maxWatchBacklogBytes = 64 << 20
)

// eventBytes is what an event for key with value v holds in a watcher's
// queue, roughly.
func eventBytes(key string, v crdt.Value) int { return len(key) + v.Size() + 64 }

// maxWatchReplay bounds the history one resumed watch replays (held in
// memory before it is queued): a watcher further behind fails with
// ErrCompacted and re-reads instead.
const maxWatchReplay = 100_000

// watcher queues events for one subscriber. The commit goroutine only
// appends to the queue; a pump goroutine moves events to the channel, so a
// slow reader never stalls commits.
type watcher struct {
	ns, prefix string
	ch         chan Event
	stop       func() bool // detaches the context callback

	mu    sync.Mutex
	queue []Event
	// eventBytes of the live events queued, held and being delivered (a
	// replay's events are not counted: bounded by maxWatchReplay, they
	// share values)
	queuedBytes, heldBytes, inFlight int
	wake                             chan struct{}
	done                             chan struct{}
	closed                           bool
	// While a resumed watcher replays history, live events wait in held.
	holding bool
	held    []Event
}

// push queues ev, which holds size bytes (eventBytes), or reports that the
// watcher is closed or too far behind.
func (w *watcher) push(ev Event, size int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || len(w.queue)+len(w.held) >= maxWatchBacklog {
		return false
	}
	if total := w.queuedBytes + w.heldBytes + w.inFlight; total > 0 && total+size > maxWatchBacklogBytes {
		return false
	}
	if w.holding {
		w.held = append(w.held, ev)
		w.heldBytes += size
		return true
	}
	w.queue = append(w.queue, ev)
	w.queuedBytes += size
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
		w.inFlight, w.queuedBytes = w.queuedBytes, 0
		w.mu.Unlock()
		for _, ev := range batch {
			select {
			case w.ch <- ev:
			case <-w.done:
				return
			}
		}
		if len(batch) > 0 {
			w.mu.Lock()
			w.inFlight = 0
			w.mu.Unlock()
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
	last     map[string]uint64 // per namespace: last position published
	closed   bool
	wg       sync.WaitGroup
}

func newWatchHub() *watchHub {
	return &watchHub{watchers: make(map[*watcher]bool), last: make(map[string]uint64)}
}

// add registers a watcher and returns it with the last position published
// for ns: every later commit reaches the watcher live. With hold, live
// events wait until release.
// add subscribes a watcher; last is ns's last published position, and
// closed reports that the hub is closed (the watcher's channel is too).
func (h *watchHub) add(ctx context.Context, ns, prefix string, hold bool) (w *watcher, last uint64, closed bool) {
	w = &watcher{ns: ns, prefix: prefix, ch: make(chan Event, 64), wake: make(chan struct{}, 1), done: make(chan struct{}), holding: hold}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		w.closed = true
		close(w.ch)
		return w, 0, true
	}
	h.watchers[w] = true
	h.wg.Add(1)
	go w.pump(&h.wg)
	w.stop = context.AfterFunc(ctx, func() { h.remove(w) })
	return w, h.last[ns], false
}

// lastOf returns the last position published for ns.
func (h *watchHub) lastOf(ns string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last[ns]
}

// start records pos as ns's last published position unless one is known.
func (h *watchHub) start(ns string, pos uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.last[ns] < pos {
		h.last[ns] = pos
	}
}

// replayed queues history ahead of the live events held meanwhile.
func (w *watcher) replayed(history []Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.queue = append(append(w.queue, history...), w.held...)
	w.queuedBytes += w.heldBytes
	w.held, w.heldBytes, w.holding = nil, 0, false
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (h *watchHub) remove(w *watcher) {
	h.mu.Lock()
	delete(h.watchers, w)
	h.mu.Unlock()
	if w.stop != nil {
		w.stop() // the caller's context must not keep w alive
	}
	w.shut()
}

// publish is called from the store's commit goroutine and never blocks.
// value reads a key's current value.
func (h *watchHub) publish(c store.Commit, value func(key string) crdt.Value) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last[c.Namespace] = c.Position
	if len(h.watchers) == 0 {
		return
	}
	for i := 0; i < c.Delta.Len(); i++ {
		key := c.Delta.Key(i)
		var v *crdt.Value
		var size int
		for w := range h.watchers {
			if w.ns != c.Namespace || !strings.HasPrefix(key, w.prefix) {
				continue
			}
			if v == nil { // once per key, shared by its watchers
				x := value(key)
				v, size = &x, eventBytes(key, x)
			}
			ev := Event{Namespace: c.Namespace, Key: key, Value: *v, Origin: c.Origin, Seq: c.Seq, Position: c.Position,
				Index: i, LastInCommit: i == c.Delta.Len()-1}
			if !w.push(ev, size) {
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
