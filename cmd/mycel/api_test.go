package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMaxNamespaces: the API creates namespaces only up to
// --max-namespaces (those opened at start count), answers 507 with a JSON
// error past it, and keeps serving the namespaces it holds.
func TestMaxNamespaces(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "n"), "--max-namespaces", "3") // "test" is the first
	mustCall(t, 204, "PUT", d.url("/v1/ns/a/kv/k"), []byte("v"))
	mustCall(t, 200, "GET", d.url("/v1/ns/b/digest"), nil) // a read creates too
	want := []string{"a", "b", "test"}
	for _, req := range []struct{ method, path, body string }{
		{"PUT", "/v1/ns/c/kv/k", "v"},
		{"GET", "/v1/ns/c/kv/k", ""},
		{"POST", "/v1/ns/c/counter/k", `{"add": 1}`},
		{"GET", "/v1/ns/c/watch", ""},
	} {
		code, body, hdr := call(t, req.method, d.url(req.path), []byte(req.body))
		var e map[string]string
		if code != http.StatusInsufficientStorage || hdr.Get("Content-Type") != "application/json" ||
			json.Unmarshal(body, &e) != nil || !strings.Contains(e["error"], "--max-namespaces") {
			t.Fatalf("%s %s past the limit: %d %s", req.method, req.path, code, body)
		}
	}
	if got := namespaces(t, d); !equalStrings(got, want) {
		t.Fatalf("namespaces %v, want %v", got, want)
	}
	mustCall(t, 204, "PUT", d.url("/v1/ns/a/kv/k2"), []byte("v")) // held ones still work
	mustCall(t, 204, "PUT", d.url("/v1/ns/test/kv/k"), []byte("v"))

	// Restarted with a higher limit: concurrent creations cannot overshoot.
	if code, _ := d.signalAndWait(t, syscall.SIGTERM, 12*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	d = startDaemon(t, d.dataDir, "--max-namespaces", "8")
	parallel(t, 32, 16, func(i int) error {
		code, err := do("PUT", d.url(fmt.Sprintf("/v1/ns/p%d/kv/k", i)), []byte("v"))
		if err != nil || (code != 204 && code != 507) {
			return fmt.Errorf("put into p%d: %d %v", i, code, err)
		}
		return nil
	})
	if got := namespaces(t, d); len(got) != 8 {
		t.Fatalf("after 32 concurrent creations with --max-namespaces 8 the node holds %d: %v", len(got), got)
	}
}

// TestMaxKeyBytes: the daemon's --max-key-bytes bounds keys and set
// elements through the API (400, nothing written); at the limit they pass.
func TestMaxKeyBytes(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "n"), "--max-key-bytes", "8")
	mustCall(t, 204, "PUT", d.url("/v1/ns/test/kv/12345678"), []byte("v"))
	mustCall(t, 400, "PUT", d.url("/v1/ns/test/kv/123456789"), []byte("v"))
	mustCall(t, 400, "POST", d.url("/v1/ns/test/set/s"), []byte(`{"add": ["123456789"]}`))
	mustCall(t, 404, "GET", d.url("/v1/ns/test/kv/s"), nil)
	mustCall(t, 200, "GET", d.url("/v1/ns/test/kv/12345678"), nil)
}

// TestDebugRoutesMethods: /metrics and the pprof pages answer only their
// methods; any other gets a 405 JSON error.
func TestDebugRoutesMethods(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "n"), "--pprof")
	mustCall(t, 200, "GET", d.url("/metrics"), nil)
	mustCall(t, 200, "GET", d.url("/debug/pprof/"), nil)
	mustCall(t, 200, "POST", d.url("/debug/pprof/symbol"), []byte("0x1"))
	for _, req := range []struct{ method, path, allow string }{
		{"POST", "/metrics", "GET"},
		{"PUT", "/metrics", "GET"},
		{"POST", "/debug/pprof/", "GET"},
		{"DELETE", "/debug/pprof/heap", "GET"},
		{"POST", "/debug/pprof/profile", "GET"},
		{"PUT", "/debug/pprof/symbol", "GET, POST"},
	} {
		code, body, hdr := call(t, req.method, d.url(req.path), nil)
		var e map[string]string
		if code != 405 || hdr.Get("Allow") != req.allow || json.Unmarshal(body, &e) != nil || e["error"] == "" {
			t.Errorf("%s %s: %d, Allow %q, body %s", req.method, req.path, code, hdr.Get("Allow"), body)
		}
	}
}
