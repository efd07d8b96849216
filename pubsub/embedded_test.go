package pubsub

import (
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func startEmbeddedBroker(t *testing.T, rec *recorder) (*Broker, *logCapture) {
	t.Helper()
	return startBroker(t, Config{Listen: "127.0.0.1:-1", Handler: rec.handle})
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
	for _, p := range []string{"prices.AAPL", "prices.*", "game.>"} {
		if err := b.Acquire(p); err != nil {
			t.Fatalf("Acquire(%q): %v", p, err)
		}
	}
	mustFlush(t, b)
	if got := b.Channels(); got != 3 {
		t.Errorf("Channels() = %d, want 3", got)
	}
	if got := b.ns.NumSubscriptions(); got != base+3 {
		t.Errorf("server has %d subscriptions, want %d", got, base+3)
	}

	publish(t, url,
		"prices.AAPL", "1",
		"game.7.move", "2",
		"prices.AAPL.bid", "3", // too deep for prices.*, no subscription for it
		"other", "4",
	)
	rec.expect(t,
		message{"prices.AAPL", "prices.AAPL", "1"},
		message{"prices.*", "prices.AAPL", "1"},
		message{"game.>", "game.7.move", "2"},
	)
	rec.expectNone(t, 100*time.Millisecond)
	if got := b.Stats().MessagesIn; got != 3 {
		t.Errorf("Stats().MessagesIn = %d, want 3", got)
	}
}

func TestEmbeddedRefcount(t *testing.T) {
	rec := newRecorder()
	b, _ := startEmbeddedBroker(t, rec)
	url := b.ClientURL()
	base := b.ns.NumSubscriptions()

	// Two users, one leaves: the subscription stays.
	for range 2 {
		if err := b.Acquire("news.eu"); err != nil {
			t.Fatal(err)
		}
	}
	mustFlush(t, b)
	if got := b.ns.NumSubscriptions(); got != base+1 {
		t.Fatalf("two Acquires of one channel: server has %d subscriptions, want %d", got, base+1)
	}
	b.Release("news.eu")
	mustFlush(t, b)
	if got, n := b.Channels(), b.ns.NumSubscriptions(); got != 1 || n != base+1 {
		t.Fatalf("after one Release: Channels() = %d, server subscriptions = %d; want 1, %d", got, n, base+1)
	}
	publish(t, url, "news.eu", "still here")
	rec.expect(t, message{"news.eu", "news.eu", "still here"})

	// The last user leaves: unsubscribed locally and on the server.
	b.Release("news.eu")
	mustFlush(t, b)
	if got := b.Channels(); got != 0 {
		t.Fatalf("after last Release: Channels() = %d, want 0", got)
	}
	waitFor(t, "the server to drop the subscription", func() bool { return b.ns.NumSubscriptions() == base })
	publish(t, url, "news.eu", "gone")
	rec.expectNone(t, 200*time.Millisecond)

	// Releasing what is not held is a no-op; re-acquiring works.
	b.Release("news.eu")
	b.Release("never.held")
	if err := b.Acquire("news.eu"); err != nil {
		t.Fatal(err)
	}
	mustFlush(t, b)
	publish(t, url, "news.eu", "back")
	rec.expect(t, message{"news.eu", "news.eu", "back"})
}

func TestAcquireValidates(t *testing.T) {
	b, _ := startEmbeddedBroker(t, newRecorder())
	for _, p := range []string{"", "a..b", "a.>.b", "a b"} {
		err := b.Acquire(p)
		var ce *ChannelError
		if !errors.As(err, &ce) || ce.Code != CodeInvalidChannel {
			t.Errorf("Acquire(%q) = %v, want a %s ChannelError", p, err, CodeInvalidChannel)
		}
	}
	if got := b.Channels(); got != 0 {
		t.Errorf("Channels() = %d after invalid Acquires, want 0", got)
	}
}

func TestBrokerPublish(t *testing.T) {
	rec := newRecorder()
	b, _ := startEmbeddedBroker(t, rec)
	if err := b.Acquire("chat.*"); err != nil {
		t.Fatal(err)
	}
	mustFlush(t, b)
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
	rec.expect(t, message{"chat.*", "chat.room1", "hi"})
	if m, err := sub.NextMsg(waitTimeout); err != nil || string(m.Data) != "hi" {
		t.Fatalf("separate client: %v, %v", m, err)
	}

	for subject, code := range map[string]string{
		"chat.*": CodeWildcardsDisabled,
		"chat.>": CodeWildcardsDisabled,
		"":       CodeInvalidChannel,
		"chat.":  CodeInvalidChannel,
	} {
		err := b.Publish(subject, []byte("x"))
		var ce *ChannelError
		if !errors.As(err, &ce) || ce.Code != code {
			t.Errorf("Publish(%q) = %v, want code %s", subject, err, code)
		}
	}
}

// TestSlowConsumer fills a subscription past its pending limit while the
// Handler is stuck: NATS drops, the broker counts every drop and warns once
// (rate-limited), and the connection stays up.
func TestSlowConsumer(t *testing.T) {
	const total = 200
	unblock := make(chan struct{})
	var delivered atomic.Int64
	b, logs := startBroker(t, Config{
		Listen:      "127.0.0.1:-1",
		PendingMsgs: 4,
		Handler: func(pattern, subject string, data []byte) {
			<-unblock
			delivered.Add(1)
		},
	})
	defer func() {
		select {
		case <-unblock:
		default:
			close(unblock) // never leave Close waiting on a stuck Handler
		}
	}()
	if err := b.Acquire("slow.x"); err != nil {
		t.Fatal(err)
	}
	mustFlush(t, b)

	args := make([]string, 0, 2*total)
	for range total {
		args = append(args, "slow.x", "payload")
	}
	publish(t, b.ClientURL(), args...)
	// With the Handler stuck on the first message and 4 pending, nearly all
	// of them must be dropped (and counted) once they reach the client.
	waitFor(t, "drops to be counted", func() bool { return b.Stats().Dropped >= total-10 })
	close(unblock)
	waitFor(t, "delivered + dropped to add up", func() bool {
		return uint64(delivered.Load())+b.Stats().Dropped == total
	})
	st := b.Stats()
	if st.MessagesIn != uint64(delivered.Load()) {
		t.Errorf("MessagesIn = %d, Handler saw %d", st.MessagesIn, delivered.Load())
	}
	if !b.Connected() {
		t.Error("a slow consumer must not lose the connection")
	}
	waitFor(t, "the drop warning", func() bool { return len(logs.find("nats slow consumer: messages dropped")) > 0 })
	warns := logs.find("nats slow consumer: messages dropped")
	if len(warns) != 1 {
		t.Fatalf("got %d drop warnings, want exactly 1 (rate-limited):\n%s", len(warns), logs)
	}
	if warns[0].level != slog.LevelWarn || warns[0].attrs["channel"] != "slow.x" {
		t.Errorf("drop warning = %+v, want warn level with channel slow.x", warns[0])
	}
}

func TestClose(t *testing.T) {
	b, _ := startEmbeddedBroker(t, newRecorder())
	if err := b.Acquire("a.b"); err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(b.ClientURL(), "nats://")
	b.Close()
	b.Close() // idempotent
	if b.Connected() {
		t.Error("Connected() after Close")
	}
	if err := b.Acquire("a.c"); !errors.Is(err, ErrClosed) {
		t.Errorf("Acquire after Close = %v, want ErrClosed", err)
	}
	b.Release("a.b") // no-op, no panic
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
	noop := func(string, string, []byte) {}
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

// TestConcurrentAcquireRelease hammers the refcounts from several goroutines
// (as several event loops would) and checks that exactly the channels still
// held remain subscribed, locally and on the server.
func TestConcurrentAcquireRelease(t *testing.T) {
	b, _ := startEmbeddedBroker(t, newRecorder())
	base := b.ns.NumSubscriptions()
	patterns := []string{"c.1", "c.2", "c.*", "c.>"}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				p := patterns[(g+i)%len(patterns)]
				if err := b.Acquire(p); err != nil {
					t.Error(err)
					return
				}
				b.Release(p)
			}
			// Each goroutine ends holding one channel.
			if err := b.Acquire(patterns[g%len(patterns)]); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	mustFlush(t, b)
	if got := b.Channels(); got != len(patterns) {
		t.Fatalf("Channels() = %d, want %d", got, len(patterns))
	}
	waitFor(t, "server subscriptions to settle", func() bool {
		return b.ns.NumSubscriptions() == base+uint32(len(patterns))
	})
	for g := range 8 {
		b.Release(patterns[g%len(patterns)])
	}
	mustFlush(t, b)
	if got := b.Channels(); got != 0 {
		t.Fatalf("Channels() = %d after releasing everything", got)
	}
	waitFor(t, "server subscriptions to go", func() bool { return b.ns.NumSubscriptions() == base })
}
