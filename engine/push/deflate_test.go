package push_test

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"

	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/push"
)

// rawSub is a subscriber on a bare TCP socket, so that a test sees the
// frames exactly as they cross the wire: RSV1 and the compressed bytes.
type rawSub struct {
	conn net.Conn
	r    *bufio.Reader
	resp *http.Response
}

func dialRawSub(t *testing.T, addr, query, headers string) *rawSub {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	req := "GET " + push.Path + "?" + query + " HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + headers + "\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	s := &rawSub{conn: conn, r: bufio.NewReader(conn)}
	if s.resp, err = http.ReadResponse(s.r, nil); err != nil || s.resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", s.resp, err)
	}
	return s
}

// next reads one frame: its header and payload as sent.
func (s *rawSub) next(t *testing.T) (ws.Header, []byte) {
	t.Helper()
	h, err := ws.ReadHeader(s.r)
	if err != nil {
		t.Fatalf("read header: %v", err)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(s.r, p); err != nil {
		t.Fatal(err)
	}
	return h, p
}

func inflate(t *testing.T, z []byte) []byte {
	t.Helper()
	out, err := io.ReadAll(flate.NewReader(io.MultiReader(bytes.NewReader(z), bytes.NewReader([]byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff}))))
	if err != nil {
		t.Fatalf("inflate: %v", err)
	}
	return out
}

// tick is a realistic JSON message of about n bytes.
func tick(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"sym":"AAPL","levels":[`)
	for i := 0; b.Len() < n-3; i++ {
		fmt.Fprintf(&b, `{"px":%d.%02d,"qty":%d},`, 187-i%7, (i*37)%100, 100+i*13%900)
	}
	b.Truncate(b.Len() - 1)
	b.WriteString("]}")
	return b.Bytes()
}

const offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"

// TestCompressedOncePerFormat: every deflate socket gets the same
// compressed bytes, RSV1 set, one compression per format whatever the
// number of sockets; plain sockets and a socket that asked for a small
// window get the plain frame; a message under the threshold goes plain to
// everyone.
func TestCompressedOncePerFormat(t *testing.T) {
	s := startPush(t, engine.Config{Compression: true}, push.Config{CompressionMinSize: 512}, true)
	var deflateJSON, deflateRaw, plain, smallWindow []*rawSub
	for range 12 {
		deflateJSON = append(deflateJSON, dialRawSub(t, s.addr, "channel=m", offer))
	}
	for range 4 {
		deflateRaw = append(deflateRaw, dialRawSub(t, s.addr, "channel=m&format=raw", offer))
		plain = append(plain, dialRawSub(t, s.addr, "channel=m", ""))
	}
	smallWindow = append(smallWindow, dialRawSub(t, s.addr, "channel=m",
		"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n"))
	for _, c := range append(append(append([]*rawSub{}, deflateJSON...), plain...), smallWindow...) {
		if h, p := c.next(t); h.Rsv != 0 || !strings.Contains(string(p), `"op":"connected"`) {
			t.Fatalf("greeting %+v %q", h, p)
		}
	}
	big, small := tick(2048), tick(200)
	before := s.hub.Stats()
	s.bus.Send("m", big)
	s.bus.Send("m", small)
	envelope := `{"channel":"m","data":` + string(big) + `}`

	var shared []byte
	for i, c := range deflateJSON {
		h, p := c.next(t)
		if h.Rsv != 4 || h.OpCode != ws.OpText {
			t.Fatalf("deflate socket %d: header %+v, want RSV1 text", i, h)
		}
		if shared == nil {
			shared = p
			if got := inflate(t, p); string(got) != envelope {
				t.Fatalf("inflates to %q", got)
			}
			if len(p)*2 > len(envelope) {
				t.Errorf("2 KiB of JSON compressed to %d bytes only", len(p))
			}
		} else if !bytes.Equal(p, shared) {
			t.Fatalf("deflate socket %d got other compressed bytes", i)
		}
		if h, p := c.next(t); h.Rsv != 0 || !bytes.Contains(p, small) {
			t.Fatalf("small message to deflate socket %d: %+v %q, want plain", i, h, p)
		}
	}
	for i, c := range deflateRaw {
		h, p := c.next(t)
		if h.Rsv != 4 || !bytes.Equal(inflate(t, p), big) {
			t.Fatalf("raw deflate socket %d: %+v", i, h)
		}
		if h, p := c.next(t); h.Rsv != 0 || !bytes.Equal(p, small) {
			t.Fatalf("raw small message %+v %q", h, p)
		}
	}
	for i, c := range append(plain, smallWindow...) {
		if h, p := c.next(t); h.Rsv != 0 || string(p) != envelope {
			t.Fatalf("plain socket %d: %+v %d bytes", i, h, len(p))
		}
		if h, _ := c.next(t); h.Rsv != 0 {
			t.Fatalf("plain socket %d: small message compressed", i)
		}
	}
	// Random bytes do not compress: the raw frame goes plain even to
	// deflate sockets (the envelope, a JSON string of escapes, shrinks).
	random := make([]byte, 1024)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(random)
	s.bus.Send("m", random)
	for i, c := range deflateRaw {
		if h, p := c.next(t); h.Rsv != 0 || !bytes.Equal(p, random) {
			t.Fatalf("raw deflate socket %d: incompressible message %+v, want the plain frame", i, h)
		}
	}
	for i, c := range deflateJSON {
		if h, _ := c.next(t); h.Rsv != 4 {
			t.Fatalf("deflate socket %d: envelope of random bytes not compressed: %+v", i, h)
		}
	}
	for _, c := range append(plain, smallWindow...) {
		c.next(t)
	}
	st := s.hub.Stats()
	if n := st.Compressed - before.Compressed; n != 3 {
		t.Errorf("%d compressions for two messages to %d deflate sockets, want 3 (two formats, then the envelope only)", n, len(deflateJSON)+len(deflateRaw))
	}
	if in, out := st.CompressedIn-before.CompressedIn, st.CompressedOut-before.CompressedOut; in <= uint64(len(envelope)+len(big)) || out == 0 || out >= in {
		t.Errorf("compression bytes in %d out %d", in, out)
	}
}

// TestDeflateClients: independent clients that negotiate permessage-deflate
// (gorilla/websocket with EnableCompression, coder/websocket in both of its
// modes) receive compressed broadcasts, and their compressed commands
// (subscribe, ping) are understood.
func TestDeflateClients(t *testing.T) {
	s := startPush(t, engine.Config{Compression: true}, push.Config{CompressionMinSize: -1}, true)
	msg := tick(1500)
	want := `{"channel":"c","data":` + string(msg) + `}`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tt := range []struct {
		name string
		dial func(t *testing.T) (send func(string), recv func() string, ext string)
	}{
		{"gorilla", func(t *testing.T) (func(string), func() string, string) {
			d := websocket.Dialer{EnableCompression: true, HandshakeTimeout: 10 * time.Second}
			conn, resp, err := d.Dial("ws://"+s.addr+push.Path, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			conn.EnableWriteCompression(true)
			conn.SetCompressionLevel(flate.BestSpeed)
			return func(m string) { send(t, conn, m) }, func() string {
				_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, p, err := conn.ReadMessage()
				if err != nil {
					t.Fatal(err)
				}
				return string(p)
			}, resp.Header.Get("Sec-WebSocket-Extensions")
		}},
		{"coder no context takeover", coderDial(ctx, s.addr, coder.CompressionNoContextTakeover)},
		{"coder context takeover", coderDial(ctx, s.addr, coder.CompressionContextTakeover)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sendCmd, recv, ext := tt.dial(t)
			if !strings.HasPrefix(ext, "permessage-deflate; server_no_context_takeover; client_no_context_takeover") {
				t.Fatalf("negotiated %q", ext)
			}
			if g := recv(); !strings.Contains(g, `"op":"connected"`) {
				t.Fatalf("greeting %q", g)
			}
			// A command long enough that the client compresses it.
			sendCmd(`{"op":"subscribe","channel":"c","id":"` + strings.Repeat("7", 600) + `"}`)
			if a := recv(); !strings.Contains(a, `"op":"ack"`) {
				t.Fatalf("subscribe answered %q", a)
			}
			s.bus.Send("c", msg)
			if got := recv(); got != want {
				t.Fatalf("broadcast %q", got)
			}
			sendCmd(`{"op":"ping","id":"` + strings.Repeat("8", 300) + `"}`)
			if a := recv(); !strings.Contains(a, `"op":"pong"`) {
				t.Fatalf("ping answered %q", a)
			}
			sendCmd(`{"op":"unsubscribe","channel":"c"}`)
			if a := recv(); !strings.Contains(a, `"op":"ack"`) {
				t.Fatalf("unsubscribe answered %q", a)
			}
		})
	}
}

func coderDial(ctx context.Context, addr string, mode coder.CompressionMode) func(t *testing.T) (func(string), func() string, string) {
	return func(t *testing.T) (func(string), func() string, string) {
		conn, resp, err := coder.Dial(ctx, "ws://"+addr+push.Path, &coder.DialOptions{CompressionMode: mode, CompressionThreshold: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.CloseNow() })
		return func(m string) {
				if err := conn.Write(ctx, coder.MessageText, []byte(m)); err != nil {
					t.Fatal(err)
				}
			}, func() string {
				_, p, err := conn.Read(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return string(p)
			}, resp.Header.Get("Sec-WebSocket-Extensions")
	}
}

// TestSubprotocolFormats: herald.raw selects bare payloads as ?format=raw
// does; herald.json and the extra names the envelope; an offer of none of
// them is answered with no protocol.
func TestSubprotocolFormats(t *testing.T) {
	s := startPush(t, engine.Config{Subprotocols: []string{push.SubprotocolJSON, push.SubprotocolRaw, "chat"}}, push.Config{}, true)
	for _, tt := range []struct {
		offer    []string
		selected string
		raw      bool
	}{
		{[]string{"herald.raw"}, "herald.raw", true},
		{[]string{"herald.json"}, "herald.json", false},
		{[]string{"chat"}, "chat", false},
		{[]string{"mqtt", "herald.raw"}, "herald.raw", true},
		{[]string{"mqtt"}, "", false},
		{nil, "", false},
	} {
		t.Run(strings.Join(tt.offer, ","), func(t *testing.T) {
			d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, Subprotocols: tt.offer}
			conn, resp, err := d.Dial("ws://"+s.addr+push.Path+"?channel=f", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != tt.selected {
				t.Fatalf("selected %q, want %q", got, tt.selected)
			}
			if !tt.raw {
				if f := read(t, conn); f.Op != "connected" {
					t.Fatalf("greeting %+v", f)
				}
			}
			s.bus.Send("f", []byte(`{"n":1}`))
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, p, err := conn.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			want := `{"channel":"f","data":{"n":1}}`
			if tt.raw {
				want = `{"n":1}`
			}
			if string(p) != want {
				t.Fatalf("got %q, want %q", p, want)
			}
		})
	}
}
