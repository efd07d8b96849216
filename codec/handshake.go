package codec

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"strconv"
	"unsafe"
)

// DefaultMaxHeadSize is the request-head cap used when the caller sets none (8 KiB).
//
// The codec does not enforce it: HeadLength and ParseRequest work on whatever
// the caller has buffered. The caller answers 431 (Request Header Fields Too
// Large) when HeadLength still reports 0 after this many bytes, which bounds
// both the memory a connection can hold before upgrading and the work a
// slow-drip client can cause.
const DefaultMaxHeadSize = 8 << 10

// HeadLength reports the length of the complete request head at the start of b,
// through the blank line that ends it, or 0 if b does not hold a complete head yet.
//
// from is where scanning may resume: the caller passes how many bytes it had
// already scanned on a previous call (0 at first), so one-byte arrivals do not
// rescan from zero and a head that trickles in costs O(n) overall, not O(n²).
// HeadLength backs up two bytes from there, enough to catch a terminator that
// straddles the old end. Bytes after the head (a pipelined first frame) are not
// part of it.
//
// The blank line may end in CRLF or in a bare LF: "\r\n\r\n", "\n\n" and the
// mixed "\n\r\n" all end a head, since RFC 9112 section 2.2 lets a recipient
// accept LF alone as a line terminator.
func HeadLength(b []byte, from int) int {
	// A head ends at the first LF followed by an empty line ("\n" or "\r\n").
	// A terminator the previous scan of b[:from] did not see ends past from,
	// so its leading LF sits at from-2 or later.
	i := min(max(from-2, 0), len(b))
	for {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return 0
		}
		i += j + 1 // i is now just past an LF
		if i < len(b) && b[i] == '\n' {
			return i + 1
		}
		if i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n' {
			return i + 2
		}
	}
}

// Request is a parsed HTTP/1.1 request head. Its slices alias the bytes passed to
// ParseRequest and are valid only as long as those bytes are.
//
// Only the headers the WebSocket handshake needs are kept; every other header
// line is syntax-checked and skipped, so a Request is a fixed-size value the
// engine can keep per connection and reuse without allocating.
type Request struct {
	// Method is the request method, case-sensitive as sent ("GET").
	Method []byte
	// Target is the request-target exactly as sent. Path and RawQuery split it
	// at its first '?' (without the '?'); for an absolute-form target
	// ("http://host/path?q") they cover only the path and query.
	Target, Path, RawQuery []byte
	// ProtoMajor and ProtoMinor are the digits of "HTTP/x.y"; ParseRequest
	// accepts only major version 1.
	ProtoMajor, ProtoMinor int

	// Header values with optional whitespace trimmed from both ends. Empty
	// when the header is absent. For the list headers that may repeat
	// (Upgrade, Connection, Sec-WebSocket-Protocol, Sec-WebSocket-Extensions)
	// the field holds the first occurrence; token checks and subprotocol
	// selection still see every occurrence.
	//
	// For an absolute-form target, Host holds the target's authority, which
	// RFC 9112 section 3.2.2 says overrides the Host header.
	Host, Upgrade, Connection, Key, Version, Origin, Protocol, Extensions []byte

	seen  headerSet // recognised headers that occurred at least once
	multi headerSet // repeatable headers that occurred more than once

	// Token checks folded over every occurrence of the list headers, so that
	// "Connection: keep-alive" followed by "Connection: Upgrade" counts.
	connectionUpgrade bool // some Connection header lists "upgrade"
	upgradeWebSocket  bool // some Upgrade header lists "websocket"

	// header is the header section of the head (after the request line,
	// through the blank line), kept so that a repeated list header can be
	// walked again without storing every occurrence.
	header []byte
}

// headerSet is a bit set of the headers a Request records.
type headerSet uint8

const (
	hHost headerSet = 1 << iota
	hUpgrade
	hConnection
	hKey
	hVersion
	hOrigin
	hProtocol
	hExtensions
)

// IsUpgrade reports whether the request asks for a protocol upgrade at all
// (an Upgrade header or a Sec-WebSocket-Key is present). The engine uses it to tell
// a WebSocket attempt from a plain HTTP request on the same port.
func (r *Request) IsUpgrade() bool {
	return r.seen&(hUpgrade|hKey) != 0 || len(r.Upgrade) > 0 || len(r.Key) > 0
}

// ParseRequest parses a complete head (as delimited by HeadLength) into r,
// resetting it first. Bytes after the blank line that ends the head are ignored.
//
// It is strict where leniency would let two parsers disagree about a message
// (RFC 9112): exactly one SP between the parts of the request line, no
// whitespace before a header colon, no obsolete line folding, no control
// characters other than HTAB in header values (so no bare CR), no second
// Host, Sec-WebSocket-Key, Sec-WebSocket-Version or Origin header, and a Host
// header on every HTTP/1.1 request. Lines may end in CRLF or a bare LF. An
// empty line before the request line, which RFC 9112 section 2.2 lets a server
// skip, is refused: the engine closes every connection after a plain HTTP
// answer, so such a line can only come from a confused client. Every
// such error is an *HTTPError with status 400, except an HTTP major version
// other than 1 ("HTTP/2.0", "HTTP/0.9"), which is 505 HTTP Version Not Supported.
//
// The request-target must be origin-form ("/path?query"). Absolute-form
// ("http://host/path", also https, ws and wss) is accepted as RFC 9112
// requires of servers: Path and RawQuery come from its path and Host from its
// authority. Asterisk-form ("*") and authority-form ("host:port") are 400.
//
// ParseRequest does not allocate; on error r holds whatever was parsed so far.
func ParseRequest(head []byte, r *Request) error {
	*r = Request{}
	line, rest, ok := nextLine(head)
	if !ok {
		return errIncompleteHead
	}
	authority, err := parseRequestLine(line, r)
	if err != nil {
		return err
	}
	r.header = rest
	for {
		line, rest, ok = nextLine(rest)
		if !ok {
			return errIncompleteHead
		}
		if len(line) == 0 {
			break
		}
		if err := r.parseHeaderLine(line); err != nil {
			return err
		}
	}
	r.header = r.header[:len(r.header)-len(rest)]

	// RFC 9112 section 3.2: a server must answer 400 to an HTTP/1.1 request
	// without a Host header, whatever its target.
	if r.seen&hHost == 0 && r.ProtoMinor >= 1 {
		return errMissingHost
	}
	if authority != nil {
		r.Host = authority
	}
	return nil
}

// nextLine splits off the first line of b, without its LF or CRLF ending.
// ok is false when b holds no LF.
func nextLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, b, false
	}
	line, rest = b[:i], b[i+1:]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, rest, true
}

// parseRequestLine parses "METHOD SP request-target SP HTTP/x.y" into r.
// authority is the authority of an absolute-form target, nil otherwise.
func parseRequestLine(line []byte, r *Request) (authority []byte, err error) {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 < 0 {
		return nil, errMalformedRequestLine
	}
	sp2 := bytes.IndexByte(line[sp1+1:], ' ')
	if sp1 == 0 || sp2 <= 0 {
		return nil, errMalformedRequestLine // missing part or doubled space
	}
	sp2 += sp1 + 1
	method, target, version := line[:sp1], line[sp1+1:sp2], line[sp2+1:]

	if bytes.IndexByte(version, ' ') >= 0 {
		return nil, errMalformedRequestLine // extra or trailing space
	}
	if !isToken(method) {
		return nil, errInvalidMethod
	}
	if len(version) != len("HTTP/x.y") || string(version[:5]) != "HTTP/" ||
		!isDigit(version[5]) || version[6] != '.' || !isDigit(version[7]) {
		return nil, errMalformedVersion
	}
	r.Method = method
	r.ProtoMajor = int(version[5] - '0')
	r.ProtoMinor = int(version[7] - '0')
	if r.ProtoMajor != 1 {
		return nil, errVersionNotSupported
	}

	for _, c := range target {
		if c <= ' ' || c >= 0x7f {
			return nil, errInvalidTarget
		}
	}
	r.Target = target
	path := target
	if target[0] != '/' {
		if path, authority = splitAbsoluteForm(target); path == nil {
			return nil, errUnsupportedTarget
		}
	}
	if q := bytes.IndexByte(path, '?'); q >= 0 {
		r.Path, r.RawQuery = path[:q], path[q+1:]
	} else {
		r.Path = path
	}
	return authority, nil
}

// splitAbsoluteForm splits an absolute-form request-target with an http,
// https, ws or wss scheme into its authority and its path (with query). It
// returns a nil path for anything else, including an empty authority or an
// empty path, which Path could not represent without allocating "/".
func splitAbsoluteForm(target []byte) (path, authority []byte) {
	colon := bytes.IndexByte(target, ':')
	if colon < 0 {
		return nil, nil
	}
	switch scheme := target[:colon]; {
	case equalFoldASCII(scheme, "http"), equalFoldASCII(scheme, "https"),
		equalFoldASCII(scheme, "ws"), equalFoldASCII(scheme, "wss"):
	default:
		return nil, nil
	}
	rest := target[colon+1:]
	if len(rest) < 2 || rest[0] != '/' || rest[1] != '/' {
		return nil, nil
	}
	rest = rest[2:]
	slash := bytes.IndexByte(rest, '/')
	if slash <= 0 || bytes.IndexByte(rest[:slash], '?') >= 0 {
		return nil, nil
	}
	return rest[slash:], rest[:slash]
}

// parseHeaderLine checks one non-empty header line and records it in r if it
// is one of the headers the handshake needs.
func (r *Request) parseHeaderLine(line []byte) error {
	if line[0] == ' ' || line[0] == '\t' {
		// RFC 9112 section 5.2: obs-fold; also whitespace between the
		// request line and the first header (section 2.2).
		return errObsFold
	}
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return errMalformedHeaderLine
	}
	if colon == 0 {
		return errEmptyHeaderName
	}
	name := line[:colon]
	if !isToken(name) {
		if c := name[len(name)-1]; c == ' ' || c == '\t' {
			return errSpaceBeforeColon
		}
		return errInvalidHeaderName
	}
	value := trimOWS(line[colon+1:])
	for _, c := range value {
		if c < ' ' && c != '\t' || c == 0x7f {
			return errInvalidHeaderValue
		}
	}

	// The recognised names all differ in length, so one comparison each.
	var h headerSet
	switch len(name) {
	case len("Host"):
		if !equalFoldASCII(name, "host") {
			return nil
		}
		h = hHost
	case len("Origin"):
		if !equalFoldASCII(name, "origin") {
			return nil
		}
		h = hOrigin
	case len("Upgrade"):
		if !equalFoldASCII(name, "upgrade") {
			return nil
		}
		h = hUpgrade
		r.upgradeWebSocket = r.upgradeWebSocket || hasToken(value, "websocket")
	case len("Connection"):
		if !equalFoldASCII(name, "connection") {
			return nil
		}
		h = hConnection
		r.connectionUpgrade = r.connectionUpgrade || hasToken(value, "upgrade")
	case len("Sec-WebSocket-Key"):
		if !equalFoldASCII(name, "sec-websocket-key") {
			return nil
		}
		h = hKey
	case len("Sec-WebSocket-Version"):
		if !equalFoldASCII(name, "sec-websocket-version") {
			return nil
		}
		h = hVersion
	case len("Sec-WebSocket-Protocol"):
		if !equalFoldASCII(name, "sec-websocket-protocol") {
			return nil
		}
		h = hProtocol
	case len("Sec-WebSocket-Extensions"):
		if !equalFoldASCII(name, "sec-websocket-extensions") {
			return nil
		}
		h = hExtensions
	default:
		return nil
	}

	if r.seen&h != 0 {
		switch h {
		case hHost:
			return errDuplicateHost
		case hKey:
			return errDuplicateKey
		case hVersion:
			return errDuplicateVersion
		case hOrigin:
			return errDuplicateOrigin
		}
		r.multi |= h // a list header: the first value stays
		return nil
	}
	r.seen |= h
	switch h {
	case hHost:
		r.Host = value
	case hOrigin:
		r.Origin = value
	case hUpgrade:
		r.Upgrade = value
	case hConnection:
		r.Connection = value
	case hKey:
		r.Key = value
	case hVersion:
		r.Version = value
	case hProtocol:
		r.Protocol = value
	case hExtensions:
		r.Extensions = value
	}
	return nil
}

// Header returns the trimmed value of the first header called name
// (ASCII, any case), or nil when the request has none: for the headers a
// Request does not keep, such as Authorization, which CheckUpgrade hooks
// read. It allocates nothing; the value is a view of the request's bytes.
func (r *Request) Header(name string) []byte {
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return r.headerFold(name)
		}
	}
	value, _, _ := nextHeaderValue(r.header, name)
	return value
}

// headerFold is Header for a name that is not all lowercase.
func (r *Request) headerFold(name string) []byte {
	var buf [64]byte
	if len(name) > len(buf) {
		return nil // no header Herald reads is that long
	}
	lower := buf[:len(name)]
	for i := range len(name) {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	value, _, _ := nextHeaderValue(r.header, unsafe.String(&lower[0], len(lower)))
	return value
}

// nextHeaderValue finds the next header line named name (lowercase) in a
// header section ParseRequest accepted and returns its trimmed value and the
// lines after it. ok is false when there is none.
func nextHeaderValue(header []byte, name string) (value, rest []byte, ok bool) {
	rest = header
	for {
		var line []byte
		if line, rest, ok = nextLine(rest); !ok || len(line) == 0 {
			return nil, nil, false
		}
		if len(line) > len(name) && line[len(name)] == ':' && equalFoldASCII(line[:len(name)], name) {
			return trimOWS(line[len(name)+1:]), rest, true
		}
	}
}

// NextToken returns the first comma-separated token of list, OWS-trimmed, and the rest
// (for walking Connection/Upgrade/Sec-WebSocket-Protocol values without allocating).
//
// Empty elements ("a, , b") come back as empty tokens, which callers skip;
// walk a list with "for len(list) > 0 { tok, list = NextToken(list) }".
// Quoted strings are not understood, so a comma inside quotes (possible in
// Sec-WebSocket-Extensions parameters) splits there.
func NextToken(list []byte) (token, rest []byte) {
	if i := bytes.IndexByte(list, ','); i >= 0 {
		return trimOWS(list[:i]), list[i+1:]
	}
	return trimOWS(list), nil
}

// hasToken reports whether the comma-separated list holds token
// (lowercase), compared case-insensitively.
func hasToken(list []byte, token string) bool {
	for len(list) > 0 {
		var t []byte
		t, list = NextToken(list)
		if equalFoldASCII(t, token) {
			return true
		}
	}
	return false
}

// HTTPError is an HTTP error answer to a request: the status, a one-line reason sent as
// the text/plain body, and extra header lines (each ending in "\r\n"), e.g.
// "Sec-WebSocket-Version: 13\r\n" on a 426 or "Retry-After: 1\r\n" on a 503.
//
// The errors this package returns are shared values: compare them by Status,
// never modify them.
type HTTPError struct {
	Status int
	Reason string
	Header string
}

// Error returns the status and reason, e.g. "http 400: missing Sec-WebSocket-Key".
func (e *HTTPError) Error() string {
	return "http " + strconv.Itoa(e.Status) + ": " + e.Reason
}

// AppendTo appends the full HTTP/1.1 response (status line, Content-Type: text/plain; charset=utf-8,
// Content-Length, Connection: close, e.Header, blank line, Reason + "\n").
func (e *HTTPError) AppendTo(dst []byte) []byte {
	dst = appendResponseHead(dst, e.Status, "text/plain; charset=utf-8", e.Header, len(e.Reason)+1)
	dst = append(dst, e.Reason...)
	return append(dst, '\n')
}

// AppendResponse appends a complete HTTP/1.1 response with a body; header holds extra
// header lines each ending in "\r\n" (may be empty). Always sends Content-Length and "Connection: close".
// Used for plain HTTP routes (/healthz, 404s, later /metrics and a demo page).
//
// The connection is meant to be closed after the response, which is what
// lets the engine ignore keep-alive and pipelined plain requests. Content-Type
// is left out when contentType is empty. Status must have three digits; 1xx,
// 204 and 304 responses cannot carry a body or, for 1xx and 204, a
// Content-Length (RFC 9110 section 8.6), so do not send them with this.
func AppendResponse(dst []byte, status int, contentType, header string, body []byte) []byte {
	dst = appendResponseHead(dst, status, contentType, header, len(body))
	return append(dst, body...)
}

// appendResponseHead appends a response's status line and headers through
// the blank line.
func appendResponseHead(dst []byte, status int, contentType, header string, contentLength int) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	dst = append(dst, statusText(status)...)
	dst = append(dst, "\r\n"...)
	if contentType != "" {
		dst = append(dst, "Content-Type: "...)
		dst = append(dst, contentType...)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, int64(contentLength), 10)
	dst = append(dst, "\r\nConnection: close\r\n"...)
	dst = append(dst, header...)
	return append(dst, "\r\n"...)
}

// statusText returns the reason phrase for the statuses Herald sends, or ""
// (an empty reason phrase is valid HTTP/1.1). A local table keeps net/http
// and its dependencies out of this package.
func statusText(code int) string {
	switch code {
	case 101:
		return "Switching Protocols"
	case 200:
		return "OK"
	case 204:
		return "No Content"
	case 301:
		return "Moved Permanently"
	case 302:
		return "Found"
	case 304:
		return "Not Modified"
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 408:
		return "Request Timeout"
	case 413:
		return "Request Entity Too Large"
	case 426:
		return "Upgrade Required"
	case 429:
		return "Too Many Requests"
	case 431:
		return "Request Header Fields Too Large"
	case 500:
		return "Internal Server Error"
	case 501:
		return "Not Implemented"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	case 505:
		return "HTTP Version Not Supported"
	}
	return ""
}

// Upgrader validates WebSocket opening handshakes (RFC 6455 section 4.2.1) and writes the answer.
// The zero Upgrader (or a nil *Upgrader) accepts every origin and selects no
// subprotocol. Upgrade does not modify the Upgrader, so one may be shared by
// every event loop as long as its hooks are safe for concurrent use.
type Upgrader struct {
	// CheckOrigin reports whether a request carrying this Origin may connect (answer 403 if not).
	// nil allows every origin. Called only when an Origin header is present.
	//
	// Origin is sent by browsers, which is the point: it stops other sites'
	// pages from opening connections with the user's cookies. Non-browser
	// clients can send any Origin or none.
	CheckOrigin func(origin []byte) bool

	// SelectProtocol picks the subprotocol to answer with from the client's offered
	// Sec-WebSocket-Protocol list (raw comma-separated value; use NextToken to walk it) and returns it,
	// or nil for none. nil func means no subprotocol is ever selected. The returned bytes must be one of the offered tokens.
	//
	// It is called only when the client offered a list. If the client sent
	// several Sec-WebSocket-Protocol headers (rare: browsers send one), it is
	// called with each header's value in order until it selects a token.
	// A selection that is not one of the offered tokens is a server bug and
	// fails the handshake with 500 rather than sending it.
	SelectProtocol func(offered []byte) []byte

	// Deflate accepts permessage-deflate (RFC 7692) when the client offers
	// it: Answer then returns what was agreed (see NegotiateDeflate).
	Deflate bool
}

// websocketGUID is the key suffix of RFC 6455 section 1.3.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// Upgrade validates r as a WebSocket opening handshake and, if it is one, appends the
// 101 Switching Protocols answer (Upgrade: websocket, Connection: Upgrade,
// Sec-WebSocket-Accept, and Sec-WebSocket-Protocol when one was selected) to dst.
// Otherwise it returns dst unchanged and an *HTTPError, checking in this order:
//
//   - method not GET: 400
//   - HTTP version below 1.1: 400
//   - missing or empty Host: 400
//   - Upgrade missing or without the token "websocket" (case-insensitive): 400
//   - Connection missing or without the token "upgrade" in any Connection header: 400
//   - Sec-WebSocket-Key missing or not base64 of exactly 16 bytes: 400
//   - Sec-WebSocket-Version missing or not exactly "13": 426 with
//     "Sec-WebSocket-Version: 13" (RFC 6455 section 4.4 tells the client
//     which version to retry with)
//   - Origin present and refused by CheckOrigin: 403
//   - SelectProtocol returned a token the client did not offer: 500
//
// Extensions are not negotiated: the answer carries no Sec-WebSocket-Extensions,
// which RFC 6455 reads as "none"; Answer is Upgrade with permessage-deflate.
// Upgrade allocates nothing beyond dst's growth.
func (u *Upgrader) Upgrade(dst []byte, r *Request) ([]byte, error) {
	dst, _, _, err := u.answer(dst, r, false)
	return dst, err
}

// Agreed is what an opening handshake settled beyond the upgrade itself.
type Agreed struct {
	// Protocol is the subprotocol selected, a view of the request's bytes;
	// nil for none.
	Protocol []byte
	// Deflate is the permessage-deflate agreement, zero for none.
	Deflate Deflate
}

// Answer is Upgrade that also negotiates permessage-deflate when u.Deflate
// is set: the 101 then carries the Sec-WebSocket-Extensions answer of the
// first acceptable offer. It returns what the connection agreed to, and
// allocates nothing beyond dst's growth.
func (u *Upgrader) Answer(dst []byte, r *Request) ([]byte, Agreed, error) {
	dst, deflate, protocol, err := u.answer(dst, r, u != nil && u.Deflate)
	return dst, Agreed{Protocol: protocol, Deflate: deflate}, err
}

func (u *Upgrader) answer(dst []byte, r *Request, negotiate bool) (_ []byte, deflate Deflate, protocol []byte, _ error) {
	if string(r.Method) != "GET" {
		return dst, deflate, nil, errMethodNotGET
	}
	if r.ProtoMajor < 1 || r.ProtoMajor == 1 && r.ProtoMinor < 1 {
		return dst, deflate, nil, errVersionTooOld
	}
	if len(r.Host) == 0 {
		return dst, deflate, nil, errMissingHost
	}
	if r.seen&hUpgrade == 0 && len(r.Upgrade) == 0 {
		return dst, deflate, nil, errMissingUpgrade
	}
	if !r.upgradeWebSocket && !hasToken(r.Upgrade, "websocket") {
		return dst, deflate, nil, errUpgradeNotWebSocket
	}
	if r.seen&hConnection == 0 && len(r.Connection) == 0 {
		return dst, deflate, nil, errMissingConnection
	}
	if !r.connectionUpgrade && !hasToken(r.Connection, "upgrade") {
		return dst, deflate, nil, errConnectionNotUpgrade
	}
	if len(r.Key) == 0 {
		return dst, deflate, nil, errMissingKey
	}
	if !validKey(r.Key) {
		return dst, deflate, nil, errInvalidKey
	}
	if len(r.Version) == 0 {
		return dst, deflate, nil, errMissingWSVersion
	}
	if string(r.Version) != "13" {
		return dst, deflate, nil, errUnsupportedWSVersion
	}
	if u != nil {
		if u.CheckOrigin != nil && (len(r.Origin) > 0 || r.seen&hOrigin != 0) && !u.CheckOrigin(r.Origin) {
			return dst, deflate, nil, errOriginNotAllowed
		}
		if u.SelectProtocol != nil && (len(r.Protocol) > 0 || r.seen&hProtocol != 0) {
			var err error
			if protocol, err = u.selectProtocol(r); err != nil {
				return dst, deflate, nil, err
			}
		}
	}

	windowAsked := false
	if negotiate && (len(r.Extensions) > 0 || r.seen&hExtensions != 0) {
		deflate, windowAsked = NegotiateDeflate(r)
	}

	dst = append(dst, "HTTP/1.1 101 Switching Protocols\r\n"+
		"Upgrade: websocket\r\n"+
		"Connection: Upgrade\r\n"+
		"Sec-WebSocket-Accept: "...)
	dst = AppendAcceptKey(dst, r.Key)
	if len(protocol) > 0 {
		dst = append(dst, "\r\nSec-WebSocket-Protocol: "...)
		dst = append(dst, protocol...)
	}
	if deflate.Negotiated() {
		dst = append(dst, "\r\nSec-WebSocket-Extensions: "...)
		dst = append(dst, deflate.answer(windowAsked)...)
	}
	return append(dst, "\r\n\r\n"...), deflate, protocol, nil
}

// selectProtocol runs u.SelectProtocol over each offered list and returns
// the offered token it picked, or nil.
func (u *Upgrader) selectProtocol(r *Request) ([]byte, error) {
	if r.multi&hProtocol == 0 {
		return offeredToken(r.Protocol, u.SelectProtocol(r.Protocol))
	}
	rest := r.header
	for {
		var offered []byte
		var ok bool
		if offered, rest, ok = nextHeaderValue(rest, "sec-websocket-protocol"); !ok {
			return nil, nil
		}
		if selected := u.SelectProtocol(offered); len(selected) > 0 {
			return offeredToken(offered, selected)
		}
	}
}

// offeredToken returns the token of offered equal to selected, nil when
// nothing was selected, or an error when selected was never offered. Only
// bytes the client sent (and ParseRequest checked) reach the response, so a
// selector cannot inject header lines.
func offeredToken(offered, selected []byte) ([]byte, error) {
	if len(selected) == 0 {
		return nil, nil
	}
	for len(offered) > 0 {
		var t []byte
		t, offered = NextToken(offered)
		if bytes.Equal(t, selected) {
			return t, nil
		}
	}
	return nil, errProtocolNotOffered
}

// validKey reports whether key is the base64 of 16 bytes (RFC 6455 section
// 4.2.1 item 5): 22 characters and "==" padding, decoded on the stack.
func validKey(key []byte) bool {
	if len(key) != 24 {
		return false
	}
	var raw [18]byte // base64.StdEncoding.DecodedLen(24)
	n, err := base64.StdEncoding.Decode(raw[:], key)
	return err == nil && n == 16
}

// AppendAcceptKey appends Sec-WebSocket-Accept for key to dst (exported for tests and the bench client):
// base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")).
// It does not allocate beyond dst's growth for the 24-byte keys of RFC 6455.
func AppendAcceptKey(dst, key []byte) []byte {
	var sum [sha1.Size]byte
	if len(key) == 24 {
		var buf [24 + len(websocketGUID)]byte
		copy(buf[:], key)
		copy(buf[24:], websocketGUID)
		sum = sha1.Sum(buf[:])
	} else {
		h := sha1.New()
		h.Write(key)
		h.Write([]byte(websocketGUID))
		h.Sum(sum[:0])
	}
	return base64.StdEncoding.AppendEncode(dst, sum[:])
}

// Errors are shared values so that rejecting a flood of bad requests
// allocates nothing either.
var (
	errIncompleteHead       = &HTTPError{Status: 400, Reason: "incomplete request head"}
	errMalformedRequestLine = &HTTPError{Status: 400, Reason: "malformed request line"}
	errInvalidMethod        = &HTTPError{Status: 400, Reason: "invalid method"}
	errMalformedVersion     = &HTTPError{Status: 400, Reason: "malformed http version"}
	errVersionNotSupported  = &HTTPError{Status: 505, Reason: "unsupported http version"}
	errInvalidTarget        = &HTTPError{Status: 400, Reason: "invalid character in request target"}
	errUnsupportedTarget    = &HTTPError{Status: 400, Reason: "request target must be a path or an absolute http url with a path"}
	errObsFold              = &HTTPError{Status: 400, Reason: "obsolete line folding in header"}
	errMalformedHeaderLine  = &HTTPError{Status: 400, Reason: "malformed header line"}
	errEmptyHeaderName      = &HTTPError{Status: 400, Reason: "empty header name"}
	errSpaceBeforeColon     = &HTTPError{Status: 400, Reason: "whitespace before colon in header line"}
	errInvalidHeaderName    = &HTTPError{Status: 400, Reason: "invalid character in header name"}
	errInvalidHeaderValue   = &HTTPError{Status: 400, Reason: "invalid character in header value"}
	errDuplicateHost        = &HTTPError{Status: 400, Reason: "duplicate Host header"}
	errDuplicateKey         = &HTTPError{Status: 400, Reason: "duplicate Sec-WebSocket-Key header"}
	errDuplicateVersion     = &HTTPError{Status: 400, Reason: "duplicate Sec-WebSocket-Version header"}
	errDuplicateOrigin      = &HTTPError{Status: 400, Reason: "duplicate Origin header"}
	errMissingHost          = &HTTPError{Status: 400, Reason: "missing Host header"}

	errMethodNotGET         = &HTTPError{Status: 400, Reason: "method must be GET"}
	errVersionTooOld        = &HTTPError{Status: 400, Reason: "http version must be at least 1.1"}
	errMissingUpgrade       = &HTTPError{Status: 400, Reason: "missing Upgrade header"}
	errUpgradeNotWebSocket  = &HTTPError{Status: 400, Reason: "Upgrade header does not include websocket"}
	errMissingConnection    = &HTTPError{Status: 400, Reason: "missing Connection header"}
	errConnectionNotUpgrade = &HTTPError{Status: 400, Reason: "Connection header does not include upgrade"}
	errMissingKey           = &HTTPError{Status: 400, Reason: "missing Sec-WebSocket-Key"}
	errInvalidKey           = &HTTPError{Status: 400, Reason: "invalid Sec-WebSocket-Key: not base64 of 16 bytes"}
	errMissingWSVersion     = &HTTPError{Status: 426, Reason: "missing Sec-WebSocket-Version", Header: "Sec-WebSocket-Version: 13\r\n"}
	errUnsupportedWSVersion = &HTTPError{Status: 426, Reason: "unsupported Sec-WebSocket-Version", Header: "Sec-WebSocket-Version: 13\r\n"}
	errOriginNotAllowed     = &HTTPError{Status: 403, Reason: "origin not allowed"}
	errProtocolNotOffered   = &HTTPError{Status: 500, Reason: "selected subprotocol was not offered"}
)

// tchar of RFC 9110 section 5.6.2 as two 64-bit masks (bytes 0-63 and 64-127).
const (
	tcharLo = 1<<'!' | 1<<'#' | 1<<'$' | 1<<'%' | 1<<'&' | 1<<'\'' | 1<<'*' | 1<<'+' |
		1<<'-' | 1<<'.' | (1<<10-1)<<'0'
	tcharHi = (1<<26-1)<<('A'-64) | (1<<26-1)<<('a'-64) |
		1<<('^'-64) | 1<<('_'-64) | 1<<('`'-64) | 1<<('|'-64) | 1<<('~'-64)
)

// IsToken reports whether b is a non-empty RFC 9110 token (method, header
// name, subprotocol name).
func IsToken(b []byte) bool { return isToken(b) }

// isToken reports whether b is a non-empty RFC 9110 token (method, header name).
func isToken(b []byte) bool {
	for _, c := range b {
		var in bool
		switch {
		case c < 64:
			in = uint64(tcharLo)&(1<<c) != 0
		case c < 128:
			in = uint64(tcharHi)&(1<<(c-64)) != 0
		}
		if !in {
			return false
		}
	}
	return len(b) > 0
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// trimOWS trims optional whitespace (SP, HTAB) from both ends of b.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFoldASCII reports whether b equals lower, which must be lowercase
// ASCII, ignoring the case of ASCII letters in b.
func equalFoldASCII(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
