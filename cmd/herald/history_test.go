package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/enginetest"
	"github.com/herald-ws/herald/pubsub/history"
	"github.com/herald-ws/herald/pubsub/natstest"
)

// historyFrame is any frame Herald sends on a history channel: an
// envelope with seq, or an ack with recovered and epoch.
type historyFrame struct {
	Op        string          `json:"op"`
	ID        json.RawMessage `json:"id"`
	Channel   string          `json:"channel"`
	Seq       uint64          `json:"seq"`
	Data      json.RawMessage `json:"data"`
	Recovered *bool           `json:"recovered"`
	Epoch     *string         `json:"epoch"`
	Code      string          `json:"code"`
	Message   string          `json:"message"`
	raw       string
}

// String is the frame as a test compares it: "chat.a 3 {..}" for an
// envelope, "ack id channel recovered" for an ack.
func (f historyFrame) String() string {
	switch {
	case f.Op == "" && f.Channel == "":
		return f.raw // a raw payload
	case f.Op == "":
		return fmt.Sprintf("%s %d %s", f.Channel, f.Seq, f.Data)
	case f.Op == "ack":
		rec := "-"
		if f.Recovered != nil {
			rec = strconv.FormatBool(*f.Recovered)
		}
		id := string(f.ID)
		if id == "" {
			id = "-"
		}
		return fmt.Sprintf("ack %s %s %s", id, f.Channel, rec)
	}
	return f.raw
}

func readHistoryFrame(t testing.TB, conn *websocket.Conn) historyFrame {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, msg, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var f historyFrame
	if err := json.Unmarshal(msg, &f); err != nil {
		t.Fatalf("frame %q: %v", msg, err)
	}
	f.raw = string(msg)
	return f
}

// expectFrames reads len(want) frames and compares them, in order.
func expectFrames(t testing.TB, conn *websocket.Conn, want ...string) []historyFrame {
	t.Helper()
	var got []historyFrame
	var gotS []string
	for range want {
		f := readHistoryFrame(t, conn)
		got = append(got, f)
		gotS = append(gotS, f.String())
	}
	if strings.Join(gotS, "\n") != strings.Join(want, "\n") {
		t.Fatalf("frames:\n%s\nwant:\n%s", strings.Join(gotS, "\n"), strings.Join(want, "\n"))
	}
	return got
}

// historyHerald is a Herald serving history, with what a test needs to
// publish into its stream.
type historyHerald struct {
	*herald
	js jetstream.JetStream
	nc *nats.Conn
}

// startHistoryHerald starts Herald with --history on the embedded NATS,
// JetStream under dataDir, on fixed addresses (so that a restart is found
// where clients look).
func startHistoryHerald(t testing.TB, addr, natsAddr, dataDir string, cfg history.Config) *historyHerald {
	t.Helper()
	return startHistoryHeraldConfig(t, heraldConfig{NATSListen: natsAddr, DataDir: dataDir, Engine: engine.Config{Addr: addr}}, cfg)
}

// startHistoryHeraldConfig is startHistoryHerald with more of Herald's
// configuration (an external NATS, the demo pages).
func startHistoryHeraldConfig(t testing.TB, hc heraldConfig, cfg history.Config) *historyHerald {
	t.Helper()
	hc.Engine.Loops = 2
	hc.Engine.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	hc.History = &cfg
	addr := hc.Engine.Addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		h, err := startHerald(hc)
		if err == nil {
			t.Cleanup(func() { stopHerald(t, h) })
			return newHistoryHerald(t, h)
		}
		if time.Now().After(deadline) {
			t.Fatalf("start Herald with history on %s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func newHistoryHerald(t testing.TB, h *herald) *historyHerald {
	t.Helper()
	nc, err := nats.Connect(h.broker.ClientURL(), nats.Name("history-test-publisher"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &historyHerald{herald: h, js: js, nc: nc}
}

// publish stores subject/data pairs in the stream, each acked by
// JetStream, and returns their sequences.
func (h *historyHerald) publish(t testing.TB, subjectData ...string) []uint64 {
	t.Helper()
	var seqs []uint64
	for i := 0; i+1 < len(subjectData); i += 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ack, err := h.js.Publish(ctx, subjectData[i], []byte(subjectData[i+1]))
		cancel()
		if err != nil {
			t.Fatalf("publish %s: %v", subjectData[i], err)
		}
		seqs = append(seqs, ack.Sequence)
	}
	return seqs
}

func sendCommand(t testing.TB, conn *websocket.Conn, cmd string) {
	t.Helper()
	if err := conn.WriteMessage(websocket.TextMessage, []byte(cmd)); err != nil {
		t.Fatalf("send %s: %v", cmd, err)
	}
}

// The history contract over a real socket and the embedded JetStream:
// envelopes carry seq; a resume in band and in the URL replays what came
// after since, then acks recovered:true with the epoch, then live with no
// gap and no duplicate; a snapshot gives the latest message of each
// subject; another epoch, a since beyond the stream and a purge give
// recovered:false; channels outside --history are unchanged.
func TestHistoryResumeAndSnapshot(t *testing.T) {
	h := startHistoryHerald(t, "127.0.0.1:0", "127.0.0.1:-1", t.TempDir(), history.Config{Subjects: []string{"chat.>", "prices.>"}})

	live := dialWS(t, h.herald, "channel=chat.a")
	h.publish(t, "chat.a", `{"n":1}`, "chat.a", `{"n":2}`, "chat.a", `{"n":3}`)
	expectFrames(t, live, `chat.a 1 {"n":1}`, `chat.a 2 {"n":2}`, `chat.a 3 {"n":3}`)

	plain := dialWS(t, h.herald, "")
	sendCommand(t, plain, `{"op":"subscribe","channel":"chat.a","id":"p"}`)
	ack := expectFrames(t, plain, "ack \"p\" chat.a -")[0]
	epoch := *ack.Epoch
	if _, err := strconv.ParseInt(epoch, 10, 64); err != nil {
		t.Fatalf("epoch %q, want the stream's creation time in unix nanoseconds", epoch)
	}
	sendCommand(t, plain, `{"op":"subscribe","channel":"other","id":"o"}`)
	if f := readHistoryFrame(t, plain); f.raw != `{"op":"ack","id":"o"}` {
		t.Fatalf("ack of a channel without history: %s", f.raw)
	}

	tests := []struct {
		name  string
		query string
		cmd   string
		want  []string
	}{
		{"in band since 1", "", `{"op":"subscribe","channel":"chat.a","since":1,"epoch":"` + epoch + `","id":"7"}`,
			[]string{`chat.a 2 {"n":2}`, `chat.a 3 {"n":3}`, `ack "7" chat.a true`}},
		{"in band since 3 (nothing missed)", "", `{"op":"subscribe","channel":"chat.a","since":3,"id":7}`,
			[]string{`ack 7 chat.a true`}},
		{"URL since 2", "channel=chat.a&since=2&epoch=" + epoch, "",
			[]string{`chat.a 3 {"n":3}`, `ack - chat.a true`}},
		{"URL since 1, raw: payloads, no ack", "channel=chat.a&since=1&format=raw", "",
			[]string{`{"n":2}`, `{"n":3}`}},
		{"other epoch", "", `{"op":"subscribe","channel":"chat.a","since":2,"epoch":"1","id":"e"}`,
			[]string{`chat.a 1 {"n":1}`, `chat.a 2 {"n":2}`, `chat.a 3 {"n":3}`, `ack "e" chat.a false`}},
		{"since beyond the stream", "", `{"op":"subscribe","channel":"chat.a","since":99,"id":"b"}`,
			[]string{`ack "b" chat.a false`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := dialWS(t, h.herald, tt.query)
			if tt.cmd != "" {
				sendCommand(t, conn, tt.cmd)
			}
			expectFrames(t, conn, tt.want...)
		})
	}

	// Permissions apply to since and last as to any subscribe.
	for _, cmd := range []string{
		`{"op":"subscribe","channel":"*.a","since":0,"id":"f"}`,
		`{"op":"subscribe","channel":"_HERALD.HERALD.chat.a","last":true,"id":"f"}`,
	} {
		conn := dialWS(t, h.herald, "")
		sendCommand(t, conn, cmd)
		if f := readHistoryFrame(t, conn); f.Op != "error" || f.Code != "forbidden" {
			t.Errorf("%s: %s, want a forbidden error and no replay", cmd, f.raw)
		}
	}

	// Overlap: a pattern and a subject it covers, both resumed from the
	// same position, get each message once; live ones too.
	both := dialWS(t, h.herald, "")
	sendCommand(t, both, `{"op":"subscribe","channel":"chat.>","since":0,"id":"p"}`)
	sendCommand(t, both, `{"op":"subscribe","channel":"chat.a","since":0,"id":"s"}`)
	var envelopes, acks []string
	for range 5 {
		f := readHistoryFrame(t, both)
		if f.Op == "ack" {
			acks = append(acks, f.String())
		} else {
			envelopes = append(envelopes, f.String())
		}
	}
	slices.Sort(acks)
	if got := strings.Join(envelopes, ",") + " " + strings.Join(acks, ","); got != `chat.a 1 {"n":1},chat.a 2 {"n":2},chat.a 3 {"n":3} ack "p" chat.> true,ack "s" chat.a true` {
		t.Fatalf("overlapping resumes: %s", got)
	}

	// Live after a resume: the next message once, right after the ack.
	conn := dialWS(t, h.herald, "")
	sendCommand(t, conn, `{"op":"subscribe","channel":"chat.>","since":2,"id":"g"}`)
	expectFrames(t, conn, `chat.a 3 {"n":3}`, `ack "g" chat.> true`)
	h.publish(t, "chat.b", `"b4"`)
	expectFrames(t, conn, `chat.b 4 "b4"`)
	expectFrames(t, both, `chat.b 4 "b4"`)
	h.publish(t, "chat.a", `"a5"`)
	expectFrames(t, both, `chat.a 5 "a5"`)
	expectPong(t, both, 9) // and nothing else before it
	expectFrames(t, live, `chat.a 5 "a5"`)

	// Snapshot: the latest of every subject.
	h.publish(t, "prices.x", "1", "prices.y", "2", "prices.x", "3")
	snap := dialWS(t, h.herald, "")
	sendCommand(t, snap, `{"op":"subscribe","channel":"prices.*","last":true,"id":"s"}`)
	expectFrames(t, snap, `prices.y 7 2`, `prices.x 8 3`, `ack "s" prices.* true`)
	urlSnap := dialWS(t, h.herald, "channel=prices.*&last=1")
	expectFrames(t, urlSnap, `prices.y 7 2`, `prices.x 8 3`, `ack - prices.* true`)

	// A purge: the messages after since are gone.
	str, err := h.js.Stream(context.Background(), history.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := str.Purge(context.Background()); err != nil {
		t.Fatal(err)
	}
	purged := dialWS(t, h.herald, "")
	sendCommand(t, purged, `{"op":"subscribe","channel":"chat.a","since":1,"id":"x"}`)
	expectFrames(t, purged, `ack "x" chat.a false`)

	// /metrics counts what the resumes cost.
	m := scrape(t, h.srv.Addr())
	st := h.history.Stats()
	for name, want := range map[string]uint64{
		"herald_history_reads_total": st.Reads, "herald_history_replays_total": st.Replays,
		"herald_history_tail_hits_total": st.TailHits, "herald_history_info_calls_total": st.Infos,
	} {
		if f := m[name]; f == nil || uint64(f.GetMetric()[0].GetCounter().GetValue()) != want || want == 0 {
			t.Errorf("%s: %v, want %d (and not 0)", name, f, want)
		}
	}
}

// historyClient is a gorilla client following one history channel: it
// keeps the seq of what it read, and the epoch, to resume.
type historyClient struct {
	conn  *websocket.Conn
	seqs  []uint64
	data  []string
	epoch string
}

// read takes n envelopes (acks are noted for their epoch); it stops early,
// without failing, when the connection breaks and broken is true.
func (c *historyClient) read(t testing.TB, n int, broken bool) {
	t.Helper()
	for got := 0; got < n; {
		_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, msg, err := c.conn.ReadMessage()
		if err != nil {
			if broken {
				return
			}
			t.Fatalf("read after %d of %d: %v", got, n, err)
		}
		var f historyFrame
		if err := json.Unmarshal(msg, &f); err != nil {
			t.Fatalf("frame %q: %v", msg, err)
		}
		switch {
		case f.Op == "ack":
			if f.Recovered != nil && !*f.Recovered {
				t.Fatalf("resume acked recovered:false: %s", msg)
			}
			if f.Epoch != nil {
				c.epoch = *f.Epoch
			}
		case f.Op == "":
			c.seqs = append(c.seqs, f.Seq)
			c.data = append(c.data, string(f.Data))
			got++
		}
	}
}

// kill -9 Herald while a client is behind and another (herald sub)
// follows: started again with the same --data-dir, the stream is there
// with the same epoch, the client resumes with since from the last seq it
// read and gets every later message once, in order, including those
// published while it was away; herald sub, reconnecting by itself, prints
// every message once, in order.
func TestHistoryResumeAfterKill9(t *testing.T) {
	dir := t.TempDir()
	addr, natsAddr := freeAddr(t), freeAddr(t)
	args := []string{"--history", "chat.>", "--data-dir", dir}
	cmd, _, natsURL := startHeraldProcessAt(t, addr, natsAddr, args...)

	publish := func(from, to int) { publishNumbered(t, natsURL, "chat.k", from, to) }
	sub := startSub(t, subConfig{URL: "ws://" + addr + "/ws", Channels: []string{"chat.k"},
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 300 * time.Millisecond})
	waitOutput(t, &sub.stderr, "subscribed to chat.k\n", 20*time.Second)
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws?channel=chat.k", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &historyClient{conn: conn}
	expectConnected(t, conn)
	sendCommand(t, conn, `{"op":"subscribe","channel":"chat.k","id":1}`) // for the epoch, which the URL's channels are not acked with
	if ack := readHistoryFrame(t, conn); ack.Epoch == nil {
		t.Fatalf("ack %s has no epoch", ack.raw)
	} else {
		c.epoch = *ack.Epoch
	}
	publish(1, 50)
	waitOutput(t, &sub.stdout, "chat.k 50\n", 20*time.Second) // stored and passed on
	c.read(t, 10, false)                                      // the client is behind: 40 more wait for it
	if err := cmd.Process.Kill(); err != nil {                // kill -9
		t.Fatal(err)
	}
	_ = cmd.Wait()
	c.read(t, 50, true) // what reached its socket before the kill
	conn.Close()
	waitOutput(t, &sub.stderr, "reconnecting in ", 20*time.Second)

	startHeraldProcessAt(t, addr, natsAddr, args...)
	publish(51, 60) // while the client is away
	last := c.seqs[len(c.seqs)-1]
	conn, _, err = websocket.DefaultDialer.Dial(fmt.Sprintf("ws://%s/ws?channel=chat.k&since=%d&epoch=%s", addr, last, c.epoch), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c.conn = conn
	expectConnected(t, conn)
	c.read(t, 60-int(last), false)
	if ack := readHistoryFrame(t, conn); ack.String() != "ack - chat.k true" || *ack.Epoch != c.epoch {
		t.Fatalf("after the replay: %s; want the ack, recovered, epoch %s as before the kill", ack.raw, c.epoch)
	}
	publish(61, 62)
	c.read(t, 2, false)
	for i, seq := range c.seqs {
		if seq != uint64(i+1) || c.data[i] != strconv.Itoa(i+1) {
			t.Fatalf("message %d: seq %d data %s; want seq and data %d (all: %v)", i, seq, c.data[i], i+1, c.seqs)
		}
	}
	if len(c.seqs) != 62 {
		t.Fatalf("%d messages, want 62", len(c.seqs))
	}
	waitOutput(t, &sub.stdout, "chat.k 62\n", 20*time.Second)
	var want strings.Builder
	for i := 1; i <= 62; i++ {
		fmt.Fprintf(&want, "chat.k %d\n", i)
	}
	if got := sub.stdout.String(); got != want.String() {
		t.Errorf("herald sub printed:\n%s\nwant 1 to 62 once each, in order", got)
	}
}

// On an external nats-server (a separate process with JetStream), Herald
// serves the app's own stream: one that does not republish is refused at
// startup with the nats stream edit line to run; --history-manage adds the
// republish. Messages carry seq, a restart of nats-server loses nothing
// the stream stored, and a resume after it replays from the stream.
func TestHistoryExternalNATS(t *testing.T) {
	srv := natstest.StartConfig(t, fmt.Sprintf("jetstream { store_dir: %q }", t.TempDir()))
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, err = startHerald(heraldConfig{
		Engine:  engine.Config{Addr: "127.0.0.1:0", Loops: 2, Logger: logger},
		NATS:    srv.URL(),
		History: &history.Config{Streams: []string{"ORDERS"}, Logger: logger},
	})
	wantLine := "nats stream edit ORDERS --republish-source '>' --republish-destination '_HERALD.ORDERS.>'"
	if err == nil || !strings.Contains(err.Error(), wantLine) {
		t.Fatalf("start on a stream without republish: %v; want an error with %q", err, wantLine)
	}
	if info, _ := js.Stream(ctx, "ORDERS"); info.CachedInfo().Config.RePublish != nil {
		t.Fatal("Herald changed the app's stream without --history-manage")
	}

	h := newHistoryHerald(t, startTestHerald(t, heraldConfig{
		NATS:    srv.URL(),
		History: &history.Config{Streams: []string{"ORDERS"}, Manage: true, Logger: logger},
	}))
	if info, _ := js.Stream(ctx, "ORDERS"); info.CachedInfo().Config.RePublish == nil {
		t.Fatal("--history-manage did not add the republish")
	}
	live := dialWS(t, h.herald, "")
	sendCommand(t, live, `{"op":"subscribe","channel":"orders.*","id":1}`)
	expectFrames(t, live, "ack 1 orders.* -")
	h.publish(t, "orders.a", "1", "orders.b", "2")
	expectFrames(t, live, "orders.a 1 1", "orders.b 2 2")

	srv.Restart() // killed and started again on its port, with its store
	waitFor(t, 20*time.Second, "Herald reconnected to NATS", func() bool { return h.broker.Stats().Reconnects > 0 && h.broker.Connected() })
	waitFor(t, 20*time.Second, "the publisher reconnected", h.nc.IsConnected)
	settle(t, h.herald)
	h.publish(t, "orders.a", "3")
	expectFrames(t, live, "orders.a 3 3")

	conn := dialWS(t, h.herald, "channel=orders.*&since=1")
	expectFrames(t, conn, "orders.b 2 2", "orders.a 3 3", "ack - orders.* true")
}

// A snapshot over 1,000 subjects: the latest message of each, in one
// round, then the ack; past --max-snapshot it is cut and says
// recovered:false.
func TestHistorySnapshotOf1000Subjects(t *testing.T) {
	h := startHistoryHerald(t, "127.0.0.1:0", "127.0.0.1:-1", t.TempDir(), history.Config{Subjects: []string{"snap.>"}, MaxSnapshot: 1000})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var acks []jetstream.PubAckFuture
	for round := range 2 {
		for i := range 1000 {
			f, err := h.js.PublishAsync(fmt.Sprintf("snap.a.%d", i), fmt.Appendf(nil, `{"round":%d}`, round))
			if err != nil {
				t.Fatal(err)
			}
			acks = append(acks, f)
		}
	}
	select {
	case <-h.js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publishes not acked")
	}
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatal(err)
		}
	}
	h.publish(t, "snap.b.0", `{"round":1}`)
	for _, tt := range []struct {
		pattern   string
		n         int
		recovered bool
	}{{"snap.a.*", 1000, true}, {"snap.>", 1000, false}} {
		conn := dialWS(t, h.herald, "")
		sendCommand(t, conn, `{"op":"subscribe","channel":"`+tt.pattern+`","last":true,"id":1}`)
		seen := make(map[string]bool)
		for range tt.n {
			f := readHistoryFrame(t, conn)
			if f.Op != "" || string(f.Data) != `{"round":1}` || seen[f.Channel] {
				t.Fatalf("%s: %s, want the latest message of a subject not seen yet", tt.pattern, f.raw)
			}
			seen[f.Channel] = true
		}
		if f := readHistoryFrame(t, conn); f.String() != fmt.Sprintf("ack 1 %s %v", tt.pattern, tt.recovered) {
			t.Fatalf("%s: after %d messages %s, want the ack recovered:%v", tt.pattern, tt.n, f.raw, tt.recovered)
		}
	}
}

// herald.js in Chromium against a real Herald with --history: the demo
// page follows prices.*; Herald stops, three prices are stored meanwhile
// (the NATS server, a separate process, stays up), and once Herald is back
// on its port the page resumes with since and epoch by itself and says it
// recovered the three, each on the board once.
func TestHistoryResumeInBrowser(t *testing.T) {
	browser := newBrowser(t)
	srv := natstest.StartConfig(t, fmt.Sprintf("jetstream { store_dir: %q }", t.TempDir()))
	addr := freeAddr(t)
	start := func() *historyHerald {
		return startHistoryHeraldConfig(t, heraldConfig{NATS: srv.URL(), Engine: engine.Config{Addr: addr, HTTP: demoHandlers()}},
			history.Config{Subjects: []string{"prices.>"}})
	}
	h := start()
	price := func(sym string, px float64) {
		t.Helper()
		h.publish(t, "prices."+sym, fmt.Sprintf(`{"sym":%q,"px":%.2f,"chg":0.5,"ts":%d}`, sym, px, time.Now().UnixMilli()))
	}
	page := openPage(t, browser, "http://"+addr+"/")
	waitBoard(t, page, 20*time.Second, "the page subscribed", `(b) => b.state === "open" && b.channels.join(" ").includes("subscribed prices.*")`)
	price("AAPL", 187.10)
	price("MSFT", 410.00)
	waitBoard(t, page, 10*time.Second, "two prices on the board", `(b) => b.rows.length === 2 && b.updates === 2`)

	drainCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.srv.Drain(drainCtx, 0); err != nil {
		t.Fatal(err)
	}
	stopHerald(t, h.herald)
	waitBoard(t, page, 10*time.Second, "the page to notice", `(b) => b.state !== "open"`)
	price("AAPL", 187.20) // stored while the page is away
	price("NVDA", 140.00)
	price("MSFT", 411.00)

	h = start()
	waitPage[string](t, page, 40*time.Second, `"recovered 3 messages"`, `document.querySelector("#recovery").hidden ? "" : document.querySelector("#recovery").textContent`,
		`(text) => text === "Reconnected: recovered 3 messages published while away."`)
	waitBoard(t, page, 10*time.Second, "every price once on the board", `(b) => b.updates === 5 && b.rows.length === 3 && b.reconnects === 1`)
	price("NVDA", 140.50)
	waitBoard(t, page, 10*time.Second, "a live price after the resume", `(b) => b.updates === 6`)
	screenshot(t, page, "demo-recovered-real.png")
	if errs := pageExceptions(page); len(errs) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(errs, "\n"))
	}
}

// Resumes while messages keep coming: clients subscribe with since at
// different moments of a steady stream of publishes, from positions both
// inside the channel's in-memory tail and behind it (read from the
// stream), and each gets every message after its since exactly once, in
// order: no gap and no duplicate at the seam between replay and live.
func TestHistorySeamUnderLoad(t *testing.T) {
	const total = 3000
	h := startHistoryHerald(t, "127.0.0.1:0", "127.0.0.1:-1", t.TempDir(), history.Config{Subjects: []string{"seam.>"}, MaxReplay: total, Size: total, Tail: 60})
	first := dialWS(t, h.herald, "channel=seam.s") // the channel is live before the first publish
	_ = first
	published := make(chan int, total)
	errs := make(chan error, 1)
	go func() {
		for i := 1; i <= total; i++ {
			f, err := h.js.PublishAsync("seam.s", []byte(strconv.Itoa(i)))
			if err != nil {
				errs <- err
				return
			}
			select {
			case <-f.Ok():
			case err := <-f.Err():
				errs <- err
				return
			}
			published <- i
		}
		errs <- nil
	}()
	type result struct {
		since uint64
		seqs  []uint64
		err   error
	}
	results := make(chan result, 32)
	starts := []int{50, 200, 500, 900, 1300, 1700, 2100, 2500, 2900, 2990}
	next := 0
	for n := range published {
		for next < len(starts) && n >= starts[next] {
			since := uint64(starts[next] - 40*(next%3)) // 0, 40 or 80 behind the head
			conn, _, err := websocket.DefaultDialer.Dial("ws://"+h.srv.Addr()+"/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			expectConnected(t, conn)
			sendCommand(t, conn, fmt.Sprintf(`{"op":"subscribe","channel":"seam.s","since":%d,"id":1}`, since))
			go func() {
				r := result{since: since}
				for {
					_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
					_, msg, err := conn.ReadMessage()
					if err != nil {
						r.err = err
						break
					}
					var f historyFrame
					_ = json.Unmarshal(msg, &f)
					if f.Op == "ack" {
						if f.Recovered == nil || !*f.Recovered {
							r.err = fmt.Errorf("ack %s", msg)
							break
						}
						continue
					}
					r.seqs = append(r.seqs, f.Seq)
					if f.Seq >= total {
						break
					}
				}
				results <- r
			}()
			next++
		}
		if n == total {
			break
		}
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	for range starts {
		r := <-results
		if r.err != nil {
			t.Errorf("since %d: %v after %d messages", r.since, r.err, len(r.seqs))
			continue
		}
		for i, seq := range r.seqs {
			if seq != r.since+uint64(i)+1 {
				t.Errorf("since %d: message %d has seq %d, want %d (a gap or a duplicate at the seam)", r.since, i, seq, r.since+uint64(i)+1)
				break
			}
		}
		if want := total - int(r.since); len(r.seqs) != want {
			t.Errorf("since %d: %d messages, want %d", r.since, len(r.seqs), want)
		}
	}
	st := h.history.Stats()
	t.Logf("%d resumes during %d publishes: %d stream reads, %d from the tail", len(starts), total, st.Reads, st.TailHits)
}

// serve refuses history flags that cannot work, saying which and why.
func TestHistoryFlagErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--history-stream", "ORDERS"}, "--history-stream without --history names existing streams of an external NATS"},
		{[]string{"--history", "chat.>", "--history-size", "0"}, "--history-size 0: it must be at least 1"},
		{[]string{"--history", "chat.>", "--history-ttl", "-1s"}, "--history-ttl -1s: it must be positive"},
		{[]string{"--history", "chat.>", "--max-replay", "0"}, "--max-replay 0: it must be at least 1"},
		{[]string{"--history", "chat.>", "--max-snapshot", "-5"}, "--max-snapshot -5: it must be at least 1"},
		{[]string{"--history", "_private.>"}, `subject "_private.>" cannot hold channel history`},
	} {
		var stderr enginetest.Buffer
		args := append([]string{"serve", "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:-1", "--data-dir", dir, "--log-level", "error"}, tt.args...)
		if code := run(args, &stderr, &stderr); code == 0 || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want a failure saying %q", tt.args, code, stderr.String(), tt.want)
		}
	}
}

// publishNumbered publishes from..to, each its own number as text, on
// subject through JetStream, so that each is stored before the next.
func publishNumbered(t *testing.T, natsURL, subject string, from, to int) {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for i := from; i <= to; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := js.Publish(ctx, subject, []byte(strconv.Itoa(i)))
		cancel()
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

// History channels under a --nats-wide pattern share its NATS subscription,
// on the republish destination: one NATS subscription for three personal
// history channels, each message to its own channel only, with its seq,
// and a resume replays from the stream as without the wide pattern.
func TestHistoryUnderWidePattern(t *testing.T) {
	hc := heraldConfig{
		Engine:     engine.Config{Addr: "127.0.0.1:0", Loops: 2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		NATSListen: "127.0.0.1:-1",
		NATSWide:   []string{"user.*"},
		History:    &history.Config{Subjects: []string{"user.>"}},
		DataDir:    t.TempDir(),
	}
	hr, err := startHerald(hc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopHerald(t, hr) })
	h := newHistoryHerald(t, hr)

	conns := map[string]*websocket.Conn{}
	for _, u := range []string{"user.1", "user.2", "user.3"} {
		conns[u] = dialWS(t, h.herald, "channel="+u)
	}
	if n := h.broker.NATSSubscriptions(); n != 1 {
		t.Fatalf("%d NATS subscriptions for three history channels under user.*, want 1", n)
	}
	h.publish(t, "user.2", `{"n":1}`, "user.1", `{"n":2}`, "user.2", `{"n":3}`)
	expectFrames(t, conns["user.2"], `user.2 1 {"n":1}`, `user.2 3 {"n":3}`)
	expectFrames(t, conns["user.1"], `user.1 2 {"n":2}`)

	resumed := dialWS(t, h.herald, "channel=user.2&since=1")
	expectFrames(t, resumed, `user.2 3 {"n":3}`, `ack - user.2 true`)
	h.publish(t, "user.2", `{"n":4}`)
	expectFrames(t, resumed, `user.2 4 {"n":4}`)
	expectFrames(t, conns["user.2"], `user.2 4 {"n":4}`)
	if n := h.broker.NATSSubscriptions(); n != 1 {
		t.Fatalf("%d NATS subscriptions after a resume, want 1", n)
	}
}
