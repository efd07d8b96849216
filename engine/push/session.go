package push

import (
	"slices"
	"strings"

	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/engine"
)

// session is the protocol's state for one socket. Most sockets follow one
// channel, so it is small: the first subscription lives in the list itself.
type session struct {
	subs subList
	raw  bool // bare payloads instead of envelopes
}

func sessionOf(c *engine.Conn) *session { return c.Session.(*session) }

// sub is one of a socket's subscriptions: the topic, and where the socket
// sits in its member list, so that leaving costs O(1).
type sub struct {
	topic *topic
	pos   int32
}

// subscribe adds c to pattern's topic on the loop, making the topic (and
// joining the hub) if it is the loop's first. pattern may be a view of a
// network buffer: it is copied only if kept. It reports whether the
// subscription is new, and whether it waits for its channel to go live.
func (l *loopState) subscribe(c *engine.Conn, s *session, pattern string) (added, pending bool, err error) {
	if k := s.subs.find(pattern); k >= 0 {
		return false, !s.subs.at(k).topic.live, nil
	}
	if s.subs.len() >= l.hub.maxChannels {
		return false, false, l.hub.tooMany()
	}
	t := l.topic[pattern]
	if t == nil {
		pattern = strings.Clone(pattern)
		t = &topic{pattern: pattern}
		l.topic[pattern] = t
		t.channel = l.hub.join(l, pattern)
	}
	if s.raw {
		t.channel.raw.Add(1)
	}
	s.subs.add(sub{topic: t, pos: int32(len(t.members))})
	t.members = append(t.members, c)
	return true, !t.live, nil
}

// unsubscribe removes c from pattern's topic, if it is in it. An in-band
// subscribe still waiting for that channel is answered first, so that
// answers come in the order of the requests.
func (l *loopState) unsubscribe(c *engine.Conn, s *session, pattern string) {
	k := s.subs.find(pattern)
	if k < 0 {
		return
	}
	if t := s.subs.at(k).topic; !t.live {
		l.waiting[t] = slices.DeleteFunc(l.waiting[t], func(w waiter) bool {
			if w.conn == c && !w.upgrade {
				l.replyAck(c, w.id, nil)
				return true
			}
			return false
		})
	}
	l.leave(c, s, k)
}

// unsubscribeAll removes c from every topic.
func (l *loopState) unsubscribeAll(c *engine.Conn, s *session) {
	for s.subs.len() > 0 {
		l.leave(c, s, s.subs.len()-1)
	}
}

// leave removes subscription k, swapping the last member of the topic into
// the socket's place and the socket's last subscription into k. A topic
// left empty goes, unless it still waits for the bus: then it stays until
// the answer, so that a loop never has two subscriptions in flight for one
// channel.
func (l *loopState) leave(c *engine.Conn, s *session, k int) {
	sb := *s.subs.at(k)
	t := sb.topic
	last := len(t.members) - 1
	if moved := t.members[last]; moved != c {
		t.members[sb.pos] = moved
		ms := sessionOf(moved)
		ms.subs.at(ms.subs.find(t.pattern)).pos = sb.pos
	}
	t.members[last] = nil
	t.members = t.members[:last]
	if s.raw {
		t.channel.raw.Add(-1)
	}
	s.subs.remove(k)
	if len(t.members) == 0 && t.live {
		delete(l.topic, t.pattern)
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
			delete(l.topic, t.pattern)
			l.hub.leave(l, ch)
		}
	} else {
		delete(l.topic, t.pattern)
		for _, c := range t.members {
			s := sessionOf(c)
			s.subs.remove(s.subs.find(t.pattern))
		}
		t.members = nil
		err = &channel.Error{Code: channel.CodeUnavailable, Message: "cannot subscribe: " + err.Error()}
	}
	for _, w := range waiters {
		if w.upgrade {
			l.upgradeAnswered(w.conn, err)
		} else if w.conn.Open() {
			l.replyAck(w.conn, w.id, err)
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
