package pubsub

import (
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
)

// Republished messages. A JetStream stream with a RePublish config sends
// every message it stores, once stored, as a core NATS message to a
// destination subject with headers that give its place in the stream:
// Nats-Sequence (its stream sequence) and Nats-Last-Sequence (the sequence
// of the previous message on the same subject, for gap detection). Herald
// subscribes to those destinations with plain core NATS, like any other
// subject; the broker only has to recognise them (their subject begins
// with one of the prefixes given to SetRepublished), take the prefix off so
// that the Handler sees the subject the message was published on, and
// hand the two sequences over.

// The headers nats-server puts on a republished message (server/stream.go).
const (
	HeaderSequence     = "Nats-Sequence"
	HeaderLastSequence = "Nats-Last-Sequence"
)

// SequencedHandler is a Handler that also takes republished messages. A
// Handler without this method gets them through Message, under their
// destination subject.
type SequencedHandler interface {
	Handler
	// Republished is a message a stream stored at seq and republished:
	// subject is the subject it was published on (the prefix taken off),
	// last the sequence of the message before it on the same subject (0
	// for the first). Like Message, it runs on the dispatcher goroutine,
	// and data and subs are valid only during the call.
	Republished(subject string, data []byte, subs []uint64, seq, last uint64)
}

// SetRepublished names the subject prefixes (each ending in '.', such as
// "_HERALD.CHAT.") under which streams republish their messages. Call it
// before subscribing to any subject under them: the dispatcher reads it on
// every message, without a lock.
//
// Each wide pattern (Config.Wide) then also covers its republished
// subjects: W under prefix P is the wide pattern P+W, so that channels
// under W that are history channels share one NATS subscription too.
func (b *Broker) SetRepublished(prefixes []string) {
	p := append([]string(nil), prefixes...)
	b.republished.Store(&p)
	var groups []*wideGroup
	for i, prefix := range p[:min(len(p), maxRepublished)] {
		for _, w := range b.widePatterns {
			groups = append(groups, &wideGroup{pattern: prefix + w, under: uint8(i + 1), strip: len(prefix),
				literal: make(map[string]*subscription)})
		}
	}
	if len(groups) == 0 {
		return
	}
	b.mu.Lock()
	b.queue = append(b.queue, op{wide: groups})
	b.mu.Unlock()
	b.kick()
}

// maxRepublished is how many prefixes SubscribeUnder knows by index (a
// subscription keeps the index in a byte).
const maxRepublished = 255

// SubscribeUnder is Subscribe for the subject prefix+pattern, where prefix
// is one SetRepublished named. Under a wide pattern that covers pattern,
// the subscription keeps pattern as it is, without a copy of the whole
// subject: a personal history channel then costs what a plain one does.
func (b *Broker) SubscribeUnder(id uint64, prefix, pattern string) {
	if p := b.republished.Load(); p != nil {
		for i, known := range (*p)[:min(len(*p), maxRepublished)] {
			if known == prefix {
				b.subscribe(id, pattern, uint8(i+1))
				return
			}
		}
	}
	b.Subscribe(id, prefix+pattern)
}

// Conn is the broker's NATS connection, for JetStream calls (see
// pubsub/history). nats.go can hold its lock for seconds while it dials
// during a reconnect: never call it from an event loop.
func (b *Broker) Conn() *nats.Conn { return b.nc }

// deliver hands the copies ids of m to the Handler: a republished message
// through SequencedHandler.Republished, anything else through Message.
func (b *Broker) deliver(m *nats.Msg, ids []uint64) {
	if sh := b.sequenced; sh != nil && m.Header != nil {
		if p := b.republished.Load(); p != nil {
			for _, prefix := range *p {
				if !strings.HasPrefix(m.Subject, prefix) {
					continue
				}
				seq, err := strconv.ParseUint(m.Header.Get(HeaderSequence), 10, 64)
				if err != nil || seq == 0 {
					break // not what a stream sends: an ordinary message
				}
				last, _ := strconv.ParseUint(m.Header.Get(HeaderLastSequence), 10, 64)
				sh.Republished(m.Subject[len(prefix):], m.Data, ids, seq, last)
				return
			}
		}
	}
	b.handler.Message(m.Subject, m.Data, ids)
}
