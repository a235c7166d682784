package sim

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseScenario feeds arbitrary bytes to the scenario decoder: it must
// not panic, every failure must wrap ErrScenario, and whatever it accepts
// must validate and (when small) plan without error.
func FuzzParseScenario(f *testing.F) {
	files, _ := filepath.Glob("scenarios/*.yaml")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("regions: [{name: a, nodes: 2}]\nworkload: {rate: 1, duration: 1s}\n"))
	f.Add([]byte("regions: {name: a}\n"))
	f.Add([]byte("faults: [{at: -1s, kind: heal}]\n"))
	f.Add([]byte("\x00\xff: ["))
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := ParseScenario(data)
		if err != nil {
			if !errors.Is(err, ErrScenario) {
				t.Fatalf("error does not wrap ErrScenario: %v", err)
			}
			return
		}
		if err := sc.Validate(); err != nil {
			t.Fatalf("accepted scenario fails Validate: %v", err)
		}
		if sc.Workload.Rate*sc.Workload.Duration.Seconds() > 10_000 {
			return // valid, but too large to plan on every fuzz input
		}
		if _, err := sc.Plan(1); err != nil {
			t.Fatalf("accepted scenario cannot be planned: %v", err)
		}
	})
}
