package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// An overload sweep runs the steady fanout once per rate on the same
// connections, one step after another: publish at the rate for Duration,
// wait for the deliveries, and mark. A mark asks every shard for its
// counts so far and the latencies since the previous mark; the step's
// figures are the difference between two marks. Draining before each mark
// keeps one step's deliveries out of the next.

// snapshot is the shards' marks added up.
type snapshot struct {
	channels []channelCounts // since the start
	reads    uint64          // since the start
	last     int64           // the last delivery, Unix nanoseconds
	hist     *hdrhistogram.Histogram
}

// markShards asks every shard for its counts, in parallel.
func (r *runner) markShards(ctx context.Context) (*snapshot, error) {
	marks, errs := r.eachShard(func(sh shardHandle) (*shardResult, error) { return sh.mark(ctx) })
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	snap := &snapshot{channels: make([]channelCounts, len(r.published)), hist: newLatencyHistogram()}
	var errs2 []error
	for _, m := range marks {
		for k := range min(len(snap.channels), len(m.Channels)) {
			snap.channels[k].Conns += m.Channels[k].Conns
			snap.channels[k].Unique += m.Channels[k].Unique
			snap.channels[k].Duplicates += m.Channels[k].Duplicates
			snap.channels[k].Late += m.Channels[k].Late
		}
		snap.reads += m.Reads
		snap.last = max(snap.last, m.LastDelivery)
		if err := mergeLatency(snap.hist, m.Latency); err != nil {
			errs2 = append(errs2, err)
		}
	}
	return snap, errors.Join(errs2...)
}

// sweep warms the connections up and runs one steady step per rate.
func (r *runner) sweep(ctx context.Context) error {
	cfg := &r.cfg
	if err := r.warmup(ctx); err != nil {
		return err
	}
	prev, err := r.markShards(ctx) // forgets nothing measured: warm-ups record no latency
	if err != nil {
		return err
	}
	r.stepLatency = newLatencyHistogram()
	total := &FanoutResult{Size: cfg.Size}
	r.res.Fanout = total
	var cpu time.Duration
	haveCPU := true
	defer r.step.Store("")
	for i, rate := range cfg.Rates {
		r.step.Store(fmt.Sprintf("step %d/%d (%g msg/s)", i+1, len(cfg.Rates), rate))
		published := append([]uint64(nil), r.published...)
		before, haveBefore := r.sample(ctx)
		r.phase.Store("publish")
		start := time.Now()
		if i == 0 {
			r.publishStart = start
		}
		sent, pubErr := r.publishSteady(ctx, start, rate, cfg.Messages)
		pubSeconds := time.Since(start).Seconds()
		total.Published += sent
		total.PublishSeconds += pubSeconds
		var err error
		if pubErr == nil {
			r.phase.Store("deliver")
			err = r.awaitDeliveries(ctx)
		}
		after, haveAfter := r.sample(ctx)
		// Mark even when the step was cut short, to report what it got.
		markCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishGrace/2)
		cur, merr := r.markShards(markCtx)
		cancel()
		if merr != nil {
			return errors.Join(pubErr, err, fmt.Errorf("mark after step %d: %w", i+1, merr))
		}
		step := SweepStep{FanoutResult: FanoutResult{Published: sent, Size: cfg.Size, Rate: rate, PublishSeconds: pubSeconds}}
		stepTotals(&step.FanoutResult, prev, cur, published, r.published, start)
		if haveBefore && haveAfter {
			step.CPU = cpuResult(after.CPU-before.CPU, step.Delivered, "delivery")
			cpu += after.CPU - before.CPU
		} else {
			haveCPU = false
		}
		r.stepLatency.Merge(cur.hist)
		r.res.Sweep = append(r.res.Sweep, step)
		prev = cur
		if err := errors.Join(pubErr, err); err != nil {
			return err
		}
	}
	if haveCPU {
		var delivered uint64
		for _, s := range r.res.Sweep {
			delivered += s.Delivered
		}
		r.res.Server.CPU = cpuResult(cpu, delivered, "delivery")
	}
	return nil
}

// stepTotals fills f with what arrived between two marks, against what
// was published between them.
func stepTotals(f *FanoutResult, prev, cur *snapshot, pubBefore, pubAfter []uint64, start time.Time) {
	channels := make([]channelCounts, len(cur.channels))
	published := make([]uint64, len(cur.channels))
	for k := range channels {
		c, p := cur.channels[k], prev.channels[k]
		channels[k] = channelCounts{
			Conns:      c.Conns,
			Unique:     c.Unique - min(c.Unique, p.Unique),
			Duplicates: c.Duplicates - min(c.Duplicates, p.Duplicates),
			Late:       c.Late - min(c.Late, p.Late),
		}
		published[k] = pubAfter[k] - pubBefore[k]
	}
	fanoutTotals(f, channels, published, cur.hist)
	f.setReads(cur.reads - min(cur.reads, prev.reads))
	if d := time.Duration(cur.last - start.UnixNano()); f.Delivered > 0 && d > 0 {
		f.Seconds = d.Seconds()
		f.PerSecond = float64(f.Delivered) / d.Seconds()
	}
}
