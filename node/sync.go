package node

import (
	"context"
	"errors"

	"github.com/mycelnet/mycel/gossip"
)

// WaitFirstSync waits for the namespace's first sync: when this node opens
// a namespace (Node.Namespace, once per process), it starts pulling it from
// every peer connected at that moment. WaitFirstSync returns nil once that
// pull has ended with each of those peers — completed, or failed, as it
// does at once with a peer that does not hold the namespace — and at once
// if no peer was connected then. It returns ctx's error if ctx ends first,
// and ErrClosed if the node closes. With a ctx that has already ended it
// only checks, without blocking: nil if the first sync has ended.
//
// A namespace opened for the first time is empty here until its first sync
// brings what the peers hold; a reader that wants their data rather than an
// empty answer waits here first, with a deadline (the daemon's API waits up
// to a few seconds).
func (s *Namespace) WaitFirstSync(ctx context.Context) error {
	err := s.n.rep.WaitFirstSync(ctx, s.Name())
	if errors.Is(err, gossip.ErrClosed) {
		return ErrClosed
	}
	return err
}
