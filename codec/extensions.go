package codec

import "bytes"

// Deflate is the outcome of permessage-deflate negotiation (RFC 7692) for
// one connection. The zero value means the extension was not negotiated.
//
// Herald always answers server_no_context_takeover and
// client_no_context_takeover: every message is compressed, and inflated,
// on its own. That is what lets one compressed frame go to every socket
// that negotiated the extension (RFC 7692 section 7.1.1.1 lets a server
// add server_no_context_takeover unasked), and why no connection keeps an
// LZ77 window between messages.
type Deflate struct {
	// WindowBits is the base-2 logarithm of the LZ77 window Herald may use
	// when compressing for this connection: 15 (32 KiB) unless the client
	// asked for less with server_max_window_bits; 0 when not negotiated.
	WindowBits uint8
}

// Negotiated reports whether the connection uses permessage-deflate.
func (d Deflate) Negotiated() bool { return d.WindowBits != 0 }

// The extension answers Herald sends: one per window a client can ask for
// (index WindowBits-8), so that the answer is a constant and appending it
// allocates nothing.
var deflateAnswers = [8]string{
	"permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8",
	"permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9",
	"permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10",
	"permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=11",
	"permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12",
	"permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=13",
	"permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=14",
	// A client that did not ask for a window gets no server_max_window_bits
	// back (RFC 7692 section 7.1.2.1 allows it only in answer to an offer).
	"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
}

// answer is the Sec-WebSocket-Extensions value that accepts d. windowAsked
// says whether the accepted offer named server_max_window_bits, which then
// must be echoed even at 15.
func (d Deflate) answer(windowAsked bool) string {
	if d.WindowBits == 15 && windowAsked {
		return "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15"
	}
	return deflateAnswers[d.WindowBits-8]
}

// NegotiateDeflate picks the first acceptable permessage-deflate offer of
// the request's Sec-WebSocket-Extensions headers (every occurrence, in
// order) and returns what it agrees to, with whether the offer named
// server_max_window_bits. An offer is declined, and the next one tried, when
// it is malformed or carries a parameter Herald cannot honour (RFC 7692
// section 5: unknown or repeated parameters, values out of range, a value
// on a parameter that takes none). Offers of other extensions are skipped.
// It allocates nothing.
func NegotiateDeflate(r *Request) (d Deflate, windowAsked bool) {
	if r.multi&hExtensions == 0 {
		return negotiateList(r.Extensions)
	}
	rest := r.header
	for {
		var list []byte
		var ok bool
		if list, rest, ok = nextHeaderValue(rest, "sec-websocket-extensions"); !ok {
			return Deflate{}, false
		}
		if d, asked := negotiateList(list); d.Negotiated() {
			return d, asked
		}
	}
}

// negotiateList is NegotiateDeflate over one header value.
func negotiateList(list []byte) (Deflate, bool) {
	for len(list) > 0 {
		var offer []byte
		offer, list = nextElement(list)
		if d, asked, ok := parseDeflateOffer(offer); ok {
			return d, asked
		}
	}
	return Deflate{}, false
}

// nextElement splits off the first comma-separated element of an
// extension list. Commas inside quoted strings do not split; an
// unterminated quote runs to the end of the list (and makes that element
// malformed).
func nextElement(list []byte) (element, rest []byte) {
	quoted := false
	for i := 0; i < len(list); i++ {
		switch c := list[i]; {
		case quoted && c == '\\':
			i++ // the escaped byte, whatever it is
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			return trimOWS(list[:i]), list[i+1:]
		}
	}
	return trimOWS(list), nil
}

// parseDeflateOffer reads one extension offer, "name *(; param[=value])".
// ok is true when it is a permessage-deflate offer Herald accepts.
func parseDeflateOffer(offer []byte) (d Deflate, windowAsked, ok bool) {
	name, params := cutParam(offer)
	if !equalFoldASCII(name, "permessage-deflate") {
		return Deflate{}, false, false
	}
	const (
		seenServerNoCtx = 1 << iota
		seenClientNoCtx
		seenServerBits
		seenClientBits
	)
	seen := 0
	d.WindowBits = 15
	for params != nil {
		var p []byte
		p, params = cutParam(params)
		key, value, hasValue, valid := splitParam(p)
		if !valid {
			return Deflate{}, false, false
		}
		var bit int
		switch {
		case equalFoldASCII(key, "server_no_context_takeover"):
			bit = seenServerNoCtx
			valid = !hasValue
		case equalFoldASCII(key, "client_no_context_takeover"):
			bit = seenClientNoCtx
			valid = !hasValue
		case equalFoldASCII(key, "server_max_window_bits"):
			bit = seenServerBits
			var bits uint8
			bits, valid = windowBits(value)
			valid = valid && hasValue
			d.WindowBits = bits
			windowAsked = true
		case equalFoldASCII(key, "client_max_window_bits"):
			// Herald inflates with a full 32 KiB window, which reads
			// whatever smaller window the client picks: any valid value,
			// or none, is fine and needs no answer.
			bit = seenClientBits
			if hasValue {
				_, valid = windowBits(value)
			}
		default:
			return Deflate{}, false, false // an extension parameter Herald does not know
		}
		if !valid || seen&bit != 0 {
			return Deflate{}, false, false
		}
		seen |= bit
	}
	return d, windowAsked, true
}

// cutParam splits s at its first ';', trimming both sides. rest is nil when
// there is no ';'.
func cutParam(s []byte) (first, rest []byte) {
	i := bytes.IndexByte(s, ';')
	if i < 0 {
		return trimOWS(s), nil
	}
	return trimOWS(s[:i]), s[i+1:]
}

// splitParam splits "key", "key=token" or `key="quoted"` (RFC 7692
// section 5.1 allows a quoted-string wherever a token may be). The
// quoted value comes back unquoted only when it holds no escapes, which
// no valid window size needs; valid is false for anything malformed.
func splitParam(p []byte) (key, value []byte, hasValue, valid bool) {
	eq := bytes.IndexByte(p, '=')
	if eq < 0 {
		return p, nil, false, isToken(p)
	}
	key, value = trimOWS(p[:eq]), trimOWS(p[eq+1:])
	if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
		value = value[1 : len(value)-1]
	}
	return key, value, true, isToken(key) && isToken(value)
}

// windowBits parses a window size parameter: a decimal 8 to 15 with no
// leading zero (RFC 7692 section 7.1.2.1).
func windowBits(v []byte) (uint8, bool) {
	switch {
	case len(v) == 1 && v[0] >= '8' && v[0] <= '9':
		return v[0] - '0', true
	case len(v) == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5':
		return 10 + v[1] - '0', true
	}
	return 0, false
}
