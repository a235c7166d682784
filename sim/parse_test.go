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
		sc.Links[1].Latency != 150*time.Millisecond || sc.Links[0].Loss != 1 ||
		sc.Workload.Duration != 40*time.Second || sc.Faults[0].Groups[1][1] != "ap" ||
		sc.Faults[1].Kind != Heal || sc.Expect.ConvergeWithin != 30*time.Second || sc.Expect.P99PropagationMS != 20000 {
		t.Fatalf("parsed: %+v", sc)
	}
}

func TestParseMapMix(t *testing.T) {
	sc, err := ParseScenario([]byte("regions:\n  - {name: us, nodes: 2}\nworkload: {rate: 1, keys: 1, mix: {put: 1, map_put: 2, map_delete: 0.5}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m := sc.Workload.Mix; m.MapPut != 2 || m.MapDelete != 0.5 || m.total() != 3.5 {
		t.Fatalf("mix %+v", m)
	}
}

func TestParseGossipKnobs(t *testing.T) {
	sc, err := ParseScenario([]byte("regions:\n  - {name: us, nodes: 2}\nworkload: {rate: 1, keys: 1}\nmesh_degree: 2\nmesh_degree_low: 2\nflood_publish: true\npeer_exchange: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if sc.MeshDegree != 2 || sc.MeshDegreeLow != 2 || !sc.FloodPublish || !sc.PeerExchange {
		t.Fatalf("mesh degree %d low %d, flood publish %v, peer exchange %v", sc.MeshDegree, sc.MeshDegreeLow, sc.FloodPublish, sc.PeerExchange)
	}
}

// TestParseErrors: each bad file fails before anything runs, with an error
// naming the line at fault.
// TestKeepDiskAsTheIssueSpellsIt: keep-disk and keep_disk are one key.
func TestKeepDiskAsTheIssueSpellsIt(t *testing.T) {
	const head = "regions:\n  - {name: us, nodes: 2}\nworkload: {rate: 1, keys: 1}\n"
	for _, key := range []string{"keep-disk", "keep_disk"} {
		sc, err := ParseScenario([]byte(head + "faults:\n  - {at: 1s, kind: crash, node: us-0, " + key + ": false}\n  - {at: 2s, kind: restart, node: us-0}\n"))
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		if !sc.Faults[0].wipes() {
			t.Fatalf("%s: false did not wipe", key)
		}
	}
}

func TestParseErrors(t *testing.T) {
	const head = "regions:\n  - {name: us, nodes: 2}\n  - {name: eu, nodes: 2}\nlinks:\n  - {a: us, b: eu, latency: 40ms}\n"
	cases := []struct{ name, yaml, want string }{
		{"unknown top-level key", head + "workload: {rate: 1, keys: 1}\nfautls: []\n", "line 7"},
		{"unknown nested key", head + "workload: {rate: 1, kyes: 1}\n", "line 6"},
		{"duration without unit", "regions:\n  - {name: us, nodes: 2, latency: 40}\n", "line 2: cannot unmarshal !!int `40` into time.Duration (a duration needs its unit"},
		{"negative rate", head + "workload:\n  keys: 3\n  rate: -5\n", "line 8"},
		{"missing region in a fault", head + "faults:\n  - {at: 1s, kind: partition, groups: [[us], [mars]]}\n", "line 7"},
		{"overlapping partition", head + "faults:\n  - at: 1s\n    kind: partition\n    groups:\n      - [us]\n      - [eu, us]\n", "line 11"},
		{"unknown node", head + "faults:\n  - {at: 1s, kind: crash, node: us-7}\n", "line 7"},
		{"restart of a running node", head + "faults:\n  - {at: 1s, kind: crash, node: us-0}\n  - {at: 2s, kind: restart, node: us-0}\n  - {at: 3s, kind: restart, node: us-1}\n", "line 9"},
		{"second partition before the heal", head + "faults:\n  - {at: 1s, kind: partition, groups: [[us], [eu]]}\n  - {at: 2s, kind: isolate, node: eu-1}\n", "line 8"},
		{"node in two groups", head + "faults:\n  - {at: 1s, kind: partition, groups: [[us, eu-0], [eu]]}\n", "line 7"},
		{"unknown fault key", head + "faults:\n  - {at: 1s, kind: crash, node: us-0, keep-data: false}\n", "line 7: field keep-data not found in type sim.Fault"},
		{"dashed key", head + "workload: {rate: 1, keys: 1, value-size: 3}\n", "field value-size not found in type sim.Workload (keys use underscores: value_size)"},
		{"keep-disk twice", head + "faults:\n  - {at: 1s, kind: crash, node: us-0, keep-disk: false, keep_disk: true}\n", "keep_disk given twice"},
		{"wrong type in a fault", head + "faults:\n  - {at: soon, kind: crash, node: us-0}\n", "line 7"},
		{"unknown mode", head + "faults:\n  - {at: 1s, kind: isolate, node: us-0, mode: gentle}\n", "line 7"},
		{"negative latency change", head + "faults:\n  - at: 1s\n    kind: latency\n    link: [us, eu]\n    latency: -5ms\n", "line 10"},
		{"nemesis kind", head + "random:\n  every: 5s\n  kinds: [partition, meteor]\n", "line 8"},
		{"zero nemesis period", head + "random: {kinds: [crash]}\n", "line 6"},
		{"negative value size", head + "workload: {rate: 1, keys: 1, value_size: -3}\n", "line 6"},
		{"unknown op kind", head + "workload: {rate: 1, keys: 1, mix: {put: 1, cas: 2}}\n", "line 6"},
		{"missing link", "regions:\n  - {name: us, nodes: 2}\n  - {name: eu, nodes: 2}\n", "no link between us and eu"},
		{"loss over 100%", head + "faults:\n  - {at: 1s, kind: latency, link: [us, eu], loss: 150}\n", "line 7"},
		{"mesh degree 1", head + "mesh_degree: 1\n", "line 6"},
		{"negative map put weight", head + "workload: {rate: 1, keys: 1, mix: {map_put: -1}}\n", "line 6"},
		{"mesh degree low over the degree", head + "mesh_degree: 2\nmesh_degree_low: 3\n", "line 7"},
		{"mesh degree low over the default degree", head + "mesh_degree_low: 7\n", "want 1 to the mesh degree (6)"},
		{"negative mesh degree low", head + "mesh_degree_low: -1\n", "line 6"},
		{"empty", "", "empty file"},
		{"rate not a number", head + "workload: {rate: .nan, duration: 10s, keys: 1}\n", "line 6"},
		{"infinite rate", head + "workload: {rate: .inf, keys: 1}\n", "line 6"},
		{"loss not a number", "regions:\n  - {name: us, nodes: 2}\n  - {name: eu, nodes: 2}\nlinks:\n  - {a: us, b: eu, latency: 40ms, loss: .nan}\n", "line 5"},
		{"fault loss not a number", head + "faults:\n  - {at: 1s, kind: latency, link: [us, eu], loss: .nan}\n", "line 7"},
		{"budget not a number", head + "expect: {p99_propagation_ms: .nan}\n", "line 6"},
		{"mix weight not a number", head + "workload: {rate: 1, keys: 1, mix: {put: 1, delete: .nan}}\n", "line 6"},
		{"region spelled like a node", "regions:\n  - {name: a, nodes: 2}\n  - {name: a-1, nodes: 1}\nlinks:\n  - {a: a, b: a-1, latency: 40ms}\n", "line 3"},
	}
	// Two bad weights: the same one is named every time.
	twoBad := head + "workload: {rate: 1, keys: 1, mix: {put: -1, set_remove: -2}}\n"
	_, first := ParseScenario([]byte(twoBad))
	for range 50 {
		if _, err := ParseScenario([]byte(twoBad)); err == nil || first == nil || err.Error() != first.Error() {
			t.Fatalf("errors differ between runs: %v / %v", first, err)
		}
	}
	for _, c := range cases {
		_, err := ParseScenario([]byte(c.yaml))
		if !errors.Is(err, ErrScenario) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an ErrScenario mentioning %q", c.name, err, c.want)
		}
	}
}
