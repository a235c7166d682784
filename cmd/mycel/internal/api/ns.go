package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/node"
)

// nsRoute is a parsed /v1/ns/{ns}/{kind}[/{key}] path.
type nsRoute struct {
	ns, kind, key string
	hasKey        bool
}

// parseNSPath splits the escaped path after /v1/ns/. The key is the rest
// of the path after kind/, percent-decoded, so it may contain '/'.
func parseNSPath(escaped string) (nsRoute, error) {
	rest := strings.TrimPrefix(escaped, "/v1/ns/")
	var rt nsRoute
	nsEsc, rest, _ := strings.Cut(rest, "/")
	kindEsc, keyEsc, hasKey := strings.Cut(rest, "/")
	var err error
	if rt.ns, err = url.PathUnescape(nsEsc); err != nil {
		return rt, fmt.Errorf("namespace: bad escape: %v", err)
	}
	if rt.kind, err = url.PathUnescape(kindEsc); err != nil {
		return rt, fmt.Errorf("bad escape: %v", err)
	}
	if rt.key, err = url.PathUnescape(keyEsc); err != nil {
		return rt, fmt.Errorf("key: bad escape: %v", err)
	}
	rt.hasKey = hasKey
	return rt, nil
}

// nsHandler checks a request before its namespace is opened: it reads and
// validates everything that can make it fail (body, JSON, query) and
// returns the action to run on the opened namespace, or nil after answering
// with an error. Opening a namespace registers it durably and joins its
// replication, so a request refused must be refused before that.
type nsHandler func(w http.ResponseWriter, r *http.Request, rt nsRoute) func(*node.Namespace)

// direct adapts a handler with nothing to check before the namespace opens.
func direct(h func(http.ResponseWriter, *http.Request, *node.Namespace, string)) nsHandler {
	return func(w http.ResponseWriter, r *http.Request, rt nsRoute) func(*node.Namespace) {
		return func(ns *node.Namespace) { h(w, r, ns, rt.key) }
	}
}

// serveNamespace routes /v1/ns/... by hand: unknown shapes are 404, known
// shapes with the wrong method 405, then names, query and body are checked
// (400, 413) and only then is the namespace opened (507 past
// MaxNamespaces). A read of a namespace this process has just opened waits
// (up to FirstSyncWait) for its first sync with the connected peers.
func (s *Server) serveNamespace(w http.ResponseWriter, r *http.Request) {
	rt, err := parseNSPath(r.URL.EscapedPath())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var op string
	var h nsHandler
	read := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch {
	case rt.kind == "kv" && !rt.hasKey:
		op, h = "keys", s.keys
		if !allow(w, r, http.MethodGet) {
			return
		}
	case rt.kind == "kv":
		if !allow(w, r, http.MethodGet, http.MethodPut, http.MethodDelete) {
			return
		}
		switch r.Method {
		case http.MethodPut:
			op, h = "put", s.put
		case http.MethodDelete:
			op, h = "delete", direct(s.del)
		default:
			op, h = "get", direct(s.get)
		}
	case rt.kind == "counter" && rt.hasKey:
		if op, h = readOrWrite(w, r, "counter_get", direct(s.counterGet), "counter_add", s.counterAdd); h == nil {
			return
		}
	case rt.kind == "set" && rt.hasKey:
		if op, h = readOrWrite(w, r, "set_get", direct(s.setGet), "set_update", s.setUpdate); h == nil {
			return
		}
	case rt.kind == "map" && rt.hasKey:
		if op, h = readOrWrite(w, r, "map_get", direct(s.mapGet), "map_update", s.mapUpdate); h == nil {
			return
		}
	case rt.kind == "digest" && !rt.hasKey:
		op, h = "digest", direct(s.digest)
		if !allow(w, r, http.MethodGet) {
			return
		}
	case rt.kind == "watch" && !rt.hasKey:
		// A watch streams what the first sync brings: no wait.
		op, h, read = "watch", s.watch, false
		if r.Method != http.MethodGet {
			// Not HEAD either: a stream has no end to answer it at.
			methodNotAllowed(w, http.MethodGet)
			return
		}
	default:
		writeError(w, http.StatusNotFound, "no route for "+r.URL.Path)
		return
	}
	s.observe(op, w, r, func(w http.ResponseWriter, r *http.Request) {
		if err := s.opts.Limits.CheckName("namespace", rt.ns); err != nil {
			writeError(w, http.StatusBadRequest, "invalid namespace: "+trimPrefix(err))
			return
		}
		if rt.hasKey {
			if err := s.opts.Limits.CheckName("key", rt.key); err != nil {
				writeError(w, http.StatusBadRequest, "invalid key: "+trimPrefix(err))
				return
			}
		}
		if q := r.URL.RawQuery; q != "" {
			// r.URL.Query() drops what it cannot parse; refuse it instead.
			if _, err := url.ParseQuery(q); err != nil {
				writeError(w, http.StatusBadRequest, "malformed query string: "+err.Error())
				return
			}
		}
		act := h(w, r, rt)
		if act == nil {
			return
		}
		ns, ok := s.open(w, r, rt.ns)
		if !ok {
			return
		}
		if read {
			s.waitFirstSync(r.Context(), ns)
		}
		act(ns)
	})
}

// open opens the named namespace, creating it only while the node holds
// fewer than MaxNamespaces; past that it answers 507 and returns false.
func (s *Server) open(w http.ResponseWriter, r *http.Request, name string) (*node.Namespace, bool) {
	if !s.n.HasNamespace(name) {
		// Creations take turns, so concurrent ones cannot overshoot.
		s.createMu.Lock()
		defer s.createMu.Unlock()
		if held := len(s.n.Namespaces()); !s.n.HasNamespace(name) && held >= s.opts.MaxNamespaces {
			writeError(w, http.StatusInsufficientStorage, fmt.Sprintf(
				"namespace %q does not exist and this node already holds %d namespaces, the limit (--max-namespaces)", name, held))
			return nil, false
		}
	}
	ns, err := s.n.Namespace(r.Context(), name)
	if err != nil {
		writeNodeError(w, err)
		return nil, false
	}
	return ns, true
}

// ended is a context that has ended: waiting with it only checks.
var ended = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// waitFirstSync waits, up to FirstSyncWait, for ns's first sync with the
// peers connected when this process opened it (at once if it has ended or
// there were none). On time-out the read answers with what the node holds.
func (s *Server) waitFirstSync(ctx context.Context, ns *node.Namespace) {
	if ns.WaitFirstSync(ended) == nil { // the usual case, without a timer
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.FirstSyncWait)
	defer cancel()
	if err := ns.WaitFirstSync(ctx); err != nil {
		s.log.Debug("api: answering before the namespace's first sync ended", "ns", ns.Name(), "err", err)
	}
}

// readOrWrite picks the handler of a counter, set or map route: POST
// changes the value, GET (and HEAD) reads it; any other method is answered
// 405 and gets a nil handler.
func readOrWrite(w http.ResponseWriter, r *http.Request, readOp string, read nsHandler, writeOp string, write nsHandler) (string, nsHandler) {
	if !allow(w, r, http.MethodGet, http.MethodPost) {
		return "", nil
	}
	if r.Method == http.MethodPost {
		return writeOp, write
	}
	return readOp, read
}

// allow answers 405 (with Allow) unless r's method is one of methods; GET
// also admits HEAD.
func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m || (m == http.MethodGet && r.Method == http.MethodHead) {
			return true
		}
	}
	methodNotAllowed(w, methods...)
	return false
}

func methodNotAllowed(w http.ResponseWriter, methods ...string) {
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeError(w, http.StatusMethodNotAllowed, "method not allowed; use "+strings.Join(methods, " or "))
}

func (s *Server) put(w http.ResponseWriter, r *http.Request, rt nsRoute) func(*node.Namespace) {
	key := rt.key
	body, ok := s.readBody(w, r)
	if !ok || !s.validOp(w, crdt.Op{Kind: crdt.OpPut, Key: key, Value: body}) {
		return nil
	}
	return func(ns *node.Namespace) {
		if err := ns.Put(r.Context(), key, body); err != nil {
			writeNodeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// validOp checks op against the node's limits (as the node will), so that
// a write the node would refuse is refused before its namespace opens:
// the key and value limits, and the size of the delta it makes.
func (s *Server) validOp(w http.ResponseWriter, op crdt.Op) bool {
	err := op.Validate(s.opts.Limits)
	if err == nil && opBytesBound(op) > node.MaxOpBytes/2 {
		// Could be near the bound: measure the delta it makes on an
		// empty key (a delta on an existing key differs only by the
		// dots it supersedes, which the node checks again).
		var d crdt.Delta
		if d, err = crdt.NewNamespace(s.opts.Limits).Prepare(op, 1, crdt.Timestamp{Wall: 1}); err == nil && d.Size() > node.MaxOpBytes {
			err = fmt.Errorf("%w: the operation's delta is %d bytes, over the %d one operation may carry", node.ErrTooLarge, d.Size(), node.MaxOpBytes)
		}
	}
	if err != nil {
		writeNodeError(w, err)
		return false
	}
	return true
}

// opBytesBound is a cheap upper bound of op's delta size, generous per
// element.
func opBytesBound(op crdt.Op) int {
	n := 256 + len(op.Key) + len(op.Value)
	for _, p := range op.Path {
		n += len(p) + 32
	}
	for _, e := range op.Add {
		n += len(e) + 64
	}
	for _, e := range op.Remove {
		n += len(e) + 64
	}
	return n
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, ns *node.Namespace, key string) {
	if r.URL.Query().Get("all") == "1" {
		vals, err := ns.GetAll(r.Context(), key)
		if errors.Is(err, node.ErrNotFound) {
			err = fmt.Errorf("%w: %q", node.ErrNotFound, key) // as without ?all=1
		}
		if err != nil {
			writeNodeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string][][]byte{"values": vals})
		return
	}
	v, ok := ns.Value(key)
	if !ok || v.IsEmpty() {
		writeNodeError(w, fmt.Errorf("%w: %q", node.ErrNotFound, key))
		return
	}
	val, siblings, ok := v.Register()
	if !ok {
		writeNodeError(w, fmt.Errorf("%w: %q holds a %s", node.ErrWrongType, key, v.Kinds()))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(val)))
	if siblings > 1 {
		w.Header().Set("X-Mycel-Siblings", strconv.Itoa(siblings))
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(val)
}

func (s *Server) del(w http.ResponseWriter, r *http.Request, ns *node.Namespace, key string) {
	if err := ns.Delete(r.Context(), key); err != nil {
		writeNodeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// maxListLimit bounds one page of keys.
const maxListLimit = 10_000

func (s *Server) keys(w http.ResponseWriter, r *http.Request, _ nsRoute) func(*node.Namespace) {
	q := r.URL.Query()
	limit := 1000
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 || n > maxListLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be an integer in 1..%d", maxListLimit))
			return nil
		}
		limit = n
	}
	return func(ns *node.Namespace) {
		keys := ns.Keys(q.Get("prefix"), q.Get("after"), limit+1)
		next := ""
		if len(keys) > limit {
			keys = keys[:limit]
			next = keys[limit-1]
		}
		writeJSON(w, http.StatusOK, struct {
			Keys []string `json:"keys"`
			Next string   `json:"next"`
		}{nonNil(keys), next})
	}
}

func (s *Server) counterAdd(w http.ResponseWriter, r *http.Request, rt nsRoute) func(*node.Namespace) {
	key := rt.key
	var body struct {
		Add *int64 `json:"add"`
	}
	if !s.decodeJSON(w, r, &body) {
		return nil
	}
	if body.Add == nil {
		writeError(w, http.StatusBadRequest, `body must be {"add": <integer>}`)
		return nil
	}
	if !s.validOp(w, crdt.Op{Kind: crdt.OpCounterAdd, Key: key, N: *body.Add}) {
		return nil
	}
	return func(ns *node.Namespace) {
		if err := ns.Counter(key).Add(r.Context(), *body.Add); err != nil {
			writeNodeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) counterGet(w http.ResponseWriter, r *http.Request, ns *node.Namespace, key string) {
	n, err := ns.Counter(key).Value(r.Context())
	if err != nil {
		writeNodeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int64{"value": n})
}

func (s *Server) setUpdate(w http.ResponseWriter, r *http.Request, rt nsRoute) func(*node.Namespace) {
	key := rt.key
	var body struct {
		Add    []string `json:"add"`
		Remove []string `json:"remove"`
	}
	if !s.decodeJSON(w, r, &body) {
		return nil
	}
	if len(body.Add) == 0 && len(body.Remove) == 0 {
		writeError(w, http.StatusBadRequest, `body must be {"add": [...], "remove": [...]} with at least one element`)
		return nil
	}
	if !s.validOp(w, crdt.Op{Kind: crdt.OpSetUpdate, Key: key, Add: body.Add, Remove: body.Remove}) {
		return nil
	}
	return func(ns *node.Namespace) {
		if err := ns.Set(key).Update(r.Context(), body.Add, body.Remove); err != nil {
			writeNodeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) setGet(w http.ResponseWriter, r *http.Request, ns *node.Namespace, key string) {
	el, err := ns.Set(key).Elements(r.Context())
	if err != nil {
		writeNodeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string][]string{"elements": nonNil(el)})
}

func (s *Server) digest(w http.ResponseWriter, _ *http.Request, ns *node.Namespace, _ string) {
	d, n := ns.Digest()
	writeJSON(w, http.StatusOK, struct {
		Digest string `json:"digest"`
		Keys   int    `json:"keys"`
	}{d.String(), n})
}

// bodyReadTimeout bounds reading one request body: a 1 MiB body at 20 KB/s.
const bodyReadTimeout = time.Minute

// readBody reads the whole body, answering 413 past MaxBodyBytes.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	max := s.opts.MaxBodyBytes
	if r.ContentLength > max {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body is %d bytes, limit %d", r.ContentLength, max))
		return nil, false
	}
	// A client that announces a body and then sends it slowly or not at
	// all holds a goroutine: bound the time (cleared once read, so a
	// response is not cut short).
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(bodyReadTimeout))
	defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	body := http.MaxBytesReader(w, r.Body, max)
	var b []byte
	var err error
	if r.ContentLength >= 0 && r.ContentLength <= 64<<10 {
		// The length is known and small: read exactly that. A body
		// shorter than announced is an error (io.ReadFull); the server
		// itself refuses a longer one.
		b = make([]byte, r.ContentLength)
		_, err = io.ReadFull(body, b)
	} else {
		// Memory grows with what arrives, not with what is announced.
		b, err = io.ReadAll(body)
		if err == nil && r.ContentLength >= 0 && int64(len(b)) != r.ContentLength {
			err = io.ErrUnexpectedEOF
		}
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds the limit of %d bytes", max))
		return nil, false
	case err != nil:
		writeError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return nil, false
	}
	return b, true
}

// decodeJSON reads one JSON object into v: unknown fields, trailing data
// and wrong types are 400, an oversized body 413.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	b, ok := s.readBody(w, r)
	if !ok {
		return false
	}
	if !utf8.Valid(b) {
		// The decoder would turn the bad bytes into U+FFFD: a name or
		// value changed, not refused.
		writeError(w, http.StatusBadRequest, "malformed JSON body: not valid UTF-8 (send bytes as base64, e.g. put_base64)")
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "malformed JSON body: "+err.Error())
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "malformed JSON body: data after the object")
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "malformed JSON body: data after the object")
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"encoding response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// writeNodeError maps node errors to status codes.
func writeNodeError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, node.ErrNotFound):
		writeError(w, http.StatusNotFound, trimPrefix(err))
	case errors.Is(err, node.ErrWrongType):
		writeError(w, http.StatusConflict, trimPrefix(err))
	case errors.Is(err, node.ErrInvalid), errors.Is(err, node.ErrTooLarge):
		writeError(w, http.StatusBadRequest, trimPrefix(err))
	case errors.Is(err, node.ErrDiskFull):
		writeError(w, http.StatusInsufficientStorage, trimPrefix(err))
	case errors.Is(err, node.ErrClosed), errors.Is(err, context.Canceled):
		writeError(w, http.StatusServiceUnavailable, "node is shutting down")
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// trimPrefix drops the leading "pkg: " of library errors for API users.
func trimPrefix(err error) string {
	msg := err.Error()
	for _, p := range []string{"node: ", "crdt: ", "invalid operation: ", "limit exceeded: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return msg
}
