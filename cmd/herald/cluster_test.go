package main

// Tests of Herald against a NATS server in another process, as in
// production: one that can die under Herald, and one that several Herald
// instances share.

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/pubsub/natstest"
)

// clusterWait bounds every wait for NATS in these tests.
const clusterWait = 15 * time.Second

// publishTo publishes subject/data pairs from a fresh NATS client of its
// own, as a backend service would, and returns once the server has them.
func publishTo(t testing.TB, url string, subjectData ...string) {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name("cluster-test-publisher"))
	if err != nil {
		t.Fatalf("connect publisher to %s: %v", url, err)
	}
	defer nc.Close()
	for i := 0; i+1 < len(subjectData); i += 2 {
		if err := nc.Publish(subjectData[i], []byte(subjectData[i+1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.FlushTimeout(clusterWait); err != nil {
		t.Fatalf("flush publisher: %v", err)
	}
}

// expectEnvelope reads the next message on conn and checks it.
func expectEnvelope(t testing.TB, conn *websocket.Conn, channel, data string) {
	t.Helper()
	if e := readEnvelope(t, conn); e.Channel != channel || string(e.Data) != data {
		t.Fatalf("got %s %s, want %s %s", e.Channel, e.Data, channel, data)
	}
}

// expectPong sends an in-band ping and waits for its pong: proof that the
// connection is open and served by Herald, not merely not closed yet.
func expectPong(t testing.TB, conn *websocket.Conn, id int) {
	t.Helper()
	if err := conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"op":"ping","id":%d}`, id)); err != nil {
		t.Fatalf("client %d: send ping: %v", id, err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("client %d: read pong: %v", id, err)
	}
	var reply struct {
		Op string
		ID int
	}
	if err := json.Unmarshal(msg, &reply); err != nil || reply.Op != "pong" || reply.ID != id {
		t.Fatalf("client %d: got %q, want a pong with id %d", id, msg, id)
	}
}

// TestNATSOutageClientsStayConnected kills the NATS server under a running
// Herald and brings it back on the same port. WebSocket clients must not
// notice anything but the gap in messages: their connections stay open and
// served throughout, and once NATS is back they receive again on the same
// connections, without resubscribing (Herald's NATS subscriptions are
// re-sent by the client library; the new server knew none of them).
func TestNATSOutageClientsStayConnected(t *testing.T) {
	const clients = 20
	channels := [2]string{"outage.a", "outage.b"}
	srv := natstest.Start(t)
	h := startTestHerald(t, heraldConfig{NATS: srv.URL()})
	waitFor(t, clusterWait, "Herald to connect to NATS", h.broker.Connected)

	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		conns[i] = dialWS(t, h, "channel="+channels[i%2])
	}
	settle(t, h)
	expectAll := func(data string) {
		t.Helper()
		for i, c := range conns {
			expectEnvelope(t, c, channels[i%2], data)
		}
	}
	publishTo(t, srv.URL(), channels[0], `"before"`, channels[1], `"before"`)
	expectAll(`"before"`)
	accepted := h.srv.Stats().Accepted

	srv.Kill()
	waitFor(t, clusterWait, "Herald to notice the outage", func() bool { return !h.broker.Connected() })
	for i, c := range conns {
		expectPong(t, c, i)
	}
	if st := h.srv.Stats(); st.Open != clients {
		t.Fatalf("during the outage Herald has %d connections open, want %d", st.Open, clients)
	}

	srv.Restart()
	waitFor(t, clusterWait, "Herald to reconnect to NATS", h.broker.Connected)
	// Connected means the subscriptions were re-sent; the flush's round
	// trip means the server has processed them.
	settle(t, h)
	publishTo(t, srv.URL(), channels[0], `"after"`, channels[1], `"after"`)
	expectAll(`"after"`)

	if st := h.srv.Stats(); st.Accepted != accepted || st.Open != clients {
		t.Errorf("engine stats %+v: want no new connection since the outage (accepted %d) and %d open", st, accepted, clients)
	}
	// The broker counts in nats.go's callbacks, which run asynchronously.
	waitFor(t, clusterWait, "the reconnect to be counted", func() bool { return h.broker.Stats().Reconnects > 0 })
	if st := h.broker.Stats(); st.Disconnects != 1 || st.Reconnects != 1 {
		t.Errorf("broker stats %+v: want exactly one disconnect and one reconnect", st)
	}
}

// TestTwoInstancesOnOneNATSBothDeliver is scale-out: two Herald instances
// on one NATS each hold their own clients, and one publish reaches the
// subscribers of both, each exactly once (plain NATS subscriptions, not a
// queue group that would hand each message to only one instance).
func TestTwoInstancesOnOneNATSBothDeliver(t *testing.T) {
	const perInstance = 5
	srv := natstest.Start(t)
	instances := []*herald{
		startTestHerald(t, heraldConfig{NATS: srv.URL()}),
		startTestHerald(t, heraldConfig{NATS: srv.URL()}),
	}
	var conns [][]*websocket.Conn
	for i, h := range instances {
		waitFor(t, clusterWait, fmt.Sprintf("instance %d to connect to NATS", i), h.broker.Connected)
		var cs []*websocket.Conn
		for range perInstance {
			cs = append(cs, dialWS(t, h, "channel=scale.news"))
		}
		conns = append(conns, cs)
		settle(t, h)
	}

	// The second message is a marker: a duplicate of the first would arrive
	// before it, so no client has to wait out a silence to rule one out.
	publishTo(t, srv.URL(), "scale.news", `{"n":1}`, "scale.news", `{"n":2}`)
	for i, cs := range conns {
		for _, c := range cs {
			expectEnvelope(t, c, "scale.news", `{"n":1}`)
			expectEnvelope(t, c, "scale.news", `{"n":2}`)
		}
		if got := instances[i].broker.Stats().MessagesIn; got != 2 {
			t.Errorf("instance %d received %d messages from NATS, want 2", i, got)
		}
	}
	expectSilence(t, conns[0][0], 100*time.Millisecond)
	expectSilence(t, conns[1][0], 100*time.Millisecond)
}

// startTarpit listens on a loopback port, accepts every connection and
// never says a word: the NATS server in a URL list that hangs a client's
// connect until its timeout.
func startTarpit(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return "nats://" + l.Addr().String()
}

// TestNATSDownNeverStallsTheLoops holds NATS down with a tarpit in the URL
// list, so that nats.go spends its reconnects stuck in dials, holding its
// connection lock. The event loops never call it: pings are answered at
// once, the reaper reaps, upgrades are answered, and a subscription made
// meanwhile completes when NATS returns.
func TestNATSDownNeverStallsTheLoops(t *testing.T) {
	srv := natstest.Start(t)
	h := startTestHerald(t, heraldConfig{
		NATS: startTarpit(t) + "," + srv.URL(),
		Engine: engine.Config{
			HandshakeTimeout: time.Second,
			PingInterval:     300 * time.Millisecond,
			PongTimeout:      300 * time.Millisecond,
		},
	})
	waitFor(t, clusterWait, "Herald to connect to NATS", h.broker.Connected)
	live := dialWS(t, h, "channel=down.live")

	srv.Kill()
	waitFor(t, clusterWait, "Herald to notice the outage", func() bool { return !h.broker.Connected() })

	// A new channel in band: no ack while NATS is away, and the socket is
	// served meanwhile.
	if err := live.WriteMessage(websocket.TextMessage, []byte(`{"op":"subscribe","channel":"down.new","id":"new"}`)); err != nil {
		t.Fatal(err)
	}
	// A client that never answers a ping is reaped on schedule.
	silent := mustDial(t, h.srv.Addr())
	fmt.Fprintf(silent, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	reaped := h.srv.Stats().Reaped

	var rtts []time.Duration
	deadline := time.Now().Add(3 * time.Second) // longer than nats.go's 2 s dial timeout
	for i := 0; time.Now().Before(deadline); i++ {
		start := time.Now()
		expectPong(t, live, i)
		rtts = append(rtts, time.Since(start))
		time.Sleep(20 * time.Millisecond)
	}
	slices.Sort(rtts)
	median, worst := rtts[len(rtts)/2], rtts[len(rtts)-1]
	t.Logf("%d in-band pings during the outage: median %v, worst %v", len(rtts), median, worst)
	if median > 50*time.Millisecond || worst > time.Second {
		t.Errorf("pings answered in %v (median), %v (worst) while NATS was down: a loop stalled", median, worst)
	}
	// From here on the test does not always read, so a reader answers the
	// server's pings (gorilla does so inside ReadMessage).
	frames := make(chan []byte, 16)
	go func() {
		defer close(frames)
		for {
			_ = live.SetReadDeadline(time.Now().Add(2 * clusterWait))
			_, msg, err := live.ReadMessage()
			if err != nil {
				return
			}
			frames <- msg
		}
	}()
	next := func(what string) []byte {
		t.Helper()
		select {
		case msg, ok := <-frames:
			if !ok {
				t.Fatalf("waiting for %s: the connection closed", what)
			}
			return msg
		case <-time.After(clusterWait):
			t.Fatalf("timed out waiting for %s", what)
			return nil
		}
	}
	waitFor(t, clusterWait, "the silent client to be reaped", func() bool { return h.srv.Stats().Reaped > reaped })

	// Upgrades are answered: at once on channels the process already has,
	// and with 503 + Retry-After when a new one cannot be confirmed in time.
	start := time.Now()
	dialWS(t, h, "channel=down.live")
	if took := time.Since(start); took > time.Second {
		t.Errorf("upgrade to a channel the process has took %v during the outage", took)
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	_, resp, err := d.Dial("ws://"+h.srv.Addr()+"/ws?channel=down.other", nil)
	if err == nil || resp == nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("upgrade to a new channel during the outage: %v %v; want 503 with Retry-After", resp, err)
	}

	srv.Restart()
	waitFor(t, clusterWait, "Herald to reconnect to NATS", h.broker.Connected)
	if msg := next("the ack"); !strings.Contains(string(msg), `"ack"`) || !strings.Contains(string(msg), `"new"`) {
		t.Fatalf("after NATS returned: %q; want the ack of the subscription made during the outage", msg)
	}
	publishTo(t, srv.URL(), "down.new", `"back"`)
	if msg := next("the message"); string(msg) != `{"channel":"down.new","data":"back"}` {
		t.Fatalf("after the ack: %q", msg)
	}
}
