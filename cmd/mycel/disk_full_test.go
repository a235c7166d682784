package main

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDaemonOnAFullDisk runs the real daemon on a 48 MiB tmpfs. Before the
// free-space reserve, Pebble's failed log write ended the process
// ("pebble: fatal commit error: … no space left on device"), and a restart
// on the full disk never became ready: Pebble retried flushing the
// replayed log about a thousand times a second, and SIGTERM did not stop it.
// Now writes get 507 while less than --min-free-bytes is free, reads and
// health go on, SIGTERM stops the daemon at once, a restart without room
// to replay the log exits 1 saying so, and with room every acknowledged
// write is there.
func TestDaemonOnAFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	disk := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(disk, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", disk).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	// Registered first, so it runs after every daemon's own cleanup.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", disk).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", disk, err, out)
		}
	})
	dir := filepath.Join(disk, "n")
	reserve := "--min-free-bytes=16777216"
	d := startDaemon(t, dir, reserve)

	value := make([]byte, 200<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range value {
		value[i] = byte(rng.Uint32()) // incompressible: each put takes its size on disk
	}
	var acked []string
	full := false
	for i := 0; i < 400 && !full; i++ {
		key := fmt.Sprintf("k%03d", i)
		code, body, _ := call(t, "PUT", d.url("/v1/ns/test/kv/"+key), value)
		switch code {
		case 204:
			acked = append(acked, key)
		case 507:
			if !strings.Contains(string(body), "disk full") || !strings.Contains(string(body), "free") {
				t.Fatalf("507 body %s, want it to say the disk is full", body)
			}
			full = true
		default:
			t.Fatalf("put %d: %d %s\nstderr:\n%s", i, code, body, d.stderr)
		}
	}
	if !full || len(acked) < 50 {
		t.Fatalf("after %d puts of 200 KiB: full %v", len(acked), full)
	}
	mustCall(t, 507, "PUT", d.url("/v1/ns/test/kv/more"), []byte("x"))
	if got := mustCall(t, 200, "GET", d.url("/v1/ns/test/kv/"+acked[0]), nil); !bytes.Equal(got, value) {
		t.Fatal("read on a full disk: wrong value")
	}
	mustCall(t, 200, "GET", d.url("/healthz"), nil)
	if code, took := d.signalAndWait(t, syscall.SIGTERM, 12*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM (%v)\nstderr:\n%s", code, took, d.stderr)
	}
	if msg := d.stderr.String(); strings.Contains(msg, "FATAL") || strings.Contains(msg, "fatal") {
		t.Fatalf("the daemon logged a fatal error:\n%s", msg)
	}

	// Too little room to replay the log: a clear error, exit code 1.
	cmd := exec.Command(binary, "daemon", "--data-dir", dir, "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", reserve)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := runBounded(t, cmd, 30*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("restart on a full disk: %v, want exit code 1\nstderr: %s", err, &stderr)
	}
	if msg := stderr.String(); !strings.Contains(msg, "disk full") || !strings.Contains(msg, "replay the write-ahead log") {
		t.Fatalf("restart on a full disk does not say why: %s", msg)
	}

	// With room, every acknowledged write is there, and writes are taken.
	if out, err := exec.Command("mount", "-o", "remount,size=192m", disk).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v: %s", err, out)
	}
	d = startDaemon(t, dir, reserve)
	for _, k := range acked {
		if got := mustCall(t, 200, "GET", d.url("/v1/ns/test/kv/"+k), nil); !bytes.Equal(got, value) {
			t.Fatalf("acknowledged %s: wrong value after the restart", k)
		}
	}
	mustCall(t, 204, "PUT", d.url("/v1/ns/test/kv/more"), []byte("x"))
	if code, _ := d.signalAndWait(t, syscall.SIGTERM, 12*time.Second); code != 0 {
		t.Fatalf("exit code %d\nstderr:\n%s", code, d.stderr)
	}
}
