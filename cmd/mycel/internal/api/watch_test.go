package api

import (
	"testing"

	"github.com/mycelnet/mycel/node"
)

// FuzzParseCursor: any from= value either is refused or names an event
// whose cursor reads back the same.
func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"", "0", "17", "17.0", "17.3", "0.0", "1.", ".1", "1.2.3", "1.-1", "18446744073709551615.2147483647", "abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pos, index, err := parseCursor(s)
		if err != nil {
			return
		}
		if index < -1 || (index >= 0 && pos == 0) {
			t.Fatalf("parseCursor(%q) = (%d, %d): no such event", s, pos, index)
		}
		ev := node.Event{Position: pos, Index: max(index, 0), LastInCommit: index < 0}
		p2, i2, err := parseCursor(cursorOf(ev))
		if err != nil || p2 != pos || i2 != index {
			t.Fatalf("parseCursor(%q) = (%d, %d), but its cursor %q reads (%d, %d, %v)", s, pos, index, cursorOf(ev), p2, i2, err)
		}
	})
}
