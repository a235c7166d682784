package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/mycelnet/mycel/node"
)

// mycel runs a client command against d and returns stdout and the exit code.
func mycel(t *testing.T, d *daemon, stdin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, append(args, "--api", d.api)...)
	cmd.Env = append(os.Environ(), clientEnv...)
	cmd.Stdin = strings.NewReader(stdin)
	return combined(runCaptured(t, cmd))
}

// combined is a client's output as the tests read it: stdout, and on
// failure stderr after it.
func combined(stdout, stderr string, code int) (string, int) {
	if code != 0 {
		return stdout + stderr, code
	}
	return stdout, 0
}

// TestPrintableJSON: what mycel watch prints of a map's fields is the same
// JSON with every rune a terminal could act on escaped.
func TestPrintableJSON(t *testing.T) {
	in := "{\"a\u0085b\u009b1A\u202e\":{\"register\":\"\U000e0001 ok\"}}"
	got := printableJSON([]byte(in))
	want := `{"a\u0085b\u009b1A\u202e":{"register":"\udb40\udc01 ok"}}`
	if got != want {
		t.Fatalf("printableJSON(%q) = %q, want %q", in, got, want)
	}
	var a, b any
	if json.Unmarshal([]byte(in), &a) != nil || json.Unmarshal([]byte(got), &b) != nil || !reflect.DeepEqual(a, b) {
		t.Fatalf("printableJSON changed the JSON: %v against %v", b, a)
	}
}

func TestCLI(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "n"))
	steps := []struct {
		stdin string
		args  []string
		out   string // substring of the output
		code  int
	}{
		{"", []string{"put", "-n", "test", "greeting", "hello"}, "", 0},
		{"from stdin", []string{"put", "-n", "test", "piped"}, "", 0},
		{"", []string{"get", "-n", "test", "greeting"}, "hello", 0},
		{"", []string{"get", "-n", "test", "piped"}, "from stdin", 0},
		{"", []string{"get", "-n", "test", "greeting", "--json"}, `"value_base64": "aGVsbG8="`, 0},
		{"", []string{"get", "-n", "test", "nope"}, `not found: "nope" (HTTP 404)`, 1},
		{"", []string{"counter", "-n", "test", "visits", "--add", "5"}, "", 0},
		{"", []string{"counter", "-n", "test", "visits", "--add=-2"}, "", 0},
		{"", []string{"counter", "-n", "test", "visits"}, "3", 0},
		{"", []string{"counter", "-n", "test", "visits", "--json"}, `"value": 3`, 0},
		{"", []string{"set", "-n", "test", "tags", "--add", "red", "--add", "blue"}, "", 0},
		{"", []string{"set", "-n", "test", "tags", "--json"}, `"blue",`, 0},
		{"", []string{"set", "-n", "test", "tags", "--remove", "red"}, "", 0},
		{"", []string{"set", "-n", "test", "tags"}, "blue\n", 0},
		{"", []string{"map", "-n", "test", "user", "name", "--put", "Ada"}, "", 0},
		{"", []string{"map", "-n", "test", "user", "visits", "--add=-2", "--json"}, `{"ok": true}`, 0},
		{"", []string{"map", "-n", "test", "user", "tags", "--set-add", "a", "--set-add", "b,c"}, "", 0},
		{"", []string{"map", "-n", "test", "user", "admin", "--flag=true"}, "", 0},
		{"", []string{"map", "-n", "test", "user", "city", "--path", "address", "--put", "Lyon"}, "", 0},
		{"", []string{"map", "-n", "test", "user", "odd\tone", "--put", "x\ny"}, "", 0},
		{"", []string{"map", "-n", "test", "user"}, "address.city\tregister\tLyon\nadmin\tflag\ttrue\nname\tregister\tAda\n\"odd\\tone\"\tregister\t\"x\\ny\"\ntags\tset\ta, \"b,c\"\nvisits\tcounter\t-2\n", 0},
		{"", []string{"map", "-n", "test", "user", "--json"}, `"visits":{"counter":-2}`, 0},
		{"", []string{"map", "-n", "test", "user", "admin", "--delete"}, "", 0},
		{"", []string{"map", "-n", "test", "user", "--json"}, `"tags":{"set":["a","b,c"]}`, 0},
		{"", []string{"map", "-n", "test", "user", "bin", "--put", "\xff\xfe"}, "", 0},
		{"", []string{"map", "-n", "test", "user", "--json"}, `"bin":{"register_base64":"//4="}`, 0},
		{"", []string{"map", "-n", "test", "user", "bin", "--delete=false"}, "asks for nothing", 2},
		{"", []string{"map", "-n", "test", "user", "\xff", "--put", "v"}, "not valid UTF-8", 2},
		{"", []string{"map", "-n", "test", "user", "name", "--put", "x", "--add", "1"}, "exactly one of", 2},
		{"", []string{"map", "-n", "test", "user", "name"}, "exactly one of", 2},
		{"", []string{"map", "-n", "test", "user", "--put", "x"}, "needs a FIELD", 2},
		{"", []string{"map", "-n", "test", "user", "n", "--add", "x"}, "wants an integer", 2},
		{"", []string{"map", "-n", "test", "user", "f", "--flag", "maybe"}, "wants true or false", 2},
		{"", []string{"map", "-n", "test", "greeting"}, "wrong type", 1},
		{"", []string{"map", "-n", "test", "greeting", "f", "--put", "v"}, "wrong type", 1},
		{"", []string{"map", "-n", "test", "user", "name", "--path", "", "--put", "v"}, "empty field", 1},
		{"", []string{"map", "-n", "test", "absent"}, "", 0},
		{"", []string{"del", "-n", "test", "user"}, "", 0},
		{"", []string{"keys", "-n", "test"}, "greeting\npiped\ntags\nvisits\n", 0},
		{"", []string{"keys", "-n", "test", "--prefix", "g", "--json"}, `"greeting"`, 0},
		{"", []string{"del", "-n", "test", "piped", "--json"}, `{"ok": true}`, 0},
		{"", []string{"get", "-n", "test", "piped"}, "not found", 1},
		{"", []string{"digest", "-n", "test"}, "3 keys", 0},
		{"", []string{"status"}, "peer id:    " + d.peerID, 0},
		{"", []string{"status", "--json"}, `"peer_id":"` + d.peerID, 0},
		{"", []string{"peers", "--json"}, `"peers"`, 0},
		{"", []string{"put", "-n", "test", "visits", "x"}, "wrong type", 1},
		{"", []string{"put"}, "accepts between 1 and 2 arg(s)", 2},
		// Names with newlines, tabs or control characters are quoted in
		// the output for people, so they cannot split or forge a line.
		{"", []string{"put", "-n", "odd", "line\nforged", "v"}, "", 0},
		{"", []string{"put", "-n", "odd", "plain key", "v"}, "", 0},
		{"", []string{"keys", "-n", "odd"}, "\"line\\nforged\"\nplain key\n", 0},
		{"", []string{"keys", "-n", "odd", "--json"}, `"line\nforged"`, 0},
		{"", []string{"set", "-n", "odd", "s", "--add", "tab\there", "--add", "ok"}, "", 0},
		{"", []string{"set", "-n", "odd", "s"}, "ok\n\"tab\\there\"\n", 0},
		{"", []string{"put", "-n", "a, b", "k", "v"}, "", 0},
		{"", []string{"status"}, `namespaces: "a, b", odd, test`, 0},
	}
	for _, s := range steps {
		out, code := mycel(t, d, s.stdin, s.args...)
		if code != s.code || !strings.Contains(out, s.out) {
			t.Fatalf("mycel %v: exit %d, output %q; want exit %d and %q", s.args, code, out, s.code, s.out)
		}
	}
	out, err := exec.Command(binary, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "mycel ") {
		t.Fatalf("mycel version: %q %v", out, err)
	}
}

// watchEvent is the part of a watch event the tests read.
type watchEvent struct {
	Cursor, Key string
	Value       []byte
	Counter     *int64
	Deleted     bool
}

// openWatch opens a watch stream on namespace test of d with query and
// returns a function that waits for its next event.
func openWatch(t *testing.T, d *daemon, query string) func() watchEvent {
	t.Helper()
	resp, err := http.Get(d.url("/v1/ns/test/watch?" + query))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("watch: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := make(chan watchEvent, 1000)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		id := ""
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "id: "); ok {
				id = v
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok {
				var ev watchEvent
				if json.Unmarshal([]byte(v), &ev) == nil && ev.Cursor == id {
					events <- ev
				}
			}
		}
		close(events)
	}()
	return func() watchEvent {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("watch stream ended")
			}
			return ev
		case <-time.After(20 * time.Second):
			t.Fatal("no watch event within 20 s")
		}
		return watchEvent{}
	}
}

func TestWatchStreamsAndResumes(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "n"))
	next := openWatch(t, d, "prefix=w/")
	mustCall(t, 204, "PUT", d.url("/v1/ns/test/kv/w/1"), []byte("one"))
	mustCall(t, 204, "PUT", d.url("/v1/ns/test/kv/other"), []byte("x"))
	mustCall(t, 204, "POST", d.url("/v1/ns/test/counter/w/2"), []byte(`{"add": 7}`))
	mustCall(t, 204, "DELETE", d.url("/v1/ns/test/kv/w/1"), nil)
	first, second, third := next(), next(), next()
	if first.Key != "w/1" || string(first.Value) != "one" || second.Key != "w/2" || second.Counter == nil || *second.Counter != 7 || third.Key != "w/1" || !third.Deleted {
		t.Fatalf("events: %+v %+v %+v", first, second, third)
	}
	// Resume after the first event: the stream replays the later ones.
	again := openWatch(t, d, "prefix=w/&from="+first.Cursor)
	if ev := again(); ev.Cursor != second.Cursor {
		t.Fatalf("resumed at %s, want %s", ev.Cursor, second.Cursor)
	}
	if ev := again(); ev.Cursor != third.Cursor {
		t.Fatalf("resumed second event %s, want %s", ev.Cursor, third.Cursor)
	}
	code, body, _ := call(t, "GET", d.url("/v1/ns/test/watch?from=999999"), nil)
	if code != 400 || !strings.Contains(string(body), "cannot be resumed") {
		t.Fatalf("resume from a future cursor: %d %s", code, body)
	}
	// Cursors are persisted positions: a watch resumes after a restart.
	if code, _ := d.signalAndWait(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("daemon exit code %d", code)
	}
	d = startDaemon(t, d.dataDir)
	afterRestart := openWatch(t, d, "prefix=w/&from="+first.Cursor)
	if ev := afterRestart(); ev.Cursor != second.Cursor {
		t.Fatalf("resumed after restart at %s, want %s", ev.Cursor, second.Cursor)
	}
}

func TestAPIToken(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, filepath.Join(dir, "n"), "--api-token-file", tokenFile)
	if code, body, _ := call(t, "PUT", d.url("/v1/ns/test/kv/a"), []byte("v")); code != 401 || !strings.Contains(string(body), "bearer token") {
		t.Fatalf("without token: %d %s", code, body)
	}
	mustCall(t, 200, "GET", d.url("/healthz"), nil)
	if out, code := mycel(t, d, "", "put", "-n", "test", "a", "v", "--api-token-file", tokenFile); code != 0 {
		t.Fatalf("put with token: %d %s", code, out)
	}
	if out, code := mycel(t, d, "", "get", "-n", "test", "a"); code != 1 || !strings.Contains(out, "401") {
		t.Fatalf("get without token: %d %s", code, out)
	}
}

func TestMetrics(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "n"))
	mustCall(t, 204, "PUT", d.url("/v1/ns/test/kv/a"), []byte("v"))
	body := string(mustCall(t, 200, "GET", d.url("/metrics"), nil))
	for _, want := range []string{
		`mycel_api_ops_total{code="204",op="put"} 1`,
		`mycel_store_keys{namespace="test"} 1`,
		`mycel_gossip_mesh_peers{namespace="test"} 0`,
		`mycel_gossip_rejected_total{reason="origin"} 0`,
		`mycel_sync_abandoned_total 0`,
		`mycel_sync_gap_pulls_total 0`,
		`mycel_sync_mesh_pulls_total 0`,
		`mycel_replication_bytes_total{direction="out",protocol="gossip"}`,
		`mycel_peers_connected 0`,
		`mycel_watch_subscribers 0`,
		`mycel_store_disk_bytes`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestSettingsPrecedence checks defaults < file < environment < flags.
func TestSettingsPrecedence(t *testing.T) {
	dir := t.TempDir()
	yamlFile := filepath.Join(dir, "mycel.yaml")
	os.WriteFile(yamlFile, []byte("data-dir: /from/file\napi: 127.0.0.1:7000\nlisten:\n  - /ip4/127.0.0.1/tcp/7001\nmdns: true\nsync-interval: 3s\nlog-level: debug\n"), 0o600)
	tomlFile := filepath.Join(dir, "mycel.toml")
	os.WriteFile(tomlFile, []byte("data-dir = \"/from/toml\"\nbootstrap = [\"/ip4/1.2.3.4/tcp/1/p2p/x\"]\nmax-value-bytes = 2048\n"), 0o600)
	badFile := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badFile, []byte("data_dir: typo\n"), 0o600)

	parse := func(file string, env map[string]string, args ...string) (settings, error) {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		s := defaultSettings()
		bindFlags(fs, &s)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return resolve(fs, s, file, func(k string) string { return env[k] })
	}
	s, err := parse(yamlFile, map[string]string{"MYCEL_API": "127.0.0.1:7100", "MYCEL_LISTEN": "/ip4/127.0.0.1/tcp/1,/ip4/127.0.0.1/tcp/2"}, "--api", "127.0.0.1:7200")
	if err != nil {
		t.Fatal(err)
	}
	if s.DataDir != "/from/file" || s.API != "127.0.0.1:7200" || len(s.Listen) != 2 || !s.MDNS || s.SyncInterval != 3*time.Second || s.LogLevel != "debug" || s.LogFormat != "text" {
		t.Fatalf("yaml+env+flags: %+v", s)
	}
	s, err = parse(tomlFile, map[string]string{"MYCEL_DATA_DIR": "/from/env"})
	if err != nil {
		t.Fatal(err)
	}
	if s.DataDir != "/from/env" || len(s.Bootstrap) != 1 || s.MaxValueBytes != 2048 || s.API != "127.0.0.1:5080" {
		t.Fatalf("toml+env: %+v", s)
	}
	s, err = parse("", map[string]string{"MYCEL_CONFIG": tomlFile}, "--data-dir", "/from/flag")
	if err != nil || s.DataDir != "/from/flag" || s.MaxValueBytes != 2048 {
		t.Fatalf("MYCEL_CONFIG + flag: %+v %v", s, err)
	}
	if _, err := parse(badFile, nil); err == nil || !strings.Contains(err.Error(), `unknown key "data_dir"`) {
		t.Fatalf("typo in config: %v", err)
	}
	if _, err := parse("", map[string]string{"MYCEL_MDNS": "maybe"}); err == nil {
		t.Fatal("MYCEL_MDNS=maybe accepted")
	}
	// A second YAML document would be silently ignored: refused.
	twoDocs := filepath.Join(dir, "two.yaml")
	os.WriteFile(twoDocs, []byte("api: 127.0.0.1:5080\n---\nbogus: 1\n"), 0o600)
	if _, err := parse(twoDocs, nil); err == nil || !strings.Contains(err.Error(), "more than one YAML document") {
		t.Fatalf("two YAML documents: %v", err)
	}
	// flood-publish, peer-exchange and forget-peers default off; flag,
	// environment and file turn each on, and the node is configured so.
	for _, knob := range []struct {
		name, env string
		on        func(settings) bool
		cfg       func(node.Config) bool
	}{
		{"flood-publish", "MYCEL_FLOOD_PUBLISH", func(s settings) bool { return s.FloodPublish }, func(c node.Config) bool { return c.FloodPublish }},
		{"peer-exchange", "MYCEL_PEER_EXCHANGE", func(s settings) bool { return s.PeerExchange }, func(c node.Config) bool { return c.PeerExchange }},
		{"forget-peers", "MYCEL_FORGET_PEERS", func(s settings) bool { return s.ForgetPeers }, func(c node.Config) bool { return c.ForgetPeers }},
	} {
		s, err := parse("", nil)
		if err != nil || knob.on(s) {
			t.Fatalf("default %s: %v %v", knob.name, knob.on(s), err)
		}
		if p, err := plan(s, io.Discard); err != nil || knob.cfg(p.cfg) {
			t.Fatalf("default %s: node config %v %v", knob.name, knob.cfg(p.cfg), err)
		}
		file := filepath.Join(dir, knob.name+".yaml")
		os.WriteFile(file, []byte(knob.name+": true\nmesh-degree: 2\n"), 0o600)
		for _, c := range []struct {
			file string
			env  map[string]string
			args []string
		}{
			{"", nil, []string{"--" + knob.name}},
			{"", map[string]string{knob.env: "true"}, nil},
			{file, nil, nil},
		} {
			s, err := parse(c.file, c.env, c.args...)
			if err != nil || !knob.on(s) {
				t.Fatalf("%s on (%v %v %v): %v %v", knob.name, c.file, c.env, c.args, knob.on(s), err)
			}
			if p, err := plan(s, io.Discard); err != nil || !knob.cfg(p.cfg) {
				t.Fatalf("%s on (%v %v %v): node config %v %v", knob.name, c.file, c.env, c.args, knob.cfg(p.cfg), err)
			}
		}
	}
	empty := filepath.Join(dir, "empty.yaml")
	os.WriteFile(empty, nil, 0o600)
	if s, err := parse(empty, nil); err != nil || s.API != "127.0.0.1:5080" {
		t.Fatalf("empty config file: %+v %v", s, err)
	}
}

// TestWatchStreamsAreBounded: past --max-watchers open streams a new watch
// is answered 503 and opens nothing; a closed stream frees its place.
func TestWatchStreamsAreBounded(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "n"), "--max-watchers", "2")
	mustCall(t, 204, "PUT", d.url("/v1/ns/test/kv/k"), []byte("v"))
	first, err := http.Get(d.url("/v1/ns/test/watch"))
	if err != nil {
		t.Fatal(err)
	}
	second := openWatch(t, d, "")
	_ = second
	watchSubscribers(t, d, 2)
	code, body, hdr := call(t, "GET", d.url("/v1/ns/fresh/watch"), nil)
	if code != 503 || !strings.Contains(string(body), "2 watch streams are open") || hdr.Get("Retry-After") == "" {
		t.Fatalf("third watch: %d %s", code, body)
	}
	if got := namespaces(t, d); !equalStrings(got, []string{"test"}) {
		t.Fatalf("a refused watch created a namespace: %v", got)
	}
	first.Body.Close()
	watchSubscribers(t, d, 1)
	openWatch(t, d, "")
	watchSubscribers(t, d, 2)
}

// TestWatchResumesInsideACommit: concurrent puts share commits, so one
// commit yields several events; a client whose stream broke after any of
// them resumes from its cursor with exactly the events after it.
func TestWatchResumesInsideACommit(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "n"))
	next := openWatch(t, d, "prefix=c/")
	var all []watchEvent
	inside := -1 // an event inside a commit: its cursor has an index
	for round := 0; round < 50 && inside < 0; round++ {
		const writers = 32
		var wg sync.WaitGroup
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, err := http.NewRequest("PUT", d.url(fmt.Sprintf("/v1/ns/test/kv/c/%02d-%02d", round, i)), strings.NewReader("v"))
				if err != nil {
					t.Error(err)
					return
				}
				resp, err := httpClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 204 {
					t.Errorf("put: status %d", resp.StatusCode)
				}
			}()
		}
		wg.Wait()
		for range writers {
			all = append(all, next())
		}
		for i, ev := range all {
			if strings.Contains(ev.Cursor, ".") && i+1 < len(all) {
				inside = i
				break
			}
		}
	}
	if inside < 0 {
		t.Fatal("no commit of two or more keys in 50 rounds of 32 concurrent puts")
	}
	resumed := openWatch(t, d, "prefix=c/&from="+all[inside].Cursor)
	for _, want := range all[inside+1:] {
		if got := resumed(); got.Cursor != want.Cursor || got.Key != want.Key {
			t.Fatalf("resumed from %s: got %s %s, want %s %s", all[inside].Cursor, got.Cursor, got.Key, want.Cursor, want.Key)
		}
	}
	// Cursors that name no event are refused, and say why.
	pos, _, _ := strings.Cut(all[inside].Cursor, ".")
	for _, c := range []struct{ from, want string }{
		{pos + ".x", "not a watch cursor"}, {"0.0", "not a watch cursor"}, {pos + ".-1", "not a watch cursor"},
		{pos + ".100000", "has no event"},
	} {
		code, body, _ := call(t, "GET", d.url("/v1/ns/test/watch?from="+c.from), nil)
		if code != 400 || !strings.Contains(string(body), c.want) {
			t.Errorf("from=%s: %d %s, want 400 %q", c.from, code, body, c.want)
		}
	}
}

// TestWatchGivesUpOnASilentDaemon: a watch whose daemon sends nothing, not
// even keep-alives, ends with an error instead of hanging.
func TestWatchGivesUpOnASilentDaemon(t *testing.T) {
	cancelled := make(chan struct{})
	r, w := io.Pipe()
	defer w.Close()
	ir := newIdleReader(r, 50*time.Millisecond, func() { close(cancelled); w.CloseWithError(context.Canceled) })
	go func() { _, _ = w.Write([]byte(": watching\n\n")) }()
	err := printEvents(context.Background(), ir, io.Discard, false)
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("not cancelled")
	}
	if !ir.idle() || err == nil {
		t.Fatalf("idle %v, err %v", ir.idle(), err)
	}
}

// TestWatchOutputQuotesNames: mycel watch prints a key or set element
// that would split or forge a line (a newline, a tab, a separator of the
// set's braces) quoted, and an event it cannot read ends the watch with
// an error instead of vanishing.
func TestWatchOutputQuotesNames(t *testing.T) {
	stream := "id: 1\nevent: change\n" +
		`data: {"cursor":"1","key":"a\nforged\tline","kinds":"register","value":"dg=="}` + "\n\n" +
		"id: 2\nevent: change\n" +
		`data: {"cursor":"2","key":"s ","kinds":"set","elements":["x, y","{z}","plain one"]}` + "\n\n" +
		"id: 3\nevent: change\n" +
		`data: {"cursor":"3","key":"k","kinds":"register","value":"not base64!"}` + "\n\n"
	var out strings.Builder
	err := printEvents(context.Background(), strings.NewReader(stream), &out, false)
	want := "1\t\"a\\nforged\\tline\"\tregister\t\"v\"\n" +
		"2\t\"s \"\tset\t{\"x, y\", \"{z}\", plain one}\n"
	if out.String() != want {
		t.Fatalf("printed %q, want %q", out.String(), want)
	}
	if err == nil || !strings.Contains(err.Error(), "cannot read") || !strings.Contains(err.Error(), "not base64!") || !strings.HasSuffix(err.Error(), "--from 3") {
		t.Fatalf("an unreadable event gave %v, want an error quoting it", err)
	}
}

// TestWatchLine: what mycel watch prints of each event, one kind or
// several (concurrent writes of different kinds), and what it does not
// know.
func TestWatchLine(t *testing.T) {
	for _, c := range []struct{ data, want string }{
		{`{"cursor":"5","key":"k","kinds":"register","value":"dg=="}`, "5\tk\tregister\t\"v\""},
		{`{"cursor":"5","key":"k","kinds":"register","value":"dg==","siblings":1}`, "5\tk\tregister\t\"v\""},
		{`{"cursor":"5","key":"k","kinds":"register","value":"dg==","siblings":3}`, "5\tk\tregister\t\"v\" (+2 concurrent)"},
		{`{"cursor":"6","key":"k","kinds":"register|counter","value":"dg==","counter":5}`, "6\tk\tregister|counter\tregister=\"v\" counter=5"},
		{`{"cursor":"7","key":"k","kinds":"set|map","elements":["a","b"],"fields":{"f":{"counter":1}}}`, "7\tk\tset|map\tset={a, b} map={\"f\":{\"counter\":1}}"},
		{`{"cursor":"8","key":"k","kinds":"counter","counter":-3}`, "8\tk\tcounter\t-3"},
		{`{"cursor":"9","key":"k","kinds":"flag","flag":true}`, "9\tk\tflag\ttrue"},
		{`{"cursor":"10","key":"k","kinds":"none","deleted":true}`, "10\tk\tnone\tdeleted"},
		{`{"cursor":"11","key":"k","kinds":"register|counter","counter":2,"truncated":true}`, "11\tk\tregister|counter\tcounter=2 (too large to show here: read the key)"},
		{`{"cursor":"11","key":"k","kinds":"map","truncated":true}`, "11\tk\tmap\t(too large to show here: read the key)"},
		{`{"cursor":"12","key":"k","kinds":"tree|counter","counter":2}`, "12\tk\ttree|counter\tcounter=2"},
		{`{"cursor":"13\n","key":"k","kinds":"counter\u202e","counter":2}`, "\"13\\n\"\tk\t\"counter\\u202e\"\t"},
	} {
		got, err := watchLine([]byte(c.data))
		if err != nil || got != c.want {
			t.Errorf("watchLine(%s) = %q, %v; want %q", c.data, got, err, c.want)
		}
	}
	if _, err := watchLine([]byte(`{"cursor":5}`)); err == nil {
		t.Error("watchLine took a cursor that is not a string")
	}
}
