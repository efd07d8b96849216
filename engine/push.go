package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"unsafe"

	"github.com/gobwas/ws"

	"github.com/herald-ws/herald/codec"
)

// PushPath is the WebSocket endpoint clients subscribe on, when the server
// has Channels.
const PushPath = "/ws"

// A client names its channels in the query of its upgrade request:
//
//	ws://host/ws?channel=prices.AAPL&channel=prices.MSFT&format=raw
//
// The query is walked twice where it lies in the request: once to validate
// it before the upgrade, so a client learns at once that its URL is wrong,
// and once after, to subscribe. Neither walk allocates unless a value is
// percent-encoded: every connection of a reconnect storm passes here.

// checkPushQuery validates the query of an upgrade to PushPath and reports
// whether it asks for bare payloads.
func (s *Server) checkPushQuery(rawQuery []byte) (raw bool, err error) {
	channels := 0
	q := query{rest: rawQuery}
	for q.next() {
		switch q.key {
		case "channel":
			channels++
			if err := s.cfg.Channels.Validate(q.value); err != nil {
				return false, &codec.HTTPError{Status: 400, Reason: "channel " + strconv.Quote(q.value) + ": " + errorMessage(err)}
			}
		case "format":
			switch q.value {
			case "json", "":
				raw = false
			case "raw":
				raw = true
			default:
				return false, &codec.HTTPError{Status: 400, Reason: `format must be "json" or "raw"`}
			}
		}
	}
	if q.err != nil {
		return false, &codec.HTTPError{Status: 400, Reason: "malformed query string"}
	}
	if channels > s.cfg.MaxChannels {
		return false, &codec.HTTPError{Status: 400, Reason: "at most " + strconv.Itoa(s.cfg.MaxChannels) + " channels per connection"}
	}
	return raw, nil
}

// subscribeQuery subscribes a connection being upgraded to the channels
// its query names, which checkPushQuery has validated. It returns the
// subscriptions the bus refused, for the client to hear about in band once
// it is upgraded.
func (c *conn) subscribeQuery(rawQuery []byte) (refused []error) {
	for q := (query{rest: rawQuery}); q.next(); {
		if q.key == "channel" {
			if err := c.subscribe(q.value); err != nil {
				refused = append(refused, err)
			}
		}
	}
	return refused
}

// query walks the key=value pairs of a URL query, unescaped. key and value
// are views of the query's bytes, valid while they are, unless unescaping
// had to copy them.
type query struct {
	rest       []byte
	key, value string
	err        error // the first malformed escape; next stops there
}

func (q *query) next() bool {
	for len(q.rest) > 0 && q.err == nil {
		var pair []byte
		pair, q.rest, _ = bytes.Cut(q.rest, []byte("&"))
		if len(pair) == 0 {
			continue
		}
		k, v, _ := bytes.Cut(pair, []byte("="))
		if q.key, q.err = unescapeQuery(k); q.err != nil {
			return false
		}
		if q.value, q.err = unescapeQuery(v); q.err != nil {
			return false
		}
		return true
	}
	return false
}

// unescapeQuery returns b as a string, decoding %XX and '+' when present.
// Without escapes it returns a view of b, not a copy.
func unescapeQuery(b []byte) (string, error) {
	if bytes.IndexAny(b, "%+") < 0 {
		return unsafe.String(unsafe.SliceData(b), len(b)), nil
	}
	return url.QueryUnescape(string(b))
}

// command is a client's in-band request on PushPath, a JSON text message:
//
//	{"op":"subscribe","channel":"game.42","id":"7"}
//	{"op":"unsubscribe","channel":"game.42","id":"8"}
//	{"op":"ping"}
//
// The id, any JSON value, is echoed in the answer so a client can match it.
type command struct {
	Op      string          `json:"op"`
	Channel string          `json:"channel"`
	ID      json.RawMessage `json:"id"`
}

// pushMessage handles a message a client sent on PushPath.
func (c *conn) pushMessage(op ws.OpCode, payload []byte) {
	var cmd command
	if op != ws.OpText {
		c.replyError(nil, "bad_request", "commands are JSON text messages")
		return
	}
	if err := json.Unmarshal(payload, &cmd); err != nil {
		c.replyError(nil, "bad_request", "command is not a JSON object")
		return
	}
	switch cmd.Op {
	case "subscribe":
		if err := c.loop.s.cfg.Channels.Validate(cmd.Channel); err != nil {
			c.replyChannelError(cmd.ID, err)
			return
		}
		if err := c.subscribe(cmd.Channel); err != nil {
			c.replyChannelError(cmd.ID, err)
			return
		}
		c.reply("ack", cmd.ID)
	case "unsubscribe":
		c.unsubscribe(cmd.Channel)
		c.reply("ack", cmd.ID)
	case "ping":
		c.reply("pong", cmd.ID)
	default:
		c.replyError(cmd.ID, "bad_request", `unknown op: want "subscribe", "unsubscribe" or "ping"`)
	}
}

// reply sends {"op":op,"id":id}.
func (c *conn) reply(op string, id json.RawMessage) {
	l := c.loop
	b := append(l.reply[:0], `{"op":`...)
	b = strconv.AppendQuote(b, op)
	b = appendID(b, id)
	l.reply = append(b, '}')
	c.writeFrame(ws.OpText, l.reply)
}

func (c *conn) replyChannelError(id json.RawMessage, err error) {
	code := "invalid_channel"
	var ce *ChannelError
	if errors.As(err, &ce) {
		code = ce.Code
	}
	c.replyError(id, code, errorMessage(err))
}

// replyError sends {"op":"error","id":id,"code":code,"message":message}.
func (c *conn) replyError(id json.RawMessage, code, message string) {
	l := c.loop
	b := append(l.reply[:0], `{"op":"error"`...)
	b = appendID(b, id)
	b = append(b, `,"code":`...)
	b = strconv.AppendQuote(b, code)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, []byte(message))
	l.reply = append(b, '}')
	c.writeFrame(ws.OpText, l.reply)
}

func appendID(b []byte, id json.RawMessage) []byte {
	if len(id) == 0 {
		return b
	}
	return append(append(b, `,"id":`...), id...)
}

// errorMessage is the human part of a channel error.
func errorMessage(err error) string {
	var ce *ChannelError
	if errors.As(err, &ce) {
		return ce.Message
	}
	return err.Error()
}
