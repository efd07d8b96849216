package pubsub

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// waitTimeout bounds every wait in these tests.
const waitTimeout = 10 * time.Second

// message is one Handler call, with data copied (it is only valid during
// the call).
type message struct{ pattern, subject, data string }

// recorder is a Handler that queues what it sees.
type recorder struct{ ch chan message }

func newRecorder() *recorder { return &recorder{ch: make(chan message, 4096)} }

func (r *recorder) handle(pattern, subject string, data []byte) {
	r.ch <- message{pattern, subject, string(data)}
}

// expect waits for exactly the given messages, in any order (different
// patterns are delivered on different goroutines).
func (r *recorder) expect(t *testing.T, want ...message) {
	t.Helper()
	var got []message
	deadline := time.After(waitTimeout)
	for len(got) < len(want) {
		select {
		case m := <-r.ch:
			got = append(got, m)
		case <-deadline:
			t.Fatalf("timed out: got %v, want %v", got, want)
		}
	}
	less := func(a, b message) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) }
	slices.SortFunc(got, less)
	want = slices.Clone(want)
	slices.SortFunc(want, less)
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// expectNone checks that nothing more arrives within d.
func (r *recorder) expectNone(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-r.ch:
		t.Fatalf("unexpected message %v", m)
	case <-time.After(d):
	}
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startBroker starts a Broker that is closed when the test ends. Its logs
// are captured in the returned logCapture and printed if the test fails.
func startBroker(t *testing.T, cfg Config) (*Broker, *logCapture) {
	t.Helper()
	logs := &logCapture{}
	cfg.Logger = slog.New(logs.handler())
	b, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		b.Close()
		if t.Failed() {
			t.Logf("broker logs:\n%s", logs)
		}
	})
	return b, logs
}

// connect opens a plain nats.go client, the way an application publishing to
// Herald would.
func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name("test-publisher"))
	if err != nil {
		t.Fatalf("connect publisher to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// publish sends messages from a fresh separate client and flushes, so they
// have reached the server when it returns.
func publish(t *testing.T, url string, subjectData ...string) {
	t.Helper()
	nc := connect(t, url)
	for i := 0; i+1 < len(subjectData); i += 2 {
		if err := nc.Publish(subjectData[i], []byte(subjectData[i+1])); err != nil {
			t.Fatalf("publish %s: %v", subjectData[i], err)
		}
	}
	if err := nc.FlushTimeout(waitTimeout); err != nil {
		t.Fatalf("flush publisher: %v", err)
	}
	nc.Close()
}

func mustFlush(t *testing.T, b *Broker) {
	t.Helper()
	if err := b.Flush(waitTimeout); err != nil {
		t.Fatal(err)
	}
}

// logCapture is a slog.Handler target that keeps every record.
type logCapture struct {
	mu   sync.Mutex
	recs []logRecord
}

type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (c *logCapture) handler() slog.Handler { return &captureHandler{c: c} }

// find returns the records with message msg.
func (c *logCapture) find(msg string) []logRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []logRecord
	for _, r := range c.recs {
		if r.msg == msg {
			out = append(out, r)
		}
	}
	return out
}

func (c *logCapture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var sb strings.Builder
	for _, r := range c.recs {
		fmt.Fprintf(&sb, "%v %s %v\n", r.level, r.msg, r.attrs)
	}
	return sb.String()
}

type captureHandler struct {
	c     *logCapture
	attrs []slog.Attr
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	h.c.mu.Lock()
	h.c.recs = append(h.c.recs, rec)
	h.c.mu.Unlock()
	return nil
}

func (h *captureHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &captureHandler{c: h.c, attrs: append(slices.Clip(h.attrs), attrs...)}
}

func (h *captureHandler) WithGroup(string) slog.Handler { return h }
