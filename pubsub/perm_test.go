package pubsub

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/pubsub/natstest"
)

// denyConfig is a nats-server configuration with one user who may not
// subscribe under secret.
const denyConfig = `authorization { users = [
	{ user: herald, password: s3cret, permissions: { subscribe: { deny: ["secret.>"] }, publish: { deny: ["locked.>"] } } }
] }`

const allowConfig = `authorization { users = [ { user: herald, password: s3cret } ] }`

// permServers are the servers with denyConfig's permissions: a nats-server
// process, and one in this process (the embedded server Start runs has no
// users, so it is a separate one here too). Each returns the URL to give
// Config.URL, with the user.
var permServers = []struct {
	name  string
	start func(t *testing.T) string
}{
	{"nats-server process", func(t *testing.T) string {
		srv := natstest.StartConfig(t, denyConfig)
		return strings.Replace(srv.URL(), "nats://", "nats://herald:s3cret@", 1)
	}},
	{"in-process server", func(t *testing.T) string {
		ns, err := server.NewServer(&server.Options{
			Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
			Users: []*server.User{{Username: "herald", Password: "s3cret", Permissions: &server.Permissions{
				Subscribe: &server.SubjectPermission{Deny: []string{"secret.>"}},
				Publish:   &server.SubjectPermission{Deny: []string{"locked.>"}},
			}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		ns.Start()
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		if !ns.ReadyForConnections(waitTimeout) {
			t.Fatal("in-process server not ready")
		}
		return "nats://herald:s3cret@" + ns.Addr().String()
	}},
}

// isForbidden reports whether err is what Live carries for a subscription
// the server refused: a *channel.Error with CodeForbidden, and nats.go's
// permission violation.
func isForbidden(err error) bool {
	var ce *channel.Error
	return errors.As(err, &ce) && ce.Code == channel.CodeForbidden && errors.Is(err, nats.ErrPermissionViolation)
}

// TestPermissionRefused: subscriptions the server refuses are answered
// with a forbidden error, those made in the same round trip that it
// accepts with nil; for members of a wide group the wide pattern's
// subscription is what the server judges. Refused ones no longer exist.
func TestPermissionRefused(t *testing.T) {
	tests := []struct {
		name      string
		wide      []string
		patterns  []string // ids 1, 2, ... subscribed at once
		forbidden []bool
		natsSubs  int
		channels  int
		publish   []string
		want      []message
	}{
		{
			name:      "ordinary",
			patterns:  []string{"secret.a", "public.a", "secret.b.c", "public.*", "secret.*"},
			forbidden: []bool{true, false, true, false, true},
			natsSubs:  2,
			channels:  2,
			publish:   []string{"public.a", "x", "secret.a", "y"},
			want:      []message{msg("public.a", "x", 2), msg("public.a", "x", 4)},
		},
		{
			name:      "wide",
			wide:      []string{"secret.*", "public.*"},
			patterns:  []string{"secret.a", "public.a", "secret.b", "public.b"},
			forbidden: []bool{true, false, true, false},
			natsSubs:  1,
			channels:  2,
			publish:   []string{"public.a", "x", "public.b", "z", "secret.a", "y"},
			want:      []message{msg("public.a", "x", 2), msg("public.b", "z", 4)},
		},
	}
	for _, srv := range permServers {
		for _, tt := range tests {
			t.Run(srv.name+"/"+tt.name, func(t *testing.T) {
				url := srv.start(t)
				rec := newRecorder()
				b, logs := startBroker(t, Config{URL: url, Handler: rec, Wide: tt.wide})
				waitFor(t, "broker to connect", b.Connected)
				ids := make([]uint64, len(tt.patterns))
				for i, p := range tt.patterns {
					ids[i] = uint64(i + 1)
					b.Subscribe(ids[i], p)
				}
				got := rec.waitLive(t, ids...)
				for i, id := range ids {
					err := got[id]
					if tt.forbidden[i] != isForbidden(err) || (!tt.forbidden[i] && err != nil) {
						t.Errorf("Live(%d) for %s = %v, want forbidden %v", id, tt.patterns[i], err, tt.forbidden[i])
					}
					if tt.forbidden[i] && (!strings.Contains(err.Error(), tt.patterns[i]) || strings.Contains(err.Error(), "s3cret")) {
						t.Errorf("Live(%d) = %q: want the pattern named, no password", id, err)
					}
				}
				if got, ch := b.NATSSubscriptions(), b.Channels(); got != tt.natsSubs || ch != tt.channels {
					t.Errorf("NATSSubscriptions() = %d, Channels() = %d; want %d, %d", got, ch, tt.natsSubs, tt.channels)
				}
				publish(t, url, tt.publish...)
				rec.expectCopies(t, tt.want...)
				rec.expectNone(t, 50*time.Millisecond)

				// A later round trip judges again, and the old refusals do not
				// linger: a refused pattern is refused again, others accepted.
				next := uint64(len(ids) + 1)
				b.Subscribe(next, tt.patterns[0])
				b.Subscribe(next+1, "public.later")
				got = rec.waitLive(t, next, next+1)
				if !isForbidden(got[next]) || got[next+1] != nil {
					t.Errorf("second round: Live = %v, %v; want forbidden, nil", got[next], got[next+1])
				}
				if l := logs.find("nats refused a subscription after it went live; it receives nothing"); len(l) != 0 {
					t.Errorf("refusals of waiting subscriptions logged as late: %v", l)
				}
			})
		}
	}
}

// TestPermissionAfterLive: a subscription live before the server's
// permissions changed is refused when nats.go re-sends it on reconnect. Its
// Live said nil long ago: the refusal is logged (rate-limited), and a new
// subscription to it is refused.
func TestPermissionAfterLive(t *testing.T) {
	srv := natstest.StartConfig(t, allowConfig)
	url := strings.Replace(srv.URL(), "nats://", "nats://herald:s3cret@", 1)
	rec := newRecorder()
	b, logs := startBroker(t, Config{URL: url, ReconnectWait: 50 * time.Millisecond, Handler: rec, Wide: []string{"secret.*"}})
	waitFor(t, "broker to connect", b.Connected)
	subscribe(t, b, rec, 1, "secret.a.b", "secret.x") // ordinary, member

	srv.SetConfig(denyConfig)
	srv.Restart()
	waitFor(t, "the reconnect", func() bool { return b.Connected() && b.Stats().Reconnects == 1 })
	const late = "nats refused a subscription after it went live; it receives nothing"
	waitFor(t, "the late refusal to be logged", func() bool { return len(logs.find(late)) > 0 })
	l := logs.find(late)
	if l[0].level.String() != "WARN" {
		t.Errorf("late refusal logged at %v", l[0].level)
	}
	// Both live NATS subscriptions were refused; one warning line within
	// the rate limit, counting what it stands for or holding the rest.
	waitFor(t, "both refusals to be counted", func() bool {
		b.dropMu.Lock()
		defer b.dropMu.Unlock()
		return b.lateRefusals.unlogged+len(logs.find(late)) >= 2 || (len(logs.find(late)) == 1 && logs.find(late)[0].attrs["count"] == "2")
	})
	if n := len(logs.find(late)); n != 1 {
		t.Errorf("%d late-refusal warnings within the rate limit, want 1:\n%s", n, logs)
	}
	b.Subscribe(3, "secret.y")
	b.Subscribe(4, "secret.b.c")
	got := rec.waitLive(t, 3, 4)
	if !isForbidden(got[3]) || !isForbidden(got[4]) {
		t.Errorf("after the change: Live(3) = %v, Live(4) = %v; want forbidden", got[3], got[4])
	}

	// Permissions restored: the next connection's re-sent SUBs are taken,
	// and members join the group again.
	srv.SetConfig(allowConfig)
	srv.Restart()
	waitFor(t, "the second reconnect", func() bool { return b.Connected() && b.Stats().Reconnects == 2 })
	subscribe(t, b, rec, 5, "secret.z")
	publish(t, url, "secret.z", "z", "secret.x", "x", "secret.a.b", "ab")
	rec.expectCopies(t, msg("secret.z", "z", 5), msg("secret.x", "x", 2), msg("secret.a.b", "ab", 1))
}

// TestPermissionPublishRefusedIsLogged: a publish the server refuses is
// logged, rate-limited (PublishAsync's done said nil already).
func TestPermissionPublishRefusedIsLogged(t *testing.T) {
	url := permServers[0].start(t)
	b, logs := startBroker(t, Config{URL: url, Handler: nopHandler{}})
	waitFor(t, "broker to connect", b.Connected)
	for range 5 {
		if err := b.PublishAsync("locked.door", nil, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	mustFlush(t, b)
	const refused = "nats refused a publish (permissions)"
	waitFor(t, "the refusal to be logged", func() bool { return len(logs.find(refused)) > 0 })
	mustFlush(t, b)
	if n := len(logs.find(refused)); n != 1 {
		t.Errorf("%d refusal warnings for 5 refused publishes within the rate limit, want 1", n)
	}
}

func TestSubscriptionViolation(t *testing.T) {
	tests := []struct {
		msg, subject string
		ok           bool
	}{
		{`nats: permissions violation: Permissions Violation for Subscription to "secret.x"`, "secret.x", true},
		{`nats: permissions violation: Permissions Violation for Subscription to "secret.>"`, "secret.>", true},
		{`nats: permissions violation: Permissions Violation for Subscription to "q.x" using queue "workers"`, "", false},
		{`nats: permissions violation: Permissions Violation for Publish to "locked.door"`, "", false},
		{`nats: permissions violation: Permissions Violation for Subscription to ""`, "", false},
		{`nats: maximum subscriptions exceeded`, "", false},
	}
	for _, tt := range tests {
		if subject, ok := subscriptionViolation(tt.msg); subject != tt.subject || ok != tt.ok {
			t.Errorf("subscriptionViolation(%q) = %q, %v; want %q, %v", tt.msg, subject, ok, tt.subject, tt.ok)
		}
	}
}
