package engine

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/bytebufferpool"

	"github.com/herald-ws/herald/codec"
)

// Event streams (Server-Sent Events, Config.Streams) are the fallback for
// networks and proxies that break WebSocket upgrades: a plain GET answered
// 200 with Content-Type text/event-stream, whose body is the endpoint's
// events for as long as the connection lasts. The engine treats them as
// WebSocket connections in every way it can: the same admission (origin,
// CheckUpgrade, MaxConns, MaxAcceptRate, draining), the same Endpoint
// calls, the same outbound cap and sweep; what differs is the framing,
// which is the endpoint's (Conn.Stream tells it), and that the client
// sends nothing after its request.
//
// The body has neither Content-Length nor chunked framing: it ends when
// the connection closes, as HTTP/1.1 allows for a response (RFC 9112
// section 6.3). That keeps the bytes of an event the same on every socket,
// so that an endpoint encodes a message once for all of them, where
// chunked framing would wrap each write of each socket in a chunk header
// of its own.

// DefaultStreamRetry is Config.StreamRetry's default.
const DefaultStreamRetry = 2 * time.Second

// streamHead is the start of an event stream's answer, up to the headers
// that depend on the request.
const streamHead = "HTTP/1.1 200 OK\r\n" +
	"Content-Type: text/event-stream\r\n" +
	"Cache-Control: no-cache\r\n" +
	"X-Accel-Buffering: no\r\n"

// heartbeat is the comment a silent stream gets every PingInterval, the
// stream's ping: it keeps proxies and load balancers from cutting an idle
// response, and gives the kernel data in flight, whose unacknowledged age
// (TCP_USER_TIMEOUT) finds a peer that vanished.
var heartbeat = []byte(": ping\n\n")

var (
	errStreamMethod  = &codec.HTTPError{Status: 405, Reason: "method not allowed: an event stream is a GET", Header: "Allow: GET\r\n"}
	errStreamUpgrade = &codec.HTTPError{Status: 400, Reason: "this path serves an event stream (text/event-stream), not WebSocket: connect without Upgrade"}
	errStreamOrigin  = &codec.HTTPError{Status: 403, Reason: "origin not allowed"}
)

// Stream reports whether the connection is an event stream (served at a
// path of Config.Streams) rather than a WebSocket: an endpoint then writes
// events with Send, in the text/event-stream format, and never frames.
func (c *Conn) Stream() bool {
	return c.route != 0 && c.loop.s.streams[c.route-1]
}

// readStream answers a complete request head of n bytes on an event
// stream's path: the same admission as an upgrade, then the endpoint's
// Upgrade, whose refusal is an HTTP status before any body.
func (c *Conn) readStream(req *codec.Request, n int, route uint8) {
	s := c.loop.s
	switch {
	case string(req.Method) != "GET":
		c.refuseStream(refusedBadRequest, errStreamMethod)
		return
	case req.IsUpgrade():
		c.refuseStream(refusedBadRequest, errStreamUpgrade)
		return
	case s.cfg.CheckOrigin != nil && len(req.Origin) > 0 && !s.cfg.CheckOrigin(req.Origin):
		c.refuseStream(refusedForbidden, errStreamOrigin)
		return
	}
	if s.cfg.CheckUpgrade != nil {
		if err := s.cfg.CheckUpgrade(req); err != nil {
			c.refuseStream(refusalOf(err), err)
			return
		}
	}
	if reason, err := c.admit(); err != nil {
		c.refuseStream(reason, err)
		return
	}
	out := bytebufferpool.Get()
	out.B = append(out.B, streamHead...)
	if len(req.Origin) > 0 {
		// The origin passed CheckOrigin (or every origin may connect, as
		// for WebSocket): let a page of another origin read the stream.
		out.B = append(out.B, "Access-Control-Allow-Origin: "...)
		out.B = append(out.B, req.Origin...)
		out.B = append(out.B, "\r\nVary: Origin\r\n"...)
	}
	out.B = append(out.B, "\r\nretry: "...)
	out.B = strconv.AppendInt(out.B, s.cfg.StreamRetry.Milliseconds(), 10)
	out.B = append(out.B, "\n\n"...)
	c.scanned = 0
	c.setState(stateAccepting)
	c.deadline = s.clock() + millis(s.cfg.HandshakeTimeout)
	c.route = route
	c.loop.stats.streams.Add(1)
	err := s.endpoints[route-1].Upgrade(c, req)
	// An event source sends nothing after its request: whatever follows is
	// dropped, now and later.
	_, _ = c.gc.Discard(n)
	c.discardInbound()
	switch {
	case err == nil:
		c.open(out)
	case errors.Is(err, ErrAcceptLater):
		c.loop.accepting[c] = out
	default:
		bytebufferpool.Put(out)
		c.unadmit()
		c.setState(stateHandshake)
		c.route = 0 // refused: the endpoint keeps nothing
		c.refuseStream(refusalOf(err), err)
	}
}

// discardInbound drops every byte the client sent.
func (c *Conn) discardInbound() {
	if n := c.gc.InboundBuffered(); n > 0 {
		_, _ = c.gc.Discard(n)
	}
}

// refuseStream answers an event-stream request Herald will not serve, and
// counts why. An EventSource gives up for good on any answer but a 200,
// so a refusal a retry cures (a 503 with Retry-After: draining, a limit, an
// endpoint not ready) is a 200 event stream instead, with that retry delay
// and an "event: close" saying why, which ends at once: the browser comes
// back by itself, later. Other refusals (401, 403, 400) are their status,
// so that a page learns the URL or the token is wrong.
func (c *Conn) refuseStream(reason int, err error) {
	c.loop.stats.refused[reason].Add(1)
	var he *codec.HTTPError
	if !errors.As(err, &he) || he.Status != 503 {
		c.answer(err)
		return
	}
	retry := c.loop.s.cfg.StreamRetry
	if after, ok := retryAfter(he.Header); ok {
		retry = after
	}
	out := bytebufferpool.Get()
	out.B = append(out.B, streamHead...)
	// Any origin may read it: a page on another origin must see the
	// retry, or its EventSource gives up; the body says nothing private.
	out.B = append(out.B, "Access-Control-Allow-Origin: *\r\nConnection: close\r\n\r\nretry: "...)
	out.B = strconv.AppendInt(out.B, retry.Milliseconds(), 10)
	out.B = append(out.B, "\n\n"...)
	out.B = appendCloseEvent(out.B, 1013, he.Reason) // 1013: try again later
	c.finish(out)
}

// retryAfter reads the delay of a "Retry-After: SECONDS\r\n" line among
// header lines.
func retryAfter(header string) (time.Duration, bool) {
	const name = "Retry-After: "
	i := strings.Index(header, name)
	if i < 0 {
		return 0, false
	}
	v := header[i+len(name):]
	if j := strings.IndexByte(v, '\r'); j >= 0 {
		v = v[:j]
	}
	secs, err := strconv.Atoi(v)
	if err != nil || secs < 0 {
		return 0, false
	}
	return time.Duration(secs) * time.Second, true
}

// appendCloseEvent appends the event that ends a stream, the stream's
// close frame: "event: close" with the WebSocket close code and reason,
// "data: 1001 server shutting down".
func appendCloseEvent(dst []byte, code int, reason string) []byte {
	dst = append(dst, "event: close\ndata: "...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	if reason != "" {
		dst = append(dst, ' ')
		// A line break would end the data line early.
		for i := range len(reason) {
			if b := reason[i]; b == '\n' || b == '\r' {
				dst = append(dst, ' ')
			} else {
				dst = append(dst, b)
			}
		}
	}
	return append(dst, "\n\n"...)
}

// closeStream ends an event stream: its close event, then the end of the
// response, which an EventSource takes as a cue to reconnect after its
// retry delay.
func (c *Conn) closeStream(code int, reason string) {
	l := c.loop
	l.frame = appendCloseEvent(l.frame[:0], code, reason)
	if c.write(l.frame) {
		c.endWebSocket()
		c.linger()
	}
}

// unadmit undoes admit: the connection no longer counts against MaxConns.
func (c *Conn) unadmit() {
	c.loop.s.wsConns.Add(-1)
	if c.Stream() {
		c.loop.stats.streams.Add(-1)
	}
}
