package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestExampleRuns builds and runs the example as a user would.
func TestExampleRuns(t *testing.T) {
	out, err := exec.Command("go", "run", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("example failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "converged: sku-1=42 visits=3 tags=[blue large] profile.name=Ada") {
		t.Fatalf("unexpected output:\n%s", out)
	}
}
