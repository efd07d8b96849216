package pubsub

import (
	"time"

	"github.com/nats-io/nats.go"
)

// Drops. Every subscription delivers into one Go channel (Broker.msgs), and
// nats.go's read loop sends into it without blocking: when it is full, the
// copy is dropped and counted on the subscription it came through
// (Subscription.Dropped). nats.go reports the first drop of an episode per
// subscription (an ErrSlowConsumer async error) and nothing more until a
// copy gets through again, so the subscriptions that reported one are swept
// for their counts until they stop dropping. SetPendingLimits does not apply
// to channel subscriptions (nats.go returns ErrTypeSubscription): the limit
// is the channel's capacity, Config.PendingMsgs, for all of them together.

// dropState is the sweep's record of one subscription that dropped. It is
// guarded by Broker.dropMu.
type dropState struct {
	pattern  string
	dropped  int // sub.Dropped() at the last sweep
	logLimit     // the drops not yet reported
}

// logLimit is the rate limit of pubsub's repeated warnings: at most one
// line per interval, which reports how many events it stands for. Events
// held back are reported by the next line, which the drop sweep writes once
// it is due if no new event does. Guarded by Broker.dropMu.
type logLimit struct {
	unlogged int       // events not yet reported in a log line
	lastLog  time.Time // the last line
}

// due reports whether a line for the unlogged events is due at now and, if
// so, how many it reports (and counts them as reported).
func (l *logLimit) due(now time.Time, interval time.Duration) (int, bool) {
	if l.unlogged == 0 || (!l.lastLog.IsZero() && now.Sub(l.lastLog) < interval) {
		return 0, false
	}
	n := l.unlogged
	l.unlogged = 0
	l.lastLog = now
	return n, true
}

// limitedLog is a rate-limited warning that is not about one subscription
// (see Broker.limitedWarn).
type limitedLog struct {
	logLimit
	msg string // the warning, for the sweep's line about held-back events
}

// dropReport is one pending "messages dropped" warning, logged after
// b.dropMu is released.
type dropReport struct {
	pattern string
	dropped int
}

// noteSlow handles nats.go's slow-consumer event for sub: it counts the drops
// so far, warns (rate-limited) and puts the subscription on the sweep list.
func (b *Broker) noteSlow(sub *nats.Subscription) {
	if _, err := sub.Dropped(); err != nil {
		return // unsubscribed meanwhile: dropSlow counted it
	}
	var reports []dropReport
	b.dropMu.Lock()
	st := b.slow[sub]
	if st == nil {
		st = &dropState{pattern: sub.Subject}
		b.slow[sub] = st
	}
	b.collectDrops(sub, st)
	reports = b.dueReport(st, time.Now(), reports)
	b.dropMu.Unlock()
	b.logDrops(reports)
}

// dropSlow counts the last drops of sub, which the worker is about to
// unsubscribe, and takes it off the sweep list.
func (b *Broker) dropSlow(sub *nats.Subscription) {
	var reports []dropReport
	b.dropMu.Lock()
	st := b.slow[sub]
	if st == nil {
		st = &dropState{pattern: sub.Subject}
	}
	b.collectDrops(sub, st)
	reports = b.dueReport(st, time.Now(), reports)
	delete(b.slow, sub)
	b.dropMu.Unlock()
	b.logDrops(reports)
}

// sweepDrops runs until Close, re-reading the drop counts of slow
// subscriptions.
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
	b.dropMu.Lock()
	for sub, st := range b.slow {
		n := b.collectDrops(sub, st)
		if n == 0 && st.unlogged == 0 {
			delete(b.slow, sub) // episode over and reported
			continue
		}
		reports = b.dueReport(st, now, reports)
	}
	var held []limitedLog
	for _, l := range []*limitedLog{&b.pubRefusals, &b.lateRefusals} {
		if n, due := l.due(now, dropLogInterval); due {
			held = append(held, limitedLog{logLimit: logLimit{unlogged: n}, msg: l.msg})
		}
	}
	b.dropMu.Unlock()
	b.logDrops(reports)
	for _, l := range held {
		b.log.Warn(l.msg, "count", l.unlogged, "held_back", true)
	}
}

// collectDrops adds the drops of sub since the last call to Stats.Dropped
// and returns how many there were. b.dropMu must be held.
func (b *Broker) collectDrops(sub *nats.Subscription, st *dropState) int {
	n, err := sub.Dropped()
	if err != nil || n <= st.dropped {
		return 0
	}
	d := n - st.dropped
	st.dropped = n
	st.unlogged += d
	b.dropped.Add(uint64(d))
	return d
}

// dueReport appends a warning for st if it has unreported drops and its rate
// limit allows one now. b.dropMu must be held.
func (b *Broker) dueReport(st *dropState, now time.Time, reports []dropReport) []dropReport {
	if n, due := st.due(now, dropLogInterval); due {
		reports = append(reports, dropReport{pattern: st.pattern, dropped: n})
	}
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
				"channels", len(reports)-i, "dropped", rest, "limit_msgs", b.pendingMsgs)
			return
		}
		b.log.Warn("nats slow consumer: messages dropped",
			"channel", r.pattern, "dropped", r.dropped, "limit_msgs", b.pendingMsgs)
	}
}
