package nutd

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// certNickname is the NSS nickname of upsd's certificate (CERTIDENT).
const certNickname = "sundown-upsd"

// tlsFiles is what makeTLS leaves behind.
type tlsFiles struct {
	caFile   string // PEM CA certificate (the server certificate is signed by it)
	nssDir   string // NSS database for upsd's CERTPATH
	password string // NSS database password for CERTIDENT
}

// makeTLS creates, under dir, a throw-away CA, a server certificate for
// hosts (IP addresses become IP SANs, names DNS SANs) signed by it, and an
// NSS database holding the server certificate and key (Debian builds NUT
// with NSS, not OpenSSL). It needs openssl, certutil and pk12util.
func makeTLS(dir string, hosts []string, bins tlsBins) (tlsFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tlsFiles{}, fmt.Errorf("tls material: %w", err)
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	const (
		dbPassword = "nss-db-pw"
		p12Pass    = "p12-pw"
	)
	var sans []string
	for _, h := range hosts {
		if net.ParseIP(h) != nil {
			sans = append(sans, "IP:"+h)
		} else {
			sans = append(sans, "DNS:"+h)
		}
	}
	ext := "basicConstraints=critical,CA:FALSE\n" +
		"keyUsage=critical,digitalSignature,keyEncipherment\n" +
		"extendedKeyUsage=serverAuth\n" +
		"subjectAltName=" + strings.Join(sans, ",") + "\n"
	if err := os.WriteFile(p("server.ext"), []byte(ext), 0o600); err != nil {
		return tlsFiles{}, fmt.Errorf("tls material: %w", err)
	}
	if err := os.WriteFile(p("nss.pw"), []byte(dbPassword+"\n"), 0o600); err != nil {
		return tlsFiles{}, fmt.Errorf("tls material: %w", err)
	}
	nss := p("nssdb")
	if err := os.MkdirAll(nss, 0o700); err != nil {
		return tlsFiles{}, fmt.Errorf("tls material: %w", err)
	}
	ec := []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"}
	steps := [][]string{
		append(append([]string{bins.openssl, "req", "-x509"}, ec...),
			"-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "3",
			"-subj", "/CN=sundown test CA",
			"-addext", "basicConstraints=critical,CA:TRUE",
			"-addext", "keyUsage=critical,keyCertSign,cRLSign"),
		append(append([]string{bins.openssl, "req"}, ec...),
			"-keyout", p("server.key"), "-out", p("server.csr"), "-subj", "/CN="+hosts[0]),
		{bins.openssl, "x509", "-req", "-in", p("server.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"),
			"-CAcreateserial", "-days", "3", "-extfile", p("server.ext"), "-out", p("server.pem")},
		{bins.openssl, "pkcs12", "-export", "-in", p("server.pem"), "-inkey", p("server.key"),
			"-certfile", p("ca.pem"), "-name", certNickname, "-out", p("server.p12"), "-passout", "pass:" + p12Pass},
		{bins.certutil, "-N", "-d", "sql:" + nss, "-f", p("nss.pw")},
		{bins.pk12util, "-i", p("server.p12"), "-d", "sql:" + nss, "-k", p("nss.pw"), "-W", p12Pass},
	}
	for _, argv := range steps {
		if err := run(argv); err != nil {
			return tlsFiles{}, fmt.Errorf("tls material: %w", err)
		}
	}
	return tlsFiles{caFile: p("ca.pem"), nssDir: nss, password: dbPassword}, nil
}

type tlsBins struct{ openssl, certutil, pk12util string }

func run(argv []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", filepath.Base(argv[0]), argv[1], err, strings.TrimSpace(out.String()))
	}
	return nil
}
