package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/enginetest"
	"github.com/herald-ws/herald/engine/push"
	"github.com/herald-ws/herald/engine/push/auth"
)

// adminConnections and adminChannels are the answers of the admin
// listener's listings.
type adminConnections struct {
	Sort        string           `json:"sort"`
	Limit       int              `json:"limit"`
	Open        int64            `json:"open"`
	Connections []connectionJSON `json:"connections"`
}

type adminChannels struct {
	Total    int           `json:"total"`
	Channels []channelJSON `json:"channels"`
}

// adminGet fetches http://addr+path and decodes its JSON into out,
// failing on any status but 200.
func adminGet(t *testing.T, addr, path string, out any) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, body)
	}
}

// dialSlow opens a socket whose kernel receive buffer is tiny, so that
// once its reader stops, what Herald sends it piles up in Herald's own
// outbound buffer within a few messages.
func dialSlow(t *testing.T, h *herald, query string, header http.Header) *websocket.Conn {
	t.Helper()
	nd := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDialContext: nd.DialContext}
	conn, _, err := d.Dial("ws://"+h.srv.Addr()+"/ws?"+query, header)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// drain reads conn until it closes, as a client that keeps up.
func drain(conn *websocket.Conn) {
	go func() {
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
}

// The admin listener finds the socket that stopped reading: first by
// unsent bytes, with its client id, user, channels and address; it ranks
// channels by their sockets over both loops and connections by age; and
// it refuses listings it cannot answer with 400.
func TestAdminListsConnectionsAndChannels(t *testing.T) {
	secret := []byte("a-secret-of-at-least-32-bytes-long!!")
	h := startTestHerald(t, heraldConfig{
		Auth:   &auth.Config{Secret: secret},
		Push:   push.Config{PublicChannels: []string{"news", "sports", "weather"}},
		Engine: engine.Config{MaxOutbound: 256 << 20}, // the slow one is watched, not cut
		Admin:  ":0",
	})
	admin := h.admin.Addr()
	if host, _, _ := net.SplitHostPort(admin); host != "127.0.0.1" {
		t.Fatalf("--admin-listen :0 bound %s, want loopback", admin)
	}
	tok, err := auth.Mint(secret, "HS256", auth.Claims{Subject: "alice", Subscribe: []string{"news", "sports"}, Expires: time.Now().Add(time.Hour)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	slow := dialSlow(t, h, "channel=news&channel=sports", http.Header{"Authorization": {"Bearer " + tok}})
	hello := expectConnected(t, slow)
	for _, q := range []string{"channel=news", "channel=news", "channel=sports", "channel=weather"} {
		drain(dialWS(t, h, q))
	}
	settle(t, h)

	var cs adminChannels
	adminGet(t, admin, "/debug/channels", &cs)
	want := []channelJSON{{"news", 3}, {"sports", 2}, {"weather", 1}}
	if cs.Total != 3 || !slices.Equal(cs.Channels, want) {
		t.Fatalf("/debug/channels: %+v, want total 3 and %v", cs, want)
	}
	adminGet(t, admin, "/debug/channels?sort=subscribers&limit=1", &cs)
	if !slices.Equal(cs.Channels, want[:1]) {
		t.Fatalf("/debug/channels?limit=1: %+v", cs.Channels)
	}

	// Publish until the slow socket has bytes Herald could not send, and
	// more than any reader that keeps up has for a moment.
	nc := publisher(t, h)
	payload := []byte(`"` + strings.Repeat("x", 32<<10) + `"`)
	var top adminConnections
	deadline := time.Now().Add(60 * time.Second)
	for sent := 0; ; {
		adminGet(t, admin, "/debug/connections?sort=pending&limit=2", &top)
		if len(top.Connections) > 0 && top.Connections[0].UnsentBytes > 0 && top.Connections[0].Client == hello.Client {
			break
		}
		if time.Now().After(deadline) || sent >= 4000 {
			t.Fatalf("after %d messages the slow socket (%s) is not first with unsent bytes: %+v", sent, hello.Client, top)
		}
		for range 20 {
			if err := nc.Publish("news", payload); err != nil {
				t.Fatal(err)
			}
		}
		sent += 20
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	first := top.Connections[0]
	slices.Sort(first.Channels)
	if first.Client != hello.Client || first.User != "alice" || !slices.Equal(first.Channels, []string{"news", "sports"}) ||
		first.Remote != slow.LocalAddr().String() || first.Format != "json" {
		t.Fatalf("first by unsent: %+v, want client %s, alice on news and sports from %s", first, hello.Client, slow.LocalAddr())
	}
	if top.Open != 5 || top.Sort != "pending" || top.Limit != 2 || len(top.Connections) != 2 {
		t.Fatalf("/debug/connections: %+v", top)
	}
	if second := top.Connections[1]; second.UnsentBytes > first.UnsentBytes || second.User != "" {
		t.Fatalf("second by unsent: %+v, after %+v", second, first)
	}

	// By age: a socket opened once the others have been open a while
	// comes last. Ages are in tenths of a second, so wait for a few.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		adminGet(t, admin, "/debug/connections?sort=age&limit=1", &top)
		if len(top.Connections) == 1 && top.Connections[0].AgeSeconds >= 0.3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sort=age: no socket 0.3 s old within 10 s: %+v", top)
		}
	}
	late := dialWS(t, h, "channel=weather")
	drain(late)
	adminGet(t, admin, "/debug/connections?sort=age&limit=100", &top)
	if len(top.Connections) != 6 {
		t.Fatalf("sort=age: %d connections, want 6: %+v", len(top.Connections), top)
	}
	oldest, newest := top.Connections[0], top.Connections[5]
	if newest.Remote != late.LocalAddr().String() || newest.AgeSeconds >= oldest.AgeSeconds || oldest.AgeSeconds <= 0 {
		t.Fatalf("sort=age: oldest %+v, newest %+v, want %s last", oldest, newest, late.LocalAddr())
	}

	for _, tt := range []struct{ path, want string }{
		{"/debug/connections?sort=bogus", `sort "bogus"`},
		{"/debug/connections?limit=0", "limit"},
		{"/debug/connections?limit=abc", "limit"},
		{"/debug/connections?limit=10001", "limit"},
		{"/debug/connections?limit=1&limit=2", "limit given 2 times"},
		{"/debug/connections?channel=news", "unknown parameter"},
		{"/debug/channels?sort=pending", `sort "pending"`},
		{"/debug/channels?limit=-5", "limit"},
	} {
		resp, err := http.Get("http://" + admin + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(body), tt.want) {
			t.Errorf("GET %s: %d %q, want 400 saying %q", tt.path, resp.StatusCode, body, tt.want)
		}
	}
}

// pprof and /metrics are on the admin listener; pprof never on the public
// port, and /metrics not there with NoMetrics (--metrics=false).
func TestAdminPprofAndMetrics(t *testing.T) {
	for _, tt := range []struct {
		name          string
		noMetrics     bool
		publicMetrics int
	}{
		{"metrics on both", false, 200},
		{"metrics on admin only", true, 404},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := startTestHerald(t, heraldConfig{Admin: "127.0.0.1:0", NoMetrics: tt.noMetrics})
			admin := h.admin.Addr()
			dialWS(t, h, "channel=news")
			if got := metricValue(t, scrape(t, admin), "herald_connections"); got != 1 {
				t.Errorf("admin /metrics: herald_connections %v, want 1", got)
			}
			if got := httpGet(t, h.srv.Addr(), "/metrics"); got != tt.publicMetrics {
				t.Errorf("public /metrics: %d, want %d", got, tt.publicMetrics)
			}
			for path, want := range map[string]int{"/debug/pprof/": 200, "/debug/pprof/goroutine?debug=1": 200, "/debug/pprof/cmdline": 404, "/readyz": 200, "/": 200, "/nothing": 404} {
				if got := httpGet(t, admin, path); got != want {
					t.Errorf("admin %s: %d, want %d", path, got, want)
				}
			}
			for _, path := range []string{"/debug/pprof/", "/debug/connections", "/debug/channels"} {
				if got := httpGet(t, h.srv.Addr(), path); got != 404 {
					t.Errorf("public %s: %d, want 404", path, got)
				}
			}
		})
	}
}

func TestResolveAdminAddr(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		public   bool
		err      string
	}{
		{":9090", "127.0.0.1:9090", false, ""},
		{"127.0.0.1:9090", "127.0.0.1:9090", false, ""},
		{"localhost:9090", "localhost:9090", false, ""},
		{"[::1]:9090", "[::1]:9090", false, ""},
		{"0.0.0.0:9090", "0.0.0.0:9090", true, ""},
		{"10.1.2.3:9090", "10.1.2.3:9090", true, ""},
		{"9090", "", false, "want host:port"},
		{"127.0.0.1:", "", false, "no port"},
	} {
		got, public, err := resolveAdminAddr(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: err %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want || public != tt.public {
			t.Errorf("%q: %q public %v err %v, want %q public %v", tt.in, got, public, err, tt.want, tt.public)
		}
	}
}

// An admin listener reachable from other machines starts, but says so
// loudly.
func TestAdminNonLoopbackWarns(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	var logs enginetest.Buffer
	a, err := startAdmin(h, "0.0.0.0:0", slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer a.close(context.Background())
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "REACHABLE FROM OTHER MACHINES") {
		t.Fatalf("no warning for a non-loopback admin listener:\n%s", logs.String())
	}
	_, port, _ := net.SplitHostPort(a.Addr())
	if got := httpGet(t, "127.0.0.1:"+port, "/debug/channels"); got != 200 {
		t.Fatalf("/debug/channels: %d", got)
	}
}

// The flags as a user gives them: --admin-listen :PORT binds loopback,
// and --metrics=false leaves /metrics to it.
func TestServeAdminFlags(t *testing.T) {
	_, port, _ := net.SplitHostPort(freeAddr(t))
	_, addr := startHeraldProcess(t, "--admin-listen", ":"+port, "--metrics=false")
	if got := httpGet(t, addr, "/metrics"); got != 404 {
		t.Errorf("public /metrics with --metrics=false: %d, want 404", got)
	}
	if got := httpGet(t, "127.0.0.1:"+port, "/metrics"); got != 200 {
		t.Errorf("admin /metrics: %d, want 200", got)
	}
	if got := httpGet(t, addr, "/readyz"); got != 200 {
		t.Errorf("public /readyz: %d, want 200", got)
	}
}
