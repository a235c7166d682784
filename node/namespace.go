package node

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/gossip"
	"github.com/mycelnet/mycel/store"
)

// Namespace is a replicated keyspace. Its methods are safe for concurrent
// use. Writes return once durable locally (unless Config.NoSync) and reach
// other nodes through gossip and sync.
type Namespace struct {
	n  *Node
	st *store.Namespace
}

// Namespace opens (joining replication on first use) the named namespace.
// Joining starts pulling the namespace from the peers connected at that
// moment; Namespace.WaitFirstSync waits for that first sync to end.
func (n *Node) Namespace(ctx context.Context, name string) (*Namespace, error) {
	n.mu.Lock()
	s, closed := n.spaces[name], n.ctx.Err() != nil
	n.mu.Unlock()
	switch {
	case s != nil:
		return s, nil
	case closed:
		return nil, ErrClosed
	}
	// Outside n.mu: a new namespace's registration waits for an fsync,
	// which the node's other namespaces need not wait for. The store
	// registers each name once, however many callers ask.
	st, err := n.st.Namespace(ctx, name)
	if err != nil {
		if errors.Is(err, store.ErrInvalidName) {
			return nil, fmt.Errorf("%w: namespace: %v", ErrInvalid, err)
		}
		return nil, mapErr(err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if s := n.spaces[name]; s != nil {
		return s, nil // another caller joined it meanwhile
	}
	if n.ctx.Err() != nil {
		return nil, ErrClosed
	}
	s = &Namespace{n: n, st: st}
	// Watchers resume by position: start the namespace's published position
	// at what the store has committed (OnCommit has reported all of it).
	n.watchers.start(name, st.Position())
	if err := n.rep.Join(name, replicaAdapter{st}, n.cfg.Writers[name]); err != nil {
		return nil, mapErr(err)
	}
	n.spaces[name] = s
	return s, nil
}

// HasNamespace reports whether this node holds the named namespace (it
// was opened in this process, or on an earlier run: a node opens every
// namespace it holds at start). Unlike Namespace it creates nothing.
func (n *Node) HasNamespace(name string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.spaces[name] != nil
}

// Namespaces returns the names of the namespaces this node holds, sorted.
func (n *Node) Namespaces() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, len(n.spaces))
	for name := range n.spaces {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// Name returns the namespace's name.
func (s *Namespace) Name() string { return s.st.Name() }

// MeshPeers returns the peers this node's gossip mesh holds in the
// namespace: those it relays others' batches to and hears them from first.
// In a cluster of more than a few nodes, one or none can mean batches
// reach the node late, through gossip's IHAVE rounds or sync (see
// Config.MeshDegreeLow).
func (s *Namespace) MeshPeers() []peer.ID { return s.n.mesh.MeshPeers(s.Name()) }

func (s *Namespace) apply(ctx context.Context, op crdt.Op) error {
	_, err := s.Apply(ctx, op)
	return err
}

// Apply performs op and returns the delta it committed: the dots it
// created (with, for a register put, the entry's HLC stamp) and, in its
// context, the dots it replaced or removed. It is for tools that check
// replication against a model of the acknowledged operations (the
// simulator); applications use Put, Delete, Counter, Set and Map.
func (s *Namespace) Apply(ctx context.Context, op crdt.Op) (crdt.Delta, error) {
	d, err := s.st.Apply(ctx, op)
	if errors.Is(err, store.ErrClosed) {
		return crdt.Delta{}, ErrClosed
	}
	return d, err
}

// Observed reports whether this replica's causal context holds d: the
// write that created dot d, or a later one that replaced or removed it,
// has been applied here.
func (s *Namespace) Observed(d crdt.Dot) bool {
	var ok bool
	s.st.View(func(st *crdt.Namespace, _ *crdt.Context) {
		ok = st.ContextContains(d)
	})
	return ok
}

// Put writes val to the register under key.
func (s *Namespace) Put(ctx context.Context, key string, val []byte) error {
	return s.apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: key, Value: val})
}

// Get returns the register's winning value (latest by hybrid clock, ties by
// replica id), or ErrNotFound.
func (s *Namespace) Get(_ context.Context, key string) ([]byte, error) {
	v, ok := s.st.Get(key)
	if !ok {
		return nil, ErrNotFound
	}
	b, _, ok := v.Register()
	if !ok {
		return nil, fmt.Errorf("%w: %q holds a %s", ErrWrongType, key, v.Kinds())
	}
	return b, nil
}

// GetAll returns every concurrent value of the register (siblings), the
// winner last.
func (s *Namespace) GetAll(_ context.Context, key string) ([][]byte, error) {
	v, ok := s.st.Get(key)
	if !ok {
		return nil, ErrNotFound
	}
	regs := v.Registers()
	if len(regs) == 0 {
		return nil, fmt.Errorf("%w: %q holds a %s", ErrWrongType, key, v.Kinds())
	}
	out := make([][]byte, len(regs))
	for i, r := range regs {
		out[i] = []byte(r.Value)
	}
	return out, nil
}

// Value returns the raw replicated value under key (any type).
func (s *Namespace) Value(key string) (crdt.Value, bool) { return s.st.Get(key) }

// Delete removes the key and everything under it that this node has seen;
// a concurrent write elsewhere survives.
func (s *Namespace) Delete(ctx context.Context, key string) error {
	return s.apply(ctx, crdt.Op{Kind: crdt.OpDelete, Key: key})
}

// Keys returns up to limit keys (all if limit <= 0) with the prefix that
// sort after after, in order.
func (s *Namespace) Keys(prefix, after string, limit int) []string {
	return s.st.Keys(prefix, after, limit)
}

// Digest returns the namespace digest and key count: equal digests mean
// equal replicas.
func (s *Namespace) Digest() (crdt.Digest, int) { return s.st.Digest() }

// Watch delivers every change (local or remote) to keys with the prefix,
// in commit order, until ctx ends or the node closes (the channel is then
// closed). A reader more than a million events behind is cut off the same
// way rather than allowed to hold back commits.
func (s *Namespace) Watch(ctx context.Context, prefix string) <-chan Event {
	w, _, _ := s.n.watchers.add(ctx, s.Name(), prefix, false)
	return w.ch
}

// Position returns the namespace's last commit position on this node: a
// watcher that has seen everything up to it can later resume with
// WatchFrom, across restarts.
func (s *Namespace) Position() uint64 { return s.n.watchers.lastOf(s.Name()) }

// WatchFrom is Watch resuming after position from (an Event.Position seen
// before, possibly before a restart): first every change committed after
// from, then live changes, with no gap and no repeat. Replayed events carry
// the key's current value (events of one key share it: do not modify it).
// If the changes after from are no longer kept (the log was compacted past
// them), or are more than 100,000 events, it fails with ErrCompacted:
// re-read the keys, then Watch. A watcher that stopped inside a commit (after an event
// that was not LastInCommit) resumes with WatchAfter instead.
func (s *Namespace) WatchFrom(ctx context.Context, prefix string, from uint64) (<-chan Event, error) {
	return s.watchAfter(ctx, prefix, from, -1)
}

// WatchAfter is Watch resuming just after the event (position, index):
// the rest of that commit's changes, then every later one, then live
// changes, with no gap and no repeat. It fails as WatchFrom does, and also
// with ErrCompacted if the commit at position is no longer kept or was a
// state reconciliation (whose changes the log does not hold).
func (s *Namespace) WatchAfter(ctx context.Context, prefix string, position uint64, index int) (<-chan Event, error) {
	if position == 0 || index < 0 {
		return nil, fmt.Errorf("%w: event (%d, %d) cannot exist: positions start at 1, indexes at 0", ErrInvalid, position, index)
	}
	return s.watchAfter(ctx, prefix, position, index)
}

// watchAfter replays from position (only its keys past index) or, with
// index -1, from after position.
func (s *Namespace) watchAfter(ctx context.Context, prefix string, position uint64, index int) (<-chan Event, error) {
	w, last, closed := s.n.watchers.add(ctx, s.Name(), prefix, true)
	if closed {
		return nil, ErrClosed
	}
	if position > last {
		s.n.watchers.remove(w)
		return nil, fmt.Errorf("%w: position %d is ahead of this node (%d)", ErrInvalid, position, last)
	}
	from := position
	if index >= 0 {
		from = position - 1 // replay the commit at position too
	}
	var history []Event
	// Replayed events carry the key's current value: one copy per key,
	// shared by its events (as a live commit's watchers share one).
	values := make(map[string]crdt.Value)
	err := s.st.Replay(ctx, from, last, func(c store.Commit) error {
		n := c.Delta.Len()
		if c.Position == position && index >= n {
			return fmt.Errorf("%w: the commit at position %d changed %d keys, so it has no event %d", ErrInvalid, position, n, index)
		}
		for i := 0; i < n; i++ {
			if c.Position == position && i <= index {
				continue
			}
			key := c.Delta.Key(i)
			if !strings.HasPrefix(key, prefix) {
				continue
			}
			if len(history) >= maxWatchReplay {
				return fmt.Errorf("%w: more than %d changes after position %d", ErrCompacted, maxWatchReplay, position)
			}
			v, ok := values[key]
			if !ok {
				v, _ = s.st.Get(key)
				values[key] = v
			}
			history = append(history, Event{Namespace: c.Namespace, Key: key, Value: v, Origin: c.Origin, Seq: c.Seq,
				Position: c.Position, Index: i, LastInCommit: i == n-1})
		}
		return nil
	})
	if err != nil {
		s.n.watchers.remove(w)
		if errors.Is(err, store.ErrCompacted) {
			return nil, fmt.Errorf("%w: %v", ErrCompacted, err)
		}
		return nil, mapErr(err)
	}
	w.replayed(history)
	return w.ch, nil
}

// Counter is a replicated PN counter.
type Counter struct {
	s   *Namespace
	key string
}

// Counter returns the counter under key.
func (s *Namespace) Counter(key string) Counter { return Counter{s, key} }

// Add adds delta (negative to subtract).
func (c Counter) Add(ctx context.Context, delta int64) error {
	return c.s.apply(ctx, crdt.Op{Kind: crdt.OpCounterAdd, Key: c.key, N: delta})
}

// Value returns the counter's value (0 if absent).
func (c Counter) Value(context.Context) (int64, error) {
	v, ok := c.s.st.Get(c.key)
	if !ok {
		return 0, nil
	}
	if k := v.Kinds(); k&crdt.KindCounter == 0 {
		return 0, fmt.Errorf("%w: %q holds a %s", ErrWrongType, c.key, k)
	}
	return v.Counter(), nil
}

// Set is a replicated add-wins set of strings.
type Set struct {
	s   *Namespace
	key string
}

// Set returns the set under key.
func (s *Namespace) Set(key string) Set { return Set{s, key} }

// Update removes then adds elements in one operation.
func (t Set) Update(ctx context.Context, add, remove []string) error {
	return t.s.apply(ctx, crdt.Op{Kind: crdt.OpSetUpdate, Key: t.key, Add: add, Remove: remove})
}

// Add adds elements.
func (t Set) Add(ctx context.Context, elems ...string) error { return t.Update(ctx, elems, nil) }

// Remove removes the elements this node has seen added.
func (t Set) Remove(ctx context.Context, elems ...string) error { return t.Update(ctx, nil, elems) }

// Elements returns the elements, sorted.
func (t Set) Elements(context.Context) ([]string, error) {
	v, ok := t.s.st.Get(t.key)
	if !ok {
		return nil, nil
	}
	if k := v.Kinds(); k&crdt.KindSet == 0 {
		return nil, fmt.Errorf("%w: %q holds a %s", ErrWrongType, t.key, k)
	}
	return v.SetElements(), nil
}

// Map is a replicated map of fields, each a register, counter, set, flag or
// nested map.
type Map struct {
	s    *Namespace
	key  string
	path []string
}

// Map returns the map under key.
func (s *Namespace) Map(key string) Map { return Map{s: s, key: key} }

// Map returns the nested map in field.
func (m Map) Map(field string) Map {
	return Map{s: m.s, key: m.key, path: append(append([]string(nil), m.path...), field)}
}

func (m Map) op(kind crdt.OpKind, field string) crdt.Op {
	return crdt.Op{Kind: kind, Key: m.key, Path: append(append([]string(nil), m.path...), field)}
}

// Put writes a register field.
func (m Map) Put(ctx context.Context, field string, val []byte) error {
	op := m.op(crdt.OpPut, field)
	op.Value = val
	return m.s.apply(ctx, op)
}

// Add adds to a counter field.
func (m Map) Add(ctx context.Context, field string, delta int64) error {
	op := m.op(crdt.OpCounterAdd, field)
	op.N = delta
	return m.s.apply(ctx, op)
}

// SetAdd adds elements to a set field.
func (m Map) SetAdd(ctx context.Context, field string, elems ...string) error {
	op := m.op(crdt.OpSetUpdate, field)
	op.Add = elems
	return m.s.apply(ctx, op)
}

// Flag enables or disables a flag field.
func (m Map) Flag(ctx context.Context, field string, on bool) error {
	op := m.op(crdt.OpFlag, field)
	op.Enable = on
	return m.s.apply(ctx, op)
}

// Delete removes a field (observed-remove: concurrent updates survive).
func (m Map) Delete(ctx context.Context, field string) error {
	return m.s.apply(ctx, m.op(crdt.OpDelete, field))
}

// Value returns the map's current value (crdt.Value with Field accessors).
func (m Map) Value() (crdt.Value, bool) {
	v, ok := m.s.st.Get(m.key)
	for _, f := range m.path {
		if !ok {
			break
		}
		v, ok = v.Field(f)
	}
	return v, ok
}

// replicaAdapter lets gossip reach a store namespace.
type replicaAdapter struct{ st *store.Namespace }

func (a replicaAdapter) Seen() crdt.Context                           { return a.st.Seen() }
func (a replicaAdapter) HasSeen(o crdt.ReplicaID, seq uint64) bool    { return a.st.HasSeen(o, seq) }
func (a replicaAdapter) Kept() crdt.Context                           { return a.st.Kept() }
func (a replicaAdapter) Gone() crdt.Context                           { return a.st.Gone() }
func (a replicaAdapter) Flush(ctx context.Context) error              { return a.st.Flush(ctx) }
func (a replicaAdapter) View(fn func(*crdt.Namespace, *crdt.Context)) { a.st.View(fn) }

func (a replicaAdapter) ReadLog(ctx context.Context, o crdt.ReplicaID, seq uint64) (gossip.Batch, bool, error) {
	b, ok, err := a.st.ReadLog(ctx, o, seq)
	if errors.Is(err, store.ErrCorrupt) {
		// Served as compacted: the peer reconciles state instead (the key
		// states hold the entry's effects), and the store's next
		// compaction removes it. As an error it failed every sync session
		// that reached it, until retention made it the oldest entry.
		return gossip.Batch{}, false, nil
	}
	return gossip.Batch{Origin: b.Origin, Seq: b.Seq, Delta: b.Delta, Encoded: b.Encoded, Signer: b.Signer, Sig: b.Sig}, ok, err
}

func (a replicaAdapter) ApplyBatch(ctx context.Context, b gossip.Batch) (bool, error) {
	return a.st.ApplyBatch(ctx, store.Batch{Origin: b.Origin, Seq: b.Seq, Delta: b.Delta, Encoded: b.Encoded, Signer: b.Signer, Sig: b.Sig}, store.WithoutWait())
}

func (a replicaAdapter) ApplyState(ctx context.Context, deltas []crdt.Delta, seen, cctx crdt.Context, t gossip.ChangeTracker, merge bool) (bool, error) {
	return a.st.ApplyStateTracked(ctx, deltas, seen, cctx, t.(*store.ChangeTracker), merge)
}

func (a replicaAdapter) TrackChanges() gossip.ChangeTracker { return a.st.TrackChanges() }
