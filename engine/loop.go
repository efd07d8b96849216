package engine

import (
	"context"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/herald-ws/herald/codec"
)

// loop is the state Herald keeps for one gnet event loop. Only that loop's
// goroutine touches it, so nothing here is locked.
type loop struct {
	s     *Server
	el    gnet.EventLoop
	conns []*conn // every connection on the loop; conn.slot is its index

	// Scratch space reused by every connection on the loop: a frame being
	// written, a decoder for messages that fit in one callback, a parsed
	// request head. gnet copies what it cannot send at once, so a buffer is
	// free again as soon as the write returns.
	frame   []byte
	iov     [][]byte
	decoder codec.Decoder
	request codec.Request

	sweepTask gnet.Runnable
}

func newLoop(s *Server, el gnet.EventLoop) *loop {
	l := &loop{s: s, el: el, frame: make([]byte, 0, 256), iov: make([][]byte, 0, 8)}
	l.sweepTask = gnet.RunnableFunc(l.sweep)
	return l
}

func (l *loop) add(c *conn) {
	c.slot = int32(len(l.conns))
	l.conns = append(l.conns, c)
}

func (l *loop) remove(c *conn) {
	last := len(l.conns) - 1
	moved := l.conns[last]
	l.conns[c.slot] = moved
	moved.slot = c.slot
	l.conns[last] = nil
	l.conns = l.conns[:last]
}

// sweep closes the loop's connections whose deadline has passed: those that
// never finished their HTTP request, and those that linger after a close.
// It walks backwards because closing a connection moves the last one into
// its slot.
func (l *loop) sweep(context.Context) error {
	now := time.Now().UnixNano()
	for i := len(l.conns) - 1; i >= 0; i-- {
		if i >= len(l.conns) {
			continue // a close removed more than one
		}
		c := l.conns[i]
		if c.deadline != 0 && now >= c.deadline {
			if c.state == stateHandshake {
				l.s.log.Debug("handshake timeout", "remote", c.gc.RemoteAddr())
			}
			_ = l.el.Close(c.gc)
		}
	}
	return nil
}
