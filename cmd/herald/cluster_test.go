package main

// Tests of Herald against a NATS server in another process, as in
// production: one that can die under Herald, and one that several Herald
// instances share.

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

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
