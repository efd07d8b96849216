package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
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
func startFleet(t *testing.T) *fleet {
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
