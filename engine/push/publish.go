package push

import (
	"encoding/base64"
	"strconv"
	"time"
	"unsafe"

	"github.com/gobwas/ws"

	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/engine"
)

const (
	// floodWindow and floodStrikes: a connection with more than
	// floodStrikes × its burst refused publishes within one floodWindow is
	// not a client that backs off, and is closed with 1008.
	floodWindow  = 10 * time.Second
	floodStrikes = 2
)

// publishRate is a publishing connection's token bucket. Only sockets
// that publish have one.
type publishRate struct {
	tokens  float64
	at      time.Time // of the last refill
	window  time.Time // start of the current flood window
	refused int       // refusals in the window
}

// take spends a token if there is one: rate per second, bursts of twice
// that. It reports whether the publish may go, and whether the
// connection is flooding.
func (r *publishRate) take(now time.Time, rate float64) (ok, flooding bool) {
	burst := 2 * rate
	if r.at.IsZero() {
		r.tokens, r.at, r.window = burst, now, now
	}
	r.tokens = min(burst, r.tokens+now.Sub(r.at).Seconds()*rate)
	r.at = now
	if r.tokens >= 1 {
		r.tokens--
		return true, false
	}
	if now.Sub(r.window) > floodWindow {
		r.window, r.refused = now, 0
	}
	r.refused++
	return false, float64(r.refused) > floodStrikes*burst
}

var (
	errRateLimited = &channel.Error{Code: CodeRateLimited, Message: "publishing too fast: the message was dropped"}
	errNoData      = badRequest(`publish needs a "data" value`)
)

// The in-band codes of publish refusals, besides channel's.
const (
	CodeRateLimited = "rate_limited"
	CodeTooLarge    = "too_large"
)

// publish handles {"op":"publish","channel":...,"data":...}: checked,
// limited, and handed to the bus, which acks it once it has it.
func (l *loopState) publish(c *engine.Conn, cmd *command) {
	h := l.hub
	refuse := func(err error) {
		h.counters.publishRefusal(err)
		l.replyError(c, cmd.ID, err)
	}
	id := identityOf(c)
	if err := h.checkPublish(id, cmd.Channel); err != nil {
		refuse(err)
		return
	}
	if len(cmd.Data) == 0 {
		refuse(errNoData)
		return
	}
	if len(cmd.Data) > h.maxPublish {
		refuse(&channel.Error{Code: CodeTooLarge, Message: "data is over " + strconv.Itoa(h.maxPublish) + " bytes"})
		return
	}
	s := sessionOf(c)
	if s.rate == nil {
		s.rate = new(publishRate)
	}
	if ok, flooding := s.rate.take(h.now(), h.publishRate); !ok {
		refuse(errRateLimited)
		if flooding {
			c.Close(ws.StatusPolicyViolation, "publish rate exceeded")
		}
		return
	}
	p := Publication{Subject: cmd.Channel, Data: cmd.Data, Client: h.clientID(c)}
	if id != nil {
		p.User = id.user
	}
	j := &job{kind: jobPublish, conn: c, loop: l, id: cmd.ID}
	if err := h.bus.Publish(p, func(err error) {
		j.err = err
		l.post(event{job: j})
	}); err != nil {
		refuse(&channel.Error{Code: channel.CodeUnavailable, Message: "cannot publish now: " + err.Error()})
	}
}

// published answers a publish once the bus took it, or could not.
func (l *loopState) published(j *job) {
	if j.err != nil {
		l.hub.counters.publishRefusal(&channel.Error{Code: channel.CodeUnavailable})
		if j.conn.Open() {
			l.replyError(j.conn, j.id, &channel.Error{Code: channel.CodeUnavailable, Message: "cannot publish: " + j.err.Error()})
		}
		return
	}
	l.hub.counters.published.Add(1)
	if j.conn.Open() {
		l.reply(j.conn, "ack", j.id)
	}
}

// clientID is c's id: opaque, the same for every call on one connection,
// and distinct among the connections open at one time. It is c's address
// through a block cipher with a key of the process's own, so it costs no
// memory per connection and says nothing about the heap.
func (h *Hub) clientID(c *engine.Conn) string {
	return string(h.appendClientID(nil, c))
}

func (h *Hub) appendClientID(dst []byte, c *engine.Conn) []byte {
	var block [16]byte
	p := uintptr(unsafe.Pointer(c))
	for i := range 8 {
		block[i] = byte(p >> (8 * i))
	}
	h.clientIDs.Encrypt(block[:], block[:])
	return base64.RawURLEncoding.AppendEncode(dst, block[:])
}
