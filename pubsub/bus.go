package pubsub

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-ws/herald/codec/channel"
)

// Handler receives everything the Broker delivers. The Broker calls it from
// one goroutine, in the order NATS delivered the messages (except that the
// copies a subscription received before its Live come right after that Live;
// see Live). A slow Handler holds up everything: past Config.PendingMsgs
// waiting copies NATS messages are dropped. The Handler may call Subscribe,
// Unsubscribe and Publish, but not Close (which waits for the Handler).
type Handler interface {
	// Message is a message published on subject. subs are the ids of the
	// subscriptions it reached Herald through: more than one when patterns
	// overlap and NATS sent a copy for each of them (consecutive copies, same
	// subject and same bytes, from distinct subscriptions, are grouped into
	// one call). data and subs are valid only during the call.
	//
	// Grouping takes only the copies already waiting when the first one is
	// taken; it never waits for more. Copies NATS sent apart, or that were
	// not received yet, come in separate calls, so a message can reach
	// Message more than once through overlapping subscriptions.
	Message(subject string, data []byte, subs []uint64)
	// Live answers Subscribe(id, ...) exactly once: err == nil once the NATS
	// server has the subscription (a round trip after the SUB), or the reason
	// it could not be made. Every message the subscription carries that NATS
	// sent after it registered the SUB comes after Live in this stream.
	//
	// No message reaches Message under id before Live(id, nil): the copies
	// a subscription receives before its Live (sent between the server
	// registering the SUB and the PONG of the round trip) are dropped, since
	// their twins through overlapping subscriptions that were live already
	// carry them, and nobody was told of the new one yet. Live comes after
	// every message NATS sent before that PONG, so from Live on a
	// subscription carries every message it matches: the point at which a
	// subscriber may be told it is subscribed.
	//
	// err is a *channel.Error for an invalid pattern, ErrUnsubscribed when
	// Unsubscribe(id) came first, ErrClosed when Close came first, or
	// nats.go's reason wrapped with the pattern.
	Live(id uint64, err error)
}

// ErrUnsubscribed is the error of Handler.Live for a subscription that
// Unsubscribe ended before it was live.
var ErrUnsubscribed = errors.New("pubsub: unsubscribed before the subscription was live")

const (
	// flushTimeout bounds a round trip for new subscriptions; on timeout the
	// worker asks for another. The PONG may come behind a backlog of
	// messages, and a lost connection fails the round trip at once anyway,
	// as does Close; a server that stops answering is caught by nats.go's
	// pings within about as long.
	flushTimeout = pingInterval * maxPingsOut
	// retryInterval is how often the worker retries the round trip of
	// subscriptions made while NATS was down, besides the wake-up from the
	// reconnect callback.
	retryInterval = 100 * time.Millisecond
	// lookupTimeout bounds how long the dispatcher waits for the worker to
	// record a subscription whose first message beat it (see lookup).
	lookupTimeout = time.Second
)

// ctlMarker and stopMarker travel in Broker.msgs with the messages. nats.go
// never sends a message without its Sub, so a nil Sub tells them apart.
var (
	// ctlMarker announces the worker's next batch of answers.
	ctlMarker = &nats.Msg{Subject: "pubsub: answers"}
	// stopMarker, sent by Close, ends the dispatcher.
	stopMarker = &nats.Msg{Subject: "pubsub: stop"}
)

// subscription is one Subscribe call. Its fields are split by goroutine.
type subscription struct {
	id      uint64
	pattern string // cloned: never the caller's memory

	// cancelled is set by Unsubscribe: nothing more is delivered under id.
	cancelled atomic.Bool

	// Worker only.
	sub   *nats.Subscription // nil until made, or if never made
	state subState

	// Dispatcher only.
	live  bool   // Live(id, nil) delivered
	group uint64 // the dispatcher group it last joined
}

type subState uint8

const (
	stateQueued   subState = iota // Subscribe called, not yet made
	stateMade                     // NATS subscription made, round trip pending
	stateAnswered                 // Live handed to the dispatcher
)

// op is one call for the worker.
type op struct {
	s           *subscription
	unsubscribe bool
	err         error // Subscribe refused it already: answer with this
}

// answer is one thing the worker tells the dispatcher, in stream order.
type answer struct {
	s *subscription
	// forget: the NATS subscription sub is gone (Unsubscribe returned, so
	// nats.go sends nothing more for it). Otherwise a Live with err.
	forget bool
	sub    *nats.Subscription
	err    error
}

// Subscribe asks for the messages on pattern (a NATS subject, wildcards
// allowed) under the caller's id. It never blocks and never calls nats.go on
// the caller's goroutine; the answer comes through Handler.Live.
//
// id must not name a subscription that exists (subscribed and not
// unsubscribed): such a call is answered with an error and changes nothing.
// An id may be reused after Unsubscribe; the answers for one id come in the
// order of the calls. After Close has begun, Subscribe does nothing.
func (b *Broker) Subscribe(id uint64, pattern string) {
	err := channel.Validate(pattern, true)
	if err != nil {
		// Like channel.Error itself, never echo a name a client sent.
		err = fmt.Errorf("pubsub: subscribe (id %d): %w", id, err)
	}
	// The pattern outlives the call: never alias the caller's memory (the
	// engine may pass a view of a network buffer).
	s := &subscription{id: id, pattern: strings.Clone(pattern)}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	if err == nil {
		if _, dup := b.subs[id]; dup {
			err = fmt.Errorf("pubsub: subscribe to %q: id %d is already subscribed", pattern, id)
		} else {
			b.subs[id] = s
		}
	}
	b.queue = append(b.queue, op{s: s, err: err})
	b.mu.Unlock()
	b.kick()
}

// Unsubscribe ends subscription id (also one whose Live has not come yet:
// its Live still comes). It never blocks. Once it has returned, no Message
// call that starts lists id (one already running may). An unknown id is
// ignored.
func (b *Broker) Unsubscribe(id uint64) {
	b.mu.Lock()
	s := b.subs[id]
	if s == nil || b.closed {
		b.mu.Unlock()
		return
	}
	delete(b.subs, id)
	s.cancelled.Store(true)
	b.queue = append(b.queue, op{s: s, unsubscribe: true})
	b.mu.Unlock()
	b.kick()
}

// Channels returns the number of subscriptions that exist: subscribed, not
// yet unsubscribed, and not answered with an error.
func (b *Broker) Channels() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// kick wakes the worker. It never blocks.
func (b *Broker) kick() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// work is the worker goroutine: the only one that subscribes and
// unsubscribes in nats.go. It takes the whole queue at once and performs it
// in order. Then, unless a round trip is already under way, it has the
// round-tripper make one for every subscription made since the last one, so
// a burst of subscriptions costs one round trip; when it completes, the
// worker hands their Live answers to the dispatcher through b.msgs, behind
// every message nats.go received before the PONG.
//
// The worker never waits for a PONG itself, so Unsubscribe and further
// Subscribe calls go on while one is under way (behind a backlog of
// messages the PONG may take long to come).
func (b *Broker) work() {
	defer close(b.workerDone)
	var (
		pending  []*subscription // made, round trip not yet asked for
		inflight []*subscription // made before the round trip under way
		tripping bool            // a round trip is under way
	)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		var out []answer
		failed := false // the round trip failed: retry on the timer or a wake-up
		select {
		case <-b.stop:
			b.finish(append(inflight, pending...))
			return
		case <-b.wake:
		case <-retry.C:
		case err := <-b.tripDone:
			tripping = false
			if err == nil {
				for _, s := range inflight {
					if s.state == stateMade {
						s.state = stateAnswered
						out = append(out, answer{s: s})
					}
				}
			} else {
				// Lost the connection meanwhile (nats.go then fails the
				// round trip at once) or a very slow server: try again.
				b.log.Debug("pubsub: round trip for new subscriptions failed; will retry",
					"subscriptions", len(inflight), "err", err)
				pending = append(inflight, pending...)
				failed = true
			}
			inflight = nil
		}
		b.mu.Lock()
		ops := b.queue
		b.queue = nil
		b.mu.Unlock()

		for i, o := range ops {
			if b.stopping() {
				b.answer(out)
				b.finish(append(inflight, pending...), ops[i:]...)
				return
			}
			out, pending = b.perform(o, out, pending)
		}
		if !tripping && len(pending) > 0 {
			// While nats.go is reconnecting, wait for the reconnect
			// callback (or the timer): nats.go re-sends every subscription
			// first thing on the new connection, and a PONG there proves
			// them all in place.
			if !failed && b.Connected() {
				inflight, pending = pending, nil
				tripping = true
				b.tripStart <- struct{}{} // capacity 1 and the tripper is idle
			} else {
				retry.Reset(retryInterval)
			}
		}
		b.answer(out)
	}
}

// roundTrips is the round-tripper goroutine: it makes the worker's round
// trips, one at a time, so that the worker never waits for a PONG.
func (b *Broker) roundTrips() {
	for {
		select {
		case <-b.stop:
			return
		case <-b.tripStart:
		}
		err := b.nc.FlushTimeout(flushTimeout)
		select {
		case b.tripDone <- err:
		case <-b.stop:
			return
		}
	}
}

func (b *Broker) stopping() bool {
	select {
	case <-b.stop:
		return true
	default:
		return false
	}
}

// perform does one op on the worker and appends what the dispatcher must
// hear about it.
func (b *Broker) perform(o op, out []answer, pending []*subscription) ([]answer, []*subscription) {
	s := o.s
	if o.unsubscribe {
		if s.sub == nil {
			return out, pending // never made: its answer is already out
		}
		b.dropSlow(s.sub) // Dropped() is unavailable after Unsubscribe
		if err := s.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			b.log.Warn("pubsub: unsubscribe failed", "channel", s.pattern, "id", s.id, "err", err)
		}
		out = append(out, answer{s: s, forget: true, sub: s.sub})
		if s.state == stateMade {
			s.state = stateAnswered
			out = append(out, answer{s: s, err: ErrUnsubscribed})
		}
		return out, pending
	}
	switch {
	case o.err != nil:
		s.state = stateAnswered
		return append(out, answer{s: s, err: o.err}), pending
	case s.cancelled.Load():
		s.state = stateAnswered
		return append(out, answer{s: s, err: ErrUnsubscribed}), pending
	}
	sub, err := b.nc.ChanSubscribe(s.pattern, b.msgs)
	if err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) {
			err = ErrClosed // only Close closes the connection
		} else {
			err = fmt.Errorf("pubsub: subscribe to %s: %w", s.pattern, err)
		}
		s.state = stateAnswered
		b.mu.Lock()
		if b.subs[s.id] == s {
			delete(b.subs, s.id)
		}
		b.mu.Unlock()
		return append(out, answer{s: s, err: err}), pending
	}
	s.sub, s.state = sub, stateMade
	b.regMu.Lock()
	b.registered[sub] = s
	b.regMu.Unlock()
	return out, append(pending, s)
}

// finish answers, on Close, every subscription still waiting.
func (b *Broker) finish(pending []*subscription, ops ...op) {
	b.mu.Lock()
	ops = append(ops, b.queue...)
	b.queue = nil
	b.mu.Unlock()
	var out []answer
	for _, s := range pending {
		if s.state == stateMade {
			s.state = stateAnswered
			out = append(out, answer{s: s, err: ErrClosed})
		}
	}
	for _, o := range ops {
		if !o.unsubscribe && o.s.state == stateQueued {
			o.s.state = stateAnswered
			err := o.err
			if err == nil {
				err = ErrClosed
			}
			out = append(out, answer{s: o.s, err: err})
		}
	}
	b.answer(out)
}

// answer hands a batch of answers to the dispatcher: one marker in b.msgs,
// behind everything nats.go has pushed so far.
func (b *Broker) answer(out []answer) {
	if len(out) == 0 {
		return
	}
	if h := b.testHookAnswer.Load(); h != nil {
		(*h)(out)
	}
	b.ctlMu.Lock()
	b.answers = append(b.answers, out)
	b.ctlMu.Unlock()
	select {
	case b.msgs <- ctlMarker:
	case <-b.dispatchDone:
	}
}

// dispatcher is the state of the dispatch goroutine.
type dispatcher struct {
	b     *Broker
	subs  map[*nats.Subscription]*subscription
	ids   []uint64 // reused for every Message call
	group uint64   // number of the current group
}

// dispatch is the dispatcher goroutine: the only one that calls the
// Handler.
func (b *Broker) dispatch() {
	defer close(b.dispatchDone)
	d := &dispatcher{b: b, subs: make(map[*nats.Subscription]*subscription)}
	var next *nats.Msg // taken while grouping, not part of the group
	var last *nats.Msg // the first copy of the last group delivered
	for {
		m := next
		next = nil
		if m == nil {
			m = <-b.msgs
		}
		switch {
		case m == stopMarker:
			return
		case m.Sub == nil:
			// The worker pushes its marker while nats.go's read loop pushes
			// messages, so the marker can land between two copies of one
			// publish. Copies of the last message already waiting behind it
			// are delivered first, as the publish they belong to saw the
			// subscriptions: the answers then come between two publishes.
			next = d.carryOver(last)
			if !d.answers() {
				return
			}
			continue
		}
		last = m
		s := d.lookup(m.Sub)
		if !d.accept(s, m) {
			continue
		}
		d.group++
		s.group = d.group
		ids := append(d.ids[:0], s.id)
	gather:
		for {
			select {
			case c := <-b.msgs:
				if c.Sub == nil || !sameMessage(m, c) {
					next = c
					break gather
				}
				cs := d.lookup(c.Sub)
				if cs != nil && cs.group == d.group {
					// A second copy through one subscription is a second
					// publish.
					next = c
					break gather
				}
				if d.accept(cs, c) {
					cs.group = d.group
					ids = append(ids, cs.id)
				}
			default:
				break gather
			}
		}
		d.ids = ids
		if b.quit.Load() {
			return
		}
		b.messagesIn.Add(uint64(len(ids)))
		b.handler.Message(m.Subject, m.Data, ids)
	}
}

// carryOver delivers the copies of last that wait in the channel, each in
// a call of its own, and returns the first item that is not one (nil when
// the channel is empty).
func (d *dispatcher) carryOver(last *nats.Msg) *nats.Msg {
	b := d.b
	for last != nil {
		var c *nats.Msg
		select {
		case c = <-b.msgs:
		default:
			return nil
		}
		if c.Sub == nil || !sameMessage(last, c) {
			return c
		}
		cs := d.lookup(c.Sub)
		if cs != nil && cs.group == d.group {
			return c // a second copy through one subscription is a second publish
		}
		if d.accept(cs, c) && !b.quit.Load() {
			cs.group = d.group
			d.ids = append(d.ids[:0], cs.id)
			b.messagesIn.Add(1)
			b.handler.Message(c.Subject, c.Data, d.ids)
		}
	}
	return nil
}

// sameMessage reports whether c looks like a copy of m: same subject, reply,
// headers and bytes.
func sameMessage(m, c *nats.Msg) bool {
	return m.Subject == c.Subject && m.Reply == c.Reply && bytes.Equal(m.Data, c.Data) &&
		maps.EqualFunc(m.Header, c.Header, slices.Equal[[]string])
}

// accept reports whether copy m of subscription s is to be delivered:
// only copies of a live subscription are (see Handler.Live).
func (d *dispatcher) accept(s *subscription, m *nats.Msg) bool {
	return s != nil && s.live && !s.cancelled.Load()
}

// lookup finds the subscription a message arrived through.
//
// The worker records a NATS subscription right after ChanSubscribe returns,
// and the dispatcher forgets it only after the worker's Unsubscribe returned
// (after which nats.go pushes nothing more for it). So a subscription not
// found is one whose first message beat the worker to recording it: the
// worker is between two statements that never block, and the wait is short.
func (d *dispatcher) lookup(sub *nats.Subscription) *subscription {
	if s, ok := d.subs[sub]; ok {
		return s
	}
	var deadline time.Time
	for i := 0; ; i++ {
		d.b.regMu.Lock()
		s, ok := d.b.registered[sub]
		delete(d.b.registered, sub)
		d.b.regMu.Unlock()
		if ok {
			d.subs[sub] = s
			return s
		}
		if i == 0 {
			deadline = time.Now().Add(lookupTimeout)
		} else if time.Now().After(deadline) || d.b.quit.Load() {
			d.b.log.Error("pubsub: message for an unknown subscription dropped", "channel", sub.Subject)
			return nil
		}
		if i < 100 {
			runtime.Gosched()
		} else {
			time.Sleep(50 * time.Microsecond)
		}
	}
}

// answers takes the worker's next batch and acts on it. It reports false
// when the dispatcher must stop.
func (d *dispatcher) answers() bool {
	b := d.b
	b.ctlMu.Lock()
	batch := b.answers[0]
	b.answers[0] = nil
	b.answers = b.answers[1:]
	b.ctlMu.Unlock()
	for _, a := range batch {
		s := a.s
		if a.forget {
			delete(d.subs, a.sub)
			b.regMu.Lock()
			delete(b.registered, a.sub)
			b.regMu.Unlock()
			continue
		}
		err := a.err
		if err == nil && s.cancelled.Load() {
			err = ErrUnsubscribed
		}
		if b.quit.Load() {
			return false
		}
		b.handler.Live(s.id, err)
		s.live = err == nil
	}
	return true
}
