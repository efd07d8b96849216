package engine

import (
	"encoding/json"
	"errors"
	"net/url"
	"strconv"

	"github.com/gobwas/ws"

	"github.com/herald-ws/herald/codec"
)

// PushPath is the WebSocket endpoint clients subscribe on, when the server
// has Channels.
const PushPath = "/ws"

// pushQuery is what a client asked for in the query of its upgrade request:
// ws://host/ws?channel=prices.AAPL&channel=prices.MSFT&format=raw
type pushQuery struct {
	channels []string
	raw      bool
}

// parsePushQuery validates the query of an upgrade to PushPath. Errors are
// answered 400 before the upgrade, so a client learns at once that its URL
// is wrong.
func (s *Server) parsePushQuery(rawQuery []byte) (pushQuery, error) {
	var q pushQuery
	values, err := url.ParseQuery(string(rawQuery))
	if err != nil {
		return q, &codec.HTTPError{Status: 400, Reason: "malformed query string"}
	}
	for key, vs := range values {
		switch key {
		case "channel":
			for _, ch := range vs {
				if err := s.cfg.Channels.Validate(ch); err != nil {
					return q, &codec.HTTPError{Status: 400, Reason: "channel " + strconv.Quote(ch) + ": " + errorMessage(err)}
				}
				q.channels = append(q.channels, ch)
			}
		case "format":
			switch vs[len(vs)-1] {
			case "json", "":
			case "raw":
				q.raw = true
			default:
				return q, &codec.HTTPError{Status: 400, Reason: `format must be "json" or "raw"`}
			}
		}
	}
	if len(q.channels) > s.cfg.MaxChannels {
		return q, &codec.HTTPError{Status: 400, Reason: "at most " + strconv.Itoa(s.cfg.MaxChannels) + " channels per connection"}
	}
	return q, nil
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
