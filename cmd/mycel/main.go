// Command mycel is the Mycel daemon and its command-line client.
//
//	mycel daemon [flags]          run a node and its HTTP API (see daemon.go)
//	mycel put|get|del|keys|counter|set|map|digest|watch|status|peers
//	                              talk to a running daemon over its API
//	mycel version
//
// The command is a thin layer: flags, config file and environment become a
// node.Config and library calls (daemon), or HTTP requests (clients). The
// HTTP API lives in internal/api. Exit codes: 0 ok, 1 error, 2 usage.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
	}
	return v
}

// usageError marks a mistake in how the command was called (exit code 2).
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

// noArgs and nArgs wrap cobra's argument checks as usage errors.
func noArgs(cmd *cobra.Command, args []string) error {
	if err := cobra.NoArgs(cmd, args); err != nil {
		return usageError{err}
	}
	return nil
}

// rangeArgs accepts min to max arguments, the first (a key or a file) not
// empty: an empty key would name the listing route instead.
func rangeArgs(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.RangeArgs(min, max)(cmd, args); err != nil {
			return usageError{err}
		}
		if len(args) > 0 && args[0] == "" {
			return usageError{fmt.Errorf("%s: the first argument must not be empty", cmd.Name())}
		}
		return nil
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "mycel",
		Short: "Mycel: a peer-to-peer sync node",
		Long: `Mycel is a peer-to-peer sync node: leaderless nodes find each other over
libp2p, spread every change by gossip and merge replicas with CRDTs.

Run a node with "mycel daemon"; talk to it with the client commands, which
use its HTTP API (--api, default 127.0.0.1:5080).

Exit codes: 0 ok, 1 error, 2 usage.`,
		Example: `  mycel daemon                      # start a node (data in ./mycel-data)
  mycel put greeting hello          # write a key in namespace "default"
  mycel get greeting
  mycel counter visits --add 1
  mycel set tags --add blue --add red
  mycel keys --prefix gr
  mycel watch --prefix gr           # stream changes
  mycel status`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%v (see %s --help)", err, cmd.CommandPath())}
	})
	root.AddCommand(daemonCmd(), versionCmd(), simCmd(), benchCmd())
	root.AddCommand(clientCmds()...)
	return root
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version",
		Example: `  mycel version                     # e.g. "mycel v1.2.3 (0123456789ab)": release, commit`,
		Args:    noArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "mycel", versionString())
		},
	}
}

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	root := rootCmd()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintln(os.Stderr, "mycel:", err)
	var u usageError
	if errors.As(err, &u) || strings.HasPrefix(err.Error(), "unknown command") {
		return 2
	}
	return 1
}
