// Package store will own durable replica state: key states, causal context
// and the delta log of each namespace on a go-datastore (Pebble on disk by
// default), applied atomically and acknowledged only once durable.
//
// Not built yet: this file only records what the package will own. It must
// not talk to the network.
package store
