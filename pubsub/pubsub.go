// Package pubsub connects Herald to NATS: it runs the embedded server when no
// external one is given, keeps one NATS subscription per distinct channel in
// the process (refcounted), and hands every message to a single handler.
//
// Channels are NATS subjects. The engine keeps its own per-loop index of which
// sockets want which channel and calls Acquire when a channel gains its first
// interested socket on a loop and Release when it loses the last one; pubsub
// turns those counts into exactly one plain NATS subscription per distinct
// channel pattern. Overlapping patterns ("prices.*" and "prices.AAPL") are
// distinct subscriptions, so a message can reach the Handler once per matching
// pattern: the engine uses Matches to deliver it to each socket only once.
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
)

// Defaults for the zero values of Config.
const (
	DefaultName          = "herald"
	DefaultPendingMsgs   = 65536
	DefaultPendingBytes  = 64 << 20
	DefaultReconnectWait = 250 * time.Millisecond
)

const (
	// maxReconnectWait caps the reconnect backoff: a push server should be
	// back within a couple of seconds of NATS returning.
	maxReconnectWait = 2 * time.Second
	// closeTimeout bounds how long Close lets in-flight messages drain.
	closeTimeout = 2 * time.Second
	// pingInterval and maxPingsOut detect a NATS server that vanished without
	// closing the TCP connection in about a minute instead of nats.go's
	// default of several minutes.
	pingInterval = 20 * time.Second
	maxPingsOut  = 3
	// dropSweepInterval is how often subscriptions that reported a slow
	// consumer are re-read for their drop counts. nats.go reports only the
	// start of a slow-consumer episode, not every drop.
	dropSweepInterval = time.Second
	// dropLogInterval rate-limits the drop warning per channel.
	dropLogInterval = 10 * time.Second
	// maxDropLogsPerSweep bounds the warning lines one sweep writes when many
	// channels drop at once; the rest are summarised in one line.
	maxDropLogsPerSweep = 10
)

// ErrClosed is returned by Acquire after Close.
var ErrClosed = errors.New("pubsub: broker closed")

// Config configures Start. Only Handler is required.
type Config struct {
	// URL is an external NATS server or cluster (comma-separated URLs).
	// Empty means: start an embedded server.
	URL string
	// Listen is the embedded server's client listen address, "host:port".
	// Default DefaultListen. Port 0 or -1 picks a free port (tests).
	// Ignored when URL is set.
	Listen string
	// Name is the NATS connection name, visible in the server's monitoring.
	// Default DefaultName.
	Name string
	// Handler is called for every message, on the nats.go delivery goroutine
	// of the subscription it arrived on (so concurrently for different
	// patterns, sequentially for one pattern). pattern is the channel the
	// message matched (the subscription), subject the concrete subject. data
	// is only valid during the call. Handler must not block for long: while
	// it runs, messages for that pattern queue up to the pending limits and
	// are then dropped.
	Handler func(pattern, subject string, data []byte)
	// PendingMsgs and PendingBytes are the per-subscription limits of
	// messages queued for Handler. Past them NATS drops messages (counted in
	// Stats.Dropped) and the connection stays up. 0 = default
	// (DefaultPendingMsgs, DefaultPendingBytes); negative = unlimited.
	PendingMsgs, PendingBytes int
	// ReconnectWait is the base of the reconnect backoff: attempts wait about
	// ReconnectWait, 2×, 4×... with jitter, capped at 2s (or ReconnectWait if
	// larger). Reconnection never gives up. Default DefaultReconnectWait.
	ReconnectWait time.Duration
	// Logger receives pubsub's and the embedded server's logs. nil =
	// slog.Default().
	Logger *slog.Logger
}

// Broker is Herald's connection to NATS plus the refcounted set of channel
// subscriptions. All methods are safe for concurrent use.
type Broker struct {
	handler      func(pattern, subject string, data []byte)
	pendingMsgs  int
	pendingBytes int
	log          *slog.Logger
	logURL       string // the URL with passwords redacted, for logs
	clientURL    string

	nc *nats.Conn
	ns *server.Server // nil when using an external server

	// Counters for Stats: written on the message path, so atomics, no lock.
	messagesIn  atomic.Uint64
	dropped     atomic.Uint64
	reconnects  atomic.Uint64
	disconnects atomic.Uint64

	mu       sync.Mutex
	channels map[string]*channel   // pattern -> live subscription
	slow     map[*channel]struct{} // channels whose drop count is being swept
	closed   bool

	closing     atomic.Bool // set first thing in Close: silences disconnect logs
	closeOnce   sync.Once
	stop        chan struct{} // closed by Close to stop the drop sweeper
	sweeperDone chan struct{}
	connClosed  chan struct{} // closed by nats.go's ClosedHandler
}

// channel is one distinct pattern with a live NATS subscription. All fields
// are guarded by Broker.mu; the message path never touches them.
type channel struct {
	pattern  string
	refs     int
	sub      *nats.Subscription
	dropped  int       // sub.Dropped() at the last sweep
	unlogged int       // drops not yet reported in a log line
	lastLog  time.Time // last drop warning for this channel
}

// Stats are monotonically increasing counters since Start.
type Stats struct {
	MessagesIn  uint64 // messages handed to Handler
	Dropped     uint64 // messages NATS dropped past the pending limits (swept about once a second)
	Reconnects  uint64 // successful reconnections after a lost connection
	Disconnects uint64 // connections lost
}

// Start connects to NATS and returns a ready Broker.
//
// With Config.URL empty it starts an embedded nats-server on Config.Listen,
// waits for it to accept clients and connects in-process (no socket). With
// Config.URL set it connects there; if no server is reachable, Start still
// succeeds and the Broker keeps retrying in the background, so Herald can
// start before NATS does. Subscriptions made meanwhile take effect on
// connect.
func Start(cfg Config) (*Broker, error) {
	if cfg.Handler == nil {
		return nil, errors.New("pubsub: Config.Handler is required")
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
		pendingBytes: orDefault(cfg.PendingBytes, DefaultPendingBytes),
		log:          log,
		channels:     make(map[string]*channel),
		slow:         make(map[*channel]struct{}),
		stop:         make(chan struct{}),
		sweeperDone:  make(chan struct{}),
		connClosed:   make(chan struct{}),
	}
	var closedOnce sync.Once
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
		nats.DrainTimeout(closeTimeout),
		nats.ErrorHandler(b.onAsyncError),
		nats.DisconnectErrHandler(b.onDisconnect),
		nats.ReconnectHandler(b.onReconnect),
		nats.ConnectHandler(b.onConnect),
		nats.ReconnectErrHandler(b.onReconnectErr),
		nats.ClosedHandler(func(*nats.Conn) { closedOnce.Do(func() { close(b.connClosed) }) }),
	}

	if cfg.URL == "" {
		listen := cfg.Listen
		if listen == "" {
			listen = DefaultListen
		}
		ns, err := startEmbedded(listen, log)
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
	go b.sweepDrops()
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

// Close unsubscribes everything, lets messages already received drain to
// Handler (bounded by a short timeout), closes the connection and shuts the
// embedded server down. Handler may run while Close is in progress; once
// Close returns no new call starts (one already running when the drain timed
// out may still be finishing). Close is idempotent.
func (b *Broker) Close() {
	b.closeOnce.Do(func() {
		b.closing.Store(true)
		b.mu.Lock()
		b.closed = true
		b.channels = make(map[string]*channel)
		b.slow = make(map[*channel]struct{})
		b.mu.Unlock()
		close(b.stop)
		<-b.sweeperDone

		if err := b.nc.Drain(); err != nil {
			// Not connected (reconnecting): nothing to drain.
			b.nc.Close()
		}
		select {
		case <-b.connClosed:
		case <-time.After(closeTimeout + time.Second):
			b.log.Warn("pubsub: nats connection did not drain in time; closing", "timeout", closeTimeout)
		}
		b.nc.Close()
		if b.ns != nil {
			b.ns.Shutdown()
			b.ns.WaitForShutdown()
		}
		b.log.Info("pubsub: closed")
	})
}

// ClientURL is the URL any NATS client can publish to: the embedded server's
// actual listen URL (with the real port when a random one was asked for), or
// Config.URL as given for an external server.
func (b *Broker) ClientURL() string { return b.clientURL }

// Connected reports whether the NATS connection is currently up.
func (b *Broker) Connected() bool { return b.nc.IsConnected() }

// Publish publishes data on subject, which must be a valid concrete channel
// (no wildcards). While disconnected, nats.go buffers publishes (up to its
// reconnect buffer) and sends them on reconnect.
func (b *Broker) Publish(subject string, data []byte) error {
	if err := ValidateChannel(subject, false); err != nil {
		return fmt.Errorf("pubsub: publish: %w", err)
	}
	if err := b.nc.Publish(subject, data); err != nil {
		return fmt.Errorf("pubsub: publish to %s: %w", subject, err)
	}
	return nil
}

// Flush waits until the server has processed everything sent so far
// (publishes, subscriptions, unsubscriptions), or timeout.
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

func (b *Broker) onConnect(nc *nats.Conn) {
	b.log.Info("nats connected", "url", nc.ConnectedUrlRedacted())
}

func (b *Broker) onDisconnect(nc *nats.Conn, err error) {
	if b.closing.Load() {
		return // our own Close
	}
	b.disconnects.Add(1)
	b.log.Warn("nats disconnected", "url", b.logURL, "err", err)
}

func (b *Broker) onReconnect(nc *nats.Conn) {
	b.reconnects.Add(1)
	b.log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
}

func (b *Broker) onReconnectErr(nc *nats.Conn, err error) {
	b.log.Debug("nats reconnect attempt failed", "url", b.logURL, "err", err)
}

func (b *Broker) onAsyncError(nc *nats.Conn, sub *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrSlowConsumer) && sub != nil {
		b.noteSlow(sub)
		return
	}
	var subject string
	if sub != nil {
		subject = sub.Subject
	}
	b.log.Warn("nats async error", "channel", subject, "err", err)
}
