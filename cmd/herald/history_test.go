package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/pubsub/history"
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
	switch f.Op {
	case "":
		return fmt.Sprintf("%s %d %s", f.Channel, f.Seq, f.Data)
	case "ack":
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
	hc := heraldConfig{
		Engine: engine.Config{
			Addr:   addr,
			Loops:  2,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		},
		NATSListen: natsAddr,
		History:    &cfg,
		DataDir:    dataDir,
	}
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

	// Live after a resume: the next message once, right after the ack.
	conn := dialWS(t, h.herald, "")
	sendCommand(t, conn, `{"op":"subscribe","channel":"chat.>","since":2,"id":"g"}`)
	expectFrames(t, conn, `chat.a 3 {"n":3}`, `ack "g" chat.> true`)
	h.publish(t, "chat.b", `"b4"`)
	expectFrames(t, conn, `chat.b 4 "b4"`)

	// Snapshot: the latest of every subject.
	h.publish(t, "prices.x", "1", "prices.y", "2", "prices.x", "3")
	snap := dialWS(t, h.herald, "")
	sendCommand(t, snap, `{"op":"subscribe","channel":"prices.*","last":true,"id":"s"}`)
	expectFrames(t, snap, `prices.y 6 2`, `prices.x 7 3`, `ack "s" prices.* true`)
	urlSnap := dialWS(t, h.herald, "channel=prices.*&last=1")
	expectFrames(t, urlSnap, `prices.y 6 2`, `prices.x 7 3`, `ack - prices.* true`)

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
}
