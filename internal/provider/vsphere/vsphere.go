// Package vsphere is the sundown provider for VMware vSphere: a vCenter
// Server or a standalone ESXi host, spoken to over the vSphere Web Services
// API with govmomi.
//
// It implements provider.Provider: discovery of hosts and VMs (power state,
// VMware Tools state, BIOS UUID, notes and custom attributes), guest
// shutdown through VMware Tools, suspend, power off, power on, host
// maintenance mode (with the vSAN decommission mode) and host shutdown. The
// session is kept alive in the background and re-established transparently
// when the server has dropped it (after idle weeks or a vCenter restart).
// TLS is verified against the system roots, a CA file or a pinned
// certificate thumbprint; skipping verification is an explicit opt-in that
// is logged at every connect. See README.md for the privileges it needs.
package vsphere

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"

	"github.com/sundown-ups/sundown/internal/provider"
)

// Config is what New needs. The daemon's configuration maps onto it.
type Config struct {
	// URL of the vCenter Server or ESXi host: "vcenter.example.org",
	// "https://10.0.0.5" or "https://esx1:443/sdk". The scheme must be
	// https (the default when omitted); the path defaults to /sdk. It must
	// not carry credentials.
	URL string
	// Username and Password of the service account. Password never
	// appears in errors or logs.
	Username string
	Password string
	// CAFile is a PEM file with the CA certificate(s) that signed the
	// server's certificate (for vCenter, the VMCA root from
	// https://vcenter/certs/download.zip). When both CAFile and Thumbprint
	// are empty the system roots are used.
	CAFile string
	// Thumbprint pins the server certificate: the SHA-1 (40 hex digits) or
	// SHA-256 (64 hex digits) fingerprint of its DER encoding, colons and
	// case ignored. Alone it replaces chain verification; with CAFile both
	// must pass.
	Thumbprint string
	// Insecure skips certificate verification. Explicit opt-in only; every
	// connect logs a warning. It cannot be combined with CAFile or
	// Thumbprint.
	Insecure bool
	// KeepAlive is the interval of the background keep-alive call that
	// also re-logs in when the session has expired. Default 5 minutes.
	KeepAlive time.Duration
	// PollInterval is how often the guests being waited for are read (in
	// one call for all of them) and the longest pause between task polls.
	// Default 100 ms.
	PollInterval time.Duration
	// Logger receives the provider's logs; nil means slog.Default().
	Logger *slog.Logger
}

const (
	defaultKeepAlive    = 5 * time.Minute
	defaultPollInterval = 100 * time.Millisecond
	// keepAliveTimeout bounds one keep-alive call.
	keepAliveTimeout = 30 * time.Second
	// logoutTimeout bounds the logout in Close.
	logoutTimeout = 5 * time.Second
	userAgent     = "sundown"
)

// Provider is a provider.Provider backed by one vSphere endpoint. It is safe
// for concurrent use.
type Provider struct {
	cfg      Config
	log      *slog.Logger
	endpoint string // scheme://host, for errors and logs; never credentials
	soap     *soap.Client
	vc       *vim25.Client
	sm       *session.Manager
	// hostAgent is true when connected to an ESXi host directly rather than
	// to vCenter.
	hostAgent bool

	loginMu sync.Mutex
	gen     atomic.Uint64 // incremented by every successful login

	// poll reads the power state of waited-for guests in batches
	// (poller.go).
	poll     powerPoller
	pollOnce sync.Once
	bg       context.Context // ends when the provider closes

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	stop      context.CancelFunc
	wg        sync.WaitGroup
}

var _ provider.Provider = (*Provider)(nil)
var _ provider.Capable = (*Provider)(nil)

// New connects to the endpoint, verifies its certificate, logs in and starts
// the keep-alive. ctx bounds the connect and login only. Errors are
// *provider.Error: Permanent for bad configuration or an untrusted
// certificate, Auth for refused credentials, Unreachable when the endpoint
// cannot be reached.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	const op = "New"
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = defaultKeepAlive
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = defaultPollInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	u, err := parseURL(cfg.URL)
	if err != nil {
		return nil, &provider.Error{Op: op, Class: provider.Permanent, Err: err}
	}
	endpoint := u.Scheme + "://" + u.Host
	if cfg.Username == "" || cfg.Password == "" {
		return nil, provider.NewError(op, endpoint, provider.Permanent, "username and password are required")
	}
	tlsCfg, err := tlsConfig(cfg)
	if err != nil {
		return nil, &provider.Error{Op: op, Target: endpoint, Class: provider.Permanent, Err: err}
	}

	sc := soap.NewClient(u, cfg.Insecure)
	sc.UserAgent = userAgent
	tr := sc.DefaultTransport()
	// Our own TLS settings, applied by the standard transport (which
	// honours the request context during the handshake, unlike govmomi's
	// thumbprint dialer). No proxy: a shutdown must not depend on one.
	tr.TLSClientConfig = tlsCfg
	tr.DialTLSContext = nil
	tr.Proxy = nil

	p := &Provider{cfg: cfg, log: log.With("provider", "vsphere", "endpoint", endpoint), endpoint: endpoint, soap: sc}
	if cfg.Insecure {
		p.warnInsecure()
	}
	vc, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return nil, classify(ctx, op, endpoint, err)
	}
	p.vc = vc
	p.sm = session.NewManager(vc)
	p.hostAgent = vc.ServiceContent.About.ApiType == "HostAgent"
	if err := p.login(ctx, false); err != nil {
		sc.CloseIdleConnections()
		return nil, classify(ctx, op, endpoint, err)
	}

	bg, stop := context.WithCancel(context.Background())
	p.bg, p.stop = bg, stop
	p.wg.Add(1)
	go p.keepAlive(bg)
	return p, nil
}

// parseURL applies the defaults (https, /sdk) and refuses URLs that carry
// credentials or use plain http. Its errors never repeat a URL that might
// hold a password.
func parseURL(raw string) (*url.URL, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, errors.New("URL is empty")
	}
	u, err := soap.ParseURL(raw)
	if err != nil || u == nil || u.Host == "" {
		if strings.Contains(raw, "@") {
			return nil, errors.New("invalid URL (not shown because it contains '@')")
		}
		return nil, fmt.Errorf("invalid URL %q", raw)
	}
	// soap.ParseURL adds an empty Userinfo; any non-empty one came from raw.
	if u.User != nil {
		if pw, _ := u.User.Password(); u.User.Username() != "" || pw != "" {
			return nil, errors.New("URL must not contain credentials; use username and password")
		}
		u.User = nil
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("URL scheme %q not allowed: only https", u.Scheme)
	}
	return u, nil
}

func (p *Provider) warnInsecure() {
	p.log.Warn("vsphere: TLS certificate verification is DISABLED (insecure: true); anyone on the path can impersonate the server and read the password. Configure ca_file or thumbprint instead.")
}

// Capabilities implements provider.Capable: vSphere has every optional
// operation.
func (p *Provider) Capabilities() provider.Caps { return provider.AllCaps }

// login starts a new session. relogin says whether it replaces a lost one.
func (p *Provider) login(ctx context.Context, relogin bool) error {
	if relogin && p.cfg.Insecure {
		p.warnInsecure()
	}
	if err := p.sm.Login(ctx, url.UserPassword(p.cfg.Username, p.cfg.Password)); err != nil {
		return err
	}
	p.gen.Add(1)
	if relogin {
		p.log.Info("vsphere: session re-established", "user", p.cfg.Username)
	} else {
		p.log.Debug("vsphere: session started", "user", p.cfg.Username, "api", p.vc.ServiceContent.About.ApiType)
	}
	return nil
}

// relogin logs in again unless another goroutine already did since gen.
func (p *Provider) relogin(ctx context.Context, gen uint64) error {
	p.loginMu.Lock()
	defer p.loginMu.Unlock()
	if p.gen.Load() != gen {
		return nil
	}
	p.log.Info("vsphere: session lost; logging in again")
	return p.login(ctx, true)
}

// do runs f, logging in again and retrying f once when the server says the
// session is gone, and returns f's error classified as a *provider.Error.
// Every f is safe to repeat: the operations re-check state before acting.
func (p *Provider) do(ctx context.Context, op, target string, f func(ctx context.Context) error) error {
	if p.closed.Load() {
		return provider.NewError(op, target, provider.Permanent, "provider is closed")
	}
	gen := p.gen.Load()
	err := f(ctx)
	if err != nil && isNotAuthenticated(err) && ctx.Err() == nil {
		if lerr := p.relogin(ctx, gen); lerr != nil {
			return classify(ctx, op, target, lerr)
		}
		err = f(ctx)
	}
	if err == nil {
		return nil
	}
	return classify(ctx, op, target, err)
}

// keepAlive calls CurrentTime every KeepAlive so the session does not idle
// out; a lost session is re-established by do. It runs until ctx ends.
func (p *Provider) keepAlive(ctx context.Context) {
	defer p.wg.Done()
	t := time.NewTicker(p.cfg.KeepAlive)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, keepAliveTimeout)
		err := p.do(cctx, "KeepAlive", p.endpoint, func(ctx context.Context) error {
			_, err := methods.GetCurrentTime(ctx, p.vc)
			return err
		})
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			failing = true
			p.log.Warn("vsphere: keep-alive failed", "err", err)
		case err == nil && failing:
			failing = false
			p.log.Info("vsphere: keep-alive recovered")
		}
	}
}

// Close stops the keep-alive and logs out (bounded to 5 s). It is
// idempotent and returns the same result every time. A session the server
// already dropped is not an error.
func (p *Provider) Close() error {
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		p.stop()
		p.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), logoutTimeout)
		defer cancel()
		if err := p.sm.Logout(ctx); err != nil && !isNotAuthenticated(err) {
			p.closeErr = classify(ctx, "Close", p.endpoint, err)
		}
		p.soap.CloseIdleConnections()
	})
	return p.closeErr
}
