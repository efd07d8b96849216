package pubsub

import (
	"errors"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// goroutines returns the number of goroutines once short-lived ones (timer
// callbacks, nats.go's flush helpers) have had a moment to end.
func goroutines() int {
	time.Sleep(50 * time.Millisecond)
	return runtime.NumGoroutine()
}

// TestManySubscriptionsFixedGoroutines: 5,000 subscriptions on distinct
// subjects cost no goroutine each; every one goes live, and a message to
// each reaches the Handler under the right id.
func TestManySubscriptionsFixedGoroutines(t *testing.T) {
	const n = 5000
	rec := newRecorder()
	b, _ := startEmbeddedBroker(t, rec)
	serverBase := b.ns.NumSubscriptions()
	base := goroutines()

	ids := make([]uint64, n)
	for i := range n {
		ids[i] = uint64(i + 1)
		b.Subscribe(ids[i], "s."+strconv.Itoa(i+1))
	}
	rec.mustLive(t, ids...)
	after := goroutines()
	t.Logf("goroutines: %d with the broker started, %d with %d subscriptions live", base, after, n)
	if after-base > 5 {
		t.Errorf("goroutines grew from %d to %d with %d subscriptions", base, after, n)
	}
	if got := b.Channels(); got != n {
		t.Errorf("Channels() = %d, want %d", got, n)
	}
	if got := b.ns.NumSubscriptions(); got != serverBase+n {
		t.Errorf("server has %d subscriptions, want %d", got, serverBase+n)
	}

	args := make([]string, 0, 2*n)
	want := make([]message, n)
	for i := range n {
		subject := "s." + strconv.Itoa(i+1)
		args = append(args, subject, strconv.Itoa(i+1))
		want[i] = msg(subject, strconv.Itoa(i+1), uint64(i+1))
	}
	publish(t, b.ClientURL(), args...)
	rec.expect(t, want...)
	if st := b.Stats(); st.Dropped != 0 || st.MessagesIn != n {
		t.Errorf("Stats() = %+v, want %d messages in, none dropped", st, n)
	}
	if now := goroutines(); now-base > 5 {
		t.Errorf("goroutines grew from %d to %d after delivering", base, now)
	}

	// For scale: what nats.go's async Subscribe would have cost.
	nc := connect(t, b.ClientURL())
	before := goroutines()
	for i := range n {
		if _, err := nc.Subscribe("s."+strconv.Itoa(i+1), func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("for comparison, %d async nats.go Subscribes add %d goroutines", n, goroutines()-before)
}

// liveHook makes the worker run f on every batch of answers before it
// hands the batch on.
func liveHook(b *Broker, f func([]answer)) { b.testHookAnswer.Store(&f) }

// TestLiveOrdering: no message reaches the Handler under an id before its
// Live (a copy received before is dropped, its twin through a live
// subscription delivered), and what is published after the Live is.
func TestLiveOrdering(t *testing.T) {
	rec := newRecorder()
	b, _ := startEmbeddedBroker(t, rec)
	url := b.ClientURL()
	subscribe(t, b, rec, 1, "o.>")

	// Widen the gap between the round trip and Live: once the server has
	// subscription 2, publish on it and wait until nats.go has pushed the
	// copy into the channel, then let the worker answer.
	pub := connect(t, url)
	var once sync.Once
	var hookErr atomic.Pointer[string]
	liveHook(b, func(out []answer) {
		for _, a := range out {
			if a.forget || a.err != nil || a.s.id != 2 {
				continue
			}
			once.Do(func() {
				fail := func(s string) { hookErr.Store(&s) }
				if err := pub.Publish("o.b", []byte("early")); err != nil {
					fail(err.Error())
					return
				}
				if err := pub.FlushTimeout(waitTimeout); err != nil {
					fail(err.Error())
					return
				}
				deadline := time.Now().Add(waitTimeout)
				for {
					if n, _ := a.s.sub.Delivered(); n >= 1 {
						return
					}
					if time.Now().After(deadline) {
						fail("the early copy never reached the channel")
						return
					}
					time.Sleep(time.Millisecond)
				}
			})
		}
	})
	b.Subscribe(2, "o.b")
	rec.mustLive(t, 2)
	if p := hookErr.Load(); p != nil {
		t.Fatal(*p)
	}
	// The copy subscription 2 received before its Live is dropped: its
	// twin through subscription 1, live already, carried the message.
	rec.expectCopies(t, msg("o.b", "early", 1))
	for _, e := range rec.history() {
		if !e.live && e.msg.data == "early" && slices.Contains(e.msg.ids, 2) {
			t.Fatalf("a copy received before Live(2) was delivered under id 2; calls:\n%s", eventList(rec.history()))
		}
	}

	// After Live: a publish from another connection is delivered.
	publish(t, url, "o.b", "late")
	rec.expectCopies(t, msg("o.b", "late", 1), msg("o.b", "late", 2))
}

// TestLiveOrderingUnderLoad subscribes one at a time to a subject that is
// being published to without pause: for every subscription, nothing comes
// under its id before its Live, and from the first message on it receives
// every message once, in publish order, through to the last. The same for
// members of wide groups (literal and wildcard patterns, joining a group
// whose NATS subscription is live), and for members and ordinary
// subscriptions mixed.
func TestLiveOrderingUnderLoad(t *testing.T) {
	tests := []struct {
		name    string
		wide    []string
		pattern func(i int) string
	}{
		{"ordinary", nil, func(int) string { return "hot.x" }},
		{"literal members", []string{"hot.*"}, func(int) string { return "hot.x" }},
		{"wildcard members", []string{"hot.>"}, func(int) string { return "hot.*" }},
		{"members and ordinary", []string{"hot.*"}, func(i int) string {
			if i%2 == 0 {
				return "hot.x"
			}
			return "hot.>"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder()
			b, _ := startBroker(t, Config{Listen: "127.0.0.1:-1", Handler: rec, Wide: tt.wide})
			pub := connect(t, b.ClientURL())
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var published atomic.Int64 // the last sequence number sent
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if pub.Publish("hot.x", []byte(strconv.Itoa(i))) == nil {
						published.Store(int64(i))
					}
					if i%20 == 0 {
						// A steady stream, not a flood the race-detected
						// client cannot keep up with.
						_ = pub.FlushTimeout(waitTimeout)
						time.Sleep(time.Millisecond)
					}
				}
			})
			const first, n = 10, 30
			for i := range n {
				id := uint64(first + i)
				b.Subscribe(id, tt.pattern(i))
				rec.mustLive(t, id)
				// Subscribe the next one while messages are flowing.
				seen := len(rec.history())
				rec.wait(t, "messages to flow", func(events []event) bool { return len(events) >= seen+5 })
			}
			close(stop)
			wg.Wait()
			if err := pub.FlushTimeout(waitTimeout); err != nil {
				t.Fatal(err)
			}
			mustFlush(t, b) // the server sent everything to the broker before this PONG
			last := int(published.Load())
			if b.Stats().Dropped == 0 {
				rec.wait(t, "the last message under every id", func(events []event) bool {
					got := 0
					for _, e := range events {
						if !e.live && e.msg.data == strconv.Itoa(last) {
							got += len(e.msg.ids)
						}
					}
					return got == n
				})
			}

			h := rec.history()
			isLive := map[uint64]bool{}
			prev := map[uint64]int{}
			copies := 0
			for _, e := range h {
				if e.live {
					isLive[e.id] = true
					continue
				}
				seq, _ := strconv.Atoi(e.msg.data)
				for _, id := range e.msg.ids {
					copies++
					if !isLive[id] {
						t.Fatalf("message %s under %d before its Live", e.msg.data, id)
					}
					p, ok := prev[id]
					switch {
					case ok && seq <= p:
						t.Fatalf("subscription %d: message %d after %d", id, seq, p)
					case ok && seq != p+1 && b.Stats().Dropped == 0:
						t.Fatalf("subscription %d: message %d after %d, none dropped: missed %d", id, seq, p, seq-p-1)
					}
					prev[id] = seq
				}
			}
			if b.Stats().Dropped == 0 {
				for i := range n {
					if id := uint64(first + i); prev[id] != last {
						t.Errorf("subscription %d: last message %d, want %d", id, prev[id], last)
					}
				}
			}
			t.Logf("%d copies checked, last message %d; %d dropped; %d NATS subscriptions", copies, last, b.Stats().Dropped, b.NATSSubscriptions())
		})
	}
}

// TestGrouping: copies of one message NATS sent for overlapping
// subscriptions, waiting together, come as one Message call listing every
// id; a second identical publish is a second call.
func TestGrouping(t *testing.T) {
	rec := newGatedRecorder("gate")
	b, _ := startEmbeddedBroker(t, rec)
	url := b.ClientURL()
	subscribe(t, b, rec, 1, "a.*", "a.b", "a.>")
	subscribe(t, b, rec, 100, "gate")

	tests := []struct {
		name        string
		subjectData []string
		copies      int
		want        []message
	}{
		{"three overlapping", []string{"a.b", "x"}, 3, []message{msg("a.b", "x", 1, 2, 3)}},
		{"two identical publishes", []string{"a.b", "y", "a.b", "y"}, 6,
			[]message{msg("a.b", "y", 1, 2, 3), msg("a.b", "y", 1, 2, 3)}},
		{"two overlapping", []string{"a.c", "z"}, 2, []message{msg("a.c", "z", 1, 3)}},
		{"different bytes", []string{"a.b", "p", "a.b", "q"}, 6,
			[]message{msg("a.b", "p", 1, 2, 3), msg("a.b", "q", 1, 2, 3)}},
		{"different subjects", []string{"a.b", "w", "a.c", "w"}, 5,
			[]message{msg("a.b", "w", 1, 2, 3), msg("a.c", "w", 1, 3)}},
		{"deep subject", []string{"a.b.c", "v"}, 1, []message{msg("a.b.c", "v", 3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec.hold(t, url)
			publish(t, url, tt.subjectData...)
			rec.open(t, b, tt.copies)
			rec.expect(t, tt.want...)
			rec.expectNone(t, 50*time.Millisecond)
		})
	}
}

// TestUnsubscribe: nothing comes under an id once Unsubscribe has returned,
// not even copies already received, and a subscription ended before its Live
// still gets exactly one Live.
func TestUnsubscribe(t *testing.T) {
	rec := newGatedRecorder("gate")
	b, _ := startEmbeddedBroker(t, rec)
	url := b.ClientURL()
	base := b.ns.NumSubscriptions()
	subscribe(t, b, rec, 1, "u.x", "u.>")
	subscribe(t, b, rec, 100, "gate")

	t.Run("copies already received", func(t *testing.T) {
		rec.hold(t, url)
		publish(t, url, "u.x", "m")
		waitFor(t, "both copies in the channel", func() bool { return len(b.msgs) >= 2 })
		b.Unsubscribe(1)
		rec.open(t, b, 0)
		rec.expect(t, msg("u.x", "m", 2))
		waitFor(t, "the server to drop it", func() bool { return b.ns.NumSubscriptions() == base+2 })
		publish(t, url, "u.x", "n")
		rec.expect(t, msg("u.x", "n", 2))
		rec.expectNone(t, 50*time.Millisecond)
	})

	t.Run("before Live", func(t *testing.T) {
		// Unsubscribe lands after the server has the subscription and
		// before the worker hands its Live on.
		var once sync.Once
		liveHook(b, func(out []answer) {
			for _, a := range out {
				if !a.forget && a.s.id == 5 {
					once.Do(func() { b.Unsubscribe(5) })
				}
			}
		})
		defer liveHook(b, func([]answer) {})
		b.Subscribe(5, "u.y")
		got := rec.waitLive(t, 5)
		if !errors.Is(got[5], ErrUnsubscribed) {
			t.Errorf("Live(5) = %v, want ErrUnsubscribed", got[5])
		}
		waitFor(t, "the server to drop it", func() bool { return b.ns.NumSubscriptions() == base+2 })
		publish(t, url, "u.y", "never")
		rec.expect(t, msg("u.y", "never", 2)) // through u.> only
		if errs := rec.lives(5); len(errs) != 1 {
			t.Errorf("Lives of 5 = %v, want exactly one", errs)
		}
	})

	t.Run("at once", func(t *testing.T) {
		for id := uint64(10); id < 60; id++ {
			b.Subscribe(id, "u.z")
			b.Unsubscribe(id)
		}
		for id := uint64(10); id < 60; id++ {
			if err := rec.waitLive(t, id)[id]; err != nil && !errors.Is(err, ErrUnsubscribed) {
				t.Errorf("Live(%d) = %v, want nil or ErrUnsubscribed", id, err)
			}
		}
		time.Sleep(50 * time.Millisecond)
		for id := uint64(10); id < 60; id++ {
			if errs := rec.lives(id); len(errs) != 1 {
				t.Errorf("Lives of %d = %v, want exactly one", id, errs)
			}
		}
		publish(t, url, "u.z", "z")
		rec.expect(t, msg("u.z", "z", 2))
		if got := b.Channels(); got != 2 {
			t.Errorf("Channels() = %d, want 2", got)
		}
	})
}
