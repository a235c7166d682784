package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cli runs the mycel binary with exactly args (no MYCEL_* variables from
// the test's environment) and returns its output and exit code.
func cli(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MYCEL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, clientEnv...)
	return combined(runCaptured(t, cmd))
}

// connectedTo reports whether d's status lists peer id as connected.
func connectedTo(t *testing.T, d *daemon, id string) func() (bool, string) {
	return func() (bool, string) {
		var st struct {
			Peers []struct {
				ID        string `json:"id"`
				Connected bool   `json:"connected"`
			} `json:"peers"`
		}
		b := mustCall(t, 200, "GET", d.url("/v1/status"), nil)
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Peers {
			if p.ID == id && p.Connected {
				return true, ""
			}
		}
		return false, string(b)
	}
}

// TestReadmeQuickstart replays README's "Three nodes on one machine" with
// its commands and flags (free ports instead of 4001-4003 and 5080-5082,
// as the README allows; the default sync interval of 10 s). Node 3 opens
// the namespace "default" with the read itself, after node 1 wrote into
// it: the first `mycel get` must print the value.
func TestReadmeQuickstart(t *testing.T) {
	dir := t.TempDir()
	start := func(name string, extra ...string) *daemon {
		args := append([]string{"daemon", "--data-dir", filepath.Join(dir, name),
			"--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"}, extra...)
		return startDaemonArgs(t, filepath.Join(dir, name), args...)
	}
	n1 := start("n1")
	// "in two more terminals, bootstrapping from the line node 1 printed"
	n2 := start("n2", "--bootstrap", n1.addrs[0])
	n3 := start("n3", "--bootstrap", n1.addrs[0])
	// A reader starts the daemons by hand, seconds apart; node 3 needs
	// milliseconds to dial the line it was given.
	eventually(t, 30*time.Second, "node 3 connects to node 1", connectedTo(t, n3, n1.peerID))

	if out, code := cli(t, "put", "--api", n1.api, "greeting", "hello"); code != 0 {
		t.Fatalf("mycel put on node 1: exit %d: %s", code, out)
	}
	out, code := cli(t, "get", "--api", n3.api, "greeting")
	if code != 0 || strings.TrimSpace(out) != "hello" {
		t.Fatalf("first mycel get on node 3: exit %d, output %q; want hello", code, out)
	}
	if out, code := cli(t, "counter", "--api", n2.api, "visits", "--add", "3"); code != 0 {
		t.Fatalf("mycel counter on node 2: exit %d: %s", code, out)
	}
	eventually(t, 30*time.Second, "nodes 1 and 3 print equal digests", func() (bool, string) {
		d1, c1 := cli(t, "digest", "--api", n1.api)
		d3, c3 := cli(t, "digest", "--api", n3.api)
		return c1 == 0 && c3 == 0 && d1 == d3 && strings.Contains(d1, "2 keys"), d1 + " / " + d3
	})
}
