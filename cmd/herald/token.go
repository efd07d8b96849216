package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/engine/push/auth"
)

func runToken(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token", "[flags]", `Mints a JWT for a development client, signed with an HMAC secret, and prints
it and a newline to standard output. The claims are the ones Herald reads:
"sub" (--sub), "subscribe" and "publish" (arrays of NATS subject patterns
the client may subscribe and publish to), "exp" (now plus --ttl), "iat",
and "iss" and "aud" if given. Production tokens come from your
application's own issuer; this is for trying Herald and for tests.

The secret comes from --secret, --secret-file or $HERALD_TOKEN_SECRET. An
argument shows in the process list, so prefer the file or the variable
outside a laptop. A secret file's trailing newline is not part of the
secret. RFC 7518 wants at least 32 bytes for HS256.

Examples:
  herald token --secret-file dev.key --sub alice --subscribe 'chat.>' --publish 'chat.>'
  HERALD_TOKEN_SECRET=s3cret herald token --sub bob --subscribe 'prices.*,news.>' --ttl 15m`, stderr)
	secret := fs.String("secret", "", "HMAC `secret` to sign with (or --secret-file)")
	secretFile := fs.String("secret-file", "", "read the HMAC secret from `FILE` instead")
	sub := fs.String("sub", "", "`NAME` of the client, the token's subject (\"sub\"); may be empty")
	subscribe := fs.String("subscribe", "", "comma-separated NATS subject `patterns` the client may subscribe to, e.g. 'chat.>,prices.*'")
	publish := fs.String("publish", "", "comma-separated NATS subject `patterns` the client may publish to")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid from now")
	issuer := fs.String("issuer", "", "`NAME` of the issuer (\"iss\"), for a server that checks one")
	audience := fs.String("audience", "", "`NAME` of the audience (\"aud\"), for a server that checks one")
	alg := fs.String("alg", "HS256", "signing `algorithm`: HS256, HS384 or HS512")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	usageErr := func(format string, a ...any) error {
		fmt.Fprintf(stderr, format+"\n", a...)
		return errUsage
	}
	switch {
	case *secret != "" && *secretFile != "":
		return usageErr("give --secret or --secret-file, not both")
	case *secret == "" && *secretFile == "":
		fmt.Fprintln(stderr, "no secret: give --secret, --secret-file or $HERALD_TOKEN_SECRET")
		fs.Usage()
		return errUsage
	case *ttl <= 0:
		return usageErr("--ttl must be positive, got %v", *ttl)
	case *alg != "HS256" && *alg != "HS384" && *alg != "HS512":
		return usageErr("--alg must be HS256, HS384 or HS512, got %q", *alg)
	}
	key := []byte(*secret)
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return fmt.Errorf("read --secret-file: %w", err)
		}
		if key = bytes.TrimRight(b, "\r\n"); len(key) == 0 {
			return usageErr("--secret-file %s is empty", *secretFile)
		}
	}
	c := auth.Claims{Subject: *sub, Issuer: *issuer}
	if *audience != "" {
		c.Audience = []string{*audience}
	}
	var err error
	if c.Subscribe, err = patternList("subscribe", *subscribe); err != nil {
		return usageErr("%v", err)
	}
	if c.Publish, err = patternList("publish", *publish); err != nil {
		return usageErr("%v", err)
	}
	now := time.Now()
	c.Expires = now.Add(*ttl)
	token, err := auth.Mint(key, *alg, c, now)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, token)
	return err
}

// patternList splits the comma-separated patterns of --name and checks
// each as Herald checks a client's channels, wildcards allowed: a token
// with a pattern the server would refuse is no use. Empty is nil, so the
// claim is left out.
func patternList(name, list string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(list, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if err := channel.Validate(p, true); err != nil {
			return nil, fmt.Errorf("--%s %q: %v", name, p, err)
		}
		out = append(out, p)
	}
	if len(out) > auth.MaxPatterns {
		return nil, fmt.Errorf("--%s: %d patterns, more than %d", name, len(out), auth.MaxPatterns)
	}
	return out, nil
}
