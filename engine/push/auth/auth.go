// Package auth verifies the JWTs clients present to Herald and reads
// Herald's claims from them.
//
// A Verifier holds one key source, fixed at New: an HMAC secret, one PEM
// public key, or a JWKS URL. Each kind of key accepts only the algorithms
// made for it, so that a token can never choose how it is checked: "none"
// is never accepted, and HMAC never with a public key or a JWKS, whose
// keys are public by design and would make forging trivial.
//
// Verify may block on network I/O (a JWKS refresh for a key it does not
// know yet) and spends CPU on RSA or ECDSA for a token it has not seen
// before, so it belongs off the event loops.
package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Defaults for the zero values of Config.
const (
	// DefaultLeeway is the clock skew allowed on exp and nbf. Issuers and
	// Herald run on servers whose clocks NTP keeps within milliseconds;
	// 5s covers a host whose clock is briefly off (a VM after a pause, a
	// slow NTP start) without noticeably stretching the life of tokens
	// that last minutes. An application that mints a token just before
	// the client connects (nbf = now) on a clock a few seconds ahead is
	// the case this is for.
	DefaultLeeway = 5 * time.Second

	// DefaultMaxTokenSize is the largest token Verify decodes. Herald's
	// claims are at most 2×128 patterns, but in practice a few short
	// ones; 8 KiB is also the usual limit on an HTTP header, where
	// tokens travel.
	DefaultMaxTokenSize = 8 << 10

	// DefaultCacheSize is how many verified tokens a Verifier remembers:
	// one per connected client for a server of 65536 sockets, about
	// 100 bytes each plus the patterns.
	DefaultCacheSize = 65536

	// DefaultJWKSRefresh is how often the JWKS is refetched in the
	// background, as keyfunc does by default.
	DefaultJWKSRefresh = time.Hour

	// DefaultJWKSUnknownKIDRefresh is the least time between two
	// refetches triggered by tokens with a kid the JWKS does not have.
	// It caps what tokens with made-up kids can cost (one fetch per
	// minute, not one per token) while a real key rotation waits at most
	// a minute; issuers usually publish a key before signing with it.
	DefaultJWKSUnknownKIDRefresh = time.Minute

	// DefaultJWKSTimeout bounds one JWKS fetch, including the one a
	// Verify call for an unknown kid may wait for.
	DefaultJWKSTimeout = 5 * time.Second
)

// Config says how a Verifier checks tokens. Exactly one of Secret,
// PublicKeyPEM and JWKSURL must be set; the zero value of every other field
// is a sensible default.
type Config struct {
	// Secret is an HMAC key. It accepts HS256, HS384 and HS512 only.
	// RFC 7518 §3.2 wants at least as many bytes as the hash (32 for
	// HS256); New logs a warning for a shorter one.
	Secret []byte

	// PublicKeyPEM is one public key in PEM: "PUBLIC KEY" (PKIX), "RSA
	// PUBLIC KEY" (PKCS #1) or a "CERTIFICATE" whose key is used. An RSA
	// key accepts RS256, RS384 and RS512; an EC key accepts the one ES
	// algorithm of its curve (P-256 ES256, P-384 ES384, P-521 ES512).
	PublicKeyPEM []byte

	// JWKSURL is a JSON Web Key Set served over HTTP(S). Keys are looked
	// up by the token's kid; RSA keys accept RS*, EC keys the ES
	// algorithm of their curve, and symmetric ("oct") keys nothing.
	JWKSURL string

	// Issuer, if set, is the only "iss" accepted; a token without iss is
	// refused. If empty, any iss is accepted.
	Issuer string

	// Audience, if set, must be one of the token's "aud"; a token without
	// aud is refused. If empty, any aud is accepted.
	Audience string

	// Leeway is the clock skew allowed on exp and nbf. Zero means
	// DefaultLeeway; negative means none.
	Leeway time.Duration

	// MaxTokenSize is the largest token, in bytes, Verify looks at.
	// Larger ones are refused before any decoding. Zero means
	// DefaultMaxTokenSize.
	MaxTokenSize int

	// CacheSize is how many verified tokens are remembered, so that a
	// token presented again is not verified again. Zero means
	// DefaultCacheSize; negative turns the cache off.
	CacheSize int

	// JWKSRefresh is how often the JWKS is refetched in the background.
	// Zero means DefaultJWKSRefresh.
	JWKSRefresh time.Duration

	// JWKSUnknownKIDRefresh is the least time between two refetches of
	// the JWKS for a kid it lacks. Zero means
	// DefaultJWKSUnknownKIDRefresh.
	JWKSUnknownKIDRefresh time.Duration

	// JWKSTimeout bounds one fetch of the JWKS. Zero means
	// DefaultJWKSTimeout.
	JWKSTimeout time.Duration

	// HTTPClient fetches the JWKS. Nil means http.DefaultClient.
	HTTPClient *http.Client

	// Logger receives JWKS refresh failures and key withdrawals, and at
	// Debug level each refusal's reason. Nil means slog.Default().
	Logger *slog.Logger

	// Now is the clock exp and nbf are checked against. Nil means
	// time.Now; tests inject their own.
	Now func() time.Time
}

// A Verifier checks tokens against one key source. It is safe for
// concurrent use.
type Verifier struct {
	maxSize  int
	leeway   time.Duration
	now      func() time.Time
	logger   *slog.Logger
	parser   *jwt.Parser
	methods  []string // the algorithms the key source accepts
	keyfunc  func(ctx context.Context) jwt.Keyfunc
	cache    *cache
	jwks     *jwks // nil unless JWKSURL
	timeout  time.Duration
	issuer   string
	audience string

	closeOnce sync.Once
	cancel    context.CancelFunc
}

// New returns a Verifier for cfg. For a JWKSURL it fetches the key set
// before returning, bounded by ctx and cfg.JWKSTimeout, and fails if that
// fetch fails: a verifier without keys would refuse every client. ctx only
// bounds New; the background refresh runs until Close.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	sources := 0
	for _, set := range []bool{len(cfg.Secret) > 0, len(cfg.PublicKeyPEM) > 0, cfg.JWKSURL != ""} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		return nil, fmt.Errorf("auth: want exactly one of Secret, PublicKeyPEM and JWKSURL, got %d", sources)
	}
	if cfg.MaxTokenSize < 0 {
		return nil, fmt.Errorf("auth: negative MaxTokenSize %d", cfg.MaxTokenSize)
	}
	cfg.Leeway = orDefault(cfg.Leeway, DefaultLeeway)
	if cfg.Leeway < 0 {
		cfg.Leeway = 0
	}
	cfg.MaxTokenSize = orDefault(cfg.MaxTokenSize, DefaultMaxTokenSize)
	cfg.CacheSize = orDefault(cfg.CacheSize, DefaultCacheSize)
	cfg.JWKSRefresh = positiveOr(cfg.JWKSRefresh, DefaultJWKSRefresh)
	cfg.JWKSUnknownKIDRefresh = positiveOr(cfg.JWKSUnknownKIDRefresh, DefaultJWKSUnknownKIDRefresh)
	cfg.JWKSTimeout = positiveOr(cfg.JWKSTimeout, DefaultJWKSTimeout)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}

	v := &Verifier{
		maxSize:  cfg.MaxTokenSize,
		leeway:   cfg.Leeway,
		now:      cfg.Now,
		logger:   cfg.Logger,
		cache:    newCache(cfg.CacheSize),
		timeout:  cfg.JWKSTimeout,
		issuer:   cfg.Issuer,
		audience: cfg.Audience,
		cancel:   func() {},
	}
	source := ""
	switch {
	case len(cfg.Secret) > 0:
		source = "secret"
		secret := slices.Clone(cfg.Secret)
		if len(secret) < 32 {
			v.logger.Warn("auth: HMAC secret shorter than 32 bytes (RFC 7518 §3.2); fine for development only", "bytes", len(secret))
		}
		v.methods = hmacMethods
		v.keyfunc = func(context.Context) jwt.Keyfunc {
			return func(token *jwt.Token) (any, error) {
				if _, ok := token.Method.(*jwt.SigningMethodHMAC); !ok {
					return nil, refusal(ReasonAlgorithm)
				}
				return secret, nil
			}
		}
	case len(cfg.PublicKeyPEM) > 0:
		source = "public key"
		key, methods, err := parsePublicKey(cfg.PublicKeyPEM)
		if err != nil {
			return nil, err
		}
		v.methods = methods
		v.keyfunc = func(context.Context) jwt.Keyfunc {
			return func(token *jwt.Token) (any, error) {
				if !keyFits(token.Method, key) {
					return nil, refusal(ReasonAlgorithm)
				}
				return key, nil
			}
		}
	default:
		source = "JWKS"
		// The background refresh lives until Close, but ctx still bounds
		// the first fetch.
		bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
		stop := context.AfterFunc(ctx, cancel)
		j, err := newJWKS(bg, &cfg, v.cache, v.logger)
		stop()
		if err != nil {
			cancel() // jwkset starts its refresh goroutine before the first fetch
			return nil, err
		}
		v.cancel, v.jwks = cancel, j
		v.methods = jwksMethods
		v.keyfunc = j.key
	}

	opts := []jwt.ParserOption{
		jwt.WithValidMethods(v.methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(cfg.Now),
		jwt.WithStrictDecoding(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	v.logger.Debug("auth: verifier ready", "source", source, "algorithms", v.methods,
		"issuer", cfg.Issuer, "audience", cfg.Audience, "leeway", cfg.Leeway)
	return v, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

func positiveOr(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}

// Verify checks token and returns its claims. A refusal is always an
// *Error, whose Reason says why and whose message never quotes the token.
//
// With a JWKS, a kid the key set lacks makes Verify refetch it (at most
// once per Config.JWKSUnknownKIDRefresh) and wait for that, bounded by
// ctx and Config.JWKSTimeout.
func (v *Verifier) Verify(ctx context.Context, token string) (Claims, error) {
	c, err := v.verify(ctx, token)
	if err != nil {
		v.logger.Debug("auth: token refused", "reason", err.Reason, "error", err.Message)
		return Claims{}, err
	}
	return c, nil
}

func (v *Verifier) verify(ctx context.Context, token string) (Claims, *Error) {
	if token == "" {
		return Claims{}, refusal(ReasonMissing)
	}
	if len(token) > v.maxSize {
		return Claims{}, refuse(ReasonTooLarge, fmt.Sprintf("token larger than %d bytes", v.maxSize))
	}
	// A compact JWS is base64url and dots. Refusing anything else before
	// decoding also makes the encoding canonical (with strict decoding,
	// which refuses stray bits): base64 decoders skip newlines, so
	// otherwise one signed token would have many spellings.
	for i := 0; i < len(token); i++ {
		if !jwsByte(token[i]) {
			return Claims{}, refusal(ReasonMalformed)
		}
	}
	key := sha256.Sum256([]byte(token))
	now := v.now()
	cached, hit, expired, gen := v.cache.get(key, now, v.leeway)
	if expired {
		return Claims{}, refusal(ReasonExpired)
	}
	if hit {
		return cached.clone(), nil
	}

	if v.jwks != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, v.timeout)
		defer cancel()
	}
	var tc tokenClaims
	parsed, err := v.parser.ParseWithClaims(token, &tc, v.keyfunc(ctx))
	if err != nil {
		return Claims{}, v.classify(parsed, &tc, err)
	}
	if _, crit := parsed.Header["crit"]; crit {
		// RFC 7515 §4.1.11: a token that needs header extensions to be
		// understood must be refused by whoever does not know them.
		return Claims{}, refuse(ReasonMalformed, "malformed token: unsupported critical header")
	}
	c, cerr := tc.claims()
	if cerr != nil {
		return Claims{}, cerr
	}
	v.cache.put(key, c, gen)
	return c.clone(), nil
}

// jwsByte reports whether b may appear in a compact JWS.
func jwsByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-' || b == '_' || b == '.'
}

// classify maps a jwt error to a refusal. jwt reports a disallowed
// algorithm as ErrTokenSignatureInvalid, so the algorithm is checked
// against the header first; and claims errors come joined, so they are
// ranked: first what a fresh token from the same issuer would not fix
// (issuer, audience, no exp), then expired and not yet valid.
func (v *Verifier) classify(token *jwt.Token, tc *tokenClaims, err error) *Error {
	var own *Error
	switch {
	case errors.As(err, &own):
		return own
	case errors.Is(err, jwt.ErrTokenMalformed):
		return refusal(ReasonMalformed)
	}
	if token != nil {
		if alg, _ := token.Header["alg"].(string); !slices.Contains(v.methods, alg) {
			return refusal(ReasonAlgorithm)
		}
	}
	switch {
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return refusal(ReasonBadSignature)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return refusal(ReasonAlgorithm)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return refusal(ReasonIssuer)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return refusal(ReasonAudience)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		// Which one jwt only says in prose; the decoded claims tell.
		switch {
		case v.issuer != "" && tc.Issuer == "":
			return refuse(ReasonIssuer, "token has no issuer (iss)")
		case v.audience != "" && !slices.ContainsFunc(tc.Audience, func(a string) bool { return a != "" }):
			return refuse(ReasonAudience, "token has no audience (aud)")
		default:
			return refuse(ReasonClaims, "token has no expiry (exp)")
		}
	case errors.Is(err, jwt.ErrTokenExpired):
		return refusal(ReasonExpired)
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return refusal(ReasonNotYetValid)
	}
	return refusal(ReasonClaims)
}

// Close stops the background refresh of a JWKS. Verify keeps working with
// the keys it has (and still refetches for an unknown kid).
func (v *Verifier) Close() {
	v.closeOnce.Do(v.cancel)
}
