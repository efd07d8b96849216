package push

import "testing"

// An event is the envelope's lines as data lines, behind the id of a
// history channel's message; a line break of any kind (\n, \r\n, \r)
// starts a new data line, which an EventSource joins back with \n.
func TestAppendEvent(t *testing.T) {
	for _, tt := range []struct {
		name, envelope, epoch string
		seq                   uint64
		want                  string
	}{
		{"plain", `{"channel":"a","data":1}`, "", 0, "data: {\"channel\":\"a\",\"data\":1}\n\n"},
		{"history", `{"channel":"a","seq":7,"data":1}`, "1767225600000000000", 7,
			"id: 1767225600000000000:7\ndata: {\"channel\":\"a\",\"seq\":7,\"data\":1}\n\n"},
		{"lines", "{\"channel\":\"a\",\"data\":{\n\"x\": 1,\r\n\"y\": 2\r}}", "", 0,
			"data: {\"channel\":\"a\",\"data\":{\ndata: \"x\": 1,\ndata: \"y\": 2\ndata: }}\n\n"},
		{"trailing break", "{}\n", "", 0, "data: {}\ndata: \n\n"},
	} {
		if got := string(appendEvent(nil, []byte(tt.envelope), tt.epoch, tt.seq)); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

// Last-Event-ID is client input: only EPOCH:SEQ or SEQ, digits, is taken.
func TestParseEventID(t *testing.T) {
	for _, tt := range []struct {
		id    string
		epoch string
		seq   uint64
		ok    bool
	}{
		{"1767225600000000000:42", "1767225600000000000", 42, true},
		{"42", "", 42, true},
		{"0", "", 0, true},
		{"", "", 0, false},
		{":42", "", 0, false},
		{"1:", "", 0, false},
		{"x:42", "", 0, false},
		{"1:+42", "", 0, false},
		{"1:-42", "", 0, false},
		{"1:2:3", "", 0, false},
		{"123456789012345678901:1", "", 0, false}, // an epoch longer than any int64
		{"1:99999999999999999999", "", 0, false},  // past uint64
		{"1 :2", "", 0, false},
		{"1:2\x00", "", 0, false},
	} {
		epoch, seq, ok := parseEventID([]byte(tt.id))
		if ok != tt.ok || string(epoch) != tt.epoch || seq != tt.seq {
			t.Errorf("%q: %q %d %v, want %q %d %v", tt.id, epoch, seq, ok, tt.epoch, tt.seq, tt.ok)
		}
	}
}

// BenchmarkEvent formats one message's event into a reused buffer, as
// Hub.MessageSeq does once per message for every event stream.
func BenchmarkEvent(b *testing.B) {
	env, _ := appendEnvelopeFrame(nil, "prices.AAPL", []byte(`{"sym":"AAPL","px":187.25,"ts":1732180000000,"seq":123456789012}`), 1234567)
	envelope := env[envelopeHeadroom:]
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for range b.N {
		buf = appendEvent(buf[:0], envelope, "1767225600000000000", 1234567)
	}
}
