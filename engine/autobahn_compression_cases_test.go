package engine_test

// The Autobahn|Testsuite cases 12.x and 13.x (case/case12_x_x.py): the
// fuzzing client negotiates permessage-deflate with the offers of each
// case, sends COUNT compressed messages of LEN octets cut from a test data
// file (wrapping around its end), auto-fragmented to AUTOFRAGSIZE, one at a
// time, and expects each echoed back, type, length and SHA-1 equal, within
// WAITSECS; then closes with 1000 and expects a clean close. A server that
// does not agree to the extension is UNIMPLEMENTED.
//
// Autobahn's test data files (Goethe's Faust, the Lena bitmap, a PDF, a
// JSON and an HTML file) are not in this repository: abCompressionData
// generates stand-ins of the same kind and size, deterministically, so
// that each compresses like its original (text and markup well, the bitmap
// somewhat, the PDF barely).
//
// Each case sends 1000 messages, as Autobahn does, when
// HERALD_AUTOBAHN_FULL=1; otherwise abCompressionCount messages, fewer for
// large ones (abCompressionBudget octets a case, at least 2 messages), so
// that the 216 cases fit a -race run of the package. The verdict rules are
// the same either way.

import (
	"bytes"
	"crypto/sha1"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"
)

// abCompressionCount is how many messages a 12.x/13.x case sends in the
// default run, and abCompressionBudget how many octets at most.
const (
	abCompressionCount  = 20
	abCompressionBudget = 256 << 10
)

// abMsgSizes is MSG_SIZES: payload length, message count, case timeout in
// seconds, auto-fragment size.
var abMsgSizes = []struct{ n, count, wait, frag int }{
	{16, 1000, 60, 0}, {64, 1000, 60, 0}, {256, 1000, 120, 0}, {1024, 1000, 240, 0},
	{4096, 1000, 480, 0}, {8192, 1000, 480, 0}, {16384, 1000, 480, 0}, {32768, 1000, 480, 0},
	{65536, 1000, 480, 0}, {131072, 1000, 480, 0},
	{8192, 1000, 480, 256}, {16384, 1000, 480, 256}, {32768, 1000, 480, 256}, {65536, 1000, 480, 256},
	{131072, 1000, 480, 256}, {131072, 1000, 480, 1024}, {131072, 1000, 480, 4096}, {131072, 1000, 480, 32768},
}

// abTestData is an entry of WS_COMPRESSION_TESTDATA, in the order the
// published reports number 12.1 to 12.5.
type abTestData struct {
	name, desc string
	binary     bool
	size       int // the original file's size
}

var abTestDataSets = []abTestData{
	{"json_data1", "Large JSON data file", false, 194237},
	{"lena512", "Lena Picture, Bitmap 512x512 bw", true, 263222},
	{"gutenberg_faust", "Human readable text, Goethe's Faust I (German)", true, 222218},
	{"html_data1", "Large HTML file", false, 191013},
	{"ooms", "A larger PDF", true, 1042328},
}

var (
	abDataOnce sync.Once
	abData     map[string][]byte
)

// abCompressionData returns the stand-in for a test data file.
func abCompressionData(name string) []byte {
	abDataOnce.Do(func() {
		abData = map[string][]byte{}
		for _, td := range abTestDataSets {
			abData[td.name] = abGenerate(td.name, td.size)
		}
	})
	return abData[name]
}

func abGenerate(name string, size int) []byte {
	r := rand.New(rand.NewPCG(7, uint64(len(name))))
	// ASCII only: a message is cut at any octet, and a cut inside a
	// multi-octet character would make a text message invalid UTF-8.
	words := strings.Fields("Habe nun ach Philosophie Juristerei und Medizin und leider auch Theologie " +
		"durchaus studiert mit heissem Bemuehn Da steh ich nun ich armer Tor und bin so klug als wie zuvor " +
		"Heisse Magister heisse Doktor gar und ziehe schon an die zehen Jahr herauf herab und quer und krumm")
	var b bytes.Buffer
	switch name {
	case "gutenberg_faust":
		for b.Len() < size {
			for range 6 + r.IntN(8) {
				b.WriteString(words[r.IntN(len(words))])
				b.WriteByte(' ')
			}
			b.WriteString(".\r\n")
		}
	case "json_data1":
		b.WriteString("[")
		for i := 0; b.Len() < size; i++ {
			fmt.Fprintf(&b, `{"id":%d,"name":"%s %s","email":"user%d@example.com","active":%v,"balance":%d.%02d,"tags":["%s","%s"],"about":"%s %s %s"},`+"\n",
				i, words[r.IntN(len(words))], words[r.IntN(len(words))], r.IntN(100000), r.IntN(2) == 0, r.IntN(10000), r.IntN(100),
				words[r.IntN(len(words))], words[r.IntN(len(words))], words[r.IntN(len(words))], words[r.IntN(len(words))], words[r.IntN(len(words))])
		}
	case "html_data1":
		b.WriteString("<!DOCTYPE html><html><head><title>Autobahn</title></head><body>\n")
		for b.Len() < size {
			fmt.Fprintf(&b, "<div class=\"row\"><a href=\"/item/%d\">%s</a> <span class=\"c%d\">%s %s</span></div>\n",
				r.IntN(100000), words[r.IntN(len(words))], r.IntN(8), words[r.IntN(len(words))], words[r.IntN(len(words))])
		}
	case "lena512":
		// A BMP header, then a 512x512 8-bit image of smooth gradients
		// with noise, like a photograph.
		b.WriteString("BM")
		b.Write(make([]byte, 1076))
		for y := range 512 {
			for x := range 512 {
				b.WriteByte(byte((x*y)/1024 + (x+y)/4 + r.IntN(12)))
			}
		}
	case "ooms":
		// A PDF is mostly compressed streams: random bytes between short
		// runs of PDF syntax.
		for i := 0; b.Len() < size; i++ {
			fmt.Fprintf(&b, "%d 0 obj\n<< /Length 4096 /Filter /FlateDecode >>\nstream\n", i)
			chunk := make([]byte, 4096)
			for j := range chunk {
				chunk[j] = byte(r.Uint32())
			}
			b.Write(chunk)
			b.WriteString("\nendstream\nendobj\n")
		}
	}
	out := b.Bytes()
	if len(out) > size {
		out = out[:size]
	}
	return out
}

func abCompressionCases() []abCase {
	full := os.Getenv("HERALD_AUTOBAHN_FULL") == "1"
	count := func(n, size int) int {
		if full {
			return n
		}
		return min(n, abCompressionCount, max(2, abCompressionBudget/size))
	}
	var cs []abCase
	for j, td := range abTestDataSets {
		for i, sz := range abMsgSizes {
			cs = append(cs, abCompressionCase(fmt.Sprintf("12.%d.%d", j+1, i+1),
				fmt.Sprintf("Send %d compressed messages each of payload size %d, auto-fragment to %d octets. Use default permessage-deflate offer.", count(sz.count, sz.n), sz.n, sz.frag),
				td, []abDeflateOffer{abDefaultOffer()}, sz.n, count(sz.count, sz.n), sz.frag, time.Duration(sz.wait)*time.Second))
		}
	}
	offer := func(noContext bool, bits int) abDeflateOffer {
		o := abDefaultOffer()
		o.requestNoContextTakeover, o.requestMaxWindowBits = noContext, bits
		return o
	}
	deflateParams := [][]abDeflateOffer{
		{abDefaultOffer()},
		{offer(true, 0)},
		{offer(false, 8)},
		{offer(false, 15)},
		{offer(true, 8)},
		{offer(true, 15)},
		{offer(true, 8), offer(true, 0), abDefaultOffer()},
	}
	for j, offers := range deflateParams {
		for i, sz := range abMsgSizes {
			cs = append(cs, abCompressionCase(fmt.Sprintf("13.%d.%d", j+1, i+1),
				fmt.Sprintf("Send %d compressed messages each of payload size %d, auto-fragment to %d octets. Use permessage-deflate offers %q.", count(sz.count, sz.n), sz.n, sz.frag, abOfferHeader(offers)),
				abTestDataSets[0], offers, sz.n, count(sz.count, sz.n), sz.frag, time.Duration(sz.wait)*time.Second))
		}
	}
	return cs
}

// abCompressionCase is Case12_X_X / Case13_X_X.
func abCompressionCase(id, desc string, td abTestData, offers []abDeflateOffer, size, count, frag int, wait time.Duration) abCase {
	return abCase{id: id, desc: desc, offers: offers, reportTime: true, deadline: wait + abDefaultDeadline, open: func(s *abSession) {
		s.expectedClose = abCleanNormalClose()
		if s.pmce == nil {
			s.behavior, s.result = abUnimplemented, "The server did not agree to permessage-deflate."
			s.sendCloseFrame(abCloseNormal, nil, false)
			return
		}
		if o := offers[0]; o.requestMaxWindowBits != 0 && len(offers) == 1 && s.pmce.serverMaxWindowBits == 0 {
			s.notes = append(s.notes, fmt.Sprintf("the server accepted an offer of server_max_window_bits=%d without answering the parameter (RFC 7692 section 7.1.2.1)", o.requestMaxWindowBits))
		}
		s.behavior, s.result = abFailed, fmt.Sprintf("Case did not finish within %v.", wait)
		s.closeAfter(wait)
		data := abCompressionData(td.name)
		rx, sent := 0, 0
		var want [sha1.Size]byte
		sendOne := func() {
			from, to := rx, (rx+size)%len(data)
			var msg []byte
			if to > from {
				msg = data[from:to]
			} else {
				msg = append(bytes.Clone(data[from:]), data[:to]...)
			}
			rx = to
			want = sha1.Sum(msg)
			s.sendMessage(msg, td.binary, frag)
			sent++
		}
		s.onMessage = func(got []byte, binary bool) {
			switch {
			case binary != td.binary:
				s.behavior, s.result = abFailed, fmt.Sprintf("Echo'ed message type differs from what I sent (got binary %v, expected binary %v).", binary, td.binary)
			case len(got) != size:
				s.behavior, s.result = abFailed, fmt.Sprintf("Echo'ed message length differs from what I sent (got length %d, expected length %d).", len(got), size)
			case sha1.Sum(got) != want:
				s.behavior, s.result = abFailed, "Echo'ed message contents differs from what I sent."
			case sent < count:
				sendOne()
				return
			default:
				s.behavior, s.result = abOK, "Ok, received all echo'ed messages in time."
			}
			s.sendCloseFrame(abCloseNormal, nil, false)
		}
		sendOne()
	}}
}
