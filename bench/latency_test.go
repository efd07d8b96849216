package bench

import (
	"testing"
)

// Histograms from different loops and processes merge into the same
// percentiles as one histogram of every value.
func TestLatencyMergeAcrossEncoding(t *testing.T) {
	all := newLatencyHistogram()
	parts := []*struct{ lo, hi int64 }{{1, 1000}, {500, 80_000}, {2_000_000, 2_000_100}}
	merged := newLatencyHistogram()
	for _, p := range parts {
		h := newLatencyHistogram()
		for v := p.lo; v <= p.hi; v++ {
			recordLatency(h, v)
			recordLatency(all, v)
		}
		enc, err := encodeLatency(h)
		if err != nil {
			t.Fatal(err)
		}
		if err := mergeLatency(merged, enc); err != nil {
			t.Fatal(err)
		}
	}
	got, want := summarizeLatency(merged), summarizeLatency(all)
	if got != want {
		t.Fatalf("merged %+v, want %+v", got, want)
	}
	if want.Count != 1000+79_501+101 || want.Max < 2000 || want.P50 > 80 {
		t.Fatalf("summary %+v", want)
	}
}

func TestRecordLatencyClamps(t *testing.T) {
	h := newLatencyHistogram()
	recordLatency(h, -5)                 // clocks read on different cores
	recordLatency(h, latencyMaxMicros*3) // a hang
	if h.TotalCount() != 2 || h.Min() != 1 || !h.ValuesAreEquivalent(h.Max(), latencyMaxMicros) {
		t.Fatalf("count %d min %d max %d", h.TotalCount(), h.Min(), h.Max())
	}
}

func TestMergeLatencyRejectsGarbage(t *testing.T) {
	if err := mergeLatency(newLatencyHistogram(), "not a histogram"); err == nil {
		t.Fatal("no error")
	}
	if err := mergeLatency(newLatencyHistogram(), ""); err != nil {
		t.Fatalf("an empty report is no latency, not an error: %v", err)
	}
}

func TestRecordLatencyAllocatesNothing(t *testing.T) {
	h := newLatencyHistogram()
	if n := testing.AllocsPerRun(1000, func() { recordLatency(h, 12345) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}
