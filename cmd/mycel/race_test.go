//go:build race

package main

import "os"

// Under go test -race the daemon binary is built with -race too, so the
// process tests check the daemon's code for races, not just the test's.
// Client commands exit without the race runtime's default 1 s pause at
// exit (atexit_sleep_ms), which would otherwise add a second to each of
// the many short commands the tests run; GORACE's own settings still win.
func init() {
	buildFlags = append(buildFlags, "-race")
	clientEnv = append(clientEnv, "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
}
