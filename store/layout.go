package store

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	ds "github.com/ipfs/go-datastore"

	"github.com/mycelnet/mycel/crdt"
)

// Datastore layout. Names and keys are hex-encoded so that any UTF-8 string
// (slashes included) maps to one datastore key, in byte order.
//
//	/node/meta/<hex name>             caller metadata (identity key, config fingerprint)
//	/node/hlc                         last hybrid-clock reading
//	/node/owner                       replica id owning the store, identity-reused flag
//	/node/clean                       present: the last Close synced everything it handed out
//	/node/ns/<hex ns>                 namespace registry: 1, or 2 and this replica's counter floor
//	/ns/<hex ns>/c/<replica>          causal context ranges of one replica
//	/ns/<hex ns>/k/<hex key>          key state (crdt.Value encoding)
//	/ns/<hex ns>/l/<origin>/<seq>     log entry: uvarint unix ms, then length-prefixed delta
//	                                  encoding, origin's signer id and signature
//	/ns/<hex ns>/s/<origin>           sequence numbers of batches applied from origin
//	/ns/<hex ns>/sum                  sum of key digests and key count (crdt.DigestSum)
//	/ns/<hex ns>/x/<position>         the batch committed at that position: origin, seq
//	/ns/<hex ns>/xfloor               positions of this incarnation start above this
//	/ns/<hex ns>/sfloor               this replica's batch numbers start above this
//
// Replica ids and sequence numbers are 16 hex digits.
const (
	prefixNodeMeta = "/node/meta/"
	keyHLC         = "/node/hlc"
	keyOwner       = "/node/owner"
	keyClean       = "/node/clean"
	prefixRegistry = "/node/ns/"
)

type layout struct {
	base string // "/ns/<hex ns>"
}

func newLayout(ns string) layout { return layout{base: "/ns/" + hex.EncodeToString([]byte(ns))} }

func hex16(n uint64) string {
	const digits = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = digits[n&0xf]
		n >>= 4
	}
	return string(b[:])
}

func parseHex16(s string) (uint64, bool) {
	if len(s) != 16 {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 16, 64)
	return n, err == nil
}

func (l layout) stateKey(key string) ds.Key {
	return ds.RawKey(l.base + "/k/" + hex.EncodeToString([]byte(key)))
}
func (l layout) statePrefix() string { return l.base + "/k" }

func (l layout) ctxKey(r crdt.ReplicaID) ds.Key { return ds.RawKey(l.base + "/c/" + hex16(uint64(r))) }
func (l layout) ctxPrefix() string              { return l.base + "/c" }

func (l layout) seenKey(origin crdt.ReplicaID) ds.Key {
	return ds.RawKey(l.base + "/s/" + hex16(uint64(origin)))
}
func (l layout) seenPrefix() string { return l.base + "/s" }

func (l layout) logKey(origin crdt.ReplicaID, seq uint64) ds.Key {
	return ds.RawKey(l.base + "/l/" + hex16(uint64(origin)) + "/" + hex16(seq))
}
func (l layout) logPrefix() string { return l.base + "/l" }

func (l layout) sumKey() ds.Key { return ds.RawKey(l.base + "/sum") }

func (l layout) posKey(pos uint64) ds.Key { return ds.RawKey(l.base + "/x/" + hex16(pos)) }
func (l layout) posPrefix() string        { return l.base + "/x" }
func (l layout) posFloorKey() ds.Key      { return ds.RawKey(l.base + "/xfloor") }
func (l layout) seqFloorKey() ds.Key      { return ds.RawKey(l.base + "/sfloor") }

func registryKey(ns string) ds.Key { return ds.RawKey(prefixRegistry + hex.EncodeToString([]byte(ns))) }

func metaKey(name string) ds.Key { return ds.RawKey(prefixNodeMeta + hex.EncodeToString([]byte(name))) }

// lastSegment returns what follows the final slash.
func lastSegment(k string) string {
	for i := len(k) - 1; i >= 0; i-- {
		if k[i] == '/' {
			return k[i+1:]
		}
	}
	return k
}

// registryRecord is a namespace registry entry: 1, or 2 followed by the
// eight bytes of the floor this replica's counters start from.
func registryRecord(floor uint64) []byte {
	if floor == 0 {
		return []byte{1}
	}
	return binary.BigEndian.AppendUint64([]byte{2}, floor)
}

func parseRegistryRecord(b []byte) (floor uint64, err error) {
	switch {
	case len(b) == 1 && b[0] == 1:
		return 0, nil
	case len(b) == 9 && b[0] == 2:
		if floor = binary.BigEndian.Uint64(b[1:]); floor < FloorBase {
			return 0, fmt.Errorf("counter floor %d below %d", floor, FloorBase)
		}
		return floor, nil
	}
	return 0, fmt.Errorf("registry record of %d bytes", len(b))
}

// posFloorRecord is a namespace's position floor (positions of the
// incarnation that wrote it start above it) or batch-number floor.
func posFloorRecord(floor uint64) []byte { return binary.BigEndian.AppendUint64(nil, floor) }

func parsePosFloor(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("position floor of %d bytes", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// describeRecord names a datastore key in the store's own terms, for
// errors an operator reads: `namespace "orders" key "order-17"`,
// `namespace "orders" log entry 00000000000000ab/3`. A key outside the
// layout (the node's own records) is named as it is.
func describeRecord(k string) string {
	ns, what := recordName(k)
	if ns == "" {
		return what
	}
	return ns + " " + what
}

// recordName is describeRecord in two parts: the namespace (empty for a
// key outside every namespace) and the record within it.
func recordName(k string) (ns, what string) {
	if rest, ok := strings.CutPrefix(k, prefixRegistry); ok {
		if rest == "" {
			return "", "namespace registry"
		}
		if name, err := hex.DecodeString(rest); err == nil {
			return fmt.Sprintf("namespace %q", name), "registry entry"
		}
		return "", "namespace registry entry " + k
	}
	rest, ok := strings.CutPrefix(k, "/ns/")
	if !ok {
		return "", "record " + k
	}
	nsHex, tail, _ := strings.Cut(rest, "/")
	name, err := hex.DecodeString(nsHex)
	if err != nil {
		return "", "record " + k
	}
	ns = fmt.Sprintf("namespace %q", name)
	kind, id, _ := strings.Cut(tail, "/")
	switch kind {
	case "k":
		if id == "" {
			return ns, "key states"
		}
		if key, err := hex.DecodeString(id); err == nil {
			return ns, fmt.Sprintf("key %q", key)
		}
	case "sum", "xfloor", "sfloor":
		return ns, kind + " record"
	}
	if names, ok := recordKinds[kind]; ok {
		if id == "" {
			return ns, names.all
		}
		return ns, names.one + id
	}
	return ns, "record " + k
}

// recordKinds names a namespace's kinds of records (by their key's
// segment after the namespace) as a whole and one by one.
var recordKinds = map[string]struct{ all, one string }{
	"l": {"log", "log entry "},
	"c": {"causal context", "causal context of replica "},
	"s": {"seen batches", "seen batches of replica "},
	"x": {"position index", "position "},
}
