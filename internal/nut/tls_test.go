package nut_test

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/sundown-ups/sundown/internal/nut"
)

var loopback = []net.IP{net.IPv4(127, 0, 0, 1)}

func fingerprint(cert tls.Certificate, colons, lower bool) string {
	sum := sha256.Sum256(cert.Certificate[0])
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	if colons {
		var parts []string
		for i := 0; i < len(h); i += 2 {
			parts = append(parts, h[i:i+2])
		}
		h = strings.Join(parts, ":")
	}
	if lower {
		return "sha256:" + strings.ToLower(h)
	}
	return "SHA256:" + h
}

func TestSTARTTLS(t *testing.T) {
	pki := newPKI(t, "nut-ca")
	good := pki.leaf(t, []string{"localhost"}, loopback)
	otherName := pki.leaf(t, []string{"other.example"}, nil)
	otherCA := newPKI(t, "other-ca")

	cases := []struct {
		name    string
		cert    tls.Certificate
		tls     *nut.TLSOptions
		wantErr error // nil: must succeed
	}{
		{"CA and IP SAN", good, &nut.TLSOptions{CAFile: pki.caFile}, nil},
		{"CA and DNS name", good, &nut.TLSOptions{CAFile: pki.caFile, ServerName: "localhost"}, nil},
		{"certificate for another host", otherName, &nut.TLSOptions{CAFile: pki.caFile}, nut.ErrTLS},
		{"wrong server name asked", good, &nut.TLSOptions{CAFile: pki.caFile, ServerName: "ups.example"}, nut.ErrTLS},
		{"CA mismatch", good, &nut.TLSOptions{CAFile: otherCA.caFile}, nut.ErrTLS},
		{"system roots do not know the test CA", good, &nut.TLSOptions{}, nut.ErrTLS},
		{"pin", otherName, &nut.TLSOptions{Fingerprint: fingerprint(otherName, false, false)}, nil},
		{"pin with colons, lower case", good, &nut.TLSOptions{Fingerprint: fingerprint(good, true, true)}, nil},
		{"pin mismatch", good, &nut.TLSOptions{Fingerprint: fingerprint(otherName, false, false)}, nut.ErrFingerprintMismatch},
		{"pin and CA both checked", otherName, &nut.TLSOptions{CAFile: pki.caFile, Fingerprint: fingerprint(otherName, true, false)}, nut.ErrTLS},
		{"pin and CA both pass", good, &nut.TLSOptions{CAFile: pki.caFile, Fingerprint: fingerprint(good, true, false)}, nil},
		{"bad pin", good, &nut.TLSOptions{Fingerprint: "sha1:00"}, nut.ErrTLS},
		{"missing CA file", good, &nut.TLSOptions{CAFile: "/nonexistent/ca.pem"}, nut.ErrTLS},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t)
			s.EnableTLS(tc.cert)
			ctx := ctxT(t)
			c, err := nut.Dial(ctx, s.Addr(), nut.Options{TLS: tc.tls})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Dial: %v, want %v", err, tc.wantErr)
				}
				if nut.IsSilence(err) {
					t.Errorf("a TLS failure counted as silence: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			defer c.Close()
			st, ok := c.TLSConnectionState()
			if !ok || !st.HandshakeComplete || st.Version < tls.VersionTLS12 {
				t.Errorf("TLS state %v %+v", ok, st)
			}
			auth(t, c, monUser, monPass)
			if err := c.Login(ctx, "ups"); err != nil {
				t.Fatal(err)
			}
			if v, err := c.Get(ctx, "ups", "ups.status"); err != nil || v != "OL" {
				t.Errorf("Get over TLS = %q, %v", v, err)
			}
		})
	}

	t.Run("certificate error is typed", func(t *testing.T) {
		s := newServer(t)
		s.EnableTLS(otherName)
		_, err := nut.Dial(ctxT(t), s.Addr(), nut.Options{TLS: &nut.TLSOptions{CAFile: pki.caFile}})
		var he x509.HostnameError
		if !errors.As(err, &he) {
			t.Errorf("want an x509.HostnameError, got %v", err)
		}
	})
}

func TestSTARTTLSNeverDowngrades(t *testing.T) {
	cases := []struct {
		name    string
		reply   string // "" means the server's own answer (no TLS configured)
		wantErr error
	}{
		{"not configured", "", nut.ErrFeatureNotConfigured},
		{"not supported", "ERR FEATURE-NOT-SUPPORTED\n", nut.ErrFeatureNotSupported},
		{"already in TLS", "ERR ALREADY-SSL-MODE\n", nut.ErrAlreadySSLMode},
		{"plain OK", "OK\n", nut.ErrProtocol},
		{"garbage", "HELLO\n", nut.ErrProtocol},
		{"injected line before the handshake", "OK STARTTLS\nVAR ups ups.status \"OL\"\n", nut.ErrProtocol},
	}
	pki := newPKI(t, "nut-ca")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t)
			if tc.reply != "" {
				s.EnableTLS(pki.leaf(t, nil, loopback))
				s.SetHook(func(_ int, line string) (string, bool) {
					return tc.reply, line == "STARTTLS"
				})
			}
			c, err := nut.Dial(ctxT(t), s.Addr(), nut.Options{TLS: &nut.TLSOptions{CAFile: pki.caFile}})
			if c != nil {
				c.Close()
				t.Fatal("Dial returned a client")
			}
			if !errors.Is(err, tc.wantErr) || !errors.Is(err, nut.ErrTLS) {
				t.Errorf("Dial: %v, want %v and ErrTLS", err, tc.wantErr)
			}
		})
	}
}
