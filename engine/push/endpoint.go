package push

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/gobwas/ws"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/engine"
)

// The subprotocols that name the protocol's formats. A browser page may
// ask for one with new WebSocket(url, "herald.raw"); the engine selects it
// when the server lists it (engine.Config.Subprotocols). herald.json is the
// default envelope, herald.raw the bare payloads of ?format=raw; any other
// name the server lists gets the envelope too.
const (
	SubprotocolJSON = "herald.json"
	SubprotocolRaw  = "herald.raw"
)

// endpoint serves the protocol on the engine's connections.
type endpoint struct{ h *Hub }

// A client names its channels in the query of its upgrade request:
//
//	ws://host/ws?channel=prices.AAPL&channel=prices.MSFT&format=raw
//
// The query is walked where it lies in the request, without allocating
// unless a value is percent-encoded: every connection of a reconnect storm
// passes here. It is checked whole before anything is subscribed, so that
// a client learns at once, with a 400, that its URL is wrong.

// Upgrade checks who the client is and what it may read, subscribes the
// socket to its URL's channels, and holds the 101 until the bus has
// confirmed every one of them. A token is verified off the loop first, so
// that an RSA check or a JWKS fetch holds up nobody else.
func (e endpoint) Upgrade(c *engine.Conn, req *codec.Request) error {
	h := e.h
	rawQuery := req.RawQuery
	if c.Stream() {
		var err error
		if rawQuery, err = streamQuery(req); err != nil {
			return err
		}
	}
	raw, token, err := h.checkQuery(rawQuery)
	if err != nil {
		return err
	}
	raw = raw || c.Subprotocol() == SubprotocolRaw
	l := h.loopFor(c)
	if h.verify != nil {
		if token == "" {
			token = bearer(req.Header("Authorization"))
		}
		if token != "" {
			// The token and query outlive the request's buffer.
			j := &job{kind: jobUpgrade, conn: c, loop: l, token: strings.Clone(token), query: bytes.Clone(rawQuery), raw: raw}
			if !h.submit(j) {
				return errVerifyBusy
			}
			l.verifying[c] = j
			return engine.ErrAcceptLater
		}
		if len(h.publicChannels.patterns) == 0 && len(h.publicPublish.patterns) == 0 {
			h.counters.authFailed("missing")
			return unauthorized("token required")
		}
	}
	if err := h.checkChannels(rawQuery, nil); err != nil {
		return err
	}
	if raw {
		c.Session = &session{raw: true}
	}
	pending, err := l.subscribeQuery(c, rawQuery)
	if err != nil {
		l.forget(c) // refused: the engine forgets the socket, so must the hub
		return err
	}
	l.resumeQuery(c, rawQuery)
	if pending == 0 {
		return nil
	}
	l.accepting[c] = &acceptWait{pending: pending}
	return engine.ErrAcceptLater
}

var errVerifyBusy = &codec.HTTPError{Status: 503, Reason: "too many logins in progress, retry shortly", Header: "Retry-After: 1\r\n"}

// bearer is the token of an "Authorization: Bearer TOKEN" header, or "".
func bearer(header []byte) string {
	const scheme = "bearer "
	if len(header) <= len(scheme) || !strings.EqualFold(string(header[:len(scheme)]), scheme) {
		return ""
	}
	return strings.TrimSpace(string(header[len(scheme):]))
}

// subscribeQuery subscribes c to the channels of an upgrade's query,
// checked already, and returns how many wait for the bus.
func (l *loopState) subscribeQuery(c *engine.Conn, rawQuery []byte) (pending int, err error) {
	for q := (query{rest: rawQuery}); q.next(); {
		if q.key != "channel" {
			continue
		}
		added, waits, err := l.subscribe(c, q.value)
		if err != nil {
			return 0, &codec.HTTPError{Status: 400, Reason: errorMessage(err)}
		}
		if added && waits {
			t := l.topic[q.value]
			l.waiting[t] = append(l.waiting[t], waiter{conn: c, upgrade: true})
			pending++
		}
	}
	return pending, nil
}

// checkQuery validates the query of an upgrade and reports whether it asks
// for bare payloads.
func (h *Hub) checkQuery(rawQuery []byte) (raw bool, token string, err error) {
	channels := 0
	q := query{rest: rawQuery}
	for q.next() {
		switch q.key {
		case "token":
			token = q.value
		case "channel":
			channels++
			if err := h.validate(q.value); err != nil {
				return false, "", &codec.HTTPError{Status: 400, Reason: "channel " + strconv.Quote(q.value) + ": " + errorMessage(err)}
			}
		case "since":
			if _, err := strconv.ParseUint(q.value, 10, 64); err != nil {
				return false, "", &codec.HTTPError{Status: 400, Reason: "since must be a stream sequence, a whole number"}
			}
		case "last":
			switch q.value {
			case "1", "true", "0", "false", "":
			default:
				return false, "", &codec.HTTPError{Status: 400, Reason: `last must be "1" or "0"`}
			}
		case "format":
			switch q.value {
			case "json", "":
				raw = false
			case "raw":
				raw = true
			default:
				return false, "", &codec.HTTPError{Status: 400, Reason: `format must be "json" or "raw"`}
			}
		}
	}
	if q.err != nil {
		return false, "", &codec.HTTPError{Status: 400, Reason: "malformed query string"}
	}
	if channels > h.maxChannels {
		return false, "", &codec.HTTPError{Status: 400, Reason: "at most " + strconv.Itoa(h.maxChannels) + " channels per connection"}
	}
	return raw, token, nil
}

// Closed drops the socket from every topic and held upgrade.
func (e endpoint) Closed(c *engine.Conn) { e.h.loopFor(c).forget(c) }

func (l *loopState) forget(c *engine.Conn) {
	delete(l.accepting, c)
	delete(l.verifying, c)
	l.expiries.remove(c)
	l.unsubscribeAll(c)
	c.Session = nil
}

// Opened greets a JSON-format socket with who it is, before anything else:
//
//	{"op":"connected","client":"ID","user":"alice","expires":1767225600}
//
// user and expires are "" and 0 for an anonymous client.
func (e endpoint) Opened(c *engine.Conn) {
	l := e.h.loopFor(c)
	// The URL's replays are asked for once the 101 is out, and come back
	// through the inbox, after the greeting.
	l.startReplays(c)
	if isRaw(c) {
		return
	}
	var user string
	var expires int64
	if id := identityOf(c); id != nil {
		user, expires = id.user, id.expires
	}
	b := append(l.replyBuf[:0], `{"op":"connected","client":"`...)
	b = e.h.appendClientID(b, c)
	b = append(b, `","user":`...)
	b = appendJSONString(b, []byte(user))
	b = append(b, `,"expires":`...)
	b = strconv.AppendInt(b, expires, 10)
	l.replyBuf = append(b, '}')
	l.sendReply(c, l.replyBuf)
}

// Tick closes the loop's connections whose token expired.
func (e endpoint) Tick(el *engine.Loop) {
	if l := e.h.loops[el.Index()].Load(); l != nil {
		l.expire()
	}
}

// command is a client's in-band request, a JSON text message:
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
	Data    json.RawMessage `json:"data"`  // publish
	Token   string          `json:"token"` // refresh
	// subscribe on a history channel: replay what was stored after Since
	// (of the stream with Epoch), or the latest message of each subject.
	Since *uint64 `json:"since"`
	Epoch string  `json:"epoch"`
	Last  bool    `json:"last"`
}

// Message handles a command from the client.
func (e endpoint) Message(c *engine.Conn, op ws.OpCode, payload []byte) {
	h := e.h
	l := h.loopFor(c)
	var cmd command
	if op == ws.OpText && string(payload) == "ping" {
		// The keep-alive of many tutorials' clients.
		c.SendFrame(ws.OpText, pong)
		return
	}
	if op != ws.OpText {
		l.replyError(c, nil, badRequest("commands are JSON text messages"))
		return
	}
	if err := json.Unmarshal(payload, &cmd); err != nil {
		l.replyError(c, nil, badRequest("command is not a JSON object"))
		return
	}
	switch cmd.Op {
	case "subscribe":
		if err := h.validate(cmd.Channel); err != nil {
			l.replyError(c, cmd.ID, err)
			return
		}
		if err := h.checkSubscribe(identityOf(c), cmd.Channel); err != nil {
			l.replyError(c, cmd.ID, err)
			return
		}
		_, waits, err := l.subscribe(c, cmd.Channel)
		if err != nil {
			l.replyError(c, cmd.ID, err)
			return
		}
		// The id outlives the payload it points into.
		w := waiter{conn: c, id: append([]byte(nil), cmd.ID...)}
		if _, hist := h.historyOf(cmd.Channel); hist && (cmd.Since != nil || cmd.Last) {
			req := HistoryRequest{Epoch: cmd.Epoch, Snapshot: cmd.Last && cmd.Since == nil}
			if cmd.Since != nil {
				req.Resume, req.Since = true, *cmd.Since
			}
			// Live messages are held from now on; the replay is asked
			// for once the channel is live, and acked after it.
			w.resume = l.addResume(c, subAt(c, findSub(c, cmd.Channel)).topic, w.id, req)
		}
		switch {
		case waits:
			t := l.topic[cmd.Channel]
			l.waiting[t] = append(l.waiting[t], w)
		case w.resume != nil:
			l.startReplay(c, w.resume)
		default:
			l.replySubscribed(c, cmd.ID, cmd.Channel)
		}
	case "unsubscribe":
		l.unsubscribe(c, cmd.Channel)
		l.replyAck(c, cmd.ID, nil)
	case "ping":
		l.reply(c, "pong", cmd.ID)
	case "publish":
		l.publish(c, &cmd)
	case "refresh":
		l.refresh(c, &cmd)
	default:
		l.replyError(c, cmd.ID, badRequest(`unknown op: want "subscribe", "unsubscribe", "publish", "refresh" or "ping"`))
	}
}

var pong = []byte("pong")

func badRequest(msg string) error {
	return &channel.Error{Code: channel.CodeBadRequest, Message: msg}
}

// replyAck answers a subscribe or unsubscribe: an ack, or err.
func (l *loopState) replyAck(c *engine.Conn, id []byte, err error) {
	if err != nil {
		l.replyError(c, id, err)
		return
	}
	l.reply(c, "ack", id)
}

// reply sends {"op":op,"id":id}.
func (l *loopState) reply(c *engine.Conn, op string, id []byte) {
	b := append(l.replyBuf[:0], `{"op":`...)
	b = strconv.AppendQuote(b, op)
	b = appendID(b, id)
	l.replyBuf = append(b, '}')
	l.sendReply(c, l.replyBuf)
}

// replyError sends {"op":"error","id":id,"code":code,"message":message}.
func (l *loopState) replyError(c *engine.Conn, id []byte, err error) {
	code := channel.CodeInvalidChannel
	var ce *channel.Error
	if errors.As(err, &ce) {
		code = ce.Code
	}
	b := append(l.replyBuf[:0], `{"op":"error"`...)
	b = appendID(b, id)
	b = append(b, `,"code":`...)
	b = strconv.AppendQuote(b, code)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, []byte(errorMessage(err)))
	l.replyBuf = append(b, '}')
	l.sendReply(c, l.replyBuf)
}

func appendID(b []byte, id []byte) []byte {
	if len(id) == 0 {
		return b
	}
	return append(append(b, `,"id":`...), id...)
}

// errorMessage is the human part of an in-band error.
func errorMessage(err error) string {
	var ce *channel.Error
	if errors.As(err, &ce) {
		return ce.Message
	}
	return err.Error()
}
