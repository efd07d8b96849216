package history

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// job is one Replay call waiting for a reader.
type job struct {
	req  Request
	done func(Result)
}

// flightKey identifies reads of the stream that give the same answer, so
// that a reconnect storm resuming one channel from one position reads the
// stream once.
type flightKey struct {
	pattern   string
	since     uint64
	snapshot  bool
	recovered bool // false: the request's epoch was not the stream's
}

// flight is a read under way and the requests waiting for it.
type flight struct {
	waiters []func(Result)
}

// Replay answers req off the caller's goroutine: done is called exactly
// once, from a reader goroutine (or, with ErrBusy when too many wait, from
// the caller's own). It never blocks, so event loops may call it; done
// must not block either (post to the loop).
func (s *Store) Replay(req Request, done func(Result)) {
	select {
	case s.jobs <- &job{req: req, done: done}:
	default:
		done(Result{Err: ErrBusy})
	}
}

// reader is one of the goroutines that answer replays.
func (s *Store) reader() {
	defer s.workers.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case j := <-s.jobs:
			s.serve(j)
		}
	}
}

// serve answers one request. A snapshot reads the stream. A resume first
// needs the stream's state as of no earlier than its arrival (a purge, a
// trim by age or the stream recreated must not be hidden by the tail): the
// resumes that arrive while the stream's info is being fetched are parked
// and served together by the next fetch, so a reconnect storm costs a
// handful of info calls, not one per client.
func (s *Store) serve(j *job) {
	s.replays.Add(1)
	st := s.For(j.req.Pattern)
	if st == nil {
		j.done(Result{Err: fmt.Errorf("history: %s is not a history channel", j.req.Pattern)})
		return
	}
	if !j.req.Resume {
		s.read(j, st, 0, true)
		return
	}
	st.infoMu.Lock()
	if st.infoRunning {
		st.parked = append(st.parked, j)
		st.infoMu.Unlock()
		return
	}
	st.infoRunning = true
	st.infoMu.Unlock()
	batch := []*job{j}
	for {
		s.infos.Add(1)
		ctx, cancel := context.WithTimeout(s.ctx, readTimeout)
		info, err := st.handle.Info(ctx)
		cancel()
		if err == nil && st.setCreated(info.Created) {
			s.recreated(st)
		}
		for _, j := range batch {
			if err != nil {
				j.done(Result{Err: fmt.Errorf("history: stream %s: %w", st.name, err)})
				continue
			}
			s.resume(j, st, &info.State)
		}
		st.infoMu.Lock()
		batch, st.parked = st.parked, nil
		if len(batch) == 0 {
			st.infoRunning = false
			st.infoMu.Unlock()
			return
		}
		st.infoMu.Unlock()
	}
}

// resume answers a resume given the stream's state: from the channel's
// tail when it covers since and the stream still has everything after it,
// else by a read.
func (s *Store) resume(j *job, st *Stream, state *jetstream.StreamState) {
	req := j.req
	since, recovered := req.Since, true
	if req.Epoch != "" && req.Epoch != st.Epoch() {
		// A position in another incarnation of the stream: everything the
		// stream has now is news, and something may be lost.
		since, recovered = 0, false
	}
	s.mu.Lock()
	t := s.tails[req.Channel]
	if recovered && since <= state.LastSeq && since+1 >= state.FirstSeq &&
		t != nil && t.usable(since, s.cfg.Drops()) {
		msgs := t.after(since, s.cfg.MaxReplay)
		through := max(since, t.through)
		s.mu.Unlock()
		s.tailHits.Add(1)
		if len(msgs) > s.cfg.MaxReplay {
			msgs, recovered = msgs[:s.cfg.MaxReplay], false
		}
		j.done(Result{Msgs: msgs, Through: through, Recovered: recovered, Epoch: st.Epoch()})
		return
	}
	s.mu.Unlock()
	s.read(j, st, since, recovered)
}

// read answers j by reading the stream, sharing the read with identical
// requests under way.
func (s *Store) read(j *job, st *Stream, since uint64, recovered bool) {
	req := j.req
	key := flightKey{pattern: req.Pattern, since: since, snapshot: !req.Resume, recovered: recovered}
	s.mu.Lock()
	if f := s.flights[key]; f != nil {
		f.waiters = append(f.waiters, j.done)
		s.mu.Unlock()
		return
	}
	f := &flight{waiters: []func(Result){j.done}}
	s.flights[key] = f
	// A resume's tail, made now if the channel has none yet, takes every
	// live message from here on: with the read, which starts after this,
	// it has every message after since.
	var t *tail
	if req.Resume {
		t = s.tailFor(req.Channel, st)
	}
	drops := s.cfg.Drops()
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(s.ctx, readTimeout)
	var res Result
	var complete bool
	if req.Resume {
		res, complete = s.readResume(ctx, st, req.Pattern, since)
	} else {
		res = s.readSnapshot(ctx, st, req.Pattern)
	}
	cancel()
	res.Recovered = res.Recovered && recovered

	s.mu.Lock()
	delete(s.flights, key)
	if complete && t != nil && s.tails[req.Channel] == t && drops == s.cfg.Drops() {
		t.merge(since, res.Through, res.Msgs, drops)
	}
	waiters := f.waiters
	s.mu.Unlock()
	for _, done := range waiters {
		done(res)
	}
}

// readResume reads every message on pattern after since, up to the
// stream's last message when it starts. complete says the result holds
// all of them (none cut by MaxReplay), so that a tail may take it.
func (s *Store) readResume(ctx context.Context, st *Stream, pattern string, since uint64) (Result, bool) {
	s.reads.Add(1)
	info, err := st.handle.Info(ctx, jetstream.WithSubjectFilter(pattern))
	if err != nil {
		return Result{Err: fmt.Errorf("history: stream %s: %w", st.name, err)}, false
	}
	recovered := true
	if st.setCreated(info.Created) {
		s.recreated(st)
		since, recovered = 0, false
	}
	state := info.State
	res := Result{Through: state.LastSeq, Epoch: st.Epoch()}
	if since > state.LastSeq {
		// Beyond the stream: not a position this stream gave out.
		return res, false
	}
	if since+1 < state.FirstSeq {
		recovered = false // something after since is gone (age, size, a purge)
	}
	msgs, cut, err := s.readRange(ctx, st, pattern, since+1, state.LastSeq, false, s.cfg.MaxReplay)
	if err != nil {
		return Result{Err: err}, false
	}
	res.Msgs = msgs
	if cut {
		recovered = false
	}
	if st.perSubject > 0 && recovered {
		// A subject at its limit whose every stored message is after since
		// may have lost one before them.
		replayed := make(map[string]uint64)
		for _, m := range msgs {
			replayed[m.Subject]++
		}
		for subj, n := range state.Subjects {
			if n >= uint64(st.perSubject) && replayed[subj] == n {
				recovered = false
				break
			}
		}
	}
	res.Recovered = recovered
	return res, !cut
}

// readSnapshot reads the latest message of every subject pattern matches,
// as of the stream's last message when it starts.
func (s *Store) readSnapshot(ctx context.Context, st *Stream, pattern string) Result {
	s.reads.Add(1)
	info, err := st.handle.Info(ctx)
	if err != nil {
		return Result{Err: fmt.Errorf("history: stream %s: %w", st.name, err)}
	}
	if st.setCreated(info.Created) {
		s.recreated(st)
	}
	through := info.State.LastSeq
	msgs, cut, err := s.readRange(ctx, st, pattern, 0, through, true, s.cfg.MaxSnapshot)
	if err != nil {
		return Result{Err: err}
	}
	return Result{Msgs: msgs, Through: through, Recovered: !cut, Epoch: st.Epoch()}
}

// recreated forgets what was known of a stream that was deleted and made
// again: its sequences started over.
func (s *Store) recreated(st *Stream) {
	s.log.Warn("history: stream was recreated; its sequences start again", "stream", st.name, "epoch", st.Epoch())
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tails {
		if t.stream == st {
			t.valid = false
			t.start, t.n = 0, 0
			clear(t.lastSeen)
		}
	}
}

// readRange reads the messages on filter from sequence start through
// through (with lastPer, the latest of each subject instead), at most max;
// cut says there were more. It uses an ephemeral consumer that acks
// nothing and is deleted after.
func (s *Store) readRange(ctx context.Context, st *Stream, filter string, start, through uint64, lastPer bool, max int) ([]Msg, bool, error) {
	cfg := jetstream.ConsumerConfig{
		FilterSubject:     filter,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute, // the server's cleanup if the delete below is lost
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       startAt(start),
	}
	if lastPer {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverLastPerSubjectPolicy, 0
	}
	cons, err := st.handle.CreateConsumer(ctx, cfg)
	if err != nil {
		return nil, false, fmt.Errorf("history: read %s from stream %s: %w", filter, st.name, err)
	}
	info := cons.CachedInfo()
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = st.handle.DeleteConsumer(dctx, info.Name)
		cancel()
	}()
	var out []Msg
	pending := info.NumPending
	for pending > 0 && len(out) <= max {
		n := int(min(pending, fetchBatch, uint64(max+1-len(out))))
		wait := time.Until(deadlineOf(ctx))
		if wait <= 0 {
			return nil, false, fmt.Errorf("history: read %s from stream %s: %w", filter, st.name, context.DeadlineExceeded)
		}
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(wait))
		if err != nil {
			return nil, false, fmt.Errorf("history: read %s from stream %s: %w", filter, st.name, err)
		}
		got, past := uint64(0), false
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			if md.Sequence.Stream > through {
				past = true
				continue
			}
			out = append(out, Msg{Subject: m.Subject(), Data: m.Data(), Seq: md.Sequence.Stream})
		}
		if err := batch.Error(); err != nil {
			return nil, false, fmt.Errorf("history: read %s from stream %s: %w", filter, st.name, err)
		}
		if got == 0 || past {
			break
		}
		pending -= min(got, pending)
	}
	if len(out) > max {
		return out[:max], true, nil
	}
	return out, false, nil
}

// deadlineOf is ctx's deadline, or readTimeout from now.
func deadlineOf(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(readTimeout)
}

// startAt is a consumer's first sequence: JetStream's sequences start at 1.
func startAt(seq uint64) uint64 {
	if seq == 0 {
		return 1
	}
	return seq
}
