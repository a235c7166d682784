package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestHelpHasExamples runs `mycel --help` and `mycel <command> --help` for
// every command in the tree: each exits 0 and shows examples that run it
// (the issue: "each subcommand's help explains with examples").
func TestHelpHasExamples(t *testing.T) {
	var paths [][]string // command paths without "mycel"; nil is the root
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		paths = append(paths, path)
		for _, sub := range c.Commands() {
			walk(sub, append(slices.Clone(path), sub.Name()))
		}
	}
	walk(rootCmd(), nil)
	var names []string
	for _, p := range paths {
		names = append(names, strings.Join(p, " "))
	}
	for _, want := range []string{"daemon", "put", "get", "del", "keys", "counter", "set", "digest", "watch", "status", "peers", "version", "sim", "sim run", "bench"} {
		if !slices.Contains(names, want) {
			t.Fatalf("no command %q in the tree %q", want, names)
		}
	}
	for _, path := range paths {
		name := strings.Join(append([]string{"mycel"}, path...), " ")
		t.Run(name, func(t *testing.T) {
			out, code := cli(t, append(slices.Clone(path), "--help")...)
			if code != 0 {
				t.Fatalf("%s --help: exit %d\n%s", name, code, out)
			}
			_, examples, ok := strings.Cut(out, "\nExamples:\n")
			examples, _, _ = strings.Cut(examples, "\n\n")
			if !ok || !strings.Contains(examples, "  "+name) {
				t.Fatalf("%s --help has no example running %q:\n%s", name, name, out)
			}
		})
	}
}
