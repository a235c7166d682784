package sim

import (
	"context"
	"fmt"
	"time"
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
	plan := sc.Plan(seed)
	began := time.Now()
	c, err := openCluster(ctx, &sc, seed)
	if err != nil {
		return nil, err
	}
	c.progress = o.progress
	rep, err := c.play(ctx, plan, seed)
	if cerr := c.close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	// The watchers have stopped: what they saw can be read.
	delays, missing := propagation(rep.acks, c.seen)
	rep.Propagation = percentiles(delays)
	rep.Unpropagated = missing
	rep.SimulatedMS = ms(time.Since(began))
	rep.Failures = judge(&rep.Report, sc.Expect)
	rep.Passed = len(rep.Failures) == 0
	return &rep.Report, nil
}

// Option changes how Run reports while it runs.
type Option func(*options)

type options struct{ progress func(Progress) }

// Progress is a reading taken while a run goes on.
type Progress struct {
	TMS      float64 // since the workload started
	Ops      int     // writes acknowledged so far
	Distinct int     // distinct replica states the nodes hold now
	Nodes    int
}

// WithProgress calls fn about once a second (of the run's clock) with a
// progress reading. fn must not block.
func WithProgress(fn func(Progress)) Option { return func(o *options) { o.progress = fn } }

// judge returns every budget of e that r misses.
func judge(r *Report, e Expect) []string {
	var out []string
	if !r.Converged {
		out = append(out, fmt.Sprintf("not converged within %v of the last heal or write", e.ConvergeWithin))
	}
	if r.LostWrites > e.LostWrites {
		out = append(out, fmt.Sprintf("%d lost writes (budget %d)", r.LostWrites, e.LostWrites))
	}
	if r.Unpropagated > 0 {
		out = append(out, fmt.Sprintf("%d acknowledged writes never reached every node", r.Unpropagated))
	}
	if e.P99PropagationMS > 0 && r.Propagation.P99 > e.P99PropagationMS {
		out = append(out, fmt.Sprintf("p99 propagation %.0f ms (budget %.0f ms)", r.Propagation.P99, e.P99PropagationMS))
	}
	return out
}

type runResult struct {
	Report
	acks []ack
}

// play drives the plan on a connected cluster and runs the checkers.
func (c *cluster) play(ctx context.Context, plan Plan, seed uint64) (*runResult, error) {
	if err := sleep(ctx, c.sc.Settle); err != nil {
		return nil, err
	}
	start := time.Now()
	stopSampling := c.sample(start, 100*time.Millisecond)
	acks, quiet, err := c.drive(ctx, plan)
	if err != nil {
		stopSampling()
		return nil, err
	}
	r := &runResult{acks: acks}
	defer func() { r.Divergence = stopSampling() }()
	r.FaultWindows = faultWindows(plan.Faults)
	r.Scenario, r.Seed, r.Nodes = c.sc.Name, seed, len(c.nodes)
	r.ConvergenceMS = -1
	deadline := quiet.Add(c.sc.Expect.ConvergeWithin)
	for {
		if c.digestsEqual() {
			r.Converged = true
			r.ConvergenceMS = ms(max(time.Since(quiet), 0))
			break
		}
		if !time.Now().Before(deadline) {
			break
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
	lost := checkLostWrites(ctx, c.spaces, newModel(acks))
	r.LostWrites = len(lost)
	r.Lost = lost[:min(len(lost), maxLostListed)]
	for _, a := range acks {
		if a.ok {
			r.Ops++
		} else {
			r.FailedOps++
		}
	}
	r.Messages, r.Bytes = c.nw.totals()
	r.Dropped = Dropped{Partition: c.nw.droppedCut.Load(), Loss: c.nw.droppedLoss.Load()}
	for _, n := range c.nodes {
		s := n.Stats()
		r.Replication.GossipMessagesPublished += s.MessagesPublished.Load()
		r.Replication.GossipBatchesApplied += s.BatchesApplied.Load()
		r.Replication.SyncSessions += s.SyncSessions.Load()
		r.Replication.SyncBatchesIn += s.SyncBatchesIn.Load()
		r.Replication.SyncBytesIn += s.SyncBytesIn.Load()
	}
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
			smp := Sample{TMS: ms(time.Since(start)), Distinct: c.distinct()}
			out = append(out, smp)
			if c.progress != nil && i%10 == 0 {
				c.progress(Progress{TMS: smp.TMS, Ops: int(c.acked.Load()), Distinct: smp.Distinct, Nodes: len(c.nodes)})
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

// faultWindows turns the fault schedule into spans: each partition lasts
// until the next heal (or the end of the run, marked -1).
func faultWindows(faults []Fault) []FaultWindow {
	var out []FaultWindow
	open := -1
	for _, f := range faults {
		switch f.Kind {
		case Partition:
			if open >= 0 {
				out[open].ToMS = ms(f.At)
			}
			out = append(out, FaultWindow{Kind: string(f.Kind), FromMS: ms(f.At), ToMS: -1})
			open = len(out) - 1
		case Heal:
			if open >= 0 {
				out[open].ToMS = ms(f.At)
				open = -1
			}
		}
	}
	return out
}

// drive runs the ops and faults of the plan at their times (a fault before
// an op planned for the same instant) and returns every op's outcome and
// the quiet point: when the last write returned or the last heal happened,
// whichever is later.
func (c *cluster) drive(ctx context.Context, plan Plan) ([]ack, time.Time, error) {
	start := time.Now()
	quiet := start
	acks := make([]ack, 0, len(plan.Ops))
	ops, faults := plan.Ops, plan.Faults
	for len(ops) > 0 || len(faults) > 0 {
		if len(faults) > 0 && (len(ops) == 0 || faults[0].At <= ops[0].At) {
			f := faults[0]
			faults = faults[1:]
			if err := sleep(ctx, time.Until(start.Add(f.At))); err != nil {
				return nil, quiet, err
			}
			c.apply(f)
			if f.Kind == Heal {
				quiet = time.Now()
			}
			continue
		}
		op := ops[0]
		ops = ops[1:]
		if err := sleep(ctx, time.Until(start.Add(op.At))); err != nil {
			return nil, quiet, err
		}
		err := c.spaces[op.Node].Put(ctx, op.Key, []byte(op.Value))
		a := ack{op: op, ok: err == nil, at: time.Now()}
		acks = append(acks, a)
		if a.ok {
			c.acked.Add(1)
		}
		quiet = a.at
	}
	return acks, quiet, nil
}

// apply carries out one fault.
func (c *cluster) apply(f Fault) {
	switch f.Kind {
	case Partition:
		idx := c.sc.regionIndex()
		groups := make([][]int, len(f.Groups))
		for g, names := range f.Groups {
			for _, name := range names {
				groups[g] = append(groups[g], idx[name])
			}
		}
		c.nw.partition(groups)
	case Heal:
		c.nw.heal()
	default:
		// Validate refuses every other kind.
		panic(fmt.Sprintf("sim: unvalidated fault kind %q", f.Kind))
	}
}
