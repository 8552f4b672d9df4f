package proxmox

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/sundown-ups/sundown/internal/provider"
)

// apiError is a non-2xx answer from the PVE API.
type apiError struct {
	Status  int
	Message string // the "message" field, else the status line's text
	Errors  map[string]string
}

func (e *apiError) Error() string {
	msg := e.Message
	if len(e.Errors) > 0 {
		var parts []string
		for k, v := range e.Errors {
			parts = append(parts, k+": "+v)
		}
		msg += " (" + strings.Join(parts, "; ") + ")"
	}
	return fmt.Sprintf("HTTP %d: %s", e.Status, msg)
}

// privRe finds the privilege in "Permission check failed (/vms/101, VM.PowerMgmt)".
var privRe = regexp.MustCompile(`Permission check failed \(([^,]*), ([^)]+)\)`)

func newTLSConfig(cfg Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case cfg.Fingerprint != "":
		want, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(cfg.Fingerprint), ":", ""))
		if err != nil || len(want) != sha256.Size {
			return nil, errors.New("fingerprint must be a SHA-256 fingerprint (64 hex digits, colons allowed)")
		}
		// Pinning replaces chain verification: the leaf must match.
		tc.InsecureSkipVerify = true
		tc.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("server sent no certificate")
			}
			got := sha256.Sum256(raw[0])
			if string(got[:]) != string(want) {
				return fmt.Errorf("server certificate fingerprint %X does not match the configured one", got)
			}
			return nil
		}
	case cfg.Insecure:
		tc.InsecureSkipVerify = true
	case cfg.CAFile != "":
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca file %s: no PEM certificates", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// do sends one API request and decodes the "data" member into out (may be
// nil). Errors are *provider.Error built by classify.
func (p *Provider) do(ctx context.Context, op, target, method, path string, form url.Values, out any) error {
	if p.closed.Load() {
		return provider.NewError(op, target, provider.Permanent, "provider is closed")
	}
	u := p.base + path
	var body io.Reader
	if method == http.MethodGet && len(form) > 0 {
		u += "?" + form.Encode()
	} else if len(form) > 0 {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return &provider.Error{Op: op, Target: target, Class: provider.Permanent, Err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", p.auth)
	resp, err := p.hc.Do(req)
	if err != nil {
		return p.transportError(ctx, op, target, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return p.transportError(ctx, op, target, err)
	}
	if resp.StatusCode/100 != 2 {
		ae := &apiError{Status: resp.StatusCode}
		var eb struct {
			Message string            `json:"message"`
			Errors  map[string]string `json:"errors"`
		}
		if json.Unmarshal(raw, &eb) == nil {
			ae.Message, ae.Errors = strings.TrimSpace(eb.Message), eb.Errors
		}
		if ae.Message == "" {
			// Older pveproxy puts the message only in the status line.
			_, ae.Message, _ = strings.Cut(resp.Status, " ")
		}
		return classify(op, target, ae)
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return &provider.Error{Op: op, Target: target, Class: provider.Permanent,
			Err: fmt.Errorf("%s %s: decoding answer: %w", method, path, err)}
	}
	if out != nil && len(env.Data) > 0 && string(env.Data) != "null" {
		if err := json.Unmarshal(env.Data, out); err != nil {
			return &provider.Error{Op: op, Target: target, Class: provider.Permanent,
				Err: fmt.Errorf("%s %s: decoding data: %w", method, path, err)}
		}
	}
	return nil
}

func (p *Provider) transportError(ctx context.Context, op, target string, err error) error {
	if ctx.Err() != nil {
		return &provider.Error{Op: op, Target: target, Class: provider.Transient, Err: fmt.Errorf("%w (%v)", ctx.Err(), redact(err))}
	}
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	if errors.As(err, &cve) || errors.As(err, &uae) || errors.As(err, &hne) || strings.Contains(err.Error(), "fingerprint") {
		return &provider.Error{Op: op, Target: target, Class: provider.Permanent, Err: fmt.Errorf("untrusted server certificate: %w", err)}
	}
	var ne net.Error
	var oe *net.OpError
	if errors.As(err, &oe) || errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &provider.Error{Op: op, Target: target, Class: provider.Unreachable, Err: redact(err)}
	}
	return &provider.Error{Op: op, Target: target, Class: provider.Unreachable, Err: redact(err)}
}

// redact strips the query string from *url.Error so nothing but the path
// appears in errors (the token is in a header and never printed).
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			u.RawQuery = ""
			return &url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err}
		}
	}
	return err
}

// classify maps a PVE error answer onto a provider class.
func classify(op, target string, ae *apiError) *provider.Error {
	e := &provider.Error{Op: op, Target: target, Class: provider.Permanent, Err: ae}
	msg := ae.Message
	switch {
	case ae.Status == http.StatusUnauthorized:
		e.Class = provider.Auth
	case ae.Status == http.StatusForbidden:
		e.Class = provider.Permission
		if m := privRe.FindStringSubmatch(msg); m != nil {
			e.Privilege = strings.TrimSpace(m[2])
		}
	case strings.Contains(msg, "does not exist") || strings.Contains(msg, "hostname lookup") || strings.Contains(msg, "no such resource"):
		e.Class = provider.NotFound
	case ae.Status == 595 || ae.Status == 596 || ae.Status == http.StatusBadGateway || ae.Status == http.StatusServiceUnavailable || ae.Status == http.StatusGatewayTimeout:
		e.Class = provider.Unreachable
	case strings.Contains(msg, "can't lock file"):
		e.Class = provider.Transient
	case ae.Status == http.StatusNotImplemented:
		e.Class = provider.Unsupported
	}
	return e
}

func newHTTPClient(tc *tls.Config, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:       tc,
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       60 * time.Second,
	}
	return &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
