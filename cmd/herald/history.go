package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"time"

	"github.com/herald-ws/herald/engine/push"
	"github.com/herald-ws/herald/pubsub/history"
)

// historyFlags are serve's flags for channel history.
type historyFlags struct {
	fs          *flag.FlagSet
	subjects    *string
	stream      *string
	size        *int
	ttl         *time.Duration
	dataDir     *string
	manage      *bool
	maxReplay   *int
	maxSnapshot *int
}

func addHistoryFlags(fs *flag.FlagSet) *historyFlags {
	return &historyFlags{
		fs:          fs,
		subjects:    fs.String("history", "", "comma-separated channel `patterns` whose messages are kept in a JetStream stream, e.g. 'chat.>,prices.>':\ntheir envelopes carry \"seq\", a subscribe with since replays what was missed and one with last the latest message of each subject;\non the embedded NATS this runs JetStream with files under --data-dir and manages stream --history-stream"),
		stream:      fs.String("history-stream", history.DefaultStream, "`name` of the stream --history manages; with --nats and no --history, comma-separated names of the app's existing streams to serve history from (never changed without --history-manage)"),
		size:        fs.Int("history-size", history.DefaultSize, "messages kept per channel (subject) in the stream --history manages, and in each channel's in-memory tail"),
		ttl:         fs.Duration("history-ttl", history.DefaultTTL, "how long the stream --history manages keeps a message"),
		dataDir:     fs.String("data-dir", "./herald-data", "`directory` of the embedded NATS's JetStream files (with --history); a restart with the same one still serves the history"),
		manage:      fs.Bool("history-manage", false, "let Herald add what an existing stream lacks (republishing to _HERALD.<stream>.>) instead of failing at startup with the nats stream edit line to run"),
		maxReplay:   fs.Int("max-replay", history.DefaultMaxReplay, "most stored messages one resume (since) replays; past it the ack says recovered:false"),
		maxSnapshot: fs.Int("max-snapshot", history.DefaultMaxSnapshot, "most subjects one snapshot (last) sends"),
	}
}

// set reports whether the flag was given.
func (f *historyFlags) set(name string) bool {
	given := false
	f.fs.Visit(func(fl *flag.Flag) { given = given || fl.Name == name })
	return given
}

// config is the history configuration the flags ask for, nil for none.
// external says Herald joins an existing NATS (--nats).
func (f *historyFlags) config(external bool) (*history.Config, error) {
	subjects := splitList(*f.subjects)
	switch {
	case *f.size <= 0:
		return nil, fmt.Errorf("--history-size %d: it must be at least 1", *f.size)
	case *f.ttl <= 0:
		return nil, fmt.Errorf("--history-ttl %v: it must be positive", *f.ttl)
	case *f.maxReplay <= 0:
		return nil, fmt.Errorf("--max-replay %d: it must be at least 1", *f.maxReplay)
	case *f.maxSnapshot <= 0:
		return nil, fmt.Errorf("--max-snapshot %d: it must be at least 1", *f.maxSnapshot)
	}
	cfg := &history.Config{
		Size: *f.size, TTL: *f.ttl, Manage: *f.manage,
		MaxReplay: *f.maxReplay, MaxSnapshot: *f.maxSnapshot,
	}
	switch {
	case len(subjects) > 0:
		cfg.Subjects, cfg.Stream = subjects, *f.stream
	case external && f.set("history-stream"):
		cfg.Streams = splitList(*f.stream)
	case f.set("history-stream"):
		return nil, errors.New("--history-stream without --history names existing streams of an external NATS: give --nats too, or --history for the embedded one")
	default:
		return nil, nil
	}
	return cfg, nil
}

// storeDir is the embedded NATS's JetStream directory.
func (f *historyFlags) storeDir() string { return filepath.Clean(*f.dataDir) }

// openHistory sets up the history streams on the broker's connection.
func (h *herald) openHistory(cfg history.Config) error {
	cfg.Drops = func() uint64 {
		st := h.broker.Stats()
		return st.Disconnects + st.Dropped
	}
	cfg.Subscribed = h.broker.Subscribed
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := history.Open(ctx, h.broker.Conn(), cfg)
	if err != nil {
		return err
	}
	h.history = store
	h.broker.SetRepublished(store.Prefixes())
	return nil
}

// Republished passes a message a stream republished to the hub, through
// the history (its tails, and the repair of gaps NATS left).
func (h *herald) Republished(subject string, data []byte, subs []uint64, seq, last uint64) {
	if h.history == nil {
		h.hub.Message(subject, data, subs)
		return
	}
	h.history.Republished(subject, data, subs, seq, last, h.hub.MessageSeq)
}

// hubHistory is the push protocol's view of the history store.
type hubHistory struct{ s *history.Store }

func (hh hubHistory) Epoch(pattern string) (string, bool) {
	st := hh.s.For(pattern)
	if st == nil {
		return "", false
	}
	return st.Epoch(), true
}

func (hh hubHistory) Replay(req push.HistoryRequest, done func(push.HistoryResult)) {
	hh.s.Replay(history.Request{
		Channel: req.Channel, Pattern: req.Pattern, Resume: req.Resume, Since: req.Since, Epoch: req.Epoch, Snapshot: req.Snapshot,
	}, func(res history.Result) {
		out := push.HistoryResult{Through: res.Through, Recovered: res.Recovered, Epoch: res.Epoch, Err: res.Err}
		if len(res.Msgs) > 0 {
			out.Msgs = make([]push.StoredMessage, len(res.Msgs))
			for i, m := range res.Msgs {
				out.Msgs[i] = push.StoredMessage{Subject: m.Subject, Data: m.Data, Seq: m.Seq}
			}
		}
		done(out)
	})
}
