package codec

import (
	"strings"
	"testing"
)

const (
	answerFull = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
)

// TestNegotiateDeflate has one row per rule of RFC 7692 section 7.1 that
// Herald applies to an offer, and per shape of header it must read.
func TestNegotiateDeflate(t *testing.T) {
	for _, tt := range []struct {
		name    string
		headers []string // Sec-WebSocket-Extensions values, one header each
		bits    uint8    // 0: declined
		answer  string   // the 101's Sec-WebSocket-Extensions; "" for none
	}{
		{"no header", nil, 0, ""},
		{"bare offer", []string{"permessage-deflate"}, 15, answerFull},
		{"chrome", []string{"permessage-deflate; client_max_window_bits"}, 15, answerFull},
		{"name case-insensitive", []string{"PerMessage-Deflate"}, 15, answerFull},
		{"client asks for no context takeover", []string{"permessage-deflate; client_no_context_takeover"}, 15, answerFull},
		{"client asks server for no context takeover", []string{"permessage-deflate; server_no_context_takeover"}, 15, answerFull},
		{"client window value", []string{"permessage-deflate; client_max_window_bits=10"}, 15, answerFull},
		{"server window 8 honoured", []string{"permessage-deflate; server_max_window_bits=8"}, 8, answerFull + "; server_max_window_bits=8"},
		{"server window 15 echoed", []string{"permessage-deflate; server_max_window_bits=15"}, 15, answerFull + "; server_max_window_bits=15"},
		{"quoted window", []string{`permessage-deflate; server_max_window_bits="12"`}, 12, answerFull + "; server_max_window_bits=12"},
		{"OWS everywhere", []string{" permessage-deflate ;  server_max_window_bits = 9 ; client_max_window_bits "}, 9, answerFull + "; server_max_window_bits=9"},
		{"autobahn 13.5 offer", []string{"permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; server_max_window_bits=8"}, 8, answerFull + "; server_max_window_bits=8"},
		{"server window without value", []string{"permessage-deflate; server_max_window_bits"}, 0, ""},
		{"server window 7", []string{"permessage-deflate; server_max_window_bits=7"}, 0, ""},
		{"server window 16", []string{"permessage-deflate; server_max_window_bits=16"}, 0, ""},
		{"leading zero", []string{"permessage-deflate; server_max_window_bits=010"}, 0, ""},
		{"client window 20", []string{"permessage-deflate; client_max_window_bits=20"}, 0, ""},
		{"value on a flag", []string{"permessage-deflate; server_no_context_takeover=1"}, 0, ""},
		{"unknown parameter", []string{"permessage-deflate; mux"}, 0, ""},
		{"repeated parameter", []string{"permessage-deflate; client_no_context_takeover; client_no_context_takeover"}, 0, ""},
		{"other extension only", []string{"x-webkit-deflate-frame"}, 0, ""},
		{"empty parameter", []string{"permessage-deflate;"}, 0, ""},
		{"unterminated quote", []string{`permessage-deflate; server_max_window_bits="10`}, 0, ""},
		{"declined offer, next accepted", []string{"permessage-deflate; server_max_window_bits=99, permessage-deflate; server_max_window_bits=10"}, 10, answerFull + "; server_max_window_bits=10"},
		{"autobahn 13.7: first acceptable wins", []string{"permessage-deflate; server_no_context_takeover; server_max_window_bits=8, permessage-deflate; server_no_context_takeover, permessage-deflate"}, 8, answerFull + "; server_max_window_bits=8"},
		{"comma inside quotes does not split", []string{`foo; x="a,permessage-deflate", bar`}, 0, ""},
		{"after another extension", []string{"x-foo; y=1, permessage-deflate"}, 15, answerFull},
		{"second header", []string{"x-foo", "permessage-deflate; server_max_window_bits=11"}, 11, answerFull + "; server_max_window_bits=11"},
		{"first header wins", []string{"permessage-deflate; server_max_window_bits=9", "permessage-deflate"}, 9, answerFull + "; server_max_window_bits=9"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var edits []string
			for _, h := range tt.headers {
				edits = append(edits, "Sec-WebSocket-Extensions: "+h)
			}
			u := &Upgrader{Deflate: true}
			var r Request
			req := upgradeRequest("GET /ws HTTP/1.1", edits...)
			if err := ParseRequest(req, &r); err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			out, agreed, err := u.Answer(nil, &r)
			d := agreed.Deflate
			if err != nil {
				t.Fatalf("Answer: %v", err)
			}
			if d.WindowBits != tt.bits || d.Negotiated() != (tt.bits != 0) {
				t.Errorf("WindowBits = %d, want %d", d.WindowBits, tt.bits)
			}
			resp, _ := readResponse(t, out)
			if got := resp.Header.Get("Sec-WebSocket-Extensions"); got != tt.answer {
				t.Errorf("answer %q, want %q", got, tt.answer)
			}
			// Without Deflate, and through Upgrade, nothing is negotiated.
			plain, _ := (&Upgrader{}).Upgrade(nil, &r)
			viaUpgrade, _ := u.Upgrade(nil, &r)
			for _, b := range [][]byte{plain, viaUpgrade} {
				if strings.Contains(string(b), "Extensions") {
					t.Errorf("Upgrade answered an extension: %q", b)
				}
			}
		})
	}
}

func TestNegotiateDeflateAllocs(t *testing.T) {
	u := &Upgrader{Deflate: true}
	for name, req := range map[string][]byte{
		"chrome":  chromeRequest,
		"firefox": firefoxRequest,
		"repeated": upgradeRequest("GET /ws HTTP/1.1", "Sec-WebSocket-Extensions: x-foo",
			"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=\"9\""),
	} {
		var r Request
		dst := make([]byte, 0, 512)
		allocs := testing.AllocsPerRun(100, func() {
			if err := ParseRequest(req, &r); err != nil {
				t.Fatal(err)
			}
			dst, _, _ = u.Answer(dst[:0], &r)
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per negotiation, want 0", name, allocs)
		}
	}
}

// FuzzNegotiateDeflate feeds arbitrary extension header values through
// negotiation: it must never panic, and what it accepts must be a window
// of 8 to 15 whose answer parses back as an acceptable offer.
func FuzzNegotiateDeflate(f *testing.F) {
	for _, s := range []string{
		"permessage-deflate; client_max_window_bits",
		"permessage-deflate; server_max_window_bits=\"10\", permessage-deflate",
		"x; a=\"b,c\\\"d\", permessage-deflate;server_no_context_takeover",
		"permessage-deflate; server_max_window_bits=8; client_max_window_bits=15",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		d, asked := negotiateList([]byte(value))
		if !d.Negotiated() {
			return
		}
		if d.WindowBits < 8 || d.WindowBits > 15 {
			t.Fatalf("%q: window bits %d", value, d.WindowBits)
		}
		back, _ := negotiateList([]byte(d.answer(asked)))
		if back != d {
			t.Fatalf("%q: answer %q reads back as %+v, want %+v", value, d.answer(asked), back, d)
		}
	})
}
