package bench

import (
	"bytes"
	"os"
	"runtime/metrics"
	"strconv"
	"sync"
	"time"
)

// resources samples the process's resident memory every 50 ms, so a
// result can say what the run cost (cpuTime gives the CPU side). Both systems run in
// their own process (`mycel bench`, the peer binary), so process figures
// compare them fairly.
type resources struct {
	stop chan struct{}
	done sync.WaitGroup

	mu   sync.Mutex
	peak int64
}

func startResources() *resources {
	r := &resources{stop: make(chan struct{})}
	r.sample()
	r.done.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-t.C:
				r.sample()
			}
		}
	})
	return r
}

func (r *resources) sample() {
	rss := residentBytes()
	r.mu.Lock()
	r.peak = max(r.peak, rss)
	r.mu.Unlock()
}

// finish stops sampling and returns the peak resident memory in MiB.
func (r *resources) finish() (peakMiB float64) {
	close(r.stop)
	r.done.Wait()
	r.sample()
	return float64(r.peak) / (1 << 20)
}

// residentBytes is the process's resident set size from /proc; where that
// is missing, the Go runtime's total mapped memory.
func residentBytes() int64 {
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := bytes.Fields(b); len(f) > 1 {
			if pages, err := strconv.ParseInt(string(f[1]), 10, 64); err == nil {
				return pages * int64(os.Getpagesize())
			}
		}
	}
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() == metrics.KindUint64 {
		return int64(s[0].Value.Uint64())
	}
	return 0
}
