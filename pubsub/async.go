package pubsub

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/herald-ws/herald/codec/channel"
)

// ErrPublishQueueFull is PublishAsync's refusal when Config.PublishQueue
// messages (or Config.PublishQueueBytes bytes) already wait for the
// publisher: NATS is slower than the publishers, or nats.go is stuck
// reconnecting. Nothing was queued; the caller may tell its client.
var ErrPublishQueueFull = errors.New("pubsub: publish queue full")

// pubReq is one accepted PublishAsync message.
type pubReq struct {
	msg  *nats.Msg
	size int
	done func(error)
}

// PublishAsync hands a message to NATS without blocking: it validates
// subject, copies subject, header and data (callers pass views of network
// buffers), queues the message for the publisher goroutine and returns. The
// publisher hands it to nats.go (PublishMsg) and then calls done with the
// outcome: nil when nats.go took it (sent, or buffered in its reconnect
// buffer while it reconnects), else the reason with the subject. done is
// called exactly once for every message PublishAsync accepted (returned nil
// for), with ErrClosed for those Close found still queued. done runs on the
// publisher goroutine, one message after another: it must not block (post
// to the caller's loop). done may be nil.
//
// It returns, and then never calls done, a *channel.Error for a subject that
// is not a concrete channel or that lies in a space reserved to NATS
// (channel.Reserved: replies and system APIs no client may write to),
// ErrPublishQueueFull when the queue is full, or ErrClosed once Close has
// begun. It never calls nats.go and takes one short lock, so event loops
// may call it.
//
// A nil done error does not say the server accepted the message: a refusal
// (permissions, a payload over the server's limit) comes later from the
// server and is logged (rate-limited), as for Publish. header needs a
// server with headers (any nats-server since 2.2).
func (b *Broker) PublishAsync(subject string, header nats.Header, data []byte, done func(error)) error {
	if err := channel.Validate(subject, false); err != nil {
		return fmt.Errorf("pubsub: publish: %w", err)
	}
	if channel.Reserved(subject) {
		return fmt.Errorf("pubsub: publish: %w", &channel.Error{Code: channel.CodeForbidden, Message: "channels whose first token starts with $ or _ are reserved"})
	}
	size := len(subject) + len(data) + headerSize(header)
	b.pubMu.Lock()
	switch {
	case b.pubClosed:
		b.pubMu.Unlock()
		return ErrClosed
	case b.pubCount >= b.pubMax || (b.pubCount > 0 && b.pubBytes+size > b.pubMaxBytes):
		// A message larger than the byte bound on its own still goes when
		// nothing else waits: the server's max_payload is the real limit.
		b.pubMu.Unlock()
		return ErrPublishQueueFull
	}
	b.pubCount++
	b.pubBytes += size
	b.pubMu.Unlock()
	// Copied outside the lock; counted first so that the bound holds.
	m := &nats.Msg{Subject: strings.Clone(subject), Header: cloneHeader(header), Data: append([]byte(nil), data...)}
	b.pubMu.Lock()
	closed := b.pubClosed
	if !closed {
		b.pubQueue = append(b.pubQueue, pubReq{msg: m, size: size, done: done})
	} else {
		b.pubCount--
		b.pubBytes -= size
	}
	b.pubMu.Unlock()
	if closed {
		// Close began while the message was being copied: the publisher may
		// already have answered the queue, so refuse it here.
		return ErrClosed
	}
	select {
	case b.pubWake <- struct{}{}:
	default:
	}
	return nil
}

// publish is the publisher goroutine: it takes the whole queue at once and
// hands each message to nats.go in order. Every nats.go call that can wait
// for nats.go's lock (a reconnect holds it while it dials) happens here,
// never in PublishAsync's caller.
func (b *Broker) publish() {
	defer close(b.pubDone)
	var batch []pubReq
	for {
		select {
		case <-b.pubWake:
		case <-b.stop:
		}
		b.pubMu.Lock()
		batch, b.pubQueue = b.pubQueue, batch[:0]
		closed := b.pubClosed
		b.pubMu.Unlock()
		for i := range batch {
			r := &batch[i]
			var err error
			if b.stopping() {
				err = ErrClosed
			} else if err = b.nc.PublishMsg(r.msg); err != nil {
				if errors.Is(err, nats.ErrConnectionClosed) {
					err = ErrClosed // only Close closes the connection
				} else {
					err = fmt.Errorf("pubsub: publish to %s: %w", r.msg.Subject, err)
				}
			}
			if r.done != nil {
				r.done(err)
			}
			// Counted until done returns: a publisher held up in nats.go or
			// in a done callback fills the queue.
			b.pubMu.Lock()
			b.pubCount--
			b.pubBytes -= r.size
			b.pubMu.Unlock()
			*r = pubReq{} // let the message go
		}
		if closed {
			// pubClosed was set before this batch was taken: nothing can be
			// queued after it.
			return
		}
	}
}

// headerSize is the bytes of a header's keys and values.
func headerSize(h nats.Header) int {
	n := 0
	for k, vs := range h {
		n += len(k)
		for _, v := range vs {
			n += len(v)
		}
	}
	return n
}

// cloneHeader copies h, keys and values included (a caller may pass
// strings that are views of a network buffer), with one slice for all the
// values.
func cloneHeader(h nats.Header) nats.Header {
	if h == nil {
		return nil
	}
	nv := 0
	for _, vs := range h {
		nv += len(vs)
	}
	values := make([]string, nv)
	out := make(nats.Header, len(h))
	for k, vs := range h {
		for i, v := range vs {
			values[i] = strings.Clone(v)
		}
		n := len(vs)
		out[strings.Clone(k)] = values[:n:n]
		values = values[n:]
	}
	return out
}
