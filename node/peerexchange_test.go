package node

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
)

// pruneTracer records the gossipsub PRUNEs a node receives, and how many
// peer-exchange records the last of them carried.
type pruneTracer struct {
	countingTracer
	prunes, peers atomic.Int64
}

func (p *pruneTracer) RecvRPC(rpc *pubsub.RPC) {
	for _, pr := range rpc.GetControl().GetPrune() {
		p.peers.Store(int64(len(pr.GetPeers())))
		p.prunes.Add(1)
	}
}

// TestPeerExchange: six leaves each know only a hub, and all graft it. A
// hub with PeerExchange prunes the extra leaves with records of the others,
// which they dial; a hub without prunes them with no records, and the
// leaves stay connected to the hub alone.
func TestPeerExchange(t *testing.T) {
	for _, px := range []bool{true, false} {
		t.Run(fmt.Sprintf("peer exchange %v", px), func(t *testing.T) {
			ctx := context.Background()
			open := func(cfg Config, opts ...Option) *Node {
				t.Helper()
				cfg.MeshDegree = 2 // the hub keeps at most 4 leaves in its mesh
				n, err := Open(ctx, cfg, opts...)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { n.Close() })
				mustNS(t, n, "px")
				return n
			}
			hubCfg := DefaultLocalConfig()
			hubCfg.PeerExchange = px
			hub := open(hubCfg)
			leaves := make([]*Node, 6)
			tracers := make([]*pruneTracer, len(leaves))
			for i := range leaves {
				tracers[i] = &pruneTracer{}
				leaves[i] = open(DefaultLocalConfig(), WithPubSubOptions(pubsub.WithRawTracer(tracers[i])))
				connect(t, leaves[i], hub)
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				pruned, offered, linked := 0, int64(0), 0
				for i, l := range leaves {
					if tracers[i].prunes.Load() > 0 {
						pruned++
						offered = max(offered, tracers[i].peers.Load())
					}
					if len(l.Host().Network().Peers()) > 1 {
						linked++
					}
				}
				if px && linked > 0 {
					if offered == 0 {
						t.Fatalf("%d leaves linked to another, yet no PRUNE carried a peer", linked)
					}
					return
				}
				if !px && pruned > 0 {
					if offered != 0 || linked != 0 {
						t.Fatalf("without peer exchange: a PRUNE carried %d peers, %d leaves linked to another", offered, linked)
					}
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("peer exchange %v: %d leaves pruned, %d linked to another leaf", px, pruned, linked)
				}
				time.Sleep(50 * time.Millisecond) // polling interval
			}
		})
	}
}
