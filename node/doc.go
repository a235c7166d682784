// Package node will be Mycel's embeddable library: it will own the libp2p
// host, identity, discovery and security, open namespaces backed by store/
// and replicated by gossip/, and expose reads, writes and watches.
//
// Not built yet: this file only records what the package will own. It must
// not reach into crdt/ internals or persist anything itself.
package node
