package main

import (
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
)

// FuzzSettingsFile feeds arbitrary bytes to the settings file parser as
// YAML and as TOML: it must not panic, and a file it refuses leaves the
// settings as they were.
func FuzzSettingsFile(f *testing.F) {
	for _, s := range []struct {
		toml bool
		file string
	}{
		{false, "api: 127.0.0.1:6000\nlisten: [/ip4/127.0.0.1/tcp/0]\nsync-interval: 2s\nmax-namespaces: 10\npprof: true\n"},
		{false, "listen: /ip4/127.0.0.1/tcp/0\n"},
		{false, "max-namespaces: 1.5\n"},
		{false, "unknown: 1\n"},
		{false, "api: 127.0.0.1:1\nmax-namespaces: 1.5\n"},
		{false, "api: x\n---\napi: y\n"},
		{false, "sync-interval: 5\n"},
		{false, "writer: [{a: b}]\n"},
		{false, "a: &x [*x]\n"},
		{false, ""},
		{true, "api = \"127.0.0.1:6000\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nmax-namespaces = 10\nmin-free-bytes = 9223372036854775807\n"},
		{true, "sync-interval = \"1s\"\n[table]\nx = 1\n"},
		{true, "max-namespaces = 1e400\n"},
	} {
		f.Add(s.toml, []byte(s.file))
	}
	f.Fuzz(func(t *testing.T, isTOML bool, b []byte) {
		path := "mycel.yaml"
		if isTOML {
			path = "mycel.toml"
		}
		s := defaultSettings()
		if err := parseSettingsFile(b, path, &s); err != nil {
			if !reflect.DeepEqual(s, defaultSettings()) {
				t.Fatalf("refused (%v) but changed the settings", err)
			}
			if !strings.HasPrefix(err.Error(), "config "+path+": ") {
				t.Fatalf("error %q does not name the file", err)
			}
		}
	})
}

// FuzzPSKFile: the pre-shared key file gives exactly 32 bytes or an error,
// and a file of 32 raw bytes or of 64 hex digits (a swarm.key's last line)
// is read as such.
func FuzzPSKFile(f *testing.F) {
	key := strings.Repeat("0123456789abcdef", 4)
	for _, s := range []string{
		"/key/swarm/psk/1.0.0/\n/base16/\n" + key + "\n",
		key,
		strings.Repeat("k", 32),
		"/key/swarm/psk/1.0.0/\n/base64/\nAAAA\n",
		"",
		key[:63],
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := parsePSK(b, "swarm.key")
		if err != nil {
			if k != nil {
				t.Fatalf("error %v with a key", err)
			}
			return
		}
		if len(k) != 32 {
			t.Fatalf("a key of %d bytes", len(k))
		}
		if len(b) == 32 {
			if string(k) != string(b) {
				t.Fatal("32 raw bytes not taken as they are")
			}
			return
		}
		fields := strings.Fields(string(b))
		if want, err := hex.DecodeString(fields[len(fields)-1]); err != nil || string(want) != string(k) {
			t.Fatalf("key %x is not the file's last field %q", k, fields[len(fields)-1])
		}
	})
}
