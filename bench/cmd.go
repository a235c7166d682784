package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// Command returns the `bench` command for sys. `mycel bench` and the peer
// harness in bench/peers both use it, so they take the same flags and write
// the same JSON fields.
func Command(sys System) *cobra.Command {
	var (
		p         Params
		workloads string
		duration  time.Duration
		timeout   time.Duration
		jsonOut   string
		cpuProf   string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark a cluster of real nodes on 127.0.0.1",
		Long: fmt.Sprintf(`Start N real %s nodes in this process (libp2p hosts on 127.0.0.1, each with its
own store), connect them and run a workload:

  single-writer   node 0 puts K keys; put rate and latency, convergence,
                  propagation delay, bytes per key
  multi-writer    every node puts K/N keys at once; the same figures
  partition-heal  the last node is cut off, node 0 puts K keys, the cut
                  heals; time and bytes until the last node has them all
  late-joiner     an empty node joins a cluster holding K keys; keys/s
  sustained       --rate puts/s over all nodes for --duration; achieved
                  rate, propagation per second, CPU and memory

--workload takes a comma-separated list or "all". Results: a table on stdout
and, with --json FILE, one JSON object per line per workload.`, sys.Name()),
		Example: `  mycel bench --workload multi-writer -n 5 -k 10000
  mycel bench --workload all -n 3 -k 1000 --json results.jsonl
  mycel bench --workload sustained --rate 5000 --duration 30s --store pebble`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if workloads == "" {
				return fmt.Errorf("%w: --workload is required (%s, or all)", ErrParams, strings.Join(Workloads, ", "))
			}
			p.Duration = Seconds(duration)
			p.Timeout = Seconds(timeout)
			list, err := parseWorkloads(workloads)
			if err != nil {
				return err
			}
			for _, w := range list {
				q := p
				q.Workload = w
				// Validated as given: the flags carry the defaults, so a
				// zero here was typed and is refused, not defaulted.
				if err := q.Validate(); err != nil {
					return err
				}
			}
			var out io.Writer
			if jsonOut != "" {
				f, err := os.Create(jsonOut)
				if err != nil {
					return fmt.Errorf("bench: --json: %w", err)
				}
				defer f.Close()
				out = f
			}
			if cpuProf != "" {
				f, err := os.Create(cpuProf)
				if err != nil {
					return fmt.Errorf("bench: --cpuprofile: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("bench: --cpuprofile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			var results []*Result
			for _, w := range list {
				q := p
				q.Workload = w
				fmt.Fprintf(cmd.ErrOrStderr(), "bench: %s %s n=%d k=%d ...\n", sys.Name(), w, q.WithDefaults().N, q.WithDefaults().K)
				res, err := Run(cmd.Context(), sys, q)
				if err != nil {
					return err
				}
				results = append(results, res)
				if out != nil {
					line, err := json.Marshal(res)
					if err != nil {
						return err
					}
					if _, err := fmt.Fprintf(out, "%s\n", line); err != nil {
						return fmt.Errorf("bench: --json: %w", err)
					}
				}
			}
			return WriteTable(cmd.OutOrStdout(), results)
		},
	}
	f := cmd.Flags()
	f.StringVar(&workloads, "workload", "", "workloads to run: "+strings.Join(Workloads, ", ")+", or all (required)")
	f.IntVarP(&p.N, "nodes", "n", 5, "number of nodes")
	f.IntVarP(&p.K, "keys", "k", 10_000, "keys to write")
	f.IntVar(&p.ValueSize, "value-size", 100, "value size in bytes")
	f.StringVar(&p.Store, "store", "mem", "store per node: mem or pebble (temp dir, durable writes)")
	f.StringVar(&p.Topology, "topology", "mesh", "mesh or chain")
	f.StringVar(&p.Transport, "transport", "tcp", "tcp or quic")
	f.DurationVar(&duration, "duration", 10*time.Second, "sustained: how long to offer load")
	f.Float64Var(&p.Rate, "rate", 2000, "sustained: offered puts per second over all nodes")
	f.IntVar(&p.Writers, "writers", 64, "concurrent put callers per writing node")
	f.DurationVar(&timeout, "timeout", 5*time.Minute, "limit on each wait (convergence, heal, join)")
	f.StringVar(&jsonOut, "json", "", "write one JSON object per line per workload to this file")
	f.StringVar(&cpuProf, "cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	return cmd
}

func parseWorkloads(s string) ([]string, error) {
	if s == "all" {
		return Workloads, nil
	}
	var out []string
	for _, w := range strings.Split(s, ",") {
		w = strings.TrimSpace(w)
		known := false
		for _, k := range Workloads {
			known = known || k == w
		}
		if !known {
			return nil, fmt.Errorf("%w: unknown workload %q (want %s or all)", ErrParams, w, strings.Join(Workloads, ", "))
		}
		out = append(out, w)
	}
	return out, nil
}

// WriteTable writes results as an aligned table; figures a workload does
// not measure show as "-". For sustained runs puts/s is the achieved rate;
// dup is DupFactor, gossip copies per delivery.
func WriteTable(w io.Writer, results []*Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tworkload\tn\tk\tstore\tnet\tputs/s\tput p99 ms\tconverge s\treplicated/s\tprop p50 ms\tprop p99 ms\tbytes/key\tfloor\tdup\theal s\tkeys/s\tcpu s\trss MiB\t")
	num := func(v float64, prec int) string {
		if v == 0 {
			return "-"
		}
		return fmt.Sprintf("%.*f", prec, v)
	}
	for _, r := range results {
		puts := r.PutsPerS
		if r.Workload == Sustained {
			puts = r.AchievedPerS // of r.Rate offered
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s/%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			r.System, r.Workload, r.N, r.K, r.Store, r.Transport, r.Topology,
			num(puts, 0), num(r.PutP99MS, 2), num(r.ConvergenceS, 3), num(r.ReplicatedPerS, 0),
			num(r.PropP50MS, 2), num(r.PropP99MS, 2), num(r.BytesPerKey, 0), num(r.FloorBytesPerKey, 0),
			num(r.DupFactor, 2), num(r.HealS, 3), num(r.KeysPerS, 0), num(r.CPUS, 2), num(r.RSSPeakMiB, 0))
	}
	return tw.Flush()
}
