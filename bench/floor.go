package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/herald-ws/herald/codec"
)

// The floor scenario measures what one small write to a distinct loopback
// socket costs on this machine, with a live reader at the other end: the
// floor under a server's CPU per delivery when no two messages share a
// write. The bench listens on loopback itself and its shards connect to
// it as they would to Herald, from the same child processes and source
// addresses, and read what arrives with the same accounting. For every
// message the bench builds one text frame, the envelope Herald would send
// ({"channel":...,"data":PAYLOAD}, or the bare payload with Raw), and
// writes it to every socket with a bare loop of write(2) calls, failing on
// any error: a loop that ignores errors would count cheap EBADF or EAGAIN
// returns as writes. The readers always run in a child process, so the
// writer's getrusage is the writes' cost and nothing else's. This is
// BenchmarkLoopbackWriteFloor (cmd/herald) as a bench scenario, so that
// scripts/bench.sh can put the two side by side in one run.

// floorHandshakeTimeout bounds one reader's upgrade on the floor's
// listener.
const floorHandshakeTimeout = 10 * time.Second

// floorServer accepts the readers and upgrades them, keeping each
// socket's descriptor for the writer.
type floorServer struct {
	ln net.Listener
	wg sync.WaitGroup

	mu     sync.Mutex
	conns  []net.Conn // kept open, and reachable, as long as their fds are written
	fds    []int
	failed map[string]int // handshakes that went wrong, by reason
	closed bool
}

func startFloorServer(addr string) (*floorServer, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("floor listen address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("floor listen address %q: want a loopback address", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	f := &floorServer{ln: ln, failed: map[string]int{}}
	f.wg.Add(1)
	go f.accept()
	return f, nil
}

func (f *floorServer) addr() string { return f.ln.Addr().String() }

func (f *floorServer) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			if reason := f.upgrade(c); reason != "" {
				c.Close()
				f.mu.Lock()
				f.failed[reason]++
				f.mu.Unlock()
			}
		}()
	}
}

// upgrade reads a reader's upgrade request and answers 101, then keeps
// its socket for the writer. It returns why it failed, or "".
func (f *floorServer) upgrade(c net.Conn) string {
	_ = c.SetDeadline(time.Now().Add(floorHandshakeTimeout))
	r := bufio.NewReaderSize(c, 1024)
	var head []byte
	for codec.HeadLength(head, 0) == 0 {
		if len(head) > maxResponseHead {
			return "request head too long"
		}
		line, err := r.ReadSlice('\n')
		if err != nil {
			return "read request: " + closeErrReason(err)
		}
		head = append(head, line...)
	}
	var req codec.Request
	if err := codec.ParseRequest(head, &req); err != nil || len(req.Key) == 0 {
		_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
		return "bad upgrade request"
	}
	resp := append([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "), codec.AppendAcceptKey(nil, req.Key)...)
	resp = append(resp, "\r\n\r\n"...)
	if _, err := c.Write(resp); err != nil {
		return "write 101: " + closeErrReason(err)
	}
	_ = c.SetDeadline(time.Time{})
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return "not a TCP connection"
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return "raw socket: " + err.Error()
	}
	fd := -1
	if err := raw.Control(func(s uintptr) { fd = int(s) }); err != nil || fd < 0 {
		return "raw socket: no descriptor"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return "closed"
	}
	f.conns = append(f.conns, c)
	f.fds = append(f.fds, fd)
	return ""
}

// sockets returns the descriptors of the upgraded readers so far.
func (f *floorServer) sockets() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.fds)
}

func (f *floorServer) failures() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.failed)
}

// close stops accepting and closes every socket. The writer must be done.
func (f *floorServer) close() {
	f.ln.Close()
	f.mu.Lock()
	f.closed = true
	conns := f.conns
	f.conns, f.fds = nil, nil
	f.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	f.wg.Wait()
}

// appendFloorFrame appends the text frame Herald sends for payload on
// channel: its JSON envelope, {"channel":NAME,"data":PAYLOAD}, or the bare
// payload with raw. Bench channel names and payloads need no escaping.
func appendFloorFrame(dst []byte, channel string, payload []byte, raw bool) []byte {
	if raw {
		return codec.AppendFrame(dst, ws.OpText, payload)
	}
	body := make([]byte, 0, len(channel)+len(payload)+24)
	body = append(body, `{"channel":"`...)
	body = append(body, channel...)
	body = append(body, `","data":`...)
	body = append(body, payload...)
	body = append(body, '}')
	return codec.AppendFrame(dst, ws.OpText, body)
}

// writeAll writes frame to every socket, one write(2) each. Any error,
// and a short write (which would leave a torn frame on the wire), ends it:
// the index says where.
func writeAll(fds []int, frame []byte) (int, error) {
	for i, fd := range fds {
		n, err := syscall.Write(fd, frame)
		switch {
		case err != nil:
			return i, err
		case n != len(frame):
			return i, fmt.Errorf("short write: %d of %d bytes", n, len(frame))
		}
	}
	return len(fds), nil
}

// floorWriter writes each frame it is given to its share of the sockets,
// on a thread of its own.
type floorWriter struct {
	fds    []int
	frames chan []byte
	done   chan floorPass
}

// floorPass is what one writer did with one frame.
type floorPass struct {
	n      int
	err    error
	thread time.Duration
}

func startFloorWriters(fds []int, n int) []*floorWriter {
	ws := make([]*floorWriter, n)
	for i := range ws {
		w := &floorWriter{fds: fds[i*len(fds)/n : (i+1)*len(fds)/n], frames: make(chan []byte), done: make(chan floorPass)}
		ws[i] = w
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for frame := range w.frames {
				t0 := threadCPU()
				n, err := writeAll(w.fds, frame)
				w.done <- floorPass{n, err, threadCPU() - t0}
			}
		}()
	}
	return ws
}

func stopFloorWriters(ws []*floorWriter) {
	for _, w := range ws {
		close(w.frames)
	}
}

// writeParallel has every writer write frame to its sockets at once and
// returns how many writes succeeded and the first error; thread gains the
// writers' CPU time.
func writeParallel(ws []*floorWriter, frame []byte, thread *time.Duration) (int, error) {
	for _, w := range ws {
		w.frames <- frame
	}
	total := 0
	var first error
	for _, w := range ws {
		p := <-w.done
		total += p.n
		*thread += p.thread
		if p.err != nil && first == nil {
			first = p.err
		}
	}
	return total, first
}

// threadCPU is the calling thread's user and system time so far.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// floorRun waits until the listener holds every upgraded reader, then
// writes Messages frames (or until Duration) at Rate to all of them, and
// waits for the readers to have them.
func (r *runner) floorRun(ctx context.Context) error {
	cfg := &r.cfg
	upgraded := r.total().EverUp
	r.phase.Store("settle")
	var fds []int
	for {
		fds = r.floor.sockets()
		if int64(len(fds)) >= upgraded {
			break
		}
		if err := sleep(ctx, pollEvery); err != nil {
			return fmt.Errorf("floor: %d of %d readers on the listener", len(fds), upgraded)
		}
	}
	fl := &FloorResult{Listen: r.floor.addr(), Sockets: len(fds), ReaderProcs: len(r.shards)}
	r.res.Floor = fl
	if failed := r.floor.failures(); len(failed) > 0 {
		r.note("floor: readers the listener did not upgrade: %s", reasons(failed))
	}
	name := channelName(r.prefix, 0)
	payload := make([]byte, 0, cfg.Size)
	frame := make([]byte, 0, cfg.Size+len(name)+40)
	var passes []time.Duration
	var inPass, thread time.Duration

	// The writes run on locked threads, so that each thread's CPU time is
	// theirs alone; the process's is what Result.Server.CPU reports.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var writers []*floorWriter
	if cfg.Writers > 1 {
		writers = startFloorWriters(fds, cfg.Writers)
		defer stopFloorWriters(writers)
	}
	r.phase.Store("publish")
	start := time.Now()
	r.publishStart = start
	end := start.Add(cfg.Duration)
	cpuStart := selfCPU()
	var werr error
	for i := 0; cfg.Messages == 0 || i < cfg.Messages; i++ {
		now := time.Now()
		if cfg.Rate > 0 {
			due := dueAt(start, i, cfg.Rate)
			if due.After(end) {
				break
			}
			if wait := due.Sub(now); wait > 0 {
				if err := sleep(ctx, wait); err != nil {
					werr = err
					break
				}
			}
		} else if now.After(end) {
			r.note("writing stopped at --duration after %d of %d messages", i, cfg.Messages)
			break
		}
		if werr = ctx.Err(); werr != nil {
			break
		}
		seq := r.published[0] + 1
		cpu0, thr0 := selfCPU(), threadCPU()
		t0 := time.Now()
		payload = AppendPayload(payload[:0], seq, t0.UnixMicro(), cfg.Size)
		frame = appendFloorFrame(frame[:0], name, payload, cfg.Raw)
		var n int
		var err error
		if len(writers) == 0 {
			n, err = writeAll(fds, frame)
			thread += threadCPU() - thr0
		} else {
			n, err = writeParallel(writers, frame, &thread)
		}
		took := time.Since(t0)
		inPass += selfCPU() - cpu0
		fl.Writes += uint64(n)
		if err != nil {
			werr = fmt.Errorf("floor: message %d: write to socket %d of %d: %w", seq, n+1, len(fds), err)
			break
		}
		passes = append(passes, took)
		r.published[0] = seq
		r.expected.Add(uint64(len(fds)))
	}
	cpu := selfCPU() - cpuStart
	r.res.Fanout = &FanoutResult{Published: int(r.published[0]), Size: cfg.Size, Rate: cfg.Rate, PublishSeconds: time.Since(start).Seconds()}
	fl.FrameBytes = len(frame)
	fl.Passes = len(passes)
	if len(passes) > 0 {
		sorted := slices.Clone(passes)
		slices.Sort(sorted)
		var sum time.Duration
		for _, p := range passes {
			sum += p
		}
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		fl.PassMedian = ms(sorted[len(sorted)/2])
		if len(sorted)%2 == 0 {
			fl.PassMedian = ms((sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2)
		}
		fl.PassMax = ms(sorted[len(sorted)-1])
		fl.PassMean = ms(sum / time.Duration(len(passes)))
	}
	if fl.Writes > 0 {
		fl.InPassMicrosPerWrite = float64(inPass) / float64(time.Microsecond) / float64(fl.Writes)
		fl.ThreadMicrosPerWrite = float64(thread) / float64(time.Microsecond) / float64(fl.Writes)
	}
	r.res.Server.CPU = cpuResult(cpu, fl.Writes, "write")
	r.res.Server.Source = fmt.Sprintf("getrusage of the writer (the bench, pid %d); readers in %d child process%s", os.Getpid(), len(r.shards), pluralES(len(r.shards)))
	if werr != nil {
		return werr
	}
	r.phase.Store("deliver")
	return r.awaitDeliveries(ctx)
}
