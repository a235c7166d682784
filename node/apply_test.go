package node

import (
	"context"
	"testing"
	"time"

	"github.com/mycelnet/mycel/crdt"
)

// TestApplyReturnsDeltaAndObserved: Apply hands back the committed delta
// (a put's new dot and HLC stamp; a delete's context covering that dot),
// and Observed tells which replicas hold a dot, locally and after
// replication.
func TestApplyReturnsDeltaAndObserved(t *testing.T) {
	ctx := context.Background()
	nodes := cluster(t, 2, nil)
	a, b := mustNS(t, nodes[0], "obs"), mustNS(t, nodes[1], "obs")
	d, err := a.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "k", Value: []byte("v1")})
	if err != nil {
		t.Fatal(err)
	}
	if d.Len() != 1 || d.Key(0) != "k" {
		t.Fatalf("delta names %d keys", d.Len())
	}
	regs := d.Value(0).Registers()
	if len(regs) != 1 || regs[0].Value != "v1" || regs[0].Dot.Replica != nodes[0].Replica() || regs[0].Time.IsZero() {
		t.Fatalf("put delta registers: %+v", regs)
	}
	dot := regs[0].Dot
	if !a.Observed(dot) || b.Observed(dot) {
		t.Fatalf("before replication: a %v, b %v", a.Observed(dot), b.Observed(dot))
	}
	del, err := a.Apply(ctx, crdt.Op{Kind: crdt.OpDelete, Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if c := del.Context(); !c.Contains(dot) {
		t.Fatal("the delete's context does not cover the put's dot")
	}
	connect(t, nodes[0], nodes[1])
	deadline := time.Now().Add(10 * time.Second)
	for !b.Observed(dot) {
		if time.Now().After(deadline) {
			t.Fatal("b never observed the put")
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	if err := nodes[0].Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(ctx, crdt.Op{Kind: crdt.OpPut, Key: "k", Value: []byte("v2")}); err != ErrClosed {
		t.Fatalf("apply on a closed node: %v", err)
	}
}
