package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
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
	var demoOut syncBuffer
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
	var output syncBuffer // Chromium's stdout and stderr, for a failure
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
