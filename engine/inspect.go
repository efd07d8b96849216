package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// What an operator's view of the connections is read with. None of it is
// kept up to date on the delivery path: a question is posted to every loop,
// which walks its own connections when it gets to it, so the figures cost
// nothing until someone asks and are exact as of that walk.

// OnEveryLoop runs task on each event loop that has had a connection, on
// that loop, and waits until every one has run it or ctx ends. task may
// read and change the loop's connections as any callback may. On an error
// (ctx ended, the server stopping) tasks already queued still run later:
// task must write only to what the caller reads after a nil return.
func (s *Server) OnEveryLoop(ctx context.Context, task func(l *Loop)) error {
	loops := *s.loops.Load()
	done := make(chan struct{}, len(loops))
	for _, l := range loops {
		err := l.Execute(gnet.RunnableFunc(func(context.Context) error {
			task(l)
			done <- struct{}{}
			return nil
		}))
		if err != nil {
			return fmt.Errorf("engine: loop %d: %w", l.index, err)
		}
	}
	for range loops {
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("engine: waiting for the event loops: %w", ctx.Err())
		case <-s.stopped:
			return errors.New("engine: server stopped")
		}
	}
	return nil
}

// EachOpen calls visit for every open WebSocket connection of the loop.
// Call it on the loop only (in a task of OnEveryLoop, say); visit must not
// close connections.
func (l *Loop) EachOpen(visit func(c *Conn)) {
	for _, c := range l.conns {
		visit(c)
	}
}

// Unsent is how many bytes are queued for the connection that the kernel
// has not taken yet: how far behind its reader is. On its loop only.
func (c *Conn) Unsent() int {
	if c.gc == nil {
		return 0
	}
	return c.gc.OutboundBuffered()
}

// Age is how long the WebSocket has been open, to a tenth of a second; 0
// before it opens.
func (c *Conn) Age() time.Duration {
	if c.state < stateOpen {
		return 0
	}
	return time.Duration(c.loop.s.tenths()-c.opened) * 100 * time.Millisecond
}

// tenths is the time since the server was made, in tenths of a second.
func (s *Server) tenths() uint32 { return uint32(time.Since(s.epoch) / (100 * time.Millisecond)) }

// ConnOrder is what TopConns ranks connections by.
type ConnOrder uint8

const (
	// ByUnsent puts the connections furthest behind first: most bytes
	// queued and not yet taken by the kernel.
	ByUnsent ConnOrder = iota
	// ByAge puts the longest-open connections first.
	ByAge
)

// ConnView is what the engine knows of one connection, for an operator.
type ConnView struct {
	Remote string        // the peer's address
	Age    time.Duration // how long the WebSocket has been open
	Unsent int           // bytes queued and not yet sent
}

// TopConns returns, for the n connections of s first in order, what
// describe makes of each, first first. Each loop walks its connections
// once, keeping its own n best in a heap (nothing is allocated per
// connection beyond those n), and calls describe, on that loop, for those
// alone; the loops' lists are then merged. describe runs on the
// connection's loop, so it may read the endpoint's state of c.
func TopConns[T any](ctx context.Context, s *Server, order ConnOrder, n int, describe func(c *Conn, v ConnView) T) ([]T, error) {
	if n <= 0 {
		return nil, nil
	}
	type ranked struct {
		key  int64
		item T
	}
	loops := *s.loops.Load()
	// One slot per loop, each written by its own loop only.
	results := make([][]ranked, MaxLoops)
	err := s.OnEveryLoop(ctx, func(l *Loop) {
		now := l.s.tenths()
		key := func(c *Conn) int64 {
			if order == ByAge {
				return int64(now - c.opened)
			}
			return int64(c.Unsent())
		}
		top := newTopHeap(min(n, len(l.conns)))
		l.EachOpen(func(c *Conn) { top.offer(c, key(c)) })
		out := make([]ranked, 0, len(top.items))
		for _, e := range top.items {
			c := e.conn
			remote := ""
			if a := c.RemoteAddr(); a != nil {
				remote = a.String()
			}
			out = append(out, ranked{e.key, describe(c, ConnView{Remote: remote, Age: c.Age(), Unsent: c.Unsent()})})
		}
		results[l.index] = out
	})
	if err != nil {
		return nil, err
	}
	var all []ranked
	for _, l := range loops {
		all = append(all, results[l.index]...)
	}
	slices.SortStableFunc(all, func(a, b ranked) int { return cmp.Compare(b.key, a.key) })
	items := make([]T, 0, min(n, len(all)))
	for _, r := range all[:min(n, len(all))] {
		items = append(items, r.item)
	}
	return items, nil
}

// topHeap keeps the n connections with the largest keys seen: a min-heap,
// so that a connection below the smallest kept costs one comparison.
type topHeap struct {
	items []topEntry
	n     int
}

type topEntry struct {
	conn *Conn
	key  int64
}

func newTopHeap(n int) *topHeap { return &topHeap{items: make([]topEntry, 0, n), n: n} }

func (h *topHeap) offer(c *Conn, key int64) {
	if h.n == 0 {
		return
	}
	if len(h.items) < h.n {
		h.items = append(h.items, topEntry{c, key})
		h.up(len(h.items) - 1)
		return
	}
	if key <= h.items[0].key {
		return
	}
	h.items[0] = topEntry{c, key}
	h.down(0)
}

func (h *topHeap) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if h.items[parent].key <= h.items[i].key {
			return
		}
		h.items[parent], h.items[i] = h.items[i], h.items[parent]
		i = parent
	}
}

func (h *topHeap) down(i int) {
	for {
		least, l, r := i, 2*i+1, 2*i+2
		if l < len(h.items) && h.items[l].key < h.items[least].key {
			least = l
		}
		if r < len(h.items) && h.items[r].key < h.items[least].key {
			least = r
		}
		if least == i {
			return
		}
		h.items[least], h.items[i] = h.items[i], h.items[least]
		i = least
	}
}
