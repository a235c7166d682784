package store

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/mycelnet/mycel/crdt"
)

// The fuzz targets feed arbitrary bytes to the decoders of what the store
// reads back from disk that crdt does not decode itself: log record
// headers, the clock reading and hex-encoded names and ids in keys. None
// may panic; what they accept re-encodes, through the encoder the store
// writes with, to something that decodes to the same thing.

func FuzzParseLogRecord(f *testing.F) {
	for _, s := range fuzzLogRecordSeeds(f) {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ms, delta, signer, sig, err := parseLogRecord(data)
		if err != nil {
			return
		}
		// The parts are slices of the record, not copies.
		for _, part := range [][]byte{delta, signer, sig} {
			if len(part) > 0 && !bytes.Contains(data, part) {
				t.Fatalf("parseLogRecord(%q): part %q not in the record", data, part)
			}
		}
		if len(signer) > MaxBatchSignerBytes || len(sig) > MaxBatchSigBytes {
			t.Fatalf("parseLogRecord(%q): signer %d, sig %d bytes", data, len(signer), len(sig))
		}
		rec := logRecord(ms, delta, signer, sig)
		if len(rec) > len(data) {
			t.Fatalf("re-encoding %q is longer than %q", rec, data)
		}
		ms2, delta2, signer2, sig2, err := parseLogRecord(rec)
		if err != nil || ms2 != ms || !bytes.Equal(delta2, delta) || !bytes.Equal(signer2, signer) || !bytes.Equal(sig2, sig) {
			t.Fatalf("round trip of %d, %q, %q, %q: %d, %q, %q, %q, %v", ms, delta, signer, sig, ms2, delta2, signer2, sig2, err)
		}
		// What ReadLog does next: decode the delta; any refusal is a
		// corrupt record, never a panic.
		if _, err := crdt.DecodeDelta(delta, crdt.Limits{}); err != nil &&
			!errors.Is(err, crdt.ErrMalformed) && !errors.Is(err, crdt.ErrLimit) {
			t.Fatalf("DecodeDelta: unexpected error %v", err)
		}
	})
}

func FuzzDecodeTimestamp(f *testing.F) {
	for _, s := range fuzzTimestampSeeds() {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ts, err := decodeTimestamp(data)
		if err != nil {
			if ts != (crdt.Timestamp{}) {
				t.Fatalf("decodeTimestamp(%q) = %v with error %v", data, ts, err)
			}
			return
		}
		enc := encodeTimestamp(ts)
		if len(enc) > len(data) {
			t.Fatalf("re-encoding %q is longer than %q", enc, data)
		}
		again, err := decodeTimestamp(enc)
		if err != nil || again != ts {
			t.Fatalf("round trip of %v: %v, %v", ts, again, err)
		}
		// Accepting trailing bytes would hide a corrupt record.
		if _, err := decodeTimestamp(append(enc, 0)); err == nil {
			t.Fatalf("decodeTimestamp accepts %q with a trailing byte", enc)
		}
	})
}

func FuzzDecodeHexName(f *testing.F) {
	for _, s := range fuzzHexNameSeeds() {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, h string) {
		// Replica ids and sequence numbers in log and context keys.
		if n, ok := parseHex16(h); ok && hex16(n) != strings.ToLower(h) {
			t.Fatalf("parseHex16(%q) = %d, which is %q", h, n, hex16(n))
		}
		name, err := decodeHexName(h)
		if err != nil {
			return
		}
		if name == "" || !utf8.ValidString(name) {
			t.Fatalf("decodeHexName(%q) = %q", h, name)
		}
		enc := hex.EncodeToString([]byte(name))
		if enc != strings.ToLower(h) {
			t.Fatalf("decodeHexName(%q) = %q, which encodes as %q", h, name, enc)
		}
		// Names come back from keys the layout wrote.
		for _, k := range []string{newLayout("ns").stateKey(name).String(), registryKey(name).String(), metaKey(name).String()} {
			if got, err := decodeHexName(lastSegment(k)); err != nil || got != name {
				t.Fatalf("name %q in key %q decodes to %q, %v", name, k, got, err)
			}
		}
	})
}

// --- seeds ---

// fuzzSeed is one seed input. Its name says what it is; the committed
// corpus holds it under that name.
type fuzzSeed[T any] struct {
	name string
	data T
}

func fuzzLogRecordSeeds(tb testing.TB) []fuzzSeed[[]byte] {
	ns := crdt.NewNamespace(crdt.Limits{})
	r := crdt.DeriveReplicaID([]byte("peer-a"))
	var clock crdt.Clock
	var db crdt.DeltaBuilder
	for i, op := range []crdt.Op{
		{Kind: crdt.OpPut, Key: "greeting", Value: []byte("hello")},
		{Kind: crdt.OpSetUpdate, Key: "user", Path: []string{"roles"}, Add: []string{"admin"}},
		{Kind: crdt.OpCounterAdd, Key: "visits", N: 3},
	} {
		d, err := ns.Prepare(op, r, clock.Now(1_700_000_000_000+int64(i)))
		if err != nil {
			tb.Fatal(err)
		}
		ns.ApplyDelta(d, nil)
		db.Add(d)
	}
	batch := db.Build().Encode(nil)
	var skipped crdt.Context
	skipped.AddRange(r, 4, 4+DotSkip)
	skip := crdt.ContextDelta(skipped).Encode(nil)
	overlong := binary.AppendUvarint(nil, 1_700_000_000_000)
	overlong[len(overlong)-1] |= 0x80
	overlong = append(overlong, 0)
	signer := []byte("\x00\x24\x08\x01\x12\x20" + strings.Repeat("k", 32))
	sig := bytes.Repeat([]byte{0x5a}, 64)
	return []fuzzSeed[[]byte]{
		{"valid-batch", logRecord(1_700_000_000_000, batch, nil, nil)},
		{"valid-signed-batch", logRecord(1_700_000_000_000, batch, signer, sig)},
		{"valid-dot-skip", logRecord(1_700_000_000_123, skip, signer, sig)},
		{"valid-empty-delta", logRecord(1, nil, nil, nil)},
		{"edge-zero-time", logRecord(0, batch, nil, nil)},
		{"edge-negative-time", logRecord(-1, batch, nil, nil)},
		{"edge-min-time", logRecord(math.MinInt64, nil, nil, nil)},
		{"edge-non-minimal-header", append(overlong, logRecord(0, batch, nil, nil)[1:]...)},
		{"hostile-empty", nil},
		{"hostile-truncated-header", []byte{0x80, 0x80}},
		{"hostile-header-overflow", bytes.Repeat([]byte{0xff}, 11)},
		{"hostile-bad-delta", logRecord(1_700_000_000_000, []byte{0xff, 0x01}, nil, nil)},
		{"hostile-delta-length-past-end", []byte{0x01, 0x7f, 0x00}},
		{"hostile-signer-too-long", logRecord(1, nil, bytes.Repeat([]byte{1}, MaxBatchSignerBytes+1), sig)},
		{"hostile-trailing", append(logRecord(1, batch, nil, nil), 0)},
	}
}

func fuzzTimestampSeeds() []fuzzSeed[[]byte] {
	return []fuzzSeed[[]byte]{
		{"valid-now", encodeTimestamp(crdt.Timestamp{Wall: 1_700_000_000_000, Logical: 3})},
		{"edge-zero", encodeTimestamp(crdt.Timestamp{})},
		{"edge-negative-wall", encodeTimestamp(crdt.Timestamp{Wall: -1, Logical: 1})},
		{"edge-max", encodeTimestamp(crdt.Timestamp{Wall: math.MaxInt64, Logical: math.MaxUint32})},
		{"edge-non-minimal", []byte{0x81, 0x00, 0x82, 0x00}},
		{"hostile-empty", nil},
		{"hostile-wall-only", binary.AppendUvarint(nil, 1_700_000_000_000)},
		{"hostile-trailing-byte", append(encodeTimestamp(crdt.Timestamp{Wall: 5, Logical: 1}), 0)},
		{"hostile-logical-over-uint32", binary.AppendUvarint(binary.AppendUvarint(nil, 5), math.MaxUint32+1)},
		{"hostile-overflow", bytes.Repeat([]byte{0xff}, 11)},
	}
}

func fuzzHexNameSeeds() []fuzzSeed[string] {
	return []fuzzSeed[string]{
		{"valid-name", hex.EncodeToString([]byte("notes"))},
		{"valid-slashes-and-unicode", hex.EncodeToString([]byte("a/b/ünïcode ✓"))},
		{"valid-replica-id", hex16(uint64(crdt.DeriveReplicaID([]byte("peer-a"))))},
		{"edge-upper-case", strings.ToUpper(hex.EncodeToString([]byte("Notes")))},
		{"edge-max-hex16", hex16(math.MaxUint64)},
		{"hostile-empty", ""},
		{"hostile-odd-length", "6e6f7"},
		{"hostile-not-hex", "zz"},
		{"hostile-bad-utf8", "c328"},
		{"hostile-sign", "+000000000000001"},
		{"hostile-prefix", "0x00000000000001"},
	}
}

// FuzzParseStoreRecords feeds the owner record, the namespace registry
// entries, the position index's floor and entries, and the stored digest
// sum, read at open or when watchers resume: anything accepted re-encodes
// to the same bytes.
func FuzzParseStoreRecords(f *testing.F) {
	for _, b := range [][]byte{
		ownerRecord(0xabc, false), ownerRecord(0xabc, true), registryRecord(0),
		registryRecord(FloorBase), registryRecord(math.MaxUint64), registryRecord(5),
		nil, {1}, {2}, {2, 0, 0}, bytes.Repeat([]byte{0xff}, 9),
		posRecord(7, 42), bytes.Repeat([]byte{0xff}, 16), make([]byte, 40), bytes.Repeat([]byte{0xff}, 40),
	} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if r, reused, err := parseOwner(data); err == nil {
			if got := ownerRecord(r, reused); !bytes.Equal(got, data) {
				t.Fatalf("owner %x parsed as %v, %v, which is %x", data, r, reused, got)
			}
		}
		if floor, err := parseRegistryRecord(data); err == nil {
			if floor != 0 && floor < FloorBase {
				t.Fatalf("registry %x: floor %d below the base", data, floor)
			}
			if got := registryRecord(floor); !bytes.Equal(got, data) {
				t.Fatalf("registry %x parsed as floor %d, which is %x", data, floor, got)
			}
		}
		if floor, err := parsePosFloor(data); err == nil {
			if got := posFloorRecord(floor); !bytes.Equal(got, data) {
				t.Fatalf("position floor %x parsed as %d, which is %x", data, floor, got)
			}
		}
		if origin, seq, err := parsePosRecord(data); err == nil {
			if got := posRecord(origin, seq); !bytes.Equal(got, data) {
				t.Fatalf("position record %x parsed as (%v, %d), which is %x", data, origin, seq, got)
			}
		} else if len(data) == 16 {
			t.Fatalf("position record %x of 16 bytes refused: %v", data, err)
		}
		if sum, err := crdt.ParseDigestSum(data); err == nil {
			if got := sum.Bytes(); !bytes.Equal(got, data) {
				t.Fatalf("digest sum %x parsed as one that is %x", data, got)
			}
		} else if !errors.Is(err, crdt.ErrMalformed) {
			t.Fatalf("digest sum %x: error %v is not ErrMalformed", data, err)
		}
	})
}
