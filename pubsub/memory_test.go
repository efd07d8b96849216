package pubsub

import (
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/herald-ws/herald/pubsub/natstest"
)

// liveCounter is a Handler that counts the subscriptions made live.
type liveCounter struct{ n atomic.Int64 }

func (c *liveCounter) Message(string, []byte, []uint64) {}
func (c *liveCounter) Live(_ uint64, err error) {
	if err == nil {
		c.n.Add(1)
	}
}

// What one NATS subscription costs the process that holds it, the floor
// under a personal channel's memory in Herald: measured with 19,000
// distinct subjects (one per connection of the idle benchmark), for the
// whole Broker on its embedded server, for the same subscriptions as
// members of one wide pattern (Config.Wide), and for bare nats.go ChanSubscribe
// calls into an embedded server: NATS's own cost (client and server), with
// nothing of Herald's.
//
//	go test -run '^$' -bench SubscriptionMemory -benchtime 1x ./pubsub/
func BenchmarkSubscriptionMemory(b *testing.B) {
	const n = 19_000
	heap := func() uint64 {
		runtime.GC()
		debug.FreeOSMemory()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	b.Run("broker", func(b *testing.B) {
		for range b.N {
			var lives liveCounter
			br, err := Start(Config{Listen: "127.0.0.1:-1", Handler: &lives, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(br.Close)
			before := heap()
			for i := range n {
				br.Subscribe(uint64(i+1), "user."+strconv.Itoa(i))
			}
			deadline := time.Now().Add(time.Minute)
			for lives.n.Load() < n {
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d subscriptions live", lives.n.Load(), n)
				}
				time.Sleep(10 * time.Millisecond)
			}
			b.ReportMetric(float64(heap()-before)/n, "heap-B/sub")
		}
	})
	// The same 19,000 personal channels as members of one wide pattern.
	b.Run("broker-wide", func(b *testing.B) {
		for range b.N {
			b.ReportMetric(memberHeap(b, n, heap), "heap-B/sub")
		}
	})
	b.Run("nats.go+server", func(b *testing.B) {
		for range b.N {
			ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
			if err != nil {
				b.Fatal(err)
			}
			go ns.Start()
			if !ns.ReadyForConnections(10 * time.Second) {
				b.Fatal("embedded server not ready")
			}
			b.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
			b.ReportMetric(chanSubscribeCost(b, n, heap, ns.ClientURL(), nats.InProcessServer(ns)), "heap-B/sub")
		}
	})
	// With --nats URL the server's share lives in the NATS server's
	// process: what is left in Herald's is the client's.
	b.Run("nats.go", func(b *testing.B) {
		for range b.N {
			srv := natstest.Start(b)
			b.ReportMetric(chanSubscribeCost(b, n, heap, srv.URL()), "heap-B/sub")
		}
	})
}

// chanSubscribeCost is the heap one of n nats.go ChanSubscribes on distinct
// subjects adds, connected to url.
func chanSubscribeCost(b *testing.B, n int, heap func() uint64, url string, opts ...nats.Option) float64 {
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	ch := make(chan *nats.Msg, 64)
	before := heap()
	for i := range n {
		if _, err := nc.ChanSubscribe("user."+strconv.Itoa(i), ch); err != nil {
			b.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	after := heap()
	runtime.KeepAlive(ch)
	return float64(after-before) / float64(n)
}

// waitLives waits until lives has counted n subscriptions live.
func waitLives(tb testing.TB, lives *liveCounter, n int64) {
	tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for lives.n.Load() < n {
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d subscriptions live", lives.n.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// memberHeap is the heap one of n members of a wide group adds to a
// Broker: an entry in the id map, one in the group's routing, and the
// subscription struct with its pattern; one NATS subscription for them all.
func memberHeap(tb testing.TB, n int, heap func() uint64) float64 {
	var lives liveCounter
	br, err := Start(Config{Listen: "127.0.0.1:-1", Handler: &lives, Wide: []string{"user.*"},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	defer br.Close()
	// One member first, so that the group's NATS subscription is not
	// counted against the members.
	br.Subscribe(1, "user.first")
	waitLives(tb, &lives, 1)
	before := heap()
	for i := range n {
		br.Subscribe(uint64(i+2), "user."+strconv.Itoa(i))
	}
	waitLives(tb, &lives, int64(n+1))
	if got := br.NATSSubscriptions(); got != 1 {
		tb.Fatalf("NATSSubscriptions() = %d, want 1", got)
	}
	after := heap()
	runtime.KeepAlive(br)
	return float64(after-before) / float64(n)
}

// TestMemberMemory keeps a member of a wide group small: a fraction of one
// NATS subscription (about 1.2 KB with the server's share, see
// BenchmarkSubscriptionMemory). Heap figures vary with map growth, so the
// bound is loose; the benchmark reports the figure.
func TestMemberMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("measures 19,000 members")
	}
	got := memberHeap(t, 19_000, func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	})
	t.Logf("%.0f heap bytes per member", got)
	if got > 400 {
		t.Errorf("a member costs %.0f heap bytes, want under 400", got)
	}
}
