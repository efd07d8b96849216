package push

import (
	"errors"
	"slices"

	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/engine"
)

// A socket's subscriptions live in its c.Session, in the cheapest form
// that holds them, since most of the millions of sockets follow one
// channel in the default format:
//   - nil: no subscription, JSON format;
//   - *topic: one subscription, JSON format, the socket's position in the
//     topic's member list in c.Tag: no allocation at all;
//   - *session: anything else.

// session holds the subscriptions and format of a socket that is not in
// one of the compact forms.
type session struct {
	subs subList
	raw  bool      // bare payloads instead of envelopes
	id   *identity // nil: anonymous
	rate *publishRate
	// heapAt is 1 + the socket's index in its loop's expiries; 0 when not
	// there.
	heapAt int32
	// resumes are the subscriptions waiting for, or just past, their
	// replay (see history.go); nil for almost every socket.
	resumes []*resume
}

// identityOf returns who c's token says it is, or nil if anonymous.
func identityOf(c *engine.Conn) *identity {
	if s, ok := c.Session.(*session); ok {
		return s.id
	}
	return nil
}

// sessionOf returns c's session, moving c out of a compact form first.
func sessionOf(c *engine.Conn) *session {
	switch s := c.Session.(type) {
	case *session:
		return s
	case *topic:
		ns := &session{}
		ns.subs.add(sub{topic: s, pos: int32(c.Tag)})
		c.Session, c.Tag = ns, 0
		return ns
	}
	ns := &session{}
	c.Session = ns
	return ns
}

// sub is one of a socket's subscriptions: the topic, and where the socket
// sits in its member list, so that leaving costs O(1).
type sub struct {
	topic *topic
	pos   int32
}

// subCount is how many channels c follows.
func subCount(c *engine.Conn) int {
	switch s := c.Session.(type) {
	case *topic:
		return 1
	case *session:
		return s.subs.len()
	}
	return 0
}

// isRaw reports whether c wants bare payloads.
func isRaw(c *engine.Conn) bool {
	s, ok := c.Session.(*session)
	return ok && s.raw
}

// subAt returns c's subscription i.
func subAt(c *engine.Conn, i int) sub {
	if t, ok := c.Session.(*topic); ok {
		return sub{topic: t, pos: int32(c.Tag)}
	}
	return *c.Session.(*session).subs.at(i)
}

// findSub returns the index of c's subscription to pattern, or -1.
func findSub(c *engine.Conn, pattern string) int {
	switch s := c.Session.(type) {
	case *topic:
		if s.pattern() == pattern {
			return 0
		}
	case *session:
		return s.subs.find(pattern)
	}
	return -1
}

// setPos records that c now sits at pos in the member list of its
// subscription k.
func setPos(c *engine.Conn, k int, pos int32) {
	if _, ok := c.Session.(*topic); ok {
		c.Tag = uint32(pos)
		return
	}
	c.Session.(*session).subs.at(k).pos = pos
}

// addSub adds a subscription to c, in the cheapest form that holds them.
func addSub(c *engine.Conn, sb sub) {
	switch s := c.Session.(type) {
	case nil:
		c.Session, c.Tag = sb.topic, uint32(sb.pos)
	case *topic:
		ns := &session{}
		ns.subs.add(sub{topic: s, pos: int32(c.Tag)})
		ns.subs.add(sb)
		c.Session, c.Tag = ns, 0
	case *session:
		s.subs.add(sb)
	}
}

// removeSub drops c's subscription k.
func removeSub(c *engine.Conn, k int) {
	switch s := c.Session.(type) {
	case *topic:
		c.Session, c.Tag = nil, 0
	case *session:
		s.subs.remove(k)
	}
}

// subscribe adds c to pattern's topic on the loop, making the topic (and
// joining the hub) if it is the loop's first. pattern may be a view of a
// network buffer: it is copied only if kept. It reports whether the
// subscription is new, and whether it waits for its channel to go live.
func (l *loopState) subscribe(c *engine.Conn, pattern string) (added, pending bool, err error) {
	if k := findSub(c, pattern); k >= 0 {
		return false, !subAt(c, k).topic.live, nil
	}
	if subCount(c) >= l.hub.maxChannels {
		return false, false, l.hub.tooMany()
	}
	t := l.topic[pattern]
	if t == nil {
		// The loop keys its topic by the hub's copy of the name: one copy
		// per channel in the process, however many loops follow it.
		t = &topic{channel: l.hub.join(l, pattern)}
		l.topic[t.pattern()] = t
	}
	switch formatOf(c) {
	case formatRaw:
		t.channel.raw.Add(1)
	case formatSSE:
		t.channel.sse.Add(1)
	}
	if c.Deflate() {
		t.channel.deflate.Add(1)
	}
	addSub(c, sub{topic: t, pos: int32(len(t.members))})
	t.members = append(t.members, c)
	return true, !t.live, nil
}

// unsubscribe removes c from pattern's topic, if it is in it. An in-band
// subscribe still waiting for that channel is answered first, so that
// answers come in the order of the requests.
func (l *loopState) unsubscribe(c *engine.Conn, pattern string) {
	k := findSub(c, pattern)
	if k < 0 {
		return
	}
	if t := subAt(c, k).topic; !t.live {
		l.waiting[t] = slices.DeleteFunc(l.waiting[t], func(w waiter) bool {
			if w.conn == c && !w.upgrade {
				l.replyAck(c, w.id, nil)
				return true
			}
			return false
		})
	} else if s, ok := c.Session.(*session); ok {
		if r := s.resumeFor(pattern); r != nil && r.started && !r.done {
			// Its replay is still being read: answered now, as nothing
			// of it will come.
			l.replyUnreplayed(c, r)
		}
	}
	l.leave(c, k)
}

// unsubscribeAll removes c from every topic.
func (l *loopState) unsubscribeAll(c *engine.Conn) {
	for n := subCount(c); n > 0; n = subCount(c) {
		l.leave(c, n-1)
	}
}

// leave removes subscription k, swapping the last member of the topic into
// the socket's place and the socket's last subscription into k. A topic
// left empty goes, unless it still waits for the bus: then it stays until
// the answer, so that a loop never has two subscriptions in flight for one
// channel.
func (l *loopState) leave(c *engine.Conn, k int) {
	sb := subAt(c, k)
	t := sb.topic
	if s, ok := c.Session.(*session); ok {
		if r := s.resumeFor(t.pattern()); r != nil {
			s.dropResume(r) // its replay is no longer wanted
		}
	}
	last := len(t.members) - 1
	if moved := t.members[last]; moved != c {
		t.members[sb.pos] = moved
		setPos(moved, findSub(moved, t.pattern()), sb.pos)
	}
	t.members[last] = nil
	t.members = t.members[:last]
	switch formatOf(c) {
	case formatRaw:
		t.channel.raw.Add(-1)
	case formatSSE:
		t.channel.sse.Add(-1)
	}
	if c.Deflate() {
		t.channel.deflate.Add(-1)
	}
	removeSub(c, k)
	if len(t.members) == 0 && t.live {
		delete(l.topic, t.pattern())
		l.hub.leave(l, t.channel)
	}
}

// answered applies the bus's answer about ch: the topic goes live and its
// waiters hear so, or the bus refused it and its members lose it.
func (l *loopState) answered(ch *hubChannel, err error) {
	t := l.topic[ch.pattern]
	if t == nil || t.channel != ch {
		return
	}
	waiters := l.waiting[t]
	delete(l.waiting, t)
	if err == nil {
		t.live = true
		if len(t.members) == 0 {
			delete(l.topic, t.pattern())
			l.hub.leave(l, ch)
		}
	} else {
		delete(l.topic, t.pattern())
		for _, c := range t.members {
			removeSub(c, findSub(c, t.pattern()))
			if s, ok := c.Session.(*session); ok {
				if r := s.resumeFor(t.pattern()); r != nil {
					s.dropResume(r)
				}
			}
		}
		t.members = nil
		code := channel.CodeUnavailable
		if ce := (*channel.Error)(nil); errors.As(err, &ce) && ce.Code == channel.CodeForbidden {
			code = ce.Code // NATS's own permissions refused it
		}
		err = &channel.Error{Code: code, Message: "cannot subscribe: " + err.Error()}
	}
	for _, w := range waiters {
		switch {
		case w.upgrade:
			l.upgradeAnswered(w.conn, err)
		case !w.conn.Open():
		case err != nil:
			l.replyError(w.conn, w.id, err)
		case w.resume != nil:
			l.startReplay(w.conn, w.resume)
		default:
			l.replySubscribed(w.conn, w.id, ch.pattern)
		}
	}
}

// upgradeAnswered counts one channel of a held upgrade as answered and
// sends the 101 once all are, followed by the refusals in band.
func (l *loopState) upgradeAnswered(c *engine.Conn, err error) {
	aw := l.accepting[c]
	if aw == nil {
		return // closed meanwhile
	}
	if err != nil {
		aw.refused = append(aw.refused, err)
	}
	if aw.pending--; aw.pending > 0 {
		return
	}
	delete(l.accepting, c)
	c.Accept()
	for _, err := range aw.refused {
		l.replyError(c, nil, err)
	}
}

// subList is a socket's subscriptions. Most sockets follow one channel,
// so the first subscription lives in the list itself and only more than one
// costs an allocation.
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
		if l.at(i).topic.pattern() == pattern {
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
