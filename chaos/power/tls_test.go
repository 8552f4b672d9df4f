package power

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/peer/nutd"
)

// writeCA writes a throw-away CA certificate (PEM) for configs that need a
// ca_file the server will never get to use.
func writeCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "chaos CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// 9. STARTTLS refused while TLS is required: the real upsd without
// CERTPATH, and a recording NUT server without a certificate. A clear
// error, retried; never a plaintext USERNAME, PASSWORD or LOGIN (the
// recording server sees only STARTTLS; upsd counts no LOGIN); no reading,
// no shutdown.
func startTLSRefused(t *testing.T, s *suite) {
	real := s.startUPSD(t, nutd.Config{UPS: []nutd.UPS{{Name: "ups", Vars: onLine()}}})
	fake, rec := fakeUPSD(t, nil)
	ca := writeCA(t)
	begin := time.Now()
	d := s.start(t, daemonSpec{name: "starttls", body: `power: {poll_interval: 500ms}
ups:
  - name: real
    nut: {address: "` + real.Addr() + `", ups: ups, username: mon, password_env: ` + nutPassEnv + `, mode: primary, tls: {ca_file: "` + ca + `"}}
  - name: fake
    nut: {address: "` + fake.Addr() + `", ups: ups, username: mon, password_file: NUT_PW_FILE, tls: {ca_file: "` + ca + `"}}
`})
	errs := map[string]string{}
	for _, ups := range []string{"real", "fake"} {
		l := d.waitLog(t, ups+" refused", 10*time.Second, func(l logLine) bool {
			return l.Msg == "cannot reach UPS; retrying" && l.str("ups") == ups
		})
		errs[ups] = l.str("err")
		for _, want := range []string{"STARTTLS", "FEATURE-NOT-CONFIGURED"} {
			if !strings.Contains(strings.ToUpper(errs[ups]), want) {
				t.Errorf("%s: error %q does not say %s", ups, errs[ups], want)
			}
		}
	}
	d.hold(t, "TLS refused", 4*time.Second)
	lines := rec.since(begin)
	starttls := 0
	for _, l := range lines {
		if l.line == "STARTTLS" {
			starttls++
			continue
		}
		t.Errorf("the recording server got %q in plain text after its STARTTLS refusal", redact(l.line))
	}
	if starttls < 2 {
		t.Errorf("the recording server saw %d STARTTLS in 4 s, want the refusal retried", starttls)
	}
	if n := numLogins(t, real.Addr(), "ups"); n != 0 {
		t.Errorf("upsd counts %d LOGIN on ups: sundown logged in without TLS", n)
	}
	st := d.status(t)
	for _, name := range []string{"real", "fake"} {
		if u := st.ups(t, name); u.Reached || u.Comm == "ok" {
			t.Errorf("%s: reached %v comm %q despite the refused STARTTLS", name, u.Reached, u.Comm)
		}
	}
	t.Logf("upsd: %q; recording server: %d STARTTLS and nothing else; upsd NUMLOGINS 0; decision: %s",
		errs["real"], starttls, st.Decision.Summary)
}

// redact hides the argument of PASSWORD in a failure message.
func redact(line string) string {
	if f := strings.Fields(line); len(f) > 1 && strings.EqualFold(f[0], "PASSWORD") {
		return "PASSWORD <redacted>"
	}
	return line
}

// 10. A certificate for another host: the real upsd with STARTTLS and a
// certificate for nut.other.example only. Checked against 127.0.0.1 it is
// refused with a clear error and nothing is read or logged in; a control
// entry for the same server with server_name nut.other.example is read,
// proving the CA and TLS work and only the name fails.
func wrongHost(t *testing.T, s *suite) {
	srv := s.startUPSD(t, nutd.Config{TLS: true, CertHost: "nut.other.example", UPS: []nutd.UPS{{Name: "ups", Vars: onLine()}}})
	d := s.start(t, daemonSpec{name: "wronghost", body: `power: {poll_interval: 500ms}
ups:
  - name: rack
    nut: {address: "` + srv.Addr() + `", ups: ups, username: mon, password_env: ` + nutPassEnv + `, tls: {ca_file: "` + srv.CAFile() + `"}}
  - name: control
    nut: {address: "` + srv.Addr() + `", ups: ups, username: mon, password_env: ` + nutPassEnv + `, tls: {ca_file: "` + srv.CAFile() + `", server_name: nut.other.example}}
`})
	l := d.waitLog(t, "rack refused", 15*time.Second, func(l logLine) bool {
		return l.Msg == "cannot reach UPS; retrying" && l.str("ups") == "rack"
	})
	e := l.str("err")
	for _, want := range []string{"certificate", "127.0.0.1"} {
		if !strings.Contains(e, want) {
			t.Errorf("error %q does not name %q", e, want)
		}
	}
	d.waitStatus(t, "control read over TLS", 15*time.Second, commOK("control", "OL"))
	d.hold(t, "wrong host", 3*time.Second)
	if n := numLogins(t, srv.Addr(), "ups"); n != 1 {
		t.Errorf("upsd counts %d LOGINs, want 1 (the control's; none from the refused entry)", n)
	}
	st := d.status(t)
	if u := st.ups(t, "rack"); u.Reached || u.Comm == "ok" {
		t.Errorf("rack: reached %v comm %q despite a certificate for another host", u.Reached, u.Comm)
	}
	if n := len(d.find(t, func(l logLine) bool {
		return l.Msg == "cannot reach UPS; retrying" && l.str("ups") == "rack" && l.str("err") == e
	})); n != 1 {
		t.Errorf("the same refusal was logged %d times, want once while it repeats", n)
	}
	t.Logf("refused: %q; control with server_name read OL; upsd NUMLOGINS 1; decision: %s", e, st.Decision.Summary)
}
