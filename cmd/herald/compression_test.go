package main

import (
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/enginetest"
	"github.com/herald-ws/herald/engine/push"
)

// Chromium negotiates permessage-deflate by itself: a page's socket gets
// each broadcast compressed (the hub compresses it once, and the page reads
// it whole), and what the page sends Chromium compresses (the server
// inflates it). A page written for another server, new WebSocket(url,
// "chat"), works under --subprotocols chat; herald.raw selects bare
// payloads.
func TestCompressionAndSubprotocolsInBrowser(t *testing.T) {
	browser := newBrowser(t)
	h := startTestHerald(t, heraldConfig{
		Engine: engine.Config{
			HTTP:         demoHandlers(),
			Compression:  true,
			Subprotocols: []string{push.SubprotocolJSON, push.SubprotocolRaw, "chat"},
		},
		Push: push.Config{PublicPublish: []string{"room.*"}},
	})
	addr := h.srv.Addr()
	page := openPage(t, browser, "http://"+addr+"/healthz")
	evaluate(t, page, `
		window.socks = {};
		for (const [name, proto] of [["chat", "chat"], ["raw", "herald.raw"], ["none", undefined]]) {
			const s = {log: [], state: "connecting"};
			const ws = proto ? new WebSocket("ws://`+addr+`/ws?channel=room.1", proto) : new WebSocket("ws://`+addr+`/ws?channel=room.1");
			ws.onopen = () => { s.state = "open"; s.protocol = ws.protocol; s.extensions = ws.extensions; };
			ws.onclose = (e) => { s.state = "closed " + e.code; };
			ws.onmessage = (e) => s.log.push(e.data);
			s.ws = ws;
			socks[name] = s;
		}`)
	type sock struct {
		State, Protocol, Extensions string
		Log                         []string
	}
	view := `Object.fromEntries(Object.entries(socks).map(([k, s]) => [k, {state: s.state, protocol: s.protocol || "", extensions: s.extensions || "", log: s.log}]))`
	got := waitPage[map[string]sock](t, page, 15*time.Second, "three sockets open", view,
		`(v) => Object.values(v).every((s) => s.state === "open")`)
	for name, want := range map[string]string{"chat": "chat", "raw": "herald.raw", "none": ""} {
		if got[name].Protocol != want {
			t.Errorf("%s socket: protocol %q, want %q", name, got[name].Protocol, want)
		}
		if !strings.HasPrefix(got[name].Extensions, "permessage-deflate") {
			t.Errorf("%s socket: extensions %q, want permessage-deflate", name, got[name].Extensions)
		}
	}

	// The chat page publishes a long line, which Chromium compresses.
	before, pushBefore := h.srv.Stats(), h.hub.Stats()
	line := strings.Repeat("the quick brown fox jumps over the lazy dog ", 20)
	evaluate(t, page, `socks.chat.ws.send(JSON.stringify({op: "publish", channel: "room.1", data: {text: "`+line+`"}, id: "p1"}))`)
	got = waitPage[map[string]sock](t, page, 15*time.Second, "the line on all three sockets", view, `(v, line) =>
		v.chat.log.some((m) => m.includes(line) && m.startsWith('{"channel":"room.1"')) &&
		v.none.log.some((m) => m.includes(line)) &&
		v.raw.log.some((m) => m === JSON.stringify({text: line}))`, line)
	enginetest.WaitFor(t, 10*time.Second, "the server to count the inflated publish", func() bool {
		return h.srv.Stats().Inflated > before.Inflated
	})
	ps := h.hub.Stats()
	if n := ps.Compressed - pushBefore.Compressed; n != 2 {
		t.Errorf("%d compressions for one message to 3 deflate sockets in two formats, want 2", n)
	}
	if ps.CompressedOut-pushBefore.CompressedOut >= (ps.CompressedIn-pushBefore.CompressedIn)/3 {
		t.Errorf("compressed %d bytes to %d", ps.CompressedIn-pushBefore.CompressedIn, ps.CompressedOut-pushBefore.CompressedOut)
	}
	if errs := pageExceptions(page); len(errs) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(errs, "\n"))
	}
}

// TestServeCompressionFlags: the flags are explained in --help, and values
// out of range are refused before anything starts.
func TestServeCompressionFlags(t *testing.T) {
	var help enginetest.Buffer
	run([]string{"serve", "--help"}, &help, &help)
	for _, want := range []string{"-no-compression", "-compression-min-size", "-compression-level", "-subprotocols", "herald.raw"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("serve --help does not mention %q", want)
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--compression-level", "12"}, "--compression-level 12"},
		{[]string{"--compression-level", "-1"}, "--compression-level -1"},
		{[]string{"--compression-min-size", "-5"}, "--compression-min-size -5"},
		{[]string{"--subprotocols", "chat,bad name"}, `"bad name" is not a valid subprotocol`},
	} {
		var out enginetest.Buffer
		code := run(append([]string{"serve", "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:-1"}, tt.args...), &out, &out)
		if code == 0 || !strings.Contains(out.String(), tt.want) {
			t.Errorf("serve %v: exit %d, output %q, want an error with %q", tt.args, code, out.String(), tt.want)
		}
	}
}

// /metrics counts one compression per message and format, whatever the
// number of deflate sockets, its bytes before and after, and the
// compressed messages clients sent.
func TestCompressionMetrics(t *testing.T) {
	h := startTestHerald(t, heraldConfig{Engine: engine.Config{Compression: true}})
	d := websocket.Dialer{EnableCompression: true, HandshakeTimeout: 10 * time.Second}
	var readers []*websocket.Conn
	for range 5 {
		conn, resp, err := d.Dial("ws://"+h.srv.Addr()+"/ws?channel=zipped", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if !strings.HasPrefix(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
			t.Fatalf("deflate not agreed: %q", resp.Header.Get("Sec-WebSocket-Extensions"))
		}
		expectConnected(t, conn)
		readers = append(readers, conn)
	}
	settle(t, h)
	data := []byte(`{"levels":[` + strings.Repeat(`{"px":187.25,"qty":300},`, 80) + `{}]}`)
	if err := publisher(t, h).Publish("zipped", data); err != nil {
		t.Fatal(err)
	}
	for _, r := range readers {
		if e := readEnvelope(t, r); e.Channel != "zipped" || string(e.Data) != string(data) {
			t.Fatalf("envelope %+v", e)
		}
	}
	// A compressed command: gorilla compresses every message it writes.
	readers[0].EnableWriteCompression(true)
	if err := readers[0].WriteMessage(websocket.TextMessage, []byte(`{"op":"ping","id":"`+strings.Repeat("1", 500)+`"}`)); err != nil {
		t.Fatal(err)
	}
	_ = readers[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, p, err := readers[0].ReadMessage(); err != nil || !strings.Contains(string(p), `"op":"pong"`) {
		t.Fatalf("ping answered %q, %v", p, err)
	}
	envelope := len(`{"channel":"zipped","data":}`) + len(data)
	m := scrape(t, h.srv.Addr())
	if got := metricValue(t, m, "herald_compressed_messages_total"); got != 1 {
		t.Errorf("herald_compressed_messages_total = %v for one message to 5 deflate sockets, want 1", got)
	}
	in, out := metricValue(t, m, "herald_compression_bytes_in_total"), metricValue(t, m, "herald_compression_bytes_out_total")
	if in != float64(envelope) || out <= 0 || out*3 > in {
		t.Errorf("compression bytes in %v (want %d), out %v", in, envelope, out)
	}
	if got := metricValue(t, m, "herald_inflated_messages_total"); got != 1 {
		t.Errorf("herald_inflated_messages_total = %v, want 1", got)
	}
}
