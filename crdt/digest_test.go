package crdt

import (
	"strings"
	"testing"
)

// TestKeyDigestEncodedLongEntries: keys and values too long for the
// one-buffer path hash the same as KeyDigest (the property tests cover
// small entries of every kind).
func TestKeyDigestEncodedLongEntries(t *testing.T) {
	st := NewNamespace(Limits{})
	for _, c := range []struct {
		key   string
		value int
	}{
		{"k", 0}, {"k", 100}, {"k", 300}, {strings.Repeat("k", 40), 100}, {strings.Repeat("k", 300), 5000},
	} {
		d, err := st.Prepare(Op{Kind: OpPut, Key: c.key, Value: make([]byte, c.value)}, 1, Timestamp{Wall: 1})
		if err != nil {
			t.Fatal(err)
		}
		v := d.Value(0)
		if KeyDigestEncoded(c.key, v.Encode(nil)) != KeyDigest(c.key, v) {
			t.Fatalf("key of %d bytes, value of %d: digests differ", len(c.key), c.value)
		}
	}
}
