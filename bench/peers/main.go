package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/mycelnet/mycel/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := bench.Command(crdtSystem{multiHead: os.Getenv("DSCRDT_MULTIHEAD") == "1"})
	cmd.Use = "dscrdt-bench"
	cmd.Example = `  dscrdt-bench --workload multi-writer -n 5 -k 10000
  dscrdt-bench --workload all -n 3 -k 1000 --json results.jsonl
  dscrdt-bench --workload sustained --rate 5000 --duration 30s --store pebble`
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "dscrdt-bench:", err)
		if errors.Is(err, bench.ErrParams) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
