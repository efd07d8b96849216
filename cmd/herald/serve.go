package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/flate"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/codec/deflate"
	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/push"
	"github.com/herald-ws/herald/engine/push/auth"
	"github.com/herald-ws/herald/pubsub"
	"github.com/herald-ws/herald/pubsub/history"
)

// echoMaxMessageSize is the message limit in echo mode unless one is given:
// the largest message Autobahn's test suite sends (case 9.1.6, 16 MiB), so
// that conformance runs pass with no extra flags.
const echoMaxMessageSize = 16 << 20

// A drain ends within --drain-timeout plus drainGrace; the last
// stopReserve of it is for closing the sockets left and NATS.
const (
	drainGrace  = 900 * time.Millisecond
	stopReserve = 400 * time.Millisecond
)

func runServe(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", "[flags]", `Runs the WebSocket server.

Clients connect to ws://ADDR/ws?channel=NAME (repeat channel for more) and
receive every message published on NATS to those channels (NATS subjects;
wildcards prices.* and game.> allowed). They can also subscribe in band with
{"op":"subscribe","channel":"NAME","id":"1"}. The 101 (for channels in the
URL) and the ack (in band) come once NATS has the subscription; from then
on every message on the channel arrives exactly once, overlapping wildcard
patterns included. GET /sse?channel=NAME is the same as a Server-Sent
Events stream (text/event-stream, for EventSource), the fallback for
networks and proxies that break WebSocket: same query, permissions and
limits (it counts in --max-conns), one event per message whose data is the
envelope and whose id (EPOCH:SEQ on --history channels) a reconnecting
EventSource sends back as Last-Event-ID to resume with nothing lost; a
heartbeat comment every --ping-interval. By default an embedded NATS server listens on
--nats-listen, so any NATS client can publish:
herald pub prices.AAPL '{"px":187.2}'  or  nats pub prices.AAPL '{"px":187.2}'.
Plain HTTP on the same port: GET / (the live demo page, see herald demo)
and GET /chat (a chat room; it needs --public-publish 'chat.*' for anonymous
pages), which --no-demo turns off, GET /healthz (alive), GET /readyz (NATS
connected and not draining) and GET /metrics (Prometheus; --metrics=false
turns it off there).

--admin-listen starts a second, plain HTTP listener for operators, off the
event loops and loopback unless a host is given: /metrics, /readyz (of this
process, which behind --reuseport the public port cannot address),
/debug/connections?sort=pending|age&limit=N (the sockets furthest behind,
with their channels, user, age and unsent bytes), /debug/channels?limit=N
(the channels with the most sockets here) and /debug/pprof/.

SIGTERM or SIGINT drains: new connections are refused, open ones are closed
with 1001 "going away" spread over --drain-timeout, then Herald exits 0. A
second signal exits at once.`, stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "`address` to accept WebSocket and HTTP connections on (host:port)")
	reusePort := fs.Bool("reuseport", false, "share --listen with other processes started with --reuseport (SO_REUSEPORT): the kernel spreads new connections among them;\nfor several Herald processes on one box (past one process's open-file limit), and for restarts with no refused connection: start the new one, then SIGTERM the old")
	echo := fs.Bool("echo", false, "serve /echo, which echoes every text and binary message back (for conformance suites such as Autobahn)")
	maxMessage := sizeFlag(fs, "max-message-size", 0,
		"largest message a client may send, summed over fragments, e.g. 64KiB, 1MiB; larger ones close the connection with 1009 (default 1MiB, or 16MiB with --echo)")
	maxHead := sizeFlag(fs, "max-header-size", codec.DefaultMaxHeadSize, "largest HTTP request head; larger ones are answered 431")
	loops := fs.Int("loops", 0, "event loops (threads serving sockets); 0 means one per CPU")
	natsURL := fs.String("nats", "", "`URL` of an existing NATS server or cluster (comma-separated) to join instead of running an embedded one")
	natsSecurity := natsSecurityFlags(fs)
	natsListen := fs.String("nats-listen", pubsub.DefaultListen, "`address` the embedded NATS server listens on for publishers (ignored with --nats)")
	natsWide := fs.String("nats-wide", "", "comma-separated NATS `patterns`, e.g. user.*: one NATS subscription per pattern instead of one per channel under it, for cheap personal channels;\nNATS then sends this Herald every message under them, listened to here or not, so use them for many small channels, not busy subjects")
	noWildcards := fs.Bool("no-wildcards", false, "refuse wildcard channels (prices.*, game.>)")
	noDemo := fs.Bool("no-demo", false, "do not serve the demo pages at / (see herald demo) and /chat")
	maxChannels := fs.Int("max-channels", push.DefaultMaxChannels, "most channels one connection may subscribe to")
	maxOutbound := sizeFlag(fs, "max-outbound", engine.DefaultMaxOutbound, "most unsent bytes a connection may have queued; a subscriber further behind is closed with 1008")
	handshakeTimeout := fs.Duration("handshake-timeout", engine.DefaultHandshakeTimeout,
		"close connections that have not sent a complete HTTP request within this time (slowloris), and answer 503 to an upgrade whose channels NATS has not confirmed within it")
	pingInterval := fs.Duration("ping-interval", engine.DefaultPingInterval, "ping a WebSocket connection silent this long; keep it below your load balancer's idle timeout")
	pongTimeout := fs.Duration("pong-timeout", engine.DefaultPongTimeout, "close a pinged connection that sends nothing within this time")
	maxConns := fs.Int("max-conns", 0, "most open WebSocket connections; past it upgrades are answered 503 with Retry-After (default: the open-file limit less 64)")
	sse := fs.Bool("sse", true, "serve GET /sse, the push protocol as Server-Sent Events (text/event-stream) for EventSource: the fallback where WebSocket upgrades break;\nsame query, permissions and limits as /ws; --sse=false answers it 404")
	sseRetry := fs.Duration("sse-retry", engine.DefaultStreamRetry, "reconnection delay an /sse stream asks EventSource for (its retry: line); a stream turned away with 503 (draining, limits) is told Retry-After instead")
	maxAcceptRate := fs.Int("max-accept-rate", engine.DefaultMaxAcceptRate, "most WebSocket upgrades per second, so a reconnect storm is turned away with 503 and Retry-After; 0 means no limit")
	var origins originList
	fs.Var(&origins, "allowed-origins", "comma-separated browser `origins` whose pages may connect, e.g. https://app.example.com,https://*.example.com; others get 403 (default: any origin; requests without an Origin header are always allowed)")
	access := addAccessFlags(fs)
	hist := addHistoryFlags(fs)
	drainTimeout := fs.Duration("drain-timeout", 10*time.Second, "on SIGTERM, spread closing the open connections over this time")
	adminListen := fs.String("admin-listen", "", "`address` of the admin listener (/metrics, /readyz, /debug/connections, /debug/channels, /debug/pprof/), e.g. :9090;\nwithout a host it binds loopback (127.0.0.1); a host that is not loopback is allowed but logged as a warning, since it shows users and client addresses (default: off)")
	publicMetrics := fs.Bool("metrics", true, "serve /metrics on --listen; --metrics=false keeps it to the admin listener, for deployments that must not expose it")
	noCompression := fs.Bool("no-compression", false, "decline permessage-deflate: send and accept only uncompressed frames\n(by default a client that offers it, as every browser does, gets each message compressed once for all such sockets,\nand may send compressed commands)")
	compressionMinSize := fs.Int("compression-min-size", push.DefaultCompressionMinSize, "smallest message, in `bytes`, sent compressed to permessage-deflate clients; smaller ones go plain,\nsince compressing a message on its own saves next to nothing below a few hundred bytes; 0 compresses everything")
	compressionLevel := fs.Int("compression-level", deflate.DefaultLevel, "deflate `level` of compressed messages: 1 (fastest, the default) to 9 (smallest), or -2 for Huffman coding only")
	subprotocols := fs.String("subprotocols", "", "comma-separated subprotocol `names` Herald selects when a client offers them, besides herald.json (the JSON envelope)\nand herald.raw (bare payloads, as ?format=raw); they get the JSON envelope. Browsers fail a connection that offered\nsubprotocols when none is selected, so list here what pages written for another server ask for, e.g. chat")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "log `format`: text or json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	if !*publicMetrics && *adminListen == "" {
		log.Warn("--metrics=false without --admin-listen: no metrics are served anywhere")
	}
	if *compressionLevel != flate.HuffmanOnly && (*compressionLevel < 1 || *compressionLevel > 9) {
		return fmt.Errorf("--compression-level %d: want 1 to 9, or -2 for Huffman only", *compressionLevel)
	}
	if *compressionMinSize < 0 {
		return fmt.Errorf("--compression-min-size %d: want 0 or more", *compressionMinSize)
	}
	protocols := []string{push.SubprotocolJSON, push.SubprotocolRaw}
	for _, p := range splitList(*subprotocols) {
		if !engine.ValidSubprotocol(p) {
			return fmt.Errorf("--subprotocols: %q is not a valid subprotocol name (an HTTP token)", p)
		}
		if !slices.Contains(protocols, p) {
			protocols = append(protocols, p)
		}
	}
	minSize := *compressionMinSize
	if minSize == 0 {
		minSize = -1 // push.Config's "compress everything"
	}
	pushCfg := push.Config{MaxChannels: *maxChannels, NoWildcards: *noWildcards,
		CompressionMinSize: minSize, CompressionLevel: *compressionLevel}
	authCfg, err := access.config(&pushCfg)
	if err != nil {
		return err
	}
	if authCfg != nil {
		authCfg.Logger = log
	}
	histCfg, err := hist.config(*natsURL != "")
	if err != nil {
		return err
	}
	if histCfg != nil {
		histCfg.Logger = log
	}
	if *maxAcceptRate == 0 {
		*maxAcceptRate = -1 // the engine's "no limit"
	}
	if *maxMessage == 0 {
		*maxMessage = codec.DefaultMaxMessageSize
		if *echo {
			*maxMessage = echoMaxMessageSize
		}
	}

	h, err := startHerald(heraldConfig{
		Engine: engine.Config{
			Addr:             *listen,
			ReusePort:        *reusePort,
			Loops:            *loops,
			MaxMessageSize:   *maxMessage,
			MaxHeadSize:      int(*maxHead),
			HandshakeTimeout: *handshakeTimeout,
			PingInterval:     *pingInterval,
			StreamRetry:      *sseRetry,
			PongTimeout:      *pongTimeout,
			MaxConns:         *maxConns,
			MaxAcceptRate:    *maxAcceptRate,
			CheckOrigin:      origins.check(),
			Echo:             *echo,
			MaxOutbound:      int(*maxOutbound),
			Logger:           log,
			HTTP:             demoRoutes(!*noDemo),
			Compression:      !*noCompression,
			CompressionLevel: *compressionLevel,
			Subprotocols:     protocols,
		},
		Push:         pushCfg,
		Auth:         authCfg,
		NATS:         *natsURL,
		NATSSecurity: natsSecurity(),
		NATSListen:   *natsListen,
		NATSWide:     splitList(*natsWide),
		Admin:        *adminListen,
		NoMetrics:    !*publicMetrics,
		NoSSE:        !*sse,
		History:      histCfg,
		DataDir:      hist.storeDir(),
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "herald listening on %s (ws://%s%s), publish to NATS at %s\n", h.srv.Addr(), h.srv.Addr(), push.Path, h.broker.RedactedURL())
	if h.admin != nil {
		fmt.Fprintf(stdout, "herald admin on http://%s/\n", h.admin.Addr())
	}
	settleCtx, stopSettling := context.WithCancel(context.Background())
	defer stopSettling()
	go settleMemory(settleCtx, h.srv, log)

	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	got := <-sig
	log.Info("shutting down", "signal", got.String(), "drain_timeout", *drainTimeout)
	go func() {
		got := <-sig
		log.Warn("second signal, exiting at once", "signal", got.String())
		os.Exit(1)
	}()
	// The whole shutdown fits in --drain-timeout plus drainGrace: the
	// closes are spread over the timeout, clients that echo the close frame
	// are closed at once, and past the spread the few that have not
	// answered get what is left of the grace before their sockets are cut.
	deadline := time.Now().Add(*drainTimeout + drainGrace)
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(-stopReserve))
	defer cancel()
	if err := h.srv.Drain(ctx, *drainTimeout); err != nil {
		log.Warn("drain did not finish; closing the remaining connections", "err", err)
	}
	stopCtx, cancelStop := context.WithDeadline(context.Background(), deadline)
	defer cancelStop()
	if err := h.stop(stopCtx); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// heraldConfig is everything a running Herald is made of.
type heraldConfig struct {
	Engine     engine.Config // Endpoints gets the push endpoint from startHerald
	Push       push.Config   // Bus and Logger are set by startHerald
	Auth       *auth.Config  // how client tokens are verified; nil for none
	NATS       string        // external NATS URL; "" runs an embedded server
	NATSListen string        // the embedded server's address
	// NATSSecurity authenticates to the external NATS and secures the link.
	NATSSecurity pubsub.Security
	NATSWide     []string // pubsub.Config.Wide
	// Admin is the admin listener's address (see resolveAdminAddr); ""
	// for none.
	Admin string
	// NoMetrics keeps /metrics off the public port.
	NoMetrics bool
	// NoSSE leaves push.StreamPath unserved.
	NoSSE bool
	// History serves channel history from JetStream; nil for none. With
	// the embedded NATS, JetStream keeps its files under DataDir.
	History *history.Config
	DataDir string
}

// herald is a running server: the engine, the push protocol on it, and
// the NATS broker that feeds the protocol.
type herald struct {
	srv      *engine.Server
	hub      *push.Hub
	broker   *pubsub.Broker
	verifier *auth.Verifier // nil without auth
	metrics  *metrics       // one registry for the public port and the admin listener
	admin    *adminServer   // nil without --admin-listen
	history  *history.Store // nil without history
}

// startHerald connects to NATS (or starts the embedded server) and starts
// the engine with the push protocol on top of it.
func startHerald(cfg heraldConfig) (*herald, error) {
	h := new(herald)
	if cfg.Auth != nil {
		// A JWKS is fetched here, before anything listens: a key source
		// that does not work is a startup error, not 401s for everyone.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		v, err := auth.New(ctx, *cfg.Auth)
		cancel()
		if err != nil {
			return nil, err
		}
		h.verifier = v
		cfg.Push.Verify = v.Verify
	}
	broker, err := pubsub.Start(pubsub.Config{
		URL:       cfg.NATS,
		Security:  cfg.NATSSecurity,
		Listen:    cfg.NATSListen,
		Wide:      cfg.NATSWide,
		Handler:   h,
		Logger:    cfg.Engine.Logger,
		JetStream: cfg.History != nil && cfg.NATS == "",
		StoreDir:  cfg.DataDir,
	})
	if err != nil {
		h.closeVerifier()
		return nil, err
	}
	h.broker = broker
	cfg.Push.Bus = natsBus{Broker: broker}
	if cfg.History != nil {
		if err := h.openHistory(*cfg.History); err != nil {
			broker.Close()
			h.closeVerifier()
			return nil, err
		}
		cfg.Push.Bus = natsBus{Broker: broker, history: h.history}
		cfg.Push.History = hubHistory{h.history}
	}
	cfg.Push.Logger = cfg.Engine.Logger
	h.hub = push.New(cfg.Push)
	cfg.Engine.Endpoints = map[string]engine.Endpoint{push.Path: h.hub.Endpoint()}
	if !cfg.NoSSE {
		cfg.Engine.Streams = map[string]engine.Endpoint{push.StreamPath: h.hub.Endpoint()}
	}
	h.metrics = newMetrics(h)
	routes := map[string]engine.HTTPHandler{"/readyz": h.serveReady}
	if !cfg.NoMetrics {
		routes["/metrics"] = h.metrics.serve
	}
	cfg.Engine.HTTP = mergeHandlers(cfg.Engine.HTTP, routes)
	srv, err := engine.New(cfg.Engine)
	if err == nil {
		h.srv = srv
		err = srv.Start()
	}
	if err == nil && cfg.Admin != "" {
		if h.admin, err = startAdmin(h, cfg.Admin, cfg.Engine.Logger); err != nil {
			_ = srv.Stop(context.Background())
		}
	}
	if err != nil {
		h.hub.Close()
		h.closeHistory()
		broker.Close()
		h.closeVerifier()
		return nil, err
	}
	return h, nil
}

func (h *herald) closeVerifier() {
	if h.verifier != nil {
		h.verifier.Close()
	}
}

// Message and Live pass what NATS delivers to the hub. The broker calls
// them only once a socket has subscribed, which is after h.hub is set.
func (h *herald) Message(subject string, data []byte, subs []uint64) {
	h.hub.Message(subject, data, subs)
}
func (h *herald) Live(id uint64, err error) {
	h.hub.Live(id, err)
}

func (h *herald) closeHistory() {
	if h.history != nil {
		h.history.Close()
	}
}

// splitList reads a comma-separated flag: the items trimmed, empty ones
// left out (pubsub validates what they say).
func splitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// mergeHandlers returns the handlers of both maps; extra wins on a clash.
func mergeHandlers(base, extra map[string]engine.HTTPHandler) map[string]engine.HTTPHandler {
	out := maps.Clone(base)
	if out == nil {
		out = make(map[string]engine.HTTPHandler, len(extra))
	}
	maps.Copy(out, extra)
	return out
}

// serveReady answers /readyz: 200 while Herald should get new clients,
// 503 while NATS is down (messages would not arrive) or while draining, so
// a load balancer sends clients elsewhere.
func (h *herald) serveReady(dst []byte, _ *codec.Request) ([]byte, int, string) {
	switch {
	case h.srv.Draining():
		return append(dst, "draining\n"...), 503, "text/plain; charset=utf-8"
	case !h.broker.Connected():
		return append(dst, "nats disconnected\n"...), 503, "text/plain; charset=utf-8"
	}
	return append(dst, "ready\n"...), 200, "text/plain; charset=utf-8"
}

// stop closes every connection, then the NATS connection.
func (h *herald) stop(ctx context.Context) error {
	var adminErr error
	if h.admin != nil {
		adminErr = h.admin.close(ctx)
	}
	err := errors.Join(h.srv.Stop(ctx), adminErr)
	h.hub.Close()
	h.closeHistory()
	h.broker.Close()
	h.closeVerifier()
	return err
}

// newLogger builds the process logger from the --log-level and --log-format
// flags.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
