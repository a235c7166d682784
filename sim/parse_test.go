package sim

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseScenario(t *testing.T) {
	sc := threeRegions(t)
	if sc.Name != "three-regions" || len(sc.Regions) != 3 || sc.Regions[2].Nodes != 3 ||
		sc.Links[1].Latency != 150*time.Millisecond || sc.Links[0].Loss != 0.01 ||
		sc.Workload.Duration != 40*time.Second || sc.Faults[0].Groups[1][1] != "ap" ||
		sc.Faults[1].Kind != Heal || sc.Expect.ConvergeWithin != 30*time.Second || sc.Expect.P99PropagationMS != 20000 {
		t.Fatalf("parsed: %+v", sc)
	}
}

// TestParseErrors: each bad file fails before anything runs, with an error
// naming the line at fault.
func TestParseErrors(t *testing.T) {
	const head = "regions:\n  - {name: us, nodes: 2}\n  - {name: eu, nodes: 2}\nlinks:\n  - {a: us, b: eu, latency: 40ms}\n"
	cases := []struct{ name, yaml, want string }{
		{"unknown top-level key", head + "workload: {rate: 1, keys: 1}\nfautls: []\n", "line 7"},
		{"unknown nested key", head + "workload: {rate: 1, kyes: 1}\n", "line 6"},
		{"duration without unit", "regions:\n  - {name: us, nodes: 2, latency: 40}\n", "line 2"},
		{"negative rate", head + "workload:\n  keys: 3\n  rate: -5\n", "line 8"},
		{"missing region in a fault", head + "faults:\n  - {at: 1s, kind: partition, groups: [[us], [mars]]}\n", "line 7"},
		{"overlapping partition", head + "faults:\n  - at: 1s\n    kind: partition\n    groups:\n      - [us]\n      - [eu, us]\n", "line 11"},
		{"missing link", "regions:\n  - {name: us, nodes: 2}\n  - {name: eu, nodes: 2}\n", "no link between us and eu"},
		{"empty", "", "empty file"},
	}
	for _, c := range cases {
		_, err := ParseScenario([]byte(c.yaml))
		if !errors.Is(err, ErrScenario) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an ErrScenario mentioning %q", c.name, err, c.want)
		}
	}
}
