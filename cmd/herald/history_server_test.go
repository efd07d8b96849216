package main

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// historyServer is a small real WebSocket server (gorilla) on a loopback
// port that plays Herald's history and resume contract as a test scripts
// it, one connection at a time: seq in envelopes, since and epoch in
// subscribes, acks with recovered and epoch. It scripts what a real Herald
// cannot be made to do on cue (a stream recreated between two reconnects,
// acks in a chosen order, refusals), to test what herald sub and herald.js
// send and do; history_test.go runs them against a real Herald with
// --history end to end. It also serves the demo pages (web/)
// and any extra pages a test gives, so that a browser can load herald.js
// from it.
type historyServer struct {
	srv      *httptest.Server
	conns    chan *historyConn
	upgrades atomic.Int32 // WebSocket upgrade requests, refused ones included

	mu               sync.Mutex
	refuse           int    // answer upgrades with this status instead; 0 accepts
	refuseRetryAfter string // its Retry-After
}

// historyConn is one accepted connection, with the query of its upgrade.
type historyConn struct {
	conn   *websocket.Conn
	query  url.Values
	frames chan []byte // the client's text frames; closed once it is gone
}

// historyCommand is an in-band command a client sent.
type historyCommand struct {
	Op      string          `json:"op"`
	Channel string          `json:"channel"`
	ID      json.RawMessage `json:"id"`
	Since   *uint64         `json:"since"`
	Epoch   *string         `json:"epoch"`
	Last    bool            `json:"last"`
	raw     string
}

func startHistoryServer(t *testing.T, pages map[string]string) *historyServer {
	t.Helper()
	h := &historyServer{conns: make(chan *historyConn, 16)}
	web, err := fs.Sub(webFiles, "web")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServerFS(web))
	for path, body := range pages {
		mux.HandleFunc(path, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write([]byte(body))
		})
	}
	mux.HandleFunc("/ws", h.serveWS)
	h.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		h.srv.CloseClientConnections()
		h.srv.Close()
	})
	return h
}

// url is the server's WebSocket endpoint.
func (h *historyServer) url() string { return "ws" + strings.TrimPrefix(h.srv.URL, "http") + "/ws" }

// refuseUpgrades makes the server answer every upgrade from now on with
// status (and a Retry-After if retryAfter is not ""); 0 accepts them again.
func (h *historyServer) refuseUpgrades(status int, retryAfter string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.refuse, h.refuseRetryAfter = status, retryAfter
}

func (h *historyServer) serveWS(w http.ResponseWriter, r *http.Request) {
	h.upgrades.Add(1)
	h.mu.Lock()
	status, retryAfter := h.refuse, h.refuseRetryAfter
	h.mu.Unlock()
	if status != 0 {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		http.Error(w, "refused by the test", status)
		return
	}
	conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &historyConn{conn: conn, query: r.URL.Query(), frames: make(chan []byte, 64)}
	go func() {
		defer close(c.frames)
		for {
			kind, msg, err := conn.ReadMessage() // answers pings and close frames too
			if err != nil {
				return
			}
			if kind == websocket.TextMessage {
				c.frames <- msg
			}
		}
	}()
	h.conns <- c
}

// next waits for the next accepted connection.
func (h *historyServer) next(t *testing.T) *historyConn {
	t.Helper()
	select {
	case c := <-h.conns:
		t.Cleanup(func() { c.conn.Close() })
		return c
	case <-time.After(20 * time.Second):
		t.Fatalf("no connection to the history server within 20s (%d upgrade requests)", h.upgrades.Load())
		return nil
	}
}

// greet sends Herald's greeting of a JSON-format connection.
func (c *historyConn) greet(t *testing.T, client string) {
	t.Helper()
	c.send(t, `{"op":"connected","client":"`+client+`","user":"","expires":0}`)
}

// command returns the client's next command, answering application pings
// ({"op":"ping"}) on the way.
func (c *historyConn) command(t *testing.T) historyCommand {
	t.Helper()
	for {
		select {
		case msg, ok := <-c.frames:
			if !ok {
				t.Fatal("the client closed the connection instead of sending a command")
			}
			var cmd historyCommand
			if err := json.Unmarshal(msg, &cmd); err != nil {
				t.Fatalf("the client sent %q: %v", msg, err)
			}
			cmd.raw = string(msg)
			if cmd.Op == "ping" {
				c.send(t, `{"op":"pong"}`)
				continue
			}
			return cmd
		case <-time.After(20 * time.Second):
			t.Fatal("no command from the client within 20s")
		}
	}
}

// subscribes reads n subscribe commands, keyed by channel.
func (c *historyConn) subscribes(t *testing.T, n int) map[string]historyCommand {
	t.Helper()
	got := make(map[string]historyCommand)
	for range n {
		cmd := c.command(t)
		if cmd.Op != "subscribe" {
			t.Fatalf("the client sent %s, want a subscribe", cmd.raw)
		}
		got[cmd.Channel] = cmd
	}
	return got
}

// send writes a text frame.
func (c *historyConn) send(t *testing.T, frame string) {
	t.Helper()
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		t.Fatalf("send %s: %v", frame, err)
	}
}

// envelope sends a message of a history channel.
func (c *historyConn) envelope(t *testing.T, channel string, seq uint64, data string) {
	t.Helper()
	c.send(t, fmt.Sprintf(`{"channel":%q,"seq":%d,"data":%s}`, channel, seq, data))
}

// ack answers cmd, a subscribe to a history channel, with epoch and, for
// one that asked for since or last, recovered. A nil cmd.ID gives the ack
// of a URL channel, without an id.
func (c *historyConn) ack(t *testing.T, cmd historyCommand, epoch string, recovered bool) {
	t.Helper()
	frame := `{"op":"ack"`
	if cmd.ID != nil {
		frame += `,"id":` + string(cmd.ID)
	}
	frame += `,"channel":` + strconv.Quote(cmd.Channel)
	if cmd.Since != nil || cmd.Last {
		frame += `,"recovered":` + strconv.FormatBool(recovered)
	}
	c.send(t, frame+`,"epoch":`+strconv.Quote(epoch)+`}`)
}

// close closes the connection with code and reason, as Herald does.
func (c *historyConn) close(t *testing.T, code int, reason string) {
	t.Helper()
	_ = c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	c.conn.Close()
}
