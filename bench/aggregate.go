package bench

import (
	"errors"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// aggregate fills the result from the shards' reports. published is the
// number of measured messages published on each channel; extra holds
// latencies the shards already handed over (a sweep's marks), or is nil.
func (res *Result) aggregate(shards []*shardResult, published []uint64, publishStart time.Time, extra *hdrhistogram.Histogram) error {
	var errs []error
	c := &res.Connect
	c.Failures = map[string]int{}
	var connectStart, connectEnd, stormStart, stormEnd, lastDelivery int64
	channels := make([]channelCounts, len(published))
	hist := newLatencyHistogram()
	if extra != nil {
		hist.Merge(extra)
	}
	var reads, wire, plain, zipped uint64
	var storm StormResult
	storm.Refusals = map[string]int{}
	closed := map[string]int{}
	for _, s := range shards {
		c.Upgraded += s.EverUp
		c.GaveUp += s.GaveUp
		c.Attempts += s.Attempts
		addCounts(c.Failures, s.Failures)
		addCounts(storm.Refusals, s.StormFailures)
		addCounts(closed, s.Closed)
		connectStart = minTime(connectStart, s.ConnectStart)
		connectEnd = max(connectEnd, s.ConnectEnd)
		stormStart = minTime(stormStart, s.StormStart)
		stormEnd = max(stormEnd, s.StormEnd)
		lastDelivery = max(lastDelivery, s.LastDelivery)
		storm.Attempts += s.StormAttempts
		storm.Dropped += s.StormDropped
		storm.Reconnected += s.StormUp
		storm.GaveUp += s.StormGaveUp
		for k := range min(len(channels), len(s.Channels)) {
			channels[k].Conns += s.Channels[k].Conns
			channels[k].Unique += s.Channels[k].Unique
			channels[k].Duplicates += s.Channels[k].Duplicates
			channels[k].Late += s.Channels[k].Late
		}
		res.OtherMessages += s.Other
		reads += s.Reads
		wire += s.WireBytes
		plain += s.PlainBytes
		zipped += s.Compressed
		if err := mergeLatency(hist, s.Latency); err != nil {
			errs = append(errs, err)
		}
	}
	if connectEnd > connectStart && connectStart > 0 {
		c.Seconds = time.Duration(connectEnd - connectStart).Seconds()
		c.PerSecond = float64(c.Upgraded) / c.Seconds
	}
	if len(closed) > 0 {
		res.ClosedByServer = closed
	}
	if res.Scenario == Storm {
		storm.Complete = storm.Dropped > 0 && storm.Reconnected == storm.Dropped
		if storm.Complete && stormEnd > stormStart {
			storm.Seconds = time.Duration(stormEnd - stormStart).Seconds()
		}
		res.Storm = &storm
	}
	if res.Scenario == Fanout || res.Scenario == Floor {
		if res.Fanout == nil {
			res.Fanout = &FanoutResult{}
		}
		fanoutTotals(res.Fanout, channels, published, hist)
		res.Fanout.setReads(reads)
		res.Fanout.setBytes(wire, plain, zipped)
		if lastDelivery > 0 && !publishStart.IsZero() {
			if d := time.Duration(lastDelivery - publishStart.UnixNano()); d > 0 {
				res.Fanout.Seconds = d.Seconds()
				res.Fanout.PerSecond = float64(res.Fanout.Delivered) / d.Seconds()
			}
		}
	}
	return errors.Join(errs...)
}

// fanoutTotals compares what each channel's connections received with
// what was published on it.
func fanoutTotals(f *FanoutResult, channels []channelCounts, published []uint64, hist *hdrhistogram.Histogram) {
	for k, ch := range channels {
		want := published[k] * uint64(ch.Conns)
		f.Expected += want
		f.Delivered += ch.Unique
		f.Duplicated += ch.Duplicates
		f.OutOfOrder += ch.Late
		if ch.Unique < want {
			f.Missing += want - ch.Unique
		}
	}
	f.DeliveredPct = percent(f.Delivered, f.Expected)
	f.Latency = summarizeLatency(hist)
}

// setBytes records the data frames' bytes on the wire and uncompressed,
// and how many arrived compressed.
func (f *FanoutResult) setBytes(wire, plain, compressed uint64) {
	f.WireBytes, f.PlainBytes, f.CompressedFrames = wire, plain, compressed
	if plain > 0 {
		f.WireRatio = float64(wire) / float64(plain)
	}
}

// setReads records how many reads the first deliveries took.
func (f *FanoutResult) setReads(reads uint64) {
	f.Reads = reads
	if reads > 0 {
		f.PerRead = float64(f.Delivered) / float64(reads)
	}
}

func addCounts(into, from map[string]int) {
	for k, v := range from {
		into[k] += v
	}
}

// minTime is the earlier of two Unix times, 0 meaning none.
func minTime(a, b int64) int64 {
	switch {
	case a == 0:
		return b
	case b == 0:
		return a
	}
	return min(a, b)
}
