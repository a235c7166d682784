package gossip

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mycelnet/mycel/crdt"
)

// space is one joined namespace: its topic, subscription and publisher.
type space struct {
	r       *Replicator
	name    string
	rep     Replica
	writers map[crdt.ReplicaID]bool // nil: anyone may write

	topic *pubsub.Topic
	sub   *pubsub.Subscription

	mu     sync.Mutex
	co     coalescer
	notify chan struct{}

	// recent: the batches passed on by gossip lately, which a sync server
	// leaves to gossip (see recentLog)
	recent recentLog
	// pending: the batches accepted by the validator and not yet applied,
	// which a sync client claims as seen (see pendingLog)
	pending pendingLog

	// applyFailLogged and applyFailSkipped limit the receive loop's
	// warnings of batches the replica refused to one a second: a replica
	// that refuses everything for a while (a disk nearly full) would
	// otherwise log every batch. Only the receive loop uses them.
	applyFailLogged  time.Time
	applyFailSkipped int

	// pull admits one client sync session at a time (see pullTurns).
	pull *pullTurns
	// gaps: a batch gossip skipped, pulled if still missing a grace later
	// (see gapWatch); gapTimer runs that check.
	gapMu    sync.Mutex
	gaps     gapWatch
	gapTimer *time.Timer
	// firstSync is closed once the syncs Join started have ended;
	// firstPending (guarded by r.mu) counts those still to end.
	firstSync    chan struct{}
	firstPending int
	// meshPulled (guarded by r.mu): the connection on which this
	// namespace was last pulled from each peer for joining its mesh (see
	// MeshWatch)
	meshPulled map[peer.ID]string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (r *Replicator) newSpace(ns string, rep Replica, writers []peer.ID) (*space, error) {
	s := &space{
		r: r, name: ns, rep: rep,
		co: coalescer{window: r.cfg.CoalesceWindow, maxWindow: r.cfg.MaxCoalesceWindow,
			maxOps: r.cfg.MaxPublishOps, maxBytes: r.cfg.MaxPublishBytes, maxBatches: r.cfg.Limits.withDefaults().MaxBatches},
		notify: make(chan struct{}, 1),
		pull:   newPullTurns(&r.stats.SyncTurnsTakenOver, &r.stats.SyncSessionsAbandoned),

		firstSync: make(chan struct{}),
	}
	if len(writers) > 0 {
		s.writers = make(map[crdt.ReplicaID]bool, len(writers))
		for _, w := range writers {
			s.writers[crdt.DeriveReplicaID([]byte(w))] = true
		}
	}
	name := TopicName(ns)
	// Inline: the check is pure CPU (decode, one signature, map lookups)
	// and never blocks, so pubsub's validation workers run it themselves.
	// Asynchronous validators cost a goroutine per message, whose stack
	// then grows to the signature check's depth: ~4% of the 100-node
	// simulator's CPU in session 10's profile.
	if err := r.cfg.PubSub.RegisterTopicValidator(name, s.validate, pubsub.WithValidatorInline(true)); err != nil {
		return nil, err
	}
	topic, err := r.cfg.PubSub.Join(name)
	if err != nil {
		_ = r.cfg.PubSub.UnregisterTopicValidator(name)
		return nil, err
	}
	sub, err := topic.Subscribe(pubsub.WithBufferSize(4096))
	if err != nil {
		_ = topic.Close()
		_ = r.cfg.PubSub.UnregisterTopicValidator(name)
		return nil, err
	}
	s.topic, s.sub = topic, sub
	s.ctx, s.cancel = context.WithCancel(r.ctx)
	s.wg.Add(2)
	go s.receive()
	go s.publish()
	return s, nil
}

// noteGap watches for a gap before b, which gossip delivered from peer
// from, and checks it a grace later (see gapWatch).
func (s *space) noteGap(b Batch, from peer.ID) {
	s.gapMu.Lock()
	defer s.gapMu.Unlock()
	if s.ctx.Err() != nil {
		return // closed: no timer after close stopped it
	}
	grace := s.r.gapGrace()
	if s.gaps.note(b.Origin, peer.ID(b.Signer), b.Seq, from, time.Now(), grace, s.rep.HasSeen) && s.gapTimer == nil {
		s.gapTimer = time.AfterFunc(grace, s.checkGap)
	}
}

// checkGap pulls the watched gaps still open, and arms the next check. It
// holds gapMu while it queues syncs (gapMu before r.mu, never after).
func (s *space) checkGap() {
	s.gapMu.Lock()
	if s.ctx.Err() != nil { // closed: close cancels before it stops the timer
		s.gapMu.Unlock()
		return
	}
	now := time.Now() // monotonic, like the timer: a skewed clock must not move checks
	next := s.gaps.check(now, s.r.gapGrace(), s.missing, func(p peer.ID) bool {
		return s.r.cfg.Host.Network().Connectedness(p) == network.Connected
	}, s.r.pullGap)
	s.gapTimer = nil
	if !next.IsZero() {
		s.gapTimer = time.AfterFunc(max(next.Sub(now), time.Millisecond), s.checkGap)
	}
	s.gapMu.Unlock()
}

// missing returns the batches of origin numbered up to seq not applied here.
func (s *space) missing(origin crdt.ReplicaID, seq uint64) crdt.Context {
	var want, m crdt.Context
	want.AddRange(origin, 1, seq)
	s.rep.View(func(_ *crdt.Namespace, seen *crdt.Context) { m = seen.Missing(want) })
	return m
}

func (s *space) close() {
	s.cancel()
	s.gapMu.Lock()
	if s.gapTimer != nil {
		s.gapTimer.Stop()
	}
	s.gapMu.Unlock()
	s.sub.Cancel()
	s.wg.Wait()
	_ = s.topic.Close()
	_ = s.r.cfg.PubSub.UnregisterTopicValidator(TopicName(s.name))
}

func (s *space) writerOK(origin crdt.ReplicaID) bool { return s.writers == nil || s.writers[origin] }

// validate is the topic validator: decode with limits, the signer must be
// the origin and a writer; then the message's signature must verify, which
// gives every batch its auth for sync to relay. A message whose batches
// were all applied already is forwarded but not applied again; one whose
// context runs ahead is ignored (neither penalised nor forwarded).
func (s *space) validate(_ context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	st := &s.r.stats
	if msg.ReceivedFrom == s.r.cfg.Host.ID() {
		// Our own batches: already committed, so they would look like
		// duplicates; they were built here, so there is nothing to check.
		return pubsub.ValidationAccept
	}
	s.r.heard(from) // whatever it sent: its link works
	m, err := decodeCanonical(msg.Data, s.r.cfg.Limits)
	if err != nil {
		st.RejectMalformed.Add(1)
		return pubsub.ValidationReject
	}
	if m.Signer == nil {
		st.RejectForged.Add(1) // unsigned
		return pubsub.ValidationReject
	}
	signer, err := m.checkSigner(&s.r.signers)
	if err != nil {
		if errors.Is(err, errSignerKey) {
			st.RejectForged.Add(1) // its key verifies nothing
		} else {
			st.RejectOrigin.Add(1)
		}
		return pubsub.ValidationReject
	}
	if !s.writerOK(m.Origin) {
		st.RejectNotWriter.Add(1)
		return pubsub.ValidationReject
	}
	fresh := false
	for _, b := range m.Batches {
		if !s.rep.HasSeen(b.Origin, b.Seq) {
			fresh = true
			break
		}
	}
	if !fresh {
		// Applied already (sync brought the batches first): nothing to
		// apply, but still forwarded once genuine — a mesh peer may need
		// it, and ignoring it would leave that peer to wait for a sync.
		if err := m.verifyAs(s.name, signer, &s.r.signers, &s.r.groups); err != nil {
			st.RejectForged.Add(1)
			return pubsub.ValidationReject
		}
		st.IgnoredDuplicate.Add(1)
		now := time.Now()
		for _, b := range m.Batches {
			s.recent.record(b.Origin, b.Seq, now, s.r.cfg.SyncGrace)
		}
		return pubsub.ValidationAccept
	}
	for _, b := range m.Batches {
		if s.contextAhead(b) {
			// Possibly genuine and only ahead of us: not penalised, not
			// forwarded; sync delivers it once we hold what it saw.
			st.IgnoredAhead.Add(1)
			return pubsub.ValidationIgnore
		}
	}
	if err := m.verifyAs(s.name, signer, &s.r.signers, &s.r.groups); err != nil {
		st.RejectForged.Add(1)
		return pubsub.ValidationReject
	}
	now := time.Now()
	msg.ValidatorData = &accepted{Message: m, n: s.pending.accept(m.Batches, now)}
	// Accepted, gossipsub forwards it along our mesh now.
	for _, b := range m.Batches {
		s.recent.record(b.Origin, b.Seq, now, s.r.cfg.SyncGrace)
	}
	return pubsub.ValidationAccept
}

// decodeCanonical decodes a gossip message and requires its bytes to be
// the canonical encoding. The signature covers the batches, not the
// envelope around them, so without this a relay could re-encode one
// genuine message (longer varints) into any number of payloads, each with
// an id of its own that every node would check, accept and forward anew.
func decodeCanonical(data []byte, lim Limits) (Message, error) {
	m, err := DecodeMessage(data, lim)
	if err != nil {
		return Message{}, err
	}
	bp := encodeBuffers.Get().(*[]byte)
	enc := m.Encode((*bp)[:0])
	canonical := bytes.Equal(enc, data)
	if cap(enc) <= maxPooledBuffer {
		*bp = enc[:0]
		encodeBuffers.Put(bp)
	}
	if !canonical {
		return Message{}, fmt.Errorf("%w: not the canonical encoding", ErrMalformed)
	}
	return m, nil
}

// encodeBuffers holds the buffers decodeCanonical re-encodes into: every
// received message passes through it, and a fresh buffer each time was
// ~5% of the bytes a busy node allocates.
var encodeBuffers = sync.Pool{New: func() any { return new([]byte) }}

const maxPooledBuffer = 1 << 20

// contextSlack is how far past the writes of a replica this node holds a
// batch from another origin may claim to have seen. A batch's context
// covers the writes it supersedes, so a context far ahead of everything
// the named replica has written would make every receiver drop that
// replica's next writes as already removed (and, near 2^64, leave it no dot
// counter to write with). Genuine batches run ahead of a receiver by the
// writes it has not received yet, plus one DotSkip (2^40) per restart of
// the named replica it has not heard of: 2^41 allows that.
const contextSlack = 1 << 41

// contextAhead reports whether b's context claims writes of another
// replica more than contextSlack beyond what this node holds of it.
func (s *space) contextAhead(b Batch) bool {
	reps := b.Delta.Replicas()
	if len(reps) == 0 || (len(reps) == 1 && reps[0] == b.Origin) {
		return false
	}
	ahead := false
	s.rep.View(func(st *crdt.Namespace, _ *crdt.Context) {
		for _, r := range reps {
			if r == b.Origin {
				continue
			}
			if claim, held := b.Delta.ContextMax(r), st.MaxDot(r); claim > held && claim-held > contextSlack {
				ahead = true
				return
			}
		}
	})
	return ahead
}

// accepted is a validated message on its way to receive: n is its number
// in the pending log.
type accepted struct {
	Message
	n uint64
}

// receive applies every accepted message from other nodes.
func (s *space) receive() {
	defer s.wg.Done()
	self := s.r.cfg.Host.ID()
	st := &s.r.stats
	for {
		msg, err := s.sub.Next(s.ctx)
		if err != nil {
			return
		}
		// Take the decoded message off the pubsub message: gossipsub's
		// message cache keeps that for its gossip window (five
		// heartbeats), and the decoded batches with it. In the 5-node
		// cluster benchmark that was ~2 million live objects, which the
		// collector marked on every cycle. Pubsub itself never reads the
		// field after validation.
		m, ok := msg.ValidatorData.(*accepted)
		msg.ValidatorData = nil
		if msg.ReceivedFrom == self || !ok {
			continue
		}
		st.MessagesReceived.Add(1)
		st.BytesReceived.Add(int64(len(msg.Data)))
		for _, b := range m.Batches {
			st.BatchesReceived.Add(1)
			// The validator verified the message and gave each batch its
			// signer and auth, which the log keeps for sync to relay.
			applied, err := s.rep.ApplyBatch(s.ctx, b)
			if err != nil {
				if s.ctx.Err() == nil {
					s.warnApplyFailed(err)
				}
				continue
			}
			if applied {
				st.BatchesApplied.Add(1)
			}
			s.noteGap(b, msg.ReceivedFrom)
		}
		s.pending.applied(m.n)
	}
}

// warnApplyFailed logs a batch the replica refused, at most once a second,
// with how many it left out since. Sync brings the batch again later.
func (s *space) warnApplyFailed(err error) {
	now := time.Now() // real time for a log rate, as pace does, not Config.Now
	if now.Sub(s.applyFailLogged) < time.Second {
		s.applyFailSkipped++
		return
	}
	args := []any{"ns", s.name, "err", err}
	if s.applyFailSkipped > 0 {
		args = append(args, "left_out", s.applyFailSkipped)
	}
	s.applyFailLogged, s.applyFailSkipped = now, 0
	s.r.cfg.Logger.Warn("gossip: apply failed", args...)
}

// enqueue queues a committed local batch for publishing.
func (s *space) enqueue(b Batch) {
	s.mu.Lock()
	s.co.add(b, s.r.cfg.Now())
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// publish sends queued local batches when the coalescing window closes or
// the queue is full.
func (s *space) publish() {
	defer s.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		s.mu.Lock()
		due, pending := s.co.due()
		var batches []Batch
		if pending && (s.co.full() || !s.r.cfg.Now().Before(due)) {
			batches = s.co.take(s.r.cfg.Now())
		}
		s.mu.Unlock()
		if len(batches) > 0 {
			s.send(batches)
			continue
		}
		if pending {
			timer.Reset(due.Sub(s.r.cfg.Now()))
		}
		select {
		case <-s.ctx.Done():
			return
		case <-s.notify:
			if pending {
				timer.Stop()
			}
		case <-timer.C:
		}
	}
}

func (s *space) send(batches []Batch) {
	// With no peer in the topic a message reaches no one: skip signing and
	// publishing it. A peer that joins later gets these batches by sync.
	if len(s.topic.ListPeers()) == 0 {
		s.r.stats.PublishNoPeers.Add(int64(len(batches)))
		return
	}
	m := &Message{Origin: s.r.cfg.Replica, Batches: batches}
	if _, err := m.sign(s.name, s.r.key, s.r.signer); err != nil {
		s.r.cfg.Logger.Warn("gossip: cannot sign message; sync will deliver", "ns", s.name, "err", err)
		return
	}
	data := m.Encode(nil)
	err := s.topic.Publish(s.ctx, data, pubsub.WithValidatorData(m))
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			s.r.cfg.Logger.Debug("gossip: publish failed; sync will deliver", "ns", s.name, "err", err)
		}
		return
	}
	now := time.Now()
	for _, b := range batches {
		s.recent.record(b.Origin, b.Seq, now, s.r.cfg.SyncGrace)
	}
	st := &s.r.stats
	st.MessagesPublished.Add(1)
	st.BatchesPublished.Add(int64(len(batches)))
	st.BytesPublished.Add(int64(len(data)))
}

// messageID names a message by the SHA-256 of its bytes, cut to
// messageIDBytes. Messages are not signed by pubsub (StrictNoSign: the
// payload carries the origin's own signature), so the id must bind
// everything the validator judges: pubsub remembers ids before the
// validator runs (gossipsub sends IDONTWANT for a large message as soon as
// it arrives), and with an id that a different payload could share, a peer
// could get a forged copy rejected in place of the real message and so
// suppress it.
func messageID(m *pb.Message) string {
	h := sha256.Sum256(m.Data)
	return string(h[:messageIDBytes])
}

// messageIDBytes is how much of the hash an id keeps. 16 bytes leave a
// forger a second preimage to find (2^128 work) to make a copy share a
// real message's id; a writer who makes two of its own messages collide
// (2^64) only suppresses its own. Every IHAVE, IWANT and IDONTWANT lists
// ids, one per message: at 1,000 single-put messages a second among five
// nodes, the 16 bytes cut was ~9% of all bytes sent (docs/BENCHMARKS.md).
const messageIDBytes = 16
