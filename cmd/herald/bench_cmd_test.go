package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-ws/herald/bench"
	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/enginetest"
	"github.com/herald-ws/herald/engine/push/auth"
	"github.com/herald-ws/herald/pubsub/history"
)

// A sharded run re-executes its own binary, which in tests is the test
// binary: when the bench's shard variable is set, this process is a child
// shard and never reaches the tests. init runs before any TestMain.
func init() {
	if _, ok := os.LookupEnv(bench.ShardEnv); ok {
		os.Exit(run([]string{"bench"}, os.Stdout, os.Stderr))
	}
}

// benchConfig is a small run against h, measuring this process as the
// server (the bench's own CPU time is counted in too).
func benchConfig(t *testing.T, h *herald, scenario bench.Scenario, conns int) bench.Config {
	t.Helper()
	return bench.Config{
		Scenario:   scenario,
		URL:        "ws://" + h.srv.Addr() + "/ws",
		Conns:      conns,
		ServerPIDs: []int{os.Getpid()},
		Duration:   500 * time.Millisecond,
		Timeout:    30 * time.Second,
		Loops:      2,
		Dialers:    16,
	}
}

func runBenchT(t *testing.T, cfg bench.Config) *bench.Result {
	t.Helper()
	res, err := bench.Run(context.Background(), cfg)
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

func TestBenchIdle(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	res := runBenchT(t, benchConfig(t, h, bench.Idle, 500))
	if c := res.Connect; c.Upgraded != 500 || c.GaveUp != 0 || len(c.Failures) != 0 {
		t.Fatalf("connect: %+v", c)
	}
	if res.Connect.PerSecond <= 0 {
		t.Errorf("no connect rate: %+v", res.Connect)
	}
	m := res.Server.Memory
	if m == nil || m.Before <= 0 || m.After <= 0 || m.Conns != 500 || m.KernelSockets != 1000 {
		t.Fatalf("server memory: %+v", m)
	}
	if cpu := res.Server.CPU; cpu == nil || cpu.Unit != "connection" || cpu.Count != 500 {
		t.Fatalf("server cpu: %+v", cpu)
	}
	// No goroutine per connection: 500 more connections, a handful more
	// goroutines at most (this process also runs the bench's own).
	if g := res.Server.Goroutines; g == nil || g.Before <= 0 || g.After-g.Before > 50 {
		t.Fatalf("server goroutines: %+v", g)
	}
	if len(res.ClosedByServer) != 0 {
		t.Errorf("server closed connections: %v", res.ClosedByServer)
	}
}

func TestBenchFanout(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	nc := publisher(t, h)
	cfg := benchConfig(t, h, bench.Fanout, 1000)
	cfg.Channels = 10
	cfg.Messages = 200
	cfg.Duration = 20 * time.Second
	cfg.Publish = nc.Publish
	cfg.Flush = nc.Flush
	res := runBenchT(t, cfg)
	f := res.Fanout
	const want = 200 / 10 * 1000 // each channel gets 20 messages and has 100 sockets
	if f.Published != 200 || f.Expected != want || f.Delivered != want || f.DeliveredPct != 100 {
		t.Fatalf("published %d, expected %d, delivered %d (%.2f%%), want %d", f.Published, f.Expected, f.Delivered, f.DeliveredPct, want)
	}
	if f.Missing+f.Duplicated+f.OutOfOrder != 0 {
		t.Fatalf("missing %d, duplicated %d, out of order %d", f.Missing, f.Duplicated, f.OutOfOrder)
	}
	if f.Latency.Count != want || f.Latency.P50 <= 0 || f.Latency.Max < f.Latency.P99 {
		t.Fatalf("latency: %+v", f.Latency)
	}
	if f.PerSecond <= 0 || res.Server.CPU == nil || res.Server.CPU.Count != want {
		t.Fatalf("throughput %v, cpu %+v", f.PerSecond, res.Server.CPU)
	}
	if res.OtherMessages != 0 {
		t.Errorf("%d messages that were not bench payloads", res.OtherMessages)
	}
}

// Paced publishing, one hot channel, and bare payloads instead of the
// JSON envelope.
func TestBenchFanoutHotRawPaced(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	nc := publisher(t, h)
	cfg := benchConfig(t, h, bench.Fanout, 300)
	cfg.Channels = 3
	cfg.Hot = true
	cfg.Raw = true
	cfg.Messages = 30
	cfg.Rate = 100
	cfg.Duration = 10 * time.Second
	cfg.Publish = nc.Publish
	cfg.Flush = nc.Flush
	res := runBenchT(t, cfg)
	f := res.Fanout
	// 150 sockets on channel 0, 75 on each other; 10 messages per channel.
	if f.Expected != 3000 || f.Delivered != 3000 || f.Missing+f.Duplicated+f.OutOfOrder != 0 {
		t.Fatalf("%+v", f)
	}
	if f.PublishSeconds < 0.25 {
		t.Errorf("30 messages at 100/s took %.3f s", f.PublishSeconds)
	}
}

func TestBenchStorm(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	res := runBenchT(t, benchConfig(t, h, bench.Storm, 500))
	s := res.Storm
	if s == nil || !s.Complete || s.Dropped != 500 || s.Reconnected != 500 || s.Seconds <= 0 {
		t.Fatalf("storm: %+v", s)
	}
	if res.Server.CPU == nil || res.Server.CPU.Unit != "reconnect" {
		t.Fatalf("server cpu: %+v", res.Server.CPU)
	}
}

// A storm with receivers over two child processes (and the receivers' own),
// every connection with an RS256 token of its own: the receivers stay up,
// are published to before and during the storm, and get every message of
// both phases exactly once.
func TestBenchStormReceivers(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var logs enginetest.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := startTestHerald(t, heraldConfig{Auth: &auth.Config{PublicKeyPEM: pemPublicKey(t, &key.PublicKey), Logger: log}})
	keyFile := filepath.Join(t.TempDir(), "bench.pem")
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(keyFile, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "storm.json")
	var stdout, stderr bytes.Buffer
	code := run([]string{"bench", "storm",
		"--url", "ws://" + h.srv.Addr() + "/ws", "--token-key", keyFile,
		"--nats", h.broker.ClientURL(),
		"--conns", "400", "--receivers", "100", "--rate", "200", "--duration", "1s",
		"--procs", "2", "--loops", "1", "--dialers", "8",
		"--server-pid", strconv.Itoa(os.Getpid()),
		"--timeout", "60s", "--quiet", "--json", out,
	}, &stdout, &stderr)
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	if strings.Contains(stdout.String()+stderr.String()+logs.String(), "eyJ") {
		t.Fatalf("a token is in the output or the server's logs:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "auth") {
		t.Fatalf("no auth log lines at debug to check:\n%s", logs.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res bench.Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	s := res.Storm
	if s == nil || !s.Complete || s.Dropped != 400 || s.Reconnected != 400 {
		t.Fatalf("storm: %+v", s)
	}
	rx := s.Receivers
	if rx == nil || rx.Conns != 100 || rx.Quiet == nil || rx.During == nil {
		t.Fatalf("receivers: %+v", rx)
	}
	for name, f := range map[string]*bench.FanoutResult{"quiet": rx.Quiet, "during": rx.During} {
		if f.Published == 0 || f.Expected != uint64(f.Published)*100 || f.Delivered != f.Expected ||
			f.Missing+f.Duplicated != 0 || uint64(f.Latency.Count) != f.Delivered || f.Latency.P99 <= 0 {
			t.Errorf("%s: %+v", name, f)
		}
	}
	if rx.Quiet.Published < 150 { // 1 s at 200 msg/s
		t.Errorf("quiet phase published %d messages", rx.Quiet.Published)
	}
	if !strings.Contains(stdout.String(), "receivers in storm") {
		t.Errorf("no storm receivers row:\n%s", stdout.String())
	}
}

// A resuming storm on a history channel: every connection reconnects with
// since= its last sequence and has every message exactly once.
func TestBenchStormResume(t *testing.T) {
	hh := startHistoryHerald(t, "127.0.0.1:0", "127.0.0.1:-1", t.TempDir(), history.Config{Subjects: []string{"bench.>"}, Size: 10000})
	h := hh.herald
	cfg := benchConfig(t, h, bench.Storm, 300)
	cfg.Resume = true
	cfg.Rate = 200
	cfg.Duration = 20 * time.Second // the most publishing may take
	cfg.Publish = hh.nc.Publish
	cfg.Flush = hh.nc.Flush
	cfg.MetricsURL = "http://" + h.srv.Addr() + "/metrics"
	res := runBenchT(t, cfg)
	s := res.Storm
	if s == nil || !s.Complete || s.Dropped != 300 || s.Resume == nil || s.Resume.FanoutResult == nil {
		t.Fatalf("storm: %+v", s)
	}
	f := s.Resume.FanoutResult
	if f.Published < 200 || f.Expected != uint64(f.Published)*300 || f.Delivered != f.Expected || f.Missing+f.Duplicated+f.OutOfOrder != 0 {
		t.Fatalf("resumed: %+v", f)
	}
	if s.Resume.CaughtUpSeconds <= 0 {
		t.Errorf("caught up after %v s", s.Resume.CaughtUpSeconds)
	}
	if res.OtherMessages < 300 {
		t.Errorf("%d other messages: every resume is acked", res.OtherMessages)
	}
}

// A server at its connection cap answers 503 with Retry-After: the bench
// counts the refusals, keeps retrying, and stops at --timeout with what it
// measured.
func TestBenchRefusalsAndTimeout(t *testing.T) {
	h := startTestHerald(t, heraldConfig{Engine: engine.Config{MaxConns: 200}})
	cfg := benchConfig(t, h, bench.Idle, 250)
	cfg.Timeout = 3 * time.Second
	start := time.Now()
	res, err := bench.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("a 3 s run took %v", took)
	}
	if !res.TimedOut || res.Connect.Upgraded != 200 || res.Connect.Failures["http 503"] == 0 {
		t.Fatalf("timed out %v, connect %+v", res.TimedOut, res.Connect)
	}
}

// A refusal no retry can fix ends the connect phase at once.
func TestBenchGivesUpOnNotFound(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	cfg := benchConfig(t, h, bench.Idle, 50)
	cfg.URL = "ws://" + h.srv.Addr() + "/nowhere"
	cfg.Duration = time.Millisecond
	res := runBenchT(t, cfg)
	if c := res.Connect; c.Upgraded != 0 || c.GaveUp != 50 || c.Failures["http 404"] != 50 {
		t.Fatalf("connect: %+v", c)
	}
}

// The command line, with the connections in two child processes dialing
// from two loopback addresses, and the JSON report.
func TestBenchCommandTwoProcesses(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	out := filepath.Join(t.TempDir(), "fanout.json")
	var stdout, stderr bytes.Buffer
	code := run([]string{"bench", "fanout",
		"--url", "ws://" + h.srv.Addr() + "/ws",
		"--nats", h.broker.ClientURL(),
		"--conns", "600", "--channels", "4", "--messages", "40", "--size", "100",
		"--procs", "2", "--loops", "1", "--dialers", "8",
		"--server-pid", strconv.Itoa(os.Getpid()),
		"--timeout", "60s", "--json", out,
	}, &stdout, &stderr)
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res bench.Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Procs != 2 || len(res.SourceIPs) != 2 || res.Connect.Upgraded != 600 {
		t.Fatalf("procs %d, sources %v, upgraded %d", res.Procs, res.SourceIPs, res.Connect.Upgraded)
	}
	f := res.Fanout
	const want = 40 / 4 * 600
	if f == nil || f.Expected != want || f.Delivered != want || f.Missing+f.Duplicated+f.OutOfOrder != 0 || f.Latency.Count != want {
		t.Fatalf("fanout: %+v", f)
	}
	if res.BenchCPUSeconds <= 0 {
		t.Errorf("bench cpu %v", res.BenchCPUSeconds)
	}
	for _, want := range []string{"delivered", "6000/6000", "latency", "server CPU"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table lacks %q", want)
		}
	}
}

func TestBenchHelpAndUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"bench", "--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	help := stderr.String()
	for _, want := range []string{
		"idle", "fanout", "storm",
		"-url", "-conns", "-channels", "-hot", "-raw", "-messages", "-size", "-rate", "-nats",
		"-server-pid", "-metrics", "-procs", "-source-ips", "-loops", "-dialers", "-json",
		"-duration", "-timeout", "-handshake-timeout", "-quiet",
		"floor", "per-conn", "-rounds", "-rates", "-floor-listen",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	for _, args := range [][]string{
		{"bench"},
		{"bench", "flood"},
		{"bench", "idle", "extra"},
		{"bench", "idle", "--conns", "x"},
		{"bench", "fanout", "--channels", "some"},
		{"bench", "fanout", "--channels", "0"},
	} {
		stderr.Reset()
		if code := run(args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2; stderr %s", args, code, stderr.String())
		}
	}
	var usage bytes.Buffer
	run([]string{"--help"}, &usage, &usage)
	if !strings.Contains(usage.String(), "bench") {
		t.Errorf("herald --help does not list bench:\n%s", usage.String())
	}
}

// benchCommand runs herald bench with args and returns its JSON report.
func benchCommand(t *testing.T, args ...string) (*bench.Result, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "bench.json")
	var stdout, stderr bytes.Buffer
	code := run(append(append([]string{"bench"}, args...), "--quiet", "--json", out), &stdout, &stderr)
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res bench.Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	return &res, stdout.String()
}

// Personal channels against Herald: every connection on a channel of its
// own, three rounds of one message to each, every one delivered once and
// in order, and the server's CPU per delivery reported as for one channel.
func TestBenchPersonalFanout(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	res, table := benchCommand(t, "fanout",
		"--url", "ws://"+h.srv.Addr()+"/ws", "--nats", h.broker.ClientURL(),
		"--conns", "200", "--channels", "per-conn", "--rounds", "3",
		"--loops", "1", "--dialers", "8", "--server-pid", strconv.Itoa(os.Getpid()), "--timeout", "60s")
	if res.Channels != 200 || !res.PerConn {
		t.Fatalf("channels %d, per-conn %v", res.Channels, res.PerConn)
	}
	f := res.Fanout
	if f.Published != 600 || f.Expected != 600 || f.Delivered != 600 || f.Missing+f.Duplicated+f.OutOfOrder != 0 || f.Latency.Count != 600 {
		t.Fatalf("fanout %+v", f)
	}
	if cpu := res.Server.CPU; f.PerSecond <= 0 || cpu == nil || cpu.Unit != "delivery" || cpu.Count != 600 {
		t.Fatalf("%v deliveries/s, cpu %+v", f.PerSecond, res.Server.CPU)
	}
	if !strings.Contains(table, "over 200 channels (one per connection)") {
		t.Errorf("table does not say the channels are per connection")
	}
}

// The floor from the command line: no server, the readers in a child.
func TestBenchFloorCommand(t *testing.T) {
	res, table := benchCommand(t, "floor", "--conns", "200", "--messages", "5", "--rate", "20",
		"--loops", "1", "--dialers", "8", "--timeout", "60s")
	fl := res.Floor
	if fl == nil || fl.Sockets != 200 || fl.Passes != 5 || fl.Writes != 1000 || fl.ReaderProcs != 1 {
		t.Fatalf("floor %+v", fl)
	}
	if f := res.Fanout; f.Delivered != 1000 || f.Latency.Count != 1000 || res.Server.CPU.Unit != "write" {
		t.Fatalf("fanout %+v, cpu %+v", f, res.Server.CPU)
	}
	for _, want := range []string{"pass over all sockets", "writer CPU", "µs per write"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q", want)
		}
	}
}

// The overload sweep from the command line against Herald: one step per
// rate on the same connections, each for --duration.
func TestBenchSweepCommand(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	res, table := benchCommand(t, "fanout",
		"--url", "ws://"+h.srv.Addr()+"/ws", "--nats", h.broker.ClientURL(),
		"--conns", "200", "--rates", "10,50", "--duration", "1s",
		"--loops", "1", "--dialers", "8", "--server-pid", strconv.Itoa(os.Getpid()), "--timeout", "60s")
	if len(res.Sweep) != 2 {
		t.Fatalf("%d steps", len(res.Sweep))
	}
	for i, s := range res.Sweep {
		if s.Rate != []float64{10, 50}[i] || s.Published == 0 || s.Expected != uint64(s.Published)*200 || s.Delivered != s.Expected ||
			s.Latency.Count != int64(s.Delivered) || s.CPU == nil || s.CPU.Count != s.Delivered {
			t.Errorf("step %d: %+v cpu %+v", i, s.FanoutResult, s.CPU)
		}
	}
	if !strings.Contains(table, "sweep:") {
		t.Error("no sweep table")
	}
}

// TestBenchFanoutCompress: with --compress the bench offers
// permessage-deflate, inflates the server's compressed frames to check
// every sequence number, and reports the bytes on the wire next to the
// uncompressed bytes; 64-byte messages, under the threshold, come plain.
func TestBenchFanoutCompress(t *testing.T) {
	h := startTestHerald(t, heraldConfig{Engine: engine.Config{Compression: true}})
	nc := publisher(t, h)
	for _, tt := range []struct {
		size       int
		compressed bool
	}{{1024, true}, {64, false}} {
		t.Run(strconv.Itoa(tt.size), func(t *testing.T) {
			cfg := benchConfig(t, h, bench.Fanout, 200)
			cfg.Channels = 4
			cfg.Messages = 40
			cfg.Size = tt.size
			cfg.Compress = true
			cfg.Duration = 20 * time.Second
			cfg.Publish = nc.Publish
			cfg.Flush = nc.Flush
			res := runBenchT(t, cfg)
			f := res.Fanout
			if f.Delivered != f.Expected || f.Expected != 40/4*200 || f.Missing+f.Duplicated+f.OutOfOrder != 0 {
				t.Fatalf("%+v", f)
			}
			if tt.compressed != (f.CompressedFrames >= f.Delivered) {
				t.Fatalf("%d frames compressed for %d deliveries of %d B", f.CompressedFrames, f.Delivered, tt.size)
			}
			if tt.compressed && (f.WireRatio <= 0 || f.WireRatio > 0.6) || !tt.compressed && f.WireBytes != f.PlainBytes {
				t.Fatalf("wire %d of %d plain bytes (%.2f)", f.WireBytes, f.PlainBytes, f.WireRatio)
			}
			var report strings.Builder
			_ = res.WriteTable(&report)
			if !strings.Contains(report.String(), "bytes on the wire") {
				t.Errorf("report:\n%s", report.String())
			}
		})
	}
}
