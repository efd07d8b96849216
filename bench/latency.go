package bench

import (
	"fmt"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds into HDR histograms with three
// significant digits, from 1 µs to 10 minutes: a fixed-size array per
// event loop, so recording allocates nothing and costs a few nanoseconds.
const (
	latencyMaxMicros = int64(10 * time.Minute / time.Microsecond)
	latencyDigits    = 3
)

func newLatencyHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, latencyMaxMicros, latencyDigits)
}

// recordLatency records one latency, clamped into the histogram's range:
// a message can appear to arrive before it was sent when the publisher's
// and the receiver's clocks are read on different cores, and anything
// past ten minutes is a hang, not a latency.
func recordLatency(h *hdrhistogram.Histogram, micros int64) {
	_ = h.RecordValue(min(max(micros, 1), latencyMaxMicros))
}

// encodeLatency packs a histogram for a child's report: HDR's compressed
// base64 encoding, a few kilobytes at most.
func encodeLatency(h *hdrhistogram.Histogram) (string, error) {
	b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return "", fmt.Errorf("encode latency histogram: %w", err)
	}
	return string(b), nil
}

// mergeLatency adds an encoded histogram to into.
func mergeLatency(into *hdrhistogram.Histogram, encoded string) error {
	if encoded == "" {
		return nil
	}
	h, err := hdrhistogram.Decode([]byte(encoded))
	if err != nil {
		return fmt.Errorf("decode latency histogram: %w", err)
	}
	if dropped := into.Merge(h); dropped > 0 {
		return fmt.Errorf("merge latency histogram: %d values out of range", dropped)
	}
	return nil
}

// LatencyResult summarises publish-to-receive latency, in milliseconds.
type LatencyResult struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

func summarizeLatency(h *hdrhistogram.Histogram) LatencyResult {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	if h.TotalCount() == 0 {
		return LatencyResult{}
	}
	return LatencyResult{
		Count: h.TotalCount(),
		Mean:  h.Mean() / 1000,
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
	}
}
