package codec

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
)

// FuzzParseRequest drives the engine's handshake path with arbitrary bytes
// arriving in arbitrary pieces: HeadLength with from carried over, then
// ParseRequest and Upgrade on whatever head it finds. The seed corpus is in
// testdata/fuzz/FuzzParseRequest; chunking picks the piece sizes.
func FuzzParseRequest(f *testing.F) {
	f.Add(chromeRequest, uint64(0))
	f.Add(rfcRequest, uint64(1))

	u := &Upgrader{
		CheckOrigin: func(origin []byte) bool { return !bytes.Contains(origin, []byte("evil")) },
		SelectProtocol: func(offered []byte) []byte {
			for list := offered; len(list) > 0; {
				var tok []byte
				if tok, list = NextToken(list); string(tok) == "chat" || string(tok) == "herald.v1" {
					return tok
				}
			}
			return nil
		},
	}
	allowed := map[int]bool{400: true, 403: true, 426: true, 431: true, 505: true}

	f.Fuzz(func(t *testing.T, data []byte, chunking uint64) {
		want := referenceHeadLength(data)

		// Deliver data in pieces of 1 to 64 bytes, as reads would.
		rng := rand.New(rand.NewPCG(chunking, chunking>>32))
		n, scanned := 0, 0
		for end := 0; end < len(data) && n == 0; {
			end = min(end+1+rng.IntN(64), len(data))
			n = HeadLength(data[:end], scanned)
			if n < 0 || n > end {
				t.Fatalf("HeadLength = %d with %d bytes buffered", n, end)
			}
			if n != 0 && n != want {
				t.Fatalf("HeadLength = %d at %d bytes, reference says %d", n, end, want)
			}
			scanned = end
		}
		if n != want {
			t.Fatalf("HeadLength found %d after all bytes, reference says %d", n, want)
		}
		if n == 0 {
			return // no complete head: the engine waits, or answers 431 past its cap
		}

		head := data[:n]
		var r Request
		if err := ParseRequest(head, &r); err != nil {
			checkFuzzError(t, err, allowed)
			return
		}
		checkParsed(t, head, &r)

		dst := []byte("prefix")
		out, err := u.Upgrade(dst, &r)
		if err != nil {
			checkFuzzError(t, err, allowed)
			if string(out) != "prefix" {
				t.Fatalf("dst changed on error: %q", out)
			}
			return
		}
		if !r.IsUpgrade() {
			t.Fatalf("upgraded a request IsUpgrade calls plain: %q", head)
		}
		out = out[len("prefix"):]
		if !bytes.HasPrefix(out, []byte("HTTP/1.1 101 ")) {
			t.Fatalf("upgrade answer %q", out)
		}
		checkSwitchingResponse(t, out, &r)
	})
}

// referenceHeadLength is the obvious quadratic definition HeadLength must
// agree with: the end of the first LF followed by an empty line.
func referenceHeadLength(b []byte) int {
	best := 0
	for _, term := range []string{"\n\n", "\n\r\n"} {
		if i := bytes.Index(b, []byte(term)); i >= 0 && (best == 0 || i+len(term) < best) {
			best = i + len(term)
		}
	}
	return best
}

func checkFuzzError(t *testing.T, err error, allowed map[int]bool) {
	t.Helper()
	var he *HTTPError
	if !errors.As(err, &he) || he == nil {
		t.Fatalf("error %v (%T) is not an *HTTPError", err, err)
	}
	if !allowed[he.Status] {
		t.Fatalf("status %d (%s) not in the allowed set", he.Status, he.Reason)
	}
	if he.Reason == "" || strings.ContainsAny(he.Reason, "\r\n") {
		t.Fatalf("reason %q is not one non-empty line", he.Reason)
	}
	if _, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(he.AppendTo(nil))), nil); err != nil {
		t.Fatalf("error answer does not parse: %v", err)
	}
}

// checkParsed checks what ParseRequest promises about an accepted head: the
// fields alias it, the target splits back together, and nothing that could
// end a line or a header reaches a field.
func checkParsed(t *testing.T, head []byte, r *Request) {
	t.Helper()
	if !isToken(r.Method) {
		t.Fatalf("method %q is not a token", r.Method)
	}
	if r.ProtoMajor != 1 || r.ProtoMinor < 0 || r.ProtoMinor > 9 {
		t.Fatalf("version %d.%d", r.ProtoMajor, r.ProtoMinor)
	}
	pathQuery := string(r.Path)
	if r.RawQuery != nil {
		pathQuery += "?" + string(r.RawQuery)
	}
	if len(r.Path) == 0 || r.Path[0] != '/' || !strings.HasSuffix(string(r.Target), pathQuery) {
		t.Fatalf("target %q split into path %q and query %q", r.Target, r.Path, r.RawQuery)
	}
	if r.ProtoMinor >= 1 && r.seen&hHost == 0 {
		t.Fatalf("HTTP/1.%d request without Host accepted", r.ProtoMinor)
	}
	for _, v := range [][]byte{r.Host, r.Upgrade, r.Connection, r.Key, r.Version, r.Origin, r.Protocol, r.Extensions} {
		if bytes.ContainsAny(v, "\r\n\x00") {
			t.Fatalf("header value %q holds CR, LF or NUL", v)
		}
		if len(v) > 0 && (v[0] == ' ' || v[0] == '\t' || v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
			t.Fatalf("header value %q not trimmed", v)
		}
		if len(v) > 0 && !aliases(head, v) {
			t.Fatalf("header value %q does not alias the head", v)
		}
	}
}

// aliases reports whether sub lies inside b's memory.
func aliases(b, sub []byte) bool {
	for i := 0; i+len(sub) <= len(b); i++ {
		if &b[i] == &sub[0] {
			return true
		}
	}
	return false
}

// checkSwitchingResponse parses a 101 answer with net/http and checks it
// against the request.
func checkSwitchingResponse(t *testing.T, out []byte, r *Request) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(out))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("101 answer does not parse: %v\n%q", err, out)
	}
	if resp.StatusCode != 101 || br.Buffered() != 0 {
		t.Fatalf("status %d, %d stray bytes: %q", resp.StatusCode, br.Buffered(), out)
	}
	sum := sha1.Sum([]byte(string(r.Key) + websocketGUID))
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), base64.StdEncoding.EncodeToString(sum[:]); got != want {
		t.Fatalf("Sec-WebSocket-Accept = %q, want %q", got, want)
	}
	if p := resp.Header.Get("Sec-WebSocket-Protocol"); p != "" && p != "chat" && p != "herald.v1" {
		t.Fatalf("Sec-WebSocket-Protocol = %q was never selected", p)
	}
}
