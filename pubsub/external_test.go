package pubsub

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// natsBinary is a nats-server binary built once per test run from the module
// version in go.mod (offline: the module is in the module cache).
var natsBinary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if natsBinary.dir != "" {
		os.RemoveAll(natsBinary.dir)
	}
	os.Exit(code)
}

func natsServerBinary(t *testing.T) string {
	t.Helper()
	natsBinary.once.Do(func() {
		dir, err := os.MkdirTemp("", "herald-pubsub-nats-")
		if err != nil {
			natsBinary.err = err
			return
		}
		natsBinary.dir = dir
		natsBinary.path = filepath.Join(dir, "nats-server")
		goTool, err := exec.LookPath("go")
		if err != nil {
			natsBinary.err = err
			return
		}
		cmd := exec.Command(goTool, "build", "-o", natsBinary.path, "github.com/nats-io/nats-server/v2")
		if out, err := cmd.CombinedOutput(); err != nil {
			natsBinary.err = fmt.Errorf("go build nats-server: %v\n%s", err, out)
		}
	})
	if natsBinary.err != nil {
		t.Fatal(natsBinary.err)
	}
	return natsBinary.path
}

// natsProcess is a nats-server running as a separate process, so it can be
// SIGKILLed like a real outage.
type natsProcess struct {
	t    *testing.T
	bin  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
	out  *syncBuffer
}

func startNATSProcess(t *testing.T, port int) *natsProcess {
	t.Helper()
	p := &natsProcess{t: t, bin: natsServerBinary(t), port: port, out: &syncBuffer{}}
	p.start()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("nats-server output:\n%s", p.out)
		}
	})
	return p
}

func (p *natsProcess) url() string { return "nats://127.0.0.1:" + strconv.Itoa(p.port) }

func (p *natsProcess) start() {
	p.t.Helper()
	p.cmd = exec.Command(p.bin, "-a", "127.0.0.1", "-p", strconv.Itoa(p.port))
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start nats-server: %v", err)
	}
	done := make(chan struct{})
	p.done = done
	go func(cmd *exec.Cmd) { cmd.Wait(); close(done) }(p.cmd)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port))
	waitFor(p.t, "nats-server to listen on "+addr, func() bool {
		select {
		case <-done:
			p.t.Fatalf("nats-server exited:\n%s", p.out)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// kill SIGKILLs the server: no goodbye to clients, the way a crash looks.
func (p *natsProcess) kill() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
}

// freePort returns a loopback port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestOutage kills the external NATS server under a connected Broker and
// brings it back on the same port: the Broker notices, counts, reconnects by
// itself, and its subscriptions work again without anyone re-acquiring them
// (nats.go re-sends them; the restarted server knows nothing of them).
func TestOutage(t *testing.T) {
	srv := startNATSProcess(t, freePort(t))
	rec := newRecorder()
	b, logs := startBroker(t, Config{URL: srv.url(), ReconnectWait: 50 * time.Millisecond, Handler: rec.handle})
	if b.ClientURL() != srv.url() {
		t.Errorf("ClientURL() = %q, want %q", b.ClientURL(), srv.url())
	}
	waitFor(t, "broker to connect", b.Connected)
	if l := logs.find("pubsub: using external nats"); len(l) != 1 {
		t.Errorf("want one start log naming the external server, got %v", l)
	}

	if err := b.Acquire("ticks.*"); err != nil {
		t.Fatal(err)
	}
	mustFlush(t, b)
	publish(t, srv.url(), "ticks.a", "before")
	rec.expect(t, message{"ticks.*", "ticks.a", "before"})

	srv.kill()
	waitFor(t, "broker to notice the outage", func() bool {
		return !b.Connected() && b.Stats().Disconnects == 1
	})
	// The counter and the log line are written by the same callback, in
	// that order: wait for the line too.
	waitFor(t, "the disconnect to be logged", func() bool { return len(logs.find("nats disconnected")) == 1 })
	// Still held while disconnected; nothing to re-acquire.
	if b.Channels() != 1 {
		t.Errorf("Channels() = %d during outage, want 1", b.Channels())
	}

	srv.start()
	waitFor(t, "broker to reconnect", func() bool {
		return b.Connected() && b.Stats().Reconnects == 1
	})
	waitFor(t, "the reconnect to be logged", func() bool { return len(logs.find("nats reconnected")) == 1 })
	if l := logs.find("nats reconnected"); len(l) != 1 || l[0].attrs["url"] != srv.url() {
		t.Errorf("reconnect log = %v, want one line with url %s", l, srv.url())
	}
	// The round trip makes sure the re-sent SUB has been processed.
	mustFlush(t, b)
	publish(t, srv.url(), "ticks.b", "after")
	rec.expect(t, message{"ticks.*", "ticks.b", "after"})
	if st := b.Stats(); st.Disconnects != 1 || st.Reconnects != 1 || st.MessagesIn != 2 {
		t.Errorf("Stats() = %+v, want 1 disconnect, 1 reconnect, 2 messages", st)
	}
}

// TestStartBeforeNATS starts Herald while nothing listens at the NATS URL:
// Start succeeds, channels can be acquired, and everything works once a
// server appears. The URL carries a password, which must never be logged.
func TestStartBeforeNATS(t *testing.T) {
	port := freePort(t)
	url := fmt.Sprintf("nats://herald:s3cret@127.0.0.1:%d", port)
	rec := newRecorder()
	b, logs := startBroker(t, Config{URL: url, ReconnectWait: 50 * time.Millisecond, Handler: rec.handle})
	if b.Connected() {
		t.Fatal("connected with no server running")
	}
	if l := logs.find("pubsub: using external nats, not reachable yet; retrying in the background"); len(l) != 1 {
		t.Errorf("want a warning that NATS is not reachable yet:\n%s", logs)
	}
	if err := b.Acquire("late.>"); err != nil {
		t.Fatalf("Acquire while disconnected: %v", err)
	}

	srv := startNATSProcess(t, port)
	waitFor(t, "broker to connect once the server is up", b.Connected)
	mustFlush(t, b)
	publish(t, srv.url(), "late.comer", "hello")
	rec.expect(t, message{"late.>", "late.comer", "hello"})
	if st := b.Stats(); st.Disconnects != 0 || st.Reconnects != 0 {
		t.Errorf("Stats() = %+v: a first connection is neither a disconnect nor a reconnect", st)
	}
	if strings.Contains(logs.String(), "s3cret") {
		t.Errorf("password leaked into logs:\n%s", logs)
	}
}

// TestCloseWhileDisconnected: Close must not hang on a connection that is
// still trying to reach its server.
func TestCloseWhileDisconnected(t *testing.T) {
	b, _ := startBroker(t, Config{
		URL:     fmt.Sprintf("nats://127.0.0.1:%d", freePort(t)),
		Handler: func(string, string, []byte) {},
	})
	if err := b.Acquire("x"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Close took %v while disconnected", d)
	}
}

// TestScaleOut: two Herald instances on one NATS both get every message
// (plain subscriptions, not a queue group).
func TestScaleOut(t *testing.T) {
	srv := startNATSProcess(t, freePort(t))
	rec1, rec2 := newRecorder(), newRecorder()
	b1, _ := startBroker(t, Config{URL: srv.url(), Name: "herald-1", Handler: rec1.handle})
	b2, _ := startBroker(t, Config{URL: srv.url(), Name: "herald-2", Handler: rec2.handle})
	for _, b := range []*Broker{b1, b2} {
		waitFor(t, "broker to connect", b.Connected)
		if err := b.Acquire("room.1"); err != nil {
			t.Fatal(err)
		}
		mustFlush(t, b)
	}
	publish(t, srv.url(), "room.1", "to all")
	rec1.expect(t, message{"room.1", "room.1", "to all"})
	rec2.expect(t, message{"room.1", "room.1", "to all"})
	rec1.expectNone(t, 100*time.Millisecond)
	rec2.expectNone(t, 10*time.Millisecond)
}
