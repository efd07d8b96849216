package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/herald-ws/herald/engine/push/auth"

	"github.com/herald-ws/herald/engine/enginetest"
)

// dialStatus upgrades with query and header and returns the HTTP status:
// 101, or the refusal's.
func dialStatus(t *testing.T, h *herald, query string, header http.Header) (int, *websocket.Conn) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conn, resp, err := d.Dial("ws://"+h.srv.Addr()+"/ws?"+query, header)
	if err == nil {
		t.Cleanup(func() { conn.Close() })
		return 101, conn
	}
	if resp == nil {
		t.Fatalf("dial: %v", err)
	}
	return resp.StatusCode, nil
}

func pemPublicKey(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// A client publish reaches a plain NATS subscriber byte for byte, with
// headers saying who sent it that the client cannot set itself; the
// publisher, subscribed, gets its own message back.
func TestClientPublishOverNATS(t *testing.T) {
	secret := []byte("a-secret-of-at-least-32-bytes-long!!")
	h := startTestHerald(t, heraldConfig{Auth: &auth.Config{Secret: secret}})
	nc := publisher(t, h)
	backend, err := nc.SubscribeSync("chat.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	tok, err := auth.Mint(secret, "HS256", auth.Claims{Subject: "alice", Subscribe: []string{"chat.>"}, Publish: []string{"chat.>"}, Expires: time.Now().Add(time.Hour)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	code, conn := dialStatus(t, h, "channel=chat.room1", http.Header{"Authorization": {"Bearer " + tok}})
	if code != 101 {
		t.Fatalf("upgrade with a good token answered %d", code)
	}
	hello := expectConnected(t, conn)
	if hello.User != "alice" {
		t.Fatalf("connected %+v", hello)
	}
	data := `{"text":"hi \u00e9",  "n":[1, 2]}`
	send := `{"op":"publish","channel":"chat.room1","data":` + data + `,"id":"5","headers":{"Herald-User":["mallory"]}}`
	if err := conn.WriteMessage(websocket.TextMessage, []byte(send)); err != nil {
		t.Fatal(err)
	}
	m, err := backend.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != data || m.Header.Get("Herald-User") != "alice" || m.Header.Get("Herald-Client") != hello.Client || len(m.Header) != 2 {
		t.Fatalf("NATS got %q with headers %v", m.Data, m.Header)
	}
	got := map[string]bool{}
	for range 2 {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, msg, err := conn.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case string(msg) == `{"op":"ack","id":"5"}`:
			got["ack"] = true
		case strings.HasPrefix(string(msg), `{"channel":"chat.room1","data":`+data):
			got["own"] = true
		default:
			t.Fatalf("unexpected %s", msg)
		}
	}
	if !got["ack"] || !got["own"] {
		t.Fatalf("got %v", got)
	}

	// A subject with a line break cannot add a header of its own (nats.go
	// writes CR and LF in a header value as spaces).
	tok, err = auth.Mint(secret, "HS256", auth.Claims{Subject: "eve\r\nHerald-Client: forged", Publish: []string{"chat.>"}, Expires: time.Now().Add(time.Hour)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	code, conn = dialStatus(t, h, "token="+tok, nil)
	if code != 101 {
		t.Fatalf("upgrade answered %d", code)
	}
	eve := expectConnected(t, conn)
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"op":"publish","channel":"chat.room1","data":1}`)); err != nil {
		t.Fatal(err)
	}
	if m, err = backend.NextMsg(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if user := m.Header.Get("Herald-User"); !strings.HasPrefix(user, "eve") || strings.ContainsAny(user, "\r\n") || len(m.Header["Herald-Client"]) != 1 || m.Header.Get("Herald-Client") != eve.Client || len(m.Header) != 2 {
		t.Fatalf("headers %v", m.Header)
	}
}

// Public keys pin their algorithm: RS256 and ES256 tokens are accepted by
// their keys, and the classic confusions are refused before the upgrade.
func TestPublicKeyTokens(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{"sub": "bob", "exp": time.Now().Add(time.Hour).Unix(), "subscribe": []string{"scores.>"}}
	rsaPEM := pemPublicKey(t, &rsaKey.PublicKey)

	var logs enginetest.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	hr := startTestHerald(t, heraldConfig{Auth: &auth.Config{PublicKeyPEM: rsaPEM, Logger: log}})
	he := startTestHerald(t, heraldConfig{Auth: &auth.Config{PublicKeyPEM: pemPublicKey(t, &ecKey.PublicKey)}})

	none := strings.Join([]string{b64(`{"alg":"none","typ":"JWT"}`), b64(`{"sub":"bob","exp":4102444800,"subscribe":[">"]}`), ""}, ".")
	confused := sign(t, jwt.SigningMethodHS256, rsaPEM, claims)
	rs := sign(t, jwt.SigningMethodRS256, rsaKey, claims)
	es := sign(t, jwt.SigningMethodES256, ecKey, claims)
	for _, tc := range []struct {
		name  string
		h     *herald
		token string
		want  int
	}{
		{"RS256", hr, rs, 101},
		{"ES256", he, es, 101},
		{"ES256 to an RSA key", hr, es, 401},
		{"RS256 to an EC key", he, rs, 401},
		{"HS256 signed with the RSA key's PEM", hr, confused, 401},
		{"alg none", hr, none, 401},
		{"not permitted channel", hr, rs + "&channel=news.x", 403},
	} {
		q := "channel=scores.live&token=" + tc.token
		if code, _ := dialStatus(t, tc.h, q, nil); code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.want)
		}
	}
	for _, tok := range []string{rs, es, confused, none} {
		if strings.Contains(logs.String(), tok) {
			t.Fatalf("a token is in the logs:\n%s", logs.String())
		}
	}
	if !strings.Contains(logs.String(), "auth") {
		t.Fatalf("no auth log lines at debug to check:\n%s", logs.String())
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// serve refuses permission flags no client could use, and auth flags
// that contradict each other, before it listens.
func TestServeAccessFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--public-channels", "_INBOX.>"}, "reserved"},
		{[]string{"--public-publish", "$JS.API.>"}, "reserved"},
		{[]string{"--public-channels", "a..b"}, "empty token"},
		{[]string{"--user-channels", "user.{sub}.>"}, "need a key"},
		{[]string{"--auth-secret", "x", "--auth-jwks", "http://127.0.0.1:1/jwks"}, "give one of"},
		{[]string{"--public-channels", "user.{sub}"}, "{sub}"},
	} {
		var stderr bytes.Buffer
		code := run(append([]string{"serve", "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:-1"}, tc.args...), &bytes.Buffer{}, &stderr)
		if code == 0 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", tc.args, code, stderr.String(), tc.want)
		}
	}
}

// A JWKS served over HTTP, rotated: a token by the new key is accepted
// once Herald refetches for its unknown kid, and the old key's tokens are
// refused from then on.
func TestJWKSRotationOverARealSocket(t *testing.T) {
	keyA, errA := rsa.GenerateKey(rand.Reader, 2048)
	keyB, errB := rsa.GenerateKey(rand.Reader, 2048)
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	jwk := func(kid string, k *rsa.PrivateKey) string {
		e := big.NewInt(int64(k.E)).Bytes()
		return `{"kty":"RSA","use":"sig","alg":"RS256","kid":"` + kid + `","n":"` +
			base64.RawURLEncoding.EncodeToString(k.N.Bytes()) + `","e":"` + base64.RawURLEncoding.EncodeToString(e) + `"}`
	}
	var current atomic.Value
	current.Store(`{"keys":[` + jwk("a", keyA) + `]}`)
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(current.Load().(string)))
	}))
	t.Cleanup(jwks.Close)
	h := startTestHerald(t, heraldConfig{Auth: &auth.Config{JWKSURL: jwks.URL, JWKSUnknownKIDRefresh: time.Millisecond}})

	token := func(kid string, k *rsa.PrivateKey) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": "kim", "exp": time.Now().Add(time.Hour).Unix(), "subscribe": []string{"feed.>"}})
		tok.Header["kid"] = kid
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	byA, byB := token("a", keyA), token("b", keyB)
	if code, _ := dialStatus(t, h, "channel=feed.x&token="+byA, nil); code != 101 {
		t.Fatalf("key a: %d", code)
	}
	if code, _ := dialStatus(t, h, "channel=feed.x&token="+byB, nil); code != 401 {
		t.Fatalf("key b before the rotation: %d, want 401", code)
	}
	current.Store(`{"keys":[` + jwk("b", keyB) + `]}`)
	time.Sleep(5 * time.Millisecond) // past the unknown-kid refetch limit
	if code, _ := dialStatus(t, h, "channel=feed.x&token="+byB, nil); code != 101 {
		t.Fatalf("key b after the rotation: %d, want 101", code)
	}
	if code, _ := dialStatus(t, h, "channel=feed.x&token="+byA, nil); code != 401 {
		t.Fatalf("key a after it left the JWKS: %d, want 401", code)
	}
}
