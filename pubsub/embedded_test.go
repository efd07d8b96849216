package pubsub

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/herald-ws/herald/codec/channel"
)

func startEmbeddedBroker(t *testing.T, h Handler) (*Broker, *logCapture) {
	t.Helper()
	return startBroker(t, Config{Listen: "127.0.0.1:-1", Handler: h})
}

func TestEmbeddedDelivery(t *testing.T) {
	rec := newRecorder()
	b, logs := startEmbeddedBroker(t, rec)

	url := b.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":4222") || strings.HasSuffix(url, ":0") {
		t.Fatalf("ClientURL = %q, want nats://127.0.0.1:<random port>", url)
	}
	if l := logs.find("pubsub: using embedded nats server"); len(l) != 1 || l[0].attrs["url"] != url {
		t.Errorf("start log = %v, want one line with url %s", l, url)
	}
	if !b.Connected() {
		t.Fatal("not connected to the embedded server")
	}

	base := b.ns.NumSubscriptions()
	subscribe(t, b, rec, 1, "prices.AAPL", "prices.*", "game.>")
	if got := b.Channels(); got != 3 {
		t.Errorf("Channels() = %d, want 3", got)
	}
	// Live means the server has them: no round trip of our own needed.
	if got := b.ns.NumSubscriptions(); got != base+3 {
		t.Errorf("server has %d subscriptions after Live, want %d", got, base+3)
	}

	publish(t, url,
		"prices.AAPL", "1",
		"game.7.move", "2",
		"prices.AAPL.bid", "3", // too deep for prices.*, no subscription for it
		"other", "4",
	)
	rec.expectCopies(t,
		msg("prices.AAPL", "1", 1),
		msg("prices.AAPL", "1", 2),
		msg("game.7.move", "2", 3),
	)
	rec.expectNone(t, 100*time.Millisecond)
	if got := b.Stats().MessagesIn; got != 3 {
		t.Errorf("Stats().MessagesIn = %d, want 3 (copies)", got)
	}
}

// TestSubscribeSamePatternTwice: each id is its own NATS subscription, so
// one pattern under two ids gets a copy for each, and unsubscribing one
// leaves the other.
func TestSubscribeSamePatternTwice(t *testing.T) {
	rec := newRecorder()
	b, _ := startEmbeddedBroker(t, rec)
	url := b.ClientURL()
	base := b.ns.NumSubscriptions()

	subscribe(t, b, rec, 1, "news.eu", "news.eu")
	if got := b.ns.NumSubscriptions(); got != base+2 {
		t.Fatalf("two Subscribes of one pattern: server has %d subscriptions, want %d", got, base+2)
	}
	publish(t, url, "news.eu", "both")
	rec.expectCopies(t, msg("news.eu", "both", 1), msg("news.eu", "both", 2))

	b.Unsubscribe(1)
	if got := b.Channels(); got != 1 {
		t.Fatalf("after one Unsubscribe: Channels() = %d, want 1", got)
	}
	waitFor(t, "the server to drop one subscription", func() bool { return b.ns.NumSubscriptions() == base+1 })
	publish(t, url, "news.eu", "one")
	rec.expect(t, msg("news.eu", "one", 2))

	b.Unsubscribe(2)
	waitFor(t, "the server to drop the subscription", func() bool { return b.ns.NumSubscriptions() == base })
	if got := b.Channels(); got != 0 {
		t.Fatalf("after the last Unsubscribe: Channels() = %d, want 0", got)
	}
	publish(t, url, "news.eu", "gone")
	rec.expectNone(t, 200*time.Millisecond)

	// Unknown ids are ignored; an id can be used again.
	b.Unsubscribe(1)
	b.Unsubscribe(99)
	subscribe(t, b, rec, 1, "news.eu")
	publish(t, url, "news.eu", "back")
	rec.expect(t, msg("news.eu", "back", 1))
	if errs := rec.lives(1); len(errs) != 2 || errs[0] != nil || errs[1] != nil {
		t.Errorf("Lives of id 1 (subscribed twice) = %v, want two nil", errs)
	}
}

func TestSubscribeValidates(t *testing.T) {
	rec := newRecorder()
	b, _ := startEmbeddedBroker(t, rec)
	patterns := []string{"", "a..b", "a.>.b", "a b"}
	for i, p := range patterns {
		b.Subscribe(uint64(i), p)
	}
	got := rec.waitLive(t, 0, 1, 2, 3)
	for i, p := range patterns {
		var ce *channel.Error
		err := got[uint64(i)]
		if !errors.As(err, &ce) || ce.Code != channel.CodeInvalidChannel || !strings.HasPrefix(err.Error(), fmt.Sprintf("pubsub: subscribe (id %d): ", i)) {
			t.Errorf("Live for Subscribe(%q) = %v, want a %s ChannelError with context", p, err, channel.CodeInvalidChannel)
		}
	}
	if got := b.Channels(); got != 0 {
		t.Errorf("Channels() = %d after invalid Subscribes, want 0", got)
	}
	// A second Subscribe under an id in use is refused; the first stays.
	subscribe(t, b, rec, 10, "ok")
	b.Subscribe(10, "other")
	rec.wait(t, "the duplicate's answer", func(events []event) bool { return countLives(events, 10) == 2 })
	if errs := rec.lives(10); errs[1] == nil || !strings.Contains(errs[1].Error(), "already subscribed") {
		t.Errorf("Live for a duplicate id = %v, want an error", errs[1])
	}
	publish(t, b.ClientURL(), "ok", "still")
	rec.expect(t, msg("ok", "still", 10))
}

func TestBrokerPublish(t *testing.T) {
	rec := newRecorder()
	b, _ := startEmbeddedBroker(t, rec)
	subscribe(t, b, rec, 1, "chat.*")
	// A separate client sees the broker's publishes too.
	other := connect(t, b.ClientURL())
	sub, err := other.SubscribeSync("chat.room1")
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Flush(); err != nil {
		t.Fatal(err)
	}

	if err := b.Publish("chat.room1", []byte("hi")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	mustFlush(t, b)
	rec.expect(t, msg("chat.room1", "hi", 1))
	if m, err := sub.NextMsg(waitTimeout); err != nil || string(m.Data) != "hi" {
		t.Fatalf("separate client: %v, %v", m, err)
	}

	for subject, code := range map[string]string{
		"chat.*": channel.CodeWildcardsDisabled,
		"chat.>": channel.CodeWildcardsDisabled,
		"":       channel.CodeInvalidChannel,
		"chat.":  channel.CodeInvalidChannel,
	} {
		err := b.Publish(subject, []byte("x"))
		var ce *channel.Error
		if !errors.As(err, &ce) || ce.Code != code {
			t.Errorf("Publish(%q) = %v, want code %s", subject, err, code)
		}
	}
}

// stuckHandler blocks every Message until unblock is closed.
type stuckHandler struct {
	unblock   chan struct{}
	delivered atomic.Int64
	live      chan uint64
}

func (h *stuckHandler) Message(subject string, data []byte, subs []uint64) {
	<-h.unblock
	h.delivered.Add(int64(len(subs)))
}

func (h *stuckHandler) Live(id uint64, err error) { h.live <- id }

// TestSlowConsumer fills the shared channel past its capacity while the
// Handler is stuck: NATS drops, the broker counts every drop and warns once
// (rate-limited), and the connection stays up.
func TestSlowConsumer(t *testing.T) {
	const total = 200
	h := &stuckHandler{unblock: make(chan struct{}), live: make(chan uint64, 1)}
	b, logs := startBroker(t, Config{Listen: "127.0.0.1:-1", PendingMsgs: 4, Handler: h})
	defer func() {
		select {
		case <-h.unblock:
		default:
			close(h.unblock) // never leave Close waiting on a stuck Handler
		}
	}()
	b.Subscribe(1, "slow.x")
	select {
	case <-h.live:
	case <-time.After(waitTimeout):
		t.Fatal("no Live")
	}

	args := make([]string, 0, 2*total)
	for range total {
		args = append(args, "slow.x", "payload")
	}
	publish(t, b.ClientURL(), args...)
	// With the Handler stuck on the first message and 4 pending, nearly all
	// of them must be dropped (and counted) once they reach the client.
	waitFor(t, "drops to be counted", func() bool { return b.Stats().Dropped >= total-10 })
	close(h.unblock)
	waitFor(t, "delivered + dropped to add up", func() bool {
		return uint64(h.delivered.Load())+b.Stats().Dropped == total
	})
	st := b.Stats()
	if st.MessagesIn != uint64(h.delivered.Load()) {
		t.Errorf("MessagesIn = %d, Handler saw %d", st.MessagesIn, h.delivered.Load())
	}
	if !b.Connected() {
		t.Error("a slow consumer must not lose the connection")
	}
	waitFor(t, "the drop warning", func() bool { return len(logs.find("nats slow consumer: messages dropped")) > 0 })
	warns := logs.find("nats slow consumer: messages dropped")
	if len(warns) != 1 {
		t.Fatalf("got %d drop warnings, want exactly 1 (rate-limited):\n%s", len(warns), logs)
	}
	if warns[0].level != slog.LevelWarn || warns[0].attrs["channel"] != "slow.x" || warns[0].attrs["limit_msgs"] != "4" {
		t.Errorf("drop warning = %+v, want warn level with channel slow.x and limit_msgs 4", warns[0])
	}
}

func TestClose(t *testing.T) {
	rec := newRecorder()
	b, _ := startEmbeddedBroker(t, rec)
	subscribe(t, b, rec, 1, "a.b")
	addr := strings.TrimPrefix(b.ClientURL(), "nats://")
	b.Close()
	b.Close() // idempotent
	if b.Connected() {
		t.Error("Connected() after Close")
	}
	n := len(rec.history())
	b.Subscribe(2, "a.c") // no-op, no answer, no panic
	b.Unsubscribe(1)
	time.Sleep(50 * time.Millisecond)
	if got := rec.history(); len(got) != n {
		t.Errorf("Handler called after Close: %v", got[n:])
	}
	if b.Channels() != 0 {
		t.Errorf("Channels() = %d after Close", b.Channels())
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("embedded server still listening on %s after Close", addr)
	}
}

func TestStartErrors(t *testing.T) {
	if _, err := Start(Config{Listen: "127.0.0.1:-1"}); err == nil {
		t.Error("Start without Handler succeeded")
	}
	if _, err := Start(Config{Listen: "127.0.0.1:-1", PendingMsgs: -1, Handler: nopHandler{}}); err == nil ||
		!strings.Contains(err.Error(), "PendingMsgs") {
		t.Errorf("Start with negative PendingMsgs: err = %v", err)
	}
	noop := nopHandler{}
	if _, err := Start(Config{Listen: "no-port", Handler: noop}); err == nil ||
		!strings.HasPrefix(err.Error(), "pubsub: start embedded nats server on no-port: ") {
		t.Errorf("bad Listen: err = %v", err)
	}

	// Port taken: the server's listen failure comes back at once, not after
	// the 10s readiness timeout.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	b, err := Start(Config{Listen: l.Addr().String(), Handler: noop, Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		b.Close()
		t.Fatal("Start on a busy port succeeded")
	}
	want := "pubsub: start embedded nats server on " + l.Addr().String() + ": "
	if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("err = %q, want prefix %q and the bind error", err, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Start took %v to report a busy port", d)
	}
}

func TestParseListen(t *testing.T) {
	tests := []struct {
		in       string
		host     string
		port     int
		hasError bool
	}{
		{"127.0.0.1:4222", "127.0.0.1", 4222, false},
		{"127.0.0.1:-1", "127.0.0.1", server.RANDOM_PORT, false},
		{"127.0.0.1:0", "127.0.0.1", server.RANDOM_PORT, false},
		{":4222", "", 4222, false},
		{"[::1]:4333", "::1", 4333, false},
		{"127.0.0.1", "", 0, true},
		{"127.0.0.1:http", "", 0, true},
		{"127.0.0.1:70000", "", 0, true},
		{"127.0.0.1:-2", "", 0, true},
	}
	for _, tt := range tests {
		host, port, err := parseListen(tt.in)
		if (err != nil) != tt.hasError || host != tt.host || port != tt.port {
			t.Errorf("parseListen(%q) = %q, %d, %v; want %q, %d, error %v", tt.in, host, port, err, tt.host, tt.port, tt.hasError)
		}
	}
}

func TestRedactURLs(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://u:secret@h:4222", "nats://u:xxxxx@h:4222"},
		{"nats://tok3n@h:4222", "nats://xxxxx@h:4222"},
		{"nats://a:1, nats://u:pw@b:2", "nats://a:1,nats://u:xxxxx@b:2"},
		{"u:pw@h:4222", "nats://u:xxxxx@h:4222"},
	}
	for _, tt := range tests {
		if got := redactURLs(tt.in); got != tt.want {
			t.Errorf("redactURLs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestReconnectDelay(t *testing.T) {
	base := 250 * time.Millisecond
	tests := []struct {
		attempt  int
		min, max time.Duration
	}{
		{1, 125 * time.Millisecond, 250 * time.Millisecond},
		{2, 250 * time.Millisecond, 500 * time.Millisecond},
		{3, 500 * time.Millisecond, time.Second},
		{4, time.Second, 2 * time.Second},
		{50, time.Second, 2 * time.Second},
		{1 << 30, time.Second, 2 * time.Second},
	}
	for _, tt := range tests {
		for range 100 {
			if d := reconnectDelay(base, tt.attempt); d < tt.min || d > tt.max {
				t.Fatalf("reconnectDelay(%v, %d) = %v, want in [%v, %v]", base, tt.attempt, d, tt.min, tt.max)
			}
		}
	}
	// A base above the cap is honoured.
	if d := reconnectDelay(5*time.Second, 3); d < 2500*time.Millisecond || d > 5*time.Second {
		t.Errorf("reconnectDelay(5s, 3) = %v", d)
	}
}

// TestConcurrentSubscribeUnsubscribe hammers Subscribe and Unsubscribe from
// several goroutines (as several event loops would): every Subscribe gets
// exactly one Live, and exactly the subscriptions still held remain,
// locally and on the server.
func TestConcurrentSubscribeUnsubscribe(t *testing.T) {
	rec := newRecorder()
	b, _ := startEmbeddedBroker(t, rec)
	base := b.ns.NumSubscriptions()
	patterns := []string{"c.1", "c.2", "c.*", "c.>"}
	const goroutines, rounds = 8, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range rounds {
				id := uint64(g*rounds + i)
				b.Subscribe(id, patterns[(g+i)%len(patterns)])
				if i%2 == 0 {
					runtime.Gosched() // some go live before they are ended
				}
				b.Unsubscribe(id)
			}
			// Each goroutine ends holding one subscription.
			b.Subscribe(uint64(1_000_000+g), patterns[g%len(patterns)])
		})
	}
	wg.Wait()
	ids := make([]uint64, 0, goroutines*(rounds+1))
	for g := range goroutines {
		for i := range rounds {
			ids = append(ids, uint64(g*rounds+i))
		}
		ids = append(ids, uint64(1_000_000+g))
	}
	got := rec.waitLive(t, ids...)
	for _, id := range ids {
		err := got[id]
		switch {
		case id >= 1_000_000 && err != nil:
			t.Errorf("Live(%d) = %v for a subscription kept", id, err)
		case id < 1_000_000 && err != nil && !errors.Is(err, ErrUnsubscribed):
			t.Errorf("Live(%d) = %v, want nil or ErrUnsubscribed", id, err)
		}
	}
	time.Sleep(50 * time.Millisecond) // a second Live would come by now
	for _, id := range ids {
		if n := len(rec.lives(id)); n != 1 {
			t.Fatalf("subscription %d got %d Lives", id, n)
		}
	}
	if got := b.Channels(); got != goroutines {
		t.Fatalf("Channels() = %d, want %d", got, goroutines)
	}
	waitFor(t, "server subscriptions to settle", func() bool {
		return b.ns.NumSubscriptions() == base+goroutines
	})
	for g := range goroutines {
		b.Unsubscribe(uint64(1_000_000 + g))
	}
	if got := b.Channels(); got != 0 {
		t.Fatalf("Channels() = %d after unsubscribing everything", got)
	}
	waitFor(t, "server subscriptions to go", func() bool { return b.ns.NumSubscriptions() == base })
}
