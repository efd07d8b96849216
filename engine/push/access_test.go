package push_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/push"
	"github.com/herald-ws/herald/engine/push/auth"

	"github.com/herald-ws/herald/engine/enginetest"
)

// clock is a settable clock shared by the verifier and the hub.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := new(clock)
	c.ns.Store(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time               { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration)      { c.ns.Add(int64(d)) }
func (c *clock) In(d time.Duration) time.Time { return c.Now().Add(d) }

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// authServer is a push server that verifies HS256 tokens with a real
// verifier, logging into a buffer that tests search for tokens.
type authServer struct {
	*testServer
	clock *clock
	logs  *enginetest.Buffer
}

func startAuth(t *testing.T, pcfg push.Config) *authServer {
	t.Helper()
	clk := newClock()
	logs := new(enginetest.Buffer)
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	v, err := auth.New(context.Background(), auth.Config{Secret: testSecret, Now: clk.Now, Logger: log, Leeway: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	pcfg.Verify = v.Verify
	pcfg.Now = clk.Now
	pcfg.Logger = log
	s := startPush(t, engine.Config{Logger: log}, pcfg, true)
	t.Cleanup(s.hub.Close)
	return &authServer{testServer: s, clock: clk, logs: logs}
}

func (s *authServer) token(t *testing.T, sub string, ttl time.Duration, subscribe, publish []string) string {
	t.Helper()
	tok, err := auth.Mint(testSecret, "HS256", auth.Claims{Subject: sub, Subscribe: subscribe, Publish: publish, Expires: s.clock.In(ttl)}, s.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// status dials and returns the HTTP answer of a refused upgrade.
func status(t *testing.T, s *testServer, query string, header http.Header) (int, string, http.Header) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conn, resp, err := d.Dial("ws://"+s.addr+push.Path+"?"+query, header)
	if err == nil {
		conn.Close()
		return 101, "", resp.Header
	}
	if resp == nil {
		t.Fatalf("dial %q: %v", query, err)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	return resp.StatusCode, strings.TrimSpace(body.String()), resp.Header
}

func TestReservedChannelsRefused(t *testing.T) {
	s := startPush(t, engine.Config{}, push.Config{}, true)
	for _, q := range []string{
		"channel=_INBOX.x", "channel=_INBOX.>", "channel=$JS.API.>", "channel=$SYS.ACCOUNT.x",
		"channel=%24JS.API.STREAM.LIST", "channel=%5FINBOX.abc", "channel=%5F%52%5F.x",
		"channel=>", "channel=*.>", "channel=*.x", "channel=%3E", "channel=prices.A&channel=$KV.b.k",
	} {
		if code, body, _ := status(t, s, q, nil); code != 403 {
			t.Errorf("%s answered %d %q, want 403", q, code, body)
		}
	}
	if code, body, _ := status(t, s, "channel=prices.*&channel=game.>", nil); code != 101 {
		t.Fatalf("literal-first wildcards answered %d %q, want 101", code, body)
	}

	conn, _, err := s.dial(t, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []string{`_INBOX.x`, `$JS.API.>`, `\u0024SYS.>`, `\u005fINBOX.y`, `>`, `*.>`} {
		send(t, conn, `{"op":"subscribe","channel":"`+ch+`","id":1}`)
		if f := read(t, conn); f.Op != "error" || f.Code != "forbidden" {
			t.Errorf("in-band subscribe to %s: %+v, want forbidden", ch, f)
		}
	}
}

// A pattern that covers reserved subjects (an operator allowed >) still
// never receives them.
func TestReservedSubjectsNeverDelivered(t *testing.T) {
	s := startPush(t, engine.Config{}, push.Config{PublicChannels: []string{">"}}, true)
	conn, _, err := s.dial(t, "channel=>")
	if err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{"_INBOX.abc.1", "$JS.API.INFO", "$SYS.REQ.x", "_R_.x"} {
		s.bus.Send(subj, []byte(`"secret"`))
	}
	s.bus.Send("prices.A", []byte(`1`))
	if f := read(t, conn); f.Channel != "prices.A" {
		t.Fatalf("first delivery %+v, want prices.A", f)
	}
}

func TestUpgradeAuthentication(t *testing.T) {
	s := startAuth(t, push.Config{UserChannels: []string{"user.{sub}.>"}})
	good := s.token(t, "alice", time.Hour, []string{"chat.>"}, nil)
	expired := s.token(t, "alice", -time.Minute, []string{"chat.>"}, nil)
	star := s.token(t, "*", time.Hour, nil, nil)
	for _, tc := range []struct {
		name   string
		query  string
		header http.Header
		code   int
		reason string
	}{
		{"no token", "channel=chat.a", nil, 401, "token required"},
		{"garbage", "token=abc.def.ghi&channel=chat.a", nil, 401, ""},
		{"expired", "token=" + expired + "&channel=chat.a", nil, 401, "token expired"},
		{"tampered", "token=" + tamper(good) + "&channel=chat.a", nil, 401, ""},
		{"huge", "token=" + strings.Repeat("a", 100<<10), nil, 431, ""},
		{"good", "token=" + good + "&channel=chat.a", nil, 101, ""},
		{"bearer", "channel=chat.a", http.Header{"Authorization": {"Bearer " + good}}, 101, ""},
		{"not permitted", "token=" + good + "&channel=news.a", nil, 403, `"news.a"`},
		{"own user channel", "token=" + good + "&channel=user.alice.inbox", nil, 101, ""},
		{"another user's channel", "token=" + good + "&channel=user.bob.inbox", nil, 403, "user.bob.inbox"},
		{"sub * gets no user channels", "token=" + star + "&channel=user.bob.inbox", nil, 403, ""},
		{"reserved with a token", "token=" + good + "&channel=_INBOX.x", nil, 403, "reserved"},
	} {
		code, body, hdr := status(t, s.testServer, tc.query, tc.header)
		if code != tc.code || !strings.Contains(body, tc.reason) {
			t.Errorf("%s: %d %q, want %d with %q", tc.name, code, body, tc.code, tc.reason)
		}
		if code == 401 && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q", tc.name, hdr.Get("WWW-Authenticate"))
		}
	}
	for _, tok := range []string{good, expired, star} {
		if strings.Contains(s.logs.String(), tok) || strings.Contains(s.logs.String(), string(testSecret)) {
			t.Fatal("a token or the secret is in the logs")
		}
	}
	st := s.hub.Stats()
	if st.AuthFailures["missing"] != 1 || st.AuthFailures["expired"] != 1 {
		t.Errorf("auth failures %v", st.AuthFailures)
	}
}

// tamper changes the payload of a token and keeps its signature.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	p := []byte(parts[1])
	p[len(p)/2] ^= 1
	return parts[0] + "." + string(p) + "." + parts[2]
}

func dialToken(t *testing.T, s *authServer, token, query string) (*websocket.Conn, frame) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conn, _, err := d.Dial("ws://"+s.addr+push.Path+"?token="+token+"&"+query, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	f := read(t, conn)
	if f.Op != "connected" {
		t.Fatalf("first frame %+v", f)
	}
	return conn, f
}

func TestConnectedFrameAndPublish(t *testing.T) {
	s := startAuth(t, push.Config{UserPublish: []string{"user.{sub}.out"}, PublishRate: 5})
	tok := s.token(t, "alice", time.Hour, []string{"chat.>"}, []string{"chat.>"})
	conn, hello := dialToken(t, s, tok, "channel=chat.room1")
	if hello.User != "alice" || hello.Expires != s.clock.In(time.Hour).Unix() || hello.Client == "" {
		t.Fatalf("connected %+v", hello)
	}
	send(t, conn, `{"op":"publish","channel":"chat.room1","data":{"text":"hi"},"id":"5"}`)
	// The ack, and the publisher's own copy, in either order.
	got := map[string]frame{}
	for range 2 {
		f := read(t, conn)
		got[f.Op+f.Channel] = f
	}
	if string(got["ack"].ID) != `"5"` || string(got["chat.room1"].Data) != `{"text":"hi"}` {
		t.Fatalf("publish answers %+v", got)
	}
	pubs := s.bus.Published()
	if len(pubs) != 1 || pubs[0].User != "alice" || pubs[0].Client != hello.Client || string(pubs[0].Data) != `{"text":"hi"}` {
		t.Fatalf("published %+v", pubs)
	}
	for _, tc := range []struct{ cmd, code string }{
		{`{"op":"publish","channel":"news.a","data":1,"id":1}`, "forbidden"},
		{`{"op":"publish","channel":"_INBOX.x","data":1,"id":1}`, "forbidden"},
		{`{"op":"publish","channel":"$JS.API.STREAM.DELETE.X","data":1,"id":1}`, "forbidden"},
		{`{"op":"publish","channel":"chat.*","data":1,"id":1}`, "bad_request"},
		{`{"op":"publish","channel":"chat.a","id":1}`, "bad_request"},
		{`{"op":"publish","channel":"chat.a","data":"` + strings.Repeat("x", push.DefaultMaxPublishSize) + `","id":1}`, "too_large"},
	} {
		send(t, conn, tc.cmd)
		if f := read(t, conn); f.Op != "error" || f.Code != tc.code {
			t.Errorf("%.60s: %+v, want %s", tc.cmd, f, tc.code)
		}
	}
	send(t, conn, `{"op":"publish","channel":"user.alice.out","data":2,"id":"u"}`)
	if f := read(t, conn); f.Op != "ack" {
		t.Fatalf("publish on the user's channel: %+v", f)
	}

	// The clock stands still: a burst of 2×5 goes (two are spent), then
	// every publish is refused, and past twice the burst of refusals the
	// connection is closed with 1008.
	flood := `{"op":"publish","channel":"chat.flood","data":1,"id":1}`
	for range 8 {
		send(t, conn, flood)
	}
	for range 8 {
		if f := read(t, conn); f.Op != "ack" {
			t.Fatalf("publish within the burst: %+v", f)
		}
	}
	limited := 0
	for range 30 {
		send(t, conn, flood)
	}
	for {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, p, err := conn.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			if ce.Code != 1008 {
				t.Fatalf("closed with %d, want 1008", ce.Code)
			}
			break
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if !bytes.Contains(p, []byte(`"rate_limited"`)) {
			t.Fatalf("past the burst: %s", p)
		}
		limited++
	}
	if limited != 21 {
		t.Fatalf("%d rate_limited before the close, want 21", limited)
	}
	if st := s.hub.Stats(); st.Published != 10 || st.PublishRefused["rate_limited"] != 21 || st.PublishRefused["forbidden"] != 3 {
		t.Errorf("stats: published %d refused %v", st.Published, st.PublishRefused)
	}
}

func TestAnonymousPublishAndPing(t *testing.T) {
	s := startPush(t, engine.Config{}, push.Config{PublicPublish: []string{"clicks.*"}}, true)
	conn, _, err := s.dial(t, "channel=clicks.home")
	if err != nil {
		t.Fatal(err)
	}
	send(t, conn, "ping")
	if _, p, err := conn.ReadMessage(); err != nil || string(p) != "pong" {
		t.Fatalf("ping answered %q, %v", p, err)
	}
	send(t, conn, `{"op":"publish","channel":"clicks.home","data":"x","id":1}`)
	// The ack and the publisher's own copy, in either order.
	got := map[string]bool{}
	for range 2 {
		f := read(t, conn)
		got[f.Op+f.Channel] = true
	}
	if !got["ack"] || !got["clicks.home"] {
		t.Fatalf("anonymous publish: %v, want the ack and the own copy", got)
	}
	send(t, conn, `{"op":"publish","channel":"orders.new","data":"x","id":2}`)
	if f := read(t, conn); f.Op != "error" || f.Code != "forbidden" || string(f.ID) != "2" {
		t.Fatalf("publish outside the public set: %+v", f)
	}
	if p := s.bus.Published(); len(p) != 1 || p[0].User != "" || p[0].Client == "" {
		t.Fatalf("published %+v", p)
	}
}

func TestRefreshAndExpiry(t *testing.T) {
	s := startAuth(t, push.Config{})
	tok := s.token(t, "alice", time.Minute, []string{"chat.>", "news.>"}, nil)
	conn, _ := dialToken(t, s, tok, "channel=chat.a&channel=news.a")

	send(t, conn, `{"op":"refresh","token":"`+s.token(t, "bob", time.Hour, []string{">"}, nil)+`","id":"b"}`)
	if f := read(t, conn); f.Op != "error" || f.Code != "forbidden" {
		t.Fatalf("refresh with another sub: %+v", f)
	}
	send(t, conn, `{"op":"refresh","token":"garbage","id":"g"}`)
	if f := read(t, conn); f.Op != "error" || f.Code != "forbidden" {
		t.Fatalf("refresh with garbage: %+v", f)
	}
	// A new token without news.>: the ack carries the new expiry, and the
	// news subscription goes with an error naming it.
	send(t, conn, `{"op":"refresh","token":"`+s.token(t, "alice", 2*time.Minute, []string{"chat.>"}, nil)+`","id":"r"}`)
	if f := read(t, conn); f.Op != "ack" || f.Expires != s.clock.In(2*time.Minute).Unix() {
		t.Fatalf("refresh: %+v", f)
	}
	if f := read(t, conn); f.Op != "error" || f.Code != "forbidden" || f.Channel != "news.a" {
		t.Fatalf("dropped subscription: %+v", f)
	}
	s.bus.Send("news.a", []byte(`1`))
	s.bus.Send("chat.a", []byte(`2`))
	if f := read(t, conn); f.Channel != "chat.a" {
		t.Fatalf("after refresh got %+v, want only chat.a", f)
	}

	// Past the first token's expiry the refreshed connection lives; past
	// the second's it is closed with 4001 within a sweep.
	s.clock.Advance(90 * time.Second)
	s.bus.Send("chat.a", []byte(`3`))
	if f := read(t, conn); f.Channel != "chat.a" {
		t.Fatalf("after the old expiry got %+v", f)
	}
	s.clock.Advance(time.Minute)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := conn.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != int(push.CloseTokenExpired) || ce.Text != "token expired" {
		t.Fatalf("after expiry: %v, want close 4001", err)
	}
	if st := s.hub.Stats(); st.Expired != 1 {
		t.Errorf("expired %d", st.Expired)
	}
}
