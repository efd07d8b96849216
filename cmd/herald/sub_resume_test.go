package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// herald sub outlives a restart of Herald: the server going away (1001)
// and the refused connections while it is down are each reported on one
// line, with waits that never pass --reconnect-max, and once Herald is
// back on its port every channel, from the URL and from --channel, is
// subscribed again and receives what is published.
func TestSubReconnectsToRestartedServer(t *testing.T) {
	addr, natsAddr := freeAddr(t), freeAddr(t)
	h := startHeraldAt(t, addr, natsAddr)
	const maxDelay = 300 * time.Millisecond
	s := startSub(t, subConfig{
		URL:          "ws://" + addr + "/ws?channel=rec.a",
		Channels:     []string{"rec.b"},
		ReconnectMin: 50 * time.Millisecond,
		ReconnectMax: maxDelay,
	})
	waitOutput(t, &s.stderr, "subscribed to rec.b\n", 10*time.Second)
	settle(t, h)
	publishTo(t, h.broker.ClientURL(), "rec.a", "1")
	waitOutput(t, &s.stdout, "rec.a 1\n", 10*time.Second)

	drainCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.srv.Drain(drainCtx, 0); err != nil { // as herald serve does on SIGTERM
		t.Fatal(err)
	}
	stopHerald(t, h)
	waitOutput(t, &s.stderr, "connection closed: 1001 server shutting down; reconnecting in ", 10*time.Second)
	waitOutput(t, &s.stderr, "connection refused; reconnecting in ", 10*time.Second) // down: refused, and retried

	h = startHeraldAt(t, addr, natsAddr)
	waitOutput(t, &s.stderr, "connected to ws://"+addr+"/ws\n", 20*time.Second)
	waitFor(t, 10*time.Second, "both channels subscribed again", func() bool {
		after := s.stderr.String()[strings.LastIndex(s.stderr.String(), "connected to "):]
		return strings.Contains(after, "subscribed to rec.a\n") && strings.Contains(after, "subscribed to rec.b\n")
	})
	settle(t, h)
	publishTo(t, h.broker.ClientURL(), "rec.a", "2", "rec.b", "3")
	waitOutput(t, &s.stdout, "rec.b 3\n", 10*time.Second)
	if got, want := s.stdout.String(), "rec.a 1\nrec.a 2\nrec.b 3\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}

	// One line per reconnect, numbered from 1 since the last good
	// connection, each wait within the bound.
	attempts := regexp.MustCompile(`(?m)^.*; reconnecting in (\S+) \(attempt (\d+)\)$`).FindAllStringSubmatch(s.stderr.String(), -1)
	if len(attempts) < 2 {
		t.Fatalf("stderr reports %d reconnects, want the 1001 and at least one refused attempt:\n%s", len(attempts), s.stderr.String())
	}
	for i, m := range attempts {
		delay, err := time.ParseDuration(m[1])
		if n, _ := strconv.Atoi(m[2]); err != nil || delay > maxDelay || n != i+1 {
			t.Errorf("reconnect line %q: want attempt %d and a wait of at most %v", m[0], i+1, maxDelay)
		}
	}
	s.cancel()
	if err := s.wait(t, 10*time.Second); err != nil {
		t.Fatalf("after Ctrl-C: %v", err)
	}
}

// A refusal that a new connection would get again ends herald sub with
// exit 1 after one try: upgrades answered 400, 401, 403 or 404, closes with
// 4001 (its token cannot be renewed) or a protocol error, and an in-band
// subscribe refused. What may pass is retried: 1008 (slow consumer), 503
// with its Retry-After honoured, and Herald's NATS unavailable.
func TestSubDoesNotHammerRefusals(t *testing.T) {
	cfg := func(h *historyServer) subConfig {
		return subConfig{URL: h.url(), Channels: []string{"chat.a"}, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 3 * time.Second}
	}
	for _, status := range []int{400, 401, 403, 404} {
		h := startHistoryServer(t, nil)
		s := startSub(t, cfg(h))
		c := h.next(t)
		c.subscribes(t, 1)
		h.refuseUpgrades(status, "")
		c.close(t, 1001, "server shutting down")
		err := s.wait(t, 10*time.Second)
		if err == nil || !strings.Contains(err.Error(), "refused the WebSocket upgrade: "+strconv.Itoa(status)) || h.upgrades.Load() != 2 {
			t.Errorf("upgrade refused with %d: %v after %d upgrades; want that refusal after 2", status, err, h.upgrades.Load())
		}
	}
	for _, tt := range []struct {
		code         int
		reason, want string
	}{
		{4001, "token expired", "connection closed: 4001 token expired; herald sub cannot renew its token: start it again with a fresh one"},
		{1002, "", "connection closed: 1002 protocol error"},
		{4003, "forbidden", "connection closed: 4003 forbidden"},
	} {
		h := startHistoryServer(t, nil)
		s := startSub(t, cfg(h))
		c := h.next(t)
		c.subscribes(t, 1)
		c.close(t, tt.code, tt.reason)
		if err := s.wait(t, 10*time.Second); err == nil || err.Error() != tt.want || h.upgrades.Load() != 1 {
			t.Errorf("closed with %d: %v after %d upgrades; want %q after 1", tt.code, err, h.upgrades.Load(), tt.want)
		}
	}

	// Retried: 1008, then 503 with Retry-After: 2, then an unavailable
	// NATS; a forbidden subscribe on the next connection is final.
	h := startHistoryServer(t, nil)
	s := startSub(t, cfg(h))
	c := h.next(t)
	c.command(t)
	h.refuseUpgrades(503, "2")
	c.close(t, 1008, "slow consumer: outbound buffer over the cap")
	waitOutput(t, &s.stderr, "503 Service Unavailable: refused by the test; reconnecting in ", 10*time.Second)
	h.refuseUpgrades(0, "")
	c = h.next(t)
	cmd := c.command(t)
	c.send(t, `{"op":"error","id":`+string(cmd.ID)+`,"code":"unavailable","message":"the bus is unavailable"}`)
	c = h.next(t)
	cmd = c.command(t)
	c.send(t, `{"op":"error","id":`+string(cmd.ID)+`,"code":"forbidden","message":"not allowed"}`)
	err := s.wait(t, 10*time.Second)
	if want := `subscribe "chat.a": forbidden: not allowed`; err == nil || err.Error() != want {
		t.Errorf("after a forbidden subscribe: %v, want %q", err, want)
	}
	stderr := s.stderr.String()
	for _, want := range []string{
		"connection closed: 1008 slow consumer: outbound buffer over the cap; reconnecting in ",
		`subscribe "chat.a": unavailable: the bus is unavailable; reconnecting in `,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	m := regexp.MustCompile(`503 Service Unavailable: refused by the test; reconnecting in (\S+) `).FindStringSubmatch(stderr)
	if d, err := time.ParseDuration(m[1]); err != nil || d < 2*time.Second || d > 3*time.Second {
		t.Errorf("after 503 with Retry-After: 2, waits %s; want 2s to 3s (Retry-After, within --reconnect-max)", m[1])
	}
	if n := h.upgrades.Load(); n != 4 {
		t.Errorf("%d upgrade requests, want 4: the first, the 503, and two more", n)
	}
}

// After a reconnect herald sub subscribes every channel in band from its
// own position: the highest seq seen on it, and the epoch of its last ack.
// The first connection's URL keeps its since, whose id-less acks it reads;
// the reconnect URL drops channel, since and epoch but keeps the rest. A
// pattern's position comes from every subject it covers; replayed messages
// are printed and counted; recovered:false is reported; a stream recreated
// (another epoch) restarts the position at the replay's last seq.
//
// This plays the contract with a scripted WebSocket server, for the cases
// a real Herald cannot be made to hit on cue; TestHistoryResumeAfterKill9
// resumes herald sub against a real Herald with --history.
func TestSubResumesWithSince(t *testing.T) {
	h := startHistoryServer(t, nil)
	s := startSub(t, subConfig{
		URL:          h.url() + "?channel=chat.a&channel=news.*&since=3&epoch=E0&format=json",
		Channels:     []string{"chat.>", "plain"},
		ReconnectMin: 10 * time.Millisecond,
		ReconnectMax: 100 * time.Millisecond,
	})
	epoch := func(cmd historyCommand) string {
		if cmd.Epoch == nil {
			return "-"
		}
		return *cmd.Epoch
	}
	since := func(cmd historyCommand) string {
		if cmd.Since == nil {
			return "-"
		}
		return strconv.FormatUint(*cmd.Since, 10)
	}

	// First connection: the URL as given, --channel in band without since.
	c := h.next(t)
	if q := c.query; q.Get("since") != "3" || q.Get("epoch") != "E0" || strings.Join(q["channel"], ",") != "chat.a,news.*" {
		t.Fatalf("first upgrade query %v, want the URL's", q)
	}
	c.greet(t, "c1")
	cmds := c.subscribes(t, 2)
	for _, name := range []string{"chat.>", "plain"} {
		if cmd := cmds[name]; cmd.Since != nil || cmd.Epoch != nil || cmd.Last {
			t.Errorf("first subscribe of %s: %s, want no since, epoch or last", name, cmd.raw)
		}
	}
	three := uint64(3)
	c.envelope(t, "chat.a", 4, `{"n":4}`) // chat.a's replay after 3
	c.ack(t, historyCommand{Channel: "chat.a", Since: &three}, "E0", true)
	c.ack(t, historyCommand{Channel: "news.*", Since: &three}, "N1", false) // another stream, trimmed
	c.ack(t, cmds["chat.>"], "E0", false)
	c.send(t, `{"op":"ack","id":`+string(cmds["plain"].ID)+`}`) // no history
	c.envelope(t, "chat.a", 5, `{"n":5}`)
	c.envelope(t, "chat.b", 7, `{"n":7}`)
	c.envelope(t, "news.x", 12, `"n12"`)
	c.send(t, `{"channel":"plain","data":"no seq"}`)
	waitOutput(t, &s.stdout, "plain \"no seq\"\n", 10*time.Second)
	for _, want := range []string{
		"subscribed to chat.a (since 3): 1 message replayed\n",
		"subscribed to news.* (since 3): 0 messages replayed; recovered:false: some messages are lost",
		"subscribed to chat.>\n",
		"subscribed to plain\n",
	} {
		if !strings.Contains(s.stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, s.stderr.String())
		}
	}
	c.close(t, 1001, "server shutting down")

	// Second connection: every channel in band, from its position.
	c = h.next(t)
	if got := c.query.Encode(); got != "format=json" {
		t.Errorf("reconnect query %q, want only format=json", got)
	}
	c.greet(t, "c2")
	cmds = c.subscribes(t, 4)
	for name, want := range map[string]string{"chat.a": "5 E0", "news.*": "12 N1", "chat.>": "7 E0", "plain": "- -"} {
		if got := since(cmds[name]) + " " + epoch(cmds[name]); got != want {
			t.Errorf("resubscribe of %s: %s, want since and epoch %s", name, cmds[name].raw, want)
		}
	}
	// chat.>'s stream was recreated (epoch E1): its replay is all it has.
	c.envelope(t, "chat.c", 1, `{"n":1}`)
	c.envelope(t, "chat.c", 2, `{"n":2}`)
	c.ack(t, cmds["chat.>"], "E1", false)
	c.envelope(t, "chat.a", 6, `{"n":6}`)
	c.ack(t, cmds["chat.a"], "E0", true)
	c.ack(t, cmds["news.*"], "N1", true)
	c.send(t, `{"op":"ack","id":`+string(cmds["plain"].ID)+`}`)
	waitOutput(t, &s.stderr, "subscribed to news.* (since 12): 0 messages replayed\n", 10*time.Second)
	for _, want := range []string{
		"subscribed to chat.> (since 7): 2 messages replayed; recovered:false",
		"subscribed to chat.a (since 5): 1 message replayed\n",
	} {
		if !strings.Contains(s.stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, s.stderr.String())
		}
	}
	c.conn.Close() // a drop, no close frame

	c = h.next(t)
	cmds = c.subscribes(t, 4)
	for name, want := range map[string]string{"chat.a": "6 E0", "news.*": "12 N1", "chat.>": "6 E1", "plain": "- -"} {
		if got := since(cmds[name]) + " " + epoch(cmds[name]); got != want {
			t.Errorf("second resubscribe of %s: %s, want since and epoch %s", name, cmds[name].raw, want)
		}
	}
	want := "chat.a {\"n\":4}\nchat.a {\"n\":5}\nchat.b {\"n\":7}\nnews.x \"n12\"\nplain \"no seq\"\n" +
		"chat.c {\"n\":1}\nchat.c {\"n\":2}\nchat.a {\"n\":6}\n"
	if got := s.stdout.String(); got != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", got, want)
	}
	if !strings.Contains(s.stderr.String(), "abnormal closure (no close frame)") {
		t.Errorf("the drop is not reported:\n%s", s.stderr.String())
	}
}

// With ?format=raw nothing carries a seq, so nothing is resumed: a payload
// that looks like an envelope moves no position.
func TestSubRawFormatDoesNotResume(t *testing.T) {
	h := startHistoryServer(t, nil)
	s := startSub(t, subConfig{URL: h.url() + "?format=raw", Channels: []string{"chat.a"}, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond})
	c := h.next(t)
	cmd := c.command(t)
	c.ack(t, cmd, "E0", false)
	c.envelope(t, "chat.a", 9, `1`)
	waitOutput(t, &s.stdout, `"seq":9`, 10*time.Second)
	c.close(t, 1001, "")
	c = h.next(t)
	if cmd := c.command(t); cmd.Since != nil || !bytes.Contains([]byte(c.query.Encode()), []byte("format=raw")) {
		t.Errorf("raw reconnect: %s on %v, want no since and format=raw kept", cmd.raw, c.query)
	}
}

func TestReconnectDelay(t *testing.T) {
	const lo, hi = 500 * time.Millisecond, 30 * time.Second
	for n := 1; n <= 200; n++ {
		ceiling := min(hi, lo*time.Duration(1<<min(n-1, 20)))
		if d := reconnectDelay(n, lo, hi, 0, 0); d != 0 {
			t.Errorf("attempt %d, random 0: %v, want 0", n, d)
		}
		if d := reconnectDelay(n, lo, hi, 0, 0.999999); d > ceiling || d < ceiling*99/100 {
			t.Errorf("attempt %d, random ~1: %v, want just under %v", n, d, ceiling)
		}
		for _, ra := range []time.Duration{time.Second, 10 * time.Second, time.Hour} {
			d := reconnectDelay(n, lo, hi, ra, 0.5)
			if d > hi || d < min(ra, hi) {
				t.Errorf("attempt %d, Retry-After %v: %v, want at least it and at most %v", n, ra, d, hi)
			}
		}
	}
}
