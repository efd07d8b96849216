package push

import (
	"sync/atomic"
	"time"
)

// LatencyBuckets are the upper bounds of the delivery latency histogram:
// from a message's arrival from the bus to its last write to a socket.
var LatencyBuckets = [...]time.Duration{
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// histogram counts durations into LatencyBuckets. Each loop has its own,
// so observing touches no memory another loop writes.
type histogram struct {
	counts [len(LatencyBuckets) + 1]atomic.Uint64 // the last one: over every bound
	sum    atomic.Int64                           // nanoseconds
}

func (h *histogram) observe(d time.Duration) {
	i := 0
	for i < len(LatencyBuckets) && d > LatencyBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// Histogram is a snapshot of a latency histogram: Counts[i] is the number
// of observations in bucket i (not cumulative), the last past every bound.
type Histogram struct {
	Counts [len(LatencyBuckets) + 1]uint64
	Sum    time.Duration
}

func (h *histogram) addTo(out *Histogram) {
	for i := range h.counts {
		out.Counts[i] += h.counts[i].Load()
	}
	out.Sum += time.Duration(h.sum.Load())
}
