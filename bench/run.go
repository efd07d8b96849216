package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

const (
	// pollEvery is how often the parent looks at the shards' counters to
	// see whether a phase is over.
	pollEvery = 10 * time.Millisecond
	// warmupEvery is how often warm-up messages are published until every
	// connection has received one.
	warmupEvery = time.Second
	// settleAfterWarmup lets warm-up messages still in flight land before
	// the measured publishing starts.
	settleAfterWarmup = 200 * time.Millisecond
	// stallAfter ends the wait for deliveries when nothing new has arrived
	// for this long after the last publish: the rest are lost.
	stallAfter = 3 * time.Second
	// finishGrace bounds collecting the shards' reports, even after the
	// run's timeout.
	finishGrace = 30 * time.Second
)

// Run runs one scenario and returns what it measured. The run ends by
// itself within cfg.Timeout, plus the time to collect the shards'
// reports; a run cut short by the timeout still returns what it measured,
// with TimedOut set. The error is for runs that could not measure at all.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.setDefaults()
	target, err := cfg.check()
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	var floor *floorServer
	if cfg.Scenario == Floor {
		// The floor's readers connect to the bench itself.
		if floor, err = startFloorServer(cfg.Listen); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		defer floor.close()
		cfg.URL = "ws://" + floor.addr() + "/ws"
		if target, err = cfg.check(); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
	}
	start := time.Now()
	deadline := start.Add(cfg.Timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	r := &runner{
		cfg:    cfg,
		floor:  floor,
		target: target,
		prefix: fmt.Sprintf("%s.%06x", cfg.ChannelPrefix, rand.Uint32()&0xFFFFFF),
		res: &Result{
			Scenario: cfg.Scenario,
			URL:      RedactURL(cfg.URL),
			Started:  start,
			Conns:    cfg.dialed(),
			Channels: cfg.Channels,
			PerConn:  cfg.PerConn,
			Hot:      cfg.Hot,
			Format:   "json",
			Procs:    cfg.Procs,
			Loops:    cfg.Loops,
		},
	}
	if cfg.Raw {
		r.res.Format = "raw"
	}
	r.phase.Store("connect")
	r.planChannels()
	r.probe = r.newProbe()
	if cfg.Scenario == Idle {
		if err := r.warmServer(ctx); err != nil {
			r.note("warming the server up: %v", err)
		}
	}
	before, haveBefore := r.sample(ctx)
	if cfg.Scenario == Idle {
		if g, ok := r.goroutines(ctx); ok {
			r.res.Server.Goroutines = &GoroutineResult{Before: g}
		}
	}

	if err := r.startShards(ctx, deadline); err != nil {
		r.finishShards()
		return nil, fmt.Errorf("bench: %w", err)
	}
	stopProgress := r.showProgress()
	err = r.scenario(ctx, before, haveBefore)
	stopProgress()
	if err != nil {
		if ctx.Err() == nil {
			r.finishShards()
			return nil, fmt.Errorf("bench: %w", err)
		}
		r.res.TimedOut = true
		why := fmt.Sprintf("timed out after %v", cfg.Timeout)
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			why = "interrupted"
		}
		r.note("%s while %s: %v", why, r.phase.Load(), err)
	}
	results := r.finishShards()
	if len(results) == 0 {
		return nil, fmt.Errorf("bench: no shard reported: %w", errors.Join(r.errs...))
	}
	r.res.BenchCPUSeconds += selfCPU().Seconds()
	if err := r.res.aggregate(results, r.published, r.publishStart, r.stepLatency); err != nil {
		r.note("%v", err)
	}
	if r.res.Storm != nil {
		r.res.Storm.Receivers = r.stormReceivers
		r.res.Storm.Resume = r.stormResume
	}
	r.res.Seconds = time.Since(start).Seconds()
	return r.res, nil
}

// runner is one run in progress, in the parent.
type runner struct {
	cfg     Config
	target  *url.URL
	prefix  string // channel names are prefix.K
	planned []int  // connections per channel
	probe   serverProbe
	metrics metricsProbe // the server's /metrics, for what /proc lacks
	shards  []shardHandle
	res     *Result
	errs    []error // shards that did not report

	phase          atomic.Value    // string: what the run is doing, for progress and timeouts
	expected       atomic.Uint64   // deliveries the messages published so far should make
	published      []uint64        // measured messages published, by channel
	stormReceivers *StormReceivers // what a storm's receivers got, by phase
	stormResume    *StormResume    // what a resuming storm's connections got
	publishTo      []int           // the channels publishSteady goes round, all by default
	publishStart   time.Time
	next           int // the channel the round robin publishes to next

	floor       *floorServer            // the floor scenario's listener
	stepLatency *hdrhistogram.Histogram // a sweep's latencies, from the shards' marks
	step        atomic.Value            // string: the sweep step running, for progress
}

func (r *runner) note(format string, args ...any) {
	r.res.Notes = append(r.res.Notes, fmt.Sprintf(format, args...))
}

func (r *runner) planChannels() {
	n := r.cfg.channelCount()
	r.planned = make([]int, n)
	for i := range r.cfg.dialed() {
		r.planned[placeConn(i, n, r.cfg.Hot, r.stayFrom())]++
	}
	r.published = make([]uint64, n)
}

// stayFrom is the index of the first receiver, or 0 without receivers.
func (r *runner) stayFrom() int {
	if r.cfg.Receivers > 0 {
		return r.cfg.Conns
	}
	return 0
}

// newProbe picks where server figures come from: /proc with a PID, the
// server's /metrics otherwise, or nowhere if that does not answer.
func (r *runner) newProbe() serverProbe {
	if r.cfg.Scenario == Floor {
		// The floor's "server" is this process; it measures itself.
		if len(r.cfg.ServerPIDs) > 0 || r.cfg.MetricsURL != "" {
			r.note("floor measures its own writes: --server-pid and --metrics are not used")
		}
		return nil
	}
	mu := r.cfg.MetricsURL
	if mu == "" {
		mu = "http://" + r.target.Host + "/metrics"
	}
	r.metrics = metricsProbe{url: mu, client: &http.Client{Timeout: 2 * time.Second}}
	if len(r.cfg.ServerPIDs) > 0 {
		p := procProbe{pids: r.cfg.ServerPIDs}
		r.res.Server.Source = p.source()
		return p
	}
	return r.metrics
}

// goroutines reads the server's goroutine count from its /metrics, which
// /proc cannot tell; false if the server does not publish it.
func (r *runner) goroutines(ctx context.Context) (int64, bool) {
	s, err := r.metrics.sample(ctx)
	return s.Goroutines, err == nil && s.HaveGoroutines
}

// sample reads the server's figures; failing, it says why once and the
// report shows n/a.
func (r *runner) sample(ctx context.Context) (serverSample, bool) {
	if r.probe == nil {
		return serverSample{}, false
	}
	s, err := r.probe.sample(ctx)
	if err != nil {
		if _, metrics := r.probe.(metricsProbe); !metrics || r.cfg.MetricsURL != "" {
			r.note("server figures unavailable: %v", err)
		}
		r.probe = nil
		r.res.Server.Source = ""
		return s, false
	}
	r.res.Server.Source = r.probe.source()
	return s, true
}

// startShards splits the connections over shards: this process alone, or
// one child per shard.
func (r *runner) startShards(ctx context.Context, deadline time.Time) error {
	cfg := &r.cfg
	ports := defaultPortRange
	if lo, hi, err := localPortRange(); err == nil {
		ports = hi - lo + 1
	}
	sizes, sources := planShards(cfg.Conns, cfg.Procs, cfg.SourceIPs, ports)
	if cfg.Receivers > 0 {
		// The receivers get a process of their own, so that what they
		// measure is the server, not their own client busy with the
		// storm's handshakes; and a source address of their own.
		sizes = append(sizes, cfg.Receivers)
		var own []string
		if ip, err := netip.ParseAddr(r.target.Hostname()); err == nil && ip.IsLoopback() {
			own = []string{nextSource(sources).String()}
		}
		sources = append(sources, own)
	}
	r.checkPorts(sizes, sources, ports)
	first := 0
	for i, n := range sizes {
		spec := shardSpec{
			Index:            i,
			URL:              r.target.String(),
			Prefix:           r.prefix,
			Channels:         cfg.channelCount(),
			Hot:              cfg.Hot,
			StayFrom:         r.stayFrom(),
			Resume:           cfg.Resume,
			Raw:              cfg.Raw,
			Compress:         cfg.Compress,
			First:            first,
			Conns:            n,
			Sources:          sources[i],
			Loops:            cfg.Loops,
			Dialers:          cfg.Dialers,
			HandshakeTimeout: cfg.HandshakeTimeout,
			Deadline:         deadline.Add(finishGrace / 2),
		}
		if cfg.Tokens != nil {
			spec.Tokens = make([]string, n)
			for j := range spec.Tokens {
				t, err := cfg.Tokens(first + j)
				if err != nil {
					return fmt.Errorf("token for connection %d: %w", first+j, err)
				}
				spec.Tokens[j] = t
			}
		}
		first += n
		for _, src := range sources[i] {
			if !contains(r.res.SourceIPs, src) {
				r.res.SourceIPs = append(r.res.SourceIPs, src)
			}
		}
		// The floor's readers never share the writer's process: its CPU
		// time is what the floor measures. Nor do a storm's receivers.
		if len(sizes) == 1 && cfg.Scenario != Floor {
			s, err := startShard(spec, cfg.Logger)
			if err != nil {
				return err
			}
			r.shards = append(r.shards, localShard{s})
			continue
		}
		rs, err := startRemote(ctx, cfg, spec)
		if err != nil {
			return err
		}
		r.shards = append(r.shards, rs)
	}
	return nil
}

// defaultPortRange is the size of Linux's default ephemeral port range,
// 32768-60999, for when /proc does not say.
const defaultPortRange = 28232

// perSourceConns is how many connections to one destination a source
// address carries before the bench adds another: 2/5 of the port range,
// safely inside the even half that connect() searches first.
func perSourceConns(ports int) int { return max(1000, ports*2/5) }

// planShards splits conns over procs shards and gives each its source
// addresses. Explicit addresses go to the shards in turn. Without them,
// one process whose connections fit one address dials from the kernel's
// choice, and otherwise every shard gets its own addresses from 127.0.0.2
// on, as many as its connections need.
func planShards(conns, procs int, explicit []netip.Addr, ports int) (sizes []int, sources [][]string) {
	sizes = make([]int, procs)
	for i := range sizes {
		sizes[i] = conns / procs
		if i < conns%procs {
			sizes[i]++
		}
	}
	sources = make([][]string, procs)
	switch {
	case len(explicit) >= procs:
		for j, ip := range explicit {
			sources[j%procs] = append(sources[j%procs], ip.String())
		}
	case len(explicit) > 0:
		for i := range sources {
			sources[i] = []string{explicit[i%len(explicit)].String()}
		}
	case procs == 1 && conns <= perSourceConns(ports):
	default:
		next := 0
		for i, n := range sizes {
			k := max(1, (n+perSourceConns(ports)-1)/perSourceConns(ports))
			for _, ip := range loopbackSources(next + k)[next:] {
				sources[i] = append(sources[i], ip.String())
			}
			next += k
		}
	}
	return sizes, sources
}

// nextSource is the loopback address after the highest in sources, or
// 127.0.0.2 if there is none.
func nextSource(sources [][]string) netip.Addr {
	next := netip.AddrFrom4([4]byte{127, 0, 0, 2})
	for _, list := range sources {
		for _, src := range list {
			if ip, err := netip.ParseAddr(src); err == nil && ip.Is4() && ip.As4()[0] == 127 && !ip.Less(next) {
				next = ip.Next()
			}
		}
	}
	return next
}

// checkPorts warns when more connections share a source address than it
// has ephemeral ports for, or enough to make connecting slow.
func (r *runner) checkPorts(sizes []int, sources [][]string, ports int) {
	per := map[string]int{}
	for i, n := range sizes {
		if len(sources[i]) == 0 {
			per["the default source address"] += n
			continue
		}
		for j, src := range sources[i] {
			per[src] += n / len(sources[i])
			if j < n%len(sources[i]) {
				per[src]++
			}
		}
	}
	for src, n := range per {
		switch {
		case n > ports:
			r.cfg.Logger.Warn("bench: more connections than ephemeral ports", "source", src, "conns", n, "ports", ports,
				"fix", "more --source-ips, or scripts/tune-host.sh")
		case n > ports/2:
			r.cfg.Logger.Warn("bench: connecting will slow down past half the ephemeral ports", "source", src, "conns", n, "ports", ports,
				"fix", "more --source-ips, or scripts/tune-host.sh")
		}
	}
}

func localPortRange() (lo, hi int, err error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, errors.New("ip_local_port_range: unexpected format")
	}
	if lo, err = strconv.Atoi(f[0]); err == nil {
		hi, err = strconv.Atoi(f[1])
	}
	return lo, hi, err
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// eachShard calls f on every shard in parallel and returns what each
// returned, in shard order.
func (r *runner) eachShard(f func(shardHandle) (*shardResult, error)) ([]*shardResult, []error) {
	results := make([]*shardResult, len(r.shards))
	errs := make([]error, len(r.shards))
	var wg sync.WaitGroup
	for i, sh := range r.shards {
		wg.Go(func() { results[i], errs[i] = f(sh) })
	}
	wg.Wait()
	return results, errs
}

// finishShards collects every shard's report, in parallel, even after the
// run's context has ended.
func (r *runner) finishShards() []*shardResult {
	ctx, cancel := context.WithTimeout(context.Background(), finishGrace)
	defer cancel()
	results, errs := r.eachShard(func(sh shardHandle) (*shardResult, error) { return sh.finish(ctx) })
	r.shards = nil
	var got []*shardResult
	for i, res := range results {
		if errs[i] != nil {
			r.errs = append(r.errs, errs[i])
			r.note("%v", errs[i])
		}
		if res != nil {
			got = append(got, res)
			r.res.BenchCPUSeconds += res.CPUSeconds
		}
	}
	return got
}

// total sums the shards' progress.
func (r *runner) total() progress {
	var t progress
	t.StormArmed = true
	for _, sh := range r.shards {
		p := sh.progress()
		t.Up += p.Up
		t.EverUp += p.EverUp
		t.GaveUp += p.GaveUp
		t.Failures += p.Failures
		t.Warm += p.Warm
		t.Delivered += p.Delivered
		t.StormArmed = t.StormArmed && p.StormArmed
		t.StormDropped += p.StormDropped
		t.StormUp += p.StormUp
		t.StormGaveUp += p.StormGaveUp
	}
	return t
}

// waitUntil polls the shards until done says so or ctx ends.
func (r *runner) waitUntil(ctx context.Context, done func(progress) bool) error {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		if done(r.total()) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// showProgress prints a line a second until the returned func is called.
func (r *runner) showProgress() (stop func()) {
	w := r.cfg.Progress
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			p := r.total()
			phase := r.phase.Load().(string)
			if step, _ := r.step.Load().(string); step != "" {
				phase = step + " " + phase
			}
			line := fmt.Sprintf("bench %s %4.0fs  %s: %d/%d up", r.cfg.Scenario, time.Since(start).Seconds(), phase, p.Up, r.cfg.dialed())
			if p.Failures > 0 {
				line += fmt.Sprintf(", %d failed attempts", p.Failures)
			}
			switch r.phase.Load() {
			case "warm-up":
				line += fmt.Sprintf(", %d warm", p.Warm)
			case "publish", "deliver":
				exp := r.expected.Load()
				line += fmt.Sprintf(", delivered %d/%d (%.1f%%)", p.Delivered, exp, percent(p.Delivered, exp))
			case "storm":
				line += fmt.Sprintf(", %d/%d back", p.StormUp, p.StormDropped)
			}
			fmt.Fprintln(w, line)
		}
	}()
	return func() { close(done); wg.Wait() }
}

func percent(n, of uint64) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

// warmConns is how many connections warmServer opens and closes: enough
// for Herald to take them for a burst of new connections (1,000), after
// which it collects garbage once a quiet second has passed.
const warmConns = 2000

// warmQuiet is how long warmServer waits after closing them: Herald's
// quiet second, the quarter second it checks at, and the collection.
const warmQuiet = 2500 * time.Millisecond

// warmServer opens connections, upgrades them and closes them before the
// idle scenario's first memory reading, then waits for the server to
// settle. The first connections to a fresh server pay costs that no later
// one does: code pages faulted in, gnet's first slab of its connection
// table, and the Go runtime's first collections, which map about 1.4 MB
// of collector metadata whether 4,000 or 19,000 connections follow.
// Counting them against each of the scenario's connections would
// overstate what one more costs (by some 75 B each at 19,000).
func (r *runner) warmServer(ctx context.Context) error {
	req := newUpgradeRequest(r.target, channelName(r.prefix, 0), r.cfg.Raw, r.cfg.Compress)
	key := []byte("dGhlIHNhbXBsZSBub25jZQ==")
	var scratch [64]byte
	dialer := net.Dialer{Timeout: 5 * time.Second}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range warmConns {
		c, err := dialer.DialContext(ctx, "tcp", r.target.Host)
		if err != nil {
			return err
		}
		conns = append(conns, c)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(req.append(nil, key, "", 0)); err != nil {
			return err
		}
		head, err := readResponseHead(bufio.NewReader(c))
		if err != nil {
			return err
		}
		if resp, err := parseUpgradeResponse(head, key, scratch[:]); err != nil || resp.status != 101 {
			return fmt.Errorf("upgrade answered %d: %v", resp.status, err)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	return sleep(ctx, warmQuiet)
}

// readResponseHead reads an HTTP response head, through its blank line.
func readResponseHead(r *bufio.Reader) ([]byte, error) {
	var head []byte
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		head = append(head, line...)
		if len(line) <= 2 {
			return head, nil
		}
	}
}

// scenario runs the part after the shards started.
func (r *runner) scenario(ctx context.Context, before serverSample, haveBefore bool) error {
	n := int64(r.cfg.dialed())
	err := r.waitUntil(ctx, func(p progress) bool { return p.EverUp+p.GaveUp >= n })
	if err != nil {
		p := r.total()
		return fmt.Errorf("%d of %d connections upgraded", p.EverUp, n)
	}
	switch r.cfg.Scenario {
	case Idle:
		return r.idle(ctx, before, haveBefore)
	case Fanout:
		if len(r.cfg.Rates) > 0 {
			return r.sweep(ctx)
		}
		return r.fanout(ctx)
	case Storm:
		return r.storm(ctx)
	case Floor:
		return r.floorRun(ctx)
	}
	return nil
}

// idle holds the connections for Duration and reads the server's memory
// at the end, when allocation during the connect phase has settled. The
// CPU time is the connect phase's.
func (r *runner) idle(ctx context.Context, before serverSample, haveBefore bool) error {
	connected, haveConnected := r.sample(ctx)
	r.phase.Store("hold")
	err := sleep(ctx, r.cfg.Duration)
	after, haveAfter := r.sample(ctx)
	up := r.total().Up
	if g := r.res.Server.Goroutines; g != nil {
		var ok bool
		if g.After, ok = r.goroutines(ctx); !ok {
			r.res.Server.Goroutines = nil
		}
	}
	if haveBefore && haveConnected {
		ever := r.total().EverUp
		r.res.Server.CPU = cpuResult(connected.CPU-before.CPU, uint64(ever), "connection")
	}
	if haveBefore && haveAfter && up > 0 {
		m := &MemoryResult{
			Before:  before.RSS,
			After:   after.RSS,
			Conns:   up,
			PerConn: float64(after.RSS-before.RSS) / float64(up),
		}
		if before.HaveSlab && after.HaveSlab {
			m.KernelSlabDelta = after.Slab - before.Slab
			m.KernelSockets = 2 * up
			m.KernelSlabPerSocket = float64(m.KernelSlabDelta) / float64(m.KernelSockets)
		}
		r.res.Server.Memory = m
	}
	return err
}

func cpuResult(d time.Duration, n uint64, unit string) *CPUResult {
	c := &CPUResult{Seconds: d.Seconds(), Unit: unit, Count: n}
	if n > 0 {
		c.MicrosPer = float64(d) / float64(time.Microsecond) / float64(n)
	}
	return c
}

// fanout warms every connection up, publishes, and waits for the
// deliveries.
func (r *runner) fanout(ctx context.Context) error {
	if err := r.warmup(ctx); err != nil {
		return err
	}
	before, haveBefore := r.sample(ctx)
	r.phase.Store("publish")
	pubErr := r.publish(ctx)
	r.phase.Store("deliver")
	var err error
	if pubErr == nil || ctx.Err() == nil {
		err = r.awaitDeliveries(ctx)
	}
	after, haveAfter := r.sample(ctx)
	if haveBefore && haveAfter {
		r.res.Server.CPU = cpuResult(after.CPU-before.CPU, r.total().Delivered, "delivery")
	}
	if pubErr != nil {
		return pubErr
	}
	return err
}

// warmup publishes a message with sequence 0 on every channel until each
// connection has received one. Herald subscribes to NATS when a channel
// gets its first socket, and that subscription reaches the NATS server
// some time after the upgrade; measuring before it has would count
// messages as missing that no one subscribed to yet.
func (r *runner) warmup(ctx context.Context) error {
	r.phase.Store("warm-up")
	var buf []byte
	for {
		ts := time.Now().UnixMicro()
		for k := range r.cfg.channelCount() {
			buf = AppendPayload(buf[:0], 0, ts, r.cfg.Size)
			if err := r.cfg.Publish(channelName(r.prefix, k), buf); err != nil {
				return fmt.Errorf("publish warm-up: %w", err)
			}
		}
		if err := r.flush(); err != nil {
			return err
		}
		wait, cancel := context.WithTimeout(ctx, warmupEvery)
		err := r.waitUntil(wait, func(p progress) bool { return p.Warm >= p.Up })
		cancel()
		if err == nil {
			return sleep(ctx, settleAfterWarmup)
		}
		if ctx.Err() != nil {
			p := r.total()
			return fmt.Errorf("%d of %d connections received a warm-up message", p.Warm, p.Up)
		}
	}
}

func (r *runner) flush() error {
	if r.cfg.Flush == nil {
		return nil
	}
	if err := r.cfg.Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	return nil
}

// publish sends Messages messages round robin over the channels at Rate,
// within Duration, and records what it sent in the result.
func (r *runner) publish(ctx context.Context) error {
	cfg := &r.cfg
	var sent int
	start := time.Now()
	r.publishStart = start
	defer func() {
		r.res.Fanout = &FanoutResult{Published: sent, Size: cfg.Size, Rate: cfg.Rate, PublishSeconds: time.Since(start).Seconds()}
	}()
	var err error
	sent, err = r.publishSteady(ctx, start, cfg.Rate, cfg.Messages)
	if err == nil && cfg.Messages > 0 && sent < cfg.Messages {
		r.note("publishing stopped at --duration after %d of %d messages", sent, cfg.Messages)
	}
	return err
}

// Pacing: a message due less than pacingSlack from now goes out at once
// rather than after a sleep, which the runtime cannot make that short
// anyway; at high rates the publisher sends small bursts, one every
// pacingSlack, instead of sleeping before every message. Before a wait of
// flushBeforeWait or more, what was published is flushed to the NATS
// server: a round trip per message would cap the rate at a few thousand a
// second.
const (
	pacingSlack     = time.Millisecond
	flushBeforeWait = 20 * time.Millisecond
)

// dueAt is when message i of a paced stretch that started at start should
// go out.
func dueAt(start time.Time, i int, rate float64) time.Time {
	return start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
}

// publishSteady sends up to limit messages (0: no limit) round robin over
// the channels, each stamped with its channel's next sequence number and
// the time just before it is handed to NATS. With a rate, message i goes
// out at start + i/rate, catching up in a burst after a late wake-up
// rather than drifting; publishing stops at Duration in any case. It
// returns how many it sent.
func (r *runner) publishSteady(ctx context.Context, start time.Time, rate float64, limit int) (int, error) {
	cfg := &r.cfg
	subjects := make([]string, len(r.published))
	for k := range subjects {
		subjects[k] = channelName(r.prefix, k)
	}
	end := start.Add(cfg.Duration)
	buf := make([]byte, 0, cfg.Size)
	sent := 0
	for i := 0; limit == 0 || i < limit; i++ {
		now := time.Now()
		if rate > 0 {
			due := dueAt(start, i, rate)
			if due.After(end) {
				break
			}
			if wait := due.Sub(now); wait >= pacingSlack {
				if wait >= flushBeforeWait {
					if err := r.flush(); err != nil {
						return sent, err
					}
				}
				if err := sleep(ctx, wait); err != nil {
					return sent, err
				}
				now = time.Now()
			}
		} else if now.After(end) {
			break
		}
		if ctx.Err() != nil {
			return sent, ctx.Err()
		}
		k := r.next % len(subjects)
		if r.publishTo != nil {
			k = r.publishTo[r.next%len(r.publishTo)]
		}
		seq := r.published[k] + 1
		buf = AppendPayload(buf[:0], seq, now.UnixMicro(), cfg.Size)
		if err := cfg.Publish(subjects[k], buf); err != nil {
			return sent, fmt.Errorf("publish message %d: %w", sent+1, err)
		}
		r.next++
		r.published[k] = seq
		r.expected.Add(uint64(r.planned[k]))
		sent++
	}
	return sent, r.flush()
}

// awaitDeliveries waits until every connection has every message, or
// until nothing new arrives for stallAfter.
func (r *runner) awaitDeliveries(ctx context.Context) error {
	last, lastAt := r.total().Delivered, time.Now()
	return r.waitUntil(ctx, func(p progress) bool {
		if p.Delivered >= r.expected.Load() {
			return true
		}
		if p.Delivered != last {
			last, lastAt = p.Delivered, time.Now()
		}
		return time.Since(lastAt) >= stallAfter
	})
}

// storm drops every connection on every shard at once and waits until all
// are back. With receivers, it first measures them in a quiet phase, and
// then again while the storm goes on.
func (r *runner) storm(ctx context.Context) error {
	if r.cfg.Resume {
		return r.resumeStorm(ctx)
	}
	var receivers *receiverRun
	if r.cfg.Receivers > 0 {
		var err error
		if receivers, err = r.quietPhase(ctx); err != nil {
			return err
		}
	}
	before, haveBefore := r.sample(ctx)
	r.phase.Store("storm")
	var wg sync.WaitGroup
	errs := make([]error, len(r.shards))
	for i, sh := range r.shards {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = sh.storm() }()
	}
	var stormPublish func() (*FanoutResult, error)
	if receivers != nil {
		stormPublish = receivers.publishUntilCalled(ctx)
	}
	wg.Wait()
	err := r.awaitStorm(ctx, errs)
	after, haveAfter := r.sample(ctx)
	if haveBefore && haveAfter {
		r.res.Server.CPU = cpuResult(after.CPU-before.CPU, uint64(r.total().StormUp), "reconnect")
	}
	if stormPublish != nil {
		during, perr := stormPublish()
		receivers.During = during
		err = errors.Join(err, perr)
	}
	return err
}

// awaitStorm waits until every connection the storm dropped is back or
// gave up, once every shard has dropped them (errs are the drops' errors).
func (r *runner) awaitStorm(ctx context.Context, errs []error) error {
	if err := errors.Join(errs...); err != nil {
		return err
	}
	err := r.waitUntil(ctx, func(p progress) bool {
		return p.StormArmed && p.StormUp+p.StormGaveUp >= p.StormDropped
	})
	if err != nil {
		p := r.total()
		return fmt.Errorf("%d of %d connections back", p.StormUp, p.StormDropped)
	}
	return nil
}

// resumeLead is how long a resuming storm publishes before the drop, so
// that every connection has a position to resume from.
const resumeLead = time.Second

// resumeStorm publishes to every connection's channel at Rate from
// resumeLead before the drop until the last dropped connection is back,
// each resuming from the last sequence it had, and then counts what they
// received.
func (r *runner) resumeStorm(ctx context.Context) error {
	if err := r.warmup(ctx); err != nil {
		return err
	}
	prev, err := r.markShards(ctx) // warm-ups record no latency
	if err != nil {
		return fmt.Errorf("mark before the storm: %w", err)
	}
	readsBefore, _ := r.metrics.sample(ctx)
	before, haveBefore := r.sample(ctx)
	rx := &receiverRun{r: r, prev: prev}
	r.phase.Store("publish")
	stopPublishing := rx.publishUntilCalled(ctx)
	pubErr := sleep(ctx, resumeLead)
	r.phase.Store("storm")
	var stormStart time.Time
	var err2 error
	if pubErr == nil {
		stormStart = time.Now()
		errs := make([]error, len(r.shards))
		var wg sync.WaitGroup
		for i, sh := range r.shards {
			wg.Go(func() { errs[i] = sh.storm() })
		}
		wg.Wait()
		err2 = r.awaitStorm(ctx, errs)
	}
	r.phase.Store("deliver")
	f, perr := stopPublishing()
	after, haveAfter := r.sample(ctx)
	if haveBefore && haveAfter {
		r.res.Server.CPU = cpuResult(after.CPU-before.CPU, uint64(r.total().StormUp), "reconnect")
	}
	res := &StormResume{FanoutResult: f}
	if !stormStart.IsZero() && rx.last > stormStart.UnixNano() {
		res.CaughtUpSeconds = time.Duration(rx.last - stormStart.UnixNano()).Seconds()
	}
	if readsAfter, err := r.metrics.sample(ctx); err == nil && readsAfter.HaveHistoryReads && readsBefore.HaveHistoryReads {
		n := readsAfter.HistoryReads - readsBefore.HistoryReads
		res.StreamReads = &n
	}
	r.stormResume = res
	return errors.Join(pubErr, err2, perr)
}

// receiverRun is what a storm's receivers got, phase by phase.
type receiverRun struct {
	r    *runner
	prev *snapshot // the last mark
	last int64     // the last delivery at that mark, Unix nanoseconds
	StormReceivers
}

// quietPhase warms every connection up and then publishes to the
// receivers' channel at Rate for Duration, before any storm.
func (r *runner) quietPhase(ctx context.Context) (*receiverRun, error) {
	if err := r.warmup(ctx); err != nil {
		return nil, err
	}
	prev, err := r.markShards(ctx) // warm-ups record no latency
	if err != nil {
		return nil, fmt.Errorf("mark before the quiet phase: %w", err)
	}
	rx := &receiverRun{r: r, prev: prev, StormReceivers: StormReceivers{Conns: r.cfg.Receivers, Rate: r.cfg.Rate}}
	r.stormReceivers = &rx.StormReceivers
	r.publishTo = []int{len(r.published) - 1}
	r.phase.Store("quiet")
	rx.Quiet, err = rx.phase(ctx, func(start time.Time) (int, error) {
		return r.publishSteady(ctx, start, r.cfg.Rate, 0)
	})
	return rx, err
}

// publishUntilCalled publishes to the receivers at Rate from now until the
// returned function is called, which then waits for the deliveries and
// returns what the receivers got meanwhile. Publishing also stops at
// Duration.
func (rx *receiverRun) publishUntilCalled(ctx context.Context) func() (*FanoutResult, error) {
	pubCtx, stop := context.WithCancel(ctx)
	type answer struct {
		f   *FanoutResult
		err error
	}
	done := make(chan answer, 1)
	started := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		f, err := rx.phase(ctx, func(start time.Time) (int, error) {
			close(started)
			n, err := rx.r.publishSteady(pubCtx, start, rx.r.cfg.Rate, 0)
			if errors.Is(err, context.Canceled) && ctx.Err() == nil {
				err = rx.r.flush() // the storm is over: the end of this phase
			}
			close(stopped)
			return n, err
		})
		done <- answer{f, err}
	}()
	<-started
	return func() (*FanoutResult, error) {
		stop()
		<-stopped
		a := <-done
		return a.f, a.err
	}
}

// phase runs publish, waits for the deliveries, marks, and returns what
// the receivers got between this mark and the previous one.
func (rx *receiverRun) phase(ctx context.Context, publish func(start time.Time) (int, error)) (*FanoutResult, error) {
	r := rx.r
	published := append([]uint64(nil), r.published...)
	start := time.Now()
	sent, pubErr := publish(start)
	f := &FanoutResult{Published: sent, Size: r.cfg.Size, Rate: r.cfg.Rate, PublishSeconds: time.Since(start).Seconds()}
	var err error
	if pubErr == nil {
		err = r.awaitDeliveries(ctx)
	}
	markCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishGrace/2)
	cur, merr := r.markShards(markCtx)
	cancel()
	if merr != nil {
		return nil, errors.Join(pubErr, err, fmt.Errorf("mark: %w", merr))
	}
	stepTotals(f, rx.prev, cur, published, r.published, start)
	rx.prev, rx.last = cur, cur.last
	return f, errors.Join(pubErr, err)
}

// RedactURL is raw as it may be printed: a password replaced as
// url.URL.Redacted does, and a token in the query (?token=JWT, how
// browsers and the bench present one) by REDACTED. Reports and status
// lines are shared; tokens are credentials.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	if q := u.Query(); q.Has("token") {
		q.Set("token", "REDACTED")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
