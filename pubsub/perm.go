package pubsub

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-ws/herald/codec/channel"
)

// Permission violations. When the account forbids a subject, nats-server
// answers the SUB with -ERR 'Permissions Violation for Subscription to "x"'
// and does not register it; the connection stays up. nats.go's read loop
// handles the -ERR in order with everything else the server sends
// (processTransientError): it sets the connection's last error and an
// unexported mark on every subscription to "x", and queues the async error
// callback, which runs later on nats.go's callback goroutine. The server
// handles a SUB before a PING sent after it, so the -ERR of every SUB made
// before a round trip is read before its PONG: a round trip can tell which
// of its subscriptions the server refused, if the broker can read what the
// read loop recorded by then.
//
// What nats.go v1.55.0 exports for that, and why the broker uses the last:
//   - PermissionErrOnSubscribe(true) makes SubscribeSync and NextMsg report
//     the mark. For a channel subscription there is nothing to read it with:
//     NextMsg on one receives from the channel itself (the broker's shared
//     one, taking messages of other subscriptions) when there is no error,
//     and the option changes nothing else.
//   - Subscription.StatusChanged reports Active, Draining, Closed and
//     SlowConsumer: a refused SUB changes none of them.
//   - The async error callback gets the error with the subject in its text
//     (and a nil Subscription): the broker parses the subject, as nats.go
//     itself does, and records it (notePermission). The callback runs after
//     the read loop, possibly after the PONG, so the round-tripper
//     synchronises with it through Conn.LastError: read after the PONG, the
//     last error is the newest one the read loop recorded, at or after the
//     -ERR of every SUB of the round trip. Each violation is a new error
//     value, and the callbacks run in the order the read loop queued them,
//     so once the callback has seen that very value it has seen every
//     violation read before the PONG (takeViolations).
//
// The limit: another error recorded after the violations and before the
// round-tripper reads the last error (a slow-consumer episode starting, a
// lost connection) hides the newest violation; the round-tripper then takes
// what the callback has recorded so far. A violation the callback records
// later, or one for a subscription already live (a reconnect re-sends every
// SUB, and the server's permissions may have changed meanwhile), is logged
// as a warning (rate-limited), and that subscription receives nothing: its
// Live said nil. When it is a wide group's subscription, members joining the
// group on that connection are refused with it (wideGroup.refused), since
// they would receive nothing either. Matching is by subject, as in nats.go:
// violations for two subscriptions to one subject are one.

// permSyncTimeout bounds how long the round-tripper waits for nats.go's
// callback goroutine to report a violation that the read loop has recorded.
// It runs user callbacks (the broker's, which never block) one at a time.
const permSyncTimeout = time.Second

// errForbidden is the client-facing part of a refused subscription.
var errForbidden = &channel.Error{Code: channel.CodeForbidden, Message: "the NATS server does not permit this subscription"}

// notePermission records a permission violation nats.go reported through
// the async error callback. It runs on nats.go's callback goroutine.
func (b *Broker) notePermission(err error) {
	subject, isSub := subscriptionViolation(err.Error())
	b.permMu.Lock()
	b.permSeen = err
	if isSub {
		if b.violations == nil {
			b.violations = make(map[string]error)
		}
		b.violations[subject] = err
	}
	b.permMu.Unlock()
	select {
	case b.permSignal <- struct{}{}:
	default:
	}
	if isSub {
		b.kick() // a round trip tells whose it is (violationsWaiting)
		return
	}
	// A publish refused: Publish and PublishAsync returned long ago.
	b.limitedWarn(&b.pubRefusals, "nats refused a publish (permissions)", "err", err)
}

// forgetViolations drops the violations recorded so far: called from the
// connection callbacks, which nats.go queues after the -ERRs of the old
// connection and before any of the new one (it holds its lock from
// re-sending the subscriptions until it has queued the callback). The new
// connection re-sends every SUB and the server judges each again.
func (b *Broker) forgetViolations() {
	b.permMu.Lock()
	b.violations = nil
	b.permMu.Unlock()
}

// violationsWaiting reports whether violations wait to be told apart.
func (b *Broker) violationsWaiting() bool {
	b.permMu.Lock()
	defer b.permMu.Unlock()
	return len(b.violations) > 0
}

// takeViolations runs on the round-tripper right after a round trip
// succeeded. It waits until the callback has recorded every violation the
// read loop handled before the PONG (see above) and returns the recorded
// ones, by subject.
func (b *Broker) takeViolations() map[string]error {
	last := b.nc.LastError()
	if errors.Is(last, nats.ErrPermissionViolation) {
		var deadline *time.Timer
	wait:
		for {
			b.permMu.Lock()
			seen := b.permSeen == last
			b.permMu.Unlock()
			if seen {
				break
			}
			if deadline == nil {
				deadline = time.NewTimer(permSyncTimeout)
				defer deadline.Stop()
			}
			select {
			case <-b.permSignal:
			case <-deadline.C:
				b.log.Warn("pubsub: nats.go has not reported a permission violation to its callback in time; taking those reported so far",
					"timeout", permSyncTimeout, "err", last)
				break wait
			case <-b.stop:
				break wait
			}
		}
	}
	b.permMu.Lock()
	v := b.violations
	b.violations = nil
	b.permMu.Unlock()
	return v
}

// subscriptionViolation returns the subject of a subscription permission
// violation from the text nats.go gives it (as nats.go itself parses it in
// processTransientError). Queue subscriptions, which the broker never makes,
// are not reported.
func subscriptionViolation(msg string) (subject string, ok bool) {
	const marker = `Subscription to "`
	i := strings.Index(msg, marker)
	if i < 0 {
		return "", false
	}
	rest := msg[i+len(marker):]
	j := strings.IndexByte(rest, '"')
	if j <= 0 || strings.Contains(rest[j:], `using queue "`) {
		return "", false
	}
	return rest[:j], true
}

// refuse answers s, made before the round trip that just succeeded, with
// the server's refusal: a *channel.Error with CodeForbidden for the client,
// and nats.go's error for the logs (errors.Is finds
// nats.ErrPermissionViolation). Its NATS subscription is ended, so that a
// reconnect does not send it again.
func (w *worker) refuse(s *subscription, natsErr error) {
	b := w.b
	switch {
	case s.carrier:
		// Every member waits for the carrier's round trip: none is live.
		g := s.wide
		g.carrier = nil
		w.unsubscribeNATS(s)
		s.state = stateGone
		for _, m := range g.waiting {
			if m.state != stateMade {
				continue
			}
			m.state = stateGone
			g.members--
			w.drop(m)
			w.out = append(w.out, answer{s: m, err: fmt.Errorf("pubsub: subscribe to %s (under wide pattern %s): %w: %w",
				m.pattern, g.pattern, errForbidden, natsErr)})
		}
		g.waiting = nil
	case s.wide != nil:
		// A member whose live carrier the server refused after a reconnect.
		s.state = stateGone
		w.drop(s)
		w.out = append(w.out, answer{s: s, err: fmt.Errorf("pubsub: subscribe to %s (under wide pattern %s): %w: %w",
			s.pattern, s.wide.pattern, errForbidden, natsErr)})
		g := s.wide
		g.members--
		if g.members == 0 {
			w.release(g)
		}
	default:
		w.unsubscribeNATS(s)
		s.state = stateGone
		w.drop(s)
		w.out = append(w.out, answer{s: s, err: fmt.Errorf("pubsub: subscribe to %s: %w: %w", s.pattern, errForbidden, natsErr)})
	}
	b.log.Debug("pubsub: nats refused a subscription", "channel", s.pattern, "err", natsErr)
}

// lateViolation logs a violation no subscription waiting for its Live
// accounts for: one already live whose SUB the server refused after a
// reconnect, or one the round trip could not attribute in time (see above).
func (b *Broker) lateViolation(subject string, err error) {
	b.limitedWarn(&b.lateRefusals, "nats refused a subscription after it went live; it receives nothing",
		"channel", subject, "err", err)
}

// limitedWarn logs a warning through l's rate limit (one line per
// dropLogInterval, counting the ones held back); sweepOnce writes the
// count of a burst's tail.
func (b *Broker) limitedWarn(l *limitedLog, msg string, args ...any) {
	b.dropMu.Lock()
	l.msg = msg
	l.unlogged++
	n, due := l.due(time.Now(), dropLogInterval)
	b.dropMu.Unlock()
	if due {
		b.log.Warn(msg, append(args, "count", n)...)
	}
}
