package bench

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/gobwas/ws"

	"github.com/herald-ws/herald/codec"
)

// maxResponseHead caps the server's answer to an upgrade request; a server
// that sends more without ending its head is broken.
const maxResponseHead = 8 << 10

// upgradeRequest is the upgrade request for one channel, split around the
// Sec-WebSocket-Key so that a connection's request is two appends and its
// key.
type upgradeRequest struct {
	head   []byte // request line and headers up to the key's value
	target int    // where the request line's target (path and query) ends in head
}

const upgradeRequestTail = "\r\n\r\n"

// newUpgradeRequest builds the request for target (a ws:// URL) with the
// query channel=channel, plus format=raw when raw.
func newUpgradeRequest(target *url.URL, channel string, raw, compress bool) upgradeRequest {
	q := target.Query()
	q.Set("channel", channel)
	if raw {
		q.Set("format", "raw")
	}
	path := target.EscapedPath()
	if path == "" {
		path = "/"
	}
	var b []byte
	b = append(b, "GET "...)
	b = append(b, path...)
	b = append(b, '?')
	b = append(b, q.Encode()...)
	end := len(b)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, target.Host...)
	b = append(b, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"...)
	if compress {
		// What every browser offers.
		b = append(b, "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"...)
	}
	b = append(b, "Sec-WebSocket-Key: "...)
	return upgradeRequest{head: b, target: end}
}

// append appends the request with key; with since= in its query unless
// since is 0, and with token as a bearer token unless it is empty.
func (r upgradeRequest) append(dst []byte, key []byte, token string, since uint64) []byte {
	if since > 0 {
		dst = append(dst, r.head[:r.target]...)
		dst = append(dst, "&since="...)
		dst = strconv.AppendUint(dst, since, 10)
		dst = append(dst, r.head[r.target:]...)
	} else {
		dst = append(dst, r.head...)
	}
	dst = append(dst, key...)
	if token != "" {
		dst = append(dst, "\r\nAuthorization: Bearer "...)
		dst = append(dst, token...)
	}
	return append(dst, upgradeRequestTail...)
}

// errMalformedResponse and errBadAccept are handshake failures that no
// retry can fix.
var (
	errMalformedResponse = errors.New("malformed upgrade response")
	errBadAccept         = errors.New("wrong Sec-WebSocket-Accept")
)

// upgradeResponse is what a connection learned from the server's answer.
type upgradeResponse struct {
	status     int
	retryAfter time.Duration // from Retry-After, in whole seconds; 0 if absent
}

// parseUpgradeResponse checks head, a complete HTTP response head, as the
// answer to a request that sent key. A 101 must carry the accept value RFC
// 6455 section 4.2.2 derives from key; scratch is room to compute it. It
// allocates nothing.
func parseUpgradeResponse(head, key, scratch []byte) (upgradeResponse, error) {
	var r upgradeResponse
	line, rest, ok := cutLine(head)
	if !ok || len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return r, errMalformedResponse
	}
	status, n := parseUint(line[9:12])
	if n != 3 || (len(line) > 12 && line[12] != ' ') {
		return r, errMalformedResponse
	}
	r.status = int(status)
	var accept []byte
	for {
		if line, rest, ok = cutLine(rest); !ok || len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return r, errMalformedResponse
		}
		name, value := line[:colon], bytes.TrimSpace(line[colon+1:])
		switch {
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Accept")):
			accept = value
		case bytes.EqualFold(name, []byte("Retry-After")):
			if secs, n := parseUint(value); n == len(value) && n > 0 && secs < 3600 {
				r.retryAfter = time.Duration(secs) * time.Second
			}
		}
	}
	if r.status == 101 && !bytes.Equal(accept, codec.AppendAcceptKey(scratch[:0], key)) {
		return r, errBadAccept
	}
	return r, nil
}

// cutLine splits off the first line of b, without its CRLF or LF.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, b, false
	}
	line, rest = b[:i], b[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest, true
}

// httpReason names a refused upgrade by status, e.g. "http 503".
func httpReason(status int) string { return "http " + strconv.Itoa(status) }

// retryableStatus reports whether an upgrade refused with status is worth
// retrying: the server is busy or shedding load, not saying the request
// is wrong.
func retryableStatus(status int) bool {
	switch status {
	case 429, 500, 502, 503, 504:
		return true
	}
	return false
}

// appendClientFrame appends a masked client frame (RFC 6455 section 5.3):
// the header with the mask bit set, the key, and the payload masked with
// it.
func appendClientFrame(dst []byte, op ws.OpCode, payload []byte, mask [4]byte) []byte {
	start := len(dst)
	dst = codec.AppendHeader(dst, op, true, len(payload))
	dst[start+1] |= 0x80
	dst = append(dst, mask[:]...)
	at := len(dst)
	dst = append(dst, payload...)
	ws.Cipher(dst[at:], mask, 0)
	return dst
}

// closeReason names a close frame's payload, e.g. "close 1008".
func closeReason(payload []byte) string {
	code, _, err := codec.ParseClose(payload)
	switch {
	case err != nil:
		return "close (invalid)"
	case code == 0:
		return "close (no code)"
	}
	return fmt.Sprintf("close %d", code)
}
