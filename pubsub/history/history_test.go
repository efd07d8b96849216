package history_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-ws/herald/pubsub"
	"github.com/herald-ws/herald/pubsub/history"
)

// relay is the broker's handler in these tests, as Herald's is:
// republished messages go through the store, and what the store passes
// on is recorded. drop, when set, loses a republished message before the
// store sees it: a bus drop, as pending limits or a reconnect make.
type relay struct {
	store atomic.Pointer[history.Store]
	drop  func(seq uint64) bool
	lives chan error
	mu    sync.Mutex
	out   []string
}

func (r *relay) Message(string, []byte, []uint64) {}

func (r *relay) Live(id uint64, err error) { r.lives <- err }

func (r *relay) Republished(subject string, data []byte, subs []uint64, seq, last uint64) {
	if r.drop != nil && r.drop(seq) {
		return
	}
	r.store.Load().Republished(subject, data, subs, seq, last, func(subject string, data []byte, _ []uint64, seq uint64) {
		r.mu.Lock()
		r.out = append(r.out, fmt.Sprintf("%s %d %s", subject, seq, data))
		r.mu.Unlock()
	})
}

func (r *relay) passed() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.out...)
}

// setup starts an embedded NATS with JetStream, a broker on it and a store
// managing a stream for subjects, and subscribes channel through it.
func setup(t testing.TB, r *relay, channel string, subjects ...string) (*history.Store, jetstream.JetStream, *pubsub.Broker) {
	t.Helper()
	r.lives = make(chan error, 1)
	b, err := pubsub.Start(pubsub.Config{
		Listen: "127.0.0.1:-1", JetStream: true, StoreDir: t.TempDir(), Handler: r,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := history.Open(ctx, b.Conn(), history.Config{Subjects: subjects, Memory: true, Size: 100,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Drops:      func() uint64 { st := b.Stats(); return st.Dropped + st.Disconnects },
		Subscribed: b.Subscribed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	r.store.Store(s)
	b.SetRepublished(s.Prefixes())
	subscribe(t, r, s, b, 1, channel)
	nc, err := nats.Connect(b.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return s, js, b
}

// subscribe subscribes id to channel through the store, as Herald's bus
// does, and waits for its Live.
func subscribe(t testing.TB, r *relay, s *history.Store, b *pubsub.Broker, id uint64, channel string) {
	t.Helper()
	b.Subscribe(id, s.Subject(channel))
	select {
	case err := <-r.lives:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no Live")
	}
}

func publish(t *testing.T, js jetstream.JetStream, subjectData ...string) {
	t.Helper()
	for i := 0; i+1 < len(subjectData); i += 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := js.Publish(ctx, subjectData[i], []byte(subjectData[i+1])); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 20s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Messages the bus lost on their way to Herald are read from the stream
// when the next one on the subject shows the gap (its Nats-Last-Sequence),
// and passed on before it, in order: a history channel loses nothing
// between NATS and Herald.
func TestGapRepairedFromTheStream(t *testing.T) {
	r := &relay{drop: func(seq uint64) bool { return seq == 2 || seq == 3 || seq == 6 }}
	s, js, b := setup(t, r, "gap.a", "gap.>")
	publish(t, js, "gap.a", "1", "gap.a", "2", "gap.b", "x", "gap.a", "3", "gap.a", "4", "gap.a", "5", "gap.a", "6", "gap.a", "7")
	// gap.b is not subscribed: its 3 is no message of gap.a's, and never
	// asked for.
	want := []string{"gap.a 1 1", "gap.a 2 2", "gap.a 4 3", "gap.a 5 4", "gap.a 6 5", "gap.a 7 6", "gap.a 8 7"}
	waitFor(t, "gap.a 8", func() bool { return len(r.passed()) >= len(want) })
	if got := r.passed(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("passed on:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if st := s.Stats(); st.Gaps != 2 || st.Repaired != 2 {
		t.Errorf("stats %+v, want 2 gaps and 2 messages repaired (seqs 2 and 6)", st)
	}

	// What was published while nobody here followed the channel is no gap
	// of a new subscription: it starts live.
	b.Unsubscribe(1)
	s.Unsubscribed(1)
	publish(t, js, "gap.a", "8", "gap.a", "9")
	subscribe(t, r, s, b, 2, "gap.a")
	publish(t, js, "gap.a", "10")
	want = append(want, "gap.a 11 10")
	waitFor(t, "gap.a 11", func() bool { return len(r.passed()) >= len(want) })
	if got := r.passed(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after a new subscription, passed on:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A reconnect storm: 19,000 clients resume one channel from about the
// same position. The stream is read once per distinct position at most
// (concurrent identical reads are shared, and once a read has made the
// channel's tail complete the tail answers), and the stream's state is
// asked for by far fewer calls than resumes. That holds for a channel
// that had live messages (it has a tail already) as for one idle since it
// was subscribed, which has none until the first read makes it.
func TestStormReadsTheStreamOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		idle bool // the messages were stored before the channel was subscribed
	}{
		{"live", false},
		{"idle", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &relay{}
			s, js, b := setup(t, r, "storm.other", "storm.>")
			if !tc.idle {
				subscribe(t, r, s, b, 2, "storm.a")
			}
			for i := 1; i <= 20; i++ {
				publish(t, js, "storm.a", fmt.Sprint(i))
			}
			if tc.idle {
				subscribe(t, r, s, b, 2, "storm.a")
				if n := s.Stats().Tails; n != 0 {
					t.Fatalf("%d tails for two idle subscriptions, want none", n)
				}
			} else {
				waitFor(t, "the messages live", func() bool { return len(r.passed()) == 20 })
			}
			const clients = 19_000
			var wg sync.WaitGroup
			var bad atomic.Int32
			var first atomic.Value
			wg.Add(clients)
			for i := range clients {
				since := uint64(10 + i%3) // about the same position
				go s.Replay(history.Request{Channel: 2, Pattern: "storm.a", Resume: true, Since: since}, func(res history.Result) {
					defer wg.Done()
					if res.Err != nil || !res.Recovered || len(res.Msgs) != int(20-since) || res.Msgs[0].Seq != since+1 {
						bad.Add(1)
						first.CompareAndSwap(nil, fmt.Sprintf("since %d: %d msgs, recovered %v, err %v", since, len(res.Msgs), res.Recovered, res.Err))
					}
				})
			}
			wg.Wait()
			if n := bad.Load(); n > 0 {
				t.Fatalf("%d of %d resumes wrong, first: %v", n, clients, first.Load())
			}
			st := s.Stats()
			t.Logf("%d resumes: %d stream reads, %d info calls, %d answered from the tail", clients, st.Reads, st.Infos, st.TailHits)
			if st.Reads > 3 || st.Infos >= clients/10 {
				t.Errorf("%+v: want at most 3 reads (one per position) and far fewer info calls than resumes", st)
			}
			if st.Tails != 1 {
				t.Errorf("%d tails, want one: storm.a's (storm.other stayed idle)", st.Tails)
			}
		})
	}
}

// A channel's tail exists only while its subscription does, and only once
// it is needed: not for an idle subscription, made by its first message
// or resume, gone with the subscription, and never made again by a
// message or a resume still under way when it ended (their ids are those
// of a subscription the broker no longer has).
func TestTailsOnlyWhileSubscribed(t *testing.T) {
	r := &relay{}
	s, js, b := setup(t, r, "life.a", "life.>")
	subscribe(t, r, s, b, 2, "life.b")
	data := []byte("late")
	for _, step := range []struct {
		name  string
		do    func(t *testing.T)
		tails int
	}{
		{"idle subscriptions", func(*testing.T) {}, 0},
		{"a live message", func(t *testing.T) {
			publish(t, js, "life.a", "1")
			waitFor(t, "life.a 1", func() bool { return len(r.passed()) == 1 })
		}, 1},
		{"a resume", func(t *testing.T) {
			res := replay(t, s, history.Request{Channel: 2, Pattern: "life.b", Resume: true})
			if res.Err != nil || len(res.Msgs) != 0 || !res.Recovered {
				t.Fatalf("resume of life.b: %+v", res)
			}
		}, 2},
		{"unsubscribed", func(*testing.T) {
			b.Unsubscribe(1)
			s.Unsubscribed(1)
		}, 1},
		{"a message under way when it ended", func(*testing.T) {
			s.Republished("life.a", data, []uint64{1}, 2, 1, func(string, []byte, []uint64, uint64) {})
		}, 1},
		{"a resume under way when it ended", func(t *testing.T) {
			res := replay(t, s, history.Request{Channel: 1, Pattern: "life.a", Resume: true})
			if res.Err != nil || len(res.Msgs) != 1 || string(res.Msgs[0].Data) != "1" {
				t.Fatalf("resume of life.a after its subscription ended: %+v", res)
			}
		}, 1},
		{"the other unsubscribed", func(*testing.T) {
			b.Unsubscribe(2)
			s.Unsubscribed(2)
		}, 0},
	} {
		step.do(t)
		if got := s.Stats().Tails; got != step.tails {
			t.Fatalf("after %s: %d tails, want %d", step.name, got, step.tails)
		}
	}
}

// replay is s.Replay waited for.
func replay(t *testing.T, s *history.Store, req history.Request) history.Result {
	t.Helper()
	done := make(chan history.Result, 1)
	s.Replay(req, func(res history.Result) { done <- res })
	select {
	case res := <-done:
		return res
	case <-time.After(20 * time.Second):
		t.Fatal("no answer to a replay within 20s")
		return history.Result{}
	}
}

// BenchmarkRepublished is the history's share of a live message on the
// way from NATS to the hub: its tail and gap bookkeeping. It allocates
// nothing once the tail's slots have grown.
func BenchmarkRepublished(b *testing.B) {
	r := &relay{}
	s, _, _ := setup(b, r, "bench.a", "bench.>")
	data := []byte(`{"sym":"AAPL","px":187.25,"ts":1732180000000,"seq":123456789012}`)
	subs := []uint64{1}
	var passed uint64
	out := func(string, []byte, []uint64, uint64) { passed++ }
	seq := uint64(0)
	for range 1000 { // grow the tail's slots
		seq++
		s.Republished("bench.a", data, subs, seq, seq-1, out)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		seq++
		s.Republished("bench.a", data, subs, seq, seq-1, out)
	}
	if passed != seq {
		b.Fatalf("passed on %d of %d", passed, seq)
	}
}
