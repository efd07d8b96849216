package engine

import (
	"sync"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"

	"github.com/herald-ws/herald/codec"
)

// loop is the state Herald keeps for one gnet event loop. Only that loop's
// goroutine touches it, so nothing here is locked.
type loop struct {
	s     *Server
	el    gnet.EventLoop
	index int    // position in Server.loops, and bit in channel.loops
	now   uint32 // Server.clock as of the last sweep
	// partial holds the readers of messages that span callbacks, which few
	// connections have at any time.
	partial map[*conn]*reader

	// Every connection is on one of two lists; conn.slot is its index there.
	// The few handshaking and closing ones are checked on every sweep; the
	// many open ones a slice at a time, from cursor on (see sweep).
	pending []*conn
	conns   []*conn
	cursor  int
	drain   drainState

	// Slow-consumer log lines are limited to one a second.
	slowLogged   uint32 // Server.clock of the last line; 0 for none yet
	slowUnlogged int    // cuts since then without a line

	// The loop's share of MaxAcceptRate, as a token bucket.
	tokens   float64
	tokensAt int64
	topics   map[string]*topic // subscribers on this loop, by channel pattern
	stats    loopStats

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
		s:       s,
		el:      el,
		index:   index,
		topics:  make(map[string]*topic),
		now:     s.clock(),
		partial: make(map[*conn]*reader),
		frame:   make([]byte, 0, 256),
		iov:     make([][]byte, 0, 8),
	}
	l.sweepTask = gnet.RunnableFunc(l.sweep)
	l.flushTask = gnet.RunnableFunc(l.flush)
	return l
}

// loopStats are a loop's counters. Only the loop adds to them, so the
// atomics are never contended; they are atomic so that a scrape from
// another goroutine can read them.
type loopStats struct {
	open              atomic.Int64 // TCP connections, in any state
	accepted          atomic.Uint64
	deliveries        atomic.Uint64
	bytesOut          atomic.Uint64
	slowConsumers     atomic.Uint64
	pings             atomic.Uint64
	reaped            atomic.Uint64
	handshakeTimeouts atomic.Uint64
	refused           [numRefusals]atomic.Uint64
	latency           histogram
}
