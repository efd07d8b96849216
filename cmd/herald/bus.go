package main

import (
	"github.com/nats-io/nats.go"

	"github.com/herald-ws/herald/engine/push"
	"github.com/herald-ws/herald/pubsub"
	"github.com/herald-ws/herald/pubsub/history"
)

// natsBus is the push protocol's bus on the NATS broker. Client publishes
// go out with headers that say who sent them; a client can set no header
// of its own.
type natsBus struct {
	*pubsub.Broker
	history *history.Store // nil without history
}

// Subscribe subscribes a history channel at its stream's republish
// destination, where every message carries its sequence, and any other
// channel as it is.
func (b natsBus) Subscribe(id uint64, pattern string) {
	if b.history == nil {
		b.Broker.Subscribe(id, pattern)
		return
	}
	if prefix := b.history.Prefix(pattern); prefix != "" {
		// The broker keeps pattern itself, not a copy with the prefix,
		// when a wide pattern covers it.
		b.Broker.SubscribeUnder(id, prefix, pattern)
		return
	}
	b.Broker.Subscribe(id, pattern)
}

// Unsubscribe ends the subscription in the broker first and drops its
// history tail after: the history makes a tail only for a subscription
// the broker still has, so none outlives it (history.Store.tailFor).
func (b natsBus) Unsubscribe(id uint64) {
	b.Broker.Unsubscribe(id)
	if b.history != nil {
		b.history.Unsubscribed(id)
	}
}

// The headers of a client publish.
const (
	headerUser   = "Herald-User"
	headerClient = "Herald-Client"
)

func (b natsBus) Publish(p push.Publication, done func(error)) error {
	h := nats.Header{headerClient: []string{p.Client}}
	if p.User != "" {
		h[headerUser] = []string{p.User}
	}
	return b.PublishAsync(p.Subject, h, p.Data, done)
}
