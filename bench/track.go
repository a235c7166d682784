package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// keyPrefix starts every workload key; warm-up keys use another prefix and
// are not counted by the tracker.
const keyPrefix = "k"

// tracker records, for every workload key, when it was acknowledged and
// when it became visible on each node.
type tracker struct {
	prefix string // keys tracked
	slots  int    // node slots per key

	mu     sync.Mutex
	index  map[string]int32 // key → its row in acks and vis
	acks   []ack            // by row; zero at: not acknowledged
	vis    []time.Time      // row*slots + node; zero: not seen there
	counts []int            // keys seen per node
	last   []time.Time      // per node: when its latest new key became visible
}

type ack struct {
	node int
	at   time.Time
}

// newTracker sizes its tables for about keys keys.
func newTracker(slots, keys int) *tracker {
	keys = min(keys, 1<<20) // tables grow past that as needed
	return &tracker{
		prefix: keyPrefix,
		slots:  slots,
		index:  make(map[string]int32, keys),
		acks:   make([]ack, 0, keys),
		vis:    make([]time.Time, 0, keys*slots),
		counts: make([]int, slots),
		last:   make([]time.Time, slots),
	}
}

// visible is the Hooks.Visible callback.
func (t *tracker) visible(node int, key string) {
	now := time.Now()
	if !strings.HasPrefix(key, t.prefix) || node < 0 || node >= t.slots {
		return
	}
	t.mu.Lock()
	t.mark(node, key, now)
	t.mu.Unlock()
}

// row returns key's row, adding it if new; mu is held.
func (t *tracker) row(key string) int {
	r, ok := t.index[key]
	if !ok {
		r = int32(len(t.acks))
		t.index[key] = r
		t.acks = append(t.acks, ack{})
		t.vis = append(t.vis, make([]time.Time, t.slots)...)
	}
	return int(r)
}

func (t *tracker) mark(node int, key string, at time.Time) {
	v := &t.vis[t.row(key)*t.slots+node]
	if v.IsZero() {
		*v = at
		t.counts[node]++
		if at.After(t.last[node]) {
			t.last[node] = at
		}
	}
}

// acked records that node acknowledged key at at; the key is then visible
// on node too.
func (t *tracker) acked(node int, key string, at time.Time) {
	t.mu.Lock()
	t.acks[t.row(key)] = ack{node, at}
	t.mark(node, key, at)
	t.mu.Unlock()
}

// count returns how many workload keys node has seen.
func (t *tracker) count(node int) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.counts[node]
}

// waitFull polls until every node in nodes has seen want keys, and returns
// when the last of those keys became visible (recorded as it happened, so
// the poll's own delay is not counted). It fails after timeout, naming the
// nodes behind.
func (t *tracker) waitFull(ctx context.Context, nodes []int, want int, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		now := time.Now()
		var behind []string
		var full time.Time
		t.mu.Lock()
		for _, n := range nodes {
			if t.counts[n] < want {
				behind = append(behind, fmt.Sprintf("node %d has %d", n, t.counts[n]))
			}
			if t.last[n].After(full) {
				full = t.last[n]
			}
		}
		t.mu.Unlock()
		if len(behind) == 0 {
			return full, nil
		}
		if now.After(deadline) {
			return now, fmt.Errorf("bench: not converged within %v: want %d keys, %s", timeout, want, strings.Join(behind, ", "))
		}
		select {
		case <-ctx.Done():
			return now, ctx.Err()
		case <-tick.C:
		}
	}
}

// delays returns, for each acknowledged key visible on every node of
// targets (other than its writer), the time from acknowledgement until it
// was visible on the last of them, with its acknowledgement time. A key
// seen somewhere before its writer returned counts as delay 0.
func (t *tracker) delays(targets []int) (d []time.Duration, at []time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for r, a := range t.acks {
		if a.at.IsZero() {
			continue
		}
		v := t.vis[r*t.slots : (r+1)*t.slots]
		var last time.Time
		complete := true
		for _, n := range targets {
			if n == a.node {
				continue
			}
			if v[n].IsZero() {
				complete = false
				break
			}
			if v[n].After(last) {
				last = v[n]
			}
		}
		if !complete || last.IsZero() {
			continue
		}
		d = append(d, max(last.Sub(a.at), 0))
		at = append(at, a.at)
	}
	return d, at
}

// percentile returns the p-th (0 to 1) nearest-rank percentile of ds in
// milliseconds; 0 for none.
func percentile(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.5) - 1
	i = min(max(i, 0), len(s)-1)
	return float64(s[i]) / float64(time.Millisecond)
}
