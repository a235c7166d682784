package sim

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/node"
)

// Run plays sc with seed: it starts the nodes over the simulated network,
// lets them connect and settle, drives the workload and the fault schedule,
// then checks convergence and lost writes and returns the report. It runs
// in whatever time the caller's goroutine sees: real time, or virtual time
// inside a testing/synctest bubble.
//
// A report that says the run failed (not converged, lost writes) is not an
// error; an error means the run itself could not be carried out.
func Run(ctx context.Context, sc Scenario, seed uint64, opts ...Option) (*Report, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	sc = sc.withDefaults()
	plan, err := sc.Plan(seed)
	if err != nil {
		return nil, err
	}
	began := time.Now()
	c, err := openCluster(ctx, &sc, seed)
	if err != nil {
		return nil, err
	}
	c.progress = o.progress
	r, err := c.play(ctx, plan, seed)
	if cerr := c.close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	// The watchers have stopped: what the tracker saw can be read.
	c.finish(r, plan)
	r.SimulatedMS = ms(time.Since(began))
	r.Failures = judge(&r.Report, sc.Expect)
	r.Passed = len(r.Failures) == 0
	return &r.Report, nil
}

// Option changes how Run reports while it runs.
type Option func(*options)

type options struct{ progress func(Progress) }

// Progress is a reading taken while a run goes on.
type Progress struct {
	TMS      float64 // since the workload started
	Ops      int     // ops acknowledged so far
	Distinct int     // distinct replica states the live nodes hold now
	Nodes    int     // live nodes
}

// WithProgress calls fn about once a second (of the run's clock) with a
// progress reading. fn must not block.
func WithProgress(fn func(Progress)) Option { return func(o *options) { o.progress = fn } }

// judge returns every budget of e that r misses.
func judge(r *Report, e Expect) []string {
	var out []string
	if !r.Converged {
		out = append(out, fmt.Sprintf("not converged within %v of the last heal or write", e.ConvergeWithin))
	} else if budget := ms(e.ConvergeWithin); e.ConvergeWithin > 0 && r.ConvergenceMS > budget {
		out = append(out, fmt.Sprintf("converged %.0f ms after the last heal or write (budget %.0f ms)", r.ConvergenceMS, budget))
	}
	if r.LostWrites > e.LostWrites {
		out = append(out, fmt.Sprintf("%d lost writes (budget %d)", r.LostWrites, e.LostWrites))
	}
	if r.Unpropagated > 0 {
		out = append(out, fmt.Sprintf("%d acknowledged writes never reached every live node", r.Unpropagated))
	}
	if e.P99PropagationMS > 0 && r.Propagation.P99 > e.P99PropagationMS {
		out = append(out, fmt.Sprintf("p99 propagation %.0f ms (budget %.0f ms)", r.Propagation.P99, e.P99PropagationMS))
	}
	if r.FailedOps > 0 {
		out = append(out, fmt.Sprintf("%d ops failed on a running node", r.FailedOps))
	}
	if r.CrossedCut != nil && *r.CrossedCut > 0 {
		out = append(out, fmt.Sprintf("%d packets crossed a standing partition", *r.CrossedCut))
	}
	if r.DotsReused > 0 {
		out = append(out, fmt.Sprintf("%d dots handed out twice (a replica reused its dot counter)", r.DotsReused))
	}
	return out
}

// convergedAt is when a run that ended at the first of these checks past
// its budget converged: the start of the latest run of samples with one
// digest (the samples resolve it to their interval), or now.
func convergedAt(samples []Sample, t0, now time.Time) time.Time {
	at := now
	for i := len(samples) - 1; i >= 0 && samples[i].Distinct == 1; i-- {
		at = t0.Add(time.Duration(samples[i].TMS * float64(time.Millisecond)))
	}
	return at
}

type runResult struct {
	Report
	acks   []ack
	heals  []heal
	wiped  map[int]bool
	model  *model
	endAt  time.Time // when the checks ended (for the final sweep)
	start  time.Time
	repl   Replication
	spaces []*node.Namespace // live nodes' namespaces at the end (nil: down)
}

// heal is a moment the cluster should recover from: a heal or a restart.
type heal struct {
	at    time.Time
	fault Fault
}

// play drives the plan on a connected cluster and runs the checkers that
// need the nodes.
func (c *cluster) play(ctx context.Context, plan Plan, seed uint64) (*runResult, error) {
	if err := sleep(ctx, c.sc.Settle); err != nil {
		return nil, err
	}
	r := &runResult{wiped: make(map[int]bool), start: time.Now()}
	c.track.begin(len(plan.Ops), r.start)
	stopSampling := c.sample(r.start, 100*time.Millisecond)
	quiet, err := c.drive(ctx, plan, r)
	if err != nil {
		stopSampling()
		return nil, err
	}
	defer func() { r.Divergence = stopSampling() }()
	r.FaultWindows = c.sc.faultWindows(plan.Faults)
	r.Scenario, r.Seed, r.Nodes, r.Backend = c.sc.Name, seed, len(c.members), "simnet"
	r.ConvergenceMS = -1
	deadline := quiet.Add(c.sc.Expect.ConvergeWithin)
	late := !time.Now().Before(deadline) // faults ran on past the budget
	for {
		if c.digestsEqual() {
			r.Converged = true
			at := time.Now()
			if late {
				at = convergedAt(stopSampling(), r.start, at)
			}
			r.ConvergenceMS = ms(max(at.Sub(quiet), 0))
			break
		}
		if !time.Now().Before(deadline) {
			break
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
	// A state reconciliation can make an op visible without an event on
	// its key: look once more, now.
	for _, m := range c.live() {
		c.track.sweep(m.index)
	}
	r.endAt = time.Now()
	shape := c.meshShape()
	r.Mesh = &shape
	r.spaces = c.liveSpaces()
	r.LostOnWiped -= reviveWiped(r.acks, r.spaces)
	r.model = newModel(r.acks)
	lost := checkLostWrites(ctx, r.spaces, c.sc.nodeNames(), r.model)
	r.LostWrites = len(lost)
	r.Lost = lost[:min(len(lost), maxLostListed)]
	r.DotsReused, r.DotsReusedOps = r.model.reused, r.model.reusedOps
	r.Messages, r.Bytes = c.nw.totals()
	r.Dropped = Dropped{Partition: c.nw.droppedCut.Load(), Loss: c.nw.droppedLoss.Load()}
	return r, nil
}

// sample records the number of distinct replica states every interval
// until the returned stop function is called; stop returns the samples.
func (c *cluster) sample(start time.Time, every time.Duration) func() []Sample {
	var out []Sample
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for i := 0; ; i++ {
			smp := Sample{TMS: ms(time.Since(start)), Distinct: c.distinctShared()}
			out = append(out, smp)
			if c.progress != nil && i%10 == 0 {
				c.progress(Progress{TMS: smp.TMS, Ops: int(c.acked.Load()), Distinct: smp.Distinct, Nodes: int(c.liveCount.Load())})
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	var once bool
	return func() []Sample {
		if !once {
			once = true
			close(done)
			<-finished
		}
		return out
	}
}

// faultWindows turns the fault schedule into spans: a partition or an
// isolation until its heal, a crash until its restart, a link's changed
// latency, jitter or loss until the link is back to the scenario's values,
// a node's clock skew until it is 0 again (each to the end of the run,
// marked -1, if nothing ends it).
func (sc *Scenario) faultWindows(faults []Fault) []FaultWindow {
	var out []FaultWindow
	cut := -1
	down := make(map[string]int)
	slowed := make(map[[2]string]int) // link (regions in order) → open window
	links := make(map[[2]string]Link) // links a fault changed: their values now
	skewed := make(map[string]int)
	for _, f := range faults {
		switch f.Kind {
		case Partition, Isolate:
			out = append(out, FaultWindow{Kind: f.describe(), FromMS: ms(f.At), ToMS: -1})
			cut = len(out) - 1
		case Heal:
			if cut >= 0 {
				out[cut].ToMS = ms(f.At)
				cut = -1
			}
		case Crash:
			out = append(out, FaultWindow{Kind: f.describe(), FromMS: ms(f.At), ToMS: -1})
			down[f.Node] = len(out) - 1
		case Restart:
			if i, ok := down[f.Node]; ok {
				out[i].ToMS = ms(f.At)
				delete(down, f.Node)
			}
		case Latency:
			key := [2]string{min(f.Link[0], f.Link[1]), max(f.Link[0], f.Link[1])}
			base := sc.link(key[0], key[1])
			now, ok := links[key]
			if !ok {
				now = base
			}
			if f.Latency != nil {
				now.Latency = *f.Latency
			}
			if f.Jitter != nil {
				now.Jitter = *f.Jitter
			}
			if f.Loss != nil {
				now.Loss = *f.Loss
			}
			links[key] = now
			i, open := slowed[key]
			switch back := now.Latency == base.Latency && now.Jitter == base.Jitter && now.Loss == base.Loss; {
			case back && open:
				out[i].ToMS = ms(f.At)
				delete(slowed, key)
			case !back && !open:
				out = append(out, FaultWindow{Kind: f.describe(), FromMS: ms(f.At), ToMS: -1})
				slowed[key] = len(out) - 1
			}
		case Skew:
			if i, ok := skewed[f.Node]; ok {
				out[i].ToMS = ms(f.At)
				delete(skewed, f.Node)
			}
			if f.By != 0 {
				out = append(out, FaultWindow{Kind: f.describe(), FromMS: ms(f.At), ToMS: -1})
				skewed[f.Node] = len(out) - 1
			}
		}
	}
	return out
}

// drive runs the ops and faults of the plan at their times (a fault before
// an op planned for the same instant), recording every op's outcome in r,
// and returns the quiet point: when the last op returned or the last heal
// or restart happened, whichever is later. An op planned on a crashed
// node is skipped.
//
// Each node has its own client, which performs that node's ops in order,
// each once the one before it was answered: one client for the whole
// cluster would start every op after a slow answer late, on every node,
// and so measure one node's commit latency as the cluster's lag. A fault
// waits until every op planned before it was answered, so it meets the
// cluster as the plan has it.
func (c *cluster) drive(ctx context.Context, plan Plan, r *runResult) (time.Time, error) {
	start := r.start
	ops, faults := plan.Ops, plan.Faults
	acks := make([]ack, len(ops))
	perNode := make([]int, len(c.members))
	for _, op := range ops {
		perNode[op.Node]++
	}
	// Each client's queue holds all of its node's ops: handing one over
	// never blocks the schedule.
	clients := make([]chan int, len(c.members))
	lag := make([]time.Duration, len(c.members)) // each client's worst
	var answered, stopped sync.WaitGroup
	for n := range clients {
		clients[n] = make(chan int, perNode[n])
		stopped.Go(func() {
			for id := range clients[n] {
				op := ops[id]
				lag[n] = max(lag[n], time.Since(start.Add(op.At)))
				acks[id] = c.do(ctx, id, op)
				answered.Done()
			}
		})
	}
	stop := func() {
		for _, ch := range clients {
			close(ch)
		}
		stopped.Wait()
		for _, l := range lag {
			r.MaxLagMS = max(r.MaxLagMS, ms(l))
		}
	}
	id := 0
	for id < len(ops) || len(faults) > 0 {
		if len(faults) > 0 && (id == len(ops) || faults[0].At <= ops[id].At) {
			f := faults[0]
			faults = faults[1:]
			if err := sleep(ctx, time.Until(start.Add(f.At))); err != nil {
				stop()
				return start, err
			}
			answered.Wait()
			r.acks = acks[:id]
			if err := c.apply(ctx, f, r); err != nil {
				stop()
				return start, err
			}
			if f.Kind == Heal || f.Kind == Restart {
				r.heals = append(r.heals, heal{at: time.Now(), fault: f})
			}
			continue
		}
		op := ops[id]
		if err := sleep(ctx, time.Until(start.Add(op.At))); err != nil {
			stop()
			return start, err
		}
		answered.Add(1)
		clients[op.Node] <- id
		id++
	}
	stop()
	r.acks = acks
	quiet := start
	for _, h := range r.heals {
		quiet = later(quiet, h.at)
	}
	for _, a := range acks {
		if !a.skipped {
			quiet = later(quiet, a.at)
		}
	}
	return quiet, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// do performs one op on its node and registers it for propagation.
func (c *cluster) do(ctx context.Context, id int, op Op) ack {
	a := ack{id: id, op: op}
	m := c.members[op.Node]
	// A node restarted on a wiped store takes writes at once: its store
	// counts from a floor its lost store never reached
	// (TestWipedNodeTakesWritesAtOnce).
	if !m.up {
		a.skipped = true
		return a
	}
	if c.beforeOp != nil {
		c.beforeOp(ctx, op.Node)
	}
	var cop crdt.Op
	switch op.Kind {
	case OpPut:
		cop = crdt.Op{Kind: crdt.OpPut, Key: op.Key, Value: []byte(op.Value)}
	case OpDelete:
		cop = crdt.Op{Kind: crdt.OpDelete, Key: op.Key}
	case OpCounterAdd:
		cop = crdt.Op{Kind: crdt.OpCounterAdd, Key: op.Key, N: op.Amount}
	case OpSetAdd:
		cop = crdt.Op{Kind: crdt.OpSetUpdate, Key: op.Key, Add: []string{op.Value}}
	case OpSetRemove:
		cop = crdt.Op{Kind: crdt.OpSetUpdate, Key: op.Key, Remove: []string{op.Value}}
	case OpMapPut:
		cop = crdt.Op{Kind: crdt.OpPut, Key: op.Key, Path: []string{op.Field}, Value: []byte(op.Value)}
	case OpMapDelete:
		cop = crdt.Op{Kind: crdt.OpDelete, Key: op.Key, Path: []string{op.Field}}
	}
	a.delta, a.err = m.space.Apply(ctx, cop)
	a.at = time.Now()
	if a.err != nil {
		return a
	}
	c.acked.Add(1)
	if d, ok := newDot(a.delta); ok {
		a.dot = d
		c.track.register(id, op.Key, d, op.Node)
	}
	return a
}

// apply carries out one fault.
func (c *cluster) apply(ctx context.Context, f Fault, r *runResult) error {
	nodes := c.sc.nodeIndex()
	switch f.Kind {
	case Partition, Isolate:
		groups := c.sc.cutGroups(f)
		c.cutMode, c.cutGroups = f.mode(), groups
		c.nw.partition(len(c.members), groups, f.mode() == Blackhole)
		if f.mode() == Disconnect {
			c.block(groups, true)
		}
	case Heal:
		if c.cutMode == Disconnect {
			c.block(c.cutGroups, false)
		}
		c.nw.heal()
		c.cutMode, c.cutGroups = "", nil
	case Crash:
		n := nodes[f.Node]
		if err := c.crash(n, !f.wipes()); err != nil {
			return err
		}
		if f.wipes() {
			r.wiped[n] = true
			spaces := make([]*node.Namespace, len(c.members))
			for i, m := range c.members {
				// A node down with its disk keeps what it had observed.
				if i != n && !m.diskLost {
					spaces[i] = m.space
				}
			}
			r.LostOnWiped += markWiped(r.acks, n, r.wiped, spaces)
		}
	case Restart:
		return c.restart(ctx, nodes[f.Node])
	case Latency:
		idx := c.sc.regionIndex()
		c.nw.setLink(idx[f.Link[0]], idx[f.Link[1]], f.Latency, f.Jitter, f.Loss)
	case Skew:
		c.members[nodes[f.Node]].clock.offset.Store(int64(f.By))
	default:
		// Validate refuses every other kind.
		panic(fmt.Sprintf("sim: unvalidated fault kind %q", f.Kind))
	}
	return nil
}

// finish fills in what needs the nodes stopped: propagation from the
// tracker, per-heal recovery, replication and traffic counters.
func (c *cluster) finish(r *runResult, plan Plan) {
	live := make([]bool, len(c.members))
	for i, s := range r.spaces {
		live[i] = s != nil
	}
	skip := make(map[int]bool)
	for _, a := range r.acks {
		if a.lostOnWipe {
			skip[a.id] = true
		}
		switch {
		case a.skipped:
			r.SkippedOps++
		case a.err != nil:
			r.FailedOps++
		default:
			r.Ops++
		}
	}
	delays, missing, pairs := c.track.results(live, skip, len(c.sc.Regions))
	r.Propagation = percentiles(delays)
	r.Unpropagated = missing
	for _, p := range pairs {
		r.PropagationByPair = append(r.PropagationByPair, PairPropagation{
			From: c.sc.Regions[p.from].Name, To: c.sc.Regions[p.to].Name, Percentiles: percentiles(p.delays),
		})
	}
	r.Heals = c.healRecovery(r, live, skip)
	r.Regions = c.regionDetail(r, live)
	r.Replication = c.repl
	g, s, o := c.bw.split()
	r.Cost = Cost{Gossip: g, Sync: s, Other: o}
	if r.Ops > 0 {
		r.Cost.MessagesPerOp = float64(g.Messages+s.Messages+o.Messages) / float64(r.Ops)
		r.Cost.BytesPerOp = float64(g.Bytes+s.Bytes+o.Bytes) / float64(r.Ops)
	}
	r.Cost.GossipData = Traffic{Messages: c.ps.dataMsgs.Load(), Bytes: c.ps.dataBytes.Load()}
	r.Cost.GossipControl = Traffic{Messages: c.ps.controlMsgs.Load(), Bytes: c.ps.controlBytes.Load()}
	r.Cost.GossipThrottled, r.Cost.GossipDroppedRPCs = c.ps.throttled.Load(), c.ps.droppedRPCs.Load()
	if dup, del := c.ps.duplicates.Load(), c.ps.delivered.Load(); dup+del > 0 {
		r.Cost.DuplicatesRatio = float64(dup) / float64(dup+del)
	}
}

// healRecovery measures, for each heal and restart, how long until every
// node live at the end held every op acknowledged before it.
func (c *cluster) healRecovery(r *runResult, live []bool, skip map[int]bool) []HealReport {
	var out []HealReport
	names := make([]string, len(c.members))
	for i, m := range c.members {
		names[i] = m.name
	}
	for _, h := range r.heals {
		hr := HealReport{AtMS: ms(h.at.Sub(r.start)), Fault: h.fault.describe(), RecoveredMS: 0}
		cut := int64(h.at.Sub(r.start))
		latest := make([]int64, len(live)) // per node: when it held the last op, from the heal
		never := make([]bool, len(live))
		for id := range c.track.ops {
			op := &c.track.ops[id]
			if !op.registered || skip[id] || op.at.After(h.at) {
				continue
			}
			for n := range op.seen {
				if !live[n] || never[n] {
					continue
				}
				s := c.track.heldSince(n, id, h.at)
				if s == 0 {
					never[n] = true
					continue
				}
				latest[n] = max(latest[n], s-1-cut)
			}
		}
		nodeRecovery(&hr, live, never, latest, names)
		out = append(out, hr)
	}
	return out
}

// regionDetail sums, per region, the nodes, the live ones and the ops
// acknowledged there.
func (c *cluster) regionDetail(r *runResult, live []bool) []RegionReport {
	out := make([]RegionReport, len(c.sc.Regions))
	for i, reg := range c.sc.Regions {
		out[i].Name, out[i].Nodes = reg.Name, reg.Nodes
	}
	for i, m := range c.members {
		if live[i] {
			out[m.region].Live++
		}
	}
	for _, a := range r.acks {
		if a.ok() {
			out[c.members[a.op.Node].region].Ops++
		}
	}
	return out
}

// nodeRecovery fills hr's recovery from each node's own: when it held the
// last op it lacked (from the heal, in nanoseconds), and whether it never
// did (never may be nil: every node did).
func nodeRecovery(hr *HealReport, live, never []bool, latest []int64, names []string) {
	var each []time.Duration
	slowest, incomplete := -1, false
	for n := range live {
		switch {
		case !live[n]:
		case never != nil && never[n]:
			incomplete = true
		default:
			each = append(each, time.Duration(max(latest[n], 0)))
			if latest[n] > 0 && (slowest < 0 || latest[n] > latest[slowest]) {
				slowest = n
			}
		}
	}
	hr.Nodes = percentiles(each)
	switch {
	case incomplete:
		hr.RecoveredMS = -1
	case slowest >= 0:
		hr.RecoveredMS, hr.Slowest = hr.Nodes.Max, names[slowest]
	}
}
