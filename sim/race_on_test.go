//go:build race

package sim

// raceEnabled: the race detector slows the simulated nodes several times
// over; the largest bundled scenarios run without it.
const raceEnabled = true
