package node

import (
	"sort"
	"sync"
	"time"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/store"
)

// Lag is how far behind this node saw one origin's writes.
type Lag struct {
	Namespace string
	Origin    crdt.ReplicaID
	// Last is the delay of the last batch applied from Origin: from the
	// hybrid-clock time of its newest write (the writer's clock) to its
	// commit here (this node's clock). Clock skew between the two adds to
	// or subtracts from it.
	Last time.Duration
	// At is when that batch was applied here.
	At time.Time
	// Seq is the batch's sequence number in Origin's log.
	Seq uint64
}

type lagKey struct {
	ns     string
	origin crdt.ReplicaID
}

// lagTracker records, per namespace and origin, the last remote batch's
// replication delay. It is fed from the commit callback.
type lagTracker struct {
	mu   sync.Mutex
	lags map[lagKey]Lag
}

func (t *lagTracker) note(c store.Commit, now time.Time) {
	if c.Local || c.Origin == 0 {
		return
	}
	ts := c.Delta.MaxTimestamp()
	if ts.IsZero() {
		return // a batch without register writes carries no clock reading
	}
	d := now.Sub(time.UnixMilli(ts.Wall))
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lags == nil {
		t.lags = make(map[lagKey]Lag)
	}
	k := lagKey{c.Namespace, c.Origin}
	if _, ok := t.lags[k]; !ok && len(t.lags) >= maxLagEntries {
		// Every origin ever heard from (fresh identities, re-installed
		// peers) would otherwise stay for the life of the process, each
		// a metric series: forget the one heard from longest ago.
		var oldest lagKey
		first := true
		for key, l := range t.lags {
			if first || l.At.Before(t.lags[oldest].At) {
				oldest, first = key, false
			}
		}
		delete(t.lags, oldest)
	}
	t.lags[k] = Lag{Namespace: c.Namespace, Origin: c.Origin, Last: d, At: now, Seq: c.Seq}
}

// maxLagEntries bounds the (namespace, origin) pairs whose lag is kept.
const maxLagEntries = 1024

// ReplicationLag returns, per namespace and origin, the delay of the last
// batch this node applied from that origin, sorted by namespace and origin.
func (n *Node) ReplicationLag() []Lag {
	n.lag.mu.Lock()
	out := make([]Lag, 0, len(n.lag.lags))
	for _, l := range n.lag.lags {
		out = append(out, l)
	}
	n.lag.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Origin < out[j].Origin
	})
	return out
}
