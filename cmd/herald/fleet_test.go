package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	"github.com/herald-ws/herald/pubsub/natstest"
)

// fleet is a running scripts/cluster.sh: three NATS nodes, three Herald
// instances (instance i joined to node i), HAProxy in front.
type fleet struct {
	dir  string
	pids map[string]int // by the script's names: nats1, herald2, haproxy...
}

// Ports of scripts/cluster.sh.
const (
	fleetPlain = "127.0.0.1:8100"
	fleetTLS   = "127.0.0.1:8443"
)

func fleetNATS(i int) string   { return fmt.Sprintf("nats://127.0.0.1:%d", 4300+i) }
func fleetHerald(i int) string { return fmt.Sprintf("127.0.0.1:%d", 8100+i) }

// startFleet runs `scripts/cluster.sh start` with this test binary as
// herald and natstest's nats-server, and stops it when the test ends.
// settings are more of the script's environment (HISTORY=...).
func startFleet(t *testing.T, settings ...string) *fleet {
	t.Helper()
	if _, err := exec.LookPath("haproxy"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("haproxy is not installed (apt-get install haproxy); scripts/test.sh installs it")
		}
		t.Skip("haproxy is not installed (apt-get install haproxy): the fleet tests need it")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{dir: t.TempDir(), pids: map[string]int{}}
	env := append(os.Environ(), "DIR="+f.dir, "HERALD="+self, heraldEnv+"=1", "GORACE=atexit_sleep_ms=0",
		"NATS_SERVER="+natstest.Binary(t), "PUBLISH=0")
	env = append(env, settings...)
	script := func(arg string) ([]byte, error) {
		cmd := exec.Command("../../scripts/cluster.sh", arg)
		cmd.Env = env
		return cmd.CombinedOutput()
	}
	t.Cleanup(func() {
		if out, err := script("stop"); err != nil {
			t.Errorf("cluster.sh stop: %v\n%s", err, out)
		}
		if t.Failed() {
			for _, name := range []string{"herald1", "herald2", "herald3", "haproxy", "nats1", "nats2", "nats3"} {
				log, _ := os.ReadFile(filepath.Join(f.dir, name+".log"))
				t.Logf("%s.log (end):\n%s", name, tail(string(log), 3<<10))
			}
		}
	})
	if out, err := script("start"); err != nil {
		t.Fatalf("cluster.sh start: %v\n%s", err, out)
	}
	file, err := os.Open(filepath.Join(f.dir, "pids"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		name, pid, _ := strings.Cut(sc.Text(), " ")
		f.pids[name], _ = strconv.Atoi(pid)
	}
	return f
}

// exited reports whether the process the script named name is gone (or a
// zombie: its parent, the script, has exited and nothing may reap it).
func (f *fleet) exited(name string) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", f.pids[name]))
	if err != nil {
		return true
	}
	_, rest, _ := strings.Cut(string(stat), ") ")
	return strings.HasPrefix(rest, "Z")
}

func (f *fleet) signal(t *testing.T, name string, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(f.pids[name], sig); err != nil {
		t.Fatalf("signal %s (pid %d): %v", name, f.pids[name], err)
	}
}

// ticker publishes "N" on subject every interval through url until stopped.
type ticker struct {
	stop chan struct{}
	done chan struct{}
}

func startTicker(t *testing.T, url, subject string, interval time.Duration) *ticker {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	tk := &ticker{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(tk.done)
		defer nc.Close()
		for n := 1; ; n++ {
			select {
			case <-tk.stop:
				return
			case <-time.After(interval):
			}
			_ = nc.Publish(subject, []byte(strconv.Itoa(n)))
		}
	}()
	t.Cleanup(tk.halt)
	return tk
}

func (tk *ticker) halt() {
	select {
	case <-tk.stop:
	default:
		close(tk.stop)
	}
	<-tk.done
}

// watcher is a WebSocket client that records when each message arrived
// and whether its socket was closed.
type watcher struct {
	mu       sync.Mutex
	arrivals []time.Time
	closed   error
	done     chan struct{}
}

func watch(conn *websocket.Conn) *watcher {
	w := &watcher{done: make(chan struct{})}
	_ = conn.SetReadDeadline(time.Time{}) // expectConnected's
	go func() {
		defer close(w.done)
		for {
			_, msg, err := conn.ReadMessage()
			w.mu.Lock()
			if err != nil {
				w.closed = err
				w.mu.Unlock()
				return
			}
			var e struct{ Op string }
			if json.Unmarshal(msg, &e) == nil && e.Op == "" {
				w.arrivals = append(w.arrivals, time.Now())
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// since returns the arrivals after t0 and whether the socket closed.
func (w *watcher) since(t0 time.Time) (arrivals []time.Time, closed error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.arrivals {
		if a.After(t0) {
			arrivals = append(arrivals, a)
		}
	}
	return arrivals, w.closed
}

// dialFleet opens a WebSocket to addr on channel, through TLS with the
// fleet's CA when tlsConf is set.
func dialFleet(t *testing.T, addr, channel string, tlsConf *tls.Config) (*websocket.Conn, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: tlsConf}
	scheme := "ws"
	if tlsConf != nil {
		scheme = "wss"
	}
	c, resp, err := d.Dial(scheme+"://"+addr+"/ws?channel="+channel, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("%w (status %d)", err, resp.StatusCode)
		}
		return nil, err
	}
	expectConnected(t, c)
	return c, nil
}

// TestFleet runs scripts/cluster.sh and does to it what happens to fleets:
// wss:// through HAProxy, a NATS node partitioned, a Herald drained, a NATS
// node killed (in that order: each leaves the fleet as the next expects).
// Each reports what it measured.
func TestFleet(t *testing.T) {
	f := startFleet(t)

	t.Run("wss through HAProxy", func(t *testing.T) {
		pem, err := os.ReadFile(filepath.Join(f.dir, "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pem)
		if _, err := dialFleet(t, fleetTLS, "fleet.tls", &tls.Config{}); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("dial without the fleet's CA: %v, want a certificate error", err)
		}
		conn, err := dialFleet(t, fleetTLS, "fleet.tls", &tls.Config{RootCAs: roots})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		tk := startTicker(t, fleetNATS(2), "fleet.tls", 20*time.Millisecond)
		defer tk.halt()
		if env := readEnvelope(t, conn); env.Channel != "fleet.tls" {
			t.Errorf("got %+v over wss", env)
		}
	})

	t.Run("partition a NATS node", func(t *testing.T) {
		tk := startTicker(t, fleetNATS(2), "fleet.part", 20*time.Millisecond)
		defer tk.halt()
		survivor, err := dialFleet(t, fleetHerald(1), "fleet.part", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer survivor.Close()
		cut, err := dialFleet(t, fleetHerald(3), "fleet.part", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cut.Close()
		sw, cw := watch(survivor), watch(cut)
		time.Sleep(300 * time.Millisecond)
		stopped := time.Now()
		f.signal(t, "nats3", syscall.SIGSTOP) // herald3's node stops answering
		defer syscall.Kill(f.pids["nats3"], syscall.SIGCONT)
		// The rest of the fleet keeps delivering, and herald3 answers HTTP
		// at once although its NATS is silent: nothing hangs.
		time.Sleep(2 * time.Second)
		if got, closed := sw.since(stopped.Add(time.Second)); len(got) < 20 || closed != nil {
			t.Errorf("herald1's client got %d messages in the second second of the partition (closed: %v)", len(got), closed)
		}
		client := http.Client{Timeout: time.Second}
		start := time.Now()
		resp, err := client.Get("http://" + fleetHerald(3) + "/healthz")
		if err != nil {
			t.Fatalf("herald3 /healthz during the partition: %v", err)
		}
		resp.Body.Close()
		healthz := time.Since(start)
		f.signal(t, "nats3", syscall.SIGCONT)
		healed := time.Now()
		// herald3 reaches NATS again (through node 3 or another) and its
		// client gets messages again, on the socket it had.
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, closed := cw.since(healed)
			if closed != nil {
				t.Fatalf("herald3's client lost its socket: %v", closed)
			}
			if len(got) >= 10 {
				t.Logf("NATS node 3 stopped for %v: herald1 kept delivering, herald3 answered /healthz in %v, and its client had messages again %v after SIGCONT",
					healed.Sub(stopped).Round(time.Millisecond), healthz.Round(time.Millisecond), got[0].Sub(healed).Round(time.Millisecond))
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("herald3's client got %d messages in 30 s after the partition healed", len(got))
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Run("SIGTERM one Herald", func(t *testing.T) {
		const clients = 90
		var (
			mu      sync.Mutex
			backAt  []time.Time
			on      = map[string]int{}
			pending atomic.Int32
			wg      sync.WaitGroup
		)
		watchers := make([]*watcher, clients)
		for i := range watchers {
			c, err := dialFleet(t, fleetPlain, "fleet.drain", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			watchers[i] = watch(c)
		}
		moved := make([]*websocket.Conn, clients)
		terminated := time.Now()
		f.signal(t, "herald2", syscall.SIGTERM)
		// Clients that herald2 closes reconnect through HAProxy the way
		// herald.js does: full jitter on a backoff from 250 ms.
		for i, w := range watchers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case <-w.done:
				case <-time.After(6 * time.Second):
					return // on a survivor
				}
				if _, closed := w.since(terminated); !websocket.IsCloseError(closed, websocket.CloseGoingAway) {
					t.Errorf("client %d: %v, want close 1001", i, closed)
					return
				}
				pending.Add(1)
				delay := 250 * time.Millisecond
				for attempt := 0; attempt < 20; attempt++ {
					time.Sleep(time.Duration(float64(delay) * float64(i%10+1) / 10))
					nc, err := dialFleet(t, fleetPlain, "fleet.drain", nil)
					if err == nil {
						mu.Lock()
						backAt = append(backAt, time.Now())
						mu.Unlock()
						moved[i] = nc
						pending.Add(-1)
						return
					}
					mu.Lock()
					on[strings.TrimSpace(err.Error())]++
					mu.Unlock()
					delay = min(2*delay, 2*time.Second)
				}
				t.Errorf("client %d did not get back through HAProxy", i)
			}()
		}
		wg.Wait()
		defer func() {
			for _, c := range moved {
				if c != nil {
					c.Close()
				}
			}
		}()
		if len(backAt) == 0 {
			t.Fatal("no client was on herald2: HAProxy did not spread them")
		}
		var last time.Time
		perWindow := map[int64]int{}
		for _, at := range backAt {
			if at.After(last) {
				last = at
			}
			perWindow[at.UnixMilli()/100]++
		}
		peak := 0
		for _, n := range perWindow {
			peak = max(peak, n*10)
		}
		t.Logf("SIGTERM herald2: %d of %d clients moved; all back %v after the signal; peak %d reconnects/s; failed attempts on the way: %v",
			len(backAt), clients, last.Sub(terminated).Round(time.Millisecond), peak, on)
		// Every client, moved or not, receives what is published next.
		published := time.Now()
		tk := startTicker(t, fleetNATS(2), "fleet.drain", 50*time.Millisecond)
		defer tk.halt()
		for i, w := range watchers {
			if moved[i] != nil {
				if env := readEnvelope(t, moved[i]); env.Channel != "fleet.drain" {
					t.Errorf("client %d after the drain: %+v", i, env)
				}
				continue
			}
			waitFor := time.Now().Add(5 * time.Second)
			for {
				got, closed := w.since(published)
				if len(got) > 0 {
					break
				}
				if closed != nil || time.Now().After(waitFor) {
					t.Fatalf("client %d on a survivor: nothing after the drain (closed: %v)", i, closed)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})

	t.Run("kill -9 a NATS node", func(t *testing.T) {
		const clients = 20
		tk := startTicker(t, fleetNATS(3), "fleet.kill", 10*time.Millisecond)
		defer tk.halt()
		watchers := make([]*watcher, clients)
		for i := range watchers {
			conn, err := dialFleet(t, fleetHerald(1), "fleet.kill", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			watchers[i] = watch(conn)
		}
		time.Sleep(300 * time.Millisecond)
		killed := time.Now()
		f.signal(t, "nats1", syscall.SIGKILL) // herald1's node
		var worst time.Duration
		for i, w := range watchers {
			var arrivals []time.Time
			var closed error
			deadline := time.Now().Add(20 * time.Second)
			for {
				arrivals, closed = w.since(killed)
				if len(arrivals) >= 20 || closed != nil || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if closed != nil {
				t.Fatalf("client %d lost its socket when herald1's NATS node died: %v", i, closed)
			}
			if len(arrivals) < 20 {
				t.Fatalf("client %d: %d messages in 20 s after the node died: fan-out did not resume", i, len(arrivals))
			}
			// The gap: the longest wait between messages after the kill.
			prev := killed
			for _, a := range arrivals {
				worst = max(worst, a.Sub(prev))
				prev = a
			}
		}
		t.Logf("NATS node of herald1 killed: every client kept its socket; longest gap in fan-out %v (messages every 10 ms)", worst.Round(time.Millisecond))
	})

}

// fleetStream is the R3 stream scripts/cluster.sh makes (HISTORY_STREAM).
const fleetStream = "HERALD"

// seqPublisher stores "1", "2", ... on subject in the fleet's stream, one
// every interval, each retried until the stream acks it (with its number
// as Nats-Msg-Id, so that a retry of a message already stored is not
// stored twice): every number up to acked is in the stream exactly once.
type seqPublisher struct {
	every   atomic.Int64 // the interval, in ns: the test changes it
	acked   atomic.Int64
	stalled atomic.Int64 // longest wait for one ack, in ns
	stop    chan struct{}
	done    chan struct{}
}

func startSeqPublisher(t *testing.T, js jetstream.JetStream, subject string, interval time.Duration) *seqPublisher {
	t.Helper()
	p := &seqPublisher{stop: make(chan struct{}), done: make(chan struct{})}
	p.every.Store(int64(interval))
	go func() {
		defer close(p.done)
		for n := int64(1); ; n++ {
			select {
			case <-p.stop:
				return
			case <-time.After(time.Duration(p.every.Load())):
			}
			began := time.Now()
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := js.Publish(ctx, subject, []byte(strconv.FormatInt(n, 10)), jetstream.WithMsgID(strconv.FormatInt(n, 10)))
				cancel()
				if err == nil {
					break
				}
				select {
				case <-p.stop:
					return
				case <-time.After(50 * time.Millisecond): // no leader yet, or the connection is moving
				}
			}
			if d := int64(time.Since(began)); d > p.stalled.Load() {
				p.stalled.Store(d)
			}
			p.acked.Store(n)
		}
	}()
	t.Cleanup(p.halt)
	return p
}

func (p *seqPublisher) halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// follower is a gorilla client following one history channel through
// HAProxy the way herald.js does: it keeps the seq of the last message and
// the stream's epoch, and when its Herald closes it with 1001 it comes
// back through HAProxy with ?since=&epoch=. It records every payload, and
// whatever breaks the contract (a seq that does not grow, a resume not
// recovered or answered with an error, another epoch, a socket lost
// otherwise).
type follower struct {
	channel string

	mu       sync.Mutex
	conn     *websocket.Conn
	data     []int64
	arrivals []time.Time
	lastSeq  uint64
	epoch    string
	resumes  int
	resumed  time.Time // when it last came back
	replayed int       // messages that came in resumes, before their ack
	broken   error
	stopping bool
	done     chan struct{}
}

// follow subscribes through HAProxy in band (the ack gives the epoch) and
// reads until stopped.
func follow(t *testing.T, channel string) *follower {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	conn, _, err := d.Dial("ws://"+fleetPlain+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	expectConnected(t, conn)
	sendCommand(t, conn, `{"op":"subscribe","channel":"`+channel+`","id":"s"}`)
	ack := readHistoryFrame(t, conn)
	if ack.Op != "ack" || ack.Epoch == nil || *ack.Epoch == "" {
		t.Fatalf("subscribe to %s: %s, want an ack with the stream's epoch", channel, ack.raw)
	}
	fl := &follower{channel: channel, conn: conn, epoch: *ack.Epoch, done: make(chan struct{})}
	_ = conn.SetReadDeadline(time.Time{})
	go fl.run()
	return fl
}

func (fl *follower) run() {
	defer close(fl.done)
	resuming := false
	for {
		fl.mu.Lock()
		conn := fl.conn
		fl.mu.Unlock()
		_, msg, err := conn.ReadMessage()
		if err != nil {
			fl.mu.Lock()
			stopping := fl.stopping
			fl.mu.Unlock()
			if stopping {
				return
			}
			if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
				fl.fail(fmt.Errorf("socket lost: %w", err))
				return
			}
			if !fl.resume() {
				return
			}
			resuming = true
			continue
		}
		var f historyFrame
		if err := json.Unmarshal(msg, &f); err != nil {
			fl.fail(fmt.Errorf("frame %q: %w", msg, err))
			return
		}
		switch f.Op {
		case "ack":
			switch {
			case !resuming:
				fl.fail(fmt.Errorf("an ack it did not ask for: %s", msg))
			case f.Recovered == nil || !*f.Recovered:
				fl.fail(fmt.Errorf("resume after seq %d not recovered: %s", fl.seq(), msg))
			case f.Epoch == nil || *f.Epoch != fl.epoch:
				fl.fail(fmt.Errorf("resume acked with another epoch: %s, want %s", msg, fl.epoch))
			}
			resuming = false
		case "":
			n, err := strconv.ParseInt(string(f.Data), 10, 64)
			fl.mu.Lock()
			switch {
			case err != nil || f.Channel != fl.channel:
				fl.broken = errors.Join(fl.broken, fmt.Errorf("not one of the publisher's messages: %s", msg))
			case f.Seq <= fl.lastSeq:
				fl.broken = errors.Join(fl.broken, fmt.Errorf("seq %d after seq %d: %s", f.Seq, fl.lastSeq, msg))
			default:
				fl.lastSeq = f.Seq
				fl.data = append(fl.data, n)
				fl.arrivals = append(fl.arrivals, time.Now())
				if resuming {
					fl.replayed++
				}
			}
			fl.mu.Unlock()
		default:
			fl.fail(fmt.Errorf("unexpected frame %s", msg))
		}
	}
}

// resume reconnects through HAProxy with since and epoch, with full jitter
// on a backoff from 100 ms (HAProxy may still send it to the Herald that
// is draining, which answers 503, until its health check catches up).
func (fl *follower) resume() bool {
	delay := 100 * time.Millisecond
	url := fmt.Sprintf("ws://%s/ws?channel=%s&since=%d&epoch=%s", fleetPlain, fl.channel, fl.seq(), fl.epoch)
	for attempt := 0; attempt < 40; attempt++ {
		time.Sleep(time.Duration(rand.Int64N(int64(delay)) + 1))
		delay = min(2*delay, time.Second)
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		conn, _, err := d.Dial(url, nil)
		if err != nil {
			continue
		}
		var c connected
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, msg, err := conn.ReadMessage(); err != nil || json.Unmarshal(msg, &c) != nil || c.Op != "connected" {
			conn.Close()
			continue
		}
		_ = conn.SetReadDeadline(time.Time{})
		fl.mu.Lock()
		defer fl.mu.Unlock()
		if fl.stopping {
			conn.Close()
			return false
		}
		fl.conn = conn
		fl.resumes++
		fl.resumed = time.Now()
		return true
	}
	fl.fail(fmt.Errorf("could not get back through HAProxy with %s", url))
	return false
}

func (fl *follower) seq() uint64 {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.lastSeq
}

func (fl *follower) fail(err error) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.broken = errors.Join(fl.broken, err)
}

// last is the highest number received, and what broke so far.
func (fl *follower) last() (int64, error) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if len(fl.data) == 0 {
		return 0, fl.broken
	}
	return fl.data[len(fl.data)-1], fl.broken
}

func (fl *follower) close() {
	fl.mu.Lock()
	fl.stopping = true
	conn := fl.conn
	fl.mu.Unlock()
	conn.Close()
	<-fl.done
}

// check says how the follower's numbers break "every number once, in
// order, up to last": from the first it got (its subscribe came in the
// middle of the stream) to last, none missing, none twice. last 0: up to
// whatever came last.
func (fl *follower) check(last int64) error {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.broken != nil {
		return fl.broken
	}
	if len(fl.data) == 0 {
		return errors.New("no message at all")
	}
	for i, n := range fl.data {
		if want := fl.data[0] + int64(i); n != want {
			return fmt.Errorf("message %d is %d, want %d (%d missing or repeated)", i, n, want, n-want)
		}
	}
	if got := fl.data[len(fl.data)-1]; last != 0 && got != last {
		return fmt.Errorf("last message %d, want %d", got, last)
	}
	return nil
}

// gap is the longest wait between messages after t0 (from t0 to the
// first), and where it was: it ended at the message numbered at, that long
// after t0.
func (fl *follower) gap(t0 time.Time) (worst time.Duration, at int64, after time.Duration) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	prev := t0
	for i, a := range fl.arrivals {
		if a.After(t0) {
			if a.Sub(prev) > worst {
				worst, at, after = a.Sub(prev), fl.data[i], a.Sub(t0)
			}
			prev = a
		}
	}
	return worst, at, after
}

// metaLeader is the node leading JetStream's meta group (which creates
// consumers, among others) as NATS node i sees it, "" for none.
func metaLeader(t *testing.T, i int) string {
	t.Helper()
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz", 8221+i))
	if err != nil {
		t.Fatalf("nats%d /jsz: %v", i, err)
	}
	defer resp.Body.Close()
	var jsz struct {
		Meta struct{ Leader string } `json:"meta_cluster"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&jsz); err != nil {
		t.Fatalf("nats%d /jsz: %v", i, err)
	}
	return jsz.Meta.Leader
}

// heraldOn is which NATS node (server_name) Herald i is connected to, and
// its /metrics.
func heraldOn(t *testing.T, i int) (string, map[string]*dto.MetricFamily) {
	t.Helper()
	m := scrape(t, fleetHerald(i))
	for _, metric := range m["herald_nats_server_info"].GetMetric() {
		if metric.GetGauge().GetValue() != 1 {
			continue
		}
		for _, l := range metric.GetLabel() {
			if l.GetName() == "server" {
				return l.GetValue(), m
			}
		}
	}
	return "", m
}

// TestFleetHistory runs scripts/cluster.sh with its R3 history stream and
// clients through HAProxy on a history channel while a publisher stores
// numbered messages, then kills -9 a NATS node that a Herald with clients
// is on, then SIGTERMs that Herald: every client gets every number once,
// in order, the ones on the moved Herald on the sockets they had, the ones
// of the drained Herald after resuming through HAProxy with since. Each
// case has a fleet of its own.
func TestFleetHistory(t *testing.T) {
	for _, tc := range []struct {
		name string
		// streamLeader: the node killed leads the stream (its replicas
		// elect another, publishes wait meanwhile); otherwise it is
		// JetStream's meta leader and the stream is led elsewhere (no
		// consumer can be created until the survivors elect a meta leader,
		// up to 12 s here).
		streamLeader bool
	}{
		{"kill -9 the meta leader's node", false},
		{"kill -9 the stream leader's node", true},
	} {
		t.Run(tc.name, func(t *testing.T) { fleetHistory(t, tc.streamLeader) })
	}
}

func fleetHistory(t *testing.T, killStreamLeader bool) {
	f := startFleet(t, "HISTORY=fleet.>")
	const (
		clients = 30
		channel = "fleet.hist"
	)
	nc, err := nats.Connect(fleetNATS(1)+","+fleetNATS(2)+","+fleetNATS(3),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	str, err := js.Stream(ctx, fleetStream)
	if err != nil {
		t.Fatal(err)
	}
	if info := str.CachedInfo(); info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream %s: %d replicas, cluster %+v; want R3 on the three nodes", fleetStream, info.Config.Replicas, info.Cluster)
	}
	// Killing the meta leader's node, it must not lead the stream too: if
	// it does, the stream's leader steps down to one of the other two.
	meta := metaLeader(t, 1)
	leader := str.CachedInfo().Cluster.Leader
	for !killStreamLeader && leader == meta {
		if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+fleetStream, nil, 10*time.Second); err != nil {
			t.Fatalf("stream %s leader stepdown: %v", fleetStream, err)
		}
		waitFor(t, 30*time.Second, "the stream to elect another leader", func() bool {
			info, err := str.Info(ctx)
			if err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
				leader = info.Cluster.Leader
			}
			return err == nil && leader != meta && leader != ""
		})
	}

	followers := make([]*follower, clients)
	for i := range followers {
		followers[i] = follow(t, channel)
		defer followers[i].close()
	}
	killing := meta
	if killStreamLeader {
		killing = leader
	}
	victim := int(killing[len(killing)-1] - '0')
	// Every 20 ms (the stream keeps 100 messages a subject, 2 s of them,
	// for the resumes), on a node that is not killed: the publisher does
	// not move while the Herald does.
	pnc, err := nats.Connect(fleetNATS(victim%3+1), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer pnc.Close()
	pjs, err := jetstream.New(pnc)
	if err != nil {
		t.Fatal(err)
	}
	pub := startSeqPublisher(t, pjs, channel, 20*time.Millisecond)
	defer pub.halt()
	// caughtUp waits until every follower has what the publisher had
	// stored by now.
	caughtUp := func(what string) {
		t.Helper()
		target := pub.acked.Load()
		waitFor(t, 60*time.Second, what, func() bool {
			for _, fl := range followers {
				if n, err := fl.last(); n < target || err != nil {
					return err != nil // reported by check
				}
			}
			return true
		})
	}
	waitFor(t, 20*time.Second, "the publisher to store 30 messages", func() bool { return pub.acked.Load() >= 30 })
	caughtUp("every client to receive the first messages")

	// The Herald on the node to kill has clients: messages stored while
	// it moves are what it must repair, without a meta leader (the
	// repair's reads need none) or while the stream elects a new leader.
	if on, m := heraldOn(t, victim); on != killing || metricValue(t, m, "herald_connections") == 0 {
		t.Fatalf("herald%d is on %s with %v clients; want it on %s with clients", victim, on, metricValue(t, m, "herald_connections"), killing)
	}
	_, before := heraldOn(t, victim)
	// As fast as the stream acks around the kill, so that messages are
	// stored while the Herald is between nodes (a few ms): its
	// subscription misses them, and it must repair the gap.
	pub.every.Store(int64(time.Millisecond))
	time.Sleep(200 * time.Millisecond)
	killed := time.Now()
	f.signal(t, fmt.Sprintf("nats%d", victim), syscall.SIGKILL)
	waitFor(t, 30*time.Second, "the Herald to move to another node", func() bool {
		on, _ := heraldOn(t, victim)
		return on != "" && on != fmt.Sprintf("n%d", victim)
	})
	time.Sleep(300 * time.Millisecond)
	pub.every.Store(int64(20 * time.Millisecond))
	target := pub.acked.Load() + 50 // a second of messages after the move
	waitFor(t, 30*time.Second, "the publisher to store a second more", func() bool { return pub.acked.Load() >= target })
	caughtUp("every client to catch up after the kill")
	movedTo, after := heraldOn(t, victim)
	survivor := victim%3 + 1
	// Resumes that the tails cannot answer need a consumer, and so a meta
	// leader: the next fault waits for one (a survivor's /jsz names the
	// dead node until it notices).
	waitFor(t, 60*time.Second, "the survivors to elect a JetStream meta leader", func() bool {
		l := metaLeader(t, survivor)
		return l != "" && l != killing
	})
	metaNote := "the meta leader stayed " + meta
	if killing == meta {
		metaNote = fmt.Sprintf("a meta leader again %v after the kill", time.Since(killed).Round(time.Millisecond))
	}
	var worst time.Duration
	var worstAt string
	for i, fl := range followers {
		if err := fl.check(0); err != nil {
			t.Fatalf("client %d after the kill: %v", i, err)
		}
		fl.mu.Lock()
		resumes := fl.resumes
		fl.mu.Unlock()
		if resumes != 0 {
			t.Fatalf("client %d had to reconnect when a NATS node died", i)
		}
		if g, at, after := fl.gap(killed); g > worst {
			worst, worstAt = g, fmt.Sprintf("client %d, ending with message %d %v after the kill", i, at, after.Round(time.Millisecond))
		}
	}
	delta := func(m map[string]*dto.MetricFamily, name string) float64 {
		return metricValue(t, m, name) - metricValue(t, before, name)
	}
	t.Logf("kill -9 nats%d (herald%d's node, %v clients on it; stream leader %s, meta leader %s): herald%d moved to %s, no client reconnected, every client got every message once, in order; longest gap %v (%s; a message every 1 ms around the kill); herald%d repaired %v gaps, %v messages from the stream; longest publish wait %v; %s",
		victim, victim, metricValue(t, before, "herald_connections"), leader, meta, victim, movedTo, worst.Round(time.Millisecond), worstAt, victim,
		delta(after, "herald_history_gaps_total"), delta(after, "herald_history_repaired_total"), time.Duration(pub.stalled.Load()).Round(time.Millisecond), metaNote)

	// SIGTERM the Herald that moved: its clients are closed with 1001
	// over the drain and resume through HAProxy on the other two.
	drained := fmt.Sprintf("herald%d", victim)
	terminated := time.Now()
	f.signal(t, drained, syscall.SIGTERM)
	waitFor(t, 30*time.Second, "the drained Herald's clients to resume elsewhere", func() bool {
		moved := 0
		for _, fl := range followers {
			fl.mu.Lock()
			moved += fl.resumes
			fl.mu.Unlock()
		}
		return moved > 0 && f.exited(drained)
	})
	target = pub.acked.Load() + 50
	waitFor(t, 30*time.Second, "the publisher to store a second more", func() bool { return pub.acked.Load() >= target })
	pub.halt()
	final := pub.acked.Load()
	caughtUp("every client to have the last message")
	resumed, replayed := 0, 0
	var allBack, worst2 time.Duration
	for i, fl := range followers {
		if err := fl.check(final); err != nil {
			t.Errorf("client %d: %v", i, err)
		}
		fl.mu.Lock()
		if fl.resumes > 0 {
			resumed++
			replayed += fl.replayed
			allBack = max(allBack, fl.resumed.Sub(terminated))
		}
		fl.mu.Unlock()
		g, _, _ := fl.gap(terminated)
		worst2 = max(worst2, g)
	}
	if resumed == 0 {
		t.Errorf("no client was on %s", drained)
	}
	t.Logf("SIGTERM %s: %d of %d clients closed with 1001 resumed through HAProxy with since, all back %v after the signal, %d messages replayed before their acks (all recovered), longest gap %v; every client got every message once, in order, %d in all",
		drained, resumed, clients, allBack.Round(time.Millisecond), replayed, worst2.Round(time.Millisecond), final)
}
