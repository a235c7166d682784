package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/mycelnet/mycel/sim"
)

// errBudget: the simulation ran but missed an expect budget (exit code 1).
var errBudget = errors.New("the run missed its budgets")

func simCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run the network partition simulator",
		Long: `Run Mycel nodes over a simulated network with regions, latency, loss and
partitions, check convergence and lost writes, and report timings and traffic.`,
		Example: `  mycel sim run sim/scenarios/three-regions.yaml
  mycel sim run sim/scenarios/three-regions.yaml --seed 7 --json report.json --svg divergence.svg`,
	}
	var seed uint64
	var jsonOut, svgOut, backend string
	run := &cobra.Command{
		Use:   "run SCENARIO.yaml",
		Short: "Run one scenario in real time",
		Example: `  mycel sim run sim/scenarios/three-regions.yaml
  mycel sim run sim/scenarios/three-regions.yaml --seed 7 --json report.json --svg divergence.svg
  sudo mycel sim run sim/scenarios/netns-split.yaml --backend netns`,
		Args: rangeArgs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if backend != "simnet" && backend != "netns" {
				return usageError{fmt.Errorf("--backend %q: simnet or netns", backend)}
			}
			sc, err := sim.LoadScenario(args[0])
			if err != nil {
				return usageError{err}
			}
			if backend == "netns" {
				if err := sc.ValidateNetns(); err != nil {
					return usageError{fmt.Errorf("%s: %w", args[0], err)}
				}
			}
			for _, out := range []struct{ flag, path string }{{"json", jsonOut}, {"svg", svgOut}} {
				if err := writable(out.flag, out.path); err != nil {
					return err
				}
			}
			if !cmd.Flags().Changed("seed") {
				seed = 1
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "scenario %s, seed %d (pass --seed %d to repeat it)\n", args[0], seed, seed)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			errOut := cmd.ErrOrStderr()
			progress := func(p sim.Progress) {
				state := "converged"
				if p.Distinct > 1 {
					state = fmt.Sprintf("%d distinct states", p.Distinct)
				}
				fmt.Fprintf(errOut, "\r%6.1f s  %6d ops acknowledged  %d nodes: %-20s", p.TMS/1000, p.Ops, p.Nodes, state)
			}
			var rep *sim.Report
			if backend == "netns" {
				bin, berr := os.Executable()
				if berr != nil {
					return berr
				}
				rep, err = sim.RunNetns(ctx, sc, seed, sim.NetnsOptions{Binary: bin, Progress: progress,
					Logf: func(format string, args ...any) { fmt.Fprintf(errOut, "\r"+format+"\n", args...) }})
			} else {
				rep, err = sim.Run(ctx, sc, seed, sim.WithProgress(progress))
			}
			fmt.Fprintln(errOut)
			if err != nil {
				return err
			}
			printReport(cmd, rep)
			if jsonOut != "" {
				b, err := json.MarshalIndent(rep, "", "  ")
				if err != nil {
					return err
				}
				if err := os.WriteFile(jsonOut, append(b, '\n'), 0o644); err != nil {
					return err
				}
			}
			if svgOut != "" {
				f, err := os.Create(svgOut)
				if err != nil {
					return err
				}
				if err := sim.WriteSVG(f, rep); err != nil {
					f.Close()
					return err
				}
				if err := f.Close(); err != nil {
					return err
				}
			}
			if !rep.Passed {
				return errBudget
			}
			return nil
		},
	}
	run.Flags().Uint64Var(&seed, "seed", 1, "seed for the workload, the fault schedule and the network")
	run.Flags().StringVar(&backend, "backend", "simnet", "simnet: nodes in this process over a simulated network; netns: real daemon processes in network namespaces (Linux, root; no latency or loss)")
	run.Flags().StringVar(&jsonOut, "json", "", "write the JSON report to this file")
	run.Flags().StringVar(&svgOut, "svg", "", "write an SVG chart of divergence over time, partitions shaded")
	cmd.AddCommand(run)
	return cmd
}

// writable checks, before a run that can take minutes, that the file a
// flag names can be written: a report the run cannot save is lost with it.
// A file it had to create for the check is removed again; an existing one
// is left as it is (not truncated).
func writable(flag, path string) error {
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err == nil {
		f.Close()
		return os.Remove(path)
	}
	if errors.Is(err, fs.ErrExist) {
		f, err = os.OpenFile(path, os.O_WRONLY, 0)
		if err == nil {
			return f.Close()
		}
	}
	return usageError{fmt.Errorf("--%s: %w", flag, err)}
}

func printReport(cmd *cobra.Command, r *sim.Report) {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "nodes\t%d\n", r.Nodes)
	fmt.Fprintf(w, "ops\t%d acknowledged, %d failed, %d skipped (node down)\n", r.Ops, r.FailedOps, r.SkippedOps)
	fmt.Fprintf(w, "converged\t%v (%.0f ms after the last heal or write)\n", r.Converged, r.ConvergenceMS)
	fmt.Fprintf(w, "lost writes\t%d (%d lost with wiped disks, not counted)\n", r.LostWrites, r.LostOnWiped)
	fmt.Fprintf(w, "propagation\tp50 %.1f ms, p99 %.1f ms (%d ops not everywhere)\n", r.Propagation.P50, r.Propagation.P99, r.Unpropagated)
	for _, p := range r.PropagationByPair {
		fmt.Fprintf(w, "  %s → %s\tp50 %.1f ms, p99 %.1f ms\n", p.From, p.To, p.P50, p.P99)
	}
	for _, h := range r.Heals {
		rec := "never"
		if h.RecoveredMS >= 0 {
			rec = fmt.Sprintf("%.0f ms", h.RecoveredMS)
		}
		var detail string
		if h.Slowest != "" {
			detail = fmt.Sprintf(" (half the nodes within %.0f ms; last %s)", h.Nodes.P50, h.Slowest)
		}
		fmt.Fprintf(w, "recovery\t%s at %.1f s: every live node caught up after %s%s\n", h.Fault, h.AtMS/1000, rec, detail)
	}
	c := r.Cost
	if r.Backend == "netns" {
		// Real interfaces: the packets and bytes every node sent, not
		// split by protocol.
		fmt.Fprintf(w, "traffic\t%d packets, %d bytes sent (%.1f packets, %.0f bytes per op)\n", r.Messages, r.Bytes, c.MessagesPerOp, c.BytesPerOp)
		fmt.Fprintf(w, "timing\t%.1f s, ops at most %.0f ms late\n", r.SimulatedMS/1000, r.MaxLagMS)
		printOverload(w, r)
		printVerdict(w, r)
		return
	}
	fmt.Fprintf(w, "traffic\t%d packets, %d bytes\n", r.Messages, r.Bytes)
	if m := r.Mesh; m != nil {
		fmt.Fprintf(w, "mesh\t%s at the end (largest %d nodes); %d nodes with one mesh link, %d with none; %d links held by one side only\n", partsText(m.Parts), m.Largest, m.OneLink, m.NoLink, m.OneWay)
	}
	fmt.Fprintf(w, "cost\t%.1f messages, %.0f bytes per op; duplicate gossip copies %.1f%%\n", c.MessagesPerOp, c.BytesPerOp, 100*c.DuplicatesRatio)
	for _, t := range []struct {
		name string
		t    sim.Traffic
	}{{"gossip", c.Gossip}, {"  data", c.GossipData}, {"  control", c.GossipControl}, {"sync", c.Sync}, {"other", c.Other}} {
		fmt.Fprintf(w, "  %s\t%d messages, %d bytes\n", t.name, t.t.Messages, t.t.Bytes)
	}
	fmt.Fprintf(w, "timing\t%.1f s simulated, ops at most %.0f ms late\n", r.SimulatedMS/1000, r.MaxLagMS)
	printOverload(w, r)
	printVerdict(w, r)
}

// overloadLagMS is how late an op may start before the summary warns that
// the host fell behind real time. Runs that keep up on two cores started
// ops at most 9 ms (9 nodes), 129 ms (100 nodes at 30 ops/s) and 308 ms
// (100 nodes at 100 ops/s) late; one that fell behind, 1.3 s and more.
const overloadLagMS = 500

// printOverload warns when the run fell behind real time: the nodes then
// wait for the host's CPU, and the propagation and recovery times measure
// that wait as much as the protocol.
func printOverload(w io.Writer, r *sim.Report) {
	if r.MaxLagMS < overloadLagMS {
		return
	}
	why := fmt.Sprintf("an op started %.0f ms late", r.MaxLagMS)
	if r.Backend != "netns" {
		why += fmt.Sprintf("; gossipsub dropped %d RPCs on full queues", r.Cost.GossipDroppedRPCs)
	}
	fmt.Fprintf(w, "warning\tthe host fell behind real time (%s): timings include its overload; fewer nodes or a lower rate measure the protocol\n", why)
}

func printVerdict(w *tabwriter.Writer, r *sim.Report) {
	verdict := "passed"
	if !r.Passed {
		verdict = fmt.Sprintf("FAILED: %v", r.Failures)
	}
	fmt.Fprintf(w, "budgets\t%s\n", verdict)
	w.Flush()
}

// partsText says how many parts a mesh has: "1 part", "9 parts".
func partsText(n int) string {
	if n == 1 {
		return "1 part"
	}
	return fmt.Sprintf("%d parts", n)
}
