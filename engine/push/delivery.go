package push

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"

	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/engine"
)

// delivery is one message on its way to the loops: encoded once per
// format, shared read-only by every loop it is posted to, and recycled
// when the last of them is done.
type delivery struct {
	subject  []byte   // the subject it was published on
	patterns []string // the channels it arrived through
	json     *bytebufferpool.ByteBuffer
	raw      *bytebufferpool.ByteBuffer // nil unless some subscriber wants raw
	// jsonZ and rawZ are the same frames compressed (RSV1 set), for the
	// sockets that negotiated permessage-deflate; nil when no such socket
	// subscribed or the message is under the threshold: those sockets then
	// get the plain frame, which the extension allows.
	jsonZ, rawZ *bytebufferpool.ByteBuffer
	// sse is the message as an event for event streams (see sse.go); nil
	// unless some subscriber is one.
	sse     *bytebufferpool.ByteBuffer
	jsonAt  int       // where the frame starts in json.B
	seq     uint64    // stream sequence on a history channel; 0 otherwise
	arrived time.Time // when the bus handed it over
	refs    atomic.Int32
}

// frame returns the encoded frame for a subscriber's format, compressed
// when the subscriber takes compressed frames and the message has one.
func (d *delivery) frame(raw, deflate bool) []byte {
	switch {
	case raw && deflate && d.rawZ != nil:
		return d.rawZ.B
	case raw:
		return d.raw.B
	case deflate && d.jsonZ != nil:
		return d.jsonZ.B
	}
	return d.json.B[d.jsonAt:]
}

// variant returns the frame (or event) of variant v, nil when no
// subscriber wanted that format as d was encoded.
func (d *delivery) variant(v int) []byte {
	switch {
	case v == variantSSE:
		if d.sse == nil {
			return nil
		}
		return d.sse.B
	case v&variantRaw != 0 && d.raw == nil:
		return nil
	}
	return d.frame(v&variantRaw != 0, v&variantDeflate != 0)
}

// subjectString views the subject without copying; valid while d is.
func (d *delivery) subjectString() string {
	return unsafe.String(unsafe.SliceData(d.subject), len(d.subject))
}

func (h *Hub) recycle(d *delivery) {
	bytebufferpool.Put(d.json)
	for _, b := range [...]*bytebufferpool.ByteBuffer{d.raw, d.jsonZ, d.rawZ} {
		if b != nil {
			bytebufferpool.Put(b)
		}
	}
	if d.sse != nil {
		h.events.Put(d.sse)
	}
	d.json, d.raw, d.jsonZ, d.rawZ, d.sse = nil, nil, nil, nil, nil
	d.seq = 0
	clear(d.patterns)
	d.patterns = d.patterns[:0]
	d.subject = d.subject[:0]
	h.free.Put(d)
}

// event is one item of a loop's inbox: a delivery, the bus's answer
// about a channel (live when err is nil), or a finished job.
type event struct {
	delivery *delivery
	channel  *hubChannel
	err      error
	job      *job
}

// loopState is the protocol's state on one event loop; only that loop
// touches it, but for the inbox.
type loopState struct {
	hub   *Hub
	loop  *engine.Loop
	bit   uint64            // the loop's bit in hubChannel masks
	topic map[string]*topic // subscribers on this loop, by channel pattern
	// accepting are the sockets whose upgrade waits for channels to go live,
	// and waiting who hears when a topic does: few at any time, so kept
	// here rather than in every topic.
	accepting map[*engine.Conn]*acceptWait
	waiting   map[*topic][]waiter
	// verifying are the upgrades whose token a verifier has, and expiries
	// the authenticated sockets by when their token expires.
	verifying map[*engine.Conn]*job
	expiries  expiryHeap
	stats     loopStats

	// The inbox is the one place other goroutines reach into a loop: the
	// hub appends events, and the loop takes the whole batch at once.
	inboxMu      sync.Mutex
	inbox        []event
	flushPending bool
	spare        []event // the previous batch's slice, reused
	flushTask    gnet.Runnable

	// Scratch space for a flush, reused.
	run       []*delivery
	groups    []group
	joined    [numVariants][]byte // a topic's frames of one run, back to back, by variant (see variant)
	multi     []*engine.Conn      // sockets with several subscriptions touched by a run
	inMulti   map[*engine.Conn]struct{}
	gather    []byte
	replyBuf  []byte
	sseBuf    []byte // a reply as an event
	replayBuf []byte // a replay's frames
	envBuf    []byte // one stored message's envelope
}

// loopStats are a loop's counters: atomic only so that a scrape can read
// them.
type loopStats struct {
	deliveries atomic.Uint64
	bytesOut   atomic.Uint64
	latency    histogram
}

// topic is one loop's subscribers to one channel pattern. A personal
// channel has a topic of its own per socket, so it is kept small.
type topic struct {
	channel *hubChannel
	members []*engine.Conn // each member's subList holds its position here
	batch   int32          // 1 + index in loopState.groups while a flush runs; 0 otherwise
	live    bool           // the loop has heard that the channel is live
}

// pattern is the topic's channel name.
func (t *topic) pattern() string { return t.channel.pattern }

// waiter is a subscription waiting for its channel to go live: an in-band
// subscribe to ack, or a channel of an upgrade held until all are live.
type waiter struct {
	conn    *engine.Conn
	id      []byte // the subscribe's id, copied; nil for none
	upgrade bool
	resume  *resume // a subscribe with since or last: replayed once live
}

// acceptWait is an upgrade held until its channels are live.
type acceptWait struct {
	pending int     // channels not live yet
	refused []error // channels the bus refused, answered in band after the 101
}

// group is the part of a run that went to one topic.
type group struct {
	topic      *topic
	deliveries []*delivery
}

// loopFor returns the state of c's loop, made on its first socket. Only
// that loop writes its slot, so the first use needs no lock.
func (h *Hub) loopFor(c *engine.Conn) *loopState {
	el := c.Loop()
	slot := &h.loops[el.Index()]
	if l := slot.Load(); l != nil {
		return l
	}
	l := &loopState{
		hub:       h,
		loop:      el,
		bit:       1 << el.Index(),
		topic:     make(map[string]*topic),
		accepting: make(map[*engine.Conn]*acceptWait),
		waiting:   make(map[*topic][]waiter),
		verifying: make(map[*engine.Conn]*job),
		inMulti:   make(map[*engine.Conn]struct{}),
	}
	l.flushTask = gnet.RunnableFunc(l.flush)
	slot.Store(l)
	return l
}

// post queues ev for the loop and, if the inbox was empty, schedules a
// flush. Events that arrive while a flush is pending ride along with it,
// which is what lets several messages reach a socket in one write.
func (l *loopState) post(ev event) {
	l.inboxMu.Lock()
	l.inbox = append(l.inbox, ev)
	schedule := !l.flushPending
	l.flushPending = true
	l.inboxMu.Unlock()
	if !schedule {
		return
	}
	if err := l.loop.Execute(l.flushTask); err != nil {
		// The server is stopping: nothing will be written any more.
		l.inboxMu.Lock()
		l.flushPending = false
		batch := l.inbox
		l.inbox = nil // other goroutines may append as soon as the lock is free
		l.inboxMu.Unlock()
		for _, ev := range batch {
			if ev.delivery != nil {
				l.release(ev.delivery)
			}
		}
	}
}

// flush handles every queued event in order: runs of deliveries are
// written, and the bus's answers applied between them, so that a topic
// goes live exactly between the messages sent before and after the bus
// had its subscription.
func (l *loopState) flush(context.Context) error {
	l.inboxMu.Lock()
	batch := l.inbox
	l.inbox, l.spare = l.spare[:0], batch
	l.flushPending = false
	l.inboxMu.Unlock()

	run := l.run[:0]
	for _, ev := range batch {
		if ev.delivery != nil {
			run = append(run, ev.delivery)
			continue
		}
		l.deliver(run)
		run = run[:0]
		if ev.job != nil {
			l.finish(ev.job)
		} else {
			l.answered(ev.channel, ev.err)
		}
	}
	l.deliver(run)
	clear(run)
	l.run = run[:0]
	clear(batch)
	return nil
}

// release is called by each loop done with d. The last one records how
// long the message took from the bus to its last socket write.
func (l *loopState) release(d *delivery) {
	if d.refs.Add(-1) != 0 {
		return
	}
	l.stats.latency.observe(l.hub.now().Sub(d.arrived))
	l.hub.recycle(d)
}

// deliver writes a run of deliveries to the loop's subscribers. The run is
// grouped by topic first, so that a socket with one subscription gets all
// its frames of the run in one write; sockets with several get theirs in
// one write too, in the order the messages came.
func (l *loopState) deliver(run []*delivery) {
	if len(run) == 0 {
		return
	}
	l.groups = l.groups[:0]
	for _, d := range run {
		for _, p := range d.patterns {
			t := l.topic[p]
			if t == nil || !t.live {
				continue // gone, or not confirmed here yet
			}
			if t.batch == 0 {
				if len(l.groups) < cap(l.groups) {
					l.groups = l.groups[:len(l.groups)+1]
					g := &l.groups[len(l.groups)-1]
					g.topic, g.deliveries = t, g.deliveries[:0]
				} else {
					l.groups = append(l.groups, group{topic: t})
				}
				t.batch = int32(len(l.groups))
			}
			g := &l.groups[t.batch-1]
			g.deliveries = append(g.deliveries, d)
		}
	}
	for i := range l.groups {
		g := &l.groups[i]
		g.topic.batch = 0
		l.deliverGroup(g.topic, g.deliveries)
		clear(g.deliveries)
		g.topic = nil
	}
	l.deliverMulti(run)
	for _, d := range run {
		l.release(d)
	}
}

// deliverGroup writes a topic's deliveries of a run to its members with
// one subscription, and notes the others for deliverMulti.
func (l *loopState) deliverGroup(t *topic, ds []*delivery) {
	// A delivery has a raw frame only if some subscriber wanted one when it
	// was encoded; raw subscribers get those, which are all the messages
	// published after they joined; the same goes for events. Each of the
	// variants (format, and compressed or not) is joined at most once for
	// the whole topic.
	var frames [numVariants][]byte
	var counts [numVariants]int
	var built [numVariants]bool
	variant := func(v int) {
		built[v] = true
		if len(ds) == 1 {
			if f := ds[0].variant(v); f != nil {
				frames[v], counts[v] = f, 1
			}
			return
		}
		buf := l.joined[v][:0]
		for _, d := range ds {
			f := d.variant(v)
			if f == nil {
				continue
			}
			buf = append(buf, f...)
			counts[v]++
		}
		l.joined[v] = buf
		frames[v] = buf
	}
	var written, bytes uint64
	// Backwards, because a write can close a connection, which moves the
	// last member into its place.
	for i := len(t.members) - 1; i >= 0; i-- {
		if i >= len(t.members) {
			continue
		}
		c := t.members[i]
		if !c.Open() {
			continue
		}
		if subCount(c) > 1 || resuming(c) {
			if _, seen := l.inMulti[c]; !seen {
				l.inMulti[c] = struct{}{}
				l.multi = append(l.multi, c)
			}
			continue
		}
		v := variantFor(c)
		if !built[v] {
			variant(v) // joined only for the formats the topic's members take
		}
		if counts[v] == 0 {
			continue
		}
		c.Send(frames[v])
		written += uint64(counts[v])
		bytes += uint64(len(frames[v]))
	}
	l.stats.deliveries.Add(written)
	l.stats.bytesOut.Add(bytes)
}

// The variants of a delivery's frame, as bits, and the event of event
// streams, which are neither raw nor compressed.
const (
	variantRaw     = 1
	variantDeflate = 2
	variantSSE     = 4
	numVariants    = 5
)

// variantFor is the variant c takes.
func variantFor(c *engine.Conn) int {
	if c.Stream() {
		return variantSSE
	}
	return variantOf(isRaw(c), c.Deflate())
}

func variantOf(raw, deflate bool) int {
	v := 0
	if raw {
		v |= variantRaw
	}
	if deflate {
		v |= variantDeflate
	}
	return v
}

// deliverMulti writes to each socket with several subscriptions the
// deliveries of the run it should have, in one write. Every pattern that
// matches a subject gets its own copy of a message from the bus, so a
// socket takes a message only through its owner: the least of its live
// patterns that match the subject. A pattern that is not live on the loop
// yet owns nothing, so the copies of the patterns that were live carry
// the message until the loop hears otherwise, between two messages.
func (l *loopState) deliverMulti(run []*delivery) {
	var written, bytes uint64
	for _, c := range l.multi {
		if !c.Open() {
			continue
		}
		s := c.Session.(*session) // several subscriptions: always a session
		v := variantFor(c)
		buf := l.gather[:0]
		n := 0
		for _, d := range run {
			frame := d.variant(v)
			if frame == nil {
				continue
			}
			owner := s.owner(d.subjectString())
			if owner == "" || !slices.Contains(d.patterns, owner) {
				continue
			}
			if len(s.resumes) > 0 {
				if r := s.resumeFor(owner); r != nil && !r.passed {
					switch {
					case !r.done:
						// A socket too far behind is closed by hold, and
						// gets nothing more.
						l.hold(c, r, frame, d.seq)
						continue
					case d.seq != 0 && d.seq <= r.through:
						continue // the replay had it
					default:
						s.passSeam(r)
					}
				}
			}
			buf = append(buf, frame...)
			n++
		}
		if n > 0 && c.Send(buf) {
			written += uint64(n)
			bytes += uint64(len(buf))
		}
		l.gather = buf[:0]
	}
	clear(l.multi)
	l.multi = l.multi[:0]
	clear(l.inMulti)
	l.stats.deliveries.Add(written)
	l.stats.bytesOut.Add(bytes)
}

// owner is the least live pattern of the session that matches subject, or
// "" for none.
func (s *session) owner(subject string) string {
	best := ""
	for i := range s.subs.len() {
		t := s.subs.at(i).topic
		if t.live && (best == "" || t.pattern() < best) && channel.Matches(t.pattern(), subject) {
			best = t.pattern()
		}
	}
	return best
}
