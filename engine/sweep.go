package engine

import (
	"context"
	"time"

	"github.com/gobwas/ws"
)

// track puts c on the list its state belongs to.
func (l *Loop) track(c *Conn) {
	list := &l.pending
	if c.state == stateOpen {
		list = &l.conns
	}
	c.slot = int32(len(*list))
	*list = append(*list, c)
}

// untrack takes c off its list, moving the list's last connection into its
// place.
func (l *Loop) untrack(c *Conn) {
	list := &l.pending
	if c.state == stateOpen {
		list = &l.conns
	}
	last := len(*list) - 1
	moved := (*list)[last]
	(*list)[c.slot] = moved
	moved.slot = c.slot
	(*list)[last] = nil
	*list = (*list)[:last]
}

// setState moves c to a new state, and to the list that state belongs to.
func (c *Conn) setState(state uint8) {
	c.loop.untrack(c)
	c.state = state
	c.loop.track(c)
}

// alive records that the peer sent something: its next ping is a whole
// interval away. The loop's clock is at most one sweep old, which is far
// finer than ping intervals.
func (c *Conn) alive() {
	c.deadline = c.loop.now + millis(c.loop.s.cfg.PingInterval)
	c.pinged = false
}

// The engine's clock counts milliseconds since the server was made, in 32
// bits so that a deadline costs each connection 4 bytes. It wraps after 49
// days; due compares across the wrap, which holds for any deadline less
// than 24 days away.
func (s *Server) clock() uint32 { return uint32(time.Since(s.epoch) / time.Millisecond) }

func millis(d time.Duration) uint32 { return uint32(d / time.Millisecond) }

// due reports whether deadline has come at now.
func due(now, deadline uint32) bool { return int32(now-deadline) >= 0 }

// sweep is the loop's periodic work, run on the loop itself. It enforces
// every pending connection's deadline (handshake timeout, close linger),
// and visits a share of the open ones: those silent for a ping interval get
// a ping, and those still silent a pong timeout later are closed. The share
// is sized so that every open connection is visited once per sweep period,
// which spreads pings over time however many connections arrived at once
// and keeps each sweep's cost small.
func (l *Loop) sweep(context.Context) error {
	l.now = l.s.clock()
	now := l.now
	// Backwards, because closing a connection moves the last one into its
	// slot.
	for i := len(l.pending) - 1; i >= 0; i-- {
		if i >= len(l.pending) {
			continue
		}
		c := l.pending[i]
		if c.state == stateClosing {
			c.shutdownWhenSent()
		}
		if !due(now, c.deadline) {
			continue
		}
		switch c.state {
		case stateAccepting:
			// The endpoint could not get ready (say, a subscription the bus
			// has not confirmed): tell the client to come back.
			l.s.log.Debug("upgrade not accepted in time", "remote", c.gc.RemoteAddr())
			c.Refuse(errAcceptTimeout)
		case stateHandshake:
			l.stats.handshakeTimeouts.Add(1)
			l.s.log.Debug("handshake timeout", "remote", c.gc.RemoteAddr())
			_ = l.el.Close(c.gc)
		default:
			_ = l.el.Close(c.gc)
		}
	}
	l.sweepOpen(now)
	for _, t := range l.s.tickers {
		t.Tick(l)
	}
	if l.s.draining.Load() {
		l.drainStep(time.Now().UnixNano())
	}
	return nil
}

// sweepOpen visits the next share of open connections.
func (l *Loop) sweepOpen(now uint32) {
	n := len(l.conns)
	if n == 0 {
		return
	}
	share := (n*int(l.s.sweepEvery) + int(l.s.sweepPeriod) - 1) / int(l.s.sweepPeriod)
	for visited := 0; visited < share && len(l.conns) > 0; visited++ {
		if l.cursor >= len(l.conns) {
			l.cursor = 0
		}
		c := l.conns[l.cursor]
		if !due(now, c.deadline) {
			l.cursor++
			continue
		}
		if c.Stream() {
			// A stream's client sends nothing to answer with: its liveness
			// is the heartbeat's write (the outbound cap, TCP_USER_TIMEOUT).
			c.deadline = now + millis(l.s.cfg.PingInterval)
			l.stats.pings.Add(1)
			c.Send(heartbeat)
		} else if c.pinged {
			l.stats.reaped.Add(1)
			l.s.log.Debug("closing unresponsive connection", "remote", c.gc.RemoteAddr())
			_ = l.el.Close(c.gc) // a dead peer reads no close frame
		} else {
			c.pinged = true
			c.deadline = now + millis(l.s.cfg.PongTimeout)
			l.stats.pings.Add(1)
			c.SendFrame(ws.OpPing, nil)
		}
		// A close, or a failed ping write, moved another connection into
		// this slot: visit it next rather than skip it.
		if l.cursor < len(l.conns) && l.conns[l.cursor] == c {
			l.cursor++
		}
	}
}

// drainState is a loop's progress through a graceful drain.
type drainState struct {
	started bool
	total   int // open connections when the drain reached the loop
	closed  int
}

// drainStep closes the share of the loop's open connections that the
// elapsed part of the drain calls for, so that closes, and the reconnects
// they cause elsewhere, are spread evenly over the drain timeout.
func (l *Loop) drainStep(now int64) {
	d := &l.drain
	if !d.started {
		d.started, d.total = true, len(l.conns)
	}
	start, spread := l.s.drainStart.Load(), l.s.drainSpread.Load()
	want := d.total
	if elapsed := now - start; spread > 0 && elapsed < spread {
		want = int((int64(d.total)*elapsed + spread - 1) / spread)
	}
	for d.closed < want && len(l.conns) > 0 {
		d.closed++
		l.conns[len(l.conns)-1].close(ws.StatusGoingAway, "server shutting down")
	}
}

// Drain stops taking new WebSocket connections (upgrades are answered 503
// with Retry-After) and closes the open ones with 1001 "going away",
// spread evenly over spread, so that clients do not all come back in the
// same second. It returns once every connection has closed, or CloseTimeout
// after the last close frame went out (a client that never answers is left
// for Stop), or with ctx's error: give it a deadline to bound the whole
// shutdown.
func (s *Server) Drain(ctx context.Context, spread time.Duration) error {
	s.drainSpread.Store(int64(spread))
	s.drainStart.Store(time.Now().UnixNano())
	s.draining.Store(true)
	s.log.Info("draining", "connections", s.Stats().Upgraded, "spread", spread)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for s.Stats().Upgraded > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	// The last closes were only just sent: give those clients the time
	// every other one had to answer and hang up.
	grace := time.NewTimer(s.cfg.CloseTimeout)
	defer grace.Stop()
	for s.Stats().Open > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-grace.C:
			return nil
		case <-tick.C:
		}
	}
	return nil
}

// Draining reports whether Drain has been called.
func (s *Server) Draining() bool { return s.draining.Load() }
