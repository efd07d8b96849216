package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// The algorithms each kind of key verifies. An algorithm is only ever
// accepted with the kind of key it was designed for: confusing a public key
// with an HMAC secret is the classic JWT forgery, since the public key is,
// well, public.
var (
	rsaMethods  = []string{"RS256", "RS384", "RS512"}
	jwksMethods = []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"}
)

// ecMethod is the one algorithm an EC key of curve verifies (RFC 7518
// §3.4 ties each ES algorithm to one curve).
func ecMethod(curve elliptic.Curve) (string, bool) {
	switch curve {
	case elliptic.P256():
		return "ES256", true
	case elliptic.P384():
		return "ES384", true
	case elliptic.P521():
		return "ES512", true
	}
	return "", false
}

// keyFits reports whether key is the kind of key method verifies with:
// an *rsa.PublicKey for RS*, an *ecdsa.PublicKey on the matching curve for
// ES*. Anything else, notably an HMAC secret ([]byte) from a JWKS "oct"
// key, does not fit.
func keyFits(method jwt.SigningMethod, key any) bool {
	switch method.(type) {
	case *jwt.SigningMethodRSA:
		_, ok := key.(*rsa.PublicKey)
		return ok
	case *jwt.SigningMethodECDSA:
		k, ok := key.(*ecdsa.PublicKey)
		if !ok {
			return false
		}
		alg, ok := ecMethod(k.Curve)
		return ok && alg == method.Alg()
	}
	return false
}

// parsePublicKey reads the one public key of a PEM file: a PKIX "PUBLIC
// KEY", a PKCS #1 "RSA PUBLIC KEY" or a "CERTIFICATE" (whose key is used;
// the certificate itself is not checked, it is only a container). It
// returns the key and the algorithms it verifies. The errors never quote
// the file: an operator who pasted a private key by mistake should not find
// it in the logs.
func parsePublicKey(data []byte) (any, []string, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, nil, errors.New("auth: PublicKeyPEM holds no PEM block")
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, nil, errors.New("auth: PublicKeyPEM holds more than one PEM block; give one public key")
	}
	var key any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		if strings.Contains(block.Type, "PRIVATE") {
			return nil, nil, fmt.Errorf("auth: PublicKeyPEM holds a %s; give the public key only", block.Type)
		}
		return nil, nil, fmt.Errorf("auth: PublicKeyPEM holds a %q block, want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE", block.Type)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("auth: PublicKeyPEM: parse %s: %w", block.Type, err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		return k, rsaMethods, nil
	case *ecdsa.PublicKey:
		alg, ok := ecMethod(k.Curve)
		if !ok {
			return nil, nil, fmt.Errorf("auth: PublicKeyPEM: EC curve %s is not P-256, P-384 or P-521", k.Curve.Params().Name)
		}
		return k, []string{alg}, nil
	}
	return nil, nil, fmt.Errorf("auth: PublicKeyPEM: a %T is not an RSA or EC public key", key)
}
