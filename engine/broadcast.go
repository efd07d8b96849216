package engine

import (
	"context"
	"encoding/json"
	"math/bits"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/valyala/bytebufferpool"

	"github.com/herald-ws/herald/codec"
)

// Channels is the message bus behind the push endpoint: which channel
// names are valid, when the process starts and stops wanting a channel,
// and how wildcard patterns match. In the herald binary it is NATS
// (package pubsub); the engine knows nothing more of it.
type Channels interface {
	// Validate checks a channel a client asked for. Its error should be a
	// *ChannelError, whose code the client receives.
	Validate(channel string) error
	// Acquire is called when the first socket in the process subscribes to
	// channel, and Release when the last one leaves it.
	Acquire(channel string) error
	Release(channel string)
	// Matches reports whether a message published on subject matches the
	// channel pattern.
	Matches(pattern, subject string) bool
}

// ChannelError is a refusal the client can act on, sent in band as
// {"op":"error","code":Code,"message":Message}.
type ChannelError struct {
	Code    string
	Message string
}

func (e *ChannelError) Error() string { return e.Code + ": " + e.Message }

// hub tracks, for every channel with subscribers in the process, which
// loops have them. Loops take its lock only when a channel appears on or
// disappears from them; delivering a message takes it once per message on
// the bus's goroutine, never per socket and never on a loop.
type hub struct {
	bus      Channels
	mu       sync.RWMutex
	channels map[string]*channel
	free     sync.Pool // *delivery
}

// channel is the process-wide state of one subscribed pattern.
type channel struct {
	loops uint64       // bit i set: loop i has subscribers (guarded by hub.mu)
	raw   atomic.Int32 // subscribers that want the bare payload, over all loops
	since uint32       // Server.clock when the process subscribed; set once
}

// delivery is one message on its way to the loops: encoded once per
// format, shared read-only by every loop it is queued to, and recycled
// when the last of them is done.
type delivery struct {
	pattern string // the channel it arrived through
	subject string // the subject it was published on
	json    *bytebufferpool.ByteBuffer
	raw     *bytebufferpool.ByteBuffer // nil unless some subscriber wants raw
	jsonAt  int                        // where the frame starts in json.B
	arrived time.Time                  // when the bus handed it over
	at      uint32                     // the same, on Server.clock
	refs    atomic.Int32
}

func newHub(bus Channels) *hub {
	h := &hub{bus: bus, channels: make(map[string]*channel)}
	h.free.New = func() any { return new(delivery) }
	return h
}

// join records that loop index has gained its first subscriber to pattern,
// subscribing the process to it if no loop had one.
func (h *hub) join(pattern string, loop int, now uint32) (*channel, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := h.channels[pattern]
	if ch == nil {
		if err := h.bus.Acquire(pattern); err != nil {
			return nil, err
		}
		ch = &channel{since: now}
		h.channels[pattern] = ch
	}
	ch.loops |= 1 << loop
	return ch, nil
}

// leave records that loop index has lost its last subscriber to pattern.
func (h *hub) leave(pattern string, loop int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := h.channels[pattern]
	if ch == nil {
		return
	}
	ch.loops &^= 1 << loop
	if ch.loops == 0 {
		delete(h.channels, pattern)
		h.bus.Release(pattern)
	}
}

// Deliver hands a message published on subject, which arrived through the
// subscription to pattern, to every loop with subscribers to pattern. It is
// safe to call from any goroutine and does not keep data.
func (s *Server) Deliver(pattern, subject string, data []byte) {
	h := s.hub
	if h == nil {
		return
	}
	h.mu.RLock()
	ch := h.channels[pattern]
	var mask uint64
	if ch != nil {
		mask = ch.loops
	}
	h.mu.RUnlock()
	if mask == 0 {
		return
	}
	d := h.free.Get().(*delivery)
	d.pattern, d.subject, d.arrived, d.at = pattern, subject, time.Now(), s.clock()
	d.json = bytebufferpool.Get()
	d.json.B, d.jsonAt = appendEnvelopeFrame(d.json.B[:0], subject, data)
	if ch.raw.Load() > 0 {
		d.raw = bytebufferpool.Get()
		op := ws.OpText
		if !utf8.Valid(data) {
			op = ws.OpBinary
		}
		d.raw.B = codec.AppendFrame(d.raw.B[:0], op, data)
	}
	d.refs.Store(int32(bits.OnesCount64(mask)))
	loops := *s.loops.Load()
	for mask != 0 {
		i := bits.TrailingZeros64(mask)
		mask &^= 1 << i
		loops[i].enqueue(d)
	}
}

// frames returns the encoded frame for a subscriber's format.
func (d *delivery) frame(raw bool) []byte {
	if raw {
		return d.raw.B
	}
	return d.json.B[d.jsonAt:]
}

// release is called by each loop done with d. The last one records how
// long the message took from the bus to its last socket write.
func (l *loop) release(d *delivery) {
	if d.refs.Add(-1) != 0 {
		return
	}
	l.stats.latency.observe(time.Since(d.arrived))
	h := l.s.hub
	bytebufferpool.Put(d.json)
	if d.raw != nil {
		bytebufferpool.Put(d.raw)
	}
	*d = delivery{}
	h.free.Put(d)
}

// envelopeHeadroom is room left in front of an envelope for its frame
// header, the longest one a server frame can need.
const envelopeHeadroom = 10

// appendEnvelopeFrame encodes {"channel":subject,"data":payload} as a text
// frame in dst. data goes in as it is when it is valid JSON, and as a JSON
// string otherwise. The header's length is only known once the envelope is
// written, so the envelope is written behind room for the longest header
// and the header is put right in front of it; the frame starts at the
// returned offset.
func appendEnvelopeFrame(dst []byte, subject string, data []byte) ([]byte, int) {
	start := len(dst)
	dst = append(dst, make([]byte, envelopeHeadroom)...)
	body := len(dst)
	dst = append(dst, `{"channel":`...)
	dst = appendJSONString(dst, []byte(subject))
	dst = append(dst, `,"data":`...)
	if json.Valid(data) {
		dst = append(dst, data...)
	} else {
		dst = appendJSONString(dst, data)
	}
	dst = append(dst, '}')
	var hdr [envelopeHeadroom]byte
	h := codec.AppendHeader(hdr[:0], ws.OpText, true, len(dst)-body)
	at := body - len(h)
	copy(dst[at:], h)
	return dst, at - start
}

// appendJSONString appends s as a JSON string. Bytes that are not UTF-8
// become U+FFFD, as encoding/json does.
func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// topic is one loop's subscribers to one channel pattern.
type topic struct {
	pattern string
	channel *channel
	members []*conn // each member's subList holds its position here
	batch   int     // 1 + index in loop.groups while a flush runs; 0 otherwise
}

// sub is one of a connection's subscriptions: the topic, and where the
// connection sits in its member list, so leaving costs O(1).
type sub struct {
	topic *topic
	pos   int32
	since uint32 // Server.clock when the connection subscribed
}

// group is the part of a flushed batch that went to one topic.
type group struct {
	topic      *topic
	deliveries []*delivery
}

// enqueue queues d for the loop and, if the queue was empty, schedules a
// flush. Deliveries that arrive while a flush is pending ride along with it,
// which is what lets several messages reach a socket in one write.
func (l *loop) enqueue(d *delivery) {
	l.inboxMu.Lock()
	l.inbox = append(l.inbox, d)
	schedule := !l.flushPending
	l.flushPending = true
	l.inboxMu.Unlock()
	if schedule {
		if err := l.el.Execute(context.Background(), l.flushTask); err != nil {
			l.inboxMu.Lock()
			l.flushPending = false
			batch := l.inbox
			l.inbox = nil // other goroutines may append as soon as the lock is free
			l.inboxMu.Unlock()
			for _, d := range batch {
				l.release(d)
			}
		}
	}
}

// flush writes every queued delivery to the loop's subscribers. A batch is
// grouped by topic first, so a socket gets all its frames of the batch in
// one write.
func (l *loop) flush(context.Context) error {
	l.inboxMu.Lock()
	batch := l.inbox
	l.inbox, l.spare = l.spare[:0], batch
	l.flushPending = false
	l.inboxMu.Unlock()

	l.groups = l.groups[:0]
	for _, d := range batch {
		t := l.topics[d.pattern]
		if t == nil { // the last subscriber left while the message was on its way
			l.release(d)
			continue
		}
		if t.batch == 0 {
			if len(l.groups) < cap(l.groups) {
				l.groups = l.groups[:len(l.groups)+1]
				g := &l.groups[len(l.groups)-1]
				g.topic, g.deliveries = t, g.deliveries[:0]
			} else {
				l.groups = append(l.groups, group{topic: t})
			}
			t.batch = len(l.groups)
		}
		g := &l.groups[t.batch-1]
		g.deliveries = append(g.deliveries, d)
	}
	for i := range l.groups {
		g := &l.groups[i]
		g.topic.batch = 0
		l.deliverGroup(g.topic, g.deliveries)
		for j, d := range g.deliveries {
			l.release(d)
			g.deliveries[j] = nil
		}
		g.topic = nil
	}
	clear(batch)
	return nil
}

// deliverGroup writes a run of deliveries on one topic to its members.
func (l *loop) deliverGroup(t *topic, ds []*delivery) {
	// A delivery has a raw frame only if some subscriber wanted one when it
	// was encoded; raw subscribers get those, which are all the messages
	// published after they joined.
	var jsonFrames, rawFrames []byte
	rawCount := 0
	if len(ds) == 1 {
		jsonFrames = ds[0].frame(false)
		if ds[0].raw != nil {
			rawFrames, rawCount = ds[0].frame(true), 1
		}
	} else {
		l.joined, l.joinedRaw = l.joined[:0], l.joinedRaw[:0]
		for _, d := range ds {
			l.joined = append(l.joined, d.frame(false)...)
			if d.raw != nil {
				l.joinedRaw = append(l.joinedRaw, d.frame(true)...)
				rawCount++
			}
		}
		jsonFrames = l.joined
		if rawCount > 0 {
			rawFrames = l.joinedRaw
		}
	}
	var written, bytes uint64
	// Backwards, because a write can close a connection, which moves the
	// last member into its place.
	for i := len(t.members) - 1; i >= 0; i-- {
		if i >= len(t.members) {
			continue
		}
		c := t.members[i]
		if c.state != stateOpen {
			continue
		}
		raw := c.route == routePushRaw
		switch {
		case c.subs.len() > 1:
			n, b := c.writeFiltered(t.pattern, ds, raw)
			written, bytes = written+n, bytes+b
		case raw && rawCount == 0:
			continue
		case raw:
			c.write(rawFrames)
			written += uint64(rawCount)
			bytes += uint64(len(rawFrames))
		default:
			c.write(jsonFrames)
			written += uint64(len(ds))
			bytes += uint64(len(jsonFrames))
		}
		if c.state == stateOpen && c.gc.OutboundBuffered() > l.s.cfg.MaxOutbound {
			c.cutSlowConsumer()
		}
	}
	l.stats.deliveries.Add(written)
	l.stats.bytesOut.Add(bytes)
}

// writeFiltered writes to a connection with several subscriptions the
// deliveries it should take through pattern: those whose subject none of
// its settled patterns that sort before pattern also match. Every pattern
// that matches a subject receives the message from the bus, so exactly one
// of them, the least, lets it through; a pattern added in the last
// OverlapSettle is not yet trusted to.
func (c *conn) writeFiltered(pattern string, ds []*delivery, raw bool) (n, bytes uint64) {
	matches := c.loop.s.hub.bus.Matches
	for _, d := range ds {
		if raw && d.raw == nil {
			continue
		}
		owner := true
		for i := range c.subs.len() {
			s := c.subs.at(i)
			if p := s.topic.pattern; p < pattern && matches(p, d.subject) && s.settled(d.at) {
				owner = false
				break
			}
		}
		if frame := d.frame(raw); owner && c.write(frame) {
			n++
			bytes += uint64(len(frame))
		}
	}
	return n, bytes
}

// OverlapSettle is how long a subscription must have existed, on the
// connection and at the bus, before the connection's other patterns defer
// to it. A new bus subscription takes effect only after a round trip, and
// the two copies of a message that matches two patterns reach the loop a
// moment apart: deferring at once could lose a message. Within this window
// after a connection adds a pattern that overlaps another of its patterns,
// a message matching both may arrive twice; none is lost, and after it
// each arrives once.
const OverlapSettle = 500 * time.Millisecond

// settled reports whether, for a message that arrived at Server.clock at,
// the subscription has existed long enough to be sure its own copy of the
// message comes (see OverlapSettle).
func (s *sub) settled(at uint32) bool {
	return due(at, s.since+millis(OverlapSettle)) && due(at, s.topic.channel.since+millis(OverlapSettle))
}

// subscribe adds the connection to pattern's topic on its loop. pattern
// may be a view of a network buffer: it is copied only if kept.
func (c *conn) subscribe(pattern string) error {
	if c.subs.find(pattern) >= 0 {
		return nil
	}
	if c.subs.len() >= c.loop.s.cfg.MaxChannels {
		return &ChannelError{Code: "too_many_channels", Message: "at most " + strconv.Itoa(c.loop.s.cfg.MaxChannels) + " channels per connection"}
	}
	l := c.loop
	t := l.topics[pattern]
	if t == nil {
		pattern = strings.Clone(pattern)
		ch, err := l.s.hub.join(pattern, l.index, l.s.clock())
		if err != nil {
			return &ChannelError{Code: "unavailable", Message: "cannot subscribe: " + err.Error()}
		}
		t = &topic{pattern: pattern, channel: ch}
		l.topics[pattern] = t
	}
	if c.route == routePushRaw {
		t.channel.raw.Add(1)
	}
	c.subs.add(sub{topic: t, pos: int32(len(t.members)), since: l.s.clock()})
	t.members = append(t.members, c)
	return nil
}

// unsubscribe removes the connection from pattern's topic, if it is in it.
func (c *conn) unsubscribe(pattern string) {
	if k := c.subs.find(pattern); k >= 0 {
		c.leave(k)
	}
}

// unsubscribeAll removes the connection from every topic.
func (c *conn) unsubscribeAll() {
	for c.subs.len() > 0 {
		c.leave(c.subs.len() - 1)
	}
}

// leave removes subscription k, swapping the last member of the topic into
// the connection's place and the connection's last subscription into k.
func (c *conn) leave(k int) {
	s := *c.subs.at(k)
	t := s.topic
	last := len(t.members) - 1
	if moved := t.members[last]; moved != c {
		t.members[s.pos] = moved
		moved.subs.at(moved.subs.find(t.pattern)).pos = s.pos
	}
	t.members[last] = nil
	t.members = t.members[:last]
	if c.route == routePushRaw {
		t.channel.raw.Add(-1)
	}
	if len(t.members) == 0 {
		l := c.loop
		delete(l.topics, t.pattern)
		l.s.hub.leave(t.pattern, l.index)
	}
	c.subs.remove(k)
}

// subList is a connection's subscriptions. Most connections follow one
// channel, so the first subscription lives in the list itself and only
// more than one costs an allocation.
type subList struct {
	first sub    // first.topic is nil when the list is empty
	rest  *[]sub // the second subscription on
}

func (l *subList) len() int {
	switch {
	case l.first.topic == nil:
		return 0
	case l.rest == nil:
		return 1
	}
	return 1 + len(*l.rest)
}

func (l *subList) at(i int) *sub {
	if i == 0 {
		return &l.first
	}
	return &(*l.rest)[i-1]
}

// find returns the index of the subscription to pattern, or -1.
func (l *subList) find(pattern string) int {
	for i := range l.len() {
		if l.at(i).topic.pattern == pattern {
			return i
		}
	}
	return -1
}

func (l *subList) add(s sub) {
	switch {
	case l.first.topic == nil:
		l.first = s
	case l.rest == nil:
		l.rest = &[]sub{s}
	default:
		*l.rest = append(*l.rest, s)
	}
}

// remove drops subscription i, moving the last one into its place.
func (l *subList) remove(i int) {
	last := l.len() - 1
	*l.at(i) = *l.at(last)
	if last == 0 {
		l.first = sub{}
		return
	}
	rest := *l.rest
	rest[len(rest)-1] = sub{}
	if rest = rest[:len(rest)-1]; len(rest) == 0 {
		l.rest = nil
	} else {
		*l.rest = rest
	}
}

// cutSlowConsumer closes a connection whose unsent data passed the
// outbound cap: it is not reading, and more data would let one client grow
// the server's memory without bound. Nothing is added after the close
// frame; a client that was only briefly slow still drains what it was sent
// and learns why, and one that stays stuck is closed by the sweep.
func (c *conn) cutSlowConsumer() {
	l := c.loop
	l.stats.slowConsumers.Add(1)
	// A network event can cut thousands at once: one line a second per
	// loop, saying how many it stands for (the metric counts them all).
	if now := l.s.clock(); l.slowLogged == 0 || due(now, l.slowLogged+1000) {
		l.s.log.Warn("closing slow consumer", "remote", c.gc.RemoteAddr(), "outbound", c.gc.OutboundBuffered(),
			"cap", l.s.cfg.MaxOutbound, "others_since_last_line", l.slowUnlogged)
		l.slowLogged, l.slowUnlogged = max(now, 1), 0
	} else {
		l.slowUnlogged++
	}
	c.close(ws.StatusPolicyViolation, "slow consumer: outbound buffer over the cap")
}
