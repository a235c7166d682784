package node

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/store"
)

// Datastore returns the namespace as a go-datastore Batching datastore: a
// drop-in for code written against go-ds-crdt or any go-datastore. Each
// datastore key (its String form) is a register key of the namespace; Get
// returns the register's winning value. Writes are durable when Put
// returns; a Batch's writes share one fsync at Commit.
func (s *Namespace) Datastore() ds.Batching { return &nsDatastore{s: s} }

type nsDatastore struct{ s *Namespace }

var _ ds.Batching = (*nsDatastore)(nil)

func (d *nsDatastore) Get(ctx context.Context, key ds.Key) ([]byte, error) {
	v, err := d.s.Get(ctx, key.String())
	if errors.Is(err, ErrNotFound) {
		return nil, ds.ErrNotFound
	}
	return v, err
}

func (d *nsDatastore) Has(ctx context.Context, key ds.Key) (bool, error) {
	_, err := d.Get(ctx, key)
	if errors.Is(err, ds.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (d *nsDatastore) GetSize(ctx context.Context, key ds.Key) (int, error) {
	v, err := d.Get(ctx, key)
	if err != nil {
		return -1, err
	}
	return len(v), nil
}

func (d *nsDatastore) Put(ctx context.Context, key ds.Key, value []byte) error {
	return d.s.Put(ctx, key.String(), value)
}

// Delete removes key. Deleting a key that is not there does nothing and
// succeeds, also for a key no register could be stored under (too long,
// not UTF-8), as go-datastore asks.
func (d *nsDatastore) Delete(ctx context.Context, key ds.Key) error {
	if _, ok := d.s.Value(key.String()); !ok {
		return nil
	}
	return d.s.Delete(ctx, key.String())
}

// Sync makes every write so far durable.
func (d *nsDatastore) Sync(ctx context.Context, _ ds.Key) error { return mapErr(d.s.n.st.Flush(ctx)) }

// Close does nothing: the node owns the namespace.
func (d *nsDatastore) Close() error { return nil }

func (d *nsDatastore) Query(ctx context.Context, q query.Query) (query.Results, error) {
	// Collect the register keys under the prefix in order, then let
	// go-datastore apply filters, orders, offset and limit exactly.
	prefix := ds.NewKey(q.Prefix).String()
	if prefix != "/" {
		prefix += "/"
	} else {
		prefix = "/"
	}
	// One read of the state, under one lock hold: a query sees each batch
	// all or none, as Commit promises. Under the lock it only takes each
	// winning value's (immutable) string; the bytes are copied after, so
	// writers wait for a scan of the keys, not for a copy of the values.
	type found struct{ key, val string }
	var hits []found
	d.s.st.View(func(st *crdt.Namespace, _ *crdt.Context) {
		for _, k := range st.Keys(prefix) {
			v, _ := st.Get(k)
			val, isReg := v.RegisterString()
			if !isReg || !strings.HasPrefix(k, "/") {
				continue // not a datastore-shaped register key
			}
			hits = append(hits, found{k, val})
		}
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	entries := make([]query.Entry, len(hits))
	for i, h := range hits {
		entries[i] = query.Entry{Key: strings.Clone(h.key), Size: len(h.val)} // the state's keys share its storage
		if !q.KeysOnly {
			entries[i].Value = []byte(h.val)
		}
	}
	return query.NaiveQueryApply(q, query.ResultsWithEntries(q, entries)), nil
}

func (d *nsDatastore) Batch(context.Context) (ds.Batch, error) {
	return &nsBatch{d: d, ops: make(map[ds.Key]*[]byte)}, nil
}

// nsBatch buffers writes; Commit applies them without waiting for each
// fsync, then waits once. It is safe for concurrent use (go-ds-crdt's is,
// and code moving from it may rely on that).
type nsBatch struct {
	d   *nsDatastore
	mu  sync.Mutex
	ops map[ds.Key]*[]byte // nil: delete
}

func (b *nsBatch) Put(_ context.Context, key ds.Key, value []byte) error {
	v := append([]byte(nil), value...)
	b.mu.Lock()
	b.ops[key] = &v
	b.mu.Unlock()
	return nil
}

func (b *nsBatch) Delete(_ context.Context, key ds.Key) error {
	b.mu.Lock()
	b.ops[key] = nil
	b.mu.Unlock()
	return nil
}

// Commit applies the batch as one unit when its changes fit in one log
// batch (store.MaxOpBytes, 2 MiB): readers and peers see all or none, a
// crash keeps all or none, and if any write is refused (a key or value over
// the limits, a key holding a counter or set) nothing is applied and the
// batch is kept. A larger batch commits in units of up to 1 MiB, in key
// order, each all or none, and a crash between units keeps the earlier
// ones. It returns once everything is durable (unless NoSync).
func (b *nsBatch) Commit(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.d.s.st
	keys := make([]ds.Key, 0, len(b.ops))
	for k := range b.ops {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, c ds.Key) int { return strings.Compare(a.String(), c.String()) })
	ops := make([]crdt.Op, 0, len(keys))
	size := 0
	kept := keys[:0]
	for _, k := range keys {
		op := crdt.Op{Kind: crdt.OpDelete, Key: k.String()}
		if v := b.ops[k]; v != nil {
			op = crdt.Op{Kind: crdt.OpPut, Key: k.String(), Value: *v}
		} else if _, ok := b.d.s.Value(k.String()); !ok {
			continue // a delete of nothing, as Delete: even of a key no register could hold
		}
		kept = append(kept, k)
		if err := op.Validate(b.d.s.n.cfg.Limits); err != nil {
			return mapErr(err)
		}
		ops = append(ops, op)
		size += len(op.Key) + len(op.Value) + 64
	}
	unit := len(ops)
	if size > store.MaxOpBytes/2 {
		unit = 0 // split by size below
	}
	for start := 0; start < len(ops); {
		end, bytes := start, 0
		for end < len(ops) && (unit > 0 || end == start || bytes+len(ops[end].Key)+len(ops[end].Value)+64 <= 1<<20) {
			bytes += len(ops[end].Key) + len(ops[end].Value) + 64
			end++
		}
		if err := st.ApplyAll(ctx, ops[start:end], store.WithoutWait()); err != nil {
			return mapErr(err)
		}
		for _, k := range kept[start:end] { // applied: a retry must not repeat them
			delete(b.ops, k)
		}
		start = end
	}
	b.ops = make(map[ds.Key]*[]byte)
	return mapErr(st.Flush(ctx))
}

// ForgetCleanClose makes the next Open on datastore d (WithDatastore)
// treat the last Close as a crash (see store.ForgetCleanClose): for
// simulators, whose crashes close the node.
func ForgetCleanClose(ctx context.Context, d ds.Datastore) error {
	return store.ForgetCleanClose(ctx, d)
}
