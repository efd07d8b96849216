package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The demo page in headless Chromium, driven over the DevTools protocol:
// it connects, shows prices `herald demo` publishes through NATS with
// their latency, tells the visitor when the server is gone, reconnects by
// itself once Herald is back on the same port, and says so when opened as
// a file. The README's client snippet works as written in the same browser.
// Screenshots go to $HERALD_ARTEFACTS (default testdata/artefacts).
func TestDemoPageInBrowser(t *testing.T) {
	browser := startChromium(t)
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

	page := browser.newPage(t)
	page.navigate(t, "http://"+addr+"/")
	var board demoBoard
	page.waitFor(t, 20*time.Second, "every symbol's price and latency on the board", &board, func() bool {
		if board.State != "open" || len(board.Rows) != len(symbols) || !strings.Contains(strings.Join(board.Channels, " "), "subscribed prices.*") {
			return false
		}
		for _, r := range board.Rows {
			if !regexp.MustCompile(`^\d+\.\d\d$`).MatchString(r.Px) || !regexp.MustCompile(`^\d+ ms$`).MatchString(r.Latency) {
				return false
			}
		}
		return true
	})
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
	page.waitFor(t, 10*time.Second, "the page to notice the server is gone", &board, func() bool {
		return board.State != "open" && strings.Contains(board.Notice, "Lost the connection to Herald (1001")
	})
	page.screenshot(t, "demo-server-gone.png")
	before := board.Updates
	restarted := time.Now()

	// Herald is back on the same port: the page reconnects by itself and
	// prices published after the restart show up.
	h = startHeraldAt(t, addr, natsAddr)
	page.waitFor(t, 30*time.Second, "the page to reconnect and show new prices", &board, func() bool {
		if board.State != "open" || board.Reconnects < 1 || board.Updates < before+len(symbols) || board.Notice != "" {
			return false
		}
		for _, r := range board.Rows {
			if r.TS < restarted.UnixMilli() {
				return false
			}
		}
		return true
	})
	page.screenshot(t, "demo.png")
	if errs := page.exceptions(); len(errs) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(errs, "\n"))
	}

	// Opened as a file, the page says how it is meant to be opened.
	index, err := filepath.Abs("web/index.html")
	if err != nil {
		t.Fatal(err)
	}
	// It tries the default address, where no Herald may be running.
	page.navigate(t, "file://"+index)
	var fromFile struct {
		Note  bool
		Board demoBoard
	}
	page.waitFor(t, 10*time.Second, "the file:// note", &fromFile, func() bool {
		return fromFile.Note && (fromFile.Board.State == "open" || strings.Contains(fromFile.Board.Notice, "Cannot reach Herald at ws://127.0.0.1:8080/ws"))
	}, `({note: !document.querySelector("#file-note").hidden && document.querySelector("#file-note").innerText.includes("herald serve"), board: `+demoBoardJS+`})`)
	page.screenshot(t, "demo-file.png")

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
	page.navigate(t, "file://"+file)
	var text string
	page.waitFor(t, 15*time.Second, "the README snippet to print prices", &text, func() bool {
		return strings.Contains(text, "prices.AAPL {") && strings.Contains(text, "prices.MSFT {")
	}, `document.body.innerText`)
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

// chromium is a headless Chromium driven over the DevTools protocol.
type chromium struct {
	ws      *websocket.Conn
	writeMu sync.Mutex

	mu      sync.Mutex
	nextID  int64
	calls   map[int64]chan cdpMessage
	console []string // console messages and exceptions, for failures
	thrown  []string
	closed  chan struct{}
}

type cdpMessage struct {
	ID     int64           `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// startChromium starts headless Chromium with a fresh profile. Without
// Chromium the test is skipped, unless CI=true; a Chromium that is there
// but does not start fails the test.
func startChromium(t *testing.T) *chromium {
	t.Helper()
	bin := os.Getenv("HERALD_CHROMIUM")
	if bin == "" {
		bin = requireTool(t, "chromium", "apt-get install -y chromium")
	}
	profile := t.TempDir()
	cmd := exec.Command(bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run",
		"--user-data-dir="+profile, "--remote-debugging-port=0",
		"--window-size=1000,700", "--hide-scrollbars", "about:blank")
	// Its own process group, so that the renderers go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	// The DevTools address is on stderr; keep the rest for a failure.
	found := make(chan string, 1)
	var log syncBuffer
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if m := regexp.MustCompile(`DevTools listening on (ws://\S+)`).FindStringSubmatch(line); m != nil {
				found <- m[1]
			}
			if !strings.Contains(line, "dbus") { // noise on machines without a session bus
				fmt.Fprintln(&log, line)
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
	}()
	var url string
	select {
	case url = <-found:
	case <-exited:
		t.Fatalf("%s exited before it listened:\n%s", bin, log.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not print its DevTools address within 30s:\n%s", bin, log.String())
	}
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("connect to Chromium's DevTools at %s: %v", url, err)
	}
	ws.SetReadLimit(64 << 20) // screenshots
	c := &chromium{ws: ws, calls: make(map[int64]chan cdpMessage), closed: make(chan struct{})}
	go c.read()
	t.Cleanup(func() {
		ws.Close()
		if t.Failed() {
			t.Logf("browser console:\n%s\nchromium stderr (tail):\n%s", strings.Join(c.logs(), "\n"), tail(log.String(), 3000))
		}
	})
	return c
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func (c *chromium) read() {
	defer close(c.closed)
	for {
		var m cdpMessage
		if err := c.ws.ReadJSON(&m); err != nil {
			return
		}
		c.mu.Lock()
		if m.ID != 0 {
			if ch := c.calls[m.ID]; ch != nil {
				ch <- m
				delete(c.calls, m.ID)
			}
		}
		switch m.Method {
		case "Runtime.consoleAPICalled":
			var p struct {
				Type string
				Args []struct {
					Value       any
					Description string
				}
			}
			_ = json.Unmarshal(m.Params, &p)
			line := "console." + p.Type + ":"
			for _, a := range p.Args {
				if a.Value != nil {
					line += fmt.Sprintf(" %v", a.Value)
				} else {
					line += " " + a.Description
				}
			}
			c.console = append(c.console, line)
		case "Runtime.exceptionThrown":
			var p struct {
				ExceptionDetails struct {
					Text      string
					URL       string
					Exception struct{ Description string }
				}
			}
			_ = json.Unmarshal(m.Params, &p)
			d := p.ExceptionDetails
			e := fmt.Sprintf("%s %s %s", d.URL, d.Text, d.Exception.Description)
			c.console = append(c.console, "exception: "+e)
			c.thrown = append(c.thrown, e)
		case "Log.entryAdded":
			var p struct {
				Entry struct{ Level, Text, URL string }
			}
			_ = json.Unmarshal(m.Params, &p)
			c.console = append(c.console, fmt.Sprintf("log.%s: %s %s", p.Entry.Level, p.Entry.Text, p.Entry.URL))
		}
		c.mu.Unlock()
	}
}

func (c *chromium) logs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.console...)
}

// call sends one DevTools command, to the page of session if not "", and
// decodes its result into result.
func (c *chromium) call(t *testing.T, session, method string, params, result any) {
	t.Helper()
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	reply := make(chan cdpMessage, 1)
	c.calls[id] = reply
	c.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	c.writeMu.Lock()
	err := c.ws.WriteJSON(msg)
	c.writeMu.Unlock()
	if err != nil {
		t.Fatalf("DevTools %s: %v", method, err)
	}
	select {
	case m := <-reply:
		if m.Error != nil {
			t.Fatalf("DevTools %s: %d %s", method, m.Error.Code, m.Error.Message)
		}
		if result != nil {
			if err := json.Unmarshal(m.Result, result); err != nil {
				t.Fatalf("DevTools %s: %v in %s", method, err, m.Result)
			}
		}
	case <-c.closed:
		t.Fatalf("DevTools %s: the browser connection closed", method)
	case <-time.After(20 * time.Second):
		t.Fatalf("DevTools %s: no answer within 20s", method)
	}
}

// page is one browser tab.
type page struct {
	c       *chromium
	session string
}

func (c *chromium) newPage(t *testing.T) *page {
	t.Helper()
	var target struct{ TargetID string }
	c.call(t, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var attached struct{ SessionID string }
	c.call(t, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached)
	p := &page{c: c, session: attached.SessionID}
	for _, domain := range []string{"Runtime.enable", "Page.enable", "Log.enable"} {
		c.call(t, p.session, domain, map[string]any{}, nil)
	}
	c.call(t, p.session, "Emulation.setDeviceMetricsOverride",
		map[string]any{"width": 1000, "height": 700, "deviceScaleFactor": 1, "mobile": false}, nil)
	return p
}

func (p *page) navigate(t *testing.T, url string) {
	t.Helper()
	var nav struct{ ErrorText string }
	p.c.call(t, p.session, "Page.navigate", map[string]any{"url": url}, &nav)
	if nav.ErrorText != "" {
		t.Fatalf("navigate to %s: %s", url, nav.ErrorText)
	}
}

// eval evaluates a JavaScript expression in the page into out.
func (p *page) eval(t *testing.T, expr string, out any) {
	t.Helper()
	var r struct {
		Result           struct{ Value json.RawMessage }
		ExceptionDetails *struct {
			Text      string
			Exception struct{ Description string }
		}
	}
	p.c.call(t, p.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r)
	if r.ExceptionDetails != nil {
		// The page may be between documents: try again at the next poll.
		return
	}
	if len(r.Result.Value) > 0 {
		_ = json.Unmarshal(r.Result.Value, out)
	}
}

// waitFor evaluates expr (by default the demo board) into out until cond
// holds, and fails after bound with the last value.
func (p *page) waitFor(t *testing.T, bound time.Duration, what string, out any, cond func() bool, expr ...string) {
	t.Helper()
	js := demoBoardJS
	if len(expr) > 0 {
		js = expr[0]
	}
	deadline := time.Now().Add(bound)
	for {
		reflect.ValueOf(out).Elem().SetZero() // nothing stale if eval fails
		p.eval(t, js, out)
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			last, _ := json.MarshalIndent(out, "", "  ")
			p.screenshot(t, "failure.png")
			t.Fatalf("timed out after %v waiting for %s; the page shows:\n%s", bound, what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// screenshot saves the page as a PNG test artefact.
func (p *page) screenshot(t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv("HERALD_ARTEFACTS")
	if dir == "" {
		dir = filepath.Join("testdata", "artefacts")
	}
	var shot struct{ Data string }
	p.c.call(t, p.session, "Page.captureScreenshot", map[string]any{"format": "png"}, &shot)
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		t.Fatal(err)
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

func (p *page) exceptions() []string {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	return append([]string(nil), p.c.thrown...)
}
