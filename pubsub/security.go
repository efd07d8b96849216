package pubsub

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Security is how Herald proves who it is to an external NATS, and how it
// secures the link: what production NATS deployments require. A user and
// password or a token need no field: they go in the URL
// (nats://user:pass@host:4222, nats://token@host:4222), and are redacted
// wherever Herald logs a URL. The zero value adds nothing.
//
// Every file is read and checked when the Broker starts, so that a typo
// fails the start with the file's name instead of becoming an endless
// retry against a server that refuses the credentials.
type Security struct {
	// CredsFile is a decentralized-auth credentials file: a user JWT and
	// its NKey seed, as nsc writes them. The seed signs the server's nonce;
	// it never leaves the process.
	CredsFile string
	// NKeyFile holds a user NKey seed (SU...), for servers that list nkey
	// users in their authorization block.
	NKeyFile string
	// TLSCA is a PEM file of the certificate authorities that vouch for the
	// NATS servers, instead of the system's roots. Setting it requires TLS.
	TLSCA string
	// TLSCert and TLSKey are a PEM client certificate and its key, for
	// servers that verify clients (tls { verify: true }). Both or neither.
	// Setting them requires TLS.
	TLSCert, TLSKey string
}

// IsZero reports whether s adds nothing to a connection.
func (s Security) IsZero() bool { return s == Security{} }

// options are the nats.go options that s stands for, with every file read
// and checked.
func (s Security) options() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case s.CredsFile != "" && s.NKeyFile != "":
		return nil, errors.New("a credentials file and an nkey seed file are two ways to say who Herald is: give one")
	case s.CredsFile != "":
		if err := checkCreds(s.CredsFile); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(s.CredsFile))
	case s.NKeyFile != "":
		opt, err := nats.NkeyOptionFromSeed(s.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nkey seed file %s: %w", s.NKeyFile, err)
		}
		opts = append(opts, opt)
	}
	if (s.TLSCert == "") != (s.TLSKey == "") {
		return nil, errors.New("a TLS client certificate needs its key, and a key its certificate: give both")
	}
	if s.TLSCA == "" && s.TLSCert == "" {
		return opts, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.TLSCA != "" {
		pem, err := os.ReadFile(s.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS CA file %s: no PEM certificate in it", s.TLSCA)
		}
		conf.RootCAs = pool
	}
	if s.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.TLSCert, s.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("TLS client certificate %s and key %s: %w", s.TLSCert, s.TLSKey, err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return append(opts, nats.Secure(conf)), nil
}

// checkCreds reads a credentials file and checks that it holds a user JWT
// and a user seed, without keeping either: nats.go reads the file again at
// each connect, so that a rotated file is picked up on reconnect.
func checkCreds(path string) error {
	contents, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("credentials file: %w", err)
	}
	token, err := nkeys.ParseDecoratedJWT(contents)
	if err == nil {
		_, err = jwt.DecodeUserClaims(token)
	}
	if err != nil {
		return fmt.Errorf("credentials file %s: no user JWT in it: %w", path, err)
	}
	kp, err := nkeys.ParseDecoratedUserNKey(contents)
	if err != nil {
		return fmt.Errorf("credentials file %s: no user NKey seed in it: %w", path, err)
	}
	kp.Wipe()
	return nil
}
