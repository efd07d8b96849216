package codec

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// rawHead joins lines with CRLF and adds the blank line that ends a head.
func rawHead(lines ...string) []byte {
	return []byte(strings.Join(lines, "\r\n") + "\r\n\r\n")
}

// rfcKey and rfcAccept are the example of RFC 6455 section 1.3. (A SHA-1
// is 20 bytes, so its base64 is 28 characters ending in one '='.)
const (
	rfcKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	rfcAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

// Real opening handshakes, as captured from the clients named.
var (
	chromeRequest = rawHead(
		"GET /ws?token=abc123 HTTP/1.1",
		"Host: push.example.com",
		"Connection: Upgrade",
		"Pragma: no-cache",
		"Cache-Control: no-cache",
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
		"Upgrade: websocket",
		"Origin: https://example.com",
		"Sec-WebSocket-Version: 13",
		"Accept-Encoding: gzip, deflate, br, zstd",
		"Accept-Language: en-US,en;q=0.9",
		"Sec-WebSocket-Key: "+rfcKey,
		"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
	)
	firefoxRequest = rawHead(
		"GET /ws HTTP/1.1",
		"Host: push.example.com",
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
		"Accept: */*",
		"Accept-Language: en-US,en;q=0.5",
		"Accept-Encoding: gzip, deflate, br, zstd",
		"Sec-WebSocket-Version: 13",
		"Origin: https://example.com",
		"Sec-WebSocket-Protocol: herald.v2, herald.v1",
		"Sec-WebSocket-Extensions: permessage-deflate",
		"Sec-WebSocket-Key: "+rfcKey,
		"Connection: keep-alive, Upgrade",
		"Sec-Fetch-Dest: empty",
		"Sec-Fetch-Mode: websocket",
		"Sec-Fetch-Site: same-origin",
		"Pragma: no-cache",
		"Cache-Control: no-cache",
		"Upgrade: websocket",
	)
	gorillaRequest = rawHead(
		"GET /ws HTTP/1.1",
		"Host: 127.0.0.1:8080",
		"User-Agent: Go-http-client/1.1",
		"Connection: Upgrade",
		"Sec-WebSocket-Key: "+rfcKey,
		"Sec-WebSocket-Version: 13",
		"Upgrade: websocket",
	)
	// rfcRequest is the client handshake of RFC 6455 section 1.2.
	rfcRequest = rawHead(
		"GET /chat HTTP/1.1",
		"Host: server.example.com",
		"Upgrade: websocket",
		"Connection: Upgrade",
		"Sec-WebSocket-Key: "+rfcKey,
		"Origin: http://example.com",
		"Sec-WebSocket-Protocol: chat, superchat",
		"Sec-WebSocket-Version: 13",
	)
)

// handshake runs the engine's path over one request: find the head, parse it
// and upgrade. It fails the test if HeadLength does not find exactly req.
func handshake(t testing.TB, u *Upgrader, req []byte) (*Request, []byte, error) {
	t.Helper()
	if n := HeadLength(req, 0); n != len(req) {
		t.Fatalf("HeadLength = %d, want %d for %q", n, len(req), req)
	}
	r := new(Request)
	if err := ParseRequest(req, r); err != nil {
		return r, nil, err
	}
	out, err := u.Upgrade(nil, r)
	return r, out, err
}

// wantHTTPError fails unless err is an *HTTPError with the status and a
// reason containing reason.
func wantHTTPError(t *testing.T, err error, status int, reason string) *HTTPError {
	t.Helper()
	var he *HTTPError
	if !errors.As(err, &he) {
		t.Fatalf("error = %v (%T), want *HTTPError %d %q", err, err, status, reason)
	}
	if he.Status != status || !strings.Contains(he.Reason, reason) {
		t.Fatalf("error = %d %q, want %d containing %q", he.Status, he.Reason, status, reason)
	}
	if strings.ContainsAny(he.Reason, "\r\n") {
		t.Fatalf("reason %q is not one line", he.Reason)
	}
	return he
}

// readResponse parses an HTTP/1.1 response with net/http and returns it with its body.
func readResponse(t *testing.T, raw []byte) (*http.Response, []byte) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(raw))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("http.ReadResponse: %v\n%s", err, raw)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	if br.Buffered() != 0 {
		t.Fatalf("%d bytes after the response: %q", br.Buffered(), raw)
	}
	return resp, body
}

func TestHeadLength(t *testing.T) {
	tests := []struct {
		name string
		head string // the complete head, or what there is of one
		tail string // bytes that follow it
		done bool   // whether head is complete
	}{
		{name: "empty"},
		{name: "request line only", head: "GET / HTTP/1.1\r\n"},
		{name: "one CRLF short", head: "GET / HTTP/1.1\r\nHost: a\r\n"},
		{name: "CR of the blank line only", head: "GET / HTTP/1.1\r\nHost: a\r\n\r"},
		{name: "CRLF", head: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", done: true},
		{name: "LF only", head: "GET / HTTP/1.1\nHost: a\n\n", done: true},
		{name: "CRLF lines, LF blank line", head: "GET / HTTP/1.1\r\nHost: a\r\n\n", done: true},
		{name: "LF lines, CRLF blank line", head: "GET / HTTP/1.1\nHost: a\n\r\n", done: true},
		{name: "pipelined frame", head: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", tail: "\x81\x85\x00\x00\x00\x00hello\r\n\r\n", done: true},
		{name: "pipelined LF frame", head: "GET / HTTP/1.1\nHost: a\n\n", tail: "\n\n\r\n", done: true},
		{name: "second head", head: "GET / HTTP/1.1\r\n\r\n", tail: "GET / HTTP/1.1\r\n\r\n", done: true},
		{name: "CR CR is not a blank line", head: "GET / HTTP/1.1\r\r\n\r\r\n"},
		{name: "LF CR X is not a blank line", head: "GET / HTTP/1.1\n\rX\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := 0
			if tt.done {
				want = len(tt.head)
			}
			if got := HeadLength([]byte(tt.head+tt.tail), 0); got != want {
				t.Errorf("HeadLength(%q, 0) = %d, want %d", tt.head+tt.tail, got, want)
			}
		})
	}
}

// TestHeadLengthIncremental feeds heads one byte at a time, carrying from
// over as the engine does, and checks that the end is found exactly once,
// when its last byte arrives, and never includes the bytes after it.
func TestHeadLengthIncremental(t *testing.T) {
	frame := "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58" // masked "Hello" from RFC 6455 5.7
	heads := map[string][]byte{
		"chrome":  chromeRequest,
		"firefox": firefoxRequest,
		"LF only": []byte("GET / HTTP/1.1\nHost: a\nUpgrade: websocket\n\n"),
		"mixed":   []byte("GET / HTTP/1.1\r\nHost: a\n\r\n"),
	}
	for name, head := range heads {
		t.Run(name, func(t *testing.T) {
			stream := append(append([]byte(nil), head...), frame...)
			scanned, found := 0, 0
			for k := 1; k <= len(stream); k++ {
				n := HeadLength(stream[:k], scanned)
				scanned = k
				if n == 0 {
					if k == len(head) {
						t.Fatalf("head not found when its last byte arrived (k=%d)", k)
					}
					continue
				}
				found++
				if k != len(head) || n != len(head) {
					t.Fatalf("HeadLength at k=%d = %d, want end %d found at k=%d", k, n, len(head), len(head))
				}
				break // the engine stops scanning once the head is complete
			}
			if found != 1 {
				t.Fatalf("head found %d times, want once", found)
			}
		})
	}
}

// TestHeadLengthChunked splits a head and a trailing frame at every pair of
// points, so every terminator byte lands on either side of a boundary.
func TestHeadLengthChunked(t *testing.T) {
	for _, head := range [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
		[]byte("GET / HTTP/1.1\nHost: a\n\n"),
		[]byte("GET / HTTP/1.1\r\nHost: a\n\r\n"),
	} {
		stream := append(append([]byte(nil), head...), "\x82\x80\x00\x00\x00\x00\n\n"...)
		for i := 0; i <= len(stream); i++ {
			for j := i; j <= len(stream); j++ {
				got, scanned := 0, 0
				for _, end := range []int{i, j, len(stream)} {
					if got = HeadLength(stream[:end], scanned); got != 0 {
						break
					}
					scanned = end
				}
				if got != len(head) {
					t.Fatalf("%q split at %d,%d: HeadLength = %d, want %d", stream, i, j, got, len(head))
				}
			}
		}
	}

	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 2000; trial++ {
		head := firefoxRequest
		got, scanned := 0, 0
		for end := 0; end < len(head) && got == 0; {
			end = min(end+1+rng.IntN(40), len(head))
			got = HeadLength(head[:end], scanned)
			scanned = end
		}
		if got != len(head) {
			t.Fatalf("trial %d: HeadLength = %d, want %d", trial, got, len(head))
		}
	}
}

// TestHeadLengthFrom checks the contract on from: bytes more than two before
// it are not looked at again, and out-of-range values are clamped.
func TestHeadLengthFrom(t *testing.T) {
	b := []byte("\n\nGET / HTTP/1.1\r\n")
	if got := HeadLength(b, len(b)); got != 0 {
		t.Errorf("HeadLength rescanned before from: got %d", got)
	}
	if got := HeadLength(b, 0); got != 2 {
		t.Errorf("HeadLength(b, 0) = %d, want 2", got)
	}
	c := []byte("GET / HTTP/1.1\r\n\r\n")
	for _, from := range []int{-5, 0, len(c) - 2, len(c) - 1, len(c), len(c) + 10} {
		want := len(c)
		if from >= len(c) {
			// The caller says it has scanned all of c already; out-of-range
			// values are clamped to that.
			want = 0
		}
		if got := HeadLength(c, from); got != want {
			t.Errorf("HeadLength(c, %d) = %d, want %d", from, got, want)
		}
	}
}

func TestParseRequestFields(t *testing.T) {
	var r Request
	if err := ParseRequest(chromeRequest, &r); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ name, got, want string }{
		{"Method", string(r.Method), "GET"},
		{"Target", string(r.Target), "/ws?token=abc123"},
		{"Path", string(r.Path), "/ws"},
		{"RawQuery", string(r.RawQuery), "token=abc123"},
		{"Proto", fmt.Sprintf("%d.%d", r.ProtoMajor, r.ProtoMinor), "1.1"},
		{"Host", string(r.Host), "push.example.com"},
		{"Upgrade", string(r.Upgrade), "websocket"},
		{"Connection", string(r.Connection), "Upgrade"},
		{"Key", string(r.Key), rfcKey},
		{"Version", string(r.Version), "13"},
		{"Origin", string(r.Origin), "https://example.com"},
		{"Protocol", string(r.Protocol), ""},
		{"Extensions", string(r.Extensions), "permessage-deflate; client_max_window_bits"},
	} {
		if f.got != f.want {
			t.Errorf("%s = %q, want %q", f.name, f.got, f.want)
		}
	}
	if !r.IsUpgrade() {
		t.Error("IsUpgrade = false for a WebSocket handshake")
	}
}

func TestParseRequestNormalisation(t *testing.T) {
	tests := []struct {
		name                      string
		head                      string
		path, query, host, origin string
		upgrade, protocol         string
	}{
		{
			name: "names are case-insensitive, values OWS-trimmed",
			head: "GET / HTTP/1.1\r\nhOsT: \t a.example \t\r\nUPGRADE:websocket\r\norigin:   null\r\nsec-websocket-PROTOCOL:  x , y  \r\n\r\n",
			path: "/", host: "a.example", origin: "null", upgrade: "websocket", protocol: "x , y",
		},
		{
			name: "LF-only line ends",
			head: "GET /a/b?c=d&e HTTP/1.1\nHost: h\nUpgrade: websocket\n\n",
			path: "/a/b", query: "c=d&e", host: "h", upgrade: "websocket",
		},
		{
			name: "query split at the first '?'",
			head: "GET /p?q=1?2 HTTP/1.1\r\nHost: h\r\n\r\n",
			path: "/p", query: "q=1?2", host: "h",
		},
		{
			name: "empty query",
			head: "GET /p? HTTP/1.1\r\nHost: h\r\n\r\n",
			path: "/p", host: "h",
		},
		{
			name: "absolute-form takes its path, and its authority as Host",
			head: "GET http://real.example:8080/ws?x=1 HTTP/1.1\r\nHost: ignored.example\r\n\r\n",
			path: "/ws", query: "x=1", host: "real.example:8080",
		},
		{
			name: "absolute-form wss, scheme case-insensitive",
			head: "GET WSS://h.example/ HTTP/1.1\r\nHost: h.example\r\n\r\n",
			path: "/", host: "h.example",
		},
		{
			name: "first of repeated list headers kept",
			head: "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b\r\n\r\n",
			path: "/", host: "h", upgrade: "h2c", protocol: "a",
		},
		{
			name: "HTTP/1.0 needs no Host",
			head: "GET / HTTP/1.0\r\n\r\n",
			path: "/",
		},
		{
			name: "obs-text allowed in values, unknown headers ignored",
			head: "GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xc3\xa9\r\nX-Empty:\r\n\r\n",
			path: "/", host: "h",
		},
		{
			name: "bytes after the blank line ignored",
			head: "GET / HTTP/1.1\r\nHost: h\r\n\r\nBogus line\r\n",
			path: "/", host: "h",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			if err := ParseRequest([]byte(tt.head), &r); err != nil {
				t.Fatal(err)
			}
			for _, f := range []struct{ name, got, want string }{
				{"Path", string(r.Path), tt.path},
				{"RawQuery", string(r.RawQuery), tt.query},
				{"Host", string(r.Host), tt.host},
				{"Origin", string(r.Origin), tt.origin},
				{"Upgrade", string(r.Upgrade), tt.upgrade},
				{"Protocol", string(r.Protocol), tt.protocol},
			} {
				if f.got != f.want {
					t.Errorf("%s = %q, want %q", f.name, f.got, f.want)
				}
			}
		})
	}
}

func TestParseRequestResets(t *testing.T) {
	var r Request
	if err := ParseRequest(chromeRequest, &r); err != nil {
		t.Fatal(err)
	}
	if err := ParseRequest([]byte("GET /health HTTP/1.1\r\nHost: h\r\n\r\n"), &r); err != nil {
		t.Fatal(err)
	}
	if r.IsUpgrade() || r.Origin != nil || r.Key != nil || r.RawQuery != nil {
		t.Errorf("fields of the previous request survived: %+v", r)
	}
}

// TestParseRequestErrors has one row per syntax rule of ParseRequest.
func TestParseRequestErrors(t *testing.T) {
	const host = "Host: h"
	tests := []struct {
		name   string
		head   []byte
		status int
		reason string
	}{
		{"empty request line", rawHead("", host), 400, "malformed request line"},
		{"no spaces", rawHead("GET", host), 400, "malformed request line"},
		{"HTTP/0.9 style, no version", rawHead("GET /", host), 400, "malformed request line"},
		{"leading space", rawHead(" GET / HTTP/1.1", host), 400, "malformed request line"},
		{"two spaces after method", rawHead("GET  / HTTP/1.1", host), 400, "malformed request line"},
		{"two spaces before version", rawHead("GET /  HTTP/1.1", host), 400, "malformed request line"},
		{"trailing space", rawHead("GET / HTTP/1.1 ", host), 400, "malformed request line"},
		{"space inside target", rawHead("GET /a b HTTP/1.1", host), 400, "malformed request line"},
		{"tab as separator", rawHead("GET\t/ HTTP/1.1", host), 400, "malformed request line"},
		{"invalid method", rawHead("G(T / HTTP/1.1", host), 400, "invalid method"},
		{"lowercase protocol name", rawHead("GET / http/1.1", host), 400, "malformed http version"},
		{"two-digit minor version", rawHead("GET / HTTP/1.10", host), 400, "malformed http version"},
		{"version without minor", rawHead("GET / HTTP/1", host), 400, "malformed http version"},
		{"HTTP/2.0", rawHead("GET / HTTP/2.0", host), 505, "unsupported http version"},
		{"HTTP/0.9", rawHead("GET / HTTP/0.9", host), 505, "unsupported http version"},
		{"control byte in target", rawHead("GET /\x01 HTTP/1.1", host), 400, "invalid character in request target"},
		{"non-ASCII in target", rawHead("GET /caf\xc3\xa9 HTTP/1.1", host), 400, "invalid character in request target"},
		{"bare CR in request line", rawHead("GET /\r HTTP/1.1", host), 400, "invalid character in request target"},
		{"asterisk-form", rawHead("OPTIONS * HTTP/1.1", host), 400, "request target must be a path"},
		{"authority-form", rawHead("CONNECT h:443 HTTP/1.1", host), 400, "request target must be a path"},
		{"absolute-form without path", rawHead("GET http://h HTTP/1.1", host), 400, "request target must be a path"},
		{"absolute-form with empty authority", rawHead("GET http:///ws HTTP/1.1", host), 400, "request target must be a path"},
		{"absolute-form with other scheme", rawHead("GET ftp://h/ws HTTP/1.1", host), 400, "request target must be a path"},
		{"header without colon", rawHead("GET / HTTP/1.1", host, "Upgrade websocket"), 400, "malformed header line"},
		{"space before colon", rawHead("GET / HTTP/1.1", "Host : h"), 400, "whitespace before colon"},
		{"tab before colon", rawHead("GET / HTTP/1.1", host, "Upgrade\t: websocket"), 400, "whitespace before colon"},
		{"empty header name", rawHead("GET / HTTP/1.1", host, ": x"), 400, "empty header name"},
		{"invalid character in name", rawHead("GET / HTTP/1.1", host, "X@Y: z"), 400, "invalid character in header name"},
		{"space inside name", rawHead("GET / HTTP/1.1", host, "Sec WebSocket-Key: "+rfcKey), 400, "invalid character in header name"},
		{"NUL in value", rawHead("GET / HTTP/1.1", host, "X-A: a\x00b"), 400, "invalid character in header value"},
		{"bare CR in value", rawHead("GET / HTTP/1.1", host, "X-A: a\rb"), 400, "invalid character in header value"},
		{"DEL in value", rawHead("GET / HTTP/1.1", host, "X-A: a\x7f"), 400, "invalid character in header value"},
		{"obsolete line folding", rawHead("GET / HTTP/1.1", host, "X-A: a", " b"), 400, "obsolete line folding"},
		{"tab-folded line", rawHead("GET / HTTP/1.1", host, "X-A: a", "\tb"), 400, "obsolete line folding"},
		{"whitespace before first header", rawHead("GET / HTTP/1.1", " Host: h"), 400, "obsolete line folding"},
		{"duplicate Host", rawHead("GET / HTTP/1.1", host, "host: h"), 400, "duplicate Host header"},
		{"duplicate Sec-WebSocket-Key", rawHead("GET / HTTP/1.1", host, "Sec-WebSocket-Key: "+rfcKey, "Sec-WebSocket-Key: "+rfcKey), 400, "duplicate Sec-WebSocket-Key header"},
		{"duplicate Sec-WebSocket-Version", rawHead("GET / HTTP/1.1", host, "Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 13"), 400, "duplicate Sec-WebSocket-Version header"},
		{"duplicate Origin", rawHead("GET / HTTP/1.1", host, "Origin: https://a", "Origin: https://b"), 400, "duplicate Origin header"},
		{"missing Host on HTTP/1.1", rawHead("GET / HTTP/1.1", "Upgrade: websocket"), 400, "missing Host header"},
		{"no blank line", []byte("GET / HTTP/1.1\r\nHost: h\r\n"), 400, "incomplete request head"},
		{"no line end at all", []byte("GET / HTTP/1.1"), 400, "incomplete request head"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			wantHTTPError(t, ParseRequest(tt.head, &r), tt.status, tt.reason)
		})
	}
}

// upgradeRequest builds a valid handshake and applies edits to its headers.
// An edit "Name: value" replaces the default header of that name or, for a
// new name or a name already edited, adds a line; "Name:" removes the
// default; "Name: " sets it to an empty value.
func upgradeRequest(requestLine string, edits ...string) []byte {
	headers := []string{
		"Host: h.example",
		"Upgrade: websocket",
		"Connection: Upgrade",
		"Sec-WebSocket-Key: " + rfcKey,
		"Sec-WebSocket-Version: 13",
	}
	edited := map[string]bool{}
	for _, e := range edits {
		name, _, _ := strings.Cut(e, ":")
		i := slices.IndexFunc(headers, func(h string) bool { return strings.HasPrefix(h, name+":") })
		switch {
		case edited[name] || i < 0:
			headers = append(headers, e)
		case e == name+":":
			headers = slices.Delete(headers, i, i+1)
		default:
			headers[i] = e
		}
		edited[name] = true
	}
	return rawHead(append([]string{requestLine}, headers...)...)
}

// TestUpgradeErrors has one row per rule of Upgrader.Upgrade.
func TestUpgradeErrors(t *testing.T) {
	const get = "GET /ws HTTP/1.1"
	u := &Upgrader{CheckOrigin: func(origin []byte) bool { return string(origin) == "https://example.com" }}
	tests := []struct {
		name   string
		head   []byte
		status int
		reason string
		header string
	}{
		{"POST", upgradeRequest("POST /ws HTTP/1.1"), 400, "method must be GET", ""},
		{"lowercase get", upgradeRequest("get /ws HTTP/1.1"), 400, "method must be GET", ""},
		{"HTTP/1.0", upgradeRequest("GET /ws HTTP/1.0"), 400, "http version must be at least 1.1", ""},
		{"HTTP/1.0 without Host", upgradeRequest("GET /ws HTTP/1.0", "Host:"), 400, "http version must be at least 1.1", ""},
		{"missing Host", upgradeRequest(get, "Host:"), 400, "missing Host header", ""},
		{"empty Host", upgradeRequest(get, "Host: "), 400, "missing Host header", ""},
		{"missing Upgrade", upgradeRequest(get, "Upgrade:"), 400, "missing Upgrade header", ""},
		{"empty Upgrade", upgradeRequest(get, "Upgrade: "), 400, "Upgrade header does not include websocket", ""},
		{"Upgrade: h2c", upgradeRequest(get, "Upgrade: h2c"), 400, "Upgrade header does not include websocket", ""},
		{"Upgrade token is a prefix", upgradeRequest(get, "Upgrade: websocketx"), 400, "Upgrade header does not include websocket", ""},
		{"missing Connection", upgradeRequest(get, "Connection:"), 400, "missing Connection header", ""},
		{"Connection: keep-alive", upgradeRequest(get, "Connection: keep-alive"), 400, "Connection header does not include upgrade", ""},
		{"Connection: upgraded", upgradeRequest(get, "Connection: upgraded, close"), 400, "Connection header does not include upgrade", ""},
		{"missing Sec-WebSocket-Key", upgradeRequest(get, "Sec-WebSocket-Key:"), 400, "missing Sec-WebSocket-Key", ""},
		{"empty Sec-WebSocket-Key", upgradeRequest(get, "Sec-WebSocket-Key: "), 400, "missing Sec-WebSocket-Key", ""},
		{"short key", upgradeRequest(get, "Sec-WebSocket-Key: dGhlIHNhbXBsZQ=="), 400, "invalid Sec-WebSocket-Key", ""},
		{"key not base64", upgradeRequest(get, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j!!=="), 400, "invalid Sec-WebSocket-Key", ""},
		{"key of 18 bytes", upgradeRequest(get, "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAA"), 400, "invalid Sec-WebSocket-Key", ""},
		{"key URL-safe base64", upgradeRequest(get, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j-_=="), 400, "invalid Sec-WebSocket-Key", ""},
		{"missing Sec-WebSocket-Version", upgradeRequest(get, "Sec-WebSocket-Version:"), 426, "missing Sec-WebSocket-Version", "Sec-WebSocket-Version: 13\r\n"},
		{"Sec-WebSocket-Version: 8", upgradeRequest(get, "Sec-WebSocket-Version: 8"), 426, "unsupported Sec-WebSocket-Version", "Sec-WebSocket-Version: 13\r\n"},
		{"Sec-WebSocket-Version: 13, 8", upgradeRequest(get, "Sec-WebSocket-Version: 13, 8"), 426, "unsupported Sec-WebSocket-Version", "Sec-WebSocket-Version: 13\r\n"},
		{"origin refused", upgradeRequest(get, "Origin: https://evil.example"), 403, "origin not allowed", ""},
		{"empty origin refused", upgradeRequest(get, "Origin: "), 403, "origin not allowed", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The first error on the engine's path counts: ParseRequest
			// already refuses an HTTP/1.1 request without Host.
			var r Request
			err := ParseRequest(tt.head, &r)
			if err == nil {
				var out []byte
				out, err = u.Upgrade([]byte("kept"), &r)
				if string(out) != "kept" {
					t.Errorf("dst changed on error: %q", out)
				}
			}
			he := wantHTTPError(t, err, tt.status, tt.reason)
			if he.Header != tt.header {
				t.Errorf("Header = %q, want %q", he.Header, tt.header)
			}
		})
	}
}

// TestUpgradeAccepts checks real clients' handshakes and the variants the
// rules must let through, against the accept key of RFC 6455 section 1.3.
func TestUpgradeAccepts(t *testing.T) {
	const get = "GET /ws HTTP/1.1"
	tests := []struct {
		name string
		head []byte
	}{
		{"chrome", chromeRequest},
		{"firefox", firefoxRequest},
		{"gorilla", gorillaRequest},
		{"RFC 6455 example", rfcRequest},
		{"LF-only", []byte(strings.ReplaceAll(string(chromeRequest), "\r\n", "\n"))},
		{"HTTP/1.2", upgradeRequest("GET /ws HTTP/1.2")},
		{"Upgrade token case-insensitive, in a list", upgradeRequest(get, "Upgrade: h2c, WebSocket")},
		{"Connection list", upgradeRequest(get, "Connection: keep-alive, UPGRADE")},
		{"Connection across repeated headers", upgradeRequest(get, "Connection: keep-alive", "Connection: Upgrade")},
		{"Upgrade across repeated headers", upgradeRequest(get, "Upgrade: h2c", "Upgrade: websocket")},
		{"key with surrounding whitespace", upgradeRequest(get, "Sec-WebSocket-Key: \t "+rfcKey+" \t")},
		{"absolute-form target", upgradeRequest("GET ws://h.example/ws HTTP/1.1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, out, err := handshake(t, nil, tt.head)
			if err != nil {
				t.Fatal(err)
			}
			if !r.IsUpgrade() {
				t.Error("IsUpgrade = false")
			}
			resp, body := readResponse(t, out)
			if resp.StatusCode != 101 || len(body) != 0 {
				t.Fatalf("status %d, body %q", resp.StatusCode, body)
			}
			for name, want := range map[string]string{
				"Upgrade":                "websocket",
				"Connection":             "Upgrade",
				"Sec-WebSocket-Accept":   rfcAccept,
				"Sec-WebSocket-Protocol": "",
			} {
				if got := resp.Header.Get(name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

func TestUpgradeResponseBytes(t *testing.T) {
	u := &Upgrader{SelectProtocol: func(offered []byte) []byte {
		tok, _ := NextToken(offered)
		return tok
	}}
	_, out, err := handshake(t, u, rfcRequest)
	if err != nil {
		t.Fatal(err)
	}
	const want = "HTTP/1.1 101 Switching Protocols\r\n" +
		"Upgrade: websocket\r\n" +
		"Connection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + rfcAccept + "\r\n" +
		"Sec-WebSocket-Protocol: chat\r\n" +
		"\r\n"
	if string(out) != want {
		t.Errorf("response\n%q\nwant\n%q", out, want)
	}
}

func TestUpgradeSubprotocol(t *testing.T) {
	// prefer picks the first of its own preferences that the client offered,
	// the usual server-side policy.
	prefer := func(preferences ...string) func([]byte) []byte {
		return func(offered []byte) []byte {
			for _, p := range preferences {
				for list := offered; len(list) > 0; {
					var tok []byte
					tok, list = NextToken(list)
					if string(tok) == p {
						return tok
					}
				}
			}
			return nil
		}
	}
	tests := []struct {
		name    string
		headers []string
		sel     func([]byte) []byte
		want    string // selected subprotocol; "" for none
		status  int    // expected error status; 0 for success
	}{
		{"server preference wins", []string{"Sec-WebSocket-Protocol: herald.v1, herald.v2"}, prefer("herald.v2", "herald.v1"), "herald.v2", 0},
		{"OWS around tokens", []string{"Sec-WebSocket-Protocol:  a ,\therald.v1 , b"}, prefer("herald.v1"), "herald.v1", 0},
		{"nothing in common", []string{"Sec-WebSocket-Protocol: mqtt"}, prefer("herald.v1"), "", 0},
		{"no offer: selector not called", nil, func([]byte) []byte { panic("called without an offer") }, "", 0},
		{"nil selector", []string{"Sec-WebSocket-Protocol: herald.v1"}, nil, "", 0},
		{"match is case-sensitive", []string{"Sec-WebSocket-Protocol: Herald.V1"}, prefer("herald.v1"), "", 0},
		{"repeated headers: second list", []string{"Sec-WebSocket-Protocol: a, b", "Sec-WebSocket-Protocol: herald.v1"}, prefer("herald.v1"), "herald.v1", 0},
		{"repeated headers: first list", []string{"Sec-WebSocket-Protocol: herald.v1", "Sec-WebSocket-Protocol: herald.v2"}, prefer("herald.v2", "herald.v1"), "herald.v1", 0},
		{"selector invents a token", []string{"Sec-WebSocket-Protocol: a"}, func([]byte) []byte { return []byte("b\r\nX-Injected: 1") }, "", 500},
		{"selector returns empty", []string{"Sec-WebSocket-Protocol: a"}, func([]byte) []byte { return []byte{} }, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := &Upgrader{SelectProtocol: tt.sel}
			_, out, err := handshake(t, u, upgradeRequest("GET /ws HTTP/1.1", tt.headers...))
			if tt.status != 0 {
				wantHTTPError(t, err, tt.status, "subprotocol")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			resp, _ := readResponse(t, out)
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != tt.want {
				t.Errorf("Sec-WebSocket-Protocol = %q, want %q", got, tt.want)
			}
			if _, present := resp.Header["Sec-Websocket-Protocol"]; present != (tt.want != "") {
				t.Errorf("Sec-WebSocket-Protocol header present = %v, want %v", present, tt.want != "")
			}
		})
	}
}

func TestUpgradeOrigin(t *testing.T) {
	var calls []string
	u := &Upgrader{CheckOrigin: func(origin []byte) bool {
		calls = append(calls, string(origin))
		return string(origin) == "https://example.com"
	}}
	tests := []struct {
		name   string
		origin string // "" sends no Origin header
		status int
		calls  []string
	}{
		{"allowed", "Origin: https://example.com", 0, []string{"https://example.com"}},
		{"refused", "Origin: https://evil.example", 403, []string{"https://evil.example"}},
		{"null origin refused", "Origin: null", 403, []string{"null"}},
		{"no Origin: hook not called", "", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls = nil
			var extra []string
			if tt.origin != "" {
				extra = append(extra, tt.origin)
			}
			_, out, err := handshake(t, u, upgradeRequest("GET /ws HTTP/1.1", extra...))
			if tt.status != 0 {
				he := wantHTTPError(t, err, tt.status, "origin not allowed")
				resp, _ := readResponse(t, he.AppendTo(nil))
				if resp.StatusCode != 403 {
					t.Errorf("error response status %d", resp.StatusCode)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if !bytes.HasPrefix(out, []byte("HTTP/1.1 101 ")) {
				t.Errorf("response %q", out)
			}
			if fmt.Sprint(calls) != fmt.Sprint(tt.calls) {
				t.Errorf("CheckOrigin calls = %q, want %q", calls, tt.calls)
			}
		})
	}

	// The zero and the nil Upgrader accept any origin.
	for _, u := range []*Upgrader{{}, nil} {
		if _, _, err := handshake(t, u, upgradeRequest("GET /ws HTTP/1.1", "Origin: https://evil.example")); err != nil {
			t.Errorf("Upgrader %v: %v", u, err)
		}
	}
}

func TestIsUpgrade(t *testing.T) {
	tests := []struct {
		head string
		want bool
	}{
		{"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\n\r\n", true},
		{"GET / HTTP/1.1\r\nHost: h\r\nUpgrade:\r\n\r\n", true},
		{"GET / HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: " + rfcKey + "\r\n\r\n", true},
		{"GET / HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Version: 13\r\n\r\n", false},
	}
	for _, tt := range tests {
		var r Request
		if err := ParseRequest([]byte(tt.head), &r); err != nil {
			t.Fatal(err)
		}
		if got := r.IsUpgrade(); got != tt.want {
			t.Errorf("IsUpgrade(%q) = %v, want %v", tt.head, got, tt.want)
		}
	}
}

// TestUpgradeHandBuiltRequest checks that Upgrade reads the exported fields,
// so a Request filled in by hand (say, by a test) is judged the same way.
func TestUpgradeHandBuiltRequest(t *testing.T) {
	r := &Request{
		Method: []byte("GET"), ProtoMajor: 1, ProtoMinor: 1, Host: []byte("h"),
		Upgrade: []byte("websocket"), Connection: []byte("keep-alive, Upgrade"),
		Key: []byte(rfcKey), Version: []byte("13"), Protocol: []byte("a, b"),
	}
	second := func(offered []byte) []byte {
		_, rest := NextToken(offered)
		tok, _ := NextToken(rest)
		return tok
	}
	u := &Upgrader{SelectProtocol: second}
	out, err := u.Upgrade(nil, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := readResponse(t, out)
	if resp.Header.Get("Sec-WebSocket-Accept") != rfcAccept || resp.Header.Get("Sec-WebSocket-Protocol") != "b" {
		t.Errorf("response %q", out)
	}
	r.Connection = []byte("keep-alive")
	_, err = u.Upgrade(nil, r)
	wantHTTPError(t, err, 400, "Connection header does not include upgrade")
}

func TestAppendAcceptKey(t *testing.T) {
	if got := string(AppendAcceptKey(nil, []byte(rfcKey))); got != rfcAccept {
		t.Errorf("AppendAcceptKey(RFC key) = %q, want %q", got, rfcAccept)
	}
	if got := string(AppendAcceptKey([]byte("x"), []byte(rfcKey))); got != "x"+rfcAccept {
		t.Errorf("AppendAcceptKey does not append: %q", got)
	}
	// Against an independent computation, for keys of the usual length and others.
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{16, 16, 16, 0, 1, 10, 40} {
		raw := make([]byte, n)
		for i := range raw {
			raw[i] = byte(rng.Uint32())
		}
		key := base64.StdEncoding.EncodeToString(raw)
		sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		want := base64.StdEncoding.EncodeToString(sum[:])
		if got := string(AppendAcceptKey(nil, []byte(key))); got != want {
			t.Errorf("AppendAcceptKey(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestNextToken(t *testing.T) {
	tests := []struct {
		list string
		want []string
	}{
		{"", nil},
		{"upgrade", []string{"upgrade"}},
		{" keep-alive ,\tUpgrade\t", []string{"keep-alive", "Upgrade"}},
		{"a,,b", []string{"a", "", "b"}},
		{"a, , b,", []string{"a", "", "b"}},
		{",a", []string{"", "a"}},
		{"chat, superchat", []string{"chat", "superchat"}},
	}
	for _, tt := range tests {
		var got []string
		for list := []byte(tt.list); len(list) > 0; {
			var tok []byte
			tok, list = NextToken(list)
			got = append(got, string(tok))
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) || len(got) != len(tt.want) {
			t.Errorf("tokens of %q = %q, want %q", tt.list, got, tt.want)
		}
	}
}

func TestHTTPError(t *testing.T) {
	tests := []*HTTPError{
		{Status: 400, Reason: "missing Sec-WebSocket-Key"},
		{Status: 426, Reason: "unsupported Sec-WebSocket-Version", Header: "Sec-WebSocket-Version: 13\r\n"},
		{Status: 503, Reason: "server is draining", Header: "Retry-After: 1\r\n"},
		{Status: 431, Reason: "request head too large"},
		{Status: 499, Reason: "no standard reason phrase"},
		{Status: 400, Reason: ""},
	}
	for _, e := range tests {
		t.Run(strconv.Itoa(e.Status), func(t *testing.T) {
			if want := "http " + strconv.Itoa(e.Status) + ": " + e.Reason; e.Error() != want {
				t.Errorf("Error() = %q, want %q", e.Error(), want)
			}
			raw := e.AppendTo([]byte("prefix"))
			if !bytes.HasPrefix(raw, []byte("prefix")) {
				t.Fatalf("AppendTo does not append: %q", raw)
			}
			resp, body := readResponse(t, raw[len("prefix"):])
			if resp.StatusCode != e.Status || resp.ProtoMajor != 1 || resp.ProtoMinor != 1 {
				t.Errorf("status %d HTTP/%d.%d", resp.StatusCode, resp.ProtoMajor, resp.ProtoMinor)
			}
			if string(body) != e.Reason+"\n" || resp.ContentLength != int64(len(body)) {
				t.Errorf("body %q, Content-Length %d", body, resp.ContentLength)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Errorf("Content-Type = %q", ct)
			}
			if !resp.Close {
				t.Error("no Connection: close")
			}
			if name, value, ok := strings.Cut(strings.TrimSuffix(e.Header, "\r\n"), ": "); ok {
				if got := resp.Header.Get(name); got != value {
					t.Errorf("%s = %q, want %q", name, got, value)
				}
			}
		})
	}
	// The 426 Upgrade sends tells the client which version to retry with.
	resp, _ := readResponse(t, errUnsupportedWSVersion.AppendTo(nil))
	if resp.Status != "426 Upgrade Required" || resp.Header.Get("Sec-WebSocket-Version") != "13" {
		t.Errorf("426 answer: %q %v", resp.Status, resp.Header)
	}
}

func TestAppendResponse(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	tests := []struct {
		status      int
		contentType string
		header      string
		body        []byte
	}{
		{200, "text/plain; charset=utf-8", "", []byte("ok\n")},
		{404, "text/plain; charset=utf-8", "", []byte("not found\n")},
		{200, "text/html; charset=utf-8", "Cache-Control: no-store\r\nX-Frame-Options: DENY\r\n", []byte("<!doctype html><title>herald</title>")},
		{200, "application/octet-stream", "", big},
		{200, "", "", nil},
		{503, "text/plain", "Retry-After: 1\r\n", []byte("draining\n")},
	}
	for _, tt := range tests {
		raw := AppendResponse([]byte("x"), tt.status, tt.contentType, tt.header, tt.body)[1:]
		resp, body := readResponse(t, raw)
		if resp.StatusCode != tt.status || resp.Status != fmt.Sprintf("%d %s", tt.status, http.StatusText(tt.status)) {
			t.Errorf("status line %q", resp.Status)
		}
		if !bytes.Equal(body, tt.body) || resp.ContentLength != int64(len(tt.body)) {
			t.Errorf("body of %d bytes, Content-Length %d, want %d", len(body), resp.ContentLength, len(tt.body))
		}
		if got := resp.Header.Get("Content-Type"); got != tt.contentType {
			t.Errorf("Content-Type = %q, want %q", got, tt.contentType)
		}
		if !resp.Close {
			t.Error("no Connection: close")
		}
		for line := range strings.SplitSeq(strings.TrimSuffix(tt.header, "\r\n"), "\r\n") {
			if name, value, ok := strings.Cut(line, ": "); ok && resp.Header.Get(name) != value {
				t.Errorf("%s = %q, want %q", name, resp.Header.Get(name), value)
			}
		}
	}
}

func TestStatusText(t *testing.T) {
	for code := 100; code < 600; code++ {
		if got := statusText(code); got != "" && got != http.StatusText(code) {
			t.Errorf("statusText(%d) = %q, net/http says %q", code, got, http.StatusText(code))
		}
	}
	for _, code := range []int{101, 200, 400, 403, 404, 426, 431, 500, 503, 505} {
		if statusText(code) == "" {
			t.Errorf("statusText(%d) missing", code)
		}
	}
}

// TestHandshakeAllocs pins the zero-allocation promise of the parse path,
// for accepted and for refused handshakes.
func TestHandshakeAllocs(t *testing.T) {
	u := &Upgrader{
		CheckOrigin:    func(origin []byte) bool { return len(origin) > 0 },
		SelectProtocol: func(offered []byte) []byte { tok, _ := NextToken(offered); return tok },
	}
	refused := upgradeRequest("GET /ws HTTP/1.1", "Sec-WebSocket-Version: 8")
	malformed := rawHead("GET / HTTP/1.1", "Host : h")
	repeated := upgradeRequest("GET /ws HTTP/1.1", "Sec-WebSocket-Protocol: a", "Sec-WebSocket-Protocol: b")
	dst := make([]byte, 0, 512)
	var r Request
	for name, req := range map[string][]byte{
		"chrome": chromeRequest, "firefox": firefoxRequest, "refused": refused,
		"malformed": malformed, "repeated protocol": repeated,
	} {
		allocs := testing.AllocsPerRun(100, func() {
			n := HeadLength(req, 0)
			if err := ParseRequest(req[:n], &r); err != nil {
				return
			}
			dst, _ = u.Upgrade(dst[:0], &r)
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per handshake, want 0", name, allocs)
		}
	}
}

// TestGorillaClient runs gorilla/websocket's client, an independent
// implementation, against the codec over an in-memory connection that the
// server side reads a few bytes at a time, as an event loop sees them.
func TestGorillaClient(t *testing.T) {
	for _, tt := range []struct {
		name     string
		offer    []string
		origin   string
		want     string // selected subprotocol
		status   int    // expected refusal; 0 for success
		withTail bool   // client sends a frame right after the handshake
	}{
		{name: "plain", withTail: true},
		{name: "subprotocol", offer: []string{"mqtt", "herald.v1"}, want: "herald.v1", withTail: true},
		{name: "origin refused", origin: "https://evil.example", status: 403},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clientConn, serverConn := net.Pipe()
			defer clientConn.Close()
			defer serverConn.Close()
			serverDone := make(chan error, 1)
			go func() { serverDone <- serveOne(serverConn, tt.withTail) }()

			dialer := websocket.Dialer{
				NetDialContext:   func(context.Context, string, string) (net.Conn, error) { return clientConn, nil },
				Subprotocols:     tt.offer,
				HandshakeTimeout: 5 * time.Second,
			}
			header := http.Header{}
			if tt.origin != "" {
				header.Set("Origin", tt.origin)
			}
			conn, resp, err := dialer.Dial("ws://herald.test/ws?x=1", header)
			if tt.status != 0 {
				if err == nil || resp == nil || resp.StatusCode != tt.status {
					t.Fatalf("Dial = %v, response %v; want status %d", err, resp, tt.status)
				}
				clientConn.Close()
				<-serverDone
				return
			}
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			if conn.Subprotocol() != tt.want {
				t.Errorf("Subprotocol = %q, want %q", conn.Subprotocol(), tt.want)
			}
			if err := conn.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
				t.Fatal(err)
			}
			if err := <-serverDone; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// serveOne plays the engine for one connection: it accumulates bytes with
// small reads until HeadLength finds the head, answers it, and, when
// withTail, checks that the bytes after the head are the client's first frame.
func serveOne(conn net.Conn, withTail bool) error {
	u := &Upgrader{
		CheckOrigin: func(origin []byte) bool { return string(origin) != "https://evil.example" },
		SelectProtocol: func(offered []byte) []byte {
			for list := offered; len(list) > 0; {
				var tok []byte
				if tok, list = NextToken(list); string(tok) == "herald.v1" {
					return tok
				}
			}
			return nil
		},
	}
	var buf []byte
	chunk := make([]byte, 7)
	scanned, n := 0, 0
	for n == 0 {
		m, err := conn.Read(chunk)
		if err != nil {
			return fmt.Errorf("reading head: %w", err)
		}
		buf = append(buf, chunk[:m]...)
		if n = HeadLength(buf, scanned); n == 0 && len(buf) > DefaultMaxHeadSize {
			return errors.New("head too large")
		}
		scanned = len(buf)
	}
	var r Request
	if err := ParseRequest(buf[:n], &r); err != nil {
		return err
	}
	if string(r.Path) != "/ws" || string(r.RawQuery) != "x=1" || string(r.Host) != "herald.test" {
		return fmt.Errorf("parsed %q %q host %q", r.Path, r.RawQuery, r.Host)
	}
	out, err := u.Upgrade(nil, &r)
	if err != nil {
		var he *HTTPError
		errors.As(err, &he)
		conn.Write(he.AppendTo(nil))
		return nil
	}
	if _, err := conn.Write(out); err != nil {
		return err
	}
	if !withTail {
		return nil
	}
	// A masked text frame "hello": 2 header bytes, 4 mask bytes, 5 payload bytes.
	tail := buf[n:]
	for len(tail) < 11 {
		m, err := conn.Read(chunk)
		if err != nil {
			return fmt.Errorf("reading frame: %w", err)
		}
		tail = append(tail, chunk[:m]...)
	}
	if tail[0] != 0x81 || tail[1] != 0x80|5 {
		return fmt.Errorf("bytes after the head are not the first frame: % x", tail)
	}
	payload := tail[6:11]
	for i := range payload {
		payload[i] ^= tail[2+i%4]
	}
	if string(payload) != "hello" {
		return fmt.Errorf("frame payload %q", payload)
	}
	return nil
}

// ExampleUpgrader_Upgrade shows the engine's side of a handshake: bytes
// arrive in pieces, HeadLength resumes where it stopped, and the answer is
// either the 101 or the error response.
func ExampleUpgrader_Upgrade() {
	arrivals := []string{
		"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r",
		"\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
		"Sec-WebSocket-Version: 13\r\n\r",
		"\n\x81\x85", // the end of the head and the start of the first frame
	}
	var (
		u       Upgrader
		r       Request
		buf     []byte
		scanned int
	)
	for _, b := range arrivals {
		buf = append(buf, b...)
		n := HeadLength(buf, scanned)
		if n == 0 {
			if len(buf) > DefaultMaxHeadSize {
				fmt.Print("answer 431")
				return
			}
			scanned = len(buf)
			continue
		}
		var out []byte
		err := ParseRequest(buf[:n], &r)
		if err == nil {
			out, err = u.Upgrade(out, &r)
		}
		if err != nil {
			out = err.(*HTTPError).AppendTo(out)
		}
		fmt.Print(strings.ReplaceAll(string(out), "\r\n", "\n"))
		fmt.Printf("%d bytes left for the frame parser\n", len(buf)-n)
		return
	}
	// Output:
	// HTTP/1.1 101 Switching Protocols
	// Upgrade: websocket
	// Connection: Upgrade
	// Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
	//
	// 2 bytes left for the frame parser
}

// benchRequest is a realistic browser handshake of about 400 bytes.
var benchRequest = rawHead(
	"GET /ws?room=lobby HTTP/1.1",
	"Host: push.example.com",
	"Connection: Upgrade",
	"Pragma: no-cache",
	"Cache-Control: no-cache",
	"User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
	"Upgrade: websocket",
	"Origin: https://example.com",
	"Sec-WebSocket-Version: 13",
	"Accept-Encoding: gzip, deflate, br, zstd",
	"Accept-Language: en-US,en;q=0.9",
	"Sec-WebSocket-Key: "+rfcKey,
	"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
)

func BenchmarkUpgrade(b *testing.B) {
	u := &Upgrader{CheckOrigin: func(origin []byte) bool { return string(origin) == "https://example.com" }}
	dst := make([]byte, 0, 256)
	var r Request
	b.SetBytes(int64(len(benchRequest)))
	b.ReportAllocs()
	for b.Loop() {
		n := HeadLength(benchRequest, 0)
		if err := ParseRequest(benchRequest[:n], &r); err != nil {
			b.Fatal(err)
		}
		var err error
		if dst, err = u.Upgrade(dst[:0], &r); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRequestHeader(t *testing.T) {
	head := "GET /ws?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Authorization:   Bearer abc.def  \r\nX-Twice: one\r\nx-twice: two\r\n\r\n"
	var r Request
	if err := ParseRequest([]byte(head), &r); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, want string }{
		{"authorization", "Bearer abc.def"},
		{"Authorization", "Bearer abc.def"},
		{"AUTHORIZATION", "Bearer abc.def"},
		{"x-twice", "one"},
		{"host", "h"},
		{"missing", ""},
		{"authorizatio", ""},
	}
	for _, tt := range tests {
		if got := string(r.Header(tt.name)); got != tt.want {
			t.Errorf("Header(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = r.Header("Authorization") }); n != 0 {
		t.Errorf("Header allocates %v times", n)
	}
}
