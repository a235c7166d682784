//go:build race

package main

// Under go test -race the daemon binary is built with -race too, so the
// process tests check the daemon's code for races, not just the test's.
func init() { buildFlags = append(buildFlags, "-race") }
