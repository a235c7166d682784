package gossip

import (
	"sync"
	"time"

	"github.com/mycelnet/mycel/crdt"
)

// maxRecent bounds the batches a recent log remembers. Past it the oldest
// are forgotten, which only makes sync send them: never unsafe.
const maxRecent = 1 << 16

// recentLog remembers when this node passed each batch on by gossip: its
// own batches when they are published, others' when the validator accepts
// them (gossipsub then forwards them along the mesh). A sync server holds
// back the batches passed on within the grace period from a periodic sync
// of a client that gossip reaches: under steady writes, such a batch is
// on its way to the client already, and sending it again by sync cost the
// busy nodes of a 5-node cluster ~5% of their CPU (a log read, a
// signature, a verification, and a duplicate decode when the gossip copy
// arrived).
// The default grace (Config.SyncGrace) is 1 s because gossip in that
// saturated cluster ran up to a second behind: with 250 ms, periodic syncs
// still sent ~4,000 of every 200,000 puts' batches again, with 1 s ~1,300.
type recentLog struct{ dotLog }

// dotLog is a bounded list of batches, each with the time it was noted,
// that forgets from the front: the shared mechanism of recentLog and
// pendingLog.
type dotLog struct {
	mu   sync.Mutex
	list []loggedDot // in the order noted
	head int         // list[:head] is forgotten
}

type loggedDot struct {
	at  time.Time
	msg uint64   // pendingLog: the message's number
	dot crdt.Dot // (origin, seq)
}

// add appends d and forgets the oldest past maxRecent (which only lets
// sync send them). l.mu is held.
func (l *dotLog) add(d loggedDot) {
	l.list = append(l.list, d)
	for len(l.list)-l.head > maxRecent {
		l.head++
	}
}

// forgetWhile forgets entries from the front while drop holds. l.mu is
// held.
func (l *dotLog) forgetWhile(drop func(loggedDot) bool) {
	for l.head < len(l.list) && drop(l.list[l.head]) {
		l.head++
	}
	l.list, l.head = compactLog(l.list, l.head)
}

// since returns the batches noted at or after t, and forgets the older
// ones at the front.
func (l *dotLog) since(t time.Time) crdt.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.forgetWhile(func(d loggedDot) bool { return d.at.Before(t) })
	var c crdt.Context
	for _, d := range l.list[l.head:] {
		if !d.at.Before(t) {
			c.Add(d.dot)
		}
	}
	return c
}

// record notes that batch (origin, seq) was passed on at now and forgets
// what is older than keep.
func (l *recentLog) record(origin crdt.ReplicaID, seq uint64, now time.Time, keep time.Duration) {
	if keep <= 0 {
		return // nothing is left to gossip
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.list); n > 0 && now.Before(l.list[n-1].at) {
		now = l.list[n-1].at // a clock step back: keep the order
	}
	l.add(loggedDot{at: now, dot: crdt.Dot{Replica: origin, Counter: seq}})
	cut := now.Add(-keep)
	l.forgetWhile(func(d loggedDot) bool { return d.at.Before(cut) })
}

// compactLog drops list[:head], the forgotten entries, once they are half
// of it; an emptied log gives its memory back, so a burst does not leave
// every namespace holding its peak.
func compactLog[T any](list []T, head int) ([]T, int) {
	switch {
	case head == len(list) && cap(list) > keptCapacity:
		return nil, 0
	case head == len(list):
		return list[:0], 0
	case head > len(list)/2:
		return append(list[:0], list[head:]...), 0
	}
	return list, head
}

// keptCapacity is the capacity an emptied log keeps for reuse.
const keptCapacity = 1024

// pendingLog holds the batches of gossip messages validated here but not
// yet applied: a client claims them as seen when it syncs, so that a server
// does not send again what waits in this node's own queue (under load the
// queue ran up to a second behind). Each message is numbered as it is
// accepted; applying message k ends the claim on every message up to k.
// A claim also ends by age (claimed): gossipsub drops an accepted message
// when the subscription's buffer is full, and if no later message is
// applied the claim would otherwise stand for ever and keep every server
// from sending those batches.
type pendingLog struct {
	dotLog
	next uint64
}

// accept notes the batches of a message accepted at now and returns its
// number.
func (l *pendingLog) accept(batches []Batch, now time.Time) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next++
	for _, b := range batches {
		l.add(loggedDot{at: now, msg: l.next, dot: crdt.Dot{Replica: b.Origin, Counter: b.Seq}})
	}
	l.list, l.head = compactLog(l.list, l.head)
	return l.next
}

// applied ends the claims of messages up to msg.
func (l *pendingLog) applied(msg uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.forgetWhile(func(d loggedDot) bool { return d.msg <= msg })
}

// claimed returns the batches accepted at or after t and not yet applied,
// and forgets the claims accepted before t.
func (l *pendingLog) claimed(t time.Time) crdt.Context { return l.since(t) }
