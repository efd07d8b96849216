package main

import (
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/engine/push"
)

// How herald sub comes back after a connection ends: the channels it
// follows, where it is in each one's history, and how long it waits.
//
// On a history channel every envelope carries the message's stream
// sequence, {"channel":"chat.a","seq":1234,"data":...}, and every subscribe
// is acked with the stream's epoch. A reconnect subscribes each channel in
// band with its own position, {"op":"subscribe","channel":"chat.a",
// "since":1234,"epoch":"E"}: a URL's since would apply to all of its
// channels at once, and channels stand at different positions. So the
// reconnect URL keeps the first one's query (token, format, ...) but not its
// channel, since, epoch or last: every channel, from the URL or --channel,
// is subscribed in band.

// subChannel is one channel (a subject or a pattern) that herald sub follows.
type subChannel struct {
	name     string
	snapshot bool // last=1 in the URL: without a position, ask for the latest messages again

	// The position: the highest seq seen on the channel, valid when
	// positioned, and the epoch of the stream that numbered it.
	seq        uint64
	positioned bool
	epoch      string

	// While a subscribe waits for its ack: what it asked for, and the
	// messages it brought (the replay, which comes before the ack).
	waiting   bool
	resuming  bool   // from the position: since and epoch
	asked     string // "since 1234", "the latest messages", or "" for live only
	replayed  int
	replayMax uint64
}

// newSubChannels lists the channels of target's query and then those of
// --channel. since, epoch and last=1 in the query position the query's
// channels, as Herald takes them.
func newSubChannels(target *url.URL, inBand []string) []*subChannel {
	q := target.Query()
	since, sinceErr := strconv.ParseUint(q.Get("since"), 10, 64)
	var chans []*subChannel
	for _, name := range q["channel"] {
		ch := &subChannel{name: name, snapshot: q.Get("last") == "1", epoch: q.Get("epoch")}
		if q.Has("since") && sinceErr == nil {
			ch.seq, ch.positioned = since, true
		}
		chans = append(chans, ch)
	}
	for _, name := range inBand {
		chans = append(chans, &subChannel{name: name})
	}
	return chans
}

// urlAcks reports whether Herald acks the URL's channels, without an id,
// once their replay or snapshot is done: when the URL has since or last.
func urlAcks(target *url.URL) bool {
	q := target.Query()
	return q.Has("since") || q.Get("last") == "1"
}

// reconnectURL is target without its channels and their positions: a
// reconnect subscribes every channel in band.
func reconnectURL(target *url.URL) *url.URL {
	u := *target
	q := u.Query()
	for _, key := range []string{"channel", "since", "epoch", "last"} {
		q.Del(key)
	}
	u.RawQuery = q.Encode()
	return &u
}

// rawFormat reports whether target asks Herald for bare payloads, which
// carry no channel and no seq.
func rawFormat(target *url.URL) bool {
	return target.Query().Get("format") == "raw"
}

// resubscribe is the in-band subscribe of ch after a reconnect: from its
// position if it has one, else the latest messages if the URL asked for
// them, else live messages only.
func (ch *subChannel) resubscribe(id string) subCommand {
	cmd := subCommand{Op: "subscribe", Channel: ch.name, ID: id}
	switch {
	case ch.positioned:
		cmd.Since, cmd.Epoch = &ch.seq, ch.epoch
		ch.asked = "since " + strconv.FormatUint(ch.seq, 10)
	case ch.snapshot:
		cmd.Last = true
		ch.asked = "the latest messages"
	default:
		ch.asked = ""
	}
	ch.waiting, ch.resuming, ch.replayed, ch.replayMax = true, ch.positioned, 0, 0
	return cmd
}

// waitAck notes that ch was subscribed in the URL of the first connection,
// which Herald acks without an id when the URL has since or last.
func (ch *subChannel) waitAck() {
	switch {
	case ch.positioned:
		ch.asked = "since " + strconv.FormatUint(ch.seq, 10)
	case ch.snapshot:
		ch.asked = "the latest messages"
	}
	ch.waiting, ch.resuming, ch.replayed, ch.replayMax = true, ch.positioned, 0, 0
}

// saw moves ch's position to a message it covers; before the ack, the
// message is part of the subscribe's replay.
func (ch *subChannel) saw(seq uint64) {
	if !ch.positioned || seq > ch.seq {
		ch.seq, ch.positioned = seq, true
	}
	if ch.waiting {
		ch.replayed++
		ch.replayMax = max(ch.replayMax, seq)
	}
}

// acked takes the epoch of ch's ack. When a resume is answered with
// another epoch than the one ch's position came from, the stream was
// recreated: its sequences started again, and the position is the replay's
// last message (what the new stream had), or 0, the new stream's start, if
// it had none.
func (ch *subChannel) acked(epoch *string) {
	resumed := ch.waiting && ch.resuming
	ch.waiting = false
	if epoch == nil {
		return
	}
	if resumed && ch.epoch != "" && *epoch != ch.epoch {
		ch.seq, ch.positioned = ch.replayMax, true
	}
	ch.epoch = *epoch
}

// status is the line herald sub prints for ch's ack.
func (ch *subChannel) status(recovered *bool) string {
	line := "subscribed to " + ch.name
	if ch.asked == "" {
		return line
	}
	line += " (" + ch.asked + "): " + plural(ch.replayed, "message") + " replayed"
	if recovered != nil && !*recovered {
		line += "; recovered:false: some messages are lost (no longer stored, or the stream was recreated), refetch what you keep of it"
	}
	return line
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// covering returns the channels that a message on subject reached.
func covering(chans []*subChannel, subject string, into []*subChannel) []*subChannel {
	for _, ch := range chans {
		if ch.name == subject || channel.Matches(ch.name, subject) {
			into = append(into, ch)
		}
	}
	return into
}

// The backoff between reconnects is herald.js's: after the n-th failure in
// a row a random time between 0 and min(max, min*2^(n-1)) (full jitter, so
// that the clients one server restart cuts off do not all come back in the
// same instant), at least what the server asked for with Retry-After, and
// never more than max. A connection that lasted stableAfter was a success:
// the next failure starts the backoff afresh.
const stableAfter = 10 * time.Second

// reconnectDelay is the wait before the reconnect after the n-th failure in
// a row (n >= 1); random is uniform in [0, 1).
func reconnectDelay(n int, minDelay, maxDelay, retryAfter time.Duration, random float64) time.Duration {
	ceiling := maxDelay
	if shift := n - 1; shift < 62 && minDelay <= maxDelay>>shift { // no overflow
		ceiling = minDelay << shift
	}
	d := time.Duration(random * float64(ceiling))
	if retryAfter > d {
		// All the clients turned away at once come back spread over a
		// quarter of the server's wait.
		d = retryAfter + time.Duration(random*float64(retryAfter)/4)
	}
	return min(d, maxDelay)
}

// transientError marks why a connection failed or ended when trying again
// may do better; retryAfter is the server's Retry-After, if any.
type transientError struct {
	err        error
	retryAfter time.Duration
}

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// transient wraps err as worth another attempt.
func transient(err error, retryAfter time.Duration) error {
	return &transientError{err: err, retryAfter: retryAfter}
}

// httpRefusal is an HTTP answer that refused a connection: the WebSocket
// upgrade's or a proxy's CONNECT.
type httpRefusal struct {
	msg        string
	status     int
	retryAfter time.Duration
}

func (e *httpRefusal) Error() string { return e.msg }

// retryAfter reads a Retry-After of seconds; 0 if there is none.
func retryAfter(value string) time.Duration {
	s, err := strconv.Atoi(strings.TrimSpace(value))
	if err != nil || s <= 0 {
		return 0
	}
	return time.Duration(min(s, 3600)) * time.Second
}

// classifyDial marks a failed connection attempt as transient when another
// may do better: the network (refused, reset, timed out: the server may be
// restarting), and HTTP 408, 429 and 5xx (draining, at its connection limit,
// or overloaded). Any other refusal (400 bad URL, 401 bad token, 403
// forbidden, 404 wrong path) would be answered the same way again: it is
// final, so that herald sub never hammers a server that said no.
func classifyDial(err error) error {
	var refusal *httpRefusal
	if errors.As(err, &refusal) {
		if refusal.status == 408 || refusal.status == 429 || refusal.status >= 500 {
			return transient(err, refusal.retryAfter)
		}
		return err
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return transient(err, 0)
	}
	return err
}

// finalCloseCodes are the close codes after which a new connection would be
// closed the same way: a token that expired (herald sub cannot get another),
// a forbidden client, or data the server cannot take.
var finalCloseCodes = map[int]string{
	int(push.CloseTokenExpired):            "; herald sub cannot renew its token: start it again with a fresh one",
	4003:                                   "",
	websocket.CloseProtocolError:           "",
	websocket.CloseUnsupportedData:         "",
	websocket.CloseInvalidFramePayloadData: "",
	websocket.CloseMessageTooBig:           "",
	websocket.CloseMandatoryExtension:      "",
}
