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
// from its region pair (plus seeded jitter). Between simnet and QUIC sits a
// small net.PacketConn wrapper of ours that drops packets at random (seeded
// loss per region pair) and across a partition. A partition is a silent
// blackhole: the sender's writes succeed and nothing is closed, so the
// nodes find out only by timeouts, as on a real network. The wrapper counts
// the packets and bytes it delivers for each pair of regions; that is how a
// test proves that nothing crosses a cut.
//
// # Scenario and plan
//
// A Scenario names regions (node counts, latency, bandwidth), the links
// between them, a workload of register puts, a fault schedule (partition,
// heal) and the budgets the run must meet (Expect). ParseScenario reads one
// from YAML (scenarios/ holds bundled ones), refusing unknown keys and
// naming the line of every problem. Scenario.Plan resolves it with a seed into the exact
// list of writes and faults: the same seed gives the same plan. Each key
// has a single writer, so the reference model of the final state is exact.
//
// # Run and checkers
//
// Run opens the nodes, waits until they are connected, lets gossipsub
// settle, then plays the plan at its times. It runs in the caller's time:
// inside a testing/synctest bubble a minute of simulated time takes a
// fraction of a second, and everything it starts stops before it returns.
// Three checkers fill the Report, and Report.Failures names every budget
// the run missed:
//
//   - convergence: all digests equal within Expect.ConvergeWithin after
//     the last heal or write, and how long that took;
//   - lost writes: every node's final state against the model built from
//     the acknowledged writes (missing, stale, phantom or sibling values);
//   - propagation: for each acknowledged write, the delay until every node
//     held it, seen through each node's Watch.
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
