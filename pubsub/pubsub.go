// Package pubsub connects Herald to NATS: it runs the embedded server when no
// external one is given, and turns the engine's subscriptions into plain NATS
// subscriptions whose messages, together with the news that each
// subscription is in place, reach one Handler as one ordered stream.
//
// Channels are NATS subjects. The engine names each subscription with its own
// id (Broker.Subscribe, Broker.Unsubscribe); outside the wide patterns pubsub
// never shares one NATS subscription between two ids, so overlapping or
// repeated patterns are distinct subscriptions and NATS sends a copy of a
// message for each of them. Copies that arrive together are grouped into one
// Handler.Message call listing every id; copies NATS spread out come as
// separate calls. Under a wide pattern (Config.Wide) the subscriptions share
// one NATS subscription, and the dispatcher lists every id whose pattern
// matches the subject (see wide.go).
//
// A fixed set of goroutines does the work however many subscriptions exist:
// nats.go's read loop pushes every message into one shared Go channel
// (ChanSubscribe), one dispatcher goroutine reads it and calls the Handler,
// one worker goroutine makes every nats.go subscribe and unsubscribe call,
// one round-tripper waits for the server's PONG after each batch of them,
// and one publisher makes the nats.go calls of PublishAsync. Callers (event
// loops) never wait on nats.go, which can hold its connection lock for
// seconds while it dials during a reconnect.
package pubsub

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/herald-ws/herald/codec/channel"
)

// Defaults for the zero values of Config.
const (
	DefaultName          = "herald"
	DefaultPendingMsgs   = 65536
	DefaultReconnectWait = 250 * time.Millisecond
	// DefaultPublishQueue and DefaultPublishQueueBytes match what nats.go
	// itself holds while it reconnects (its reconnect buffer, 8 MiB, is
	// 8,192 messages of 1 KiB): a longer queue would only delay the
	// refusal nats.go gives once that is full, and the client whose
	// publish is refused early can be told at once.
	DefaultPublishQueue      = 8192
	DefaultPublishQueueBytes = nats.DefaultReconnectBufSize
)

const (
	// maxReconnectWait caps the reconnect backoff: a push server should be
	// back within a couple of seconds of NATS returning.
	maxReconnectWait = 2 * time.Second
	// closeTimeout bounds how long Close waits for the worker to answer the
	// subscriptions still waiting and for the Handler to take the messages
	// already received.
	closeTimeout = 2 * time.Second
	// closeFlushTimeout bounds the round trip Close makes so that what the
	// server sent before Close reaches the Handler.
	closeFlushTimeout = time.Second
	// closeGrace is the least Close waits for the worker and the Handler
	// after closing the connection.
	closeGrace = 200 * time.Millisecond
	// pingInterval and maxPingsOut detect a NATS server that vanished without
	// closing the TCP connection in about a minute instead of nats.go's
	// default of several minutes.
	pingInterval = 20 * time.Second
	maxPingsOut  = 3
	// dropSweepInterval is how often subscriptions that reported a slow
	// consumer are re-read for their drop counts. nats.go reports only the
	// start of a slow-consumer episode, not every drop.
	dropSweepInterval = time.Second
	// dropLogInterval rate-limits the drop warning per subscription.
	dropLogInterval = 10 * time.Second
	// maxDropLogsPerSweep bounds the warning lines one sweep writes when many
	// subscriptions drop at once; the rest are summarised in one line.
	maxDropLogsPerSweep = 10
)

// ErrClosed is the error of Handler.Live for a subscription that Close ended
// before it was live.
var ErrClosed = errors.New("pubsub: broker closed")

// Config configures Start. Only Handler is required.
type Config struct {
	// URL is an external NATS server or cluster (comma-separated URLs).
	// Empty means: start an embedded server.
	URL string
	// Security authenticates Herald to the external NATS and secures the
	// link (credentials, nkey, TLS). Only with URL: the embedded server
	// needs none.
	Security Security
	// Listen is the embedded server's client listen address, "host:port".
	// Default DefaultListen. Port 0 or -1 picks a free port (tests).
	// Ignored when URL is set.
	Listen string
	// Name is the NATS connection name, visible in the server's monitoring.
	// Default DefaultName.
	Name string
	// Handler receives every message and every Live answer, from one
	// goroutine (see Handler). Required.
	Handler Handler
	// PendingMsgs is how many message copies received from NATS may wait
	// for the Handler, all subscriptions together: the capacity of the Go
	// channel nats.go's read loop delivers into. When it is full, nats.go
	// drops what arrives (counted in Stats.Dropped, logged) and the
	// connection stays up. It counts messages, not bytes: nats.go keeps no
	// byte count for channel subscriptions, so the memory bound is
	// PendingMsgs times the server's max_payload (1 MB by default).
	// 0 = DefaultPendingMsgs; negative is an error.
	PendingMsgs int
	// ReconnectWait is the base of the reconnect backoff: attempts wait about
	// ReconnectWait, 2×, 4×... with jitter, capped at 2s (or ReconnectWait if
	// larger). Reconnection never gives up. Default DefaultReconnectWait.
	ReconnectWait time.Duration
	// Logger receives pubsub's and the embedded server's logs. nil =
	// slog.Default().
	Logger *slog.Logger
	// Wide are NATS subject patterns (wildcards allowed) under which the
	// Broker makes one NATS subscription per pattern instead of one per
	// Subscribe, and routes the messages to the subscriptions itself. A
	// Subscribe whose pattern a wide pattern covers (channel.Covers: every
	// subject it matches, the wide one matches too; the first such pattern
	// in this order) makes no NATS subscription of its own: it becomes a
	// member of the wide pattern's group, at the cost of two map entries and
	// a 48-byte struct (about 140 B of heap) instead of about 1 KB of NATS
	// subscription (server and client). Other patterns work as without Wide. The group's NATS
	// subscription exists while the group has members.
	//
	// The trade-off: NATS sends every message under a wide pattern to this
	// process, whether or not anyone here subscribed to its subject, so in
	// a fleet of Herald instances each one receives the whole traffic under
	// the pattern. Use it for personal or notification channels (user.*),
	// many channels with few subscribers each and modest traffic, where the
	// per-subscription cost dominates; not for busy subjects that most
	// instances do not serve.
	//
	// Patterns must be valid (channel.Validate) and not reserved
	// (channel.Reserved: first token starting with '$' or '_'), else Start
	// fails. Overlapping wide patterns are allowed: each subscription joins
	// only the first that covers it, so a message under both arrives twice
	// (once per wide subscription) but reaches each member once; a wide
	// pattern covered by an earlier one never gets members (list narrow ones
	// first). NATS permissions apply to the wide pattern, not to each
	// member's pattern: what a client may subscribe to under it is
	// Herald's own check.
	Wide []string
	// PublishQueue is how many PublishAsync messages may wait for the
	// publisher goroutine (queued, being handed to nats.go, or in their
	// done callback); past it
	// PublishAsync returns ErrPublishQueueFull. 0 = DefaultPublishQueue;
	// negative is an error.
	PublishQueue int
	// JetStream runs the embedded server with JetStream, its file storage
	// under StoreDir (created if missing), for channel history (see
	// pubsub/history). Ignored when URL is set: an external server has
	// JetStream or not on its own.
	JetStream bool
	StoreDir  string
	// PublishQueueBytes bounds the same messages by their subject, header
	// and data bytes; past it PublishAsync returns ErrPublishQueueFull.
	// 0 = DefaultPublishQueueBytes; negative is an error.
	PublishQueueBytes int
}

// Broker is Herald's connection to NATS plus its subscriptions. All methods
// are safe for concurrent use.
type Broker struct {
	handler     Handler
	sequenced   SequencedHandler // handler, if it takes republished messages
	republished atomic.Pointer[[]string]
	pendingMsgs int
	log         *slog.Logger
	logURL      string // the URL with passwords redacted, for logs
	clientURL   string

	nc *nats.Conn
	ns *server.Server // nil when using an external server

	// wide are the groups of Config.Wide, in order (see wide.go).
	wide []*wideGroup
	// widePatterns is Config.Wide, for SetRepublished; never changed.
	widePatterns []string
	// natsSubs counts the NATS subscriptions the worker holds.
	natsSubs atomic.Int64
	// epoch counts the connection callbacks that lose or replace the
	// connection (disconnect, reconnect): a round trip proves the
	// subscriptions in place only on the connection it was made on (see
	// worker.join).
	epoch atomic.Uint64

	// Permission violations nats.go reported (see perm.go): permSeen is the
	// last one the async error callback saw, violations the subscription
	// ones not yet taken by a round trip, by subject. permSignal (capacity
	// 1) says permSeen changed.
	permMu     sync.Mutex
	permSeen   error
	violations map[string]error
	permSignal chan struct{}
	// Rate-limited warnings (guarded by dropMu, like the drop warnings).
	pubRefusals, lateRefusals limitedLog

	// The PublishAsync queue (see async.go).
	pubMu       sync.Mutex
	pubQueue    []pubReq
	pubCount    int // accepted and not yet answered (queued or being published)
	pubBytes    int // their bytes
	pubClosed   bool
	pubMax      int
	pubMaxBytes int
	pubWake     chan struct{} // capacity 1: the publisher has something to do
	pubDone     chan struct{} // closed when the publisher has answered everything

	// msgs is the one channel every subscription delivers into (nats.go's
	// read loop sends without blocking), and the worker's answer markers
	// with them. Only the dispatcher receives from it. It is never closed:
	// nats.go may still send to it.
	msgs chan *nats.Msg

	// Counters for Stats: written on the message path, so atomics, no lock.
	messagesIn  atomic.Uint64
	dropped     atomic.Uint64
	reconnects  atomic.Uint64
	disconnects atomic.Uint64

	// up backs Connected without calling nats.go, whose lock a reconnect
	// holds while it dials. upMu orders Start's first reading against the
	// connection callbacks; upSet says a callback has spoken.
	upMu  sync.Mutex
	up    atomic.Bool
	upSet bool
	// server is the NATS server of the current (or last) connection, set by
	// the connection callbacks for the same reason as up.
	server atomic.Pointer[ServerInfo]

	// mu guards the subscriptions callers see and the worker's queue. It is
	// never held across a nats.go call.
	mu     sync.Mutex
	subs   map[uint64]*subscription // id -> subscribed, not yet unsubscribed
	queue  []op                     // for the worker, in call order
	closed bool
	wake   chan struct{} // capacity 1: the worker has something to do

	// registered holds the NATS subscriptions the worker made that the
	// dispatcher has not looked up yet. See dispatcher.lookup.
	regMu      sync.Mutex
	registered map[*nats.Subscription]*subscription

	// answers are the worker's batches, each announced by one ctlMarker in
	// msgs, in the same order.
	ctlMu   sync.Mutex
	answers [][]answer

	// slow holds the subscriptions whose drop counts are being swept.
	dropMu sync.Mutex
	slow   map[*nats.Subscription]*dropState

	// dispatcher state that the Close path reads: quit asks the dispatcher
	// to stop calling the Handler at once (Close gave up waiting).
	quit atomic.Bool

	// testHookAnswer, if set, runs on the worker before it hands a batch of
	// answers to the dispatcher (tests widen the gap between the round trip
	// and Live with it).
	testHookAnswer atomic.Pointer[func([]answer)]
	// testHookTrip, if set, runs on the round-tripper before each round
	// trip (tests hold round trips with it).
	testHookTrip atomic.Pointer[func()]

	// The worker asks the round-tripper for a round trip on tripStart
	// (capacity 1) and hears the outcome on tripDone.
	tripStart chan struct{}
	tripDone  chan tripResult

	closing      atomic.Bool // set first thing in Close: silences disconnect logs
	closeOnce    sync.Once
	stop         chan struct{} // closed by Close: worker and sweeper wind down
	workerDone   chan struct{}
	dispatchDone chan struct{}
	sweeperDone  chan struct{}
}

// Stats are monotonically increasing counters since Start.
type Stats struct {
	// MessagesIn counts message copies handed to Handler.Message: a call
	// with n subscription ids counts n.
	MessagesIn uint64
	// Dropped counts message copies lost because the Handler fell behind:
	// nats.go found the shared channel full (swept about once a second).
	Dropped     uint64
	Reconnects  uint64 // successful reconnections after a lost connection
	Disconnects uint64 // connections lost
}

// Start connects to NATS and returns a ready Broker.
//
// With Config.URL empty it starts an embedded nats-server on Config.Listen,
// waits for it to accept clients and connects in-process (no socket). With
// Config.URL set it connects there; if no server is reachable, Start still
// succeeds and the Broker keeps retrying in the background, so Herald can
// start before NATS does. Subscriptions made meanwhile go live on connect.
func Start(cfg Config) (*Broker, error) {
	if cfg.Handler == nil {
		return nil, errors.New("pubsub: Config.Handler is required")
	}
	if cfg.PendingMsgs < 0 {
		return nil, fmt.Errorf("pubsub: Config.PendingMsgs is %d: it must not be negative", cfg.PendingMsgs)
	}
	if cfg.PublishQueue < 0 {
		return nil, fmt.Errorf("pubsub: Config.PublishQueue is %d: it must not be negative", cfg.PublishQueue)
	}
	if cfg.PublishQueueBytes < 0 {
		return nil, fmt.Errorf("pubsub: Config.PublishQueueBytes is %d: it must not be negative", cfg.PublishQueueBytes)
	}
	wide, err := newWideGroups(cfg.Wide)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	name := cfg.Name
	if name == "" {
		name = DefaultName
	}
	wait := cfg.ReconnectWait
	if wait <= 0 {
		wait = DefaultReconnectWait
	}
	b := &Broker{
		handler:      cfg.Handler,
		pendingMsgs:  orDefault(cfg.PendingMsgs, DefaultPendingMsgs),
		log:          log,
		subs:         make(map[uint64]*subscription),
		wake:         make(chan struct{}, 1),
		wide:         wide,
		widePatterns: append([]string(nil), cfg.Wide...),
		permSignal:   make(chan struct{}, 1),
		pubMax:       orDefault(cfg.PublishQueue, DefaultPublishQueue),
		pubMaxBytes:  orDefault(cfg.PublishQueueBytes, DefaultPublishQueueBytes),
		pubWake:      make(chan struct{}, 1),
		pubDone:      make(chan struct{}),
		tripStart:    make(chan struct{}, 1),
		tripDone:     make(chan tripResult),
		registered:   make(map[*nats.Subscription]*subscription),
		slow:         make(map[*nats.Subscription]*dropState),
		stop:         make(chan struct{}),
		workerDone:   make(chan struct{}),
		dispatchDone: make(chan struct{}),
		sweeperDone:  make(chan struct{}),
	}
	b.msgs = make(chan *nats.Msg, b.pendingMsgs)
	b.sequenced, _ = cfg.Handler.(SequencedHandler)
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			return reconnectDelay(wait, attempts)
		}),
		// A rejected credential may be fixed on the server side; keep trying
		// rather than closing the connection for good.
		nats.IgnoreAuthErrorAbort(),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		nats.ErrorHandler(b.onAsyncError),
		nats.DisconnectErrHandler(b.onDisconnect),
		nats.ReconnectHandler(b.onReconnect),
		nats.ConnectHandler(b.onConnect),
		nats.ReconnectErrHandler(b.onReconnectErr),
	}

	if cfg.URL == "" && !cfg.Security.IsZero() {
		return nil, errors.New("pubsub: NATS credentials and TLS settings are for an external NATS: give its URL too")
	}
	secure, err := cfg.Security.options()
	if err != nil {
		return nil, fmt.Errorf("pubsub: %w", err)
	}
	opts = append(opts, secure...)

	if cfg.URL == "" {
		listen := cfg.Listen
		if listen == "" {
			listen = DefaultListen
		}
		var js *jetStreamOptions
		if cfg.JetStream {
			if cfg.StoreDir == "" {
				return nil, errors.New("pubsub: Config.JetStream needs a StoreDir")
			}
			js = &jetStreamOptions{storeDir: cfg.StoreDir}
		}
		ns, err := startEmbedded(listen, log, js)
		if err != nil {
			return nil, fmt.Errorf("pubsub: start embedded nats server on %s: %w", listen, err)
		}
		b.ns = ns
		b.clientURL = embeddedClientURL(ns)
		b.logURL = b.clientURL
		nc, err := nats.Connect(b.clientURL, append(opts, nats.InProcessServer(ns))...)
		if err != nil {
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil, fmt.Errorf("pubsub: connect to embedded nats server on %s: %w", b.clientURL, err)
		}
		b.nc = nc
		log.Info("pubsub: using embedded nats server", "url", b.clientURL)
	} else {
		b.clientURL = cfg.URL
		b.logURL = redactURLs(cfg.URL)
		nc, err := nats.Connect(cfg.URL, append(opts, nats.RetryOnFailedConnect(true))...)
		if err != nil {
			// Only configuration errors get here (bad URL, bad options):
			// unreachable servers are retried in the background.
			return nil, fmt.Errorf("pubsub: connect to nats %s: %w", b.logURL, withoutURL(err))
		}
		b.nc = nc
		if nc.IsConnected() {
			log.Info("pubsub: using external nats", "url", b.logURL)
		} else {
			log.Warn("pubsub: using external nats, not reachable yet; retrying in the background", "url", b.logURL)
		}
	}
	b.upMu.Lock()
	if !b.upSet {
		b.up.Store(b.nc.IsConnected())
		if b.nc.IsConnected() {
			b.noteServer(b.nc)
		}
	}
	b.upMu.Unlock()
	go b.sweepDrops()
	go b.publish()
	go b.work()
	go b.roundTrips()
	go b.dispatch()
	return b, nil
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// reconnectDelay is the wait before reconnect round attempt (1-based: the
// number of times every known server has been tried): exponential from base,
// capped at max(base, maxReconnectWait), with "equal jitter" (half fixed,
// half random) so that a fleet of Herald instances does not reconnect in
// lockstep after a NATS restart.
func reconnectDelay(base time.Duration, attempt int) time.Duration {
	limit := max(base, maxReconnectWait)
	d := base
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	half := d / 2
	return half + rand.N(d-half+1)
}

// withoutURL drops the *url.Error wrapper from a connect error: it repeats
// the URL verbatim, password and all, and callers name the redacted URL
// themselves.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// redactURLs returns a comma-separated URL list with passwords replaced, for
// logging.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		s := p
		if !strings.Contains(s, "://") {
			s = "nats://" + s
		}
		u, err := url.Parse(s)
		switch {
		case err != nil:
			parts[i] = "(unparsable url)"
		case u.User != nil:
			if _, has := u.User.Password(); !has {
				// A bare user may be a token: hide it too.
				u.User = url.User("xxxxx")
			}
			parts[i] = u.Redacted()
		default:
			parts[i] = p
		}
	}
	return strings.Join(parts, ",")
}

// Close ends every subscription and closes the connection: it makes one
// round trip (when connected) so that what the server sent before reaches
// the Handler, closes the NATS connection, answers every subscription still
// waiting for its Live with Live(id, ErrClosed) and every PublishAsync
// message not yet handed to nats.go with done(ErrClosed), lets the Handler
// take what was already received, and shuts the embedded server down.
//
// Subscribe and Unsubscribe calls made once Close has begun do nothing and
// get no answer; PublishAsync returns ErrClosed. The Handler may run while Close is in progress; once Close
// returns no new call starts. Close waits about closeTimeout (2s) at most
// for the worker and the Handler: a Handler stuck for longer may still be
// finishing its call, and the answers a worker stuck inside nats.go did not
// give by then never come. Close is idempotent.
func (b *Broker) Close() {
	b.closeOnce.Do(func() {
		start := time.Now()
		b.closing.Store(true)
		b.mu.Lock()
		b.closed = true
		clear(b.subs)
		b.mu.Unlock()
		b.pubMu.Lock()
		b.pubClosed = true
		b.pubMu.Unlock()
		close(b.stop)
		<-b.sweeperDone

		if b.Connected() {
			// Everything the server sent before its PONG has then been
			// pushed into b.msgs (nats.go's read loop handles messages in
			// order and before the PONG).
			_ = b.nc.FlushTimeout(closeFlushTimeout)
		}
		// This also fails a round trip under way, and a worker call into
		// nats.go fails at once after it. It waits for nats.go's lock,
		// which a reconnect holds while it dials (at most nats.go's
		// connect timeout, 2s).
		b.nc.Close()
		b.setUp(false)
		// Even when nats.go held Close for its connect timeout, leave the
		// worker a moment to answer once nats.go lets it go.
		deadline := start.Add(closeTimeout)
		if least := time.Now().Add(closeGrace); deadline.Before(least) {
			deadline = least
		}

		if !waitUntil(b.workerDone, deadline) {
			b.log.Warn("pubsub: close: the subscription worker is stuck in nats.go; not waiting for it", "timeout", closeTimeout)
		}
		if !waitUntil(b.pubDone, deadline) {
			b.log.Warn("pubsub: close: the publisher is stuck (in nats.go or a done callback); not waiting for it", "timeout", closeTimeout)
		}
		stopped := false
		t := time.NewTimer(time.Until(deadline))
		select {
		case b.msgs <- stopMarker:
			stopped = waitUntil(b.dispatchDone, deadline)
		case <-t.C:
		}
		t.Stop()
		if !stopped {
			b.quit.Store(true)
			b.log.Warn("pubsub: close: the handler did not take the remaining messages in time; dropping them", "timeout", closeTimeout)
		}
		if b.ns != nil {
			b.ns.Shutdown()
			b.ns.WaitForShutdown()
		}
		b.log.Info("pubsub: closed")
	})
}

// waitUntil waits for done to be closed until deadline and reports whether
// it was.
func waitUntil(done <-chan struct{}, deadline time.Time) bool {
	select {
	case <-done:
		return true
	default:
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// ClientURL is the URL any NATS client can publish to: the embedded server's
// actual listen URL (with the real port when a random one was asked for), or
// Config.URL as given for an external server.
func (b *Broker) ClientURL() string { return b.clientURL }

// RedactedURL is ClientURL with passwords and tokens hidden: the one to
// print and log.
func (b *Broker) RedactedURL() string { return b.logURL }

// Connected reports whether the NATS connection is up, as nats.go's
// connection callbacks last reported it. It never calls nats.go, so it does
// not block while nats.go dials during a reconnect.
func (b *Broker) Connected() bool { return b.up.Load() }

// ServerInfo names a NATS server the way it announced itself.
type ServerInfo struct {
	// URL is the address Herald dialed, its password or token redacted
	// (nats.go's own redaction keeps a bare token).
	URL string
	// Name is the server's server_name, and Cluster its cluster's name
	// ("" outside a cluster).
	Name, Cluster string
}

// Server is the NATS server Herald is connected to, or was connected to
// last while Connected is false; zero before the first connection. It does
// not call nats.go, so it is safe on an event loop.
func (b *Broker) Server() ServerInfo {
	if s := b.server.Load(); s != nil {
		return *s
	}
	return ServerInfo{}
}

// noteServer records which server nc is connected to. It runs on nats.go's
// callback goroutine (or in Start), never on a loop: it takes nc's lock.
func (b *Broker) noteServer(nc *nats.Conn) ServerInfo {
	s := ServerInfo{URL: redactURLs(nc.ConnectedUrl()), Name: nc.ConnectedServerName(), Cluster: nc.ConnectedClusterName()}
	b.server.Store(&s)
	return s
}

// Publish publishes data on subject, which must be a valid concrete channel
// (no wildcards). While disconnected, nats.go buffers publishes (up to its
// reconnect buffer) and sends them on reconnect. Publish calls nats.go on
// the caller's goroutine and can wait for nats.go's connection lock, which a
// reconnect holds while it dials: never call it from an event loop.
func (b *Broker) Publish(subject string, data []byte) error {
	if err := channel.Validate(subject, false); err != nil {
		return fmt.Errorf("pubsub: publish: %w", err)
	}
	if err := b.nc.Publish(subject, data); err != nil {
		return fmt.Errorf("pubsub: publish to %s: %w", subject, err)
	}
	return nil
}

// Flush waits until the server has processed everything this connection
// sent so far (publishes, and the subscriptions and unsubscriptions the
// worker has already made), or timeout. It blocks: never call it from an
// event loop. To know that one subscription is in place, wait for its
// Handler.Live instead.
func (b *Broker) Flush(timeout time.Duration) error {
	if err := b.nc.FlushTimeout(timeout); err != nil {
		return fmt.Errorf("pubsub: flush: %w", err)
	}
	return nil
}

// Stats returns the counters. It takes no lock.
func (b *Broker) Stats() Stats {
	return Stats{
		MessagesIn:  b.messagesIn.Load(),
		Dropped:     b.dropped.Load(),
		Reconnects:  b.reconnects.Load(),
		Disconnects: b.disconnects.Load(),
	}
}

// setUp records the connection state reported by a nats.go callback.
func (b *Broker) setUp(up bool) {
	b.upMu.Lock()
	b.upSet = true
	b.up.Store(up)
	b.upMu.Unlock()
}

func (b *Broker) onConnect(nc *nats.Conn) {
	b.forgetViolations()
	b.setUp(true)
	b.kick() // subscriptions made before the first connection can go live
	s := b.noteServer(nc)
	b.log.Info("nats connected", "url", s.URL, "server", s.Name, "cluster", s.Cluster)
}

func (b *Broker) onDisconnect(nc *nats.Conn, err error) {
	b.epoch.Add(1)
	b.setUp(false)
	if b.closing.Load() {
		return // our own Close
	}
	b.disconnects.Add(1)
	b.log.Warn("nats disconnected", "url", b.logURL, "err", err)
}

func (b *Broker) onReconnect(nc *nats.Conn) {
	b.epoch.Add(1)
	b.forgetViolations()
	b.setUp(true)
	b.kick() // retry the round trip of subscriptions made while down
	b.reconnects.Add(1)
	s := b.noteServer(nc)
	b.log.Info("nats reconnected", "url", s.URL, "server", s.Name, "cluster", s.Cluster)
}

func (b *Broker) onReconnectErr(nc *nats.Conn, err error) {
	b.log.Debug("nats reconnect attempt failed", "url", b.logURL, "err", err)
}

func (b *Broker) onAsyncError(nc *nats.Conn, sub *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrSlowConsumer) && sub != nil {
		b.noteSlow(sub)
		return
	}
	if errors.Is(err, nats.ErrPermissionViolation) {
		b.notePermission(err)
		return
	}
	var subject string
	if sub != nil {
		subject = sub.Subject
	}
	b.log.Warn("nats async error", "channel", subject, "err", err)
}
