package engine

import (
	"errors"
	"net"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/codec/deflate"
)

// A connection moves through these states in order; stateAccepting is
// skipped when its endpoint accepts at once.
const (
	stateHandshake uint8 = iota // reading the HTTP request head
	stateAccepting              // upgrade valid, waiting for the endpoint to accept it
	stateOpen                   // WebSocket frames flow both ways
	stateClosing                // final frame or answer sent; waiting for the peer
	stateClosed                 // gnet closed the socket; nothing may touch it
)

// Conn is Herald's state for one TCP connection. Millions of these live at
// once, mostly idle, so every field costs memory times millions: the struct
// fits the 64-byte allocation class, and the state of a message that is
// half received lives in a reader only for that time (see Loop.partial).
//
// Its methods are for the connection's Endpoint and must be called on the
// connection's loop: in an Endpoint callback, or in a task run with
// Loop.Execute.
type Conn struct {
	gc   gnet.Conn
	loop *Loop
	// Session is the endpoint's own state for the connection, and Tag a
	// number it may keep beside it without an allocation (say, the
	// connection's position in a list of its own); the engine never reads
	// either.
	Session  any
	Tag      uint32
	deadline uint32 // loop clock of the next sweep action: timeout, ping or reap
	slot     int32  // index in Loop.pending or Loop.conns
	scanned  uint16 // bytes of the request head already searched for its end
	state    uint8
	route    uint8 // 1 + index in Server.endpoints, once an endpoint has the connection
	pinged   bool  // a ping is out and unanswered; the deadline is the pong's
	partial  bool  // a message spans callbacks: its reader is in Loop.partial
	// awaitClose: Herald sent a close frame and waits for the peer's, at
	// which the handshake is over and the socket is closed at once.
	awaitClose bool
	// ext holds what the handshake agreed, in one byte so that the struct
	// keeps its 64: the low nibble is the permessage-deflate window (8 to
	// 15 bits) Herald may compress with for this socket, 0 when not
	// negotiated; the high one is 1 + the index in Config.Subprotocols of
	// the subprotocol selected, 0 for none. Nothing else of the extension
	// is kept per connection: without context takeover, compressors and
	// inflaters are the loop's.
	ext uint8
	// opened is when the WebSocket opened, in tenths of a second since the
	// server was made (see Age): 32 bits last 13 years.
	opened uint32
}

// deflate is the agreed permessage-deflate window, 0 for none.
func (c *Conn) deflate() uint8 { return c.ext & 0x0f }

// proto is 1 + the index of the selected subprotocol, 0 for none.
func (c *Conn) proto() uint8 { return c.ext >> 4 }

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
	c := &Conn{gc: gc, loop: l, deadline: h.s.clock() + millis(h.s.cfg.HandshakeTimeout)}
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
	c, ok := gc.Context().(*Conn)
	if !ok {
		return gnet.None
	}
	gc.SetContext(nil)
	l := c.loop
	l.untrack(c)
	l.stats.open.Add(-1)
	if c.upgraded() {
		c.unadmit()
	}
	c.dropAccept()
	c.releaseReader()
	delete(l.skipping, c)
	// A write after this point could reach another client that gets the same
	// file descriptor: drop every way to reach the socket.
	c.gc = nil
	c.state = stateClosed
	if c.route != 0 {
		l.s.endpoints[c.route-1].Closed(c)
	}
	return gnet.None
}

func (h *handler) OnTraffic(gc gnet.Conn) gnet.Action {
	c, ok := gc.Context().(*Conn)
	if !ok {
		return gnet.Close
	}
	switch c.state {
	case stateHandshake:
		c.readRequest()
	case stateAccepting:
		// Frames sent ahead of the 101 wait in gnet's buffer until Accept
		// reads them; a client may not pile up more than one message.
		if int64(gc.InboundBuffered()) > c.loop.s.cfg.MaxMessageSize+codec.MaxHeaderSize {
			return gnet.Close
		}
	case stateOpen:
		if c.Stream() {
			c.discardInbound()
			break
		}
		c.alive()
		c.readFrames()
	}
	if c.state == stateClosing {
		if c.awaitClose {
			return c.readUntilClose()
		}
		_, _ = gc.Discard(gc.InboundBuffered())
	}
	return gnet.None
}

// upgraded reports whether the connection counts against MaxConns: from
// admission to the end of the WebSocket.
func (c *Conn) upgraded() bool { return c.state == stateAccepting || c.state == stateOpen }

// readRequest waits for a whole HTTP request head, then answers it: an
// upgrade to WebSocket, a plain HTTP answer, or an error.
func (c *Conn) readRequest() {
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
	route := s.paths[string(req.Path)]
	if route == 0 {
		if req.IsUpgrade() {
			c.refuse(refusedNotFound, errNoSuchEndpoint)
			return
		}
		c.serveHTTP(req)
		return
	}
	if s.streams[route-1] {
		c.readStream(req, n, route)
		return
	}
	out := bytebufferpool.Get()
	var err error
	var agreed codec.Agreed
	if out.B, agreed, err = s.upgrader.Answer(out.B, req); err == nil && s.cfg.CheckUpgrade != nil {
		err = s.cfg.CheckUpgrade(req)
	}
	if err != nil {
		bytebufferpool.Put(out)
		c.refuse(refusalOf(err), err)
		return
	}
	if reason, err := c.admit(); err != nil {
		bytebufferpool.Put(out)
		c.refuse(reason, err)
		return
	}
	c.scanned = 0
	c.ext = agreed.Deflate.WindowBits&0x0f | s.protocolIndex(agreed.Protocol)<<4
	c.setState(stateAccepting)
	c.deadline = s.clock() + millis(s.cfg.HandshakeTimeout)
	c.route = route
	err = s.endpoints[route-1].Upgrade(c, req)
	// The request's bytes end here; frames sent right behind it stay.
	_, _ = c.gc.Discard(n)
	switch {
	case err == nil:
		c.open(out)
	case errors.Is(err, ErrAcceptLater):
		c.loop.accepting[c] = out
	default:
		bytebufferpool.Put(out)
		c.route = 0 // refused: the endpoint keeps nothing
		c.Refuse(err)
	}
}

// Accept answers 101 to an upgrade its endpoint held with ErrAcceptLater,
// and starts reading the client's frames. It does nothing on a connection
// that is not waiting for it.
func (c *Conn) Accept() {
	if c.state != stateAccepting {
		return
	}
	out := c.loop.accepting[c]
	delete(c.loop.accepting, c)
	c.open(out)
}

// open sends the 101 in out, returns out to its pool, and starts reading
// the client's frames.
func (c *Conn) open(out *bytebufferpool.ByteBuffer) {
	c.setState(stateOpen)
	c.opened = c.loop.s.tenths()
	c.alive()
	ok := c.write(out.B)
	bytebufferpool.Put(out)
	if !ok {
		return
	}
	if c.Stream() {
		c.loop.stats.streamsAccepted.Add(1)
	}
	if o, isOpener := c.loop.s.endpoints[c.route-1].(Opener); isOpener {
		if o.Opened(c); c.state != stateOpen {
			return // the endpoint closed it
		}
	}
	if c.Stream() {
		c.discardInbound() // what came while the endpoint held the answer
		return             // a stream reads nothing from its client
	}
	c.readFrames() // frames the client sent right behind its request
}

// Refuse answers an upgrade that is waiting for Accept with an HTTP error
// instead, and closes: a *codec.HTTPError gives the status, anything else
// is a 400. It does nothing on a connection that is not waiting.
func (c *Conn) Refuse(err error) {
	if c.state != stateAccepting {
		return
	}
	c.dropAccept()
	c.unadmit()
	c.setState(stateHandshake) // not upgraded: linger as an HTTP answer
	if c.Stream() {
		c.refuseStream(refusalOf(err), err)
		return
	}
	c.refuse(refusalOf(err), err)
}

// dropAccept forgets the held 101, if any.
func (c *Conn) dropAccept() {
	if out, ok := c.loop.accepting[c]; ok {
		delete(c.loop.accepting, c)
		bytebufferpool.Put(out)
	}
}

// refusalOf classifies an upgrade error for the counters.
func refusalOf(err error) int {
	var he *codec.HTTPError
	if errors.As(err, &he) {
		return refusalFor(he.Status)
	}
	return refusedBadRequest
}

// readFrames handles every complete frame buffered, and the buffered part of
// a frame whose payload is still arriving. Unconsumed bytes stay in gnet's
// buffer but do not trigger another callback, so it must not stop early.
func (c *Conn) readFrames() {
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
		// RSV1 marks a compressed message: allowed on the first frame of a
		// data message once permessage-deflate is agreed, and nowhere else
		// (RFC 7692 section 6.1): not on control frames, not on
		// continuations.
		var allowedRsv byte
		if c.deflate() != 0 && (h.OpCode == ws.OpText || h.OpCode == ws.OpBinary) {
			allowedRsv = codec.RSV1
		}
		if err := codec.CheckClientHeader(h, allowedRsv); err != nil {
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
			compressed := dec.Compressed()
			op, err := dec.End()
			if err != nil {
				c.fail(err)
				return
			}
			if compressed {
				c.inflate(op, payload)
			} else {
				c.message(op, payload)
			}
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

// readUntilClose reads what a peer sends after Herald's close frame: data
// frames are dropped as they stream in, and the peer's close frame
// completes the handshake, at which point the socket is closed at once
// (RFC 6455 section 7.1.1: the server closes the TCP connection first).
// Only the wait for that frame is bounded by CloseTimeout.
func (c *Conn) readUntilClose() gnet.Action {
	l := c.loop
	for {
		buffered := c.gc.InboundBuffered()
		if skip := l.skipping[c]; skip > 0 {
			n := int(min(int64(buffered), skip))
			_, _ = c.gc.Discard(n)
			if skip -= int64(n); skip > 0 {
				l.skipping[c] = skip
				return gnet.None
			}
			delete(l.skipping, c)
			continue
		}
		head, _ := c.gc.Peek(min(buffered, codec.MaxHeaderSize))
		h, hn, err := codec.ParseHeader(head)
		switch {
		case err != nil:
			return gnet.Close
		case hn == 0:
			return gnet.None
		case h.OpCode == ws.OpClose:
			return gnet.Close
		}
		_, _ = c.gc.Discard(hn)
		if h.Length > 0 {
			l.skipping[c] = h.Length
		}
	}
}

// readPayload moves the buffered part of the current frame's payload into
// the message buffer, unmasking and validating it on the way, and delivers
// the message when its last byte is in. It reports false when nothing was
// buffered or the connection is no longer open.
func (c *Conn) readPayload(rd *reader) bool {
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
func (c *Conn) endFrame(rd *reader) bool {
	compressed := rd.dec.Compressed()
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
		if compressed {
			c.inflate(op, payload)
		} else {
			c.message(op, payload)
		}
		c.releaseReader()
		c.checkOutbound()
	}
	return c.state == stateOpen
}

// checkOutbound cuts a client that keeps sending pings or commands but does
// not read the answers: like a subscriber that falls behind, it would grow
// the server's memory without bound. An echo may hold one whole message
// on top of the cap.
func (c *Conn) checkOutbound() {
	if c.state != stateOpen {
		return
	}
	limit := c.loop.s.cfg.MaxOutbound
	if _, isEcho := c.loop.s.endpoints[c.route-1].(echo); isEcho {
		limit += int(c.loop.s.cfg.MaxMessageSize)
	}
	if c.gc.OutboundBuffered() > limit {
		c.cutSlowConsumer()
	}
}

// reader returns the connection's half-received message, or nil.
func (c *Conn) reader() *reader {
	if !c.partial {
		return nil
	}
	return c.loop.partial[c]
}

// newReader keeps the state of a message that spans callbacks, starting
// from dec.
func (c *Conn) newReader(dec *codec.Decoder) *reader {
	rd := c.loop.s.readers.Get().(*reader)
	rd.dec = *dec
	c.loop.partial[c] = rd
	c.partial = true
	return rd
}

func (c *Conn) releaseReader() {
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

// control answers a ping, ignores a pong and completes a close handshake
// the peer started: Herald answers with its own close frame, and since
// nothing more may follow on either side, closes the socket once that
// frame is written.
func (c *Conn) control(op ws.OpCode, payload []byte) {
	switch op {
	case ws.OpPing:
		c.SendFrame(ws.OpPong, payload)
	case ws.OpClose:
		code, _, err := codec.ParseClose(payload)
		if err != nil {
			c.fail(err)
			return
		}
		if code == 0 {
			code = ws.StatusNormalClosure
		}
		l := c.loop
		l.frame = codec.AppendClose(l.frame[:0], code, "")
		if c.write(l.frame) {
			c.endWebSocket()
			// Asynchronous, so that no caller up the stack meets a released
			// socket; gnet writes what is still queued before closing.
			_ = c.gc.Close()
		}
	}
}

// inflate hands a compressed message to the endpoint once inflated with
// the loop's inflater, into a pooled buffer given back at once: nothing of
// it stays with the connection. MaxMessageSize bounds the inflated size,
// and inflating stops one byte past it (1009); data that does not inflate
// is 1007, and so is inflated text that is not UTF-8.
func (c *Conn) inflate(op ws.OpCode, z []byte) {
	l := c.loop
	if l.inflater == nil {
		l.inflater = deflate.NewInflater()
	}
	buf := bytebufferpool.Get()
	out, err := l.inflater.Inflate(buf.B[:0], z, l.s.cfg.MaxMessageSize)
	if err == nil && op == ws.OpText && !utf8.Valid(out) {
		err = codec.ErrInvalidUTF8
	}
	if err == nil {
		l.stats.inflated.Add(1)
		c.message(op, out)
	}
	buf.B = out[:0]
	bytebufferpool.Put(buf)
	if err != nil {
		c.fail(err)
	}
}

// message hands one complete message from the client to its endpoint.
func (c *Conn) message(op ws.OpCode, payload []byte) {
	c.loop.s.endpoints[c.route-1].Message(c, op, payload)
}

// Send writes b, one or more whole frames the caller encoded, and reports
// whether the connection is still open. A connection whose unsent data
// passes Config.MaxOutbound is closed with 1008 instead of buffering more.
func (c *Conn) Send(b []byte) bool {
	if c.state != stateOpen {
		return false
	}
	if !c.write(b) {
		return false
	}
	if c.gc.OutboundBuffered() > c.loop.s.cfg.MaxOutbound {
		c.cutSlowConsumer()
	}
	return c.state == stateOpen
}

// SendFrame writes one unfragmented frame and reports whether the
// connection is still open. The header goes in the loop's scratch buffer
// and the payload is written from where it lies. An event stream has no
// frames: there it writes nothing.
func (c *Conn) SendFrame(op ws.OpCode, payload []byte) bool {
	if c.state != stateOpen || c.Stream() {
		return c.state == stateOpen
	}
	return c.writeFrame(op, payload)
}

// SendMessage writes payload as one message, compressed with the loop's
// compressor when the connection negotiated permessage-deflate, plain
// otherwise, and reports whether the connection is still open. It
// compresses for this socket alone: a message that goes to many sockets is
// better compressed once (a deflate.Compressor) and sent with Send to every
// socket whose Deflate is true.
func (c *Conn) SendMessage(op ws.OpCode, payload []byte) bool {
	if c.state != stateOpen || c.Stream() {
		return c.state == stateOpen // an event stream carries no frames
	}
	if c.deflate() == 0 {
		return c.writeFrame(op, payload)
	}
	l := c.loop
	l.frame = l.compressor(c.deflate()).AppendFrame(l.frame[:0], op, payload)
	ok := c.write(l.frame)
	if cap(l.frame) > 64<<10 {
		l.frame = make([]byte, 0, 256) // a large echo need not stay with the loop
	}
	return ok
}

// Deflate reports whether the connection negotiated permessage-deflate
// with the full 32 KiB window, so that a frame compressed once with a
// deflate.Compressor of 15 window bits may be sent to it as it is. A client
// that asked for a smaller window gets plain frames from such senders,
// which RFC 7692 allows (compression is per message).
func (c *Conn) Deflate() bool { return c.deflate() == 15 }

// Subprotocol is the subprotocol the upgrade selected, from
// Config.Subprotocols, or "" for none.
func (c *Conn) Subprotocol() string {
	if c.proto() == 0 {
		return ""
	}
	return c.loop.s.cfg.Subprotocols[c.proto()-1]
}

// Close sends a close frame with code and reason and starts the closing
// handshake; nothing sent afterwards is written. An event stream gets an
// "event: close" with code and reason instead, and its response ends.
func (c *Conn) Close(code ws.StatusCode, reason string) {
	if c.state == stateOpen {
		c.close(code, reason)
	}
}

// Open reports whether the connection is an open WebSocket that Send can
// write to.
func (c *Conn) Open() bool { return c.state == stateOpen }

// Loop is the event loop that owns the connection.
func (c *Conn) Loop() *Loop { return c.loop }

// RemoteAddr is the peer's address, for logs; nil once the connection is
// closed.
func (c *Conn) RemoteAddr() net.Addr {
	if c.gc == nil {
		return nil
	}
	return c.gc.RemoteAddr()
}

// writeFrame sends one unfragmented frame.
func (c *Conn) writeFrame(op ws.OpCode, payload []byte) bool {
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
func (c *Conn) write(b []byte) bool {
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
	errAcceptTimeout  = &codec.HTTPError{Status: 503, Reason: "upgrade not ready in time, retry shortly", Header: "Retry-After: 5\r\n"}
)

// admit applies the server-wide limits to a valid upgrade request and, if
// it may go ahead, counts it as an open WebSocket connection.
func (c *Conn) admit() (reason int, err error) {
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
func (l *Loop) upgradeToken() bool {
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
func (c *Conn) refuse(reason int, err error) {
	c.loop.stats.refused[reason].Add(1)
	c.answer(err)
}

// fail closes the connection because the client broke the protocol.
func (c *Conn) fail(err error) {
	var ce *codec.CloseError
	if !errors.As(err, &ce) {
		ce = &codec.CloseError{Code: ws.StatusInternalServerError, Reason: "internal error"}
	}
	c.loop.s.log.Debug("closing connection", "remote", c.gc.RemoteAddr(), "code", int(ce.Code), "reason", ce.Reason)
	c.close(ce.Code, ce.Reason)
}

// close sends a close frame and waits for the peer's.
func (c *Conn) close(code ws.StatusCode, reason string) {
	if c.Stream() {
		c.closeStream(int(code), reason)
		return
	}
	l := c.loop
	l.frame = codec.AppendClose(l.frame[:0], code, reason)
	if c.write(l.frame) {
		c.endWebSocket()
		c.awaitClose = true
		c.linger()
	}
}

// endWebSocket marks the end of the WebSocket: the connection no longer
// counts against MaxConns and nothing more is sent on it.
func (c *Conn) endWebSocket() {
	if c.upgraded() {
		c.unadmit()
	}
	c.releaseReader()
	c.setState(stateClosing)
}

// answer sends an HTTP error and closes.
func (c *Conn) answer(err error) {
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
func (c *Conn) finish(out *bytebufferpool.ByteBuffer) {
	ok := c.write(out.B)
	bytebufferpool.Put(out)
	if ok {
		c.endWebSocket()
		c.linger()
	}
}

// linger ends the connection once its final bytes are written. Closing the
// socket while the peer's data is still unread would make the kernel send a
// reset, which can destroy our close frame or HTTP answer in flight before
// the peer reads it. So Herald half-closes instead and lets the peer answer
// or hang up first; the sweep closes it after CloseTimeout if it never
// does.
func (c *Conn) linger() {
	c.deadline = c.loop.s.clock() + millis(c.loop.s.cfg.CloseTimeout)
	c.shutdownWhenSent()
}

// shutdownWhenSent half-closes a closing connection once everything queued
// for it is sent; until then the half-close would cut off the queue.
func (c *Conn) shutdownWhenSent() {
	if c.gc.OutboundBuffered() == 0 {
		_ = unix.Shutdown(c.gc.Fd(), unix.SHUT_WR)
	}
}

// cutSlowConsumer closes a connection whose unsent data passed the
// outbound cap: it is not reading, and more data would let one client grow
// the server's memory without bound. Nothing is added after the close
// frame; a client that was only briefly slow still drains what it was sent
// and learns why, and one that stays stuck is closed by the sweep.
func (c *Conn) cutSlowConsumer() {
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
