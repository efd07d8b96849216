package pubsub

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/pubsub/natstest"
)

func TestPublishOnce(t *testing.T) {
	srv := natstest.Start(t)
	nc := connect(t, srv.URL())
	sub, err := nc.SubscribeSync("prices.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, subject string
		data          []byte
	}{
		{"json", "prices.AAPL", []byte(`{"px":187.2}`)},
		{"empty", "prices.MSFT", nil},
		{"binary", "prices.bin", []byte{0, 0xff, '\n', '\r'}},
		{"not utf-8 safe for a control line", "prices.crlf", []byte("PUB x 1\r\n")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := PublishOnce(srv.URL(), Security{}, tt.subject, tt.data, 5*time.Second); err != nil {
				t.Fatalf("PublishOnce: %v", err)
			}
			m, err := sub.NextMsg(waitTimeout)
			if err != nil {
				t.Fatalf("subscriber: %v", err)
			}
			if m.Subject != tt.subject || string(m.Data) != string(tt.data) {
				t.Fatalf("subscriber got %s %q, want %s %q", m.Subject, m.Data, tt.subject, tt.data)
			}
		})
	}
}

// TestPublishOnceUnreachable: no retry, an error naming the server with the
// password hidden, and never longer than the timeout, whether the port is
// closed or something there accepts and never speaks.
func TestPublishOnceUnreachable(t *testing.T) {
	closed := natstest.FreePort(t)
	silent1, silent2 := silentServer(t), silentServer(t)
	const timeout = time.Second
	tests := []struct {
		name, url, wantInErr string
	}{
		{"closed port", fmt.Sprintf("nats://127.0.0.1:%d", closed), fmt.Sprintf("nats://127.0.0.1:%d", closed)},
		{"closed port with password", fmt.Sprintf("nats://herald:s3cret@127.0.0.1:%d", closed), fmt.Sprintf("nats://herald:xxxxx@127.0.0.1:%d", closed)},
		{"closed port with token", fmt.Sprintf("nats://s3cret@127.0.0.1:%d", closed), fmt.Sprintf("nats://xxxxx@127.0.0.1:%d", closed)},
		{"silent server", "nats://" + silent1, "nats://" + silent1},
		// nats.go's own timeout applies per server and per step: two silent
		// servers must not take twice as long.
		{"two silent servers", "nats://" + silent1 + ",nats://" + silent2, silent2},
		{"unparsable with password", "nats://herald:s3cret@bad host:4222", "(unparsable url)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			err := PublishOnce(tt.url, Security{}, "prices.AAPL", []byte("x"), timeout)
			took := time.Since(start)
			if err == nil {
				t.Fatal("PublishOnce succeeded with no server")
			}
			if !strings.HasPrefix(err.Error(), "pubsub: connect to nats ") || !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("err = %q, want it to name %s", err, tt.wantInErr)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("err = %q leaks the password", err)
			}
			// Slack for the race detector on a busy machine, but less than
			// a second timeout's worth.
			if took > timeout+timeout/2 {
				t.Errorf("took %v with a timeout of %v", took, timeout)
			}
		})
	}
}

// TestPublishOnceServerRefuses: errors the server reports about the publish
// itself come back, not just connection errors.
func TestPublishOnceServerRefuses(t *testing.T) {
	ns, err := server.NewServer(&server.Options{
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 1024,
		Users: []*server.User{{
			Username: "pub",
			Password: "s3cret",
			Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Deny: []string{"secret.>"}},
			},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(waitTimeout) {
		t.Fatal("in-process server not ready")
	}
	addr := ns.Addr().String()
	good := "nats://pub:s3cret@" + addr
	tests := []struct {
		name, url, subject string
		data               []byte
		want               error
	}{
		{"allowed", good, "public.news", []byte("hi"), nil},
		{"permissions violation", good, "secret.plans", []byte("hi"), nats.ErrPermissionViolation},
		{"too big", good, "public.news", make([]byte, 2048), nats.ErrMaxPayload},
		{"wrong password", "nats://pub:wr0ng@" + addr, "public.news", []byte("hi"), nats.ErrAuthorization},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := PublishOnce(tt.url, Security{}, tt.subject, tt.data, 5*time.Second)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("PublishOnce = %v, want %v", err, tt.want)
			}
			if err != nil && (strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "wr0ng") ||
				!strings.Contains(err.Error(), "@"+addr)) {
				t.Errorf("err = %q: want the server named, no password", err)
			}
		})
	}
}

func TestPublishOnceRefusesBadArguments(t *testing.T) {
	// A silent server: if anything were sent, the call would hang until
	// the timeout rather than fail at once.
	url := "nats://" + silentServer(t)
	for subject, code := range map[string]string{
		"prices.*": channel.CodeWildcardsDisabled,
		"prices.>": channel.CodeWildcardsDisabled,
		"":         channel.CodeInvalidChannel,
		"a..b":     channel.CodeInvalidChannel,
		"a b":      channel.CodeInvalidChannel,
	} {
		start := time.Now()
		err := PublishOnce(url, Security{}, subject, []byte("x"), 5*time.Second)
		var ce *channel.Error
		if !errors.As(err, &ce) || ce.Code != code {
			t.Errorf("PublishOnce(%q) = %v, want a ChannelError %s", subject, err, code)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("PublishOnce(%q) took %v: it went to the network", subject, d)
		}
	}
	for _, timeout := range []time.Duration{0, -time.Second} {
		if err := PublishOnce(url, Security{}, "ok", nil, timeout); err == nil || !strings.Contains(err.Error(), "timeout") {
			t.Errorf("timeout %v: err = %v", timeout, err)
		}
	}
}
