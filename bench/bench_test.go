package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSystem is an in-memory replication stand-in: a put is visible on its
// writer at once and on every connected node a millisecond later. Its
// faults let the tests check that the harness notices a broken system.
type fakeSystem struct {
	dropTo    int  // node that never receives replicated keys (-1: none)
	lieCount  bool // Count reports one key fewer than held
	failStart bool
}

func (f fakeSystem) Name() string { return "fake" }

func (f fakeSystem) Start(_ context.Context, p Params, h Hooks) (Cluster, error) {
	if f.failStart {
		return nil, errors.New("no hosts today")
	}
	c := &fakeCluster{sys: f, hooks: h}
	for range p.N {
		c.add()
	}
	return c, nil
}

type fakeCluster struct {
	sys   fakeSystem
	hooks Hooks
	wg    sync.WaitGroup

	mu       sync.Mutex
	held     []map[string][]byte
	isolated []bool
	sent     []int64
	recv     []int64
}

func (c *fakeCluster) add() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = append(c.held, map[string][]byte{})
	c.isolated = append(c.isolated, false)
	c.sent = append(c.sent, 0)
	c.recv = append(c.recv, 0)
	return len(c.held) - 1
}

// deliver copies key to node to, counting the bytes; mu is held.
func (c *fakeCluster) deliver(from, to int, key string, v []byte) {
	if to == c.sys.dropTo {
		return
	}
	if _, ok := c.held[to][key]; ok {
		return
	}
	c.held[to][key] = v
	c.sent[from] += int64(len(key) + len(v))
	c.recv[to] += int64(len(key) + len(v))
	c.hooks.Visible(to, key)
}

func (c *fakeCluster) Put(_ context.Context, n int, key string, v []byte) error {
	c.mu.Lock()
	c.held[n][key] = v
	c.mu.Unlock()
	c.hooks.Visible(n, key)
	c.wg.Add(1)
	time.AfterFunc(time.Millisecond, func() {
		defer c.wg.Done()
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.isolated[n] {
			return
		}
		for to := range c.held {
			if to != n && !c.isolated[to] {
				c.deliver(n, to, key, v)
			}
		}
	})
	return nil
}

func (c *fakeCluster) Count(_ context.Context, n int) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sys.lieCount {
		return len(c.held[n]) - 1, nil
	}
	return len(c.held[n]), nil
}

func (c *fakeCluster) Isolate(_ context.Context, n int) error {
	c.mu.Lock()
	c.isolated[n] = true
	c.mu.Unlock()
	return nil
}

// Rejoin syncs n both ways with every other node.
func (c *fakeCluster) Rejoin(_ context.Context, n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.isolated[n] = false
	for o := range c.held {
		if o == n {
			continue
		}
		for k, v := range c.held[o] {
			c.deliver(o, n, k, v)
		}
		for k, v := range c.held[n] {
			c.deliver(n, o, k, v)
		}
	}
	return nil
}

func (c *fakeCluster) Join(ctx context.Context) (int, error) {
	n := c.add()
	return n, c.Rejoin(ctx, n)
}

func (c *fakeCluster) Traffic(n int) Traffic {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Traffic{Sent: c.sent[n], Received: c.recv[n], SentByProtocol: map[string]int64{"/fake": c.sent[n]}}
}

func (c *fakeCluster) Close() error { c.wg.Wait(); return nil }

func smallParams(w string) Params {
	return Params{Workload: w, N: 3, K: 200, Writers: 4, Rate: 400, Duration: Seconds(500 * time.Millisecond), Timeout: Seconds(20 * time.Second)}
}

// TestHarnessMeasuresEveryWorkload: on a correct system, every workload
// yields every figure it promises, and its JSON line carries the
// parameters and the contract's fields.
func TestHarnessMeasuresEveryWorkload(t *testing.T) {
	for _, w := range Workloads {
		t.Run(w, func(t *testing.T) {
			res, err := Run(context.Background(), fakeSystem{dropTo: -1}, smallParams(w))
			if err != nil {
				t.Fatal(err)
			}
			if m := res.Missing(); len(m) > 0 {
				t.Fatalf("figures missing or zero: %v", m)
			}
			line, err := json.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			var fields map[string]any
			if err := json.Unmarshal(line, &fields); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"system", "workload", "n", "k", "value_size", "store", "topology", "transport", "duration_s", "bytes_per_key", "cpu_s", "rss_peak_mib"} {
				if _, ok := fields[f]; !ok {
					t.Errorf("JSON line lacks %q: %s", f, line)
				}
			}
			if fields["workload"] != w || fields["system"] != "fake" {
				t.Errorf("JSON line: workload %v system %v", fields["workload"], fields["system"])
			}
			if w == SingleWriter || w == MultiWriter {
				for _, f := range []string{"convergence_s", "puts_per_s", "prop_p50_ms", "prop_p99_ms"} {
					if _, ok := fields[f]; !ok {
						t.Errorf("JSON line lacks %q", f)
					}
				}
				// The fake sends each key once to each other node: exactly
				// the floor.
				if res.BytesPerKey != res.FloorBytesPerKey {
					t.Errorf("bytes per key %g, want the floor %g", res.BytesPerKey, res.FloorBytesPerKey)
				}
			}
		})
	}
}

// TestHarnessCatchesBrokenSystems: a node that never receives, a node
// that miscounts and a system that cannot start are errors, not figures.
func TestHarnessCatchesBrokenSystems(t *testing.T) {
	cases := []struct {
		name string
		sys  fakeSystem
		w    string
		want string
	}{
		{"never-delivers", fakeSystem{dropTo: 2}, MultiWriter, "not converged"},
		{"heal-never-delivers", fakeSystem{dropTo: 2}, PartitionHeal, "not converged"},
		{"joiner-never-receives", fakeSystem{dropTo: 3}, LateJoiner, "not converged"},
		{"miscounts", fakeSystem{dropTo: -1, lieCount: true}, SingleWriter, "disagree"},
		{"cannot-start", fakeSystem{failStart: true}, SingleWriter, "no hosts today"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := smallParams(tc.w)
			p.Timeout = Seconds(300 * time.Millisecond)
			res, err := Run(context.Background(), tc.sys, p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %+v, %v; want an error containing %q", res, err, tc.want)
			}
		})
	}
}

func TestMissingNamesZeroFigures(t *testing.T) {
	r := &Result{Params: Params{Workload: SingleWriter}, PutsPerS: 1}
	m := r.Missing()
	for _, f := range []string{"convergence_s", "prop_p99_ms", "bytes_per_key", "cpu_s"} {
		if !slices.Contains(m, f) {
			t.Errorf("Missing() = %v, lacks %s", m, f)
		}
	}
	if slices.Contains(m, "puts_per_s") {
		t.Errorf("Missing() = %v names a figure that is set", m)
	}
}

func TestParamsRejected(t *testing.T) {
	cases := []Params{
		{Workload: "nope"},
		{Workload: SingleWriter, N: -1},
		{Workload: SingleWriter, N: 1},
		{Workload: SingleWriter, N: 1000},
		{Workload: SingleWriter, K: -5},
		{Workload: SingleWriter, ValueSize: 2 << 20},
		{Workload: SingleWriter, Store: "badger"},
		{Workload: SingleWriter, Topology: "ring"},
		{Workload: SingleWriter, Transport: "udp"},
		{Workload: Sustained, Rate: -1},
		{Workload: Sustained, Duration: Seconds(-time.Second)},
		{Workload: SingleWriter, Writers: -2},
	}
	for _, p := range cases {
		if err := p.WithDefaults().Validate(); !errors.Is(err, ErrParams) {
			t.Errorf("%+v: Validate = %v, want ErrParams", p, err)
		}
		if _, err := Run(context.Background(), fakeSystem{dropTo: -1, failStart: true}, p); !errors.Is(err, ErrParams) {
			t.Errorf("%+v: Run = %v, want ErrParams before anything starts", p, err)
		}
	}
	if err := (Params{Workload: LateJoiner, N: 1}).WithDefaults().Validate(); err != nil {
		t.Errorf("late-joiner with one node: %v", err)
	}
}

// TestCommand runs the command end to end on the fake: flags, table and
// JSON lines.
func TestCommand(t *testing.T) {
	out := t.TempDir() + "/r.jsonl"
	cmd := Command(fakeSystem{dropTo: -1})
	var stdout, stderr bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs([]string{"--workload", "single-writer,late-joiner", "-n", "2", "-k", "50", "--writers", "2", "--json", out})
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "single-writer") || !strings.Contains(stdout.String(), "late-joiner") {
		t.Errorf("table lacks a workload:\n%s", stdout.String())
	}
	lines := readLines(t, out)
	if len(lines) != 2 {
		t.Fatalf("%d JSON lines, want 2", len(lines))
	}
	for _, args := range [][]string{
		{},
		{"--workload", "single-writer,bogus"},
		{"--workload", "all", "-n", "0"},
		{"--workload", "sustained", "--rate", "0.0001", "--duration", "1ms"},
	} {
		cmd := Command(fakeSystem{dropTo: -1})
		cmd.SetOut(&stdout)
		cmd.SetErr(&stderr)
		cmd.SetArgs(args)
		if err := cmd.ExecuteContext(context.Background()); !errors.Is(err, ErrParams) {
			t.Errorf("%v: err = %v, want ErrParams", args, err)
		}
	}
}

func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func TestNeighbours(t *testing.T) {
	mesh := Params{N: 4, Topology: "mesh"}
	if got := Neighbours(mesh, 2); !slices.Equal(got, []int{0, 1, 3}) {
		t.Errorf("mesh: %v", got)
	}
	chain := Params{N: 4, Topology: "chain"}
	for i, want := range [][]int{{1}, {0, 2}, {1, 3}, {2}} {
		if got := Neighbours(chain, i); !slices.Equal(got, want) {
			t.Errorf("chain node %d: %v, want %v", i, got, want)
		}
	}
}

// Durations written to a result read back the same (the report reads them).
func TestSecondsRoundTrip(t *testing.T) {
	for _, d := range []time.Duration{0, 1500 * time.Millisecond, 10 * time.Second} {
		b, err := json.Marshal(Seconds(d))
		if err != nil {
			t.Fatal(err)
		}
		var got Seconds
		if err := json.Unmarshal(b, &got); err != nil || time.Duration(got) != d {
			t.Fatalf("%v → %s → %v, %v", d, b, time.Duration(got), err)
		}
	}
	var s Seconds
	if err := json.Unmarshal([]byte("-1"), &s); err == nil {
		t.Fatal("negative seconds accepted")
	}
}
