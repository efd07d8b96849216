package pubsub

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
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
	// err is a *channel.Error for an invalid pattern, or (errors.As finds
	// it) one with channel.CodeForbidden when the NATS server refused the
	// subscription (permissions; see perm.go), ErrUnsubscribed when
	// Unsubscribe(id) came first, ErrClosed when Close came first, or
	// nats.go's reason wrapped with the pattern. A member of a wide group
	// (Config.Wide) is answered the same way, for the wide pattern's NATS
	// subscription.
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

// subscription is one Subscribe call, or the NATS subscription of a wide
// group (a carrier, see wide.go). Its fields are split by goroutine.
type subscription struct {
	id      uint64
	pattern string // cloned: never the caller's memory

	// cancelled is set by Unsubscribe: nothing more is delivered under id.
	cancelled atomic.Bool

	// carrier marks the NATS subscription of group wide: it has no id and
	// no Live, and its messages go to the group's members. Set before the
	// worker first hands the subscription on, then read-only.
	carrier bool
	// Worker only.
	state subState
	// Dispatcher only.
	live bool // Live(id, nil) delivered
	// under is 1 + the index of the republish prefix (SetRepublished) the
	// subscription is for, 0 for none. A member of a wide group under it
	// keeps pattern without the prefix (the caller's string, shared with
	// the hub: nothing more per personal history channel); any other
	// subscription gets the whole NATS subject in pattern once performed.
	under uint8

	// wide is the group of a member or of a carrier, nil for an ordinary
	// subscription. Set by the worker before it first hands the
	// subscription on, then read-only.
	wide *wideGroup

	// Worker only.
	sub *nats.Subscription // nil until made, or if never made (members never have one)

	// The struct fits Go's 48-byte size class, which matters for members
	// (one per personal channel): the dispatcher's state of a NATS
	// subscription is in its route, the second member on one subject in
	// wideGroup.more.
}

type subState uint8

const (
	stateQueued   subState = iota // Subscribe called, not yet made
	stateMade                     // NATS subscription made (or, for a member, group joined), round trip pending
	stateAnswered                 // Live handed to the dispatcher; for a carrier: its round trip is done
	stateGone                     // nothing left to undo: refused, or (member, carrier) ended
)

// op is one call for the worker.
type op struct {
	s           *subscription
	unsubscribe bool
	err         error        // Subscribe refused it already: answer with this
	wide        []*wideGroup // SetRepublished's groups, for the worker to add (s is nil)
}

// answer is one thing the worker tells the dispatcher, in stream order.
type answer struct {
	s *subscription
	// forget: the NATS subscription sub is gone (Unsubscribe returned, so
	// nats.go sends nothing more for it), or, with sub nil, member s left
	// its group. Otherwise a Live with err.
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
//
// The broker keeps pattern as given, so it must be an ordinary Go string
// and not a view of memory the caller reuses (the push hub passes its own
// copy of each channel name): with a channel per user, a second copy of
// every name is memory per connection.
func (b *Broker) Subscribe(id uint64, pattern string) { b.subscribe(id, pattern, 0) }

// subscribe is Subscribe, under a republish prefix when under is above 0
// (see SubscribeUnder).
func (b *Broker) subscribe(id uint64, pattern string, under uint8) {
	err := channel.Validate(pattern, true)
	if err != nil {
		// Like channel.Error itself, never echo a name a client sent.
		err = fmt.Errorf("pubsub: subscribe (id %d): %w", id, err)
	}
	s := &subscription{id: id, pattern: pattern, under: under}
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
// yet unsubscribed, and not answered with an error. Members of wide groups
// count like any other subscription (see NATSSubscriptions for what NATS
// holds).
func (b *Broker) Channels() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// Subscribed reports whether subscription id exists: subscribed, not yet
// unsubscribed, and not answered with an error. It takes the lock that
// Subscribe and Unsubscribe take, and never calls nats.go.
func (b *Broker) Subscribed(id uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.subs[id]
	return ok
}

// NATSSubscriptions returns the number of NATS subscriptions the broker
// holds in nats.go: one per subscription outside the wide patterns that the
// worker has made and not yet ended, and one per wide pattern with members
// (Config.Wide). It reads a counter and never calls nats.go.
func (b *Broker) NATSSubscriptions() int { return int(b.natsSubs.Load()) }

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
	w := &worker{b: b}
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		failed := false // the round trip failed: retry on the timer or a wake-up
		select {
		case <-b.stop:
			w.finish()
			return
		case <-b.wake:
		case <-retry.C:
		case t := <-b.tripDone:
			w.tripping = false
			if t.err == nil {
				w.confirm(t.forbidden)
			} else {
				// Lost the connection meanwhile (nats.go then fails the
				// round trip at once) or a very slow server: try again.
				b.log.Debug("pubsub: round trip for new subscriptions failed; will retry",
					"subscriptions", len(w.inflight), "err", t.err)
				w.pending = append(w.inflight, w.pending...)
				failed = true
			}
			w.inflight = nil
		}
		b.mu.Lock()
		ops := b.queue
		b.queue = nil
		b.mu.Unlock()

		for i, o := range ops {
			if b.stopping() {
				w.finish(ops[i:]...)
				return
			}
			w.perform(o)
		}
		// A permission violation waiting to be told apart (see perm.go)
		// asks for a round trip too.
		if !w.tripping && (len(w.pending) > 0 || b.violationsWaiting()) {
			// While nats.go is reconnecting, wait for the reconnect
			// callback (or the timer): nats.go re-sends every subscription
			// first thing on the new connection, and a PONG there proves
			// them all in place.
			if !failed && b.Connected() {
				w.inflight, w.pending = w.pending, nil
				w.tripping = true
				w.tripEpoch = b.epoch.Load()
				b.tripStart <- struct{}{} // capacity 1 and the tripper is idle
			} else {
				retry.Reset(retryInterval)
			}
		}
		w.flush()
	}
}

// worker is the state of the worker goroutine.
type worker struct {
	b        *Broker
	out      []answer        // for the dispatcher, handed on by flush
	pending  []*subscription // made, round trip not yet asked for
	inflight []*subscription // made before the round trip under way
	tripping bool            // a round trip is under way
	// tripEpoch is b.epoch when the round trip under way was asked for;
	// proven says that a round trip asked for at epoch provenEpoch
	// succeeded: every subscription nats.go had then is on the server.
	tripEpoch   uint64
	proven      bool
	provenEpoch uint64
	// carried are permission violations for subscriptions in pending,
	// applied when their round trip completes (see perm.go).
	carried map[string]error
}

// tripResult is the outcome of one round trip.
type tripResult struct {
	err error
	// forbidden are the subjects whose SUB the server refused (permission
	// violations) as the tripper learnt them by the PONG; see perm.go.
	forbidden map[string]error
}

// flush hands the answers gathered so far to the dispatcher.
func (w *worker) flush() {
	w.b.answer(w.out)
	w.out = nil // the dispatcher owns the batch now
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
		if h := b.testHookTrip.Load(); h != nil {
			(*h)()
		}
		t := tripResult{err: b.nc.FlushTimeout(flushTimeout)}
		if t.err == nil {
			t.forbidden = b.takeViolations()
		}
		select {
		case b.tripDone <- t:
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

// perform does one op and gathers what the dispatcher must hear about it.
func (w *worker) perform(o op) {
	b, s := w.b, o.s
	if o.wide != nil {
		// Only the worker reads the groups: added here, in queue order,
		// they cover every Subscribe queued after SetRepublished.
		b.wide = append(b.wide, o.wide...)
		return
	}
	if o.unsubscribe {
		w.unsubscribe(s)
		return
	}
	switch {
	case o.err != nil:
		s.state = stateAnswered
		w.out = append(w.out, answer{s: s, err: o.err})
		return
	case s.cancelled.Load():
		s.state = stateAnswered
		w.out = append(w.out, answer{s: s, err: ErrUnsubscribed})
		return
	}
	if g := b.wideFor(s); g != nil {
		w.join(g, s)
		return
	}
	if s.under > 0 {
		s.pattern = (*b.republished.Load())[s.under-1] + s.pattern // what NATS is asked for
		s.under = 0
	}
	if err := w.subscribeNATS(s); err != nil {
		if !errors.Is(err, ErrClosed) {
			err = fmt.Errorf("pubsub: subscribe to %s: %w", s.pattern, err)
		}
		s.state = stateAnswered
		w.drop(s)
		w.out = append(w.out, answer{s: s, err: err})
		return
	}
	w.pending = append(w.pending, s)
}

// subscribeNATS makes s's NATS subscription, into the shared channel.
func (w *worker) subscribeNATS(s *subscription) error {
	b := w.b
	sub, err := b.nc.ChanSubscribe(s.pattern, b.msgs)
	if err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) {
			return ErrClosed // only Close closes the connection
		}
		return err
	}
	s.sub, s.state = sub, stateMade
	b.natsSubs.Add(1)
	b.regMu.Lock()
	b.registered[sub] = s
	b.regMu.Unlock()
	return nil
}

// unsubscribeNATS ends s's NATS subscription and tells the dispatcher to
// forget it.
func (w *worker) unsubscribeNATS(s *subscription) {
	b := w.b
	b.dropSlow(s.sub) // Dropped() is unavailable after Unsubscribe
	if err := s.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		b.log.Warn("pubsub: unsubscribe failed", "channel", s.pattern, "id", s.id, "err", err)
	}
	w.out = append(w.out, answer{s: s, forget: true, sub: s.sub})
	s.sub = nil
	b.natsSubs.Add(-1)
}

// drop forgets s in the subscriptions callers see, when it is answered with
// an error: it does not exist any more (see Channels).
func (w *worker) drop(s *subscription) {
	b := w.b
	b.mu.Lock()
	if b.subs[s.id] == s {
		delete(b.subs, s.id)
	}
	b.mu.Unlock()
}

// join makes s a member of g (see wide.go for the Live argument).
func (w *worker) join(g *wideGroup, s *subscription) {
	b := w.b
	s.wide = g
	c := g.carrier
	if c != nil && g.refused != nil && g.refusedEpoch == b.epoch.Load() {
		// Refused on this very connection: a later one is judged again
		// (a round trip on it clears or renews the refusal).
		s.state = stateGone
		w.drop(s)
		w.out = append(w.out, answer{s: s, err: fmt.Errorf("pubsub: subscribe to %s (under wide pattern %s): %w: %w",
			s.pattern, g.pattern, errForbidden, g.refused)})
		return
	}
	if c == nil {
		c = &subscription{pattern: g.pattern, carrier: true, wide: g}
		if err := w.subscribeNATS(c); err != nil {
			if !errors.Is(err, ErrClosed) {
				err = fmt.Errorf("pubsub: subscribe to %s (under wide pattern %s): %w", s.pattern, g.pattern, err)
			}
			s.state = stateGone
			w.drop(s)
			w.out = append(w.out, answer{s: s, err: err})
			return
		}
		g.carrier = c
		w.pending = append(w.pending, c)
	}
	g.members++
	switch {
	case c.state == stateMade:
		// Answered with the carrier's round trip.
		s.state = stateMade
		g.waiting = append(g.waiting, s)
	case w.proven && w.provenEpoch == b.epoch.Load() && b.Connected():
		// The server has W on this connection: no round trip needed.
		s.state = stateAnswered
		w.out = append(w.out, answer{s: s})
	default:
		// A disconnect or reconnect since the last round trip: the next
		// one, asked for after the reconnect, proves W in place.
		s.state = stateMade
		w.pending = append(w.pending, s)
	}
}

// unsubscribe performs Unsubscribe for s.
func (w *worker) unsubscribe(s *subscription) {
	switch {
	case s.wide != nil: // a member: carriers are never in ops
		if s.state == stateGone {
			return // refused: its answer is already out
		}
		if s.state == stateMade {
			w.out = append(w.out, answer{s: s, err: ErrUnsubscribed})
		} else {
			w.out = append(w.out, answer{s: s, forget: true}) // leave the routing
		}
		s.state = stateGone
		g := s.wide
		g.members--
		if g.members == 0 {
			w.release(g)
		}
	case s.sub == nil:
		// Never made: its answer is already out.
	default:
		w.unsubscribeNATS(s)
		if s.state == stateMade {
			s.state = stateAnswered
			w.out = append(w.out, answer{s: s, err: ErrUnsubscribed})
		}
	}
}

// release ends g's NATS subscription once its last member has left.
func (w *worker) release(g *wideGroup) {
	c := g.carrier
	if c == nil {
		return
	}
	g.carrier, g.waiting, g.refused = nil, nil, nil
	w.unsubscribeNATS(c)
	c.state = stateGone
}

// confirm answers the subscriptions of the round trip that just succeeded:
// Live for each, unless the server refused its SUB before the PONG
// (forbidden, by subject; see perm.go).
func (w *worker) confirm(forbidden map[string]error) {
	w.proven, w.provenEpoch = true, w.tripEpoch
	for subject, err := range w.carried {
		if _, ok := forbidden[subject]; !ok {
			if forbidden == nil {
				forbidden = make(map[string]error)
			}
			forbidden[subject] = err
		}
	}
	w.carried = nil
	var matched map[string]bool
	for _, s := range w.inflight {
		if s.state != stateMade {
			continue
		}
		subject := s.pattern // what nats.go sent the SUB for
		if s.wide != nil && !s.carrier {
			subject = s.wide.pattern // a member proving its live carrier
		}
		if err, ok := forbidden[subject]; ok {
			if matched == nil {
				matched = make(map[string]bool)
			}
			matched[subject] = true
			w.refuse(s, err)
			continue
		}
		w.live(s)
	}
	for subject, err := range forbidden {
		if w.pendingOn(subject) {
			// Its SUB went out after the PING: the next round trip's.
			if w.carried == nil {
				w.carried = make(map[string]error)
			}
			w.carried[subject] = err
		} else if !matched[subject] {
			w.b.lateViolation(subject, err)
			w.refuseGroup(subject, err)
		}
	}
	// A round trip asked for on a later connection than a group's refusal
	// came back without it: nats.go re-sent the SUB and the server took it.
	for _, g := range w.b.wide {
		if g.refused != nil && g.refusedEpoch < w.tripEpoch {
			if _, again := forbidden[g.pattern]; !again {
				g.refused = nil
			}
		}
	}
}

// refuseGroup remembers a late refusal of a live carrier's SUB (see
// wideGroup.refused).
func (w *worker) refuseGroup(subject string, err error) {
	for _, g := range w.b.wide {
		if c := g.carrier; c != nil && c.state == stateAnswered && g.pattern == subject {
			g.refused, g.refusedEpoch = err, w.tripEpoch
		}
	}
}

// live answers s, made before the round trip that just succeeded.
func (w *worker) live(s *subscription) {
	s.state = stateAnswered
	if !s.carrier {
		w.out = append(w.out, answer{s: s})
		return
	}
	g := s.wide
	for _, m := range g.waiting {
		if m.state == stateMade {
			m.state = stateAnswered
			w.out = append(w.out, answer{s: m})
		}
	}
	g.waiting = nil
}

// pendingOn reports whether a subscription waiting for the next round trip
// made a SUB for subject.
func (w *worker) pendingOn(subject string) bool {
	for _, s := range w.pending {
		if s.state == stateMade && (s.wide == nil || s.carrier) && s.pattern == subject {
			return true
		}
	}
	return false
}

// finish answers, on Close, every subscription still waiting, and the
// subscribe calls not performed (ops and the queue).
func (w *worker) finish(ops ...op) {
	b := w.b
	b.mu.Lock()
	ops = append(ops, b.queue...)
	b.queue = nil
	b.mu.Unlock()
	for _, s := range append(w.inflight, w.pending...) {
		switch {
		case s.state != stateMade:
		case s.carrier:
			for _, m := range s.wide.waiting {
				if m.state == stateMade {
					m.state = stateAnswered
					w.out = append(w.out, answer{s: m, err: ErrClosed})
				}
			}
			s.wide.waiting = nil
		default:
			s.state = stateAnswered
			w.out = append(w.out, answer{s: s, err: ErrClosed})
		}
	}
	for _, o := range ops {
		if o.s != nil && !o.unsubscribe && o.s.state == stateQueued {
			o.s.state = stateAnswered
			err := o.err
			if err == nil {
				err = ErrClosed
			}
			w.out = append(w.out, answer{s: o.s, err: err})
		}
	}
	w.flush()
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
	subs  map[*nats.Subscription]*route
	ids   []uint64 // reused for every Message call
	group uint64   // number of the current group

	// A batch of answers can land between two copies of one publish
	// while nats.go has not pushed the second yet (it may be in the next
	// read). The copies that come after the answers are the straddle:
	//   - dropped: subscriptions whose copy of the last message came
	//     before their Live and was dropped; a straddling copy through a
	//     subscription live before carries their ids too, so that a
	//     socket that moved its ownership to them still gets it once;
	//   - justLive: the subscriptions the answers made live; a straddling
	//     copy through one of them is dropped, as its twins through the
	//     subscriptions live before carried the message already.
	straddle      bool
	dropped       []*subscription
	justLive      []*subscription
	lastDelivered bool // the last message reached some id
}

// route is the dispatcher's record of one NATS subscription (ordinary or a
// carrier): one per NATS subscription, which costs a kilobyte anyway, so
// that members need no such fields.
type route struct {
	s     *subscription
	group uint64 // the dispatcher group it last joined
}

// dispatch is the dispatcher goroutine: the only one that calls the
// Handler.
func (b *Broker) dispatch() {
	defer close(b.dispatchDone)
	d := &dispatcher{b: b, subs: make(map[*nats.Subscription]*route)}
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
		if d.straddle && last != nil && sameMessage(last, m) {
			if d.straddling(m) {
				continue
			}
		}
		d.straddle = false
		if last == nil || !sameMessage(last, m) {
			d.dropped = d.dropped[:0] // copies of one publish keep theirs
		}
		last = m
		r := d.lookup(m.Sub)
		ids := d.take(r, m, d.ids[:0])
		d.lastDelivered = len(ids) > 0
		if len(ids) == 0 {
			d.ids = ids
			continue
		}
		d.group++
		r.group = d.group
	gather:
		for {
			select {
			case c := <-b.msgs:
				if c.Sub == nil || !sameMessage(m, c) {
					next = c
					break gather
				}
				cr := d.lookup(c.Sub)
				if cr != nil && cr.group == d.group {
					// A second copy through one subscription is a second
					// publish.
					next = c
					break gather
				}
				n := len(ids)
				if ids = d.take(cr, c, ids); len(ids) > n {
					cr.group = d.group
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
		b.deliver(m, ids)
	}
}

// take appends the ids copy m, which arrived through r, is delivered to:
// the subscription's own id when it is live (see Handler.Live), or for a
// wide group's carrier the live members whose patterns match the subject.
func (d *dispatcher) take(r *route, m *nats.Msg, ids []uint64) []uint64 {
	if r == nil {
		return ids
	}
	switch s := r.s; {
	case s.carrier:
		subject := m.Subject
		if g := s.wide; g.strip > 0 && len(subject) > g.strip {
			subject = subject[g.strip:] // a group under a republish prefix routes the subject without it
		}
		ids = s.wide.route(subject, ids)
	case s.live && !s.cancelled.Load():
		ids = append(ids, s.id)
	case !s.live && !s.cancelled.Load():
		d.dropped = append(d.dropped, s)
	}
	return ids
}

// straddling handles m, a copy of the last message that came after a
// batch of answers through another subscription, and reports whether it
// did (false: m is a message of its own, as through the same route).
func (d *dispatcher) straddling(m *nats.Msg) bool {
	r := d.lookup(m.Sub)
	if r == nil || r.s.carrier || d.lastDelivered && r.group == d.group {
		return false // through a route the last message took: a publish of its own
	}
	if slices.Contains(d.justLive, r.s) {
		if !d.lastDelivered {
			// Its twins through the subscriptions live before are still
			// to come: they carry its id.
			d.dropped = append(d.dropped, r.s)
		}
		return true // carried already by its twins, or by those to come
	}
	ids := d.take(r, m, d.ids[:0])
	if len(ids) == 0 {
		return true
	}
	for _, s := range d.dropped {
		if s.live && !s.cancelled.Load() {
			ids = append(ids, s.id)
		}
	}
	d.dropped = d.dropped[:0]
	d.ids = ids
	d.group++
	r.group = d.group
	d.lastDelivered = true
	if !d.b.quit.Load() {
		d.b.messagesIn.Add(uint64(len(ids)))
		d.b.deliver(m, ids)
	}
	return true
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
		cr := d.lookup(c.Sub)
		if cr != nil && d.lastDelivered && cr.group == d.group {
			return c // a second copy through one subscription is a second publish
		}
		d.ids = d.take(cr, c, d.ids[:0])
		if len(d.ids) > 0 && !b.quit.Load() {
			cr.group = d.group
			d.lastDelivered = true
			b.messagesIn.Add(uint64(len(d.ids)))
			b.deliver(c, d.ids)
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

// lookup finds the subscription a message arrived through.
//
// The worker records a NATS subscription right after ChanSubscribe returns,
// and the dispatcher forgets it only after the worker's Unsubscribe returned
// (after which nats.go pushes nothing more for it). So a subscription not
// found is one whose first message beat the worker to recording it: the
// worker is between two statements that never block, and the wait is short.
func (d *dispatcher) lookup(sub *nats.Subscription) *route {
	if r, ok := d.subs[sub]; ok {
		return r
	}
	var deadline time.Time
	for i := 0; ; i++ {
		d.b.regMu.Lock()
		s, ok := d.b.registered[sub]
		delete(d.b.registered, sub)
		d.b.regMu.Unlock()
		if ok {
			r := &route{s: s}
			d.subs[sub] = r
			return r
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
	clear(d.justLive)
	d.justLive = d.justLive[:0]
	d.straddle = true
	for _, a := range batch {
		s := a.s
		switch {
		case a.forget && a.sub != nil:
			delete(d.subs, a.sub)
			b.regMu.Lock()
			delete(b.registered, a.sub)
			b.regMu.Unlock()
			continue
		case a.forget:
			// A member left its group.
			if s.live {
				s.live = false
				s.wide.remove(s)
			}
			continue
		}
		err := a.err
		if err == nil && s.cancelled.Load() {
			err = ErrUnsubscribed
		}
		if b.quit.Load() {
			return false
		}
		// A member joins the routing here, in stream order: every message
		// taken after this answer reaches it (see wide.go).
		s.live = err == nil
		if s.live && s.wide != nil {
			s.wide.add(s)
		}
		if s.live && !s.carrier {
			d.justLive = append(d.justLive, s)
		}
		b.handler.Live(s.id, err)
	}
	return true
}
