package push

import (
	"strconv"
	"strings"

	"github.com/gobwas/ws"

	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/engine"
)

// CloseTokenExpired is the close code of a connection whose token expired
// before the client refreshed it.
const CloseTokenExpired ws.StatusCode = 4001

// expiryHeap is a loop's authenticated sockets, soonest expiry first, so
// that each sweep looks at only the sockets that are due: no timer per
// socket.
type expiryHeap []*engine.Conn

func expiresOf(c *engine.Conn) int64 { return c.Session.(*session).id.expires }

func (hp *expiryHeap) add(c *engine.Conn) {
	s := c.Session.(*session)
	if s.id == nil {
		return
	}
	*hp = append(*hp, c)
	s.heapAt = int32(len(*hp))
	hp.up(len(*hp) - 1)
}

func (hp *expiryHeap) remove(c *engine.Conn) {
	s, ok := c.Session.(*session)
	if !ok || s.heapAt == 0 {
		return
	}
	i, last := int(s.heapAt-1), len(*hp)-1
	if i != last {
		hp.swap(i, last)
	}
	s.heapAt = 0 // after the swap, which gave it last's index
	(*hp)[last] = nil
	*hp = (*hp)[:last]
	if i != last {
		hp.down(i)
		hp.up(i)
	}
}

func (hp expiryHeap) swap(i, j int) {
	hp[i], hp[j] = hp[j], hp[i]
	hp[i].Session.(*session).heapAt = int32(i + 1)
	hp[j].Session.(*session).heapAt = int32(j + 1)
}

func (hp expiryHeap) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if expiresOf(hp[parent]) <= expiresOf(hp[i]) {
			return
		}
		hp.swap(i, parent)
		i = parent
	}
}

func (hp expiryHeap) down(i int) {
	for {
		least := i
		for _, child := range [2]int{2*i + 1, 2*i + 2} {
			if child < len(hp) && expiresOf(hp[child]) < expiresOf(hp[least]) {
				least = child
			}
		}
		if least == i {
			return
		}
		hp.swap(i, least)
		i = least
	}
}

// expire closes, with 4001, the sockets whose token has expired.
func (l *loopState) expire() {
	now := l.hub.now().Unix()
	for len(l.expiries) > 0 {
		c := l.expiries[0]
		if expiresOf(c) > now {
			return
		}
		l.expiries.remove(c)
		l.hub.counters.expired.Add(1)
		if c.Open() {
			c.Close(CloseTokenExpired, "token expired")
		} else {
			c.Refuse(unauthorized("token expired")) // still waiting for its 101
		}
	}
}

// refresh handles {"op":"refresh","token":...}: the new token is verified
// off the loop, like an upgrade's.
func (l *loopState) refresh(c *engine.Conn, cmd *command) {
	h := l.hub
	switch {
	case h.verify == nil:
		l.replyError(c, cmd.ID, badRequest("this server does not use tokens"))
		return
	case cmd.Token == "":
		l.replyError(c, cmd.ID, badRequest(`refresh needs a "token"`))
		return
	}
	j := &job{kind: jobRefresh, conn: c, loop: l, token: cmd.Token, id: cmd.ID}
	if !h.submit(j) {
		l.replyError(c, cmd.ID, &channel.Error{Code: channel.CodeUnavailable, Message: "too many logins in progress, retry shortly"})
	}
}

// refreshVerified applies a verified refresh: the connection takes the new
// token's identity and expiry, and loses the subscriptions the new token
// does not permit.
func (l *loopState) refreshVerified(j *job) {
	c := j.conn
	if !c.Open() {
		return
	}
	h := l.hub
	if j.err != nil {
		h.counters.authFailed(authReason(j.err))
		l.replyError(c, j.id, &channel.Error{Code: channel.CodeForbidden, Message: strings.Map(oneLine, j.err.Error())})
		return
	}
	old := identityOf(c)
	user := ""
	if old != nil {
		user = old.user
	}
	if j.claims.Subject != user {
		h.counters.authFailed("other_subject")
		l.replyError(c, j.id, &channel.Error{Code: channel.CodeForbidden, Message: "the new token is for another user"})
		return
	}
	id := h.identityFor(j.claims)
	l.expiries.remove(c)
	s := sessionOf(c)
	s.id = id
	l.expiries.add(c)
	b := append(l.replyBuf[:0], `{"op":"ack"`...)
	b = appendID(b, j.id)
	b = append(b, `,"expires":`...)
	b = strconv.AppendInt(b, id.expires, 10)
	l.replyBuf = append(b, '}')
	l.sendReply(c, l.replyBuf)
	// Backwards: leaving moves the last subscription into the gap.
	for k := s.subs.len() - 1; k >= 0; k-- {
		pattern := s.subs.at(k).topic.pattern()
		if err := h.checkSubscribe(id, pattern); err != nil {
			l.unsubscribe(c, pattern)
			l.replyDropped(c, pattern, err)
		}
	}
}

// replyDropped tells c it lost its subscription to pattern:
// {"op":"error","code":"forbidden","channel":pattern,"message":...}.
func (l *loopState) replyDropped(c *engine.Conn, pattern string, err error) {
	b := append(l.replyBuf[:0], `{"op":"error","code":`...)
	b = strconv.AppendQuote(b, channel.CodeForbidden)
	b = append(b, `,"channel":`...)
	b = appendJSONString(b, []byte(pattern))
	b = append(b, `,"message":`...)
	b = appendJSONString(b, []byte("no longer permitted: "+errorMessage(err)))
	l.replyBuf = append(b, '}')
	l.sendReply(c, l.replyBuf)
}
