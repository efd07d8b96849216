package main

import (
	"errors"

	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/pubsub"
)

// natsChannels gives the engine its channels from NATS: names are NATS
// subjects, and the engine's first and last subscriber to a channel become
// a NATS subscription and its end.
type natsChannels struct {
	*pubsub.Broker
	wildcards bool
}

// Validate runs for every channel of every connection of a reconnect
// storm, so it allocates nothing unless the channel is refused.
func (n natsChannels) Validate(ch string) error {
	err := pubsub.ValidateChannel(ch, n.wildcards)
	if err == nil {
		return nil
	}
	var ce *pubsub.ChannelError
	if errors.As(err, &ce) {
		return &engine.ChannelError{Code: ce.Code, Message: ce.Message}
	}
	return err
}

func (natsChannels) Matches(pattern, subject string) bool {
	return pubsub.Matches(pattern, subject)
}
