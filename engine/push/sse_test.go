package push_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/enginetest"
	"github.com/herald-ws/herald/engine/push"
)

// openSSE opens the push event stream with query, bounded by the test.
func (s *testServer) openSSE(t *testing.T, query string, header http.Header) *enginetest.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return enginetest.OpenStream(t, ctx, "http://"+s.addr+push.StreamPath+"?"+query, header)
}

// heraldEvent reads the next event, which must be a "herald" one, and
// decodes it.
func heraldEvent(t *testing.T, st *enginetest.Stream) frame {
	t.Helper()
	ev := st.NextWithin(t, 10*time.Second)
	if ev.Event != "herald" {
		t.Fatalf("event %+v, want a herald event", ev)
	}
	var f frame
	if err := json.Unmarshal([]byte(ev.Data), &f); err != nil {
		t.Fatalf("herald event %q: %v", ev.Data, err)
	}
	return f
}

// envelopeEvent reads the next event, which must be a channel's message.
func envelopeEvent(t *testing.T, st *enginetest.Stream) (frame, enginetest.Event) {
	t.Helper()
	ev := st.NextWithin(t, 10*time.Second)
	if ev.Event != "" {
		t.Fatalf("event %+v, want a message", ev)
	}
	var f frame
	if err := json.Unmarshal([]byte(ev.Data), &f); err != nil {
		t.Fatalf("message %q: %v", ev.Data, err)
	}
	return f, ev
}

// A stream gets the greeting as a herald event, then every message of its
// channels as an event whose data is the envelope a WebSocket gets (from
// the same message, side by side with one that negotiated
// permessage-deflate and gets it compressed), a multi-line JSON payload
// kept whole, and no id off history channels.
func TestStreamDeliversEnvelopes(t *testing.T) {
	s := startPush(t, engine.Config{Compression: true}, push.Config{CompressionMinSize: -1}, true)
	st := s.openSSE(t, "channel=prices.a&channel=news.*", nil)
	if st.Resp.StatusCode != 200 || st.Resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("answered %d %q", st.Resp.StatusCode, st.Resp.Header.Get("Content-Type"))
	}
	if f := heraldEvent(t, st); f.Op != "connected" || f.Client == "" {
		t.Fatalf("greeting %+v", f)
	}
	d := websocket.Dialer{EnableCompression: true, HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial("ws://"+s.addr+push.Path+"?channel=prices.a", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if !strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
		t.Fatalf("no permessage-deflate agreed: %q", resp.Header.Get("Sec-WebSocket-Extensions"))
	}
	if f := read(t, ws); f.Op != "connected" {
		t.Fatalf("first frame %+v", f)
	}
	for _, tc := range []struct {
		subject, data string
		want          any
	}{
		{"prices.a", `{"px":1}`, map[string]any{"px": 1.0}},
		// Not JSON (a raw line break in a string): a JSON string, whole.
		{"news.x", "{\n  \"title\": \"two\r\nlines\"\n}", "{\n  \"title\": \"two\r\nlines\"\n}"},
		// JSON over several lines: the same JSON.
		{"news.y", "{\n  \"a\": 1\r\n}", map[string]any{"a": 1.0}},
		{"prices.a", `plain text`, "plain text"},
	} {
		s.bus.Send(tc.subject, []byte(tc.data))
		f, ev := envelopeEvent(t, st)
		if f.Channel != tc.subject || ev.HasID {
			t.Fatalf("%q: event %+v", tc.data, ev)
		}
		var got any
		if err := json.Unmarshal(f.Data, &got); err != nil || !jsonEqual(tc.want, got) {
			t.Fatalf("%q: data %s, want %s", tc.data, f.Data, tc.want)
		}
		if tc.subject == "prices.a" {
			if wf := read(t, ws); wf.Channel != tc.subject || string(wf.Data) != string(f.Data) {
				t.Fatalf("WebSocket got %+v, the stream %s", wf, f.Data)
			}
		}
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// A stream's query is checked like an upgrade's, with the same statuses
// before any body; a stream cannot ask for raw payloads, and a
// Last-Event-ID this server could not have sent is refused.
func TestStreamQueryRefusals(t *testing.T) {
	s := startPush(t, engine.Config{}, push.Config{}, true)
	for _, tc := range []struct {
		name, query string
		header      http.Header
		status      int
		reason      string
	}{
		{"no such channel syntax", "channel=a..b", nil, 400, "channel"},
		{"reserved", "channel=_INBOX.x", nil, 403, "reserved"},
		{"raw", "channel=a&format=raw", nil, 400, "format"},
		{"bad since", "channel=a&since=x", nil, 400, "since"},
		{"bad last event id", "channel=a", http.Header{"Last-Event-Id": {"12x"}}, 400, "Last-Event-ID"},
		{"bad epoch in id", "channel=a", http.Header{"Last-Event-Id": {"ab:12"}}, 400, "Last-Event-ID"},
		{"good id, no history", "channel=a", http.Header{"Last-Event-Id": {"1767225600000000000:12"}}, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := s.openSSE(t, tc.query, tc.header)
			if st.Resp.StatusCode != tc.status {
				t.Fatalf("answered %d, want %d", st.Resp.StatusCode, tc.status)
			}
			if tc.status == 200 {
				return
			}
			body, _ := io.ReadAll(st.Resp.Body)
			if !strings.Contains(string(body), tc.reason) || st.Resp.Header.Get("Content-Type") == "text/event-stream" {
				t.Fatalf("body %q (%s), want %q", body, st.Resp.Header.Get("Content-Type"), tc.reason)
			}
		})
	}
}

// Tokens work as for WebSocket, in the query or as a bearer header:
// missing or unpermitted is 401 or 403 before any body; a stream whose
// token expires ends with a close event carrying 4001.
func TestStreamAuthentication(t *testing.T) {
	s := startAuth(t, push.Config{})
	good := s.token(t, "alice", time.Minute, []string{"chat.>"}, nil)
	for _, tc := range []struct {
		name, query string
		header      http.Header
		status      int
	}{
		{"no token", "channel=chat.a", nil, 401},
		{"garbage", "token=abc&channel=chat.a", nil, 401},
		{"not permitted", "token=" + good + "&channel=news.a", nil, 403},
		{"bearer", "channel=chat.a", http.Header{"Authorization": {"Bearer " + good}}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := s.openSSE(t, tc.query, tc.header)
			if st.Resp.StatusCode != tc.status {
				t.Fatalf("answered %d, want %d", st.Resp.StatusCode, tc.status)
			}
			if tc.status == 401 && !strings.HasPrefix(st.Resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("WWW-Authenticate %q", st.Resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	st := s.openSSE(t, "token="+good+"&channel=chat.a", nil)
	if f := heraldEvent(t, st); f.Op != "connected" || f.User != "alice" {
		t.Fatalf("greeting %+v", f)
	}
	s.bus.Send("chat.a", []byte(`1`))
	if f, _ := envelopeEvent(t, st); f.Channel != "chat.a" {
		t.Fatalf("got %+v", f)
	}
	s.clock.Advance(2 * time.Minute)
	ev := st.NextWithin(t, 10*time.Second)
	if ev.Event != "close" || ev.Data != "4001 token expired" {
		t.Fatalf("after expiry: %+v", ev)
	}
	if _, err := st.Next(); err != io.EOF {
		t.Fatalf("after the close event: %v, want the end", err)
	}
}
