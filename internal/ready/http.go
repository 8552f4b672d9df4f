package ready

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// HTTP probe limits.
const (
	DefaultHTTPTimeout = 5 * time.Second
	// maxBody is how much of a body is searched for Contains.
	maxBody = 1 << 20
)

// HTTPConfig configures an HTTP(S) GET probe.
type HTTPConfig struct {
	// URL to GET, http or https. User info in it is sent as basic auth
	// and shown as "xxxxx" in messages.
	URL string
	// Status wanted; 0 means any 2xx.
	Status int
	// Contains, when set, must occur in the first 1 MiB of the body.
	Contains string
	// CAFile is a PEM file of CA certificates to trust instead of the
	// system's (for a self-signed vCenter or NAS). Verification is never
	// switched off.
	CAFile string
	// Timeout bounds one attempt (connect, TLS, headers and body);
	// 0 means DefaultHTTPTimeout.
	Timeout time.Duration
}

// HTTPProbe passes when a GET of the URL answers with the wanted status
// (and body text). Redirects are followed (at most 10) and the final
// answer is judged. Every attempt uses a fresh connection: a probe holds
// nothing open between attempts, and nothing needs closing.
type HTTPProbe struct {
	url      string
	shown    string
	status   int
	contains string
	client   *http.Client
}

// NewHTTP validates cfg and loads the CA file.
func NewHTTP(cfg HTTPConfig) (*HTTPProbe, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		// url.Parse quotes the input, which may hold a password.
		return nil, errors.New("http probe: URL does not parse")
	}
	shown := u.Redacted()
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("http probe %s: scheme %q: want http or https", shown, u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("http probe %s: no host", shown)
	}
	if cfg.Status != 0 && (cfg.Status < 100 || cfg.Status > 599) {
		return nil, fmt.Errorf("http probe %s: status %d: want 100-599 (or 0 for any 2xx)", shown, cfg.Status)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultHTTPTimeout
	}
	if timeout < 0 {
		return nil, fmt.Errorf("http probe %s: timeout %s: negative", shown, timeout)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("http probe %s: ca file: %w", shown, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("http probe %s: ca file %s: no PEM certificate in it", shown, cfg.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	transport := &http.Transport{
		Proxy:                 nil, // readiness is about the LAN, not what a proxy sees
		DialContext:           (&net.Dialer{Timeout: timeout}).DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		DisableKeepAlives:     true,
		ForceAttemptHTTP2:     true,
	}
	return &HTTPProbe{
		url:      cfg.URL,
		shown:    shown,
		status:   cfg.Status,
		contains: cfg.Contains,
		client:   &http.Client{Transport: transport, Timeout: timeout},
	}, nil
}

// String returns "http URL" with any password replaced by "xxxxx".
func (p *HTTPProbe) String() string { return "http " + p.shown }

// Check GETs the URL once.
func (p *HTTPProbe) Check(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return errors.New("cannot build request")
	}
	req.Header.Set("User-Agent", "sundown-ready")
	resp, err := p.client.Do(req)
	if err != nil {
		// *url.Error repeats the URL (maybe with a password): drop it.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return bareNetError(err)
	}
	defer resp.Body.Close()

	if !p.statusOK(resp.StatusCode) {
		want := "2xx"
		if p.status != 0 {
			want = strconv.Itoa(p.status)
		}
		return fmt.Errorf("status %s, want %s", resp.Status, want)
	}
	if p.contains == "" {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("read body: %w", bareNetError(err))
	}
	if !strings.Contains(string(body), p.contains) {
		return fmt.Errorf("status %d but body does not contain %q", resp.StatusCode, p.contains)
	}
	return nil
}

func (p *HTTPProbe) statusOK(code int) bool {
	if p.status == 0 {
		return code >= 200 && code <= 299
	}
	return code == p.status
}
