// Package node is Mycel's embeddable library. It owns a node's libp2p host
// (identity, transports, security, connection management, discovery), opens
// the node's store, and wires namespaces to replication:
//
//	n, err := node.Open(ctx, node.DefaultLANConfig())
//	defer n.Close()
//	ns, _ := n.Namespace(ctx, "inventory")
//	_ = ns.Put(ctx, "sku-1", []byte("42"))
//	v, _ := ns.Get(ctx, "sku-1")
//
// Every write is applied through the store (durable before it returns, by
// default), published by gossip, and repaired by sync; reads are served from
// the local replica. The package must not reach into crdt internals or
// persist anything except through store/.
package node
