package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/herald-ws/herald/engine/push/auth"
)

const tokenTestSecret = "token-test-secret-0123456789abcdefghij"

// runTokenCmd runs `herald token args...` in-process and returns its exit
// code and what it wrote to stdout and stderr.
func runTokenCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut strings.Builder
	code = run(append([]string{"token"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestTokenMints: the printed token verifies with the secret, whichever
// way the secret is given, and carries the claims asked for.
func TestTokenMints(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "dev.key")
	if err := os.WriteFile(secretFile, []byte(tokenTestSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  string // HERALD_TOKEN_SECRET
		args []string
		cfg  auth.Config // besides Secret
		alg  string
		want auth.Claims // but Expires
		ttl  time.Duration
	}{
		{"all claims", "", []string{"--secret", tokenTestSecret, "--sub", "alice", "--subscribe", "chat.>", "--publish", "chat.>", "--ttl", "1h"},
			auth.Config{}, "HS256", auth.Claims{Subject: "alice", Subscribe: []string{"chat.>"}, Publish: []string{"chat.>"}}, time.Hour},
		{"lists", "", []string{"--secret", tokenTestSecret, "--subscribe", "prices.*, news.>,chat.room1", "--publish", ""},
			auth.Config{}, "HS256", auth.Claims{Subscribe: []string{"prices.*", "news.>", "chat.room1"}}, time.Hour},
		{"issuer and audience", "", []string{"--secret", tokenTestSecret, "--issuer", "app", "--audience", "herald", "--ttl", "15m"},
			auth.Config{Issuer: "app", Audience: "herald"}, "HS256", auth.Claims{Issuer: "app", Audience: []string{"herald"}}, 15 * time.Minute},
		{"HS512", "", []string{"--secret", tokenTestSecret, "--alg", "HS512", "--sub", "bob"},
			auth.Config{}, "HS512", auth.Claims{Subject: "bob"}, time.Hour},
		{"secret from the environment", tokenTestSecret, []string{"--sub", "carol"},
			auth.Config{}, "HS256", auth.Claims{Subject: "carol"}, time.Hour},
		{"secret file, newline trimmed", "", []string{"--secret-file", secretFile, "--sub", "dave"},
			auth.Config{}, "HS256", auth.Claims{Subject: "dave"}, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("HERALD_TOKEN_SECRET", tt.env)
			before := time.Now().Truncate(time.Second)
			code, stdout, stderr := runTokenCmd(t, tt.args...)
			after := time.Now()
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			token, ok := strings.CutSuffix(stdout, "\n")
			if !ok || strings.Contains(token, "\n") || token == "" {
				t.Fatalf("stdout %q, want one token and a newline", stdout)
			}
			cfg := tt.cfg
			cfg.Secret = []byte(tokenTestSecret)
			v, err := auth.New(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			got, err := v.Verify(context.Background(), token)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Expires.Before(before.Add(tt.ttl)) || got.Expires.After(after.Add(tt.ttl)) {
				t.Errorf("exp %v, want now plus %v (%v..%v)", got.Expires, tt.ttl, before.Add(tt.ttl), after.Add(tt.ttl))
			}
			got.Expires = time.Time{}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("claims %#v, want %#v", got, tt.want)
			}
			header, _ := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
			if !strings.Contains(string(header), `"alg":"`+tt.alg+`"`) {
				t.Errorf("header %s, want alg %s", header, tt.alg)
			}
			other, _ := auth.New(context.Background(), auth.Config{Secret: []byte("another-secret-0123456789abcdefghijkl")})
			if _, err := other.Verify(context.Background(), token); err == nil {
				t.Error("the token verifies with another secret")
			}
		})
	}
}

func TestTokenUsage(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.key")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		env       map[string]string
		args      []string
		code      int
		wantErr   string // in stderr
		wantUsage bool   // the whole usage follows
	}{
		{"help", nil, []string{"--help"}, 0, "herald token --secret-file dev.key --sub alice", true},
		{"no secret", nil, []string{"--sub", "alice"}, 2, "no secret: give --secret, --secret-file or $HERALD_TOKEN_SECRET", true},
		{"empty secret", nil, []string{"--secret", ""}, 2, "no secret", true},
		{"both secrets", nil, []string{"--secret", tokenTestSecret, "--secret-file", empty}, 2, "give one of --secret, --secret-file and --key", false},
		{"empty secret file", nil, []string{"--secret-file", empty}, 2, "is empty", false},
		{"missing secret file", nil, []string{"--secret-file", filepath.Join(dir, "nope")}, 1, "herald token: read --secret-file: open ", false},
		{"zero ttl", nil, []string{"--secret", tokenTestSecret, "--ttl", "0s"}, 2, "--ttl must be positive", false},
		{"negative ttl", nil, []string{"--secret", tokenTestSecret, "--ttl", "-1h"}, 2, "--ttl must be positive", false},
		{"RS256", nil, []string{"--secret", tokenTestSecret, "--alg", "RS256"}, 2, `--alg must be HS256, HS384 or HS512 with a secret, got "RS256"`, false},
		{"none", nil, []string{"--secret", tokenTestSecret, "--alg", "none"}, 2, `--alg must be`, false},
		{"bad pattern", nil, []string{"--secret", tokenTestSecret, "--subscribe", "chat..x"}, 2, `--subscribe "chat..x": invalid_channel`, false},
		{"bad publish pattern", nil, []string{"--secret", tokenTestSecret, "--publish", "a.>.b"}, 2, `--publish "a.>.b": invalid_channel`, false},
		{"too many patterns", nil, []string{"--secret", tokenTestSecret, "--subscribe", strings.Repeat("a,", 129)}, 2, "--subscribe: 129 patterns, more than 128", false},
		{"unknown flag", nil, []string{"--secret", tokenTestSecret, "--bogus"}, 2, "flag provided but not defined: -bogus", true},
		{"extra argument", nil, []string{"--secret", tokenTestSecret, "alice"}, 2, `unexpected argument "alice"`, true},
		{"bad ttl in the environment", map[string]string{"HERALD_TOKEN_TTL": "x"}, []string{"--secret", tokenTestSecret}, 2, `HERALD_TOKEN_TTL="x": `, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("HERALD_TOKEN_SECRET", "")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			code, stdout, stderr := runTokenCmd(t, tt.args...)
			if code != tt.code || stdout != "" || !strings.Contains(stderr, tt.wantErr) {
				t.Fatalf("herald token %q: exit %d, stdout %q, stderr:\n%s\nwant exit %d and %q", tt.args, code, stdout, stderr, tt.code, tt.wantErr)
			}
			if got := strings.Contains(stderr, "Usage: herald token [flags]"); got != tt.wantUsage {
				t.Errorf("usage printed = %v, want %v:\n%s", got, tt.wantUsage, stderr)
			}
			if strings.Contains(stderr, tokenTestSecret) {
				t.Errorf("stderr shows the secret:\n%s", stderr)
			}
		})
	}
}

// --key signs with a private key: RS256 for RSA, ES256 for P-256, and the
// server verifies with the public half.
func TestTokenWithPrivateKey(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		pem  []byte
		pub  any
		alg  string
	}{
		{"rsa", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}), &rsaKey.PublicKey, "RS256"},
		{"ec", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}), &ecKey.PublicKey, "ES256"},
	} {
		file := filepath.Join(dir, tc.name+".pem")
		if err := os.WriteFile(file, tc.pem, 0o600); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runTokenCmd(t, "--key", file, "--sub", "erin", "--subscribe", "scores.>")
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", tc.name, code, stderr)
		}
		v, err := auth.New(context.Background(), auth.Config{PublicKeyPEM: pemPublicKey(t, tc.pub)})
		if err != nil {
			t.Fatal(err)
		}
		c, err := v.Verify(context.Background(), strings.TrimSpace(stdout))
		v.Close()
		if err != nil || c.Subject != "erin" || !strings.Contains(jwtHeader(t, stdout), tc.alg) {
			t.Fatalf("%s: %+v, %v", tc.name, c, err)
		}
	}
	if code, _, _ := runTokenCmd(t, "--key", filepath.Join(dir, "rsa.pem"), "--alg", "HS256"); code != 2 {
		t.Fatalf("HS256 with an RSA key: exit %d, want 2", code)
	}
}

func jwtHeader(t *testing.T, token string) string {
	t.Helper()
	h, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}
