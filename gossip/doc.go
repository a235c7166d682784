// Package gossip will own replication: the gossipsub fast path that
// publishes batches of deltas, and the /mycel/sync/1.0.0 repair protocol
// that makes any two connected replicas converge without gossip.
//
// Not built yet: this file only records what the package will own. It must
// not open storage itself; it will talk to storage through a small
// interface it defines.
package gossip
