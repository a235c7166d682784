// Command embed runs two Mycel nodes inside one program, writes on one and
// reads on the other once they have converged.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/mycelnet/mycel/node"
)

func main() {
	if err := run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	a, err := node.Open(ctx, node.DefaultLocalConfig())
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := node.Open(ctx, node.DefaultLocalConfig())
	if err != nil {
		return err
	}
	defer b.Close()
	if err := b.Connect(ctx, a.Addrs()[0]); err != nil {
		return err
	}

	inA, err := a.Namespace(ctx, "inventory")
	if err != nil {
		return err
	}
	inB, err := b.Namespace(ctx, "inventory")
	if err != nil {
		return err
	}
	if err := inA.Put(ctx, "sku-1", []byte("42")); err != nil {
		return err
	}
	if err := inB.Counter("visits").Add(ctx, 3); err != nil {
		return err
	}
	if err := inA.Set("tags").Add(ctx, "blue", "large"); err != nil {
		return err
	}
	if err := inB.Map("profile").Put(ctx, "name", []byte("Ada")); err != nil {
		return err
	}

	// Wait (bounded) until both replicas hold the same state.
	deadline := time.Now().Add(30 * time.Second)
	for {
		da, _ := inA.Digest()
		db, keys := inB.Digest()
		if da == db && keys == 4 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nodes did not converge within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	v, err := inB.Get(ctx, "sku-1")
	if err != nil {
		return err
	}
	visits, _ := inA.Counter("visits").Value(ctx)
	tags, _ := inB.Set("tags").Elements(ctx)
	profile, _ := inA.Map("profile").Value()
	field, _ := profile.Field("name")
	name, _, _ := field.Register()
	fmt.Fprintf(os.Stdout, "converged: sku-1=%s visits=%d tags=%v profile.name=%s\n", v, visits, tags, name)
	return nil
}
