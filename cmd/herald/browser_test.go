package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/push"
	"github.com/herald-ws/herald/engine/push/auth"

	"github.com/herald-ws/herald/engine/enginetest"
)

// The demo page in headless Chromium, driven with chromedp: it connects,
// shows prices `herald demo` publishes through NATS with their latency,
// tells the visitor when the server is gone, reconnects by itself once
// Herald is back on the same port, and says so when opened as a file. The
// README's client snippet works as written in the same browser.
// Screenshots go to $HERALD_ARTEFACTS (default testdata/artefacts).
func TestDemoPageInBrowser(t *testing.T) {
	browser := newBrowser(t)
	addr, natsAddr := freeAddr(t), freeAddr(t)
	h := startHeraldAt(t, addr, natsAddr)

	symbols := []string{"AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "TSLA"}
	ctx, cancel := context.WithCancel(context.Background())
	demoErr := make(chan error, 1)
	var demoOut enginetest.Buffer
	go func() {
		demoErr <- publishDemo(ctx, demoConfig{NATS: "nats://" + natsAddr, Symbols: symbols, Rate: 4}, &demoOut, &demoOut)
	}()
	defer func() {
		cancel()
		if err := <-demoErr; err != nil {
			t.Errorf("herald demo: %v", err)
		}
	}()

	page := openPage(t, browser, "http://"+addr+"/")
	board := waitBoard(t, page, 20*time.Second, "every symbol's price and latency on the board", `(b, n) =>
		b.state === "open" && b.rows.length === n && b.channels.join(" ").includes("subscribed prices.*") &&
		b.rows.every((r) => /^\d+\.\d\d$/.test(r.px) && /^\d+ ms$/.test(r.latency))`, len(symbols))
	for _, r := range board.Rows {
		var ms int
		fmt.Sscanf(r.Latency, "%d ms", &ms)
		if ms > 5000 {
			t.Errorf("%s: latency %s on loopback", r.Sym, r.Latency)
		}
	}

	// Herald goes away as on SIGTERM: the page says so and keeps trying.
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelDrain()
	if err := h.srv.Drain(drainCtx, 0); err != nil {
		t.Fatal(err)
	}
	stopHerald(t, h)
	board = waitBoard(t, page, 10*time.Second, "the page to notice the server is gone", `(b) =>
		b.state !== "open" && b.notice.includes("Lost the connection to Herald (1001")`)
	screenshot(t, page, "demo-server-gone.png")
	before := board.Updates
	restarted := time.Now()

	// Herald is back on the same port: the page reconnects by itself and
	// prices published after the restart show up.
	h = startHeraldAt(t, addr, natsAddr)
	waitBoard(t, page, 30*time.Second, "the page to reconnect and show new prices", `(b, updates, restarted) =>
		b.state === "open" && b.reconnects >= 1 && b.updates >= updates && b.notice === "" &&
		b.rows.every((r) => r.ts >= restarted)`, before+len(symbols), restarted.UnixMilli())
	screenshot(t, page, "demo.png")
	if errs := pageExceptions(page); len(errs) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(errs, "\n"))
	}

	// Opened as a file, the page says how it is meant to be opened.
	index, err := filepath.Abs("web/index.html")
	if err != nil {
		t.Fatal(err)
	}
	// It tries the default address, where no Herald may be running.
	navigate(t, page, "file://"+index)
	waitPage[struct {
		Note  bool
		Board demoBoard
	}](t, page, 10*time.Second, "the file:// note",
		`({note: !document.querySelector("#file-note").hidden && document.querySelector("#file-note").innerText.includes("herald serve"), board: `+demoBoardJS+`})`,
		`(v) => v.note && (v.board.state === "open" || v.board.notice.includes("Cannot reach Herald at ws://127.0.0.1:8080/ws"))`)
	screenshot(t, page, "demo-file.png")

	// The README's usage snippet, saved as a file and opened, with the
	// address of this test's Herald.
	snippet := readmeBlock(t, "## JavaScript client", "html")
	if !strings.Contains(snippet, "127.0.0.1:8080") {
		t.Fatalf("the README's usage snippet does not use the default address:\n%s", snippet)
	}
	file := filepath.Join(t.TempDir(), "snippet.html")
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(snippet, "127.0.0.1:8080", addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	navigate(t, page, "file://"+file)
	waitPage[string](t, page, 15*time.Second, "the README snippet to print prices", `document.body.innerText`,
		`(text) => text.includes("prices.AAPL {") && text.includes("prices.MSFT {")`)
}

// The chat page in two tabs of one room: a line typed in one shows up in
// the other and comes back to its sender, as text (markup in it stays
// text). On a server that does not let anonymous pages publish, the page
// says which flag it needs; a room name that is not one safe token gets the
// lobby.
func TestChatPageInBrowser(t *testing.T) {
	browser := newBrowser(t)
	h := startTestHerald(t, heraldConfig{
		Engine: engine.Config{HTTP: demoHandlers()},
		Push:   push.Config{PublicPublish: []string{"chat.*"}},
	})
	room := "http://" + h.srv.Addr() + "/chat?room=test1"
	a, b := openPage(t, browser, room), openPage(t, browser, room)
	for _, page := range []context.Context{a, b} {
		waitChat(t, page, 15*time.Second, "the page to join chat.test1", `(c) =>
			c.state === "open" && c.channels.join() === "subscribed chat.test1" && c.me.startsWith("client ")`)
	}

	// Markup in a line must reach the other tab as text.
	line := `hello <b id="x">bob</b> & <img src=x onerror="window.owned=1">`
	typeLine(t, a, "ada", line)
	seen := waitChat(t, b, 10*time.Second, "tab B to show tab A's line", `(c, line) =>
		c.lines.some((l) => l.nick === "ada" && l.text === line)`, line)
	mine := waitChat(t, a, 10*time.Second, "tab A to show its own line back, and clear the message box", `(c, line) =>
		c.lines.some((l) => l.nick === "ada" && l.text === line && l.mine) && c.box === ""`, line)
	if seen.Markup || mine.Markup || seen.Owned || mine.Owned {
		t.Errorf("the line was rendered as HTML: tab A %+v, tab B %+v", mine, seen)
	}
	typeLine(t, b, "bob", "hi ada")
	waitChat(t, a, 10*time.Second, "tab A to show tab B's answer after its own line", `(c, want) =>
		c.lines.map((l) => l.nick + ": " + l.text).join("\n").endsWith(want)`, "ada: "+line+"\nbob: hi ada")
	screenshot(t, a, "chat.png")

	// A room name with a dot, or anything but letters, digits, - and _, is
	// not a room: the page says so and joins the lobby.
	navigate(t, b, "http://"+h.srv.Addr()+"/chat?room=test1.>")
	waitChat(t, b, 15*time.Second, "the page to refuse the room name", `(c) =>
		c.state === "open" && c.channels.join() === "subscribed chat.lobby" && c.notice.includes("is not a room name")`)

	// Without --public-publish the line is refused, and the page says how
	// to start Herald for the demo.
	closed := startTestHerald(t, heraldConfig{Engine: engine.Config{HTTP: demoHandlers()}})
	navigate(t, a, "http://"+closed.srv.Addr()+"/chat?room=test1")
	waitChat(t, a, 15*time.Second, "the page to join chat.test1 on the second server", `(c) =>
		c.state === "open" && c.channels.join() === "subscribed chat.test1"`)
	typeLine(t, a, "ada", "anyone there?")
	waitChat(t, a, 10*time.Second, "the page to say that publishing is forbidden, and why", `(c) =>
		c.errors.some((e) => e.startsWith("Not sent (forbidden)")) &&
		c.notice.includes("--public-publish 'chat.*'") && c.box === "anyone there?" && c.lines.length === 0`)
	screenshot(t, a, "chat-forbidden.png")

	for name, page := range map[string]context.Context{"A": a, "B": b} {
		if errs := pageExceptions(page); len(errs) > 0 {
			t.Errorf("tab %s threw:\n%s", name, strings.Join(errs, "\n"))
		}
	}
}

// herald.js against a server with auth: the token option, an async
// function fetching tokens as a page would from its backend, is called for
// each connection; publish resolves on the ack and rejects with Herald's
// code; a token is refreshed before it expires, and a subscription the new
// one does not permit is dropped; a connection whose token expires without
// a refresh (4001) comes back with a new token.
func TestChatTokenInBrowser(t *testing.T) {
	browser := newBrowser(t)
	secret := []byte("chat-test-secret-0123456789abcdef")
	var minted atomic.Int64
	handlers := demoHandlers()
	// Test-only routes: a token endpoint, as a page's backend would have
	// (GET /token?ttl=SECONDS&subscribe=PATTERN), and a page that loads
	// herald.js and nothing else.
	handlers["/token"] = func(dst []byte, req *codec.Request) ([]byte, int, string) {
		q, err := url.ParseQuery(string(req.RawQuery))
		ttl, _ := strconv.Atoi(q.Get("ttl"))
		if err != nil || ttl <= 0 {
			return append(dst, "want ?ttl=SECONDS"...), 400, "text/plain"
		}
		subscribe := q["subscribe"]
		if len(subscribe) == 0 {
			subscribe = []string{"chat.>"}
		}
		now := time.Now()
		token, err := auth.Mint(secret, "HS256", auth.Claims{
			Subject:   "alice",
			Subscribe: subscribe,
			Publish:   []string{"chat.>"},
			Expires:   now.Add(time.Duration(ttl) * time.Second),
		}, now)
		if err != nil {
			return append(dst, err.Error()...), 500, "text/plain"
		}
		minted.Add(1)
		return append(dst, token...), 200, "text/plain"
	}
	handlers["/token-test"] = func(dst []byte, _ *codec.Request) ([]byte, int, string) {
		return append(dst, tokenTestPage...), 200, "text/html; charset=utf-8"
	}
	h := startTestHerald(t, heraldConfig{Engine: engine.Config{HTTP: handlers}, Auth: &auth.Config{Secret: secret}})
	page := openPage(t, browser, "http://"+h.srv.Addr()+"/token-test")

	// Without a token this server lets nobody in (401): the client backs
	// off and tries again, it does not throw.
	evaluate(t, page, `connectClient("anonymous", [], [])`)
	waitPage[tokenClient](t, page, 10*time.Second, "a client without a token to be refused", `view("anonymous")`,
		`(c) => c.states.filter((s) => s.startsWith("waiting 1006")).length >= 2 && c.id === null`)
	evaluate(t, page, `clients.anonymous.client.close()`)

	// A token of an hour, for alice.
	start := time.Now()
	evaluate(t, page, `connectClient("hour", ["ttl=3600"], ["chat.room"])`)
	c := waitPage[tokenClient](t, page, 15*time.Second, "the client to connect with its token", `view("hour")`,
		`(c) => c.id !== null && c.channels["chat.room"] === "subscribed"`)
	if c.User != "alice" || c.Calls != 1 || c.Expires < start.Add(time.Hour).Unix()-5 || c.Expires > time.Now().Add(time.Hour).Unix() {
		t.Errorf("after one connection: %+v; want user alice, one token call and expiry in an hour", c)
	}
	ctx, cancel := context.WithTimeout(page, browserStep)
	defer cancel()
	got, err := chromedp.Run(ctx, chromedp.Evaluate[struct {
		OK  string
		Bad struct {
			Code, Message string
			IsError       bool
		}
	}](`(async () => {
		const client = clients.hour.client;
		const ok = await client.publish("chat.room", { nick: "alice", text: "hi" }).then((v) => "resolved " + v, (e) => "rejected " + e.code);
		const bad = await client.publish("secret.room", 1).then(() => ({ code: "resolved" }),
			(e) => ({ code: e.code, message: e.message, isError: e instanceof Error }));
		return { ok, bad };
	})()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if got.OK != "resolved undefined" || got.Bad.Code != "forbidden" || got.Bad.Message == "" || !got.Bad.IsError {
		t.Errorf("publish: %+v; want the allowed one resolved, and the other rejected with an Error of code forbidden", got)
	}
	waitPage[tokenClient](t, page, 10*time.Second, "the publisher to receive its own message", `view("hour")`,
		`(c) => c.messages.includes('chat.room {"nick":"alice","text":"hi"}')`)

	// A token of 8 s, refreshed in band about 5 s in with one that grants
	// only chat.x, so chat.y is dropped; and a token of 2 s, not refreshed
	// in time: closed with 4001, the next connection gets one of an hour.
	evaluate(t, page, `connectClient("short", ["ttl=8", "ttl=8&subscribe=chat.x"], ["chat.x", "chat.y"]);
		connectClient("expiring", ["ttl=2", "ttl=3600"], ["chat.room"])`)
	waitPage[tokenClient](t, page, 10*time.Second, "the short-lived client to connect", `view("short")`,
		`(c) => c.channels["chat.x"] === "subscribed" && c.channels["chat.y"] === "subscribed"`)
	short := waitPage[tokenClient](t, page, 15*time.Second, "the 8 s token to be refreshed", `view("short")`,
		`(c) => c.refreshes.length >= 1 && c.channels["chat.y"] !== "subscribed"`)
	if r := short.Refreshes[0]; r.Error != "" || len(short.Greetings) != 1 || r.Expires <= short.Greetings[0] || short.States[len(short.States)-1] != "open" || short.Calls != 2 {
		t.Errorf("refresh: %+v; want a refresh with a later expiry on the same connection, after two token calls", short)
	}
	if s := short.Channels["chat.y"]; !strings.HasPrefix(s, "forbidden: ") || short.Channels["chat.x"] != "subscribed" {
		t.Errorf("after the refresh: chat.x %q, chat.y %q; want chat.x kept and chat.y forbidden", short.Channels["chat.x"], s)
	}
	expiring := waitPage[tokenClient](t, page, 15*time.Second, "the expired connection to come back with a new token", `view("expiring")`,
		`(c) => c.states.includes("waiting 4001 token expired") && c.states.at(-1) === "open" && c.channels["chat.room"] === "subscribed"`)
	if expiring.Calls != 2 || expiring.Expires < time.Now().Add(time.Hour).Unix()-10 {
		t.Errorf("after 4001: %+v; want a second token call and the hour's expiry", expiring)
	}
	if n := minted.Load(); n > 8 {
		t.Errorf("%d tokens minted; the clients should have asked for 5", n)
	}
	if errs := pageExceptions(page); len(errs) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(errs, "\n"))
	}
}

// tokenTestPage is TestChatTokenInBrowser's page: connectClient(name,
// queries, channels) starts a HeraldClient whose token function fetches
// /token?QUERY, queries[n] for its n-th call and the last one after that
// (no token function if there are none), and view(name) is what that
// client has seen.
const tokenTestPage = `<!doctype html>
<title>token test</title>
<script src="/herald.js"></script>
<script>
"use strict";
const clients = {};
function connectClient(name, queries, channels) {
  const c = { calls: 0, states: [], channels: {}, messages: [], greetings: [], refreshes: [] };
  clients[name] = c;
  c.client = new HeraldClient("ws://" + location.host + "/ws", {
    channels, minDelay: 200, maxDelay: 1000,
    token: queries.length === 0 ? undefined : async () => {
      const query = queries[Math.min(c.calls++, queries.length - 1)];
      const resp = await fetch("/token?" + query, { cache: "no-store" });
      if (!resp.ok) throw new Error("token endpoint: " + resp.status);
      return resp.text();
    },
    onstatechange: (state, info) => c.states.push(state === "waiting" ? "waiting " + info.code + " " + info.reason : state),
    onchannel: (channel, status) => (c.channels[channel] = status),
    onmessage: (channel, data) => c.messages.push(channel + " " + JSON.stringify(data)),
    onconnected: ({ expires }) => c.greetings.push(expires),
    onrefresh: ({ expires, error }) => c.refreshes.push({ expires, error: error ? error.code + ": " + error.message : "" }),
  });
  return c;
}
function view(name) {
  const c = clients[name];
  return { id: c.client.id, user: c.client.user, expires: c.client.expires, calls: c.calls, states: c.states,
    channels: c.channels, messages: c.messages, greetings: c.greetings, refreshes: c.refreshes };
}
</script>`

// tokenClient is view(name) of tokenTestPage.
type tokenClient struct {
	ID        *string
	User      string
	Expires   int64
	Calls     int
	States    []string
	Channels  map[string]string
	Messages  []string
	Greetings []int64 // the expiry in each connection's greeting
	Refreshes []struct {
		Expires int64
		Error   string
	}
}

// evaluate runs JavaScript statements in page, ignoring their value.
func evaluate(t *testing.T, page context.Context, js string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(page, browserStep)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](js+";\nundefined")); err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
}

// typeLine types a line into the chat page's message box, empty until
// then, as its user would, with Enter at the end, as nick.
func typeLine(t *testing.T, page context.Context, nick, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(page, browserStep)
	defer cancel()
	if err := chromedp.Do(ctx,
		chromedp.SetValue("#nick", nick),
		chromedp.SendKeys("#text", text+kb.Enter),
	); err != nil {
		t.Fatalf("type %q as %s: %v", text, nick, err)
	}
}

// chatView is what the chat page shows, read from its DOM.
type chatView struct {
	State    string
	Me       string
	Notice   string
	Box      string // the message box
	Channels []string
	Lines    []struct {
		Nick, Text string
		Mine       bool
	}
	Errors []string
	Markup bool // an element in the log that the page did not make
	Owned  bool // a script in a line ran
}

const chatViewJS = `(() => {
  const $ = (s) => document.querySelector(s);
  return {
    state: document.body.dataset.state,
    me: $("#me").textContent,
    notice: $("#notice").hidden ? "" : $("#notice").textContent,
    box: $("#text").value,
    channels: [...document.querySelectorAll("#channels li")].map((li) => li.className + " " + li.textContent),
    lines: [...document.querySelectorAll("#log li.line")].map((li) => ({
      nick: li.querySelector(".nick").textContent, text: li.querySelector(".text").textContent, mine: li.classList.contains("mine"),
    })),
    errors: [...document.querySelectorAll("#log li.error")].map((li) => li.textContent),
    markup: document.querySelector("#log b, #log img, #x") !== null,
    owned: window.owned === 1,
  };
})()`

// waitChat waits for the chat page to satisfy cond; see waitPage.
func waitChat(t *testing.T, page context.Context, bound time.Duration, what, cond string, args ...any) chatView {
	t.Helper()
	return waitPage[chatView](t, page, bound, what, chatViewJS, cond, args...)
}

// demoBoard is what the demo page shows, read from its DOM.
type demoBoard struct {
	State      string
	Reconnects int
	Updates    int
	Badge      string
	Notice     string
	Channels   []string
	Rows       []struct {
		Sym, Px, Latency string
		TS               int64
	}
}

const demoBoardJS = `(() => {
  const $ = (s) => document.querySelector(s);
  return {
    state: document.body.dataset.state,
    reconnects: Number(document.body.dataset.reconnects || 0),
    updates: Number(document.body.dataset.updates || 0),
    badge: $("#state").textContent,
    notice: $("#notice").hidden ? "" : $("#notice").textContent,
    channels: [...document.querySelectorAll("#channels li")].map((li) => li.className + " " + li.textContent),
    rows: [...document.querySelectorAll("#board tr[data-sym]")].map((tr) => ({
      sym: tr.dataset.sym, px: tr.cells[1].textContent, latency: tr.cells[4].textContent, ts: Number(tr.dataset.ts || 0),
    })),
  };
})()`

// waitBoard waits for the demo board to satisfy cond; see waitPage.
func waitBoard(t *testing.T, page context.Context, bound time.Duration, what, cond string, args ...any) demoBoard {
	t.Helper()
	return waitPage[demoBoard](t, page, bound, what, demoBoardJS, cond, args...)
}

// The browser and its tabs, for any test that drives a page. A browser
// context comes from newBrowser, a tab from openPage; chromedp runs the
// actions of a tab with chromedp.Run and chromedp.Do on its context.
const (
	browserStart  = 30 * time.Second // to start Chromium, or open a tab
	browserStep   = 20 * time.Second // for one action: navigate, evaluate, screenshot
	browserWidth  = 1000
	browserHeight = 700
)

// newBrowser starts headless Chromium with a fresh profile, closed when the
// test ends, and returns its chromedp context for openPage. Without
// Chromium the test is skipped, unless CI=true; a Chromium that is there
// but does not start fails the test. $HERALD_CHROMIUM names another binary.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	bin := os.Getenv("HERALD_CHROMIUM")
	if bin == "" {
		bin = requireTool(t, "chromium", "apt-get install -y chromium")
	}
	var output enginetest.Buffer // Chromium's stdout and stderr, for a failure
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.DisableGPU,
		chromedp.Flag("disable-component-update", true),
		chromedp.WindowSize(browserWidth, browserHeight),
		chromedp.CombinedOutput(&output),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium's sandbox refuses root
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		// Close it gracefully, and kill it if that takes too long.
		closeCtx, cancelClose := context.WithTimeout(ctx, 10*time.Second)
		defer cancelClose()
		if err := chromedp.Cancel(closeCtx); err != nil {
			t.Errorf("close Chromium: %v", err)
		}
		cancel()
		if t.Failed() {
			t.Logf("chromium output (tail):\n%s", tail(withoutDBus(output.String()), 3000))
		}
	})
	if err := runFirst(ctx, cancel); err != nil {
		t.Fatalf("start %s: %v", bin, err) // its output follows, from the cleanup
	}
	return ctx
}

// runFirst runs the first action on a chromedp context, which starts its
// browser or opens its tab. chromedp ties the browser or tab to the context
// of that first run, so it is bounded by cancelling ctx after browserStart
// rather than by a context.WithTimeout that would close it when done.
func runFirst(ctx context.Context, cancel context.CancelFunc, actions ...chromedp.Action[chromedp.Void]) error {
	timer := time.AfterFunc(browserStart, cancel)
	err := chromedp.Do(ctx, actions...)
	if !timer.Stop() {
		return fmt.Errorf("not done within %v: %w", browserStart, err)
	}
	return err
}

// openPage opens a new tab of browser, in a window of its own so that it
// keeps running when another tab is in front, and navigates it to url. The
// tab closes when the test ends; on a failure the test logs its console.
func openPage(t *testing.T, browser context.Context, url string) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	if err := runFirst(ctx, cancel, chromedp.EmulateViewport(browserWidth, browserHeight)); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	console := &pageConsole{}
	ctx = context.WithValue(ctx, pageConsoleKey{}, console)
	messages := chromedp.Console(ctx) // subscribed from here: nothing is lost
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			console.add(m)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("browser console of %s:\n%s", url, strings.Join(console.all(), "\n"))
		}
	})
	navigate(t, ctx, url)
	return ctx
}

// navigate loads url in the tab page and waits for its load event.
func navigate(t *testing.T, page context.Context, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(page, browserStep)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("navigate to %s: %v", url, err)
	}
}

// waitPage waits in the page until cond, a JavaScript function of the value
// of the expression expr and of args, returns true, and returns that value.
// After bound it saves a screenshot and fails with the value it last had.
func waitPage[T any](t *testing.T, page context.Context, bound time.Duration, what, expr, cond string, args ...any) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(page, bound+browserStep)
	defer cancel()
	// {v}, as v itself may be falsy.
	predicate := fmt.Sprintf(`(...args) => { const v = (%s); return (%s)(v, ...args) ? {v} : false; }`, expr, cond)
	got, err := chromedp.Run(ctx, chromedp.PollFunction[struct{ V T }](predicate,
		chromedp.WithPollingArgs(args...),
		chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(bound)))
	if err == nil {
		return got.V
	}
	evalCtx, cancelEval := context.WithTimeout(page, browserStep)
	defer cancelEval()
	var shows string
	if last, err := chromedp.Run(evalCtx, chromedp.Evaluate[T](expr)); err != nil {
		shows = err.Error()
	} else {
		b, _ := json.MarshalIndent(last, "", "  ")
		shows = string(b)
	}
	screenshot(t, page, "failure.png")
	t.Fatalf("timed out after %v waiting for %s (%v); the page shows:\n%s", bound, what, err, shows)
	return got.V
}

// screenshot saves the page's viewport as a PNG test artefact.
func screenshot(t *testing.T, page context.Context, name string) {
	t.Helper()
	dir := os.Getenv("HERALD_ARTEFACTS")
	if dir == "" {
		dir = filepath.Join("testdata", "artefacts")
	}
	ctx, cancel := context.WithTimeout(page, browserStep)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// pageConsole is what a tab wrote to its console, and what it threw.
type pageConsole struct {
	mu     sync.Mutex
	lines  []string
	thrown []string
}

type pageConsoleKey struct{}

func (c *pageConsole) add(m chromedp.ConsoleMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, strings.TrimSpace(fmt.Sprintf("%s: %s %s", m.Type, m.Text, m.URL)))
	if m.IsException() {
		c.thrown = append(c.thrown, strings.TrimSpace(m.URL+" "+m.Text))
	}
}

func (c *pageConsole) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

// pageExceptions returns the exceptions the tab page of openPage has not
// caught so far.
func pageExceptions(page context.Context) []string {
	c := page.Value(pageConsoleKey{}).(*pageConsole)
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.thrown...)
}

// withoutDBus drops the lines about D-Bus, noise where there is no session
// bus.
func withoutDBus(s string) string {
	lines := strings.SplitAfter(s, "\n")
	kept := lines[:0]
	for _, l := range lines {
		if !strings.Contains(l, "dbus") {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, "")
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// herald.js resumes history channels after every reconnect, with no code in
// the page: against a WebSocket server playing Herald's history contract
// (seq in envelopes, since and epoch in subscribes, acks with recovered),
// the demo page sends since and epoch after a forced reconnect and says how
// many messages were recovered, or that some were lost; a stream recreated
// (another epoch) restarts the position. A second page checks the API:
// onmessage's seq, onchannel's {recovered, replayed}, and a pattern
// resumed from the subjects it covers. TestHistoryResumeInBrowser runs
// the demo page against a real Herald with --history.
func TestResumeInBrowser(t *testing.T) {
	browser := newBrowser(t)
	h := startHistoryServer(t, map[string]string{"/resume-test": resumeTestPage})
	expectResume := func(c *historyConn, channel string, since uint64, epoch string) historyCommand {
		t.Helper()
		cmd := c.command(t)
		if cmd.Op != "subscribe" || cmd.Channel != channel || cmd.Since == nil || *cmd.Since != since || cmd.Epoch == nil || *cmd.Epoch != epoch {
			t.Fatalf("herald.js sent %s, want a subscribe to %s with since %d and epoch %q", cmd.raw, channel, since, epoch)
		}
		return cmd
	}
	price := func(c *historyConn, sym string, seq uint64, px float64) {
		t.Helper()
		c.envelope(t, "prices."+sym, seq, fmt.Sprintf(`{"sym":%q,"px":%.2f,"chg":0.5,"ts":%d}`, sym, px, time.Now().UnixMilli()))
	}
	page := openPage(t, browser, h.srv.URL+"/")

	c := h.next(t)
	c.greet(t, "c1")
	cmd := c.command(t)
	if cmd.Op != "subscribe" || cmd.Channel != "prices.*" || cmd.Since != nil || cmd.Epoch != nil {
		t.Fatalf("the first subscribe is %s, want prices.* without since or epoch", cmd.raw)
	}
	c.ack(t, cmd, "E1", false)
	price(c, "AAPL", 1, 187.10)
	price(c, "MSFT", 2, 410.00)
	price(c, "AAPL", 3, 187.20)
	waitBoard(t, page, 10*time.Second, "two symbols on the board", `(b) => b.state === "open" && b.rows.length === 2 && b.updates === 3`)
	c.close(t, 1012, "service restart")

	// Reconnected: since 3 in epoch E1; three replayed, then the ack and a
	// live message.
	c = h.next(t)
	c.greet(t, "c2")
	cmd = expectResume(c, "prices.*", 3, "E1")
	price(c, "AAPL", 4, 187.30)
	price(c, "MSFT", 5, 411.00)
	price(c, "NVDA", 6, 140.00)
	c.ack(t, cmd, "E1", true)
	price(c, "NVDA", 7, 140.50)
	waitPage[string](t, page, 10*time.Second, `"recovered 3 messages"`, `document.querySelector("#recovery").hidden ? "" : document.querySelector("#recovery").textContent`,
		`(text) => text === "Reconnected: recovered 3 messages published while away."`)
	waitBoard(t, page, 10*time.Second, "every message on the board", `(b) => b.updates === 7 && b.rows.length === 3 && b.reconnects === 1`)
	screenshot(t, page, "demo-recovered.png")
	c.close(t, 1001, "server shutting down")

	// The stream was recreated: epoch E2, what it has (seq 1), recovered
	// false; the next resume starts from the new stream's seq 1.
	c = h.next(t)
	c.greet(t, "c3")
	cmd = expectResume(c, "prices.*", 7, "E1")
	price(c, "AAPL", 1, 190.00)
	c.ack(t, cmd, "E2", false)
	waitPage[string](t, page, 10*time.Second, "the loss to be told", `document.querySelector("#recovery").textContent`,
		`(text) => text.startsWith("Reconnected: recovered 1 message published while away, but some are no longer stored")`)
	screenshot(t, page, "demo-recovered-lost.png")
	c.close(t, 1001, "server shutting down")
	c = h.next(t)
	expectResume(c, "prices.*", 1, "E2")
	if errs := pageExceptions(page); len(errs) > 0 {
		t.Errorf("the demo page threw:\n%s", strings.Join(errs, "\n"))
	}

	// The API, on a page of its own: chat.a and chat.*, which covers it.
	api := openPage(t, browser, h.srv.URL+"/resume-test")
	c = h.next(t)
	c.greet(t, "c4")
	cmds := c.subscribes(t, 2)
	c.ack(t, cmds["chat.a"], "E", false)
	c.ack(t, cmds["chat.*"], "E", false)
	c.envelope(t, "chat.a", 10, `"a10"`)
	c.envelope(t, "chat.b", 11, `"b11"`)
	c.send(t, `{"channel":"plain","data":"no seq"}`)
	waitPage[[]string](t, api, 10*time.Second, "three messages", `messages`, `(m) => m.length === 3`)
	c.close(t, 1001, "")
	c = h.next(t)
	a, star := expectResume(c, "chat.a", 10, "E"), expectResume(c, "chat.*", 11, "E")
	c.envelope(t, "chat.a", 12, `"a12"`) // replayed for both
	c.ack(t, a, "E", true)
	c.ack(t, star, "E", false)
	got := waitPage[struct{ Messages, Channels []string }](t, api, 10*time.Second, "both resumes answered", `({messages, channels})`,
		`(v) => v.channels.length === 4`)
	wantMessages := []string{`chat.a "a10" 10`, `chat.b "b11" 11`, `plain "no seq" undefined`, `chat.a "a12" 12`}
	wantChannels := []string{`chat.a subscribed {}`, `chat.* subscribed {}`,
		`chat.a subscribed {"recovered":true,"replayed":1}`, `chat.* subscribed {"recovered":false,"replayed":1}`}
	if strings.Join(got.Messages, "\n") != strings.Join(wantMessages, "\n") || strings.Join(got.Channels, "\n") != strings.Join(wantChannels, "\n") {
		t.Errorf("onmessage:\n%s\nonchannel:\n%s\nwant:\n%s\n%s", strings.Join(got.Messages, "\n"), strings.Join(got.Channels, "\n"),
			strings.Join(wantMessages, "\n"), strings.Join(wantChannels, "\n"))
	}
	// Unsubscribed, a channel forgets its position: subscribed again, it
	// starts live.
	evaluate(t, api, `client.unsubscribe("chat.a"); client.subscribe("chat.a")`)
	if cmd := c.command(t); cmd.Op != "unsubscribe" {
		t.Fatalf("herald.js sent %s, want the unsubscribe", cmd.raw)
	}
	if cmd := c.command(t); cmd.Op != "subscribe" || cmd.Since != nil || cmd.Epoch != nil {
		t.Errorf("subscribed again after an unsubscribe: %s, want no since or epoch", cmd.raw)
	}
	if errs := pageExceptions(api); len(errs) > 0 {
		t.Errorf("the API page threw:\n%s", strings.Join(errs, "\n"))
	}
}

// resumeTestPage is TestResumeInBrowser's API page: a HeraldClient on
// chat.a and chat.*, with what its callbacks got as lines.
const resumeTestPage = `<!doctype html>
<title>resume test</title>
<script src="/herald.js"></script>
<script>
"use strict";
const messages = [], channels = [];
const client = new HeraldClient("ws://" + location.host + "/ws", {
  channels: ["chat.a", "chat.*"], minDelay: 100, maxDelay: 500,
  onmessage: (channel, data, seq) => messages.push(channel + " " + JSON.stringify(data) + " " + seq),
  onchannel: (channel, status, info) => channels.push(channel + " " + status + " " + JSON.stringify(info)),
});
</script>`
