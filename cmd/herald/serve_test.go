package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/push"
)

// startTestHerald runs the real wiring: an embedded NATS server on a free
// port and the engine on a free port.
func startTestHerald(t testing.TB, cfg heraldConfig) *herald {
	t.Helper()
	cfg.Engine.Addr = "127.0.0.1:0"
	if cfg.Engine.Loops == 0 {
		cfg.Engine.Loops = 2
	}
	if cfg.Engine.Logger == nil {
		cfg.Engine.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.NATS == "" && cfg.NATSListen == "" {
		cfg.NATSListen = "127.0.0.1:-1"
	}
	h, err := startHerald(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return h
}

// publisher connects an independent NATS client, as a user's service would.
func publisher(t testing.TB, h *herald) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(h.broker.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// settle waits until every subscription made so far has reached NATS, so
// that what is published next is delivered.
func settle(t testing.TB, h *herald) {
	t.Helper()
	if err := h.broker.Flush(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func dialWS(t testing.TB, h *herald, query string) *websocket.Conn {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial("ws://"+h.srv.Addr()+"/ws?"+query, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial /ws?%s: %v (status %d)", query, err, status)
	}
	t.Cleanup(func() { conn.Close() })
	if !strings.Contains(query, "format=raw") {
		expectConnected(t, conn)
	}
	return conn
}

// connected is Herald's greeting, the first frame on a JSON connection.
type connected struct {
	Op      string `json:"op"`
	Client  string `json:"client"`
	User    string `json:"user"`
	Expires int64  `json:"expires"`
}

func expectConnected(t testing.TB, conn *websocket.Conn) connected {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := conn.ReadMessage()
	var c connected
	if err != nil || json.Unmarshal(msg, &c) != nil || c.Op != "connected" || c.Client == "" {
		t.Fatalf("first frame %q (%v), want the connected greeting", msg, err)
	}
	return c
}

// envelope is what a subscriber receives by default.
type envelope struct {
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

func readEnvelope(t testing.TB, conn *websocket.Conn) envelope {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	kind, msg, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var e envelope
	if kind != websocket.TextMessage || json.Unmarshal(msg, &e) != nil {
		t.Fatalf("not a JSON envelope: kind %d %q", kind, msg)
	}
	return e
}

// expectSilence checks that nothing more arrives for a while.
func expectSilence(t testing.TB, conn *websocket.Conn, wait time.Duration) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	if _, msg, err := conn.ReadMessage(); err == nil {
		t.Fatalf("unexpected message %q", msg)
	}
}

// 1,000 clients over 50 channels, plus wildcard and overlapping
// subscribers: each receives exactly its messages, in publish order per
// channel, nothing missing and nothing twice.
func TestRoutingManyClientsManyChannels(t *testing.T) {
	const (
		channels   = 50
		clients    = 1000
		perChannel = 20
	)
	h := startTestHerald(t, heraldConfig{})
	type subscriber struct {
		query string
		wants func(channel string) bool
	}
	var subs []subscriber
	for i := range clients {
		ch := fmt.Sprintf("route.c%02d", i%channels)
		subs = append(subs, subscriber{"channel=" + ch, func(c string) bool { return c == ch }})
	}
	all := func(string) bool { return true }
	for range 10 {
		subs = append(subs,
			subscriber{"channel=route.*", all},
			subscriber{"channel=route.%3E", all},
			// Overlapping patterns must still deliver each message once.
			subscriber{"channel=route.c07&channel=route.*&channel=route.%3E", all},
		)
	}
	conns := make([]*websocket.Conn, len(subs))
	for i, s := range subs {
		conns[i] = dialWS(t, h, s.query)
	}
	// Every 101 came once NATS had the socket's subscriptions: what is
	// published from now on reaches each socket exactly once.
	nc := publisher(t, h)
	for seq := range perChannel {
		for c := range channels {
			data := fmt.Sprintf(`{"seq":%d}`, seq)
			if err := nc.Publish(fmt.Sprintf("route.c%02d", c), []byte(data)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, len(subs))
	for i, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- receiveInOrder(conns[i], s.wants, channels, perChannel)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	// Nothing twice: a late duplicate would show up now.
	for i := 0; i < len(conns); i += 97 {
		expectSilence(t, conns[i], 100*time.Millisecond)
	}
}

// receiveInOrder reads until the subscriber has every message it wants and
// checks that each channel's messages come in publish order.
func receiveInOrder(conn *websocket.Conn, wants func(string) bool, channels, perChannel int) error {
	want := 0
	for c := range channels {
		if wants(fmt.Sprintf("route.c%02d", c)) {
			want += perChannel
		}
	}
	next := map[string]int{}
	for got := 0; got < want; got++ {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return fmt.Errorf("after %d of %d messages: %w", got, want, err)
		}
		var e struct {
			Channel string
			Data    struct{ Seq int }
		}
		if err := json.Unmarshal(msg, &e); err != nil {
			return fmt.Errorf("bad envelope %q: %w", msg, err)
		}
		if !wants(e.Channel) {
			return fmt.Errorf("got a message on %s, which it did not subscribe to", e.Channel)
		}
		if e.Data.Seq != next[e.Channel] {
			return fmt.Errorf("%s: got seq %d, want %d", e.Channel, e.Data.Seq, next[e.Channel])
		}
		next[e.Channel]++
	}
	return nil
}

func TestEnvelopeAndRawFormats(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	enveloped := dialWS(t, h, "channel=fmt.a")
	raw := dialWS(t, h, "channel=fmt.a&format=raw")
	settle(t, h)
	nc := publisher(t, h)
	for _, tt := range []struct {
		payload  []byte
		wantData string
		rawKind  int
	}{
		{[]byte(`{"px":187.2}`), `{"px":187.2}`, websocket.TextMessage},
		{[]byte(`not json "quoted"`), `"not json \"quoted\""`, websocket.TextMessage},
		{[]byte{0xff, 0x00, 0x01}, `"\ufffd\u0000\u0001"`, websocket.BinaryMessage},
	} {
		if err := nc.Publish("fmt.a", tt.payload); err != nil {
			t.Fatal(err)
		}
		e := readEnvelope(t, enveloped)
		if e.Channel != "fmt.a" || string(e.Data) != tt.wantData {
			t.Errorf("envelope %+v, want data %s", e, tt.wantData)
		}
		_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		kind, msg, err := raw.ReadMessage()
		if err != nil || kind != tt.rawKind || string(msg) != string(tt.payload) {
			t.Errorf("raw: kind %d %q err %v, want kind %d %q", kind, msg, err, tt.rawKind, tt.payload)
		}
	}
}

func TestInBandSubscribeUnsubscribeAndErrors(t *testing.T) {
	h := startTestHerald(t, heraldConfig{Push: push.Config{MaxChannels: 2, NoWildcards: true}})
	conn := dialWS(t, h, "")
	nc := publisher(t, h)
	command := func(cmd string) map[string]any {
		t.Helper()
		if err := conn.WriteMessage(websocket.TextMessage, []byte(cmd)); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, msg, err := conn.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		var reply map[string]any
		if err := json.Unmarshal(msg, &reply); err != nil {
			t.Fatalf("reply %q: %v", msg, err)
		}
		return reply
	}
	tests := []struct {
		cmd, wantOp, wantCode string
		wantID                any
	}{
		{`{"op":"subscribe","channel":"game.42","id":"7"}`, "ack", "", "7"},
		{`{"op":"subscribe","channel":"game.42","id":8}`, "ack", "", 8.0}, // again: still one subscription
		{`{"op":"subscribe","channel":"game..42","id":"9"}`, "error", "invalid_channel", "9"},
		{`{"op":"subscribe","channel":"game.*","id":"10"}`, "error", "wildcards_disabled", "10"},
		{`{"op":"subscribe","channel":"game.43"}`, "ack", "", nil},
		{`{"op":"subscribe","channel":"game.44","id":"11"}`, "error", "too_many_channels", "11"},
		{`{"op":"jump","id":"12"}`, "error", "bad_request", "12"},
		{`not json`, "error", "bad_request", nil},
		{`{"op":"ping","id":"13"}`, "pong", "", "13"},
		{`{"op":"unsubscribe","channel":"game.43","id":"14"}`, "ack", "", "14"},
	}
	for _, tt := range tests {
		reply := command(tt.cmd)
		if reply["op"] != tt.wantOp || reply["id"] != tt.wantID || (tt.wantCode != "" && reply["code"] != tt.wantCode) {
			t.Errorf("%s: reply %v, want op %s code %q id %v", tt.cmd, reply, tt.wantOp, tt.wantCode, tt.wantID)
		}
	}
	settle(t, h)
	if err := nc.Publish("game.43", []byte(`"after unsubscribe"`)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("game.42", []byte(`"subscribed"`)); err != nil {
		t.Fatal(err)
	}
	if e := readEnvelope(t, conn); e.Channel != "game.42" || string(e.Data) != `"subscribed"` {
		t.Fatalf("got %+v, want the game.42 message only", e)
	}
	// The connection stayed up through every error.
	if reply := command(`{"op":"ping"}`); reply["op"] != "pong" {
		t.Fatalf("after errors: %v", reply)
	}
}

func TestBadSubscriptionRefusedBeforeUpgrade(t *testing.T) {
	h := startTestHerald(t, heraldConfig{Push: push.Config{MaxChannels: 2, NoWildcards: true}})
	for _, query := range []string{
		"channel=a..b",
		"channel=prices.*",              // wildcards disabled
		"channel=a&channel=b&channel=c", // over the cap
		"channel=a&format=xml",
	} {
		_, resp, err := websocket.DefaultDialer.Dial("ws://"+h.srv.Addr()+"/ws?"+query, nil)
		if err == nil || resp == nil || resp.StatusCode != 400 {
			t.Errorf("%s: err %v resp %v, want HTTP 400", query, err, resp)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		if len(strings.TrimSpace(string(body))) == 0 {
			t.Errorf("%s: 400 without a reason", query)
		}
	}
}

// A subscriber that never reads is cut at the outbound cap with 1008 while
// the others keep receiving.
func TestSlowConsumerIsCutOthersKeepReceiving(t *testing.T) {
	// The cut socket lingers until it has drained or CloseTimeout passes;
	// the test reads it only after twenty more batches, which on a loaded
	// machine can take longer than the default 3 s.
	h := startTestHerald(t, heraldConfig{Engine: engine.Config{MaxOutbound: 256 << 10, CloseTimeout: time.Minute}})
	// A raw socket with a tiny receive buffer that is never read.
	stalled, err := net.Dial("tcp", h.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	u := url.URL{Scheme: "ws", Host: h.srv.Addr(), Path: "/ws", RawQuery: "channel=flood"}
	healthy, _, err := websocket.NewClient(mustDial(t, h.srv.Addr()), &u, nil, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer healthy.Close()
	if _, err := fmt.Fprintf(stalled, "GET /ws?channel=flood HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the upgrade land
	settle(t, h)
	nc := publisher(t, h)

	// The healthy client reads everything; the publisher never gets more
	// than a batch ahead of it, so only the stalled socket can fall behind.
	var received atomic.Int64
	go func() {
		for {
			_ = healthy.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, _, err := healthy.ReadMessage(); err != nil {
				return
			}
			received.Add(1)
		}
	}()
	payload := []byte(`"` + strings.Repeat("x", 16<<10) + `"`)
	published := int64(0)
	publishBatch := func() {
		t.Helper()
		for range 10 {
			if err := nc.Publish("flood", payload); err != nil {
				t.Fatal(err)
			}
			published++
		}
		deadline := time.Now().Add(10 * time.Second)
		for received.Load() < published {
			if time.Now().After(deadline) {
				t.Fatalf("healthy subscriber stuck at %d of %d messages", received.Load(), published)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for batches := 0; h.srv.Stats().SlowConsumers == 0; batches++ {
		if batches == 2000 {
			t.Fatal("the stalled subscriber was never cut")
		}
		publishBatch()
	}
	for range 20 { // and it keeps receiving after the cut
		publishBatch()
	}
	if got := h.srv.Stats().SlowConsumers; got != 1 {
		t.Fatalf("slow consumer closes %d, want 1", got)
	}
	// Once it reads, the stalled client drains what it was sent before the
	// cut, finds a 1008 close frame at the end of it, and then the end of
	// the stream.
	_ = stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(stalled)
	if resp, err := http.ReadResponse(r, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("stalled client's upgrade: %v %v", resp, err)
	}
	var last ws.Header
	var lastPayload []byte
	for {
		h, err := ws.ReadHeader(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading the stalled client's stream: %v", err)
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(r, payload); err != nil {
			t.Fatalf("reading the stalled client's stream: %v", err)
		}
		last, lastPayload = h, payload
	}
	if code, _ := ws.ParseCloseFrameData(lastPayload); last.OpCode != ws.OpClose || code != ws.StatusPolicyViolation {
		t.Fatalf("the stalled client's stream ends in op %v code %d, want a 1008 close", last.OpCode, code)
	}
}

func mustDial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A client that keeps sending commands but never reads the answers is cut
// like a slow subscriber: the answers cannot pile up without bound.
func TestCommandFloodWithoutReadingIsCut(t *testing.T) {
	h := startTestHerald(t, heraldConfig{Engine: engine.Config{MaxOutbound: 64 << 10}})
	c := mustDial(t, h.srv.Addr())
	defer c.Close()
	if _, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Each ping carries a 16 KiB id, echoed in its pong.
	cmd := []byte(`{"op":"ping","id":"` + strings.Repeat("p", 16<<10) + `"}`)
	frame := append([]byte{0x81, 0xFF}, 0, 0, 0, 0, 0, 0, byte(len(cmd)>>8), byte(len(cmd)))
	frame = append(frame, 0, 0, 0, 0) // a zero mask leaves the payload as it is
	frame = append(frame, cmd...)
	deadline := time.Now().Add(20 * time.Second)
	for sent := 0; h.srv.Stats().SlowConsumers == 0; sent += len(frame) {
		if time.Now().After(deadline) || sent > 1<<30 {
			t.Fatalf("still not cut after %d MiB of unanswered pings", sent>>20)
		}
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(frame); err != nil {
			break // the server closed on us: the cut happened
		}
	}
	waitFor(t, 10*time.Second, "the flooding client to be cut", func() bool { return h.srv.Stats().SlowConsumers == 1 })
}

// An upgrade asking for a channel NATS cannot confirm (here: the broker is
// closed) is answered 503 with Retry-After within the handshake timeout,
// while one for no channel is served. (A subscription the bus refuses is
// answered in band: engine/push's TestBusRefusalIsAnsweredInBand.)
func TestUpgradeNATSCannotConfirmAnswered503(t *testing.T) {
	h := startTestHerald(t, heraldConfig{Engine: engine.Config{HandshakeTimeout: 500 * time.Millisecond}})
	h.broker.Close()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	_, resp, err := d.Dial("ws://"+h.srv.Addr()+"/ws?channel=refused.here", nil)
	if err == nil || resp == nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("dial = %v, %v; want 503 with Retry-After", resp, err)
	}
	conn := dialWS(t, h, "")
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"op":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, msg, err := conn.ReadMessage(); err != nil || !strings.Contains(string(msg), `"pong"`) {
		t.Fatalf("a socket with no channel: %q %v", msg, err)
	}
}

// Overlapping patterns, given together in the URL or added in band while
// messages flow, deliver every message exactly once: a pattern owns
// messages only once NATS has confirmed it, with no timer.
func TestOverlappingPatternsExactlyOnce(t *testing.T) {
	h := startTestHerald(t, heraldConfig{Push: push.Config{PublicChannels: []string{">"}}}) // > only where permitted
	nc := publisher(t, h)
	// The case: new patterns given together, published right after
	// the 101.
	conn := dialWS(t, h, "channel=ov.p.*&channel=ov.p.P03&channel=ov.g.%3E&channel=ov.g.G30")
	subjects := []string{"ov.p.P03", "ov.p.P01", "ov.g.G30", "ov.g.G30.x", "ov.g.G01"}
	const rounds = 2000
	for i := range rounds {
		for _, s := range subjects {
			_ = nc.Publish(s, fmt.Appendf(nil, `{"seq":%d}`, i))
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]int)
	for range rounds * len(subjects) {
		e := readEnvelope(t, conn)
		seen[e.Channel+string(e.Data)]++
	}
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("%s arrived %d times", k, n)
		}
	}
	expectSilence(t, conn, 200*time.Millisecond)

	// Added in band while a publisher goes as fast as it can: nothing lost,
	// nothing twice, in order.
	conn = dialWS(t, h, "channel=overlap.b")
	const total = 20000
	var progress atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for seq := range total {
			progress.Add(1)
			_ = nc.Publish("overlap.b", fmt.Appendf(nil, `{"seq":%d}`, seq))
			if seq%100 == 0 {
				_ = nc.Flush() // keep the publisher at the pace Herald delivers
			}
		}
		_ = nc.Flush()
	}()
	for progress.Load() < total/4 {
		time.Sleep(time.Millisecond)
	}
	// overlap.* sorts before overlap.b, so it becomes the owner once live.
	for _, cmd := range []string{`{"op":"subscribe","channel":"overlap.*"}`, `{"op":"subscribe","channel":"overlap.>"}`, `{"op":"subscribe","channel":">"}`} {
		if err := conn.WriteMessage(websocket.TextMessage, []byte(cmd)); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	next := 0
	for next < total {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, msg, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("after message %d of %d: %v", next, total, err)
		}
		var e struct {
			Op   string
			Data struct{ Seq *int }
		}
		if json.Unmarshal(msg, &e) != nil || e.Data.Seq == nil {
			if e.Op != "ack" {
				t.Fatalf("unexpected frame %q", msg)
			}
			continue
		}
		if *e.Data.Seq != next {
			t.Fatalf("got message %d, want %d: one was lost or repeated", *e.Data.Seq, next)
		}
		next++
	}
	expectSilence(t, conn, 200*time.Millisecond)
}
