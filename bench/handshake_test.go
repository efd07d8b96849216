package bench

import (
	"bytes"
	"net/url"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/herald-ws/herald/codec"
)

const testKey = "dGhlIHNhbXBsZSBub25jZQ=="

func TestUpgradeRequest(t *testing.T) {
	u, _ := url.Parse("ws://127.0.0.1:8080/ws?token=abc")
	req := newUpgradeRequest(u, "bench.x.0", true, false).append(nil, []byte(testKey), "", 0)
	var r codec.Request
	if err := codec.ParseRequest(req, &r); err != nil {
		t.Fatalf("%v:\n%s", err, req)
	}
	var up codec.Upgrader
	answer, err := up.Upgrade(nil, &r)
	if err != nil {
		t.Fatalf("the server's own codec refuses it: %v", err)
	}
	if !bytes.Contains(req, []byte("GET /ws?channel=bench.x.0&format=raw&token=abc HTTP/1.1\r\n")) {
		t.Errorf("request line:\n%s", req)
	}
	if bytes.Contains(req, []byte("Authorization")) {
		t.Errorf("a bearer token nobody gave:\n%s", req)
	}
	bearer := newUpgradeRequest(u, "bench.x.0", false, false).append(nil, []byte(testKey), "T.O.K", 0)
	if err := codec.ParseRequest(bearer, &r); err != nil {
		t.Fatalf("%v:\n%s", err, bearer)
	}
	if !bytes.HasSuffix(bearer, []byte(testKey+"\r\nAuthorization: Bearer T.O.K\r\n\r\n")) {
		t.Errorf("bearer token:\n%s", bearer)
	}
	resp, err := parseUpgradeResponse(answer, []byte(testKey), nil)
	if err != nil || resp.status != 101 {
		t.Fatalf("the server's answer: %+v %v", resp, err)
	}
}

// With compress the request offers permessage-deflate as a browser does,
// and the server's codec agrees to it.
func TestUpgradeRequestOffersDeflate(t *testing.T) {
	u, _ := url.Parse("ws://127.0.0.1:8080/ws")
	req := newUpgradeRequest(u, "bench.x.0", false, true).append(nil, []byte(testKey), "", 0)
	var r codec.Request
	if err := codec.ParseRequest(req, &r); err != nil {
		t.Fatalf("%v:\n%s", err, req)
	}
	up := codec.Upgrader{Deflate: true}
	answer, agreed, err := up.Answer(nil, &r)
	if err != nil || agreed.Deflate.WindowBits != 15 {
		t.Fatalf("deflate not agreed: %+v %v", agreed, err)
	}
	if resp, err := parseUpgradeResponse(answer, []byte(testKey), nil); err != nil || resp.status != 101 {
		t.Fatalf("the server's answer: %+v %v", resp, err)
	}
}

func TestParseUpgradeResponse(t *testing.T) {
	accept := string(codec.AppendAcceptKey(nil, []byte(testKey)))
	for _, tc := range []struct {
		name   string
		head   string
		status int
		retry  time.Duration
		err    error
	}{
		{"101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n", 101, 0, nil},
		{"header case", "HTTP/1.1 101 Switching Protocols\r\nsec-websocket-accept:   " + accept + "\r\n\r\n", 101, 0, nil},
		{"bare LF", "HTTP/1.1 101 Switching Protocols\nSec-WebSocket-Accept: " + accept + "\n\n", 101, 0, nil},
		{"wrong accept", "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x" + accept[1:] + "\r\n\r\n", 101, 0, errBadAccept},
		{"no accept", "HTTP/1.1 101 Switching Protocols\r\n\r\n", 101, 0, errBadAccept},
		{"503", "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 5\r\n\r\n", 503, 2 * time.Second, nil},
		{"bad retry-after", "HTTP/1.1 503 Service Unavailable\r\nRetry-After: soon\r\n\r\n", 503, 0, nil},
		{"404 no phrase", "HTTP/1.1 404\r\n\r\n", 404, 0, nil},
		{"not http", "SSH-2.0-OpenSSH\r\n\r\n", 0, 0, errMalformedResponse},
		{"short status", "HTTP/1.1 10\r\n\r\n", 0, 0, errMalformedResponse},
		{"header without colon", "HTTP/1.1 101 OK\r\nnonsense\r\n\r\n", 101, 0, errMalformedResponse},
	} {
		r, err := parseUpgradeResponse([]byte(tc.head), []byte(testKey), make([]byte, 0, 64))
		if err != tc.err || (err == nil && (r.status != tc.status || r.retryAfter != tc.retry)) {
			t.Errorf("%s: %+v %v, want status %d retry %v err %v", tc.name, r, err, tc.status, tc.retry, tc.err)
		}
	}
}

func TestParseUpgradeResponseAllocatesNothing(t *testing.T) {
	head := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		string(codec.AppendAcceptKey(nil, []byte(testKey))) + "\r\n\r\n")
	scratch := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := parseUpgradeResponse(head, []byte(testKey), scratch); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

// Client frames are masked, and the server's codec reads them back.
func TestAppendClientFrame(t *testing.T) {
	payload := []byte("ping payload")
	frame := appendClientFrame(nil, ws.OpPong, payload, [4]byte{1, 2, 3, 4})
	h, n, err := codec.ParseHeader(frame)
	if err != nil || n == 0 {
		t.Fatalf("%v %d", err, n)
	}
	if err := codec.CheckClientHeader(h, 0); err != nil {
		t.Fatal(err)
	}
	got := append([]byte(nil), frame[n:]...)
	ws.Cipher(got, h.Mask, 0)
	if h.OpCode != ws.OpPong || !h.Fin || !bytes.Equal(got, payload) {
		t.Fatalf("%+v %q", h, got)
	}
}

func TestCloseReason(t *testing.T) {
	for payload, want := range map[string]string{
		"":                   "close (no code)",
		"\x03\xf0slow":       "close 1008",
		"\x03":               "close (invalid)",
		"\x03\xe9going away": "close 1001",
	} {
		if got := closeReason([]byte(payload)); got != want {
			t.Errorf("%q: %q, want %q", payload, got, want)
		}
	}
}
