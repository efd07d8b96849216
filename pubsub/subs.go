package pubsub

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Acquire registers one more user of channel pattern (a concrete subject or
// a wildcard pattern). The first user creates the NATS subscription, a plain
// Subscribe (every Herald instance must see every message, so never a queue
// group) with the configured pending limits.
//
// Acquire returns once the subscription is queued to the server, without a
// network round trip; messages published before the server has it are not
// delivered. Call Flush to wait for it. While disconnected, the subscription
// is sent when the connection comes back.
func (b *Broker) Acquire(pattern string) error {
	if err := ValidateChannel(pattern, true); err != nil {
		return fmt.Errorf("pubsub: acquire: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if ch := b.channels[pattern]; ch != nil {
		ch.refs++
		return nil
	}
	// The key and the closure outlive the call: never alias the caller's
	// memory (the engine may pass a view of a network buffer).
	pattern = strings.Clone(pattern)
	handler := b.handler
	sub, err := b.nc.Subscribe(pattern, func(m *nats.Msg) {
		b.messagesIn.Add(1)
		handler(pattern, m.Subject, m.Data)
	})
	if err != nil {
		return fmt.Errorf("pubsub: subscribe to %s: %w", pattern, err)
	}
	if err := sub.SetPendingLimits(b.pendingMsgs, b.pendingBytes); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("pubsub: set pending limits on %s: %w", pattern, err)
	}
	b.channels[pattern] = &channel{pattern: pattern, refs: 1, sub: sub}
	return nil
}

// Release drops one user of pattern; the last one unsubscribes. Releasing a
// pattern that is not held is a no-op. A message already being delivered
// when Release runs may still reach Handler after Release returns, so
// Handler must tolerate patterns nobody wants any more.
func (b *Broker) Release(pattern string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := b.channels[pattern]
	if ch == nil {
		return
	}
	if ch.refs--; ch.refs > 0 {
		return
	}
	delete(b.channels, pattern)
	b.collectDrops(ch) // Dropped() is unavailable after Unsubscribe
	delete(b.slow, ch)
	if err := ch.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		b.log.Warn("pubsub: unsubscribe failed", "channel", pattern, "err", err)
	}
}

// Channels returns the number of distinct channels with a live subscription.
func (b *Broker) Channels() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.channels)
}

// dropReport is one pending "messages dropped" warning, logged after b.mu is
// released.
type dropReport struct {
	pattern string
	dropped int
}

// noteSlow handles nats.go's slow-consumer event for sub: it counts the drops
// so far, warns (rate-limited) and puts the channel on the sweep list, since
// nats.go does not report further drops of the same episode.
func (b *Broker) noteSlow(sub *nats.Subscription) {
	now := time.Now()
	var reports []dropReport
	b.mu.Lock()
	if ch := b.channels[sub.Subject]; ch != nil && ch.sub == sub {
		b.slow[ch] = struct{}{}
		b.collectDrops(ch)
		reports = b.dueReport(ch, now, reports)
	}
	b.mu.Unlock()
	b.logDrops(reports)
}

// sweepDrops runs until Close, re-reading the drop counts of slow channels.
func (b *Broker) sweepDrops() {
	defer close(b.sweeperDone)
	t := time.NewTicker(dropSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case now := <-t.C:
			b.sweepOnce(now)
		}
	}
}

func (b *Broker) sweepOnce(now time.Time) {
	var reports []dropReport
	b.mu.Lock()
	for ch := range b.slow {
		n := b.collectDrops(ch)
		if n == 0 && ch.unlogged == 0 {
			delete(b.slow, ch) // episode over and reported
			continue
		}
		reports = b.dueReport(ch, now, reports)
	}
	b.mu.Unlock()
	b.logDrops(reports)
}

// collectDrops adds the drops of ch since the last call to Stats.Dropped and
// returns how many there were. b.mu must be held.
func (b *Broker) collectDrops(ch *channel) int {
	n, err := ch.sub.Dropped()
	if err != nil || n <= ch.dropped {
		return 0
	}
	d := n - ch.dropped
	ch.dropped = n
	ch.unlogged += d
	b.dropped.Add(uint64(d))
	return d
}

// dueReport appends a warning for ch if it has unreported drops and its rate
// limit allows one now. b.mu must be held.
func (b *Broker) dueReport(ch *channel, now time.Time, reports []dropReport) []dropReport {
	if ch.unlogged == 0 || (!ch.lastLog.IsZero() && now.Sub(ch.lastLog) < dropLogInterval) {
		return reports
	}
	reports = append(reports, dropReport{pattern: ch.pattern, dropped: ch.unlogged})
	ch.unlogged = 0
	ch.lastLog = now
	return reports
}

func (b *Broker) logDrops(reports []dropReport) {
	for i, r := range reports {
		if i == maxDropLogsPerSweep {
			rest := 0
			for _, r := range reports[i:] {
				rest += r.dropped
			}
			b.log.Warn("nats slow consumer: messages dropped on more channels",
				"channels", len(reports)-i, "dropped", rest, "limit_msgs", b.pendingMsgs, "limit_bytes", b.pendingBytes)
			return
		}
		b.log.Warn("nats slow consumer: messages dropped",
			"channel", r.pattern, "dropped", r.dropped, "limit_msgs", b.pendingMsgs, "limit_bytes", b.pendingBytes)
	}
}
