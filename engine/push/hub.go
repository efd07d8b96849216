// Package push is Herald's push protocol, spoken over the engine's
// WebSocket connections at Path: clients subscribe to channels, in the
// upgrade's query or in band, and every message the bus delivers on a
// channel is encoded once and written to every socket subscribed to it,
// loop by loop, several messages to a socket in one write when they queue
// up.
//
// The protocol has three layers of state, each with one owner:
//   - the Hub's channels, process-wide: which loops want which channel, and
//     whether the bus has confirmed its subscription (guarded by Hub.mu,
//     which loops take only when a channel appears on or leaves them, and
//     the bus's goroutine takes once per message);
//   - a loop's topics: which of its sockets want which channel (touched
//     only on that loop);
//   - a socket's session: its subscriptions and format.
//
// Nothing here calls the bus in a way that can block: Bus.Subscribe only
// queues the request, and the answer comes back through Hub.Live, in order
// with the messages, and reaches the loops through their inboxes. A client
// hears "subscribed" (the 101 for channels in the URL, the ack in band)
// only once the bus has confirmed the subscription, and from then on gets
// every message published on the channel exactly once, overlapping
// patterns included.
package push

import (
	"log/slog"
	"math/bits"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/valyala/bytebufferpool"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/engine"
)

// Path is where the push endpoint is served in the herald binary.
const Path = "/ws"

// DefaultMaxChannels is Config.MaxChannels's default.
const DefaultMaxChannels = 128

// Bus is the message bus behind the hub (NATS, in the herald binary). Both
// methods must return at once, without waiting for the network: they are
// called on event loops. The bus answers every Subscribe, exactly once, by
// calling Hub.Live with its id, and hands over messages with Hub.Message;
// it calls both from one goroutine, in the order its server sent them, so
// that a subscription's Live comes after every message it carried from
// before the server had it.
type Bus interface {
	Subscribe(id uint64, pattern string)
	Unsubscribe(id uint64)
}

// Config configures a Hub. Only Bus is required.
type Config struct {
	Bus Bus
	// MaxChannels caps the channels one connection may subscribe to.
	// Default DefaultMaxChannels.
	MaxChannels int
	// NoWildcards refuses channels with '*' or '>'.
	NoWildcards bool
	// Now is the clock delivery latency is measured with; default
	// time.Now.
	Now func() time.Time
	// Logger receives the hub's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Hub is the push protocol's process-wide state. Its Endpoint serves the
// sockets; the bus feeds it through Message and Live.
type Hub struct {
	bus         Bus
	maxChannels int
	wildcards   bool
	now         func() time.Time
	log         *slog.Logger

	mu        sync.RWMutex
	byPattern map[string]*hubChannel
	byID      map[uint64]*hubChannel
	lastID    uint64

	// loops[i] is loop i's state, made by that loop on its first socket.
	loops [engine.MaxLoops]atomic.Pointer[loopState]
	free  sync.Pool // *delivery
}

// hubChannel is the process-wide state of one subscribed pattern.
type hubChannel struct {
	id      uint64
	pattern string
	loops   uint64       // bit i: loop i has a topic on the channel
	waiting uint64       // loops not yet told the channel is live
	live    bool         // the bus confirmed the subscription
	raw     atomic.Int32 // subscribers that want bare payloads, over all loops
}

// New returns a Hub on cfg.Bus.
func New(cfg Config) *Hub {
	h := &Hub{
		bus:         cfg.Bus,
		maxChannels: cfg.MaxChannels,
		wildcards:   !cfg.NoWildcards,
		now:         cfg.Now,
		log:         cfg.Logger,
		byPattern:   make(map[string]*hubChannel),
		byID:        make(map[uint64]*hubChannel),
	}
	if h.maxChannels <= 0 {
		h.maxChannels = DefaultMaxChannels
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	h.free.New = func() any { return new(delivery) }
	return h
}

// Endpoint is the engine endpoint that serves the protocol.
func (h *Hub) Endpoint() engine.Endpoint { return endpoint{h} }

// join records that loop l has a new topic on pattern, subscribing the
// process to it if no loop had one. If the channel is live already, l
// hears so through its inbox, after every message it was not sent.
func (h *Hub) join(l *loopState, pattern string) *hubChannel {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := h.byPattern[pattern]
	if ch == nil {
		h.lastID++
		ch = &hubChannel{id: h.lastID, pattern: pattern}
		h.byPattern[pattern] = ch
		h.byID[ch.id] = ch
		h.bus.Subscribe(ch.id, pattern)
	}
	ch.loops |= l.bit
	if ch.live {
		l.post(event{channel: ch})
	} else {
		ch.waiting |= l.bit
	}
	return ch
}

// leave records that loop l dropped its topic on ch, which the channel's
// Live had reached; the last loop to leave unsubscribes the process.
func (h *Hub) leave(l *loopState, ch *hubChannel) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch.loops &^= l.bit
	if ch.loops == 0 && h.byID[ch.id] == ch {
		delete(h.byID, ch.id)
		delete(h.byPattern, ch.pattern)
		h.bus.Unsubscribe(ch.id)
	}
}

// Live is the bus's answer to Subscribe(id): nil once its server has the
// subscription, or why it could not be made. The loops waiting for it hear
// the news in order with the messages.
func (h *Hub) Live(id uint64, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := h.byID[id]
	if ch == nil || ch.live {
		return // unsubscribed meanwhile, or a repeat
	}
	if err != nil {
		h.log.Warn("bus refused a subscription", "channel", ch.pattern, "err", err)
		delete(h.byID, id)
		delete(h.byPattern, ch.pattern)
	} else {
		ch.live = true
	}
	for mask := ch.waiting; mask != 0; mask &= mask - 1 {
		h.loops[bits.TrailingZeros64(mask)].Load().post(event{channel: ch, err: err})
	}
	ch.waiting = 0
}

// Message hands the loops a message published on subject, which reached
// the process through the subscriptions subs (several when patterns
// overlap). It is encoded once per format, whatever the number of sockets.
// data and subs are not kept.
func (h *Hub) Message(subject string, data []byte, subs []uint64) {
	d := h.free.Get().(*delivery)
	d.arrived = h.now()
	d.json = bytebufferpool.Get()
	d.json.B, d.jsonAt = appendEnvelopeFrame(d.json.B[:0], subject, data)
	d.subject = append(d.subject[:0], subject...)
	h.mu.RLock()
	var mask uint64
	raw := false
	for _, id := range subs {
		ch := h.byID[id]
		if ch == nil || !ch.live {
			continue // not confirmed: its sockets have not been told yet
		}
		mask |= ch.loops
		raw = raw || ch.raw.Load() > 0
		d.patterns = append(d.patterns, ch.pattern)
	}
	if mask == 0 {
		h.mu.RUnlock()
		h.recycle(d)
		return
	}
	if raw {
		d.raw = bytebufferpool.Get()
		op := ws.OpText
		if !utf8.Valid(data) {
			op = ws.OpBinary
		}
		d.raw.B = codec.AppendFrame(d.raw.B[:0], op, data)
	}
	d.refs.Store(int32(bits.OnesCount64(mask)))
	// Posted under the lock, so that a loop joining a live channel hears of
	// it either before this message or not at all for it.
	for ; mask != 0; mask &= mask - 1 {
		h.loops[bits.TrailingZeros64(mask)].Load().post(event{delivery: d})
	}
	h.mu.RUnlock()
}

// Stats are the protocol's counters, summed over the loops.
type Stats struct {
	Deliveries uint64 // messages written to subscribers
	BytesOut   uint64 // bytes of those messages
	// Latency is the time from a message's arrival from the bus to its
	// last write to a socket.
	Latency Histogram
	// Channels is the number of distinct channels the process is
	// subscribed to (or subscribing to) on the bus.
	Channels int
}

// Stats reads the counters. It takes Hub.mu only to count channels.
func (h *Hub) Stats() Stats {
	var st Stats
	for i := range h.loops {
		l := h.loops[i].Load()
		if l == nil {
			continue
		}
		st.Deliveries += l.stats.deliveries.Load()
		st.BytesOut += l.stats.bytesOut.Load()
		l.stats.latency.addTo(&st.Latency)
	}
	h.mu.RLock()
	st.Channels = len(h.byID)
	h.mu.RUnlock()
	return st
}

// validate checks a channel a client asked for.
func (h *Hub) validate(name string) error { return channel.Validate(name, h.wildcards) }

func (h *Hub) tooMany() error {
	return &channel.Error{Code: channel.CodeTooManyChannels, Message: "at most " + strconv.Itoa(h.maxChannels) + " channels per connection"}
}
