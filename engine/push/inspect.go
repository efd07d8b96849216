package push

import (
	"cmp"
	"context"
	"slices"

	"github.com/herald-ws/herald/engine"
)

// What the protocol adds to an operator's view of the engine's
// connections (engine.TopConns) and its own channels. Both are read on the
// loops when asked, never kept up to date on the delivery path.

// ConnDescription is what the protocol knows of one socket.
type ConnDescription struct {
	Client   string   // the opaque id of its connected frame and its publishes
	User     string   // its token's subject; "" when anonymous
	Channels []string // the channels it follows, pending ones included
	Raw      bool     // bare payloads instead of envelopes
	SSE      bool     // an event stream (GET /sse), not a WebSocket
}

// Describe says who c is and what it follows. Call it on c's loop only, as
// engine.TopConns calls its describe function.
func (h *Hub) Describe(c *engine.Conn) ConnDescription {
	d := ConnDescription{Client: h.clientID(c), Raw: isRaw(c), SSE: c.Stream()}
	if id := identityOf(c); id != nil {
		d.User = id.user
	}
	if n := subCount(c); n > 0 {
		d.Channels = make([]string, 0, n)
		for i := range n {
			d.Channels = append(d.Channels, subAt(c, i).topic.pattern())
		}
	}
	return d
}

// ChannelCount is one channel and its sockets in this process.
type ChannelCount struct {
	Channel     string
	Subscribers int
}

// TopChannels returns the n channels with the most subscribed sockets in
// the process, most first (ties by name), and how many channels there are
// in all. Each loop counts its own topics on the loop; the counts are
// summed here. It costs one entry per channel a loop follows, for the
// length of the call.
func (h *Hub) TopChannels(ctx context.Context, srv *engine.Server, n int) (top []ChannelCount, total int, err error) {
	type count struct {
		ch *hubChannel
		n  int
	}
	results := make([][]count, engine.MaxLoops)
	err = srv.OnEveryLoop(ctx, func(el *engine.Loop) {
		l := h.loops[el.Index()].Load()
		if l == nil {
			return // no push socket was ever on this loop
		}
		out := make([]count, 0, len(l.topic))
		for _, t := range l.topic {
			if len(t.members) > 0 {
				out = append(out, count{t.channel, len(t.members)})
			}
		}
		results[el.Index()] = out
	})
	if err != nil {
		return nil, 0, err
	}
	sums := make(map[*hubChannel]int)
	for _, r := range results {
		for _, c := range r {
			sums[c.ch] += c.n
		}
	}
	all := make([]ChannelCount, 0, len(sums))
	for ch, n := range sums {
		all = append(all, ChannelCount{Channel: ch.pattern, Subscribers: n})
	}
	slices.SortFunc(all, func(a, b ChannelCount) int {
		if c := cmp.Compare(b.Subscribers, a.Subscribers); c != 0 {
			return c
		}
		return cmp.Compare(a.Channel, b.Channel)
	})
	return all[:min(n, len(all))], len(all), nil
}
