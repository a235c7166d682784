package store

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mycelnet/mycel/crdt"
)

const (
	crashChildEnv = "MYCEL_STORE_CRASH_CHILD"
	crashRunEnv   = "MYCEL_STORE_CRASH_RUN"
	crashWriters  = 4
)

// crashChild is the process the crash test kills: it writes through the
// store from several goroutines and prints one line per acknowledged write.
func crashChild(dir string) int {
	run := os.Getenv(crashRunEnv)
	ctx := context.Background()
	n, ok := openChildStore(dir, Options{Replica: testReplica}, "crash")
	if !ok {
		return 3
	}
	var outMu sync.Mutex
	ack := func(format string, args ...any) {
		outMu.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", args...)
		outMu.Unlock()
	}
	ack("ready")
	var wg sync.WaitGroup
	for w := 0; w < crashWriters; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				key := fmt.Sprintf("r%s-w%d-%d", run, w, i)
				val := fmt.Sprintf("v%d", i*7)
				if _, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: key, Value: []byte(val)}); err != nil {
					fmt.Fprintln(os.Stderr, "put:", err)
					return
				}
				ack("put %s %s", key, val)
				ctr := fmt.Sprintf("c%d", w)
				if _, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpCounterAdd, Key: ctr, N: 1}); err != nil {
					fmt.Fprintln(os.Stderr, "add:", err)
					return
				}
				v, _ := n.Get(ctr)
				ack("ctr %s %d", ctr, v.Counter())
				elem := fmt.Sprintf("r%s-%d", run, i)
				if _, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpSetUpdate, Key: fmt.Sprintf("s%d", w), Add: []string{elem}}); err != nil {
					fmt.Fprintln(os.Stderr, "set:", err)
					return
				}
				ack("set s%d %s", w, elem)
			}
		}()
	}
	wg.Wait()
	return 4
}

func crashSeed(t *testing.T) uint64 {
	seed := uint64(20261125)
	if s := os.Getenv("MYCEL_CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("MYCEL_CRASH_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("crash test seed %d (set MYCEL_CRASH_SEED to replay)", seed)
	return seed
}

// TestCrashLosesNothingAcknowledged SIGKILLs a writing process at random
// moments, 24 times on one data directory, and checks after each kill that
// the store opens cleanly and holds every write the process acknowledged.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("kills real processes")
	}
	seed := crashSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	dir := t.TempDir()
	puts := map[string]string{}
	ctrMin := map[string]int64{}
	elems := map[string][]string{}
	const kills = 24
	for run := 0; run < kills; run++ {
		// Kill during open and recovery sometimes, mostly mid-write.
		delay := time.Duration(rng.IntN(400)+5) * time.Millisecond
		lines := runAndKill(t, dir, run, delay)
		for _, l := range lines {
			f := strings.Fields(l)
			switch {
			case len(f) == 3 && f[0] == "put":
				puts[f[1]] = f[2]
			case len(f) == 3 && f[0] == "ctr":
				v, _ := strconv.ParseInt(f[2], 10, 64)
				if v > ctrMin[f[1]] {
					ctrMin[f[1]] = v
				}
			case len(f) == 3 && f[0] == "set":
				elems[f[1]] = append(elems[f[1]], f[2])
			}
		}
		verifyAcked(t, dir, run, seed, puts, ctrMin, elems)
	}
	if len(puts) == 0 {
		t.Fatal("no write was ever acknowledged: the test exercised nothing")
	}
	t.Logf("%d kills, %d acknowledged puts verified", kills, len(puts))
}

// runAndKill starts the writer, kills it with SIGKILL after delay, and
// returns the lines it printed (each an acknowledged write).
func runAndKill(t *testing.T, dir string, run int, delay time.Duration) []string {
	t.Helper()
	cmd, out, stderr := startChild(t, crashChildEnv+"="+dir, crashRunEnv+"="+strconv.Itoa(run))
	var lines []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Only whole lines count: a line cut by the kill is not an
		// acknowledgement.
		r := bufio.NewReader(out)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			lines = append(lines, strings.TrimSuffix(l, "\n"))
		}
	}()
	time.Sleep(delay) // the crash moment: a chosen point in time, not a wait for a condition
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
	err := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("run %d: writer exited by itself (%v): %s", run, err, stderr.String())
	}
	return lines
}

func verifyAcked(t *testing.T, dir string, run int, seed uint64, puts map[string]string, ctrMin map[string]int64, elems map[string][]string) {
	t.Helper()
	s, err := OpenPebble(context.Background(), dir, Options{Replica: testReplica})
	if err != nil {
		t.Fatalf("run %d (seed %d): reopen after SIGKILL: %v", run, seed, err)
	}
	defer s.Close()
	n := mustNS(t, s, "crash")
	for k, want := range puts {
		if got, ok := getString(n, k); !ok || got != want {
			t.Fatalf("run %d (seed %d): acknowledged put %s=%s lost (got %q, %v)", run, seed, k, want, got, ok)
		}
	}
	for k, min := range ctrMin {
		v, _ := n.Get(k)
		// At most one unacknowledged add per writer may also have landed.
		if got := v.Counter(); got < min || got > min+1 {
			t.Fatalf("run %d (seed %d): counter %s = %d, acknowledged %d", run, seed, k, got, min)
		}
		ctrMin[k] = v.Counter()
	}
	for k, es := range elems {
		v, _ := n.Get(k)
		for _, e := range es {
			if !v.SetContains(e) {
				t.Fatalf("run %d (seed %d): acknowledged set element %s in %s lost", run, seed, e, k)
			}
		}
	}
	if d, _ := n.Digest(); d != fullDigest(n) {
		t.Fatalf("run %d (seed %d): digest after recovery differs from a full scan", run, seed)
	}
}

const noSyncChildEnv = "MYCEL_STORE_NOSYNC_CHILD"

// noSyncFlush is FlushEvery in the NoSync crash test.
const noSyncFlush = 50 * time.Millisecond

// noSyncChild writes with NoSync, acknowledges, then idles past the flush
// bound, saying so, until it is killed.
func noSyncChild(dir string) int {
	ctx := context.Background()
	n, ok := openChildStore(dir, Options{Replica: testReplica, NoSync: true, FlushEvery: noSyncFlush}, "nosync")
	if !ok {
		return 3
	}
	for i := range 10 {
		if _, err := n.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: fmt.Sprint("k", i), Value: []byte("v")}); err != nil {
			fmt.Fprintln(os.Stderr, "put:", err)
			return 3
		}
	}
	// The scenario, not a wait for a condition: ten flush periods pass
	// with nothing else written, so only the flush can have synced.
	time.Sleep(10 * noSyncFlush)
	fmt.Println("flushed")
	select {} // until SIGKILL
}

// TestNoSyncWritesSurviveAProcessCrashAfterFlushEvery: a NoSync write sits
// in Pebble's WAL buffer (in process memory) until a sync; the store syncs
// within FlushEvery, so a SIGKILL after that loses nothing (found by
// review: such writes waited for the next durable write, indefinitely).
func TestNoSyncWritesSurviveAProcessCrashAfterFlushEvery(t *testing.T) {
	dir := t.TempDir()
	cmd, out, stderr := startChild(t, noSyncChildEnv+"="+dir)
	defer cmd.Process.Kill()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case l, ok := <-lines:
		if !ok || l != "flushed" {
			t.Fatalf("child said %q (%v); stderr: %s", l, ok, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("child did not get past the flush bound within 60 s")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	s := openPebble(t, dir, Options{CompactEvery: -1})
	defer s.Close()
	n := mustNS(t, s, "nosync")
	for i := range 10 {
		if _, ok := n.Get(fmt.Sprint("k", i)); !ok {
			t.Fatalf("k%d, acknowledged under NoSync more than FlushEvery before the crash, is gone", i)
		}
	}
}

// openChildStore opens a child process's store and namespace, saying on
// stderr what failed.
func openChildStore(dir string, opts Options, ns string) (*Namespace, bool) {
	ctx := context.Background()
	s, err := OpenPebble(ctx, dir, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return nil, false
	}
	n, err := s.Namespace(ctx, ns)
	if err != nil {
		fmt.Fprintln(os.Stderr, "namespace:", err)
		return nil, false
	}
	return n, true
}

// startChild re-executes this test binary with env added, as a child that
// TestMain turns into a writer; its stdout is piped, its stderr kept.
func startChild(t *testing.T, env ...string) (*exec.Cmd, io.ReadCloser, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := new(strings.Builder)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, out, stderr
}
