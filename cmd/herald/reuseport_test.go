package main

import (
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-ws/herald/engine/enginetest"
	"github.com/herald-ws/herald/pubsub/natstest"
)

// TestReusePortRestart: two `herald serve --reuseport` processes listen on
// one address and the kernel gives each a share of the connections. Then
// the zero-downtime restart: SIGTERM one; its clients are closed with 1001,
// reconnect to the same address, and all land on the survivor, with no
// connection refused, and every client receives what is published next.
func TestReusePortRestart(t *testing.T) {
	const clients = 60
	nats := natstest.Start(t)
	addr := freeAddr(t)
	args := []string{"--listen", addr, "--reuseport", "--nats", nats.URL(), "--drain-timeout", "1s"}
	old, _, _ := startHeraldProcessNATS(t, args...)
	startHeraldProcessNATS(t, args...)

	dial := func() *websocket.Conn {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws?channel=restart", nil)
			if err == nil {
				expectConnected(t, c)
				return c
			}
			// The draining process may still get a new connection from
			// the kernel until it exits: it answers 503, and the client
			// retries. A refused connection would mean nobody listened.
			if resp == nil || resp.StatusCode != 503 || time.Now().After(deadline) {
				t.Fatalf("dial %s: %v (response %v)", addr, err, resp)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		conns[i] = dial()
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	if err := old.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Each client learns where it is: the old process closes its own with
	// 1001 within the drain; the survivor's stay silent.
	closed := make([]bool, clients)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(4 * time.Second))
			_, _, err := c.ReadMessage()
			closed[i] = websocket.IsCloseError(err, websocket.CloseGoingAway)
			if !closed[i] && !strings.Contains(err.Error(), "timeout") {
				t.Errorf("client %d: %v, want close 1001 or nothing", i, err)
			}
		}()
	}
	wg.Wait()
	if code := waitExit(t, old, 10*time.Second); code != 0 {
		t.Fatalf("old process exit code %d", code)
	}
	moved := 0
	for i, c := range conns {
		c.Close()
		if closed[i] {
			moved++
		}
		conns[i] = dial()
	}
	t.Logf("%d of %d clients were on the process that was restarted", moved, clients)
	if moved == 0 || moved == clients {
		t.Errorf("%d of %d clients on the first process: the port was not shared", moved, clients)
	}

	var stderr enginetest.Buffer
	if code := run([]string{"pub", "--nats", nats.URL(), "restart", `"after"`}, &stderr, &stderr); code != 0 {
		t.Fatalf("herald pub exit %d: %s", code, &stderr)
	}
	for i, c := range conns {
		if env := readEnvelope(t, c); env.Channel != "restart" || string(env.Data) != `"after"` {
			t.Errorf("client %d got %+v", i, env)
		}
	}
}

// TestPortInUseWithoutReusePort: without --reuseport on both, the second
// process fails to start and says why.
func TestPortInUseWithoutReusePort(t *testing.T) {
	addr := freeAddr(t)
	startHeraldProcessNATS(t, "--listen", addr, "--reuseport")
	var stderr enginetest.Buffer
	code := run([]string{"serve", "--listen", addr, "--nats-listen", "127.0.0.1:-1", "--log-level", "error"}, &stderr, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "address already in use") {
		t.Errorf("exit %d, stderr %q: want a failure naming the address in use", code, &stderr)
	}
	stderr = enginetest.Buffer{}
	code = run([]string{"serve", "--listen", "127.0.0.1:0", "--reuseport", "--nats-listen", "127.0.0.1:-1"}, &stderr, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "fixed port") {
		t.Errorf("--reuseport on port 0: exit %d, stderr %q: want a failure asking for a fixed port", code, &stderr)
	}
}
