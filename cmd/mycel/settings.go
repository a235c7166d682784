package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/mycelnet/mycel/node"
)

// settings are the daemon's configuration. Each field has one name used
// as the flag (--name), the config file key (name) and the environment
// variable (MYCEL_NAME, dashes as underscores). Precedence: flags, then
// environment, then the config file, then the defaults below.
type settings struct {
	DataDir       string        `name:"data-dir" usage:"data directory: identity key and the Pebble store"`
	Listen        []string      `name:"listen" usage:"libp2p listen multiaddr (repeatable)"`
	API           string        `name:"api" usage:"HTTP API address HOST:PORT (port 0: any free port, printed at start)"`
	Bootstrap     []string      `name:"bootstrap" usage:"peer multiaddr with /p2p/<id> to dial and keep connected (repeatable)"`
	MDNS          bool          `name:"mdns" usage:"discover peers on the local network with mDNS"`
	DHT           bool          `name:"dht" usage:"Kademlia DHT discovery: meet the other nodes of each namespace through Mycel's own DHT, seeded by --bootstrap"`
	AllowPeer     []string      `name:"allow-peer" usage:"peer id allowed to connect (repeatable); once one is given, no other peer can connect either way"`
	Writer        []string      `name:"writer" usage:"NS=PEERID: only PEERID may write to namespace NS (repeatable; include this node's own id if it writes; a namespace named nowhere takes writes from anyone)"`
	NAT           bool          `name:"nat" usage:"NAT traversal: AutoNAT, UPnP/NAT-PMP, hole punching, a circuit relay v2 client (AutoRelay) and, while publicly reachable, a relay service"`
	PSKFile       string        `name:"psk-file" usage:"file holding a 32-byte pre-shared key (raw, 64 hex digits, or a libp2p swarm.key): private network, TCP only"`
	Namespace     []string      `name:"namespace" usage:"namespace to open at start (repeatable; others open on first use)"`
	LogLevel      string        `name:"log-level" usage:"debug, info, warn or error"`
	LogFormat     string        `name:"log-format" usage:"text or json (logs go to stderr)"`
	APITokenFile  string        `name:"api-token-file" usage:"file holding a bearer token the API requires"`
	APIInsecure   bool          `name:"api-insecure" usage:"allow a non-loopback API address without a token"`
	Pprof         bool          `name:"pprof" usage:"serve net/http/pprof under /debug/pprof/ on the API address"`
	SyncInterval  time.Duration `name:"sync-interval" usage:"mean time between background syncs with a random peer"`
	NoSync        bool          `name:"no-sync" usage:"acknowledge writes before fsync (faster; a crash loses up to the last 100 ms of writes)"`
	MaxKeyBytes   int           `name:"max-key-bytes" usage:"largest key, set element, map field or namespace name accepted, 1 to 4096 (namespace names: 1024 at most; every node of a cluster needs the same: a node refuses batches over its own limits)"`
	MaxValueBytes int           `name:"max-value-bytes" usage:"largest value (and request body) accepted"`
	MinFreeBytes  int           `name:"min-free-bytes" usage:"free space kept on the data directory's disk: below it writes (local and from peers) get 507 until there is room again, reads go on; 0 turns the check off (a full disk then ends the process)"`
	MeshDegree    int           `name:"mesh-degree" usage:"gossipsub mesh degree D, 2 to 32: fewer duplicate sends below the default, more redundancy above it"`
	MeshDegreeLow int           `name:"mesh-degree-low" usage:"gossipsub's Dlo, 1 to --mesh-degree: a node with fewer mesh peers grafts more (0: gossipsub's 5 at degree 6, else two thirds of the degree, at least 1; at degree 2 set 2, or a large cluster's mesh splits into islands)"`
	FloodPublish  bool          `name:"flood-publish" usage:"also send this node's own changes straight to every connected peer in the namespace, not only along the gossip mesh (one hop fewer, more duplicate sends)"`
	PeerExchange  bool          `name:"peer-exchange" usage:"answer each peer pruned from (or refused into) this node's full gossip mesh with up to 16 other peers to dial (gossipsub peer exchange): for the nodes others bootstrap from"`
	ForgetPeers   bool          `name:"forget-peers" usage:"keep no record of the peers this node was connected to, and remove one an earlier run kept (by default up to 32 are kept in the store and dialled at the next start)"`
	ShutdownWait  time.Duration `name:"shutdown-timeout" usage:"bound on graceful shutdown after SIGINT/SIGTERM: draining API requests gets at most half, closing the node the rest"`
	MaxNamespaces int           `name:"max-namespaces" usage:"the API creates a namespace only while the node holds fewer (507 past it); those opened at start count too"`
	MaxWatchers   int           `name:"max-watchers" usage:"watch streams open at once; one more is answered 503"`
}

func defaultSettings() settings {
	return settings{
		DataDir:       "./mycel-data",
		Listen:        []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"},
		API:           "127.0.0.1:5080",
		LogLevel:      "info",
		LogFormat:     "text",
		SyncInterval:  10 * time.Second,
		MaxKeyBytes:   1 << 10,
		MaxValueBytes: 1 << 20,
		MinFreeBytes:  node.DefaultMinFreeBytes,
		MeshDegree:    node.DefaultMeshDegree,
		ShutdownWait:  10 * time.Second,
		MaxNamespaces: 1024,
		MaxWatchers:   1024,
	}
}

// settingField is one field of settings with its reflection handle.
type settingField struct {
	name, usage string
	index       int
}

func settingFields() []settingField {
	t := reflect.TypeFor[settings]()
	out := make([]settingField, t.NumField())
	for i := range out {
		f := t.Field(i)
		out[i] = settingField{name: f.Tag.Get("name"), usage: f.Tag.Get("usage"), index: i}
	}
	return out
}

// bindFlags defines one flag per setting on fs, writing into s.
func bindFlags(fs *pflag.FlagSet, s *settings) {
	v := reflect.ValueOf(s).Elem()
	for _, f := range settingFields() {
		switch p := v.Field(f.index).Addr().Interface().(type) {
		case *string:
			fs.StringVar(p, f.name, *p, f.usage)
		case *[]string:
			fs.StringArrayVar(p, f.name, *p, f.usage)
		case *bool:
			fs.BoolVar(p, f.name, *p, f.usage)
		case *int:
			fs.IntVar(p, f.name, *p, f.usage)
		case *time.Duration:
			fs.DurationVar(p, f.name, *p, f.usage)
		default:
			panic(fmt.Sprintf("settings: field %s has no flag type", f.name))
		}
	}
}

// resolve builds the effective settings: defaults, then the config file
// (if any), then MYCEL_* environment variables, then the flags the user set
// (fromFlags holds every flag's value; fs says which were set).
func resolve(fs *pflag.FlagSet, fromFlags settings, configFile string, env func(string) string) (settings, error) {
	out := defaultSettings()
	if configFile == "" {
		configFile = env("MYCEL_CONFIG")
	}
	if configFile != "" {
		if err := loadFile(configFile, &out); err != nil {
			return out, err
		}
	}
	v, fv := reflect.ValueOf(&out).Elem(), reflect.ValueOf(fromFlags)
	for _, f := range settingFields() {
		key := "MYCEL_" + strings.ToUpper(strings.ReplaceAll(f.name, "-", "_"))
		if raw := env(key); raw != "" {
			if err := setFromString(v.Field(f.index), raw); err != nil {
				return out, fmt.Errorf("%s=%q: %v", key, raw, err)
			}
		}
		if fl := fs.Lookup(f.name); fl != nil && fl.Changed {
			v.Field(f.index).Set(fv.Field(f.index))
		}
	}
	return out, nil
}

func setFromString(v reflect.Value, raw string) error {
	switch p := v.Addr().Interface().(type) {
	case *string:
		*p = raw
	case *[]string:
		*p = nil
		for _, s := range strings.Split(raw, ",") {
			if s = strings.TrimSpace(s); s != "" {
				*p = append(*p, s)
			}
		}
	case *bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return err
		}
		*p = b
	case *int:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return err
		}
		*p = n
	case *time.Duration:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return err
		}
		*p = d
	}
	return nil
}

// loadFile reads a YAML (.yaml, .yml) or TOML (.toml) file of settings;
// keys are the flag names. Unknown keys are an error, so typos do not pass
// silently. Durations are strings ("2s").
func loadFile(path string, s *settings) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return parseSettingsFile(b, path, s)
}

// parseSettingsFile sets s from b, the contents of the settings file path
// (whose extension names its format). On an error s is left as it was.
func parseSettingsFile(b []byte, path string, s *settings) error {
	var err error
	raw := map[string]any{}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".toml":
		dec := toml.NewDecoder(bytes.NewReader(b))
		err = dec.Decode(&raw)
	case ".yaml", ".yml", "":
		dec := yaml.NewDecoder(bytes.NewReader(b))
		if err = dec.Decode(&raw); errors.Is(err, io.EOF) {
			err = nil // an empty file sets nothing
		} else if err == nil {
			var more any
			if dec.Decode(&more) != io.EOF {
				err = errors.New("more than one YAML document (only one is read)")
			}
		}
	default:
		return fmt.Errorf("config %s: unknown format (want .yaml, .yml or .toml)", path)
	}
	if err != nil {
		return fmt.Errorf("config %s: %v", path, err)
	}
	fields := map[string]settingField{}
	for _, f := range settingFields() {
		fields[f.name] = f
	}
	out := *s
	v := reflect.ValueOf(&out).Elem()
	// In order, so that of several bad keys the same one is named.
	for _, key := range slices.Sorted(maps.Keys(raw)) {
		val := raw[key]
		f, ok := fields[key]
		if !ok {
			return fmt.Errorf("config %s: unknown key %q", path, key)
		}
		if err := setFromAny(v.Field(f.index), val); err != nil {
			return fmt.Errorf("config %s: %s: %v", path, key, err)
		}
	}
	*s = out
	return nil
}

func setFromAny(v reflect.Value, val any) error {
	switch x := val.(type) {
	case string:
		if v.Kind() == reflect.Slice {
			v.Set(reflect.ValueOf([]string{x}))
			return nil
		}
		if v.Kind() == reflect.String {
			v.SetString(x)
			return nil
		}
		return setFromString(v, x)
	case bool:
		if v.Kind() != reflect.Bool {
			return fmt.Errorf("want %s, got a boolean", v.Type())
		}
		v.SetBool(x)
	case int, int64, uint64, float64:
		n, err := strconv.ParseFloat(fmt.Sprint(x), 64)
		if err != nil || v.Kind() != reflect.Int || n != float64(int64(n)) {
			return fmt.Errorf("want %s, got the number %v", v.Type(), x)
		}
		v.SetInt(int64(n))
	case []any:
		if v.Kind() != reflect.Slice {
			return fmt.Errorf("want %s, got a list", v.Type())
		}
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("list items must be strings, got %v", e)
			}
			out = append(out, s)
		}
		v.Set(reflect.ValueOf(out))
	default:
		return fmt.Errorf("unsupported value %v", val)
	}
	return nil
}
