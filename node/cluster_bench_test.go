package node

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Cluster benchmarks: real libp2p hosts on 127.0.0.1 (TCP), each node with a
// Pebble store in its own temp dir. Run with -benchtime=1x; each reports
// its figures with b.ReportMetric.

func benchCluster(b *testing.B, n int, change func(int, *Config)) []*Node {
	b.Helper()
	nodes := make([]*Node, n)
	degree := benchEnvInt(b, "MYCEL_BENCH_MESH_DEGREE", 0)
	for i := range nodes {
		cfg := DefaultLocalConfig()
		cfg.DataDir = b.TempDir()
		cfg.MeshDegree = degree // 0: the default
		if change != nil {
			change(i, &cfg)
		}
		nd, err := Open(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		nodes[i] = nd
		b.Cleanup(func() { nd.Close() })
	}
	for i := range nodes {
		for j := i + 1; j < len(nodes); j++ {
			if err := nodes[i].Connect(context.Background(), nodes[j].Addrs()[0]); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, nd := range nodes {
		if _, err := nd.Namespace(context.Background(), "bench"); err != nil {
			b.Fatal(err)
		}
	}
	return nodes
}

func benchWait(b *testing.B, nodes []*Node, keys int, timeout time.Duration) time.Time {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		all := true
		for _, nd := range nodes {
			ns, _ := nd.Namespace(context.Background(), "bench")
			if _, k := ns.Digest(); k < keys {
				all = false
				break
			}
		}
		if all {
			return time.Now()
		}
		if time.Now().After(deadline) {
			b.Fatalf("not converged within %v", timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkClusterThroughput: 5 nodes, 64 writers each, durable 100-byte
// puts spread over all nodes; replicated throughput = keys / time until
// every node holds every key. MYCEL_BENCH_WRITERS (per node) and
// MYCEL_BENCH_PUTS (in all) override 64 and 200,000: with durable
// acknowledgements each writer waits for its fsync, so 64 writers per node
// measure put latency as much as capacity, and 200,000 puts (~60 MB per
// node) end before Pebble's first memtable flush. MYCEL_BENCH_MESH_DEGREE
// sets Config.MeshDegree. It reports the put latency (p50, p99) beside the
// rates: with durable acknowledgements a put waits for its group's fsync.
func BenchmarkClusterThroughput(b *testing.B) { benchThroughput(b, false) }

// BenchmarkClusterThroughputNoSync is the same with writes acknowledged
// before fsync (Config.NoSync).
func BenchmarkClusterThroughputNoSync(b *testing.B) { benchThroughput(b, true) }

func benchThroughput(b *testing.B, noSync bool) {
	const nodesN = 5
	writers, total := benchEnvInt(b, "MYCEL_BENCH_WRITERS", 64), benchEnvInt(b, "MYCEL_BENCH_PUTS", 200_000)
	nodes := benchCluster(b, nodesN, func(_ int, c *Config) { c.NoSync = noSync; c.CoalesceWindow = benchWindow })
	val := make([]byte, 100)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	// Each writer keeps its puts' latencies (one in 16), merged after.
	lat := make([][]time.Duration, nodesN*writers)
	for i, nd := range nodes {
		ns, _ := nd.Namespace(context.Background(), "bench")
		var next atomic.Int64
		for w := 0; w < writers; w++ {
			wg.Add(1)
			mine := &lat[i*writers+w]
			go func() {
				defer wg.Done()
				for {
					k := next.Add(1)
					if k > int64(total/nodesN) {
						return
					}
					began := time.Now()
					if err := ns.Put(context.Background(), fmt.Sprintf("n%d-%07d", i, k), val); err != nil {
						b.Error(err)
						return
					}
					if k%16 == 0 {
						*mine = append(*mine, time.Since(began))
					}
				}
			}()
		}
	}
	wg.Wait()
	acked := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "put-p50-ms")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "put-p99-ms")
	}
	end := benchWait(b, nodes, total, 5*time.Minute)
	el := end.Sub(start).Seconds()
	b.ReportMetric(float64(total)/acked.Seconds(), "acked-puts/s")
	b.ReportMetric(float64(total)/el, "replicated-puts/s")
	// Sync is repair: under steady gossip it should move few batches.
	var messages, published, bySync, held, sessions, gapPulls, heardAgain int64
	for _, nd := range nodes {
		st := nd.Stats()
		messages += st.MessagesPublished.Load()
		published += st.BatchesPublished.Load()
		bySync += st.SyncBatchesIn.Load()
		held += st.SyncBatchesHeld.Load()
		sessions += st.SyncSessions.Load()
		gapPulls += st.SyncGapPulls.Load()
		heardAgain += st.SyncPeersHeardAgain.Load()
	}
	b.Logf("%d writers per node, %d puts: messages published %d, batches published %d, received by sync %d (%d held already) in %d sessions (%d gap pulls, %d peers heard again)",
		writers, total, messages, published, bySync, held, sessions, gapPulls, heardAgain)
}

// BenchmarkClusterLatency: 5 nodes, node 0 puts at 1,000/s for 5 s; the
// delay from acknowledgement to the key being visible on every node.
func BenchmarkClusterLatency(b *testing.B) {
	const rate, dur = 1000, 5 * time.Second
	nodes := benchCluster(b, 5, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type seen struct {
		mu   sync.Mutex
		last map[string]time.Time
		cnt  map[string]int
	}
	s := &seen{last: map[string]time.Time{}, cnt: map[string]int{}}
	var wg sync.WaitGroup
	for _, nd := range nodes[1:] {
		ns, _ := nd.Namespace(ctx, "bench")
		ch := ns.Watch(ctx, "lat-")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ev := range ch {
				now := time.Now()
				s.mu.Lock()
				s.cnt[ev.Key]++
				if now.After(s.last[ev.Key]) {
					s.last[ev.Key] = now
				}
				s.mu.Unlock()
			}
		}()
	}
	ns0, _ := nodes[0].Namespace(ctx, "bench")
	acks := map[string]time.Time{}
	val := make([]byte, 100)
	b.ResetTimer()
	tick := time.NewTicker(time.Second / rate)
	stop := time.Now().Add(dur)
	for i := 0; time.Now().Before(stop); i++ {
		<-tick.C
		k := fmt.Sprintf("lat-%06d", i)
		if err := ns0.Put(ctx, k, val); err != nil {
			b.Fatal(err)
		}
		acks[k] = time.Now()
	}
	tick.Stop()
	benchWait(b, nodes, len(acks), time.Minute)
	time.Sleep(200 * time.Millisecond) // let watch events drain
	cancel()
	wg.Wait()
	var delays []float64
	s.mu.Lock()
	for k, at := range acks {
		if s.cnt[k] >= len(nodes)-1 {
			delays = append(delays, float64(s.last[k].Sub(at).Microseconds())/1000)
		}
	}
	s.mu.Unlock()
	if len(delays) < len(acks)*9/10 {
		b.Fatalf("only %d of %d keys seen by every watcher", len(delays), len(acks))
	}
	sort.Float64s(delays)
	b.ReportMetric(delays[len(delays)/2], "p50-ms")
	b.ReportMetric(delays[len(delays)*99/100], "p99-ms")
}

// BenchmarkClusterPartitionHeal: node 4 is cut off while node 0 writes
// 10,000 puts of 100-byte values; then the cut heals. Time from reconnect
// until node 4 holds all, and sync bytes against the raw bytes missed.
func BenchmarkClusterPartitionHeal(b *testing.B) {
	const puts = 10_000
	nodes := benchCluster(b, 5, nil)
	cut := nodes[4]
	for _, nd := range nodes[:4] {
		nd.Block(cut.ID())
		cut.Block(nd.ID())
	}
	ctx := context.Background()
	ns0, _ := nodes[0].Namespace(ctx, "bench")
	raw := putMany(b, ns0, "heal-%06d", puts)
	benchWait(b, nodes[:4], puts, time.Minute)
	before := cut.Stats().SyncBytesIn.Load()
	b.ResetTimer()
	start := time.Now()
	for _, nd := range nodes[:4] {
		nd.Unblock(cut.ID())
		cut.Unblock(nd.ID())
	}
	if err := cut.Connect(ctx, nodes[1].Addrs()[0]); err != nil {
		b.Fatal(err)
	}
	end := benchWait(b, []*Node{cut}, puts, time.Minute)
	b.ReportMetric(end.Sub(start).Seconds(), "heal-s")
	b.ReportMetric(float64(cut.Stats().SyncBytesIn.Load()-before)/float64(raw), "sync-bytes/raw-bytes")
}

// BenchmarkClusterLateJoiner: a cluster of 2 holds 100,000 keys; an empty
// node joins; keys/s it receives until it holds all.
func BenchmarkClusterLateJoiner(b *testing.B) {
	const keys = 100_000
	nodes := benchCluster(b, 2, func(_ int, c *Config) { c.NoSync = true })
	ctx := context.Background()
	ns0, _ := nodes[0].Namespace(ctx, "bench")
	putMany(b, ns0, "late-%07d", keys)
	benchWait(b, nodes, keys, 2*time.Minute)
	cfg := DefaultLocalConfig()
	cfg.DataDir = b.TempDir()
	late, err := Open(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer late.Close()
	if _, err := late.Namespace(ctx, "bench"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	if err := late.Connect(ctx, nodes[0].Addrs()[0]); err != nil {
		b.Fatal(err)
	}
	end := benchWait(b, []*Node{late}, keys, 2*time.Minute)
	b.ReportMetric(keys/end.Sub(start).Seconds(), "keys/s")
}

// benchEnvInt reads a positive integer from the environment variable name,
// or returns def when it is unset.
func benchEnvInt(b *testing.B, name string, def int) int {
	b.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return v
}

// benchWindow is the coalescing window for the throughput benchmarks
// (default 2 ms; MYCEL_BENCH_WINDOW overrides, e.g. "5ms").
var benchWindow = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("MYCEL_BENCH_WINDOW")); err == nil {
		return d
	}
	return 0
}()

// putMany writes count 100-byte values under keys made from format and
// 1..count, from 16 writers, and returns the raw key and value bytes.
func putMany(b *testing.B, ns *Namespace, format string, count int) int64 {
	b.Helper()
	val := make([]byte, 100)
	var raw atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := next.Add(1)
				if k > int64(count) {
					return
				}
				key := fmt.Sprintf(format, k)
				raw.Add(int64(len(key) + len(val)))
				if err := ns.Put(context.Background(), key, val); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return raw.Load()
}
