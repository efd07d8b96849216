// Package pushtest is a message bus for tests of the push protocol that
// need no NATS: it keeps subscriptions in memory, confirms them when the
// test says (or at once), and publishes to every matching one, calling the
// hub from one goroutine in order, as the real bus does.
package pushtest

import (
	"slices"
	"sync"

	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/engine/push"
)

// Bus is an in-memory push.Bus.
type Bus struct {
	// AutoLive confirms every subscription as soon as it is made.
	AutoLive bool

	mu      sync.Mutex
	hub     *push.Hub
	subs    map[uint64]string // live or not, until unsubscribed
	waiting map[uint64]string // not confirmed yet
	order   []uint64          // subscription ids in the order made
	calls   int               // Subscribe calls, for tests that count them
	queue   chan func()

	// PublishErr, if set, is how every client publish fails (in done).
	PublishErr error
	published  []push.Publication
}

// New returns a bus; Attach gives it its hub.
func New() *Bus {
	b := &Bus{subs: make(map[uint64]string), waiting: make(map[uint64]string), queue: make(chan func(), 1<<16)}
	go func() {
		for f := range b.queue {
			f()
		}
	}()
	return b
}

// Attach sets the hub the bus feeds.
func (b *Bus) Attach(h *push.Hub) {
	b.mu.Lock()
	b.hub = h
	b.mu.Unlock()
}

// Close stops the bus's goroutine.
func (b *Bus) Close() { close(b.queue) }

// Subscribe records a subscription; with AutoLive it is confirmed at once.
func (b *Bus) Subscribe(id uint64, pattern string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	b.subs[id] = pattern
	b.order = append(b.order, id)
	if b.AutoLive {
		b.answerLocked(id, nil)
		return
	}
	b.waiting[id] = pattern
}

// Unsubscribe forgets a subscription.
func (b *Bus) Unsubscribe(id uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.subs, id)
	b.order = slices.DeleteFunc(b.order, func(x uint64) bool { return x == id })
}

// Confirm answers the waiting subscriptions to pattern with err (nil:
// live), and reports how many there were.
func (b *Bus) Confirm(pattern string, err error) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for id, p := range b.waiting {
		if p == pattern {
			b.answerLocked(id, err)
			n++
		}
	}
	return n
}

func (b *Bus) answerLocked(id uint64, err error) {
	delete(b.waiting, id)
	if err != nil {
		delete(b.subs, id)
	}
	h := b.hub
	b.queue <- func() { h.Live(id, err) }
}

// Waiting reports the patterns whose subscriptions wait for Confirm.
func (b *Bus) Waiting() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, p := range b.waiting {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// Subscriptions reports how many subscriptions exist, and how many
// Subscribe calls were made in all.
func (b *Bus) Subscriptions() (now, made int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs), b.calls
}

// IDs returns the ids of the subscriptions that match subject, for tests
// that call Hub.Message themselves.
func (b *Bus) IDs(subject string) []uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.idsLocked(subject)
}

func (b *Bus) idsLocked(subject string) []uint64 {
	var ids []uint64
	for _, id := range b.order {
		if channel.Matches(b.subs[id], subject) {
			ids = append(ids, id)
		}
	}
	return ids
}

// Send publishes data on subject as a backend would: to every
// subscription that matches it, as one message carrying all their ids,
// like NATS's copies grouped.
func (b *Bus) Send(subject string, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ids := b.idsLocked(subject)
	if len(ids) == 0 {
		return
	}
	h, data := b.hub, slices.Clone(data)
	b.queue <- func() { h.Message(subject, data, ids) }
}

// SendCopies is Send with one message per matching subscription, as
// NATS sends them when they are not grouped.
func (b *Bus) SendCopies(subject string, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	h, data := b.hub, slices.Clone(data)
	for _, id := range b.idsLocked(subject) {
		b.queue <- func() { h.Message(subject, data, []uint64{id}) }
	}
}

// Sync waits until everything queued so far has reached the hub.
func (b *Bus) Sync() {
	done := make(chan struct{})
	b.queue <- func() { close(done) }
	<-done
}

// Publish takes a client's publication as the real bus would: it records
// it, answers done from the bus's goroutine, and sends it to the matching
// subscriptions, the publisher's own included.
func (b *Bus) Publish(p push.Publication, done func(error)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	p.Data = slices.Clone(p.Data)
	err := b.PublishErr
	if err == nil {
		b.published = append(b.published, p)
	}
	h, ids := b.hub, b.idsLocked(p.Subject)
	b.queue <- func() {
		done(err)
		if err == nil && len(ids) > 0 {
			h.Message(p.Subject, p.Data, ids)
		}
	}
	return nil
}

// Published returns the client publications taken so far.
func (b *Bus) Published() []push.Publication {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.published)
}
