package push

import "testing"

// BenchmarkEnvelope encodes one message's envelope frame into a reused
// buffer, as Hub.MessageSeq does once per message for every subscriber:
// without and with the stream sequence of a history channel.
func BenchmarkEnvelope(b *testing.B) {
	data := []byte(`{"sym":"AAPL","px":187.25,"ts":1732180000000,"seq":123456789012}`)
	for _, bc := range []struct {
		name string
		seq  uint64
	}{{"plain", 0}, {"seq", 1234567}} {
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, 0, 256)
			b.ReportAllocs()
			for range b.N {
				buf, _ = appendEnvelopeFrame(buf[:0], "prices.AAPL", data, bc.seq)
			}
		})
	}
}

// The envelope of a history channel names the sequence between the
// channel and the data.
func TestEnvelopeSeq(t *testing.T) {
	for _, tt := range []struct {
		seq  uint64
		want string
	}{
		{0, `{"channel":"chat.a","data":{"n":1}}`},
		{42, `{"channel":"chat.a","seq":42,"data":{"n":1}}`},
	} {
		frame, at := appendEnvelopeFrame(nil, "chat.a", []byte(`{"n":1}`), tt.seq)
		if got := string(frame[at+2:]); got != tt.want { // past the 2-byte header of a short frame
			t.Errorf("seq %d: %s, want %s", tt.seq, got, tt.want)
		}
	}
}
