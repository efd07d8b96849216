package push

import (
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/engine"
)

// History is where the hub finds the stored messages of history channels
// (JetStream streams, in the herald binary). Both methods are called on
// event loops and must not block.
type History interface {
	// Epoch reports whether pattern is a history channel and, if so, the
	// epoch of its stream: a name of the stream's incarnation, so that a
	// sequence from a stream since recreated is never taken for one of
	// this stream.
	Epoch(pattern string) (epoch string, ok bool)
	// Replay reads what req asks for off the loops and calls done exactly
	// once, from any goroutine, with the result.
	Replay(req HistoryRequest, done func(HistoryResult))
}

// HistoryRequest asks for a channel's stored messages: with Resume, every
// one after Since (a sequence of the stream with epoch Epoch, if given);
// with Snapshot, the latest of every subject the pattern matches.
// Channel is the id the hub subscribed Pattern under (Bus.Subscribe), live
// when the request is made: the history may keep what that subscription
// carries to answer the next resumes without a read.
type HistoryRequest struct {
	Channel  uint64
	Pattern  string
	Resume   bool
	Since    uint64
	Epoch    string
	Snapshot bool
}

// HistoryResult answers a HistoryRequest. Msgs are in stream order and
// shared read-only. Every message on the channel up to sequence Through is
// in Msgs or was not asked for, so live messages up to Through are
// dropped at the seam and later ones follow the replay. Recovered is false
// when some asked-for messages are no longer stored.
type HistoryResult struct {
	Msgs      []StoredMessage
	Through   uint64
	Recovered bool
	Epoch     string
	Err       error
}

// StoredMessage is one message of a stream.
type StoredMessage struct {
	Subject string
	Data    []byte
	Seq     uint64
}

// maxHeld bounds the live bytes held for one resume while its replay is
// read: a socket that far behind is cut like a slow consumer.
const maxHeld = 4 << 20

// resume is a subscription of a socket that waits for, or has just had,
// its replay: a subscribe with since or last. Live messages of the
// channel are held until the replay is written, and after it those the
// replay already had (sequence up to through) are dropped, until a newer
// one passes: then the seam is behind and the resume goes. Only sockets
// that resume have one, and only for that while.
type resume struct {
	topic   *topic
	id      []byte // the in-band subscribe's id, copied; nil for a URL channel
	req     HistoryRequest
	started bool   // its replay was asked for
	done    bool   // the replay was written
	passed  bool   // a live message newer than the replay went by: the seam is behind
	through uint64 // done: live messages up to this are the replay's
	held    []byte // live frames held until the replay is written
	heldAt  []heldFrame
}

// heldFrame is one held frame: its sequence and where it ends in held.
type heldFrame struct {
	seq uint64
	end int
}

// historyOf reports whether pattern is a history channel, and its epoch.
func (h *Hub) historyOf(pattern string) (string, bool) {
	if h.history == nil {
		return "", false
	}
	return h.history.Epoch(pattern)
}

// resumeFor is s's resume of the channel pattern, or nil.
func (s *session) resumeFor(pattern string) *resume {
	for _, r := range s.resumes {
		if r.topic.pattern() == pattern {
			return r
		}
	}
	return nil
}

// dropResume forgets r.
func (s *session) dropResume(r *resume) {
	s.resumes = slices.DeleteFunc(s.resumes, func(x *resume) bool { return x == r })
	if len(s.resumes) == 0 {
		s.resumes = nil
	}
}

// passSeam notes that r's seam is behind. Resumes are kept until every
// one of the socket's is past its seam, so that overlapping resumes (a
// pattern and a subject it covers) can tell what the other replayed.
func (s *session) passSeam(r *resume) {
	r.passed = true
	for _, x := range s.resumes {
		if !x.passed {
			return
		}
	}
	s.resumes = nil
}

// coveredByOther reports whether another resume of the socket replayed m
// already: a pattern and a subject it covers, both resumed, get each
// message once.
func (s *session) coveredByOther(r *resume, m *StoredMessage) bool {
	for _, x := range s.resumes {
		if x != r && x.done && x.req.Resume && x.req.Since < m.Seq && m.Seq <= x.through &&
			channel.Matches(x.topic.pattern(), m.Subject) {
			return true
		}
	}
	return false
}

// resuming reports whether c has a resume in progress; its deliveries
// then take the per-socket path (deliverMulti).
func resuming(c *engine.Conn) bool {
	s, ok := c.Session.(*session)
	return ok && len(s.resumes) > 0
}

// addResume registers a resume of c's subscription to t: from now on its
// live messages are held. A resume of the same channel already there is
// replaced (its replay is no longer wanted).
func (l *loopState) addResume(c *engine.Conn, t *topic, id []byte, req HistoryRequest) *resume {
	s := sessionOf(c)
	if old := s.resumeFor(t.pattern()); old != nil {
		l.releaseHeld(c, s, old)
		s.dropResume(old)
	}
	req.Pattern, req.Channel = t.pattern(), t.channel.id
	r := &resume{topic: t, id: id, req: req}
	s.resumes = append(s.resumes, r)
	return r
}

// releaseHeld writes what r held, as it came.
func (l *loopState) releaseHeld(c *engine.Conn, s *session, r *resume) {
	if len(r.held) > 0 && c.Open() {
		c.Send(r.held)
		l.stats.deliveries.Add(uint64(len(r.heldAt)))
		l.stats.bytesOut.Add(uint64(len(r.held)))
	}
	r.held, r.heldAt = nil, nil
}

// hold keeps a live frame of r's channel until its replay is written. It
// reports false when the socket is too far behind and was closed.
func (l *loopState) hold(c *engine.Conn, r *resume, frame []byte, seq uint64) bool {
	if len(r.held)+len(frame) > maxHeld {
		c.Close(ws.StatusPolicyViolation, "slow consumer: too many live messages while the history was read")
		return false
	}
	r.held = append(r.held, frame...)
	r.heldAt = append(r.heldAt, heldFrame{seq: seq, end: len(r.held)})
	return true
}

// startReplay asks for r's replay; the answer comes back through the
// loop's inbox.
func (l *loopState) startReplay(c *engine.Conn, r *resume) {
	if r.started {
		return
	}
	r.started = true
	j := &job{kind: jobReplay, conn: c, loop: l, resume: r}
	l.hub.history.Replay(r.req, func(res HistoryResult) {
		j.replay = res
		l.post(event{job: j})
	})
}

// startReplays asks for the replays of c's resumes not started: the URL's
// channels with since or last, once the 101 is out.
func (l *loopState) startReplays(c *engine.Conn) {
	if s, ok := c.Session.(*session); ok {
		for _, r := range s.resumes {
			l.startReplay(c, r)
		}
	}
}

// replayed writes a replay to its socket, in one write: the stored
// messages the socket takes through this subscription, the ack, then the
// live messages held meanwhile that the replay did not have.
func (l *loopState) replayed(j *job) {
	c, r, res := j.conn, j.resume, j.replay
	s, ok := c.Session.(*session)
	if !ok || !slices.Contains(s.resumes, r) || !c.Open() {
		return // unsubscribed or closed meanwhile
	}
	if res.Err != nil {
		if !s.raw || r.id != nil { // as the ack below: on a raw socket's URL channel it would read as data
			l.replyError(c, r.id, &channel.Error{Code: channel.CodeUnavailable, Message: "cannot read the channel's history: " + res.Err.Error()})
		}
		l.releaseHeld(c, s, r)
		s.dropResume(r)
		return
	}
	pattern := r.topic.pattern()
	buf := l.replayBuf[:0]
	n := 0
	for i := range res.Msgs {
		m := &res.Msgs[i]
		if r.req.Resume && m.Seq <= r.req.Since && res.Recovered {
			continue
		}
		if s.coveredByOther(r, m) {
			continue
		}
		buf = l.appendStored(buf, formatOf(c), res.Epoch, *m)
		n++
	}
	if !s.raw || r.id != nil {
		// A raw socket's URL channels get no ack: it would read as data.
		l.replyBuf = l.appendAck(l.replyBuf[:0], r.id, pattern, &res.Recovered, res.Epoch, true)
		buf = appendReply(buf, c, l.replyBuf)
	}
	newer := false
	start := 0
	for _, f := range r.heldAt {
		if f.seq == 0 || f.seq > res.Through {
			buf = append(buf, r.held[start:f.end]...)
			newer = true
			n++
		}
		start = f.end
	}
	l.replayBuf = buf[:0]
	r.held, r.heldAt = nil, nil
	r.done, r.through = true, res.Through
	if newer {
		s.passSeam(r) // everything from now on is newer
	}
	if c.Send(buf) {
		l.stats.deliveries.Add(uint64(n))
		l.stats.bytesOut.Add(uint64(len(buf)))
	}
}

// appendStored appends a stored message as a frame (or event) in the
// socket's format; epoch is its stream's, for an event's id.
func (l *loopState) appendStored(dst []byte, f format, epoch string, m StoredMessage) []byte {
	if f == formatRaw {
		op := ws.OpText
		if !utf8.Valid(m.Data) {
			op = ws.OpBinary
		}
		return codec.AppendFrame(dst, op, m.Data)
	}
	var at int
	l.envBuf, at = appendEnvelopeFrame(l.envBuf[:0], m.Subject, m.Data, m.Seq)
	if f == formatSSE {
		return appendEvent(dst, l.envBuf[envelopeHeadroom:], epoch, m.Seq)
	}
	return append(dst, l.envBuf[at:]...)
}

// appendAck appends the ack of a subscribe to pattern: on a history
// channel it names the channel and the stream's epoch, and, for a
// subscribe with since or last, whether nothing was lost:
//
//	{"op":"ack","id":"7","channel":"chat.room1","recovered":true,"epoch":"1767225600000000000"}
func (l *loopState) appendAck(b, id []byte, pattern string, recovered *bool, epoch string, history bool) []byte {
	b = append(b, `{"op":"ack"`...)
	b = appendID(b, id)
	if history {
		b = append(b, `,"channel":`...)
		b = appendJSONString(b, []byte(pattern))
		if recovered != nil {
			b = append(b, `,"recovered":`...)
			b = strconv.AppendBool(b, *recovered)
		}
		b = append(b, `,"epoch":`...)
		b = appendJSONString(b, []byte(epoch))
	}
	return append(b, '}')
}

// replyUnreplayed acks r's subscribe, unsubscribed before its replay
// came: recovered false, since the client got none of it.
func (l *loopState) replyUnreplayed(c *engine.Conn, r *resume) {
	epoch, _ := l.hub.historyOf(r.topic.pattern())
	recovered := false
	l.replyBuf = l.appendAck(l.replyBuf[:0], r.id, r.topic.pattern(), &recovered, epoch, true)
	l.sendReply(c, l.replyBuf)
}

// replySubscribed acks a subscribe to pattern that asked for no replay.
func (l *loopState) replySubscribed(c *engine.Conn, id []byte, pattern string) {
	epoch, ok := l.hub.historyOf(pattern)
	if !ok {
		l.reply(c, "ack", id)
		return
	}
	l.replyBuf = l.appendAck(l.replyBuf[:0], id, pattern, nil, epoch, true)
	l.sendReply(c, l.replyBuf)
}

// urlResume reads since, epoch and last of an upgrade's query (checked
// already): the replay its history channels ask for, if any.
func urlResume(rawQuery []byte) (HistoryRequest, bool) {
	var req HistoryRequest
	for q := (query{rest: rawQuery}); q.next(); {
		switch q.key {
		case "since":
			req.Since, _ = strconv.ParseUint(q.value, 10, 64)
			req.Resume = true
		case "epoch":
			req.Epoch = q.value
		case "last":
			req.Snapshot = q.value == "1" || q.value == "true"
		}
	}
	if req.Resume {
		req.Snapshot = false
	}
	return req, req.Resume || req.Snapshot
}

// resumeQuery registers the resumes of an upgrade's history channels when
// its query has since or last; their replays start once the 101 is out.
func (l *loopState) resumeQuery(c *engine.Conn, rawQuery []byte) {
	req, ok := urlResume(rawQuery)
	if !ok || l.hub.history == nil {
		return
	}
	for q := (query{rest: rawQuery}); q.next(); {
		if q.key != "channel" {
			continue
		}
		if _, hist := l.hub.historyOf(q.value); !hist {
			continue
		}
		if k := findSub(c, q.value); k >= 0 {
			l.addResume(c, subAt(c, k).topic, nil, req)
		}
	}
}
