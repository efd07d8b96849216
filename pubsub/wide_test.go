package pubsub

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"

	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/pubsub/natstest"
)

// setup is a NATS server for a Broker under test: embedded (the Broker's
// own, in-process) or a nats-server process (Config.URL).
type setup struct {
	name string
	// start starts a Broker on cfg and returns it, the URL publishers use,
	// and a count of the NATS subscriptions Herald holds on the server
	// (embedded) or in its NATS client (process), beyond those at start.
	start func(t *testing.T, cfg Config) (b *Broker, logs *logCapture, url string, subs func() int)
}

var setups = []setup{
	{"embedded", func(t *testing.T, cfg Config) (*Broker, *logCapture, string, func() int) {
		cfg.Listen = "127.0.0.1:-1"
		b, logs := startBroker(t, cfg)
		base := b.ns.NumSubscriptions()
		return b, logs, b.ClientURL(), func() int { return int(b.ns.NumSubscriptions()) - int(base) }
	}},
	{"nats-server process", func(t *testing.T, cfg Config) (*Broker, *logCapture, string, func() int) {
		srv := natstest.Start(t)
		cfg.URL = srv.URL()
		b, logs := startBroker(t, cfg)
		waitFor(t, "broker to connect", b.Connected)
		return b, logs, srv.URL(), func() int { return b.nc.NumSubscriptions() }
	}},
}

// holdTrips makes the round-tripper wait before every round trip until the
// returned release is called; entered receives once per round trip held.
func holdTrips(b *Broker) (entered <-chan struct{}, release func()) {
	in := make(chan struct{}, 100)
	gate := make(chan struct{})
	var once sync.Once
	f := func() {
		in <- struct{}{}
		<-gate
	}
	b.testHookTrip.Store(&f)
	return in, func() { once.Do(func() { close(gate) }) }
}

// TestWideRouting: members of a wide group receive exactly the messages on
// their subjects, once each, next to ordinary subscriptions, and the whole
// group is one NATS subscription.
func TestWideRouting(t *testing.T) {
	for _, st := range setups {
		t.Run(st.name, func(t *testing.T) {
			rec := newRecorder()
			b, _, url, natsSubs := st.start(t, Config{Handler: rec, Wide: []string{"user.*"}})
			subscribe(t, b, rec, 1, "user.1", "user.2", "user.1", "user.*") // members
			subscribe(t, b, rec, 5, "user.>", "other.x")                    // not covered by user.*
			if got := b.Channels(); got != 6 {
				t.Errorf("Channels() = %d, want 6: members count like any subscription", got)
			}
			if got, n := b.NATSSubscriptions(), natsSubs(); got != 3 || n != 3 {
				t.Errorf("NATS subscriptions: broker says %d, NATS has %d; want 3 (one for the wide group)", got, n)
			}
			publish(t, url,
				"user.1", "a",
				"user.2", "b",
				"user.3", "c",
				"user.1.x", "d",
				"other.x", "e",
				"other.y", "f",
			)
			rec.expectCopies(t,
				msg("user.1", "a", 1), msg("user.1", "a", 3), msg("user.1", "a", 4), msg("user.1", "a", 5),
				msg("user.2", "b", 2), msg("user.2", "b", 4), msg("user.2", "b", 5),
				msg("user.3", "c", 4), msg("user.3", "c", 5),
				msg("user.1.x", "d", 5),
				msg("other.x", "e", 6),
			)
			rec.expectNone(t, 100*time.Millisecond)
			if got := b.Stats().MessagesIn; got != 11 {
				t.Errorf("Stats().MessagesIn = %d, want 11 copies", got)
			}
		})
	}
}

// TestWideJoinLive: a member joining a group whose NATS subscription is
// live is answered without a round trip (the round-tripper is held
// meanwhile), and receives what is published right after its Live.
func TestWideJoinLive(t *testing.T) {
	for _, st := range setups {
		t.Run(st.name, func(t *testing.T) {
			rec := newRecorder()
			b, _, url, _ := st.start(t, Config{Handler: rec, Wide: []string{"user.*"}})
			subscribe(t, b, rec, 1, "user.1")
			entered, release := holdTrips(b)
			defer release()
			b.Subscribe(3, "plain") // needs a round trip: held
			<-entered
			b.Subscribe(2, "user.2")
			rec.mustLive(t, 2)
			if errs := rec.lives(3); len(errs) != 0 {
				t.Fatalf("Live(3) = %v while its round trip is held", errs)
			}
			publish(t, url, "user.2", "right after")
			rec.expect(t, msg("user.2", "right after", 2))
			release()
			rec.mustLive(t, 3)
			if got := b.NATSSubscriptions(); got != 2 {
				t.Errorf("NATSSubscriptions() = %d, want 2", got)
			}
		})
	}
}

// TestWideFirstMembersShareRoundTrip: members joining while the group's
// first round trip is under way are answered with it: one round trip for
// all of them.
func TestWideFirstMembersShareRoundTrip(t *testing.T) {
	rec := newRecorder()
	b, _ := startBroker(t, Config{Listen: "127.0.0.1:-1", Handler: rec, Wide: []string{"room.*"}})
	entered, release := holdTrips(b)
	b.Subscribe(1, "room.1")
	<-entered // the carrier's round trip, held before its PING
	for id := uint64(2); id <= 10; id++ {
		b.Subscribe(id, "room."+strconv.FormatUint(id, 10))
	}
	mustFlush(t, b) // the worker has taken the Subscribes (its calls precede this PING)
	waitFor(t, "the worker to take the members", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.queue) == 0
	})
	if h := rec.history(); len(h) != 0 {
		t.Fatalf("answers before the round trip: %v", h)
	}
	release()
	rec.mustLive(t, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	select {
	case <-entered:
		t.Fatal("a second round trip for members of a group whose round trip was under way")
	default:
	}
	publish(t, b.ClientURL(), "room.7", "x")
	rec.expect(t, msg("room.7", "x", 7))
}

// TestWideLastMemberLeaves: the group's NATS subscription goes with its
// last member, and a new member makes a new one.
func TestWideLastMemberLeaves(t *testing.T) {
	for _, st := range setups {
		t.Run(st.name, func(t *testing.T) {
			rec := newRecorder()
			b, _, url, natsSubs := st.start(t, Config{Handler: rec, Wide: []string{"user.*"}})
			subscribe(t, b, rec, 1, "user.1", "user.2", "user.3")
			if n := natsSubs(); n != 1 {
				t.Fatalf("NATS has %d subscriptions for 3 members, want 1", n)
			}
			b.Unsubscribe(1)
			b.Unsubscribe(2)
			publish(t, url, "user.1", "gone", "user.3", "here")
			rec.expect(t, msg("user.3", "here", 3))
			if n := natsSubs(); n != 1 {
				t.Errorf("NATS has %d subscriptions with one member left, want 1", n)
			}
			b.Unsubscribe(3)
			waitFor(t, "the group's NATS subscription to go", func() bool { return natsSubs() == 0 })
			if got, ch := b.NATSSubscriptions(), b.Channels(); got != 0 || ch != 0 {
				t.Errorf("NATSSubscriptions() = %d, Channels() = %d after the last member left, want 0, 0", got, ch)
			}
			publish(t, url, "user.3", "nobody")
			rec.expectNone(t, 100*time.Millisecond)

			subscribe(t, b, rec, 4, "user.3")
			if n := natsSubs(); n != 1 {
				t.Errorf("NATS has %d subscriptions after a new first member, want 1", n)
			}
			publish(t, url, "user.3", "back")
			rec.expect(t, msg("user.3", "back", 4))
		})
	}
}

// TestWideOverlap: members and ordinary subscriptions that a publish
// reaches receive one copy each; copies waiting together are grouped as
// for ordinary subscriptions; overlapping wide patterns give each member
// one copy.
func TestWideOverlap(t *testing.T) {
	tests := []struct {
		name     string
		wide     []string
		patterns []string // ids 1, 2, ...
		natsSubs int
		publish  []string
		copies   int         // waiting together when the dispatcher looks
		want     [][]message // each publish: its calls, when grouped
	}{
		{
			name:     "member and ordinary",
			wide:     []string{"user.*"},
			patterns: []string{"user.1", "user.>"},
			natsSubs: 2,
			publish:  []string{"user.1", "x"},
			copies:   2,
			want:     [][]message{{msg("user.1", "x", 1, 2)}},
		},
		{
			name:     "two identical publishes",
			wide:     []string{"user.*"},
			patterns: []string{"user.1", "user.>", "user.*"},
			natsSubs: 2,
			publish:  []string{"user.1", "y", "user.1", "y"},
			copies:   4,
			want:     [][]message{{msg("user.1", "y", 1, 2, 3)}, {msg("user.1", "y", 1, 2, 3)}},
		},
		{
			name:     "overlapping wide patterns",
			wide:     []string{"user.*", "user.>"},
			patterns: []string{"user.1", "user.>", "user.1.a", "user.*"},
			natsSubs: 2,
			publish:  []string{"user.1", "z", "user.1.a", "w"},
			copies:   3,
			want:     [][]message{{msg("user.1", "z", 1, 2, 4)}, {msg("user.1.a", "w", 2, 3)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newGatedRecorder("gate")
			b, _ := startBroker(t, Config{Listen: "127.0.0.1:-1", Handler: rec, Wide: tt.wide})
			url := b.ClientURL()
			subscribe(t, b, rec, 1, tt.patterns...)
			subscribe(t, b, rec, 100, "gate")
			if got := b.NATSSubscriptions(); got != tt.natsSubs+1 {
				t.Errorf("NATSSubscriptions() = %d, want %d", got, tt.natsSubs+1)
			}
			// Grouped: every copy waits when the dispatcher looks.
			rec.hold(t, url)
			publish(t, url, tt.publish...)
			rec.open(t, b, tt.copies)
			var all []message
			for _, w := range tt.want {
				all = append(all, w...)
			}
			rec.expect(t, all...)
			rec.expectNone(t, 50*time.Millisecond)
			// However they come: one copy per subscription and publish.
			var copies []message
			for _, w := range tt.want {
				for _, m := range w {
					for _, id := range m.ids {
						copies = append(copies, msg(m.subject, m.data, id))
					}
				}
			}
			publish(t, url, tt.publish...)
			rec.expectCopies(t, copies...)
			rec.expectNone(t, 50*time.Millisecond)
		})
	}
}

// TestWideWildcardMembers: members with wildcard patterns receive what
// their own pattern matches, not all of the wide pattern.
func TestWideWildcardMembers(t *testing.T) {
	rec := newRecorder()
	b, _ := startBroker(t, Config{Listen: "127.0.0.1:-1", Handler: rec, Wide: []string{"user.>"}})
	subscribe(t, b, rec, 1, "user.1.>", "user.*.x", "user.>", "user.1")
	if got := b.NATSSubscriptions(); got != 1 {
		t.Errorf("NATSSubscriptions() = %d, want 1", got)
	}
	publish(t, b.ClientURL(),
		"user.1", "a",
		"user.1.a", "b",
		"user.1.a.b", "c",
		"user.2.x", "d",
		"user.1.x", "e",
		"users.1", "f",
	)
	rec.expectCopies(t,
		msg("user.1", "a", 3), msg("user.1", "a", 4),
		msg("user.1.a", "b", 1), msg("user.1.a", "b", 3),
		msg("user.1.a.b", "c", 1), msg("user.1.a.b", "c", 3),
		msg("user.2.x", "d", 2), msg("user.2.x", "d", 3),
		msg("user.1.x", "e", 1), msg("user.1.x", "e", 2), msg("user.1.x", "e", 3),
	)
	rec.expectNone(t, 100*time.Millisecond)
	// Leaving takes a wildcard member out of the routing too.
	b.Unsubscribe(2)
	publish(t, b.ClientURL(), "user.2.x", "g")
	rec.expect(t, msg("user.2.x", "g", 3))
}

// TestWideUnsubscribe is TestUnsubscribe for members: nothing comes under
// an id once Unsubscribe has returned, and one ended before its Live gets
// exactly one Live.
func TestWideUnsubscribe(t *testing.T) {
	rec := newGatedRecorder("gate")
	b, _ := startBroker(t, Config{Listen: "127.0.0.1:-1", Handler: rec, Wide: []string{"u.*", "v.*"}})
	url := b.ClientURL()
	subscribe(t, b, rec, 1, "u.x", "u.>")
	subscribe(t, b, rec, 100, "gate")

	t.Run("copies already received", func(t *testing.T) {
		rec.hold(t, url)
		publish(t, url, "u.x", "m")
		waitFor(t, "both copies in the channel", func() bool { return len(b.msgs) >= 2 })
		b.Unsubscribe(1)
		rec.open(t, b, 0)
		rec.expect(t, msg("u.x", "m", 2))
		publish(t, url, "u.x", "n")
		rec.expect(t, msg("u.x", "n", 2))
		rec.expectNone(t, 50*time.Millisecond)
		waitFor(t, "the group's NATS subscription to go", func() bool { return b.NATSSubscriptions() == 2 })
	})

	t.Run("before Live", func(t *testing.T) {
		var once sync.Once
		liveHook(b, func(out []answer) {
			for _, a := range out {
				if !a.forget && a.s.id == 5 {
					once.Do(func() { b.Unsubscribe(5) })
				}
			}
		})
		defer liveHook(b, func([]answer) {})
		b.Subscribe(5, "v.y")
		if got := rec.waitLive(t, 5); !errors.Is(got[5], ErrUnsubscribed) {
			t.Errorf("Live(5) = %v, want ErrUnsubscribed", got[5])
		}
		waitFor(t, "the group's NATS subscription to go", func() bool { return b.NATSSubscriptions() == 2 })
		publish(t, url, "v.y", "never")
		rec.expectNone(t, 50*time.Millisecond)
		if errs := rec.lives(5); len(errs) != 1 {
			t.Errorf("Lives of 5 = %v, want exactly one", errs)
		}
	})

	t.Run("at once", func(t *testing.T) {
		subscribe(t, b, rec, 9, "v.keep") // a live group: members join without a round trip
		for id := uint64(10); id < 60; id++ {
			pattern := "v.z"
			if id%2 == 0 {
				pattern = "u.z" // a group with no NATS subscription
			}
			b.Subscribe(id, pattern)
			b.Unsubscribe(id)
		}
		for id := uint64(10); id < 60; id++ {
			if err := rec.waitLive(t, id)[id]; err != nil && !errors.Is(err, ErrUnsubscribed) {
				t.Errorf("Live(%d) = %v, want nil or ErrUnsubscribed", id, err)
			}
		}
		mustFlush(t, b)
		publish(t, url, "v.z", "z", "u.z", "z")
		rec.expect(t, msg("u.z", "z", 2))
		for id := uint64(10); id < 60; id++ {
			if errs := rec.lives(id); len(errs) != 1 {
				t.Errorf("Lives of %d = %v, want exactly one", id, errs)
			}
		}
		if got := b.Channels(); got != 3 {
			t.Errorf("Channels() = %d, want 3", got)
		}
		waitFor(t, "u.*'s NATS subscription to go", func() bool { return b.NATSSubscriptions() == 3 })
	})
}

// TestWideChurn: goroutines (as event loops would) subscribe and
// unsubscribe thousands of members while messages flow: every Subscribe
// gets exactly one Live, no message reaches an id before its Live, what is
// kept receives exactly its messages, and the group's NATS subscription
// goes with the last member.
func TestWideChurn(t *testing.T) {
	rec := newRecorder()
	b, _ := startBroker(t, Config{Listen: "127.0.0.1:-1", Handler: rec, Wide: []string{"user.>"}})
	base := b.ns.NumSubscriptions()
	pub := connect(t, b.ClientURL())
	stop := make(chan struct{})
	var pubs sync.WaitGroup
	pubs.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = pub.Publish(fmt.Sprintf("user.%d.%d", i%8, i%50), []byte("churn"))
			if i%50 == 0 {
				_ = pub.FlushTimeout(waitTimeout)
			}
		}
	})
	// Each goroutine holds a window of members, unsubscribing the oldest as
	// it subscribes a new one, and now and then lets messages flow.
	const goroutines, rounds, window = 8, 500, 20
	pattern := func(g, i int) string {
		if i%10 == 0 {
			return fmt.Sprintf("user.%d.*", g)
		}
		return fmt.Sprintf("user.%d.%d", g, i%50)
	}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range rounds {
				b.Subscribe(uint64(g*rounds+i), pattern(g, i))
				if i%3 == 0 {
					b.Unsubscribe(uint64(g*rounds + i)) // at once
				}
				if i >= window {
					b.Unsubscribe(uint64(g*rounds + i - window))
				}
				if i%25 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			for i := rounds - window; i < rounds; i++ {
				b.Unsubscribe(uint64(g*rounds + i))
			}
			b.Subscribe(uint64(1_000_000+g), fmt.Sprintf("user.kept.%d", g))
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
	close(stop)
	pubs.Wait()
	for _, id := range ids {
		err := got[id]
		switch {
		case id >= 1_000_000 && err != nil:
			t.Errorf("Live(%d) = %v for a member kept", id, err)
		case id < 1_000_000 && err != nil && !errors.Is(err, ErrUnsubscribed):
			t.Errorf("Live(%d) = %v, want nil or ErrUnsubscribed", id, err)
		}
	}
	mustFlush(t, b)
	args := make([]string, 0, 2*goroutines)
	var want []message
	for g := range goroutines {
		subject := fmt.Sprintf("user.kept.%d", g)
		args = append(args, subject, "kept")
		want = append(want, msg(subject, "kept", uint64(1_000_000+g)))
	}
	publish(t, b.ClientURL(), args...)
	// Everything before is churn: skip to the kept messages.
	rec.wait(t, "the kept messages", func(events []event) bool {
		n := 0
		for _, e := range events {
			if !e.live && e.msg.data == "kept" {
				n++
			}
		}
		return n == goroutines
	})
	live := map[uint64]bool{}
	var kept []message
	for _, e := range rec.history() {
		if e.live {
			if e.err == nil {
				live[e.id] = true
			}
			continue
		}
		for _, id := range e.msg.ids {
			if !live[id] {
				t.Fatalf("message %v under %d before its Live(nil)", e.msg, id)
			}
		}
		if e.msg.data == "kept" {
			kept = append(kept, e.msg)
		}
	}
	slices.SortFunc(kept, func(a, b message) int { return strings.Compare(a.String(), b.String()) })
	if fmt.Sprint(kept) != fmt.Sprint(want) {
		t.Errorf("kept members received %v, want %v", kept, want)
	}
	for _, id := range ids {
		if n := len(rec.lives(id)); n != 1 {
			t.Fatalf("member %d got %d Lives", id, n)
		}
	}
	if got := b.Channels(); got != goroutines {
		t.Fatalf("Channels() = %d, want %d", got, goroutines)
	}
	if got := b.NATSSubscriptions(); got != 1 {
		t.Errorf("NATSSubscriptions() = %d with members left, want 1", got)
	}
	for g := range goroutines {
		b.Unsubscribe(uint64(1_000_000 + g))
	}
	waitFor(t, "the group's NATS subscription to go", func() bool {
		return b.NATSSubscriptions() == 0 && b.ns.NumSubscriptions() == base
	})
	t.Logf("%d members churned; %d copies delivered, %d dropped", len(ids), b.Stats().MessagesIn, b.Stats().Dropped)
}

// TestWideOutage: members made while NATS is down (joining a live group,
// or the first of a group) go live once it is back, like ordinary
// subscriptions, and all of them receive messages.
func TestWideOutage(t *testing.T) {
	srv := natstest.Start(t)
	rec := newRecorder()
	b, _ := startBroker(t, Config{URL: srv.URL(), ReconnectWait: 50 * time.Millisecond, Handler: rec, Wide: []string{"user.*", "room.*"}})
	waitFor(t, "broker to connect", b.Connected)
	subscribe(t, b, rec, 1, "user.1")

	srv.Kill()
	waitFor(t, "broker to notice the outage", func() bool { return !b.Connected() })
	for _, call := range []func(){
		func() { b.Subscribe(2, "user.2") }, // joins a live group
		func() { b.Subscribe(3, "room.1") }, // first of its group
		func() { b.Subscribe(4, "user.4") },
		func() { b.Unsubscribe(4) },
	} {
		if d := timed(call); d > maxCallTime {
			t.Errorf("a call took %v while NATS was down", d)
		}
	}
	time.Sleep(200 * time.Millisecond)
	for _, id := range []uint64{2, 3} {
		if errs := rec.lives(id); len(errs) != 0 {
			t.Fatalf("Live(%d) = %v while NATS was down", id, errs)
		}
	}
	srv.Restart()
	rec.mustLive(t, 2, 3)
	if errs := rec.lives(4); len(errs) != 1 || !errors.Is(errs[0], ErrUnsubscribed) {
		t.Errorf("Lives of 4 = %v, want one ErrUnsubscribed", errs)
	}
	publish(t, srv.URL(), "user.1", "a", "user.2", "b", "room.1", "c", "user.4", "d")
	rec.expectCopies(t, msg("user.1", "a", 1), msg("user.2", "b", 2), msg("room.1", "c", 3))
	rec.expectNone(t, 50*time.Millisecond)
	// After the reconnect, members join without a round trip again once one
	// has proved the group on the new connection.
	subscribe(t, b, rec, 5, "user.5")
	publish(t, srv.URL(), "user.5", "e")
	rec.expect(t, msg("user.5", "e", 5))
}

// TestWideCloseWhileWaiting: members waiting for their group's round trip
// are answered ErrClosed by Close, once each.
func TestWideCloseWhileWaiting(t *testing.T) {
	rec := newRecorder()
	b, _ := startBroker(t, Config{URL: "nats://" + silentServer(t), Handler: rec, Wide: []string{"user.*"}})
	b.Subscribe(1, "user.1")
	b.Subscribe(2, "user.2")
	time.Sleep(50 * time.Millisecond) // let the worker get to them
	b.Subscribe(3, "user.3")
	b.Close()
	for _, id := range []uint64{1, 2, 3} {
		if errs := rec.lives(id); len(errs) != 1 || !errors.Is(errs[0], ErrClosed) {
			t.Errorf("Lives of %d = %v when Close returned, want one ErrClosed", id, errs)
		}
	}
}

func TestWideConfig(t *testing.T) {
	tests := []struct {
		wide    []string
		wantErr string // "" = Start succeeds
		invalid bool   // the error is the pattern's *channel.Error
	}{
		{[]string{"user.*"}, "", false},
		{[]string{"user.>", "user.*", "user.>"}, "", false}, // overlap and repeats are allowed
		{[]string{">"}, "", false},
		{[]string{"notify.*.inbox"}, "", false},
		{[]string{""}, "Config.Wide[0]", true},
		{[]string{"user.*", "a..b"}, "Config.Wide[1]", true},
		{[]string{"user. x"}, "Config.Wide[0]", true},
		{[]string{"$SYS.>"}, "reserved", false},
		{[]string{"_INBOX.>"}, "reserved", false},
		{[]string{"user.*", "$JS.API.>"}, "Config.Wide[1]", false},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.wide, ","), func(t *testing.T) {
			b, err := Start(Config{Listen: "127.0.0.1:-1", Handler: nopHandler{}, Wide: tt.wide,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err == nil {
				b.Close()
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Start: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Start = %v, want an error with %q", err, tt.wantErr)
			}
			var ce *channel.Error
			if tt.invalid && !errors.As(err, &ce) {
				t.Errorf("Start = %v: want the *channel.Error of the invalid pattern", err)
			}
		})
	}
}

// counter is a Handler that counts Message calls and copies.
type counter struct {
	calls, copies atomic.Int64
}

func (c *counter) Message(_ string, _ []byte, subs []uint64) {
	c.calls.Add(1)
	c.copies.Add(int64(len(subs)))
}
func (c *counter) Live(uint64, error) {}

// TestDispatchAllocationFree: in steady state the dispatcher allocates
// nothing per message, for members (literal and wildcard) and ordinary
// subscriptions alike. It drives the dispatcher with messages pushed
// straight into its channel (nats.go allocates each message it receives;
// that is not the dispatcher's).
func TestDispatchAllocationFree(t *testing.T) {
	h := &counter{}
	b := &Broker{
		handler:      h,
		log:          slog.New(slog.NewTextHandler(io.Discard, nil)),
		msgs:         make(chan *nats.Msg, 4096),
		registered:   make(map[*nats.Subscription]*subscription),
		dispatchDone: make(chan struct{}),
	}
	groups, err := newWideGroups([]string{"user.>"})
	if err != nil {
		t.Fatal(err)
	}
	g := groups[0]
	carrierSub := &nats.Subscription{Subject: g.pattern}
	b.registered[carrierSub] = &subscription{pattern: g.pattern, carrier: true, wide: g}
	ordinarySub := &nats.Subscription{Subject: "user.>"}
	b.registered[ordinarySub] = &subscription{id: 1, pattern: "user.>", live: true}
	const members = 19_000
	for i := range members {
		s := &subscription{id: uint64(10 + i), pattern: "user." + strconv.Itoa(i), wide: g, live: true}
		g.add(s)
	}
	for i := range 10 {
		g.add(&subscription{id: uint64(100_000 + i), pattern: "user." + strconv.Itoa(i) + ".>", wide: g, live: true})
	}
	msgs := make([]*nats.Msg, 0, 256)
	for i := range cap(msgs) / 2 {
		subject := "user." + strconv.Itoa(i*37%members)
		data := []byte("payload")
		msgs = append(msgs,
			&nats.Msg{Subject: subject, Data: data, Sub: carrierSub},
			&nats.Msg{Subject: subject, Data: data, Sub: ordinarySub})
	}
	go b.dispatch()
	feed := func(rounds int) {
		for range rounds {
			for _, m := range msgs {
				b.msgs <- m
			}
		}
	}
	wait := func(copies int64) {
		t.Helper()
		waitFor(t, "the dispatcher to deliver", func() bool { return h.copies.Load() >= copies })
	}
	feed(10) // warm up: d.ids and the lookup map reach their size
	wait(int64(10 * len(msgs)))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const rounds = 100
	feed(rounds)
	wait(int64((10 + rounds) * len(msgs)))
	runtime.ReadMemStats(&after)
	b.msgs <- stopMarker
	<-b.dispatchDone
	n := rounds * len(msgs)
	allocs := after.Mallocs - before.Mallocs
	t.Logf("%d messages (%d calls, %d copies): %d allocations in the process meanwhile", n, h.calls.Load(), h.copies.Load(), allocs)
	if allocs > uint64(n/100) {
		t.Errorf("%d allocations for %d messages: the dispatcher allocates per message", allocs, n)
	}
}

// TestMemberSize keeps the subscription struct in Go's 48-byte size
// class: one per personal channel.
func TestMemberSize(t *testing.T) {
	if n := unsafe.Sizeof(subscription{}); n > 48 {
		t.Errorf("subscription is %d bytes, want at most 48", n)
	}
}

// TestWideGroupRouting drives a group's routing directly: members added and
// removed in any order, several on one subject, literal and wildcard.
func TestWideGroupRouting(t *testing.T) {
	groups, err := newWideGroups([]string{"u.>"})
	if err != nil {
		t.Fatal(err)
	}
	g := groups[0]
	m := map[uint64]*subscription{}
	for id, p := range map[uint64]string{1: "u.a", 2: "u.a", 3: "u.a", 4: "u.b", 5: "u.*", 6: "u.a.>"} {
		m[id] = &subscription{id: id, pattern: p, wide: g}
	}
	route := func(subject string) string {
		ids := g.route(subject, nil)
		slices.Sort(ids)
		return fmt.Sprint(ids)
	}
	steps := []struct {
		add, remove uint64
		cancel      uint64
		want        map[string]string
	}{
		{add: 1, want: map[string]string{"u.a": "[1]", "u.b": "[]"}},
		{add: 2, want: map[string]string{"u.a": "[1 2]"}},
		{add: 3, want: map[string]string{"u.a": "[1 2 3]"}},
		{add: 4, want: map[string]string{"u.a": "[1 2 3]", "u.b": "[4]"}},
		{add: 5, want: map[string]string{"u.a": "[1 2 3 5]", "u.b": "[4 5]", "u.a.x": "[]"}},
		{add: 6, want: map[string]string{"u.a.x": "[6]", "u.a": "[1 2 3 5]"}},
		{remove: 1, want: map[string]string{"u.a": "[2 3 5]"}}, // the map's own member: one from more takes its place
		{remove: 3, want: map[string]string{"u.a": "[2 5]"}},
		{cancel: 2, want: map[string]string{"u.a": "[5]"}}, // cancelled, not yet removed
		{remove: 2, want: map[string]string{"u.a": "[5]"}},
		{remove: 5, want: map[string]string{"u.a": "[]", "u.b": "[4]"}},
		{add: 1, want: map[string]string{"u.a": "[1]"}},
		{remove: 6, want: map[string]string{"u.a.x": "[]"}},
		{remove: 4, want: map[string]string{"u.b": "[]"}},
		{remove: 1, want: map[string]string{"u.a": "[]"}},
	}
	for i, st := range steps {
		switch {
		case st.add != 0:
			m[st.add].cancelled.Store(false)
			g.add(m[st.add])
		case st.remove != 0:
			g.remove(m[st.remove])
		default:
			m[st.cancel].cancelled.Store(true)
		}
		for subject, want := range st.want {
			if got := route(subject); got != want {
				t.Fatalf("step %d: route(%s) = %s, want %s", i, subject, got, want)
			}
		}
	}
	if len(g.literal) != 0 || len(g.more) != 0 || len(g.wild) != 0 {
		t.Errorf("empty group keeps %d literal, %d more, %d wild", len(g.literal), len(g.more), len(g.wild))
	}
}

// A member is one subscription per personal channel: the struct stays in
// Go's 48-byte size class (the republish index took a padding byte).
func TestSubscriptionFitsFortyEightBytes(t *testing.T) {
	if n := unsafe.Sizeof(subscription{}); n > 48 {
		t.Fatalf("subscription is %d bytes, want at most 48", n)
	}
}
