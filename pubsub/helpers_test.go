package pubsub

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// waitTimeout bounds every wait in these tests.
const waitTimeout = 10 * time.Second

// event is one Handler call, copied (data and subs are only valid during
// the call).
type event struct {
	live bool
	// Live
	id  uint64
	err error
	// Message
	msg message
}

func (e event) String() string {
	if e.live {
		return fmt.Sprintf("Live(%d, %v)", e.id, e.err)
	}
	return e.msg.String()
}

// message is one Message call: ids sorted.
type message struct {
	subject, data string
	ids           []uint64
}

func msg(subject, data string, ids ...uint64) message {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	return message{subject, data, ids}
}

func (m message) String() string { return fmt.Sprintf("%s %q %v", m.subject, m.data, m.ids) }

// recorder is a Handler that keeps every call in order, without ever
// blocking the dispatcher (unless asked to, see gate).
type recorder struct {
	mu       sync.Mutex
	events   []event
	liveErrs map[uint64][]error // the errors of the Live calls, by id
	cursor   int                // events before it were consumed by expect
	changed  chan struct{}      // capacity 1: events grew

	// A Message on gateSubject signals gateIn and waits for gateOut,
	// holding the dispatcher so that copies pile up in the channel.
	gateSubject     string
	gateIn, gateOut chan struct{}
}

func newRecorder() *recorder {
	return &recorder{changed: make(chan struct{}, 1), liveErrs: make(map[uint64][]error)}
}

// newGatedRecorder is a recorder that stops in Message on gateSubject until
// the test opens it (see hold).
func newGatedRecorder(gateSubject string) *recorder {
	r := newRecorder()
	r.gateSubject = gateSubject
	r.gateIn, r.gateOut = make(chan struct{}, 1), make(chan struct{})
	return r
}

func (r *recorder) Message(subject string, data []byte, subs []uint64) {
	if r.gateSubject != "" && subject == r.gateSubject {
		r.gateIn <- struct{}{}
		<-r.gateOut
	}
	r.add(event{msg: msg(subject, string(data), subs...)})
}

func (r *recorder) Live(id uint64, err error) { r.add(event{live: true, id: id, err: err}) }

func (r *recorder) add(e event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	if e.live {
		r.liveErrs[e.id] = append(r.liveErrs[e.id], e.err)
	}
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// history returns every call so far.
func (r *recorder) history() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// wait waits until cond holds for the calls so far; cond runs with r.mu
// held.
func (r *recorder) wait(t *testing.T, what string, cond func(events []event) bool) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok := cond(r.events)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s; calls:\n%s", waitTimeout, what, eventList(r.history()))
		}
	}
}

func eventList(events []event) string {
	var sb strings.Builder
	for i, e := range events {
		if i == 200 {
			fmt.Fprintf(&sb, "... %d more\n", len(events)-i)
			break
		}
		fmt.Fprintf(&sb, "  %v\n", e)
	}
	return sb.String()
}

// lives returns the errors of every Live(id, ...) so far.
func (r *recorder) lives(id uint64) []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.liveErrs[id])
}

// countLives counts the Live calls for id in events.
func countLives(events []event, id uint64) int {
	n := 0
	for _, e := range events {
		if e.live && e.id == id {
			n++
		}
	}
	return n
}

// waitLive waits for a Live for each id and returns the first error of
// each.
func (r *recorder) waitLive(t *testing.T, ids ...uint64) map[uint64]error {
	t.Helper()
	got := make(map[uint64]error, len(ids))
	next := 0 // ids before it have come
	r.wait(t, fmt.Sprintf("Live of %d subscriptions", len(ids)), func([]event) bool {
		for ; next < len(ids); next++ {
			errs := r.liveErrs[ids[next]]
			if len(errs) == 0 {
				return false
			}
			got[ids[next]] = errs[0]
		}
		return true
	})
	return got
}

// mustLive waits for Live(id, nil) of each id.
func (r *recorder) mustLive(t *testing.T, ids ...uint64) {
	t.Helper()
	for id, err := range r.waitLive(t, ids...) {
		if err != nil {
			t.Fatalf("Live(%d) = %v, want nil", id, err)
		}
	}
}

// expect waits for exactly the given Message calls after those already
// consumed, in any order, and consumes them.
func (r *recorder) expect(t *testing.T, want ...message) {
	t.Helper()
	var got []message
	r.wait(t, fmt.Sprintf("%d messages", len(want)), func(events []event) bool {
		got = got[:0]
		for _, e := range events[r.cursor:] {
			if !e.live {
				got = append(got, e.msg)
			}
		}
		return len(got) >= len(want)
	})
	r.consume(len(want))
	less := func(a, b message) int { return strings.Compare(a.String(), b.String()) }
	got = slices.Clone(got[:len(want)])
	slices.SortFunc(got, less)
	want = slices.Clone(want)
	slices.SortFunc(want, less)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// expectCopies is expect for copies, however they were grouped: each want
// is one id, and the calls consumed must list exactly these.
func (r *recorder) expectCopies(t *testing.T, want ...message) {
	t.Helper()
	var calls, copies int
	var got []message
	r.wait(t, fmt.Sprintf("%d copies", len(want)), func(events []event) bool {
		calls, copies, got = 0, 0, got[:0]
		for _, e := range events[r.cursor:] {
			if e.live {
				continue
			}
			calls++
			for _, id := range e.msg.ids {
				got = append(got, msg(e.msg.subject, e.msg.data, id))
			}
			if copies += len(e.msg.ids); copies >= len(want) {
				return true
			}
		}
		return false
	})
	r.consume(calls)
	less := func(a, b message) int { return strings.Compare(a.String(), b.String()) }
	slices.SortFunc(got, less)
	want = slices.Clone(want)
	slices.SortFunc(want, less)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got copies %v, want %v", got, want)
	}
}

// consume moves the cursor past n Message calls.
func (r *recorder) consume(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for n > 0 {
		if !r.events[r.cursor].live {
			n--
		}
		r.cursor++
	}
}

// expectNone checks that no Message call comes within d.
func (r *recorder) expectNone(t *testing.T, d time.Duration) {
	t.Helper()
	time.Sleep(d)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events[r.cursor:] {
		if !e.live {
			t.Fatalf("unexpected message %v", e.msg)
		}
	}
}

// hold makes the dispatcher stop in the recorder's gate: it publishes on
// the gate subject and returns once the Handler is stuck there. The
// recorder must be gated and the gate subscribed.
func (r *recorder) hold(t *testing.T, url string) {
	t.Helper()
	publish(t, url, r.gateSubject, "gate")
	select {
	case <-r.gateIn:
	case <-time.After(waitTimeout):
		t.Fatal("the dispatcher never reached the gate")
	}
}

// open lets the dispatcher go on once n copies wait in b's channel (so
// that it finds them all at once), and consumes the gate message.
func (r *recorder) open(t *testing.T, b *Broker, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d copies to wait in the channel", n), func() bool { return len(b.msgs) >= n })
	r.gateOut <- struct{}{}
	r.wait(t, "the gate message", func(events []event) bool {
		for _, e := range events[r.cursor:] {
			if !e.live && e.msg.subject == r.gateSubject {
				return true
			}
		}
		return false
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := r.cursor; i < len(r.events); i++ {
		if e := r.events[i]; !e.live && e.msg.subject == r.gateSubject {
			r.events = slices.Delete(r.events, i, i+1)
			break
		}
	}
}

// nopHandler ignores everything.
type nopHandler struct{}

func (nopHandler) Message(string, []byte, []uint64) {}
func (nopHandler) Live(uint64, error)               {}

// subscribe subscribes each pattern under the next ids from first and waits
// until all are live.
func subscribe(t *testing.T, b *Broker, r *recorder, first uint64, patterns ...string) {
	t.Helper()
	ids := make([]uint64, len(patterns))
	for i, p := range patterns {
		ids[i] = first + uint64(i)
		b.Subscribe(ids[i], p)
	}
	r.mustLive(t, ids...)
}

// timed runs f and returns how long it took.
func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
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

// tarpit is a TCP listener that accepts connections and never says a word:
// a hung server, or the wrong service behind the port. nats.go waits its
// whole connect timeout on one, holding its connection lock.
type tarpit struct {
	addr     string
	accepted atomic.Int64
}

func newTarpit(t *testing.T) *tarpit {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tp := &tarpit{addr: l.Addr().String()}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			tp.accepted.Add(1)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return tp
}

// silentServer is a tarpit's address.
func silentServer(t *testing.T) string {
	t.Helper()
	return newTarpit(t).addr
}
