package pubsub

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/herald-ws/herald/pubsub/natstest"
)

// TestSecurity: each way production NATS says who may connect, against a
// real nats-server configured for it. With the right credentials the Broker
// connects, its subscription goes live, a PublishOnce with the same
// credentials reaches it, and the connected server is known; with wrong or
// missing ones nothing connects, and no secret reaches the logs.
func TestSecurity(t *testing.T) {
	dir := t.TempDir()
	pki := natstest.NewPKI(t)
	userSeed, userPub := newNKey(t, nkeys.CreateUser)
	nkeyFile := writeFile(t, dir, "user.nk", userSeed)
	otherSeed, _ := newNKey(t, nkeys.CreateUser)
	otherNKeyFile := writeFile(t, dir, "other.nk", otherSeed)
	operatorConfig, credsFile, foreignCredsFile := newOperator(t, dir)

	tlsConfig := pki.ServerConfig()
	mutualTLS := Security{TLSCA: pki.CA, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey}

	tests := []struct {
		name     string
		config   string
		url      func(plain string) string // the URL Herald is given, from the server's nats://127.0.0.1:PORT
		security Security
		connects bool
		secret   string // must not appear in the logs
	}{
		{"password", "authorization { user: herald, password: s3cr3t-pw }", withUser("herald:s3cr3t-pw"), Security{}, true, "s3cr3t-pw"},
		{"wrong password", "authorization { user: herald, password: s3cr3t-pw }", withUser("herald:guess-pw"), Security{}, false, "guess-pw"},
		{"token", "authorization { token: t0k3n-abc }", withUser("t0k3n-abc"), Security{}, true, "t0k3n-abc"},
		{"no token", "authorization { token: t0k3n-abc }", same, Security{}, false, ""},
		{"nkey", fmt.Sprintf("authorization { users: [ { nkey: %s } ] }", userPub), same, Security{NKeyFile: nkeyFile}, true, userSeed},
		{"unknown nkey", fmt.Sprintf("authorization { users: [ { nkey: %s } ] }", userPub), same, Security{NKeyFile: otherNKeyFile}, false, otherSeed},
		{"creds", operatorConfig, same, Security{CredsFile: credsFile}, true, ""},
		{"creds of another operator", operatorConfig, same, Security{CredsFile: foreignCredsFile}, false, ""},
		{"mutual TLS", tlsConfig, tlsScheme, mutualTLS, true, ""},
		{"TLS without a client certificate", tlsConfig, tlsScheme, Security{TLSCA: pki.CA}, false, ""},
		{"TLS without the CA", tlsConfig, tlsScheme, Security{TLSCert: pki.ClientCert, TLSKey: pki.ClientKey}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := natstest.StartConfig(t, tt.config)
			url := tt.url(srv.URL())
			rec := newRecorder()
			b, logs := startBroker(t, Config{URL: url, Security: tt.security, ReconnectWait: 50 * time.Millisecond, Handler: rec})
			if !tt.connects {
				time.Sleep(time.Second)
				if b.Connected() {
					t.Fatal("connected with wrong or missing credentials")
				}
				if err := PublishOnce(url, tt.security, "ticks.a", []byte("x"), 2*time.Second); err == nil {
					t.Error("PublishOnce succeeded with wrong or missing credentials")
				}
				checkNoSecret(t, logs, tt.secret)
				return
			}
			waitFor(t, "broker to connect", b.Connected)
			subscribe(t, b, rec, 1, "ticks.*")
			if err := PublishOnce(url, tt.security, "ticks.a", []byte("hello"), 5*time.Second); err != nil {
				t.Fatalf("PublishOnce: %v", err)
			}
			rec.expect(t, msg("ticks.a", "hello", 1))
			got := b.Server()
			if got.Name == "" || !strings.Contains(got.URL, strings.TrimPrefix(srv.URL(), "nats://")) {
				t.Errorf("Server() = %+v, want the server's name and an URL of %s", got, srv.URL())
			}
			if l := logs.find("nats connected"); len(l) != 1 || l[0].attrs["server"] != got.Name {
				t.Errorf("connect log = %v, want one line naming server %q", l, got.Name)
			}
			checkNoSecret(t, logs, tt.secret)
		})
	}
}

// TestSecurityRefusesBadSettings: settings that cannot work fail Start at
// once, naming what is wrong, instead of retrying forever.
func TestSecurityRefusesBadSettings(t *testing.T) {
	dir := t.TempDir()
	pki := natstest.NewPKI(t)
	seed, _ := newNKey(t, nkeys.CreateUser)
	nkeyFile := writeFile(t, dir, "user.nk", seed)
	accountSeed, _ := newNKey(t, nkeys.CreateAccount)
	notUser := writeFile(t, dir, "account.creds", "-----BEGIN NATS USER JWT-----\nnot.a.jwt\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n"+accountSeed+"\n------END USER NKEY SEED------\n")
	garbage := writeFile(t, dir, "garbage.pem", "not a certificate")
	tests := []struct {
		name     string
		url      string
		security Security
		want     string
	}{
		{"embedded", "", Security{NKeyFile: nkeyFile}, "give its URL"},
		{"creds and nkey", "nats://127.0.0.1:1", Security{CredsFile: nkeyFile, NKeyFile: nkeyFile}, "give one"},
		{"missing creds", "nats://127.0.0.1:1", Security{CredsFile: filepath.Join(dir, "nope.creds")}, "nope.creds"},
		{"creds without a user JWT", "nats://127.0.0.1:1", Security{CredsFile: notUser}, "no user JWT"},
		{"missing nkey", "nats://127.0.0.1:1", Security{NKeyFile: filepath.Join(dir, "nope.nk")}, "nope.nk"},
		{"nkey file without a seed", "nats://127.0.0.1:1", Security{NKeyFile: garbage}, "garbage.pem"},
		{"cert without key", "nats://127.0.0.1:1", Security{TLSCert: pki.ClientCert}, "give both"},
		{"CA that is not PEM", "nats://127.0.0.1:1", Security{TLSCA: garbage}, "no PEM certificate"},
		{"key that is not the cert's", "nats://127.0.0.1:1", Security{TLSCert: pki.ClientCert, TLSKey: pki.ServerKey}, "TLS client certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Start(Config{URL: tt.url, Listen: "127.0.0.1:-1", Security: tt.security, Handler: nopHandler{}})
			if err == nil {
				b.Close()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Start: %v, want an error saying %q", err, tt.want)
			}
			if strings.Contains(err.Error(), seed) {
				t.Errorf("the error quotes the seed: %v", err)
			}
		})
	}
}

func same(url string) string      { return url }
func tlsScheme(url string) string { return "tls://" + strings.TrimPrefix(url, "nats://") }
func withUser(userinfo string) func(string) string {
	return func(url string) string { return "nats://" + userinfo + "@" + strings.TrimPrefix(url, "nats://") }
}

func checkNoSecret(t *testing.T, logs *logCapture, secret string) {
	t.Helper()
	if secret != "" && strings.Contains(logs.String(), secret) {
		t.Errorf("the logs quote a secret:\n%s", logs)
	}
}

func writeFile(t *testing.T, dir, name, contents string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(contents), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// newNKey makes a key pair with create and returns its seed and public key.
func newNKey(t *testing.T, create func() (nkeys.KeyPair, error)) (seed, public string) {
	t.Helper()
	kp, err := create()
	if err != nil {
		t.Fatal(err)
	}
	s, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	p, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return string(s), p
}

// newOperator sets up decentralized auth as nsc would: an operator, an
// account it signs, a user the account signs. It returns the server
// configuration trusting the operator, the user's credentials file, and the
// credentials file of a user of another operator.
func newOperator(t *testing.T, dir string) (config, creds, foreignCreds string) {
	t.Helper()
	user := func(account nkeys.KeyPair, name string) string {
		ukp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		upub, _ := ukp.PublicKey()
		useed, _ := ukp.Seed()
		uc := jwt.NewUserClaims(upub)
		uc.Name = name
		ujwt, err := uc.Encode(account)
		if err != nil {
			t.Fatal(err)
		}
		file, err := jwt.FormatUserConfig(ujwt, useed)
		if err != nil {
			t.Fatal(err)
		}
		return writeFile(t, dir, name+".creds", string(file))
	}
	operatorAndAccount := func() (ojwt, apub, ajwt string, akp nkeys.KeyPair) {
		okp, err := nkeys.CreateOperator()
		if err != nil {
			t.Fatal(err)
		}
		opub, _ := okp.PublicKey()
		ojwt, err = jwt.NewOperatorClaims(opub).Encode(okp)
		if err != nil {
			t.Fatal(err)
		}
		akp, err = nkeys.CreateAccount()
		if err != nil {
			t.Fatal(err)
		}
		apub, _ = akp.PublicKey()
		ajwt, err = jwt.NewAccountClaims(apub).Encode(okp)
		if err != nil {
			t.Fatal(err)
		}
		return ojwt, apub, ajwt, akp
	}
	ojwt, apub, ajwt, akp := operatorAndAccount()
	_, _, _, foreignAccount := operatorAndAccount()
	config = fmt.Sprintf("operator: %s\nresolver: MEMORY\nresolver_preload: {\n  %s: %s\n}\n", ojwt, apub, ajwt)
	return config, user(akp, "herald"), user(foreignAccount, "stranger")
}
