package auth

import (
	"context"
	"testing"
	"time"
)

// BenchmarkVerify is the cost of a token Herald has not seen (cache off):
// what a reconnect storm of new tokens costs the verifiers, per token.
// With the cache, a token seen before costs one SHA-256 and a map lookup
// (the "cached" case).
func BenchmarkVerify(b *testing.B) {
	k := keys()
	exp := time.Now().Add(time.Hour)
	for _, tc := range []struct {
		name  string
		cfg   Config
		alg   string
		key   any
		cache int
	}{
		{"HS256", Config{Secret: testSecret}, "HS256", testSecret, -1},
		{"RS256", Config{PublicKeyPEM: pemPublic(b, &k.rsaA.PublicKey)}, "RS256", k.rsaA, -1},
		{"ES256", Config{PublicKeyPEM: pemPublic(b, &k.p256.PublicKey)}, "ES256", k.p256, -1},
		{"RS256-cached", Config{PublicKeyPEM: pemPublic(b, &k.rsaA.PublicKey)}, "RS256", k.rsaA, 0},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := tc.cfg
			cfg.CacheSize = tc.cache
			v, _ := newVerifier(b, cfg)
			tok := sign(b, tc.alg, tc.key, "", baseClaims(exp))
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
