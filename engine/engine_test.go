package engine_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"
	"github.com/panjf2000/gnet/v2"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/enginetest"
)

// startServer runs a real engine on a free loopback port for the test.
func startServer(t testing.TB, cfg engine.Config) string {
	t.Helper()
	return startEngine(t, cfg).Addr()
}

// startEngine is startServer for tests that read the server's counters.
func startEngine(t testing.TB, cfg engine.Config) *engine.Server {
	t.Helper()
	return enginetest.Start(t, cfg)
}

const upgradeRequest = "GET %s HTTP/1.1\r\nHost: herald.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// rawClient speaks WebSocket over a plain TCP connection, so tests can send
// exactly the bytes they mean, broken ones included.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawClient{t: t, conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
}

// upgrade opens a WebSocket on path, writing the request in pieces of chunk
// bytes (0: all at once) followed by extra bytes.
func (c *rawClient) upgrade(path string, chunk int, extra []byte) {
	c.t.Helper()
	req := append([]byte(strings.Replace(upgradeRequest, "%s", path, 1)), extra...)
	c.writeChunked(req, chunk)
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		c.t.Fatalf("read upgrade response: %v", err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		c.t.Fatalf("upgrade answered %s, accept %q", resp.Status, resp.Header.Get("Sec-WebSocket-Accept"))
	}
}

// request sends a whole HTTP request and reads the answer, body included.
func (c *rawClient) request(req string) *http.Response {
	c.t.Helper()
	c.writeChunked([]byte(req), 0)
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		c.t.Fatalf("read answer: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func (c *rawClient) writeChunked(b []byte, chunk int) {
	c.t.Helper()
	if chunk <= 0 {
		chunk = len(b)
	}
	for len(b) > 0 {
		n := min(chunk, len(b))
		if _, err := c.conn.Write(b[:n]); err != nil {
			c.t.Fatalf("write: %v", err)
		}
		b = b[n:]
	}
}

// clientFrame builds a frame as a client would send it; mask false builds
// the unmasked frame no client may send.
func clientFrame(op ws.OpCode, fin bool, payload []byte, mask bool) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	maskBit := byte(0)
	if mask {
		maskBit = 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		out = append(out, maskBit|byte(n))
	case n <= 0xFFFF:
		out = append(out, maskBit|126, byte(n>>8), byte(n))
	default:
		out = append(out, maskBit|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if !mask {
		return append(out, payload...)
	}
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	out = append(out, key[:]...)
	start := len(out)
	out = append(out, payload...)
	ws.Cipher(out[start:], key, 0)
	return out
}

// readFrame reads one server frame.
func (c *rawClient) readFrame() (ws.Header, []byte, error) {
	h, err := ws.ReadHeader(c.r)
	if err != nil {
		return h, nil, err
	}
	if h.Masked {
		return h, nil, errors.New("server frame is masked")
	}
	p := make([]byte, h.Length)
	_, err = io.ReadFull(c.r, p)
	return h, p, err
}

func (c *rawClient) expectMessage(op ws.OpCode, want []byte) {
	c.t.Helper()
	h, p, err := c.readFrame()
	if err != nil {
		c.t.Fatalf("read frame: %v", err)
	}
	if h.OpCode != op || !h.Fin || !bytes.Equal(p, want) {
		c.t.Fatalf("got frame op=%v fin=%v len=%d, want op=%v fin len=%d", h.OpCode, h.Fin, len(p), op, len(want))
	}
}

// expectClose reads frames until a close frame, checks its code, and then
// checks that the server hangs up.
func (c *rawClient) expectClose(code ws.StatusCode) {
	c.t.Helper()
	for {
		h, p, err := c.readFrame()
		if err != nil {
			c.t.Fatalf("waiting for close %d: %v", code, err)
		}
		if h.OpCode != ws.OpClose {
			continue
		}
		got, _ := ws.ParseCloseFrameData(p)
		if got != code {
			c.t.Fatalf("close code %d (%q), want %d", got, p[min(2, len(p)):], code)
		}
		break
	}
	c.expectEOF()
}

// expectEOF checks that the server closes its side of the connection.
func (c *rawClient) expectEOF() {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := io.Copy(io.Discard, c.r); err != nil || n != 0 {
		c.t.Fatalf("after close: read %d more bytes, err %v; want a clean EOF", n, err)
	}
}

func TestEchoHandshakeOneByteAtATimeWithPipelinedFrame(t *testing.T) {
	addr := startServer(t, engine.Config{Echo: true})
	c := dialRaw(t, addr)
	c.upgrade("/echo", 1, clientFrame(ws.OpText, true, []byte("right behind the request"), true))
	c.expectMessage(ws.OpText, []byte("right behind the request"))
}

func TestEchoFramesOneByteAtATime(t *testing.T) {
	addr := startServer(t, engine.Config{Echo: true})
	c := dialRaw(t, addr)
	c.upgrade("/echo", 0, nil)
	payload := bytes.Repeat([]byte("héllo "), 50) // 350 bytes: a 16-bit length
	var stream []byte
	stream = append(stream, clientFrame(ws.OpText, false, payload[:101], true)...)
	stream = append(stream, clientFrame(ws.OpPing, true, []byte("mid-message"), true)...)
	stream = append(stream, clientFrame(ws.OpContinuation, false, payload[101:202], true)...)
	stream = append(stream, clientFrame(ws.OpContinuation, true, payload[202:], true)...)
	c.writeChunked(stream, 1)
	c.expectMessage(ws.OpPong, []byte("mid-message"))
	c.expectMessage(ws.OpText, payload)
}

func TestEchoLargeBinaryMessages(t *testing.T) {
	addr := startServer(t, engine.Config{Echo: true, MaxMessageSize: 16 << 20})
	c := dialRaw(t, addr)
	c.upgrade("/echo", 0, nil)
	for _, size := range []int{0, 125, 126, 65535, 65536, 1 << 20, 16 << 20} {
		payload := bytes.Repeat([]byte{byte(size), 1, 2, 3, 4, 5, 6}, size/7+1)[:size]
		go c.writeChunked(clientFrame(ws.OpBinary, true, payload, true), 4096)
		c.expectMessage(ws.OpBinary, payload)
	}
}

func TestProtocolViolationsGetTheirCloseCode(t *testing.T) {
	invalidUTF8 := []byte{0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80, 0x65, 0x64}
	tests := []struct {
		name   string
		frames [][]byte
		code   ws.StatusCode
	}{
		{"unmasked frame", [][]byte{clientFrame(ws.OpText, true, []byte("hi"), false)}, ws.StatusProtocolError},
		{"reserved bit", [][]byte{func() []byte { f := clientFrame(ws.OpText, true, []byte("hi"), true); f[0] |= 0x40; return f }()}, ws.StatusProtocolError},
		{"reserved opcode", [][]byte{clientFrame(0x3, true, nil, true)}, ws.StatusProtocolError},
		{"ping over 125 bytes", [][]byte{clientFrame(ws.OpPing, true, make([]byte, 126), true)}, ws.StatusProtocolError},
		{"fragmented ping", [][]byte{clientFrame(ws.OpPing, false, []byte("x"), true)}, ws.StatusProtocolError},
		{"continuation first", [][]byte{clientFrame(ws.OpContinuation, true, []byte("x"), true)}, ws.StatusProtocolError},
		{"text inside fragmented message", [][]byte{
			clientFrame(ws.OpText, false, []byte("a"), true), clientFrame(ws.OpText, true, []byte("b"), true)}, ws.StatusProtocolError},
		{"invalid UTF-8 split across fragments", [][]byte{
			clientFrame(ws.OpText, false, invalidUTF8[:12], true), clientFrame(ws.OpContinuation, true, invalidUTF8[12:], true)}, ws.StatusInvalidFramePayloadData},
		{"text ends inside a code point", [][]byte{clientFrame(ws.OpText, true, []byte{'a', 0xe2, 0x82}, true)}, ws.StatusInvalidFramePayloadData},
		{"close with 1-byte payload", [][]byte{clientFrame(ws.OpClose, true, []byte{0x03}, true)}, ws.StatusProtocolError},
		{"close with reserved code 1005", [][]byte{clientFrame(ws.OpClose, true, []byte{0x03, 0xed}, true)}, ws.StatusProtocolError},
		{"close reason not UTF-8", [][]byte{clientFrame(ws.OpClose, true, []byte{0x03, 0xe8, 0xff}, true)}, ws.StatusInvalidFramePayloadData},
		{"message over the limit", [][]byte{clientFrame(ws.OpBinary, true, make([]byte, 1<<20+1), true)}, ws.StatusMessageTooBig},
	}
	addr := startServer(t, engine.Config{Echo: true})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			c.upgrade("/echo", 0, nil)
			for _, f := range tt.frames {
				c.writeChunked(f, 0)
			}
			c.expectClose(tt.code)
		})
	}
}

// A 16 MiB message against the default 1 MiB limit is refused from its
// header: the server answers 1009 while the client is still sending.
func TestSixteenMiBMessageRefusedWith1009(t *testing.T) {
	addr := startServer(t, engine.Config{Echo: true})
	c := dialRaw(t, addr)
	c.upgrade("/echo", 0, nil)
	go func() {
		_, _ = c.conn.Write(clientFrame(ws.OpBinary, true, make([]byte, 16<<20), true))
	}()
	c.expectClose(ws.StatusMessageTooBig)
}

func TestCloseHandshake(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		want    ws.StatusCode
	}{
		{"echoes the code", []byte{0x03, 0xe8, 'b', 'y', 'e'}, ws.StatusNormalClosure},
		{"echoes an application code", []byte{0x0f, 0xa0}, 4000},
		{"empty close answered with 1000", nil, ws.StatusNormalClosure},
	}
	addr := startServer(t, engine.Config{Echo: true})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			c.upgrade("/echo", 0, nil)
			// A message after the close must be ignored, not echoed.
			c.writeChunked(append(clientFrame(ws.OpClose, true, tt.payload, true),
				clientFrame(ws.OpText, true, []byte("too late"), true)...), 0)
			c.expectClose(tt.want)
		})
	}
}

func TestPlainHTTPOnTheSamePort(t *testing.T) {
	addr := startServer(t, engine.Config{})
	tests := []struct {
		name, request string
		status        int
		header        string
	}{
		{"healthz", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200, ""},
		{"unknown path", "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404, ""},
		{"healthz wrong method", "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, "Allow"},
		{"echo off by default", strings.Replace(upgradeRequest, "%s", "/echo", 1), 404, ""},
		{"malformed request line", "GET\r\n\r\n", 400, ""},
		{"head over the cap", "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 9000) + "\r\n\r\n", 431, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			resp := c.request(tt.request)
			if resp.StatusCode != tt.status || (tt.header != "" && resp.Header.Get(tt.header) == "") {
				t.Fatalf("got %s %v, want %d with %s", resp.Status, resp.Header, tt.status, tt.header)
			}
			c.expectEOF()
		})
	}
}

func TestHandshakeErrorsOverTheSocket(t *testing.T) {
	addr := startServer(t, engine.Config{Echo: true})
	tests := []struct {
		name    string
		request string
		status  int
	}{
		{"version 12", strings.Replace(strings.Replace(upgradeRequest, "%s", "/echo", 1), "Version: 13", "Version: 12", 1), 426},
		{"no key", strings.Replace(strings.Replace(upgradeRequest, "%s", "/echo", 1), "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "", 1), 400},
		{"short key", strings.Replace(strings.Replace(upgradeRequest, "%s", "/echo", 1), "dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=", 1), 400},
		{"no Connection upgrade", strings.Replace(strings.Replace(upgradeRequest, "%s", "/echo", 1), "Connection: Upgrade", "Connection: keep-alive", 1), 400},
		{"POST", strings.Replace(strings.Replace(upgradeRequest, "%s", "/echo", 1), "GET", "POST", 1), 400},
		{"HTTP/1.0", strings.Replace(strings.Replace(upgradeRequest, "%s", "/echo", 1), "HTTP/1.1", "HTTP/1.0", 1), 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := dialRaw(t, addr).request(tt.request)
			if resp.StatusCode != tt.status {
				t.Fatalf("got %s, want %d", resp.Status, tt.status)
			}
			if tt.status == 426 && resp.Header.Get("Sec-WebSocket-Version") != "13" {
				t.Fatalf("426 without Sec-WebSocket-Version: 13: %v", resp.Header)
			}
		})
	}
}

func TestHalfRequestClosedAfterHandshakeTimeout(t *testing.T) {
	addr := startServer(t, engine.Config{HandshakeTimeout: 300 * time.Millisecond})
	c := dialRaw(t, addr)
	c.writeChunked([]byte("GET /echo HTTP/1.1\r\nHost: x\r\n"), 0)
	start := time.Now()
	c.expectEOF()
	if waited := time.Since(start); waited < 250*time.Millisecond {
		t.Fatalf("closed after %v, before the 300ms timeout", waited)
	}
}

// An independent client library sees a conformant server.
func TestEchoWithGorilla(t *testing.T) {
	addr := startServer(t, engine.Config{Echo: true, MaxMessageSize: 4 << 20})
	d := websocket.Dialer{WriteBufferSize: 1024}
	conn, resp, err := d.Dial("ws://"+addr+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for _, tt := range []struct {
		kind    int
		payload []byte
	}{
		{websocket.TextMessage, []byte("hello, herald")},
		{websocket.BinaryMessage, bytes.Repeat([]byte{0, 1, 2, 255}, 1<<18)}, // 1 MiB, written as 1 KiB fragments
		{websocket.TextMessage, []byte(strings.Repeat("κόσμε ", 3000))},
		{websocket.TextMessage, nil},
	} {
		if err := conn.WriteMessage(tt.kind, tt.payload); err != nil {
			t.Fatal(err)
		}
		kind, got, err := conn.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if kind != tt.kind || !bytes.Equal(got, tt.payload) {
			t.Fatalf("echo: kind %d len %d, want kind %d len %d", kind, len(got), tt.kind, len(tt.payload))
		}
	}
	pong := make(chan string, 1)
	conn.SetPongHandler(func(s string) error { pong <- s; return nil })
	if err := conn.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	go func() { _, _, _ = conn.ReadMessage() }()
	select {
	case got := <-pong:
		if got != "are you there" {
			t.Fatalf("pong %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong")
	}
}

// BenchmarkEchoFrame measures one 64-byte text frame through the engine
// over a real loopback socket: read, unmask, validate, echo. The client
// reuses one frame and one buffer, so the allocations reported are the
// engine's: zero per frame.
func BenchmarkEchoFrame(b *testing.B) {
	addr := startServer(b, engine.Config{Echo: true})
	c := dialRaw(b, addr)
	c.upgrade("/echo", 0, nil)
	payload := bytes.Repeat([]byte("x"), 64)
	frame := clientFrame(ws.OpText, true, payload, true)
	echo := make([]byte, 2+len(payload))
	_ = c.conn.SetDeadline(time.Time{})
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	for range b.N {
		if _, err := c.conn.Write(frame); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c.r, echo); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if echo[0] != 0x81 || !bytes.Equal(echo[2:], payload) {
		b.Fatalf("echo %q", echo)
	}
}

// RFC 6455 section 7.1.1: once the close handshake is complete the server
// closes the TCP connection, whatever the client does with its socket.
// Only the wait for the peer's close frame is bounded by CloseTimeout.
func TestCloseHandshakeEndsTheConnectionAtOnce(t *testing.T) {
	srv := startEngine(t, engine.Config{Echo: true, CloseTimeout: time.Minute})
	gone := func(t *testing.T) {
		t.Helper()
		// Far below the minute of CloseTimeout.
		enginetest.WaitFor(t, 5*time.Second, "the server to drop the socket", func() bool { return srv.Stats().Open == 0 })
	}
	t.Run("server closes, client echoes and keeps its socket", func(t *testing.T) {
		c := dialRaw(t, srv.Addr())
		c.upgrade("/echo", 0, nil)
		c.writeChunked(clientFrame(ws.OpText, true, []byte("hi"), false), 0) // unmasked: 1002
		h, p, err := c.readFrame()
		if err != nil || h.OpCode != ws.OpClose {
			t.Fatalf("want a close frame, got %v %v", h.OpCode, err)
		}
		// Data in flight before the echo is dropped; the echo ends it.
		c.writeChunked(clientFrame(ws.OpText, true, make([]byte, 70_000), true), 0)
		time.Sleep(50 * time.Millisecond)
		if srv.Stats().Open != 1 {
			t.Fatal("closed before the peer's close frame")
		}
		c.writeChunked(clientFrame(ws.OpClose, true, p[:2], true), 0)
		gone(t)
	})
	t.Run("client closes and keeps its socket", func(t *testing.T) {
		c := dialRaw(t, srv.Addr())
		c.upgrade("/echo", 0, nil)
		c.writeChunked(clientFrame(ws.OpClose, true, []byte{0x03, 0xe8}, true), 0)
		c.expectClose(ws.StatusNormalClosure)
		gone(t)
	})
	t.Run("client never answers: CloseTimeout", func(t *testing.T) {
		srv := startEngine(t, engine.Config{Echo: true, CloseTimeout: 300 * time.Millisecond})
		c := dialRaw(t, srv.Addr())
		c.upgrade("/echo", 0, nil)
		c.writeChunked(clientFrame(ws.OpText, true, []byte("hi"), false), 0)
		start := time.Now()
		c.expectClose(ws.StatusProtocolError)
		enginetest.WaitFor(t, 5*time.Second, "the socket to be closed", func() bool { return srv.Stats().Open == 0 })
		if waited := time.Since(start); waited < 250*time.Millisecond {
			t.Fatalf("closed after %v, before the peer had CloseTimeout to answer", waited)
		}
	})
}

// laterEndpoint holds every upgrade until the test accepts or refuses it
// from another goroutine, through the connection's loop.
type laterEndpoint struct {
	held chan *engine.Conn
}

func (e laterEndpoint) Upgrade(c *engine.Conn, _ *codec.Request) error {
	e.held <- c
	return engine.ErrAcceptLater
}
func (laterEndpoint) Message(c *engine.Conn, op ws.OpCode, p []byte) { c.SendFrame(op, p) }
func (laterEndpoint) Closed(*engine.Conn)                            {}

func TestEndpointAcceptsLater(t *testing.T) {
	ep := laterEndpoint{held: make(chan *engine.Conn, 4)}
	addr := startServer(t, engine.Config{
		Endpoints:        map[string]engine.Endpoint{"/later": ep},
		HandshakeTimeout: 500 * time.Millisecond,
	})
	run := func(c *engine.Conn, f func()) {
		if err := c.Loop().Execute(gnet.RunnableFunc(func(context.Context) error { f(); return nil })); err != nil {
			t.Fatal(err)
		}
	}

	// Accepted: the 101 comes then, and a frame sent right behind the
	// request waited for it.
	c := dialRaw(t, addr)
	c.writeChunked(append([]byte(strings.Replace(upgradeRequest, "%s", "/later", 1)), clientFrame(ws.OpText, true, []byte("early"), true)...), 0)
	conn := <-ep.held
	_ = c.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := c.r.Peek(1); err == nil {
		t.Fatal("answered before Accept")
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	run(conn, conn.Accept)
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade answered %v, %v", resp, err)
	}
	c.expectMessage(ws.OpText, []byte("early"))

	// Refused: the endpoint's error is the answer.
	c = dialRaw(t, addr)
	conn2 := make(chan struct{})
	go func() {
		conn := <-ep.held
		run(conn, func() { conn.Refuse(&codec.HTTPError{Status: 409, Reason: "no"}) })
		close(conn2)
	}()
	if resp := c.request(strings.Replace(upgradeRequest, "%s", "/later", 1)); resp.StatusCode != 409 {
		t.Fatalf("refused upgrade answered %d", resp.StatusCode)
	}
	<-conn2

	// Neither: the engine answers 503 after the handshake timeout.
	c = dialRaw(t, addr)
	go func() { <-ep.held }()
	if resp := c.request(strings.Replace(upgradeRequest, "%s", "/later", 1)); resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("upgrade never accepted answered %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// CheckUpgrade sees the request's headers and query before any endpoint,
// and its error is the answer.
func TestCheckUpgradeSeesTheRequest(t *testing.T) {
	addr := startServer(t, engine.Config{Echo: true, CheckUpgrade: func(req *codec.Request) error {
		if string(req.RawQuery) == "token=good" && strings.Contains(string(req.Header("X-Test")), "yes") {
			return nil
		}
		return &codec.HTTPError{Status: 401, Reason: "who are you"}
	}})
	req := func(query, header string) string {
		return strings.Replace(strings.Replace(upgradeRequest, "%s", "/echo?"+query, 1), "\r\n\r\n", "\r\n"+header+"\r\n\r\n", 1)
	}
	if resp := dialRaw(t, addr).request(req("token=bad", "X-Test: yes")); resp.StatusCode != 401 {
		t.Fatalf("bad token answered %d, want 401", resp.StatusCode)
	}
	if resp := dialRaw(t, addr).request(req("token=good", "X-Test: yes")); resp.StatusCode != 101 {
		t.Fatalf("good token answered %d, want 101", resp.StatusCode)
	}
}

// greeter greets every socket as it opens, and counts its ticks per loop.
type greeter struct {
	ticks *[engine.MaxLoops]atomic.Int64
}

func (greeter) Upgrade(*engine.Conn, *codec.Request) error     { return nil }
func (greeter) Message(c *engine.Conn, op ws.OpCode, p []byte) { c.SendFrame(op, p) }
func (greeter) Closed(*engine.Conn)                            {}
func (greeter) Opened(c *engine.Conn)                          { c.SendFrame(ws.OpText, []byte("hello")) }
func (g greeter) Tick(l *engine.Loop)                          { g.ticks[l.Index()].Add(1) }

// An Opener's first frame comes right after the 101, before the echo of a
// frame the client sent right behind its request; a Ticker ticks on the
// loops (those with a connection) without a timer of its own.
func TestOpenerGreetsFirstAndTickerTicks(t *testing.T) {
	ticks := new([engine.MaxLoops]atomic.Int64)
	addr := startServer(t, engine.Config{
		Endpoints: map[string]engine.Endpoint{"/greet": greeter{ticks}},
		Loops:     2,
	})
	c := dialRaw(t, addr)
	c.writeChunked(append([]byte(strings.Replace(upgradeRequest, "%s", "/greet", 1)), clientFrame(ws.OpText, true, []byte("early"), true)...), 0)
	if resp, err := http.ReadResponse(c.r, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade answered %v, %v", resp, err)
	}
	c.expectMessage(ws.OpText, []byte("hello"))
	c.expectMessage(ws.OpText, []byte("early"))
	enginetest.WaitFor(t, 10*time.Second, "the connection's loop to tick", func() bool {
		return ticks[0].Load() > 1 || ticks[1].Load() > 1
	})
}
