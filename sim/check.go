package sim

import (
	"math"
	"sort"
	"time"
)

// percentiles summarises delays (nearest rank) in milliseconds.
func percentiles(delays []time.Duration) Percentiles {
	if len(delays) == 0 {
		return Percentiles{}
	}
	s := append([]time.Duration(nil), delays...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return ms(s[max(i, 0)])
	}
	return Percentiles{P50: rank(0.50), P99: rank(0.99), Max: ms(s[len(s)-1]), Count: len(s)}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
