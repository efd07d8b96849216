package push

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/push/auth"
)

const (
	// verifyQueue bounds the tokens waiting for a verifier. A reconnect
	// storm past it is answered 503 with Retry-After, which herald.js and
	// most clients back off from, rather than held in memory.
	verifyQueue = 16384
	// verifyTimeout bounds one verification, a JWKS fetch included. The
	// engine's handshake timeout usually answers the client first.
	verifyTimeout = 10 * time.Second
)

// jobKind is what a job was for.
type jobKind uint8

const (
	jobUpgrade jobKind = iota // a token in an upgrade request
	jobRefresh                // {"op":"refresh"}
	jobPublish                // {"op":"publish"}: the bus's answer
	jobReplay                 // a resume or snapshot: the history's answer
)

// job is work done off the loops whose result comes back through the
// loop's inbox: a token to verify, or a publish the bus is taking.
type job struct {
	kind  jobKind
	conn  *engine.Conn
	loop  *loopState
	token string // cleared once verified: not kept longer than needed
	query []byte // jobUpgrade: the request's query, copied
	raw   bool   // jobUpgrade: ?format=raw
	id    []byte // jobRefresh, jobPublish: the command's id, copied

	claims auth.Claims
	err    error

	resume *resume       // jobReplay
	replay HistoryResult // jobReplay: the answer
}

// submit queues a token for the verifiers, or reports that too many wait.
func (h *Hub) submit(j *job) bool {
	select {
	case h.jobs <- j:
		return true
	default:
		return false
	}
}

// verifier is one of the goroutines that verify tokens, so that an RSA
// check or a JWKS fetch never runs on an event loop.
func (h *Hub) verifier() {
	defer h.workers.Done()
	for {
		select {
		case <-h.ctx.Done():
			return
		case j := <-h.jobs:
			ctx, cancel := context.WithTimeout(h.ctx, verifyTimeout)
			j.claims, j.err = h.verify(ctx, j.token)
			cancel()
			j.token = ""
			j.loop.post(event{job: j})
		}
	}
}

// finish applies a job's result on its loop.
func (l *loopState) finish(j *job) {
	switch j.kind {
	case jobUpgrade:
		l.upgradeVerified(j)
	case jobRefresh:
		l.refreshVerified(j)
	case jobPublish:
		l.published(j)
	case jobReplay:
		l.replayed(j)
	}
}

// upgradeVerified continues an upgrade once its token is verified: refused
// with 401, or checked against the channels it asks for and subscribed.
func (l *loopState) upgradeVerified(j *job) {
	c := j.conn
	if l.verifying[c] != j {
		return // closed meanwhile
	}
	delete(l.verifying, c)
	h := l.hub
	if j.err != nil {
		h.counters.authFailed(authReason(j.err))
		c.Refuse(unauthorized(j.err.Error()))
		return
	}
	id := h.identityFor(j.claims)
	if err := h.checkChannels(j.query, id); err != nil {
		c.Refuse(err)
		return
	}
	c.Session = &session{raw: j.raw, id: id}
	l.expiries.add(c)
	pending, err := l.subscribeQuery(c, j.query)
	if err != nil {
		l.forget(c)
		c.Refuse(err)
		return
	}
	l.resumeQuery(c, j.query)
	if pending == 0 {
		c.Accept()
		return
	}
	l.accepting[c] = &acceptWait{pending: pending}
}

// unauthorized is the 401 for reason, which never holds the token.
func unauthorized(reason string) *codec.HTTPError {
	return &codec.HTTPError{
		Status: 401,
		Reason: strings.Map(oneLine, reason),
		Header: "WWW-Authenticate: Bearer realm=\"herald\"\r\n",
	}
}

// oneLine keeps an HTTP reason on its line.
func oneLine(r rune) rune {
	if r == '\r' || r == '\n' {
		return ' '
	}
	return r
}

// authReason is the metrics label of a token refusal.
func authReason(err error) string {
	var ae *auth.Error
	if errors.As(err, &ae) {
		return ae.Reason
	}
	return "invalid"
}

// forbidden is the 403 for a channel in the URL the client may not read.
func forbidden(ch string, err error) *codec.HTTPError {
	return &codec.HTTPError{Status: 403, Reason: "channel " + strconv.Quote(ch) + ": " + errorMessage(err)}
}

// checkChannels checks every channel of an upgrade's query (already
// validated) against what the connection may read.
func (h *Hub) checkChannels(rawQuery []byte, id *identity) error {
	for q := (query{rest: rawQuery}); q.next(); {
		if q.key != "channel" {
			continue
		}
		if err := h.checkSubscribe(id, q.value); err != nil {
			return forbidden(q.value, err)
		}
	}
	return nil
}

// counters are the access-control counters, one atomic per label of a
// fixed set, so that no loop takes a lock to count (a publish flood
// refuses on every loop at once).
type counters struct {
	authFailures   [len(authReasons)]atomic.Uint64
	publishRefused [len(publishCodes)]atomic.Uint64
	published      atomic.Uint64
	expired        atomic.Uint64
}

// authReasons label token refusals: auth's reasons, and the hub's own
// (other_subject: a refresh for another user; invalid: anything else).
var authReasons = [...]string{
	auth.ReasonMissing, auth.ReasonTooLarge, auth.ReasonMalformed, auth.ReasonBadSignature,
	auth.ReasonAlgorithm, auth.ReasonUnknownKey, auth.ReasonExpired, auth.ReasonNotYetValid,
	auth.ReasonIssuer, auth.ReasonAudience, auth.ReasonClaims, "other_subject", "invalid",
}

// publishCodes label publish refusals: the in-band codes a publish can
// get, the last one for any other.
var publishCodes = [...]string{
	channel.CodeForbidden, CodeRateLimited, CodeTooLarge, channel.CodeBadRequest,
	channel.CodeUnavailable, channel.CodeInvalidChannel, "other",
}

// labelIndex is the index of label in labels, or the last one's.
func labelIndex(labels []string, label string) int {
	for i, l := range labels {
		if l == label {
			return i
		}
	}
	return len(labels) - 1
}

func (c *counters) authFailed(reason string) {
	c.authFailures[labelIndex(authReasons[:], reason)].Add(1)
}

func (c *counters) publishRefusal(err error) {
	code := channel.CodeBadRequest
	var ce *channel.Error
	if errors.As(err, &ce) {
		code = ce.Code
	}
	c.publishRefused[labelIndex(publishCodes[:], code)].Add(1)
}

func (c *counters) read(st *Stats) {
	st.AuthFailures = nonZero(authReasons[:], c.authFailures[:])
	st.PublishRefused = nonZero(publishCodes[:], c.publishRefused[:])
	st.Published = c.published.Load()
	st.Expired = c.expired.Load()
}

// nonZero maps the labels whose counter is above zero to their counts.
func nonZero(labels []string, counts []atomic.Uint64) map[string]uint64 {
	m := make(map[string]uint64)
	for i := range counts {
		if n := counts[i].Load(); n > 0 {
			m[labels[i]] = n
		}
	}
	return m
}
