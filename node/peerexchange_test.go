package node

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
)

// pruneTracer records the gossipsub PRUNEs a node receives, and the most
// peer-exchange records one of them carried. gossipsub calls RecvRPC
// before it acts on the PRUNE, so a dial a PRUNE caused comes after its
// count.
type pruneTracer struct {
	countingTracer
	prunes, peers atomic.Int64
}

func (p *pruneTracer) RecvRPC(rpc *pubsub.RPC) {
	for _, pr := range rpc.GetControl().GetPrune() {
		n := int64(len(pr.GetPeers()))
		for {
			old := p.peers.Load()
			if n <= old || p.peers.CompareAndSwap(old, n) {
				break
			}
		}
		p.prunes.Add(1)
	}
}

// TestPeerExchange: six leaves each know only a hub (mesh degree 2: at
// most 4 in its mesh), and each grafts it. The hub refuses or prunes the
// extra leaves. With PeerExchange its PRUNEs carry records of the other
// leaves, which the pruned leaves dial; without, they carry none, and no
// leaf has another peer to dial.
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
				// Links first: a link made by peer exchange is counted
				// after the PRUNE that offered it.
				linked := 0
				for _, l := range leaves {
					if len(l.Host().Network().Peers()) > 1 {
						linked++
					}
				}
				pruned, offered := 0, int64(0)
				for _, tr := range tracers {
					if tr.prunes.Load() > 0 {
						pruned++
						offered = max(offered, tr.peers.Load())
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
