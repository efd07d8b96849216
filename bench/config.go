package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"net/url"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Scenario names what a run measures.
type Scenario string

const (
	Idle   Scenario = "idle"
	Fanout Scenario = "fanout"
	Storm  Scenario = "storm"
	// Floor measures the loopback write floor: the bench itself listens,
	// its shards connect to it as readers, and it writes one pre-built
	// frame to every socket with a bare loop of write(2) calls.
	Floor Scenario = "floor"
)

// Scenarios lists every scenario, in the order help text shows them.
func Scenarios() []Scenario { return []Scenario{Idle, Fanout, Storm, Floor} }

// MaxShardConns is the most connections one process dials. A process may
// hold about 20,000 open files here; the rest of the budget goes to the
// dialers' transient descriptors, pipes and the runtime.
const MaxShardConns = 19_000

// Config describes one run. The zero value of every field but Scenario
// and URL means its documented default.
type Config struct {
	Scenario Scenario
	// URL is the server's WebSocket endpoint, ws://host:port/ws. Each
	// connection adds channel=NAME (and format=raw with Raw) to its query.
	URL string
	// Conns is how many connections to open. Default 1,000.
	Conns int
	// Channels is how many channels the connections are spread over.
	// Default 1, or Conns with PerConn.
	Channels int
	// PerConn gives every connection a channel of its own (Channels ==
	// Conns): connection i is on channel i, and fanout's round robin
	// publishes to each socket in turn, so no two messages share a socket.
	PerConn bool
	// Rounds, for fanout and floor, publishes Rounds messages on every
	// channel, round robin: Messages = Rounds * Channels.
	Rounds int
	// Rates turns fanout into an overload sweep: the steady fanout runs
	// once per rate (messages per second over all channels), each step for
	// Duration (or Messages, if set, whichever ends first) on the same
	// connections, and Result.Sweep reports each step. Rate is ignored.
	Rates []float64
	// Hot puts half the connections on channel 0 and spreads the rest
	// over the others, instead of spreading all of them evenly.
	Hot bool
	// ChannelPrefix starts every channel name; a random run id follows it,
	// so that runs never see each other's messages: PREFIX.RUN.K.
	// Default "bench".
	ChannelPrefix string
	// Raw subscribes with format=raw, receiving bare payloads instead of
	// the default JSON envelope.
	Raw bool
	// Compress offers permessage-deflate in every upgrade, as browsers
	// do, and inflates what the server compresses; the fanout report then
	// gives the bytes on the wire next to the uncompressed bytes.
	Compress bool
	// Messages is how many messages fanout publishes, round robin over the
	// channels. 0 with a Rate publishes until Duration. Default 200.
	Messages int
	// Size is the payload size in bytes. Default 64.
	Size int
	// Rate is messages per second over all channels; 0 publishes as fast
	// as the publisher goes.
	Rate float64
	// Duration bounds fanout's and floor's publishing (each sweep step's,
	// with Rates) and is how long idle holds its connections. Default 10 s.
	Duration time.Duration
	// Timeout bounds the whole run. Default 2 minutes.
	Timeout time.Duration
	// ServerPIDs are the server's processes, read from /proc for resident
	// memory and CPU time: one, or several sharing the port
	// (--reuseport), whose figures are summed. None tries the server's
	// /metrics instead.
	ServerPIDs []int
	// MetricsURL is where the server's Prometheus metrics are, used
	// without ServerPIDs. Default: /metrics on the URL's host.
	MetricsURL string
	// Procs is how many processes hold the connections; 0 picks
	// ceil(Conns/MaxShardConns). With more than one, every shard runs in
	// a child process started by ShardCommand.
	Procs int
	// SourceIPs are the local addresses connections are dialed from,
	// dealt to the shards in turn. Empty lets the kernel pick for one
	// process whose connections fit one address's ephemeral ports, and
	// otherwise gives every shard its own from 127.0.0.2 on, one per 2/5
	// of the port range its connections need.
	SourceIPs []netip.Addr
	// Loops is the number of gnet event loops per process. Default half
	// the CPUs, at least one: the server needs the rest.
	Loops int
	// Dialers is how many goroutines per process dial connections.
	// Default 64.
	Dialers int
	// HandshakeTimeout is how long a connection may wait for its 101
	// before it is closed and retried. Default 5 s.
	HandshakeTimeout time.Duration
	// Writers is how many threads the floor scenario writes from, each to
	// its share of the sockets, at once: set it to the server's event loops
	// to compare like with like. Default 1.
	Writers int
	// Listen is where the floor scenario listens for its readers, on
	// loopback. Default 127.0.0.1:0 (any free port). URL is ignored.
	Listen string
	// Receivers, for storm, are connections that stay up through it, in a
	// child process of their own and on a channel of their own, to which the run publishes at Rate (default
	// 100 msg/s) for Duration before the storm, the quiet phase, and again
	// from the drop until every dropped connection is back: what clients
	// that are not part of a storm see of it. 0 runs the storm alone.
	Receivers int
	// Resume, for storm, puts the connections on history channels (the
	// server must keep history for PREFIX.>, e.g. herald serve --history
	// 'bench.>'): the run publishes to them at Rate (default 100 msg/s)
	// from a second before the drop until every dropped connection is
	// back, each reconnects with since= the last sequence it received, and
	// the run counts what every connection got: every message exactly
	// once, and when the last one arrived.
	Resume bool

	// Tokens, when set, gives connection i (run-wide, receivers after the
	// others) a token of its own, sent as Authorization: Bearer, as many
	// clients with their own tokens would: a token in URL applies to all.
	// It is called for every connection before any connects.
	Tokens func(i int) (string, error)

	// Publish sends data on a NATS subject; fanout needs it (floor writes
	// the frames itself).
	Publish func(subject string, data []byte) error
	// Flush waits until everything published reached the NATS server; nil
	// skips it.
	Flush func() error
	// ShardCommand returns the command for a child process. The child
	// must call RunShard when it finds ShardEnv in its environment; bench
	// sets the variable, the standard input and the standard output. The
	// floor scenario always needs it: its readers must not share the
	// writer's process.
	ShardCommand func(ctx context.Context) *exec.Cmd

	// Progress receives a line every second while the run goes; nil
	// prints nothing.
	Progress io.Writer
	// Logger receives the client's logs; nil means slog.Default().
	Logger *slog.Logger
}

const (
	defaultConns            = 1000
	defaultMessages         = 200
	defaultSize             = 64
	defaultDuration         = 10 * time.Second
	defaultTimeout          = 2 * time.Minute
	defaultDialers          = 64
	defaultHandshakeTimeout = 5 * time.Second
	defaultChannelPrefix    = "bench"
	defaultListen           = "127.0.0.1:0"
	defaultReceiverRate     = 100
)

// dialed is how many connections the run opens: Conns, and a storm's
// receivers.
func (c *Config) dialed() int { return c.Conns + c.Receivers }

// channelCount is how many channels the run uses: Channels, and the
// receivers' own.
func (c *Config) channelCount() int {
	if c.Receivers > 0 {
		return c.Channels + 1
	}
	return c.Channels
}

func (c *Config) setDefaults() {
	if c.Conns == 0 {
		c.Conns = defaultConns
	}
	if c.PerConn && c.Channels == 0 {
		c.Channels = c.Conns
	}
	if c.Channels == 0 {
		c.Channels = 1
	}
	if c.ChannelPrefix == "" {
		c.ChannelPrefix = defaultChannelPrefix
	}
	if c.Rounds > 0 {
		c.Messages = c.Rounds * c.Channels
	}
	if c.Messages == 0 && c.Rate == 0 && len(c.Rates) == 0 {
		c.Messages = defaultMessages
	}
	if c.Listen == "" {
		c.Listen = defaultListen
	}
	if c.Scenario == Floor {
		c.URL = "ws://" + c.Listen + "/ws" // the listener's, once it listens
	}
	if c.Size == 0 {
		c.Size = defaultSize
	}
	if c.Duration == 0 {
		c.Duration = defaultDuration
	}
	if c.Timeout == 0 {
		c.Timeout = defaultTimeout
	}
	if c.Loops == 0 {
		c.Loops = max(1, runtime.NumCPU()/2)
	}
	if c.Dialers == 0 {
		c.Dialers = defaultDialers
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = defaultHandshakeTimeout
	}
	if (c.Receivers > 0 || c.Resume) && c.Rate == 0 {
		c.Rate = defaultReceiverRate
	}
	if c.Procs == 0 {
		c.Procs = (c.Conns + MaxShardConns - 1) / MaxShardConns
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// check reports what is wrong with a defaulted Config.
func (c *Config) check() (*url.URL, error) {
	switch c.Scenario {
	case Idle, Fanout, Storm, Floor:
	default:
		return nil, fmt.Errorf("unknown scenario %q: want idle, fanout, storm or floor", c.Scenario)
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, fmt.Errorf("url %q: %w", c.URL, err)
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("url %q: want ws://host:port/path (no TLS)", c.URL)
	}
	if u.Port() == "" {
		u.Host = u.Hostname() + ":80"
	}
	switch {
	case c.Conns < 0:
		return nil, errors.New("conns must not be negative")
	case c.Channels < 1 || c.Channels > c.Conns:
		return nil, fmt.Errorf("channels must be between 1 and conns (%d)", c.Conns)
	case c.Messages < 0:
		return nil, errors.New("messages must not be negative")
	case c.Rate < 0:
		return nil, errors.New("rate must not be negative")
	case c.Duration < 0 || c.Timeout < 0:
		return nil, errors.New("duration and timeout must not be negative")
	case c.Procs < 1 || c.Procs > c.Conns:
		return nil, fmt.Errorf("procs must be between 1 and conns (%d)", c.Conns)
	case (c.Conns+c.Procs-1)/c.Procs > MaxShardConns:
		return nil, fmt.Errorf("%d processes would hold %d connections each, over the %d one process can", c.Procs, (c.Conns+c.Procs-1)/c.Procs, MaxShardConns)
	case c.Receivers < 0 || c.Receivers > MaxShardConns:
		return nil, fmt.Errorf("receivers must be between 0 and %d: they have one process", MaxShardConns)
	case c.Receivers > 0 && c.Scenario != Storm:
		return nil, errors.New("receivers are a storm's: they stay up through it")
	case c.Receivers > 0 && c.Publish == nil:
		return nil, errors.New("a storm with receivers needs a Publish function")
	case c.Resume && c.Scenario != Storm:
		return nil, errors.New("resume is a storm's: its connections resume after it")
	case c.Resume && c.Publish == nil:
		return nil, errors.New("a storm that resumes needs a Publish function")
	case c.Resume && c.Duration <= 2*resumeLead:
		return nil, fmt.Errorf("a storm that resumes publishes for at most --duration, from %v before the drop: give it more than %v", resumeLead, 2*resumeLead)
	case c.Resume && c.Raw:
		return nil, errors.New("resume reads the sequence in the JSON envelope: not with raw")
	case c.Receivers > 0 && c.ShardCommand == nil:
		return nil, errors.New("receivers need a ShardCommand: they run in a child process of their own")
	case c.Procs > 1 && c.ShardCommand == nil:
		return nil, errors.New("more than one process needs a ShardCommand")
	case c.Loops < 1 || c.Dialers < 1:
		return nil, errors.New("loops and dialers must be positive")
	case c.PerConn && c.Channels != c.Conns:
		return nil, fmt.Errorf("per-connection channels means %d channels, not %d", c.Conns, c.Channels)
	case c.PerConn && c.Hot:
		return nil, errors.New("per-connection channels have no hot channel")
	case c.Rounds < 0:
		return nil, errors.New("rounds must not be negative")
	case len(c.Rates) > 0 && c.Scenario != Fanout:
		return nil, errors.New("a rate sweep is a fanout")
	case c.Scenario == Floor && c.ShardCommand == nil:
		return nil, errors.New("floor needs a ShardCommand: its readers run in a child process")
	case c.Scenario == Floor && c.Channels != 1:
		return nil, errors.New("floor writes one frame to every socket: one channel")
	}
	for _, r := range c.Rates {
		if !(r > 0) {
			return nil, fmt.Errorf("sweep rate %v: every rate must be above 0", r)
		}
	}
	if c.Scenario == Fanout || c.Scenario == Floor || c.Receivers > 0 || c.Resume {
		if c.Scenario == Fanout && c.Publish == nil {
			return nil, errors.New("fanout needs a Publish function")
		}
		maxSeq := uint64(c.Messages)
		switch {
		case len(c.Rates) > 0:
			maxSeq = 0
			for _, r := range c.Rates {
				n := uint64(r*c.Duration.Seconds()) + 1
				if c.Messages > 0 {
					n = min(n, uint64(c.Messages))
				}
				maxSeq += n
			}
		case c.Receivers > 0 || c.Resume:
			// The quiet phase, then the storm's, which lasts at most
			// the rest of the run.
			maxSeq = uint64(c.Rate*(c.Duration+c.Timeout).Seconds()) + 1
		case c.Messages == 0:
			maxSeq = uint64(c.Rate*c.Duration.Seconds()) + 1
		}
		if need := MinPayloadSize(maxSeq); c.Size < need {
			return nil, fmt.Errorf("size %d is too small: a payload carrying sequence %d and a timestamp takes %d bytes", c.Size, maxSeq, need)
		}
	}
	for _, ip := range c.SourceIPs {
		if !ip.Is4() && !ip.Is6() {
			return nil, fmt.Errorf("source address %v is not an IP address", ip)
		}
	}
	return u, nil
}

// ParseSourceIPs reads the --source-ips flag: a comma-separated list of
// addresses, or a count n meaning 127.0.0.2 through 127.0.0.(n+1).
func ParseSourceIPs(s string) ([]netip.Addr, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 250 {
			return nil, fmt.Errorf("source address count %d: want 1 to 250", n)
		}
		return loopbackSources(n), nil
	}
	var ips []netip.Addr
	for _, f := range strings.Split(s, ",") {
		ip, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("source address %q: %w", f, err)
		}
		ips = append(ips, ip)
	}
	return ips, nil
}

// loopbackSources returns 127.0.0.2 onwards: the whole of 127.0.0.0/8 is
// local on Linux, and each address brings its own ephemeral ports.
func loopbackSources(n int) []netip.Addr {
	ips := make([]netip.Addr, n)
	for i := range ips {
		ips[i] = netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)})
	}
	return ips
}

// channelOf is the channel of connection i of n: evenly spread, or with
// hot, every other connection on channel 0 and the rest spread over the
// others.
func channelOf(i, channels int, hot bool) int {
	if channels <= 1 {
		return 0
	}
	if !hot {
		return i % channels
	}
	if i%2 == 0 {
		return 0
	}
	return 1 + (i/2)%(channels-1)
}

// placeConn is the channel of connection i of a run: channelOf over
// channels, or, from stayFrom on (when above 0), the receivers' channel,
// the last of channels.
func placeConn(i, channels int, hot bool, stayFrom int) int {
	if stayFrom > 0 {
		if i >= stayFrom {
			return channels - 1
		}
		channels--
	}
	return channelOf(i, channels, hot)
}

// channelName is channel k's name for a run: PREFIX.K, where the prefix
// already carries the run id.
func channelName(prefix string, k int) string { return prefix + "." + strconv.Itoa(k) }

// ParseRates reads the --rates flag: a comma-separated list of message
// rates, each above 0, e.g. "10,50,200".
func ParseRates(s string) ([]float64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var rates []float64
	for _, f := range strings.Split(s, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || !(r > 0) || math.IsInf(r, 0) {
			return nil, fmt.Errorf("rate %q: want a number of messages per second above 0", f)
		}
		rates = append(rates, r)
	}
	return rates, nil
}

// PerConnChannels is what --channels takes for one channel per connection.
const PerConnChannels = "per-conn"

// ParseChannels reads the --channels flag: a count, or "per-conn" for a
// channel of its own for every connection.
func ParseChannels(s string) (n int, perConn bool, err error) {
	s = strings.TrimSpace(s)
	if s == PerConnChannels || s == "personal" {
		return 0, true, nil
	}
	n, err = strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, false, fmt.Errorf("channels %q: want a count of at least 1, or %s", s, PerConnChannels)
	}
	return n, false, nil
}

// ParseServerPIDs reads --server-pid: one process id, or several, comma
// separated, for a server of several processes on one port. "" and "0"
// mean none.
func ParseServerPIDs(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return nil, nil
	}
	var pids []int
	for _, f := range strings.Split(s, ",") {
		pid, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || pid < 1 {
			return nil, fmt.Errorf("server pid %q: want a process id", f)
		}
		if slices.Contains(pids, pid) {
			return nil, fmt.Errorf("server pid %d given twice: its figures would count twice", pid)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}
