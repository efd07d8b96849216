package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-ws/herald/engine/enginetest"
)

// t0 is the fixed "now" of the tests.
var t0 = time.Unix(1_700_000_000, 0)

// testSecret is long enough not to draw New's warning, and distinctive
// enough to be searched for in errors and logs.
var testSecret = []byte("herald-test-secret-0123456789abcdefghij")

// testKeys are generated once per test binary: RSA generation is the slow
// part of these tests.
type testKeys struct {
	rsaA, rsaB, rsaC *rsa.PrivateKey
	p256, p256b      *ecdsa.PrivateKey
	p384             *ecdsa.PrivateKey
}

var keys = sync.OnceValue(func() testKeys {
	rsaKey := func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	}
	ecKey := func(c elliptic.Curve) *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	}
	return testKeys{
		rsaA: rsaKey(), rsaB: rsaKey(), rsaC: rsaKey(),
		p256: ecKey(elliptic.P256()), p256b: ecKey(elliptic.P256()), p384: ecKey(elliptic.P384()),
	}
})

// clock is an injectable Now.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.ns.Store(t.UnixNano())
	return c
}
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }
func (c *clock) Set(t time.Time)     { c.ns.Store(t.UnixNano()) }

// baseClaims are the claims of a good token expiring at exp.
func baseClaims(exp time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"sub":       "alice",
		"exp":       exp.Unix(),
		"iat":       t0.Unix(),
		"subscribe": []string{"chat.>", "prices.*"},
		"publish":   []string{"chat.room1"},
	}
}

// wantBase is what Verify reads from baseClaims(exp).
func wantBase(exp time.Time) Claims {
	return Claims{
		Subject:   "alice",
		Subscribe: []string{"chat.>", "prices.*"},
		Publish:   []string{"chat.room1"},
		Expires:   time.Unix(exp.Unix(), 0),
	}
}

// sign signs claims with key using alg, with a kid header unless kid is "".
func sign(t testing.TB, alg string, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.GetSigningMethod(alg), claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", alg, err)
	}
	return s
}

// rawToken assembles a token from a header, claims and signature of your
// choosing, for the tokens no library would sign.
func rawToken(t testing.TB, header map[string]any, claims any, sig []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(h) + "." + enc.EncodeToString(c) + "." + enc.EncodeToString(sig)
}

// pemPublic encodes pub as a PKIX "PUBLIC KEY" PEM block.
func pemPublic(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// newTestLogger logs everything, down to Debug, to w.
func newTestLogger(w *enginetest.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newVerifier returns a Verifier for cfg whose Logger writes, at Debug
// level, to the returned buffer, with Now at t0 unless cfg has a clock.
func newVerifier(t testing.TB, cfg Config) (*Verifier, *enginetest.Buffer) {
	t.Helper()
	logs := &enginetest.Buffer{}
	cfg.Logger = newTestLogger(logs)
	if cfg.Now == nil {
		cfg.Now = newClock(t0).Now
	}
	v, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(v.Close)
	return v, logs
}

// jwksServer serves a JWK Set that a test can replace, and counts fetches.
type jwksServer struct {
	*httptest.Server
	body    atomic.Pointer[[]byte]
	fetches atomic.Int64
	block   atomic.Pointer[chan struct{}] // if set, requests wait on it
}

// jwk is one key of a served set: a public key and its kid.
type jwk struct {
	kid string
	key any // *rsa.PublicKey, *ecdsa.PublicKey, or []byte for an "oct" key
}

func newJWKSServer(t testing.TB, set ...jwk) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.set(t, set...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		if ch := s.block.Load(); ch != nil {
			select {
			case <-*ch:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

// set replaces the served keys.
func (s *jwksServer) set(t testing.TB, set ...jwk) {
	t.Helper()
	var out jwkset.JWKSMarshal
	for _, k := range set {
		if b, ok := k.key.([]byte); ok {
			out.Keys = append(out.Keys, jwkset.JWKMarshal{KTY: jwkset.KtyOct, KID: k.kid, K: base64.RawURLEncoding.EncodeToString(b)})
			continue
		}
		j, err := jwkset.NewJWKFromKey(k.key, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: k.kid}})
		if err != nil {
			t.Fatalf("JWK %s: %v", k.kid, err)
		}
		out.Keys = append(out.Keys, j.Marshal())
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	s.body.Store(&b)
}

// assertNoLeak fails if text holds the token, a part of it, or the secret.
func assertNoLeak(t testing.TB, what, text, token string, secrets ...[]byte) {
	t.Helper()
	if token != "" && strings.Contains(text, token) {
		t.Errorf("%s holds the token: %q", what, text)
	}
	for _, part := range strings.Split(token, ".") {
		if len(part) >= 8 && strings.Contains(text, part) {
			t.Errorf("%s holds a part of the token (%q): %q", what, part, text)
		}
	}
	for _, s := range secrets {
		if len(s) > 0 && strings.Contains(text, string(s)) {
			t.Errorf("%s holds a secret: %q", what, text)
		}
	}
}
