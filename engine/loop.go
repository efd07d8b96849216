package engine

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/herald-ws/herald/codec"
)

// loop is the state Herald keeps for one gnet event loop. Only that loop's
// goroutine touches it, so nothing here is locked.
type loop struct {
	s      *Server
	el     gnet.EventLoop
	index  int               // position in Server.loops, and bit in channel.loops
	conns  []*conn           // every connection on the loop; conn.slot is its index
	topics map[string]*topic // subscribers on this loop, by channel pattern
	stats  loopStats

	// The inbox is the one place other goroutines reach into a loop: the
	// bus appends deliveries, and the loop takes the whole batch at once.
	inboxMu      sync.Mutex
	inbox        []*delivery
	flushPending bool
	spare        []*delivery // the previous batch's slice, reused
	groups       []group
	joined       []byte // a topic's frames of one batch, back to back
	joinedRaw    []byte
	flushTask    gnet.Runnable

	// Scratch space reused by every connection on the loop: a frame being
	// written, a decoder for messages that fit in one callback, a parsed
	// request head. gnet copies what it cannot send at once, so a buffer is
	// free again as soon as the write returns.
	frame   []byte
	reply   []byte
	iov     [][]byte
	decoder codec.Decoder
	request codec.Request

	sweepTask gnet.Runnable
}

func newLoop(s *Server, el gnet.EventLoop, index int) *loop {
	l := &loop{
		s:      s,
		el:     el,
		index:  index,
		topics: make(map[string]*topic),
		frame:  make([]byte, 0, 256),
		iov:    make([][]byte, 0, 8),
	}
	l.sweepTask = gnet.RunnableFunc(l.sweep)
	l.flushTask = gnet.RunnableFunc(l.flush)
	return l
}

// loopStats are a loop's counters. Only the loop adds to them, so the
// atomics are never contended; they are atomic so that a scrape from
// another goroutine can read them.
type loopStats struct {
	open          atomic.Int64
	accepted      atomic.Uint64
	deliveries    atomic.Uint64
	slowConsumers atomic.Uint64
}

func (l *loop) add(c *conn) {
	c.slot = int32(len(l.conns))
	l.conns = append(l.conns, c)
	l.stats.open.Add(1)
	l.stats.accepted.Add(1)
}

func (l *loop) remove(c *conn) {
	last := len(l.conns) - 1
	moved := l.conns[last]
	l.conns[c.slot] = moved
	moved.slot = c.slot
	l.conns[last] = nil
	l.conns = l.conns[:last]
	l.stats.open.Add(-1)
}

// sweep closes the loop's connections whose deadline has passed: those that
// never finished their HTTP request, and those that linger after a close.
// A lingering connection whose last bytes have gone out since is
// half-closed, so that its peer hangs up. It walks backwards because closing
// a connection moves the last one into its slot.
func (l *loop) sweep(context.Context) error {
	now := time.Now().UnixNano()
	for i := len(l.conns) - 1; i >= 0; i-- {
		if i >= len(l.conns) {
			continue // a close removed more than one
		}
		c := l.conns[i]
		if c.state == stateClosing {
			c.shutdownWhenSent()
		}
		if c.deadline != 0 && now >= c.deadline {
			if c.state == stateHandshake {
				l.s.log.Debug("handshake timeout", "remote", c.gc.RemoteAddr())
			}
			_ = l.el.Close(c.gc)
		}
	}
	return nil
}
