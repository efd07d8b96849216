package engine_test

// permessage-deflate for the Autobahn harness: what autobahn's
// PerMessageDeflate (autobahn/websocket/compress_deflate.py) does for the
// fuzzing client of cases 12.x and 13.x. The offers are built as its
// PerMessageDeflateOffer.getExtensionString builds them, the server's answer
// is read as PerMessageDeflateResponse.parse reads it, and messages are
// compressed whole, then cut into autoFragmentSize frames, RSV1 on the
// first. Inflating takes the server's context (its LZ77 window) over from
// message to message unless it answered server_no_context_takeover.

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// abDeflateOffer is autobahn's PerMessageDeflateOffer.
type abDeflateOffer struct {
	acceptNoContextTakeover, acceptMaxWindowBits bool
	requestNoContextTakeover                     bool
	requestMaxWindowBits                         int // 0: none
}

// abDefaultOffer is PerMessageDeflateOffer(): the client accepts both
// parameters and requests nothing.
func abDefaultOffer() abDeflateOffer {
	return abDeflateOffer{acceptNoContextTakeover: true, acceptMaxWindowBits: true}
}

func (o abDeflateOffer) String() string {
	s := "permessage-deflate"
	if o.acceptNoContextTakeover {
		s += "; client_no_context_takeover"
	}
	if o.acceptMaxWindowBits {
		s += "; client_max_window_bits"
	}
	if o.requestNoContextTakeover {
		s += "; server_no_context_takeover"
	}
	if o.requestMaxWindowBits != 0 {
		s += fmt.Sprintf("; server_max_window_bits=%d", o.requestMaxWindowBits)
	}
	return s
}

func abOfferHeader(offers []abDeflateOffer) string {
	var parts []string
	for _, o := range offers {
		parts = append(parts, o.String())
	}
	return strings.Join(parts, ", ")
}

// abDeflate is the agreed extension on one connection.
type abDeflate struct {
	serverNoContext, clientNoContext bool
	serverMaxWindowBits              int // as answered; 0 when absent
	clientMaxWindowBits              int

	w      *flate.Writer // the client's compressor; kept across messages unless clientNoContext
	wbuf   bytes.Buffer
	window []byte // the server's last 32 KiB, when it keeps its context
}

// abParseDeflateAnswer reads the server's Sec-WebSocket-Extensions against
// what was offered. An empty answer means no extension.
func abParseDeflateAnswer(answer string, offers []abDeflateOffer) (*abDeflate, error) {
	answer = strings.TrimSpace(answer)
	if answer == "" {
		return nil, nil
	}
	if len(offers) == 0 {
		return nil, fmt.Errorf("server wants extension %q we did not offer", answer)
	}
	if strings.Contains(answer, ",") {
		return nil, fmt.Errorf("server answered several extensions: %q", answer)
	}
	params := strings.Split(answer, ";")
	if strings.TrimSpace(params[0]) != "permessage-deflate" {
		return nil, fmt.Errorf("server answered extension %q we did not offer", params[0])
	}
	d := &abDeflate{}
	for _, p := range params[1:] {
		k, v, hasValue := strings.Cut(strings.TrimSpace(p), "=")
		k, v = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(v), `"`)
		bits := func() (int, error) {
			n, err := strconv.Atoi(v)
			if err != nil || n < 8 || n > 15 {
				return 0, fmt.Errorf("invalid value %q for %s", v, k)
			}
			return n, nil
		}
		var err error
		switch k {
		case "server_no_context_takeover":
			d.serverNoContext = true
		case "client_no_context_takeover":
			d.clientNoContext = true
		case "server_max_window_bits":
			d.serverMaxWindowBits, err = bits()
		case "client_max_window_bits":
			if !hasValue {
				return nil, fmt.Errorf("client_max_window_bits without a value in the answer")
			}
			d.clientMaxWindowBits, err = bits()
		default:
			return nil, fmt.Errorf("illegal extension parameter %q in the answer", k)
		}
		if err != nil {
			return nil, err
		}
	}
	// PerMessageDeflateResponseAccept: an answer the client did not allow
	// for is refused.
	accepted := false
	for _, o := range offers {
		if (d.clientMaxWindowBits == 0 || o.acceptMaxWindowBits) &&
			(d.serverMaxWindowBits == 0 || o.requestMaxWindowBits == 0 || d.serverMaxWindowBits <= o.requestMaxWindowBits) {
			accepted = true
		}
	}
	if !accepted {
		return nil, fmt.Errorf("answer %q fits none of the offers", answer)
	}
	return d, nil
}

// compress is compressMessageData: the whole message, tail dropped.
func (d *abDeflate) compress(payload []byte) []byte {
	if d.w == nil || d.clientNoContext {
		d.wbuf.Reset()
		d.w, _ = flate.NewWriter(&d.wbuf, flate.DefaultCompression)
	}
	d.wbuf.Reset()
	_, _ = d.w.Write(payload)
	_ = d.w.Flush()
	return bytes.TrimSuffix(bytes.Clone(d.wbuf.Bytes()), []byte{0, 0, 0xff, 0xff})
}

// inflate is decompressMessageData followed by the end of the message.
func (d *abDeflate) inflate(z []byte) ([]byte, error) {
	var dict []byte
	if !d.serverNoContext {
		dict = d.window
	}
	r := flate.NewReaderDict(io.MultiReader(bytes.NewReader(z), bytes.NewReader([]byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff})), dict)
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if !d.serverNoContext {
		d.window = append(d.window, out...)
		if len(d.window) > 32<<10 {
			d.window = bytes.Clone(d.window[len(d.window)-32<<10:])
		}
	}
	return out, nil
}
