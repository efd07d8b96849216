package pubsub

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/herald-ws/herald/pubsub/natstest"
)

// maxCallTime is how long Subscribe and Unsubscribe may take, whatever NATS
// is doing: they only queue work. A call that waited on nats.go would wait
// for a dial or the tarpit (200 ms and more); under -race on two loaded
// cores a call that only queues has been seen to take 68 ms.
const maxCallTime = 150 * time.Millisecond

// TestOutage kills the external NATS server under a connected Broker and
// brings it back on the same port: the Broker notices, counts, reconnects by
// itself, and its subscriptions work again without anyone subscribing again
// (nats.go re-sends them; the restarted server knows nothing of them). A
// Subscribe during the outage returns at once and goes live once the server
// is back.
func TestOutage(t *testing.T) {
	srv := natstest.Start(t)
	rec := newRecorder()
	b, logs := startBroker(t, Config{URL: srv.URL(), ReconnectWait: 50 * time.Millisecond, Handler: rec})
	if b.ClientURL() != srv.URL() {
		t.Errorf("ClientURL() = %q, want %q", b.ClientURL(), srv.URL())
	}
	waitFor(t, "broker to connect", b.Connected)
	if l := logs.find("pubsub: using external nats"); len(l) != 1 {
		t.Errorf("want one start log naming the external server, got %v", l)
	}

	subscribe(t, b, rec, 1, "ticks.*")
	publish(t, srv.URL(), "ticks.a", "before")
	rec.expect(t, msg("ticks.a", "before", 1))

	srv.Kill()
	waitFor(t, "broker to notice the outage", func() bool {
		return !b.Connected() && b.Stats().Disconnects == 1
	})
	// The counter and the log line are written by the same callback, in
	// that order: wait for the line too.
	waitFor(t, "the disconnect to be logged", func() bool { return len(logs.find("nats disconnected")) == 1 })

	var slowest time.Duration
	for i := range 100 {
		slowest = max(slowest,
			timed(func() { b.Subscribe(uint64(100+i), fmt.Sprintf("other.%d", i)) }),
			timed(func() { b.Unsubscribe(uint64(100 + i)) }))
	}
	slowest = max(slowest, timed(func() { b.Subscribe(2, "ticks.late") }))
	if slowest > maxCallTime {
		t.Errorf("Subscribe/Unsubscribe took up to %v while NATS was down, want < %v", slowest, maxCallTime)
	}
	// Still held while disconnected; nothing to subscribe again.
	if b.Channels() != 2 {
		t.Errorf("Channels() = %d during outage, want 2", b.Channels())
	}
	time.Sleep(300 * time.Millisecond)
	if errs := rec.lives(2); len(errs) != 0 {
		t.Fatalf("Live(2) = %v while NATS was down", errs)
	}

	srv.Restart()
	rec.mustLive(t, 2)
	if !b.Connected() {
		t.Error("Live came while not connected")
	}
	waitFor(t, "broker to count the reconnect", func() bool {
		return b.Connected() && b.Stats().Reconnects == 1
	})
	waitFor(t, "the reconnect to be logged", func() bool { return len(logs.find("nats reconnected")) == 1 })
	if l := logs.find("nats reconnected"); len(l) != 1 || l[0].attrs["url"] != srv.URL() {
		t.Errorf("reconnect log = %v, want one line with url %s", l, srv.URL())
	}
	// Live(2) came after a round trip on the new connection, which nats.go
	// opens by re-sending every subscription: ticks.* is in place too.
	publish(t, srv.URL(), "ticks.late", "after")
	rec.expectCopies(t, msg("ticks.late", "after", 1), msg("ticks.late", "after", 2))
	if st := b.Stats(); st.Disconnects != 1 || st.Reconnects != 1 || st.MessagesIn != 3 {
		t.Errorf("Stats() = %+v, want 1 disconnect, 1 reconnect, 3 copies", st)
	}
	for i := range 100 {
		if errs := rec.lives(uint64(100 + i)); len(errs) != 1 || !errors.Is(errs[0], ErrUnsubscribed) {
			t.Fatalf("Lives of %d (unsubscribed during the outage) = %v, want one ErrUnsubscribed", 100+i, errs)
		}
	}
}

// TestTarpit puts a server that accepts and never answers first in the URL
// list and then makes it the only one that looks reachable: nats.go then
// holds its connection lock for its whole connect timeout on every attempt,
// and calls into nats.go block for that long. Subscribe, Unsubscribe and the
// other non-blocking methods must not.
func TestTarpit(t *testing.T) {
	tp := newTarpit(t)
	srv := natstest.Start(t)
	rec := newRecorder()
	b, _ := startBroker(t, Config{
		URL:           "nats://" + tp.addr + "," + srv.URL(),
		ReconnectWait: 50 * time.Millisecond,
		Handler:       rec,
	})
	waitFor(t, "broker to connect", b.Connected)
	subscribe(t, b, rec, 1, "t.a")

	srv.Kill()
	waitFor(t, "broker to notice the outage", func() bool { return !b.Connected() })
	before := tp.accepted.Load()
	waitFor(t, "nats.go to try the tarpit", func() bool { return tp.accepted.Load() > before })

	// nats.go is now inside its handshake with the tarpit.
	blocked := make(chan time.Duration, 1)
	go func() { blocked <- timed(func() { b.nc.IsConnected() }) }()
	var slowest time.Duration
	for _, call := range []func(){
		func() { b.Subscribe(2, "t.b") },
		func() { b.Unsubscribe(1) },
		func() { b.Subscribe(3, "t.c") },
		func() { b.Unsubscribe(3) },
		func() { b.Connected() },
		func() { b.Channels() },
		func() { b.Stats() },
	} {
		slowest = max(slowest, timed(call))
	}
	if slowest > maxCallTime {
		t.Errorf("a Broker call took %v while nats.go was stuck on the tarpit, want < %v", slowest, maxCallTime)
	}
	if d := <-blocked; d < 200*time.Millisecond {
		t.Logf("note: nats.go's IsConnected took only %v; the tarpit did not hold its lock", d)
	} else {
		t.Logf("nats.go's own IsConnected blocked %v on the tarpit meanwhile", d)
	}

	srv.Restart()
	rec.mustLive(t, 2)
	if errs := rec.lives(3); len(errs) != 1 || !errors.Is(errs[0], ErrUnsubscribed) {
		t.Errorf("Lives of 3 = %v, want one ErrUnsubscribed", errs)
	}
	publish(t, srv.URL(), "t.a", "gone", "t.b", "here")
	rec.expect(t, msg("t.b", "here", 2))
	rec.expectNone(t, 100*time.Millisecond)
}

// TestStartBeforeNATS starts Herald while nothing listens at the NATS URL:
// Start succeeds, subscriptions can be made, and they go live once a server
// appears. The URL carries a password, which must never be logged.
func TestStartBeforeNATS(t *testing.T) {
	port := natstest.FreePort(t)
	url := fmt.Sprintf("nats://herald:s3cret@127.0.0.1:%d", port)
	rec := newRecorder()
	b, logs := startBroker(t, Config{URL: url, ReconnectWait: 50 * time.Millisecond, Handler: rec})
	if b.Connected() {
		t.Fatal("connected with no server running")
	}
	if l := logs.find("pubsub: using external nats, not reachable yet; retrying in the background"); len(l) != 1 {
		t.Errorf("want a warning that NATS is not reachable yet:\n%s", logs)
	}
	if d := timed(func() { b.Subscribe(1, "late.>") }); d > maxCallTime {
		t.Errorf("Subscribe took %v before NATS was up", d)
	}
	time.Sleep(100 * time.Millisecond)
	if errs := rec.lives(1); len(errs) != 0 {
		t.Fatalf("Live(1) = %v before any server", errs)
	}

	srv := natstest.StartOn(t, port)
	rec.mustLive(t, 1)
	publish(t, srv.URL(), "late.comer", "hello")
	rec.expect(t, msg("late.comer", "hello", 1))
	if st := b.Stats(); st.Disconnects != 0 || st.Reconnects != 0 {
		t.Errorf("Stats() = %+v: a first connection is neither a disconnect nor a reconnect", st)
	}
	if strings.Contains(logs.String(), "s3cret") {
		t.Errorf("password leaked into logs:\n%s", logs)
	}
}

// TestCloseWhileDisconnected: Close must not hang on a connection that is
// still trying to reach its server, even one stuck on a tarpit, and answers
// the subscriptions still waiting with ErrClosed before it returns.
func TestCloseWhileDisconnected(t *testing.T) {
	for _, tt := range []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"nothing listening", func(t *testing.T) string { return fmt.Sprintf("nats://127.0.0.1:%d", natstest.FreePort(t)) }},
		{"tarpit", func(t *testing.T) string { return "nats://" + newTarpit(t).addr }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder()
			b, _ := startBroker(t, Config{URL: tt.url(t), Handler: rec})
			b.Subscribe(1, "x")
			b.Subscribe(2, "y")
			time.Sleep(50 * time.Millisecond) // let the worker get to them
			b.Subscribe(3, "z")
			if d := timed(b.Close); d > 3*time.Second {
				t.Errorf("Close took %v while disconnected", d)
			}
			for _, id := range []uint64{1, 2, 3} {
				if errs := rec.lives(id); len(errs) != 1 || !errors.Is(errs[0], ErrClosed) {
					t.Errorf("Lives of %d = %v when Close returned, want one ErrClosed", id, errs)
				}
			}
		})
	}
}

// TestScaleOut: two Herald instances on one NATS both get every message
// (plain subscriptions, not a queue group).
func TestScaleOut(t *testing.T) {
	srv := natstest.Start(t)
	rec1, rec2 := newRecorder(), newRecorder()
	b1, _ := startBroker(t, Config{URL: srv.URL(), Name: "herald-1", Handler: rec1})
	b2, _ := startBroker(t, Config{URL: srv.URL(), Name: "herald-2", Handler: rec2})
	for _, p := range []struct {
		b   *Broker
		rec *recorder
	}{{b1, rec1}, {b2, rec2}} {
		waitFor(t, "broker to connect", p.b.Connected)
		subscribe(t, p.b, p.rec, 1, "room.1")
	}
	publish(t, srv.URL(), "room.1", "to all")
	rec1.expect(t, msg("room.1", "to all", 1))
	rec2.expect(t, msg("room.1", "to all", 1))
	rec1.expectNone(t, 100*time.Millisecond)
	rec2.expectNone(t, 10*time.Millisecond)
}

// A URL Start cannot even parse is an error, and the error does not repeat
// the password that Go's url.Error would carry.
func TestStartErrorHidesPassword(t *testing.T) {
	_, err := Start(Config{URL: "nats://herald:s3cret@bad host:4222", Handler: nopHandler{}})
	if err == nil {
		t.Fatal("Start with an unparsable URL succeeded")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("the error leaks the password: %v", err)
	}
}
