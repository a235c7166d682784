// Package sim is the network partition simulator: it runs many real Mycel
// nodes (node.Node, with the real gossip and sync code and each its own
// in-memory store) in one process over a simulated packet network, plays a
// workload and a fault schedule, and checks what became of the data.
//
// # Network
//
// Every node's libp2p host uses go-libp2p's QUIC transport over a
// github.com/marcopolo/simnet endpoint, as go-libp2p's x/simlibp2p does.
// simnet gives each node a bandwidth-limited link and each packet a latency
// from its region pair (plus seeded jitter), arriving on whole milliseconds
// (see deliveryGrid). Between simnet and QUIC sits a
// small net.PacketConn wrapper of ours that drops packets at random (seeded
// loss per region pair) and across a blackhole partition, and counts what
// it delivers per region pair and across the partition standing: that is
// how a test proves that nothing crosses a cut.
//
// RunNetns is the second backend (Linux, root): every node a real mycel
// daemon process in a network namespace of its own, partitions made with
// routes, crashes with SIGKILL, the workload and the checks through each
// daemon's HTTP API (netns.go). It shapes a region's bandwidth with tc's
// token bucket (tbf), and cannot add latency or loss.
//
// # Scenario and plan
//
// A Scenario names regions (node counts, latency, bandwidth), the links
// between them (latency, jitter, loss in percent), a workload (rate, duration, op mix
// of register put/delete, counter add, set add/remove; key space, uniform
// or zipf; value size; writer regions), a fault schedule and the budgets
// the run must meet (Expect). Faults: partition (groups of regions or of
// nodes, mode blackhole or disconnect), isolate a node, heal, crash a node
// (keep_disk true or false), restart it, change a link's latency, jitter
// or loss, skew a node's clock; or a seeded random nemesis (Random).
// ParseScenario reads one from YAML (scenarios/ holds bundled ones; keys
// are spelled with underscores, as converge_within; keep-disk is taken
// for keep_disk),
// refusing unknown keys and naming the line of every problem, schedule
// clashes included (overlapping partitions, restarting a running node).
// Scenario.Plan resolves it with a seed into the exact list of ops and
// faults: the same seed gives the same plan.
//
// # Run and checkers
//
// Run opens the nodes, waits until they are connected, lets gossipsub
// settle, then plays the plan at its times. It runs in the caller's time:
// inside a testing/synctest bubble a minute of simulated time takes
// seconds, and everything it starts stops before it returns. The checkers
// fill the Report, and Report.Failures names every budget the run missed:
//
//   - convergence: the digests of all live nodes equal within
//     Expect.ConvergeWithin after the last heal, restart or op; and, for
//     each heal and restart, how long until every live node held every op
//     acknowledged before it;
//   - lost writes: every live node's final state against a reference model
//     built from the acknowledged ops' committed deltas (registers: the
//     surviving entries, winner by HLC then replica; counters: the sum of
//     the adds; sets: add-wins), each missing, wrong or phantom key named;
//   - propagation: for each acknowledged op that creates a dot, the delay
//     until every live node held it, overall and per region pair;
//   - cost: messages and bytes per op, split into gossip, sync and other
//     protocols, and the share of duplicate gossip messages.
//
// Use:
//
//	rep, err := sim.Run(ctx, sim.Scenario{
//		Regions:  []sim.Region{{Name: "us", Nodes: 3}, {Name: "eu", Nodes: 3}},
//		Links:    []sim.Link{{A: "us", B: "eu", Latency: 40 * time.Millisecond}},
//		Workload: sim.Workload{Rate: 20, Duration: 30 * time.Second, Keys: 10},
//		Faults: []sim.Fault{
//			{At: 10 * time.Second, Kind: sim.Partition, Groups: [][]string{{"us"}, {"eu"}}},
//			{At: 20 * time.Second, Kind: sim.Heal},
//		},
//	}, seed)
//	// rep.Converged, rep.LostWrites, rep.Propagation.P99, ...
package sim
