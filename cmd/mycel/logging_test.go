package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"

	"go.uber.org/zap"
)

// TestZapToSlog: a go-log (zap) entry reaches the slog handler with its
// level, message, logger name and fields, and the handler's level decides.
func TestZapToSlog(t *testing.T) {
	var buf bytes.Buffer
	h := slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})
	log := zap.New(&zapToSlog{h: h}).Named("pebble").With(zap.String("db", "main"))
	log.Info("dropped: below the handler's level")
	log.Error("disk full", zap.Int("free", 0), zap.Error(errors.New("ENOSPC")))
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("%q: %v", buf.String(), err)
	}
	want := map[string]any{"level": "ERROR", "msg": "disk full", "logger": "pebble", "db": "main", "free": float64(0), "error": "ENOSPC"}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s = %v, want %v (record %s)", k, rec[k], v, buf.String())
		}
	}
}
