package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/node"
)

// A watch cursor names one event: the node's commit position of the change
// in its namespace (node.Event.Position) in decimal, followed by ".<index>"
// when the event is not its commit's last key (one commit can change many
// keys: group commit, remote batches). Positions are persisted, so a client
// resumes with from=<cursor> (or Last-Event-ID) after a disconnect or a
// daemon restart and gets exactly the events after that one, even if the
// stream broke inside a commit; a position the node no longer keeps history
// for is refused with 410 Gone, and the client re-reads the keys it cares
// about.

// cursorOf is an event's cursor.
func cursorOf(ev node.Event) string {
	if ev.LastInCommit {
		return strconv.FormatUint(ev.Position, 10)
	}
	return strconv.FormatUint(ev.Position, 10) + "." + strconv.Itoa(ev.Index)
}

// parseCursor reads a cursor; index is -1 for a whole commit.
func parseCursor(s string) (pos uint64, index int, err error) {
	p, i, dotted := strings.Cut(s, ".")
	if pos, err = strconv.ParseUint(p, 10, 64); err != nil {
		return 0, 0, err
	}
	if !dotted {
		return pos, -1, nil
	}
	n, err := strconv.ParseUint(i, 10, 31)
	if err != nil || pos == 0 {
		return 0, 0, errors.New("bad event index")
	}
	return pos, int(n), nil
}

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
	// Fields is a map's fields, as GET map/{key} shows them.
	Fields map[string]*MapField `json:"fields,omitempty"`
	// Flag is a flag's state, for a key that holds one (the library
	// writes top-level flags; over HTTP they live in map fields).
	Flag *bool `json:"flag,omitempty"`
	// Truncated: the value is too large for one event (maxEventData), so
	// the event carries none of it; read the key instead.
	Truncated bool   `json:"truncated,omitempty"`
	Origin    string `json:"origin"` // replica id of the writer, hex
	Seq       uint64 `json:"seq"`
}

// maxEventData bounds an event's data line. Clients read a line at a
// time, mycel watch and the simulator up to 4 MiB: an event past that
// could never be read, and a client resuming before it would meet it
// again on every retry. A local write may not grow a key past 3 MiB (what
// a sync frame carries), but remote batches are applied whatever size
// they make it, and JSON is longer than the state: base64 adds a third to
// a register's bytes, and a map field's text register escapes each
// control character in six bytes. So a value whose event would pass the
// bound is left out of it (Truncated).
const maxEventData = 3 << 20

func encodeEvent(ev node.Event) (id string, data []byte) {
	e := Event{
		Cursor: cursorOf(ev), Namespace: ev.Namespace, Key: ev.Key,
		Kinds: ev.Value.Kinds().String(), Deleted: ev.Value.IsEmpty(), Origin: ev.Origin.String(), Seq: ev.Seq,
	}
	bare := e
	k := ev.Value.Kinds()
	if k&crdt.KindCounter != 0 {
		n := ev.Value.Counter()
		e.Counter, bare.Counter = &n, &n
	}
	if v, sib, ok := ev.Value.Register(); ok {
		e.Value, e.Siblings = v, sib
	}
	if k&crdt.KindSet != 0 {
		e.Elements = ev.Value.SetElements()
	}
	if k&crdt.KindMap != 0 {
		e.Fields = showMap(ev.Value)
	}
	if k&crdt.KindFlag != 0 {
		f := ev.Value.Flag()
		e.Flag, bare.Flag = &f, &f
	}
	data, _ = json.Marshal(e)
	if len(data) > maxEventData {
		bare.Truncated = true
		data, _ = json.Marshal(bare)
	}
	return e.Cursor, data
}

// heartbeat keeps idle streams (and proxies) alive.
const heartbeat = 15 * time.Second

func (s *Server) watch(w http.ResponseWriter, r *http.Request, rt nsRoute) func(*node.Namespace) {
	q := r.URL.Query()
	from := q.Get("from")
	if from == "" {
		from = r.Header.Get("Last-Event-ID")
	}
	if s.watchers.Load() >= int64(s.opts.MaxWatchers) {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("%d watch streams are open, the limit; retry later", s.opts.MaxWatchers))
		return nil
	}
	var pos uint64
	index := -1
	if from != "" {
		var err error
		if pos, index, err = parseCursor(from); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("from=%q is not a watch cursor (want the id of an event this node sent)", from))
			return nil
		}
		if pos > 0 && !s.n.HasNamespace(rt.ns) {
			// Any cursor is ahead of a namespace not created yet; refuse
			// it without creating the namespace.
			writeError(w, http.StatusBadRequest, fmt.Sprintf("cursor %s cannot be resumed: namespace %q does not exist on this node", from, rt.ns))
			return nil
		}
	}
	return func(ns *node.Namespace) { s.stream(w, r, ns, from, pos, index) }
}

// stream sends ns's changes as server-sent events, after the event named
// by cursor (pos, index; see parseCursor) if cursor is set, until the
// client leaves or the daemon shuts down.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, ns *node.Namespace, cursor string, pos uint64, index int) {
	q := r.URL.Query()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel) // daemon shutdown ends the stream
	defer stop()
	if s.watchers.Add(1) > int64(s.opts.MaxWatchers) {
		s.watchers.Add(-1)
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("%d watch streams are open, the limit; retry later", s.opts.MaxWatchers))
		return
	}
	defer s.watchers.Add(-1)
	var ch <-chan node.Event
	if cursor == "" {
		ch = ns.Watch(ctx, q.Get("prefix"))
	} else {
		var err error
		if index < 0 {
			ch, err = ns.WatchFrom(ctx, q.Get("prefix"), pos)
		} else {
			ch, err = ns.WatchAfter(ctx, q.Get("prefix"), pos, index)
		}
		switch {
		case errors.Is(err, node.ErrCompacted):
			writeError(w, http.StatusGone, fmt.Sprintf("cursor %s cannot be resumed: the history after it was compacted; re-read the keys and watch without from", cursor))
			return
		case errors.Is(err, node.ErrInvalid):
			writeError(w, http.StatusBadRequest, fmt.Sprintf("cursor %s cannot be resumed: %v", cursor, err))
			return
		case err != nil:
			writeNodeError(w, err)
			return
		}
	}
	s.metrics.watchers.Inc()
	defer s.metrics.watchers.Dec()

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	// Every write gets a deadline: a client that stops reading must not
	// hold its slot, and the node's queue for it, for ever.
	deadline := func() { _ = rc.SetWriteDeadline(time.Now().Add(s.opts.WatchWriteTimeout)) }
	deadline()
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprintf(w, ": watching %q prefix %q\n\n", ns.Name(), q.Get("prefix"))
	if rc.Flush() != nil {
		return
	}
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case ev, ok := <-ch:
			deadline()
			if !ok {
				msg := "the watch fell too far behind; resume with from=<last cursor>"
				if s.ctx.Err() != nil {
					msg = "the daemon is shutting down; resume with from=<last cursor>"
				}
				if r.Context().Err() == nil {
					b, _ := json.Marshal(map[string]string{"error": msg})
					_, _ = fmt.Fprintf(w, "event: error\ndata: %s\n\n", b)
					_ = rc.Flush()
				}
				return
			}
			if writeEvent(w, ev) != nil {
				return
			}
			// Drain what is queued before flushing: fewer syscalls under load.
			for drained := false; !drained; {
				select {
				case ev, ok := <-ch:
					if !ok {
						drained = true
						break
					}
					deadline() // a reader that keeps reading keeps its stream
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
		case <-tick.C:
			deadline()
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}

func writeEvent(w http.ResponseWriter, ev node.Event) error {
	id, data := encodeEvent(ev)
	_, err := fmt.Fprintf(w, "id: %s\nevent: change\ndata: %s\n\n", id, data)
	return err
}
