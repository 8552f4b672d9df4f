// Package email is the notify channel that sends mail with
// github.com/wneessen/go-mail, through a relay (host:port) or by direct
// delivery to the recipient domains' MX hosts.
//
// TLS modes: "starttls" (default; the server must offer STARTTLS, else
// nothing is sent), "opportunistic" (STARTTLS when offered), "tls"
// (implicit TLS, e.g. port 465) and "none". Certificates are verified
// against the system roots or CAFile, for the relay's or MX host's name.
// SMTP AUTH (PLAIN or LOGIN) runs only over TLS, or to a loopback server.
//
// Errors never contain the password. A 5xx answer, rejected credentials, a
// failed certificate check or a missing mandatory STARTTLS are permanent
// (not retried); connection failures and 4xx answers are retryable.
package email

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/textproto"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	gomail "github.com/wneessen/go-mail"
	gosmtp "github.com/wneessen/go-mail/smtp"

	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/notify"
)

// TLS modes.
const (
	TLSStartTLS      = "starttls"
	TLSOpportunistic = "opportunistic"
	TLSImplicit      = "tls"
	TLSNone          = "none"
)

// Auth mechanisms.
const (
	AuthPlain = "plain"
	AuthLogin = "login"
)

// defaultTimeout bounds a delivery when the context has no deadline.
const defaultTimeout = 60 * time.Second

// MXResolver looks up MX records; *net.Resolver implements it. Tests inject
// one that points at a loopback server.
type MXResolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
}

// Config configures one email channel.
type Config struct {
	// Name keys the channel's stats; default "email <first recipient>".
	Name string
	From string   // RFC 5322 address, e.g. "sundown <ups@example.org>"
	To   []string // at least one
	// Relay is "host:port" of the submission server; empty means direct
	// delivery to each recipient domain's MX hosts (port MXPort).
	Relay string
	// TLS is starttls (default), opportunistic, tls or none.
	TLS string
	// Username enables SMTP AUTH with Password using Auth (plain, the
	// default, or login).
	Username string
	Password config.Secret
	Auth     string
	// CAFile, if set, is a PEM bundle that replaces the system roots.
	CAFile string
	// HELO is the name sent in EHLO (default: this host's name).
	HELO string
	// SubjectPrefix is prepended to every subject (e.g. "[sundown] ").
	SubjectPrefix string
	// Verbose appends the message's UPS variables to the body.
	Verbose bool
	// Resolver is used for direct delivery (default net.DefaultResolver).
	Resolver MXResolver
	// MXPort is the port for direct delivery (default 25; tests change it).
	MXPort int
}

// Email is a notify.Channel.
type Email struct {
	cfg      Config
	from     *mail.Address
	to       []*mail.Address
	relay    string
	port     int
	roots    *x509.CertPool // nil: system roots
	resolver MXResolver

	mu        sync.Mutex
	delivered map[string]map[string]bool // Message-ID → domains done (direct delivery retries)
}

// New checks c and builds the channel.
func New(c Config) (*Email, error) {
	e := &Email{cfg: c, resolver: c.Resolver, delivered: map[string]map[string]bool{}}
	var err error
	if e.from, err = mail.ParseAddress(c.From); err != nil {
		return nil, fmt.Errorf("email from %q: %w", c.From, err)
	}
	if len(c.To) == 0 {
		return nil, errors.New("email to: no recipient")
	}
	for _, s := range c.To {
		a, err := mail.ParseAddress(s)
		if err != nil {
			return nil, fmt.Errorf("email to %q: %w", s, err)
		}
		if _, dom, _ := strings.Cut(a.Address, "@"); dom == "" {
			return nil, fmt.Errorf("email to %q: no domain", s)
		}
		e.to = append(e.to, a)
	}
	switch c.TLS {
	case "":
		e.cfg.TLS = TLSStartTLS
	case TLSStartTLS, TLSOpportunistic, TLSImplicit, TLSNone:
	default:
		return nil, fmt.Errorf("email tls %q: want starttls, opportunistic, tls or none", c.TLS)
	}
	switch c.Auth {
	case "":
		e.cfg.Auth = AuthPlain
	case AuthPlain, AuthLogin:
	default:
		return nil, fmt.Errorf("email auth %q: want plain or login", c.Auth)
	}
	if c.Username == "" && !c.Password.IsZero() {
		return nil, errors.New("email: password set without username")
	}
	if c.Relay != "" {
		host, port, err := net.SplitHostPort(c.Relay)
		if err != nil || host == "" {
			return nil, fmt.Errorf("email relay %q: want host:port", c.Relay)
		}
		if e.port, err = strconv.Atoi(port); err != nil || e.port < 1 || e.port > 65535 {
			return nil, fmt.Errorf("email relay %q: bad port", c.Relay)
		}
		e.relay = host
	} else {
		e.port = c.MXPort
		if e.port == 0 {
			e.port = 25
		}
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("email ca_file: %w", err)
		}
		e.roots = x509.NewCertPool()
		if !e.roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("email ca_file %s: no PEM certificate found", c.CAFile)
		}
	}
	if e.resolver == nil {
		e.resolver = net.DefaultResolver
	}
	if e.cfg.Name == "" {
		e.cfg.Name = "email " + e.to[0].Address
	}
	return e, nil
}

// Name implements notify.Channel.
func (e *Email) Name() string { return e.cfg.Name }

// Send implements notify.Channel: one delivery to all recipients. With
// direct delivery, domains that accepted the message in an earlier attempt
// are skipped on a retry of the same message.
func (e *Email) Send(ctx context.Context, m notify.Message) error {
	id := e.messageID(m)
	if e.relay != "" {
		if err := e.deliver(ctx, e.relay, e.to, m, id); err != nil {
			return fmt.Errorf("email via %s: %w", net.JoinHostPort(e.relay, strconv.Itoa(e.port)), err)
		}
		return nil
	}

	byDomain := map[string][]*mail.Address{}
	for _, a := range e.to {
		_, dom, _ := strings.Cut(a.Address, "@")
		dom = strings.ToLower(dom)
		byDomain[dom] = append(byDomain[dom], a)
	}
	domains := make([]string, 0, len(byDomain))
	for d := range byDomain {
		domains = append(domains, d)
	}
	sort.Strings(domains)

	var errs []error
	allPermanent := true
	for _, dom := range domains {
		if e.done(id, dom) {
			continue
		}
		if err := e.deliverDomain(ctx, dom, byDomain[dom], m, id); err != nil {
			errs = append(errs, err)
			allPermanent = allPermanent && notify.IsPermanent(err)
			continue
		}
		e.markDone(id, dom)
	}
	if len(errs) == 0 {
		e.forget(id)
		return nil
	}
	err := errors.Join(errs...)
	if allPermanent {
		e.forget(id)
		return notify.Permanent(err)
	}
	return err
}

// deliverDomain tries the domain's MX hosts in preference order.
func (e *Email) deliverDomain(ctx context.Context, dom string, rcpts []*mail.Address, m notify.Message, id string) error {
	hosts, err := e.mxHosts(ctx, dom)
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hosts {
		err := e.deliver(ctx, h, rcpts, m, id)
		if err == nil {
			return nil
		}
		err = fmt.Errorf("email to %s via MX %s: %w", dom, net.JoinHostPort(h, strconv.Itoa(e.port)), err)
		if isReply5xx(err) {
			return notify.Permanent(err) // a definitive answer: other MX hosts would say the same
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	err = errors.Join(errs...)
	for _, x := range errs {
		if !notify.IsPermanent(x) {
			return err // at least one host may work later
		}
	}
	return notify.Permanent(err)
}

// mxHosts returns the MX host names for dom by preference, or dom itself
// when it has no MX record (RFC 5321 §5.1).
func (e *Email) mxHosts(ctx context.Context, dom string) ([]string, error) {
	mxs, err := e.resolver.LookupMX(ctx, dom)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return []string{dom}, nil
		}
		return nil, fmt.Errorf("email to %s: MX lookup: %w", dom, err)
	}
	sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Pref < mxs[j].Pref })
	var hosts []string
	for _, mx := range mxs {
		h := strings.TrimSuffix(mx.Host, ".")
		if h == "" {
			if len(mxs) == 1 {
				return nil, notify.Permanent(fmt.Errorf("email to %s: domain accepts no mail (null MX)", dom))
			}
			continue
		}
		hosts = append(hosts, h)
	}
	if len(hosts) == 0 {
		return []string{dom}, nil
	}
	return hosts, nil
}

// deliver makes one SMTP transaction with host for rcpts.
func (e *Email) deliver(ctx context.Context, host string, rcpts []*mail.Address, m notify.Message, id string) error {
	msg, err := e.buildMsg(rcpts, m, id)
	if err != nil {
		return notify.Permanent(err)
	}
	timeout := defaultTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return ctx.Err()
		}
	}
	tlsConf := &tls.Config{ServerName: host, RootCAs: e.roots, MinVersion: tls.VersionTLS12}

	// The dialer closes the connection when ctx ends, so a server that
	// stalls mid-conversation cannot outlive the attempt.
	var stops []func() bool
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	implicit := e.cfg.TLS == TLSImplicit
	dial := func(dctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(dctx, network, addr)
		if err != nil {
			return nil, err
		}
		stops = append(stops, context.AfterFunc(ctx, func() { _ = conn.Close() }))
		if !implicit {
			return conn, nil
		}
		tc := tls.Client(conn, tlsConf)
		if err := tc.HandshakeContext(dctx); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return tc, nil
	}

	opts := []gomail.Option{
		gomail.WithPort(e.port),
		gomail.WithTimeout(timeout),
		gomail.WithTLSConfig(tlsConf),
		gomail.WithDialContextFunc(dial),
	}
	switch e.cfg.TLS {
	case TLSStartTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case TLSOpportunistic:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
	case TLSImplicit:
		opts = append(opts, gomail.WithSSL(), gomail.WithTLSPolicy(gomail.NoTLS))
	case TLSNone:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	}
	if e.cfg.HELO != "" {
		opts = append(opts, gomail.WithHELO(e.cfg.HELO))
	}
	if e.cfg.Username != "" {
		mech := gomail.SMTPAuthPlain
		if e.cfg.Auth == AuthLogin {
			mech = gomail.SMTPAuthLogin
		}
		opts = append(opts, gomail.WithSMTPAuth(mech), gomail.WithUsername(e.cfg.Username),
			gomail.WithPassword(e.cfg.Password.Reveal()))
	}
	client, err := gomail.NewClient(host, opts...)
	if err != nil {
		return notify.Permanent(fmt.Errorf("client setup: %w", err))
	}
	err = client.DialAndSendWithContext(ctx, msg)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	return classify(err)
}

func (e *Email) buildMsg(rcpts []*mail.Address, m notify.Message, id string) (*gomail.Msg, error) {
	msg := gomail.NewMsg()
	msg.FromMailAddress(e.from)
	msg.ToMailAddress(rcpts...)
	msg.Subject(e.cfg.SubjectPrefix + strings.Join(strings.Fields(m.Text()), " "))
	at := m.At
	if at.IsZero() {
		at = time.Now()
	}
	msg.SetDateWithValue(at)
	msg.SetMessageIDWithValue(id)
	msg.SetGenHeader(gomail.Header("Auto-Submitted"), "auto-generated")
	if m.Type != "" {
		msg.SetGenHeader(gomail.Header("X-Sundown-Type"), m.Type)
	}
	if m.UPS != "" {
		msg.SetGenHeader(gomail.Header("X-Sundown-UPS"), m.UPS)
	}
	msg.SetBodyString(gomail.TypeTextPlain, Body(m, e.cfg.Verbose))
	return msg, nil
}

// Body is the plain-text body: the message text, a block of facts and,
// when verbose, the UPS variables as sorted "name: value" lines.
func Body(m notify.Message, verbose bool) string {
	var b strings.Builder
	text := m.Body
	if text == "" {
		text = m.Subject
	}
	b.WriteString(strings.TrimRight(text, "\n"))
	b.WriteString("\n\n")
	for _, f := range [][2]string{{"Type", m.Type}, {"UPS", m.UPS}, {"Severity", m.Severity}} {
		if f[1] != "" {
			fmt.Fprintf(&b, "%-9s %s\n", f[0]+":", f[1])
		}
	}
	if !m.At.IsZero() {
		fmt.Fprintf(&b, "%-9s %s\n", "Time:", m.At.Format(time.RFC3339))
	}
	if verbose && len(m.Vars) > 0 {
		b.WriteString("\nUPS variables:\n")
		for _, line := range m.SortedVars() {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// messageID is stable for one message, so a retried delivery carries the
// same Message-ID and receivers can tell duplicates.
func (e *Email) messageID(m notify.Message) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00%s", m.At.UTC().Format(time.RFC3339Nano), m.Type, m.UPS,
		m.Subject, m.Body, e.from.Address)
	_, dom, _ := strings.Cut(e.from.Address, "@")
	return hex.EncodeToString(h.Sum(nil)[:16]) + ".sundown@" + dom
}

func (e *Email) done(id, dom string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.delivered[id][dom]
}

func (e *Email) markDone(id, dom string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.delivered) >= 256 { // bounded: forget old partial deliveries
		clear(e.delivered)
	}
	if e.delivered[id] == nil {
		e.delivered[id] = map[string]bool{}
	}
	e.delivered[id][dom] = true
}

func (e *Email) forget(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.delivered, id)
}

// classify marks errors that retrying cannot fix as permanent.
func classify(err error) error {
	var cve *tls.CertificateVerificationError
	var hostErr x509.HostnameError
	var uaErr x509.UnknownAuthorityError
	var certErr x509.CertificateInvalidError
	msg := err.Error()
	switch {
	case isReply5xx(err),
		errors.As(err, &cve), errors.As(err, &hostErr), errors.As(err, &uaErr), errors.As(err, &certErr),
		errors.Is(err, gosmtp.ErrUnencrypted), errors.Is(err, gosmtp.ErrWrongHostname),
		errors.Is(err, gomail.ErrPlainAuthNotSupported), errors.Is(err, gomail.ErrLoginAuthNotSupported):
		return notify.Permanent(err)
	case strings.Contains(msg, "does not support STARTTLS"):
		return notify.Permanent(fmt.Errorf("server does not offer STARTTLS, which tls: starttls requires; nothing was sent: %w", err))
	case strings.Contains(msg, "server does not support SMTP AUTH"):
		return notify.Permanent(fmt.Errorf("server does not offer AUTH (is it only offered after STARTTLS?): %w", err))
	}
	return err
}

// isReply5xx reports whether err carries a permanent (5xx) SMTP reply.
func isReply5xx(err error) bool {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code >= 500 && te.Code < 600
	}
	var se *gomail.SendError
	if errors.As(err, &se) {
		return se.ErrorCode() >= 500 && se.ErrorCode() < 600
	}
	return false
}
