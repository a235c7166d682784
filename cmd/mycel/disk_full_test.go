package main

import (
	"bytes"
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

// TestDaemonOnAFullDisk runs the real daemon on a 320 MiB tmpfs. Before
// the free-space reserve, Pebble's failed log write ended the process
// ("pebble: fatal commit error: … no space left on device"), and a restart
// on the full disk never became ready: Pebble retried flushing the
// replayed log about a thousand times a second, and SIGTERM did not stop it.
// Now writes get 507 while less than the reserve (at least 80 MiB) is
// free, reads and health go on, SIGTERM stops the daemon at once, a
// restart finds every acknowledged write, and once the disk has room
// writes are taken again. (An open without room to replay the log is
// refused with its figures: store's TestRoomToOpen.)
func TestDaemonOnAFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	disk := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(disk, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=320m", "tmpfs", disk).CombinedOutput(); err != nil {
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
	for i := 0; i < 1000 && !full; i++ {
		key := fmt.Sprintf("k%04d", i)
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
	if !full || len(acked) == 0 {
		t.Fatalf("after %d puts of 200 KiB: full %v\nstderr:\n%s", len(acked), full, d.stderr)
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

	// A restart on the nearly full disk: everything acknowledged is there.
	// The restart frees what Pebble held for its logs, so fill it again.
	d = startDaemon(t, dir, reserve)
	for _, k := range acked {
		if got := mustCall(t, 200, "GET", d.url("/v1/ns/test/kv/"+k), nil); !bytes.Equal(got, value) {
			t.Fatalf("acknowledged %s: wrong value after the restart", k)
		}
	}
	for i := 0; ; i++ {
		code, body, _ := call(t, "PUT", d.url(fmt.Sprintf("/v1/ns/test/kv/again%04d", i)), value)
		if code == 507 {
			break
		}
		if code != 204 || i == 1000 {
			t.Fatalf("put %d after the restart: %d %s", i, code, body)
		}
	}

	// Room again: writes are taken without a restart.
	if out, err := exec.Command("mount", "-o", "remount,size=640m", disk).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v: %s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body, _ := call(t, "PUT", d.url("/v1/ns/test/kv/more"), []byte("x"))
		if code == 204 {
			break
		}
		if code != 507 || time.Now().After(deadline) {
			t.Fatalf("put once the disk has room: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := d.signalAndWait(t, syscall.SIGTERM, 12*time.Second); code != 0 {
		t.Fatalf("exit code %d\nstderr:\n%s", code, d.stderr)
	}
}
