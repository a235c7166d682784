package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/node"
)

// Watch cursors are "<epoch>:<position>": epoch names this daemon run and
// position is the node's event position (node.Event.Position). The node
// keeps no change history of its own, so a cursor can be resumed only
// within the same run and only while the feed still holds the events after
// it (Options.WatchHistory); otherwise the request is refused with 400 and
// the client must re-read the keys it cares about and watch from now.

// Event is one change as sent to watch clients (the SSE data line).
type Event struct {
	Cursor    string   `json:"cursor"`
	Namespace string   `json:"namespace"`
	Key       string   `json:"key"`
	Kinds     string   `json:"kinds"`   // "register", "counter", "set", ... or "none" once deleted
	Deleted   bool     `json:"deleted"` // the key holds nothing after this change
	Value     []byte   `json:"value,omitempty"`
	Siblings  int      `json:"siblings,omitempty"`
	Counter   *int64   `json:"counter,omitempty"`
	Elements  []string `json:"elements,omitempty"`
	Origin    string   `json:"origin"` // replica id of the writer, hex
	Seq       uint64   `json:"seq"`
}

// fedEvent is an encoded event with what the feed needs to route it.
type fedEvent struct {
	pos  uint64
	key  string
	id   string
	data []byte
}

// feed holds the one node watcher of a namespace that every watch stream of
// that namespace shares, and a bounded window of recent events.
type feed struct {
	max int

	mu      sync.Mutex
	ring    []fedEvent
	floor   uint64 // cursors below this position cannot be resumed
	started bool   // an event has been seen (floor is meaningful)
	last    uint64
	subs    map[*subscriber]bool
	done    bool
}

type subscriber struct {
	prefix string
	ch     chan fedEvent
	gone   chan struct{} // closed when the feed drops this subscriber
	reason string
}

// subscriberBuffer is how far a stream may lag the feed before it is cut
// off (it can resume from its last cursor).
const subscriberBuffer = 4096

func (s *Server) feedFor(ns *node.Namespace) (*feed, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.feeds[ns.Name()]; f != nil {
		return f, nil
	}
	if s.ctx.Err() != nil {
		return nil, node.ErrClosed
	}
	f := &feed{max: s.opts.WatchHistory, subs: make(map[*subscriber]bool)}
	ch := ns.Watch(s.ctx, "")
	s.feeds[ns.Name()] = f
	s.wg.Add(1)
	go s.runFeed(ns.Name(), f, ch)
	return f, nil
}

func (s *Server) runFeed(name string, f *feed, ch <-chan node.Event) {
	defer s.wg.Done()
	s.metrics.feeds.Inc()
	defer s.metrics.feeds.Dec()
	for ev := range ch {
		f.publish(s.encodeEvent(ev))
	}
	// The node closed the channel: shutdown, or this feed fell a million
	// events behind. Either way its subscribers end, and the next watch
	// starts a new feed whose first event sets a new floor.
	s.mu.Lock()
	if s.feeds[name] == f {
		delete(s.feeds, name)
	}
	s.mu.Unlock()
	f.close("the daemon is shutting down or the watch fell too far behind; resume with from=<last cursor>")
}

func (s *Server) encodeEvent(ev node.Event) fedEvent {
	e := Event{
		Cursor: s.epoch + ":" + strconv.FormatUint(ev.Position, 10), Namespace: ev.Namespace, Key: ev.Key,
		Kinds: ev.Value.Kinds().String(), Deleted: ev.Value.IsEmpty(), Origin: ev.Origin.String(), Seq: ev.Seq,
	}
	if v, sib, ok := ev.Value.Register(); ok {
		e.Value, e.Siblings = v, sib
	}
	k := ev.Value.Kinds()
	if k&crdt.KindCounter != 0 {
		n := ev.Value.Counter()
		e.Counter = &n
	}
	if k&crdt.KindSet != 0 {
		e.Elements = ev.Value.SetElements()
	}
	data, _ := json.Marshal(e)
	return fedEvent{pos: ev.Position, key: ev.Key, id: e.Cursor, data: data}
}

func (f *feed) publish(ev fedEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.started {
		f.started, f.floor = true, ev.pos
	}
	f.last = ev.pos
	f.ring = append(f.ring, ev)
	if len(f.ring) >= 2*f.max {
		drop := len(f.ring) - f.max
		f.floor = f.ring[drop-1].pos
		f.ring = append(f.ring[:0:0], f.ring[drop:]...)
	}
	for sub := range f.subs {
		if !strings.HasPrefix(ev.key, sub.prefix) {
			continue
		}
		select {
		case sub.ch <- ev:
		default:
			sub.reason = "watch fell behind; resume with from=<last cursor>"
			delete(f.subs, sub)
			close(sub.gone)
		}
	}
}

// subscribe registers a stream. With from set, it also returns the held
// events after that position, or an error if they are not all held.
func (f *feed) subscribe(prefix string, from uint64, resume bool) (*subscriber, []fedEvent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return nil, nil, node.ErrClosed
	}
	var backlog []fedEvent
	if resume {
		if !f.started || from < f.floor || from > f.last {
			return nil, nil, fmt.Errorf("cursor position %d cannot be resumed: this daemon holds changes only after position %d (and up to %d); re-read the keys and watch without from", from, f.floor, f.last)
		}
		for _, ev := range f.ring {
			if ev.pos > from && strings.HasPrefix(ev.key, prefix) {
				backlog = append(backlog, ev)
			}
		}
	}
	sub := &subscriber{prefix: prefix, ch: make(chan fedEvent, subscriberBuffer), gone: make(chan struct{})}
	f.subs[sub] = true
	return sub, backlog, nil
}

func (f *feed) unsubscribe(sub *subscriber) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subs[sub] {
		delete(f.subs, sub)
		close(sub.gone)
	}
}

func (f *feed) close(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.done = true
	for sub := range f.subs {
		sub.reason = reason
		delete(f.subs, sub)
		close(sub.gone)
	}
}

// parseCursor checks that a cursor is from this run and returns its position.
func (s *Server) parseCursor(c string) (uint64, error) {
	epoch, pos, ok := strings.Cut(c, ":")
	if !ok {
		return 0, fmt.Errorf("from=%q is not a watch cursor (want the id of an event this daemon sent)", c)
	}
	p, err := strconv.ParseUint(pos, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("from=%q is not a watch cursor (want the id of an event this daemon sent)", c)
	}
	if epoch != s.epoch {
		return 0, fmt.Errorf("from=%q is from an earlier run of the daemon: resuming a watch across restarts is not supported yet; re-read the keys and watch without from", c)
	}
	return p, nil
}

// heartbeat keeps idle streams (and proxies) alive.
const heartbeat = 15 * time.Second

func (s *Server) watch(w http.ResponseWriter, r *http.Request, ns *node.Namespace, _ string) {
	q := r.URL.Query()
	from := q.Get("from")
	if from == "" {
		from = r.Header.Get("Last-Event-ID")
	}
	var pos uint64
	resume := from != ""
	if resume {
		var err error
		if pos, err = s.parseCursor(from); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	f, err := s.feedFor(ns)
	if err != nil {
		writeNodeError(w, err)
		return
	}
	sub, backlog, err := f.subscribe(q.Get("prefix"), pos, resume)
	if err != nil {
		if err == node.ErrClosed {
			writeNodeError(w, err)
		} else {
			writeError(w, http.StatusBadRequest, err.Error())
		}
		return
	}
	defer f.unsubscribe(sub)
	s.metrics.watchers.Inc()
	defer s.metrics.watchers.Dec()

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprintf(w, ": watching %q prefix %q\n\n", ns.Name(), q.Get("prefix"))
	for _, ev := range backlog {
		if writeEvent(w, ev) != nil {
			return
		}
	}
	if rc.Flush() != nil {
		return
	}
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case ev := <-sub.ch:
			if writeEvent(w, ev) != nil {
				return
			}
			// Drain what is queued before flushing: fewer syscalls under load.
			for drained := false; !drained; {
				select {
				case ev := <-sub.ch:
					if writeEvent(w, ev) != nil {
						return
					}
				default:
					drained = true
				}
			}
			if rc.Flush() != nil {
				return
			}
		case <-sub.gone:
			for len(sub.ch) > 0 {
				if writeEvent(w, <-sub.ch) != nil {
					return
				}
			}
			b, _ := json.Marshal(map[string]string{"error": sub.reason})
			_, _ = fmt.Fprintf(w, "event: error\ndata: %s\n\n", b)
			_ = rc.Flush()
			return
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case <-r.Context().Done():
			return
		case <-s.ctx.Done():
			_, _ = fmt.Fprint(w, "event: error\ndata: {\"error\":\"the daemon is shutting down\"}\n\n")
			_ = rc.Flush()
			return
		}
	}
}

func writeEvent(w http.ResponseWriter, ev fedEvent) error {
	_, err := fmt.Fprintf(w, "id: %s\nevent: change\ndata: %s\n\n", ev.id, ev.data)
	return err
}
