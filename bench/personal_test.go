package bench

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"
)

func runT(t *testing.T, cfg Config) *Result {
	t.Helper()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := res.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
	if res.TimedOut {
		t.Fatalf("timed out: %v", res.Notes)
	}
	return res
}

// With a channel per connection, each socket gets only its own channel's
// messages, and what goes wrong on one channel is counted on that
// channel: a lost message, a duplicate and a late one, each on a
// different socket.
func TestPersonalChannels(t *testing.T) {
	for _, procs := range []int{1, 2} {
		t.Run("procs="+string(rune('0'+procs)), func(t *testing.T) {
			const conns, rounds = 200, 3
			r := startRouter(t, func(channel string, seq uint64) fault {
				switch {
				case channelIndex(channel) == "7" && seq == 2:
					return lose
				case channelIndex(channel) == "11" && seq == 1:
					return twice
				case channelIndex(channel) == "13" && seq == 2:
					return hold
				}
				return deliver
			})
			res := runT(t, Config{
				Scenario:     Fanout,
				URL:          r.url(),
				Conns:        conns,
				PerConn:      true,
				Rounds:       rounds,
				Duration:     10 * time.Second,
				Timeout:      30 * time.Second,
				Procs:        procs,
				Loops:        1,
				Dialers:      8,
				ServerPIDs:   []int{os.Getpid()},
				Publish:      r.publish,
				ShardCommand: testShardCommand,
			})
			if res.Channels != conns || !res.PerConn || res.Connect.Upgraded != conns {
				t.Fatalf("channels %d per-conn %v upgraded %d", res.Channels, res.PerConn, res.Connect.Upgraded)
			}
			r.mu.Lock()
			for k, subs := range r.subs {
				if len(subs) != 1 {
					t.Errorf("channel %s has %d sockets, want 1", k, len(subs))
				}
			}
			if len(r.subs) != conns {
				t.Errorf("%d channels subscribed, want %d", len(r.subs), conns)
			}
			r.mu.Unlock()
			f := res.Fanout
			if f.Published != conns*rounds || f.Expected != conns*rounds {
				t.Fatalf("published %d, expected %d, want %d", f.Published, f.Expected, conns*rounds)
			}
			if f.Delivered != conns*rounds-1 || f.Missing != 1 || f.Duplicated != 1 || f.OutOfOrder != 1 {
				t.Fatalf("delivered %d missing %d duplicated %d out of order %d", f.Delivered, f.Missing, f.Duplicated, f.OutOfOrder)
			}
			if f.Latency.Count != int64(f.Delivered) || f.PerSecond <= 0 || f.Reads == 0 || f.PerRead < 1 {
				t.Fatalf("latency %+v, %v/s, %d reads", f.Latency, f.PerSecond, f.Reads)
			}
			if cpu := res.Server.CPU; cpu == nil || cpu.Unit != "delivery" || cpu.Count != f.Delivered {
				t.Fatalf("server cpu %+v", cpu)
			}
		})
	}
}

// The publisher's pacing: a rate far above what one sleep per message
// allows still goes out on schedule, without a NATS round trip per
// message.
func TestPublishPacingHighRate(t *testing.T) {
	var published int
	var flushes int
	r := &runner{
		cfg:       Config{Channels: 100, Size: 64, Duration: 10 * time.Second},
		prefix:    "p",
		planned:   make([]int, 100),
		published: make([]uint64, 100),
	}
	r.cfg.Publish = func(string, []byte) error { published++; return nil }
	r.cfg.Flush = func() error { flushes++; return nil }
	sent, err := r.publishSteady(context.Background(), time.Now(), 20000, 2000)
	if err != nil || sent != 2000 || published != 2000 {
		t.Fatalf("sent %d, published %d: %v", sent, published, err)
	}
	if flushes > 1 {
		t.Errorf("%d flushes for 2,000 messages due 50 µs apart", flushes)
	}
	for k, n := range r.published {
		if n != 20 {
			t.Fatalf("channel %d got %d messages, want 20", k, n)
		}
	}
}
