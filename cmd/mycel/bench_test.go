package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The HTTP put path of one daemon (durable writes, the default), driven by
// a Go load generator over loopback:
//
//	go test -run '^$' -bench HTTPPut -benchtime 20000x ./cmd/mycel/
//
// BenchmarkHTTPPut is closed-loop: 32 clients each send the next put as
// soon as the last one is answered; it reports puts/s and latency
// percentiles. BenchmarkHTTPPutPaced is open-loop at 1,000 puts/s; latency
// is measured from each put's scheduled time, so queueing counts.

const benchClients = 32

var benchValue = []byte("0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789")

func benchPut(d *daemon, i int) error {
	code, err := do("PUT", d.url(fmt.Sprintf("/v1/ns/bench/kv/key-%09d", i)), benchValue)
	return expect(code, err, 204, "put")
}

func reportLatencies(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50_ms")
	b.ReportMetric(pct(0.99), "p99_ms")
	b.ReportMetric(0, "ns/op")
}

func BenchmarkHTTPPut(b *testing.B) {
	d := startDaemon(b, filepath.Join(b.TempDir(), "n"))
	var next atomic.Int64
	lat := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for range benchClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				t0 := time.Now()
				if err := benchPut(d, i); err != nil {
					failed.Store(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "puts/s")
	reportLatencies(b, lat)
}

func BenchmarkHTTPPutPaced(b *testing.B) {
	const rate = 1000 // puts per second
	d := startDaemon(b, filepath.Join(b.TempDir(), "n"))
	lat := make([]time.Duration, b.N)
	jobs := make(chan int, b.N)
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for range benchClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				sched := start.Add(time.Duration(i) * time.Second / rate)
				time.Sleep(time.Until(sched))
				if err := benchPut(d, i); err != nil {
					failed.Store(err)
					continue
				}
				lat[i] = time.Since(sched)
			}
		}()
	}
	for i := range b.N {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "puts/s")
	reportLatencies(b, lat)
}
