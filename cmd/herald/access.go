package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/engine/push"
	"github.com/herald-ws/herald/engine/push/auth"
)

// patternsFlag is a comma-separated list of channel patterns that knows
// whether it was given at all: --public-channels ” (none) is not the
// same as leaving the default.
type patternsFlag struct {
	patterns []string
	set      bool
}

func (p *patternsFlag) String() string { return strings.Join(p.patterns, ",") }

func (p *patternsFlag) Set(v string) error {
	p.set = true
	p.patterns = p.patterns[:0]
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			p.patterns = append(p.patterns, s)
		}
	}
	return nil
}

// list is the patterns, nil when the flag was not given, and non-nil
// (possibly empty) when it was.
func (p *patternsFlag) list() []string {
	if !p.set {
		return nil
	}
	return append([]string{}, p.patterns...)
}

// check refuses a pattern no client could use: malformed, or reserved.
// Patterns with {sub} are checked with a stand-in subject.
func (p *patternsFlag) check(flagName string, perUser bool) error {
	for _, pat := range p.patterns {
		probe := pat
		if perUser {
			probe = strings.ReplaceAll(pat, push.SubjectToken, "user")
		} else if strings.Contains(pat, push.SubjectToken) {
			return fmt.Errorf("--%s %q: {sub} only means something in --user-channels and --user-publish", flagName, pat)
		}
		if err := channel.Validate(probe, true); err != nil {
			return fmt.Errorf("--%s %q: %w", flagName, pat, err)
		}
		if channel.Reserved(probe) {
			return fmt.Errorf("--%s %q: subjects starting with '$' or '_' are reserved for NATS and never reach clients", flagName, pat)
		}
	}
	return nil
}

// accessFlags are serve's flags for who may read and write what.
type accessFlags struct {
	secret, secretFile, publicKey, jwks string
	issuer, audience                    string
	publicChannels, publicPublish       patternsFlag
	userChannels, userPublish           patternsFlag
	maxPublish                          *int64
	publishRate                         *float64
}

func addAccessFlags(fs *flag.FlagSet) *accessFlags {
	a := new(accessFlags)
	fs.StringVar(&a.secret, "auth-secret", "", "HMAC `secret` that client tokens (JWT, HS256/384/512) are signed with; prefer HERALD_AUTH_SECRET or --auth-secret-file, since a command line is visible to every user of the machine")
	fs.StringVar(&a.secretFile, "auth-secret-file", "", "`file` holding the HMAC secret (trailing newline ignored)")
	fs.StringVar(&a.publicKey, "auth-public-key", "", "PEM `file` with the RSA or EC public key client tokens are signed with (RS256/384/512, ES256/384/512)")
	fs.StringVar(&a.jwks, "auth-jwks", "", "`URL` of a JWKS whose keys (by kid) sign client tokens; refreshed hourly and when an unknown kid appears")
	fs.StringVar(&a.issuer, "auth-issuer", "", "accept only tokens with this iss")
	fs.StringVar(&a.audience, "auth-audience", "", "accept only tokens whose aud includes this")
	fs.Var(&a.publicChannels, "public-channels", "`patterns` (comma-separated) clients without a token may subscribe to (default: without auth, every channel whose first token is literal; with auth, none, and a client without a token gets 401)")
	fs.Var(&a.publicPublish, "public-publish", "`patterns` clients without a token may publish to (default none)")
	fs.Var(&a.userChannels, "user-channels", "`patterns` every authenticated client may subscribe to besides its token's subscribe claim; {sub} is the token's subject, e.g. 'user.{sub}.>'")
	fs.Var(&a.userPublish, "user-publish", "`patterns` every authenticated client may publish to besides its token's publish claim ({sub} as above)")
	a.maxPublish = sizeFlag(fs, "max-publish-size", push.DefaultMaxPublishSize, "largest data of one client publish; larger ones are refused with too_large")
	a.publishRate = fs.Float64("publish-rate", push.DefaultPublishRate, "client publishes per second per connection, with bursts of twice that; past it they are refused with rate_limited, and a connection that keeps on is closed with 1008")
	return a
}

// config checks the flags and returns the verifier's configuration (nil
// without auth) and fills the push protocol's access fields.
func (a *accessFlags) config(pc *push.Config) (*auth.Config, error) {
	for _, l := range []struct {
		name    string
		list    *patternsFlag
		perUser bool
	}{
		{"public-channels", &a.publicChannels, false},
		{"public-publish", &a.publicPublish, false},
		{"user-channels", &a.userChannels, true},
		{"user-publish", &a.userPublish, true},
	} {
		if err := l.list.check(l.name, l.perUser); err != nil {
			return nil, err
		}
	}
	pc.PublicChannels = a.publicChannels.list()
	pc.PublicPublish = a.publicPublish.list()
	pc.UserChannels = a.userChannels.list()
	pc.UserPublish = a.userPublish.list()
	pc.MaxPublishSize = int(*a.maxPublish)
	pc.PublishRate = *a.publishRate
	if *a.publishRate <= 0 {
		return nil, errors.New("--publish-rate must be above 0")
	}

	var cfg auth.Config
	sources := 0
	if a.secret != "" {
		cfg.Secret = []byte(a.secret)
		sources++
	}
	if a.secretFile != "" {
		b, err := os.ReadFile(a.secretFile)
		if err != nil {
			return nil, fmt.Errorf("--auth-secret-file: %w", err)
		}
		if cfg.Secret = []byte(strings.TrimRight(string(b), "\r\n")); len(cfg.Secret) == 0 {
			return nil, fmt.Errorf("--auth-secret-file %s is empty", a.secretFile)
		}
		sources++
	}
	if a.publicKey != "" {
		b, err := os.ReadFile(a.publicKey)
		if err != nil {
			return nil, fmt.Errorf("--auth-public-key: %w", err)
		}
		cfg.PublicKeyPEM = b
		sources++
	}
	if a.jwks != "" {
		cfg.JWKSURL = a.jwks
		sources++
	}
	switch {
	case sources > 1:
		return nil, errors.New("give one of --auth-secret (or HERALD_AUTH_SECRET), --auth-secret-file, --auth-public-key and --auth-jwks")
	case sources == 0:
		if a.issuer != "" || a.audience != "" || a.userChannels.set || a.userPublish.set {
			return nil, errors.New("--auth-issuer, --auth-audience, --user-channels and --user-publish need a key: --auth-secret, --auth-secret-file, --auth-public-key or --auth-jwks")
		}
		return nil, nil
	}
	cfg.Issuer, cfg.Audience = a.issuer, a.audience
	return &cfg, nil
}
