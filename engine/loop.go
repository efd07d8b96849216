package engine

import (
	"context"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/codec/deflate"
)

// Loop is the state Herald keeps for one gnet event loop. Only that loop's
// goroutine touches it, so nothing here is locked; other goroutines reach
// a loop only through Execute.
type Loop struct {
	s     *Server
	el    gnet.EventLoop
	index int    // position in Server.loops
	now   uint32 // Server.clock as of the last sweep
	// partial holds the readers of messages that span callbacks, which few
	// connections have at any time.
	partial map[*Conn]*reader
	// accepting holds the 101 answers of upgrades an endpoint has not
	// accepted yet, which few connections have at any time.
	accepting map[*Conn]*bytebufferpool.ByteBuffer
	// skipping holds, for closing connections in the middle of a frame
	// they sent after Herald's close frame, how many bytes of it are left
	// to drop.
	skipping map[*Conn]int64

	// Every connection is on one of two lists; Conn.slot is its index
	// there. The few handshaking, accepting and closing ones are checked on
	// every sweep; the many open ones a slice at a time, from cursor on (see
	// sweep).
	pending []*Conn
	conns   []*Conn
	cursor  int
	drain   drainState

	// Slow-consumer log lines are limited to one a second.
	slowLogged   uint32 // Server.clock of the last line; 0 for none yet
	slowUnlogged int    // cuts since then without a line

	// The loop's share of MaxAcceptRate, as a token bucket.
	tokens   float64
	tokensAt int64
	stats    loopStats

	// Scratch space reused by every connection on the loop: a frame being
	// written, a decoder for messages that fit in one callback, a parsed
	// request head. gnet copies what it cannot send at once, so a buffer is
	// free again as soon as the write returns.
	frame   []byte
	iov     [][]byte
	decoder codec.Decoder
	request codec.Request

	// permessage-deflate state, made on first use: compressors by window
	// bits (index bits-8) and one inflater, shared by the loop's sockets
	// because no message's state outlives its callback.
	compressors [8]*deflate.Compressor
	inflater    *deflate.Inflater

	sweepTask gnet.Runnable
}

// compressor returns the loop's compressor for a window of bits.
func (l *Loop) compressor(bits uint8) *deflate.Compressor {
	z := l.compressors[bits-8]
	if z == nil {
		// The level was checked by New; a window below 15 has one level.
		z, _ = deflate.NewCompressor(l.s.cfg.CompressionLevel, bits)
		l.compressors[bits-8] = z
	}
	return z
}

func newLoop(s *Server, el gnet.EventLoop, index int) *Loop {
	l := &Loop{
		s:         s,
		el:        el,
		index:     index,
		now:       s.clock(),
		partial:   make(map[*Conn]*reader),
		accepting: make(map[*Conn]*bytebufferpool.ByteBuffer),
		skipping:  make(map[*Conn]int64),
		frame:     make([]byte, 0, 256),
		iov:       make([][]byte, 0, 8),
	}
	l.sweepTask = gnet.RunnableFunc(l.sweep)
	return l
}

// Index is the loop's number, from 0 to the server's loop count less one:
// stable for the server's life, so endpoints may index their own per-loop
// state by it.
func (l *Loop) Index() int { return l.index }

// Execute runs task on the loop, from any goroutine, after the callbacks
// and tasks already queued there. It is how work done elsewhere (a message
// from a bus, the answer to a subscription) reaches the loop's connections.
// It fails only once the server is stopping.
func (l *Loop) Execute(task gnet.Runnable) error {
	return l.el.Execute(context.Background(), task)
}

// loopStats are a loop's counters. Only the loop adds to them, so the
// atomics are never contended; they are atomic so that a scrape from
// another goroutine can read them.
type loopStats struct {
	open              atomic.Int64 // TCP connections, in any state
	accepted          atomic.Uint64
	slowConsumers     atomic.Uint64
	pings             atomic.Uint64
	reaped            atomic.Uint64
	handshakeTimeouts atomic.Uint64
	streams           atomic.Int64 // event streams admitted and not closed
	streamsAccepted   atomic.Uint64
	inflated          atomic.Uint64
	refused           [numRefusals]atomic.Uint64
}
