package crdt

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// ReplicaID names one writer of a namespace. It is derived from the writer's
// libp2p peer id by [DeriveReplicaID], so every node gets the same id for the
// same peer without coordination.
type ReplicaID uint64

// DeriveReplicaID maps the bytes of a peer id to a replica id: the first eight
// bytes of their SHA-256. With 64 bits, the chance that any two of a million
// replicas collide is about 3e-8; the id is not a security boundary, since
// the gossip layer checks that a batch's origin is derived from its signer.
// Zero is reserved as "no replica" and is never returned.
func DeriveReplicaID(peerID []byte) ReplicaID {
	sum := sha256.Sum256(peerID)
	id := ReplicaID(binary.BigEndian.Uint64(sum[:8]))
	if id == 0 {
		id = 1
	}
	return id
}

// String renders the id as 16 hex digits.
func (r ReplicaID) String() string { return fmt.Sprintf("%016x", uint64(r)) }

// Dot is one event: the Counter-th write of Replica. Counters start at 1.
type Dot struct {
	Replica ReplicaID
	Counter uint64
}

// Less orders dots by replica, then counter.
func (d Dot) Less(o Dot) bool {
	if d.Replica != o.Replica {
		return d.Replica < o.Replica
	}
	return d.Counter < o.Counter
}

func (d Dot) String() string { return fmt.Sprintf("%s:%d", d.Replica, d.Counter) }

func compareDots(a, b Dot) int {
	switch {
	case a.Replica < b.Replica:
		return -1
	case a.Replica > b.Replica:
		return 1
	case a.Counter < b.Counter:
		return -1
	case a.Counter > b.Counter:
		return 1
	}
	return 0
}
