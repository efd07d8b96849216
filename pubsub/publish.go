package pubsub

import (
	"fmt"
	"net"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-ws/herald/codec/channel"
)

// PublishOnce connects to the NATS server or cluster at natsURL (one URL or
// several, comma-separated), publishes data on subject, waits until the server has processed it,
// and disconnects: the one-shot publish of `herald pub`, and of scripts and
// health checks. subject must be a concrete channel (no wildcards); an
// invalid one is a *channel.Error and nothing is sent.
//
// sec authenticates and secures the connection as for Start.
//
// Unlike Start it does not retry: an unreachable server fails at once with
// an error naming natsURL (passwords redacted). timeout bounds the whole call,
// connecting to every URL included. A nil error means the server accepted
// the message; whether anyone was subscribed is not known.
func PublishOnce(natsURL string, sec Security, subject string, data []byte, timeout time.Duration) error {
	if err := channel.Validate(subject, false); err != nil {
		return fmt.Errorf("pubsub: publish to %q: %w", subject, err)
	}
	if timeout <= 0 {
		return fmt.Errorf("pubsub: publish: timeout %v is not positive", timeout)
	}
	secure, err := sec.options()
	if err != nil {
		return fmt.Errorf("pubsub: publish: %w", err)
	}
	deadline := time.Now().Add(timeout)
	logURL := redactURLs(natsURL)
	nc, err := nats.Connect(natsURL, append(secure,
		nats.Name("herald pub"),
		nats.NoReconnect(),
		nats.Timeout(timeout),
		// Our dialer resolves names too, within the deadline.
		nats.SkipHostLookup(),
		nats.SetCustomDialer(deadlineDialer{deadline}),
		// Errors about the publish are returned from nc.LastError; without
		// a handler nats.go would also print them to stderr.
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
	)...)
	if err != nil {
		return fmt.Errorf("pubsub: connect to nats %s: %w", logURL, withoutURL(err))
	}
	defer nc.Close()
	if err := nc.Publish(subject, data); err != nil {
		return fmt.Errorf("pubsub: publish to %s on %s: %w", subject, logURL, err)
	}
	// The PONG comes after the server has processed the publish, and after
	// any error it had about it (a permissions violation, say), which nats.go
	// records before it sees the PONG.
	if err := nc.FlushTimeout(max(time.Until(deadline), time.Millisecond)); err != nil {
		return fmt.Errorf("pubsub: publish to %s on %s: %w", subject, logURL, err)
	}
	if err := nc.LastError(); err != nil {
		return fmt.Errorf("pubsub: publish to %s on %s: %w", subject, logURL, err)
	}
	return nil
}

// deadlineDialer dials with an absolute deadline and keeps every deadline
// nats.go later sets on the connection within it: nats.go applies its
// Timeout per server and per step (dial, then handshake), so on its own a
// silent server could hold a call for twice the timeout, and a list of them
// for a multiple of it.
type deadlineDialer struct{ deadline time.Time }

func (d deadlineDialer) Dial(network, address string) (net.Conn, error) {
	c, err := (&net.Dialer{Deadline: d.deadline}).Dial(network, address)
	if err != nil {
		return nil, err
	}
	return deadlineConn{c, d.deadline}, nil
}

// deadlineConn is a net.Conn whose deadlines never extend past deadline.
type deadlineConn struct {
	net.Conn
	deadline time.Time
}

func (c deadlineConn) SetDeadline(t time.Time) error     { return c.Conn.SetDeadline(c.clamp(t)) }
func (c deadlineConn) SetReadDeadline(t time.Time) error { return c.Conn.SetReadDeadline(c.clamp(t)) }
func (c deadlineConn) SetWriteDeadline(t time.Time) error {
	return c.Conn.SetWriteDeadline(c.clamp(t))
}

func (c deadlineConn) clamp(t time.Time) time.Time {
	if t.IsZero() || t.After(c.deadline) {
		return c.deadline
	}
	return t
}
