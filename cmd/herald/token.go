package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/engine/push/auth"
)

func runToken(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token", "[flags]", `Mints a JWT for a development client, signed with an HMAC secret (or, with
--key, an RSA or EC private key), and prints it and a newline to standard
output. The claims are the ones Herald reads:
"sub" (--sub), "subscribe" and "publish" (arrays of NATS subject patterns
the client may subscribe and publish to), "exp" (now plus --ttl), "iat",
and "iss" and "aud" if given. Production tokens come from your
application's own issuer; this is for trying Herald and for tests.

The secret comes from --secret, --secret-file or $HERALD_TOKEN_SECRET. An
argument shows in the process list, so prefer the file or the variable
outside a laptop. A secret file's trailing newline is not part of the
secret. RFC 7518 wants at least 32 bytes for HS256.

With --key FILE (a PEM private key: RSA signs RS256, EC P-256 ES256) the
token is for a server started with --auth-public-key and the public half:
  openssl genpkey -algorithm RSA -out dev.pem
  openssl pkey -in dev.pem -pubout -out dev.pub
  herald serve --auth-public-key dev.pub &
  herald token --key dev.pem --sub alice --subscribe 'chat.>'

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
	keyFile := fs.String("key", "", "sign with the RSA or EC private key in this PEM `FILE` instead of a secret (RS256, or the ES algorithm of the key's curve, unless --alg says otherwise)")
	alg := fs.String("alg", "", "signing `algorithm`: HS256 (the default with a secret), HS384 or HS512; RS256 (the default with an RSA key), RS384 or RS512; ES256/384/512 follow the EC key's curve")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	usageErr := func(format string, a ...any) error {
		fmt.Fprintf(stderr, format+"\n", a...)
		return errUsage
	}
	switch {
	case (*secret != "") && (*secretFile != "") || (*secret != "" || *secretFile != "") && *keyFile != "":
		return usageErr("give one of --secret, --secret-file and --key")
	case *secret == "" && *secretFile == "" && *keyFile == "":
		fmt.Fprintln(stderr, "no secret: give --secret, --secret-file or $HERALD_TOKEN_SECRET (or --key)")
		fs.Usage()
		return errUsage
	case *ttl <= 0:
		return usageErr("--ttl must be positive, got %v", *ttl)
	}
	var key any
	switch {
	case *keyFile != "":
		k, keyAlg, err := readSigningKey("key", *keyFile)
		if errors.Is(err, errNotSigningKey) {
			return usageErr("%v", err)
		}
		if err != nil {
			return err
		}
		key = k
		if *alg == "" {
			*alg = keyAlg
		}
	case *secretFile != "":
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return fmt.Errorf("read --secret-file: %w", err)
		}
		b = bytes.TrimRight(b, "\r\n")
		if len(b) == 0 {
			return usageErr("--secret-file %s is empty", *secretFile)
		}
		key = b
	default:
		key = []byte(*secret)
	}
	if _, isSecret := key.([]byte); isSecret {
		if *alg == "" {
			*alg = "HS256"
		}
		if *alg != "HS256" && *alg != "HS384" && *alg != "HS512" {
			return usageErr("--alg must be HS256, HS384 or HS512 with a secret, got %q", *alg)
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
		return usageErr("%v", err)
	}
	_, err = fmt.Fprintln(stdout, token)
	return err
}

// errNotSigningKey is a key file that holds no key to sign with.
var errNotSigningKey = errors.New("not a PEM RSA or EC private key")

// readSigningKey reads the PEM private key in file (the flag --name) and
// returns it with the algorithm it signs: RS256 for RSA, ES256, ES384 or
// ES512 for EC by curve.
func readSigningKey(name, file string) (key any, alg string, err error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, "", fmt.Errorf("read --%s: %w", name, err)
	}
	if k, err := jwt.ParseRSAPrivateKeyFromPEM(b); err == nil {
		return k, "RS256", nil
	}
	if k, err := jwt.ParseECPrivateKeyFromPEM(b); err == nil {
		return k, "ES" + strconv.Itoa(ecBits(k.Curve.Params().BitSize)), nil
	}
	return nil, "", fmt.Errorf("--%s %s: %w", name, file, errNotSigningKey)
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

// ecBits is the SHA size of the ES algorithm for a curve of size bits:
// P-521 signs with ES512.
func ecBits(bits int) int {
	if bits == 521 {
		return 512
	}
	return bits
}
