//go:build linux

package sim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// NetnsOptions configures RunNetns.
type NetnsOptions struct {
	// Binary is the mycel executable every node runs as `mycel daemon`.
	Binary string
	// Progress is called about once a second, as WithProgress.
	Progress func(Progress)
	// Logf, if set, receives a line per step (namespaces, nodes, faults).
	Logf func(format string, args ...any)
}

const (
	// netnsPrefix starts every namespace a run makes: mycelsim-<pid>-hub
	// and mycelsim-<pid>-<node>, so a later run can remove those of a run
	// that died (its pid gone).
	netnsPrefix = "mycelsim-"
	// netnsAPI is each daemon's API address inside its own namespace.
	netnsAPI = "127.0.0.1:5080"
	// netnsSpace is the Mycel namespace the workload writes.
	netnsSpace = "sim"
	// netnsSubnet holds the nodes: node i of region r is 10.213.<r+1>.<i+1>.
	netnsSubnet = "10.213"
)

// RunNetns runs sc with every node a real `mycel daemon` process (o.Binary)
// in a network namespace of its own, all joined by a bridge in a hub
// namespace; nothing touches the host's own network. Partitions are routes
// in the nodes' namespaces: blackhole (packets vanish, nothing is closed)
// or prohibit for mode disconnect (senders get an error at once); crashes
// are SIGKILL, a wipe removes the node's store but keeps its identity key.
// The workload goes through each daemon's HTTP API, dialled from inside the
// node's namespace, and the checkers read the API: digests for
// convergence, the touched keys for lost writes (see expectation), the
// watch stream for propagation. A region's bandwidth is a token bucket
// (tc's tbf) on both ends of each of its nodes' veth pairs. It needs root
// and iproute2, and cannot add latency or loss (ValidateNetns says what it
// refuses). Every namespace and process it starts is gone when it returns.
func RunNetns(ctx context.Context, sc Scenario, seed uint64, o NetnsOptions) (*Report, error) {
	if err := sc.ValidateNetns(); err != nil {
		return nil, err
	}
	if o.Binary == "" {
		return nil, errors.New("sim: netns backend: no mycel binary given")
	}
	if err := netnsAvailable(); err != nil {
		return nil, err
	}
	shaped := false
	for _, reg := range sc.Regions {
		shaped = shaped || reg.Bandwidth > 0
	}
	if _, err := exec.LookPath("tc"); shaped && err != nil {
		return nil, errors.New("sim: the netns backend shapes a region's bandwidth with the tc command (iproute2), which is missing")
	}
	plan, err := sc.Plan(seed)
	if err != nil {
		return nil, err
	}
	full := sc.withDefaults()
	r := &netnsRun{sc: &full, o: o, rng: rand.New(rand.NewPCG(seed, 0x6e65746e73)), bandwidth: regionBandwidths(sc)}
	if r.o.Logf == nil {
		r.o.Logf = func(string, ...any) {}
	}
	defer r.teardown()
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	return r.play(ctx, plan, seed)
}

// netnsAvailable checks for what the backend needs: root (namespaces and
// routes) and the ip command.
func netnsAvailable() error {
	if os.Geteuid() != 0 {
		return errors.New("sim: the netns backend needs root (it makes network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("sim: the netns backend needs the ip command (iproute2)")
	}
	return nil
}

type netnsNode struct {
	index  int
	name   string // <region>-<i>
	region int
	netns  string
	ip     string
	dir    string // data dir: identity.key and store/
	log    string
	client *http.Client
	boot   []int

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	watchOf context.CancelFunc
	up      atomic.Bool
	peerID  string
	// wipedAt: when the node last lost its store (zero: never).
	wipedAt time.Time
	// crashes: when it was killed.
	crashes []time.Time
}

type netnsRun struct {
	sc *Scenario
	o  NetnsOptions
	// bandwidth is each region's rate in bits per second as the scenario
	// gives it, 0 where it gives none: unshaped, the veth pair's own speed
	// (sc holds the simnet backend's default there).
	bandwidth []int
	rng       *rand.Rand
	tag       string
	hub       string
	dir       string
	nodes     []*netnsNode
	made      []string // namespaces made, deleted at teardown

	cutMu  sync.Mutex
	routes [][]string // ip arguments that undo the standing cut

	arrMu    sync.Mutex
	arrivals map[string][]time.Time // put value → first time each node showed it

	// capture: the packets the hub's bridge delivered, and those that
	// crossed a standing cut; cuts holds every cut made, each a map from
	// each separated node's address to its group and the time window it
	// stood in, so a packet is judged by the cut standing when the kernel
	// saw it, not when the capture loop got to read it.
	captured, crossed atomic.Int64
	cutsMu            sync.Mutex
	cuts              []standingCut

	ackedN atomic.Int64
	// bgCtx bounds the watchers and the sampler; stopBG ends them.
	bgCtx  context.Context
	bg     sync.WaitGroup
	stopBG context.CancelFunc
}

func (r *netnsRun) ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("sim: ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// shape puts (verb "add") or puts anew (verb "replace", with a handle
// other than the current one) a token bucket at the node's region's rate on
// both ends of its veth pair: the node's end shapes what it sends, the
// hub's end what it receives. A region without bandwidth is left alone.
func (r *netnsRun) shape(ctx context.Context, n *netnsNode, verb, handle string) error {
	bw := r.regionBandwidth(n.region)
	if bw <= 0 {
		return nil
	}
	for _, end := range [][2]string{{n.netns, "eth0"}, {r.hub, "h" + strconv.Itoa(n.index)}} {
		if err := r.tc(ctx, append([]string{"-n", end[0], "qdisc", verb, "dev", end[1], "root", "handle", handle}, tbfArgs(bw)...)...); err != nil {
			return err
		}
	}
	return nil
}

// dropQueued drops the packets waiting in the token buckets of the shaped
// nodes among idx, both ways: they were routed before a cut's routes went
// in, and a bucket holds up to its latency's worth (500 ms), so they would
// cross the cut long after its grace. A link that goes down loses what
// was queued on it. Replacing a qdisc with one of another handle drops its
// queue (a replace with the same handle keeps it); the second replace
// brings the handle back.
func (r *netnsRun) dropQueued(ctx context.Context, idx []int) error {
	for _, i := range idx {
		for _, handle := range []string{"2:", "1:"} {
			if err := r.shape(ctx, r.nodes[i], "replace", handle); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *netnsRun) tc(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "tc", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("sim: tc %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// regionBandwidths is each region's bandwidth as sc gives it (0: none).
func regionBandwidths(sc Scenario) []int {
	out := make([]int, len(sc.Regions))
	for i, reg := range sc.Regions {
		out[i] = max(reg.Bandwidth, 0)
	}
	return out
}

func (r *netnsRun) regionBandwidth(region int) int {
	if region < len(r.bandwidth) {
		return r.bandwidth[region]
	}
	return 0
}

// tbfArgs are the arguments of a token-bucket qdisc that passes
// bitsPerSecond: the burst is the simnet backend's (linkBurst: a delivery
// tick's worth), but at least two full Ethernet frames, since a frame
// larger than the bucket would never pass; a packet waits at most 500 ms
// in the queue before it is dropped, as a shaped access link would.
func tbfArgs(bitsPerSecond int) []string {
	burst := max(linkBurst(bitsPerSecond), 2*1514)
	return []string{"tbf", "rate", strconv.Itoa(bitsPerSecond) + "bit", "burst", strconv.Itoa(burst), "latency", "500ms"}
}

// setup removes namespaces left by dead runs, then makes the hub with its
// bridge and one namespace per node, joined to the bridge by a veth pair.
func (r *netnsRun) setup(ctx context.Context) error {
	removeStaleNetns(ctx)
	dir, err := os.MkdirTemp("", "mycelsim-")
	if err != nil {
		return err
	}
	r.dir = dir
	r.tag = fmt.Sprintf("%s%d-", netnsPrefix, os.Getpid())
	r.hub = r.tag + "hub"
	r.arrivals = make(map[string][]time.Time)
	steps := [][]string{{"netns", "add", r.hub}, {"-n", r.hub, "link", "add", "br0", "type", "bridge"}, {"-n", r.hub, "link", "set", "br0", "up"}}
	for i, s := range steps {
		if err := r.ip(ctx, s...); err != nil {
			return err
		}
		if i == 0 {
			r.made = append(r.made, r.hub)
		}
	}
	regions := r.sc.nodeRegions()
	names := r.sc.nodeNames()
	within := make(map[int]int)
	for i, name := range names {
		reg := regions[i]
		within[reg]++
		n := &netnsNode{
			index: i, name: name, region: reg,
			netns: r.tag + strconv.Itoa(i),
			ip:    fmt.Sprintf("%s.%d.%d", netnsSubnet, reg+1, within[reg]),
			dir:   filepath.Join(dir, name),
			log:   filepath.Join(dir, name+".log"),
			boot:  bootstrapPeers(r.rng, i),
		}
		n.client = &http.Client{Transport: &http.Transport{
			DialContext:         netnsDialer("/var/run/netns/" + n.netns),
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
		}}
		if err := r.ip(ctx, "netns", "add", n.netns); err != nil {
			return err
		}
		r.made = append(r.made, n.netns)
		hubEnd := "h" + strconv.Itoa(i)
		for _, s := range [][]string{
			{"-n", n.netns, "link", "set", "lo", "up"},
			{"link", "add", "name", "eth0", "netns", n.netns, "type", "veth", "peer", "name", hubEnd, "netns", r.hub},
			{"-n", r.hub, "link", "set", hubEnd, "master", "br0", "up"},
			{"-n", n.netns, "addr", "add", n.ip + "/16", "dev", "eth0"},
			{"-n", n.netns, "link", "set", "eth0", "up"},
		} {
			if err := r.ip(ctx, s...); err != nil {
				return err
			}
		}
		if err := r.shape(ctx, n, "add", "1:"); err != nil {
			return err
		}
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			return err
		}
		r.nodes = append(r.nodes, n)
	}
	r.o.Logf("netns: %d nodes in namespaces %s0..%d, hub %s, data in %s", len(r.nodes), r.tag, len(r.nodes)-1, r.hub, dir)
	for i, bw := range r.bandwidth {
		if bw > 0 {
			r.o.Logf("netns: region %s: each node's link shaped to %d bit/s each way (tbf)", r.sc.Regions[i].Name, bw)
		}
	}
	return nil
}

// removeStaleNetns deletes the namespaces of runs whose process is gone.
func removeStaleNetns(ctx context.Context) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, netnsPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			// A run killed before its teardown leaves its daemons running
			// in its namespaces: stop them, or deleting the name leaves
			// them and their namespace alive.
			if pids, err := exec.CommandContext(ctx, "ip", "netns", "pids", name).Output(); err == nil {
				for _, f := range strings.Fields(string(pids)) {
					if p, err := strconv.Atoi(f); err == nil && p > 1 {
						_ = syscall.Kill(p, syscall.SIGKILL)
					}
				}
			}
			_ = exec.CommandContext(ctx, "ip", "netns", "del", name).Run()
		}
	}
}

// netnsDialer dials from inside the network namespace at path (inNetns).
func netnsDialer(path string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetns(path, func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// inNetns runs fn on an OS thread switched into the network namespace at
// path, so that the sockets fn makes belong to it. That thread stays
// locked and dies with its goroutine, so no other goroutine ever runs in
// the node's namespace.
func inNetns(path string, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		f, err := os.Open(path)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		done <- fn()
	}()
	return <-done
}

// start runs node n's daemon and waits until its API answers.
func (r *netnsRun) start(ctx context.Context, n *netnsNode) error {
	args := []string{"netns", "exec", n.netns, r.o.Binary, "daemon",
		"--data-dir", n.dir, "--listen", "/ip4/" + n.ip + "/tcp/4001", "--api", netnsAPI,
		"--namespace", netnsSpace, "--sync-interval", r.sc.SyncInterval.String(), "--log-format", "json"}
	if r.sc.MeshDegree > 0 {
		args = append(args, "--mesh-degree", strconv.Itoa(r.sc.MeshDegree))
	}
	if r.sc.MeshDegreeLow > 0 {
		args = append(args, "--mesh-degree-low", strconv.Itoa(r.sc.MeshDegreeLow))
	}
	if r.sc.FloodPublish {
		args = append(args, "--flood-publish")
	}
	if r.sc.PeerExchange {
		args = append(args, "--peer-exchange")
	}
	for _, j := range n.boot {
		b := r.nodes[j]
		if b.peerID != "" {
			args = append(args, "--bootstrap", "/ip4/"+b.ip+"/tcp/4001/p2p/"+b.peerID)
		}
	}
	logf, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("sim: start %s: %w", n.name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	n.mu.Lock()
	n.cmd, n.exited = cmd, exited
	n.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st struct {
			PeerID string `json:"peer_id"`
		}
		if err := n.getJSON(ctx, "/v1/status", &st); err == nil && st.PeerID != "" {
			n.peerID = st.PeerID
			break
		}
		select {
		case <-exited:
			return fmt.Errorf("sim: %s's daemon exited at start; its log: %s", n.name, tail(n.log))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sim: %s's API did not answer within 30 s; its log: %s", n.name, tail(n.log))
		}
	}
	n.up.Store(true)
	return nil
}

// kill SIGKILLs node n's daemon and waits for it to exit.
func (r *netnsRun) kill(n *netnsNode) {
	n.up.Store(false)
	n.mu.Lock()
	cmd, exited, stopWatch := n.cmd, n.exited, n.watchOf
	n.cmd, n.watchOf = nil, nil
	n.mu.Unlock()
	if stopWatch != nil {
		stopWatch()
	}
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	n.client.CloseIdleConnections()
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 800 {
		b = b[len(b)-800:]
	}
	return strings.TrimSpace(string(b))
}

func (n *netnsNode) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+netnsAPI+path, nil)
	if err != nil {
		return nil, err
	}
	return n.client.Do(req)
}

func (n *netnsNode) getJSON(ctx context.Context, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := n.get(ctx, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return &httpStatusError{path: path, status: resp.Status, code: resp.StatusCode, body: string(bytes.TrimSpace(b))}
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// httpStatusError is an answer other than 200 OK.
type httpStatusError struct {
	path, status, body string
	code               int
}

func (e *httpStatusError) Error() string {
	return fmt.Sprintf("GET %s: %s: %s", e.path, e.status, e.body)
}

// isNotFound reports whether err is a 404 answer (and not, say, a timeout
// on a path that happens to contain "404").
func isNotFound(err error) bool {
	var se *httpStatusError
	return errors.As(err, &se) && se.code == http.StatusNotFound
}

// watch records, for every register value node n shows on its watch
// stream (a map field's too: the workload's put values are unique), the
// first time it showed it; it reconnects until ctx ends, from
// the last event it got, so a dropped or cut-off stream loses no value (a
// node that lost its store refuses the old cursor: then from now).
func (r *netnsRun) watch(ctx context.Context, n *netnsNode) {
	defer r.bg.Done()
	last := ""
	for ctx.Err() == nil {
		path := "/v1/ns/" + netnsSpace + "/watch"
		if last != "" {
			path += "?from=" + url.QueryEscape(last)
		}
		resp, err := n.get(ctx, path)
		if err == nil && resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			if resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusGone {
				last = "" // the cursor is refused (a wiped node): from now
			}
		} else if err == nil {
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 4<<20)
			for sc.Scan() {
				line := sc.Text()
				if id, ok := strings.CutPrefix(line, "id: "); ok {
					last = id
					continue
				}

				data, ok := strings.CutPrefix(line, "data: ")
				if !ok {
					continue
				}
				var ev struct {
					Value  []byte `json:"value"`
					Fields map[string]struct {
						Register *string `json:"register"`
					} `json:"fields"`
				}
				if json.Unmarshal([]byte(data), &ev) != nil {
					continue
				}
				values := make([]string, 0, 1+len(ev.Fields))
				if len(ev.Value) > 0 {
					values = append(values, string(ev.Value))
				}
				for _, f := range ev.Fields {
					if f.Register != nil && *f.Register != "" {
						values = append(values, *f.Register)
					}
				}
				now := time.Now()
				r.arrMu.Lock()
				for _, v := range values {
					at := r.arrivals[v]
					if at == nil {
						at = make([]time.Time, len(r.nodes))
						r.arrivals[v] = at
					}
					if at[n.index].IsZero() {
						at[n.index] = now
					}
				}
				r.arrMu.Unlock()
			}
			resp.Body.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (r *netnsRun) startWatch(n *netnsNode) {
	wctx, cancel := context.WithCancel(r.bgCtx)
	n.mu.Lock()
	n.watchOf = cancel
	n.mu.Unlock()
	r.bg.Add(1)
	go r.watch(wctx, n)
}

// digests reads every running node's digest; down nodes are left out.
// complete is false when a running node did not answer: its replica was
// not compared, so the cluster cannot be called converged.
func (r *netnsRun) digests(ctx context.Context) (out map[int]string, complete bool) {
	var mu sync.Mutex
	out = make(map[int]string)
	complete = true
	var wg sync.WaitGroup
	for _, n := range r.nodes {
		if !n.up.Load() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var d struct {
				Digest string `json:"digest"`
			}
			err := n.getJSON(ctx, "/v1/ns/"+netnsSpace+"/digest", &d)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && n.up.Load():
				out[n.index] = d.Digest
			case n.up.Load():
				complete = false // still running, yet unread
			}
		}()
	}
	wg.Wait()
	return out, complete
}

func distinctOf(d map[int]string) int {
	seen := make(map[string]bool)
	for _, v := range d {
		seen[v] = true
	}
	return len(seen)
}

// play starts the nodes, runs the plan, and checks.
func (r *netnsRun) play(ctx context.Context, plan Plan, seed uint64) (*Report, error) {
	begin := time.Now()
	bgCtx, stop := context.WithCancel(ctx)
	r.bgCtx, r.stopBG = bgCtx, stop
	if err := r.startCapture(); err != nil {
		return nil, err
	}
	for _, n := range r.nodes {
		if err := r.start(ctx, n); err != nil {
			return nil, err
		}
	}
	if err := r.waitConnected(ctx); err != nil {
		return nil, err
	}
	r.o.Logf("netns: %d daemons up and connected; settling %v", len(r.nodes), r.sc.Settle)
	if err := sleep(ctx, r.sc.Settle); err != nil {
		return nil, err
	}
	for _, n := range r.nodes {
		r.startWatch(n)
	}
	t0 := time.Now()
	var samplesMu sync.Mutex
	var samples []Sample
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		lastProgress := time.Time{}
		for bgCtx.Err() == nil {
			d, complete := r.digests(bgCtx)
			now := time.Now()
			distinct := distinctOf(d)
			if !complete {
				distinct = max(distinct, 2) // not known to agree
			}
			samplesMu.Lock()
			samples = append(samples, Sample{TMS: ms(now.Sub(t0)), Distinct: distinct})
			samplesMu.Unlock()
			if r.o.Progress != nil && now.Sub(lastProgress) >= time.Second {
				lastProgress = now
				r.o.Progress(Progress{TMS: ms(now.Sub(t0)), Ops: int(r.ackedN.Load()), Distinct: distinctOf(d), Nodes: len(d)})
			}
			select {
			case <-bgCtx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()

	acks, quiet, maxLag, heals, err := r.drive(ctx, plan, t0)
	if err != nil {
		return nil, err
	}
	rep := &Report{Scenario: r.sc.Name, Seed: seed, Nodes: len(r.nodes), Backend: "netns", ConvergenceMS: -1, MaxLagMS: ms(maxLag)}

	// Convergence: every running node's digest equal, polled from the
	// quiet point.
	deadline := quiet.Add(r.sc.Expect.ConvergeWithin)
	late := !time.Now().Before(deadline) // faults ran on past the budget
	for {
		d, complete := r.digests(ctx)
		if complete && len(d) > 0 && distinctOf(d) == 1 {
			rep.Converged = true
			at := time.Now()
			if late {
				samplesMu.Lock()
				at = convergedAt(samples, t0, at)
				samplesMu.Unlock()
			}
			rep.ConvergenceMS = ms(max(at.Sub(quiet), 0))
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			break
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	r.finish(ctx, rep, acks, heals, t0)
	stop()
	r.bg.Wait()
	rep.Divergence = samples
	rep.FaultWindows = r.sc.faultWindows(plan.Faults)
	rep.SimulatedMS = ms(time.Since(begin))
	crossed := r.crossed.Load()
	rep.CrossedCut = &crossed
	if r.captured.Load() == 0 {
		return nil, errors.New("sim: the hub's packet socket saw no packet: it cannot vouch for the cuts")
	}
	rep.Failures = judge(rep, r.sc.Expect)
	rep.Passed = len(rep.Failures) == 0
	return rep, nil
}

// waitConnected waits until every node is connected to a peer, for at
// most 30 s. Status lists peers that left too (those it synced with),
// marked not connected.
func (r *netnsRun) waitConnected(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		lonely := 0
		for _, n := range r.nodes {
			var st struct {
				Peers []struct {
					Connected bool `json:"connected"`
				} `json:"peers"`
			}
			err := n.getJSON(ctx, "/v1/status", &st)
			connected := false
			for _, p := range st.Peers {
				connected = connected || p.Connected
			}
			if err != nil || !connected {
				lonely++
			}
		}
		if lonely == 0 || len(r.nodes) == 1 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sim: %d nodes still without a peer after 30 s", lonely)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// healAt is a heal or a restart and when it happened.
type healAt struct {
	at    time.Time
	fault Fault
}

// drive runs the ops and faults at their planned times (a fault before an
// op planned for the same instant) and returns every op's outcome and the
// quiet point: the later of the last answer and the last heal or restart.
func (r *netnsRun) drive(ctx context.Context, plan Plan, t0 time.Time) (acks []netnsAck, quiet time.Time, maxLag time.Duration, heals []healAt, err error) {
	acks = make([]netnsAck, len(plan.Ops))
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	defer wg.Wait()
	fi := 0
	applyDue := func(until time.Duration) error {
		for fi < len(plan.Faults) && plan.Faults[fi].At <= until {
			f := plan.Faults[fi]
			fi++
			if err := sleep(ctx, time.Until(t0.Add(f.At))); err != nil {
				return err
			}
			if err := r.apply(ctx, f); err != nil {
				return err
			}
			r.o.Logf("netns: %6.1f s  %s", time.Since(t0).Seconds(), f.describe())
			if f.Kind == Heal || f.Kind == Restart {
				heals = append(heals, healAt{time.Now(), f})
			}
		}
		return nil
	}
	for i, op := range plan.Ops {
		if err := applyDue(op.At); err != nil {
			return nil, time.Time{}, 0, nil, err
		}
		if err := sleep(ctx, time.Until(t0.Add(op.At))); err != nil {
			return nil, time.Time{}, 0, nil, err
		}
		maxLag = max(maxLag, time.Since(t0.Add(op.At)))
		n := r.nodes[op.Node]
		if !n.up.Load() {
			acks[i] = netnsAck{op: op, state: skipped}
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			acks[i] = r.do(ctx, n, op)
			if acks[i].state == acked {
				r.ackedN.Add(1)
			}
		}()
	}
	if err := applyDue(1<<62 - 1); err != nil {
		return nil, time.Time{}, 0, nil, err
	}
	wg.Wait()
	for _, a := range acks {
		if a.at.After(quiet) {
			quiet = a.at
		}
	}
	for _, h := range heals {
		if h.at.After(quiet) {
			quiet = h.at
		}
	}
	if quiet.IsZero() {
		quiet = time.Now()
	}
	return acks, quiet, maxLag, heals, nil
}

// do sends one op to node n's API.
func (r *netnsRun) do(ctx context.Context, n *netnsNode, op Op) netnsAck {
	var method, path string
	var body []byte
	key := url.PathEscape(op.Key)
	switch op.Kind {
	case OpPut:
		method, path, body = http.MethodPut, "/kv/"+key, []byte(op.Value)
	case OpDelete:
		method, path = http.MethodDelete, "/kv/"+key
	case OpCounterAdd:
		method, path = http.MethodPost, "/counter/"+key
		body, _ = json.Marshal(map[string]int64{"add": op.Amount})
	case OpSetAdd:
		method, path = http.MethodPost, "/set/"+key
		body, _ = json.Marshal(map[string][]string{"add": {op.Value}})
	case OpSetRemove:
		method, path = http.MethodPost, "/set/"+key
		body, _ = json.Marshal(map[string][]string{"remove": {op.Value}})
	case OpMapPut:
		method, path = http.MethodPost, "/map/"+key
		body, _ = json.Marshal(map[string]string{"field": op.Field, "put": op.Value})
	case OpMapDelete:
		method, path = http.MethodPost, "/map/"+key
		body, _ = json.Marshal(map[string]any{"field": op.Field, "delete": true})
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+netnsAPI+"/v1/ns/"+netnsSpace+path, bytes.NewReader(body))
	if err != nil {
		return netnsAck{op: op, state: refused, at: time.Now()}
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return netnsAck{op: op, state: unknown, at: time.Now()}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	a := netnsAck{op: op, state: acked, at: time.Now()}
	if resp.StatusCode/100 != 2 {
		a.state = refused
	}
	return a
}

// apply carries out one fault.
func (r *netnsRun) apply(ctx context.Context, f Fault) error {
	idx := r.sc.nodeIndex()
	switch f.Kind {
	case Partition, Isolate:
		groups := r.sc.cutGroups(f)
		kind := "blackhole"
		if f.mode() == Disconnect {
			kind = "prohibit"
		}
		r.cutMu.Lock()
		defer r.cutMu.Unlock()
		for gi, g := range groups {
			for hi, h := range groups {
				if gi == hi {
					continue
				}
				for _, a := range g {
					for _, b := range h {
						route := []string{"-n", r.nodes[a].netns, "route", "add", kind, r.nodes[b].ip + "/32"}
						if err := r.ip(ctx, route...); err != nil {
							return err
						}
						undo := slices.Clone(route)
						undo[3] = "del"
						r.routes = append(r.routes, undo)
					}
				}
			}
		}
		// Count crossings from now on: every route is in place, and
		// nothing routed before them waits in a token bucket.
		sides := make(map[[4]byte]int)
		var cut []int
		for gi, g := range groups {
			for _, a := range g {
				sides[ipv4(r.nodes[a].ip)] = gi
				cut = append(cut, a)
			}
		}
		if err := r.dropQueued(ctx, cut); err != nil {
			return err
		}
		r.startCut(sides, time.Now())
	case Heal:
		r.cutMu.Lock()
		defer r.cutMu.Unlock()
		r.endCuts(time.Now()) // before any route goes
		for _, undo := range r.routes {
			if err := r.ip(ctx, undo...); err != nil {
				return err
			}
		}
		r.routes = nil
	case Crash:
		n := r.nodes[idx[f.Node]]
		r.kill(n)
		n.crashes = append(n.crashes, time.Now())
		if f.wipes() {
			if err := os.RemoveAll(filepath.Join(n.dir, "store")); err != nil {
				return err
			}
			n.wipedAt = time.Now()
		}
	case Restart:
		n := r.nodes[idx[f.Node]]
		if err := r.start(ctx, n); err != nil {
			return err
		}
		r.startWatch(n)
	default:
		// ValidateNetns refuses every other kind.
		return fmt.Errorf("sim: netns backend cannot apply %s", f.Kind)
	}
	return nil
}

// finish reads every running node's final state and fills in lost writes,
// propagation, traffic and per-region detail.
func (r *netnsRun) finish(ctx context.Context, rep *Report, acks []netnsAck, heals []healAt, t0 time.Time) {
	r.arrMu.Lock()
	arrivals := make(map[string][]time.Time, len(r.arrivals))
	for k, v := range r.arrivals {
		arrivals[k] = slices.Clone(v)
	}
	r.arrMu.Unlock()
	// An op acknowledged by a node that later lost its store counts as
	// unknown unless another node showed it before the wipe.
	lenient := func(a netnsAck) bool {
		n := r.nodes[a.op.Node]
		if n.wipedAt.IsZero() || a.at.After(n.wipedAt) {
			return false
		}
		if a.op.Kind == OpPut || a.op.Kind == OpMapPut {
			for i, t := range arrivals[a.op.Value] {
				if i != a.op.Node && !t.IsZero() && t.Before(n.wipedAt) {
					return false
				}
			}
		}
		return true
	}
	for _, a := range acks {
		switch a.state {
		case acked:
			rep.Ops++
			// Only a put (a map field's too) can be shown lost (no
			// other node ever showed its value); counter and set ops of
			// a wiped node are just not required.
			if (a.op.Kind == OpPut || a.op.Kind == OpMapPut) && lenient(a) {
				rep.LostOnWiped++
			}
		case refused:
			rep.FailedOps++
		case skipped, unknown:
			rep.SkippedOps++
		}
	}
	e := expect(acks, lenient)
	keys := map[OpKind]map[string]bool{OpPut: {}, OpCounterAdd: {}, OpSetAdd: {}, OpMapPut: {}}
	for _, a := range acks {
		kind := a.op.Kind
		switch kind {
		case OpDelete:
			kind = OpPut
		case OpSetRemove:
			kind = OpSetAdd
		case OpMapDelete:
			kind = OpMapPut
		}
		keys[kind][a.op.Key] = true
	}
	var live []int
	for _, n := range r.nodes {
		if !n.up.Load() {
			continue
		}
		live = append(live, n.index)
		st, err := r.readState(ctx, n, keys)
		if err != nil {
			rep.LostWrites++
			rep.Lost = append(rep.Lost, LostWrite{Node: n.name, Reason: "read error: " + err.Error()})
			continue
		}
		lost := e.check(n.name, st)
		rep.LostWrites += len(lost)
		for _, l := range lost {
			if len(rep.Lost) < maxLostListed {
				rep.Lost = append(rep.Lost, l)
			}
		}
	}
	// Propagation, over acknowledged puts every live node showed: from the
	// answer to the last live node showing the value. A put some live node
	// never showed is left out here, and for that node in the recovery
	// times below, not counted as unpropagated: a value overwritten at once
	// may never appear on a watch stream (an event carries the key's value
	// when it is sent), and this backend sees values, not dots. Loss is the final-state
	// checker's to find.
	var all []time.Duration
	pairs := make(map[[2]int][]time.Duration)
	for _, a := range acks {
		if a.state != acked || a.op.Kind != OpPut || lenient(a) {
			continue
		}
		at := arrivals[a.op.Value]
		if at == nil {
			continue
		}
		var worst time.Duration
		byRegion := make(map[int]time.Duration)
		complete := true
		for _, i := range live {
			if at[i].IsZero() {
				complete = false
				break
			}
			d := max(at[i].Sub(a.at), 0)
			worst = max(worst, d)
			reg := r.nodes[i].region
			byRegion[reg] = max(byRegion[reg], d)
		}
		if !complete {
			continue
		}
		all = append(all, worst)
		from := r.nodes[a.op.Node].region
		for reg, d := range byRegion {
			pairs[[2]int{from, reg}] = append(pairs[[2]int{from, reg}], d)
		}
	}
	rep.Propagation = percentiles(all)
	// Recovery after each heal and restart: until every live node showed
	// every put acknowledged before it (puts: their values are unique). A
	// node killed between the heal and a value's arrival is left out for
	// that value: what it shows after its restart is its own recovery.
	crashedBetween := func(i int, from, to time.Time) bool {
		for _, c := range r.nodes[i].crashes {
			if c.After(from) && c.Before(to) {
				return true
			}
		}
		return false
	}
	names := make([]string, len(r.nodes))
	isLive := make([]bool, len(r.nodes))
	for i, n := range r.nodes {
		names[i] = n.name
	}
	for _, i := range live {
		isLive[i] = true
	}
	for _, h := range heals {
		hr := HealReport{AtMS: ms(h.at.Sub(t0)), Fault: h.fault.describe()}
		latest := make([]int64, len(r.nodes))
		for _, a := range acks {
			if a.state != acked || a.op.Kind != OpPut || !a.at.Before(h.at) || lenient(a) {
				continue
			}
			at := arrivals[a.op.Value]
			for _, i := range live {
				if at != nil && !at[i].IsZero() && !crashedBetween(i, h.at, at[i]) {
					latest[i] = max(latest[i], int64(at[i].Sub(h.at)))
				}
			}
		}
		nodeRecovery(&hr, isLive, nil, latest, names)
		rep.Heals = append(rep.Heals, hr)
	}
	for from := range r.sc.Regions {
		for to := range r.sc.Regions {
			if ds := pairs[[2]int{from, to}]; len(ds) > 0 {
				rep.PropagationByPair = append(rep.PropagationByPair, PairPropagation{From: r.sc.Regions[from].Name, To: r.sc.Regions[to].Name, Percentiles: percentiles(ds)})
			}
		}
	}
	// Traffic: what each node's interface sent (TCP: gossip, sync and
	// transport control together).
	for _, n := range r.nodes {
		out, err := exec.CommandContext(ctx, "ip", "-n", n.netns, "-s", "-j", "link", "show", "eth0").Output()
		if err != nil {
			continue
		}
		var links []struct {
			Stats struct {
				TX struct {
					Bytes   int64 `json:"bytes"`
					Packets int64 `json:"packets"`
				} `json:"tx"`
			} `json:"stats64"`
		}
		if json.Unmarshal(out, &links) == nil && len(links) == 1 {
			rep.Messages += links[0].Stats.TX.Packets
			rep.Bytes += links[0].Stats.TX.Bytes
		}
	}
	if rep.Ops > 0 {
		rep.Cost.MessagesPerOp = float64(rep.Messages) / float64(rep.Ops)
		rep.Cost.BytesPerOp = float64(rep.Bytes) / float64(rep.Ops)
	}
	for ri, reg := range r.sc.Regions {
		rr := RegionReport{Name: reg.Name, Nodes: reg.Nodes}
		for _, n := range r.nodes {
			if n.region == ri && n.up.Load() {
				rr.Live++
			}
		}
		for _, a := range acks {
			if a.state == acked && r.nodes[a.op.Node].region == ri {
				rr.Ops++
			}
		}
		rep.Regions = append(rep.Regions, rr)
	}
}

// readState reads the keys the workload touched from node n's API.
func (r *netnsRun) readState(ctx context.Context, n *netnsNode, keys map[OpKind]map[string]bool) (nodeState, error) {
	st := nodeState{registers: map[string]string{}, counters: map[string]int64{}, sets: map[string][]string{}}
	base := "/v1/ns/" + netnsSpace
	for k := range keys[OpPut] {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := n.get(rctx, base+"/kv/"+url.PathEscape(k))
		if err != nil {
			cancel()
			return st, err
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 2<<20))
		resp.Body.Close()
		cancel()
		switch resp.StatusCode {
		case http.StatusOK:
			st.registers[k] = string(b)
		case http.StatusNotFound:
		default:
			return st, fmt.Errorf("GET kv/%s: %s", k, resp.Status)
		}
	}
	for k := range keys[OpCounterAdd] {
		var c struct {
			Value int64 `json:"value"`
		}
		if err := n.getJSON(ctx, base+"/counter/"+url.PathEscape(k), &c); err != nil && !isNotFound(err) {
			return st, err
		}
		st.counters[k] = c.Value
	}
	for k := range keys[OpSetAdd] {
		var s struct {
			Elements []string `json:"elements"`
		}
		if err := n.getJSON(ctx, base+"/set/"+url.PathEscape(k), &s); err != nil && !isNotFound(err) {
			return st, err
		}
		if len(s.Elements) > 0 {
			st.sets[k] = s.Elements
		}
	}
	for k := range keys[OpMapPut] {
		var m struct {
			Fields map[string]struct {
				Register       *string `json:"register"`
				RegisterBase64 []byte  `json:"register_base64"`
			} `json:"fields"`
		}
		if err := n.getJSON(ctx, base+"/map/"+url.PathEscape(k), &m); err != nil && !isNotFound(err) {
			return st, err
		}
		for field, f := range m.Fields {
			switch {
			case f.Register != nil:
				st.registers[mapFieldKey(k, field)] = *f.Register
			case f.RegisterBase64 != nil:
				st.registers[mapFieldKey(k, field)] = string(f.RegisterBase64)
			}
		}
	}
	return st, nil
}

// startCapture opens a packet socket in the hub namespace, on an OS thread
// switched into it (and left to die with its goroutine), and counts every
// IPv4 packet the bridge delivers to a node's port, and those between two
// nodes a standing cut separates. Each forwarded frame is seen leaving its
// destination port once (PACKET_OUTGOING).
func (r *netnsRun) startCapture() error {
	ready := make(chan error, 1)
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		runtime.LockOSThread() // never unlocked: see above
		f, err := os.Open("/var/run/netns/" + r.hub)
		if err != nil {
			ready <- err
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			ready <- fmt.Errorf("sim: setns %s: %w", r.hub, err)
			return
		}
		// ETH_P_ALL: only taps for every protocol see frames sent, and a
		// frame forwarded to a port is sent on it.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			ready <- fmt.Errorf("sim: packet socket in %s: %w", r.hub, err)
			return
		}
		defer unix.Close(fd)
		// A timeout, so the loop sees the end of the run.
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200_000}); err != nil {
			ready <- err
			return
		}
		// The kernel's time for each frame: the loop reads frames some
		// time after they pass, and one that passed just before a cut
		// was counted as crossing it (a CI run failed on one).
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
			ready <- fmt.Errorf("sim: packet timestamps in %s: %w", r.hub, err)
			return
		}
		ready <- nil
		buf := make([]byte, 64<<10)
		oob := make([]byte, 256)
		for r.bgCtx.Err() == nil {
			n, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, unix.MSG_TRUNC)
			if err != nil {
				continue // timeout or interrupted: look at the context again
			}
			ll, ok := from.(*unix.SockaddrLinklayer)
			if !ok || ll.Pkttype != unix.PACKET_OUTGOING || ll.Protocol != htons(unix.ETH_P_IP) {
				continue
			}
			ip, crossed := crossing(buf[:min(n, len(buf))], r.cutAt(frameTime(oob[:oobn])))
			if ip {
				r.captured.Add(1)
			}
			if crossed {
				r.crossed.Add(1)
			}
		}
	}()
	return <-ready
}

// standingCut is a cut made by a partition or isolation: sides maps each
// separated node's address to its group; it stood from the moment every
// route was in place until to (zero: still standing).
type standingCut struct {
	sides    map[[4]byte]int
	from, to time.Time
}

// cutGrace is how long after a cut's routes are in place a frame may still
// pass that was routed before them (in flight through the veth pair and
// the bridge). What a shaped node's token buckets held is dropped at the
// cut (dropQueued), or it would pass up to 500 ms later.
const cutGrace = 10 * time.Millisecond

// startCut records a cut standing from the moment from.
func (r *netnsRun) startCut(sides map[[4]byte]int, from time.Time) {
	r.cutsMu.Lock()
	r.cuts = append(r.cuts, standingCut{sides: sides, from: from})
	r.cutsMu.Unlock()
}

// endCuts ends every standing cut at the moment at.
func (r *netnsRun) endCuts(at time.Time) {
	r.cutsMu.Lock()
	for i := range r.cuts {
		if r.cuts[i].to.IsZero() {
			r.cuts[i].to = at
		}
	}
	r.cutsMu.Unlock()
}

// cutAt returns the sides of the cut that stood at t, nil if none.
func (r *netnsRun) cutAt(t time.Time) map[[4]byte]int {
	r.cutsMu.Lock()
	defer r.cutsMu.Unlock()
	for _, c := range r.cuts {
		if !t.Before(c.from.Add(cutGrace)) && (c.to.IsZero() || t.Before(c.to)) {
			return c.sides
		}
	}
	return nil
}

// frameTime returns the kernel's timestamp from a packet socket's control
// messages, or now if there is none.
func frameTime(oob []byte) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err == nil {
		for _, m := range msgs {
			var ts unix.Timespec
			if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(ts)) {
				copy(unsafe.Slice((*byte)(unsafe.Pointer(&ts)), unsafe.Sizeof(ts)), m.Data)
				return time.Unix(ts.Unix())
			}
		}
	}
	return time.Now()
}

// htons is x in network byte order.
func htons(x uint16) uint16 { return x<<8 | x>>8 }

func ipv4(s string) [4]byte {
	ip := net.ParseIP(s).To4()
	return [4]byte(ip)
}

// teardown kills every daemon and deletes every namespace and file the
// run made.
func (r *netnsRun) teardown() {
	if r.stopBG != nil {
		r.stopBG()
	}
	for _, n := range r.nodes {
		r.kill(n)
	}
	r.bg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range r.made {
		if err := r.ip(ctx, "netns", "del", name); err != nil {
			r.o.Logf("netns: %v", err)
		}
	}
	if r.dir != "" {
		_ = os.RemoveAll(r.dir)
	}
}
