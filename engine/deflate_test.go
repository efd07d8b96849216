package engine_test

import (
	"bytes"
	stdflate "compress/flate"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/engine"
)

// upgradeWith opens a WebSocket on path with extra header lines and returns
// the 101.
func (c *rawClient) upgradeWith(path, headers string) *http.Response {
	c.t.Helper()
	req := strings.Replace(upgradeRequest, "%s", path, 1)
	req = strings.TrimSuffix(req, "\r\n") + headers + "\r\n"
	c.writeChunked([]byte(req), 0)
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		c.t.Fatalf("read upgrade response: %v", err)
	}
	if resp.StatusCode != 101 {
		c.t.Fatalf("upgrade answered %s", resp.Status)
	}
	return resp
}

// stdCompress compresses as a client would (compress/flate, not the codec
// under test), tail dropped.
func stdCompress(t testing.TB, p []byte) []byte {
	var b bytes.Buffer
	w, _ := stdflate.NewWriter(&b, stdflate.BestCompression)
	w.Write(p)
	w.Flush()
	return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
}

func stdInflate(t testing.TB, z []byte) []byte {
	t.Helper()
	out, err := io.ReadAll(stdflate.NewReader(io.MultiReader(bytes.NewReader(z), bytes.NewReader([]byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff}))))
	if err != nil {
		t.Fatalf("inflate the server's frame: %v", err)
	}
	return out
}

func withRSV1(f []byte) []byte { f[0] |= 0x40; return f }

const offerDeflate = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"

// TestDeflateEcho: compressed messages in, whole or fragmented, come back
// compressed, RSV1 on the wire.
func TestDeflateEcho(t *testing.T) {
	srv := startEngine(t, engine.Config{Echo: true, Compression: true})
	addr := srv.Addr()
	text := bytes.Repeat([]byte(`{"channel":"prices.AAPL","data":{"bid":190.25}} `), 40)
	z := stdCompress(t, text)
	for _, tt := range []struct {
		name   string
		frames [][]byte
	}{
		{"one frame", [][]byte{withRSV1(clientFrame(ws.OpText, true, z, true))}},
		{"fragmented, RSV1 on the first", [][]byte{
			withRSV1(clientFrame(ws.OpText, false, z[:10], true)),
			clientFrame(ws.OpContinuation, false, z[10:20], true),
			clientFrame(ws.OpContinuation, true, z[20:], true)}},
		{"plain frame on a deflate socket", [][]byte{clientFrame(ws.OpText, true, text, true)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			resp := c.upgradeWith("/echo", offerDeflate)
			if got := resp.Header.Get("Sec-WebSocket-Extensions"); got != "permessage-deflate; server_no_context_takeover; client_no_context_takeover" {
				t.Fatalf("extension answer %q", got)
			}
			for _, f := range tt.frames {
				c.writeChunked(f, 7) // in pieces: frames span callbacks
			}
			h, p, err := c.readFrame()
			if err != nil {
				t.Fatal(err)
			}
			if h.Rsv != 4 || h.OpCode != ws.OpText || !h.Fin {
				t.Fatalf("echo header %+v, want RSV1 text", h)
			}
			if got := stdInflate(t, p); !bytes.Equal(got, text) {
				t.Fatalf("echo inflates to %q", got)
			}
			if len(p) >= len(text)/3 {
				t.Errorf("echo is %d bytes for %d of JSON", len(p), len(text))
			}
		})
	}
	if n := srv.Stats().Inflated; n != 2 {
		t.Errorf("Stats.Inflated = %d, want the 2 compressed messages", n)
	}
}

// TestDeflateViolations: what a deflate socket may not send, and the close
// code for each. The zip bomb is a real one: 16 MiB of zeros in a few KB.
func TestDeflateViolations(t *testing.T) {
	const limit = 64 << 10
	bomb := stdCompress(t, make([]byte, 16<<20))
	if len(bomb) > 32<<10 {
		t.Fatalf("bomb is %d bytes", len(bomb))
	}
	invalid := stdCompress(t, []byte{'a', 0xff, 0xfe, 'b'})
	tests := []struct {
		name    string
		deflate bool
		frames  [][]byte
		code    ws.StatusCode
	}{
		{"RSV1 without the extension", false, [][]byte{withRSV1(clientFrame(ws.OpText, true, stdCompress(t, []byte("hi")), true))}, ws.StatusProtocolError},
		{"RSV1 on a ping", true, [][]byte{withRSV1(clientFrame(ws.OpPing, true, []byte("x"), true))}, ws.StatusProtocolError},
		{"RSV1 on a continuation", true, [][]byte{
			withRSV1(clientFrame(ws.OpText, false, []byte("a"), true)),
			withRSV1(clientFrame(ws.OpContinuation, true, []byte("b"), true))}, ws.StatusProtocolError},
		{"RSV2", true, [][]byte{func() []byte { f := clientFrame(ws.OpText, true, []byte("x"), true); f[0] |= 0x20; return f }()}, ws.StatusProtocolError},
		{"data that does not inflate", true, [][]byte{withRSV1(clientFrame(ws.OpBinary, true, []byte{0xff, 0xff, 0xff, 0x00, 0x12}, true))}, ws.StatusInvalidFramePayloadData},
		{"inflated text not UTF-8", true, [][]byte{withRSV1(clientFrame(ws.OpText, true, invalid, true))}, ws.StatusInvalidFramePayloadData},
		{"zip bomb", true, [][]byte{withRSV1(clientFrame(ws.OpBinary, true, bomb, true))}, ws.StatusMessageTooBig},
		{"zip bomb in fragments", true, [][]byte{
			withRSV1(clientFrame(ws.OpBinary, false, bomb[:len(bomb)/2], true)),
			clientFrame(ws.OpContinuation, true, bomb[len(bomb)/2:], true)}, ws.StatusMessageTooBig},
	}
	srv := startEngine(t, engine.Config{Echo: true, Compression: true, MaxMessageSize: limit})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, srv.Addr())
			if tt.deflate {
				c.upgradeWith("/echo", offerDeflate)
			} else {
				c.upgrade("/echo", 0, nil)
			}
			for _, f := range tt.frames {
				c.writeChunked(f, 0)
			}
			c.expectClose(tt.code)
		})
	}
}

// TestDeflateOffersOverTheSocket: the answer a real upgrade gets, or none.
func TestDeflateOffersOverTheSocket(t *testing.T) {
	on := startServer(t, engine.Config{Echo: true, Compression: true})
	off := startServer(t, engine.Config{Echo: true})
	for _, tt := range []struct {
		name, addr, offer, want string
	}{
		{"compression off", off, offerDeflate, ""},
		{"no offer", on, "", ""},
		{"window 10 honoured", on, "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n",
			"permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"},
		{"unknown parameter declined", on, "Sec-WebSocket-Extensions: permessage-deflate; foo=1\r\n", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, tt.addr)
			resp := c.upgradeWith("/echo", tt.offer)
			if got := resp.Header.Get("Sec-WebSocket-Extensions"); got != tt.want {
				t.Fatalf("answer %q, want %q", got, tt.want)
			}
			// Whatever was agreed, an echo round trip works.
			c.writeChunked(clientFrame(ws.OpText, true, []byte(strings.Repeat("ab", 300)), true), 0)
			h, p, err := c.readFrame()
			if err != nil {
				t.Fatal(err)
			}
			if h.Rsv != 0 {
				p = stdInflate(t, p)
			}
			if (h.Rsv != 0) != (tt.want != "") || string(p) != strings.Repeat("ab", 300) {
				t.Fatalf("echo rsv %d, %d bytes", h.Rsv, len(p))
			}
		})
	}
}

// TestDeflateWithGorilla: an independent client with EnableCompression
// negotiates, sends compressed and reads what Herald compressed.
func TestDeflateWithGorilla(t *testing.T) {
	addr := startServer(t, engine.Config{Echo: true, Compression: true})
	d := websocket.Dialer{EnableCompression: true, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial("ws://"+addr+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if !strings.HasPrefix(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
		t.Fatalf("not negotiated: %q", resp.Header.Get("Sec-WebSocket-Extensions"))
	}
	conn.SetCompressionLevel(stdflate.BestSpeed)
	for _, n := range []int{0, 1, 100, 70000, 300000} {
		msg := bytes.Repeat([]byte("herald "), n/7+1)[:n]
		if err := conn.WriteMessage(websocket.TextMessage, msg); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		op, got, err := conn.ReadMessage()
		if err != nil || op != websocket.TextMessage || !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes: got %d bytes op %d, %v", n, len(got), op, err)
		}
	}
}

// protoEndpoint greets with the subprotocol the upgrade selected.
type protoEndpoint struct{}

func (protoEndpoint) Upgrade(*engine.Conn, *codec.Request) error { return nil }
func (protoEndpoint) Message(*engine.Conn, ws.OpCode, []byte)    {}
func (protoEndpoint) Closed(*engine.Conn)                        {}
func (protoEndpoint) Opened(c *engine.Conn) {
	c.SendFrame(ws.OpText, []byte("protocol="+c.Subprotocol()))
}

func TestSubprotocolSelection(t *testing.T) {
	addr := startServer(t, engine.Config{
		Endpoints:    map[string]engine.Endpoint{"/p": protoEndpoint{}},
		Subprotocols: []string{"herald.json", "herald.raw", "chat"},
	})
	for _, tt := range []struct {
		name, offer, want string
	}{
		{"none offered", "", ""},
		{"herald.raw", "Sec-WebSocket-Protocol: herald.raw\r\n", "herald.raw"},
		{"client order wins", "Sec-WebSocket-Protocol: mqtt, chat, herald.json\r\n", "chat"},
		{"nothing in common", "Sec-WebSocket-Protocol: mqtt, wamp.2.json\r\n", ""},
		{"second header", "Sec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Protocol: herald.json\r\n", "herald.json"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			resp := c.upgradeWith("/p", tt.offer)
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != tt.want {
				t.Fatalf("selected %q, want %q", got, tt.want)
			}
			c.expectMessage(ws.OpText, []byte("protocol="+tt.want))
		})
	}
}

func TestConfigRejects(t *testing.T) {
	for _, cfg := range []engine.Config{
		{Addr: "127.0.0.1:0", Compression: true, CompressionLevel: 12},
		{Addr: "127.0.0.1:0", Subprotocols: []string{"has space"}},
		{Addr: "127.0.0.1:0", Subprotocols: []string{""}},
	} {
		if _, err := engine.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}
