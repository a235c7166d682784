package sim

import (
	"sync"
	"time"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/node"
)

// tracker records when each acknowledged op became visible at each node:
// the first moment the node's causal context held the op's dot (the op
// itself, or a later op that replaced it, had arrived). The node's client
// registers an op once acknowledged; each node's watcher re-checks the
// ops still pending on a key when that key changes there.
type tracker struct {
	regions []int // node → region
	epoch   time.Time

	// nodes[n] guards what the tracker holds for node n.
	nodes []trackNode

	// ops is sized by begin; ops[id] is written once, before id is put in
	// any pending list (under that node's lock), and read after.
	ops []trackedOp
}

type trackNode struct {
	mu      sync.Mutex
	space   *node.Namespace  // nil while the node is down
	pending map[string][]int // key → ids of ops not yet visible here
	// Each time the node lost its store: when, and for each op it held
	// then, when it held it again (0: not yet). Recovery after a later
	// heal or restart is measured with the last wipe before it;
	// propagation keeps seen.
	wipes []wipe
}

type wipe struct {
	at      time.Time
	refetch map[int]int64
}

type trackedOp struct {
	registered bool
	dot        crdt.Dot
	key        string
	origin     int
	at         time.Time
	// seen[n] is when node n first held the op, as time since epoch plus
	// one nanosecond; 0: not yet.
	seen []int64
}

func newTracker(nodes int, regions []int) *tracker {
	t := &tracker{regions: regions, nodes: make([]trackNode, nodes)}
	for i := range t.nodes {
		t.nodes[i].pending = make(map[string][]int)
	}
	return t
}

// begin sizes the tracker for ops planned ops, times counted from epoch.
func (t *tracker) begin(ops int, epoch time.Time) {
	t.ops = make([]trackedOp, ops)
	t.epoch = epoch
}

func (t *tracker) stamp() int64 { return int64(time.Since(t.epoch)) + 1 }

// register records that op id, which created dot on key at node origin,
// was acknowledged now, and notes every node that already holds it.
func (t *tracker) register(id int, key string, dot crdt.Dot, origin int) {
	op := &t.ops[id]
	*op = trackedOp{registered: true, dot: dot, key: key, origin: origin, at: time.Now(), seen: make([]int64, len(t.nodes))}
	for n := range t.nodes {
		tn := &t.nodes[n]
		tn.mu.Lock()
		if tn.space != nil && tn.space.Observed(dot) {
			op.seen[n] = t.stamp()
		} else {
			tn.pending[key] = append(tn.pending[key], id)
		}
		tn.mu.Unlock()
	}
}

// observe re-checks the ops pending at node n on key, which just changed.
func (t *tracker) observe(n int, key string) {
	tn := &t.nodes[n]
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if ids := tn.pending[key]; len(ids) > 0 && tn.space != nil {
		t.sweepLocked(n, tn, key, ids)
	}
}

func (t *tracker) sweepLocked(n int, tn *trackNode, key string, ids []int) {
	keep := ids[:0]
	for _, id := range ids {
		op := &t.ops[id]
		if tn.space.Observed(op.dot) {
			now := t.stamp()
			if op.seen[n] == 0 {
				op.seen[n] = now
			}
			for _, w := range tn.wipes {
				if at, ok := w.refetch[id]; ok && at == 0 {
					w.refetch[id] = now
				}
			}
		} else {
			keep = append(keep, id)
		}
	}
	if len(keep) == 0 {
		delete(tn.pending, key)
	} else {
		tn.pending[key] = keep
	}
}

// sweep re-checks every op pending at node n.
func (t *tracker) sweep(n int) {
	tn := &t.nodes[n]
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if tn.space == nil {
		return
	}
	for key, ids := range tn.pending {
		t.sweepLocked(n, tn, key, ids)
	}
}

// attach starts tracking node n's (re)opened namespace; it may already hold
// ops (a restart on its old store).
func (t *tracker) attach(n int, space *node.Namespace) {
	tn := &t.nodes[n]
	tn.mu.Lock()
	tn.space = space
	tn.mu.Unlock()
	t.sweep(n)
}

// wipe notes that node n (down) lost its store: every op it held must
// reach it again.
func (t *tracker) wipe(n int, at time.Time) {
	tn := &t.nodes[n]
	tn.mu.Lock()
	defer tn.mu.Unlock()
	w := wipe{at: at, refetch: make(map[int]int64)}
	held := func(id int) bool {
		if len(tn.wipes) == 0 {
			return t.ops[id].seen[n] != 0
		}
		got, ok := tn.wipes[len(tn.wipes)-1].refetch[id] // since the last wipe
		return (ok && got != 0) || (!ok && t.ops[id].seen[n] != 0)
	}
	for id := range t.ops {
		op := &t.ops[id]
		if op.registered && held(id) {
			w.refetch[id] = 0
			tn.pending[op.key] = append(tn.pending[op.key], id)
		}
	}
	tn.wipes = append(tn.wipes, w)
}

// heldSince is when node n held op id, as a stamp (0: not), for a
// recovery measured from a moment after: after a wipe, the time it held
// the op again.
func (t *tracker) heldSince(n, id int, from time.Time) int64 {
	tn := &t.nodes[n]
	for i := len(tn.wipes) - 1; i >= 0; i-- {
		if w := tn.wipes[i]; !from.Before(w.at) {
			if at, ok := w.refetch[id]; ok {
				return at
			}
			break
		}
	}
	return t.ops[id].seen[n]
}

// detach stops tracking node n (crashed).
func (t *tracker) detach(n int) {
	tn := &t.nodes[n]
	tn.mu.Lock()
	tn.space = nil
	tn.mu.Unlock()
}

// pairDelays is the propagation delays of ops from one region to another.
type pairDelays struct {
	from, to int
	delays   []time.Duration
}

// results returns, over the registered ops not in skip, each op's delay
// from acknowledgement until every node in live held it, how many never
// reached them all, and per region pair the delay until every live node of
// the destination region held it. Call it once the watchers have stopped.
func (t *tracker) results(live []bool, skip map[int]bool, regions int) (delays []time.Duration, missing int, pairs []pairDelays) {
	byPair := make([][]time.Duration, regions*regions)
	for id := range t.ops {
		op := &t.ops[id]
		if !op.registered || skip[id] {
			continue
		}
		ack := int64(op.at.Sub(t.epoch))
		worst := time.Duration(0)
		everywhere := true
		regionWorst := make([]time.Duration, regions)
		regionMissing := make([]bool, regions)
		regionLive := make([]bool, regions)
		for n, s := range op.seen {
			if !live[n] {
				continue
			}
			r := t.regions[n]
			regionLive[r] = true
			if s == 0 {
				everywhere = false
				regionMissing[r] = true
				continue
			}
			d := max(time.Duration(s-1-ack), 0)
			worst = max(worst, d)
			regionWorst[r] = max(regionWorst[r], d)
		}
		if !everywhere {
			missing++
		} else {
			delays = append(delays, worst)
		}
		from := t.regions[op.origin]
		for r := range regions {
			if regionLive[r] && !regionMissing[r] {
				byPair[from*regions+r] = append(byPair[from*regions+r], regionWorst[r])
			}
		}
	}
	for i, ds := range byPair {
		if len(ds) > 0 {
			pairs = append(pairs, pairDelays{from: i / regions, to: i % regions, delays: ds})
		}
	}
	return delays, missing, pairs
}
