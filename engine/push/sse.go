package push

import (
	"bytes"
	"strconv"

	"github.com/gobwas/ws"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/engine"
)

// The protocol over an event stream (Server-Sent Events, the engine's
// Conn.Stream), the fallback for networks that break WebSocket:
//
//	GET /sse?channel=chat.room1&since=41
//
// takes the query a WebSocket upgrade takes (channel, since, epoch, last,
// token) with the same permissions and limits. Every message of a channel
// is one event whose data is the envelope a WebSocket client gets:
//
//	id: 1767225600000000000:42
//	data: {"channel":"chat.room1","seq":42,"data":{"text":"hi"}}
//
// The id of a message of a history channel is its stream's epoch and its
// sequence, EPOCH:SEQ; other messages have none, so that an EventSource
// keeps the last one. A reconnecting EventSource sends it back as
// Last-Event-ID, which stands for since=SEQ&epoch=EPOCH on every history
// channel of the URL (one stream numbers all its subjects with one
// sequence): the stream resumes with nothing lost, or says it could not
// with recovered false. It wins over the URL's since, which is where the
// first connection starts.
//
// What is not a channel's message (the greeting, acks, errors) is an event
// of type "herald", which EventSource.onmessage does not see:
//
//	event: herald
//	data: {"op":"ack","channel":"chat.room1","recovered":true,"epoch":"1767225600000000000"}
//
// A stream carries no commands: its client sends nothing after its
// request, so it neither subscribes in band nor publishes.

// format is how a socket wants its messages.
type format uint8

const (
	formatJSON format = iota // envelopes in text frames
	formatRaw                // bare payloads in frames
	formatSSE                // envelopes as event-stream events
)

// formatOf is c's format.
func formatOf(c *engine.Conn) format {
	switch {
	case c.Stream():
		return formatSSE
	case isRaw(c):
		return formatRaw
	}
	return formatJSON
}

// appendEvent appends a channel's message as an event: its id on a
// history channel (seq > 0), then the envelope as data lines. JSON has a
// line break only as whitespace between tokens, and an EventSource joins
// data lines with "\n", so splitting the envelope at its line breaks keeps
// it the same JSON.
func appendEvent(dst []byte, envelope []byte, epoch string, seq uint64) []byte {
	if seq > 0 {
		dst = append(dst, "id: "...)
		dst = append(dst, epoch...)
		dst = append(dst, ':')
		dst = strconv.AppendUint(dst, seq, 10)
		dst = append(dst, '\n')
	}
	for {
		dst = append(dst, "data: "...)
		i := bytes.IndexAny(envelope, "\r\n")
		if i < 0 {
			dst = append(dst, envelope...)
			break
		}
		dst = append(dst, envelope[:i]...)
		dst = append(dst, '\n')
		if envelope[i] == '\r' && i+1 < len(envelope) && envelope[i+1] == '\n' {
			i++
		}
		envelope = envelope[i+1:]
	}
	return append(dst, "\n\n"...)
}

// appendReply appends a protocol message (JSON on one line, as the hub
// writes them) in c's framing: a text frame, or a "herald" event.
func appendReply(dst []byte, c *engine.Conn, msg []byte) []byte {
	if !c.Stream() {
		return codec.AppendFrame(dst, ws.OpText, msg)
	}
	dst = append(dst, "event: herald\ndata: "...)
	dst = append(dst, msg...)
	return append(dst, "\n\n"...)
}

// sendReply writes a protocol message to c in its framing.
func (l *loopState) sendReply(c *engine.Conn, msg []byte) {
	if !c.Stream() {
		c.SendFrame(ws.OpText, msg)
		return
	}
	l.sseBuf = appendReply(l.sseBuf[:0], c, msg)
	c.Send(l.sseBuf)
}

// streamQuery is the query a stream's upgrade is served with: the URL's,
// with the resume its Last-Event-ID header asks for appended, so that it
// overrides the URL's since. It refuses what a stream cannot do.
func streamQuery(req *codec.Request) ([]byte, error) {
	for q := (query{rest: req.RawQuery}); q.next(); {
		if q.key == "format" && q.value != "" && q.value != "json" {
			return nil, &codec.HTTPError{Status: 400, Reason: "an event stream carries envelopes: format must be \"json\" or absent"}
		}
	}
	last := req.Header("Last-Event-ID")
	if len(last) == 0 {
		return req.RawQuery, nil
	}
	epoch, seq, ok := parseEventID(last)
	if !ok {
		return nil, &codec.HTTPError{Status: 400, Reason: "Last-Event-ID must be an id this server sent, EPOCH:SEQ"}
	}
	q := make([]byte, 0, len(req.RawQuery)+len(epoch)+32)
	q = append(q, req.RawQuery...)
	if len(q) > 0 {
		q = append(q, '&')
	}
	q = append(q, "since="...)
	q = strconv.AppendUint(q, seq, 10)
	if len(epoch) > 0 {
		q = append(q, "&epoch="...)
		q = append(q, epoch...)
	}
	return q, nil
}

// parseEventID reads an event id, EPOCH:SEQ or SEQ. The epoch is digits
// (a stream's creation time), which need no escaping in a query.
func parseEventID(id []byte) (epoch []byte, seq uint64, ok bool) {
	if i := bytes.LastIndexByte(id, ':'); i >= 0 {
		epoch, id = id[:i], id[i+1:]
		if len(epoch) == 0 || len(epoch) > 20 {
			return nil, 0, false
		}
		for _, b := range epoch {
			if b < '0' || b > '9' {
				return nil, 0, false
			}
		}
	}
	seq, err := strconv.ParseUint(string(id), 10, 64)
	if err != nil || len(id) == 0 || id[0] == '+' {
		return nil, 0, false
	}
	return epoch, seq, true
}
