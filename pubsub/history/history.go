// Package history serves channel history from JetStream streams: it sets
// up (or checks) the streams whose republished messages give every live
// message its stream sequence, keeps an in-memory tail of each history
// channel, repairs from the stream what Herald's own subscription missed,
// and answers resumes (every stored message after a sequence) and
// snapshots (the latest message of every subject of a pattern) on a small
// fixed pool of goroutines, never on the caller's.
//
// The stream is the history: the app's own stream, or the one Herald
// manages for --history, with no second copy. Its RePublish config sends
// every stored message, after storing it, to a destination under a '_'
// prefix that clients cannot subscribe to; Herald subscribes there with
// core NATS instead of to the raw subjects, so that each message it passes
// on carries Nats-Sequence and Nats-Last-Sequence.
package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herald-ws/herald/codec/channel"
)

// Defaults for Config.
const (
	DefaultStream      = "HERALD"
	DefaultSize        = 100
	DefaultTTL         = 24 * time.Hour
	DefaultMaxReplay   = 1000
	DefaultMaxSnapshot = 10000
	DefaultReaders     = 4
	// DefaultPrefix is the first token of the republish destinations
	// Herald sets up: _HERALD.<stream>.<subject>. Subjects starting with
	// '_' are reserved: no client may subscribe to them.
	DefaultPrefix = "_HERALD"
)

const (
	// queueSize bounds the requests waiting for a reader: a reconnect
	// storm of 19,000 clients fits; past it a request is answered at once
	// with ErrBusy.
	queueSize = 1 << 16
	// readTimeout bounds one read of the stream (its info, the consumer
	// and every fetch).
	readTimeout = 10 * time.Second
	// repairTimeout bounds the read that fills a gap in what NATS
	// delivered; the dispatcher waits for it.
	repairTimeout = 2 * time.Second
	// getTimeout bounds one get of a repair, which is then asked again
	// within repairTimeout.
	getTimeout = 400 * time.Millisecond
	fetchBatch = 512
)

// ErrBusy is the error of a replay when too many wait for a reader.
var ErrBusy = errors.New("history: too many replays in progress")

// Config configures Open.
type Config struct {
	// Subjects, when set, make Herald manage stream Stream for them:
	// created, or updated to this configuration.
	Subjects []string
	// Stream is the managed stream's name (with Subjects); default
	// DefaultStream.
	Stream string
	// Streams are the app's existing streams to serve as they are
	// (without Subjects). Herald never changes one silently: a stream
	// that does not republish is an error saying what to run, unless
	// Manage.
	Streams []string
	// Manage lets Herald add what an existing stream lacks (its
	// republish config).
	Manage bool
	// Size is the managed stream's messages kept per subject, and the
	// length of each channel's in-memory tail; TTL how long messages are
	// kept.
	Size int
	TTL  time.Duration
	// Tail is the length of each channel's in-memory tail; default Size.
	Tail int
	// Memory keeps the managed stream in memory instead of files (tests).
	Memory bool
	// MaxReplay bounds the messages of one resume; past it the answer is
	// not recovered. MaxSnapshot bounds the subjects of one snapshot.
	MaxReplay   int
	MaxSnapshot int
	// Readers is how many goroutines read the stream for replays.
	Readers int
	// Drops counts what NATS may have lost on Herald's connection so far
	// (reconnects, pending-limit drops): a tail filled while it changed is
	// not trusted to be complete. nil counts nothing.
	Drops func() uint64
	// Subscribed reports whether the bus still has subscription id
	// (pubsub.Broker.Subscribed): a channel's tail is made only when it
	// needs one, and only for a subscription that has not ended, so that
	// a message or a read under way when it ended leaves no tail behind.
	// nil takes every id as subscribed (for a caller whose ids never
	// end).
	Subscribed func(id uint64) bool
	Logger     *slog.Logger
}

// Msg is a stored message.
type Msg struct {
	Subject string
	Data    []byte
	Seq     uint64
}

// Request asks for a channel's history: with Resume, every stored
// message on Pattern after Since (of the stream with epoch Epoch, if
// given); with Snapshot, the latest message of every subject it matches.
// Channel is the id of the live bus subscription to Pattern (0: none): a
// resume is answered from its tail when that covers Since, and a read
// for it makes the tail complete, so that the next resumes need none.
type Request struct {
	Channel  uint64
	Pattern  string
	Resume   bool
	Since    uint64
	Epoch    string
	Snapshot bool
}

// Result answers a Request. Msgs are in stream order and shared: read
// them, do not change them. Every message on the channel with a sequence
// up to Through is in Msgs or was not asked for: live messages up to
// Through are the replay's, later ones come after it. Recovered is false
// when some asked-for messages are not there: trimmed, the stream
// recreated (another Epoch), Since beyond the stream, or past MaxReplay.
type Result struct {
	Msgs      []Msg
	Through   uint64
	Recovered bool
	Epoch     string
	Err       error
}

// Stats are the store's counters.
type Stats struct {
	Reads    uint64 // reads of a stream's messages (a consumer and its fetches) for replays and repairs
	Infos    uint64 // calls for a stream's state before resumes, shared by the resumes that wait meanwhile
	TailHits uint64 // resumes answered from a channel's in-memory tail
	Replays  uint64 // requests answered
	Repaired uint64 // messages fetched from a stream to fill a gap NATS left
	Gaps     uint64 // gaps found in what NATS delivered
	Tails    int    // channels holding a tail now: those that had a message or a resume, never an idle one
}

// Stream is one stream serving history.
type Stream struct {
	name       string
	subjects   []string
	prefix     string // the republish destination prefix, ending in '.'
	perSubject int64  // MaxMsgsPerSubject; <= 0: no limit
	handle     jetstream.Stream
	epoch      atomic.Pointer[string]
	created    atomic.Int64 // unix nanos of the stream's creation

	// The resumes waiting for the stream's info (see Store.serve).
	infoMu      sync.Mutex
	infoRunning bool
	parked      []*job
}

// Name is the stream's name.
func (st *Stream) Name() string { return st.name }

// Prefix is where the stream republishes: its destination less ">".
func (st *Stream) Prefix() string { return st.prefix }

// Epoch names the stream's incarnation: its creation time in unix
// nanoseconds. A sequence from another epoch means nothing here.
func (st *Stream) Epoch() string { return *st.epoch.Load() }

func (st *Stream) setCreated(t time.Time) bool {
	n := t.UnixNano()
	if st.created.Swap(n) == n {
		return false
	}
	e := strconv.FormatInt(n, 10)
	st.epoch.Store(&e)
	return true
}

// Store is the history of the configured streams.
type Store struct {
	js      jetstream.JetStream
	streams []*Stream
	cfg     Config
	log     *slog.Logger

	mu      sync.Mutex
	tails   map[uint64]*tail // by bus subscription id; only channels that had a message or a resume
	flights map[flightKey]*flight

	jobs    chan *job
	ctx     context.Context
	cancel  context.CancelFunc
	workers sync.WaitGroup

	reads, infos, tailHits, replays, repaired, gaps atomic.Uint64
}

// Open sets up or checks the streams of cfg on nc and starts the readers.
// It makes JetStream API calls and waits for them: call it at startup.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Store, error) {
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.Size <= 0 {
		cfg.Size = DefaultSize
	}
	if cfg.Tail <= 0 {
		cfg.Tail = cfg.Size
	}
	if cfg.TTL < 0 {
		return nil, fmt.Errorf("history: ttl %v is negative", cfg.TTL)
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.MaxReplay <= 0 {
		cfg.MaxReplay = DefaultMaxReplay
	}
	if cfg.MaxSnapshot <= 0 {
		cfg.MaxSnapshot = DefaultMaxSnapshot
	}
	if cfg.Readers <= 0 {
		cfg.Readers = DefaultReaders
	}
	if cfg.Drops == nil {
		cfg.Drops = func() uint64 { return 0 }
	}
	if cfg.Subscribed == nil {
		cfg.Subscribed = func(uint64) bool { return true }
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	s := &Store{
		js: js, cfg: cfg, log: log,
		tails:   make(map[uint64]*tail),
		flights: make(map[flightKey]*flight),
		jobs:    make(chan *job, queueSize),
	}
	if len(cfg.Subjects) > 0 {
		st, err := s.manage(ctx)
		if err != nil {
			return nil, err
		}
		s.streams = append(s.streams, st)
	}
	for _, name := range cfg.Streams {
		st, err := s.existing(ctx, name)
		if err != nil {
			return nil, err
		}
		s.streams = append(s.streams, st)
	}
	if len(s.streams) == 0 {
		return nil, errors.New("history: no stream: give subjects or stream names")
	}
	for _, st := range s.streams {
		log.Info("history: serving stream", "stream", st.name, "subjects", strings.Join(st.subjects, ","),
			"republish", st.prefix+">", "epoch", st.Epoch(), "per_subject", st.perSubject)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.workers.Add(cfg.Readers)
	for range cfg.Readers {
		go s.reader()
	}
	return s, nil
}

// Close stops the readers; requests still queued are not answered.
func (s *Store) Close() {
	s.cancel()
	s.workers.Wait()
}

// managedConfig is the configuration of the stream Herald manages.
func (s *Store) managedConfig() jetstream.StreamConfig {
	storage := jetstream.FileStorage
	if s.cfg.Memory {
		storage = jetstream.MemoryStorage
	}
	return jetstream.StreamConfig{
		Name:              s.cfg.Stream,
		Subjects:          s.cfg.Subjects,
		Storage:           storage,
		MaxMsgsPerSubject: int64(s.cfg.Size),
		MaxAge:            s.cfg.TTL,
		Discard:           jetstream.DiscardOld,
		AllowDirect:       true,
		RePublish:         &jetstream.RePublish{Source: ">", Destination: DefaultPrefix + "." + s.cfg.Stream + ".>"},
	}
}

// manage creates or updates the managed stream. On an external NATS, a
// stream of that name that Herald did not set up (it republishes
// elsewhere, or not at all) is the app's: changed only with Manage.
func (s *Store) manage(ctx context.Context) (*Stream, error) {
	want := s.managedConfig()
	for _, subj := range want.Subjects {
		if err := channel.Validate(subj, true); err != nil || channel.Reserved(subj) {
			return nil, fmt.Errorf("history: subject %q cannot hold channel history: it must be a valid channel pattern, not reserved ('$' or '_' first)", subj)
		}
	}
	if cur, err := s.js.Stream(ctx, want.Name); err == nil {
		rp := cur.CachedInfo().Config.RePublish
		if !s.cfg.Manage && (rp == nil || rp.Destination != want.RePublish.Destination) {
			return nil, fmt.Errorf("history: stream %s exists and Herald did not set it up (it does not republish to %s); name it with --history-stream to serve it as it is, or add --history-manage to let Herald reconfigure it", want.Name, want.RePublish.Destination)
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("history: look up stream %s: %w", want.Name, err)
	}
	str, err := s.js.CreateOrUpdateStream(ctx, want)
	if err != nil {
		return nil, fmt.Errorf("history: create or update stream %s for %s: %w", want.Name, strings.Join(want.Subjects, ","), err)
	}
	return s.newStream(str), nil
}

// existing checks an app's stream, and with Manage adds its republish.
func (s *Store) existing(ctx context.Context, name string) (*Stream, error) {
	str, err := s.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("history: stream %s: %w", name, err)
	}
	cfg := str.CachedInfo().Config
	if _, ok := republishPrefix(cfg.RePublish); !ok {
		dest := DefaultPrefix + "." + name + ".>"
		if !s.cfg.Manage {
			return nil, fmt.Errorf("history: stream %s does not republish what it stores to a reserved subject, which Herald needs to learn each message's sequence; run\n  nats stream edit %s --republish-source '>' --republish-destination '%s'\nor start Herald with --history-manage to let it add that", name, name, dest)
		}
		cfg.RePublish = &jetstream.RePublish{Source: ">", Destination: dest}
		cfg.AllowDirect = true
		if str, err = s.js.UpdateStream(ctx, cfg); err != nil {
			return nil, fmt.Errorf("history: add republish to %s for --history-manage: %w", name, err)
		}
		s.log.Info("history: stream now republishes for Herald", "stream", name, "destination", dest)
	}
	return s.newStream(str), nil
}

// republishPrefix is where rp republishes every message, if it does so
// under a reserved subject with the subject kept whole.
func republishPrefix(rp *jetstream.RePublish) (string, bool) {
	if rp == nil || rp.HeadersOnly || (rp.Source != "" && rp.Source != ">") {
		return "", false
	}
	prefix, ok := strings.CutSuffix(rp.Destination, ">")
	if !ok || !strings.HasSuffix(prefix, ".") || !channel.Reserved(prefix+"x") {
		return "", false
	}
	return prefix, true
}

func (s *Store) newStream(str jetstream.Stream) *Stream {
	info := str.CachedInfo()
	prefix, _ := republishPrefix(info.Config.RePublish)
	st := &Stream{
		name:       info.Config.Name,
		subjects:   info.Config.Subjects,
		prefix:     prefix,
		perSubject: info.Config.MaxMsgsPerSubject,
		handle:     str,
	}
	st.setCreated(info.Created)
	return st
}

// Prefixes are the republish prefixes of every stream, for
// pubsub.Broker.SetRepublished.
func (s *Store) Prefixes() []string {
	out := make([]string, len(s.streams))
	for i, st := range s.streams {
		out[i] = st.prefix
	}
	return out
}

// Streams are the streams serving history.
func (s *Store) Streams() []*Stream { return s.streams }

// For returns the stream that holds every subject pattern matches, or nil
// when pattern is not a history channel.
func (s *Store) For(pattern string) *Stream {
	for _, st := range s.streams {
		for _, subj := range st.subjects {
			if channel.Covers(subj, pattern) {
				return st
			}
		}
	}
	return nil
}

// Prefix returns the republish prefix of the stream that holds pattern, or
// "" when pattern is not a history channel.
func (s *Store) Prefix(pattern string) string {
	if st := s.For(pattern); st != nil {
		return st.prefix
	}
	return ""
}

// Subject is what the bus subscribes to for pattern: its republish
// destination on a history channel, pattern itself otherwise.
func (s *Store) Subject(pattern string) string {
	if st := s.For(pattern); st != nil {
		return st.prefix + pattern
	}
	return pattern
}

// Stats reads the counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	tails := len(s.tails)
	s.mu.Unlock()
	return Stats{Tails: tails,
		Reads: s.reads.Load(), Infos: s.infos.Load(), TailHits: s.tailHits.Load(), Replays: s.replays.Load(),
		Repaired: s.repaired.Load(), Gaps: s.gaps.Load(),
	}
}
