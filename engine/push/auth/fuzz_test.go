package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"hash"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var knownReasons = map[string]bool{
	ReasonMissing: true, ReasonTooLarge: true, ReasonMalformed: true, ReasonBadSignature: true,
	ReasonAlgorithm: true, ReasonUnknownKey: true, ReasonExpired: true, ReasonNotYetValid: true,
	ReasonIssuer: true, ReasonAudience: true, ReasonClaims: true,
}

// fuzzVerifier is the HS verifier the fuzz target attacks: Now is t0, at
// which the tokens of testdata/fuzz/FuzzVerify are valid.
func fuzzVerifier(t testing.TB) *Verifier {
	v, err := New(context.Background(), Config{
		Secret: testSecret,
		Now:    func() time.Time { return t0 },
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// FuzzVerify feeds arbitrary strings to an HS verifier. It must never
// panic, refuse only with an *Error of a known reason that does not quote
// the token, and accept only tokens whose signature is the HMAC, under the
// secret, of their first two segments: what no one without the secret can
// produce.
func FuzzVerify(f *testing.F) {
	f.Add(sign(f, "HS256", testSecret, "", baseClaims(t0.Add(time.Hour))))
	f.Add("")
	v := fuzzVerifier(f)
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(context.Background(), token)
		if err != nil {
			e, ok := err.(*Error)
			if !ok || !knownReasons[e.Reason] || e.Message == "" || strings.Contains(e.Message, "\n") {
				t.Fatalf("refusal %#v", err)
			}
			if len(token) >= 16 && strings.Contains(e.Message, token) {
				t.Fatalf("refusal %q quotes the token", e.Message)
			}
			return
		}
		if !signedWithSecret(token, testSecret) {
			t.Fatalf("accepted a token not signed with the secret: %q", token)
		}
		if !t0.Before(c.Expires.Add(DefaultLeeway)) {
			t.Fatalf("accepted a token expired at %v", c.Expires)
		}
	})
}

// signedWithSecret is the fuzz oracle, independent of the code under test:
// the header's alg is an HS one, and the third segment is exactly the
// base64url of the HMAC of the first two.
func signedWithSecret(token string, secret []byte) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return false
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(raw, &header) != nil {
		return false
	}
	var h func() hash.Hash
	switch header.Alg {
	case "HS256":
		h = sha256.New
	case "HS384":
		h = sha512.New384
	case "HS512":
		h = sha512.New
	default:
		return false
	}
	mac := hmac.New(h, secret)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	return parts[2] == base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// TestFuzzCorpus: the seed corpus keeps tokens the verifier accepts, so
// that the fuzzer starts from the accepting paths too.
func TestFuzzCorpus(t *testing.T) {
	v := fuzzVerifier(t)
	for name, want := range map[string]string{
		"hs256": "", "hs384": "", "hs512": "",
		"expired": ReasonExpired, "no_exp": ReasonClaims, "bad_subscribe": ReasonClaims,
		"wrong_secret": ReasonBadSignature, "none": ReasonAlgorithm, "kid": ReasonMalformed,
		"garbage": ReasonMalformed, "dots": ReasonMalformed, "empty_parts": ReasonMalformed,
	} {
		b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzVerify", name))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "string(") {
			t.Fatalf("%s: not a fuzz corpus file:\n%s", name, b)
		}
		token, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "string("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_, err = v.Verify(context.Background(), token)
		if got := reasonOf(err); got != want {
			t.Errorf("%s: reason %q (%v), want %q", name, got, err, want)
		}
		if err == nil && !signedWithSecret(token, testSecret) {
			t.Errorf("%s: accepted, but the oracle says not signed with the secret", name)
		}
	}
}
