package store

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The crash test re-executes this binary as the writer to kill.
	if dir := os.Getenv(crashChildEnv); dir != "" {
		os.Exit(crashChild(dir))
	}
	if dir := os.Getenv(noSyncChildEnv); dir != "" {
		os.Exit(noSyncChild(dir))
	}
	goleak.VerifyTestMain(m)
}
