package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Result is one run's parameters and figures, written as one JSON line.
// Figures that a workload does not measure are left out of its line.
type Result struct {
	System string `json:"system"`
	Params
	// Started is when the run began (UTC).
	Started time.Time `json:"started"`
	// GoVersion and CPUs describe where it ran.
	GoVersion string `json:"go"`
	CPUs      int    `json:"cpus"`

	// PutsPerS is acknowledged puts per second on the writing nodes:
	// keys / time from the first put until the last acknowledgement.
	PutsPerS float64 `json:"puts_per_s,omitempty"`
	// PutP50MS and PutP99MS are put latencies (call to acknowledgement).
	PutP50MS float64 `json:"put_p50_ms,omitempty"`
	PutP99MS float64 `json:"put_p99_ms,omitempty"`
	// ConvergenceS is the time from the first put until every node holds
	// every key (late-joiner: from the join).
	ConvergenceS float64 `json:"convergence_s,omitempty"`
	// ReplicatedPerS is keys / ConvergenceS.
	ReplicatedPerS float64 `json:"replicated_puts_per_s,omitempty"`
	// PropP50MS and PropP99MS are percentiles, over every key, of the time
	// from its acknowledgement until it is visible on every other node.
	PropP50MS float64 `json:"prop_p50_ms,omitempty"`
	PropP99MS float64 `json:"prop_p99_ms,omitempty"`
	// BytesPerKey is the libp2p stream bytes all nodes sent during the
	// measured phase, per key.
	BytesPerKey float64 `json:"bytes_per_key,omitempty"`
	// BytesPerKeyByProtocol splits BytesPerKey by libp2p protocol id.
	BytesPerKeyByProtocol map[string]float64 `json:"bytes_per_key_by_protocol,omitempty"`
	// DupFactor is the gossip data copies the nodes received per message
	// delivered (Traffic.GossipCopies / GossipFirst) during the measured
	// phase: 1 when each node got each message once; how much of
	// BytesPerKey duplicates cost. Left out for a system whose data does
	// not travel as gossip.
	DupFactor float64 `json:"dup_factor,omitempty"`
	// FloorBytesPerKey is what delivering each key and value once to every
	// node that lacks it costs: receivers × (key + value) bytes.
	FloorBytesPerKey float64 `json:"floor_bytes_per_key,omitempty"`
	// HealS is the time from the heal until the cut-off node holds every
	// key (partition-heal).
	HealS float64 `json:"heal_s,omitempty"`
	// HealBytes is what the cut-off node received from the heal until it
	// held every key.
	HealBytes int64 `json:"heal_bytes,omitempty"`
	// KeysPerS is the late joiner's keys received per second.
	KeysPerS float64 `json:"keys_per_s,omitempty"`
	// AchievedPerS is the sustained workload's acknowledged puts per
	// second of offered load.
	AchievedPerS float64 `json:"achieved_puts_per_s,omitempty"`
	// Timeline is the sustained workload's propagation per second.
	Timeline []Interval `json:"timeline,omitempty"`
	// CPUS is the process's CPU seconds during the measured phase.
	CPUS float64 `json:"cpu_s"`
	// RSSPeakMiB is the process's peak resident memory during the run.
	RSSPeakMiB float64 `json:"rss_peak_mib"`
}

// Interval is one second of the sustained workload.
type Interval struct {
	// T is the second's start, from the workload's start.
	T int `json:"t_s"`
	// Acked is how many puts were acknowledged in it.
	Acked int `json:"acked"`
	// PropP50MS and PropP99MS cover the keys acknowledged in it.
	PropP50MS float64 `json:"prop_p50_ms"`
	PropP99MS float64 `json:"prop_p99_ms"`
}

// Missing returns the figures r's workload measures that are zero: a run
// that lacks one did not measure what it claims.
func (r *Result) Missing() []string {
	var out []string
	need := func(name string, v float64) {
		if !(v > 0) {
			out = append(out, name)
		}
	}
	switch r.Workload {
	case SingleWriter, MultiWriter:
		need("puts_per_s", r.PutsPerS)
		need("put_p50_ms", r.PutP50MS)
		need("put_p99_ms", r.PutP99MS)
		need("convergence_s", r.ConvergenceS)
		need("replicated_puts_per_s", r.ReplicatedPerS)
		need("prop_p50_ms", r.PropP50MS)
		need("prop_p99_ms", r.PropP99MS)
	case PartitionHeal:
		need("puts_per_s", r.PutsPerS)
		need("heal_s", r.HealS)
		need("heal_bytes", float64(r.HealBytes))
		need("convergence_s", r.ConvergenceS)
	case LateJoiner:
		need("keys_per_s", r.KeysPerS)
		need("convergence_s", r.ConvergenceS)
	case Sustained:
		need("achieved_puts_per_s", r.AchievedPerS)
		need("prop_p50_ms", r.PropP50MS)
		need("prop_p99_ms", r.PropP99MS)
		need("timeline", float64(len(r.Timeline)))
	}
	need("bytes_per_key", r.BytesPerKey)
	need("floor_bytes_per_key", r.FloorBytesPerKey)
	need("cpu_s", r.CPUS)
	need("rss_peak_mib", r.RSSPeakMiB)
	return out
}

// Run starts sys with p, runs p's workload, checks that every node holds
// every key, and returns the figures. An error means the run failed: bad
// parameters, a node that did not converge in time, or a node whose own
// key count disagrees with what it reported.
func Run(ctx context.Context, sys System, p Params) (_ *Result, err error) {
	p = p.WithDefaults()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	r := &run{
		p:     p,
		keys:  newTracker(p.N+1, expectedKeys(p)),
		warm:  newTracker(p.N+1, 0),
		value: make([]byte, p.ValueSize),
		res: &Result{
			System: sys.Name(), Params: p, Started: time.Now().UTC(),
			GoVersion: runtime.Version(), CPUs: runtime.NumCPU(),
		},
	}
	r.warm.prefix = warmPrefix
	for i := range r.value {
		r.value[i] = byte('a' + i%26)
	}
	r.rsrc = startResources()
	hooks := Hooks{Visible: func(node int, key string) {
		if strings.HasPrefix(key, warmPrefix) {
			r.warm.visible(node, key)
		} else {
			r.keys.visible(node, key)
		}
	}}
	c, err := sys.Start(ctx, p, hooks)
	if err != nil {
		r.rsrc.finish()
		return nil, fmt.Errorf("bench: start %s: %w", sys.Name(), err)
	}
	r.c = c
	defer func() {
		if cerr := c.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("bench: close: %w", cerr)
		}
	}()
	r.live = p.N
	if err := r.warmUp(ctx); err != nil {
		r.rsrc.finish()
		return nil, err
	}
	switch p.Workload {
	case SingleWriter:
		err = r.writers(ctx, []int{0})
	case MultiWriter:
		all := make([]int, p.N)
		for i := range all {
			all[i] = i
		}
		err = r.writers(ctx, all)
	case PartitionHeal:
		err = r.partitionHeal(ctx)
	case LateJoiner:
		err = r.lateJoiner(ctx)
	case Sustained:
		err = r.sustained(ctx)
	}
	r.res.RSSPeakMiB = r.rsrc.finish()
	if err != nil {
		return nil, err
	}
	if err := r.verify(ctx); err != nil {
		return nil, err
	}
	return r.res, nil
}

// expectedKeys is how many keys p's workload writes.
func expectedKeys(p Params) int {
	if p.Workload == Sustained {
		return int(p.Rate*time.Duration(p.Duration).Seconds()) + 1
	}
	return p.K
}

// warmPrefix starts the warm-up keys, which are not part of any figure.
const warmPrefix = "warm-"

type run struct {
	p     Params
	c     Cluster
	keys  *tracker
	warm  *tracker
	value []byte
	res   *Result
	rsrc  *resources
	live  int // nodes started so far
	warms int // warm-up keys written
}

func (r *run) timeout() time.Duration { return time.Duration(r.p.Timeout) }

func (r *run) nodes(from, to int) []int {
	out := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// warmUp writes a key on every node and waits until every node has all of
// them, in rounds a quarter of a second apart, until a round completes
// within a second and at least minWarmUp has passed (at most 40 rounds):
// by then connections, gossip meshes and any lazy set-up are in place, for
// every system alike.
func (r *run) warmUp(ctx context.Context) error {
	all := r.nodes(0, r.p.N)
	begin := time.Now()
	for round := range 40 {
		start := time.Now()
		for _, n := range all {
			key := fmt.Sprintf("%s%d-%d", warmPrefix, round, n)
			if err := r.c.Put(ctx, n, key, []byte("warm")); err != nil {
				return fmt.Errorf("bench: warm-up put on node %d: %w", n, err)
			}
			r.warm.acked(n, key, time.Now())
			r.warms++
		}
		if _, err := r.warm.waitFull(ctx, all, r.warms, r.timeout()); err != nil {
			return fmt.Errorf("bench: warm-up: %w", err)
		}
		if time.Since(start) < time.Second && time.Since(begin) >= minWarmUp {
			return nil
		}
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// minWarmUp is the least warm-up. A round of warm-up keys can complete in
// milliseconds, before gossipsub's first heartbeats have built its meshes
// (100 ms after start, then every second); measured writes should find
// gossip in its steady state. (Bytes per key at mesh degree 2 still vary
// from run to run after it: 618–1,395 in six runs of `mycel bench -n 5 -k
// 1000`.)
const minWarmUp = 2500 * time.Millisecond

// key names node's i-th key.
func key(node, i int) string { return fmt.Sprintf("%s%02d-%08d", keyPrefix, node, i) }

// put writes one key on node and records its acknowledgement.
func (r *run) put(ctx context.Context, node int, k string) (time.Duration, error) {
	t0 := time.Now()
	if err := r.c.Put(ctx, node, k, r.value); err != nil {
		return 0, fmt.Errorf("bench: put %s on node %d: %w", k, node, err)
	}
	now := time.Now()
	r.keys.acked(node, k, now)
	return now.Sub(t0), nil
}

// writeAll has every node in writers put its share of K keys, from
// p.Writers concurrent callers each, and returns the put latencies.
func (r *run) writeAll(ctx context.Context, writers []int) ([]time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu   sync.Mutex
		lats = make([]time.Duration, 0, r.p.K)
		errs []error
		wg   sync.WaitGroup
	)
	for wi, n := range writers {
		share := r.p.K / len(writers)
		if wi < r.p.K%len(writers) {
			share++
		}
		var next atomic.Int64
		for range r.p.Writers {
			wg.Go(func() {
				var mine []time.Duration
				for {
					i := int(next.Add(1))
					if i > share || ctx.Err() != nil {
						break
					}
					d, err := r.put(ctx, n, key(n, i))
					if err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
						cancel()
						break
					}
					mine = append(mine, d)
				}
				mu.Lock()
				lats = append(lats, mine...)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	return lats, errors.Join(errs...)
}

// sent sums what every live node has sent, in total and per protocol.
func (r *run) sent() Traffic {
	t := Traffic{SentByProtocol: make(map[string]int64)}
	for i := range r.live {
		n := r.c.Traffic(i)
		t.Sent += n.Sent
		t.GossipFirst += n.GossipFirst
		t.GossipCopies += n.GossipCopies
		for p, b := range n.SentByProtocol {
			t.SentByProtocol[p] += b
		}
	}
	return t
}

// bytesSince sets the bytes-per-key figures from what was sent since t0.
func (r *run) bytesSince(t0 Traffic, keys int) {
	t := r.sent()
	r.res.BytesPerKey = float64(t.Sent-t0.Sent) / float64(keys)
	if first := t.GossipFirst - t0.GossipFirst; first > 0 {
		r.res.DupFactor = float64(t.GossipCopies-t0.GossipCopies) / float64(first)
	}
	r.res.BytesPerKeyByProtocol = make(map[string]float64)
	for p, b := range t.SentByProtocol {
		if d := b - t0.SentByProtocol[p]; d > 0 {
			r.res.BytesPerKeyByProtocol[p] = float64(d) / float64(keys)
		}
	}
}

func (r *run) keyBytes() float64 { return float64(len(key(0, 0)) + r.p.ValueSize) }

// writers runs single-writer and multi-writer.
func (r *run) writers(ctx context.Context, writers []int) error {
	all := r.nodes(0, r.p.N)
	bytes0, cpu0 := r.sent(), cpuTime()
	start := time.Now()
	lats, err := r.writeAll(ctx, writers)
	if err != nil {
		return err
	}
	acked := time.Since(start)
	end, err := r.keys.waitFull(ctx, all, r.p.K, r.timeout())
	if err != nil {
		return err
	}
	r.res.CPUS = (cpuTime() - cpu0).Seconds()
	conv := end.Sub(start).Seconds()
	r.res.PutsPerS = float64(r.p.K) / acked.Seconds()
	r.res.PutP50MS = percentile(lats, 0.50)
	r.res.PutP99MS = percentile(lats, 0.99)
	r.res.ConvergenceS = conv
	r.res.ReplicatedPerS = float64(r.p.K) / conv
	d, _ := r.keys.delays(all)
	r.res.PropP50MS = percentile(d, 0.50)
	r.res.PropP99MS = percentile(d, 0.99)
	r.bytesSince(bytes0, r.p.K)
	r.res.FloorBytesPerKey = float64(r.p.N-1) * r.keyBytes()
	return nil
}

// partitionHeal cuts the last node off, writes K keys on node 0, waits for
// the rest to hold them, heals, and times the cut-off node's catch-up.
func (r *run) partitionHeal(ctx context.Context) error {
	cut := r.p.N - 1
	if err := r.c.Isolate(ctx, cut); err != nil {
		return fmt.Errorf("bench: isolate node %d: %w", cut, err)
	}
	bytes0, cpu0 := r.sent(), cpuTime()
	start := time.Now()
	lats, err := r.writeAll(ctx, []int{0})
	if err != nil {
		return err
	}
	acked := time.Since(start)
	if _, err := r.keys.waitFull(ctx, r.nodes(0, cut), r.p.K, r.timeout()); err != nil {
		return err
	}
	if got := r.keys.count(cut); got != 0 {
		return fmt.Errorf("bench: node %d saw %d keys while cut off: the partition leaks", cut, got)
	}
	in0 := r.c.Traffic(cut).Received
	healed := time.Now()
	if err := r.c.Rejoin(ctx, cut); err != nil {
		return fmt.Errorf("bench: rejoin node %d: %w", cut, err)
	}
	end, err := r.keys.waitFull(ctx, []int{cut}, r.p.K, r.timeout())
	if err != nil {
		return err
	}
	r.res.CPUS = (cpuTime() - cpu0).Seconds()
	r.res.PutsPerS = float64(r.p.K) / acked.Seconds()
	r.res.PutP50MS = percentile(lats, 0.50)
	r.res.PutP99MS = percentile(lats, 0.99)
	r.res.HealS = end.Sub(healed).Seconds()
	r.res.HealBytes = r.c.Traffic(cut).Received - in0
	r.res.ConvergenceS = end.Sub(start).Seconds()
	r.bytesSince(bytes0, r.p.K)
	r.res.FloorBytesPerKey = float64(r.p.N-1) * r.keyBytes()
	return nil
}

// lateJoiner fills the cluster with K keys, then starts an empty node and
// times how fast it receives them.
func (r *run) lateJoiner(ctx context.Context) error {
	if _, err := r.writeAll(ctx, []int{0}); err != nil {
		return err
	}
	if _, err := r.keys.waitFull(ctx, r.nodes(0, r.p.N), r.p.K, r.timeout()); err != nil {
		return err
	}
	bytes0, cpu0 := r.sent(), cpuTime()
	start := time.Now()
	j, err := r.c.Join(ctx)
	if err != nil {
		return fmt.Errorf("bench: join: %w", err)
	}
	if j != r.p.N {
		return fmt.Errorf("bench: joiner got index %d, want %d", j, r.p.N)
	}
	r.live = r.p.N + 1
	end, err := r.keys.waitFull(ctx, []int{j}, r.p.K, r.timeout())
	if err != nil {
		return err
	}
	// The joiner has caught up when it holds the warm-up keys too: a
	// system may deliver them last (go-ds-crdt walks its DAG from the
	// newest heads down).
	wend, err := r.warm.waitFull(ctx, []int{j}, r.warms, r.timeout())
	if err != nil {
		return err
	}
	if wend.After(end) {
		end = wend
	}
	r.res.CPUS = (cpuTime() - cpu0).Seconds()
	el := end.Sub(start).Seconds()
	r.res.ConvergenceS = el
	r.res.KeysPerS = float64(r.p.K) / el
	r.bytesSince(bytes0, r.p.K)
	r.res.FloorBytesPerKey = r.keyBytes()
	return nil
}

// sustained offers p.Rate puts per second, round robin over the nodes, for
// p.Duration, whatever the acknowledgements do (open loop: a put that
// cannot start on time waits in a backlog, which shows as a lower achieved
// rate and longer latencies). K is ignored; the keys written become K.
func (r *run) sustained(ctx context.Context) error {
	all := r.nodes(0, r.p.N)
	dur := time.Duration(r.p.Duration)
	total := int(r.p.Rate * dur.Seconds())
	if total < 1 {
		return fmt.Errorf("%w: --rate %g for %v offers no put", ErrParams, r.p.Rate, dur)
	}
	interval := time.Duration(float64(time.Second) / r.p.Rate)
	// A put's latency counts from when it was due, so time spent waiting
	// for a free caller shows (a backlog is part of what the caller sees).
	type due struct {
		key string
		at  time.Time
	}
	queues := make([]chan due, r.p.N)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		lats    []time.Duration
		firstEr error
		inTime  atomic.Int64
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bytes0, cpu0 := r.sent(), cpuTime()
	start := time.Now()
	stopAt := start.Add(dur)
	for n := range queues {
		queues[n] = make(chan due, total/r.p.N+1)
		for range r.p.Writers {
			wg.Go(func() {
				for k := range queues[n] {
					_, err := r.put(ctx, n, k.key)
					lat := time.Since(k.at)
					mu.Lock()
					if err != nil && firstEr == nil {
						firstEr = err
						cancel()
					}
					lats = append(lats, lat)
					mu.Unlock()
					if err == nil && time.Now().Before(stopAt) {
						inTime.Add(1)
					}
				}
			})
		}
	}
	written := make([]int, r.p.N)
	for i := 0; i < total && ctx.Err() == nil; i++ {
		at := start.Add(time.Duration(i) * interval)
		if wait := time.Until(at); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
		n := i % r.p.N
		written[n]++
		queues[n] <- due{key(n, written[n]), at}
	}
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	if firstEr != nil {
		return firstEr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	sum := 0
	for _, w := range written {
		sum += w
	}
	r.p.K = sum
	r.res.K = sum
	end, err := r.keys.waitFull(ctx, all, sum, r.timeout())
	if err != nil {
		return err
	}
	r.res.CPUS = (cpuTime() - cpu0).Seconds()
	r.res.ConvergenceS = end.Sub(start).Seconds()
	r.res.AchievedPerS = float64(inTime.Load()) / dur.Seconds()
	r.res.PutP50MS = percentile(lats, 0.50)
	r.res.PutP99MS = percentile(lats, 0.99)
	d, at := r.keys.delays(all)
	r.res.PropP50MS = percentile(d, 0.50)
	r.res.PropP99MS = percentile(d, 0.99)
	secs := int(dur/time.Second) + 1
	per := make([][]time.Duration, secs)
	for i, a := range at {
		s := min(max(int(a.Sub(start)/time.Second), 0), secs-1)
		per[s] = append(per[s], d[i])
	}
	for s, ds := range per {
		if len(ds) == 0 {
			continue
		}
		r.res.Timeline = append(r.res.Timeline, Interval{
			T: s, Acked: len(ds), PropP50MS: percentile(ds, 0.5), PropP99MS: percentile(ds, 0.99),
		})
	}
	r.bytesSince(bytes0, sum)
	r.res.FloorBytesPerKey = float64(r.p.N-1) * r.keyBytes()
	return nil
}

// verify asks every node how many keys it holds: the hooks said every
// node has every key; the nodes must agree.
func (r *run) verify(ctx context.Context) error {
	want := r.p.K + r.warms
	var bad []string
	for n := range r.live {
		got, err := r.c.Count(ctx, n)
		if err != nil {
			return fmt.Errorf("bench: count keys on node %d: %w", n, err)
		}
		if got != want {
			bad = append(bad, fmt.Sprintf("node %d holds %d", n, got))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("bench: nodes disagree with what they reported: want %d keys, %s", want, strings.Join(bad, ", "))
	}
	return nil
}

// sleepCtx waits for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
