package main

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/mycelnet/mycel/bench"
	"github.com/mycelnet/mycel/bench/mycelbench"
	"github.com/mycelnet/mycel/node"
)

// benchCmd is `mycel bench`: the harness of package bench run on Mycel
// nodes. Bad parameters are usage errors (exit 2); SIGINT/SIGTERM stop the
// run and remove its temp stores.
func benchCmd() *cobra.Command {
	sys := &mycelbench.System{}
	cmd := bench.Command(sys)
	cmd.Flags().IntVar(&sys.MeshDegree, "mesh-degree", 0, "Mycel only: every node's gossipsub mesh degree (0: the node default, 6); results name it")
	cmd.Flags().IntVar(&sys.MeshDegreeLow, "mesh-degree-low", 0, "Mycel only: every node's gossipsub Dlo, 1 to the mesh degree (0: the node default); results name it")
	cmd.Flags().BoolVar(&sys.FloodPublish, "flood-publish", false, "Mycel only: nodes also send their own changes straight to every peer, not only along the gossip mesh; results name it")
	cmd.Args = noArgs
	runE := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		// Checked before any node starts, as the daemon checks its flags.
		if d := sys.MeshDegree; d != 0 && (d < 2 || d > 32) {
			return usageError{fmt.Errorf("--mesh-degree %d: want 2 to 32 (or 0 for the node default, 6)", d)}
		}
		if d, lo := cmp.Or(sys.MeshDegree, node.DefaultMeshDegree), sys.MeshDegreeLow; lo < 0 || lo > d {
			return usageError{fmt.Errorf("--mesh-degree-low %d: want 1 to the mesh degree (%d), or 0 for the node default", lo, d)}
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		cmd.SetContext(ctx)
		err := runE(cmd, args)
		if errors.Is(err, bench.ErrParams) {
			return usageError{err}
		}
		return err
	}
	return cmd
}
