package history

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A tail is the last Config.Size messages of one history channel, as they
// came live, in memory: resumes from within it need no read of the stream.
// It becomes complete (valid) from some sequence on once a read of the
// stream from there has been merged into it while the channel's
// subscription was live: from then on it holds every message on the
// channel after from, up to through. It is per channel, not per
// connection, and its slots are reused, so that taking a live message in
// costs no allocation once the slots have grown.
//
// A channel has one only once it needs one: at its first message (for
// gap detection) or its first resume (to learn from the read). An idle
// channel has none, so that a personal channel costs no more idle than it
// does without history; a resume of a channel without a tail is simply a
// read, shared with identical ones as any read is. Every tail in
// Store.tails belongs to a live subscription: it is made only for one the
// bus confirmed and still has (see tailFor).
type tail struct {
	stream *Stream

	ring  []entry
	size  int // the ring's capacity
	start int // index of the oldest entry
	n     int // entries held

	// lastSeen is the last sequence the subscription carried on each
	// subject, for gap detection (Nats-Last-Sequence); dispatcher only,
	// under Store.mu.
	lastSeen map[string]uint64

	valid   bool
	from    uint64 // valid: every message after from is here (up to through)
	through uint64 // the highest sequence the tail is known complete to
	drops   uint64 // Config.Drops when it became valid
}

type entry struct {
	seq     uint64
	subject string
	data    []byte
}

func (t *tail) at(i int) *entry { return &t.ring[(t.start+i)%len(t.ring)] }

// last is the newest entry's sequence, 0 when empty.
func (t *tail) last() uint64 {
	if t.n == 0 {
		return 0
	}
	return t.at(t.n - 1).seq
}

// add takes a live message in. Copies through overlapping subscriptions,
// and anything older than what the tail has, change nothing. The ring
// grows up to its capacity as messages come, so that a quiet channel (a
// personal one) costs little more than the struct.
func (t *tail) add(seq uint64, subject string, data []byte) {
	if seq <= t.last() || seq <= t.through && t.valid {
		return
	}
	var e *entry
	switch {
	case t.n < len(t.ring):
		e = t.at(t.n)
		t.n++
	case len(t.ring) < t.size:
		t.ring = append(t.ring, entry{}) // start is 0 until the ring is full
		e = &t.ring[t.n]
		t.n++
	default:
		e = t.at(0)
		if t.valid {
			t.from = e.seq // what was after it is still here
		}
		t.start = (t.start + 1) % len(t.ring)
	}
	e.seq = seq
	if e.subject != subject {
		e.subject = subject // the hub's string or a new one; kept while the slot is
	}
	e.data = append(e.data[:0], data...)
	if t.valid {
		t.through = seq
	}
}

// usable reports whether the tail can answer a resume from since.
func (t *tail) usable(since, drops uint64) bool {
	return t.valid && t.drops == drops && since >= t.from
}

// after copies the entries after since, at most max+1 of them (so the
// caller can tell that max was passed).
func (t *tail) after(since uint64, max int) []Msg {
	var out []Msg
	for i := range t.n {
		e := t.at(i)
		if e.seq <= since {
			continue
		}
		out = append(out, Msg{Subject: e.subject, Data: slices.Clone(e.data), Seq: e.seq})
		if len(out) > max {
			break
		}
	}
	return out
}

// merge makes the tail complete from since on: read holds every message
// on the channel in (since, through], and the tail whatever came live
// meanwhile.
func (t *tail) merge(since, through uint64, read []Msg, drops uint64) {
	if t.valid && t.drops == drops && since >= t.from {
		return // already complete further back
	}
	var all []entry
	for _, m := range read {
		if m.Seq > since && m.Seq <= through {
			all = append(all, entry{seq: m.Seq, subject: m.Subject, data: slices.Clone(m.Data)}) // slots are reused: never share a result's bytes
		}
	}
	for i := range t.n {
		if e := t.at(i); e.seq > through {
			all = append(all, entry{seq: e.seq, subject: e.subject, data: slices.Clone(e.data)})
		}
	}
	from := since
	if over := len(all) - t.size; over > 0 {
		from = all[over-1].seq
		all = all[over:]
	}
	t.ring = all
	t.start, t.n = 0, len(all)
	t.valid, t.from, t.drops = true, from, drops
	t.through = max(through, t.last())
}

// tailFor is id's tail, made on the spot for a subscription to a channel
// of st that the bus still has; nil when it has ended. Under s.mu.
//
// Why asking the bus is enough: Herald's bus ends a subscription in the
// broker first and calls Unsubscribed after, so a tail made here while
// the broker still had id is dropped by that Unsubscribed, which comes
// later under the same lock; and once the broker has forgotten id, none
// is made, even for a message or a read that was under way.
func (s *Store) tailFor(id uint64, st *Stream) *tail {
	if t := s.tails[id]; t != nil {
		return t
	}
	if id == 0 || st == nil || !s.cfg.Subscribed(id) {
		return nil
	}
	t := &tail{stream: st, size: s.cfg.Tail}
	s.tails[id] = t
	return t
}

// Unsubscribed drops id's tail, if it has one. Call it after the broker
// has ended the subscription (see tailFor).
func (s *Store) Unsubscribed(id uint64) {
	s.mu.Lock()
	delete(s.tails, id)
	s.mu.Unlock()
}

// Deliver is where Republished passes messages on: the hub.
type Deliver func(subject string, data []byte, subs []uint64, seq uint64)

// Republished takes a message a stream republished, as the broker's
// dispatcher hands it over, into the tails of subs and passes it on. When
// last shows that a subscription missed a message on subject since the
// last one it carried (NATS dropped it: pending limits, a reconnect), the
// missing ones are read from the stream first and passed on before it, to
// the subscriptions that missed them, so that a history channel loses
// nothing between NATS and Herald. That read holds up the dispatcher (not
// a loop) for a round trip, at most repairTimeout.
func (s *Store) Republished(subject string, data []byte, subs []uint64, seq, last uint64, out Deliver) {
	s.mu.Lock()
	var st, of *Stream
	gapFrom := uint64(0)
	gapped := false
	for _, id := range subs {
		t := s.tails[id]
		if t == nil {
			// The subscription's first message: it gets a tail now, for
			// gap detection from here on.
			if of == nil {
				of = s.For(subject)
			}
			if t = s.tailFor(id, of); t == nil {
				continue
			}
		}
		st = t.stream
		prev, seen := t.lastSeen[subject]
		if seen && last > prev && seq > prev && (!gapped || prev < gapFrom) {
			gapFrom, gapped = prev, true
		}
	}
	if !gapped {
		s.noteSeen(subject, subs, seq)
		s.addLocked(subject, data, subs, seq)
		s.mu.Unlock()
		out(subject, data, subs, seq)
		return
	}
	// Which subscriptions missed which: those whose last message on the
	// subject was before the one missing (a subscription new to the
	// subject wants nothing older than this message).
	type missed struct {
		id   uint64
		prev uint64
	}
	var gaps []missed
	for _, id := range subs {
		if t := s.tails[id]; t != nil {
			prev, seen := t.lastSeen[subject]
			if !seen {
				prev = seq
			}
			gaps = append(gaps, missed{id: id, prev: prev})
		}
	}
	s.noteSeen(subject, subs, seq)
	s.mu.Unlock()

	s.gaps.Add(1)
	s.reads.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), repairTimeout)
	missing, err := s.readGap(ctx, st, subject, gapFrom, last, s.cfg.MaxReplay)
	cancel()
	if err != nil {
		s.log.Warn("history: cannot fill a gap NATS left from the stream; the messages are lost to live subscribers (a resume still finds them)",
			"stream", st.name, "channel", subject, "after", gapFrom, "before", seq, "err", err)
	}
	s.repaired.Add(uint64(len(missing)))
	ids := make([]uint64, 0, len(gaps))
	for _, m := range missing {
		ids = ids[:0]
		for _, g := range gaps {
			if g.prev < m.Seq {
				ids = append(ids, g.id)
			}
		}
		s.mu.Lock()
		s.addLocked(m.Subject, m.Data, ids, m.Seq)
		s.mu.Unlock()
		out(m.Subject, m.Data, ids, m.Seq)
	}
	s.mu.Lock()
	s.addLocked(subject, data, subs, seq)
	s.mu.Unlock()
	out(subject, data, subs, seq)
}

// readGap reads the messages on subject after sequence after through last
// (the Nats-Last-Sequence that showed the gap), at most max, one get at a
// time rather than with a consumer: a get needs no JetStream meta leader,
// which a cluster is without for seconds after the node that held it dies
// (a consumer could not be created then, and the gap would stay), and with
// AllowDirect any replica answers, even while the stream elects a leader.
// A replica a little behind may not have the last ones yet: the read goes
// on until it has last, or ctx ends. What it read is returned in order,
// with the error that stopped it, if any.
func (s *Store) readGap(ctx context.Context, st *Stream, subject string, after, last uint64, max int) ([]Msg, error) {
	var out []Msg
	next := after + 1
	for len(out) < max && next <= last {
		// Each get on its own short clock: one sent as the connection moved
		// can be routed to the node that just died and never be answered.
		actx, cancel := context.WithTimeout(ctx, getTimeout)
		m, err := st.handle.GetMsg(actx, next, jetstream.WithGetMsgSubject(subject))
		cancel()
		if err == nil {
			if m.Sequence > last {
				return out, nil // the rest is no longer stored (purged)
			}
			out = append(out, Msg{Subject: m.Subject, Data: m.Data, Seq: m.Sequence})
			next = m.Sequence + 1
			continue
		}
		// Not there yet on the replica that answered, or no answer while
		// the connection or the stream's leader moves: ask again.
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("history: read %s after %d through %d from stream %s (%d read): %w", subject, after, last, st.name, len(out), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return out, nil
}

// noteSeen records seq as the last message the subscriptions subs
// carried on subject.
func (s *Store) noteSeen(subject string, subs []uint64, seq uint64) {
	for _, id := range subs {
		if t := s.tails[id]; t != nil {
			if prev, seen := t.lastSeen[subject]; !seen || seq > prev {
				if t.lastSeen == nil {
					t.lastSeen = make(map[string]uint64) // a quiet channel has none
				}
				t.lastSeen[subject] = seq
			}
		}
	}
}

func (s *Store) addLocked(subject string, data []byte, subs []uint64, seq uint64) {
	for _, id := range subs {
		if t := s.tails[id]; t != nil {
			t.add(seq, subject, data)
		}
	}
}
