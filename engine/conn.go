package engine

import (
	"errors"
	"slices"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"

	"github.com/herald-ws/herald/codec"
)

// A connection moves through these states in order.
const (
	stateHandshake uint8 = iota // reading the HTTP request head
	stateOpen                   // WebSocket frames flow both ways
	stateClosing                // final answer sent; discarding input until the peer hangs up
	stateClosed                 // gnet closed the socket; nothing may touch it
)

// What an upgraded connection is for.
const (
	routeEcho    uint8 = iota + 1
	routePush          // PushPath, messages as JSON envelopes
	routePushRaw       // PushPath with format=raw: bare payloads
)

// conn is Herald's state for one TCP connection. Millions of these live at
// once, mostly idle, so every field costs memory times millions: the struct
// fits the 64-byte allocation class, a connection with one channel needs no
// other allocation, and the state of a message that is half received lives
// in a reader only for that time (see loop.partial).
type conn struct {
	gc       gnet.Conn
	loop     *loop
	subs     subList // channels subscribed to, on PushPath
	deadline uint32  // loop clock of the next sweep action: timeout, ping or reap
	slot     int32   // index in loop.pending or loop.conns
	scanned  uint16  // bytes of the request head already searched for its end
	state    uint8
	route    uint8
	pinged   bool // a ping is out and unanswered; the deadline is the pong's
	partial  bool // a message spans callbacks: its reader is in loop.partial
}

// reader holds a message whose frames or payload arrive over several
// callbacks: the decoder's state and the bytes received so far.
type reader struct {
	dec codec.Decoder
	buf *bytebufferpool.ByteBuffer
}

// handler adapts gnet's callbacks to the Server.
type handler struct {
	gnet.BuiltinEventEngine
	s *Server
}

func (h *handler) OnBoot(eng gnet.Engine) gnet.Action {
	h.s.eng = eng
	close(h.s.booted)
	return gnet.None
}

func (h *handler) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	l := h.s.loopFor(gc.EventLoop())
	c := &conn{gc: gc, loop: l, deadline: h.s.clock() + millis(h.s.cfg.HandshakeTimeout)}
	l.track(c)
	l.stats.open.Add(1)
	l.stats.accepted.Add(1)
	gc.SetContext(c)
	// A peer that vanished without a FIN would otherwise pin whatever is
	// queued for it until the kernel's retransmissions give up, which takes
	// many minutes: bound it by the reaper's own horizon.
	_ = unix.SetsockoptInt(gc.Fd(), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT,
		int((h.s.cfg.PingInterval + h.s.cfg.PongTimeout).Milliseconds()))
	return nil, gnet.None
}

func (h *handler) OnClose(gc gnet.Conn, err error) gnet.Action {
	c, ok := gc.Context().(*conn)
	if !ok {
		return gnet.None
	}
	gc.SetContext(nil)
	c.loop.untrack(c)
	c.loop.stats.open.Add(-1)
	if c.state == stateOpen {
		c.loop.s.wsConns.Add(-1)
	}
	c.unsubscribeAll()
	c.releaseReader()
	// A write after this point could reach another client that gets the same
	// file descriptor: drop every way to reach the socket.
	c.gc = nil
	c.state = stateClosed
	return gnet.None
}

func (h *handler) OnTraffic(gc gnet.Conn) gnet.Action {
	c, ok := gc.Context().(*conn)
	if !ok {
		return gnet.Close
	}
	switch c.state {
	case stateHandshake:
		c.readRequest()
	case stateOpen:
		c.alive()
		c.readFrames()
	}
	if c.state == stateClosing {
		_, _ = gc.Discard(gc.InboundBuffered())
	}
	return gnet.None
}

// readRequest waits for a whole HTTP request head, then answers it: an
// upgrade to WebSocket, a plain HTTP answer, or an error.
func (c *conn) readRequest() {
	s := c.loop.s
	buf, _ := c.gc.Peek(-1)
	n := codec.HeadLength(buf, int(c.scanned))
	if n == 0 {
		if len(buf) >= s.cfg.MaxHeadSize {
			c.refuse(refusedTooLarge, errHeadTooLarge)
			return
		}
		c.scanned = uint16(len(buf))
		return
	}
	if n > s.cfg.MaxHeadSize {
		c.refuse(refusedTooLarge, errHeadTooLarge)
		return
	}
	req := &c.loop.request
	if err := codec.ParseRequest(buf[:n], req); err != nil {
		c.refuse(refusedBadRequest, err)
		return
	}
	route := s.route(req.Path)
	if route == 0 {
		if req.IsUpgrade() {
			c.refuse(refusedNotFound, errNoSuchEndpoint)
			return
		}
		c.serveHTTP(req)
		return
	}
	if route == routePush {
		raw, err := s.checkPushQuery(req.RawQuery)
		if err != nil {
			c.refuse(refusedBadRequest, err)
			return
		}
		if raw {
			route = routePushRaw
		}
	}
	out := bytebufferpool.Get()
	defer bytebufferpool.Put(out)
	var err error
	if out.B, err = s.upgrader.Upgrade(out.B, req); err != nil {
		var he *codec.HTTPError
		errors.As(err, &he)
		c.refuse(refusalFor(he.Status), err)
		return
	}
	if reason, err := c.admit(); err != nil {
		c.refuse(reason, err)
		return
	}
	c.route, c.scanned = route, 0
	c.setState(stateOpen)
	c.alive()
	// Subscribe before answering, so that a client that sees its upgrade
	// succeed is subscribed; the query lies in gnet's buffer, so this is
	// also before Discard.
	var refused []error
	if route != routeEcho {
		refused = c.subscribeQuery(req.RawQuery)
	}
	if !c.write(out.B) {
		return
	}
	for _, err := range refused {
		c.replyChannelError(nil, err)
	}
	if c.state != stateOpen {
		return // a reply's write failed and gnet closed the socket
	}
	_, _ = c.gc.Discard(n)
	c.readFrames() // frames the client sent right behind its request
}

// readFrames handles every complete frame buffered, and the buffered part of
// a frame whose payload is still arriving. Unconsumed bytes stay in gnet's
// buffer but do not trigger another callback, so it must not stop early.
func (c *conn) readFrames() {
	max := c.loop.s.cfg.MaxMessageSize
	for c.state == stateOpen {
		rd := c.reader()
		if rd != nil && rd.dec.Remaining() > 0 {
			if !c.readPayload(rd) {
				return
			}
			continue
		}
		buffered := c.gc.InboundBuffered()
		head, _ := c.gc.Peek(min(buffered, codec.MaxHeaderSize))
		h, hn, err := codec.ParseHeader(head)
		if err != nil {
			c.fail(err)
			return
		}
		if hn == 0 {
			return
		}
		if err := codec.CheckClientHeader(h, 0); err != nil {
			c.fail(err)
			return
		}
		total := int64(hn) + h.Length
		if h.OpCode.IsControl() {
			if int64(buffered) < total {
				return
			}
			frame, _ := c.gc.Peek(int(total))
			payload := frame[hn:]
			ws.Cipher(payload, h.Mask, 0)
			c.control(h.OpCode, payload)
			if c.state != stateClosed {
				_, _ = c.gc.Discard(int(total))
			}
			c.checkOutbound()
			continue
		}
		dec := &c.loop.decoder
		if rd != nil {
			dec = &rd.dec
		} else {
			*dec = codec.Decoder{}
		}
		if err := dec.Begin(h, max); err != nil {
			c.fail(err)
			return
		}
		if rd == nil && h.Fin && int64(buffered) >= total {
			// The common case: a whole message in one frame, all buffered.
			// Unmask and use it where it lies in gnet's buffer.
			frame, _ := c.gc.Peek(int(total))
			payload := frame[hn:]
			if err := dec.Payload(payload); err != nil {
				c.fail(err)
				return
			}
			op, err := dec.End()
			if err != nil {
				c.fail(err)
				return
			}
			c.message(op, payload)
			if c.state != stateClosed {
				_, _ = c.gc.Discard(int(total))
			}
			c.checkOutbound()
			continue
		}
		if rd == nil {
			rd = c.newReader(dec)
		}
		_, _ = c.gc.Discard(hn)
		if h.Length == 0 && !c.endFrame(rd) {
			return
		}
	}
}

// readPayload moves the buffered part of the current frame's payload into
// the message buffer, unmasking and validating it on the way, and delivers
// the message when its last byte is in. It reports false when nothing was
// buffered or the connection is no longer open.
func (c *conn) readPayload(rd *reader) bool {
	n := c.gc.InboundBuffered()
	if n == 0 {
		return false
	}
	if int64(n) > rd.dec.Remaining() {
		n = int(rd.dec.Remaining())
	}
	if rd.buf == nil {
		rd.buf = bytebufferpool.Get()
	}
	old := len(rd.buf.B)
	rd.buf.B = slices.Grow(rd.buf.B, n)[:old+n]
	_, _ = c.gc.Read(rd.buf.B[old:])
	if err := rd.dec.Payload(rd.buf.B[old:]); err != nil {
		c.fail(err)
		return false
	}
	if rd.dec.Remaining() > 0 {
		return true
	}
	return c.endFrame(rd)
}

// endFrame is called when the current frame's payload is all in. If the
// frame ends its message, the message is delivered and the reader released.
// It reports whether the connection is still open.
func (c *conn) endFrame(rd *reader) bool {
	op, err := rd.dec.End()
	if err != nil {
		c.fail(err)
		return false
	}
	if op != 0 {
		var payload []byte
		if rd.buf != nil {
			payload = rd.buf.B
		}
		c.message(op, payload)
		c.releaseReader()
		c.checkOutbound()
	}
	return c.state == stateOpen
}

// checkOutbound cuts a client that keeps sending pings or commands but does
// not read the answers: like a subscriber that falls behind, it would grow
// the server's memory without bound. An echo may hold one whole message
// on top of the cap.
func (c *conn) checkOutbound() {
	if c.state != stateOpen {
		return
	}
	limit := c.loop.s.cfg.MaxOutbound
	if c.route == routeEcho {
		limit += int(c.loop.s.cfg.MaxMessageSize)
	}
	if c.gc.OutboundBuffered() > limit {
		c.cutSlowConsumer()
	}
}

// reader returns the connection's half-received message, or nil.
func (c *conn) reader() *reader {
	if !c.partial {
		return nil
	}
	return c.loop.partial[c]
}

// newReader keeps the state of a message that spans callbacks, starting
// from dec.
func (c *conn) newReader(dec *codec.Decoder) *reader {
	rd := c.loop.s.readers.Get().(*reader)
	rd.dec = *dec
	c.loop.partial[c] = rd
	c.partial = true
	return rd
}

func (c *conn) releaseReader() {
	rd := c.reader()
	if rd == nil {
		return
	}
	delete(c.loop.partial, c)
	c.partial = false
	if rd.buf != nil {
		bytebufferpool.Put(rd.buf)
	}
	*rd = reader{}
	c.loop.s.readers.Put(rd)
}

// control answers a ping, ignores a pong and completes a close handshake.
func (c *conn) control(op ws.OpCode, payload []byte) {
	switch op {
	case ws.OpPing:
		c.writeFrame(ws.OpPong, payload)
	case ws.OpClose:
		code, _, err := codec.ParseClose(payload)
		if err != nil {
			c.fail(err)
			return
		}
		if code == 0 {
			code = ws.StatusNormalClosure
		}
		c.close(code, "")
	}
}

// message handles one complete message from the client.
func (c *conn) message(op ws.OpCode, payload []byte) {
	switch c.route {
	case routeEcho:
		c.writeFrame(op, payload)
	case routePush, routePushRaw:
		c.pushMessage(op, payload)
	}
}

// writeFrame sends one unfragmented frame. The header goes in the loop's
// scratch buffer and the payload is written from where it lies.
func (c *conn) writeFrame(op ws.OpCode, payload []byte) bool {
	l := c.loop
	if c.state == stateClosed {
		return false
	}
	l.frame = codec.AppendHeader(l.frame[:0], op, true, len(payload))
	if len(payload) == 0 {
		return c.write(l.frame)
	}
	l.iov = append(l.iov[:0], l.frame, payload)
	_, _ = c.gc.Writev(l.iov)
	clear(l.iov)
	return c.state != stateClosed
}

// write sends b and reports whether the connection survived it: gnet runs
// OnClose inside Write when the socket is gone.
func (c *conn) write(b []byte) bool {
	if c.state == stateClosed {
		return false
	}
	_, _ = c.gc.Write(b)
	return c.state != stateClosed
}

// Refusals the engine makes itself, before or instead of an upgrade.
var (
	errHeadTooLarge   = &codec.HTTPError{Status: 431, Reason: "request header fields too large"}
	errNoSuchEndpoint = &codec.HTTPError{Status: 404, Reason: "no WebSocket endpoint at this path"}
	errDraining       = &codec.HTTPError{Status: 503, Reason: "server is shutting down", Header: "Retry-After: 5\r\n"}
	errConnLimit      = &codec.HTTPError{Status: 503, Reason: "connection limit reached", Header: "Retry-After: 10\r\n"}
	errRateLimit      = &codec.HTTPError{Status: 503, Reason: "too many new connections, retry shortly", Header: "Retry-After: 1\r\n"}
)

// admit applies the server-wide limits to a valid upgrade request and, if
// it may go ahead, counts it as an open WebSocket connection.
func (c *conn) admit() (reason int, err error) {
	s := c.loop.s
	switch {
	case s.draining.Load():
		return refusedDraining, errDraining
	case !c.loop.upgradeToken():
		return refusedRateLimit, errRateLimit
	}
	if s.wsConns.Add(1) > int64(s.cfg.MaxConns) {
		s.wsConns.Add(-1)
		return refusedConnLimit, errConnLimit
	}
	return 0, nil
}

// upgradeToken takes a token from the loop's share of MaxAcceptRate. Each
// loop refills its own bucket, so the limit costs no shared state.
func (l *loop) upgradeToken() bool {
	rate := l.s.cfg.MaxAcceptRate
	if rate <= 0 {
		return true
	}
	perLoop := max(float64(rate)/float64(l.s.cfg.Loops), 1)
	now := time.Now().UnixNano()
	l.tokens = min(perLoop, l.tokens+float64(now-l.tokensAt)*perLoop/1e9)
	l.tokensAt = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// refuse answers a request Herald will not upgrade, and counts why.
func (c *conn) refuse(reason int, err error) {
	c.loop.stats.refused[reason].Add(1)
	c.answer(err)
}

// fail closes the connection because the client broke the protocol.
func (c *conn) fail(err error) {
	var ce *codec.CloseError
	if !errors.As(err, &ce) {
		ce = &codec.CloseError{Code: ws.StatusInternalServerError, Reason: "internal error"}
	}
	c.loop.s.log.Debug("closing connection", "remote", c.gc.RemoteAddr(), "code", int(ce.Code), "reason", ce.Reason)
	c.close(ce.Code, ce.Reason)
}

// close sends a close frame and starts the closing handshake.
func (c *conn) close(code ws.StatusCode, reason string) {
	l := c.loop
	l.frame = codec.AppendClose(l.frame[:0], code, reason)
	if c.write(l.frame) {
		c.linger()
	}
}

// answer sends an HTTP error and closes.
func (c *conn) answer(err error) {
	var he *codec.HTTPError
	if !errors.As(err, &he) {
		he = &codec.HTTPError{Status: 400, Reason: err.Error()}
	}
	out := bytebufferpool.Get()
	out.B = he.AppendTo(out.B)
	c.finish(out)
}

// finish sends a final HTTP answer from a pooled buffer and closes. gnet
// copies whatever it cannot send at once, so the buffer goes back to the
// pool right after the write.
func (c *conn) finish(out *bytebufferpool.ByteBuffer) {
	ok := c.write(out.B)
	bytebufferpool.Put(out)
	if ok {
		c.linger()
	}
}

// linger ends the connection once its final bytes are written. Closing the
// socket while the peer's data is still unread would make the kernel send a
// reset, which can destroy our close frame or HTTP answer in flight before
// the peer reads it. So Herald half-closes instead, discards whatever else
// arrives, and lets the peer hang up first; the sweep closes it after
// CloseTimeout if the peer never does.
func (c *conn) linger() {
	c.releaseReader()
	if c.state == stateOpen {
		c.loop.s.wsConns.Add(-1)
	}
	c.setState(stateClosing)
	c.deadline = c.loop.s.clock() + millis(c.loop.s.cfg.CloseTimeout)
	c.shutdownWhenSent()
}

// shutdownWhenSent half-closes a closing connection once everything queued
// for it is sent; until then the half-close would cut off the queue.
func (c *conn) shutdownWhenSent() {
	if c.gc.OutboundBuffered() == 0 {
		_ = unix.Shutdown(c.gc.Fd(), unix.SHUT_WR)
	}
}
