package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/node"
)

// FuzzRequest sends arbitrary requests (method, path, query, body) to the
// API's real handler on an in-memory node and checks the API's promises
// about bad input: it is answered with a 4xx whose body is {"error": "…"}
// (507 only past the namespace limit; no other 5xx), and a refused request
// changes nothing — no namespace appears, no digest, key count or commit
// position moves (a read of an absent key is no refusal: it opens its
// namespace, then answers 404; nothing else may move). The inputs share
// one node, as a daemon's requests do (a fresh node per input would cost
// 8 ms): a failure prints the state it met, and replayed alone it may
// need the inputs before it. Watch streams are left out: they stay open until the
// client leaves (FuzzParseCursor covers their cursor).
func FuzzRequest(f *testing.F) {
	ctx := context.Background()
	const maxNamespaces = 8
	// start opens a fresh node and API, with something to read,
	// overwrite and conflict with.
	var n *node.Node
	var srv *Server
	stop := func() {
		if srv != nil {
			srv.Close()
		}
		if n != nil {
			n.Close()
		}
	}
	start := func(tb testing.TB) {
		stop()
		var err error
		if n, err = node.Open(ctx, node.DefaultLocalConfig()); err != nil {
			tb.Fatal(err)
		}
		if srv, err = New(Options{Node: n, MaxNamespaces: maxNamespaces, MaxBodyBytes: 4096, FirstSyncWait: time.Millisecond}); err != nil {
			tb.Fatal(err)
		}
		for _, r := range []struct {
			method, target, body string
		}{
			{"PUT", "/v1/ns/a/kv/reg", "v"},
			{"POST", "/v1/ns/a/counter/cnt", `{"add": 2}`},
			{"POST", "/v1/ns/a/set/set", `{"add": ["x", "y"]}`},
			{"POST", "/v1/ns/a/map/map", `{"field": "f", "put": "v"}`},
			{"POST", "/v1/ns/a/map/map", `{"path": ["in"], "field": "c", "add": 1}`},
		} {
			w := httptest.NewRecorder()
			srv.Handler().ServeHTTP(w, httptest.NewRequest(r.method, r.target, strings.NewReader(r.body)))
			if w.Code != http.StatusNoContent {
				tb.Fatalf("%s %s: %d %s", r.method, r.target, w.Code, w.Body)
			}
		}
	}
	start(f)
	f.Cleanup(stop)

	methods := []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodPatch, http.MethodOptions}
	for _, s := range []struct {
		method      uint8
		path, query string
		body        []byte
	}{
		{2, "v1/ns/a/kv/reg", "", []byte("new")},
		{0, "v1/ns/a/kv/reg", "all=1", nil},
		{0, "v1/ns/a/kv", "prefix=r&limit=2&after=a", nil},
		{0, "v1/ns/a/kv", "limit=0", nil},
		{0, "v1/ns/a/kv", "limit=x&%zz", nil},
		{3, "v1/ns/a/counter/cnt", "", []byte(`{"add": 1}`)},
		{3, "v1/ns/a/counter/cnt", "", []byte(`{"add": "1"}`)},
		{3, "v1/ns/a/counter/reg", "", []byte(`{"add": 1}`)},
		{3, "v1/ns/a/counter/new", "", []byte(`{"add": 1, "x": 2}`)},
		{3, "v1/ns/a/set/set", "", []byte(`{"add": ["z"], "remove": ["x"]}`)},
		{3, "v1/ns/a/set/set", "", []byte(`{"add": [1]}`)},
		{2, "v1/ns/a/set/set", "", []byte(`{}`)},
		{3, "v1/ns/a/map/map", "", []byte(`{"field": "f", "put_base64": "/w=="}`)},
		{3, "v1/ns/a/map/map", "", []byte(`{"path": ["in"], "field": "s", "set_add": ["e"], "set_remove": ["d"]}`)},
		{3, "v1/ns/a/map/map", "", []byte(`{"field": "g", "flag": true}`)},
		{3, "v1/ns/a/map/map", "", []byte(`{"field": "f", "delete": true}`)},
		{3, "v1/ns/a/map/map", "", []byte(`{"field": "f", "put": "v", "add": 1}`)},
		{3, "v1/ns/a/map/map", "", []byte(`{"field": "", "put": "v"}`)},
		{3, "v1/ns/a/map/map", "", []byte(`{"path": [""], "field": "f", "put": "v"}`)},
		{3, "v1/ns/a/map/map", "", []byte(`{"field": "f"}`)},
		{3, "v1/ns/a/map/map", "", []byte(`{"path": ["f"], "field": "x", "add": 1}`)},
		{3, "v1/ns/a/map/reg", "", []byte(`{"field": "f", "put": "v"}`)},
		{3, "v1/ns/new/map/m", "", []byte(`{"field": "f", "put": "v", "flag": true}`)},
		{3, "v1/ns/new/map/m", "", []byte("{\"field\": \"f\xff\", \"put\": \"v\"}")},
		{3, "v1/ns/new/map/m", "", []byte(`{"path": ["p"], "field": "f", "set_add": ["x"]}`)},
		{0, "v1/ns/a/map/map", "", nil},
		{0, "v1/ns/a/map/reg", "", nil},
		{2, "v1/ns/b%2Fc/kv/k", "", []byte("v")},
		{2, "v1/ns//kv/k", "", []byte("v")},
		{2, "v1/ns/a/kv/", "", []byte("v")},
		{2, "v1/ns/a/kv/\xff", "", []byte("v")},
		{2, "v1/ns/\xff/kv/k", "", []byte("v")},
		{4, "v1/ns/a/kv/reg", "", nil},
		{0, "v1/ns/a/digest", "", nil},
		{0, "v1/ns/fresh/digest", "", nil},
		{0, "v1/ns/other/kv/absent", "", nil},
		{0, "kv/absent", "", nil},
		{0, "v1/status", "", nil},
		{0, "healthz", "", nil},
		{5, "metrics", "", nil},
		{2, "v1/ns/a/kv/" + strings.Repeat("k", 1100), "", []byte("v")},
		{2, "v1/ns/a/kv/big", "", bytes.Repeat([]byte("v"), 5000)},
	} {
		f.Add(s.method, s.path, s.query, s.body)
	}
	f.Fuzz(func(t *testing.T, m uint8, path, query string, body []byte) {
		method := methods[int(m&0x7f)%len(methods)]
		target := "http://127.0.0.1/" + path
		if query != "" {
			target += "?" + query
		}
		req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		nsRoute := strings.HasPrefix(req.URL.Path, "/v1/ns/")
		rt, err := parseNSPath(req.URL.EscapedPath())
		nsRoute = nsRoute && err == nil
		if nsRoute && rt.kind == "watch" {
			return
		}
		// A read of an absent key is answered 404, not refused: a read
		// opens (joins) its namespace to ask the peers for it.
		absent := nsRoute && rt.kind == "kv" && rt.hasKey && (method == http.MethodGet || method == http.MethodHead)
		if m&0x80 != 0 && len(n.Namespaces()) >= maxNamespaces {
			// A node at the namespace limit answers every new one 507
			// before anything else: start again, so that new namespaces
			// meet the other checks too (while the bit is clear, full
			// nodes meet the limit's).
			start(t)
		}
		before := snapshot(t, n)
		w := httptest.NewRecorder()
		srv.Handler().ServeHTTP(w, req)
		code := w.Code
		atLimit := code == http.StatusInsufficientStorage && len(before.namespaces) >= maxNamespaces &&
			nsRoute && !slices.Contains(before.namespaces, rt.ns)
		if code >= 500 && !atLimit {
			t.Fatalf("%s %s: %d %s", method, target, code, w.Body)
		}
		if code < 400 {
			return
		}
		if method != http.MethodHead {
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("%s %s: %d with body %q, want {\"error\": …}", method, target, code, w.Body)
			}
		}
		after := snapshot(t, n)
		if code == http.StatusNotFound && absent && !slices.Contains(before.namespaces, rt.ns) {
			// The read opened its namespace, empty; nothing else moved.
			if after.state[rt.ns] != fmt.Sprintf("%s 0 keys at 0", crdt.NewNamespace(crdt.Limits{}).Digest()) {
				t.Fatalf("%s %s answered 404 but its new namespace is %q", method, target, after.state[rt.ns])
			}
			before.namespaces = append(before.namespaces, rt.ns)
			slices.Sort(before.namespaces)
			before.state[rt.ns] = after.state[rt.ns]
		}
		if !slices.Equal(after.namespaces, before.namespaces) || !maps.Equal(after.state, before.state) {
			t.Fatalf("%s %s answered %d %s but changed the node:\nbefore %v %v\nafter  %v %v", method, target, code, w.Body, before.namespaces, before.state, after.namespaces, after.state)
		}
	})
}

type nodeSnapshot struct {
	namespaces []string
	state      map[string]string // by namespace: its digest, key count and commit position
}

func snapshot(t *testing.T, n *node.Node) nodeSnapshot {
	t.Helper()
	s := nodeSnapshot{namespaces: n.Namespaces(), state: map[string]string{}}
	slices.Sort(s.namespaces)
	for _, name := range s.namespaces {
		ns, err := n.Namespace(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		d, keys := ns.Digest()
		s.state[name] = fmt.Sprintf("%s %d keys at %d", d, keys, ns.Position())
	}
	return s
}
