package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/herald-ws/herald/codec"
)

// fakeServer is a WebSocket server that misbehaves on purpose, so that
// the client's accounting can be checked against known answers: it
// refuses the first connections with 503, pings every connection and
// checks the masked pong, sends each an {"op":"error"} message, closes
// one with 1008, and delivers published messages with one duplicated,
// two swapped and one lost.
type fakeServer struct {
	t       *testing.T
	ln      net.Listener
	refuse  atomic.Int32 // 503s still to send
	opened  atomic.Int32
	pongs   atomic.Int32
	mu      sync.Mutex
	conns   []*fakeConn
	held    []byte // message 5, sent after 6
	wg      sync.WaitGroup
	badPong atomic.Value
}

type fakeConn struct {
	mu sync.Mutex
	c  net.Conn
}

func (f *fakeConn) send(op ws.OpCode, p []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, _ = f.c.Write(codec.AppendFrame(nil, op, p))
}

func startFakeServer(t *testing.T, refuse int) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{t: t, ln: ln}
	f.refuse.Store(int32(refuse))
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() { defer f.wg.Done(); f.serve(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeServer) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	req, err := http.ReadRequest(r)
	if err != nil {
		return
	}
	if req.URL.Path != "/ws" { // the bench looking for /metrics
		io.WriteString(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
		return
	}
	if f.refuse.Add(-1) >= 0 {
		io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return
	}
	if !strings.HasPrefix(req.URL.Query().Get("channel"), "fake.") {
		io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
		return
	}
	accept := codec.AppendAcceptKey(nil, []byte(req.Header.Get("Sec-WebSocket-Key")))
	io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+string(accept)+"\r\n\r\n")
	fc := &fakeConn{c: c}
	first := f.opened.Add(1) == 1
	fc.send(ws.OpText, []byte(`{"op":"error","code":"test","message":"not a bench payload"}`))
	fc.send(ws.OpPing, []byte("are you there"))
	for {
		frame, err := ws.ReadFrame(r)
		if err != nil {
			return
		}
		if !frame.Header.Masked {
			f.badPong.Store("unmasked client frame")
			return
		}
		frame = ws.UnmaskFrame(frame)
		if frame.Header.OpCode == ws.OpPong {
			if string(frame.Payload) != "are you there" {
				f.badPong.Store("pong payload " + string(frame.Payload))
			}
			f.pongs.Add(1)
			if first {
				fc.send(ws.OpClose, []byte("\x03\xf0slow consumer"))
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, fc)
			f.mu.Unlock()
		}
	}
}

// publish delivers a message to every connection, except that message 3
// goes twice, 5 goes after 6, and 8 never.
func (f *fakeServer) publish(_ string, data []byte) error {
	seq, _, ok := ParsePayload(data)
	if !ok {
		return errors.New("not a payload")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	msg := append([]byte(`{"channel":"fake","data":`), data...)
	msg = append(msg, '}')
	times := 1
	switch seq {
	case 3:
		times = 2
	case 5:
		f.held = msg
		return nil
	case 8:
		return nil
	}
	for _, c := range f.conns {
		for range times {
			c.send(ws.OpText, msg)
		}
		if seq == 6 {
			c.send(ws.OpText, f.held)
		}
	}
	return nil
}

func TestShardAccountingAgainstAFakeServer(t *testing.T) {
	f := startFakeServer(t, 5)
	res, err := Run(context.Background(), Config{
		Scenario:         Fanout,
		URL:              "ws://" + f.ln.Addr().String() + "/ws",
		Conns:            20,
		ChannelPrefix:    "fake",
		Messages:         10,
		Duration:         5 * time.Second,
		Timeout:          20 * time.Second,
		Loops:            1,
		Dialers:          4,
		HandshakeTimeout: 2 * time.Second,
		Publish:          f.publish,
	})
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	res.WriteTable(&table)
	t.Logf("\n%s", table.String())
	if bad := f.badPong.Load(); bad != nil {
		t.Fatal(bad)
	}
	if res.TimedOut {
		t.Fatalf("timed out: %v", res.Notes)
	}
	c := res.Connect
	if c.Upgraded != 20 || c.Attempts != 25 || c.Failures["http 503"] != 5 || f.pongs.Load() != 20 {
		t.Errorf("connect %+v, pongs %d", c, f.pongs.Load())
	}
	if res.ClosedByServer["close 1008"] != 1 || res.OtherMessages != 20 {
		t.Errorf("closed %v, other messages %d", res.ClosedByServer, res.OtherMessages)
	}
	// 19 connections stayed: each got 9 distinct messages, one twice and
	// one late. The one closed early missed all 10.
	fo := res.Fanout
	if fo.Expected != 200 || fo.Delivered != 171 || fo.Missing != 29 || fo.Duplicated != 19 || fo.OutOfOrder != 19 {
		t.Errorf("fanout %+v", fo)
	}
	if fo.Latency.Count != 171 {
		t.Errorf("latency samples %d", fo.Latency.Count)
	}
}
