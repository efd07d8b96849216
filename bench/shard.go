package bench

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/codec/deflate"
	"github.com/herald-ws/herald/engine/gnetlog"
)

// shardSpec is one process's share of a run. The parent sends it to a
// child as JSON; an in-process shard gets it directly.
type shardSpec struct {
	Index            int           `json:"index"`
	URL              string        `json:"url"`
	Prefix           string        `json:"prefix"` // channel prefix, run id included
	Channels         int           `json:"channels"`
	Hot              bool          `json:"hot"`
	StayFrom         int           `json:"stay_from,omitempty"`     // run-wide index of the first receiver, 0 for none
	Tokens           []string      `json:"tokens,omitempty"`        // each connection's bearer token, when they have their own
	TokensFollow     bool          `json:"tokens_follow,omitempty"` // a child reads Tokens from its standard input first
	Resume           bool          `json:"resume,omitempty"`        // reconnect with since= the last stream sequence received
	Raw              bool          `json:"raw"`
	Compress         bool          `json:"compress,omitempty"`
	First            int           `json:"first"` // run-wide index of the shard's first connection
	Conns            int           `json:"conns"`
	Sources          []string      `json:"sources,omitempty"` // local addresses to dial from, in turn
	Loops            int           `json:"loops"`
	Dialers          int           `json:"dialers"`
	HandshakeTimeout time.Duration `json:"handshake_timeout"`
	Deadline         time.Time     `json:"deadline"` // a child gives up by itself then
}

// progress is a shard's live counters, read while the run goes.
type progress struct {
	Up           int64  `json:"up"`      // upgraded and open now
	EverUp       int64  `json:"ever_up"` // upgraded at least once
	GaveUp       int64  `json:"gave_up"` // never upgraded and not retried any more
	Failures     int64  `json:"failures"`
	Warm         int64  `json:"warm"`      // received a warm-up message
	Delivered    uint64 `json:"delivered"` // measured messages received, duplicates not counted
	StormArmed   bool   `json:"storm_armed,omitempty"`
	StormDropped int64  `json:"storm_dropped,omitempty"`
	StormUp      int64  `json:"storm_up,omitempty"`
	StormGaveUp  int64  `json:"storm_gave_up,omitempty"`
}

// channelCounts are the messages one channel's connections received.
type channelCounts struct {
	Conns      int64  `json:"conns"` // connections on the channel that upgraded
	Unique     uint64 `json:"unique"`
	Duplicates uint64 `json:"duplicates"`
	Late       uint64 `json:"late"` // arrived after a higher sequence number
}

// shardResult is everything a shard measured, sent to the parent once at
// the end. Times are Unix nanoseconds, 0 when the event never happened.
type shardResult struct {
	Conns         int             `json:"conns"`
	Attempts      int64           `json:"attempts"`
	EverUp        int64           `json:"ever_up"`
	GaveUp        int64           `json:"gave_up"`
	ConnectStart  int64           `json:"connect_start"`
	ConnectEnd    int64           `json:"connect_end"` // the last first upgrade
	Failures      map[string]int  `json:"failures,omitempty"`
	StormFailures map[string]int  `json:"storm_failures,omitempty"`
	Closed        map[string]int  `json:"closed,omitempty"`
	Channels      []channelCounts `json:"channels"`
	Other         uint64          `json:"other"` // messages that were not bench payloads
	LastDelivery  int64           `json:"last_delivery"`
	// Reads counts the reads (event-loop callbacks) that brought at least
	// one first delivery: Delivered / Reads is how many messages one
	// read found, which is at least how many the server packed into one
	// write.
	Reads         uint64  `json:"reads,omitempty"`
	Latency       string  `json:"latency"` // HDR, compressed and base64
	StormAttempts int64   `json:"storm_attempts,omitempty"`
	StormStart    int64   `json:"storm_start,omitempty"`
	StormEnd      int64   `json:"storm_end,omitempty"` // the last reconnect
	StormDropped  int64   `json:"storm_dropped,omitempty"`
	StormUp       int64   `json:"storm_up,omitempty"`
	StormGaveUp   int64   `json:"storm_gave_up,omitempty"`
	CPUSeconds    float64 `json:"cpu_seconds,omitempty"` // a child process's own CPU time
	// WireBytes are the data frames' bytes as they arrived (header
	// included), and PlainBytes what they would have been uncompressed.
	WireBytes  uint64 `json:"wire_bytes,omitempty"`
	PlainBytes uint64 `json:"plain_bytes,omitempty"`
	Compressed uint64 `json:"compressed,omitempty"` // frames that arrived compressed
}

// Connection states, in order.
const (
	stateIdle      uint8 = iota // not on a loop: queued to dial, dialing, waiting to retry, or done
	stateHandshake              // upgrade request sent, waiting for the answer
	stateOpen                   // upgraded
)

// Failures are counted by phase: the first connect, and the storm.
const (
	phaseConnect = iota
	phaseStorm
)

// maxServerHeader is the longest header of an unmasked frame.
const maxServerHeader = 10

// maxFrame bounds a frame from the server; the bench never asks for more.
const maxFrame = 16 << 20

// conn is one client connection. It is owned by whoever holds it: the
// dial queue, a dialer, the retry list, or its event loop from OnOpen to
// OnClose. Handing it over goes through a channel, a mutex or gnet's task
// queue, so its fields need no lock.
type conn struct {
	gc         gnet.Conn
	loop       *loopState
	index      int32 // in shard.conns
	slot       int32 // index in loop.conns
	channel    int32
	state      uint8
	attempts   uint8 // failed attempts in a row, for the backoff
	everUp     bool
	warm       bool // a warm-up message arrived
	dropping   bool // the bench itself is closing it
	inStorm    bool // dropped by the storm and not back yet
	stays      bool // a receiver: the storm leaves it up
	retry      bool // the failure being reported is worth retrying
	key        [24]byte
	deadline   int64 // Unix nanoseconds: the handshake times out
	retryAt    int64
	retryAfter time.Duration // the server's Retry-After
	reason     string        // why the connection is failing or closing
	seq        seqWindow
	streamSeq  uint64 // the last history sequence received ("seq" in the envelope), for since=
}

// loopState is what a shard keeps per event loop. Only the loop touches
// it, except the atomics, which progress reads.
type loopState struct {
	s        *shard
	el       gnet.EventLoop
	conns    []*conn
	channels []channelCounts
	hist     *hdrhistogram.Histogram // since the start, or the last mark
	other    uint64
	reads    uint64 // reads that brought a first delivery
	// permessage-deflate: the loop's inflater and its output, and the
	// bytes of data frames on the wire and uncompressed.
	inflater         *deflate.Inflater
	inflated         inflateCache
	wire, plain, zip uint64
	rng              *rand.Rand
	buf              []byte // scratch: upgrade requests, pongs, accept keys
	hdr              [codec.MaxHeaderSize]byte

	delivered atomic.Uint64
	warm      atomic.Int64
	last      atomic.Int64 // Unix nanoseconds of the last measured delivery
}

func (l *loopState) add(c *conn) {
	c.loop = l
	c.slot = int32(len(l.conns))
	l.conns = append(l.conns, c)
}

func (l *loopState) remove(c *conn) {
	last := len(l.conns) - 1
	moved := l.conns[last]
	l.conns[c.slot] = moved
	moved.slot = c.slot
	l.conns[last] = nil
	l.conns = l.conns[:last]
}

// shard holds one process's connections on a gnet client.
type shard struct {
	spec     shardSpec
	log      *slog.Logger
	addr     string
	requests []upgradeRequest // by channel
	client   *gnet.Client
	dialers  []net.Dialer // one per source address; connection i uses i mod len
	conns    []conn
	dialQ    chan *conn // never full: it can hold every connection

	ctx     context.Context // cancelled when the shard finishes
	cancel  context.CancelFunc
	workers sync.WaitGroup

	loopsMu sync.Mutex
	loops   []*loopState

	retryMu sync.Mutex
	retries []*conn

	mu       sync.Mutex
	failures [2]map[string]int // by phase
	closed   map[string]int

	storming  atomic.Bool
	armed     atomic.Bool // the storm's drops are all done
	finishing atomic.Bool

	attempts              [2]atomic.Int64 // by phase
	failed                atomic.Int64
	up, everUp, gaveUp    atomic.Int64
	connectStart          atomic.Int64
	connectEnd            atomic.Int64
	stormStart, stormEnd  atomic.Int64
	stormDropped, stormUp atomic.Int64
	stormGaveUp           atomic.Int64
	finished              sync.Once
	result                *shardResult
}

// startShard starts the event loops and the dialers; connections start
// going up at once.
func startShard(spec shardSpec, log *slog.Logger) (*shard, error) {
	target, err := url.Parse(spec.URL)
	if err != nil {
		return nil, fmt.Errorf("url %q: %w", spec.URL, err)
	}
	s := &shard{
		spec:     spec,
		log:      log,
		addr:     target.Host,
		conns:    make([]conn, spec.Conns),
		dialQ:    make(chan *conn, spec.Conns),
		failures: [2]map[string]int{{}, {}},
		closed:   map[string]int{},
	}
	// An upgrade request per channel this shard's connections use: with a
	// channel per connection that is this shard's share, not every one.
	s.requests = make([]upgradeRequest, spec.Channels)
	for i := range s.conns {
		c := &s.conns[i]
		c.index = int32(i)
		c.channel = int32(placeConn(spec.First+i, spec.Channels, spec.Hot, spec.StayFrom))
		c.stays = spec.StayFrom > 0 && spec.First+i >= spec.StayFrom
		if s.requests[c.channel].head == nil {
			s.requests[c.channel] = newUpgradeRequest(target, channelName(spec.Prefix, int(c.channel)), spec.Raw, spec.Compress)
		}
	}
	if s.dialers, err = newDialers(spec.Sources, spec.HandshakeTimeout); err != nil {
		return nil, err
	}
	s.client, err = gnet.NewClient(&handler{s: s},
		gnet.WithMulticore(true),
		gnet.WithNumEventLoop(spec.Loops),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithLogger(gnetlog.Logger{Log: log}),
	)
	if err != nil {
		return nil, fmt.Errorf("gnet client: %w", err)
	}
	if err := s.client.Start(); err != nil {
		return nil, fmt.Errorf("gnet client: %w", err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.connectStart.Store(time.Now().UnixNano())
	for i := range s.conns {
		s.dialQ <- &s.conns[i]
	}
	s.workers.Add(spec.Dialers + 2)
	for range spec.Dialers {
		go s.dialLoop()
	}
	go s.retryLoop()
	go s.sweepLoop()
	return s, nil
}

// newDialers returns a dialer per source address, or one that lets the
// kernel choose when there are none.
//
// Each source address brings its own ephemeral ports. That matters
// before they run out: Linux gives connect() the even half of the port
// range first, and once that half is taken for a destination, every
// further connect scans all of it before trying an odd port, which makes
// connecting tens of thousands of sockets from one address crawl.
func newDialers(sources []string, timeout time.Duration) ([]net.Dialer, error) {
	if len(sources) == 0 {
		return []net.Dialer{{Timeout: timeout}}, nil
	}
	dialers := make([]net.Dialer, len(sources))
	for i, src := range sources {
		ip := net.ParseIP(src)
		if ip == nil {
			return nil, fmt.Errorf("source address %q is not an IP address", src)
		}
		dialers[i] = net.Dialer{
			Timeout:   timeout,
			LocalAddr: &net.TCPAddr{IP: ip},
			// Without this, binding the source address picks the local
			// port at bind time, from one pool for every destination, and
			// TIME_WAIT sockets keep their ports. With it the kernel picks
			// at connect time, per destination, as for an unbound socket.
			Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
				})
				return errors.Join(err, serr)
			},
		}
	}
	return dialers, nil
}

// dialLoop is one of the dialers: the bounded pool that turns queued
// connections into sockets and hands them to the event loops. Dialing
// blocks, so it never happens on a loop.
func (s *shard) dialLoop() {
	defer s.workers.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case c := <-s.dialQ:
			s.dial(c)
		}
	}
}

func (s *shard) phase() int {
	if s.storming.Load() {
		return phaseStorm
	}
	return phaseConnect
}

func (s *shard) dial(c *conn) {
	s.attempts[s.phase()].Add(1)
	d := &s.dialers[int(c.index)%len(s.dialers)]
	nc, err := d.DialContext(s.ctx, "tcp", s.addr)
	if err != nil {
		s.attemptFailed(c, dialReason(err), true)
		return
	}
	// gnet duplicates the descriptor and closes nc; from OnOpen on, c
	// belongs to the loop.
	if _, err := s.client.EnrollContext(nc, c); err != nil {
		s.attemptFailed(c, "enroll: "+err.Error(), true)
	}
}

// dialReason names a failed dial by its errno, the one part of the error
// that is the same from one attempt to the next.
func dialReason(err error) string {
	var errno syscall.Errno
	var ne net.Error
	switch {
	case errors.As(err, &errno):
		return "connect: " + errno.Error()
	case errors.As(err, &ne) && ne.Timeout():
		return "connect: timeout"
	}
	return "connect: " + err.Error()
}

// attemptFailed records a failed attempt and retries it or gives up on
// the connection. It runs on a loop or a dialer.
func (s *shard) attemptFailed(c *conn, reason string, retry bool) {
	if s.finishing.Load() {
		return
	}
	s.failed.Add(1)
	s.mu.Lock()
	s.failures[s.phase()][reason]++
	s.mu.Unlock()
	if retry {
		s.scheduleRetry(c)
		return
	}
	switch {
	case c.inStorm:
		c.inStorm = false
		s.stormGaveUp.Add(1)
	case !c.everUp:
		s.gaveUp.Add(1)
	}
}

// scheduleRetry queues c to be dialed again after the server's
// Retry-After, or after a jittered exponential backoff from 50 ms to 2 s:
// retrying at once would only hammer a server that is shedding load.
func (s *shard) scheduleRetry(c *conn) {
	delay := c.retryAfter
	if delay == 0 {
		delay = min(50*time.Millisecond<<min(c.attempts, 6), 2*time.Second)
	}
	delay = delay/2 + rand.N(delay)
	if c.attempts < 255 {
		c.attempts++
	}
	c.retryAfter = 0
	c.retryAt = time.Now().Add(delay).UnixNano()
	s.retryMu.Lock()
	s.retries = append(s.retries, c)
	s.retryMu.Unlock()
}

// retryLoop moves connections whose retry is due to the dial queue.
func (s *shard) retryLoop() {
	defer s.workers.Done()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	var due []*conn
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		due = due[:0]
		s.retryMu.Lock()
		kept := s.retries[:0]
		for _, c := range s.retries {
			if c.retryAt <= now {
				due = append(due, c)
			} else {
				kept = append(kept, c)
			}
		}
		clear(s.retries[len(kept):])
		s.retries = kept
		s.retryMu.Unlock()
		for _, c := range due {
			s.dialQ <- c
		}
	}
}

// sweepLoop closes connections whose upgrade answer is overdue, on their
// own loops: there is no timer per connection.
func (s *shard) sweepLoop() {
	defer s.workers.Done()
	t := time.NewTicker(max(s.spec.HandshakeTimeout/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		for _, l := range s.loopList() {
			_ = l.el.Execute(context.Background(), gnet.RunnableFunc(l.sweep))
		}
	}
}

func (l *loopState) sweep(context.Context) error {
	now := time.Now().UnixNano()
	for i := len(l.conns) - 1; i >= 0; i-- {
		if i >= len(l.conns) {
			continue
		}
		if c := l.conns[i]; c.state == stateHandshake && now >= c.deadline {
			c.reason, c.retry = "handshake timeout", true
			_ = l.el.Close(c.gc)
		}
	}
	return nil
}

func (s *shard) loopList() []*loopState {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	return append([]*loopState(nil), s.loops...)
}

// loopFor returns the state for el, creating it on the loop's first
// connection: a gnet client cannot list its loops.
func (s *shard) loopFor(el gnet.EventLoop) *loopState {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	for _, l := range s.loops {
		if l.el == el {
			return l
		}
	}
	l := &loopState{
		s:        s,
		el:       el,
		channels: make([]channelCounts, s.spec.Channels),
		hist:     newLatencyHistogram(),
		rng:      rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		buf:      make([]byte, 0, 512),
	}
	s.loops = append(s.loops, l)
	return l
}

func (s *shard) progress() progress {
	p := progress{
		Up:           s.up.Load(),
		EverUp:       s.everUp.Load(),
		GaveUp:       s.gaveUp.Load(),
		Failures:     s.failed.Load(),
		StormArmed:   s.armed.Load(),
		StormDropped: s.stormDropped.Load(),
		StormUp:      s.stormUp.Load(),
		StormGaveUp:  s.stormGaveUp.Load(),
	}
	for _, l := range s.loopList() {
		p.Delivered += l.delivered.Load()
		p.Warm += l.warm.Load()
	}
	return p
}

// storm drops every open connection at once, abortively, and queues each
// for an immediate reconnect as its close completes. It returns once
// every loop has dropped its connections; the reconnects go on.
func (s *shard) storm() {
	s.storming.Store(true)
	s.stormStart.Store(time.Now().UnixNano())
	s.onLoops(func(l *loopState) { l.drop(true) })
	s.armed.Store(true)
}

// drop closes the loop's connections with SO_LINGER 0, so the kernel
// resets them instead of keeping each in TIME_WAIT: tens of thousands of
// reconnects from one host would otherwise run out of ephemeral ports,
// which is an artefact of the bench, not something the server's clients
// share. For a storm, receivers and connections still in their
// handshake are left alone, and the dropped ones are marked to come back.
func (l *loopState) drop(storm bool) {
	for i := len(l.conns) - 1; i >= 0; i-- {
		if i >= len(l.conns) {
			continue
		}
		c := l.conns[i]
		if storm {
			if c.state != stateOpen || c.stays {
				continue
			}
			c.inStorm = true
			l.s.stormDropped.Add(1)
		}
		c.dropping = true
		_ = c.gc.SetLinger(0)
		_ = l.el.Close(c.gc)
	}
}

// onLoops runs f on every loop, each on its own goroutine, and waits.
func (s *shard) onLoops(f func(*loopState)) {
	var wg sync.WaitGroup
	for _, l := range s.loopList() {
		wg.Add(1)
		err := l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			defer wg.Done()
			f(l)
			return nil
		}))
		if err != nil {
			wg.Done()
		}
	}
	wg.Wait()
}

// finish stops dialing, drops every connection, stops the loops and
// returns what the shard measured. Calling it again returns the same.
func (s *shard) finish() *shardResult {
	s.finished.Do(func() {
		s.finishing.Store(true)
		s.cancel()
		s.workers.Wait()
		s.onLoops(func(l *loopState) { l.drop(false) })
		if err := s.client.Stop(); err != nil {
			s.log.Warn("stop gnet client", "err", err)
		}
		s.result = s.collect()
	})
	return s.result
}

// collect gathers the counters once the loops have stopped, which is what
// makes reading their state from this goroutine safe.
func (s *shard) collect() *shardResult {
	r := &shardResult{
		Conns:         s.spec.Conns,
		Attempts:      s.attempts[phaseConnect].Load(),
		StormAttempts: s.attempts[phaseStorm].Load(),
		EverUp:        s.everUp.Load(),
		GaveUp:        s.gaveUp.Load(),
		ConnectStart:  s.connectStart.Load(),
		ConnectEnd:    s.connectEnd.Load(),
		Channels:      make([]channelCounts, s.spec.Channels),
		StormStart:    s.stormStart.Load(),
		StormEnd:      s.stormEnd.Load(),
		StormDropped:  s.stormDropped.Load(),
		StormUp:       s.stormUp.Load(),
		StormGaveUp:   s.stormGaveUp.Load(),
		Failures:      s.failures[phaseConnect],
		StormFailures: s.failures[phaseStorm],
		Closed:        s.closed,
	}
	hist := newLatencyHistogram()
	for _, l := range s.loopList() {
		r.add(l, hist)
	}
	var err error
	if r.Latency, err = encodeLatency(hist); err != nil {
		s.log.Error("latency histogram lost", "err", err)
	}
	return r
}

// add sums what loop l has received into r, and its latencies into hist.
func (r *shardResult) add(l *loopState, hist *hdrhistogram.Histogram) {
	for k, ch := range l.channels {
		r.Channels[k].Conns += ch.Conns
		r.Channels[k].Unique += ch.Unique
		r.Channels[k].Duplicates += ch.Duplicates
		r.Channels[k].Late += ch.Late
	}
	r.Other += l.other
	r.Reads += l.reads
	r.WireBytes += l.wire
	r.PlainBytes += l.plain
	r.Compressed += l.zip
	r.LastDelivery = max(r.LastDelivery, l.last.Load())
	hist.Merge(l.hist)
}

// mark snapshots what the shard has received so far, for one step of a
// sweep: the channel counts, reads and last delivery since the start,
// and the latencies since the previous mark, after which each loop starts
// a new histogram. It runs on the loops, so the counts are exact at the
// moment each loop takes its part.
func (s *shard) mark() *shardResult {
	r := &shardResult{Conns: s.spec.Conns, Channels: make([]channelCounts, s.spec.Channels)}
	hist := newLatencyHistogram()
	var mu sync.Mutex
	s.onLoops(func(l *loopState) {
		mu.Lock()
		defer mu.Unlock()
		r.add(l, hist)
		l.hist.Reset()
	})
	var err error
	if r.Latency, err = encodeLatency(hist); err != nil {
		s.log.Error("latency histogram lost", "err", err)
	}
	return r
}

// storeMax raises a to v if v is higher.
func storeMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// handler is the shard's gnet event handler.
type handler struct {
	gnet.BuiltinEventEngine
	s *shard
}

// OnOpen sends the upgrade request as soon as the loop owns the socket.
func (h *handler) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	c, ok := gc.Context().(*conn)
	if !ok {
		return nil, gnet.Close
	}
	l := h.s.loopFor(gc.EventLoop())
	l.add(c)
	c.gc = gc
	c.state = stateHandshake
	c.deadline = time.Now().Add(h.s.spec.HandshakeTimeout).UnixNano()
	var raw [16]byte
	for i := 0; i < 16; i += 8 {
		v := l.rng.Uint64()
		for j := range 8 {
			raw[i+j] = byte(v >> (8 * j))
		}
	}
	base64.StdEncoding.Encode(c.key[:], raw[:])
	var token string
	if h.s.spec.Tokens != nil {
		token = h.s.spec.Tokens[c.index]
	}
	var since uint64
	if h.s.spec.Resume {
		since = c.streamSeq
	}
	l.buf = h.s.requests[c.channel].append(l.buf[:0], c.key[:], token, since)
	return l.buf, gnet.None // written before OnOpen's caller returns
}

func (h *handler) OnTraffic(gc gnet.Conn) gnet.Action {
	c, ok := gc.Context().(*conn)
	if !ok || c.gc == nil {
		return gnet.Close
	}
	now := time.Now()
	if c.state == stateHandshake {
		if a := c.readResponse(now); a != gnet.None || c.state != stateOpen {
			return a
		}
	}
	return c.readFrames(now)
}

func (h *handler) OnClose(gc gnet.Conn, err error) gnet.Action {
	c, ok := gc.Context().(*conn)
	if !ok || c.gc == nil {
		return gnet.None
	}
	s := h.s
	c.loop.remove(c)
	// A write after this could reach whichever socket reuses the
	// descriptor.
	c.gc = nil
	was := c.state
	c.state = stateIdle
	reason, retry := c.reason, c.retry
	c.reason, c.retry = "", false
	switch {
	case c.dropping:
		c.dropping = false
		if was == stateOpen {
			s.up.Add(-1)
		}
		if c.inStorm && !s.finishing.Load() {
			s.dialQ <- c // reconnect at once: that is the storm
		}
	case was == stateHandshake:
		if reason == "" {
			reason, retry = "closed before upgrade ("+closeErrReason(err)+")", true
		}
		s.attemptFailed(c, reason, retry)
	case was == stateOpen:
		s.up.Add(-1)
		if reason == "" {
			reason = closeErrReason(err)
		}
		if !s.finishing.Load() {
			s.mu.Lock()
			s.closed[reason]++
			s.mu.Unlock()
		}
	}
	return gnet.None
}

// closeErrReason names how a socket ended.
func closeErrReason(err error) string {
	var errno syscall.Errno
	switch {
	case err == nil:
		return "closed"
	case errors.As(err, &errno):
		return errno.Error()
	}
	return "eof"
}

// readResponse waits for the whole answer to the upgrade request and
// checks it.
func (c *conn) readResponse(now time.Time) gnet.Action {
	l := c.loop
	buf, _ := c.gc.Peek(-1)
	n := codec.HeadLength(buf, 0)
	if n == 0 {
		if len(buf) > maxResponseHead {
			c.reason, c.retry = errMalformedResponse.Error(), false
			return gnet.Close
		}
		return gnet.None
	}
	resp, err := parseUpgradeResponse(buf[:n], c.key[:], l.buf)
	if err != nil {
		c.reason, c.retry = err.Error(), false
		return gnet.Close
	}
	if resp.status != 101 {
		c.reason, c.retry = httpReason(resp.status), retryableStatus(resp.status)
		c.retryAfter = resp.retryAfter
		return gnet.Close
	}
	_, _ = c.gc.Discard(n)
	c.upgraded(now.UnixNano())
	return gnet.None
}

func (c *conn) upgraded(now int64) {
	s := c.loop.s
	c.state = stateOpen
	c.deadline = 0
	c.attempts = 0
	s.up.Add(1)
	if !c.everUp {
		c.everUp = true
		c.loop.channels[c.channel].Conns++
		s.everUp.Add(1)
		storeMax(&s.connectEnd, now)
	}
	if c.inStorm {
		c.inStorm = false
		s.stormUp.Add(1)
		storeMax(&s.stormEnd, now)
	}
}

// parseServerHeader decodes a frame header from the server, which must
// not be masked or use reserved bits (RFC 6455 section 5.1), but RSV1 on a
// data frame when permessage-deflate was offered (deflate).
func parseServerHeader(b []byte, deflate bool) (ws.Header, int, error) {
	h, n, err := codec.ParseHeader(b)
	switch {
	case err != nil || n == 0:
		return h, n, err
	case h.Masked:
		return h, 0, errors.New("masked server frame")
	case h.Rsv == codec.RSV1 && deflate && (h.OpCode == ws.OpText || h.OpCode == ws.OpBinary):
	case h.Rsv != 0:
		return h, 0, errors.New("reserved bits set")
	}
	return h, n, nil
}

// readFrames handles every complete frame buffered: gnet does not call
// again for bytes left behind until more arrive.
func (c *conn) readFrames(now time.Time) gnet.Action {
	l := c.loop
	nowMicros := now.UnixMicro()
	var fresh uint64
	defer func() {
		if fresh > 0 {
			l.reads++
			l.delivered.Add(fresh)
			l.last.Store(now.UnixNano())
		}
	}()
	for {
		buffered := c.gc.InboundBuffered()
		if buffered < 2 {
			return gnet.None
		}
		head, _ := c.gc.Peek(min(buffered, maxServerHeader))
		h, hn, err := parseServerHeader(head, l.s.spec.Compress)
		if err != nil {
			c.reason = "protocol error: " + err.Error()
			return gnet.Close
		}
		if hn == 0 {
			return gnet.None
		}
		total := int64(hn) + h.Length
		if total > maxFrame {
			c.reason = "protocol error: frame over 16 MiB"
			return gnet.Close
		}
		if int64(buffered) < total {
			return gnet.None // the loop's buffer grows until the frame is in
		}
		frame, _ := c.gc.Peek(int(total))
		payload := frame[hn:]
		switch h.OpCode {
		case ws.OpText, ws.OpBinary:
			if !h.Fin {
				c.reason = "protocol error: fragmented message"
				return gnet.Close
			}
			l.wire += uint64(total)
			if h.Rsv == codec.RSV1 {
				if payload, err = l.inflate(payload); err != nil {
					c.reason = "protocol error: " + err.Error()
					return gnet.Close
				}
				l.zip++
			}
			l.plain += uint64(len(codec.AppendHeader(l.hdr[:0], h.OpCode, true, len(payload))) + len(payload))
			fresh += l.message(c, payload, nowMicros)
		case ws.OpPing:
			// The server pings silent connections and closes those that
			// do not answer.
			l.buf = appendClientFrame(l.buf[:0], ws.OpPong, payload, l.mask())
			if _, _ = c.gc.Write(l.buf); c.gc == nil {
				return gnet.None // the write failed and OnClose has run
			}
		case ws.OpPong:
		case ws.OpClose:
			c.reason = closeReason(payload)
			l.buf = appendClientFrame(l.buf[:0], ws.OpClose, payload[:min(len(payload), 2)], l.mask())
			if _, _ = c.gc.Write(l.buf); c.gc == nil {
				return gnet.None
			}
			return gnet.Close
		default:
			c.reason = "protocol error: unexpected opcode"
			return gnet.Close
		}
		_, _ = c.gc.Discard(int(total))
	}
}

// inflate returns the inflation of a compressed message. Herald sends
// every socket the same compressed bytes for a message, so the loop keeps
// what it inflated last, keyed by the compressed bytes themselves (equal,
// not just of equal hash): inflating each copy would cost the client
// several times the CPU the server spends sending it, and the client would
// measure itself.
func (l *loopState) inflate(z []byte) ([]byte, error) {
	c := &l.inflated
	if c.index == nil {
		c.index = make(map[uint64]int, inflateCacheSize)
		c.seed = maphash.MakeSeed()
		c.entries = make([]inflateEntry, inflateCacheSize)
		l.inflater = deflate.NewInflater()
	}
	sum := maphash.Bytes(c.seed, z)
	if i, ok := c.index[sum]; ok && bytes.Equal(c.entries[i].z, z) {
		return c.entries[i].plain, nil
	}
	e := &c.entries[c.next]
	if e.z != nil {
		delete(c.index, e.sum)
	}
	plain, err := l.inflater.Inflate(e.plain[:0], z, maxFrame)
	if err != nil {
		e.z, e.plain = nil, plain[:0]
		return nil, err
	}
	e.z, e.plain, e.sum = append(e.z[:0], z...), plain, sum
	c.index[sum] = c.next
	c.next = (c.next + 1) % len(c.entries)
	return plain, nil
}

// inflateCache holds the loop's last inflateCacheSize inflated messages.
type inflateCache struct {
	index   map[uint64]int // hash of the compressed bytes -> entry
	seed    maphash.Seed
	entries []inflateEntry
	next    int // the entry to reuse next
}

type inflateEntry struct {
	sum      uint64
	z, plain []byte
}

// inflateCacheSize covers a burst's messages in flight on one loop, whose
// sockets are at different points of the burst.
const inflateCacheSize = 1024

func (l *loopState) mask() [4]byte {
	v := l.rng.Uint32()
	return [4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
}

// greeting starts the frame Herald opens every JSON connection with.
var greeting = []byte(`{"op":"connected"`)

// message accounts one data message and returns 1 if it was a first
// delivery of a measured message.
func (l *loopState) message(c *conn, payload []byte, nowMicros int64) uint64 {
	if l.s.spec.Resume {
		if n, ok := envelopeSeq(payload); ok && n > c.streamSeq {
			c.streamSeq = n
		}
	}
	seq, ts, ok := ParsePayload(payload)
	if !ok {
		if !bytes.HasPrefix(payload, greeting) {
			l.other++ // the greeting opens every JSON connection
		}
		return 0
	}
	if seq == 0 {
		if !c.warm {
			c.warm = true
			l.warm.Add(1)
		}
		return 0
	}
	ch := &l.channels[c.channel]
	switch c.seq.observe(seq) {
	case seqDuplicate:
		ch.Duplicates++
		return 0
	case seqLate:
		ch.Late++
	}
	ch.Unique++
	recordLatency(l.hist, nowMicros-ts)
	return 1
}
