package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cliProcess is a client command that runs until stopped (mycel watch),
// its output collected as it comes.
type cliProcess struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	exited         chan struct{}
}

// startCLI starts the binary with args (no MYCEL_* variables from the
// test's environment); t.Cleanup kills it if it is still running.
func startCLI(t *testing.T, args ...string) *cliProcess {
	t.Helper()
	p := &cliProcess{cmd: exec.Command(binary, args...), stdout: &syncBuffer{}, stderr: &syncBuffer{}, exited: make(chan struct{})}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MYCEL_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, clientEnv...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// lines waits until the process has printed at least n complete lines and
// returns them all.
func (p *cliProcess) lines(t *testing.T, n int) []string {
	t.Helper()
	var got []string
	eventually(t, 20*time.Second, fmt.Sprintf("%v prints %d lines", p.cmd.Args[1:], n), func() (bool, string) {
		out := p.stdout.String()
		got = strings.Split(out, "\n")
		got = got[:len(got)-1] // what follows the last newline is not a line yet
		return len(got) >= n, fmt.Sprintf("stdout %q, stderr %q", out, p.stderr)
	})
	return got
}

// wait waits up to bound for the process to exit and returns its exit code.
func (p *cliProcess) wait(t *testing.T, bound time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(bound):
		t.Fatalf("%v still running after %v", p.cmd.Args[1:], bound)
	}
	return p.cmd.ProcessState.ExitCode()
}

// watchSubscribers waits until d's mycel_watch_subscribers gauge is n: a
// watch that counts there has subscribed, and sees every later change.
func watchSubscribers(t *testing.T, d *daemon, n int) {
	t.Helper()
	want := fmt.Sprintf("\nmycel_watch_subscribers %d\n", n)
	eventually(t, 20*time.Second, fmt.Sprintf("%d watch subscribers", n), func() (bool, string) {
		body := string(mustCall(t, 200, "GET", d.url("/metrics"), nil))
		return strings.Contains(body, want), "metrics lack " + strings.TrimSpace(want)
	})
}

// TestWatchCommand runs `mycel watch` against a daemon: it prints each
// change to keys with its prefix (one tab-separated line, or with --json
// the event object with its cursor), exits 0 on SIGINT, resumes with
// --from, and exits 1 saying why when the daemon shuts down.
func TestWatchCommand(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "n"))
	watch := func(extra ...string) *cliProcess {
		return startCLI(t, append([]string{"watch", "--api", d.api, "-n", "test", "--prefix", "w/"}, extra...)...)
	}
	cursorOf := func(s string) uint64 {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("cursor %q is not a decimal position", s)
		}
		return n
	}

	// Human output: cursor, key, kinds, value.
	human := watch()
	watchSubscribers(t, d, 1)
	mustCall(t, 204, "PUT", d.url("/v1/ns/test/kv/w/1"), []byte("one"))
	mustCall(t, 204, "PUT", d.url("/v1/ns/test/kv/other"), []byte("not watched"))
	mustCall(t, 204, "POST", d.url("/v1/ns/test/counter/w/2"), []byte(`{"add": 7}`))
	mustCall(t, 204, "POST", d.url("/v1/ns/test/set/w/3"), []byte(`{"add": ["b", "a"]}`))
	mustCall(t, 204, "POST", d.url("/v1/ns/test/map/w/m"), []byte(`{"path": ["p"], "field": "f", "put": "v"}`))
	mustCall(t, 204, "DELETE", d.url("/v1/ns/test/kv/w/1"), nil)
	lines := human.lines(t, 5)
	want := [][3]string{{"w/1", "register", `"one"`}, {"w/2", "counter", "7"}, {"w/3", "set", "{a, b}"},
		{"w/m", "map", `{"p":{"map":{"f":{"register":"v"}}}}`}, {"w/1", "none", "deleted"}}
	var cursors []string
	for i, line := range lines {
		f := strings.Split(line, "\t")
		if i >= len(want) || len(f) != 4 || [3]string(f[1:]) != want[i] {
			t.Fatalf("mycel watch printed %q, want lines <cursor>\\t%q", lines, want)
		}
		if c := cursorOf(f[0]); i > 0 && c <= cursorOf(cursors[i-1]) {
			t.Fatalf("cursors not increasing: %q", lines)
		}
		cursors = append(cursors, f[0])
	}
	if err := human.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := human.wait(t, 10*time.Second); code != 0 || human.stderr.String() != "" {
		t.Fatalf("mycel watch after SIGINT: exit %d, stderr %q; want 0 and nothing", code, human.stderr)
	}
	watchSubscribers(t, d, 0)

	// --json: one event object per line, with its cursor.
	type event struct {
		Cursor, Namespace, Key, Kinds string
		Value                         []byte
		Counter                       *int64
		Deleted                       bool
	}
	decode := func(lines []string) []event {
		var evs []event
		for _, line := range lines {
			var ev event
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("mycel watch --json printed %q: not one JSON object: %v", line, err)
			}
			cursorOf(ev.Cursor)
			evs = append(evs, ev)
		}
		return evs
	}
	js := watch("--json")
	watchSubscribers(t, d, 1)
	mustCall(t, 204, "PUT", d.url("/v1/ns/test/kv/w/4"), []byte("four"))
	mustCall(t, 204, "POST", d.url("/v1/ns/test/counter/w/2"), []byte(`{"add": 1}`))
	evs := decode(js.lines(t, 2))
	if len(evs) != 2 || evs[0].Key != "w/4" || string(evs[0].Value) != "four" || evs[0].Kinds != "register" || evs[0].Namespace != "test" ||
		evs[1].Key != "w/2" || evs[1].Counter == nil || *evs[1].Counter != 8 || cursorOf(evs[0].Cursor) <= cursorOf(cursors[4]) {
		t.Fatalf("mycel watch --json printed %+v", evs)
	}
	cursors = append(cursors, evs[0].Cursor, evs[1].Cursor)
	if err := js.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := js.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("mycel watch --json after SIGTERM: exit %d, stderr %q", code, js.stderr)
	}

	// --from: the changes after the cursor again, then live ones.
	resumed := watch("--json", "--from", cursors[0])
	evs = decode(resumed.lines(t, len(cursors)-1))
	for i, ev := range evs {
		if ev.Cursor != cursors[i+1] {
			t.Fatalf("resumed from %s: cursors %+v, want %q", cursors[0], evs, cursors[1:])
		}
	}
	mustCall(t, 204, "PUT", d.url("/v1/ns/test/kv/w/5"), []byte("five"))
	if ev := decode(resumed.lines(t, len(cursors)))[len(cursors)-1]; ev.Key != "w/5" || string(ev.Value) != "five" {
		t.Fatalf("live event after the replay: %+v", ev)
	}

	// The daemon going away ends the watch with an error, not silently.
	if code, _ := d.signalAndWait(t, syscall.SIGTERM, 12*time.Second); code != 0 {
		t.Fatalf("daemon exit code %d\nstderr:\n%s", code, d.stderr)
	}
	if code := resumed.wait(t, 10*time.Second); code != 1 || !strings.Contains(resumed.stderr.String(), "shutting down") {
		t.Fatalf("mycel watch when the daemon stops: exit %d, stderr %q; want 1 and why", code, resumed.stderr)
	}
}
