package auth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"

	"github.com/herald-ws/herald/engine/enginetest"
)

func reasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	if err == nil {
		return ""
	}
	return "not an *Error: " + err.Error()
}

// TestJWKSRotation: the issuer replaces key A by key B. A token signed by
// B, whose kid the verifier has not seen, makes it refetch the set and is
// accepted; tokens signed by A, even one accepted (and cached) before, are
// refused from then on; and further unknown kids do not refetch within
// JWKSUnknownKIDRefresh.
func TestJWKSRotation(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t, jwk{"a", &k.rsaA.PublicKey})
	v, logs := newVerifier(t, Config{JWKSURL: srv.URL, HTTPClient: srv.Client()})
	exp := t0.Add(time.Hour)
	ctx := context.Background()
	tokA := sign(t, "RS256", k.rsaA, "a", baseClaims(exp))
	if _, err := v.Verify(ctx, tokA); err != nil {
		t.Fatalf("token by A: %v", err)
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches after New and a known kid, want 1", n)
	}

	srv.set(t, jwk{"b", &k.rsaB.PublicKey})
	tokB := sign(t, "RS256", k.rsaB, "b", baseClaims(exp))
	if _, err := v.Verify(ctx, tokB); err != nil {
		t.Fatalf("token by B after rotation: %v", err)
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after the new kid, want 2 (one refresh)", n)
	}
	if !strings.Contains(logs.String(), "JWKS withdrew or changed keys") {
		t.Errorf("no log of the withdrawn key:\n%s", logs)
	}

	for name, tok := range map[string]string{
		"cached token by A":   tokA,
		"fresh token by A":    sign(t, "RS256", k.rsaA, "a", baseClaims(exp.Add(time.Minute))),
		"A without a kid":     sign(t, "RS256", k.rsaA, "", baseClaims(exp)),
		"unknown kid":         sign(t, "RS256", k.rsaC, "c", baseClaims(exp)),
		"B's kid, A's key":    sign(t, "RS256", k.rsaA, "b", baseClaims(exp)),
		"EC token, no EC key": sign(t, "ES256", k.p256, "", baseClaims(exp)),
	} {
		_, err := v.Verify(ctx, tok)
		want := ReasonUnknownKey
		if name == "B's kid, A's key" || name == "A without a kid" {
			want = ReasonBadSignature
		}
		if reasonOf(err) != want {
			t.Errorf("%s: err = %v, want %s", name, err, want)
		}
		assertNoLeak(t, name+": error", err.Error(), tok)
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want still 2: unknown kids within JWKSUnknownKIDRefresh must not refetch", n)
	}
	if _, err := v.Verify(ctx, tokB); err != nil {
		t.Errorf("token by B again: %v", err)
	}
	assertNoLeak(t, "log", logs.String(), tokA)
	assertNoLeak(t, "log", logs.String(), tokB)
}

// TestJWKSRotationEC: the same with EC keys, and a verifier allowed to
// refetch for every unknown kid: each new kid is picked up.
func TestJWKSRotationEC(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t, jwk{"e1", &k.p256.PublicKey})
	v, _ := newVerifier(t, Config{JWKSURL: srv.URL, HTTPClient: srv.Client(), JWKSUnknownKIDRefresh: time.Nanosecond})
	ctx := context.Background()
	exp := t0.Add(time.Hour)
	tok1 := sign(t, "ES256", k.p256, "e1", baseClaims(exp))
	if _, err := v.Verify(ctx, tok1); err != nil {
		t.Fatal(err)
	}
	srv.set(t, jwk{"e1", &k.p256.PublicKey}, jwk{"e2", &k.p256b.PublicKey})
	if _, err := v.Verify(ctx, sign(t, "ES256", k.p256b, "e2", baseClaims(exp))); err != nil {
		t.Fatalf("added key e2: %v", err)
	}
	if v.cache.len() != 2 {
		t.Errorf("adding a key purged the cache (%d entries, want 2)", v.cache.len())
	}
	srv.set(t, jwk{"e2", &k.p256b.PublicKey}, jwk{"r", &k.rsaA.PublicKey})
	if _, err := v.Verify(ctx, sign(t, "RS256", k.rsaA, "r", baseClaims(exp))); err != nil {
		t.Fatalf("added key r: %v", err)
	}
	if _, err := v.Verify(ctx, tok1); reasonOf(err) != ReasonUnknownKey {
		t.Fatalf("token by withdrawn e1: err = %v, want unknown_key", err)
	}
	if n := srv.fetches.Load(); n != 4 {
		t.Errorf("%d fetches, want 4: New, e2, r, and e1 once gone", n)
	}
}

// TestJWKSRotationStorm: when many clients present the new kid at once,
// one refetch serves them all: the others wait for it rather than being
// refused by the rate limiter it used up.
func TestJWKSRotationStorm(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t, jwk{"a", &k.rsaA.PublicKey})
	v, _ := newVerifier(t, Config{JWKSURL: srv.URL, HTTPClient: srv.Client()})
	srv.set(t, jwk{"a", &k.rsaA.PublicKey}, jwk{"b", &k.rsaB.PublicKey})
	const clients = 8
	var tokens []string
	for i := range clients {
		c := baseClaims(t0.Add(time.Hour))
		c["sub"] = strings.Repeat("c", i+1)
		tokens = append(tokens, sign(t, "RS256", k.rsaB, "b", c))
	}
	var wg sync.WaitGroup
	errs := make([]error, clients)
	for i := range clients {
		wg.Go(func() { _, errs[i] = v.Verify(context.Background(), tokens[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want 2: New and one refresh", n)
	}
}

// TestJWKSUnknownKIDBounded: a refetch for an unknown kid that the JWKS
// server never answers ends with ctx, or with JWKSTimeout, as unknown_key.
func TestJWKSUnknownKIDBounded(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t, jwk{"a", &k.rsaA.PublicKey})
	v, logs := newVerifier(t, Config{JWKSURL: srv.URL, HTTPClient: srv.Client(), JWKSTimeout: 200 * time.Millisecond,
		JWKSUnknownKIDRefresh: time.Nanosecond})
	hang := make(chan struct{})
	srv.block.Store(&hang)
	t.Cleanup(func() { close(hang) })
	tok := sign(t, "RS256", k.rsaB, "b", baseClaims(t0.Add(time.Hour)))

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := v.Verify(ctx, tok); reasonOf(err) != ReasonUnknownKey {
		t.Fatalf("ctx ends: err = %v, want unknown_key", err)
	}
	if _, err := v.Verify(context.Background(), tok); reasonOf(err) != ReasonUnknownKey {
		t.Fatalf("JWKSTimeout ends: err = %v, want unknown_key", err)
	}
	if n := srv.fetches.Load(); n != 3 {
		t.Errorf("%d fetches, want 3 (New and two refetches)", n)
	}
	if !strings.Contains(logs.String(), "JWKS refresh failed") || !strings.Contains(logs.String(), srv.URL) {
		t.Errorf("the failed refresh is not logged with its URL:\n%s", logs)
	}
	// The known key still works while the server hangs.
	if _, err := v.Verify(context.Background(), sign(t, "RS256", k.rsaA, "a", baseClaims(t0.Add(time.Hour)))); err != nil {
		t.Errorf("known kid while the JWKS hangs: %v", err)
	}
	assertNoLeak(t, "log", logs.String(), tok)
}

// TestJWKSBackgroundRefresh: the set is refetched every JWKSRefresh
// without any token asking.
func TestJWKSBackgroundRefresh(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t, jwk{"a", &k.rsaA.PublicKey})
	v, _ := newVerifier(t, Config{JWKSURL: srv.URL, HTTPClient: srv.Client(), JWKSRefresh: 10 * time.Millisecond})
	srv.set(t, jwk{"b", &k.rsaB.PublicKey})
	deadline := time.Now().Add(10 * time.Second)
	for !v.jwks.store.has(context.Background(), "b") {
		if time.Now().After(deadline) {
			t.Fatalf("key b not fetched in 10s (%d fetches)", srv.fetches.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	v.Close()
	v.Close() // idempotent
	if _, err := v.Verify(context.Background(), sign(t, "RS256", k.rsaB, "b", baseClaims(t0.Add(time.Hour)))); err != nil {
		t.Errorf("token by b after Close: %v", err)
	}
}

func TestJWKSNewErrors(t *testing.T) {
	k := keys()
	status := func(code int, body string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			w.Write([]byte(body))
		}))
		t.Cleanup(s.Close)
		return s
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	hanging := newJWKSServer(t, jwk{"a", &k.rsaA.PublicKey})
	hang := make(chan struct{})
	hanging.block.Store(&hang)
	t.Cleanup(func() { close(hang) })
	withPassword := strings.Replace(status(500, "").URL, "http://", "http://herald:hunter2@", 1)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name string
		ctx  context.Context
		url  string
		want []string
	}{
		{"500", context.Background(), status(500, "oops").URL, []string{"auth: fetch JWKS http://127.0.0.1:", "500"}},
		{"not JSON", context.Background(), status(200, "<html>").URL, []string{"auth: fetch JWKS", "decode"}},
		{"bad key", context.Background(), status(200, `{"keys":[{"kty":"RSA","kid":"x","n":"!!","e":"AQAB"}]}`).URL, []string{"auth: fetch JWKS"}},
		{"connection refused", context.Background(), closed.URL, []string{"auth: fetch JWKS " + closed.URL}},
		{"password redacted", context.Background(), withPassword, []string{"herald:xxxxx@127.0.0.1", "500"}},
		{"canceled ctx", canceled, hanging.URL, []string{"auth: fetch JWKS", "context canceled"}},
		{"ctx ends while the server hangs", func() context.Context {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			t.Cleanup(cancel)
			return ctx
		}(), hanging.URL, []string{"auth: fetch JWKS"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &enginetest.Buffer{}
			v, err := New(tt.ctx, Config{JWKSURL: tt.url, Logger: newTestLogger(logs)})
			if err == nil {
				v.Close()
				t.Fatal("New accepted it")
			}
			t.Log(err)
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("err = %q, want it to hold %q", err, want)
				}
			}
			for _, text := range []string{err.Error(), logs.String()} {
				if strings.Contains(text, "hunter2") {
					t.Errorf("the password leaks: %q", text)
				}
			}
		})
	}
}

func TestJWKSEmptySetWarns(t *testing.T) {
	srv := newJWKSServer(t)
	_, logs := newVerifier(t, Config{JWKSURL: srv.URL, HTTPClient: srv.Client()})
	if !strings.Contains(logs.String(), "JWKS has no key Herald can use") {
		t.Errorf("no warning for an empty JWKS:\n%s", logs)
	}
}

// TestJWKSKeyAlg: a JWK that names its algorithm verifies only that one:
// keyfunc refuses the others, which is an "algorithm" refusal, not an
// unknown key.
func TestJWKSKeyAlg(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t)
	j, err := jwkset.NewJWKFromKey(&k.rsaA.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "r", ALG: jwkset.AlgRS512}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{j.Marshal()}})
	srv.body.Store(&body)
	v, _ := newVerifier(t, Config{JWKSURL: srv.URL, HTTPClient: srv.Client()})
	exp := t0.Add(time.Hour)
	if _, err := v.Verify(context.Background(), sign(t, "RS512", k.rsaA, "r", baseClaims(exp))); err != nil {
		t.Fatalf("RS512 for an RS512 key: %v", err)
	}
	if _, err := v.Verify(context.Background(), sign(t, "RS256", k.rsaA, "r", baseClaims(exp))); reasonOf(err) != ReasonAlgorithm {
		t.Fatalf("RS256 for an RS512 key: err = %v, want algorithm", err)
	}
}
