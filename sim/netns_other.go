//go:build !linux

package sim

import (
	"context"
	"errors"
)

// NetnsOptions configures RunNetns.
type NetnsOptions struct {
	Binary   string
	Progress func(Progress)
	Logf     func(format string, args ...any)
}

// RunNetns needs Linux network namespaces.
func RunNetns(context.Context, Scenario, uint64, NetnsOptions) (*Report, error) {
	return nil, errors.New("sim: the netns backend runs on Linux only")
}
