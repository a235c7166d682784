package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mycelnet/mycel/store/storetest"
)

// These tests run the real binary: built once per package run by TestMain,
// started as separate processes on loopback, and talked to over HTTP.

var (
	binary     string
	buildFlags []string // race_test.go adds -race
	clientEnv  []string // added to the environment of client commands (race_test.go)
)

func TestMain(m *testing.M) {
	flag.Parse()
	if f, r := flag.Lookup("test.fuzz"), flag.Lookup("test.run"); f != nil && f.Value.String() != "" && r != nil && r.Value.String() == "^$" {
		// Fuzzing alone (go test -run '^$' -fuzz ...) needs no binary,
		// and every fuzz worker would build its own.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "mycel-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "mycel")
	build := exec.Command("go", append(append([]string{"build"}, buildFlags...), "-o", binary, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building mycel:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is one running `mycel daemon` process.
type daemon struct {
	cmd     *exec.Cmd
	api     string   // HOST:PORT as printed
	addrs   []string // listen multiaddrs with /p2p/
	peerID  string
	dataDir string
	stderr  *syncBuffer
	exited  chan struct{}
	exitErr error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startDaemon starts a daemon on loopback with ephemeral ports, waits until
// it prints "ready", and registers its termination with t.Cleanup.
func startDaemon(t testing.TB, dataDir string, extra ...string) *daemon {
	t.Helper()
	args := append([]string{"daemon", "--data-dir", dataDir, "--listen", "/ip4/127.0.0.1/tcp/0",
		"--api", "127.0.0.1:0", "--sync-interval", "1s", "--namespace", "test", "--log-level", "warn"}, extra...)
	return startDaemonArgs(t, dataDir, args...)
}

// startDaemonArgs is startDaemon with exactly the given arguments.
func startDaemonArgs(t testing.TB, dataDir string, args ...string) *daemon {
	t.Helper()
	d := &daemon{cmd: exec.Command(binary, args...), dataDir: dataDir, stderr: &syncBuffer{}, exited: make(chan struct{})}
	d.cmd.Stderr = d.stderr
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.exitErr = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.kill()
		if strings.Contains(d.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("the daemon reported a data race:\n%s", d.stderr)
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		ready := false
		for sc.Scan() {
			if !ready {
				lines <- sc.Text()
				ready = sc.Text() == "ready"
			}
		}
		if !ready {
			close(lines)
		}
	}()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				<-d.exited
				t.Fatalf("daemon exited before ready: %v\nstderr:\n%s", d.exitErr, d.stderr)
			}
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "peer id":
				d.peerID = v
			case "listen":
				d.addrs = append(d.addrs, v)
			case "api":
				d.api = v
			}
			if line == "ready" {
				if d.api == "" || len(d.addrs) == 0 || d.peerID == "" {
					t.Fatalf("daemon did not print its addresses")
				}
				return d
			}
		case <-deadline:
			t.Fatalf("daemon not ready within 30 s\nstderr:\n%s", d.stderr)
		}
	}
}

func (d *daemon) kill() {
	select {
	case <-d.exited:
	default:
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
}

// signalAndWait sends sig and waits up to bound for the process to exit.
func (d *daemon) signalAndWait(t testing.TB, sig os.Signal, bound time.Duration) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.exited:
	case <-time.After(bound):
		t.Fatalf("daemon still running %s after %v\nstderr:\n%s", bound, sig, d.stderr)
	}
	return d.cmd.ProcessState.ExitCode(), time.Since(start)
}

func (d *daemon) url(path string) string { return "http://" + d.api + path }

var httpClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// call sends one request and returns the status code and body. The path
// is sent exactly as given (even malformed escapes).
func call(t testing.TB, method, url string, body []byte) (int, []byte, http.Header) {
	t.Helper()
	host, rest, _ := strings.Cut(strings.TrimPrefix(url, "http://"), "/")
	req, err := http.NewRequest(method, "http://"+host+"/", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	path, query, _ := strings.Cut(rest, "?")
	req.URL.Opaque, req.URL.RawQuery = "/"+path, query
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header
}

func mustCall(t testing.TB, want int, method, url string, body []byte) []byte {
	t.Helper()
	code, b, _ := call(t, method, url, body)
	if code != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, url, code, want, b)
	}
	return b
}

type digestBody struct {
	Digest string `json:"digest"`
	Keys   int    `json:"keys"`
}

func digestOf(t testing.TB, d *daemon, ns string) digestBody {
	t.Helper()
	var body digestBody
	if err := json.Unmarshal(mustCall(t, 200, "GET", d.url("/v1/ns/"+ns+"/digest"), nil), &body); err != nil {
		t.Fatal(err)
	}
	return body
}

// eventually polls cond every 100 ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %s", what, timeout, state)
		}
		<-tick.C
	}
}

func sameDigests(t testing.TB, ns string, wantKeys int, ds ...*daemon) func() (bool, string) {
	return func() (bool, string) {
		var got []digestBody
		for _, d := range ds {
			got = append(got, digestOf(t, d, ns))
		}
		for _, g := range got {
			if g != got[0] || (wantKeys >= 0 && g.Keys != wantKeys) {
				return false, fmt.Sprintf("digests %+v (want %d keys each)", got, wantKeys)
			}
		}
		return true, ""
	}
}

// parallel runs n jobs on w workers and fails on the first error.
func parallel(t testing.TB, n, w int, job func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, w)
	next := make(chan int)
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := job(i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

func do(method, url string, body []byte) (int, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func expect(code int, err error, want int, what string) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if code != want {
		return fmt.Errorf("%s: status %d, want %d", what, code, want)
	}
	return nil
}

func TestThreeNodesConverge(t *testing.T) {
	dir := t.TempDir()
	n1 := startDaemon(t, filepath.Join(dir, "n1"))
	n2 := startDaemon(t, filepath.Join(dir, "n2"), "--bootstrap", n1.addrs[0])
	n3 := startDaemon(t, filepath.Join(dir, "n3"), "--bootstrap", n1.addrs[0], "--bootstrap", n2.addrs[0])
	nodes := []*daemon{n1, n2, n3}

	const keys, counters, sets = 1000, 10, 10
	parallel(t, keys, 16, func(i int) error {
		code, err := do("PUT", n1.url(fmt.Sprintf("/v1/ns/test/kv/key-%04d", i)), []byte(fmt.Sprintf("value %d", i)))
		return expect(code, err, 204, "put")
	})
	parallel(t, counters*5, 8, func(i int) error {
		body := fmt.Sprintf(`{"add": %d}`, i%5+1)
		code, err := do("POST", n2.url(fmt.Sprintf("/v1/ns/test/counter/ctr-%d", i/5)), []byte(body))
		return expect(code, err, 204, "counter add")
	})
	parallel(t, sets, 8, func(i int) error {
		url := n2.url(fmt.Sprintf("/v1/ns/test/set/set-%d", i))
		code, err := do("POST", url, []byte(`{"add": ["a", "b", "c"]}`))
		if err := expect(code, err, 204, "set add"); err != nil {
			return err
		}
		code, err = do("POST", url, []byte(`{"remove": ["b"], "add": ["d"]}`))
		return expect(code, err, 204, "set update")
	})

	// A map written on two nodes at once: every kind of field, one nested.
	for i, req := range []struct {
		d    *daemon
		body string
	}{
		{n3, `{"field": "name", "put": "Ada"}`},
		{n1, `{"field": "visits", "add": 2}`},
		{n3, `{"field": "visits", "add": 3}`},
		{n1, `{"field": "tags", "set_add": ["x", "y"]}`},
		{n3, `{"field": "tags", "set_remove": ["x"]}`},
		{n1, `{"field": "admin", "flag": true}`},
		{n3, `{"path": ["address"], "field": "city", "put": "Lyon"}`},
		{n1, `{"field": "raw", "put_base64": "/wA="}`},
		{n3, `{"field": "gone", "put": "soon"}`},
		{n3, `{"field": "gone", "delete": true}`},
	} {
		if i == 4 {
			// The remove must follow the add it removes: an
			// observed remove leaves what it has not seen.
			eventually(t, 30*time.Second, "the set field to reach n3", func() (bool, string) {
				b := mustCall(t, 200, "GET", n3.url("/v1/ns/test/map/profile"), nil)
				return strings.Contains(string(b), `"set":["x","y"]`), string(b)
			})
		}
		mustCall(t, 204, "POST", req.d.url("/v1/ns/test/map/profile"), []byte(req.body))
	}

	eventually(t, 60*time.Second, "three replicas converge", sameDigests(t, "test", keys+counters+sets+1, nodes...))

	var st struct {
		PeerID string `json:"peer_id"`
		Peers  []struct {
			ID        string `json:"id"`
			Connected bool   `json:"connected"`
		} `json:"peers"`
	}
	if err := json.Unmarshal(mustCall(t, 200, "GET", n1.url("/v1/status"), nil), &st); err != nil {
		t.Fatal(err)
	}
	connected := map[string]bool{}
	for _, p := range st.Peers {
		connected[p.ID] = p.Connected
	}
	if st.PeerID != n1.peerID || !connected[n2.peerID] || !connected[n3.peerID] {
		t.Fatalf("node 1 status: %+v", st)
	}

	for _, d := range nodes {
		var list struct {
			Keys []string `json:"keys"`
			Next string   `json:"next"`
		}
		if err := json.Unmarshal(mustCall(t, 200, "GET", d.url("/v1/ns/test/kv?prefix=key-&limit=10000"), nil), &list); err != nil {
			t.Fatal(err)
		}
		if len(list.Keys) != keys || list.Next != "" {
			t.Fatalf("%s lists %d keys (next %q), want %d", d.api, len(list.Keys), list.Next, keys)
		}
		parallel(t, keys, 8, func(i int) error {
			code, b, _ := call(t, "GET", d.url(fmt.Sprintf("/v1/ns/test/kv/key-%04d", i)), nil)
			if want := fmt.Sprintf("value %d", i); code != 200 || string(b) != want {
				return fmt.Errorf("%s key-%04d: %d %q, want %q", d.api, i, code, b, want)
			}
			return nil
		})
		for c := range counters {
			b := mustCall(t, 200, "GET", d.url(fmt.Sprintf("/v1/ns/test/counter/ctr-%d", c)), nil)
			if got := strings.TrimSpace(string(b)); got != `{"value":15}` {
				t.Fatalf("%s ctr-%d = %s, want 15", d.api, c, got)
			}
		}
		for s := range sets {
			b := mustCall(t, 200, "GET", d.url(fmt.Sprintf("/v1/ns/test/set/set-%d", s)), nil)
			if got := strings.TrimSpace(string(b)); got != `{"elements":["a","c","d"]}` {
				t.Fatalf("%s set-%d = %s", d.api, s, got)
			}
		}
		const wantMap = `{"fields":{"address":{"map":{"city":{"register":"Lyon"}}},"admin":{"flag":true},"name":{"register":"Ada"},"raw":{"register_base64":"/wA="},"tags":{"set":["y"]},"visits":{"counter":5}}}`
		if got := strings.TrimSpace(string(mustCall(t, 200, "GET", d.url("/v1/ns/test/map/profile"), nil))); got != wantMap {
			t.Fatalf("%s map profile = %s, want %s", d.api, got, wantMap)
		}
	}
}

// writers is a set of clients writing distinct keys to a daemon in a loop
// until it stops answering.
type writers struct {
	mu     sync.Mutex
	acked  []string // keys whose PUT got a 2xx
	enough chan struct{}
	wg     sync.WaitGroup
}

// startWriters starts n writers on d; w.enough closes once want writes
// are acknowledged. Each writer stops at the first transport error (the
// daemon is gone) or after maxWrites.
func startWriters(d *daemon, n, want int) *writers {
	const maxWrites = 100_000
	w := &writers{enough: make(chan struct{})}
	for i := range n {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for j := range maxWrites {
				key := fmt.Sprintf("w%d-%06d", i, j)
				code, err := do("PUT", d.url("/v1/ns/test/kv/"+key), []byte(key))
				if err != nil {
					return
				}
				if code/100 == 2 {
					w.mu.Lock()
					if w.acked = append(w.acked, key); len(w.acked) == want {
						close(w.enough)
					}
					w.mu.Unlock()
				}
			}
		}()
	}
	return w
}

// waitEnough fails t unless the writers got their acknowledgements in time.
func (w *writers) waitEnough(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case <-w.enough:
	case <-time.After(timeout):
		t.Fatalf("writers not acknowledged enough within %v", timeout)
	}
}

// missing returns the acknowledged keys d does not hold with their value.
func (w *writers) missing(t testing.TB, d *daemon) []string {
	var out []string
	for _, k := range w.acked {
		code, b, _ := call(t, "GET", d.url("/v1/ns/test/kv/"+k), nil)
		if code != 200 || string(b) != k {
			out = append(out, k)
		}
	}
	return out
}

func TestKillWhileWritingLosesNothingAcknowledged(t *testing.T) {
	dir := t.TempDir()
	n1 := startDaemon(t, filepath.Join(dir, "n1"))
	victimDir := filepath.Join(dir, "n2")
	n2 := startDaemon(t, victimDir, "--bootstrap", n1.addrs[0])

	w := startWriters(n2, 4, 400)
	w.waitEnough(t, 60*time.Second)
	if err := n2.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-n2.exited
	w.wg.Wait()
	t.Logf("%d writes acknowledged before SIGKILL", len(w.acked))

	n2 = startDaemon(t, victimDir, "--bootstrap", n1.addrs[0])
	if m := w.missing(t, n2); len(m) > 0 {
		t.Fatalf("after restart, %d acknowledged writes are missing, e.g. %q", len(m), m[0])
	}
	eventually(t, 60*time.Second, "survivor and restarted node converge", sameDigests(t, "test", -1, n1, n2))
	if m := w.missing(t, n1); len(m) > 0 {
		t.Fatalf("survivor lacks %d acknowledged writes, e.g. %q", len(m), m[0])
	}
}

// TestSignalWhileWritingExitsCleanly: SIGTERM or SIGINT while clients
// write drains the requests in flight, closes the node and exits 0 within
// --shutdown-timeout; every write that got a 2xx is there after a restart.
func TestSignalWhileWritingExitsCleanly(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "n")
			d := startDaemon(t, dir)
			w := startWriters(d, 4, 200)
			w.waitEnough(t, 60*time.Second)
			code, took := d.signalAndWait(t, sig, 12*time.Second) // --shutdown-timeout 10s
			w.wg.Wait()
			if code != 0 {
				t.Fatalf("exit code %d after %v, want 0\nstderr:\n%s", code, sig, d.stderr)
			}
			t.Logf("%v to exit: %v; %d writes acknowledged", sig, took, len(w.acked))
			d = startDaemon(t, dir)
			if m := w.missing(t, d); len(m) > 0 {
				t.Fatalf("after restart, %d of %d acknowledged writes are missing, e.g. %q", len(m), len(w.acked), m[0])
			}
		})
	}
}

// TestStalledRequestLeavesCloseItsShare: a request that never finishes
// holds the API drain up to half of --shutdown-timeout; closing the node
// still gets the other half, and the daemon exits 0 within the bound.
func TestStalledRequestLeavesCloseItsShare(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n")
	d := startDaemon(t, dir, "--shutdown-timeout", "4s")
	for i := range 20 {
		mustCall(t, 204, "PUT", d.url(fmt.Sprintf("/v1/ns/test/kv/k%d", i)), []byte("v"))
	}
	conn, err := net.Dial("tcp", d.api)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Headers announce 100 bytes of body; 10 come, then nothing.
	if _, err := io.WriteString(conn, "PUT /v1/ns/test/kv/stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"); err != nil {
		t.Fatal(err)
	}
	// Signal only once the request is in its handler: before that it may
	// still wait in the listen backlog, and shutting down drops it there.
	// Two requests in flight: the stalled one and the scrape that counts.
	eventually(t, 20*time.Second, "the stalled request in its handler", func() (bool, string) {
		body := string(mustCall(t, 200, "GET", d.url("/metrics"), nil))
		return strings.Contains(body, "\nmycel_api_requests_in_flight 2\n"), "not yet"
	})
	code, took := d.signalAndWait(t, syscall.SIGTERM, 8*time.Second)
	if code != 0 {
		t.Fatalf("exit code %d after %v, want 0\nstderr:\n%s", code, took, d.stderr)
	}
	if took > 4*time.Second+time.Second { // the bound, and a second for the process to go
		t.Fatalf("exit after %v, bound 4 s", took)
	}
	if !strings.Contains(d.stderr.String(), "requests still running at half the bound") {
		t.Fatalf("the stalled request did not hold the drain (took %v):\n%s", took, d.stderr)
	}
	t.Logf("SIGTERM to exit with a stalled request: %v", took)
	d = startDaemon(t, dir)
	if got := digestOf(t, d, "test").Keys; got != 20 {
		t.Fatalf("after restart %d keys, want 20", got)
	}
}

func TestSIGTERMExitsCleanly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n")
	d := startDaemon(t, dir)
	for i := range 50 {
		mustCall(t, 204, "PUT", d.url(fmt.Sprintf("/v1/ns/test/kv/k%d", i)), []byte("v"))
	}
	// An open watch stream must not hold shutdown up.
	resp, err := httpClient.Get(d.url("/v1/ns/test/watch"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	code, took := d.signalAndWait(t, syscall.SIGTERM, 12*time.Second)
	if code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0\nstderr:\n%s", code, d.stderr)
	}
	t.Logf("SIGTERM to exit: %v", took)
	d = startDaemon(t, dir)
	if got := digestOf(t, d, "test").Keys; got != 50 {
		t.Fatalf("after restart %d keys, want 50", got)
	}
}

func TestSecondDaemonOnSameDataDirFailsFast(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n")
	startDaemon(t, dir)
	cmd := exec.Command(binary, "daemon", "--data-dir", dir, "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := runBounded(t, cmd, 15*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("second daemon: %v, want exit code 1\nstderr: %s", err, &stderr)
	}
	if !strings.Contains(stderr.String(), "in use by another process") {
		t.Fatalf("second daemon's message does not say the data dir is in use: %s", &stderr)
	}
	t.Logf("second daemon refused in %v: %s", time.Since(start), strings.TrimSpace(stderr.String()))
}

// TestBusyAPIPortFailsBeforeTheNodeStarts: a daemon whose API port is
// taken fails before it creates its data directory or joins the network.
func TestBusyAPIPortFailsBeforeTheNodeStarts(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := filepath.Join(t.TempDir(), "n")
	cmd := exec.Command(binary, "daemon", "--data-dir", dir, "--listen", "/ip4/127.0.0.1/tcp/0", "--api", busy.Addr().String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = runBounded(t, cmd, 15*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "API listen") {
		t.Fatalf("daemon on a busy API port: %v\nstderr: %s", err, &stderr)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the data directory was created (%v)", err)
	}
}

// runBounded runs cmd, killing it past bound.
func runBounded(t testing.TB, cmd *exec.Cmd, bound time.Duration) error {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(bound):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%v still running after %v", cmd.Args, bound)
		return nil
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"public API without token", []string{"daemon", "--api", "0.0.0.0:0"}, "without --api-token-file"},
		{"bad log format", []string{"daemon", "--log-format", "xml"}, "want text or json"},
		{"no namespaces allowed", []string{"daemon", "--max-namespaces", "0"}, "--max-namespaces 0: want at least 1"},
		{"no watchers allowed", []string{"daemon", "--max-watchers", "0"}, "--max-watchers 0: want at least 1"},
		{"negative free-space reserve", []string{"daemon", "--min-free-bytes", "-1"}, "--min-free-bytes -1: want 0 (no check) or more"},
		{"value limit zero", []string{"daemon", "--max-value-bytes", "0"}, "--max-value-bytes 0: want 1 to"},
		{"key limit zero", []string{"daemon", "--max-key-bytes", "0"}, "--max-key-bytes 0: want 1 to 4096"},
		{"key limit over", []string{"daemon", "--max-key-bytes", "4097"}, "--max-key-bytes 4097: want 1 to 4096"},
		{"namespace over the key limit", []string{"daemon", "--max-key-bytes", "4", "--namespace", "orders"}, `--namespace "orders"`},
		{"value limit over one operation", []string{"daemon", "--max-value-bytes", "4000000"}, "one operation carries at most"},
		{"bench mesh degree 1", []string{"bench", "--mesh-degree", "1"}, "--mesh-degree 1: want 2 to 32"},
		{"bench mesh degree low over the degree", []string{"bench", "--mesh-degree", "2", "--mesh-degree-low", "3"}, "--mesh-degree-low 3: want 1 to the mesh degree (2)"},
		{"bench mesh degree low over the default", []string{"bench", "--mesh-degree-low", "7"}, "--mesh-degree-low 7: want 1 to the mesh degree (6)"},
		{"sync interval zero", []string{"daemon", "--sync-interval", "0s"}, "--sync-interval 0s: want a positive duration"},
		{"mesh degree zero", []string{"daemon", "--mesh-degree", "0"}, "--mesh-degree 0: want 2 to 32"},
		{"mesh degree low over the degree", []string{"daemon", "--mesh-degree", "2", "--mesh-degree-low", "3"}, "--mesh-degree-low 3: want 1 to --mesh-degree (2)"},
		{"negative mesh degree low", []string{"daemon", "--mesh-degree-low", "-1"}, "--mesh-degree-low -1: want 1 to --mesh-degree (6)"},
		{"empty namespace at start", []string{"daemon", "--namespace", "inventory", "--namespace", ""}, `--namespace "": crdt: invalid operation: namespace: store: invalid namespace name: empty`},
		{"API port out of range", []string{"daemon", "--api", "127.0.0.1:99999"}, "want HOST:PORT"},
		{"allowed peer not a peer id", []string{"daemon", "--allow-peer", "bob"}, `--allow-peer "bob": not a peer id`},
		{"writer without a namespace", []string{"daemon", "--writer", "12D3KooWGRUVh3yzLd2tNWi1ZQKyC1cHj3yc7PtpM5zGyqFvkqkE"}, "want NAMESPACE=PEERID"},
		{"writer not a peer id", []string{"daemon", "--writer", "inventory=bob"}, `--writer "inventory=bob": not a peer id`},
		{"negative key limit", []string{"keys", "--limit", "-5"}, "--limit -5: want 0 (all) or more"},
		{"unknown flag", []string{"get", "--bogus", "k"}, "unknown flag"},
		{"missing argument", []string{"get"}, "arg"},
		{"empty key", []string{"get", ""}, "get: the first argument must not be empty"},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(binary, append(tc.args, "--data-dir", dir)...)
			if tc.args[0] != "daemon" {
				cmd = exec.Command(binary, tc.args...)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := runBounded(t, cmd, 15*time.Second)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("%v: %v, want exit code 2; stderr: %s", tc.args, err, &stderr)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr %q does not mention %q", &stderr, tc.want)
			}
			// Refused before anything was opened: no identity, no store.
			if entries, err := os.ReadDir(dir); err != nil || len(entries) > 0 {
				t.Fatalf("the data directory holds %v (%v) after a usage error", entries, err)
			}
		})
	}
}

// TestBadInputChangesNothing sends each bad request and checks the status,
// the {"error": ...} body, that the digest of "test" did not change and
// that no namespace appeared. Requests that can be refused without looking
// at data name "fresh", a namespace that does not exist: refusing them must
// not create it.
func TestBadInputChangesNothing(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "n"))
	mustCall(t, 204, "PUT", d.url("/v1/ns/test/kv/reg"), []byte("v"))
	mustCall(t, 204, "POST", d.url("/v1/ns/test/counter/cnt"), []byte(`{"add": 1}`))
	mustCall(t, 204, "POST", d.url("/v1/ns/test/set/st"), []byte(`{"add": ["a"]}`))
	before := digestOf(t, d, "test")
	nsBefore := namespaces(t, d)
	if !equalStrings(nsBefore, []string{"test"}) {
		t.Fatalf("namespaces at start: %v", nsBefore)
	}

	// ~110,000 short elements: under 1 MiB of JSON, over 2 MiB of delta.
	var many strings.Builder
	many.WriteString(`{"add": [`)
	for i := range 110_000 {
		if i > 0 {
			many.WriteString(",")
		}
		fmt.Fprintf(&many, `"%06d"`, i)
	}
	many.WriteString(`]}`)
	manyElements := []byte(many.String())
	long := strings.Repeat("k", 1025)
	big := bytes.Repeat([]byte("x"), 1<<20+1)
	for _, tc := range []struct {
		name, method, path string
		body               []byte
		code               int
		msg                string // "": refused by net/http before routing (plain text)
	}{
		{"empty key", "PUT", "/v1/ns/fresh/kv/", []byte("v"), 400, "invalid key: empty key"},
		{"key too long", "PUT", "/v1/ns/fresh/kv/" + long, []byte("v"), 400, "invalid key"},
		{"key not UTF-8", "PUT", "/v1/ns/fresh/kv/%FF%FE", []byte("v"), 400, "not valid UTF-8"},
		{"bad escape", "PUT", "/v1/ns/fresh/kv/%zz", []byte("v"), 400, ""},
		{"bad escape in namespace", "GET", "/v1/ns/%zz/kv/x", nil, 400, ""},
		{"malformed query", "GET", "/v1/ns/fresh/kv?prefix=%zz", nil, 400, "malformed query"},
		{"empty namespace", "PUT", "/v1/ns//kv/x", []byte("v"), 400, "invalid namespace: empty"},
		{"namespace too long", "PUT", "/v1/ns/" + long + "/kv/x", []byte("v"), 400, "invalid namespace"},
		{"namespace not UTF-8", "PUT", "/v1/ns/%C3%28/kv/x", []byte("v"), 400, "invalid namespace"},
		{"value over the limit", "PUT", "/v1/ns/fresh/kv/big", big, 413, "limit"},
		{"counter body over the limit", "POST", "/v1/ns/fresh/counter/c2", big, 413, "limit"},
		{"set body over the limit", "POST", "/v1/ns/fresh/set/s2", big, 413, "limit"},
		{"counter malformed JSON", "POST", "/v1/ns/fresh/counter/c2", []byte(`{"add":`), 400, "malformed JSON"},
		{"counter wrong JSON type", "POST", "/v1/ns/fresh/counter/c2", []byte(`{"add": "1"}`), 400, "malformed JSON"},
		{"counter unknown field", "POST", "/v1/ns/fresh/counter/c2", []byte(`{"sub": 1}`), 400, "malformed JSON"},
		{"counter missing add", "POST", "/v1/ns/fresh/counter/c2", []byte(`{}`), 400, `{"add": <integer>}`},
		{"counter trailing data", "POST", "/v1/ns/fresh/counter/c2", []byte(`{"add": 1} {"add": 2}`), 400, "data after"},
		{"set malformed JSON", "POST", "/v1/ns/fresh/set/s2", []byte(`[`), 400, "malformed JSON"},
		{"set no elements", "POST", "/v1/ns/fresh/set/s2", []byte(`{"add": []}`), 400, "at least one element"},
		{"set empty element", "POST", "/v1/ns/fresh/set/s2", []byte(`{"add": [""]}`), 400, "empty set element"},
		{"set element too long", "POST", "/v1/ns/fresh/set/s2", []byte(`{"add": ["` + long + `"]}`), 400, "set element is 1025 bytes"},
		{"set remove element too long", "POST", "/v1/ns/fresh/set/s2", []byte(`{"remove": ["` + long + `"]}`), 400, "set element is 1025 bytes"},
		{"set update over the operation bound", "POST", "/v1/ns/fresh/set/s2", manyElements, 400, "one operation may carry"},
		{"set element not UTF-8", "POST", "/v1/ns/fresh/set/s2", []byte("{\"add\": [\"a\xff\"]}"), 400, "not valid UTF-8"},
		{"map body not UTF-8", "POST", "/v1/ns/fresh/map/m", []byte("{\"field\": \"f\", \"put\": \"\xff\"}"), 400, "not valid UTF-8"},
		{"map no field", "POST", "/v1/ns/fresh/map/m", []byte(`{"put": "v"}`), 400, `"field" is missing`},
		{"map no operation", "POST", "/v1/ns/fresh/map/m", []byte(`{"field": "f"}`), 400, "no operation"},
		{"map two operations", "POST", "/v1/ns/fresh/map/m", []byte(`{"field": "f", "put": "v", "delete": true}`), 400, "2 operations"},
		{"map empty path name", "POST", "/v1/ns/fresh/map/m", []byte(`{"path": [""], "field": "f", "put": "v"}`), 400, "empty field"},
		{"map bad base64", "POST", "/v1/ns/fresh/map/m", []byte(`{"field": "f", "put_base64": "!!"}`), 400, "malformed JSON"},
		{"map on a register", "POST", "/v1/ns/test/map/reg", []byte(`{"field": "f", "put": "v"}`), 409, "wrong type"},
		{"get a counter as map", "GET", "/v1/ns/test/map/cnt", nil, 409, "wrong type"},
		{"put on a counter", "PUT", "/v1/ns/test/kv/cnt", []byte("v"), 409, "wrong type"},
		{"counter on a register", "POST", "/v1/ns/test/counter/reg", []byte(`{"add": 1}`), 409, "wrong type"},
		{"set on a counter", "POST", "/v1/ns/test/set/cnt", []byte(`{"add": ["x"]}`), 409, "wrong type"},
		{"get a counter as register", "GET", "/v1/ns/test/kv/cnt", nil, 409, "wrong type"},
		{"get a register as set", "GET", "/v1/ns/test/set/reg", nil, 409, "wrong type"},
		{"absent key", "GET", "/v1/ns/test/kv/absent", nil, 404, "not found"},
		{"unknown route", "GET", "/v1/nothing", nil, 404, "no route"},
		{"unknown kind", "PUT", "/v1/ns/fresh/list/x", []byte("v"), 404, "no route"},
		{"map with PUT", "PUT", "/v1/ns/fresh/map/x", []byte("v"), 405, "use GET or POST"},
		{"digest with key", "GET", "/v1/ns/fresh/digest/x", nil, 404, "no route"},
		{"wrong method on kv", "PATCH", "/v1/ns/fresh/kv/reg", []byte("v"), 405, "method not allowed"},
		{"wrong method on list", "POST", "/v1/ns/fresh/kv", []byte("v"), 405, "method not allowed"},
		{"wrong method on counter", "DELETE", "/v1/ns/fresh/counter/cnt", nil, 405, "method not allowed"},
		{"wrong method on set", "PUT", "/v1/ns/fresh/set/st", []byte(`{"add": ["x"]}`), 405, "method not allowed"},
		{"wrong method on digest", "POST", "/v1/ns/fresh/digest", nil, 405, "method not allowed"},
		{"wrong method on watch", "POST", "/v1/ns/fresh/watch", nil, 405, "method not allowed"},
		{"wrong method on status", "POST", "/v1/status", nil, 405, "method not allowed"},
		{"wrong method on metrics", "POST", "/metrics", nil, 405, "method not allowed"},
		{"wrong method on healthz", "DELETE", "/healthz", nil, 405, "method not allowed"},
		{"bad list limit", "GET", "/v1/ns/fresh/kv?limit=abc", nil, 400, "limit"},
		{"list limit too large", "GET", "/v1/ns/fresh/kv?limit=10001", nil, 400, "limit"},
		{"watch cursor garbage", "GET", "/v1/ns/fresh/watch?from=abc", nil, 400, "not a watch cursor"},
		{"watch cursor on a new namespace", "GET", "/v1/ns/fresh/watch?from=1", nil, 400, "cannot be resumed"},
		{"watch cursor ahead of the node", "GET", "/v1/ns/test/watch?from=123456789", nil, 400, "cannot be resumed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, hdr := call(t, tc.method, d.url(tc.path), tc.body)
			if code != tc.code {
				t.Fatalf("status %d, want %d: %s", code, tc.code, body)
			}
			if tc.msg == "" {
				// The one documented exception (README, "HTTP API"): Go's
				// HTTP server refuses a request line it cannot parse before
				// any handler runs.
				if ct := hdr.Get("Content-Type"); ct != "text/plain; charset=utf-8" || string(body) != "400 Bad Request" {
					t.Fatalf("Content-Type %q, body %q; want net/http's plain 400 Bad Request", ct, body)
				}
			} else {
				if ct := hdr.Get("Content-Type"); ct != "application/json" {
					t.Fatalf("Content-Type %q, want application/json", ct)
				}
				var e map[string]string
				if err := json.Unmarshal(body, &e); err != nil || len(e) != 1 || e["error"] == "" {
					t.Fatalf("body %s is not {\"error\": \"...\"}", body)
				}
				if !strings.Contains(e["error"], tc.msg) {
					t.Fatalf("error %q does not mention %q", e["error"], tc.msg)
				}
				if code == 405 && hdr.Get("Allow") == "" {
					t.Fatalf("405 without an Allow header")
				}
			}
			if after := digestOf(t, d, "test"); after != before {
				t.Fatalf("digest changed: %+v -> %+v", before, after)
			}
			if got := namespaces(t, d); !equalStrings(got, nsBefore) {
				t.Fatalf("namespaces changed: %v -> %v", nsBefore, got)
			}
		})
	}
	// Refusals are not remembered either: after a restart, still only "test".
	if code, _ := d.signalAndWait(t, syscall.SIGTERM, 12*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	d = startDaemon(t, d.dataDir)
	if got := namespaces(t, d); !equalStrings(got, nsBefore) {
		t.Fatalf("after a restart the node holds %v, want %v", got, nsBefore)
	}
}

func namespaces(t testing.TB, d *daemon) []string {
	var st struct {
		Namespaces []string `json:"namespaces"`
	}
	if err := json.Unmarshal(mustCall(t, 200, "GET", d.url("/v1/status"), nil), &st); err != nil {
		t.Fatal(err)
	}
	return st.Namespaces
}

func equalStrings(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00")
}

// TestConcurrentWritesShowSiblings writes one key on two nodes that have
// not met, then lets them meet: both values are kept and visible.
func TestConcurrentWritesShowSiblings(t *testing.T) {
	dir := t.TempDir()
	n1 := startDaemon(t, filepath.Join(dir, "n1"))
	n2dir := filepath.Join(dir, "n2")
	n2 := startDaemon(t, n2dir)
	mustCall(t, 204, "PUT", n1.url("/v1/ns/test/kv/k"), []byte("from n1"))
	mustCall(t, 204, "PUT", n2.url("/v1/ns/test/kv/k"), []byte("from n2"))
	if code, _ := n2.signalAndWait(t, syscall.SIGTERM, 12*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	n2 = startDaemon(t, n2dir, "--bootstrap", n1.addrs[0])
	eventually(t, 60*time.Second, "the two writes meet", sameDigests(t, "test", 1, n1, n2))
	for _, d := range []*daemon{n1, n2} {
		code, body, hdr := call(t, "GET", d.url("/v1/ns/test/kv/k"), nil)
		if code != 200 || hdr.Get("X-Mycel-Siblings") != "2" {
			t.Fatalf("GET: %d %q, X-Mycel-Siblings %q", code, body, hdr.Get("X-Mycel-Siblings"))
		}
		var all struct {
			Values [][]byte `json:"values"`
		}
		if err := json.Unmarshal(mustCall(t, 200, "GET", d.url("/v1/ns/test/kv/k?all=1"), nil), &all); err != nil {
			t.Fatal(err)
		}
		if len(all.Values) != 2 || string(all.Values[1]) != string(body) {
			t.Fatalf("?all=1 gave %q; winner %q should be last", all.Values, body)
		}
		loser, winner := string(all.Values[0]), string(body)

		// The CLI: get prints the winner and says there is more; --all
		// prints every value, one a line, the winner last.
		out, errOut, code := mycelSplit(t, d, "get", "-n", "test", "k")
		if code != 0 || out != winner || errOut != "(2 concurrent values; see --all)\n" {
			t.Fatalf("mycel get: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		out, errOut, code = mycelSplit(t, d, "get", "-n", "test", "k", "--all")
		if code != 0 || out != loser+"\n"+winner+"\n" || errOut != "" {
			t.Fatalf("mycel get --all: exit %d, stdout %q, stderr %q; want %q then %q", code, out, errOut, loser, winner)
		}
		out, _, code = mycelSplit(t, d, "get", "-n", "test", "k", "--all", "--json")
		var got struct {
			Values [][]byte `json:"values"`
		}
		if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || len(got.Values) != 2 ||
			string(got.Values[0]) != loser || string(got.Values[1]) != winner {
			t.Fatalf("mycel get --all --json: exit %d, %q (%v)", code, out, err)
		}
	}
	_, errOut, code := mycelSplit(t, n1, "get", "-n", "test", "absent", "--all")
	if code != 1 || errOut != "mycel: not found: \"absent\" (HTTP 404)\n" {
		t.Fatalf("mycel get --all of an absent key: exit %d, stderr %q", code, errOut)
	}
}

// mycelSplit runs a client command against d and returns its stdout, its
// stderr and its exit code.
func mycelSplit(t *testing.T, d *daemon, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, append(args, "--api", d.api)...)
	cmd.Env = append(os.Environ(), clientEnv...)
	return runCaptured(t, cmd)
}

// runCaptured runs a client command (bounded in time) and returns its
// stdout, its stderr and its exit code; failing to run it fails the test.
func runCaptured(t *testing.T, cmd *exec.Cmd) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := runBounded(t, cmd, 30*time.Second)
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// TestWriterAllowlistFlag: --writer NS=PEERID makes a daemon refuse writes
// to NS from any other peer, while the allowed writer's changes replicate;
// --allow-peer with a bogus id is refused at start (TestUsageErrors).
func TestWriterAllowlistFlag(t *testing.T) {
	root := t.TempDir()
	a := startDaemon(t, filepath.Join(root, "a"))
	aID := a.peerID
	if code, _ := a.signalAndWait(t, syscall.SIGTERM, 12*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	b := startDaemon(t, filepath.Join(root, "b"))
	a = startDaemon(t, a.dataDir, "--writer", "inv="+aID, "--bootstrap", b.addrs[0])
	mustCall(t, 204, "PUT", b.url("/v1/ns/inv/kv/from-b"), []byte("b"))
	mustCall(t, 204, "PUT", a.url("/v1/ns/inv/kv/from-a"), []byte("a"))
	eventually(t, 30*time.Second, "a's write on b, b's write refused by a", func() (bool, string) {
		code, _, _ := call(t, "GET", b.url("/v1/ns/inv/kv/from-a"), nil)
		metrics := string(mustCall(t, 200, "GET", a.url("/metrics"), nil))
		refused := !strings.Contains(metrics, `mycel_gossip_rejected_total{reason="not_writer"} 0`) &&
			strings.Contains(metrics, `mycel_gossip_rejected_total{reason="not_writer"}`)
		return code == 200 && refused, fmt.Sprintf("b has a's write: %v; a refused: %v", code == 200, refused)
	})
	if code, _, _ := call(t, "GET", a.url("/v1/ns/inv/kv/from-b"), nil); code != 404 {
		t.Fatalf("a took a write from a peer not in its writer allowlist: %d", code)
	}
}

// TestCorruptStoreStopsTheDaemonWithItsName: a daemon whose store holds a
// byte gone bad on disk (one flipped in a key's block of a flushed
// sstable) exits 1 at start, naming the namespace, the record and what to
// do; Pebble's default had ended it with a fatal log line of its own.
func TestCorruptStoreStopsTheDaemonWithItsName(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n")
	d := startDaemon(t, dir)
	for i := range 300 {
		mustCall(t, 204, "PUT", d.url(fmt.Sprintf("/v1/ns/test/kv/order-%04d", i)), []byte("paid"))
	}
	mustCall(t, 204, "PUT", d.url("/v1/ns/test/kv/target"), []byte(storetest.Unrepeated))
	if code, _ := d.signalAndWait(t, syscall.SIGTERM, 12*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	path, b := storetest.FlushAll(t, filepath.Join(dir, "store"))
	storetest.FlipAt(t, path, b, []byte(storetest.Unrepeated), 0) // the key state's: key states sort before the log
	cmd := exec.Command(binary, "daemon", "--data-dir", dir, "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := runBounded(t, cmd, 30*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("daemon on a corrupt store: %v, want exit code 1\nstderr: %s", err, &stderr)
	}
	if msg := stderr.String(); !strings.Contains(msg, `corrupt record: namespace "test" key states`) || !strings.Contains(msg, "checksum mismatch") || strings.Contains(msg, "FATAL") {
		t.Fatalf("daemon's message does not name the corrupt record: %s", msg)
	}
	t.Log(strings.TrimSpace(stderr.String()))
}
