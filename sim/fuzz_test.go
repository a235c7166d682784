package sim

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseScenario feeds arbitrary bytes to the scenario decoder: it must
// not panic, every failure must wrap ErrScenario, and whatever it accepts
// must validate and (when small) plan without error.
func FuzzParseScenario(f *testing.F) {
	files, _ := filepath.Glob("scenarios/*.yaml")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("regions: [{name: a, nodes: 2}]\nworkload: {rate: 1, duration: 1s}\n"))
	f.Add([]byte("regions: {name: a}\n"))
	f.Add([]byte("faults: [{at: -1s, kind: heal}]\n"))
	f.Add([]byte("\x00\xff: ["))
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := ParseScenario(data)
		if err != nil {
			if !errors.Is(err, ErrScenario) {
				t.Fatalf("error does not wrap ErrScenario: %v", err)
			}
			return
		}
		if err := sc.Validate(); err != nil {
			t.Fatalf("accepted scenario fails Validate: %v", err)
		}
		if sc.Workload.Rate*sc.Workload.Duration.Seconds() > 10_000 {
			return // valid, but too large to plan on every fuzz input
		}
		if _, err := sc.Plan(1); err != nil {
			t.Fatalf("accepted scenario cannot be planned: %v", err)
		}
	})
}

// FuzzCrossing feeds arbitrary packets to the netns backend's packet
// reader (what the hub's packet socket hands it): it must not panic, must
// take only whole IPv4 headers, and must count a crossing exactly when the
// two addresses sit in different groups of the cut.
func FuzzCrossing(f *testing.F) {
	hdr := func(src, dst [4]byte) []byte {
		b := make([]byte, 20)
		b[0] = 0x45
		copy(b[12:], src[:])
		copy(b[16:], dst[:])
		return b
	}
	f.Add(hdr([4]byte{10, 213, 1, 1}, [4]byte{10, 213, 2, 1}))
	f.Add(hdr([4]byte{10, 213, 1, 1}, [4]byte{10, 213, 1, 2}))
	f.Add([]byte{0x60, 0, 0, 0})
	f.Add([]byte{})
	sides := map[[4]byte]int{{10, 213, 1, 1}: 0, {10, 213, 1, 2}: 0, {10, 213, 2, 1}: 1}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		ip, crossed := crossing(pkt, sides)
		if ip != (len(pkt) >= 20 && pkt[0]>>4 == 4) {
			t.Fatalf("ip = %v for %x", ip, pkt)
		}
		if !ip {
			if crossed {
				t.Fatal("a crossing counted for a non-IPv4 packet")
			}
			return
		}
		src, okSrc := sides[[4]byte(pkt[12:16])]
		dst, okDst := sides[[4]byte(pkt[16:20])]
		if want := okSrc && okDst && src != dst; crossed != want {
			t.Fatalf("crossed = %v, want %v for %x", crossed, want, pkt)
		}
		if _, c := crossing(pkt, nil); c {
			t.Fatal("a crossing counted with no cut standing")
		}
	})
}
