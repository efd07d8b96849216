package main

import (
	"github.com/nats-io/nats.go"

	"github.com/herald-ws/herald/engine/push"
	"github.com/herald-ws/herald/pubsub"
)

// natsBus is the push protocol's bus on the NATS broker. Client publishes
// go out with headers that say who sent them; a client can set no header
// of its own.
type natsBus struct{ *pubsub.Broker }

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
