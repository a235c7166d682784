package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// setElements is how many distinct elements each set's operations draw
// from: few, so that adds and removes meet.
const setElements = 8

// mapFields is how many distinct fields each map's operations draw from:
// few, so that concurrent writes to one field (siblings) and deletes of a
// field another node is writing happen.
const mapFields = 4

// Plan resolves the workload and the fault schedule (with the random
// nemesis's draws) for seed: the same scenario and seed always give the
// same plan. It fails only if the nemesis's schedule clashes.
func (sc *Scenario) Plan(seed uint64) (Plan, error) {
	var p Plan
	p.Ops = sc.planOps(seed)
	p.Faults = slices.Clone(sc.Faults)
	for i := range p.Faults {
		p.Faults[i].origin = i
	}
	p.Faults = append(p.Faults, sc.nemesis(seed)...)
	sortFaults(p.Faults)
	if err := sc.checkSchedule(p.Faults); err != nil {
		return Plan{}, err
	}
	return p, nil
}

// planOps draws the workload: ops evenly spaced at the rate, each from a
// random writer, of a kind drawn by the mix, on a key drawn by the
// distribution.
func (sc *Scenario) planOps(seed uint64) []Op {
	w := sc.Workload
	regions := sc.nodeRegions()
	writerRegion := make(map[int]bool)
	idx := sc.regionIndex()
	for _, name := range w.Writers {
		writerRegion[idx[name]] = true
	}
	var writers []int
	for n, r := range regions {
		if len(writerRegion) == 0 || writerRegion[r] {
			writers = append(writers, n)
		}
	}
	if w.Rate <= 0 || w.Keys <= 0 || len(writers) == 0 {
		return nil
	}
	mix := w.Mix
	if mix.total() == 0 {
		mix.Put = 1
	}
	kinds := []OpKind{OpPut, OpDelete, OpCounterAdd, OpSetAdd, OpSetRemove, OpMapPut, OpMapDelete}
	weights := []float64{mix.Put, mix.Delete, mix.CounterAdd, mix.SetAdd, mix.SetRemove, mix.MapPut, mix.MapDelete}
	// A draw the rounding of the sums below lets past every weight falls
	// to the last kind with weight.
	last := kinds[0]
	for k, wt := range weights {
		if wt > 0 {
			last = kinds[k]
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0x776f726b))
	var zipf *rand.Zipf
	if w.Distribution == "zipf" && w.Keys > 1 {
		zipf = rand.NewZipf(rng, 1.1, 1, uint64(w.Keys-1))
	}
	size := max(w.ValueSize, 16)
	count := int(w.Rate * w.Duration.Seconds())
	step := time.Duration(float64(time.Second) / w.Rate)
	ops := make([]Op, 0, count)
	for i := range count {
		op := Op{At: time.Duration(i) * step, Node: writers[rng.IntN(len(writers))]}
		x := rng.Float64() * mix.total()
		op.Kind = last
		for k, wt := range weights {
			if x < wt {
				op.Kind = kinds[k]
				break
			}
			x -= wt
		}
		k := 0
		if zipf != nil {
			k = int(zipf.Uint64())
		} else {
			k = rng.IntN(w.Keys)
		}
		switch op.Kind {
		case OpPut, OpDelete:
			op.Key = fmt.Sprintf("r/%05d", k)
			if op.Kind == OpPut {
				op.Value = putValue(i, size)
			}
		case OpCounterAdd:
			op.Key = fmt.Sprintf("c/%05d", k)
			op.Amount = 1 + rng.Int64N(10)
		case OpSetAdd, OpSetRemove:
			op.Key = fmt.Sprintf("s/%05d", k)
			op.Value = fmt.Sprintf("e%d", rng.IntN(setElements))
		case OpMapPut, OpMapDelete:
			op.Key = fmt.Sprintf("m/%05d", k)
			op.Field = fmt.Sprintf("f%d", rng.IntN(mapFields))
			if op.Kind == OpMapPut {
				op.Value = putValue(i, size)
			}
		}
		ops = append(ops, op)
	}
	return ops
}

// putValue is op i's value: its number, padded to size bytes, so every
// put's value is unique.
func putValue(i, size int) string {
	s := fmt.Sprintf("op%d.", i)
	if len(s) >= size {
		return s
	}
	return s + strings.Repeat("x", size-len(s))
}
