package nut_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/nut"
	"github.com/sundown-ups/sundown/internal/nut/nuttest"
)

const (
	monUser   = "monuser"
	monPass   = "pass word \"quoted\" #1"
	secUser   = "secuser"
	secPass   = "s3cret"
	adminUser = "admin"
	adminPass = "adminpass"
)

// newServer starts a nuttest server with one UPS "ups" and three users:
// a upsmon primary, a upsmon secondary and an admin (SET, FSD, all
// instant commands).
func newServer(t testing.TB) *nuttest.Server {
	t.Helper()
	s := nuttest.NewServer()
	s.AddUPS("ups", `Rack "A" \ main`, map[string]string{
		"ups.status":      "OL",
		"battery.charge":  "100",
		"battery.runtime": "1800",
		"input.voltage":   "230.0",
		"ups.mfr":         "Dummy Power",
		"ups.id":          "rack-a",
	})
	s.AddUser(monUser, monPass, nuttest.Perms{Upsmon: "primary"})
	s.AddUser(secUser, secPass, nuttest.Perms{Upsmon: "secondary"})
	s.AddUser(adminUser, adminPass, nuttest.Perms{Actions: []string{"SET", "FSD"}, InstCmds: []string{"ALL"}})
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dial(t testing.TB, addr string, opts nut.Options) *nut.Client {
	t.Helper()
	c, err := nut.Dial(ctxT(t), addr, opts)
	if err != nil {
		t.Fatalf("Dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func auth(t testing.TB, c *nut.Client, user, pass string) {
	t.Helper()
	ctx := ctxT(t)
	if err := c.Username(ctx, user); err != nil {
		t.Fatal(err)
	}
	if err := c.Password(ctx, pass); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds or the deadline passes. Only used where
// the server notices something asynchronously (a client closing).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testPKI is a CA and certificates made for one test.
type testPKI struct {
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caFile string
}

func newPKI(t testing.TB, name string) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), name+".pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &testPKI{caCert: cert, caKey: key, caFile: f}
}

// leaf issues a server certificate for the given DNS names and IPs.
func (p *testPKI) leaf(t testing.TB, dns []string, ips []net.IP) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "nut server"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, p.caCert.Raw}, PrivateKey: key, Leaf: leaf}
}
