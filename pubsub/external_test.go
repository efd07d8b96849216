package pubsub

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/herald-ws/herald/pubsub/natstest"
)

// TestOutage kills the external NATS server under a connected Broker and
// brings it back on the same port: the Broker notices, counts, reconnects by
// itself, and its subscriptions work again without anyone re-acquiring them
// (nats.go re-sends them; the restarted server knows nothing of them).
func TestOutage(t *testing.T) {
	srv := natstest.Start(t)
	rec := newRecorder()
	b, logs := startBroker(t, Config{URL: srv.URL(), ReconnectWait: 50 * time.Millisecond, Handler: rec.handle})
	if b.ClientURL() != srv.URL() {
		t.Errorf("ClientURL() = %q, want %q", b.ClientURL(), srv.URL())
	}
	waitFor(t, "broker to connect", b.Connected)
	if l := logs.find("pubsub: using external nats"); len(l) != 1 {
		t.Errorf("want one start log naming the external server, got %v", l)
	}

	if err := b.Acquire("ticks.*"); err != nil {
		t.Fatal(err)
	}
	mustFlush(t, b)
	publish(t, srv.URL(), "ticks.a", "before")
	rec.expect(t, message{"ticks.*", "ticks.a", "before"})

	srv.Kill()
	waitFor(t, "broker to notice the outage", func() bool {
		return !b.Connected() && b.Stats().Disconnects == 1
	})
	// The counter and the log line are written by the same callback, in
	// that order: wait for the line too.
	waitFor(t, "the disconnect to be logged", func() bool { return len(logs.find("nats disconnected")) == 1 })
	// Still held while disconnected; nothing to re-acquire.
	if b.Channels() != 1 {
		t.Errorf("Channels() = %d during outage, want 1", b.Channels())
	}

	srv.Restart()
	waitFor(t, "broker to reconnect", func() bool {
		return b.Connected() && b.Stats().Reconnects == 1
	})
	waitFor(t, "the reconnect to be logged", func() bool { return len(logs.find("nats reconnected")) == 1 })
	if l := logs.find("nats reconnected"); len(l) != 1 || l[0].attrs["url"] != srv.URL() {
		t.Errorf("reconnect log = %v, want one line with url %s", l, srv.URL())
	}
	// The round trip makes sure the re-sent SUB has been processed.
	mustFlush(t, b)
	publish(t, srv.URL(), "ticks.b", "after")
	rec.expect(t, message{"ticks.*", "ticks.b", "after"})
	if st := b.Stats(); st.Disconnects != 1 || st.Reconnects != 1 || st.MessagesIn != 2 {
		t.Errorf("Stats() = %+v, want 1 disconnect, 1 reconnect, 2 messages", st)
	}
}

// TestStartBeforeNATS starts Herald while nothing listens at the NATS URL:
// Start succeeds, channels can be acquired, and everything works once a
// server appears. The URL carries a password, which must never be logged.
func TestStartBeforeNATS(t *testing.T) {
	port := natstest.FreePort(t)
	url := fmt.Sprintf("nats://herald:s3cret@127.0.0.1:%d", port)
	rec := newRecorder()
	b, logs := startBroker(t, Config{URL: url, ReconnectWait: 50 * time.Millisecond, Handler: rec.handle})
	if b.Connected() {
		t.Fatal("connected with no server running")
	}
	if l := logs.find("pubsub: using external nats, not reachable yet; retrying in the background"); len(l) != 1 {
		t.Errorf("want a warning that NATS is not reachable yet:\n%s", logs)
	}
	if err := b.Acquire("late.>"); err != nil {
		t.Fatalf("Acquire while disconnected: %v", err)
	}

	srv := natstest.StartOn(t, port)
	waitFor(t, "broker to connect once the server is up", b.Connected)
	mustFlush(t, b)
	publish(t, srv.URL(), "late.comer", "hello")
	rec.expect(t, message{"late.>", "late.comer", "hello"})
	if st := b.Stats(); st.Disconnects != 0 || st.Reconnects != 0 {
		t.Errorf("Stats() = %+v: a first connection is neither a disconnect nor a reconnect", st)
	}
	if strings.Contains(logs.String(), "s3cret") {
		t.Errorf("password leaked into logs:\n%s", logs)
	}
}

// TestCloseWhileDisconnected: Close must not hang on a connection that is
// still trying to reach its server.
func TestCloseWhileDisconnected(t *testing.T) {
	b, _ := startBroker(t, Config{
		URL:     fmt.Sprintf("nats://127.0.0.1:%d", natstest.FreePort(t)),
		Handler: func(string, string, []byte) {},
	})
	if err := b.Acquire("x"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Close took %v while disconnected", d)
	}
}

// TestScaleOut: two Herald instances on one NATS both get every message
// (plain subscriptions, not a queue group).
func TestScaleOut(t *testing.T) {
	srv := natstest.Start(t)
	rec1, rec2 := newRecorder(), newRecorder()
	b1, _ := startBroker(t, Config{URL: srv.URL(), Name: "herald-1", Handler: rec1.handle})
	b2, _ := startBroker(t, Config{URL: srv.URL(), Name: "herald-2", Handler: rec2.handle})
	for _, b := range []*Broker{b1, b2} {
		waitFor(t, "broker to connect", b.Connected)
		if err := b.Acquire("room.1"); err != nil {
			t.Fatal(err)
		}
		mustFlush(t, b)
	}
	publish(t, srv.URL(), "room.1", "to all")
	rec1.expect(t, message{"room.1", "room.1", "to all"})
	rec2.expect(t, message{"room.1", "room.1", "to all"})
	rec1.expectNone(t, 100*time.Millisecond)
	rec2.expectNone(t, 10*time.Millisecond)
}

// A URL Start cannot even parse is an error, and the error does not repeat
// the password that Go's url.Error would carry.
func TestStartErrorHidesPassword(t *testing.T) {
	_, err := Start(Config{URL: "nats://herald:s3cret@bad host:4222", Handler: func(string, string, []byte) {}})
	if err == nil {
		t.Fatal("Start with an unparsable URL succeeded")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("the error leaks the password: %v", err)
	}
}
