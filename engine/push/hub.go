// Package push is Herald's push protocol, spoken over the engine's
// WebSocket connections at Path (and its event streams at StreamPath, see
// sse.go): clients subscribe to channels, in the
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
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"log/slog"
	"math/bits"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/valyala/bytebufferpool"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/codec/deflate"
	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/push/auth"
)

// Path is where the push endpoint is served in the herald binary, and
// StreamPath where it is served as an event stream (see sse.go).
const (
	Path       = "/ws"
	StreamPath = "/sse"
)

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
	// Publish hands a client's message to the bus without waiting for the
	// network, and calls done exactly once, from any goroutine, when the
	// bus has taken it (nil) or could not (the reason). An error returned
	// at once (the bus is overloaded or closed) means done is not called.
	// The bus copies what it keeps of p.
	Publish(p Publication, done func(error)) error
}

// Publication is a message a client published.
type Publication struct {
	Subject string
	Data    []byte // the data value's JSON text, byte for byte
	User    string // the token's subject; empty when anonymous
	Client  string // the connection's id, as in its connected frame
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

	// Verify checks a client's token (?token= or Authorization: Bearer)
	// and returns its claims. It may block (a JWKS fetch): the hub calls it
	// on Verifiers goroutines of its own, never on a loop. nil means no
	// authentication: tokens are ignored and every client is anonymous.
	Verify func(ctx context.Context, token string) (auth.Claims, error)
	// Verifiers is how many goroutines verify tokens; default GOMAXPROCS.
	Verifiers int
	// PublicChannels are the patterns anonymous clients may subscribe to.
	// nil means the default: without Verify, every channel whose first
	// token is literal; with Verify, none, so that a client without a
	// token is refused with 401. Reserved channels ('$' or '_' first) are
	// refused whatever this says.
	PublicChannels []string
	// PublicPublish are the subjects anonymous clients may publish to;
	// default none.
	PublicPublish []string
	// UserChannels and UserPublish are granted to every authenticated
	// client besides its token's subscribe and publish claims, with
	// SubjectToken replaced by the token's subject.
	UserChannels []string
	UserPublish  []string
	// MaxPublishSize caps the data of one client publish, in bytes.
	// Default DefaultMaxPublishSize.
	MaxPublishSize int
	// History serves the history of the channels it holds: their
	// envelopes carry "seq", and a subscribe with since or last gets the
	// stored messages first (see history.go). nil: no history.
	History History
	// CompressionMinSize is the smallest message, in bytes of its frame
	// payload, that is compressed for sockets that negotiated
	// permessage-deflate; smaller ones go plain to them too. 0 means
	// DefaultCompressionMinSize; a negative value compresses everything.
	CompressionMinSize int
	// CompressionLevel is the deflate level messages are compressed at:
	// 1 (fastest) to 9, or -2 for Huffman only. 0 means
	// deflate.DefaultLevel, the fastest.
	CompressionLevel int
	// PublishRate is how many publishes a connection may make per second,
	// with bursts of twice that; past it they are refused, and a
	// connection that keeps on is closed with 1008. Default
	// DefaultPublishRate.
	PublishRate float64
}

// Defaults for Config.
const (
	DefaultMaxPublishSize = 64 << 10
	DefaultPublishRate    = 20
	// DefaultCompressionMinSize: a message compressed on its own (no
	// context takeover) saves little below a few hundred bytes: the
	// 97-byte envelope of a 64-byte JSON tick grows to 103 at level 1,
	// while 243 bytes of JSON shrink to 167 (1.5x), 491 to 242 (2x) and
	// 994 to 386 (2.6x). Under 256 bytes the compression is not worth its
	// CPU.
	DefaultCompressionMinSize = 256
)

// Hub is the push protocol's process-wide state. Its Endpoint serves the
// sockets; the bus feeds it through Message and Live.
type Hub struct {
	bus         Bus
	history     History
	maxChannels int
	wildcards   bool
	now         func() time.Time
	log         *slog.Logger

	mu        sync.RWMutex
	byPattern map[string]*hubChannel
	byID      map[uint64]*hubChannel
	lastID    uint64

	// Access control (see access.go); all read-only after New.
	verify         func(ctx context.Context, token string) (auth.Claims, error)
	publicChannels grants
	publicPublish  grants
	userChannels   []string
	userPublish    []string
	maxPublish     int
	publishRate    float64
	clientIDs      cipher.Block // turns a connection into its opaque id

	// Token verification off the loops (see verify.go).
	jobs     chan *job
	ctx      context.Context // cancelled by Close: verifiers stop
	cancel   context.CancelFunc
	workers  sync.WaitGroup
	counters counters

	// loops[i] is loop i's state, made by that loop on its first socket.
	loops [engine.MaxLoops]atomic.Pointer[loopState]
	free  sync.Pool // *delivery
	// events holds the buffers of deliveries' events. A pool of their own:
	// bytebufferpool drops buffers past the sizes most of a pool's are,
	// and events are longer than the envelopes that fill the shared pool,
	// so there every one would be dropped and made again.
	events bytebufferpool.Pool

	// permessage-deflate: messages are compressed once, in Message, for
	// every socket that negotiated it (see delivery.compressed).
	compressMin int
	// compressor is used by Message, which the bus calls from one
	// goroutine: the lock is never contended and no loop takes it. A
	// sync.Pool would drop the compressor (a few hundred KB) at every GC
	// and make a new one per message after it.
	compressMu    sync.Mutex
	compressor    *deflate.Compressor // 15-bit window, made on first use
	compressLevel int
	compressStats compressStats
}

// compressStats count what Message compressed: atomics added to by the
// bus's goroutine, never by a loop.
type compressStats struct {
	messages atomic.Uint64 // frames compressed (one per format)
	in, out  atomic.Uint64 // their payload bytes before and after
}

// hubChannel is the process-wide state of one subscribed pattern.
type hubChannel struct {
	id      uint64
	pattern string
	loops   uint64       // bit i: loop i has a topic on the channel
	waiting uint64       // loops not yet told the channel is live
	live    bool         // the bus confirmed the subscription
	raw     atomic.Int32 // subscribers that want bare payloads, over all loops
	sse     atomic.Int32 // subscribers on event streams, over all loops
	deflate atomic.Int32 // subscribers that take shared compressed frames (Conn.Deflate)
}

// New returns a Hub on cfg.Bus.
func New(cfg Config) *Hub {
	h := &Hub{
		bus:         cfg.Bus,
		history:     cfg.History,
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
	h.setAccess(cfg)
	h.compressMin = cfg.CompressionMinSize
	if h.compressMin == 0 {
		h.compressMin = DefaultCompressionMinSize
	}
	level := cfg.CompressionLevel
	if _, err := deflate.NewCompressor(level, 15); err != nil {
		h.log.Warn("compression level out of range: using the fastest", "level", level)
		level = 0
	}
	h.compressLevel = level
	return h
}

// setAccess reads the access-control part of cfg.
func (h *Hub) setAccess(cfg Config) {
	h.verify = cfg.Verify
	h.publicChannels = grants{patterns: cfg.PublicChannels}
	if cfg.PublicChannels == nil && cfg.Verify == nil {
		h.publicChannels.literalFirst = true
	}
	h.publicPublish = grants{patterns: cfg.PublicPublish}
	h.userChannels, h.userPublish = cfg.UserChannels, cfg.UserPublish
	h.maxPublish = cfg.MaxPublishSize
	if h.maxPublish <= 0 {
		h.maxPublish = DefaultMaxPublishSize
	}
	h.publishRate = cfg.PublishRate
	if h.publishRate <= 0 {
		h.publishRate = DefaultPublishRate
	}
	var key [16]byte
	_, _ = rand.Read(key[:]) // never fails (crypto/rand)
	h.clientIDs, _ = aes.NewCipher(key[:])
	h.ctx, h.cancel = context.WithCancel(context.Background())
	if h.verify != nil {
		n := cfg.Verifiers
		if n <= 0 {
			n = runtime.GOMAXPROCS(0)
		}
		h.jobs = make(chan *job, verifyQueue)
		h.workers.Add(n)
		for range n {
			go h.verifier()
		}
	}
}

// Close stops the hub's token verifiers. Upgrades still waiting for one
// are answered 503 by the engine's handshake timeout.
func (h *Hub) Close() {
	h.cancel()
	h.workers.Wait()
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
		// pattern may be a view of a network buffer: keep a copy.
		ch = &hubChannel{id: h.lastID, pattern: strings.Clone(pattern)}
		h.byPattern[ch.pattern] = ch
		h.byID[ch.id] = ch
		h.bus.Subscribe(ch.id, ch.pattern)
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
	h.MessageSeq(subject, data, subs, 0)
}

// MessageSeq is Message for a message of a history channel, stored at
// stream sequence seq (0: none), which its envelopes carry.
func (h *Hub) MessageSeq(subject string, data []byte, subs []uint64, seq uint64) {
	if channel.Reserved(subject) {
		// NATS's own APIs and replies ($JS., _INBOX. ...) reach a wide
		// pattern such as > too; no client may read them.
		return
	}
	d := h.free.Get().(*delivery)
	d.arrived = h.now()
	d.json = bytebufferpool.Get()
	d.json.B, d.jsonAt = appendEnvelopeFrame(d.json.B[:0], subject, data, seq)
	d.seq = seq
	d.subject = append(d.subject[:0], subject...)
	// Which formats the message needs is read under the lock, but the
	// encoding and compressing happen outside it: a loop that joins a
	// channel takes the lock, and must not wait for a compression.
	h.mu.RLock()
	raw, sse, compress := false, false, false
	for _, id := range subs {
		if ch := h.byID[id]; ch != nil && ch.live {
			raw = raw || ch.raw.Load() > 0
			sse = sse || ch.sse.Load() > 0
			compress = compress || ch.deflate.Load() > 0
		}
	}
	h.mu.RUnlock()
	if raw {
		d.raw = bytebufferpool.Get()
		op := ws.OpText
		if !utf8.Valid(data) {
			op = ws.OpBinary
		}
		d.raw.B = codec.AppendFrame(d.raw.B[:0], op, data)
	}
	if sse {
		var epoch string
		if seq > 0 {
			epoch, _ = h.historyOf(subject)
		}
		d.sse = h.events.Get()
		d.sse.B = appendEvent(d.sse.B[:0], d.json.B[envelopeHeadroom:], epoch, seq)
	}
	if compress {
		h.compress(d, raw)
	}
	h.mu.RLock()
	var mask uint64
	for _, id := range subs {
		ch := h.byID[id]
		if ch == nil || !ch.live {
			continue // not confirmed: its sockets have not been told yet
		}
		mask |= ch.loops
		d.patterns = append(d.patterns, ch.pattern)
	}
	if mask == 0 {
		h.mu.RUnlock()
		h.recycle(d)
		return
	}
	d.refs.Store(int32(bits.OnesCount64(mask)))
	// Posted under the lock, so that a loop joining a live channel hears of
	// it either before this message or not at all for it.
	for ; mask != 0; mask &= mask - 1 {
		h.loops[bits.TrailingZeros64(mask)].Load().post(event{delivery: d})
	}
	h.mu.RUnlock()
}

// compress makes d's compressed frames, once for all the sockets that
// will get them: the envelope's, and the bare payload's when raw
// subscribers want one. A message under the threshold stays plain. It runs
// on the bus's goroutine, before the fan-out, so no loop compresses and no
// loop waits for another to.
func (h *Hub) compress(d *delivery, raw bool) {
	h.compressMu.Lock()
	defer h.compressMu.Unlock()
	if h.compressor == nil {
		h.compressor, _ = deflate.NewCompressor(h.compressLevel, 15) // the level was checked by New
	}
	z := h.compressor
	d.jsonZ = h.compressFrame(z, d.json.B[d.jsonAt:])
	if raw {
		d.rawZ = h.compressFrame(z, d.raw.B)
	}
}

// compressFrame compresses the payload of the plain frame f into a pooled
// buffer, or returns nil when it is under the threshold or does not get
// smaller.
func (h *Hub) compressFrame(z *deflate.Compressor, f []byte) *bytebufferpool.ByteBuffer {
	hd, hn, _ := codec.ParseHeader(f)
	payload := f[hn:]
	if len(payload) < h.compressMin {
		return nil
	}
	b := bytebufferpool.Get()
	b.B = z.AppendFrame(b.B[:0], hd.OpCode, payload)
	if len(b.B) >= len(f) {
		// Incompressible (random or already compressed data): the plain
		// frame is smaller, and a deflate socket may be sent it.
		bytebufferpool.Put(b)
		return nil
	}
	h.compressStats.messages.Add(1)
	h.compressStats.in.Add(uint64(len(payload)))
	h.compressStats.out.Add(uint64(len(b.B) - frameHeaderLen(b.B)))
	return b
}

// frameHeaderLen is the header length of a server frame.
func frameHeaderLen(f []byte) int {
	_, n, _ := codec.ParseHeader(f)
	return n
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
	// AuthFailures counts upgrades and refreshes refused for their token,
	// by reason: "missing", or auth.Error's Reason.
	AuthFailures map[string]uint64
	// Published counts client publishes the bus took; PublishRefused
	// those refused, by in-band error code.
	Published      uint64
	PublishRefused map[string]uint64
	// Expired counts connections closed with 4001 because their token
	// expired.
	Expired uint64
	// Compressed counts frames compressed for permessage-deflate sockets
	// (once per message and format, however many sockets get them), and
	// CompressedIn and CompressedOut their payload bytes before and after.
	Compressed, CompressedIn, CompressedOut uint64
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
	h.counters.read(&st)
	st.Compressed = h.compressStats.messages.Load()
	st.CompressedIn = h.compressStats.in.Load()
	st.CompressedOut = h.compressStats.out.Load()
	return st
}

// validate checks a channel a client asked for.
func (h *Hub) validate(name string) error { return channel.Validate(name, h.wildcards) }

func (h *Hub) tooMany() error {
	return &channel.Error{Code: channel.CodeTooManyChannels, Message: "at most " + strconv.Itoa(h.maxChannels) + " channels per connection"}
}
