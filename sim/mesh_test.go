package sim

import (
	"testing"
	"testing/synctest"
	"time"
)

// TestMeshShape: parts, the largest part, and nodes with one link or none,
// over live nodes only; a link counts whichever side holds it, once, and
// links one side holds are counted apart.
func TestMeshShape(t *testing.T) {
	live := []bool{true, true, true, true, true, true, false}
	links := [][2]int{
		{0, 1}, {1, 0}, {0, 1}, {2, 1}, // a path of three: 0-1 held by both, 2-1 by 2 only
		{3, 4}, // a pair, held by 3 only
		{5, 5}, // a node linked to itself only: no link
		{5, 6}, // to a node that is down
	}
	got := meshShape(len(live), live, links)
	want := MeshShape{Parts: 3, Largest: 3, OneLink: 4, NoLink: 1, OneWay: 2}
	if got != want {
		t.Fatalf("shape %+v, want %+v", got, want)
	}
	if got := meshShape(3, []bool{false, false, false}, nil); got != (MeshShape{}) {
		t.Fatalf("no live node: %+v", got)
	}
}

// TestRunReportsMesh: a run's report gives the mesh the live nodes held at
// the end; six fully connected nodes at the default degree form one part
// in which every node has several links.
func TestRunReportsMesh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sc := Scenario{
			Regions:  []Region{{Name: "a", Nodes: 6, Latency: 2 * time.Millisecond}},
			Workload: Workload{Rate: 10, Duration: 3 * time.Second, Keys: 5},
			Expect:   Expect{ConvergeWithin: 30 * time.Second},
		}
		rep, err := Run(t.Context(), sc, testSeed)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Mesh == nil || *rep.Mesh != (MeshShape{Parts: 1, Largest: 6}) { // and no one-way link
			t.Fatalf("mesh %+v", rep.Mesh)
		}
	})
}
