package auth

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-ws/herald/engine/enginetest"
)

// verifiers are one Verifier per key source, all with Now at t0 and
// logging to their own buffer.
type verifiers struct {
	hs, rsa, rsaPKCS1, rsaCert, ec, ec384, jwks *Verifier
	logs                                        map[*Verifier]*enginetest.Buffer
	rsaPEM                                      []byte // the PEM of rsa's key: the bytes of the HMAC confusion attack
}

func newVerifiers(t *testing.T) *verifiers {
	t.Helper()
	k := keys()
	vs := &verifiers{logs: map[*Verifier]*enginetest.Buffer{}}
	add := func(cfg Config) *Verifier {
		v, logs := newVerifier(t, cfg)
		vs.logs[v] = logs
		return v
	}
	vs.rsaPEM = pemPublic(t, &k.rsaA.PublicKey)
	vs.hs = add(Config{Secret: testSecret})
	vs.rsa = add(Config{PublicKeyPEM: vs.rsaPEM})
	vs.rsaPKCS1 = add(Config{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsaA.PublicKey)})})
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issuer"}, NotBefore: t0, NotAfter: t0.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.rsaA.PublicKey, k.rsaA)
	if err != nil {
		t.Fatal(err)
	}
	vs.rsaCert = add(Config{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})})
	vs.ec = add(Config{PublicKeyPEM: pemPublic(t, &k.p256.PublicKey)})
	vs.ec384 = add(Config{PublicKeyPEM: pemPublic(t, &k.p384.PublicKey)})
	srv := newJWKSServer(t,
		jwk{"a", &k.rsaA.PublicKey},
		jwk{"e", &k.p256.PublicKey},
		jwk{"hmac", vs.rsaPEM}, // an "oct" key: must never verify anything
	)
	vs.jwks = add(Config{JWKSURL: srv.URL + "/jwks.json", HTTPClient: srv.Client()})
	return vs
}

func TestVerifyAccepts(t *testing.T) {
	k := keys()
	vs := newVerifiers(t)
	exp := t0.Add(time.Hour)
	tests := []struct {
		name  string
		v     *Verifier
		token string
	}{
		{"HS256", vs.hs, sign(t, "HS256", testSecret, "", baseClaims(exp))},
		{"HS384", vs.hs, sign(t, "HS384", testSecret, "", baseClaims(exp))},
		{"HS512", vs.hs, sign(t, "HS512", testSecret, "", baseClaims(exp))},
		{"RS256 PKIX", vs.rsa, sign(t, "RS256", k.rsaA, "", baseClaims(exp))},
		{"RS384 PKIX", vs.rsa, sign(t, "RS384", k.rsaA, "", baseClaims(exp))},
		{"RS512 PKIX", vs.rsa, sign(t, "RS512", k.rsaA, "", baseClaims(exp))},
		{"RS256 PKCS1", vs.rsaPKCS1, sign(t, "RS256", k.rsaA, "", baseClaims(exp))},
		{"RS256 certificate", vs.rsaCert, sign(t, "RS256", k.rsaA, "", baseClaims(exp))},
		{"RS256 PEM ignores kid", vs.rsa, sign(t, "RS256", k.rsaA, "whatever", baseClaims(exp))},
		{"ES256 P-256", vs.ec, sign(t, "ES256", k.p256, "", baseClaims(exp))},
		{"ES384 P-384", vs.ec384, sign(t, "ES384", k.p384, "", baseClaims(exp))},
		{"JWKS RS256", vs.jwks, sign(t, "RS256", k.rsaA, "a", baseClaims(exp))},
		{"JWKS ES256", vs.jwks, sign(t, "ES256", k.p256, "e", baseClaims(exp))},
		{"JWKS RS256 no kid", vs.jwks, sign(t, "RS256", k.rsaA, "", baseClaims(exp))},
		{"JWKS ES256 no kid", vs.jwks, sign(t, "ES256", k.p256, "", baseClaims(exp))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.v.Verify(context.Background(), tt.token)
			if err != nil {
				t.Fatalf("Verify: %v (%#v)", err, err)
			}
			if want := wantBase(exp); !reflect.DeepEqual(got, want) {
				t.Errorf("claims = %+v, want %+v", got, want)
			}
		})
	}
}

// TestVerifyClaims: what Verify reads, and the shapes of Herald's claims
// it accepts.
func TestVerifyClaims(t *testing.T) {
	v, _ := newVerifier(t, Config{Secret: testSecret})
	exp := t0.Add(time.Hour)
	tests := []struct {
		name   string
		claims jwt.MapClaims
		want   Claims
	}{
		{"minimal", jwt.MapClaims{"exp": exp.Unix()}, Claims{Expires: exp}},
		{"null patterns are absent", jwt.MapClaims{"exp": exp.Unix(), "subscribe": nil, "publish": nil}, Claims{Expires: exp}},
		{"empty arrays stay empty", jwt.MapClaims{"exp": exp.Unix(), "subscribe": []string{}, "publish": []string{}},
			Claims{Expires: exp, Subscribe: []string{}, Publish: []string{}}},
		{"iss and aud", jwt.MapClaims{"exp": exp.Unix(), "iss": "app", "aud": []string{"herald", "other"}},
			Claims{Expires: exp, Issuer: "app", Audience: []string{"herald", "other"}}},
		{"single aud", jwt.MapClaims{"exp": exp.Unix(), "aud": "herald"}, Claims{Expires: exp, Audience: []string{"herald"}}},
		{"longest pattern, most patterns", jwt.MapClaims{"exp": exp.Unix(),
			"subscribe": []string{strings.Repeat("a", MaxPatternLen)}, "publish": make([]string, MaxPatterns)},
			Claims{Expires: exp, Subscribe: []string{strings.Repeat("a", MaxPatternLen)}, Publish: make([]string, MaxPatterns)}},
		{"unknown claims ignored", jwt.MapClaims{"exp": exp.Unix(), "role": "admin", "jti": "x"}, Claims{Expires: exp}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := v.Verify(context.Background(), sign(t, "HS256", testSecret, "", tt.claims))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("claims = %#v, want %#v", got, tt.want)
			}
		})
	}
}

// TestVerifyRefuses: every way a token is refused, with every key source
// where it applies; and no refusal, in its error or in the Debug log,
// quotes the token or the secret.
func TestVerifyRefuses(t *testing.T) {
	k := keys()
	vs := newVerifiers(t)
	iss, issLogs := newVerifier(t, Config{Secret: testSecret, Issuer: "app", Audience: "herald"})
	exp := t0.Add(time.Hour)
	good := sign(t, "HS256", testSecret, "", baseClaims(exp))
	with := func(extra jwt.MapClaims) jwt.MapClaims {
		c := baseClaims(exp)
		for k, v := range extra {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	hs := func(extra jwt.MapClaims) string { return sign(t, "HS256", testSecret, "", with(extra)) }
	none := func(kid string) string {
		h := map[string]any{"alg": "none", "typ": "JWT"}
		if kid != "" {
			h["kid"] = kid
		}
		return rawToken(t, h, baseClaims(exp), nil)
	}
	// tampered keeps good's signature over a payload that says bob.
	parts := strings.Split(good, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), "alice", "bob", 1))) + "." + parts[2]
	big := sign(t, "HS256", testSecret, "", with(jwt.MapClaims{"pad": strings.Repeat("x", 100<<10)}))

	tests := []struct {
		name   string
		v      *Verifier
		token  string
		reason string
		msg    string // if set, the exact Error()
	}{
		{"empty", vs.hs, "", ReasonMissing, "no token"},
		{"too large", vs.hs, big, ReasonTooLarge, "token larger than 8192 bytes"},
		{"too large JWKS", vs.jwks, big, ReasonTooLarge, ""},

		{"alg none HS", vs.hs, none(""), ReasonAlgorithm, "token signing algorithm not accepted"},
		{"alg none RSA", vs.rsa, none(""), ReasonAlgorithm, ""},
		{"alg none EC", vs.ec, none(""), ReasonAlgorithm, ""},
		{"alg none JWKS", vs.jwks, none(""), ReasonAlgorithm, ""},
		{"alg none JWKS known kid", vs.jwks, none("a"), ReasonAlgorithm, ""},
		{"alg None HS", vs.hs, rawToken(t, map[string]any{"alg": "None"}, baseClaims(exp), nil), ReasonAlgorithm, ""},
		{"no alg", vs.hs, rawToken(t, map[string]any{"typ": "JWT"}, baseClaims(exp), []byte("x")), ReasonAlgorithm, ""},
		{"unknown alg", vs.hs, rawToken(t, map[string]any{"alg": "HS1"}, baseClaims(exp), []byte("x")), ReasonAlgorithm, ""},

		{"HS256 keyed with the public PEM, to PEM", vs.rsa, sign(t, "HS256", vs.rsaPEM, "", baseClaims(exp)), ReasonAlgorithm, ""},
		{"HS256 keyed with the public PEM, to JWKS, RSA kid", vs.jwks, sign(t, "HS256", vs.rsaPEM, "a", baseClaims(exp)), ReasonAlgorithm, ""},
		{"HS256 keyed with the public PEM, to JWKS, oct kid", vs.jwks, sign(t, "HS256", vs.rsaPEM, "hmac", baseClaims(exp)), ReasonAlgorithm, ""},
		{"HS256 to JWKS, no kid", vs.jwks, sign(t, "HS256", vs.rsaPEM, "", baseClaims(exp)), ReasonAlgorithm, ""},
		{"HS256 to certificate", vs.rsaCert, sign(t, "HS256", vs.rsaPEM, "", baseClaims(exp)), ReasonAlgorithm, ""},
		{"RS256 to EC key", vs.ec, sign(t, "RS256", k.rsaA, "", baseClaims(exp)), ReasonAlgorithm, ""},
		{"ES256 to RSA key", vs.rsa, sign(t, "ES256", k.p256, "", baseClaims(exp)), ReasonAlgorithm, ""},
		{"ES384 to P-256 key", vs.ec, sign(t, "ES384", k.p384, "", baseClaims(exp)), ReasonAlgorithm, ""},
		{"ES256 to P-384 key", vs.ec384, sign(t, "ES256", k.p256, "", baseClaims(exp)), ReasonAlgorithm, ""},
		{"RS256 to HMAC", vs.hs, sign(t, "RS256", k.rsaA, "", baseClaims(exp)), ReasonAlgorithm, ""},
		{"PS256 to RSA key", vs.rsa, sign(t, "PS256", k.rsaA, "", baseClaims(exp)), ReasonAlgorithm, ""},
		{"JWKS RS256 with EC kid", vs.jwks, sign(t, "RS256", k.rsaA, "e", baseClaims(exp)), ReasonAlgorithm, ""},
		{"JWKS ES256 with RSA kid", vs.jwks, sign(t, "ES256", k.p256, "a", baseClaims(exp)), ReasonAlgorithm, ""},
		{"JWKS RS256 with oct kid", vs.jwks, sign(t, "RS256", k.rsaA, "hmac", baseClaims(exp)), ReasonAlgorithm, ""},
		{"JWKS ES384, no key of that curve", vs.jwks, sign(t, "ES384", k.p384, "", baseClaims(exp)), ReasonUnknownKey, ""},
		{"JWKS unknown kid", vs.jwks, sign(t, "RS256", k.rsaB, "nope", baseClaims(exp)), ReasonUnknownKey, "token signed by an unknown key"},
		{"JWKS kid not a string", vs.jwks, rawToken(t, map[string]any{"alg": "RS256", "kid": 7}, baseClaims(exp), []byte("x")), ReasonMalformed, ""},

		{"wrong secret", vs.hs, sign(t, "HS256", []byte("another-secret-0123456789abcdefghijkl"), "", baseClaims(exp)), ReasonBadSignature, "invalid token signature"},
		{"tampered payload HS", vs.hs, tampered, ReasonBadSignature, ""},
		{"RS256 other key", vs.rsa, sign(t, "RS256", k.rsaB, "", baseClaims(exp)), ReasonBadSignature, ""},
		{"ES256 other key", vs.ec, sign(t, "ES256", k.p256b, "", baseClaims(exp)), ReasonBadSignature, ""},
		{"JWKS other key, known kid", vs.jwks, sign(t, "RS256", k.rsaB, "a", baseClaims(exp)), ReasonBadSignature, ""},
		{"JWKS other key, no kid", vs.jwks, sign(t, "ES256", k.p256b, "", baseClaims(exp)), ReasonBadSignature, ""},
		{"empty signature", vs.hs, parts[0] + "." + parts[1] + ".", ReasonBadSignature, ""},

		{"truncated to two segments", vs.hs, parts[0] + "." + parts[1], ReasonMalformed, "malformed token"},
		{"truncated header", vs.hs, parts[0][:5], ReasonMalformed, ""},
		{"garbage", vs.hs, "not-a-token", ReasonMalformed, ""},
		{"three dots", vs.hs, "...", ReasonMalformed, ""},
		{"four segments", vs.hs, good + ".x", ReasonMalformed, ""},
		{"bad base64", vs.hs, "a.b.c", ReasonMalformed, ""},
		{"header not JSON", vs.hs, base64.RawURLEncoding.EncodeToString([]byte("{nope")) + "." + parts[1] + "." + parts[2], ReasonMalformed, ""},
		{"newline in signature", vs.hs, good[:len(good)-4] + "\n" + good[len(good)-4:], ReasonMalformed, ""},
		{"padding", vs.hs, good + "=", ReasonMalformed, ""},
		{"space", vs.hs, " " + good, ReasonMalformed, ""},
		{"exp not a number", vs.hs, hs(jwt.MapClaims{"exp": "soon"}), ReasonMalformed, ""},
		{"sub not a string", vs.hs, hs(jwt.MapClaims{"sub": 42}), ReasonMalformed, ""},
		{"crit header", vs.hs, func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodHS256, baseClaims(exp))
			tok.Header["crit"] = []string{"exp"}
			s, _ := tok.SignedString(testSecret)
			return s
		}(), ReasonMalformed, ""},

		{"expired", vs.hs, hs(jwt.MapClaims{"exp": t0.Add(-time.Minute).Unix()}), ReasonExpired, "token expired"},
		{"expired RS256", vs.rsa, sign(t, "RS256", k.rsaA, "", with(jwt.MapClaims{"exp": t0.Add(-time.Minute).Unix()})), ReasonExpired, "token expired"},
		{"expired JWKS", vs.jwks, sign(t, "ES256", k.p256, "e", with(jwt.MapClaims{"exp": t0.Add(-time.Minute).Unix()})), ReasonExpired, "token expired"},
		{"no exp", vs.hs, hs(jwt.MapClaims{"exp": nil}), ReasonClaims, "token has no expiry (exp)"},
		{"no exp JWKS", vs.jwks, sign(t, "RS256", k.rsaA, "a", with(jwt.MapClaims{"exp": nil})), ReasonClaims, ""},
		{"nbf ahead", vs.hs, hs(jwt.MapClaims{"nbf": t0.Add(time.Minute).Unix()}), ReasonNotYetValid, "token not valid yet"},
		{"wrong iss", iss, hs(jwt.MapClaims{"iss": "other", "aud": "herald"}), ReasonIssuer, "token issuer not accepted"},
		{"no iss", iss, hs(jwt.MapClaims{"aud": "herald"}), ReasonIssuer, "token has no issuer (iss)"},
		{"wrong aud", iss, hs(jwt.MapClaims{"iss": "app", "aud": []string{"a", "b"}}), ReasonAudience, "token audience not accepted"},
		{"no aud", iss, hs(jwt.MapClaims{"iss": "app"}), ReasonAudience, "token has no audience (aud)"},
		{"wrong iss beats expired", iss, hs(jwt.MapClaims{"iss": "other", "aud": "herald", "exp": t0.Add(-time.Hour).Unix()}), ReasonIssuer, ""},

		{"subscribe a string", vs.hs, hs(jwt.MapClaims{"subscribe": "chat.>"}), ReasonClaims, "claim subscribe must be an array of strings"},
		{"subscribe holds a number", vs.hs, hs(jwt.MapClaims{"subscribe": []any{"chat.>", 7}}), ReasonClaims, "claim subscribe must be an array of strings"},
		{"subscribe holds null", vs.hs, hs(jwt.MapClaims{"subscribe": []any{nil}}), ReasonClaims, "claim subscribe must be an array of strings"},
		{"subscribe holds an array", vs.hs, hs(jwt.MapClaims{"subscribe": []any{[]string{"a"}}}), ReasonClaims, ""},
		{"subscribe an object", vs.hs, hs(jwt.MapClaims{"subscribe": map[string]any{"a": 1}}), ReasonClaims, ""},
		{"subscribe a bool", vs.hs, hs(jwt.MapClaims{"subscribe": true}), ReasonClaims, ""},
		{"publish a number", vs.hs, hs(jwt.MapClaims{"publish": 1}), ReasonClaims, "claim publish must be an array of strings"},
		{"too many patterns", vs.hs, hs(jwt.MapClaims{"subscribe": make([]string, MaxPatterns+1)}), ReasonClaims, "claim subscribe has more than 128 patterns"},
		{"pattern too long", vs.hs, hs(jwt.MapClaims{"publish": []string{strings.Repeat("a", MaxPatternLen+1)}}), ReasonClaims, "claim publish has a pattern longer than 256 bytes"},
		{"bad claims JWKS", vs.jwks, sign(t, "RS256", k.rsaA, "a", with(jwt.MapClaims{"subscribe": "x"})), ReasonClaims, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.v.Verify(context.Background(), tt.token)
			if err == nil {
				t.Fatalf("Verify accepted it: %+v", got)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v is not an *Error", err, err)
			}
			if e.Reason != tt.reason {
				t.Errorf("reason %q (%q), want %q", e.Reason, e.Message, tt.reason)
			}
			if tt.msg != "" && err.Error() != tt.msg {
				t.Errorf("Error() = %q, want %q", err.Error(), tt.msg)
			}
			if strings.Contains(err.Error(), "\n") || err.Error() == "" {
				t.Errorf("Error() = %q, want one non-empty line", err.Error())
			}
			if !reflect.DeepEqual(got, Claims{}) {
				t.Errorf("refusal returned claims %+v", got)
			}
			if errors.Is(err, ErrExpired) != (tt.reason == ReasonExpired) {
				t.Errorf("errors.Is(err, ErrExpired) = %v for reason %q", errors.Is(err, ErrExpired), e.Reason)
			}
			assertNoLeak(t, "error", err.Error(), tt.token, testSecret)
			assertNoLeak(t, "error", fmt.Sprintf("%#v %+v", err, err), tt.token, testSecret)
		})
	}
	vs.logs[iss] = issLogs
	for _, logs := range vs.logs {
		for _, tt := range tests {
			assertNoLeak(t, "log", logs.String(), tt.token, testSecret)
		}
	}
	logs := vs.logs[vs.hs].String()
	if !strings.Contains(logs, "reason=expired") || !strings.Contains(logs, "reason=too_large") {
		t.Errorf("the Debug log does not give the reasons of refusals:\n%s", logs)
	}
}

func TestExpiredIsDistinguishable(t *testing.T) {
	v, _ := newVerifier(t, Config{Secret: testSecret})
	_, err := v.Verify(context.Background(), sign(t, "HS256", testSecret, "", baseClaims(t0.Add(-time.Hour))))
	if !errors.Is(err, ErrExpired) || err.Error() != "token expired" {
		t.Fatalf("err = %v, want ErrExpired saying \"token expired\"", err)
	}
	wrapped := errors.Join(errors.New("connect"), err)
	if !errors.Is(wrapped, ErrExpired) {
		t.Errorf("a wrapped expiry is not ErrExpired")
	}
	_, err = v.Verify(context.Background(), "x")
	if errors.Is(err, ErrExpired) {
		t.Errorf("a malformed token is ErrExpired")
	}
}

// TestLeeway: exp and nbf are checked against the injected clock, with
// the configured leeway either side.
func TestLeeway(t *testing.T) {
	exp := t0.Add(time.Hour)
	nbf := t0.Add(10 * time.Minute)
	token := sign(t, "HS256", testSecret, "", jwt.MapClaims{"exp": exp.Unix(), "nbf": nbf.Unix()})
	tests := []struct {
		name   string
		leeway time.Duration
		now    time.Time
		reason string // "" accepts
	}{
		{"inside", 0, t0.Add(30 * time.Minute), ""},
		{"before nbf", 0, nbf.Add(-DefaultLeeway - time.Second), ReasonNotYetValid},
		{"nbf within default leeway", 0, nbf.Add(-DefaultLeeway + time.Second), ""},
		{"exp within default leeway", 0, exp.Add(DefaultLeeway - time.Second), ""},
		{"exp plus default leeway", 0, exp.Add(DefaultLeeway), ReasonExpired},
		{"no leeway: at exp", -1, exp, ReasonExpired},
		{"no leeway: a second before exp", -1, exp.Add(-time.Second), ""},
		{"no leeway: a second before nbf", -1, nbf.Add(-time.Second), ReasonNotYetValid},
		{"no leeway: at nbf", -1, nbf, ""},
		{"minute leeway: 59s after exp", time.Minute, exp.Add(59 * time.Second), ""},
		{"minute leeway: 59s before nbf", time.Minute, nbf.Add(-59 * time.Second), ""},
		{"minute leeway: 61s after exp", time.Minute, exp.Add(61 * time.Second), ReasonExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, _ := newVerifier(t, Config{Secret: testSecret, Leeway: tt.leeway, Now: newClock(tt.now).Now})
			_, err := v.Verify(context.Background(), token)
			switch {
			case tt.reason == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.reason != "" && (err == nil || err.(*Error).Reason != tt.reason):
				t.Fatalf("err = %v, want reason %s", err, tt.reason)
			}
		})
	}
}

// TestCache: a token verified once is not verified again, yet is refused
// once it expires, and callers never share the cached slices.
func TestCache(t *testing.T) {
	k := keys()
	clk := newClock(t0)
	v, _ := newVerifier(t, Config{PublicKeyPEM: pemPublic(t, &k.rsaA.PublicKey), Now: clk.Now})
	exp := t0.Add(time.Hour)
	token := sign(t, "RS256", k.rsaA, "", baseClaims(exp))
	first, err := v.Verify(context.Background(), token)
	if err != nil {
		t.Fatal(err)
	}
	if v.cache.len() != 1 {
		t.Fatalf("cache holds %d entries after one token, want 1", v.cache.len())
	}
	// From now on a verification would fail the test: only the cache can answer.
	real := v.keyfunc
	v.keyfunc = func(context.Context) jwt.Keyfunc {
		return func(*jwt.Token) (any, error) {
			t.Error("the token was verified again")
			return nil, errors.New("verified again")
		}
	}
	first.Subscribe[0] = "changed by the caller"
	second, err := v.Verify(context.Background(), token)
	if err != nil {
		t.Fatal(err)
	}
	if want := wantBase(exp); !reflect.DeepEqual(second, want) {
		t.Errorf("second Verify = %+v, want %+v", second, want)
	}
	clk.Set(exp.Add(DefaultLeeway - time.Second))
	if _, err := v.Verify(context.Background(), token); err != nil {
		t.Fatalf("within the leeway: %v", err)
	}
	clk.Set(exp.Add(DefaultLeeway))
	if _, err := v.Verify(context.Background(), token); !errors.Is(err, ErrExpired) {
		t.Fatalf("cached token after expiry: err = %v, want expired", err)
	}
	if v.cache.len() != 0 {
		t.Errorf("the expired entry is still cached")
	}
	v.keyfunc = real
	if _, err := v.Verify(context.Background(), token); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired token once out of the cache: err = %v, want expired", err)
	}
}

func TestCacheBounded(t *testing.T) {
	v, _ := newVerifier(t, Config{Secret: testSecret, CacheSize: 4})
	for i := range 20 {
		c := baseClaims(t0.Add(time.Hour))
		c["sub"] = strings.Repeat("u", i+1)
		if _, err := v.Verify(context.Background(), sign(t, "HS256", testSecret, "", c)); err != nil {
			t.Fatal(err)
		}
		if n := v.cache.len(); n > 4 {
			t.Fatalf("cache holds %d entries, more than CacheSize 4", n)
		}
	}
	off, _ := newVerifier(t, Config{Secret: testSecret, CacheSize: -1})
	token := sign(t, "HS256", testSecret, "", baseClaims(t0.Add(time.Hour)))
	for range 2 {
		if _, err := off.Verify(context.Background(), token); err != nil {
			t.Fatal(err)
		}
	}
	if off.cache.len() != 0 {
		t.Errorf("CacheSize -1 caches")
	}
}

// TestVerifyConcurrent is for the race detector: several goroutines verify
// the same and different tokens through one small cache.
func TestVerifyConcurrent(t *testing.T) {
	k := keys()
	v, _ := newVerifier(t, Config{PublicKeyPEM: pemPublic(t, &k.p256.PublicKey), CacheSize: 3})
	var tokens []string
	for i := range 6 {
		c := baseClaims(t0.Add(time.Hour))
		c["sub"] = strings.Repeat("u", i+1)
		tokens = append(tokens, sign(t, "ES256", k.p256, "", c))
	}
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			var err error
			for i := range 30 {
				tok := tokens[(g+i)%len(tokens)]
				var c Claims
				if c, err = v.Verify(context.Background(), tok); err == nil && len(c.Subject) != (g+i)%len(tokens)+1 {
					err = errors.New("claims of another token")
				}
				if err != nil {
					break
				}
				c.Subscribe[0] = "mine" // a caller owns what it gets
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestNewErrors(t *testing.T) {
	k := keys()
	rsaPEM := pemPublic(t, &k.rsaA.PublicKey)
	privDER, _ := x509.MarshalPKCS8PrivateKey(k.rsaA)
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no source", Config{}, "want exactly one of Secret, PublicKeyPEM and JWKSURL, got 0"},
		{"two sources", Config{Secret: testSecret, PublicKeyPEM: rsaPEM}, "got 2"},
		{"three sources", Config{Secret: testSecret, PublicKeyPEM: rsaPEM, JWKSURL: "http://x"}, "got 3"},
		{"not PEM", Config{PublicKeyPEM: []byte("hello")}, "holds no PEM block"},
		{"private key", Config{PublicKeyPEM: privPEM}, "holds a PRIVATE KEY; give the public key only"},
		{"two keys", Config{PublicKeyPEM: append(slicesClone(rsaPEM), rsaPEM...)}, "more than one PEM block"},
		{"bad DER", Config{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}})}, "parse PUBLIC KEY"},
		{"other block", Config{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "FOO", Bytes: []byte{1}})}, `"FOO" block`},
		{"JWKS not a URL", Config{JWKSURL: "::nope"}, "JWKSURL is not an http or https URL"},
		{"JWKS file URL", Config{JWKSURL: "file:///etc/passwd"}, "JWKSURL is not an http or https URL"},
		{"negative size", Config{Secret: testSecret, MaxTokenSize: -1}, "negative MaxTokenSize"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := New(context.Background(), tt.cfg)
			if err == nil {
				v.Close()
				t.Fatal("New accepted it")
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "auth: ") {
				t.Errorf("err = %q, want it to start auth: and hold %q", err, tt.want)
			}
			assertNoLeak(t, "error", err.Error(), "", testSecret, privDER)
			if strings.Contains(err.Error(), "PRIVATE KEY-----") || strings.Contains(err.Error(), string(privPEM[30:60])) {
				t.Errorf("err quotes the PEM: %q", err)
			}
		})
	}
}

func slicesClone(b []byte) []byte { return append([]byte(nil), b...) }

func TestMint(t *testing.T) {
	exp := t0.Add(time.Hour)
	v, _ := newVerifier(t, Config{Secret: testSecret, Issuer: "app", Audience: "herald"})
	c := Claims{Subject: "alice", Issuer: "app", Audience: []string{"herald", "other"},
		Subscribe: []string{"chat.>"}, Publish: []string{}, Expires: exp.Add(999 * time.Millisecond)}
	for _, alg := range []string{"HS256", "HS384", "HS512"} {
		token, err := Mint(testSecret, alg, c, t0)
		if err != nil {
			t.Fatalf("Mint %s: %v", alg, err)
		}
		got, err := v.Verify(context.Background(), token)
		if err != nil {
			t.Fatalf("Verify %s: %v", alg, err)
		}
		want := c
		want.Expires = exp // whole seconds on the wire
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: claims = %#v, want %#v", alg, got, want)
		}
		header, _ := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
		if !strings.Contains(string(header), `"alg":"`+alg+`"`) {
			t.Errorf("%s: header %s", alg, header)
		}
	}
	for _, tt := range []struct {
		name   string
		secret []byte
		alg    string
		c      Claims
		want   string
	}{
		{"empty secret", nil, "HS256", c, "empty secret"},
		{"RS256", testSecret, "RS256", c, `algorithm "RS256" is not one of HS256, HS384, HS512`},
		{"none", testSecret, "none", c, `algorithm "none"`},
		{"no exp", testSecret, "HS256", Claims{Subject: "a"}, "no expiry"},
		{"too many", testSecret, "HS256", Claims{Expires: exp, Subscribe: make([]string, MaxPatterns+1)}, "more than 128"},
		{"too long", testSecret, "HS256", Claims{Expires: exp, Publish: []string{strings.Repeat("a", 257)}}, "longer than 256"},
	} {
		if _, err := Mint(tt.secret, tt.alg, tt.c, t0); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		} else {
			assertNoLeak(t, "error", err.Error(), "", testSecret)
		}
	}
}

func TestSecretWarning(t *testing.T) {
	_, logs := newVerifier(t, Config{Secret: []byte("qz7Kx")})
	if !strings.Contains(logs.String(), "shorter than 32 bytes") {
		t.Errorf("no warning for a 5-byte secret:\n%s", logs)
	}
	assertNoLeak(t, "log", logs.String(), "", []byte("qz7Kx"))
	_, logs = newVerifier(t, Config{Secret: testSecret})
	if strings.Contains(logs.String(), "shorter") {
		t.Errorf("warning for a %d-byte secret", len(testSecret))
	}
}

// TestMaxTokenSize: the size check comes before any decoding: the 100 KB
// token is validly signed, and a verifier allowing its size accepts it.
func TestMaxTokenSize(t *testing.T) {
	c := baseClaims(t0.Add(time.Hour))
	c["pad"] = strings.Repeat("x", 100<<10)
	token := sign(t, "HS256", testSecret, "", c)
	small, _ := newVerifier(t, Config{Secret: testSecret})
	if _, err := small.Verify(context.Background(), token); err == nil || err.(*Error).Reason != ReasonTooLarge {
		t.Fatalf("default MaxTokenSize: err = %v, want too_large", err)
	}
	if small.cache.len() != 0 {
		t.Error("a refused token was cached")
	}
	large, _ := newVerifier(t, Config{Secret: testSecret, MaxTokenSize: 1 << 20})
	if _, err := large.Verify(context.Background(), token); err != nil {
		t.Fatalf("MaxTokenSize 1 MiB: %v", err)
	}
	edge, _ := newVerifier(t, Config{Secret: testSecret, MaxTokenSize: len(token)})
	if _, err := edge.Verify(context.Background(), token); err != nil {
		t.Fatalf("MaxTokenSize = len(token): %v", err)
	}
}
