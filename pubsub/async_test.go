package pubsub

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/pubsub/natstest"
)

// doneLog records every done call of PublishAsync by message number.
type doneLog struct {
	mu    sync.Mutex
	calls map[int][]error
	count atomic.Int64
}

func newDoneLog() *doneLog { return &doneLog{calls: make(map[int][]error)} }

func (l *doneLog) done(i int) func(error) {
	return func(err error) {
		l.mu.Lock()
		l.calls[i] = append(l.calls[i], err)
		l.mu.Unlock()
		l.count.Add(1)
	}
}

// errs returns the errors done was called with for message i.
func (l *doneLog) errs(i int) []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls[i]
}

// TestPublishAsync: messages with headers reach a plain nats.go
// subscriber, in order, with the bytes they had at the call (the caller's
// buffers are reused at once), and done is called once for each, with nil.
func TestPublishAsync(t *testing.T) {
	for _, st := range setups {
		t.Run(st.name, func(t *testing.T) {
			b, _, url, _ := st.start(t, Config{Handler: nopHandler{}})
			nc := connect(t, url)
			sub, err := nc.SubscribeSync("chat.>")
			if err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			const n = 200
			dl := newDoneLog()
			subject := []byte("chat.room1")
			data := make([]byte, 0, 64)
			header := nats.Header{"Herald-Conn": {"7"}, "X-Multi": {"a", "b"}}
			for i := range n {
				data = strconv.AppendInt(data[:0], int64(i), 10)
				header.Set("Herald-Seq", strconv.Itoa(i))
				var d time.Duration
				d = timed(func() { err = b.PublishAsync(string(subject), header, data, dl.done(i)) })
				if err != nil {
					t.Fatalf("PublishAsync %d: %v", i, err)
				}
				if d > maxCallTime {
					t.Errorf("PublishAsync took %v", d)
				}
				// The caller reuses its buffers at once.
				copy(data, "xxxxxxxx")
				header.Set("Herald-Seq", "reused")
			}
			for i := range n {
				m, err := sub.NextMsg(waitTimeout)
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if m.Subject != "chat.room1" || string(m.Data) != strconv.Itoa(i) ||
					m.Header.Get("Herald-Seq") != strconv.Itoa(i) || m.Header.Get("Herald-Conn") != "7" ||
					fmt.Sprint(m.Header.Values("X-Multi")) != "[a b]" {
					t.Fatalf("message %d: %s %q %v", i, m.Subject, m.Data, m.Header)
				}
			}
			waitFor(t, "every done", func() bool { return dl.count.Load() >= n })
			time.Sleep(20 * time.Millisecond) // a second call would come by now
			for i := range n {
				if errs := dl.errs(i); len(errs) != 1 || errs[0] != nil {
					t.Fatalf("done of message %d called with %v, want once with nil", i, errs)
				}
			}
		})
	}
}

func TestPublishAsyncRefusesBadSubjects(t *testing.T) {
	b, _ := startEmbeddedBroker(t, nopHandler{})
	called := atomic.Int64{}
	for subject, code := range map[string]string{
		"chat.*":       channel.CodeWildcardsDisabled,
		"chat.>":       channel.CodeWildcardsDisabled,
		"":             channel.CodeInvalidChannel,
		"chat.":        channel.CodeInvalidChannel,
		"a b":          channel.CodeInvalidChannel,
		"$SYS.REQ.x":   channel.CodeForbidden,
		"_INBOX.abc":   channel.CodeForbidden,
		"$JS.API.INFO": channel.CodeForbidden,
	} {
		err := b.PublishAsync(subject, nil, []byte("x"), func(error) { called.Add(1) })
		var ce *channel.Error
		if !errors.As(err, &ce) || ce.Code != code {
			t.Errorf("PublishAsync(%q) = %v, want code %s", subject, err, code)
		}
	}
	mustFlush(t, b)
	if n := called.Load(); n != 0 {
		t.Errorf("done called %d times for refused messages", n)
	}
}

// TestPublishAsyncQueueFull: with the publisher stalled, PublishAsync
// refuses what exceeds the queue at once and never blocks; the messages
// accepted are all answered once the publisher moves again.
func TestPublishAsyncQueueFull(t *testing.T) {
	t.Run("done blocks", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			cfg  Config
			size int // data bytes per message
			fits int // messages accepted while the first is stuck
		}{
			{"messages", Config{PublishQueue: 3}, 10, 3},
			{"bytes", Config{PublishQueueBytes: 100}, 40, 2},             // 2 × (40 + subject) <= 100
			{"one large message", Config{PublishQueueBytes: 10}, 500, 1}, // alone, it goes
		} {
			t.Run(tt.name, func(t *testing.T) {
				tt.cfg.Listen, tt.cfg.Handler = "127.0.0.1:-1", nopHandler{}
				b, _ := startBroker(t, tt.cfg)
				stuck, unblock := make(chan struct{}), make(chan struct{})
				defer close(unblock)
				dl := newDoneLog()
				data := make([]byte, tt.size)
				if err := b.PublishAsync("q.x", nil, data, func(error) { stuck <- struct{}{}; <-unblock }); err != nil {
					t.Fatal(err)
				}
				<-stuck // the publisher is inside the first done
				for i := 1; i < tt.fits; i++ {
					if err := b.PublishAsync("q.x", nil, data, dl.done(i)); err != nil {
						t.Fatalf("message %d of %d: %v", i, tt.fits, err)
					}
				}
				var err error
				if d := timed(func() { err = b.PublishAsync("q.x", nil, data, dl.done(-1)) }); d > maxCallTime {
					t.Errorf("a refused PublishAsync took %v", d)
				}
				if !errors.Is(err, ErrPublishQueueFull) {
					t.Fatalf("PublishAsync past the queue = %v, want ErrPublishQueueFull", err)
				}
				unblock <- struct{}{}
				waitFor(t, "the queue to drain", func() bool {
					b.pubMu.Lock()
					defer b.pubMu.Unlock()
					return b.pubCount == 0 && b.pubBytes == 0
				})
				if n := dl.count.Load(); n != int64(tt.fits-1) {
					t.Errorf("%d done calls for %d queued messages", n, tt.fits-1)
				}
				if err := b.PublishAsync("q.x", nil, data, dl.done(0)); err != nil {
					t.Errorf("PublishAsync after the queue drained: %v", err)
				}
				waitFor(t, "the last done", func() bool { return len(dl.errs(0)) == 1 })
				if errs := dl.errs(-1); len(errs) != 0 {
					t.Errorf("done of a refused message called: %v", errs)
				}
			})
		}
	})

	// nats.go stuck on a server that accepts and never answers, holding
	// its connection lock for its whole connect timeout on every attempt:
	// PublishMsg waits on the publisher, the queue fills, and PublishAsync
	// still never waits.
	t.Run("tarpit", func(t *testing.T) {
		tp := newTarpit(t)
		srv := natstest.Start(t)
		b, _ := startBroker(t, Config{
			URL:           "nats://" + tp.addr + "," + srv.URL(),
			ReconnectWait: 50 * time.Millisecond,
			Handler:       nopHandler{},
			PublishQueue:  4,
		})
		waitFor(t, "broker to connect", b.Connected)
		srv.Kill()
		waitFor(t, "broker to notice the outage", func() bool { return !b.Connected() })

		dl := newDoneLog()
		accepted, full := 0, false
		var slowest time.Duration
		deadline := time.Now().Add(waitTimeout)
		for !full && time.Now().Before(deadline) {
			var err error
			slowest = max(slowest, timed(func() { err = b.PublishAsync("t.x", nil, []byte(strconv.Itoa(accepted)), dl.done(accepted)) }))
			switch {
			case err == nil:
				accepted++
			case errors.Is(err, ErrPublishQueueFull):
				full = true
			default:
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond) // while nats.go is between attempts, messages go
		}
		if !full {
			t.Fatalf("the queue never filled in %v (%d accepted)", waitTimeout, accepted)
		}
		if slowest > maxCallTime {
			t.Errorf("PublishAsync took up to %v while nats.go was stuck on the tarpit", slowest)
		}
		// Back up: nats.go sends what it buffered, and every done comes.
		srv.Restart()
		waitFor(t, "every accepted message's done", func() bool { return dl.count.Load() == int64(accepted) })
		for i := range accepted {
			if errs := dl.errs(i); len(errs) != 1 || errs[0] != nil {
				t.Fatalf("done of message %d = %v, want once with nil (sent or buffered)", i, errs)
			}
		}
		t.Logf("%d accepted before the queue of 4 was full", accepted)
	})
}

// TestPublishAsyncClose: Close answers every message still queued with
// ErrClosed, exactly once, and PublishAsync refuses once Close has begun.
func TestPublishAsyncClose(t *testing.T) {
	b, _ := startBroker(t, Config{Listen: "127.0.0.1:-1", Handler: nopHandler{}})
	stuck, unblock := make(chan struct{}), make(chan struct{})
	dl := newDoneLog()
	if err := b.PublishAsync("c.x", nil, []byte("first"), func(err error) {
		stuck <- struct{}{}
		<-unblock
		dl.done(0)(err)
	}); err != nil {
		t.Fatal(err)
	}
	<-stuck
	const queued = 8
	for i := 1; i <= queued; i++ {
		if err := b.PublishAsync("c.x", nil, []byte("queued"), dl.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan struct{})
	go func() {
		b.Close()
		close(closed)
	}()
	probes := newDoneLog()
	accepted := 0
	waitFor(t, "Close to begin", func() bool {
		err := b.PublishAsync("c.x", nil, nil, probes.done(accepted))
		if err == nil {
			accepted++
		}
		return errors.Is(err, ErrClosed)
	})
	close(unblock)
	select {
	case <-closed:
	case <-time.After(waitTimeout):
		t.Fatal("Close did not return")
	}
	if errs := dl.errs(0); len(errs) != 1 || errs[0] != nil {
		t.Errorf("done of the message being published = %v, want once with nil", errs)
	}
	for i := 1; i <= queued; i++ {
		if errs := dl.errs(i); len(errs) != 1 || !errors.Is(errs[0], ErrClosed) {
			t.Errorf("done of queued message %d = %v, want once with ErrClosed", i, errs)
		}
	}
	// Probes accepted before Close began are answered too, once each.
	for i := range accepted {
		if errs := probes.errs(i); len(errs) != 1 {
			t.Errorf("done of probe %d = %v, want one call", i, errs)
		}
	}
	if errs := probes.errs(accepted); len(errs) != 0 {
		t.Errorf("done of the refused probe called: %v", errs)
	}
}

func TestPublishAsyncConfig(t *testing.T) {
	for _, cfg := range []Config{{PublishQueue: -1}, {PublishQueueBytes: -1}} {
		cfg.Listen, cfg.Handler = "127.0.0.1:-1", nopHandler{}
		if b, err := Start(cfg); err == nil {
			b.Close()
			t.Errorf("Start(%+v) succeeded", cfg)
		}
	}
}
