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
closed) go to standard error. URL is ws:// or wss:// (http:// and https://
work too); without a path it is /ws. Channels come from the URL's query
(?channel=prices.AAPL) and from --channel, subscribed in band once connected.

It answers the server's pings and pings a silent server itself. It exits 0
on Ctrl-C or a normal close and 1 on anything else, saying why the
connection closed, e.g. "connection closed: 1008 slow consumer".

Proxies: ws:// URLs go through HTTP_PROXY and wss:// through HTTPS_PROXY
(or http_proxy, https_proxy) unless NO_PROXY names the host, as in Go's
net/http: localhost and loopback addresses are always reached directly.
--proxy overrides the environment. The connection is tunnelled with HTTP
CONNECT, with Basic credentials if the proxy URL has them.

Examples:
  herald sub 'ws://127.0.0.1:8080/ws?channel=prices.*'
  herald sub --channel prices.AAPL --channel prices.MSFT ws://127.0.0.1:8080
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return subscribe(ctx, subConfig{
		URL:      positional[0],
		Channels: channels,
		Raw:      *raw,
		Proxy:    *proxy,
		Timeout:  *timeout,
		Ping:     *ping,
		Token:    *token,
		Getenv:   os.Getenv,
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
}

// subscribe connects, subscribes and prints messages until the connection
// closes or ctx ends (Ctrl-C). It returns nil after a normal close or a
// cancelled ctx, else an error that says why the connection ended.
func subscribe(ctx context.Context, cfg subConfig, stdout, stderr io.Writer) error {
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
	conn, resp, err := dialer.DialContext(ctx, target.String(), header)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "interrupted before connecting")
			return nil
		}
		if errors.Is(err, websocket.ErrBadHandshake) && resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			return fmt.Errorf("%s refused the WebSocket upgrade: %s: %s", bench.RedactURL(target.String()), resp.Status, bytes.TrimSpace(body))
		}
		return fmt.Errorf("connect to %s: %w", bench.RedactURL(target.String()), err)
	}
	defer conn.Close()
	via := ""
	if proxy != nil {
		via = " through proxy " + proxy.Redacted()
	}
	fmt.Fprintf(stderr, "connected to %s%s\n", bench.RedactURL(target.String()), via)

	s := &subSession{conn: conn, cfg: cfg, stdout: stdout, stderr: stderr, pending: make(map[string]string)}
	for i, ch := range cfg.Channels {
		id := strconv.Itoa(i + 1)
		s.pending[id] = ch
		cmd, _ := json.Marshal(subCommand{Op: "subscribe", Channel: ch, ID: id})
		_ = conn.SetWriteDeadline(time.Now().Add(cfg.Timeout))
		if err := conn.WriteMessage(websocket.TextMessage, cmd); err != nil {
			return fmt.Errorf("subscribe %q: %w", ch, err)
		}
	}
	_ = conn.SetWriteDeadline(time.Time{})
	return s.run(ctx)
}

// subCommand is an in-band request to Herald.
type subCommand struct {
	Op      string `json:"op"`
	Channel string `json:"channel"`
	ID      string `json:"id"`
}

// subSession is one connection of herald sub.
type subSession struct {
	conn           *websocket.Conn
	cfg            subConfig
	stdout, stderr io.Writer
	pending        map[string]string // id -> channel of unanswered subscribes
	greeted        bool              // the connected frame came
	line           []byte
	compact        bytes.Buffer
	lastHeard      atomic.Int64 // Unix ns of the last frame from the server
	interrupted    atomic.Bool  // we closed: on Ctrl-C
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
	if len(s.pending) > 0 && kind == websocket.TextMessage {
		var reply struct {
			Op, Code, Message string
			ID                json.RawMessage
		}
		var id string
		if json.Unmarshal(msg, &reply) == nil && (reply.Op == "ack" || reply.Op == "error") && json.Unmarshal(reply.ID, &id) == nil {
			if ch, ok := s.pending[id]; ok {
				delete(s.pending, id)
				if reply.Op == "error" {
					return fmt.Errorf("subscribe %q: %s: %s", ch, reply.Code, reply.Message)
				}
				fmt.Fprintf(s.stderr, "subscribed to %s\n", ch)
				return nil
			}
		}
	}
	line := s.line[:0]
	if s.cfg.Raw {
		line = append(line, msg...)
	} else {
		line = s.appendEnvelope(line, kind, msg)
	}
	line = append(line, '\n')
	s.line = line
	_, err := s.stdout.Write(line)
	return err
}

// appendEnvelope appends Herald's {"channel":C,"data":D} as C D, with D on
// one line; anything else as it came.
func (s *subSession) appendEnvelope(dst []byte, kind int, msg []byte) []byte {
	var env struct {
		Channel *string         `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}
	if kind != websocket.TextMessage || json.Unmarshal(msg, &env) != nil || env.Channel == nil || env.Data == nil {
		return append(dst, msg...)
	}
	s.compact.Reset()
	if json.Compact(&s.compact, env.Data) != nil {
		return append(dst, msg...)
	}
	dst = append(dst, *env.Channel...)
	dst = append(dst, ' ')
	return append(dst, s.compact.Bytes()...)
}

// ended reports why the connection ended: nil for a normal close or one we
// started on Ctrl-C, else an error that says why.
func (s *subSession) ended(err error) error {
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce) && (ce.Code == websocket.CloseNormalClosure || s.interrupted.Load()):
		fmt.Fprintf(s.stderr, "connection closed: %s\n", closeReason(ce.Code, ce.Text))
		return nil
	case s.interrupted.Load():
		fmt.Fprintln(s.stderr, "connection closed: the server did not answer our close frame")
		return nil
	case errors.As(err, &ce):
		return errors.New("connection closed: " + closeReason(ce.Code, ce.Text))
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("connection closed: nothing from the server for %v, not even a pong", 2*s.cfg.Ping)
	}
	return fmt.Errorf("connection closed: %s: %v", closeReason(websocket.CloseAbnormalClosure, ""), err)
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
		return nil, fmt.Errorf("proxy %s refused CONNECT %s: %s", proxyAddr, addr, resp.Status)
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
