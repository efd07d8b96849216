// Package engine owns Herald's sockets: a gnet reactor whose event loops
// accept TCP connections, answer plain HTTP, WebSocket upgrades and event
// streams (Server-Sent Events, see stream.go) on one port, parse frames in
// place from gnet's buffers and write frames back.
// What is spoken over an upgraded connection is an Endpoint's business: the
// engine knows sockets, frames, limits and deadlines, not channels.
//
// There is no goroutine and no timer per connection. Each connection is a
// small struct owned by the event loop it landed on; everything that touches
// it runs on that loop, either in a gnet callback or in a task queued to the
// loop (Loop.Execute). Deadlines (handshake timeout, the linger after a
// close frame, pings) are kept as numbers on the connection and enforced by
// a periodic sweep that each loop runs over its own connections.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/codec/deflate"
	"github.com/herald-ws/herald/engine/gnetlog"
)

// Config says how a Server listens and what it accepts. The zero value of
// every field but Addr means its documented default.
type Config struct {
	// Addr is the TCP address to listen on, host:port. Port 0 picks a free
	// port; Server.Addr reports which.
	Addr string
	// Loops is the number of event loops; 0 means one per CPU, at most
	// MaxLoops.
	Loops int
	// MaxMessageSize caps an inbound message, in bytes, summed over its
	// fragments. A larger one closes the connection with 1009.
	// Default codec.DefaultMaxMessageSize (1 MiB).
	MaxMessageSize int64
	// MaxHeadSize caps the HTTP request head, in bytes; past it the request
	// is answered 431. Default codec.DefaultMaxHeadSize (8 KiB).
	MaxHeadSize int
	// HandshakeTimeout closes a connection that has not completed its HTTP
	// request within it (slowloris), and answers 503 to an upgrade its
	// endpoint has not accepted within it. Default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// CloseTimeout bounds how long a connection lingers after Herald sent a
	// close frame (waiting for the peer's) or a final HTTP answer (waiting
	// for the peer to hang up). Default DefaultCloseTimeout.
	CloseTimeout time.Duration
	// ReusePort sets SO_REUSEPORT on the listener, so that several
	// processes (several Herald instances on one box, or an old and a new
	// one during a restart) listen on the same address and the kernel
	// spreads new connections among them. Each event loop then has a
	// listener of its own and accepts for itself. It needs a fixed port:
	// with port 0 each listener would get a different one.
	ReusePort bool
	// Echo serves EchoPath, which echoes every text and binary message back:
	// the endpoint conformance suites such as Autobahn's test against.
	Echo bool
	// Endpoints are the WebSocket protocols served, by exact request path.
	Endpoints map[string]Endpoint
	// Streams are endpoints served as event streams (Server-Sent Events),
	// by exact request path, none of them also in Endpoints: a plain GET
	// there passes the admission an upgrade does (CheckOrigin,
	// CheckUpgrade, MaxConns, MaxAcceptRate) and the endpoint's Upgrade,
	// and is answered 200 with Content-Type text/event-stream; the
	// endpoint then writes events with Conn.Send (see Conn.Stream). An
	// endpoint may be in both maps.
	Streams map[string]Endpoint
	// StreamRetry is the reconnection delay an event stream's "retry:"
	// line asks an EventSource for. Default DefaultStreamRetry.
	StreamRetry time.Duration
	// MaxOutbound caps the bytes waiting to be sent to one connection; one
	// that falls further behind is closed with 1008. Default
	// DefaultMaxOutbound.
	MaxOutbound int
	// PingInterval is how long a WebSocket connection may stay silent
	// before Herald pings it; any frame from the peer counts as life.
	// Default DefaultPingInterval, below common load balancer idle cut-offs.
	PingInterval time.Duration
	// PongTimeout is how long a pinged connection has to send anything
	// before it is closed as dead. Default DefaultPongTimeout.
	PongTimeout time.Duration
	// MaxConns caps open WebSocket connections; upgrades past it are
	// answered 503 with Retry-After. Default: the process's open-file
	// limit less 64.
	MaxConns int
	// MaxAcceptRate caps WebSocket upgrades per second, so a reconnect
	// storm is turned away cheaply with 503 and Retry-After instead of
	// starving connected clients. 0 means DefaultMaxAcceptRate; a negative
	// value means no limit.
	MaxAcceptRate int
	// CheckOrigin reports whether a browser page from origin may open a
	// WebSocket; refused upgrades are answered 403. nil allows every origin.
	// Requests without an Origin header (non-browser clients) are not
	// checked.
	CheckOrigin func(origin []byte) bool
	// CheckUpgrade sees every upgrade request that passed RFC 6455's checks
	// and CheckOrigin, headers and query, before any endpoint does: the
	// place for authentication. It runs on an event loop, so it must not
	// block. A *codec.HTTPError it returns is the answer; any other error
	// is answered 400.
	CheckUpgrade func(req *codec.Request) error
	// HTTP answers plain HTTP GET requests on the same port, by exact path:
	// the demo page, /metrics, /readyz. /healthz is built in.
	HTTP map[string]HTTPHandler
	// Compression accepts permessage-deflate (RFC 7692) when a client
	// offers it, answering server_no_context_takeover and
	// client_no_context_takeover: messages are compressed and inflated each
	// on its own, so one compressed frame can serve every socket and no
	// socket keeps a compression window while idle. Compressed client
	// messages are inflated on the loop with a per-loop inflater, and
	// MaxMessageSize applies to their inflated size.
	Compression bool
	// CompressionLevel is the deflate level of what the engine compresses
	// itself (the echo endpoint's replies): 1 (fastest) to 9, or -2 for
	// Huffman only. 0 means deflate.DefaultLevel, the fastest.
	CompressionLevel int
	// Subprotocols are the names the upgrade may select from a client's
	// Sec-WebSocket-Protocol offer: the first name the client offers that
	// is on this list. Conn.Subprotocol says which was selected.
	Subprotocols []string
	// Logger receives the engine's logs; nil means slog.Default().
	Logger *slog.Logger
}

// HTTPHandler answers a plain HTTP GET request. It appends the response
// body to dst and returns it with the status and content type. It runs on
// an event loop, so it must be quick: a slow handler delays every socket
// on that loop.
type HTTPHandler func(dst []byte, req *codec.Request) (body []byte, status int, contentType string)

// EchoPath is where the echo endpoint lives when Config.Echo is set.
const EchoPath = "/echo"

// Defaults of Config's zero values. The herald command's flags use them
// too, so that the engine and its command line never disagree.
const (
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultCloseTimeout     = 3 * time.Second
	DefaultPingInterval     = 25 * time.Second
	DefaultPongTimeout      = 10 * time.Second
	DefaultMaxOutbound      = 1 << 20
	DefaultMaxAcceptRate    = 20_000
)

// MaxLoops is the most event loops a Server runs: endpoints may name loops
// by a bit of a 64-bit mask.
const MaxLoops = 64

const (
	// maxSweepInterval is how often each loop checks its connections'
	// deadlines at most; shorter timeouts sweep more often.
	maxSweepInterval = 250 * time.Millisecond
	// maxHeadSizeLimit keeps the scan position of a request head in the
	// 16 bits conn gives it.
	maxHeadSizeLimit = 1<<16 - 1
)

func (c *Config) setDefaults() {
	if c.Loops <= 0 {
		c.Loops = runtime.NumCPU()
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = codec.DefaultMaxMessageSize
	}
	if c.MaxHeadSize <= 0 {
		c.MaxHeadSize = codec.DefaultMaxHeadSize
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = DefaultPongTimeout
	}
	if c.MaxConns <= 0 {
		c.MaxConns = defaultMaxConns()
	}
	if c.MaxOutbound <= 0 {
		c.MaxOutbound = DefaultMaxOutbound
	}
	if c.StreamRetry <= 0 {
		c.StreamRetry = DefaultStreamRetry
	}
	if c.MaxAcceptRate == 0 {
		c.MaxAcceptRate = DefaultMaxAcceptRate
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// defaultMaxConns leaves a few files for the listener, NATS and logs.
func defaultMaxConns() int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<30 {
		return 1 << 30
	}
	return max(int(lim.Cur)-64, 1)
}

// Server is a running Herald engine: one listener and its event loops.
type Server struct {
	cfg      Config
	log      *slog.Logger
	upgrader codec.Upgrader
	readers  sync.Pool // *reader: state of messages that span callbacks
	epoch    time.Time // the zero of clock
	// endpoints[i] serves the paths whose route is i+1, as event streams
	// where streams[i] is set.
	endpoints []Endpoint
	streams   []bool
	tickers   []Ticker // the endpoints that are Tickers
	paths     map[string]uint8

	// sweepEvery is how often loops sweep; sweepPeriod how long a sweep of
	// all open connections may take, spread over that many sweeps.
	sweepEvery, sweepPeriod time.Duration

	// Shared by all loops, but touched only when a connection upgrades or
	// closes, never per frame or per delivery.
	wsConns  atomic.Int64 // open WebSocket connections, for MaxConns
	draining atomic.Bool
	// drainStart and drainSpread are set before draining, in nanoseconds.
	drainStart, drainSpread atomic.Int64

	loopsMu sync.Mutex
	loops   atomic.Pointer[[]*Loop] // copy on write: read without a lock on every open

	eng     gnet.Engine
	addr    string
	booted  chan struct{}
	done    chan error // gnet.Run's result
	stopped chan struct{}
	stop    sync.Once
}

// New checks cfg and returns a Server ready to Start.
func New(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		return nil, errors.New("engine: no listen address")
	}
	_, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("engine: listen address %q: %w", cfg.Addr, err)
	}
	if cfg.ReusePort && (port == "" || port == "0") {
		return nil, fmt.Errorf("engine: listen address %q: sharing a port (ReusePort) needs a fixed port", cfg.Addr)
	}
	cfg.setDefaults()
	if cfg.Loops > MaxLoops {
		return nil, fmt.Errorf("engine: %d event loops is over the most Herald supports, %d", cfg.Loops, MaxLoops)
	}
	if cfg.MaxHeadSize > maxHeadSizeLimit {
		return nil, fmt.Errorf("engine: request head limit %d is over the most Herald supports, %d", cfg.MaxHeadSize, maxHeadSizeLimit)
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		booted:  make(chan struct{}),
		done:    make(chan error, 1),
		stopped: make(chan struct{}),
		epoch:   time.Now(),
	}
	s.sweepPeriod = min(cfg.PingInterval, cfg.PongTimeout) / 4
	s.sweepEvery = min(maxSweepInterval, cfg.HandshakeTimeout/4, cfg.CloseTimeout/4, s.sweepPeriod)
	s.upgrader.CheckOrigin = cfg.CheckOrigin
	s.upgrader.Deflate = cfg.Compression
	if cfg.Compression {
		if _, err := deflate.NewCompressor(cfg.CompressionLevel, 15); err != nil {
			return nil, fmt.Errorf("engine: compression level %d: %w", cfg.CompressionLevel, err)
		}
	}
	if len(cfg.Subprotocols) > MaxSubprotocols {
		return nil, fmt.Errorf("engine: %d subprotocols, more than %d", len(cfg.Subprotocols), MaxSubprotocols)
	}
	for _, p := range cfg.Subprotocols {
		if !ValidSubprotocol(p) {
			return nil, fmt.Errorf("engine: subprotocol %q is not an HTTP token", p)
		}
	}
	if len(cfg.Subprotocols) > 0 {
		s.upgrader.SelectProtocol = s.selectProtocol
	}
	s.readers.New = func() any { return new(reader) }
	s.paths = make(map[string]uint8)
	endpoints := cfg.Endpoints
	if cfg.Echo {
		endpoints = maps.Clone(endpoints)
		if endpoints == nil {
			endpoints = make(map[string]Endpoint, 1)
		}
		endpoints[EchoPath] = echo{}
	}
	for _, path := range slices.Sorted(maps.Keys(cfg.Streams)) {
		if _, both := endpoints[path]; both {
			return nil, fmt.Errorf("engine: %q is both a WebSocket endpoint and an event stream", path)
		}
	}
	add := func(path string, e Endpoint, stream bool) error {
		if e == nil {
			return fmt.Errorf("engine: endpoint %q is nil", path)
		}
		if len(s.endpoints) == 255 {
			return errors.New("engine: more than 255 endpoints")
		}
		s.endpoints = append(s.endpoints, e)
		s.streams = append(s.streams, stream)
		if t, ok := e.(Ticker); ok && !slices.ContainsFunc(s.tickers, func(x Ticker) bool { return sameTicker(x, t) }) {
			s.tickers = append(s.tickers, t)
		}
		s.paths[path] = uint8(len(s.endpoints))
		return nil
	}
	for _, path := range slices.Sorted(maps.Keys(endpoints)) {
		if err := add(path, endpoints[path], false); err != nil {
			return nil, err
		}
	}
	for _, path := range slices.Sorted(maps.Keys(cfg.Streams)) {
		if err := add(path, cfg.Streams[path], true); err != nil {
			return nil, err
		}
	}
	s.loops.Store(new([]*Loop))
	return s, nil
}

// sameTicker reports whether a and b are one endpoint, which then ticks
// once however many paths serve it. Endpoints of a type == cannot compare
// are taken as different.
func sameTicker(a, b Ticker) bool {
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	return ta == tb && ta.Comparable() && a == b
}

// selectProtocol picks the first offered token that is one of
// Config.Subprotocols.
func (s *Server) selectProtocol(offered []byte) []byte {
	for len(offered) > 0 {
		var tok []byte
		tok, offered = codec.NextToken(offered)
		if s.protocolIndex(tok) > 0 {
			return tok
		}
	}
	return nil
}

// MaxSubprotocols is how many names Config.Subprotocols may hold: a
// connection keeps which one it selected in four bits.
const MaxSubprotocols = 15

// protocolIndex is 1 + the index of name in Config.Subprotocols, or 0.
func (s *Server) protocolIndex(name []byte) uint8 {
	for i, p := range s.cfg.Subprotocols {
		if string(name) == p {
			return uint8(i + 1)
		}
	}
	return 0
}

// ValidSubprotocol reports whether p is an RFC 9110 token, which a subprotocol
// name must be (RFC 6455 section 4.1).
func ValidSubprotocol(p string) bool { return codec.IsToken([]byte(p)) }

// Start binds the listener and starts the event loops. It returns once the
// server accepts connections, or with the error that prevented it.
func (s *Server) Start() error {
	go func() {
		s.done <- gnet.Run(&handler{s: s}, "tcp://"+s.cfg.Addr,
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(s.cfg.Loops),
			gnet.WithReuseAddr(true),
			gnet.WithReusePort(s.cfg.ReusePort),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithLogger(gnetlog.Logger{Log: s.log}),
		)
	}()
	select {
	case <-s.booted:
	case err := <-s.done:
		if err == nil {
			err = errors.New("stopped before it started")
		}
		return fmt.Errorf("engine: listen on %s: %w", s.cfg.Addr, err)
	}
	addr, err := s.boundAddr()
	if err != nil {
		_ = s.Stop(context.Background())
		return err
	}
	s.addr = addr
	go s.sweepLoops()
	s.log.Info("listening", "addr", s.addr, "loops", s.cfg.Loops, "echo", s.cfg.Echo)
	return nil
}

// Addr returns the address the server listens on, with the real port when
// Config.Addr asked for port 0.
func (s *Server) Addr() string { return s.addr }

// Stop closes the listener and every connection and waits for the event
// loops to end, or for ctx.
func (s *Server) Stop(ctx context.Context) error {
	var err error
	s.stop.Do(func() {
		close(s.stopped)
		// gnet's Stop polls for the end of the loops every half second;
		// gnet.Run returning says it at once.
		go func() { _ = s.eng.Stop(ctx) }()
		select {
		case <-s.done:
		case <-ctx.Done():
			err = ctx.Err()
		}
	})
	if err != nil {
		return fmt.Errorf("engine: stop: %w", err)
	}
	return nil
}

// boundAddr asks the kernel which address the listener got.
func (s *Server) boundAddr() (string, error) {
	fd, err := s.eng.Dup()
	if err != nil {
		return "", fmt.Errorf("engine: find listen address: %w", err)
	}
	defer unix.Close(fd)
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return "", fmt.Errorf("engine: find listen address: %w", err)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), fmt.Sprint(a.Port)), nil
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), fmt.Sprint(a.Port)), nil
	}
	return "", fmt.Errorf("engine: listener has address family %T", sa)
}

// Stats are the server's counters, summed over its loops.
type Stats struct {
	Open              int64  // TCP connections open now, in any state
	Upgraded          int64  // WebSocket connections open now, event streams included
	Streams           int64  // event streams open now
	StreamsAccepted   uint64 // event streams opened since Start
	Accepted          uint64 // TCP connections accepted since Start
	SlowConsumers     uint64 // connections closed for falling behind
	Pings             uint64 // pings sent to silent connections
	Reaped            uint64 // connections closed for not answering a ping
	HandshakeTimeouts uint64 // connections closed before completing a request
	Inflated          uint64 // compressed client messages inflated (permessage-deflate)
	// Refused counts refused upgrades by reason, named by RefusalReasons.
	Refused [numRefusals]uint64
}

// Stats reads the counters. It takes no lock any loop takes.
func (s *Server) Stats() Stats {
	st := Stats{Upgraded: s.wsConns.Load()}
	for _, l := range *s.loops.Load() {
		st.Open += l.stats.open.Load()
		st.Accepted += l.stats.accepted.Load()
		st.Streams += l.stats.streams.Load()
		st.StreamsAccepted += l.stats.streamsAccepted.Load()
		st.SlowConsumers += l.stats.slowConsumers.Load()
		st.Pings += l.stats.pings.Load()
		st.Reaped += l.stats.reaped.Load()
		st.HandshakeTimeouts += l.stats.handshakeTimeouts.Load()
		st.Inflated += l.stats.inflated.Load()
		for i := range st.Refused {
			st.Refused[i] += l.stats.refused[i].Load()
		}
	}
	return st
}

// loopFor returns the state Herald keeps for event loop el, creating it on
// the first connection that loop sees: gnet cannot list its loops up front.
func (s *Server) loopFor(el gnet.EventLoop) *Loop {
	for _, l := range *s.loops.Load() {
		if l.el == el {
			return l
		}
	}
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	old := *s.loops.Load()
	for _, l := range old {
		if l.el == el {
			return l
		}
	}
	l := newLoop(s, el, len(old))
	grown := append(append(make([]*Loop, 0, len(old)+1), old...), l)
	s.loops.Store(&grown)
	return l
}

// sweepLoops asks every loop, on its own goroutine, to enforce its
// connections' deadlines.
func (s *Server) sweepLoops() {
	t := time.NewTicker(s.sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stopped:
			return
		case <-t.C:
		}
		for _, l := range *s.loops.Load() {
			if err := l.el.Execute(context.Background(), l.sweepTask); err != nil {
				return // the engine is shutting down
			}
		}
	}
}
