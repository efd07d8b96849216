package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/push/auth"

	"github.com/herald-ws/herald/engine/enginetest"
)

// noEnv is an environment without proxy variables.
func noEnv(string) string { return "" }

// subRun is a herald sub running in this process.
type subRun struct {
	stdout, stderr enginetest.Buffer
	cancel         context.CancelFunc // Ctrl-C
	done           chan error
}

func startSub(t *testing.T, cfg subConfig) *subRun {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Getenv == nil {
		cfg.Getenv = noEnv
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &subRun{cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- subscribe(ctx, cfg, &s.stdout, &s.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			t.Error("herald sub did not stop within 10s of its cancel")
		}
	})
	return s
}

// wait returns subscribe's result, failing if it takes over bound.
func (s *subRun) wait(t *testing.T, bound time.Duration) error {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		return err
	case <-time.After(bound):
		t.Fatalf("herald sub still running after %v; stderr:\n%s", bound, s.stderr.String())
		return nil
	}
}

// It prints CHANNEL DATA per message, JSON on one line, for channels from
// the URL and from --channel, and closes normally on Ctrl-C.
func TestSubPrintsMessages(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	s := startSub(t, subConfig{
		URL:      "ws://" + h.srv.Addr() + "/ws?channel=subt.a",
		Channels: []string{"subt.b", "subt.*"},
	})
	waitOutput(t, &s.stderr, "subscribed to subt.*", 10*time.Second)
	if !strings.Contains(s.stderr.String(), "subscribed to subt.b\n") {
		t.Fatalf("stderr %q: want the subt.b subscription confirmed", s.stderr.String())
	}
	settle(t, h)
	nc := publisher(t, h)
	for _, m := range [][2]string{
		{"subt.a", `{"px":1}`},
		{"subt.b", `text, not JSON`},
		{"subt.c", "{\n  \"pretty\": [1, 2]\n}"},
	} {
		if err := nc.Publish(m[0], []byte(m[1])); err != nil {
			t.Fatal(err)
		}
	}
	want := "subt.a {\"px\":1}\nsubt.b \"text, not JSON\"\nsubt.c {\"pretty\":[1,2]}"
	waitFor(t, 10*time.Second, "three messages", func() bool { return strings.Count(s.stdout.String(), "\n") >= 3 })
	expectSilenceFor(t, &s.stdout, 100*time.Millisecond) // and no more
	// Three channels, three NATS subscriptions: no order between them.
	lines := strings.Split(strings.TrimSpace(s.stdout.String()), "\n")
	slices.Sort(lines)
	if got := strings.Join(lines, "\n"); got != want {
		t.Fatalf("stdout:\n%s\nwant, in any order:\n%s", s.stdout.String(), want)
	}
	s.cancel()
	if err := s.wait(t, 10*time.Second); err != nil {
		t.Fatalf("after Ctrl-C: %v", err)
	}
	if !strings.HasSuffix(s.stderr.String(), "connection closed: 1000 normal closure\n") {
		t.Fatalf("stderr %q: want the normal close reported", s.stderr.String())
	}
}

// expectSilenceFor checks that buf does not grow for a while.
func expectSilenceFor(t *testing.T, buf *enginetest.Buffer, wait time.Duration) {
	t.Helper()
	before := buf.String()
	time.Sleep(wait)
	if after := buf.String(); after != before {
		t.Fatalf("unexpected output %q", after[len(before):])
	}
}

// --raw prints each message exactly as it came, with or without Herald's
// raw format.
func TestSubRaw(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	bare := startSub(t, subConfig{URL: "ws://" + h.srv.Addr() + "/ws?channel=subr.a&format=raw", Raw: true})
	enveloped := startSub(t, subConfig{URL: "ws://" + h.srv.Addr() + "/ws", Channels: []string{"subr.a"}, Raw: true})
	waitOutput(t, &bare.stderr, "connected", 10*time.Second)
	waitOutput(t, &enveloped.stderr, "subscribed to subr.a", 10*time.Second)
	settle(t, h)
	nc := publisher(t, h)
	for _, m := range []string{`{"px":1}`, `plain text`} {
		if err := nc.Publish("subr.a", []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	waitOutput(t, &bare.stdout, "plain text\n", 10*time.Second)
	waitOutput(t, &enveloped.stdout, "plain text", 10*time.Second)
	if got, want := bare.stdout.String(), "{\"px\":1}\nplain text\n"; got != want {
		t.Errorf("--raw with format=raw: %q, want %q", got, want)
	}
	if got, want := enveloped.stdout.String(), `{"channel":"subr.a","data":{"px":1}}`+"\n"+`{"channel":"subr.a","data":"plain text"}`+"\n"; got != want {
		t.Errorf("--raw: %q, want %q", got, want)
	}
}

// Every way a connection ends is reported, with exit code 1.
func TestSubReportsWhyItStopped(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	base := "ws://" + h.srv.Addr() + "/ws"
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{base + "?channel=a..b"}, `herald sub: ws://` + h.srv.Addr() + `/ws?channel=a..b refused the WebSocket upgrade: 400 Bad Request: channel "a..b": `},
		{[]string{"--channel", "a..b", base}, `herald sub: subscribe "a..b": invalid_channel: `},
		{[]string{"ws://" + freeAddr(t) + "/ws"}, "connection refused"},
		{[]string{"--proxy", "http://" + freeAddr(t), base}, "herald sub: connect to " + base + ": proxy: "},
		{[]string{"--proxy", "socks5://127.0.0.1:1080", base}, "only http:// proxies are supported"},
		{[]string{"127.0.0.1:8080"}, "want ws://HOST:PORT/ws?channel=NAME"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(append([]string{"sub", "--timeout", "5s"}, tt.args...), &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("herald sub %s: exit %d, stderr %q; want exit 1 and %q", strings.Join(tt.args, " "), code, stderr.String(), tt.want)
		}
	}
	for _, args := range [][]string{{}, {base, "--raw"}, {"--timeout", "0", base}, {"--reconnect-min", "0", base}, {"--reconnect-min", "2s", "--reconnect-max", "1s", base}} {
		var stdout, stderr bytes.Buffer
		if code := run(append([]string{"sub"}, args...), &stdout, &stderr); code != 2 {
			t.Errorf("herald sub %s: exit %d, want 2 (usage); stderr %q", strings.Join(args, " "), code, stderr.String())
		}
	}

	// With --no-reconnect, the server going away: exit 1 with its close
	// code and reason.
	var stdout, stderr enginetest.Buffer
	code := make(chan int, 1)
	go func() { code <- run([]string{"sub", "--no-reconnect", base + "?channel=x"}, &stdout, &stderr) }()
	waitOutput(t, &stderr, "connected", 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.srv.Drain(ctx, 0); err != nil { // as herald serve does on SIGTERM
		t.Fatal(err)
	}
	select {
	case c := <-code:
		if c != 1 || !regexp.MustCompile(`herald sub: connection closed: 1001 \S`).MatchString(stderr.String()) {
			t.Errorf("after the server stopped: exit %d, stderr %q; want 1 and the 1001 close", c, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("herald sub still running 10s after the server stopped")
	}
}

// A real process: Ctrl-C (SIGINT) closes the connection with 1000 and
// exits 0 after printing what arrived.
func TestSubCtrlC(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	cmd := exec.Command(os.Args[0], "--", "sub", "--channel", "sigint.b", "ws://"+h.srv.Addr()+"/ws?channel=sigint.a")
	cmd.Env = append(os.Environ(), heraldEnv+"=1")
	var stdout, stderr enginetest.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitOutput(t, &stderr, "subscribed to sigint.b\n", 20*time.Second)
	settle(t, h)
	nc := publisher(t, h)
	for _, ch := range []string{"sigint.a", "sigint.b"} {
		if err := nc.Publish(ch, []byte(`"hi"`)); err != nil {
			t.Fatal(err)
		}
	}
	waitOutput(t, &stdout, "sigint.b \"hi\"\n", 10*time.Second)
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after Ctrl-C, want 0; stderr:\n%s", code, stderr.String())
	}
	// Two channels, two NATS subscriptions: no order between them.
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	slices.Sort(lines)
	if !strings.HasSuffix(stderr.String(), "connection closed: 1000 normal closure\n") || strings.Join(lines, "\n") != "sigint.a \"hi\"\nsigint.b \"hi\"" {
		t.Fatalf("stdout %q stderr %q", stdout.String(), stderr.String())
	}
}

// herald sub answers the server's pings: Herald pings it again and again
// and never closes it as dead.
func TestSubAnswersPings(t *testing.T) {
	h := startTestHerald(t, heraldConfig{Engine: engine.Config{PingInterval: 50 * time.Millisecond, PongTimeout: 100 * time.Millisecond}})
	s := startSub(t, subConfig{URL: "ws://" + h.srv.Addr() + "/ws?channel=ping.a"}) // Ping 0: never pings itself
	waitOutput(t, &s.stderr, "connected", 10*time.Second)
	waitFor(t, 10*time.Second, "five pings", func() bool { return h.srv.Stats().Pings >= 5 })
	if st := h.srv.Stats(); st.Reaped != 0 {
		t.Fatalf("Herald closed %d connections as dead", st.Reaped)
	}
	settle(t, h)
	if err := publisher(t, h).Publish("ping.a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, &s.stdout, "ping.a 1\n", 10*time.Second)
}

// A server that stops answering is given up after twice --ping (and
// with --no-reconnect, herald sub exits).
func TestSubGivesUpOnSilentServer(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		<-release // never reads, so never answers a ping
	}))
	defer srv.Close()
	defer close(release)
	s := startSub(t, subConfig{URL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws", Ping: 100 * time.Millisecond, NoReconnect: true})
	err := s.wait(t, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "nothing from the server for 200ms") {
		t.Fatalf("got %v, want the silent server given up", err)
	}
}

// Through a real HTTP proxy (tinyproxy): the CONNECT tunnel carries every
// message, and the proxy saw the tunnel.
func TestSubThroughProxy(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	proxy := startTinyproxy(t, "")
	s := startSub(t, subConfig{URL: "ws://" + h.srv.Addr() + "/ws?channel=proxied", Proxy: "http://" + proxy.addr})
	waitOutput(t, &s.stderr, "connected to ws://"+h.srv.Addr()+"/ws?channel=proxied through proxy http://"+proxy.addr+"\n", 10*time.Second)
	settle(t, h)
	nc := publisher(t, h)
	const n = 500
	var want strings.Builder
	for i := range n {
		data := fmt.Sprintf(`{"seq":%d}`, i)
		if err := nc.Publish("proxied", []byte(data)); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&want, "proxied %s\n", data)
	}
	waitOutput(t, &s.stdout, fmt.Sprintf(`{"seq":%d}`, n-1), 10*time.Second)
	if got := s.stdout.String(); got != want.String() {
		t.Fatalf("through the proxy got %d lines, want %d in order:\n%.500s", strings.Count(got, "\n"), n, got)
	}
	proxy.expectTunnel(t, h.srv.Addr())
}

// Basic credentials from the proxy URL are sent; without the right ones
// the proxy's refusal is reported.
func TestSubProxyAuth(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	proxy := startTinyproxy(t, "BasicAuth herald s3cret-9\n")
	target := "ws://" + h.srv.Addr() + "/ws?channel=auth"
	for _, tt := range []struct{ proxy, want string }{
		// tinyproxy answers a CONNECT without the right credentials with
		// 401, where RFC 9110 has 407.
		{"http://herald:wrong@" + proxy.addr, "proxy " + proxy.addr + " refused CONNECT " + h.srv.Addr() + ": 40[17] "},
		{"http://" + proxy.addr, ": 40[17] "},
	} {
		var stdout, stderr bytes.Buffer
		if code := run([]string{"sub", "--proxy", tt.proxy, target}, &stdout, &stderr); code != 1 || !regexp.MustCompile(tt.want).MatchString(stderr.String()) {
			t.Errorf("--proxy %s: exit %d, stderr %q; want exit 1 and %q", tt.proxy, code, stderr.String(), tt.want)
		}
	}
	s := startSub(t, subConfig{URL: target, Proxy: "http://herald:s3cret-9@" + proxy.addr})
	waitOutput(t, &s.stderr, "connected", 10*time.Second)
	if strings.Contains(s.stderr.String(), "s3cret") {
		t.Errorf("the password is printed: %q", s.stderr.String())
	}
	settle(t, h)
	if err := publisher(t, h).Publish("auth", []byte("1")); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, &s.stdout, "auth 1\n", 10*time.Second)
	proxy.expectTunnel(t, h.srv.Addr())
}

// HTTP_PROXY is honoured and NO_PROXY bypasses it, read from the real
// environment. Loopback targets never use the environment's proxy, so
// Herald listens on this machine's first non-loopback address.
func TestSubProxyFromEnvironment(t *testing.T) {
	ip := nonLoopbackIP(t)
	h := startHeraldAt(t, net.JoinHostPort(ip, "0"), "127.0.0.1:-1")
	proxy := startTinyproxy(t, "")
	for _, name := range []string{"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"} {
		t.Setenv(name, "")
	}
	t.Setenv("HTTP_PROXY", "http://"+proxy.addr)
	target := "ws://" + h.srv.Addr() + "/ws?channel=env"

	s := startSub(t, subConfig{URL: target, Getenv: os.Getenv})
	waitOutput(t, &s.stderr, "connected to "+target+" through proxy http://"+proxy.addr+"\n", 10*time.Second)
	settle(t, h)
	if err := publisher(t, h).Publish("env", []byte("1")); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, &s.stdout, "env 1\n", 10*time.Second)
	proxy.expectTunnel(t, h.srv.Addr())

	t.Setenv("NO_PROXY", "example.com, "+ip)
	direct := startSub(t, subConfig{URL: target, Getenv: os.Getenv})
	waitOutput(t, &direct.stderr, "connected to "+target+"\n", 10*time.Second)
	if n := strings.Count(proxy.log(), "CONNECT "+h.srv.Addr()); n != 1 {
		t.Errorf("with NO_PROXY naming the host the proxy saw %d tunnels in all, want only the first", n)
	}
}

func nonLoopbackIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Skip("no non-loopback IPv4 address to tell the environment's proxy from a loopback bypass")
	return ""
}

func TestProxyFor(t *testing.T) {
	const p = "http://proxy:3128"
	for _, tt := range []struct {
		target, flag string
		env          map[string]string
		want         string // "" for direct
	}{
		{"ws://example.com/ws", "", nil, ""},
		{"ws://example.com/ws", "", map[string]string{"HTTP_PROXY": p}, p},
		{"ws://example.com/ws", "", map[string]string{"http_proxy": p}, p},
		{"ws://example.com/ws", "", map[string]string{"HTTPS_PROXY": p}, ""},
		{"wss://example.com/ws", "", map[string]string{"HTTP_PROXY": p}, ""},
		{"wss://example.com/ws", "", map[string]string{"HTTPS_PROXY": "proxy:3128"}, p},
		{"wss://example.com/ws", "", map[string]string{"https_proxy": "http://u:pw@proxy:3128"}, "http://u:pw@proxy:3128"},
		// NO_PROXY
		{"ws://example.com/ws", "", map[string]string{"HTTP_PROXY": p, "NO_PROXY": "*"}, ""},
		{"ws://example.com/ws", "", map[string]string{"HTTP_PROXY": p, "NO_PROXY": "example.com"}, ""},
		{"ws://push.example.com/ws", "", map[string]string{"HTTP_PROXY": p, "NO_PROXY": "example.com"}, ""},
		{"ws://example.com/ws", "", map[string]string{"HTTP_PROXY": p, "no_proxy": " other.org , EXAMPLE.com "}, ""},
		{"ws://example.com/ws", "", map[string]string{"HTTP_PROXY": p, "NO_PROXY": ".example.com"}, p},
		{"ws://push.example.com/ws", "", map[string]string{"HTTP_PROXY": p, "NO_PROXY": ".example.com"}, ""},
		{"ws://push.example.com/ws", "", map[string]string{"HTTP_PROXY": p, "NO_PROXY": "*.example.com"}, ""},
		{"ws://example.com/ws", "", map[string]string{"HTTP_PROXY": p, "NO_PROXY": "ample.com"}, p},
		{"ws://example.com/ws", "", map[string]string{"HTTP_PROXY": p, "NO_PROXY": "example.com:8080"}, p},
		{"ws://example.com:8080/ws", "", map[string]string{"HTTP_PROXY": p, "NO_PROXY": "example.com:8080"}, ""},
		{"wss://example.com/ws", "", map[string]string{"HTTPS_PROXY": p, "NO_PROXY": "example.com:443"}, ""},
		{"ws://10.1.2.3/ws", "", map[string]string{"HTTP_PROXY": p, "NO_PROXY": "10.0.0.0/8"}, ""},
		{"ws://10.1.2.3/ws", "", map[string]string{"HTTP_PROXY": p, "NO_PROXY": "10.1.2.3"}, ""},
		{"ws://10.1.2.4/ws", "", map[string]string{"HTTP_PROXY": p, "NO_PROXY": "10.1.2.3,10.0.0.0/30"}, p},
		{"ws://[2001:db8::1]:80/ws", "", map[string]string{"HTTP_PROXY": p, "NO_PROXY": "[2001:db8::1]"}, ""},
		{"ws://10.1.2.3/ws", "", map[string]string{"HTTP_PROXY": p, "NO_PROXY": "example.com"}, p},
		// Loopback is never proxied by the environment, as in net/http.
		{"ws://127.0.0.1:8080/ws", "", map[string]string{"HTTP_PROXY": p}, ""},
		{"ws://localhost:8080/ws", "", map[string]string{"HTTP_PROXY": p}, ""},
		{"ws://[::1]:8080/ws", "", map[string]string{"HTTP_PROXY": p}, ""},
		// --proxy overrides the environment, NO_PROXY and the loopback rule.
		{"ws://127.0.0.1:8080/ws", p, nil, p},
		{"ws://example.com/ws", p, map[string]string{"HTTP_PROXY": "http://other:1", "NO_PROXY": "*"}, p},
		{"ws://example.com/ws", "direct", map[string]string{"HTTP_PROXY": p}, ""},
	} {
		target, _ := url.Parse(tt.target)
		proxy, err := proxyFor(target, tt.flag, func(k string) string { return tt.env[k] })
		got := ""
		if proxy != nil {
			got = proxy.String()
		}
		if err != nil || got != tt.want {
			t.Errorf("%s with --proxy %q and %v: proxy %q (err %v), want %q", tt.target, tt.flag, tt.env, got, err, tt.want)
		}
	}
	for _, bad := range []string{"socks5://proxy:1080", "https://proxy:3128", "http://", "::"} {
		target, _ := url.Parse("ws://example.com/ws")
		if proxy, err := proxyFor(target, bad, noEnv); err == nil {
			t.Errorf("--proxy %q: got %v, want an error", bad, proxy)
		}
	}
}

func TestWSURL(t *testing.T) {
	for in, want := range map[string]string{
		"ws://h:1":                  "ws://h:1/ws",
		"wss://h":                   "wss://h/ws",
		"http://h/ws?channel=a.*":   "ws://h/ws?channel=a.*",
		"https://h/push#frag":       "wss://h/push",
		"h:8080":                    "",
		"ftp://h/ws":                "",
		"ws:///ws":                  "",
		"ws://h:1/ws?channel=a&x=1": "ws://h:1/ws?channel=a&x=1",
	} {
		u, err := wsURL(in)
		got := ""
		if err == nil {
			got = u.String()
		}
		if got != want {
			t.Errorf("wsURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestCloseReason(t *testing.T) {
	for _, tt := range []struct {
		code   int
		reason string
		want   string
	}{
		{1008, "slow consumer", "1008 slow consumer"},
		{1000, "", "1000 normal closure"},
		{1001, "server shutting down", "1001 server shutting down"},
		{1006, "unexpected EOF", "1006 abnormal closure (no close frame): unexpected EOF"},
		{4321, "", "4321 no reason given"},
	} {
		if got := closeReason(tt.code, tt.reason); got != tt.want {
			t.Errorf("closeReason(%d, %q) = %q, want %q", tt.code, tt.reason, got, tt.want)
		}
	}
}

// Bytes the proxy sends right after its 200 belong to the tunnel.
func TestDialProxyKeepsReadAhead(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	gotRequest := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			gotRequest <- err.Error()
			return
		}
		gotRequest <- req.Method + " " + req.Host + " " + req.Header.Get("Proxy-Authorization")
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\ntunnel bytes")
		time.Sleep(time.Second) // keep the connection up while the client reads
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	proxy, _ := url.Parse("http://u:p@" + l.Addr().String())
	conn, err := dialProxy(ctx, proxy, "example.com:80")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got, want := <-gotRequest, "CONNECT example.com:80 Basic dTpw"; got != want {
		t.Errorf("proxy got %q, want %q", got, want)
	}
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if string(buf[:n]) != "tunnel bytes" {
		t.Fatalf("read %q, %v; want the bytes that came with the 200", buf[:n], err)
	}
}

// tinyproxy is Debian's tinyproxy, a real HTTP proxy, run by a test.
type tinyproxy struct {
	addr    string
	logPath string
}

// startTinyproxy runs tinyproxy on a free loopback port with extra config
// lines. No ConnectPort line means CONNECT to any port is allowed.
func startTinyproxy(t *testing.T, extra string) *tinyproxy {
	t.Helper()
	bin := requireTool(t, "tinyproxy", "apt-get install -y tinyproxy")
	dir := t.TempDir()
	p := &tinyproxy{addr: freeAddr(t), logPath: filepath.Join(dir, "tinyproxy.log")}
	_, port, _ := net.SplitHostPort(p.addr)
	conf := filepath.Join(dir, "tinyproxy.conf")
	err := os.WriteFile(conf, []byte(fmt.Sprintf("Port %s\nListen 127.0.0.1\nTimeout 60\nMaxClients 50\nAllow 127.0.0.1\nLogLevel Connect\nLogFile %q\nPidFile %q\n%s",
		port, p.logPath, filepath.Join(dir, "tinyproxy.pid"), extra)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-d", "-c", conf)
	var out enginetest.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err == nil {
			c.Close()
			return p
		}
		select {
		case <-exited:
			t.Fatalf("tinyproxy exited: %s\n%s", out.String(), p.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("tinyproxy not listening on %s after 10s: %v\n%s", p.addr, err, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *tinyproxy) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// expectTunnel checks that the proxy logged a CONNECT to addr.
func (p *tinyproxy) expectTunnel(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.log(), "CONNECT "+addr+" ") {
		if time.Now().After(deadline) {
			t.Fatalf("the proxy logged no CONNECT %s:\n%s", addr, p.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// requireTool returns the path of a program a test needs. Without it the
// test is skipped on a developer's machine and fails in CI (CI=true),
// where scripts/test.sh installs it.
func requireTool(t *testing.T, name, install string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed and CI=true: scripts/test.sh installs it (%s)", name, install)
	}
	t.Skipf("%s is not installed: %s, or run scripts/test.sh, which installs it", name, install)
	return ""
}

// A token in the URL never reaches herald sub's status lines or errors,
// whether the server refuses it or takes it; --token goes as a header.
func TestSubKeepsTokensOut(t *testing.T) {
	secret := []byte("a-secret-of-at-least-32-bytes-long!!")
	h := startTestHerald(t, heraldConfig{Auth: &auth.Config{Secret: secret}})
	base := "ws://" + h.srv.Addr() + "/ws?channel=chat.a"
	good, err := auth.Mint(secret, "HS256", auth.Claims{Subject: "sam", Subscribe: []string{"chat.>"}, Expires: time.Now().Add(time.Hour)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bad := good[:len(good)-4] + "AAAA"
	var stdout, stderr bytes.Buffer
	if code := run([]string{"sub", "--timeout", "5s", base + "&token=" + bad}, &stdout, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), "401") || strings.Contains(stderr.String(), bad) {
		t.Fatalf("refused token: exit %d, stderr %q", code, stderr.String())
	}
	for _, cfg := range []subConfig{{URL: base + "&token=" + good}, {URL: base, Token: good}} {
		s := startSub(t, cfg)
		waitOutput(t, &s.stderr, "user sam", 10*time.Second)
		s.cancel()
		if err := s.wait(t, 10*time.Second); err != nil || strings.Contains(s.stderr.String(), good) {
			t.Fatalf("%+v: %v, stderr %q", cfg, err, s.stderr.String())
		}
	}
}
