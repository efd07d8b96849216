package push_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/enginetest"
	"github.com/herald-ws/herald/engine/push"
	"github.com/herald-ws/herald/engine/push/pushtest"
)

// testServer is a real engine on a loopback port serving the push
// protocol over an in-memory bus.
type testServer struct {
	addr string
	hub  *push.Hub
	bus  *pushtest.Bus
}

func startPush(t testing.TB, ecfg engine.Config, pcfg push.Config, autoLive bool) *testServer {
	t.Helper()
	bus := pushtest.New()
	bus.AutoLive = autoLive
	t.Cleanup(bus.Close)
	pcfg.Bus = bus
	hub := push.New(pcfg)
	bus.Attach(hub)
	ecfg.Endpoints = map[string]engine.Endpoint{push.Path: hub.Endpoint()}
	ecfg.Streams = map[string]engine.Endpoint{push.StreamPath: hub.Endpoint()}
	srv := enginetest.Start(t, ecfg)
	return &testServer{addr: srv.Addr(), hub: hub, bus: bus}
}

// dial upgrades with query, waiting at most bound for the answer.
func (s *testServer) dial(t testing.TB, query string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conn, resp, err := d.Dial("ws://"+s.addr+push.Path+"?"+query, nil)
	if err == nil {
		t.Cleanup(func() { conn.Close() })
		if !strings.Contains(query, "format=raw") {
			if f := read(t, conn); f.Op != "connected" || f.Client == "" {
				t.Fatalf("first frame %+v, want connected with a client id", f)
			}
		}
	}
	return conn, resp, err
}

// frame is what the client reads: an envelope or an answer.
type frame struct {
	Op      string          `json:"op"`
	ID      json.RawMessage `json:"id"`
	Code    string          `json:"code"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	Message string          `json:"message"`
	Client  string          `json:"client"`
	User    string          `json:"user"`
	Expires int64           `json:"expires"`
}

func read(t testing.TB, conn *websocket.Conn) frame {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, p, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var f frame
	if err := json.Unmarshal(p, &f); err != nil {
		t.Fatalf("frame %q: %v", p, err)
	}
	return f
}

func send(t testing.TB, conn *websocket.Conn, cmd string) {
	t.Helper()
	if err := conn.WriteMessage(websocket.TextMessage, []byte(cmd)); err != nil {
		t.Fatal(err)
	}
}

var waitFor = enginetest.WaitFor

func TestUpgradeWaitsForTheBus(t *testing.T) {
	s := startPush(t, engine.Config{}, push.Config{}, false)
	type result struct {
		conn *websocket.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		conn, _, err := s.dial(t, "channel=a.b&channel=c")
		done <- result{conn, err}
	}()
	waitFor(t, 5*time.Second, "both subscriptions", func() bool { return len(s.bus.Waiting()) == 2 })
	s.bus.Confirm("a.b", nil)
	select {
	case r := <-done:
		t.Fatalf("upgrade answered (err %v) with one of two channels confirmed", r.err)
	case <-time.After(100 * time.Millisecond):
	}
	s.bus.Confirm("c", nil)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	s.bus.Send("c", []byte(`1`))
	if f := read(t, r.conn); f.Channel != "c" || string(f.Data) != "1" {
		t.Fatalf("got %+v", f)
	}
	// A second socket on live channels is answered at once, without the bus.
	_, made := s.bus.Subscriptions()
	if _, _, err := s.dial(t, "channel=a.b&channel=c"); err != nil {
		t.Fatal(err)
	}
	if _, again := s.bus.Subscriptions(); again != made {
		t.Fatalf("bus asked %d more times for channels the process has", again-made)
	}
}

func TestUpgradeNotConfirmedIsAnswered503(t *testing.T) {
	s := startPush(t, engine.Config{HandshakeTimeout: 300 * time.Millisecond}, push.Config{}, false)
	_, resp, err := s.dial(t, "channel=never")
	if err == nil || resp == nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("dial = %v, %v; want 503 with Retry-After", resp, err)
	}
	// The socket's subscription went with it; the bus's answer, when it
	// comes, finds nobody and the channel is released.
	waitFor(t, 5*time.Second, "the channel to be released", func() bool {
		s.bus.Confirm("never", nil)
		now, _ := s.bus.Subscriptions()
		return now == 0
	})
}

func TestBusRefusalIsAnsweredInBand(t *testing.T) {
	s := startPush(t, engine.Config{}, push.Config{}, false)
	done := make(chan *websocket.Conn, 1)
	go func() {
		conn, _, err := s.dial(t, "channel=bad")
		if err != nil {
			t.Error(err)
		}
		done <- conn
	}()
	waitFor(t, 5*time.Second, "the subscription", func() bool { return len(s.bus.Waiting()) == 1 })
	s.bus.Confirm("bad", errors.New("permissions violation"))
	conn := <-done
	if conn == nil {
		return
	}
	if f := read(t, conn); f.Op != "error" || f.Code != "unavailable" {
		t.Fatalf("got %+v, want an unavailable error", f)
	}
	// In band too, and the socket stays usable.
	send(t, conn, `{"op":"subscribe","channel":"bad","id":3}`)
	waitFor(t, 5*time.Second, "the second subscription", func() bool { return len(s.bus.Waiting()) == 1 })
	s.bus.Confirm("bad", errors.New("permissions violation"))
	if f := read(t, conn); f.Op != "error" || f.Code != "unavailable" || string(f.ID) != "3" {
		t.Fatalf("got %+v, want an unavailable error for id 3", f)
	}
	// NATS's own permissions refusing it keep their code.
	send(t, conn, `{"op":"subscribe","channel":"bad","id":5}`)
	waitFor(t, 5*time.Second, "the third subscription", func() bool { return len(s.bus.Waiting()) == 1 })
	s.bus.Confirm("bad", fmt.Errorf("nats: %w", &channel.Error{Code: channel.CodeForbidden, Message: "permissions violation"}))
	if f := read(t, conn); f.Op != "error" || f.Code != "forbidden" || string(f.ID) != "5" {
		t.Fatalf("got %+v, want a forbidden error for id 5", f)
	}
	send(t, conn, `{"op":"ping","id":4}`)
	if f := read(t, conn); f.Op != "pong" {
		t.Fatalf("got %+v, want a pong", f)
	}
}

func TestAckWaitsForTheBus(t *testing.T) {
	s := startPush(t, engine.Config{}, push.Config{}, false)
	conn, _, err := s.dial(t, "")
	if err != nil {
		t.Fatal(err)
	}
	send(t, conn, `{"op":"subscribe","channel":"x","id":"s1"}`)
	waitFor(t, 5*time.Second, "the subscription", func() bool { return len(s.bus.Waiting()) == 1 })
	// Not live yet: a message published now is not the client's, and the
	// ping behind the subscribe is answered first.
	s.bus.Send("x", []byte(`"early"`))
	send(t, conn, `{"op":"ping","id":"p"}`)
	if f := read(t, conn); f.Op != "pong" {
		t.Fatalf("got %+v before the ack, want the pong", f)
	}
	s.bus.Confirm("x", nil)
	if f := read(t, conn); f.Op != "ack" || string(f.ID) != `"s1"` {
		t.Fatalf("got %+v, want the ack", f)
	}
	s.bus.Send("x", []byte(`"late"`))
	if f := read(t, conn); f.Channel != "x" || string(f.Data) != `"late"` {
		t.Fatalf("got %+v, want the message published after the ack", f)
	}
}

func TestUnsubscribeAnswersAPendingSubscribeFirst(t *testing.T) {
	s := startPush(t, engine.Config{}, push.Config{}, false)
	conn, _, err := s.dial(t, "")
	if err != nil {
		t.Fatal(err)
	}
	send(t, conn, `{"op":"subscribe","channel":"x","id":1}`)
	send(t, conn, `{"op":"unsubscribe","channel":"x","id":2}`)
	for _, want := range []string{"1", "2"} {
		if f := read(t, conn); f.Op != "ack" || string(f.ID) != want {
			t.Fatalf("got %+v, want the ack of %s", f, want)
		}
	}
	// The loop kept its topic until the bus answered, then let it go.
	s.bus.Confirm("x", nil)
	waitFor(t, 5*time.Second, "the channel to be released", func() bool { now, _ := s.bus.Subscriptions(); return now == 0 })
}

// Overlapping patterns, given together or added later, each deliver every
// message exactly once, whether the bus groups the copies or not.
func TestOverlappingPatternsDeliverOnce(t *testing.T) {
	for _, grouped := range []bool{true, false} {
		t.Run(fmt.Sprintf("grouped=%v", grouped), func(t *testing.T) {
			s := startPush(t, engine.Config{}, push.Config{}, true)
			publish := s.bus.Send
			if !grouped {
				publish = s.bus.SendCopies
			}
			conn, _, err := s.dial(t, "channel=p.*&channel=p.P03&channel=g.>&channel=g.G30")
			if err != nil {
				t.Fatal(err)
			}
			subjects := []string{"p.P03", "p.P04", "g.G30", "g.G30.x", "g.G31", "q.none"}
			const rounds = 50
			for i := range rounds {
				for _, subj := range subjects {
					publish(subj, []byte(fmt.Sprint(i)))
				}
			}
			got := make(map[string]int)
			for range rounds * (len(subjects) - 1) {
				f := read(t, conn)
				got[f.Channel+"/"+string(f.Data)]++
			}
			for key, n := range got {
				if n != 1 {
					t.Errorf("%s arrived %d times", key, n)
				}
			}
			// Added later, while messages flow: still once each, in order.
			stop := make(chan struct{})
			published := make(chan int, 1)
			go func() {
				i := 0
				defer func() { published <- i }()
				for ; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					publish("q.a.b", []byte(fmt.Sprint(i)))
					time.Sleep(50 * time.Microsecond)
				}
			}()
			send(t, conn, `{"op":"subscribe","channel":"q.>","id":1}`)
			var last = -1
			acked := false
			for !acked {
				f := read(t, conn)
				if f.Op == "ack" {
					acked = true
					continue
				}
				var n int
				_ = json.Unmarshal(f.Data, &n)
				last = n
			}
			send(t, conn, `{"op":"subscribe","channel":"q.a.*","id":2}`)
			send(t, conn, `{"op":"subscribe","channel":"q.a.b","id":3}`)
			time.Sleep(50 * time.Millisecond)
			close(stop)
			total := <-published
			s.bus.Send("q.end", []byte(`"end"`))
			for {
				f := read(t, conn)
				if f.Op == "ack" {
					continue
				}
				if f.Channel == "q.end" {
					break
				}
				var n int
				_ = json.Unmarshal(f.Data, &n)
				if last >= 0 && n != last+1 {
					t.Fatalf("after %d got %d: a message was lost or repeated", last, n)
				}
				last = n
			}
			if last != total-1 {
				t.Fatalf("last message %d, published %d", last, total)
			}
		})
	}
}

func TestLatencyIsMeasuredWithTheInjectedClock(t *testing.T) {
	// Each reading of the clock is 300 ms after the one before: a message
	// is read once on arrival and once after its last write.
	start := time.Unix(1000, 0)
	var readings atomic.Int64
	s := startPush(t, engine.Config{}, push.Config{Now: func() time.Time {
		return start.Add(time.Duration(readings.Add(1)) * 300 * time.Millisecond)
	}}, true)
	conn, _, err := s.dial(t, "channel=t")
	if err != nil {
		t.Fatal(err)
	}
	s.bus.Send("t", []byte(`1`))
	read(t, conn)
	waitFor(t, 5*time.Second, "the delivery to be counted", func() bool { return s.hub.Stats().Latency.Counts != [len(push.LatencyBuckets) + 1]uint64{} })
	st := s.hub.Stats()
	if st.Latency.Sum != 300*time.Millisecond || st.Deliveries != 1 {
		t.Fatalf("latency sum %v over %d deliveries, want the clock's 300ms over 1", st.Latency.Sum, st.Deliveries)
	}
}

func TestRawAndEnvelopeFromOneMessage(t *testing.T) {
	s := startPush(t, engine.Config{}, push.Config{}, true)
	env, _, err := s.dial(t, "channel=m")
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := s.dial(t, "channel=m&format=raw")
	if err != nil {
		t.Fatal(err)
	}
	s.bus.Send("m", []byte("not json \xff"))
	if f := read(t, env); f.Channel != "m" || !strings.HasPrefix(string(f.Data), `"not json`) {
		t.Fatalf("envelope %+v", f)
	}
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	kind, p, err := raw.ReadMessage()
	if err != nil || kind != websocket.BinaryMessage || string(p) != "not json \xff" {
		t.Fatalf("raw frame %d %q %v", kind, p, err)
	}
}

func TestBadQueryRefusedBeforeUpgrade(t *testing.T) {
	s := startPush(t, engine.Config{}, push.Config{MaxChannels: 2, NoWildcards: true}, true)
	for _, q := range []string{"channel=a..b", "channel=a.*", "channel=a&channel=b&channel=c", "format=xml", "channel=%zz"} {
		_, resp, err := s.dial(t, q)
		if err == nil || resp == nil || resp.StatusCode != 400 {
			t.Errorf("%s: dial = %v, %v; want 400", q, resp, err)
		}
	}
	if now, made := s.bus.Subscriptions(); now != 0 || made != 0 {
		t.Fatalf("refused upgrades left %d subscriptions (%d made)", now, made)
	}
}
