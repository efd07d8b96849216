package engine_test

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/enginetest"
)

// row is what the test's describe function keeps of a connection.
type row struct {
	remote string
	unsent int
	age    time.Duration
}

func describeRow(_ *engine.Conn, v engine.ConnView) row { return row{v.Remote, v.Unsent, v.Age} }

// TopConns over real sockets: the echo connection whose client stopped
// reading is first by unsent bytes, the first connection opened is first
// by age, limits are kept, and a loop that does not answer makes it fail
// by its context rather than hang.
func TestTopConnsOverRealSockets(t *testing.T) {
	srv := enginetest.Start(t, engine.Config{Echo: true, MaxMessageSize: 16 << 20})
	url := "ws://" + srv.Addr() + engine.EchoPath
	dial := func(rcvbuf int) *websocket.Conn {
		t.Helper()
		nd := &net.Dialer{}
		if rcvbuf > 0 {
			nd.Control = func(_, _ string, rc syscall.RawConn) error {
				return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf) })
			}
		}
		d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDialContext: nd.DialContext}
		c, _, err := d.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	top := func(order engine.ConnOrder, n int) []row {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rows, err := engine.TopConns(ctx, srv, order, n, describeRow)
		if err != nil {
			t.Fatal(err)
		}
		return rows
	}

	first := dial(0)
	enginetest.WaitFor(t, 10*time.Second, "the first connection to be 0.3 s old", func() bool {
		rows := top(engine.ByAge, 1)
		return len(rows) == 1 && rows[0].age >= 300*time.Millisecond
	})
	slow := dial(4096)
	dial(0)
	// The slow client sends a big message and never reads its echo.
	if err := slow.WriteMessage(websocket.BinaryMessage, make([]byte, 8<<20)); err != nil {
		t.Fatal(err)
	}
	enginetest.WaitFor(t, 20*time.Second, "the echo to pile up unsent", func() bool {
		rows := top(engine.ByUnsent, 3)
		return len(rows) == 3 && rows[0].unsent > 0 && rows[0].remote == slow.LocalAddr().String()
	})

	for _, tt := range []struct {
		name  string
		order engine.ConnOrder
		n     int
		want  int    // rows
		first string // remote of the first row
	}{
		{"by unsent, all", engine.ByUnsent, 10, 3, slow.LocalAddr().String()},
		{"by unsent, one", engine.ByUnsent, 1, 1, slow.LocalAddr().String()},
		{"by age, all", engine.ByAge, 10, 3, first.LocalAddr().String()},
		{"by age, two", engine.ByAge, 2, 2, first.LocalAddr().String()},
		{"none", engine.ByAge, 0, 0, ""},
	} {
		rows := top(tt.order, tt.n)
		if len(rows) != tt.want || (tt.want > 0 && rows[0].remote != tt.first) {
			t.Errorf("%s: %+v, want %d rows, %s first", tt.name, rows, tt.want, tt.first)
		}
		for i := 1; i < len(rows); i++ {
			if (tt.order == engine.ByUnsent && rows[i].unsent > rows[i-1].unsent) || (tt.order == engine.ByAge && rows[i].age > rows[i-1].age) {
				t.Errorf("%s: out of order: %+v", tt.name, rows)
			}
		}
	}

	// Hold every loop; a question to them then ends with its context.
	release := make(chan struct{})
	holding := make(chan struct{}, engine.MaxLoops)
	held := make(chan error, 1)
	go func() {
		held <- srv.OnEveryLoop(context.Background(), func(*engine.Loop) {
			holding <- struct{}{}
			<-release
		})
	}()
	<-holding // at least one loop is held: TopConns waits for every loop
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := engine.TopConns(ctx, srv, engine.ByUnsent, 5, describeRow)
	cancel()
	close(release)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("TopConns on held loops: %v, want the context's deadline", err)
	}
	if err := <-held; err != nil {
		t.Fatalf("the holding task: %v", err)
	}
	if rows := top(engine.ByUnsent, 3); len(rows) != 3 {
		t.Fatalf("after the loops are released: %+v", rows)
	}
}
