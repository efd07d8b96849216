package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/herald-ws/herald/bench"
	"github.com/herald-ws/herald/engine/push/auth"
)

const benchAbout = `Opens many WebSocket connections to a Herald server, runs one scenario and
reports what the server did: a progress line a second on stderr, a table on
stdout at the end, and with --json the same figures as JSON.

Scenarios:
  idle     open --conns connections, hold them for --duration, and report the
           connect rate, handshake failures by reason, and the server's
           resident memory per connection (RSS before connecting and after
           the hold) and CPU time per connection. The server is first warmed
           with 2,000 connections, opened and closed, so that one-time costs
           are not counted per connection. With --server-pid it also reports
           the kernel's slab memory per socket on this host; from the
           server's /metrics, its goroutine count before and after.
  fanout   open --conns connections spread over --channels channels (--hot:
           half of them on one channel), publish --messages messages of
           --size bytes through NATS at --rate, and report deliveries per
           second, delivered %, missing / duplicated / out-of-order messages,
           publish-to-receive latency percentiles, messages per client read
           and the server's CPU time per delivery. Each payload carries its
           channel sequence number and send time:
           {"seq":N,"ts":MICROS,"pad":"xx.."}.
           Personal channels: --channels per-conn gives every connection a
           channel of its own (PREFIX.RUN.K for connection K), and the round
           robin then sends each message to a different socket; --rounds R
           publishes R messages on every channel (R x channels in all).
           Counts are kept per channel, so a message lost or doubled on one
           socket shows as such.
           Overload sweep: --rates 10,50,200 runs the steady fanout once per
           rate on the same connections, each for --duration, and reports
           per rate delivered %, p50/p99 latency, server CPU per delivery
           (with --server-pid), deliveries per second and messages per read
           (above 1: the server packed several messages into one write).
  storm    open --conns connections, drop them all at once and reconnect
           them all, and report the time until all are back and the refusals
           seen meanwhile (503s, connect errors, timeouts). --receivers N adds
           N connections on a channel of their own that stay up through the
           storm: the bench publishes to them at --rate (default 100 msg/s)
           for --duration before the storm (the quiet phase) and again from
           the drop until every dropped connection is back, and reports for
           each phase their delivered %, missing, duplicated and p50/p99
           latency: what a storm costs the clients that are not part of it.
           --history puts the connections on history channels (serve with
           --history 'bench.>'): the bench publishes to them at --rate from a
           second before the drop until every one is back, each reconnects
           with since= the last sequence it received, and the bench reports
           missing and duplicated messages per channel (0 when nothing was
           lost), the time from the drop until the last arrived, and the
           server's stream reads (herald_history_reads_total).
  floor    the loopback write floor, without a server: the bench listens
           on --floor-listen itself, its connections (in a child process,
           from the same source addresses as the other scenarios) connect
           as its readers, and for each of --messages messages at --rate it
           writes one pre-built text frame, the envelope Herald would send
           around a --size payload, to every socket with a bare loop of
           write(2) calls, failing on any write error. It reports the
           writer's CPU time per write (getrusage of its own process, which
           holds no reader), the time one pass over all sockets takes
           (median, max), and the readers' deliveries and latency as fanout
           does. Compare fanout's server CPU per delivery at the same
           --conns and --rate.

Server figures come from /proc/PID with --server-pid, else from the server's
/metrics if it has one (process_resident_memory_bytes,
process_cpu_seconds_total), else they show n/a.

One process holds at most 19,000 connections (the open-file limit). Past that,
or with --procs, the bench runs its connections in child processes and sums
their results. Connections are spread over loopback source addresses
(127.0.0.2, 127.0.0.3, ...; see --source-ips) so that none runs short of
ephemeral ports. scripts/tune-host.sh shows the host settings large runs need.

Every run ends by itself: --duration bounds publishing and the idle hold,
--timeout the whole run (a run cut short still reports what it measured, and
exits 1).`

func runBench(args []string, stdout, stderr io.Writer) error {
	if spec, ok := os.LookupEnv(bench.ShardEnv); ok {
		return runBenchShard(spec, stdout, stderr)
	}
	fs := newFlagSet("bench", "idle|fanout|storm|floor [flags]", benchAbout, stderr)
	var cfg bench.Config
	fs.StringVar(&cfg.URL, "url", "ws://127.0.0.1:8080/ws", "the server's WebSocket `URL`; each connection adds channel=NAME to its query")
	fs.IntVar(&cfg.Conns, "conns", 1000, "connections to open")
	channels := channelsFlag{n: 1}
	fs.Var(&channels, "channels", "spread the connections over `N` channels, named PREFIX.RUN.K; per-conn gives each connection a channel of its own (N = --conns)")
	fs.BoolVar(&cfg.Hot, "hot", false, "put half the connections on one hot channel and spread the rest over the others (default: spread evenly)")
	token := fs.String("token", "", "JWT every connection presents as ?token= (mint one with herald token; it must permit the bench's channels, e.g. --subscribe 'bench.>')")
	tokenKey := fs.String("token-key", "", "give every connection a token of its own (sub bench-N, subscribe PREFIX.>, valid an hour), signed with the RSA or EC private key in this PEM `FILE` and sent as Authorization: Bearer, as clients with their own tokens do; for a server started with --auth-public-key and the public half")
	raw := fs.Bool("raw", false, "subscribe with format=raw (bare payloads) instead of the default JSON envelope")
	fs.BoolVar(&cfg.Compress, "compress", false, "offer permessage-deflate in every upgrade, as browsers do, and inflate what comes compressed;\nfanout reports the bytes on the wire next to the uncompressed bytes (use --size 1024 or more: the server sends small messages plain)")
	fs.StringVar(&cfg.ChannelPrefix, "channel-prefix", "bench", "first part of every channel name; a random run id follows it")
	fs.IntVar(&cfg.Messages, "messages", 200, "fanout, floor: messages to publish, round robin over the channels; 0 with --rate publishes until --duration")
	fs.IntVar(&cfg.Rounds, "rounds", 0, "fanout, floor: publish this many messages on every channel, round robin (instead of --messages)")
	rates := fs.String("rates", "", "fanout: an overload sweep, e.g. 10,50,200: the steady fanout once per `rate` (messages per second over all channels), each for --duration, on the same connections; --messages then applies only if given")
	fs.StringVar(&cfg.Listen, "floor-listen", "127.0.0.1:0", "floor: the loopback `address` the bench listens on for its readers")
	fs.IntVar(&cfg.Writers, "floor-writers", 1, "floor: threads writing at once, each to its share of the sockets (match the server's --loops to compare like with like)")
	size := sizeFlag(fs, "size", 64, "fanout: payload size in bytes, e.g. 64, 1KiB")
	fs.Float64Var(&cfg.Rate, "rate", 0, "fanout, floor: messages per second over all channels; 0 publishes as fast as possible; storm: to the receivers (0 means 100)")
	fs.BoolVar(&cfg.Resume, "history", false, "storm: the connections resume on history channels (serve with --history 'PREFIX.>' and a --history-size that holds the storm's messages): published to at --rate (0 means 100) from a second before the drop until all are back, each reconnects with since= its last sequence; reports missing and duplicated (both must be 0), when all had caught up, and the server's stream reads")
	fs.IntVar(&cfg.Receivers, "receivers", 0, "storm: `N` more connections, on a channel of their own, that stay up through the storm and are published to at --rate, before it and during it")
	natsURL := fs.String("nats", "nats://127.0.0.1:4222", "fanout, storm with --receivers: `URL` of the NATS server Herald listens to")
	serverPIDs := fs.String("server-pid", "", "the server's process `id`, for its memory and CPU time from /proc; several, comma-separated, for processes sharing a port (--reuseport), summed; none tries its /metrics")
	fs.StringVar(&cfg.MetricsURL, "metrics", "", "the server's Prometheus metrics `URL` (default http://HOST/metrics of --url), used without --server-pid")
	fs.IntVar(&cfg.Procs, "procs", 0, "processes to hold the connections; 0 means ceil(conns/19000)")
	sources := fs.String("source-ips", "", "local `addresses` to dial from, dealt to the processes in turn: a list (127.0.0.2,127.0.0.3) or a count n (127.0.0.2 onwards); default: the kernel's choice when the connections fit one address's ephemeral ports, else 127.0.0.2 onwards, enough per process that none uses more than 2/5 of the port range")
	fs.IntVar(&cfg.Loops, "loops", 0, "client event loops per process; 0 means half the CPUs, at least one")
	fs.IntVar(&cfg.Dialers, "dialers", 64, "goroutines dialing connections, per process")
	fs.DurationVar(&cfg.HandshakeTimeout, "handshake-timeout", 5*time.Second, "retry a connection whose upgrade is not answered within this time")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "idle: how long to hold the connections; fanout, floor: the longest publishing may take (with --rates, each rate's); storm with --receivers: the quiet phase, and the longest the storm's publishing may take")
	fs.DurationVar(&cfg.Timeout, "timeout", 2*time.Minute, "the longest the whole run may take")
	jsonFile := fs.String("json", "", "also write the results as JSON to `FILE` (- for stdout)")
	quiet := fs.Bool("quiet", false, "no progress lines")
	logLevel := fs.String("log-level", "warn", "log `level`: debug, info, warn or error")

	scenario, rest, err := splitScenario(args)
	if err != nil {
		fmt.Fprintln(stderr, err)
		fs.Usage()
		return errUsage
	}
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	if scenario == "" {
		fmt.Fprintln(stderr, "missing scenario: idle, fanout, storm or floor")
		fs.Usage()
		return errUsage
	}
	cfg.Scenario = scenario
	cfg.Channels, cfg.PerConn = channels.n, channels.perConn
	if *token != "" {
		u, err := url.Parse(cfg.URL)
		if err != nil {
			return fmt.Errorf("--url: %w", err)
		}
		q := u.Query()
		q.Set("token", *token)
		u.RawQuery = q.Encode()
		cfg.URL = u.String()
	}
	if *tokenKey != "" {
		if *token != "" {
			fmt.Fprintln(stderr, "give --token or --token-key, not both")
			return errUsage
		}
		key, alg, err := readSigningKey("token-key", *tokenKey)
		if err != nil {
			return err
		}
		if cfg.Conns < 1 || cfg.Receivers < 0 {
			fmt.Fprintln(stderr, "--token-key needs --conns of at least 1 and --receivers of at least 0")
			return errUsage
		}
		tokens, err := mintBenchTokens(key, alg, cfg.ChannelPrefix+".>", cfg.Conns+cfg.Receivers)
		if err != nil {
			return err
		}
		cfg.Tokens = func(i int) (string, error) {
			if i >= len(tokens) {
				return "", fmt.Errorf("no token for connection %d: %d were signed", i, len(tokens))
			}
			return tokens[i], nil
		}
	}
	if cfg.Rates, err = bench.ParseRates(*rates); err != nil {
		return err
	}
	if len(cfg.Rates) > 0 && !flagSet(fs, "messages") {
		cfg.Messages = 0 // each step publishes for --duration
	}
	cfg.Raw = *raw
	cfg.Size = int(*size)
	if cfg.SourceIPs, err = bench.ParseSourceIPs(*sources); err != nil {
		return err
	}
	if cfg.ServerPIDs, err = bench.ParseServerPIDs(*serverPIDs); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel, "text")
	if err != nil {
		return err
	}
	cfg.Logger = log
	if !*quiet {
		cfg.Progress = stderr
	}
	cfg.ShardCommand = selfCommand

	if scenario == bench.Fanout || cfg.Receivers > 0 || cfg.Resume {
		nc, err := nats.Connect(*natsURL, nats.Name("herald-bench"))
		if err != nil {
			return fmt.Errorf("connect to NATS at %s: %w", *natsURL, err)
		}
		defer nc.Close()
		cfg.Publish = nc.Publish
		cfg.Flush = func() error { return nc.FlushTimeout(10 * time.Second) }
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if err := res.WriteTable(stdout); err != nil {
		return err
	}
	if err := writeBenchJSON(*jsonFile, res, stdout); err != nil {
		return err
	}
	if res.TimedOut {
		return errors.New("the run did not finish: timed out or interrupted (see the notes)")
	}
	return nil
}

// splitScenario takes the scenario from the front of args, where the flag
// package would stop parsing.
func splitScenario(args []string) (bench.Scenario, []string, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return "", args, nil
	}
	for _, s := range bench.Scenarios() {
		if string(s) == args[0] {
			return s, args[1:], nil
		}
	}
	return "", nil, fmt.Errorf("unknown scenario %q: want idle, fanout, storm or floor", args[0])
}

// channelsFlag is --channels: a count, or per-conn.
type channelsFlag struct {
	n       int
	perConn bool
}

func (c *channelsFlag) String() string {
	if c.perConn {
		return bench.PerConnChannels
	}
	return strconv.Itoa(c.n)
}

func (c *channelsFlag) Set(s string) error {
	n, perConn, err := bench.ParseChannels(s)
	if err != nil {
		return err
	}
	c.n, c.perConn = n, perConn
	return nil
}

// flagSet reports whether name was given, on the command line or in the
// environment.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func writeBenchJSON(name string, res *bench.Result, stdout io.Writer) error {
	switch name {
	case "":
		return nil
	case "-":
		return res.WriteJSON(stdout)
	}
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	if err := res.WriteJSON(f); err != nil {
		f.Close()
		return fmt.Errorf("--json %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--json %s: %w", name, err)
	}
	return nil
}

// selfCommand re-executes this binary as a bench shard; the bench package
// adds the shard's spec to its environment.
func selfCommand(ctx context.Context) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	return exec.CommandContext(ctx, exe, "bench")
}

// runBenchShard is the child side of a sharded run: it talks to its
// parent over stdin and stdout. An interrupt from the terminal reaches
// the whole process group; the child leaves it to the parent, which asks
// for the child's report before exiting.
func runBenchShard(spec string, stdout, stderr io.Writer) error {
	signal.Ignore(os.Interrupt)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return bench.RunShard(context.Background(), spec, os.Stdin, stdout, log)
}

// mintBenchTokens signs n tokens, one per bench connection, on every core:
// an RSA signature takes about a millisecond.
func mintBenchTokens(key any, alg, subscribe string, n int) ([]string, error) {
	tokens := make([]string, n)
	now := time.Now()
	var next atomic.Int64
	errs := make([]error, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for w := range errs {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				c := auth.Claims{Subject: "bench-" + strconv.Itoa(i), Subscribe: []string{subscribe}, Expires: now.Add(time.Hour)}
				t, err := auth.Mint(key, alg, c, now)
				if err != nil {
					errs[w] = fmt.Errorf("mint a token for connection %d: %w", i, err)
					return
				}
				tokens[i] = t
			}
		})
	}
	wg.Wait()
	return tokens, errors.Join(errs...)
}
