package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-ws/herald/codec/channel"
)

// demoPrefix is the NATS subject prefix of the demo's prices: prices.AAPL.
const demoPrefix = "prices."

// demoOpen is the opening price of the symbols the demo knows; others get
// one derived from their name.
var demoOpen = map[string]float64{
	"AAPL": 189.50, "MSFT": 421.30, "GOOG": 171.20, "AMZN": 182.70,
	"NVDA": 124.60, "TSLA": 251.10, "META": 489.90, "NFLX": 642.00,
}

func runDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", "[flags]", `Publishes synthetic stock prices through NATS so that the demo page moves:
one message per update on prices.SYMBOL, such as
{"sym":"AAPL","px":187.23,"chg":-0.41,"ts":1732190000123}
where chg is the percent change since the demo started and ts the publish
time in Unix milliseconds, from which the page shows each update's latency.
Start herald serve first, run this, and open http://127.0.0.1:8080/.`, stderr)
	natsURL := fs.String("nats", "nats://127.0.0.1:4222", "`URL` of the NATS server to publish to: herald serve's embedded one by default")
	symbols := fs.String("symbols", "AAPL,MSFT,GOOG,AMZN,NVDA,TSLA", "comma-separated ticker `symbols`")
	rate := fs.Float64("rate", 2, "price updates per second for each symbol")
	duration := fs.Duration("duration", 0, "stop after this long; 0 runs until Ctrl-C")
	wait := fs.Duration("wait", 30*time.Second, "at start, wait this long for NATS to come up (herald serve may still be starting)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg := demoConfig{NATS: *natsURL, Rate: *rate, Wait: *wait}
	for _, s := range strings.Split(*symbols, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.Symbols = append(cfg.Symbols, s)
		}
	}
	if err := cfg.check(); err != nil {
		fmt.Fprintln(stderr, err)
		fs.Usage()
		return errUsage
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	return publishDemo(ctx, cfg, stdout, stderr)
}

// demoConfig is what herald demo publishes, where, and how fast.
type demoConfig struct {
	NATS    string
	Symbols []string
	Rate    float64       // updates per second per symbol
	Wait    time.Duration // how long to wait for NATS at start
}

// maxDemoRate caps the total messages per second, far above what a page
// can show, so that a typo does not flood the server.
const maxDemoRate = 100_000

func (c *demoConfig) check() error {
	if len(c.Symbols) == 0 {
		return errors.New("--symbols: no symbols")
	}
	for _, s := range c.Symbols {
		if strings.Contains(s, ".") {
			return fmt.Errorf("--symbols: %q: a symbol is one NATS subject token, without dots", s)
		}
		if err := channel.Validate(demoPrefix+s, false); err != nil {
			return fmt.Errorf("--symbols: %q: %v", s, err)
		}
	}
	if !(c.Rate > 0) || c.Rate*float64(len(c.Symbols)) > maxDemoRate {
		return fmt.Errorf("--rate %v: want more than 0 and at most %d updates a second in all", c.Rate, maxDemoRate)
	}
	return nil
}

// publishDemo publishes prices until ctx ends, one symbol at a time in
// turn so that updates are spread evenly. It rides out a NATS restart (as
// when herald serve with its embedded NATS restarts): updates due while
// disconnected are skipped, not queued, since a stale price is worthless.
func publishDemo(ctx context.Context, cfg demoConfig, stdout, stderr io.Writer) error {
	nc, err := connectDemo(ctx, cfg, stderr)
	if err != nil || nc == nil {
		return err
	}
	defer nc.Close()

	prices := make([]demoPrice, len(cfg.Symbols))
	for i, s := range cfg.Symbols {
		prices[i] = newDemoPrice(s)
	}
	interval := time.Duration(float64(time.Second) / (cfg.Rate * float64(len(cfg.Symbols))))
	fmt.Fprintf(stdout, "publishing %s%s at %g updates/s each to %s; open http://127.0.0.1:8080/ to watch, Ctrl-C to stop\n",
		demoPrefix, strings.Join(cfg.Symbols, ", "+demoPrefix), cfg.Rate, nc.ConnectedUrlRedacted())

	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	var buf []byte
	sent, skipped := 0, 0
	for next := 0; ; next = (next + 1) % len(prices) {
		select {
		case <-ctx.Done():
			// Hand what is buffered to the server before saying how much
			// was sent.
			_ = nc.FlushTimeout(2 * time.Second)
			fmt.Fprintf(stdout, "published %d updates", sent)
			if skipped > 0 {
				fmt.Fprintf(stdout, " (%d skipped while NATS was unreachable)", skipped)
			}
			fmt.Fprintln(stdout)
			return nil
		case <-ticker.C:
		}
		p := &prices[next]
		p.step()
		buf = p.appendJSON(buf[:0], time.Now())
		switch err := nc.Publish(demoPrefix+p.sym, buf); {
		case err == nil:
			sent++
		case errors.Is(err, nats.ErrReconnectBufExceeded):
			skipped++
		default:
			return fmt.Errorf("publish: %w", err)
		}
	}
}

// connectDemo connects to NATS, waiting up to cfg.Wait for it to come up,
// as when herald serve is still starting. It returns nil, nil if ctx ends
// first (Ctrl-C).
func connectDemo(ctx context.Context, cfg demoConfig, stderr io.Writer) (*nats.Conn, error) {
	deadline := time.Now().Add(cfg.Wait)
	for waiting := false; ; {
		nc, err := nats.Connect(cfg.NATS,
			nats.Name("herald demo"),
			nats.Timeout(3*time.Second),
			nats.MaxReconnects(-1),
			nats.ReconnectWait(250*time.Millisecond),
			nats.ReconnectJitter(250*time.Millisecond, time.Second),
			nats.ReconnectBufSize(-1), // publish fails fast while disconnected
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil {
					fmt.Fprintf(stderr, "lost NATS (%v); reconnecting\n", err)
				}
			}),
			nats.ReconnectHandler(func(nc *nats.Conn) {
				fmt.Fprintf(stderr, "reconnected to NATS at %s\n", nc.ConnectedUrlRedacted())
			}),
		)
		if err == nil {
			return nc, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to NATS at %s: %w (is herald serve running? it starts NATS on 127.0.0.1:4222)", cfg.NATS, err)
		}
		if !waiting {
			waiting = true
			fmt.Fprintf(stderr, "waiting for NATS at %s: is herald serve running?\n", cfg.NATS)
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// demoPrice is one symbol's price, a random walk from its opening price.
type demoPrice struct {
	sym      string
	symJSON  []byte // sym as a JSON string
	open, px float64
}

func newDemoPrice(sym string) demoPrice {
	open, ok := demoOpen[sym]
	if !ok {
		h := fnv.New32a()
		h.Write([]byte(sym))
		open = 20 + float64(h.Sum32()%48000)/100 // 20.00 to 499.99
	}
	symJSON, _ := json.Marshal(sym)
	return demoPrice{sym: sym, symJSON: symJSON, open: open, px: open}
}

// step moves the price by a small random percentage, about 0.1% a tick,
// and keeps it to cents and above one.
func (p *demoPrice) step() {
	p.px *= math.Exp(rand.NormFloat64() * 0.001)
	p.px = math.Max(1, math.Round(p.px*100)/100)
}

func (p *demoPrice) appendJSON(dst []byte, now time.Time) []byte {
	chg := (p.px/p.open - 1) * 100
	return fmt.Appendf(dst, `{"sym":%s,"px":%.2f,"chg":%.2f,"ts":%d}`, p.symJSON, p.px, chg, now.UnixMilli())
}
