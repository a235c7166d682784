//go:build linux

package sim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestNetnsCutCountsZero is the netns backend's partition-isolation test:
// with no route in place the hub's packet socket counts packets between
// two separated nodes as crossing (so it can see a leak), and once the
// partition's blackhole (or prohibit) routes are in place nothing crosses.
// The nodes run no daemon: node a sends UDP datagrams to node b itself.
func TestNetnsCutCountsZero(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	sc := Scenario{Regions: []Region{{Name: "a", Nodes: 1}, {Name: "b", Nodes: 1}}, Links: []Link{{A: "a", B: "b"}}}
	full := sc.withDefaults()
	r := &netnsRun{sc: &full, rng: rand.New(rand.NewPCG(1, 2)), o: NetnsOptions{Logf: t.Logf}}
	defer func() {
		r.teardown()
		out, _ := exec.Command("ip", "netns", "list").Output()
		if strings.Contains(string(out), r.tag) {
			t.Errorf("namespaces left behind:\n%s", out)
		}
	}()
	ctx := context.Background()
	if err := r.setup(ctx); err != nil {
		t.Fatal(err)
	}
	bg, stop := context.WithCancel(ctx)
	r.bgCtx, r.stopBG = bg, stop
	if err := r.startCapture(); err != nil {
		t.Fatal(err)
	}
	a, b := r.nodes[0], r.nodes[1]
	conn, err := netnsDialer("/var/run/netns/"+a.netns)(ctx, "udp", b.ip+":9")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	send := func() {
		for range 20 {
			_, _ = conn.Write([]byte("across?"))
		}
	}
	// waitCaptured waits until the socket has seen at least n packets.
	waitCaptured := func(n int64) {
		deadline := time.Now().Add(10 * time.Second)
		for r.captured.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("captured %d packets, want at least %d", r.captured.Load(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// settle waits until the socket has seen nothing new for 300 ms (b's
	// ICMP port-unreachable answers trail a's datagrams).
	settle := func() {
		for range 100 {
			n := r.captured.Load()
			time.Sleep(300 * time.Millisecond)
			if r.captured.Load() == n {
				return
			}
		}
	}

	// A cut counted but not enforced: the packets cross, and are counted.
	r.startCut(map[[4]byte]int{ipv4(a.ip): 0, ipv4(b.ip): 1}, time.Now().Add(-cutGrace))
	send()
	waitCaptured(20)
	if r.crossed.Load() == 0 {
		t.Fatal("packets between separated nodes were not counted as crossing")
	}
	r.endCuts(time.Now())

	for _, mode := range []string{Blackhole, Disconnect} {
		settle()
		if err := r.apply(ctx, Fault{Kind: Partition, Mode: mode, Groups: [][]string{{"a"}, {"b"}}}); err != nil {
			t.Fatal(err)
		}
		crossed := r.crossed.Load()
		send()
		settle() // this part asserts an absence: give anything sent time to show
		if got := r.crossed.Load() - crossed; got != 0 {
			t.Errorf("%s: %d packets crossed the cut", mode, got)
		}
		if err := r.apply(ctx, Fault{Kind: Heal}); err != nil {
			t.Fatal(err)
		}
		// Healed: packets flow again.
		before := r.captured.Load()
		send()
		waitCaptured(before + 20)
	}
}

// A read error on a path that contains "404" is not a 404.
func TestIsNotFoundReadsTheStatus(t *testing.T) {
	notFound := &httpStatusError{path: "/v1/ns/x/counter/c%2F00404", status: "404 Not Found", code: 404}
	failed := &httpStatusError{path: "/v1/ns/x/counter/c%2F00404", status: "500 Internal Server Error", code: 500}
	timeout := fmt.Errorf("GET /v1/ns/x/counter/c%%2F00404: %w", context.DeadlineExceeded)
	if !isNotFound(notFound) || isNotFound(failed) || isNotFound(timeout) {
		t.Fatalf("isNotFound: 404 %v, 500 %v, timeout %v", isNotFound(notFound), isNotFound(failed), isNotFound(timeout))
	}
}

// TestCutAtJudgesByFrameTime: a frame is judged by the cut that stood when
// the kernel saw it, whenever it is read: one that passed before the cut's
// routes (or within cutGrace of them) or after its heal crossed nothing.
// Judged at read time instead, a frame queued on the socket before a cut
// and read after it counted as crossing (a CI run failed on one).
func TestCutAtJudgesByFrameTime(t *testing.T) {
	var r netnsRun
	t0 := time.Unix(1_700_000_000, 0)
	sides := map[[4]byte]int{{10, 0, 0, 1}: 0, {10, 0, 0, 2}: 1}
	r.startCut(sides, t0)
	at := func(d time.Duration) bool { return r.cutAt(t0.Add(d)) != nil }
	if at(-time.Millisecond) || at(cutGrace-time.Microsecond) {
		t.Fatal("a frame that passed before the cut's routes, or within cutGrace of them, is judged by the cut")
	}
	if !at(cutGrace) || !at(time.Hour) {
		t.Fatal("a frame that passed while the cut stood is not judged by it")
	}
	r.endCuts(t0.Add(2 * time.Second))
	if !at(2*time.Second-time.Microsecond) || at(2*time.Second) {
		t.Fatal("the cut's end is not where the heal put it")
	}
	r.startCut(map[[4]byte]int{{10, 0, 0, 3}: 0}, t0.Add(5*time.Second))
	if got := r.cutAt(t0.Add(time.Second)); got[[4]byte{10, 0, 0, 1}] != 0 || len(got) != 2 {
		t.Fatalf("a frame of the first cut's window is judged by %v", got)
	}
	if got := r.cutAt(t0.Add(6 * time.Second)); len(got) != 1 {
		t.Fatalf("a frame of the second cut's window is judged by %v", got)
	}
}
