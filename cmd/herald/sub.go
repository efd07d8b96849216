package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-ws/herald/bench"

	"github.com/herald-ws/herald/engine/push"
)

func runSub(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sub", "[flags] URL", `Connects to a Herald WebSocket URL and prints each message as it arrives,
one a line: CHANNEL DATA for Herald's envelopes, or each message exactly as
received with --raw. Status lines (connected, subscribed, why the connection
closed, reconnects) go to standard error. URL is ws:// or wss:// (http:// and
https:// work too); without a path it is /ws. Channels come from the URL's
query (?channel=prices.AAPL) and from --channel, subscribed in band once
connected.

It answers the server's pings and pings a silent server itself. When a
connection that was up ends (the server restarts, 1001 going away; the
network drops; 1008 slow consumer), it reconnects with exponential backoff
and full jitter: after the n-th failure in a row it waits a random time
between 0 and min(--reconnect-max, --reconnect-min * 2^(n-1)), and at least
the server's Retry-After (503), up to --reconnect-max; a connection that
lasted 10s starts the backoff afresh. One line on standard error reports each
reconnect. A refusal that would come again is final and ends it with exit 1:
an upgrade answered 400, 401, 403 or 404, a close with 4001 (token expired:
herald sub cannot renew its token), 4003, or a protocol error, and an in-band
subscribe refused (forbidden, invalid_channel). So does a first connection
that fails: a URL that never worked is reported, not retried. It exits 0 on
Ctrl-C. With --no-reconnect it exits when the connection ends: 0 after a
normal close, 1 otherwise, saying why, e.g. "connection closed: 1008 slow
consumer".

History channels (herald serve --history) carry the stream sequence of each
message, {"channel":"chat.a","seq":1234,"data":...}, and the stream's epoch
in each subscribe's ack. herald sub keeps, for every channel it follows, the
highest seq seen and that epoch, and after a reconnect it subscribes each
channel in band with its own position, {"op":"subscribe","channel":"chat.a",
"since":1234,"epoch":"E"}, so that nothing published while it was away is
missed. The reconnect URL keeps the first one's query (token, format, ...)
but not its channel, since, epoch or last, which apply to every channel of
a URL alike. Each such subscribe's status line says how many messages were
replayed; "recovered:false" says that some are lost (no longer stored, or
the stream was recreated). A channel without a position yet (no message
seen) resumes live only, or with the latest messages if the URL had last=1.
With ?format=raw no seq is seen and nothing is resumed.

Proxies: ws:// URLs go through HTTP_PROXY and wss:// through HTTPS_PROXY
(or http_proxy, https_proxy) unless NO_PROXY names the host, as in Go's
net/http: localhost and loopback addresses are always reached directly.
--proxy overrides the environment. The connection is tunnelled with HTTP
CONNECT, with Basic credentials if the proxy URL has them.

Examples:
  herald sub 'ws://127.0.0.1:8080/ws?channel=prices.*'
  herald sub --channel prices.AAPL --channel prices.MSFT ws://127.0.0.1:8080
  herald sub 'ws://127.0.0.1:8080/ws?channel=chat.lobby&since=1234&epoch=E'
  herald sub --proxy http://user:pass@proxy.internal:3128 wss://push.example.com/ws`, stderr)
	var channels []string
	fs.Func("channel", "subscribe to `NAME` in band once connected (repeat for more)", func(ch string) error {
		channels = append(channels, ch)
		return nil
	})
	raw := fs.Bool("raw", false, "print each message exactly as received instead of CHANNEL DATA")
	proxy := fs.String("proxy", "", "HTTP proxy `URL` to tunnel through, http://[user:pass@]host:port, instead of the environment's; \"direct\" for none")
	timeout := fs.Duration("timeout", 10*time.Second, "give up connecting (TCP, proxy, TLS and WebSocket handshake) after this long")
	token := fs.String("token", "", "JWT to authenticate with, sent as Authorization: Bearer (so it stays out of URLs and proxy logs); mint one for development with herald token")
	ping := fs.Duration("ping", 30*time.Second, "ping the server after this long without hearing from it, and give up after twice as long; 0 never pings")
	noReconnect := fs.Bool("no-reconnect", false, "exit when the connection ends instead of reconnecting")
	reconnectMin := fs.Duration("reconnect-min", 500*time.Millisecond, "the backoff's first ceiling: the first reconnect waits up to this long, the n-th up to 2^(n-1) times it")
	reconnectMax := fs.Duration("reconnect-max", 30*time.Second, "the longest wait between two reconnects")
	// Flags come before the URL: parseArgs returns what follows them.
	positional, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(positional) != 1 {
		fmt.Fprintf(stderr, "want one URL, got %d argument(s)", len(positional))
		for i, a := range positional {
			if i > 0 && strings.HasPrefix(a, "-") {
				fmt.Fprint(stderr, " (flags go before the URL)")
				break
			}
		}
		fmt.Fprintln(stderr)
		fs.Usage()
		return errUsage
	}
	if *timeout <= 0 || *ping < 0 {
		fmt.Fprintln(stderr, "--timeout must be positive and --ping zero or more")
		return errUsage
	}
	if *reconnectMin <= 0 || *reconnectMax < *reconnectMin {
		fmt.Fprintln(stderr, "--reconnect-min must be positive and --reconnect-max at least --reconnect-min")
		return errUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return subscribe(ctx, subConfig{
		URL:          positional[0],
		Channels:     channels,
		Raw:          *raw,
		Proxy:        *proxy,
		Timeout:      *timeout,
		Ping:         *ping,
		Token:        *token,
		Getenv:       os.Getenv,
		NoReconnect:  *noReconnect,
		ReconnectMin: *reconnectMin,
		ReconnectMax: *reconnectMax,
	}, stdout, stderr)
}

// subConfig is what herald sub connects to and how.
type subConfig struct {
	URL      string
	Channels []string // subscribed in band once connected
	Raw      bool     // print messages as received
	Proxy    string   // --proxy: "" takes the environment's, "direct" none
	Timeout  time.Duration
	Ping     time.Duration       // 0: never ping
	Token    string              // sent as Authorization: Bearer; "" for none
	Getenv   func(string) string // reads the proxy variables, on every call

	NoReconnect  bool          // exit when the connection ends
	ReconnectMin time.Duration // the backoff's first ceiling; 0 is 500ms
	ReconnectMax time.Duration // the longest wait; 0 is 30s
}

// subscribe connects, subscribes and prints messages until ctx ends
// (Ctrl-C), reconnecting and resuming every channel where it was after a
// connection ends, unless cfg.NoReconnect. It returns nil after Ctrl-C
// (and with NoReconnect after a normal close), else an error that says why
// it gave up.
func subscribe(ctx context.Context, cfg subConfig, stdout, stderr io.Writer) error {
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = 500 * time.Millisecond
	}
	if cfg.ReconnectMax < cfg.ReconnectMin {
		cfg.ReconnectMax = max(30*time.Second, cfg.ReconnectMin)
	}
	target, err := wsURL(cfg.URL)
	if err != nil {
		return err
	}
	proxy, err := proxyFor(target, cfg.Proxy, cfg.Getenv)
	if err != nil {
		return err
	}
	dialer := websocket.Dialer{
		HandshakeTimeout: cfg.Timeout,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if proxy != nil {
				return dialProxy(ctx, proxy, addr)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	var header http.Header
	if cfg.Token != "" {
		header = http.Header{"Authorization": {"Bearer " + cfg.Token}}
	}
	via := ""
	if proxy != nil {
		via = " through proxy " + proxy.Redacted()
	}
	chans := newSubChannels(target, cfg.Channels)
	track := !rawFormat(target)
	again := reconnectURL(target)
	failures := 0 // in a row
	for first := true; ; first = false {
		u := target
		if !first {
			u = again
		}
		conn, resp, err := dialer.DialContext(ctx, u.String(), header)
		if err == nil {
			fmt.Fprintf(stderr, "connected to %s%s\n", bench.RedactURL(u.String()), via)
			s := &subSession{conn: conn, cfg: cfg, stdout: stdout, stderr: stderr, chans: chans, track: track}
			up := time.Now()
			err = s.start(ctx, first, first && urlAcks(target))
			conn.Close()
			if err == nil || cfg.NoReconnect {
				return err
			}
			if time.Since(up) >= stableAfter {
				failures = 0
			}
		} else {
			if ctx.Err() != nil {
				fmt.Fprintln(stderr, "interrupted before connecting")
				return nil
			}
			err = classifyDial(dialError(u, resp, err))
			if first || cfg.NoReconnect {
				return err
			}
		}
		var te *transientError
		if !errors.As(err, &te) {
			return err
		}
		failures++
		delay := reconnectDelay(failures, cfg.ReconnectMin, cfg.ReconnectMax, te.retryAfter, rand.Float64())
		fmt.Fprintf(stderr, "%v; reconnecting in %v (attempt %d)\n", err, delay.Round(time.Millisecond), failures)
		select {
		case <-ctx.Done():
			fmt.Fprintln(stderr, "interrupted while waiting to reconnect")
			return nil
		case <-time.After(delay):
		}
	}
}

// dialError says why connecting to u failed.
func dialError(u *url.URL, resp *http.Response, err error) error {
	if errors.Is(err, websocket.ErrBadHandshake) && resp != nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return &httpRefusal{
			msg:        fmt.Sprintf("%s refused the WebSocket upgrade: %s: %s", bench.RedactURL(u.String()), resp.Status, bytes.TrimSpace(body)),
			status:     resp.StatusCode,
			retryAfter: retryAfter(resp.Header.Get("Retry-After")),
		}
	}
	return fmt.Errorf("connect to %s: %w", bench.RedactURL(u.String()), err)
}

// subCommand is an in-band request to Herald.
type subCommand struct {
	Op      string  `json:"op"`
	Channel string  `json:"channel"`
	Since   *uint64 `json:"since,omitempty"`
	Epoch   string  `json:"epoch,omitempty"`
	Last    bool    `json:"last,omitempty"`
	ID      string  `json:"id"`
}

// subSession is one connection of herald sub.
type subSession struct {
	conn           *websocket.Conn
	cfg            subConfig
	stdout, stderr io.Writer
	chans          []*subChannel          // every channel followed, kept from one connection to the next
	track          bool                   // JSON format: envelopes carry channel and seq
	pending        map[string]*subChannel // id -> channel of unanswered in-band subscribes
	pendingURL     map[string]*subChannel // name -> URL channel whose id-less ack is awaited
	greeted        bool                   // the connected frame came
	line           []byte
	compact        bytes.Buffer
	reached        []*subChannel
	lastHeard      atomic.Int64 // Unix ns of the last frame from the server
	interrupted    atomic.Bool  // we closed: on Ctrl-C
}

// start subscribes in band and reads until the connection ends. On the
// first connection the URL subscribes its own channels (Herald acks them
// without an id when the URL has since or last: awaitURL) and --channel's
// are subscribed in band; on a reconnect every channel is subscribed in
// band, from its position.
func (s *subSession) start(ctx context.Context, first, awaitURL bool) error {
	s.pending = make(map[string]*subChannel)
	s.pendingURL = make(map[string]*subChannel)
	inBand := s.chans
	if first {
		urlChans := s.chans[:len(s.chans)-len(s.cfg.Channels)]
		for _, ch := range urlChans {
			if awaitURL {
				ch.waitAck()
				s.pendingURL[ch.name] = ch
			}
		}
		inBand = s.chans[len(urlChans):]
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.cfg.Timeout))
	for i, ch := range inBand {
		id := strconv.Itoa(i + 1)
		s.pending[id] = ch
		cmd, _ := json.Marshal(ch.resubscribe(id))
		if err := s.conn.WriteMessage(websocket.TextMessage, cmd); err != nil {
			return transient(fmt.Errorf("subscribe %q: %w", ch.name, err), 0)
		}
	}
	_ = s.conn.SetWriteDeadline(time.Time{})
	return s.run(ctx)
}

// run reads until the connection ends, while a second goroutine closes it
// on Ctrl-C and pings a silent server.
func (s *subSession) run(ctx context.Context) error {
	conn := s.conn
	s.heard()
	conn.SetPongHandler(func(string) error { s.heard(); return nil })
	answerPing := conn.PingHandler() // sends the pong
	conn.SetPingHandler(func(data string) error { s.heard(); return answerPing(data) })

	done := make(chan struct{})
	defer close(done)
	go s.watch(ctx, done)
	for {
		kind, msg, err := conn.ReadMessage()
		if err != nil {
			return s.ended(err)
		}
		s.heard()
		if err := s.handle(kind, msg); err != nil {
			_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			return err
		}
	}
}

// heard notes that the server is alive. It runs on the reading goroutine.
func (s *subSession) heard() {
	now := time.Now()
	s.lastHeard.Store(now.UnixNano())
	if s.cfg.Ping > 0 {
		_ = s.conn.SetReadDeadline(now.Add(2 * s.cfg.Ping))
	}
}

// watch closes the connection cleanly when ctx ends, and pings the server
// once it has been silent for cfg.Ping, until done.
func (s *subSession) watch(ctx context.Context, done <-chan struct{}) {
	var tick <-chan time.Time
	if s.cfg.Ping > 0 {
		t := time.NewTicker(s.cfg.Ping / 4)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-done:
			return
		case <-tick:
			if time.Since(time.Unix(0, s.lastHeard.Load())) >= s.cfg.Ping {
				_ = s.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.cfg.Ping))
			}
		case <-ctx.Done():
			s.interrupted.Store(true)
			_ = s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			// The server's answering close frame ends the read loop; if
			// none comes, stop waiting for it.
			select {
			case <-done:
			case <-time.After(2 * time.Second):
				s.conn.Close()
			}
			return
		}
	}
}

// subFrame is what herald sub reads of a frame from Herald: an envelope
// {"channel":C,"seq":N,"data":D}, or an answer {"op":"ack","id":I,
// "channel":C,"recovered":true,"epoch":E} or {"op":"error",...}.
type subFrame struct {
	Op        string          `json:"op"`
	ID        json.RawMessage `json:"id"`
	Channel   *string         `json:"channel"`
	Seq       *uint64         `json:"seq"`
	Data      json.RawMessage `json:"data"`
	Code      string          `json:"code"`
	Message   string          `json:"message"`
	Recovered *bool           `json:"recovered"`
	Epoch     *string         `json:"epoch"`
}

// handle prints one message, or takes it as the answer to a subscribe.
func (s *subSession) handle(kind int, msg []byte) error {
	if !s.greeted && kind == websocket.TextMessage && bytes.HasPrefix(msg, []byte(`{"op":"connected"`)) {
		// Herald's greeting is status, not a message.
		s.greeted = true
		var hello struct {
			Client, User string
			Expires      int64
		}
		if json.Unmarshal(msg, &hello) == nil {
			who := "anonymous"
			if hello.User != "" {
				who = "user " + hello.User + ", token expires " + time.Unix(hello.Expires, 0).UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(s.stderr, "client %s (%s)\n", hello.Client, who)
		}
		return nil
	}
	var f subFrame
	parsed := kind == websocket.TextMessage && json.Unmarshal(msg, &f) == nil
	if parsed && (f.Op == "ack" || f.Op == "error") {
		if ch := s.answered(&f); ch != nil {
			if f.Op == "error" {
				err := fmt.Errorf("subscribe %q: %s: %s", ch.name, f.Code, f.Message)
				if f.Code == "unavailable" { // Herald's NATS is down: it may be back on the next connection
					return transient(err, 0)
				}
				return err
			}
			ch.acked(f.Epoch)
			fmt.Fprintln(s.stderr, ch.status(f.Recovered))
			return nil
		}
	}
	if s.track && parsed && f.Op == "" && f.Channel != nil && f.Seq != nil {
		s.reached = covering(s.chans, *f.Channel, s.reached[:0])
		for _, ch := range s.reached {
			ch.saw(*f.Seq)
		}
	}
	line := s.line[:0]
	if s.cfg.Raw || !s.track || !parsed { // with ?format=raw each message is a bare payload
		line = append(line, msg...)
	} else {
		line = s.appendEnvelope(line, &f, msg)
	}
	line = append(line, '\n')
	s.line = line
	_, err := s.stdout.Write(line)
	return err
}

// answered returns the channel whose subscribe f answers, if any: an
// in-band one by its id, a URL one by its channel.
func (s *subSession) answered(f *subFrame) *subChannel {
	if len(f.ID) > 0 {
		var id string
		if json.Unmarshal(f.ID, &id) != nil {
			return nil
		}
		ch := s.pending[id]
		delete(s.pending, id)
		return ch
	}
	if f.Channel == nil {
		return nil
	}
	ch := s.pendingURL[*f.Channel]
	delete(s.pendingURL, *f.Channel)
	return ch
}

// appendEnvelope appends Herald's {"channel":C,"data":D} as C D, with D on
// one line; anything else as it came.
func (s *subSession) appendEnvelope(dst []byte, f *subFrame, msg []byte) []byte {
	if f.Op != "" || f.Channel == nil || f.Data == nil {
		return append(dst, msg...)
	}
	s.compact.Reset()
	if json.Compact(&s.compact, f.Data) != nil {
		return append(dst, msg...)
	}
	dst = append(dst, *f.Channel...)
	dst = append(dst, ' ')
	return append(dst, s.compact.Bytes()...)
}

// ended says why the connection ended: nil for one we closed on Ctrl-C, or
// with --no-reconnect for a normal close; else an error, transient unless
// the close code says that another connection would be closed the same way.
func (s *subSession) ended(err error) error {
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case s.interrupted.Load() && errors.As(err, &ce):
		fmt.Fprintf(s.stderr, "connection closed: %s\n", closeReason(ce.Code, ce.Text))
		return nil
	case s.interrupted.Load():
		fmt.Fprintln(s.stderr, "connection closed: the server did not answer our close frame")
		return nil
	case errors.As(err, &ce) && ce.Code == websocket.CloseNormalClosure && s.cfg.NoReconnect:
		fmt.Fprintf(s.stderr, "connection closed: %s\n", closeReason(ce.Code, ce.Text))
		return nil
	case errors.As(err, &ce):
		closed := "connection closed: " + closeReason(ce.Code, ce.Text)
		if hint, final := finalCloseCodes[ce.Code]; final {
			return errors.New(closed + hint)
		}
		return transient(errors.New(closed), 0)
	case errors.As(err, &ne) && ne.Timeout():
		return transient(fmt.Errorf("connection closed: nothing from the server for %v, not even a pong", 2*s.cfg.Ping), 0)
	}
	return transient(fmt.Errorf("connection closed: %s: %v", closeReason(websocket.CloseAbnormalClosure, ""), err), 0)
}

// closeReason is a close code with the server's reason, or the code's name
// when it gave none: "1008 slow consumer", "1000 normal closure".
func closeReason(code int, reason string) string {
	if reason != "" && code != websocket.CloseAbnormalClosure {
		return strconv.Itoa(code) + " " + reason
	}
	name := map[int]string{
		websocket.CloseNormalClosure:           "normal closure",
		websocket.CloseGoingAway:               "going away",
		websocket.CloseProtocolError:           "protocol error",
		websocket.CloseUnsupportedData:         "unsupported data",
		websocket.CloseNoStatusReceived:        "no status code",
		websocket.CloseAbnormalClosure:         "abnormal closure (no close frame)",
		websocket.CloseInvalidFramePayloadData: "invalid payload data",
		websocket.ClosePolicyViolation:         "policy violation",
		websocket.CloseMessageTooBig:           "message too big",
		websocket.CloseInternalServerErr:       "internal server error",
		websocket.CloseServiceRestart:          "service restart",
		websocket.CloseTryAgainLater:           "try again later",
	}[code]
	if name == "" {
		name = "no reason given"
	}
	if reason != "" {
		name += ": " + reason
	}
	return strconv.Itoa(code) + " " + name
}

// wsURL checks a URL for herald sub and fills in what may be left out.
func wsURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err == nil && u.Host == "" {
		err = errors.New("no host")
	}
	if err != nil {
		return nil, fmt.Errorf("URL %q: %v; want ws://HOST:PORT/ws?channel=NAME", raw, err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return nil, fmt.Errorf("URL %q: scheme %q: want ws://, wss://, http:// or https://", raw, u.Scheme)
	}
	if u.Path == "" {
		u.Path = push.Path
	}
	u.Fragment = ""
	return u, nil
}

// proxyFor returns the proxy to reach target through, or nil to connect
// directly. flagValue is --proxy; without it the environment decides as in
// net/http's ProxyFromEnvironment, but read afresh on every call.
func proxyFor(target *url.URL, flagValue string, getenv func(string) string) (*url.URL, error) {
	raw := flagValue
	switch flagValue {
	case "direct":
		return nil, nil
	case "":
		if target.Scheme == "wss" {
			raw = firstEnv(getenv, "HTTPS_PROXY", "https_proxy")
		} else {
			raw = firstEnv(getenv, "HTTP_PROXY", "http_proxy")
		}
		if raw == "" || bypassProxy(target, firstEnv(getenv, "NO_PROXY", "no_proxy")) {
			return nil, nil
		}
	}
	proxy, err := url.Parse(raw)
	if err != nil || (proxy.Scheme != "http" && proxy.Scheme != "https" && !strings.HasPrefix(proxy.Scheme, "socks")) {
		// A bare host:port, as net/http accepts it.
		proxy, err = url.Parse("http://" + raw)
	}
	if err != nil || proxy.Host == "" {
		return nil, fmt.Errorf("proxy URL %q: want http://[user:pass@]host:port", raw)
	}
	if proxy.Scheme != "http" {
		return nil, fmt.Errorf("proxy %s: only http:// proxies are supported", proxy.Redacted())
	}
	return proxy, nil
}

func firstEnv(getenv func(string) string, names ...string) string {
	for _, name := range names {
		if v := getenv(name); v != "" {
			return v
		}
	}
	return ""
}

// bypassProxy reports whether target is reached directly: when it is
// localhost or a loopback address, or NO_PROXY names it. NO_PROXY is a
// comma-separated list of "*" (every host), IP addresses, CIDR ranges and
// host names, each with an optional :port. A name matches itself and its
// subdomains; one with a leading "." or "*." only its subdomains.
func bypassProxy(target *url.URL, noProxy string) bool {
	host := strings.ToLower(target.Hostname())
	port := target.Port()
	if port == "" {
		port = "80"
		if target.Scheme == "wss" {
			port = "443"
		}
	}
	ip := net.ParseIP(host)
	if host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return true
	}
	for _, entry := range strings.Split(noProxy, ",") {
		entry = strings.ToLower(strings.TrimSpace(entry))
		if entry == "" {
			continue
		}
		if entry == "*" {
			return true
		}
		if _, cidr, err := net.ParseCIDR(entry); err == nil {
			if ip != nil && cidr.Contains(ip) {
				return true
			}
			continue
		}
		name, entryPort := entry, ""
		if h, p, err := net.SplitHostPort(entry); err == nil {
			name, entryPort = h, p
		}
		name = strings.TrimSuffix(strings.TrimPrefix(name, "["), "]")
		if entryPort != "" && entryPort != port {
			continue
		}
		if entryIP := net.ParseIP(name); entryIP != nil {
			if ip != nil && entryIP.Equal(ip) {
				return true
			}
			continue
		}
		if ip != nil {
			continue // names do not match addresses
		}
		switch {
		case strings.HasPrefix(name, "*."):
			if strings.HasSuffix(host, name[1:]) {
				return true
			}
		case strings.HasPrefix(name, "."):
			if strings.HasSuffix(host, name) {
				return true
			}
		case host == name || strings.HasSuffix(host, "."+name):
			return true
		}
	}
	return false
}

// dialProxy opens a TCP tunnel to addr through an HTTP proxy with CONNECT
// (RFC 9110 section 9.3.6). ctx bounds the whole exchange.
func dialProxy(ctx context.Context, proxy *url.URL, addr string) (net.Conn, error) {
	proxyAddr := proxy.Host
	if proxy.Port() == "" {
		proxyAddr = net.JoinHostPort(proxy.Hostname(), "80")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", proxyAddr)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	// Cancelling ctx (Ctrl-C, the handshake timeout) aborts the exchange.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if u := proxy.User; u != nil {
		password, _ := u.Password()
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+password)) + "\r\n"
	}
	br := bufio.NewReader(conn)
	var resp *http.Response
	if _, err = io.WriteString(conn, req+"\r\n"); err == nil {
		resp, err = http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	}
	if !stop() {
		err = ctx.Err()
	}
	switch {
	case err != nil:
		conn.Close()
		return nil, fmt.Errorf("proxy %s: CONNECT %s: %w", proxyAddr, addr, err)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		conn.Close()
		return nil, &httpRefusal{
			msg:        fmt.Sprintf("proxy %s refused CONNECT %s: %s", proxyAddr, addr, resp.Status),
			status:     resp.StatusCode, // 502 or 503 when it cannot reach the server: transient
			retryAfter: retryAfter(resp.Header.Get("Retry-After")),
		}
	case br.Buffered() > 0:
		// The tunnel's first bytes came with the proxy's answer.
		return &bufferedConn{Conn: conn, r: br}, nil
	}
	return conn, nil
}

// bufferedConn is a net.Conn whose first bytes were read ahead.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
