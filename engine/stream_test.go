package engine_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/enginetest"
)

// streamer is an event-stream endpoint: it greets each stream with an
// event naming its query, refuses ?refuse=N with that status, holds
// ?later=1 until the test accepts it, and floods ?flood=1 until it is cut.
type streamer struct {
	mu     sync.Mutex
	later  []*engine.Conn
	open   map[*engine.Conn]bool
	closed int
}

func newStreamer() *streamer { return &streamer{open: make(map[*engine.Conn]bool)} }

func (s *streamer) Upgrade(c *engine.Conn, req *codec.Request) error {
	q := string(req.RawQuery)
	switch {
	case strings.HasPrefix(q, "refuse=401"):
		return &codec.HTTPError{Status: 401, Reason: "token required"}
	case strings.HasPrefix(q, "refuse=503"):
		return &codec.HTTPError{Status: 503, Reason: "not ready", Header: "Retry-After: 3\r\n"}
	case strings.HasPrefix(q, "later=1"):
		s.mu.Lock()
		s.later = append(s.later, c)
		s.mu.Unlock()
		c.Session = q
		return engine.ErrAcceptLater
	}
	c.Session = q
	return nil
}

func (s *streamer) Opened(c *engine.Conn) {
	s.mu.Lock()
	s.open[c] = true
	s.mu.Unlock()
	q := c.Session.(string)
	// SendFrame writes nothing on a stream: only Send's events arrive.
	c.SendFrame(ws.OpText, []byte("not an event"))
	c.Send([]byte("id: 1\ndata: " + q + "\n\n"))
	if strings.HasPrefix(q, "flood=1") {
		chunk := []byte("data: " + strings.Repeat("x", 60<<10) + "\n\n")
		for c.Send(chunk) {
		}
	}
}

func (s *streamer) Message(c *engine.Conn, _ ws.OpCode, _ []byte) {
	c.Send([]byte("data: a stream got a message\n\n"))
}

func (s *streamer) Closed(c *engine.Conn) {
	s.mu.Lock()
	delete(s.open, c)
	s.closed++
	s.mu.Unlock()
}

func (s *streamer) openCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

// An event stream is a plain GET answered 200 text/event-stream with no
// buffering headers and a retry line; what the endpoint Sends are its
// events, and bytes the client sends are dropped.
func TestStreamServesEvents(t *testing.T) {
	srv := startEngine(t, engine.Config{
		Streams:     map[string]engine.Endpoint{"/sse": newStreamer()},
		StreamRetry: 1500 * time.Millisecond,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := enginetest.OpenStream(t, ctx, "http://"+srv.Addr()+"/sse?hello=1", http.Header{"Origin": {"http://page.test"}})
	want := map[string]string{
		"Content-Type":                "text/event-stream",
		"Cache-Control":               "no-cache",
		"X-Accel-Buffering":           "no",
		"Access-Control-Allow-Origin": "http://page.test",
	}
	if st.Resp.StatusCode != 200 {
		t.Fatalf("status %d", st.Resp.StatusCode)
	}
	for k, v := range want {
		if got := st.Resp.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	if st.Resp.ContentLength != -1 || len(st.Resp.TransferEncoding) != 0 {
		t.Errorf("body framed: length %d, transfer encoding %v", st.Resp.ContentLength, st.Resp.TransferEncoding)
	}
	first, err := st.NextItem()
	if err != nil || first.Retry != 1500 {
		t.Fatalf("first block %+v, %v: want retry: 1500", first, err)
	}
	ev := st.NextWithin(t, 10*time.Second)
	if ev.Data != "hello=1" || ev.ID != "1" || ev.Event != "" {
		t.Fatalf("first event %+v", ev)
	}
	if got := srv.Stats(); got.Streams != 1 || got.StreamsAccepted != 1 || got.Upgraded != 1 {
		t.Fatalf("stats %+v: want one stream, counted as a connection", got)
	}
}

// Refusals are an HTTP status before any body, except those a retry cures
// (503): an EventSource gives up for good on anything but a 200, so those
// are a 200 stream with the retry delay and a close event, which ends.
func TestStreamRefusals(t *testing.T) {
	srv := startEngine(t, engine.Config{
		Streams:     map[string]engine.Endpoint{"/sse": newStreamer()},
		CheckOrigin: func(origin []byte) bool { return string(origin) == "http://good.test" },
		CheckUpgrade: func(req *codec.Request) error {
			if strings.Contains(string(req.RawQuery), "check=no") {
				return &codec.HTTPError{Status: 403, Reason: "not yours"}
			}
			return nil
		},
	})
	addr := srv.Addr()
	for _, tc := range []struct {
		name, request string
		status        int
		retry         int // for a 200: the retry line's delay
		close         string
	}{
		{"post", "POST /sse HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", 405, 0, ""},
		{"websocket upgrade", strings.Replace(upgradeRequest, "%s", "/sse", 1), 400, 0, ""},
		{"origin refused", "GET /sse HTTP/1.1\r\nHost: h\r\nOrigin: http://evil.test\r\n\r\n", 403, 0, ""},
		{"check upgrade", "GET /sse?check=no HTTP/1.1\r\nHost: h\r\n\r\n", 403, 0, ""},
		{"endpoint 401", "GET /sse?refuse=401 HTTP/1.1\r\nHost: h\r\n\r\n", 401, 0, ""},
		{"endpoint 503", "GET /sse?refuse=503 HTTP/1.1\r\nHost: h\r\n\r\n", 200, 3000, "1013 not ready"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			c.writeChunked([]byte(tc.request), 0)
			resp, err := http.ReadResponse(c.r, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("answered %d, want %d", resp.StatusCode, tc.status)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.status != 200 {
				if resp.Header.Get("Content-Type") == "text/event-stream" {
					t.Fatalf("a refusal with an event-stream type")
				}
				return
			}
			want := "retry: " + strconv.Itoa(tc.retry) + "\n\nevent: close\ndata: " + tc.close + "\n\n"
			if string(body) != want {
				t.Fatalf("body %q, want %q", body, want)
			}
		})
	}
	enginetest.WaitFor(t, 10*time.Second, "refusals to close", func() bool { return srv.Stats().Open == 0 })
	if got := srv.Stats(); got.Upgraded != 0 || got.Streams != 0 || got.StreamsAccepted != 0 {
		t.Fatalf("refused streams counted: %+v", got)
	}
}

// A stream counts against MaxConns like a WebSocket, and the one past it
// is told to come back; one the endpoint accepts later opens then, and one
// it never accepts is told to come back after the handshake timeout.
func TestStreamLimitsAndAcceptLater(t *testing.T) {
	e := newStreamer()
	srv := startEngine(t, engine.Config{
		Streams:          map[string]engine.Endpoint{"/sse": e},
		MaxConns:         2,
		HandshakeTimeout: time.Second,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := "http://" + srv.Addr() + "/sse"
	first := enginetest.OpenStream(t, ctx, url+"?n=1", nil)
	first.NextWithin(t, 10*time.Second)
	held := dialRaw(t, srv.Addr())
	if _, err := held.conn.Write([]byte("GET /sse?later=1 HTTP/1.1\r\nHost: h\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	heldConn := func(i int) *engine.Conn {
		var c *engine.Conn
		enginetest.WaitFor(t, 10*time.Second, "the held stream", func() bool {
			e.mu.Lock()
			defer e.mu.Unlock()
			if len(e.later) > i {
				c = e.later[i]
			}
			return c != nil
		})
		return c
	}
	c := heldConn(0)
	third := enginetest.OpenStream(t, ctx, url+"?n=3", nil)
	if ev := third.NextWithin(t, 10*time.Second); third.Resp.StatusCode != 200 || ev.Event != "close" || ev.Data != "1013 connection limit reached" {
		t.Fatalf("stream past MaxConns: %d %+v", third.Resp.StatusCode, ev)
	}
	err := c.Loop().Execute(gnet.RunnableFunc(func(context.Context) error {
		c.Accept()
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(held.r, nil)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("accepted later: %v, %v", resp, err)
	}
	if line, _ := held.r.ReadString('\n'); line != "retry: 2000\n" {
		t.Fatalf("accepted later, first line %q", line)
	}
	first.Resp.Body.Close()
	enginetest.WaitFor(t, 10*time.Second, "the first stream to close", func() bool { return srv.Stats().Streams == 1 })

	never := dialRaw(t, srv.Addr())
	if _, err := never.conn.Write([]byte("GET /sse?later=1 HTTP/1.1\r\nHost: h\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	heldConn(1)
	resp, err = http.ReadResponse(never.r, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("never accepted: %v, %v", resp, err)
	}
	body, _ := io.ReadAll(resp.Body)
	if want := "retry: 5000\n\nevent: close\ndata: 1013 upgrade not ready in time, retry shortly\n\n"; string(body) != want {
		t.Fatalf("never accepted: body %q, want %q", body, want)
	}
	if st := srv.Stats(); st.Streams != 1 || st.Upgraded != 1 || st.Refused[5] != 1 {
		t.Fatalf("stats %+v: want the held one open, one refused for the limit", st)
	}
}

// The sweep's ping of a silent stream is a heartbeat comment; a client
// that hangs up is gone for the endpoint and the counters; a stream that
// does not read is cut as a slow consumer.
func TestStreamHeartbeatCloseAndSlowConsumer(t *testing.T) {
	e := newStreamer()
	srv := startEngine(t, engine.Config{
		Streams:      map[string]engine.Endpoint{"/sse": e},
		PingInterval: 200 * time.Millisecond,
		PongTimeout:  200 * time.Millisecond,
		MaxOutbound:  64 << 10,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := enginetest.OpenStream(t, ctx, "http://"+srv.Addr()+"/sse?beat=1", nil)
	st.NextWithin(t, 10*time.Second)
	// Several heartbeats: a stream is never reaped for a pong it cannot send.
	for beats := 0; beats < 3; {
		item, err := st.NextItem()
		if err != nil {
			t.Fatalf("stream ended after %d heartbeats: %v", beats, err)
		}
		if len(item.Comments) == 1 && item.Comments[0] == "ping" {
			beats++
		}
	}
	if st := srv.Stats(); st.Pings < 3 || st.Reaped != 0 {
		t.Fatalf("stats %+v: want heartbeats counted as pings, none reaped", st)
	}
	st.Resp.Body.Close()
	enginetest.WaitFor(t, 10*time.Second, "the hung-up stream to close", func() bool {
		return e.openCount() == 0 && srv.Stats().Streams == 0 && srv.Stats().Open == 0
	})

	// A client that never reads: raw TCP, request sent, nothing read.
	conn, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4 << 10)
	}
	if _, err := conn.Write([]byte("GET /sse?flood=1 HTTP/1.1\r\nHost: h\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	enginetest.WaitFor(t, 20*time.Second, "the flooded stream to be cut", func() bool {
		return srv.Stats().SlowConsumers == 1 && e.openCount() == 0 && srv.Stats().Streams == 0
	})
}

// Draining ends every stream with a close event (1001), which an
// EventSource follows by reconnecting elsewhere, and answers new streams
// with a retry.
func TestStreamDrain(t *testing.T) {
	srv := startEngine(t, engine.Config{Streams: map[string]engine.Endpoint{"/sse": newStreamer()}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := enginetest.OpenStream(t, ctx, "http://"+srv.Addr()+"/sse?d=1", nil)
	st.NextWithin(t, 10*time.Second)
	drained := make(chan error, 1)
	go func() { drained <- srv.Drain(ctx, 0) }()
	ev := st.NextWithin(t, 10*time.Second)
	if ev.Event != "close" || ev.Data != "1001 server shutting down" {
		t.Fatalf("drain sent %+v", ev)
	}
	if _, err := st.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the close event: %v, want the end of the body", err)
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	// From a page on another origin: it must be allowed to read the
	// retry, or its EventSource gives up for good.
	again := enginetest.OpenStream(t, ctx, "http://"+srv.Addr()+"/sse?d=2", http.Header{"Origin": {"http://page.test"}})
	if again.Resp.StatusCode != 200 {
		t.Fatalf("stream while draining answered %d", again.Resp.StatusCode)
	}
	if got := again.Resp.Header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Fatalf("the retry answer allows origin %q, want *", got)
	}
	if ev := again.NextWithin(t, 10*time.Second); ev.Event != "close" || !strings.HasPrefix(ev.Data, "1013 ") {
		t.Fatalf("stream while draining got %+v", ev)
	}
}

// A path cannot be both kinds.
func TestStreamConfig(t *testing.T) {
	e := newStreamer()
	_, err := engine.New(engine.Config{Addr: "127.0.0.1:0",
		Endpoints: map[string]engine.Endpoint{"/x": e}, Streams: map[string]engine.Endpoint{"/x": e}})
	if err == nil {
		t.Fatal("a path both WebSocket and stream accepted")
	}
}
