package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/herald-ws/herald/pubsub/natstest"
)

// runPubCmd runs `herald pub args...` in-process and returns its exit code
// and what it wrote to stdout and stderr.
func runPubCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut strings.Builder
	code = run(append([]string{"pub"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestPubDeliversToSubscribers: `herald pub` against a running Herald's
// embedded NATS reaches a WebSocket subscriber, from an argument or from
// standard input.
func TestPubDeliversToSubscribers(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	conn := dialWS(t, h, "channel=prices.AAPL")
	settle(t, h)
	tests := []struct {
		name     string
		env      string // HERALD_PUB_NATS, if set
		args     []string
		stdin    string
		wantData string
	}{
		{"argument", "", []string{"--nats", h.broker.ClientURL(), "prices.AAPL", `{"px":187.2}`}, "", `{"px":187.2}`},
		{"stdin", "", []string{"--nats", h.broker.ClientURL(), "prices.AAPL", "-"}, `{"px":187.3}`, `{"px":187.3}`},
		{"not json", "", []string{"--nats", h.broker.ClientURL(), "--timeout", "2s", "prices.AAPL", "halted"}, "", `"halted"`},
		{"url from environment", h.broker.ClientURL(), []string{"prices.AAPL", `{"px":187.4}`}, "", `{"px":187.4}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv("HERALD_PUB_NATS", tt.env)
			}
			old := stdin
			stdin = strings.NewReader(tt.stdin)
			t.Cleanup(func() { stdin = old })
			code, stdout, stderr := runPubCmd(t, tt.args...)
			if code != 0 || stdout != "" || stderr != "" {
				t.Fatalf("herald pub %q: exit %d, stdout %q, stderr %q; want 0 and silence", tt.args, code, stdout, stderr)
			}
			if e := readEnvelope(t, conn); e.Channel != "prices.AAPL" || string(e.Data) != tt.wantData {
				t.Fatalf("subscriber got %+v, want data %s on prices.AAPL", e, tt.wantData)
			}
		})
	}
}

func TestPubUsage(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		code      int
		wantErr   string // in stderr
		wantUsage bool   // the whole usage follows; a bad value gets one line
	}{
		{"help", []string{"--help"}, 0, "herald pub prices.AAPL '{\"px\":187.2}'", true},
		{"no arguments", nil, 2, "want SUBJECT and PAYLOAD, got 0 argument(s)", true},
		{"no payload", []string{"prices.AAPL"}, 2, "want SUBJECT and PAYLOAD, got 1 argument(s)", true},
		{"extra argument", []string{"prices.AAPL", "1", "2"}, 2, "want SUBJECT and PAYLOAD, got 3 argument(s)", true},
		{"unknown flag", []string{"--bogus", "prices.AAPL", "1"}, 2, "flag provided but not defined: -bogus", true},
		{"zero timeout", []string{"--timeout", "0s", "prices.AAPL", "1"}, 2, "--timeout must be positive", false},
		{"wildcard subject", []string{"prices.*", "1"}, 2, `SUBJECT "prices.*": wildcards_disabled`, false},
		{"malformed subject", []string{"prices..AAPL", "1"}, 2, `SUBJECT "prices..AAPL": invalid_channel`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runPubCmd(t, tt.args...)
			if code != tt.code || stdout != "" || !strings.Contains(stderr, tt.wantErr) {
				t.Fatalf("herald pub %q: exit %d, stdout %q, stderr:\n%s\nwant exit %d and %q", tt.args, code, stdout, stderr, tt.code, tt.wantErr)
			}
			if got := strings.Contains(stderr, "Usage: herald pub [flags] SUBJECT PAYLOAD"); got != tt.wantUsage {
				t.Errorf("usage printed = %v, want %v:\n%s", got, tt.wantUsage, stderr)
			}
		})
	}
}

// TestPubUnreachable: no server behind the URL is a runtime failure (exit
// 1) that names the URL, without its password, at once rather than after
// retries.
func TestPubUnreachable(t *testing.T) {
	port := natstest.FreePort(t)
	url := fmt.Sprintf("nats://herald:s3cret@127.0.0.1:%d", port)
	code, stdout, stderr := runPubCmd(t, "--nats", url, "prices.AAPL", "1")
	want := fmt.Sprintf("herald pub: pubsub: connect to nats nats://herald:xxxxx@127.0.0.1:%d: ", port)
	if code != 1 || stdout != "" || !strings.HasPrefix(stderr, want) {
		t.Fatalf("exit %d, stdout %q, stderr %q; want exit 1 and stderr starting %q", code, stdout, stderr, want)
	}
	if strings.Contains(stderr, "s3cret") {
		t.Errorf("stderr leaks the password: %q", stderr)
	}
}
