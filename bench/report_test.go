package bench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func encodedLatency(t *testing.T, values ...int64) string {
	t.Helper()
	h := newLatencyHistogram()
	for _, v := range values {
		recordLatency(h, v)
	}
	s, err := encodeLatency(h)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Two shards' reports, as children send them, add up to one result.
func TestAggregate(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	at := func(d time.Duration) int64 { return base.Add(d).UnixNano() }
	shards := []*shardResult{
		{
			Conns: 3, Attempts: 5, EverUp: 3,
			ConnectStart: at(0), ConnectEnd: at(2 * time.Second),
			Failures: map[string]int{"http 503": 2},
			Closed:   map[string]int{"close 1008": 1},
			Channels: []channelCounts{{Conns: 2, Unique: 20}, {Conns: 1, Unique: 9, Duplicates: 1, Late: 2}},
			Other:    1, LastDelivery: at(11 * time.Second),
			Latency:    encodedLatency(t, 1000, 2000, 3000),
			StormStart: at(20 * time.Second), StormEnd: at(21 * time.Second), StormDropped: 3, StormUp: 3, StormAttempts: 4,
			StormFailures: map[string]int{"http 503": 1},
			CPUSeconds:    1.5,
		},
		{
			Conns: 2, Attempts: 3, EverUp: 1, GaveUp: 1,
			ConnectStart: at(time.Second), ConnectEnd: at(4 * time.Second),
			Failures:     map[string]int{"http 503": 1, "http 404": 1},
			Channels:     []channelCounts{{Conns: 1, Unique: 10}, {}},
			LastDelivery: at(12 * time.Second),
			Latency:      encodedLatency(t, 4000),
			StormStart:   at(20*time.Second + time.Millisecond), StormEnd: at(22 * time.Second), StormDropped: 1, StormUp: 1, StormAttempts: 1,
			CPUSeconds: 0.5,
		},
	}
	for _, sc := range []Scenario{Fanout, Storm} {
		res := &Result{Scenario: sc}
		if err := res.aggregate(shards, []uint64{10, 10}, base.Add(10*time.Second), nil); err != nil {
			t.Fatal(err)
		}
		c := res.Connect
		if c.Upgraded != 4 || c.GaveUp != 1 || c.Attempts != 8 || c.Failures["http 503"] != 3 || c.Failures["http 404"] != 1 || c.Seconds != 4 || c.PerSecond != 1 {
			t.Errorf("connect %+v", c)
		}
		if res.ClosedByServer["close 1008"] != 1 || res.OtherMessages != 1 {
			t.Errorf("closed %v other %d", res.ClosedByServer, res.OtherMessages)
		}
		switch sc {
		case Fanout:
			f := res.Fanout
			// channel 0: 3 conns x 10 = 30, all there; channel 1: 1 conn x 10, 9 there.
			if f.Expected != 40 || f.Delivered != 39 || f.Missing != 1 || f.Duplicated != 1 || f.OutOfOrder != 2 {
				t.Errorf("fanout %+v", f)
			}
			if f.Seconds != 2 || f.PerSecond != 19.5 {
				t.Errorf("throughput %v over %v", f.PerSecond, f.Seconds)
			}
			if l := f.Latency; l.Count != 4 || l.P50 != 2 || l.Max < 4 || l.Max > 4.01 { // HDR keeps three digits
				t.Errorf("latency %+v", l)
			}
		case Storm:
			s := res.Storm
			if !s.Complete || s.Dropped != 4 || s.Reconnected != 4 || s.Seconds != 2 || s.Attempts != 5 || s.Refusals["http 503"] != 1 {
				t.Errorf("storm %+v", s)
			}
		}
	}
}

func TestWriteTableAndJSON(t *testing.T) {
	res := &Result{
		Scenario: Fanout, URL: "ws://127.0.0.1:8080/ws", Conns: 19000, Channels: 1, Format: "json", Procs: 1, Loops: 1,
		Connect: ConnectResult{Upgraded: 19000, Attempts: 19000, Seconds: 1.5, PerSecond: 12666.7},
		Server:  ServerResult{Source: "/proc/1", CPU: &CPUResult{Seconds: 2, Unit: "delivery", Count: 3_800_000, MicrosPer: 0.53}},
		Fanout: &FanoutResult{Published: 200, Size: 64, Expected: 3_800_000, Delivered: 3_800_000, DeliveredPct: 100,
			Seconds: 5, PerSecond: 760_000, Latency: LatencyResult{Count: 3_800_000, P50: 0.9, P90: 12, P99: 40, P999: 60, Max: 70}},
		Notes: []string{"a note"},
	}
	var b bytes.Buffer
	if err := res.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"3800000/3800000 (100.000%)", "760,000 deliveries/s", "p50 900 µs", "p99 40.0 ms", "0.53 µs per delivery", "note", "a note"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := res.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Fanout.Latency.P999 != 60 || back.Server.CPU.MicrosPer != 0.53 || back.Server.Memory != nil {
		t.Fatalf("%+v", back)
	}
	if !strings.Contains(b.String(), `"p99_9_ms": 60`) || !strings.Contains(b.String(), `"deliveries_per_second": 760000`) {
		t.Errorf("json:\n%s", b.String())
	}
}

func TestCount(t *testing.T) {
	for n, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 3751973.4: "3,751,973", -12345: "-12,345"} {
		if got := count(n); got != want {
			t.Errorf("%v: %q, want %q", n, got, want)
		}
	}
}
