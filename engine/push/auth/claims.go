package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-ws/herald/codec/channel"
)

// The caps on the patterns of one claim. A token is presented on every
// connect and its patterns are kept for the life of the socket, so they are
// bounded like the channels a client may subscribe to one by one.
const (
	MaxPatterns   = 128            // patterns in subscribe, and in publish
	MaxPatternLen = channel.MaxLen // bytes in one pattern
)

// Claims is what Herald reads from a verified token.
//
// Subscribe and Publish are NATS subject patterns, handed over as the
// token has them: Verify checks their shape (an array of at most
// MaxPatterns strings of at most MaxPatternLen bytes) but not their syntax,
// which is the business of whoever applies them. nil means the claim was
// absent (or null); an empty, non-nil slice means it was [].
type Claims struct {
	Subject   string    // "sub"; may be empty
	Issuer    string    // "iss"; may be empty
	Audience  []string  // "aud"; a single string is one element
	Subscribe []string  // "subscribe": patterns the client may subscribe to
	Publish   []string  // "publish": patterns the client may publish to
	Expires   time.Time // "exp", which every token must have
}

// clone returns c with slices of its own, so that callers of Verify never
// share what the cache holds.
func (c Claims) clone() Claims {
	c.Audience = slices.Clone(c.Audience)
	c.Subscribe = slices.Clone(c.Subscribe)
	c.Publish = slices.Clone(c.Publish)
	return c
}

// tokenClaims is how a token's payload is decoded: the registered claims,
// which jwt validates, and Herald's two claims left raw so that their shape
// is checked here, with errors of our own, rather than by encoding/json.
type tokenClaims struct {
	jwt.RegisteredClaims
	Subscribe json.RawMessage `json:"subscribe"`
	Publish   json.RawMessage `json:"publish"`
}

// claims converts a verified payload into Claims, or says which of
// Herald's claims has the wrong shape.
func (t *tokenClaims) claims() (Claims, *Error) {
	c := Claims{
		Subject:  t.Subject,
		Issuer:   t.Issuer,
		Audience: []string(t.Audience),
	}
	if t.ExpiresAt != nil {
		c.Expires = t.ExpiresAt.Time
	}
	var err *Error
	if c.Subscribe, err = patterns("subscribe", t.Subscribe); err != nil {
		return Claims{}, err
	}
	if c.Publish, err = patterns("publish", t.Publish); err != nil {
		return Claims{}, err
	}
	return c, nil
}

// patterns decodes the claim name: absent or null is nil (Go encoders
// write a nil slice as null), an array of strings within the caps is the
// patterns, anything else is refused.
func patterns(name string, raw json.RawMessage) ([]string, *Error) {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	notArray := refuse(ReasonClaims, "claim "+name+" must be an array of strings")
	if raw[0] != '[' {
		return nil, notArray
	}
	var items []any // any, not string: [null] must not decode as [""]
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, notArray
	}
	if len(items) > MaxPatterns {
		return nil, refuse(ReasonClaims, fmt.Sprintf("claim %s has more than %d patterns", name, MaxPatterns))
	}
	out := make([]string, 0, len(items))
	for _, item := range items {
		s, ok := item.(string)
		if !ok {
			return nil, notArray
		}
		if len(s) > MaxPatternLen {
			return nil, refuse(ReasonClaims, fmt.Sprintf("claim %s has a pattern longer than %d bytes", name, MaxPatternLen))
		}
		out = append(out, s)
	}
	return out, nil
}

// hmacMethods are the algorithms Mint signs with and a Secret verifies.
var hmacMethods = []string{"HS256", "HS384", "HS512"}

// Mint signs c with key using alg, with "iat" set to issuedAt unless it
// is zero: an HMAC secret ([]byte) with HS256, HS384 or HS512, an
// *rsa.PrivateKey with RS256, RS384 or RS512, or an *ecdsa.PrivateKey with
// the ES algorithm of its curve. It is for development tokens (herald
// token), benchmarks and tests; production tokens come from the
// application's own issuer. c.Expires is required, as Verify refuses a
// token without "exp"; times are whole seconds on the wire.
func Mint(key any, alg string, c Claims, issuedAt time.Time) (string, error) {
	switch k := key.(type) {
	case []byte:
		if len(k) == 0 {
			return "", errors.New("auth: mint: empty secret")
		}
		if !slices.Contains(hmacMethods, alg) {
			return "", fmt.Errorf("auth: mint: algorithm %q is not one of HS256, HS384, HS512", alg)
		}
	case *rsa.PrivateKey:
		if !slices.Contains(rsaMethods, alg) {
			return "", fmt.Errorf("auth: mint: algorithm %q is not one of RS256, RS384, RS512 for an RSA key", alg)
		}
	case *ecdsa.PrivateKey:
		if want, _ := ecMethod(k.Curve); alg != want {
			return "", fmt.Errorf("auth: mint: algorithm %q for an EC key on %s: want %q", alg, k.Curve.Params().Name, want)
		}
	default:
		return "", fmt.Errorf("auth: mint: unsupported key type %T", key)
	}
	if c.Expires.IsZero() {
		return "", errors.New("auth: mint: no expiry: Verify refuses a token without exp")
	}
	for _, p := range []struct {
		name string
		list []string
	}{{"subscribe", c.Subscribe}, {"publish", c.Publish}} {
		if len(p.list) > MaxPatterns {
			return "", fmt.Errorf("auth: mint: %d %s patterns, more than %d", len(p.list), p.name, MaxPatterns)
		}
		for _, s := range p.list {
			if len(s) > MaxPatternLen {
				return "", fmt.Errorf("auth: mint: a %s pattern is longer than %d bytes", p.name, MaxPatternLen)
			}
		}
	}
	m := jwt.MapClaims{"exp": jwt.NewNumericDate(c.Expires)}
	if !issuedAt.IsZero() {
		m["iat"] = jwt.NewNumericDate(issuedAt)
	}
	if c.Subject != "" {
		m["sub"] = c.Subject
	}
	if c.Issuer != "" {
		m["iss"] = c.Issuer
	}
	switch len(c.Audience) {
	case 0:
	case 1:
		m["aud"] = c.Audience[0]
	default:
		m["aud"] = c.Audience
	}
	if c.Subscribe != nil {
		m["subscribe"] = c.Subscribe
	}
	if c.Publish != nil {
		m["publish"] = c.Publish
	}
	s, err := jwt.NewWithClaims(jwt.GetSigningMethod(alg), m).SignedString(key)
	if err != nil {
		return "", fmt.Errorf("auth: mint: %w", err)
	}
	return s, nil
}
