package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/node"
)

// Options configure a Server. Node is required; every other zero field
// takes the default written on it.
type Options struct {
	// Node serves every request.
	Node *node.Node
	// Limits are the node's limits (node.Config.Limits), used to check keys
	// and namespaces before anything is opened. Zero fields: crdt defaults.
	Limits crdt.Limits
	// MaxBodyBytes bounds a request body; a larger one is answered 413.
	// Default: Limits.MaxValueBytes (1 MiB), so any value the node accepts
	// fits.
	MaxBodyBytes int64
	// MaxNamespaces bounds the namespaces the API creates: a request naming
	// a namespace the node does not hold is answered 507 while the node
	// holds MaxNamespaces or more (those opened at start count too).
	// Default 1,024.
	MaxNamespaces int
	// MaxWatchers bounds the watch streams open at once; one more is
	// answered 503 (each holds two goroutines and up to a million queued
	// events for a slow reader). Default 1,024.
	MaxWatchers int
	// FirstSyncWait bounds how long a read of a namespace this process has
	// just opened waits for its first sync with the connected peers
	// (node.Namespace.WaitFirstSync), so that it answers with what they
	// hold rather than from an empty replica. Default 3 s.
	FirstSyncWait time.Duration
	// WatchWriteTimeout bounds how long a write to a watch stream may
	// block: a client that stops reading (a paused pager, a stopped
	// process) loses its stream, and its slot and queued events, after
	// this, and can resume from its last cursor. Default 30 s.
	WatchWriteTimeout time.Duration
	// Token, if set, must be presented as "Authorization: Bearer <Token>"
	// on every route except /healthz.
	Token string
	// Pprof mounts net/http/pprof under /debug/pprof/.
	Pprof bool
	// DataDir is measured for the mycel_store_disk_bytes metric (empty:
	// not exported).
	DataDir string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Server answers the HTTP API. Close ends its watch streams.
type Server struct {
	opts    Options
	n       *node.Node
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics
	mux     *http.ServeMux

	ctx    context.Context // cancelled by Close: ends watch streams
	cancel context.CancelFunc

	createMu sync.Mutex // namespace creations take turns (see open)

	watchers atomic.Int64 // open watch streams
}

// New returns a server for opts.Node.
func New(opts Options) (*Server, error) {
	if opts.Node == nil {
		return nil, errors.New("api: nil node")
	}
	if opts.Limits.MaxKeyBytes <= 0 {
		opts.Limits.MaxKeyBytes = crdt.DefaultLimits().MaxKeyBytes
	}
	if opts.Limits.MaxValueBytes <= 0 {
		opts.Limits.MaxValueBytes = crdt.DefaultLimits().MaxValueBytes
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = int64(opts.Limits.MaxValueBytes)
	}
	if opts.MaxNamespaces <= 0 {
		opts.MaxNamespaces = 1024
	}
	if opts.MaxWatchers <= 0 {
		opts.MaxWatchers = 1024
	}
	if opts.FirstSyncWait <= 0 {
		opts.FirstSyncWait = 3 * time.Second
	}
	if opts.WatchWriteTimeout <= 0 {
		opts.WatchWriteTimeout = 2 * heartbeat
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{opts: opts, n: opts.Node, log: opts.Logger}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.reg = prometheus.NewRegistry()
	s.metrics = newMetrics(s)
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("/v1/status", s.only("status", http.MethodGet, s.status))
	s.mux.HandleFunc("/healthz", s.only("healthz", http.MethodGet, func(w http.ResponseWriter, r *http.Request) {
		if err := s.opts.Node.Err(); err != nil {
			// The store failed (a write the disk refused, corruption):
			// the node refuses writes (and the daemon exits). The reason
			// can name files: only for callers the API trusts.
			body := map[string]string{"status": "failed"}
			if s.opts.Token == "" || s.authorized(r) {
				body["error"] = err.Error()
			}
			writeJSON(w, http.StatusServiceUnavailable, body)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}))
	s.mux.Handle("/metrics", methods(promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}), http.MethodGet))
	if opts.Pprof {
		s.mux.Handle("/debug/pprof/", methods(http.HandlerFunc(pprof.Index), http.MethodGet))
		s.mux.Handle("/debug/pprof/cmdline", methods(http.HandlerFunc(pprof.Cmdline), http.MethodGet))
		s.mux.Handle("/debug/pprof/profile", methods(http.HandlerFunc(pprof.Profile), http.MethodGet))
		// go tool pprof looks symbols up with POST.
		s.mux.Handle("/debug/pprof/symbol", methods(http.HandlerFunc(pprof.Symbol), http.MethodGet, http.MethodPost))
		s.mux.Handle("/debug/pprof/trace", methods(http.HandlerFunc(pprof.Trace), http.MethodGet))
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no route for "+r.URL.Path)
	})
	return s, nil
}

// Handler returns the API's handler.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Registry returns the Prometheus registry behind /metrics.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Close ends every watch stream. It is safe to call more than once; it
// does not close the node.
func (s *Server) Close() error {
	s.cancel()
	return nil
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.metrics.inFlight.Inc()
	defer s.metrics.inFlight.Dec()
	if s.opts.Token != "" && r.URL.Path != "/healthz" && !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="mycel"`)
		writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
		return
	}
	// Namespace routes are parsed by hand (serveNamespace) so that keys
	// with "//", "." or ".." are not redirected by ServeMux's path cleaning.
	if strings.HasPrefix(r.URL.Path, "/v1/ns/") {
		s.serveNamespace(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) authorized(r *http.Request) bool {
	// The scheme is case-insensitive (RFC 9110 §11.1).
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") && subtle.ConstantTimeCompare([]byte(tok), []byte(s.opts.Token)) == 1
}

// only restricts a handler to one method and counts it as op.
func (s *Server) only(op, method string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if allow(w, r, method) {
			s.observe(op, w, r, h)
		}
	}
}

// methods restricts h to the given methods (GET admits HEAD): any other is
// answered 405 with a JSON error and Allow.
func methods(h http.Handler, ms ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if allow(w, r, ms...) {
			h.ServeHTTP(w, r)
		}
	})
}

// observe runs h and records the op's outcome and latency.
func (s *Server) observe(op string, w http.ResponseWriter, r *http.Request, h http.HandlerFunc) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	h(rec, r)
	s.metrics.observe(op, rec.code, time.Since(start))
}

// statusRecorder remembers the status code; Unwrap lets
// http.ResponseController reach Flush on the real writer.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int)        { s.code = code; s.ResponseWriter.WriteHeader(code) }
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

type peerStatus struct {
	ID        string     `json:"id"`
	Addrs     []string   `json:"addrs"`
	Connected bool       `json:"connected"`
	LastSync  *time.Time `json:"last_sync"` // null until a sync with the peer completed
}

type statusBody struct {
	PeerID     string       `json:"peer_id"`
	Addrs      []string     `json:"addrs"`
	Peers      []peerStatus `json:"peers"`
	Namespaces []string     `json:"namespaces"`
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	body := statusBody{PeerID: s.n.ID().String(), Addrs: nonNil(s.n.Addrs()), Peers: []peerStatus{}, Namespaces: nonNil(s.n.Namespaces())}
	for _, p := range s.n.Peers() {
		ps := peerStatus{ID: p.ID.String(), Addrs: nonNil(p.Addrs), Connected: p.Connected}
		if !p.LastSync.IsZero() {
			t := p.LastSync.UTC()
			ps.LastSync = &t
		}
		body.Peers = append(body.Peers, ps)
	}
	writeJSON(w, http.StatusOK, body)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
