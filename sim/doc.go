// Package sim will own the network partition simulator: many real nodes
// over a simulated packet network, a fault schedule, checkers for
// convergence and lost writes, and reports.
//
// Not built yet: this file only records what the package will own.
package sim
