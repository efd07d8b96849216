package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/enginetest"
	"github.com/herald-ws/herald/engine/push"
	"github.com/herald-ws/herald/engine/push/pushtest"
	"github.com/herald-ws/herald/pubsub/history"
)

// broadcastServer is the engine and the push protocol on an in-memory bus:
// the broadcast path without NATS, so that what a benchmark measures is
// Herald's own work from a message's arrival to the socket writes.
type broadcastServer struct {
	srv *engine.Server
	hub *push.Hub
	bus *pushtest.Bus
}

// awaitDeliveries waits, for a minute at most, until the hub has made want
// deliveries since it started.
func (h *broadcastServer) awaitDeliveries(b *testing.B, want uint64) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for h.hub.Stats().Deliveries < want {
		if time.Now().After(deadline) {
			b.Fatalf("delivered %d short of %d", want-h.hub.Stats().Deliveries, want)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func startBroadcast(b *testing.B, cfg engine.Config) *broadcastServer {
	b.Helper()
	bus := pushtest.New()
	bus.AutoLive = true
	b.Cleanup(bus.Close)
	hub := push.New(push.Config{Bus: bus})
	bus.Attach(hub)
	cfg.Endpoints = map[string]engine.Endpoint{push.Path: hub.Endpoint()}
	cfg.Streams = map[string]engine.Endpoint{push.StreamPath: hub.Endpoint()}
	srv := enginetest.Start(b, cfg)
	return &broadcastServer{srv: srv, hub: hub, bus: bus}
}

// deliver hands the hub one message on channel, as the bus would: from
// this goroutine, which plays the bus's.
func (s *broadcastServer) deliver(b *testing.B, channel string, payload []byte) {
	ids := s.bus.IDs(channel)
	if len(ids) == 0 {
		b.Fatalf("no subscription to %s", channel)
	}
	s.hub.Message(channel, payload, ids)
}

// sinkEnv makes the test binary a subscriber sink instead of running tests:
// "ADDR N CHANNEL" opens N WebSocket connections subscribed to CHANNEL (to
// CHANNEL formatted with the connection's number, if it has a %d), and
// "ADDR N CHANNEL sse" N event streams (GET /sse) instead; it
// prints "ready" once all are upgraded, and reads and discards until its
// stdin closes. The benchmark runs it in a child process because one
// process may hold only 20,000 open files, and each connection costs the
// server one and the client one.
const sinkEnv = "HERALD_TEST_SINK"

func runSink(spec string) error {
	fields := strings.Fields(spec)
	if len(fields) < 3 {
		return fmt.Errorf("spec %q: want ADDR N CHANNEL [sse]", spec)
	}
	addr, channel := fields[0], fields[2]
	n, err := strconv.Atoi(fields[1])
	if err != nil {
		return fmt.Errorf("spec %q: %w", spec, err)
	}
	// A fourth word "deflate" offers permessage-deflate as browsers do,
	// "sse" opens event streams instead; the sink discards what it reads.
	stream := len(fields) > 3 && fields[3] == "sse"
	want := " 101 "
	if stream {
		want = " 200 "
	}
	extensions := ""
	if len(fields) > 3 && fields[3] == "deflate" {
		extensions = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
	}
	conns := make([]net.Conn, 0, n)
	for i := range n {
		name := channel
		if strings.Contains(channel, "%d") {
			name = fmt.Sprintf(channel, i) // a channel of its own
		}
		request := "GET /ws?channel=" + name + " HTTP/1.1\r\nHost: sink\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extensions + "\r\n"
		if stream {
			request = "GET " + push.StreamPath + "?channel=" + name + " HTTP/1.1\r\nHost: sink\r\n\r\n"
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		if _, err := io.WriteString(c, request); err != nil {
			return err
		}
		conns = append(conns, c)
	}
	// upgraded counts down as connections finish their handshake; each
	// then keeps reading, so the server never sees a slow consumer.
	var upgraded sync.WaitGroup
	errs := make(chan error, n)
	for _, c := range conns {
		upgraded.Add(1)
		go func() {
			r := bufio.NewReaderSize(c, 4096)
			err := readResponseHead(r, want)
			upgraded.Done()
			if err != nil {
				errs <- err
				return
			}
			_, _ = io.Copy(io.Discard, r)
		}()
	}
	upgraded.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// readResponseHead reads an HTTP response head and checks its status
// line has want (" 101 ").
func readResponseHead(r *bufio.Reader, want string) error {
	status, err := r.ReadString('\n')
	if err != nil || !strings.Contains(status, want) {
		return fmt.Errorf("upgrade: %q %v", status, err)
	}
	for line := ""; line != "\r\n"; {
		if line, err = r.ReadString('\n'); err != nil {
			return err
		}
	}
	return nil
}

// startSink runs n subscribers to channel in a child process.
func startSink(b *testing.B, addr string, n int, channel string) {
	b.Helper()
	startSinkSpec(b, addr+" "+strconv.Itoa(n)+" "+channel)
}

// startStreamSink is startSink with event streams (GET /sse).
func startStreamSink(b *testing.B, addr string, n int, channel string) {
	b.Helper()
	startSinkSpec(b, addr+" "+strconv.Itoa(n)+" "+channel+" sse")
}

func startSinkSpec(b *testing.B, spec string) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), sinkEnv+"="+spec)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		b.Fatalf("sink did not get ready: %q %v", line, err)
	}
}

// BenchmarkBroadcast measures the broadcast path: one op is one 64-byte
// message handed to the engine and written to every one of 10,000
// subscribed sockets. Allocations are counted in this process only, which
// holds the server; the subscribers live in a child process.
func BenchmarkBroadcast(b *testing.B) { benchmarkBroadcast(b, false, false) }

// BenchmarkBroadcastSeq is BenchmarkBroadcast on a history channel: every
// envelope carries its stream sequence, one more per message.
func BenchmarkBroadcastSeq(b *testing.B) { benchmarkBroadcast(b, true, false) }

// BenchmarkBroadcastSSE is BenchmarkBroadcastSeq to event streams (GET
// /sse): each message is an event with an id, formatted once for all of
// them.
func BenchmarkBroadcastSSE(b *testing.B) { benchmarkBroadcast(b, true, true) }

func benchmarkBroadcast(b *testing.B, withSeq, sse bool) {
	const subscribers = 10_000
	h := startBroadcast(b, engine.Config{MaxOutbound: 64 << 20})
	if sse {
		startStreamSink(b, h.srv.Addr(), subscribers, "bench.hot")
	} else {
		startSink(b, h.srv.Addr(), subscribers, "bench.hot")
	}
	seq := uint64(0)
	ids := h.bus.IDs("bench.hot")
	payload := []byte(`{"sym":"AAPL","px":187.25,"ts":1732180000000,"seq":123456789012}`)
	if len(payload) != 64 {
		b.Fatalf("payload is %d bytes, want 64", len(payload))
	}
	deliver := func(n int) time.Duration {
		start := time.Now()
		want := h.hub.Stats().Deliveries + uint64(n)*subscribers
		for range n {
			if withSeq {
				seq++
				h.hub.MessageSeq("bench.hot", payload, ids, seq)
			} else {
				h.hub.Message("bench.hot", payload, ids)
			}
		}
		h.awaitDeliveries(b, want)
		return time.Since(start)
	}
	deliver(b.N) // fill the pools for a burst this size, untimed
	b.ReportAllocs()
	b.ResetTimer()
	elapsed := deliver(b.N)
	b.StopTimer()
	b.ReportMetric(float64(b.N)*subscribers/elapsed.Seconds(), "deliveries/s")
	if slow := h.srv.Stats().SlowConsumers; slow != 0 {
		b.Fatalf("%d subscribers were cut as slow consumers", slow)
	}
}

// BenchmarkBroadcastPaced measures the steady state: one 64-byte message
// at a time to 19,000 subscribers, paced like 2.63 messages a second, so no
// two messages share a write. It reports the server's CPU per delivery
// (this process's user and system time; the subscribers are a child
// process), the figure that a single write to each socket bounds.
func BenchmarkBroadcastPaced(b *testing.B) {
	const subscribers = 19_000
	h := startBroadcast(b, engine.Config{})
	startSink(b, h.srv.Addr(), subscribers, "bench.steady")
	payload := []byte(`{"sym":"AAPL","px":187.25,"ts":1732180000000,"seq":123456789012}`)
	b.ResetTimer()
	start := processCPU(b)
	for range b.N {
		want := h.hub.Stats().Deliveries + subscribers
		h.deliver(b, "bench.steady", payload)
		waitFor(b, 10*time.Second, "one message delivered", func() bool { return h.hub.Stats().Deliveries >= want })
		time.Sleep(380 * time.Millisecond)
	}
	used := processCPU(b) - start
	b.StopTimer()
	b.ReportMetric(float64(used.Nanoseconds())/1e3/float64(b.N*subscribers), "cpu-µs/delivery")
}

// BenchmarkLoopbackWriteFloor is BenchmarkBroadcastPaced without Herald:
// the same subscribers in the same child process, each sent the same
// frame by a bare loop of write syscalls. It measures what one small write
// to a distinct loopback socket costs on this machine, the floor under the
// broadcast path's CPU per delivery; compare the two side by side.
func BenchmarkLoopbackWriteFloor(b *testing.B) {
	const subscribers = 19_000
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	fds := make(chan []int, 1)
	go func() {
		var got []int
		for range subscribers {
			c, err := l.Accept()
			if err != nil {
				break
			}
			r := bufio.NewReader(c)
			for line := ""; line != "\r\n"; line, _ = r.ReadString('\n') {
			}
			_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\n\r\n")
			raw, _ := c.(*net.TCPConn).SyscallConn()
			_ = raw.Control(func(fd uintptr) { got = append(got, int(fd)) })
			b.Cleanup(func() { c.Close() })
		}
		fds <- got
	}()
	startSink(b, l.Addr().String(), subscribers, "floor")
	conns := <-fds
	frame := codec.AppendFrame(nil, ws.OpText, []byte(`{"channel":"bench.steady","data":{"sym":"AAPL","px":187.25,"ts":1732180000000,"seq":123456789012}}`))
	b.ResetTimer()
	start := processCPU(b)
	for range b.N {
		for _, fd := range conns {
			if _, err := syscall.Write(fd, frame); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(380 * time.Millisecond)
	}
	used := processCPU(b) - start
	b.StopTimer()
	b.ReportMetric(float64(used.Nanoseconds())/1e3/float64(b.N*subscribers), "cpu-µs/delivery")
}

// processCPU is this process's user and system CPU time.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIdleConnectionMemory measures what an idle subscribed WebSocket
// connection costs the server: live heap and resident memory per
// connection, with 19,000 connections held by a child process. One op
// is the whole measurement; run it with -benchtime=1x.
func BenchmarkIdleConnectionMemory(b *testing.B) {
	for _, bc := range []struct {
		name, channel string
		wide          []string
		deflate       bool
		history       []string
	}{
		{"shared", "idle.memory", nil, false, nil},
		{"shared-deflate", "idle.memory", nil, true, nil}, // every socket negotiated permessage-deflate
		{"personal", "user.%d", nil, false, nil},
		{"personal-wide", "user.%d", []string{"user.*"}, false, nil},                        // --nats-wide user.*
		{"shared-history", "idle.memory", nil, false, []string{"idle.>"}},                   // --history 'idle.>'
		{"personal-history", "user.%d", nil, false, []string{"user.>"}},                     // --history 'user.>'
		{"personal-wide-history", "user.%d", []string{"user.*"}, false, []string{"user.>"}}, // both
	} {
		b.Run(bc.name, func(b *testing.B) { benchmarkIdleMemory(b, bc.channel, bc.wide, bc.deflate, bc.history) })
	}
}

func benchmarkIdleMemory(b *testing.B, channel string, wide []string, deflate bool, hist []string) {
	const conns = 19_000
	for range b.N {
		cfg := heraldConfig{NATSWide: wide, Engine: engine.Config{Compression: deflate}}
		if hist != nil {
			cfg.History, cfg.DataDir = &history.Config{Subjects: hist}, b.TempDir()
		}
		h := startTestHerald(b, cfg)
		spec := channel
		if deflate {
			spec += " deflate"
		}
		runtime.GC()
		debug.FreeOSMemory()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		rssBefore := residentBytes(b)
		startSink(b, h.srv.Addr(), conns, spec)
		waitFor(b, time.Minute, "every connection upgraded", func() bool { return h.srv.Stats().Upgraded == conns })
		// First as the connect burst left it, then as a settled server would
		// be: after the collector has run and the scavenger has returned the
		// garbage the burst made.
		time.Sleep(2 * time.Second)
		var burst runtime.MemStats
		runtime.ReadMemStats(&burst)
		b.ReportMetric(float64(residentBytes(b)-rssBefore)/conns, "rss-after-burst-B/conn")
		b.ReportMetric(float64(burst.HeapInuse-before.HeapInuse)/conns, "heapinuse-after-burst-B/conn")
		runtime.GC()
		debug.FreeOSMemory()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		rssAfter := residentBytes(b)
		if path := os.Getenv("HERALD_HEAP_PROFILE"); path != "" {
			writeHeapProfile(b, path) // what the connections hold, for go tool pprof
		}
		b.Logf("per conn: HeapAlloc %.0f HeapInuse %.0f HeapSys-HeapReleased %.0f MSpanInuse %.0f GCSys %.0f OtherSys %.0f StackInuse %.0f",
			perConn(after.HeapAlloc, before.HeapAlloc), perConn(after.HeapInuse, before.HeapInuse),
			perConn(after.HeapSys-after.HeapReleased, before.HeapSys-before.HeapReleased),
			perConn(after.MSpanInuse, before.MSpanInuse), perConn(after.GCSys, before.GCSys),
			perConn(after.OtherSys, before.OtherSys), perConn(after.StackInuse, before.StackInuse))
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/conns, "heap-B/conn")
		b.ReportMetric(float64(rssAfter-rssBefore)/conns, "rss-B/conn")
		b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
	}
}

func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}

func perConn(after, before uint64) float64 { return (float64(after) - float64(before)) / 19_000 }

// residentBytes reads this process's resident memory from /proc.
func residentBytes(b *testing.B) int64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// marketJSON is a realistic JSON message of about n bytes: an order book
// update with varied prices and sizes, the kind of data a push server
// carries. Being varied, it compresses like real ticks (three to five
// times at 1 KiB), not like a run of padding.
func marketJSON(n int, seq int) []byte {
	b := fmt.Appendf(nil, `{"type":"book","sym":"AAPL","seq":%d,"ts":%d,"bids":[`, seq, 1732180000000+int64(seq)*37)
	for i := 0; len(b) < n-60; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		px := 18725 - i*3 - (seq*7+i*13)%5
		b = fmt.Appendf(b, `{"px":%d.%02d,"qty":%d,"n":%d}`, px/100, px%100, 100+(seq*31+i*97)%4900, 1+(i*seq)%17)
	}
	return append(b, `],"asks":[],"venue":"XNAS"}`...)
}

// BenchmarkBroadcastDeflate is BenchmarkBroadcast with 1 KiB JSON
// messages to 10,000 sockets that negotiated permessage-deflate: each
// message is compressed once and the same bytes written to every socket.
// allocs/op is per message, so 0 allocs/op means none per delivery.
func BenchmarkBroadcastDeflate(b *testing.B) {
	const subscribers = 10_000
	h := startBroadcast(b, engine.Config{MaxOutbound: 64 << 20, Compression: true})
	startSink(b, h.srv.Addr(), subscribers, "bench.hot deflate")
	ids := h.bus.IDs("bench.hot")
	payload := marketJSON(1024, 1)
	deliver := func(n int) time.Duration {
		start := time.Now()
		want := h.hub.Stats().Deliveries + uint64(n)*subscribers
		for range n {
			h.hub.Message("bench.hot", payload, ids)
		}
		h.awaitDeliveries(b, want)
		return time.Since(start)
	}
	deliver(b.N) // fill the pools for a burst this size, untimed
	before := h.hub.Stats()
	b.ReportAllocs()
	b.ResetTimer()
	elapsed := deliver(b.N)
	b.StopTimer()
	st := h.hub.Stats()
	if st.Compressed-before.Compressed != uint64(b.N) {
		b.Fatalf("compressed %d frames for %d messages, want one each", st.Compressed-before.Compressed, b.N)
	}
	b.ReportMetric(float64(b.N)*subscribers/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(st.CompressedOut-before.CompressedOut)/float64(st.CompressedIn-before.CompressedIn), "wire/plain")
	if slow := h.srv.Stats().SlowConsumers; slow != 0 {
		b.Fatalf("%d subscribers were cut as slow consumers", slow)
	}
}

// BenchmarkBroadcastBurstCPU compares the server's CPU per delivery with
// and without compression, side by side: 19,000 subscribers (deflate ones
// in the compressed run), one op a burst of 200 messages of 1 KiB of JSON.
// Compare cpu-µs/delivery of the two sub-benchmarks.
func BenchmarkBroadcastBurstCPU(b *testing.B) {
	for _, deflate := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "deflate"}[deflate]
		b.Run(name, func(b *testing.B) {
			const subscribers, burst = 19_000, 200
			h := startBroadcast(b, engine.Config{MaxOutbound: 256 << 20, Compression: deflate})
			spec := "bench.burst"
			if deflate {
				spec += " deflate"
			}
			startSink(b, h.srv.Addr(), subscribers, spec)
			ids := h.bus.IDs("bench.burst")
			msgs := make([][]byte, burst)
			for i := range msgs {
				msgs[i] = marketJSON(1024, i+1)
			}
			var used time.Duration
			var wire uint64
			for range b.N {
				before := h.hub.Stats()
				want := before.Deliveries + burst*subscribers
				start := processCPU(b)
				for _, m := range msgs {
					h.hub.Message("bench.burst", m, ids)
				}
				waitFor(b, 2*time.Minute, "burst delivered", func() bool { return h.hub.Stats().Deliveries >= want })
				used += processCPU(b) - start
				st := h.hub.Stats()
				wire += st.BytesOut - before.BytesOut
			}
			b.ReportMetric(float64(used.Nanoseconds())/1e3/float64(b.N*burst*subscribers), "cpu-µs/delivery")
			b.ReportMetric(float64(wire)/float64(b.N*burst*subscribers), "wire-B/delivery")
			if slow := h.srv.Stats().SlowConsumers; slow != 0 {
				b.Fatalf("%d subscribers were cut as slow consumers", slow)
			}
		})
	}
}
