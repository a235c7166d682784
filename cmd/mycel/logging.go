package main

import (
	"context"
	"log/slog"
	"slices"
	"strings"

	golog "github.com/ipfs/go-log/v2"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/gologshim"
	"go.uber.org/zap/zapcore"

	"github.com/mycelnet/mycel/node"
)

// routeLibraryLogs sends the logs of the libraries under the node through
// the daemon's handler h, so that --log-format covers every line on stderr.
// Left alone, each writes its own format: go-libp2p through gologshim
// (slog), gossipsub through a logger of its own, go-ds-pebble and the DHT
// through go-log (zap), quic-go through the standard log package (which
// slog.SetDefault redirects, at level info). Which of their records are
// logged is still theirs to say (GOLOG_LOG_LEVEL, default error); h's level
// (--log-level) applies on top. It sets process globals, so only the daemon
// calls it, before it opens the node; the option it returns covers
// gossipsub, which the node creates.
func routeLibraryLogs(h slog.Handler) node.Option {
	slog.SetDefault(slog.New(h))
	lh := &libp2pHandler{h: h, cfg: gologshim.ConfigFromEnv()}
	gologshim.SetDefaultHandler(lh)
	golog.SetPrimaryCore(&zapToSlog{h: h})
	return node.WithPubSubOptions(pubsub.WithLogger(slog.New(lh.WithAttrs([]slog.Attr{slog.String("logger", "pubsub")}))))
}

// libp2pHandler applies gologshim's per-subsystem levels to h. gologshim
// names the subsystem with a "logger" attribute (WithAttrs) before it logs.
type libp2pHandler struct {
	h     slog.Handler
	cfg   *gologshim.Config
	floor slog.Level
	named bool
}

func (l *libp2pHandler) Enabled(ctx context.Context, lvl slog.Level) bool {
	floor := l.floor
	if !l.named {
		floor = l.cfg.LevelForSystem("")
	}
	return lvl >= floor && l.h.Enabled(ctx, lvl)
}

func (l *libp2pHandler) Handle(ctx context.Context, r slog.Record) error { return l.h.Handle(ctx, r) }

func (l *libp2pHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	out := *l
	for _, a := range attrs {
		if a.Key == "logger" {
			out.floor, out.named = l.cfg.LevelForSystem(a.Value.String()), true
		}
	}
	out.h = l.h.WithAttrs(attrs)
	return &out
}

func (l *libp2pHandler) WithGroup(name string) slog.Handler {
	out := *l
	out.h = l.h.WithGroup(name)
	return &out
}

// zapToSlog is a zap core writing to a slog handler: go-log's loggers
// filter by their own levels first, then hand their entries to it.
type zapToSlog struct{ h slog.Handler }

// slogLevel maps zap's levels (debug -1 ... fatal 5) onto slog's steps of 4.
func slogLevel(l zapcore.Level) slog.Level { return slog.Level(4 * int(l)) }

func (z *zapToSlog) Enabled(l zapcore.Level) bool {
	return z.h.Enabled(context.Background(), slogLevel(l))
}

func (z *zapToSlog) With(fields []zapcore.Field) zapcore.Core {
	return &zapToSlog{h: z.h.WithAttrs(slogAttrs(fields))}
}

func (z *zapToSlog) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if z.Enabled(e.Level) {
		return ce.AddCore(e, z)
	}
	return ce
}

func (z *zapToSlog) Write(e zapcore.Entry, fields []zapcore.Field) error {
	r := slog.NewRecord(e.Time, slogLevel(e.Level), e.Message, 0)
	if e.LoggerName != "" {
		r.AddAttrs(slog.String("logger", e.LoggerName))
	}
	r.AddAttrs(slogAttrs(fields)...)
	return z.h.Handle(context.Background(), r)
}

func (z *zapToSlog) Sync() error { return nil }

// slogAttrs converts zap fields, in key order.
func slogAttrs(fields []zapcore.Field) []slog.Attr {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields))
	for k, v := range enc.Fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	slices.SortFunc(attrs, func(a, b slog.Attr) int { return strings.Compare(a.Key, b.Key) })
	return attrs
}
