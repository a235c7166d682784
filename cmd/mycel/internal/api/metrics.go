package api

import (
	"io/fs"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the API's own instruments; replication and store figures are
// read from the node at scrape time by nodeCollector.
type metrics struct {
	ops      *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	watchers prometheus.Gauge
	inFlight prometheus.Gauge
	// Resolved children of ops and latency: a label lookup hashes its
	// values on every call, and every request makes two.
	opsByKey     sync.Map // opCode -> prometheus.Counter
	latencyByKey sync.Map // op -> prometheus.Observer
}

type opCode struct {
	op   string
	code int
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mycel_api_ops_total",
			Help: "API operations by type (put, get, delete, keys, counter_add, counter_get, set_update, set_get, map_update, map_get, digest, watch, status, healthz) and HTTP status code.",
		}, []string{"op", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mycel_api_op_duration_seconds",
			Help:    "API operation latency by type (for watch: the stream's lifetime).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
		}, []string{"op"}),
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mycel_watch_subscribers",
			Help: "Open watch (server-sent events) streams.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mycel_api_requests_in_flight",
			Help: "HTTP requests being served, watch streams and this scrape included.",
		}),
	}
	s.reg.MustRegister(m.ops, m.latency, m.watchers, m.inFlight,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&nodeCollector{s: s})
	return m
}

func (m *metrics) observe(op string, code int, d time.Duration) {
	k := opCode{op, code}
	c, ok := m.opsByKey.Load(k)
	if !ok {
		c, _ = m.opsByKey.LoadOrStore(k, m.ops.WithLabelValues(op, strconv.Itoa(code)))
	}
	c.(prometheus.Counter).Inc()
	h, ok := m.latencyByKey.Load(op)
	if !ok {
		h, _ = m.latencyByKey.LoadOrStore(op, m.latency.WithLabelValues(op))
	}
	h.(prometheus.Observer).Observe(d.Seconds())
}

// nodeCollector exports node.Stats() and the store's sizes at scrape time.
type nodeCollector struct{ s *Server }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descMessagesPublished = desc("mycel_gossip_messages_published_total", "Gossip messages published.")
	descBatchesPublished  = desc("mycel_gossip_batches_published_total", "Delta batches published by gossip.")
	descMessagesReceived  = desc("mycel_gossip_messages_received_total", "Gossip messages accepted from other peers.")
	descBatchesReceived   = desc("mycel_gossip_batches_received_total", "Delta batches received by gossip.")
	descBatchesApplied    = desc("mycel_batches_applied_total", "Received batches that were new and were applied.")
	descRejected          = desc("mycel_gossip_rejected_total", "Messages or batches rejected, by reason (malformed, origin: origin is not the signer, not_writer: signer not in the namespace's writer allowlist, forged: a gossip message or a sync batch whose origin signature is missing or does not verify).", "reason")
	descIgnored           = desc("mycel_gossip_ignored_total", "Messages and sync batches ignored, by reason (duplicate: every batch already applied, so forwarded if genuine but not applied again; context_ahead: a batch claims another replica's writes far beyond those held here, applied later by sync if genuine; sync_duplicate: a batch a sync peer relayed that was applied already when it came).", "reason")
	descBytes             = desc("mycel_replication_bytes_total", "Replication bytes by protocol (gossip, sync) and direction (in, out).", "protocol", "direction")
	descSyncSessions      = desc("mycel_sync_sessions_total", "Sync sessions completed, by role (client, server).", "role")
	descSyncRefused       = desc("mycel_sync_refused_total", "Sync requests refused by rate limits, and state reconciliations refused while 4 are being served.")
	descSyncAbandoned     = desc("mycel_sync_abandoned_total", "Client sync sessions abandoned: the peer had not answered the session at all when another session took the namespace's pull turn over (such as a peer behind a blackholed link).")
	descSyncGapPulls      = desc("mycel_sync_gap_pulls_total", "Syncs started because gossip delivered a batch past one this node lacked and the gap was still open a grace later (such as after a peer's gossip queue overflowed behind a blackholed link).")
	descSyncMeshPulls     = desc("mycel_sync_mesh_pulls_total", "Full syncs of a namespace started with a peer gossipsub just added to this node's mesh there, once per connection: what the peer published before its gossip could reach this node (an empty mesh sends to no one).")
	descSyncBatches       = desc("mycel_sync_batches_total", "Delta batches moved by sync, by direction (in, out).", "direction")
	descStateSessions     = desc("mycel_sync_state_sessions_total", "Sync sessions that reconciled state instead of log entries.")
	descStateKeys         = desc("mycel_sync_state_keys_in_total", "Keys received by state reconciliation.")
	descPeers             = desc("mycel_peers_connected", "Peers with an open connection.")
	descKeys              = desc("mycel_store_keys", "Keys held, by namespace.", "namespace")
	descMeshPeers         = desc("mycel_gossip_mesh_peers", "Peers in this node's gossipsub mesh, by namespace: those it relays others' batches to and hears them from first. In a cluster of more than a few nodes, one or none can mean batches reach it late, through IHAVE gossip or sync (at --mesh-degree 2, see --mesh-degree-low).", "namespace")
	descNamespaces        = desc("mycel_namespaces", "Namespaces this node holds.")
	descDisk              = desc("mycel_store_disk_bytes", "Bytes used by the data directory (identity and Pebble store).")
	descLag               = desc("mycel_replication_lag_seconds", "Per origin: delay of the last batch applied from it, from its newest write's hybrid-clock time (the writer's clock) to its commit here.", "namespace", "origin")
)

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMessagesPublished, descBatchesPublished, descMessagesReceived,
		descBatchesReceived, descBatchesApplied, descRejected, descIgnored, descBytes, descSyncSessions,
		descSyncRefused, descSyncAbandoned, descSyncGapPulls, descSyncMeshPulls, descSyncBatches, descStateSessions, descStateKeys, descPeers, descKeys, descMeshPeers, descNamespaces, descDisk, descLag} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.s.n
	st := n.Stats()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(descMessagesPublished, st.MessagesPublished.Load())
	counter(descBatchesPublished, st.BatchesPublished.Load())
	counter(descMessagesReceived, st.MessagesReceived.Load())
	counter(descBatchesReceived, st.BatchesReceived.Load())
	counter(descBatchesApplied, st.BatchesApplied.Load())
	counter(descRejected, st.RejectMalformed.Load(), "malformed")
	counter(descRejected, st.RejectOrigin.Load(), "origin")
	counter(descRejected, st.RejectNotWriter.Load(), "not_writer")
	counter(descRejected, st.RejectForged.Load(), "forged")
	counter(descIgnored, st.IgnoredDuplicate.Load(), "duplicate")
	counter(descIgnored, st.IgnoredAhead.Load(), "context_ahead")
	counter(descIgnored, st.SyncBatchesHeld.Load(), "sync_duplicate")
	counter(descBytes, st.BytesPublished.Load(), "gossip", "out")
	counter(descBytes, st.BytesReceived.Load(), "gossip", "in")
	counter(descBytes, st.SyncBytesOut.Load(), "sync", "out")
	counter(descBytes, st.SyncBytesIn.Load(), "sync", "in")
	counter(descSyncSessions, st.SyncSessions.Load(), "client")
	counter(descSyncSessions, st.SyncServed.Load(), "server")
	counter(descSyncRefused, st.SyncRefused.Load())
	counter(descSyncAbandoned, st.SyncSessionsAbandoned.Load())
	counter(descSyncGapPulls, st.SyncGapPulls.Load())
	counter(descSyncMeshPulls, st.SyncMeshPulls.Load())
	counter(descSyncBatches, st.SyncBatchesIn.Load(), "in")
	counter(descSyncBatches, st.SyncBatchesOut.Load(), "out")
	counter(descStateSessions, st.StateSessions.Load())
	counter(descStateKeys, st.StateKeysIn.Load())

	connected := 0
	for _, p := range n.Host().Network().Peers() {
		if n.Host().Network().Connectedness(p) == network.Connected {
			connected++
		}
	}
	gauge(descPeers, float64(connected))
	names := n.Namespaces()
	gauge(descNamespaces, float64(len(names)))
	for _, name := range names {
		ns, err := n.Namespace(c.s.ctx, name)
		if err != nil {
			continue
		}
		_, keys := ns.Digest()
		gauge(descKeys, float64(keys), name)
		gauge(descMeshPeers, float64(len(ns.MeshPeers())), name)
	}
	if dir := c.s.opts.DataDir; dir != "" {
		gauge(descDisk, float64(dirSize(dir)))
	}
	for _, l := range n.ReplicationLag() {
		gauge(descLag, l.Last.Seconds(), l.Namespace, l.Origin.String())
	}
}

func dirSize(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if info, err := d.Info(); err == nil && info.Mode().IsRegular() {
			total += info.Size()
		}
		return nil
	})
	return total
}
