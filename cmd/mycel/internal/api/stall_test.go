package api

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A watch client that stops reading loses its stream once a write has
// blocked for WatchWriteTimeout: its slot is freed and the node stops
// queueing for it, instead of both growing for as long as the client
// stays connected.
func TestStalledWatchReaderIsDropped(t *testing.T) {
	ctx := context.Background()
	n, srv, hs := serveOnLoopback(t, Options{WatchWriteTimeout: 300 * time.Millisecond})
	ns, err := n.Namespace(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}

	conn, err := net.Dial("tcp", strings.TrimPrefix(hs.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096) // so the server's writes block sooner
	}
	if _, err := fmt.Fprintf(conn, "GET /v1/ns/t/watch HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for srv.watchers.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the watch did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// HEAD has no end to answer a stream at: refused, at once.
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Head(hs.URL + "/v1/ns/t/watch")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET" {
		t.Fatalf("HEAD of a watch: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	// Never read: write until the stream is dropped (bounded).
	val := bytes.Repeat([]byte("v"), 256<<10)
	for i := 0; srv.watchers.Load() != 0; i++ {
		if i == 2000 || time.Now().After(deadline) {
			t.Fatalf("after %d puts of 256 KiB the unread stream is still open", i)
		}
		if err := ns.Put(ctx, fmt.Sprint("k", i%64), val); err != nil {
			t.Fatal(err)
		}
	}
}
