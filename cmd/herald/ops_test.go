package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/enginetest"
	"github.com/herald-ws/herald/pubsub/natstest"
)

var waitFor = enginetest.WaitFor

// 500 connections that never answer pings are closed within ping interval
// + pong timeout + one sweep, while 500 live ones, half of them browsers-
// style clients that only send in-band pings, stay connected.
func TestReaperClosesSilentConnectionsKeepsLiveOnes(t *testing.T) {
	const (
		ping = 300 * time.Millisecond
		pong = 300 * time.Millisecond
		each = 250
	)
	h := startTestHerald(t, heraldConfig{Engine: engine.Config{PingInterval: ping, PongTimeout: pong}})

	var live []*websocket.Conn
	var failures atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	for i := range 2 * each {
		conn := dialWS(t, h, "channel=reaper")
		inBand := i%2 == 1
		if inBand {
			// Like a browser app that cannot see ping frames: it ignores
			// them and keeps itself alive with {"op":"ping"}.
			conn.SetPingHandler(func(string) error { return nil })
		}
		live = append(live, conn)
		wg.Add(1)
		go func() {
			defer wg.Done()
			go func() {
				for {
					if _, _, err := conn.ReadMessage(); err != nil {
						return
					}
				}
			}()
			tick := time.NewTicker(ping / 3)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if inBand {
					if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"op":"ping"}`)); err != nil {
						failures.Add(1)
						return
					}
				}
			}
		}()
	}
	// Silent clients: upgraded, then never read or write again, so they
	// answer no ping.
	for range 2 * each {
		c := mustDial(t, h.srv.Addr())
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET /ws?channel=reaper HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	}
	waitFor(t, 10*time.Second, "all 1,000 upgraded", func() bool { return h.srv.Stats().Upgraded == 4*each })
	upgraded := time.Now()

	sweep := min(ping, pong) / 4
	bound := ping + pong + sweep
	waitFor(t, bound+2*time.Second, "500 silent connections reaped", func() bool { return h.srv.Stats().Reaped >= 2*each })
	took := time.Since(upgraded)
	t.Logf("reaped 500 silent connections %v after they upgraded (ping %v + pong %v + sweep %v = %v)", took, ping, pong, sweep, bound)
	// Live clients must survive several more rounds of pings.
	time.Sleep(3 * (ping + pong))
	st := h.srv.Stats()
	if st.Reaped != 2*each || st.Upgraded != 2*each || failures.Load() != 0 {
		t.Fatalf("reaped %d, still open %d, client failures %d; want 500 reaped and 500 open", st.Reaped, st.Upgraded, failures.Load())
	}
	if st.Pings < 2*each {
		t.Fatalf("only %d pings sent", st.Pings)
	}
	if took > bound+time.Second {
		t.Errorf("reaping took %v, over ping + pong + one sweep (%v) by more than a second", took, bound)
	}
}

func TestConnectionCapAnswers503WithRetryAfter(t *testing.T) {
	h := startTestHerald(t, heraldConfig{Engine: engine.Config{MaxConns: 5}})
	var conns []*websocket.Conn
	for range 5 {
		conns = append(conns, dialWS(t, h, "channel=cap"))
	}
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+h.srv.Addr()+"/ws?channel=cap", nil)
	if err == nil || resp == nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("sixth connection: err %v resp %+v, want 503 with Retry-After", err, resp)
	}
	conns[0].Close()
	waitFor(t, 5*time.Second, "a slot to free up", func() bool { return h.srv.Stats().Upgraded == 4 })
	dialWS(t, h, "channel=cap")
	if got := h.srv.Stats().Refused[refusalIndex(t, "conn_limit")]; got != 1 {
		t.Fatalf("conn_limit refusals %d, want 1", got)
	}
}

func TestAcceptRateLimitHolds(t *testing.T) {
	const rate = 20
	h := startTestHerald(t, heraldConfig{Engine: engine.Config{MaxAcceptRate: rate, Loops: 2}})
	start := time.Now()
	var accepted, refused int
	for range 120 {
		conn, resp, err := websocket.DefaultDialer.Dial("ws://"+h.srv.Addr()+"/ws?channel=rate", nil)
		switch {
		case err == nil:
			accepted++
			defer conn.Close()
		case resp != nil && resp.StatusCode == 503 && resp.Header.Get("Retry-After") != "":
			refused++
		default:
			t.Fatalf("dial: %v", err)
		}
	}
	elapsed := time.Since(start)
	// A full bucket (one second's worth) plus what refilled meanwhile.
	most := rate + int(elapsed.Seconds()*rate) + 2
	if accepted < rate || accepted > most || accepted+refused != 120 {
		t.Fatalf("accepted %d, refused %d in %v; want between %d and %d accepted", accepted, refused, elapsed, rate, most)
	}
	if got := h.srv.Stats().Refused[refusalIndex(t, "rate_limit")]; got != uint64(refused) {
		t.Fatalf("rate_limit refusals counted %d, clients saw %d", got, refused)
	}
	// Health checks are not upgrades and are never rate limited.
	if status := httpGet(t, h.srv.Addr(), "/healthz"); status != 200 {
		t.Fatalf("/healthz during the storm: %d", status)
	}
}

func refusalIndex(t testing.TB, reason string) int {
	for i, r := range engine.RefusalReasons {
		if r == reason {
			return i
		}
	}
	t.Fatalf("no refusal reason %q", reason)
	return 0
}

func httpGet(t testing.TB, addr, path string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// scrape reads /metrics with Prometheus's own parser.
func scrape(t testing.TB, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

// metricValue returns the value of the metric named name whose labels
// include labels (name=value pairs).
func metricValue(t testing.TB, families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f := families[name]
	if f == nil {
		t.Fatalf("/metrics has no %s", name)
	}
	for _, m := range f.Metric {
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				found = found || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("/metrics has no %s with %v", name, labels)
	return 0
}

// /metrics reports what the test did.
func TestMetricsMatchWhatHappened(t *testing.T) {
	h := startTestHerald(t, heraldConfig{Engine: engine.Config{
		PingInterval: 200 * time.Millisecond, PongTimeout: 200 * time.Millisecond, MaxOutbound: 64 << 10,
	}})
	readers := make([]*websocket.Conn, 7)
	for i := range readers {
		readers[i] = dialWS(t, h, "channel=metrics")
	}
	settle(t, h)
	nc := publisher(t, h)
	for i := range 3 {
		if err := nc.Publish("metrics", fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range readers {
		for range 3 {
			readEnvelope(t, r)
		}
	}
	// Keep the readers answering pings from now on.
	for _, r := range readers {
		go func() {
			for {
				if _, _, err := r.ReadMessage(); err != nil {
					return
				}
			}
		}()
	}
	// One connection that never answers pings.
	silent := mustDial(t, h.srv.Addr())
	defer silent.Close()
	fmt.Fprintf(silent, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	// One refused upgrade.
	if _, resp, _ := websocket.DefaultDialer.Dial("ws://"+h.srv.Addr()+"/ws?channel=bad..name", nil); resp == nil || resp.StatusCode != 400 {
		t.Fatalf("bad channel: %v", resp)
	}
	waitFor(t, 5*time.Second, "the silent connection to be reaped", func() bool { return h.srv.Stats().Reaped == 1 })

	m := scrape(t, h.srv.Addr())
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"herald_connections", nil, 7},
		{"herald_tcp_connections_total", nil, 7 + 1 + 1 + 1}, // readers, silent, refused, this scrape
		{"herald_deliveries_total", nil, 21},
		{"herald_reaped_connections_total", nil, 1},
		{"herald_slow_consumer_closes_total", nil, 0},
		{"herald_upgrades_refused_total", []string{"reason", "bad_request"}, 1},
		{"herald_upgrades_refused_total", []string{"reason", "conn_limit"}, 0},
		{"herald_channels", nil, 1},
		{"herald_nats_messages_total", nil, 3},
		{"herald_nats_connected", nil, 1},
		{"herald_delivery_latency_seconds", nil, 3},
	} {
		if got := metricValue(t, m, tt.name, tt.labels...); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	if got := metricValue(t, m, "herald_delivered_bytes_total"); got < 21*20 {
		t.Errorf("herald_delivered_bytes_total = %v, want at least 21 envelopes' worth", got)
	}
	if got := metricValue(t, m, "herald_pings_total"); got < 1 {
		t.Errorf("herald_pings_total = %v", got)
	}
	if got := metricValue(t, m, "process_resident_memory_bytes"); got <= 0 {
		t.Errorf("process_resident_memory_bytes = %v", got)
	}
}

// /readyz turns unready while NATS is down and while draining.
func TestReadyzFollowsNATSAndDrain(t *testing.T) {
	nats := natstest.Start(t)
	h := startTestHerald(t, heraldConfig{NATS: nats.URL()})
	waitFor(t, 10*time.Second, "NATS connected", h.broker.Connected)
	if status := httpGet(t, h.srv.Addr(), "/readyz"); status != 200 {
		t.Fatalf("/readyz %d while connected", status)
	}
	nats.Kill()
	waitFor(t, 15*time.Second, "/readyz to turn 503 while NATS is down", func() bool {
		return httpGet(t, h.srv.Addr(), "/readyz") == 503
	})
	if status := httpGet(t, h.srv.Addr(), "/healthz"); status != 200 {
		t.Fatalf("/healthz %d while NATS is down: the process is alive", status)
	}
	nats.Restart()
	waitFor(t, 15*time.Second, "/readyz to recover", func() bool { return httpGet(t, h.srv.Addr(), "/readyz") == 200 })

	client := dialWS(t, h, "channel=drain")
	drained := make(chan error, 1)
	go func() { drained <- h.srv.Drain(context.Background(), 2*time.Second) }()
	waitFor(t, 5*time.Second, "/readyz to turn 503 while draining", func() bool {
		return httpGet(t, h.srv.Addr(), "/readyz") == 503
	})
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+h.srv.Addr()+"/ws?channel=drain", nil)
	if err == nil || resp == nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("upgrade while draining: %v %+v, want 503 with Retry-After", err, resp)
	}
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = client.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("client got %v, want close 1001", err)
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
}

// startHeraldProcess runs the test binary as `herald serve` and returns it
// once it listens.
func startHeraldProcess(t *testing.T, args ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd, addr, _ := startHeraldProcessNATS(t, args...)
	return cmd, addr
}

// startHeraldProcessNATS is startHeraldProcess that also returns the URL
// of the process's NATS server, from its first line.
func startHeraldProcessNATS(t *testing.T, args ...string) (*exec.Cmd, string, string) {
	t.Helper()
	return startHeraldProcessAt(t, freeAddr(t), "127.0.0.1:-1", args...)
}

// startHeraldProcessAt is startHeraldProcessNATS on given addresses, so
// that a restarted process is found where its clients look.
func startHeraldProcessAt(t *testing.T, addr, natsAddr string, args ...string) (*exec.Cmd, string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"--", "serve", "--listen", addr, "--nats-listen", natsAddr, "--log-level", "warn"}, args...)...)
	// The race detector sleeps a second at exit unless told otherwise,
	// which would count against the drain's bound.
	cmd.Env = append(os.Environ(), heraldEnv+"=1", "GORACE=atexit_sleep_ms=0")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "herald listening on") {
		t.Fatalf("herald did not start: %q %v", line, err)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	_, natsURL, _ := strings.Cut(strings.TrimSpace(line), "publish to NATS at ")
	return cmd, addr, natsURL
}

// waitExit waits for the process and returns its exit code.
func waitExit(t *testing.T, cmd *exec.Cmd, bound time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(bound):
		t.Fatalf("herald still running %v after the signal", bound)
		return -1
	}
}

// SIGTERM closes every client with 1001, spread over the drain timeout,
// and the process exits 0 within the timeout and a second, whatever the
// clients do with their sockets: gorilla's answer the close frame and keep
// theirs open, and a raw one never answers at all.
func TestSIGTERMDrainsSpreadOverTheTimeout(t *testing.T) {
	const (
		clients = 200
		drain   = 2 * time.Second
	)
	cmd, addr := startHeraldProcess(t, "--drain-timeout", drain.String())
	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws?channel=drain", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		expectConnected(t, c)
		conns[i] = c
	}
	mute := mustDial(t, addr)
	fmt.Fprintf(mute, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	closedAt := make([]time.Duration, clients)
	var wg sync.WaitGroup
	sent := time.Now()
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(drain + 10*time.Second))
			_, _, err := c.ReadMessage()
			if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
				t.Errorf("client %d: %v, want close 1001", i, err)
			}
			closedAt[i] = time.Since(sent)
		}()
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if code := waitExit(t, cmd, drain+10*time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if took := time.Since(sent); took > drain+time.Second {
		t.Errorf("exited %v after SIGTERM, past the drain timeout %v and a second", took, drain)
	}
	sort.Slice(closedAt, func(i, j int) bool { return closedAt[i] < closedAt[j] })
	first, last := closedAt[0], closedAt[clients-1]
	t.Logf("closes from %v to %v after SIGTERM (drain timeout %v)", first, last, drain)
	// Spread: the closes fill the window, each quarter gets its share, and
	// none comes long after it.
	if last-first < drain/2 || last > drain+time.Second {
		t.Errorf("closes span %v..%v, want them spread over about %v", first, last, drain)
	}
	var quarters [4]int
	for _, at := range closedAt {
		quarters[min(3, int(4*at/drain))]++
	}
	for q, n := range quarters {
		if n < clients/10 {
			t.Errorf("quarter %d of the drain closed %d clients (per quarter: %v); want an even spread", q+1, n, quarters)
		}
	}
}

func TestSecondSignalExitsAtOnce(t *testing.T) {
	cmd, addr := startHeraldProcess(t, "--drain-timeout", "30s")
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws?channel=x", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if code := waitExit(t, cmd, 5*time.Second); code == 0 {
		t.Fatalf("exit code 0 after an interrupted drain; want non-zero")
	}
	if waited := time.Since(start); waited > 3*time.Second {
		t.Fatalf("exited %v after the second signal", waited)
	}
}
