package vsphere

import (
	"crypto/sha1" //nolint:gosec // SHA-1 thumbprints are what vSphere shows; matching one is a pin, not a signature check.
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// errPinMismatch is returned by the TLS handshake when the server's
// certificate does not match Config.Thumbprint.
var errPinMismatch = errors.New("server certificate does not match the configured thumbprint")

// tlsConfig builds the client TLS configuration from cfg.
func tlsConfig(cfg Config) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.Insecure {
		if cfg.CAFile != "" || cfg.Thumbprint != "" {
			return nil, errors.New("insecure cannot be combined with ca_file or thumbprint")
		}
		c.InsecureSkipVerify = true //nolint:gosec // explicit, loudly logged opt-in (Config.Insecure)
		return c, nil
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", cfg.CAFile)
		}
		c.RootCAs = pool
	}
	if cfg.Thumbprint != "" {
		pin, err := parseThumbprint(cfg.Thumbprint)
		if err != nil {
			return nil, err
		}
		if cfg.CAFile == "" {
			// The pin replaces chain and name verification: the
			// server is identified by its exact certificate.
			c.InsecureSkipVerify = true //nolint:gosec // verified by VerifyConnection against the pin
		}
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errPinMismatch
			}
			if !pinMatches(pin, cs.PeerCertificates[0].Raw) {
				return errPinMismatch
			}
			return nil
		}
	}
	return c, nil
}

// parseThumbprint accepts "AB:CD:…" or "abcd…" hex of a SHA-1 or SHA-256
// digest.
func parseThumbprint(s string) ([]byte, error) {
	clean := strings.NewReplacer(":", "", " ", "", "-", "").Replace(strings.TrimSpace(s))
	b, err := hex.DecodeString(clean)
	if err != nil || (len(b) != sha1.Size && len(b) != sha256.Size) {
		return nil, errors.New("thumbprint must be the hex SHA-1 (40 digits) or SHA-256 (64 digits) fingerprint of the server certificate")
	}
	return b, nil
}

func pinMatches(pin, der []byte) bool {
	if len(pin) == sha1.Size {
		sum := sha1.Sum(der) //nolint:gosec // see import
		return subtle.ConstantTimeCompare(pin, sum[:]) == 1
	}
	sum := sha256.Sum256(der)
	return subtle.ConstantTimeCompare(pin, sum[:]) == 1
}
