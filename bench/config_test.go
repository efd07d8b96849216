package bench

import (
	"context"
	"net/netip"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseSourceIPs(t *testing.T) {
	ips, err := ParseSourceIPs("3")
	if err != nil || len(ips) != 3 || ips[0].String() != "127.0.0.2" || ips[2].String() != "127.0.0.4" {
		t.Fatalf("%v %v", ips, err)
	}
	ips, err = ParseSourceIPs("127.0.0.9, 127.0.0.10")
	if err != nil || len(ips) != 2 || ips[1].String() != "127.0.0.10" {
		t.Fatalf("%v %v", ips, err)
	}
	for _, bad := range []string{"0", "300", "127.0.0.1,nope"} {
		if _, err := ParseSourceIPs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if ips, err := ParseSourceIPs(""); err != nil || ips != nil {
		t.Fatalf("%v %v", ips, err)
	}
}

func TestChannelOf(t *testing.T) {
	count := func(n, k int, hot bool) []int {
		c := make([]int, k)
		for i := range n {
			c[channelOf(i, k, hot)]++
		}
		return c
	}
	if got := count(1000, 10, false); !reflect.DeepEqual(got, []int{100, 100, 100, 100, 100, 100, 100, 100, 100, 100}) {
		t.Errorf("uniform: %v", got)
	}
	if got := count(300, 3, true); !reflect.DeepEqual(got, []int{150, 75, 75}) {
		t.Errorf("hot: %v", got)
	}
	if got := count(10, 1, true); !reflect.DeepEqual(got, []int{10}) {
		t.Errorf("one channel: %v", got)
	}
}

func TestNextSource(t *testing.T) {
	for _, tc := range []struct {
		sources [][]string
		want    string
	}{
		{nil, "127.0.0.2"},
		{[][]string{nil}, "127.0.0.2"},
		{[][]string{{"127.0.0.2", "127.0.0.3"}, {"127.0.0.9"}}, "127.0.0.10"},
		{[][]string{{"10.0.0.7"}}, "127.0.0.2"},
	} {
		if got := nextSource(tc.sources).String(); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.sources, got, tc.want)
		}
	}
}

func TestPlanShards(t *testing.T) {
	const ports = 28232 // 11,292 connections per address
	sizes, sources := planShards(19000, 1, nil, ports)
	if !reflect.DeepEqual(sizes, []int{19000}) || !reflect.DeepEqual(sources, [][]string{{"127.0.0.2", "127.0.0.3"}}) {
		t.Errorf("19,000 in one process: %v %v", sizes, sources)
	}
	sizes, sources = planShards(1000, 1, nil, ports)
	if !reflect.DeepEqual(sizes, []int{1000}) || sources[0] != nil {
		t.Errorf("a small run dials from the kernel's choice: %v %v", sizes, sources)
	}
	sizes, sources = planShards(600, 2, nil, ports)
	if !reflect.DeepEqual(sizes, []int{300, 300}) || !reflect.DeepEqual(sources, [][]string{{"127.0.0.2"}, {"127.0.0.3"}}) {
		t.Errorf("two processes: %v %v", sizes, sources)
	}
	sizes, sources = planShards(50001, 3, nil, ports)
	if !reflect.DeepEqual(sizes, []int{16667, 16667, 16667}) ||
		!reflect.DeepEqual(sources, [][]string{{"127.0.0.2", "127.0.0.3"}, {"127.0.0.4", "127.0.0.5"}, {"127.0.0.6", "127.0.0.7"}}) {
		t.Errorf("three processes: %v %v", sizes, sources)
	}
	ips := []netip.Addr{netip.MustParseAddr("127.0.0.7"), netip.MustParseAddr("127.0.0.8"), netip.MustParseAddr("127.0.0.9")}
	if _, sources = planShards(100, 2, ips, ports); !reflect.DeepEqual(sources, [][]string{{"127.0.0.7", "127.0.0.9"}, {"127.0.0.8"}}) {
		t.Errorf("explicit, more than shards: %v", sources)
	}
	if _, sources = planShards(100, 4, ips[:1], ports); !reflect.DeepEqual(sources, [][]string{{"127.0.0.7"}, {"127.0.0.7"}, {"127.0.0.7"}, {"127.0.0.7"}}) {
		t.Errorf("explicit, fewer than shards: %v", sources)
	}
}

func TestConfigCheck(t *testing.T) {
	publish := func(string, []byte) error { return nil }
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Scenario: "flood", URL: "ws://h:1/ws"}, "unknown scenario"},
		{Config{Scenario: Idle, URL: "http://h:1/ws"}, "want ws://"},
		{Config{Scenario: Idle, URL: "ws://h:1/ws", Conns: 10, Channels: 11}, "channels"},
		{Config{Scenario: Idle, URL: "ws://h:1/ws", Conns: 40000, Procs: 2}, "over the 19000"},
		{Config{Scenario: Idle, URL: "ws://h:1/ws", Conns: 40000}, "ShardCommand"},
		{Config{Scenario: Fanout, URL: "ws://h:1/ws"}, "Publish"},
		{Config{Scenario: Fanout, URL: "ws://h:1/ws", Publish: publish, Size: 30}, "too small"},
		{Config{Scenario: Fanout, URL: "ws://h:1/ws", Publish: publish, Rate: -1}, "rate"},
		{Config{Scenario: Fanout, URL: "ws://h:1/ws", Publish: publish, PerConn: true, Hot: true}, "hot"},
		{Config{Scenario: Fanout, URL: "ws://h:1/ws", Publish: publish, Conns: 10, PerConn: true, Channels: 5}, "per-connection"},
		{Config{Scenario: Idle, URL: "ws://h:1/ws", Rates: []float64{10}}, "sweep is a fanout"},
		{Config{Scenario: Fanout, URL: "ws://h:1/ws", Publish: publish, Rates: []float64{10, 0}}, "above 0"},
		{Config{Scenario: Fanout, URL: "ws://h:1/ws", Publish: publish, Rates: []float64{1e9}, Size: 40}, "too small"},
		{Config{Scenario: Floor, Channels: 2}, "ShardCommand"},
		{Config{Scenario: Fanout, URL: "ws://h:1/ws", Publish: publish, Receivers: 10}, "storm's"},
		{Config{Scenario: Storm, URL: "ws://h:1/ws", Receivers: 10}, "Publish"},
		{Config{Scenario: Storm, URL: "ws://h:1/ws", Receivers: -1}, "receivers must be"},
		{Config{Scenario: Storm, URL: "ws://h:1/ws", Publish: publish, Conns: 1000, Receivers: 19001}, "receivers must be"},
		{Config{Scenario: Storm, URL: "ws://h:1/ws", Publish: publish, Receivers: 10}, "ShardCommand"},
		{Config{Scenario: Fanout, URL: "ws://h:1/ws", Publish: publish, Resume: true}, "storm's"},
		{Config{Scenario: Storm, URL: "ws://h:1/ws", Resume: true}, "Publish"},
		{Config{Scenario: Storm, URL: "ws://h:1/ws", Publish: publish, Resume: true, Duration: time.Second}, "more than"},
		{Config{Scenario: Storm, URL: "ws://h:1/ws", Publish: publish, Resume: true, Raw: true}, "raw"},
	} {
		tc.cfg.setDefaults()
		_, err := tc.cfg.check()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
	cfg := Config{Scenario: Fanout, URL: "ws://127.0.0.1/ws", Publish: publish}
	cfg.setDefaults()
	u, err := cfg.check()
	if err != nil || u.Host != "127.0.0.1:80" || cfg.Procs != 1 || cfg.Messages != 200 || cfg.Size != 64 {
		t.Fatalf("%v %v %+v", u, err, cfg)
	}
}

// Receivers come after the storm's connections, on a channel of their own
// after the others.
func TestStormReceiversPlan(t *testing.T) {
	cfg := Config{Scenario: Storm, URL: "ws://h:1/ws", Publish: func(string, []byte) error { return nil },
		Conns: 19000, Channels: 3, Receivers: 1000, ShardCommand: func(context.Context) *exec.Cmd { return nil }}
	cfg.setDefaults()
	if _, err := cfg.check(); err != nil || cfg.Procs != 1 || cfg.Rate != 100 || cfg.channelCount() != 4 {
		t.Fatalf("procs %d, rate %v, channels %d: %v", cfg.Procs, cfg.Rate, cfg.channelCount(), err)
	}
	for i, want := range map[int]int{0: 0, 1: 1, 2: 2, 3: 0, 18999: 18999 % 3, 19000: 3, 19999: 3} {
		if k := placeConn(i, 4, false, 19000); k != want {
			t.Errorf("connection %d on channel %d, want %d", i, k, want)
		}
	}
	if k := placeConn(5, 3, false, 0); k != 2 {
		t.Errorf("without receivers connection 5 is on channel %d", k)
	}
}

func TestPerConnAndRounds(t *testing.T) {
	cfg := Config{Scenario: Fanout, URL: "ws://h:1/ws", Publish: func(string, []byte) error { return nil }, Conns: 19000, PerConn: true, Rounds: 3}
	cfg.setDefaults()
	if _, err := cfg.check(); err != nil || cfg.Channels != 19000 || cfg.Messages != 57000 {
		t.Fatalf("channels %d, messages %d: %v", cfg.Channels, cfg.Messages, err)
	}
	for i := range 19000 {
		if k := channelOf(i, cfg.Channels, false); k != i {
			t.Fatalf("connection %d on channel %d", i, k)
		}
	}
	// A sweep publishes until --duration unless told a number.
	sweep := Config{Scenario: Fanout, URL: "ws://h:1/ws", Publish: cfg.Publish, Rates: []float64{10, 50}}
	sweep.setDefaults()
	if _, err := sweep.check(); err != nil || sweep.Messages != 0 {
		t.Fatalf("sweep messages %d: %v", sweep.Messages, err)
	}
}

func TestParseRatesAndChannels(t *testing.T) {
	rates, err := ParseRates(" 10, 50,200 ")
	if err != nil || !reflect.DeepEqual(rates, []float64{10, 50, 200}) {
		t.Fatalf("%v %v", rates, err)
	}
	for _, bad := range []string{"10,,20", "0", "-5", "x", "inf", "NaN"} {
		if _, err := ParseRates(bad); err == nil {
			t.Errorf("rates %q accepted", bad)
		}
	}
	if n, per, err := ParseChannels("per-conn"); err != nil || !per || n != 0 {
		t.Fatalf("per-conn: %d %v %v", n, per, err)
	}
	if n, per, err := ParseChannels("12"); err != nil || per || n != 12 {
		t.Fatalf("12: %d %v %v", n, per, err)
	}
	for _, bad := range []string{"0", "-1", "many", ""} {
		if _, _, err := ParseChannels(bad); err == nil {
			t.Errorf("channels %q accepted", bad)
		}
	}
}

func TestReportsRedactTokens(t *testing.T) {
	got := RedactURL("ws://user:pw@h:1/ws?token=eyJhbGciOi.secret.sig&x=1")
	if strings.Contains(got, "secret") || strings.Contains(got, "pw") || !strings.Contains(got, "token=REDACTED") || !strings.Contains(got, "x=1") {
		t.Fatalf("redacted %q", got)
	}
}
