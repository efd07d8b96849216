package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is what a run measured: the table WriteTable prints, and the
// JSON --json writes. Durations are in seconds unless a field's name
// says otherwise.
type Result struct {
	Scenario Scenario  `json:"scenario"`
	URL      string    `json:"url"`
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Conns    int       `json:"conns"`
	Channels int       `json:"channels"`
	// PerConn: every connection has a channel of its own.
	PerConn bool   `json:"per_conn_channels,omitempty"`
	Hot     bool   `json:"hot,omitempty"`
	Format  string `json:"format"`
	Procs   int    `json:"procs"`
	Loops   int    `json:"client_loops"` // per process
	// SourceIPs are the local addresses dialed from; empty means the
	// kernel's choice.
	SourceIPs []string `json:"source_ips,omitempty"`

	Connect ConnectResult `json:"connect"`
	Server  ServerResult  `json:"server"`
	// Fanout is the fanout's deliveries; for floor, what the readers
	// received of the frames the bench wrote; for a sweep, every step's
	// together (Sweep has each step).
	Fanout *FanoutResult `json:"fanout,omitempty"`
	Storm  *StormResult  `json:"storm,omitempty"`
	Floor  *FloorResult  `json:"floor,omitempty"`
	// Sweep is an overload sweep's steps, one per rate, in order.
	Sweep []SweepStep `json:"sweep,omitempty"`

	// ClosedByServer counts upgraded connections the server closed, by
	// reason ("close 1008", "ECONNRESET", "eof").
	ClosedByServer map[string]int `json:"closed_by_server,omitempty"`
	// OtherMessages counts messages that were not bench payloads, such as
	// the server's {"op":"error"} answers.
	OtherMessages uint64 `json:"other_messages,omitempty"`
	// BenchCPUSeconds is the bench's own CPU time over all its processes:
	// what it took from a machine it shares with the server.
	BenchCPUSeconds float64 `json:"bench_cpu_seconds"`
	// TimedOut says the run was cut short, by Config.Timeout or by its
	// context: the figures are partial and Notes says where it stopped.
	TimedOut bool     `json:"timed_out,omitempty"`
	Notes    []string `json:"notes,omitempty"`
}

// ConnectResult is the first connect of every connection.
type ConnectResult struct {
	Upgraded  int64   `json:"upgraded"`
	GaveUp    int64   `json:"gave_up"` // refused for good (a status no retry changes)
	Attempts  int64   `json:"attempts"`
	Seconds   float64 `json:"seconds"` // first dial to last upgrade
	PerSecond float64 `json:"per_second"`
	// Failures counts failed attempts by reason: "http 503",
	// "connect: connection refused", "handshake timeout", ...
	Failures map[string]int `json:"failures,omitempty"`
}

// ServerResult is the server's resource use, when the bench could read
// it: Source says from where. Nil parts were not measured.
type ServerResult struct {
	Source string        `json:"source,omitempty"`
	Memory *MemoryResult `json:"memory,omitempty"`
	CPU    *CPUResult    `json:"cpu,omitempty"`
	// Goroutines before connecting and at the end of the idle hold, from
	// the server's /metrics: a server without a goroutine per connection
	// keeps the count flat.
	Goroutines *GoroutineResult `json:"goroutines,omitempty"`
}

// GoroutineResult is the server's goroutine count around the idle hold.
type GoroutineResult struct {
	Before int64 `json:"before"`
	After  int64 `json:"after"`
}

// MemoryResult is the server's resident memory before connecting and at
// the end of the idle hold.
type MemoryResult struct {
	Before  int64   `json:"rss_before_bytes"`
	After   int64   `json:"rss_after_bytes"`
	Conns   int64   `json:"conns"`
	PerConn float64 `json:"rss_per_conn_bytes"`
	// The kernel's share, when the server runs on this host: how much its
	// slab memory grew, over both ends of each connection, since both are
	// sockets here. Host-wide, so anything else the kernel allocated in
	// the meantime counts too: an upper bound on a quiet machine.
	KernelSlabDelta     int64   `json:"kernel_slab_delta_bytes,omitempty"`
	KernelSockets       int64   `json:"kernel_sockets,omitempty"`
	KernelSlabPerSocket float64 `json:"kernel_slab_per_socket_bytes,omitempty"`
}

// CPUResult is the server's user and system time over the measured phase
// and per unit of work: per connection for idle (the connect phase), per
// delivery for fanout, per reconnect for storm.
type CPUResult struct {
	Seconds   float64 `json:"seconds"`
	Unit      string  `json:"unit"`
	Count     uint64  `json:"count"`
	MicrosPer float64 `json:"us_per_unit"`
}

// FanoutResult is what the subscribers received.
type FanoutResult struct {
	Published      int     `json:"published"`
	Size           int     `json:"size"`
	Rate           float64 `json:"rate"` // 0: as fast as possible
	PublishSeconds float64 `json:"publish_seconds"`
	// Expected is the sum over channels of messages published on it times
	// its upgraded connections.
	Expected     uint64  `json:"expected"`
	Delivered    uint64  `json:"delivered"` // first arrivals
	DeliveredPct float64 `json:"delivered_pct"`
	Missing      uint64  `json:"missing"`
	Duplicated   uint64  `json:"duplicated"`
	OutOfOrder   uint64  `json:"out_of_order"`
	// Seconds runs from the first publish to the last delivery.
	Seconds   float64       `json:"seconds"`
	PerSecond float64       `json:"deliveries_per_second"`
	Latency   LatencyResult `json:"latency"`
	// Reads counts the client's reads that brought first deliveries, and
	// PerRead is Delivered / Reads: 1 when every message arrived on its
	// own, more when the server packed several into one write (or the
	// kernel queued several writes for one read).
	Reads   uint64  `json:"reads,omitempty"`
	PerRead float64 `json:"messages_per_read,omitempty"`
	// WireBytes are the data frames' bytes as they crossed the network,
	// PlainBytes what they would have been uncompressed, WireRatio the
	// first over the second, and CompressedFrames how many frames came
	// compressed (permessage-deflate, with --compress).
	WireBytes        uint64  `json:"wire_bytes,omitempty"`
	PlainBytes       uint64  `json:"plain_bytes,omitempty"`
	WireRatio        float64 `json:"wire_ratio,omitempty"`
	CompressedFrames uint64  `json:"compressed_frames,omitempty"`
}

// SweepStep is one rate of an overload sweep: the fanout's figures for
// the messages published at that rate, and the server's CPU time over the
// step, from its first publish until its deliveries were in.
type SweepStep struct {
	FanoutResult
	CPU *CPUResult `json:"server_cpu,omitempty"`
}

// FloorResult is the loopback write floor: one frame written to every
// socket per message with a bare loop of write(2) calls. The writer's CPU
// time per write is in Result.Server.CPU (unit "write"), and what the
// readers received in Result.Fanout.
type FloorResult struct {
	Listen     string `json:"listen"`
	Sockets    int    `json:"sockets"`
	FrameBytes int    `json:"frame_bytes"` // header and envelope included
	Passes     int    `json:"passes"`      // messages: one pass writes one to every socket
	Writes     uint64 `json:"writes"`
	// Pass times: from the first write of a pass to the return of its
	// last, in milliseconds.
	PassMedian float64 `json:"pass_median_ms"`
	PassMax    float64 `json:"pass_max_ms"`
	PassMean   float64 `json:"pass_mean_ms"`
	// The writer's process CPU time within the passes only, and the
	// writing thread's alone, per write: Result.Server.CPU counts the
	// whole process from the first pass to the last, as the server's is
	// counted in fanout.
	InPassMicrosPerWrite float64 `json:"in_pass_us_per_write"`
	ThreadMicrosPerWrite float64 `json:"thread_us_per_write"`
	// ReaderProcs is how many child processes held the readers: never the
	// writer's own.
	ReaderProcs int `json:"reader_procs"`
}

// StormResult is the reconnect after every connection was dropped.
type StormResult struct {
	Dropped     int64 `json:"dropped"`
	Reconnected int64 `json:"reconnected"`
	GaveUp      int64 `json:"gave_up"`
	Attempts    int64 `json:"attempts"`
	Complete    bool  `json:"complete"`
	// Seconds runs from the drop to the last reconnect, when complete.
	Seconds float64 `json:"seconds"`
	// Refusals counts failed reconnect attempts by reason.
	Refusals map[string]int `json:"refusals,omitempty"`
	// Receivers is what the connections that stayed up got, when the run
	// had some.
	Receivers *StormReceivers `json:"receivers,omitempty"`
	// Resume is what the connections got when they resumed on history
	// channels.
	Resume *StormResume `json:"resume,omitempty"`
}

// StormResume is what a storm's connections received, on history
// channels published to from before the drop until the last was back,
// resuming with since= after it: every message exactly once when nothing
// was lost. CaughtUpSeconds runs from the drop to the last delivery.
// StreamReads is how many times the server read its history streams
// meanwhile (herald_history_reads_total), when its /metrics tells.
type StormResume struct {
	*FanoutResult
	CaughtUpSeconds float64 `json:"caught_up_seconds"`
	StreamReads     *int64  `json:"stream_reads,omitempty"`
}

// StormReceivers compares what the connections that stay up through a
// storm receive before it (Quiet) with what they receive while the
// dropped connections come back (During): published to at Rate, from the
// drop until the last one is back.
type StormReceivers struct {
	Conns  int           `json:"conns"`
	Rate   float64       `json:"rate"`
	Quiet  *FanoutResult `json:"quiet,omitempty"`
	During *FanoutResult `json:"during,omitempty"`
}

// WriteJSON writes r as indented JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes r as a table for people.
func (r *Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(name, format string, args ...any) {
		fmt.Fprintf(tw, "%s\t%s\n", name, fmt.Sprintf(format, args...))
	}
	layout := fmt.Sprintf("%d conns over %d channel%s", r.Conns, r.Channels, plural(r.Channels))
	if r.PerConn {
		layout += " (one per connection)"
	}
	if r.Hot {
		layout += " (half on one hot channel)"
	}
	if r.Storm != nil && r.Storm.Receivers != nil {
		layout += fmt.Sprintf(" and %d receivers on one more", r.Storm.Receivers.Conns)
	}
	layout += fmt.Sprintf(", %s format, %d process%s x %d loop%s", r.Format, r.Procs, pluralES(r.Procs), r.Loops, plural(r.Loops))
	if len(r.SourceIPs) > 0 {
		layout += ", from " + strings.Join(r.SourceIPs, ",")
	}
	target := r.URL
	if r.Scenario == Floor {
		target += " (the bench's own listener: no server)"
	}
	row("herald bench "+string(r.Scenario), "%s", target)
	row("setup", "%s", layout)

	c := r.Connect
	row("connected", "%d/%d upgraded in %s (%s/s), %d attempts, %d gave up",
		c.Upgraded, r.Conns, seconds(c.Seconds), count(c.PerSecond), c.Attempts, c.GaveUp)
	row("connect failures", "%s", reasons(c.Failures))

	if m := r.Server.Memory; m != nil {
		row("server RSS", "%s before, %s after with %d conns: %s per connection",
			bytesIEC(m.Before), bytesIEC(m.After), m.Conns, bytesPlain(m.PerConn))
		if m.KernelSockets > 0 {
			row("kernel slab", "%s more on this host for %d sockets (both ends of each connection): %s per socket",
				bytesIEC(m.KernelSlabDelta), m.KernelSockets, bytesPlain(m.KernelSlabPerSocket))
		}
	} else if r.Scenario == Idle {
		row("server RSS", "n/a (no --server-pid and no /metrics)")
	}
	if g := r.Server.Goroutines; g != nil {
		row("server goroutines", "%d before, %d with %d conns", g.Before, g.After, r.Connect.Upgraded)
	}
	if f := r.Fanout; f != nil {
		rate := "as fast as possible"
		switch {
		case len(r.Sweep) > 0:
			rate = fmt.Sprintf("over %d rates (below)", len(r.Sweep))
		case f.Rate > 0:
			rate = fmt.Sprintf("at %g msg/s", f.Rate)
		}
		verb := "published"
		if r.Scenario == Floor {
			verb = "written"
		}
		row(verb, "%d messages of %d B %s in %s", f.Published, f.Size, rate, seconds(f.PublishSeconds))
		row("delivered", "%d/%d (%.3f%%)", f.Delivered, f.Expected, f.DeliveredPct)
		row("missing / dup / out-of-order", "%d / %d / %d", f.Missing, f.Duplicated, f.OutOfOrder)
		row("throughput", "%s deliveries/s over %s (first publish to last delivery)", count(f.PerSecond), seconds(f.Seconds))
		l := f.Latency
		if l.Count > 0 {
			row("latency", "p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (%d samples)",
				millis(l.P50), millis(l.P90), millis(l.P99), millis(l.P999), millis(l.Max), l.Count)
		} else {
			row("latency", "n/a (nothing delivered)")
		}
		if f.Reads > 0 {
			row("messages per read", "%.2f (%d reads brought the first deliveries)", f.PerRead, f.Reads)
		}
		if f.PlainBytes > 0 {
			row("bytes on the wire", "%s of %s uncompressed (%.1f%%, %d frames compressed)",
				bytesIEC(int64(f.WireBytes)), bytesIEC(int64(f.PlainBytes)), 100*f.WireRatio, f.CompressedFrames)
		}
	}
	if fl := r.Floor; fl != nil {
		row("floor", "%d sockets, a %d-byte frame each per message, %d passes, %d writes", fl.Sockets, fl.FrameBytes, fl.Passes, fl.Writes)
		row("pass over all sockets", "median %s  max %s  mean %s", millis(fl.PassMedian), millis(fl.PassMax), millis(fl.PassMean))
		row("writer CPU in passes", "%.2f µs per write (process), %.2f µs (the writing thread alone)", fl.InPassMicrosPerWrite, fl.ThreadMicrosPerWrite)
	}
	if s := r.Storm; s != nil {
		back := "not all back"
		if s.Complete {
			back = "all back in " + seconds(s.Seconds)
		}
		row("storm", "%d dropped, %d reconnected in %d attempts, %d gave up: %s", s.Dropped, s.Reconnected, s.Attempts, s.GaveUp, back)
		row("storm refusals", "%s", reasons(s.Refusals))
		if rs := s.Resume; rs != nil && rs.FanoutResult != nil {
			f, l := rs.FanoutResult, rs.Latency
			reads := "n/a (no herald_history_reads_total)"
			if rs.StreamReads != nil {
				reads = strconv.FormatInt(*rs.StreamReads, 10)
			}
			row("resumed", "%d messages at %g msg/s: delivered %d/%d (%.3f%%), missing %d, dup %d, out of order %d; all caught up %s after the drop; p99 %s; stream reads %s",
				f.Published, f.Rate, f.Delivered, f.Expected, f.DeliveredPct, f.Missing, f.Duplicated, f.OutOfOrder,
				seconds(rs.CaughtUpSeconds), millis(l.P99), reads)
		}
		if rx := s.Receivers; rx != nil {
			for _, ph := range []struct {
				name string
				f    *FanoutResult
			}{{"receivers quiet", rx.Quiet}, {"receivers in storm", rx.During}} {
				if ph.f == nil {
					row(ph.name, "n/a (not measured)")
					continue
				}
				f, l := ph.f, ph.f.Latency
				row(ph.name, "%d conns, %d messages at %g msg/s in %s: delivered %d/%d (%.3f%%), missing %d, dup %d, p50 %s p99 %s max %s",
					rx.Conns, f.Published, rx.Rate, seconds(f.PublishSeconds), f.Delivered, f.Expected, f.DeliveredPct,
					f.Missing, f.Duplicated, millis(l.P50), millis(l.P99), millis(l.Max))
			}
		}
	}
	cpuLabel := "server CPU"
	if r.Scenario == Floor {
		cpuLabel = "writer CPU"
	}
	switch cpu := r.Server.CPU; {
	case cpu != nil && cpu.Count > 0:
		row(cpuLabel, "%.2f s: %.2f µs per %s (%d)", cpu.Seconds, cpu.MicrosPer, cpu.Unit, cpu.Count)
	case cpu != nil:
		row(cpuLabel, "%.2f s, no %s to divide it by", cpu.Seconds, cpu.Unit)
	default:
		row(cpuLabel, "n/a")
	}
	if r.Server.Source != "" {
		row("server figures from", "%s", r.Server.Source)
	}
	if len(r.ClosedByServer) > 0 {
		row("closed by server", "%s", reasons(r.ClosedByServer))
	}
	if r.OtherMessages > 0 {
		row("other messages", "%d", r.OtherMessages)
	}
	row("bench CPU", "%.2f s over %s", r.BenchCPUSeconds, seconds(r.Seconds))
	if r.TimedOut {
		row("INCOMPLETE", "the run was cut short (--timeout or an interrupt): the figures above are partial")
	}
	for _, n := range r.Notes {
		row("note", "%s", n)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return r.writeSweep(w)
}

// writeSweep writes a sweep's steps as a table of their own, one row per
// rate.
func (r *Result) writeSweep(w io.Writer) error {
	if len(r.Sweep) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\nsweep: %d conns, each rate for its own stretch of publishing, on the same connections\n", r.Conns)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "msg/s\tpublished\tdelivered\tmissing/dup/ooo\tp50\tp99\tserver CPU/delivery\tdeliveries/s\tmsgs/read\t")
	for _, s := range r.Sweep {
		p50, p99 := "n/a", "n/a"
		if s.Latency.Count > 0 {
			p50, p99 = millis(s.Latency.P50), millis(s.Latency.P99)
		}
		cpu := "n/a"
		if s.CPU != nil && s.CPU.Count > 0 {
			cpu = fmt.Sprintf("%.2f µs", s.CPU.MicrosPer)
		}
		perRead := "n/a"
		if s.Reads > 0 {
			perRead = fmt.Sprintf("%.2f", s.PerRead)
		}
		fmt.Fprintf(tw, "%g\t%d\t%.3f%%\t%d/%d/%d\t%s\t%s\t%s\t%s\t%s\t\n", s.Rate, s.Published, s.DeliveredPct,
			s.Missing, s.Duplicated, s.OutOfOrder, p50, p99, cpu, count(s.PerSecond), perRead)
	}
	return tw.Flush()
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func pluralES(n int) string {
	if n == 1 {
		return ""
	}
	return "es"
}

// reasons lists counts by reason, most frequent first.
func reasons(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func seconds(s float64) string {
	if s < 1 {
		return fmt.Sprintf("%.0f ms", s*1000)
	}
	return fmt.Sprintf("%.2f s", s)
}

func millis(ms float64) string {
	if ms < 1 {
		return fmt.Sprintf("%.0f µs", ms*1000)
	}
	return fmt.Sprintf("%.1f ms", ms)
}

// count writes n with thousands separators.
func count(n float64) string {
	s := fmt.Sprintf("%.0f", n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func bytesIEC(n int64) string {
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

func bytesPlain(n float64) string {
	return fmt.Sprintf("%.0f B", n)
}
