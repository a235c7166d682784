package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/mycelnet/mycel/cmd/mycel/internal/api"
	"github.com/mycelnet/mycel/crdt"
	"github.com/mycelnet/mycel/node"
)

func daemonCmd() *cobra.Command {
	s := defaultSettings()
	var configFile string
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run a Mycel node with its HTTP API",
		Long: `Run a Mycel node: a libp2p host that replicates namespaces with its peers,
and the HTTP API on --api. On start it prints its peer id, its listen
addresses (each usable as another node's --bootstrap), the API address and
the data directory. SIGINT or SIGTERM shut it down gracefully.

Settings come from, in increasing precedence: defaults, the --config file
(YAML or TOML, keys named like the flags), MYCEL_* environment variables
(MYCEL_DATA_DIR, MYCEL_LISTEN=a,b, ...; MYCEL_CONFIG names the file), flags.`,
		Example: `  # one node with the defaults (data in ./mycel-data, API on 127.0.0.1:5080)
  mycel daemon

  # a second node on the same machine, bootstrapped from the first
  mycel daemon --data-dir ./data2 --listen /ip4/127.0.0.1/tcp/4002 --api 127.0.0.1:5081 \
    --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...

  # from a config file
  mycel daemon --config mycel.yaml`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			eff, err := resolve(cmd.Flags(), s, configFile, os.Getenv)
			if err != nil {
				return usageError{err}
			}
			return runDaemon(eff, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	bindFlags(cmd.Flags(), &s)
	cmd.Flags().StringVar(&configFile, "config", "", "YAML (.yaml, .yml) or TOML (.toml) settings file; keys are the flag names")
	return cmd
}

// daemonPlan is what runDaemon checks before it opens anything.
type daemonPlan struct {
	cfg    node.Config
	token  string
	logger *slog.Logger
}

// maxKeyBytes bounds --max-key-bytes. The value limit leaves 8 KiB of an
// operation's MaxOpBytes for the rest, the key among it; a map put with a
// key, a field name and a value all at their limits can still pass
// MaxOpBytes, and is refused then (ErrTooLarge), before anything is written.
const maxKeyBytes = 4 << 10

func plan(s settings, stderr io.Writer) (daemonPlan, error) {
	var p daemonPlan
	var level slog.Level
	if err := level.UnmarshalText([]byte(s.LogLevel)); err != nil {
		return p, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", s.LogLevel)}
	}
	hopts := &slog.HandlerOptions{Level: level}
	switch s.LogFormat {
	case "text":
		p.logger = slog.New(slog.NewTextHandler(stderr, hopts))
	case "json":
		p.logger = slog.New(slog.NewJSONHandler(stderr, hopts))
	default:
		return p, usageError{fmt.Errorf("--log-format %q: want text or json", s.LogFormat)}
	}
	if s.DataDir == "" {
		return p, usageError{errors.New("--data-dir must not be empty")}
	}
	if s.MaxNamespaces < 1 {
		return p, usageError{fmt.Errorf("--max-namespaces %d: want at least 1", s.MaxNamespaces)}
	}
	if s.MaxWatchers < 1 {
		return p, usageError{fmt.Errorf("--max-watchers %d: want at least 1", s.MaxWatchers)}
	}
	// One operation carries at most node.MaxOpBytes: a larger value limit
	// would accept values every write of which then fails.
	if maxValue := node.MaxOpBytes - 8<<10; s.MaxValueBytes < 1 || s.MaxValueBytes > maxValue {
		return p, usageError{fmt.Errorf("--max-value-bytes %d: want 1 to %d (one operation carries at most %d bytes)", s.MaxValueBytes, maxValue, node.MaxOpBytes)}
	}
	if s.MinFreeBytes < 0 {
		return p, usageError{fmt.Errorf("--min-free-bytes %d: want 0 (no check) or more", s.MinFreeBytes)}
	}
	if s.MaxKeyBytes < 1 || s.MaxKeyBytes > maxKeyBytes {
		return p, usageError{fmt.Errorf("--max-key-bytes %d: want 1 to %d", s.MaxKeyBytes, maxKeyBytes)}
	}
	limits := crdt.Limits{MaxKeyBytes: s.MaxKeyBytes, MaxValueBytes: s.MaxValueBytes}
	if s.SyncInterval <= 0 {
		return p, usageError{fmt.Errorf("--sync-interval %s: want a positive duration", s.SyncInterval)}
	}
	if s.MeshDegree < 2 || s.MeshDegree > 32 {
		return p, usageError{fmt.Errorf("--mesh-degree %d: want 2 to 32", s.MeshDegree)}
	}
	if s.MeshDegreeLow < 0 || s.MeshDegreeLow > s.MeshDegree {
		return p, usageError{fmt.Errorf("--mesh-degree-low %d: want 1 to --mesh-degree (%d), or 0 for the default (5 at degree 6, else two thirds of the degree, at least 1)", s.MeshDegreeLow, s.MeshDegree)}
	}
	for _, name := range s.Namespace {
		if err := node.ValidNamespaceName(name, limits); err != nil {
			return p, usageError{fmt.Errorf("--namespace %q: %v", name, err)}
		}
	}
	if s.ShutdownWait <= 0 {
		return p, usageError{fmt.Errorf("--shutdown-timeout %s: want a positive duration", s.ShutdownWait)}
	}
	if s.APITokenFile != "" {
		b, err := os.ReadFile(s.APITokenFile)
		if err != nil {
			return p, fmt.Errorf("--api-token-file: %w", err)
		}
		if p.token = strings.TrimSpace(string(b)); p.token == "" {
			return p, fmt.Errorf("--api-token-file %s is empty", s.APITokenFile)
		}
	}
	host, port, err := net.SplitHostPort(s.API)
	if err == nil {
		_, err = net.LookupPort("tcp", port)
	}
	if err != nil {
		return p, usageError{fmt.Errorf("--api %q: want HOST:PORT: %v", s.API, err)}
	}
	if !isLoopback(host) && p.token == "" && !s.APIInsecure {
		return p, usageError{fmt.Errorf("--api %s is not a loopback address: refusing to serve the API there without --api-token-file (or --api-insecure)", s.API)}
	}
	p.cfg = node.Config{
		DataDir: s.DataDir, Listen: s.Listen, Bootstrap: s.Bootstrap, MDNS: s.MDNS, DHT: s.DHT,
		NoSync: s.NoSync, SyncInterval: s.SyncInterval, MeshDegree: s.MeshDegree, FloodPublish: s.FloodPublish,
		MeshDegreeLow: s.MeshDegreeLow, PeerExchange: s.PeerExchange, ForgetPeers: s.ForgetPeers,
		Limits: limits, MinFreeBytes: int64(s.MinFreeBytes),
	}
	if s.MinFreeBytes == 0 {
		p.cfg.MinFreeBytes = -1 // the flag's 0 is the node's "off"
	}
	p.cfg.NAT = s.NAT
	for _, a := range s.AllowPeer {
		id, err := peer.Decode(a)
		if err != nil {
			return p, usageError{fmt.Errorf("--allow-peer %q: not a peer id: %v", a, err)}
		}
		p.cfg.AllowPeers = append(p.cfg.AllowPeers, id)
	}
	for _, w := range s.Writer {
		ns, a, ok := strings.Cut(w, "=")
		if !ok || ns == "" {
			return p, usageError{fmt.Errorf("--writer %q: want NAMESPACE=PEERID", w)}
		}
		if err := node.ValidNamespaceName(ns, p.cfg.Limits); err != nil {
			return p, usageError{fmt.Errorf("--writer %q: %v", w, err)}
		}
		id, err := peer.Decode(a)
		if err != nil {
			return p, usageError{fmt.Errorf("--writer %q: not a peer id: %v", w, err)}
		}
		if p.cfg.Writers == nil {
			p.cfg.Writers = make(map[string][]peer.ID)
		}
		p.cfg.Writers[ns] = append(p.cfg.Writers[ns], id)
	}
	if s.PSKFile != "" {
		if p.cfg.PSK, err = readPSK(s.PSKFile); err != nil {
			return p, err
		}
	}
	return p, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// readPSK reads a 32-byte key: raw bytes, 64 hex digits, or a libp2p
// swarm.key file (/key/swarm/psk/1.0.0/, /base16/, hex).
func readPSK(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--psk-file: %w", err)
	}
	return parsePSK(b, path)
}

// parsePSK reads the key from b, the contents of the file path.
func parsePSK(b []byte, path string) ([]byte, error) {
	if len(b) == 32 {
		return b, nil
	}
	lines := strings.Fields(string(b))
	if len(lines) > 0 {
		if k, err := hex.DecodeString(lines[len(lines)-1]); err == nil && len(k) == 32 {
			return k, nil
		}
	}
	return nil, fmt.Errorf("--psk-file %s: want 32 raw bytes, 64 hex digits or a swarm.key file", path)
}

func runDaemon(s settings, stdout, stderr io.Writer) error {
	p, err := plan(s, stderr)
	if err != nil {
		return err
	}
	log := p.logger
	libLogs := routeLibraryLogs(log.Handler())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The API port first: a daemon that cannot serve must not have
	// created its data directory, joined the network and taken writes.
	ln, err := net.Listen("tcp", s.API)
	if err != nil {
		return fmt.Errorf("API listen on %s: %w", s.API, err)
	}
	defer ln.Close() // Serve owns it once started; closing twice is harmless
	n, err := node.Open(ctx, p.cfg, node.WithLogger(log), libLogs)
	switch {
	case errors.Is(err, node.ErrInUse):
		return fmt.Errorf("data directory %s is in use by another process (is another mycel daemon running on it?): %w", s.DataDir, err)
	case errors.Is(err, node.ErrConfig):
		return usageError{err}
	case err != nil:
		return fmt.Errorf("starting node: %w", err)
	}
	closeNode := func() {
		if err := n.Close(); err != nil {
			log.Error("closing node", "err", err)
		}
	}
	for _, name := range s.Namespace {
		if _, err := n.Namespace(ctx, name); err != nil {
			closeNode()
			return usageError{fmt.Errorf("--namespace %q: %w", name, err)}
		}
	}
	srv, err := api.New(api.Options{Node: n, Limits: p.cfg.Limits, MaxNamespaces: s.MaxNamespaces, MaxWatchers: s.MaxWatchers,
		Token: p.token, Pprof: s.Pprof, DataDir: s.DataDir, Logger: log})
	if err != nil {
		closeNode()
		return err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	hs.RegisterOnShutdown(func() { _ = srv.Close() })

	dir, _ := filepath.Abs(s.DataDir)
	fmt.Fprintf(stdout, "mycel daemon %s\n", versionString())
	fmt.Fprintf(stdout, "peer id:  %s\n", n.ID())
	for _, a := range n.Addrs() {
		fmt.Fprintf(stdout, "listen:   %s\n", a)
	}
	fmt.Fprintf(stdout, "api:      %s\n", ln.Addr())
	fmt.Fprintf(stdout, "data dir: %s\n", dir)
	if p.cfg.PSK != nil {
		fmt.Fprintln(stdout, "private network: TCP only (QUIC cannot run with a pre-shared key)")
	}
	fmt.Fprintln(stdout, "ready")
	log.Info("daemon started", "peer", n.ID(), "api", ln.Addr().String(), "data_dir", dir)

	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	failed, err := awaitEnd(ctx, served, n.Err, time.Second)
	switch {
	case err != nil:
		closeNode()
		return fmt.Errorf("API server: %w", err)
	case failed != nil:
		log.Error("the store failed; shutting down", "err", failed)
	default:
		log.Info("shutting down", "bound", s.ShutdownWait)
	}
	stop() // a second signal kills the process the default way
	if err := shutdown(hs, n, served, s.ShutdownWait, log); err != nil || failed == nil {
		return err
	}
	return fmt.Errorf("the store failed: %w (if it is corrupt, restore the data directory, or move it aside for the node to sync afresh)", failed)
}

// awaitEnd waits for what ends the daemon: a signal (ctx), the API server
// stopping (its error), or the store failing (storeErr, checked every
// interval; its error). A failed store — a write the disk refused,
// corruption found on it — takes no more writes, local or remote, so the
// daemon exits rather than serve ever staler reads, and a supervisor sees
// it.
func awaitEnd(ctx context.Context, served <-chan error, storeErr func() error, every time.Duration) (failed, serveErr error) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, nil
		case err := <-served:
			return nil, err
		case <-tick.C:
			if err := storeErr(); err != nil {
				return err, nil
			}
		}
	}
}

// shutdown stops accepting, lets in-flight requests finish, then closes
// the node (which flushes the store), all within bound. Draining gets at
// most half of it, so that closing the node always has the other half: a
// slow request must not leave the node no time to close.
func shutdown(hs *http.Server, n *node.Node, served <-chan error, bound time.Duration, log *slog.Logger) error {
	start := time.Now()
	drain, cancel := context.WithTimeout(context.Background(), bound/2)
	defer cancel()
	if err := hs.Shutdown(drain); err != nil {
		log.Warn("API shutdown: requests still running at half the bound, closing their connections", "err", err)
		_ = hs.Close()
	}
	<-served
	closed := make(chan error, 1)
	go func() { closed <- n.Close() }()
	timer := time.NewTimer(bound - time.Since(start))
	defer timer.Stop()
	select {
	case err := <-closed:
		if err != nil {
			return fmt.Errorf("closing node: %w", err)
		}
	case <-timer.C:
		return fmt.Errorf("closing node: not done within %s", bound)
	}
	log.Info("stopped", "took", time.Since(start))
	return nil
}
