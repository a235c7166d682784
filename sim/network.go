package sim

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	"github.com/marcopolo/simnet"
	"github.com/quic-go/quic-go"
	"go.uber.org/fx"
)

// simPort is the UDP port every simulated node listens on.
const simPort = 4001

// network is the simulated packet network: a simnet router whose latency
// comes from the scenario's region pairs, and one faultConn per node that
// adds seeded loss and blackhole partitions and counts what it delivers.
type network struct {
	sim     *simnet.Simnet
	regions int
	seed    uint64
	// base[r] is the index of region r's first node.
	base []int

	// links[a][b] is the link from region a to region b (a == b: inside a
	// region); replaced whole when a latency fault changes it.
	links atomic.Pointer[[][]Link]

	jitterMu sync.Mutex
	jitter   *rand.Rand

	// cut is the current partition: group[n] is node n's group, -1 for a
	// node it leaves alone. nil: no partition.
	cut atomic.Pointer[partition]

	// delivered[src][dst] counts packets (and bytes) read by a node in
	// region dst from a node in region src.
	delivered      [][]atomic.Int64
	deliveredBytes [][]atomic.Int64
	// acrossCut counts packets delivered between two nodes that the
	// partition standing at delivery separates.
	acrossCut atomic.Int64
	// droppedCut counts packets a blackhole swallowed, droppedLoss those
	// lost at random.
	droppedCut, droppedLoss atomic.Int64
}

// partition is a standing cut between groups of nodes.
type partition struct {
	group []int
	// blackhole: the network drops packets across the cut (else the nodes'
	// gaters cut, and the network only counts).
	blackhole bool
}

func (p *partition) separates(a, b int) bool {
	ga, gb := p.group[a], p.group[b]
	return ga >= 0 && gb >= 0 && ga != gb
}

func newNetwork(sc *Scenario, seed uint64, log *slog.Logger) *network {
	r := len(sc.Regions)
	nw := &network{
		regions:        r,
		seed:           seed,
		jitter:         rand.New(rand.NewPCG(seed, 0x6a17)),
		delivered:      make([][]atomic.Int64, r),
		deliveredBytes: make([][]atomic.Int64, r),
	}
	links := make([][]Link, r)
	first := 0
	for a := range r {
		nw.base = append(nw.base, first)
		first += sc.Regions[a].Nodes
		links[a] = make([]Link, r)
		nw.delivered[a] = make([]atomic.Int64, r)
		nw.deliveredBytes[a] = make([]atomic.Int64, r)
		links[a][a] = Link{A: sc.Regions[a].Name, B: sc.Regions[a].Name, Latency: sc.Regions[a].Latency}
	}
	idx := sc.regionIndex()
	for _, l := range sc.Links {
		a, b := idx[l.A], idx[l.B]
		links[a][b] = l
		links[b][a] = l
	}
	nw.links.Store(&links)
	nw.sim = &simnet.Simnet{LatencyFunc: nw.latency, Logger: log}
	return nw
}

// setLink changes the link between regions a and b (both ways).
func (nw *network) setLink(a, b int, latency, jitter *time.Duration, loss *float64) {
	old := *nw.links.Load()
	links := make([][]Link, len(old))
	for i := range old {
		links[i] = slices.Clone(old[i])
	}
	for _, p := range [][2]int{{a, b}, {b, a}} {
		l := &links[p[0]][p[1]]
		if latency != nil {
			l.Latency = *latency
		}
		if jitter != nil {
			l.Jitter = *jitter
		}
		if loss != nil {
			l.Loss = *loss
		}
	}
	nw.links.Store(&links)
}

func (nw *network) link(a, b int) Link { return (*nw.links.Load())[a][b] }

// regionAddr returns the UDP address of the i-th node (0-based) of region r:
// 1.<r+1>.<hi>.<lo>, public so that libp2p does not filter it, with the
// region readable back from the second byte.
func regionAddr(r, i int) *net.UDPAddr {
	i++
	return &net.UDPAddr{IP: net.IPv4(1, byte(r+1), byte(i>>8), byte(i)), Port: simPort}
}

// nodeOf returns the region and node index of a simulated address.
func (nw *network) nodeOf(a net.Addr) (region, node int, ok bool) {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		return 0, 0, false
	}
	ip := u.IP.To4()
	if ip == nil || ip[0] != 1 || int(ip[1]) < 1 || int(ip[1]) > nw.regions {
		return 0, 0, false
	}
	region = int(ip[1]) - 1
	return region, nw.base[region] + (int(ip[2])<<8 | int(ip[3])) - 1, true
}

// latency is simnet's per-packet latency: the region pair's one-way
// latency plus uniform jitter in [0, Jitter), with the arrival rounded to
// the nearest deliveryGrid tick.
func (nw *network) latency(p *simnet.Packet) time.Duration {
	a, _, ok1 := nw.nodeOf(p.From)
	b, _, ok2 := nw.nodeOf(p.To)
	if !ok1 || !ok2 {
		return 0
	}
	l := nw.link(a, b)
	d := l.Latency
	if l.Jitter > 0 {
		nw.jitterMu.Lock()
		d += time.Duration(nw.jitter.Int64N(int64(l.Jitter)))
		nw.jitterMu.Unlock()
	}
	return onGrid(time.Now(), d)
}

// deliveryGrid is the simulated network's clock tick: packets arrive on
// whole milliseconds. Under virtual time, the bubble's clock moves only
// when every goroutine waits, so each distinct arrival time is a step in
// which the few nodes a packet reaches work alone on two cores. Arrivals
// on a grid come together, and so does their work: the 100-node cut ran
// in 38–41 s wall against 53–61 s (alternating runs, session 11).
// Latencies and jitter are given in milliseconds, and rounding to the
// nearest tick keeps a link's mean latency.
const deliveryGrid = time.Millisecond

// onGrid returns the latency d adjusted so that a packet sent at now
// arrives on the nearest deliveryGrid tick: at the tick nearest now+d, or
// after d unrounded if that tick is not after now.
func onGrid(now time.Time, d time.Duration) time.Duration {
	at := now.Add(d).Add(deliveryGrid / 2).Truncate(deliveryGrid)
	if !at.After(now) {
		return d
	}
	return at.Sub(now)
}

// partition cuts the nodes of each group off from the others; groups
// holds node indexes. With blackhole the network drops what crosses;
// otherwise it only counts (the nodes' gaters cut).
func (nw *network) partition(nodes int, groups [][]int, blackhole bool) {
	p := &partition{group: make([]int, nodes), blackhole: blackhole}
	for i := range p.group {
		p.group[i] = -1
	}
	for g, ns := range groups {
		for _, n := range ns {
			p.group[n] = g
		}
	}
	nw.cut.Store(p)
}

func (nw *network) heal() { nw.cut.Store(nil) }

// separated reports whether the partition standing separates nodes a and b.
func (nw *network) separated(a, b int) bool {
	p := nw.cut.Load()
	return p != nil && p.separates(a, b)
}

// crossing returns the packets and bytes delivered from region src to
// region dst so far.
func (nw *network) crossing(src, dst int) (packets, bytes int64) {
	return nw.delivered[src][dst].Load(), nw.deliveredBytes[src][dst].Load()
}

// totals returns every packet and byte delivered so far.
func (nw *network) totals() (packets, bytes int64) {
	for a := range nw.regions {
		for b := range nw.regions {
			p, by := nw.crossing(a, b)
			packets += p
			bytes += by
		}
	}
	return packets, bytes
}

// linkBurst is the burst a node's link lets through at once: what its
// bandwidth carries in one deliveryGrid tick, at least one 1,500-byte
// packet (QUIC's are at most 1,452; a packet larger than the burst would
// never pass) and at most 65,535 bytes (an arbitrary cap: 5.2 ticks at the
// default 100 Mbit/s). simnet paces a link with a token bucket whose burst
// is its MTU; with the default MTU every packet after the first in a
// burst waited its own ~100 µs, and each such wait was a step of the
// virtual clock in which one node worked while the other core idled (see
// deliveryGrid). Beyond a tick's worth, packets are still paced one by
// one. simnet also takes the MTU as fq_codel's quantum: on a backlogged
// link, flows now take turns a tick's worth at a time, not a packet.
func linkBurst(bitsPerSecond int) int {
	b := int(int64(bitsPerSecond) / 8 * int64(deliveryGrid) / int64(time.Second))
	return min(max(b, 1500), 65535)
}

// hostOption makes a libp2p host listen through a simulated endpoint at
// addr, wrapped in a faultConn. It is x/simlibp2p's QUICSimnet with our
// wrapper in the middle.
func (nw *network) hostOption(region, nodeIndex int, bandwidth int, incarnation uint64) libp2p.Option {
	burst := linkBurst(bandwidth)
	settings := simnet.NodeBiDiLinkSettings{
		Downlink: simnet.LinkSettings{BitsPerSecond: bandwidth, MTU: burst},
		Uplink:   simnet.LinkSettings{BitsPerSecond: bandwidth, MTU: burst},
	}
	sel := &fixedSourceIP{}
	opts := []quicreuse.Option{
		quicreuse.OverrideSourceIPSelector(func() (quicreuse.SourceIPSelector, error) { return sel, nil }),
		quicreuse.OverrideListenUDP(func(_ string, address *net.UDPAddr) (net.PacketConn, error) {
			sel.ip.Store(&address.IP)
			return nw.wrap(nw.sim.NewEndpoint(address, settings), region, nodeIndex, incarnation), nil
		}),
	}
	return libp2p.QUICReuse(
		func(l fx.Lifecycle, reset quic.StatelessResetKey, token quic.TokenGeneratorKey, opts ...quicreuse.Option) (*quicreuse.ConnManager, error) {
			cm, err := quicreuse.NewConnManager(reset, token, opts...)
			if err != nil {
				return nil, err
			}
			// A connection manager passed in this way is not closed by
			// the host (as x/simlibp2p notes); close it with the host.
			l.Append(fx.StopHook(cm.Close))
			return cm, nil
		}, opts...)
}

// fixedSourceIP answers quicreuse's source address question with the
// listen address: there is no routing table in the simulation.
type fixedSourceIP struct{ ip atomic.Pointer[net.IP] }

func (s *fixedSourceIP) PreferredSourceIPForDestination(*net.UDPAddr) (net.IP, error) {
	if ip := s.ip.Load(); ip != nil {
		return *ip, nil
	}
	return nil, fmt.Errorf("sim: no listen address yet")
}

// faultConn is a node's view of the simulated network. Writes across a
// partition, or lost at random, vanish silently (the sender sees success
// and nothing is closed); reads are counted per region pair.
type faultConn struct {
	*simnet.SimConn
	nw     *network
	region int
	node   int

	mu  sync.Mutex
	rng *rand.Rand
}

func (nw *network) wrap(c *simnet.SimConn, region, node int, incarnation uint64) *faultConn {
	return &faultConn{SimConn: c, nw: nw, region: region, node: node,
		rng: rand.New(rand.NewPCG(nw.seed, uint64(node)+1+incarnation<<32))}
}

// WriteTo drops the packet if a blackhole partition separates the two
// nodes or if the link's loss says so; otherwise hands it to simnet.
func (c *faultConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	dst, dstNode, ok := c.nw.nodeOf(addr)
	if ok {
		if cut := c.nw.cut.Load(); cut != nil && cut.blackhole && cut.separates(c.node, dstNode) {
			c.nw.droppedCut.Add(1)
			return len(p), nil
		}
		if loss := c.nw.link(c.region, dst).Loss; loss > 0 {
			c.mu.Lock()
			lost := c.rng.Float64()*100 < loss // loss is a percentage
			c.mu.Unlock()
			if lost {
				c.nw.droppedLoss.Add(1)
				return len(p), nil
			}
		}
	}
	return c.SimConn.WriteTo(p, addr)
}

// ReadFrom counts every packet delivered, by source and destination
// region, and those that crossed the partition standing.
func (c *faultConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, from, err := c.SimConn.ReadFrom(p)
	if err == nil {
		if src, srcNode, ok := c.nw.nodeOf(from); ok {
			c.nw.delivered[src][c.region].Add(1)
			c.nw.deliveredBytes[src][c.region].Add(int64(n))
			if c.nw.separated(srcNode, c.node) {
				c.nw.acrossCut.Add(1)
			}
		}
	}
	return n, from, err
}
