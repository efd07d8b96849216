package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestServeNATSWide runs `herald serve` with a wide pattern, from the flag
// and from the environment: a socket on ?channel=user.7 receives what is
// published on user.7 and not what is published on user.8.
func TestServeNATSWide(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		env  string
	}{
		{"flag", []string{"--nats-wide", "user.*"}, ""},
		{"environment", nil, "user.*,notify.>"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv("HERALD_NATS_WIDE", tt.env)
			}
			_, addr, natsURL := startHeraldProcessNATS(t, tt.args...)
			if natsURL == "" {
				t.Fatal("no NATS URL in herald's first line")
			}
			seven, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws?channel=user.7", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer seven.Close()
			expectConnected(t, seven)
			// The 101 came once the subscription was live.
			publishTo(t, natsURL, "user.8", `"not yours"`, "user.7", `"yours"`)
			expectEnvelope(t, seven, "user.7", `"yours"`)
			expectSilence(t, seven, 200*time.Millisecond)
		})
	}
}

// TestNATSWideOneSubscription: many personal channels under a wide
// pattern hold one NATS subscription, and each socket receives its own
// channel's messages only.
func TestNATSWideOneSubscription(t *testing.T) {
	h := startTestHerald(t, heraldConfig{NATSWide: []string{"user.*"}})
	conns := map[string]*websocket.Conn{}
	for _, ch := range []string{"user.1", "user.2", "user.3"} {
		conns[ch] = dialWS(t, h, "channel="+ch)
	}
	other := dialWS(t, h, "channel=room.1") // not under the wide pattern
	if got := h.broker.NATSSubscriptions(); got != 2 {
		t.Errorf("NATSSubscriptions() = %d, want 2 (user.* and room.1)", got)
	}
	if got := h.broker.Channels(); got != 4 {
		t.Errorf("Channels() = %d, want 4", got)
	}
	publishTo(t, h.broker.ClientURL(), "user.2", `2`, "room.1", `"r"`, "user.9", `9`)
	expectEnvelope(t, conns["user.2"], "user.2", `2`)
	expectEnvelope(t, other, "room.1", `"r"`)
	for _, c := range conns {
		expectSilence(t, c, 100*time.Millisecond)
	}
}

// TestServeNATSWideRefused: an invalid or reserved wide pattern stops
// serve with an error naming it, from the flag or the environment.
func TestServeNATSWideRefused(t *testing.T) {
	for _, tt := range []struct {
		name, flag, env, want string
	}{
		{"reserved flag", "$SYS.>", "", "Config.Wide[0] \"$SYS.>\""},
		{"invalid in the environment", "", "user.*,a..b", "Config.Wide[1] \"a..b\""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"serve", "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:-1"}
			if tt.flag != "" {
				args = append(args, "--nats-wide", tt.flag)
			}
			if tt.env != "" {
				t.Setenv("HERALD_NATS_WIDE", tt.env)
			}
			var stdout, stderr bytes.Buffer
			if code := run(args, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", code, stderr.String(), tt.want)
			}
		})
	}
}

func TestSplitList(t *testing.T) {
	for in, want := range map[string]string{
		"":                    "[]",
		"user.*":              "[user.*]",
		" user.* , notify.>,": "[user.* notify.>]",
		",,":                  "[]",
	} {
		if got := strings.Join(splitList(in), " "); "["+got+"]" != want {
			t.Errorf("splitList(%q) = [%s], want %s", in, got, want)
		}
	}
}
