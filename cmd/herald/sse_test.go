package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herald-ws/herald/engine/enginetest"
	"github.com/herald-ws/herald/pubsub/history"
)

// openSSE opens GET /sse?query on h with header.
func openSSE(t *testing.T, h *herald, query string, header http.Header) *enginetest.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return enginetest.OpenStream(t, ctx, "http://"+h.srv.Addr()+"/sse?"+query, header)
}

// sseItem is an event as a test compares it: a channel's message is
// "chat.a 3 {..} id=EPOCH:3" (with id=- for none), a herald event is its
// historyFrame string ("ack - chat.a true", "connected").
func sseItem(t *testing.T, ev enginetest.Event) string {
	t.Helper()
	var f historyFrame
	if err := json.Unmarshal([]byte(ev.Data), &f); err != nil {
		t.Fatalf("event %+v: data is not JSON: %v", ev, err)
	}
	f.raw = ev.Data
	switch ev.Event {
	case "":
		id := "-"
		if ev.HasID {
			id = ev.ID
		}
		if f.Op != "" {
			t.Fatalf("a protocol message as a message event: %+v", ev)
		}
		return f.String() + " id=" + id
	case "herald":
		if f.Op == "connected" {
			return "connected"
		}
		return f.String()
	}
	t.Fatalf("event of type %q: %+v", ev.Event, ev)
	return ""
}

// expectEvents reads len(want) events and compares them, in order.
func expectEvents(t *testing.T, st *enginetest.Stream, want ...string) []enginetest.Event {
	t.Helper()
	var got []string
	var evs []enginetest.Event
	for range want {
		ev := st.NextWithin(t, 20*time.Second)
		evs = append(evs, ev)
		got = append(got, sseItem(t, ev))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	return evs
}

// Over the embedded JetStream: a stream's messages on a history channel
// carry id EPOCH:SEQ; a reconnect with that id in Last-Event-ID replays
// what came after it, then acks recovered:true, then goes live with no gap
// and no duplicate; Last-Event-ID wins over the URL's since; an id of
// another epoch replays the whole stream with recovered:false; channels
// without history get no id.
func TestSSEResumeWithLastEventID(t *testing.T) {
	h := startHistoryHerald(t, "127.0.0.1:0", "127.0.0.1:-1", t.TempDir(), history.Config{Subjects: []string{"chat.>"}})
	st := openSSE(t, h.herald, "channel=chat.a&channel=plain", nil)
	expectEvents(t, st, "connected")
	h.publish(t, "chat.a", `{"n":1}`, "chat.a", `{"n":2}`, "chat.a", `{"n":3}`)
	evs := expectEvents(t, st, `chat.a 1 {"n":1} id=`+epochOf(t, h)+`:1`, `chat.a 2 {"n":2} id=`+epochOf(t, h)+`:2`, `chat.a 3 {"n":3} id=`+epochOf(t, h)+`:3`)
	if err := h.nc.Publish("plain", []byte(`"p"`)); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, st, `plain 0 "p" id=-`)
	st.Resp.Body.Close()
	h.publish(t, "chat.a", `{"n":4}`, "chat.a", `{"n":5}`) // while away
	epoch := epochOf(t, h)
	lastID := evs[1].ID // the client saw 3, but say it kept 2: the replay starts after what it names

	tests := []struct {
		name   string
		query  string
		header string
		want   []string
	}{
		{"Last-Event-ID", "channel=chat.a", lastID, []string{
			`chat.a 3 {"n":3} id=` + epoch + `:3`, `chat.a 4 {"n":4} id=` + epoch + `:4`, `chat.a 5 {"n":5} id=` + epoch + `:5`, `ack - chat.a true`}},
		{"Last-Event-ID over the URL's since", "channel=chat.a&since=1", epoch + ":4", []string{
			`chat.a 5 {"n":5} id=` + epoch + `:5`, `ack - chat.a true`}},
		{"URL since alone", "channel=chat.a&since=4&epoch=" + epoch, "", []string{
			`chat.a 5 {"n":5} id=` + epoch + `:5`, `ack - chat.a true`}},
		{"another epoch", "channel=chat.a", "1:4", []string{
			`chat.a 1 {"n":1} id=` + epoch + `:1`, `chat.a 2 {"n":2} id=` + epoch + `:2`, `chat.a 3 {"n":3} id=` + epoch + `:3`,
			`chat.a 4 {"n":4} id=` + epoch + `:4`, `chat.a 5 {"n":5} id=` + epoch + `:5`, `ack - chat.a false`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var header http.Header
			if tt.header != "" {
				header = http.Header{"Last-Event-Id": {tt.header}}
			}
			st := openSSE(t, h.herald, tt.query, header)
			expectEvents(t, st, append([]string{"connected"}, tt.want...)...)
		})
	}
	// Live right after the seam, once each.
	resumed := openSSE(t, h.herald, "channel=chat.a", http.Header{"Last-Event-Id": {epoch + ":5"}})
	expectEvents(t, resumed, "connected", "ack - chat.a true")
	h.publish(t, "chat.a", `"live"`)
	expectEvents(t, resumed, `chat.a 6 "live" id=`+epoch+`:6`)
}

// epochOf is the epoch of h's chat stream, from a stream's ack.
func epochOf(t *testing.T, h *historyHerald) string {
	t.Helper()
	st := h.history.For("chat.a")
	if st == nil {
		t.Fatal("no stream for chat.a")
	}
	return st.Epoch()
}

// /sse counts in /metrics, shows as format sse in /debug/connections,
// and --sse=false (NoSSE) leaves it unserved.
func TestSSEMetrics(t *testing.T) {
	h := startTestHerald(t, heraldConfig{Admin: "127.0.0.1:0"})
	st := openSSE(t, h, "channel=chat.a", nil)
	expectEvents(t, st, "connected")
	var top adminConnections
	adminGet(t, h.admin.Addr(), "/debug/connections", &top)
	if len(top.Connections) != 1 || top.Connections[0].Format != "sse" || !slices.Equal(top.Connections[0].Channels, []string{"chat.a"}) {
		t.Fatalf("/debug/connections: %+v, want the stream with format sse", top)
	}
	metrics := func() string {
		resp, err := http.Get("http://" + h.srv.Addr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	for _, want := range []string{"herald_sse_connections 1\n", "herald_sse_connections_total 1\n", "herald_connections 1\n"} {
		if m := metrics(); !strings.Contains(m, want) {
			t.Fatalf("/metrics has no %q", want)
		}
	}
	st.Resp.Body.Close()
	enginetest.WaitFor(t, 20*time.Second, "the stream to close", func() bool { return strings.Contains(metrics(), "herald_sse_connections 0\n") })

	off := startTestHerald(t, heraldConfig{NoSSE: true})
	resp, err := http.Get("http://" + off.srv.Addr() + "/sse?channel=a")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("/sse with NoSSE answered %d", resp.StatusCode)
	}
}

// sseRestartPage follows chat.k with an EventSource from another origin,
// as a page would: every message in order, and the herald events.
const sseRestartPage = `<!doctype html><meta charset="utf-8"><title>sse</title><script>
window.messages = []; window.herald = []; window.errors = 0; window.order = [];
const es = new EventSource(%q);
es.onmessage = (e) => { const m = JSON.parse(e.data); messages.push(m.seq + " " + JSON.stringify(m.data) + " " + e.lastEventId); order.push(m.seq); };
es.addEventListener("herald", (e) => { const m = JSON.parse(e.data); herald.push(m); order.push(m.op); });
es.addEventListener("close", (e) => { order.push("close " + e.data); });
es.onerror = () => { errors++; };
</script>`

// An EventSource in Chromium on a history channel survives a kill -9 and
// restart of Herald (same --data-dir), then a SIGTERM (a drain) and
// restart: it reconnects by itself with Last-Event-ID, and the page has
// every message exactly once, in order, and hears recovered:true each
// time.
func TestSSEInBrowserSurvivesRestart(t *testing.T) {
	browser := newBrowser(t)
	dir := t.TempDir()
	addr, natsAddr := freeAddr(t), freeAddr(t)
	// A retry of a few seconds: the messages published right after the
	// restart are, most likely, stored before the browser is back, so
	// that it gets them from the replay (the test holds either way).
	args := []string{"--history", "chat.>", "--data-dir", dir, "--sse-retry", "3s", "--drain-timeout", "500ms"}
	cmd, _, natsURL := startHeraldProcessAt(t, addr, natsAddr, args...)
	publish := func(natsURL string, from, to int) { publishNumbered(t, natsURL, "chat.k", from, to) }
	pages := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, sseRestartPage, "http://"+addr+"/sse?channel=chat.k")
	}))
	t.Cleanup(pages.Close)
	page := openPage(t, browser, pages.URL+"/")
	waitPage[int](t, page, 20*time.Second, "the greeting", `herald.filter((m) => m.op === "connected").length`, `(n) => n === 1`)
	publish(natsURL, 1, 20)
	waitPage[int](t, page, 20*time.Second, "20 messages", `messages.length`, `(n) => n === 20`)

	if err := cmd.Process.Kill(); err != nil { // kill -9
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitPage[int](t, page, 20*time.Second, "the EventSource to see the loss", `errors`, `(n) => n >= 1`)
	cmd, _, natsURL = startHeraldProcessAt(t, addr, natsAddr, args...)
	publish(natsURL, 21, 30) // stored before the browser is back, most likely
	waitPage[int](t, page, 30*time.Second, "the reconnect's greeting", `herald.filter((m) => m.op === "connected").length`, `(n) => n === 2`)
	publish(natsURL, 31, 40)
	waitPage[int](t, page, 30*time.Second, "40 messages", `messages.length`, `(n) => n === 40`)

	// A graceful restart: the drain's close event, then refusals that tell
	// the browser to come back (a 503 would make it give up), then the new
	// process.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd, 20*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	_, _, natsURL = startHeraldProcessAt(t, addr, natsAddr, args...)
	publish(natsURL, 41, 50)
	waitPage[int](t, page, 40*time.Second, "the second reconnect's greeting", `herald.filter((m) => m.op === "connected").length`, `(n) => n === 3`)
	publish(natsURL, 51, 60)
	got := waitPage[[]string](t, page, 30*time.Second, "60 messages", `messages`, `(m) => m.length >= 60`)
	acks := waitPage[[]map[string]any](t, page, 10*time.Second, "the resumes' acks", `herald.filter((m) => m.op === "ack")`, `(a) => a.length === 2`)
	for _, ack := range acks {
		if ack["recovered"] != true || ack["channel"] != "chat.k" || ack["epoch"] != acks[0]["epoch"] {
			t.Fatalf("resume acks %v, want recovered true on chat.k, one epoch", acks)
		}
	}
	epoch, _ := acks[0]["epoch"].(string)
	if len(got) != 60 {
		t.Fatalf("%d messages, want 60:\n%s", len(got), strings.Join(got, "\n"))
	}
	for i, m := range got {
		if want := fmt.Sprintf("%d %d %s:%d", i+1, i+1, epoch, i+1); m != want {
			t.Fatalf("message %d is %q, want %q (all:\n%s)", i+1, m, want, strings.Join(got, "\n"))
		}
	}
	// Whether 21 to 30 came from the replay (before the ack) or live
	// depends on when the browser came back; either way each came once.
	order := waitPage[[]any](t, page, 10*time.Second, "the order", `order`, `(o) => true`)
	t.Logf("events in order (seq, the herald op, or close and its data): %v", order)
	if !slices.Contains(order, any("close 1001 server shutting down")) {
		t.Errorf("the page saw no drain close event")
	}
	if errs := pageExceptions(page); len(errs) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(errs, "\n"))
	}
}
