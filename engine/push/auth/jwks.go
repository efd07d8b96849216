package auth

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// jwks is the key source of a Verifier configured with a JWKSURL.
//
// Keys live in a jwkset storage, looked up by kid, that jwkset refreshes
// from the URL every Config.JWKSRefresh (jwkset v0.11.4 storage.go:296,
// the refresh goroutine). What happens on a kid the storage lacks, as read
// in keyfunc v3.9.2 and jwkset v0.11.4: keyfunc's KeyfuncCtx
// (keyfunc.go:222) passes a token's kid to the storage's KeyRead
// (keyfunc.go:243), and jwkset's httpClient.KeyRead (http.go:133-200),
// finding the kid in no storage and RefreshUnknownKID set, waits for that
// rate limiter (http.go:167-176: bounded by RateLimitWaitMax and ctx;
// rate.Limiter.Wait fails at once when the wait would outlast the
// deadline), refetches the URL synchronously with ctx (http.go:182),
// which replaces the whole set (storage.go:288: KeyReplaceAll, so a
// withdrawn key is gone), and reads the kid again; if it is still missing,
// or the limiter refused, the lookup fails (jwkset.ErrKeyNotFound at
// http.go:200). So Verify may block on that one fetch, which is why it
// runs with a timeout. A token without a kid gets every key
// (keyfunc.go:236, verificationKeySet), of which keyFits keeps the right
// kind.
//
// Two things are added here. Unknown-kid lookups are serialised on
// refreshing, so that when a rotation starts and many clients present the
// new kid at once, the first one refreshes and the others, instead of
// being refused by the rate limiter that first refresh just used up, wait
// for it and find the key. And a refresh that withdraws or changes a key
// purges the verified-token cache, so that removing a key from the JWKS
// revokes the tokens it signed at once rather than at their exp.
type jwks struct {
	keyfunc keyfunc.Keyfunc
	store   *keyStore

	refreshing chan struct{} // a semaphore of one
}

// newJWKS fetches the key set once and starts refreshing it in the
// background until ctx (the Verifier's own) ends. The first fetch is
// bounded by cfg.JWKSTimeout and ctx.
func newJWKS(ctx context.Context, cfg *Config, c *cache, logger *slog.Logger) (*jwks, error) {
	u, err := url.Parse(cfg.JWKSURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// url.Parse's error quotes the URL, which may hold a password.
		return nil, errors.New("auth: JWKSURL is not an http or https URL")
	}
	redacted := u.Redacted()
	store := &keyStore{
		Storage: jwkset.NewMemoryStorage(),
		onWithdraw: func(removed int) {
			c.purge()
			logger.Info("auth: JWKS withdrew or changed keys; verified-token cache cleared",
				"url", redacted, "keys", removed)
		},
	}
	onError := func(ctx context.Context, err error) {
		logger.Warn("auth: JWKS refresh failed; keeping the keys we have",
			"url", redacted, "error", redactErr(err, cfg.JWKSURL, redacted))
	}
	httpStore, err := jwkset.NewStorageFromHTTP(cfg.JWKSURL, jwkset.HTTPClientStorageOptions{
		Client:              cfg.HTTPClient, // nil is http.DefaultClient
		Ctx:                 ctx,
		HTTPTimeout:         cfg.JWKSTimeout,
		RefreshErrorHandler: onError,
		RefreshInterval:     cfg.JWKSRefresh,
		Storage:             store,
		// NoErrorReturnFirstHTTPReq is left false: a verifier that
		// starts without keys would refuse every client, silently.
	})
	if err != nil {
		return nil, fmt.Errorf("auth: fetch JWKS %s: %w", redacted, redactErr(err, cfg.JWKSURL, redacted))
	}
	storage, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs:          map[string]jwkset.Storage{cfg.JWKSURL: httpStore},
		RateLimitWaitMax:  cfg.JWKSTimeout,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(cfg.JWKSUnknownKIDRefresh), 1),
	})
	if err != nil {
		return nil, fmt.Errorf("auth: JWKS %s: %w", redacted, redactErr(err, cfg.JWKSURL, redacted))
	}
	kf, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: storage})
	if err != nil {
		return nil, fmt.Errorf("auth: JWKS %s: %w", redacted, err)
	}
	if keys, _ := store.KeyReadAll(ctx); len(keys) == 0 {
		logger.Warn("auth: JWKS has no key Herald can use; every token will be refused until it has", "url", redacted)
	}
	return &jwks{keyfunc: kf, store: store, refreshing: make(chan struct{}, 1)}, nil
}

// key is the jwt.Keyfunc of one Verify call: the key for the token's kid,
// refreshed for if unknown, and only if it is the kind of key the token's
// algorithm needs.
func (j *jwks) key(ctx context.Context) jwt.Keyfunc {
	return func(token *jwt.Token) (any, error) {
		kid, hasKid := "", false
		if raw, ok := token.Header[jwkset.HeaderKID]; ok {
			if kid, ok = raw.(string); !ok {
				return nil, refuse(ReasonMalformed, "malformed token: kid is not a string")
			}
			hasKid = true
		}
		if hasKid && !j.store.has(ctx, kid) {
			select {
			case j.refreshing <- struct{}{}:
				defer func() { <-j.refreshing }()
			case <-ctx.Done():
				return nil, refuse(ReasonUnknownKey, "token signed by an unknown key (timed out looking for it)")
			}
		}
		key, err := j.keyfunc.KeyfuncCtx(ctx)(token)
		if err != nil {
			if hasKid && j.store.has(ctx, kid) {
				// The key is there, yet keyfunc refused it: its JWK "alg"
				// or "use" does not allow this token's algorithm.
				return nil, refusal(ReasonAlgorithm)
			}
			return nil, refusal(ReasonUnknownKey)
		}
		if set, ok := key.(jwt.VerificationKeySet); ok {
			var fit jwt.VerificationKeySet
			for _, k := range set.Keys {
				if keyFits(token.Method, k) {
					fit.Keys = append(fit.Keys, k)
				}
			}
			if len(fit.Keys) == 0 {
				return nil, refusal(ReasonUnknownKey)
			}
			return fit, nil
		}
		if !keyFits(token.Method, key) {
			return nil, refusal(ReasonAlgorithm)
		}
		return key, nil
	}
}

// keyStore is the storage jwkset refreshes into. It tells when a refresh
// withdraws a key, or changes the key behind a kid.
type keyStore struct {
	jwkset.Storage
	onWithdraw func(removed int)

	mu sync.Mutex // serialises KeyReplaceAll, so old is the set being replaced
}

func (s *keyStore) KeyReplaceAll(ctx context.Context, given []jwkset.JWK) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, err := s.Storage.KeyReadAll(ctx)
	if err != nil {
		return err
	}
	if err := s.Storage.KeyReplaceAll(ctx, given); err != nil {
		return err
	}
	removed := 0
	for _, o := range old {
		if !containsKey(given, o) {
			removed++
		}
	}
	if removed > 0 {
		s.onWithdraw(removed)
	}
	return nil
}

// has reports whether the storage holds kid now, without refreshing.
func (s *keyStore) has(ctx context.Context, kid string) bool {
	_, err := s.Storage.KeyRead(ctx, kid)
	return err == nil
}

// containsKey reports whether set has a JWK with want's kid and the
// same public key.
func containsKey(set []jwkset.JWK, want jwkset.JWK) bool {
	for _, j := range set {
		if j.Marshal().KID == want.Marshal().KID && sameKey(j.Key(), want.Key()) {
			return true
		}
	}
	return false
}

func sameKey(a, b any) bool {
	type publicKeyer interface{ Public() crypto.PublicKey }
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if p, ok := a.(publicKeyer); ok {
		a = p.Public()
	}
	if p, ok := b.(publicKeyer); ok {
		b = p.Public()
	}
	if e, ok := a.(equaler); ok {
		return e.Equal(b)
	}
	if ab, ok := a.([]byte); ok {
		bb, ok := b.([]byte)
		return ok && string(ab) == string(bb)
	}
	return false
}

// redactErr returns err with every occurrence of raw, the configured URL,
// replaced by redacted, so that a password in the URL stays out of errors
// and logs. It still unwraps to err.
func redactErr(err error, raw, redacted string) error {
	if raw == redacted || !strings.Contains(err.Error(), raw) {
		return err
	}
	return &redactedError{msg: strings.ReplaceAll(err.Error(), raw, redacted), err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
