//go:build race

package sim

// raceEnabled: the race detector slows the simulated nodes several times
// over; the bundled scenarios run without it (TestBundledScenarios).
const raceEnabled = true
