package bench

import (
	"fmt"
	"testing"
)

func TestPayloadRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		seq  uint64
		ts   int64
		size int
	}{
		{1, 1732180000000123, 64},
		{0, 1732180000000123, 64},
		{999999, 1732180000000123, 64},
		{1 << 40, 1, 100},
		{7, 1732180000000123, 0}, // smaller than possible: no padding
		{7, 1732180000000123, 4096},
	} {
		p := AppendPayload(nil, tc.seq, tc.ts, tc.size)
		if need := MinPayloadSize(tc.seq); tc.size >= need && len(p) != tc.size {
			t.Errorf("seq %d size %d: payload is %d bytes: %s", tc.seq, tc.size, len(p), p)
		}
		seq, ts, ok := ParsePayload(p)
		if !ok || seq != tc.seq || ts != tc.ts {
			t.Errorf("%s: got %d %d %v", p, seq, ts, ok)
		}
		// Inside Herald's default envelope.
		env := fmt.Appendf(nil, `{"channel":"bench.abc.3","data":%s}`, p)
		if seq, ts, ok := ParsePayload(env); !ok || seq != tc.seq || ts != tc.ts {
			t.Errorf("%s: got %d %d %v", env, seq, ts, ok)
		}
	}
}

func TestPayloadIs64BytesForTheReferenceRun(t *testing.T) {
	// 200 messages of 64 B, with today's timestamps.
	if need := MinPayloadSize(200); need > 64 {
		t.Fatalf("a 64-byte payload cannot carry sequence 200: needs %d", need)
	}
	p := AppendPayload(nil, 200, 1732180000000123, 64)
	if len(p) != 64 || p[0] != '{' || p[len(p)-1] != '}' {
		t.Fatalf("%d bytes: %s", len(p), p)
	}
}

func TestParsePayloadRejects(t *testing.T) {
	for _, p := range []string{
		``,
		`{"op":"error","code":"bad_request"}`,
		`{"seq":,"ts":1}`,
		`{"seq":12}`,
		`{"seq":12,"ts":}`,
		`{"seq":12,"tx":5}`,
		`{"seq":99999999999999999999999,"ts":5}`,
		`{"seq":1,"ts":99999999999999999999}`,
	} {
		if seq, ts, ok := ParsePayload([]byte(p)); ok {
			t.Errorf("%q parsed as %d %d", p, seq, ts)
		}
	}
}

func TestParsePayloadAllocatesNothing(t *testing.T) {
	env := fmt.Appendf(nil, `{"channel":"bench.abc.0","data":%s}`, AppendPayload(nil, 123, 1732180000000123, 64))
	buf := make([]byte, 0, 64)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, _, ok := ParsePayload(env); !ok {
			t.Fatal("not parsed")
		}
		buf = AppendPayload(buf[:0], 123, 1732180000000123, 64)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per message", allocs)
	}
}

func BenchmarkParsePayloadEnvelope(b *testing.B) {
	env := fmt.Appendf(nil, `{"channel":"bench.abc.0","data":%s}`, AppendPayload(nil, 123, 1732180000000123, 64))
	b.SetBytes(int64(len(env)))
	for b.Loop() {
		ParsePayload(env)
	}
}

func TestEnvelopeSeq(t *testing.T) {
	for _, tc := range []struct {
		frame string
		want  uint64
		ok    bool
	}{
		{`{"channel":"bench.x.0","seq":1234,"data":{"seq":7,"ts":1,"pad":""}}`, 1234, true},
		{`{"channel":"bench.x.0","data":{"seq":7,"ts":1,"pad":""}}`, 0, false},        // not a history channel
		{`{"channel":"bench.x.0","data":{"a":"b","seq":9}}`, 0, false},                // a payload's own field
		{`{"op":"ack","channel":"bench.x.0","recovered":true,"epoch":"1"}`, 0, false}, // not a message
		{`{"channel":"bench.x.0","seq":x,"data":1}`, 0, false},
	} {
		got, ok := envelopeSeq([]byte(tc.frame))
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: %d %v, want %d %v", tc.frame, got, ok, tc.want, tc.ok)
		}
	}
}
