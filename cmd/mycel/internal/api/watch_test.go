package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/node"
)

// FuzzParseCursor: any from= value either is refused or names an event
// whose cursor reads back the same.
func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"", "0", "17", "17.0", "17.3", "0.0", "1.", ".1", "1.2.3", "1.-1", "18446744073709551615.2147483647", "abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pos, index, err := parseCursor(s)
		if err != nil {
			return
		}
		if index < -1 || (index >= 0 && pos == 0) {
			t.Fatalf("parseCursor(%q) = (%d, %d): no such event", s, pos, index)
		}
		ev := node.Event{Position: pos, Index: max(index, 0), LastInCommit: index < 0}
		p2, i2, err := parseCursor(cursorOf(ev))
		if err != nil || p2 != pos || i2 != index {
			t.Fatalf("parseCursor(%q) = (%d, %d), but its cursor %q reads (%d, %d, %v)", s, pos, index, cursorOf(ev), p2, i2, err)
		}
	})
}

// TestWatchLeavesOutValuesTooLargeForAnEvent: over real HTTP, a map whose
// JSON would pass what one event line may carry (maxEventData: a text
// field of control characters is escaped six bytes each) gets an event
// without its fields, marked truncated; a client reading lines of 4 MiB
// (as mycel watch does) reads it, and the events after it.
func TestWatchLeavesOutValuesTooLargeForAnEvent(t *testing.T) {
	ctx := t.Context()
	n, _, hs := serveOnLoopback(t, Options{})
	ns, err := n.Namespace(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(hs.URL + "/v1/ns/test/watch")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// 100 KB of \x01 is 600 KB of JSON; 700 KB more makes 4.8 MB.
	if err := ns.Map("m").Put(ctx, "small", bytes.Repeat([]byte{1}, 100_000)); err != nil {
		t.Fatal(err)
	}
	if err := ns.Map("m").Put(ctx, "large", bytes.Repeat([]byte{1}, 700_000)); err != nil {
		t.Fatal(err)
	}
	if err := ns.Put(ctx, "after", []byte("v")); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var got []string
	for len(got) < 3 && sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if len(data) > maxEventData {
			t.Fatalf("an event of %d bytes, over %d", len(data), maxEventData)
		}
		var ev Event
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s %d %v %q", ev.Key, ev.Kinds, len(ev.Fields), ev.Truncated, ev.Value))
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading the stream: %v (after %q)", err, got)
	}
	want := []string{`m map 1 false ""`, `m map 0 true ""`, `after register 0 false "v"`}
	if !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// serveOnLoopback opens an in-memory node (with nodeOpts) and serves the
// API on it (opts, with Node set) over real HTTP on 127.0.0.1; the test's
// end stops all of it, the server first.
func serveOnLoopback(t *testing.T, opts Options, nodeOpts ...node.Option) (*node.Node, *Server, *httptest.Server) {
	t.Helper()
	n, err := node.Open(context.Background(), node.DefaultLocalConfig(), nodeOpts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	opts.Node = n
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return n, srv, hs
}

// TestEventCarriesEveryKind: a key holding several kinds (concurrent
// writes of different kinds) gets an event with each one's state, and a
// top-level flag (written through the library) shows as "flag".
func TestEventCarriesEveryKind(t *testing.T) {
	merged := crdt.NewNamespace(crdt.Limits{})
	other := crdt.NewNamespace(crdt.Limits{})
	ts := crdt.Timestamp{Wall: 1}
	put, err := merged.Prepare(crdt.Op{Kind: crdt.OpPut, Key: "k", Value: []byte("v")}, 1, ts)
	if err != nil {
		t.Fatal(err)
	}
	add, err := other.Prepare(crdt.Op{Kind: crdt.OpCounterAdd, Key: "k", N: 5}, 2, ts)
	if err != nil {
		t.Fatal(err)
	}
	merged.ApplyDelta(put, nil)
	merged.ApplyDelta(add, nil)
	flag, err := merged.Prepare(crdt.Op{Kind: crdt.OpFlag, Key: "f", Enable: true}, 1, ts)
	if err != nil {
		t.Fatal(err)
	}
	merged.ApplyDelta(flag, nil)
	decode := func(ns *crdt.Namespace, key string) map[string]any {
		t.Helper()
		v, ok := ns.Get(key)
		if !ok {
			t.Fatalf("%q not held", key)
		}
		_, data := encodeEvent(node.Event{Namespace: "ns", Key: key, Value: v, Position: 1, LastInCommit: true})
		var ev map[string]any
		if err := json.Unmarshal(data, &ev); err != nil {
			t.Fatal(err)
		}
		return ev
	}
	ev := decode(merged, "k")
	if ev["kinds"] != "register|counter" || ev["value"] != "dg==" || ev["counter"] != 5.0 {
		t.Fatalf("event of a register and a counter: %v", ev)
	}
	ev = decode(merged, "f")
	if ev["kinds"] != "flag" || ev["flag"] != true {
		t.Fatalf("event of a flag: %v", ev)
	}

	// Too large for an event: the flag stays, the register's value goes.
	large := crdt.NewNamespace(crdt.Limits{MaxValueBytes: maxEventData + 1})
	other = crdt.NewNamespace(crdt.Limits{})
	big, err := large.Prepare(crdt.Op{Kind: crdt.OpPut, Key: "b", Value: make([]byte, maxEventData)}, 1, ts)
	if err != nil {
		t.Fatal(err)
	}
	on, err := other.Prepare(crdt.Op{Kind: crdt.OpFlag, Key: "b", Enable: true}, 2, ts)
	if err != nil {
		t.Fatal(err)
	}
	large.ApplyDelta(big, nil)
	large.ApplyDelta(on, nil)
	ev = decode(large, "b")
	if ev["kinds"] != "register|flag" || ev["truncated"] != true || ev["flag"] != true || ev["value"] != nil || ev["siblings"] != nil {
		t.Fatalf("truncated event of a register and a flag: kinds %v, truncated %v, flag %v, value present %v", ev["kinds"], ev["truncated"], ev["flag"], ev["value"] != nil)
	}
}
