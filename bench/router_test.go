package bench

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/gobwas/ws"

	"github.com/herald-ws/herald/codec"
)

// router is a small stand-in for Herald: it upgrades every connection to
// the channel its query names and delivers what is published on a
// channel to that channel's sockets only, in the JSON envelope. A fault
// function may change what one channel's sockets get of one message.
type router struct {
	t     *testing.T
	ln    net.Listener
	fault func(channel string, seq uint64) fault
	wg    sync.WaitGroup

	mu    sync.Mutex
	subs  map[string][]net.Conn
	held  map[string][]byte // a message held back, sent after the next one
	conns []net.Conn
}

// What a fault does to one channel's copy of a message.
type fault int

const (
	deliver fault = iota
	lose          // never sent
	twice         // sent twice
	hold          // sent after the channel's next message
)

func startRouter(t *testing.T, f func(channel string, seq uint64) fault) *router {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &router{t: t, ln: ln, fault: f, subs: map[string][]net.Conn{}, held: map[string][]byte{}}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() { defer r.wg.Done(); r.serve(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for _, c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *router) url() string { return "ws://" + r.ln.Addr().String() + "/ws" }

func (r *router) serve(c net.Conn) {
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		c.Close()
		return
	}
	channel := req.URL.Query().Get("channel")
	if req.URL.Path != "/ws" || channel == "" {
		_, _ = c.Write([]byte("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
		c.Close()
		return
	}
	accept := codec.AppendAcceptKey(nil, []byte(req.Header.Get("Sec-WebSocket-Key")))
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + string(accept) + "\r\n\r\n")); err != nil {
		c.Close()
		return
	}
	r.subs[channel] = append(r.subs[channel], c)
	r.conns = append(r.conns, c)
}

// publish is the bench's Publish: subject is the channel.
func (r *router) publish(subject string, data []byte) error {
	seq, _, ok := ParsePayload(data)
	if !ok {
		r.t.Errorf("published something else than a payload: %q", data)
		return nil
	}
	body := append([]byte(`{"channel":"`+subject+`","data":`), data...)
	frame := codec.AppendFrame(nil, ws.OpText, append(body, '}'))
	f := deliver
	if seq > 0 && r.fault != nil {
		f = r.fault(subject, seq)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []byte
	switch f {
	case lose:
		return nil
	case hold:
		r.held[subject] = frame
		return nil
	case twice:
		out = append(frame, frame...)
	default:
		out = frame
	}
	if h := r.held[subject]; h != nil && seq > 0 {
		out = append(out, h...)
		delete(r.held, subject)
	}
	for _, c := range r.subs[subject] {
		_, _ = c.Write(out)
	}
	return nil
}

// channelIndex is K of a bench channel name PREFIX.RUN.K.
func channelIndex(name string) string { return name[strings.LastIndexByte(name, '.')+1:] }
