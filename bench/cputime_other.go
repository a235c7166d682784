//go:build !unix && !windows

package bench

import "time"

// cpuTime is not available on this platform: figures report 0.
func cpuTime() time.Duration { return 0 }
