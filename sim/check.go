package sim

import (
	"context"
	"errors"
	"math"
	"sort"
	"time"

	"github.com/mycelnet/mycel/node"
)

// ack is the outcome of one planned op.
type ack struct {
	op Op
	ok bool      // the put returned without error
	at time.Time // when it returned
}

// visibility records, for one node, when each write became visible there:
// seen[key][i-1] is the first time the node held write i of key or a later
// one. Only its watcher goroutine writes it; it is read after that
// goroutine has ended.
type visibility struct {
	seen map[string][]time.Time
}

func (v *visibility) observe(ev node.Event) {
	b, _, ok := ev.Value.Register()
	if !ok {
		return
	}
	idx, ok := writeIndex(ev.Key, b)
	if !ok {
		return
	}
	now := time.Now()
	s := v.seen[ev.Key]
	for len(s) < idx {
		s = append(s, now)
	}
	v.seen[ev.Key] = s
}

func (v *visibility) at(key string, idx int) (time.Time, bool) {
	s := v.seen[key]
	if idx < 1 || idx > len(s) {
		return time.Time{}, false
	}
	return s[idx-1], true
}

// propagation returns, for every acknowledged op, the delay from its
// acknowledgement until every node held it (or a later write of its key),
// and how many acknowledged ops never reached every node.
func propagation(acks []ack, seen []*visibility) (delays []time.Duration, missing int) {
	for _, a := range acks {
		if !a.ok {
			continue
		}
		var worst time.Duration
		everywhere := true
		for _, v := range seen {
			t, ok := v.at(a.op.Key, a.op.Index)
			if !ok {
				everywhere = false
				break
			}
			worst = max(worst, t.Sub(a.at))
		}
		if !everywhere {
			missing++
			continue
		}
		delays = append(delays, worst)
	}
	return delays, missing
}

// percentiles summarises delays (nearest rank) in milliseconds.
func percentiles(delays []time.Duration) Percentiles {
	if len(delays) == 0 {
		return Percentiles{}
	}
	s := append([]time.Duration(nil), delays...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return ms(s[max(i, 0)])
	}
	return Percentiles{P50: rank(0.50), P99: rank(0.99), Max: ms(s[len(s)-1]), Count: len(s)}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// model is the reference final state built from every planned op: because
// each key has one writer, whose puts are ordered by its clock, a key must
// end with its last acknowledged value, or with a later value whose put
// failed (it may have been applied before the error).
type model struct {
	writes map[string][]ack // key → writes in index order
}

func newModel(acks []ack) model {
	m := model{writes: make(map[string][]ack)}
	for _, a := range acks {
		m.writes[a.op.Key] = append(m.writes[a.op.Key], a)
	}
	return m
}

// allowed returns the acceptable final values of key, the one that must be
// there if an acknowledged write exists, and whether absence is acceptable.
func (m model) allowed(key string) (ok map[string]bool, want string, mayBeAbsent bool) {
	ws := m.writes[key]
	last := -1
	for i, a := range ws {
		if a.ok {
			last = i
		}
	}
	ok = make(map[string]bool)
	for i := max(last, 0); i < len(ws); i++ {
		if i == last || !ws[i].ok {
			ok[ws[i].op.Value] = true
		}
	}
	if last < 0 {
		return ok, "", true
	}
	return ok, ws[last].op.Value, false
}

// checkLostWrites compares every node's final state with the model and
// returns each difference: a key missing or holding the wrong value, a
// register with siblings (impossible with one writer per key), or a key the
// workload never wrote.
func checkLostWrites(ctx context.Context, spaces []*node.Namespace, m model) []LostWrite {
	var out []LostWrite
	for n, s := range spaces {
		for _, key := range s.Keys("", "", 0) {
			if _, ok := m.writes[key]; !ok {
				out = append(out, LostWrite{Node: n, Key: key, Reason: "phantom"})
			}
		}
		keys := make([]string, 0, len(m.writes))
		for k := range m.writes {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, key := range keys {
			allowed, want, mayBeAbsent := m.allowed(key)
			vals, err := s.GetAll(ctx, key)
			switch {
			case errors.Is(err, node.ErrNotFound):
				if !mayBeAbsent {
					out = append(out, LostWrite{Node: n, Key: key, Want: want, Reason: "missing"})
				}
			case err != nil:
				out = append(out, LostWrite{Node: n, Key: key, Want: want, Reason: err.Error()})
			case len(vals) != 1:
				out = append(out, LostWrite{Node: n, Key: key, Want: want, Got: string(vals[len(vals)-1]), Reason: "siblings"})
			case !allowed[string(vals[0])]:
				out = append(out, LostWrite{Node: n, Key: key, Want: want, Got: string(vals[0]), Reason: "stale"})
			}
		}
	}
	return out
}
