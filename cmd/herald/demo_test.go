package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-ws/herald/engine"

	"github.com/herald-ws/herald/engine/enginetest"
)

// The demo pages' files are served at their names, index.html at /,
// chat.html at /chat, and nothing at all with --no-demo.
func TestDemoPageServed(t *testing.T) {
	h := startTestHerald(t, heraldConfig{Engine: engine.Config{HTTP: demoHandlers()}})
	for _, tt := range []struct{ path, file, contentType string }{
		{"/", "web/index.html", "text/html; charset=utf-8"},
		{"/index.html", "web/index.html", "text/html; charset=utf-8"},
		{"/herald.js", "web/herald.js", "text/javascript; charset=utf-8"},
		{"/app.js", "web/app.js", "text/javascript; charset=utf-8"},
		{"/style.css", "web/style.css", "text/css; charset=utf-8"},
		{"/?channel=prices.AAPL", "web/index.html", "text/html; charset=utf-8"},
		{"/chat", "web/chat.html", "text/html; charset=utf-8"},
		{"/chat?room=test1", "web/chat.html", "text/html; charset=utf-8"},
		{"/chat.html", "web/chat.html", "text/html; charset=utf-8"},
		{"/chat.js", "web/chat.js", "text/javascript; charset=utf-8"},
	} {
		resp, err := http.Get("http://" + h.srv.Addr() + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want, err := os.ReadFile(tt.file)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tt.contentType || !bytes.Equal(body, want) {
			t.Errorf("GET %s: %d %q, %d bytes; want 200 %q and the %d bytes of %s",
				tt.path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body), tt.contentType, len(want), tt.file)
		}
	}
	if code := httpGet(t, h.srv.Addr(), "/nope.js"); code != 404 {
		t.Errorf("GET /nope.js: %d, want 404", code)
	}
	// Every file the pages link to is served.
	for _, page := range []string{"index.html", "chat.html"} {
		html, _ := os.ReadFile("web/" + page)
		for _, m := range regexp.MustCompile(`(?:src|href)="([a-z.]+)"`).FindAllSubmatch(html, -1) {
			if code := httpGet(t, h.srv.Addr(), "/"+string(m[1])); code != 200 {
				t.Errorf("%s links to %s, which answers %d", page, m[1], code)
			}
		}
	}
}

func TestServeNoDemo(t *testing.T) {
	_, addr := startHeraldProcess(t, "--no-demo")
	for _, path := range []string{"/", "/chat", "/chat.js"} {
		if code := httpGet(t, addr, path); code != 404 {
			t.Errorf("herald serve --no-demo: GET %s answers %d, want 404", path, code)
		}
	}
	if code := httpGet(t, addr, "/healthz"); code != 200 {
		t.Errorf("herald serve --no-demo: GET /healthz answers %d, want 200", code)
	}
	_, addr = startHeraldProcess(t)
	for _, path := range []string{"/", "/chat"} {
		if code := httpGet(t, addr, path); code != 200 {
			t.Errorf("herald serve: GET %s answers %d, want 200 (a demo page)", path, code)
		}
	}
}

// The README's JavaScript client is the file the demo page runs.
func TestReadmeSnippetIsHeraldJS(t *testing.T) {
	snippet := readmeBlock(t, "## JavaScript client", "js")
	file, err := os.ReadFile("web/herald.js")
	if err != nil {
		t.Fatal(err)
	}
	if snippet != string(file) {
		t.Fatalf("the first js block under \"## JavaScript client\" in README.md differs from cmd/herald/web/herald.js; copy the file into the README.\nREADME:\n%s", snippet)
	}
}

// readmeBlock returns the first fenced block of the given language in the
// README section under heading.
func readmeBlock(t testing.TB, heading, lang string) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no %q section", heading)
	}
	if next := strings.Index(section, "\n## "); next >= 0 {
		section = section[:next]
	}
	_, block, ok := strings.Cut(section, "\n```"+lang+"\n")
	if !ok {
		t.Fatalf("README.md section %q has no ```%s block", heading, lang)
	}
	block, _, ok = strings.Cut(block, "\n```\n")
	if !ok {
		t.Fatalf("README.md section %q: unterminated ```%s block", heading, lang)
	}
	return block + "\n"
}

// herald demo publishes every symbol in turn, each payload carrying its
// symbol, a price and the publish time.
func TestDemoPublishesPrices(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	sub := dialWS(t, h, "channel=prices.*")
	settle(t, h)

	symbols := []string{"AAPL", "MSFT", "ZZZZ"}
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	if err := publishDemo(ctx, demoConfig{NATS: h.broker.ClientURL(), Symbols: symbols, Rate: 50}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	m := regexp.MustCompile(`published (\d+) updates\n$`).FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("stdout %q does not end with the count", stdout.String())
	}
	sent, _ := strconv.Atoi(m[1])
	if sent < 2*len(symbols) {
		t.Fatalf("published only %d updates in 400ms at 50/s for %d symbols", sent, len(symbols))
	}
	perSymbol := map[string]int{}
	for i := range sent {
		e := readEnvelope(t, sub)
		var p struct {
			Sym     string
			Px, Chg *float64
			TS      int64
		}
		if err := json.Unmarshal(e.Data, &p); err != nil || p.Px == nil || p.Chg == nil {
			t.Fatalf("update %d: %s: not a price (%v)", i, e.Data, err)
		}
		if e.Channel != "prices."+p.Sym || *p.Px <= 0 || p.TS < start.UnixMilli() || p.TS > end.UnixMilli() {
			t.Fatalf("update %d on %s: %s (published between %d and %d)", i, e.Channel, e.Data, start.UnixMilli(), end.UnixMilli())
		}
		if want := symbols[i%len(symbols)]; p.Sym != want {
			t.Fatalf("update %d is for %s, want %s: symbols go in turn", i, p.Sym, want)
		}
		perSymbol[p.Sym]++
	}
	expectSilence(t, sub, 100*time.Millisecond)
	if len(perSymbol) != len(symbols) {
		t.Fatalf("updates per symbol %v", perSymbol)
	}
}

func TestDemoFlags(t *testing.T) {
	for _, tt := range []struct {
		args     []string
		wantCode int
		wantErr  string
	}{
		{[]string{"--symbols", "AAPL,BRK.B"}, 2, `"BRK.B": a symbol is one NATS subject token`},
		{[]string{"--symbols", "AAPL,A*"}, 2, `"A*"`},
		{[]string{"--symbols", " , "}, 2, "no symbols"},
		{[]string{"--rate", "0"}, 2, "--rate 0"},
		{[]string{"--rate", "1e9"}, 2, "at most"},
		{[]string{"--nats", "nats://127.0.0.1:1", "--wait", "0"}, 1, "is herald serve running?"},
		{[]string{"--nats", "nats://127.0.0.1:1", "--wait", "300ms"}, 1, "waiting for NATS at nats://127.0.0.1:1: is herald serve running?\nherald demo: connect to NATS"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"demo"}, tt.args...), &stdout, &stderr)
		if code != tt.wantCode || !strings.Contains(stderr.String(), tt.wantErr) {
			t.Errorf("herald demo %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tt.args, " "), code, stderr.String(), tt.wantCode, tt.wantErr)
		}
	}
}

// herald demo waits for Herald to start, and rides out a restart of Herald
// and its embedded NATS, as when someone restarts `herald serve` while the
// demo runs.
func TestDemoSurvivesHeraldRestart(t *testing.T) {
	addr, natsAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	demoErr := make(chan error, 1)
	var demoOut enginetest.Buffer
	go func() {
		cfg := demoConfig{NATS: "nats://" + natsAddr, Symbols: []string{"AAPL"}, Rate: 50, Wait: 20 * time.Second}
		demoErr <- publishDemo(ctx, cfg, &demoOut, &demoOut)
	}()
	waitOutput(t, &demoOut, "waiting for NATS", 10*time.Second)
	h := startHeraldAt(t, addr, natsAddr)
	defer func() {
		cancel()
		if err := <-demoErr; err != nil {
			t.Errorf("herald demo: %v", err)
		}
	}()
	expectPrices := func(h *herald) {
		t.Helper()
		conn := dialWS(t, h, "channel=prices.AAPL")
		for range 3 {
			if e := readEnvelope(t, conn); e.Channel != "prices.AAPL" {
				t.Fatalf("got %+v", e)
			}
		}
	}
	expectPrices(h)
	stopHerald(t, h)
	h = startHeraldAt(t, addr, natsAddr)
	expectPrices(h)
	if !strings.Contains(demoOut.String(), "reconnected to NATS") {
		t.Errorf("herald demo did not report its reconnect: %q", demoOut.String())
	}
}

// freeAddr returns a loopback address with a port free a moment ago, for
// servers that must come back on the same port.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startHeraldAt starts Herald with the demo page on fixed addresses, so a
// test can stop it and start another where clients will look for it. It
// retries while the previous one's ports are still being released.
func startHeraldAt(t testing.TB, addr, natsAddr string) *herald {
	t.Helper()
	cfg := heraldConfig{
		Engine: engine.Config{
			Addr:   addr,
			Loops:  2,
			HTTP:   demoHandlers(),
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		},
		NATSListen: natsAddr,
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, err := startHerald(cfg)
		if err == nil {
			t.Cleanup(func() { stopHerald(t, h) })
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("start Herald on %s with NATS on %s: %v", addr, natsAddr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopHerald stops h; stopping it again does nothing.
func stopHerald(t testing.TB, h *herald) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.stop(ctx); err != nil {
		t.Errorf("stop Herald: %v", err)
	}
}

// waitOutput waits until buf holds want, and fails with what it holds.
func waitOutput(t testing.TB, buf *enginetest.Buffer, want string, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !strings.Contains(buf.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q within %v in:\n%s", want, bound, buf.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
