package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// API is the daemon's local HTTP API and status page.
type API struct {
	// Listen is host:port; default 127.0.0.1:8431. "off" disables the API.
	Listen string `yaml:"listen"`
	// The bearer token of state-changing calls (trigger, drill, ack);
	// without one they are refused.
	TokenFile string `yaml:"token_file"`
	TokenEnv  string `yaml:"token_env"`
	Token     Secret `yaml:"-"`
	// AuditLog records every state-changing call; default
	// state_dir/audit.jsonl.
	AuditLog string `yaml:"audit_log"`
	// RatePerMin and Burst limit state-changing calls per client (default
	// 6 per minute, burst 3).
	RatePerMin float64 `yaml:"rate_per_min"`
	Burst      int     `yaml:"burst"`
}

// DefaultAPIListen is where the API listens unless told otherwise.
const DefaultAPIListen = "127.0.0.1:8431"

// Notify configures notifications (they run beside the shutdown, bounded).
type Notify struct {
	QueueSize    int           `yaml:"queue_size"` // per channel, default 64
	Timeout      Duration      `yaml:"timeout"`    // per attempt, default 10s
	Retries      *int          `yaml:"retries"`    // default 4; -1 never retries
	Backoff      Duration      `yaml:"backoff"`    // default 1s
	MaxBackoff   Duration      `yaml:"max_backoff"`
	FlushTimeout Duration      `yaml:"flush_timeout"`
	Channels     []NotifyRoute `yaml:"channels"`
}

// NotifyRoute is one notification channel and the event types it gets.
type NotifyRoute struct {
	Name    string         `yaml:"name"`
	Types   []string       `yaml:"types"` // empty: every type
	Timeout Duration       `yaml:"timeout"`
	Email   *Email         `yaml:"email"`
	Webhook *Webhook       `yaml:"webhook"`
	Exec    *NotifyCommand `yaml:"exec"`
}

// Email sends mail through a relay or straight to each domain's MX.
type Email struct {
	From          string   `yaml:"from"`
	To            []string `yaml:"to"`
	Relay         string   `yaml:"relay"` // host:port; empty: direct MX delivery
	TLS           string   `yaml:"tls"`   // starttls (default), opportunistic, tls, none
	Username      string   `yaml:"username"`
	PasswordFile  string   `yaml:"password_file"`
	PasswordEnv   string   `yaml:"password_env"`
	Password      Secret   `yaml:"-"`
	Auth          string   `yaml:"auth"` // plain (default) or login
	CAFile        string   `yaml:"ca_file"`
	HELO          string   `yaml:"helo"`
	SubjectPrefix string   `yaml:"subject_prefix"`
	Verbose       bool     `yaml:"verbose"` // add the UPS variables
}

// Webhook posts each message to a URL (the URL is a secret: chat webhooks
// carry their token in it).
type Webhook struct {
	Format  string        `yaml:"format"` // json (default), ntfy, slack, discord, teams
	URL     string        `yaml:"url"`
	URLFile string        `yaml:"url_file"`
	URLEnv  string        `yaml:"url_env"`
	Secret  Secret        `yaml:"-"` // the URL, from whichever was given
	Headers []SecretValue `yaml:"headers"`
	CAFile  string        `yaml:"ca_file"`
}

// NotifyCommand runs a command with NUT's NOTIFYCMD environment.
type NotifyCommand struct {
	Command []string      `yaml:"command"`
	Env     []SecretValue `yaml:"env"`
}

// SecretValue is a named value (a header, an environment variable) given
// inline or from a file or the environment.
type SecretValue struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFile string `yaml:"value_file"`
	ValueEnv  string `yaml:"value_env"`
	Secret    Secret `yaml:"-"`
}

// Restore says when and how the site comes back after a shutdown.
type Restore struct {
	// Auto runs the restore by itself once every UPS has been on line power
	// for After with MinCharge; default true. `sundown restore` always works.
	Auto      *bool    `yaml:"auto"`
	After     Duration `yaml:"after"`      // default 5m
	MinCharge *float64 `yaml:"min_charge"` // percent, default 50
	// Timeouts of the restore's steps (defaults 15m, 5m, 10m).
	HostTimeout        Duration `yaml:"host_timeout"`
	MaintenanceTimeout Duration `yaml:"maintenance_timeout"`
	GuestTimeout       Duration `yaml:"guest_timeout"`
	// Poll is the pause between checks of a waking host or a starting
	// guest; default 5s.
	Poll Duration `yaml:"poll"`
}

// ShedStage shuts some groups down early to stretch the battery.
type ShedStage struct {
	Name         string   `yaml:"name"`
	Groups       []string `yaml:"groups"`
	After        Duration `yaml:"after"`         // on battery this long
	BelowCharge  float64  `yaml:"below_charge"`  // percent
	BelowRuntime Duration `yaml:"below_runtime"` // battery.runtime below this
}

// Trigger is a UPS fed by `sundown trigger` or the API's trigger endpoint,
// for power sources that can only run a script or call a URL.
type Trigger struct{}

// Wake says how the restore powers a host of a target on.
type Wake struct {
	// Host is the host's name (or ID) as the target reports it; it may be
	// left out when the target has a single host.
	Host string   `yaml:"host"`
	WOL  *WOLWake `yaml:"wol"`
	IPMI *IPMI    `yaml:"ipmi"`
}

// WOLWake sends Wake-on-LAN magic packets.
type WOLWake struct {
	MAC          string   `yaml:"mac"`
	Broadcast    string   `yaml:"broadcast"` // default 255.255.255.255
	Port         int      `yaml:"port"`      // default 9
	Repeat       int      `yaml:"repeat"`    // default 3
	Interval     Duration `yaml:"interval"`  // default 1s
	SecureOnFile string   `yaml:"secureon_file"`
	SecureOn     Secret   `yaml:"-"`
}

// IPMI powers a host on through its BMC (IPMI 2.0 lanplus).
type IPMI struct {
	Host         string   `yaml:"host"`
	Port         int      `yaml:"port"` // default 623
	User         string   `yaml:"user"`
	PasswordFile string   `yaml:"password_file"`
	PasswordEnv  string   `yaml:"password_env"`
	Password     Secret   `yaml:"-"`
	Privilege    string   `yaml:"privilege"` // operator (default) or administrator
	Timeout      Duration `yaml:"timeout"`
	CipherSuite  int      `yaml:"cipher_suite"` // default 3
}

// Ready says when a started guest counts as up, before its dependents
// start. In tcp and http, "{name}" is replaced by the guest's name.
type Ready struct {
	Tools bool       `yaml:"tools"` // guest tools running
	TCP   string     `yaml:"tcp"`   // host:port accepts connections
	HTTP  *ReadyHTTP `yaml:"http"`
}

// ReadyHTTP is an HTTP(S) readiness check.
type ReadyHTTP struct {
	URL      string `yaml:"url"`
	Status   int    `yaml:"status"`   // default: any 2xx
	Contains string `yaml:"contains"` // a substring of the body
	CAFile   string `yaml:"ca_file"`
}

// Restore defaults.
const (
	DefaultRestoreAfter     = 5 * time.Minute
	DefaultRestoreMinCharge = 50
	DefaultRestorePoll      = 5 * time.Second
)

func (c *Config) applyOperateDefaults() {
	if c.API.Listen == "" {
		c.API.Listen = DefaultAPIListen
	}
	if c.API.AuditLog == "" {
		c.API.AuditLog = filepath.Join(c.StateDir, "audit.jsonl")
	}
	r := &c.Restore
	if r.Auto == nil {
		r.Auto = ptr(true)
	}
	setDur(&r.After, DefaultRestoreAfter)
	if r.MinCharge == nil {
		r.MinCharge = ptr(float64(DefaultRestoreMinCharge))
	}
	setDur(&r.Poll, DefaultRestorePoll)
}

var (
	macRE         = regexp.MustCompile(`^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$|^[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}$|^[0-9A-Fa-f]{12}$`)
	notifyTypeRE  = regexp.MustCompile(`^[A-Z][A-Z_]*$`)
	webhookFormat = []string{"json", "ntfy", "slack", "discord", "teams"}
	emailTLS      = []string{"starttls", "opportunistic", "tls", "none"}
)

func (c *Config) validateOperate(ps *problems, getenv func(string) string) {
	if l := c.API.Listen; l != "off" {
		if h, p, err := net.SplitHostPort(l); err == nil && p == "0" && h != "" {
			// Port 0 picks a free port (tests; the log says which).
		} else {
			checkAddress(l, "api.listen", ps)
		}
	}
	c.API.Token = readSecretKeys(c.API.TokenFile, c.API.TokenEnv, "token_file", "token_env", "api", ps, getenv)
	if c.API.RatePerMin < 0 || c.API.Burst < 0 {
		ps.add("api", 0, "rate_per_min and burst must not be negative")
	}

	n := &c.Notify
	if n.QueueSize < 0 {
		ps.add("notify.queue_size", 0, "must not be negative")
	}
	if n.Retries != nil && *n.Retries < -1 {
		ps.add("notify.retries", 0, "want -1 (never retry) or more")
	}
	names := map[string]int{}
	for i := range n.Channels {
		ch := &n.Channels[i]
		p := fmt.Sprintf("notify.channels[%d]", i)
		switch {
		case ch.Name == "":
			ps.add(p+".name", 0, "missing")
		case !nameRE.MatchString(ch.Name):
			ps.add(p+".name", 0, "%q: use letters, digits, '.', '_' and '-' (at most 63)", ch.Name)
		default:
			if j, dup := names[ch.Name]; dup {
				ps.add(p+".name", 0, "%q is also the name of notify.channels[%d]", ch.Name, j)
			}
			names[ch.Name] = i
		}
		for k, t := range ch.Types {
			if !notifyTypeRE.MatchString(t) {
				ps.add(fmt.Sprintf("%s.types[%d]", p, k), 0, "%q: an event type such as ONBATT, LOWBATT, SHUTDOWN_STARTED", t)
			}
		}
		kinds := 0
		for _, set := range []bool{ch.Email != nil, ch.Webhook != nil, ch.Exec != nil} {
			if set {
				kinds++
			}
		}
		if kinds != 1 {
			ps.add(p, 0, "give exactly one of email:, webhook:, exec:")
		}
		if e := ch.Email; e != nil {
			validateEmail(e, p+".email", ps, getenv)
		}
		if w := ch.Webhook; w != nil {
			validateWebhook(w, p+".webhook", ps, getenv)
		}
		if x := ch.Exec; x != nil {
			if len(x.Command) == 0 || x.Command[0] == "" {
				ps.add(p+".exec.command", 0, "missing: the program and its arguments, e.g. [/etc/nut/notify.sh]")
			} else if !filepath.IsAbs(x.Command[0]) {
				ps.add(p+".exec.command", 0, "%q: give the program's absolute path", x.Command[0])
			}
			validateSecretValues(x.Env, p+".exec.env", ps, getenv)
		}
	}

	r := c.Restore
	if *r.MinCharge < 0 || *r.MinCharge > 100 {
		ps.add("restore.min_charge", 0, "want a percentage from 0 to 100, got %g", *r.MinCharge)
	}
	groups := map[string]bool{"ungrouped": true}
	for _, g := range c.Shutdown.Groups {
		groups[g.Name] = true
	}
	stages := map[string]int{}
	for i, s := range c.Shed {
		p := fmt.Sprintf("shed[%d]", i)
		switch {
		case s.Name == "":
			ps.add(p+".name", 0, "missing")
		default:
			if j, dup := stages[s.Name]; dup {
				ps.add(p+".name", 0, "%q is also the name of shed[%d]", s.Name, j)
			}
			stages[s.Name] = i
		}
		if len(s.Groups) == 0 {
			ps.add(p+".groups", 0, "missing: the groups this stage shuts down early")
		}
		for k, g := range s.Groups {
			if !groups[g] {
				ps.add(fmt.Sprintf("%s.groups[%d]", p, k), 0, "no group %q under shutdown.groups", g)
			}
		}
		if s.After <= 0 && s.BelowCharge <= 0 && s.BelowRuntime <= 0 {
			ps.add(p, 0, "give at least one of after, below_charge, below_runtime")
		}
		if s.BelowCharge < 0 || s.BelowCharge > 100 {
			ps.add(p+".below_charge", 0, "want a percentage from 0 to 100, got %g", s.BelowCharge)
		}
	}

	for i := range c.Targets {
		t := &c.Targets[i]
		seen := map[string]bool{}
		for k := range t.Wake {
			w := &t.Wake[k]
			p := fmt.Sprintf("targets[%d].wake[%d]", i, k)
			if w.Host == "" && len(t.Wake) > 1 {
				ps.add(p+".host", 0, "missing: with several wake entries each names its host")
			}
			if seen[w.Host] {
				ps.add(p+".host", 0, "host %q has another wake entry", w.Host)
			}
			seen[w.Host] = true
			if (w.WOL == nil) == (w.IPMI == nil) {
				ps.add(p, 0, "give exactly one of wol:, ipmi:")
			}
			if o := w.WOL; o != nil {
				if !macRE.MatchString(o.MAC) {
					ps.add(p+".wol.mac", 0, "%q is not a MAC address (aa:bb:cc:dd:ee:ff)", o.MAC)
				}
				if o.Port < 0 || o.Port > 65535 {
					ps.add(p+".wol.port", 0, "want 1 to 65535")
				}
				if o.Repeat < 0 {
					ps.add(p+".wol.repeat", 0, "must not be negative")
				}
				o.SecureOn = readSecretKeys(o.SecureOnFile, "", "secureon_file", "", p+".wol", ps, getenv)
			}
			if m := w.IPMI; m != nil {
				if m.Host == "" {
					ps.add(p+".ipmi.host", 0, "missing: the BMC's address")
				}
				if m.User == "" {
					ps.add(p+".ipmi.user", 0, "missing")
				}
				m.Password = readSecret(m.PasswordFile, m.PasswordEnv, p+".ipmi", ps, getenv)
				if m.Password.IsZero() && m.PasswordFile == "" && m.PasswordEnv == "" {
					ps.add(p+".ipmi", 0, "give password_file or password_env")
				}
				switch m.Privilege {
				case "", "operator", "administrator":
				default:
					ps.add(p+".ipmi.privilege", 0, "want operator or administrator, got %q", m.Privilege)
				}
			}
		}
	}
	for i, g := range c.Shutdown.Groups {
		validateReady(g.Ready, fmt.Sprintf("shutdown.groups[%d].ready", i), ps)
	}
	for i, g := range c.Shutdown.Guests {
		validateReady(g.Ready, fmt.Sprintf("shutdown.guests[%d].ready", i), ps)
	}
}

func validateEmail(e *Email, p string, ps *problems, getenv func(string) string) {
	if e.From == "" {
		ps.add(p+".from", 0, "missing")
	}
	if len(e.To) == 0 {
		ps.add(p+".to", 0, "missing: at least one address")
	}
	for k, to := range e.To {
		if !strings.Contains(to, "@") {
			ps.add(fmt.Sprintf("%s.to[%d]", p, k), 0, "%q is not an email address", to)
		}
	}
	if e.Relay != "" {
		checkAddress(e.Relay, p+".relay", ps)
	}
	if e.TLS != "" && !slices.Contains(emailTLS, e.TLS) {
		ps.add(p+".tls", 0, "want one of %s, got %q", strings.Join(emailTLS, ", "), e.TLS)
	}
	switch e.Auth {
	case "", "plain", "login":
	default:
		ps.add(p+".auth", 0, "want plain or login, got %q", e.Auth)
	}
	e.Password = readSecret(e.PasswordFile, e.PasswordEnv, p, ps, getenv)
	if e.Username != "" && e.Password.IsZero() && e.PasswordFile == "" && e.PasswordEnv == "" {
		ps.add(p, 0, "username %q needs password_file or password_env", e.Username)
	}
	checkFile(e.CAFile, p+".ca_file", ps)
}

func validateWebhook(w *Webhook, p string, ps *problems, getenv func(string) string) {
	if w.Format != "" && !slices.Contains(webhookFormat, w.Format) {
		ps.add(p+".format", 0, "want one of %s, got %q", strings.Join(webhookFormat, ", "), w.Format)
	}
	given := 0
	for _, v := range []string{w.URL, w.URLFile, w.URLEnv} {
		if v != "" {
			given++
		}
	}
	switch {
	case given != 1:
		ps.add(p, 0, "give exactly one of url, url_file, url_env")
	case w.URL != "":
		w.Secret = NewSecret(w.URL)
	default:
		w.Secret = readSecretKeys(w.URLFile, w.URLEnv, "url_file", "url_env", p, ps, getenv)
	}
	if v := w.Secret.Reveal(); v != "" {
		if u, err := url.Parse(v); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			ps.add(p, 0, "the URL is not an http(s) URL") // never repeat it: it may hold a token
		}
	}
	validateSecretValues(w.Headers, p+".headers", ps, getenv)
	checkFile(w.CAFile, p+".ca_file", ps)
}

func validateSecretValues(vs []SecretValue, p string, ps *problems, getenv func(string) string) {
	for k := range vs {
		v := &vs[k]
		q := fmt.Sprintf("%s[%d]", p, k)
		if v.Name == "" {
			ps.add(q+".name", 0, "missing")
		}
		given := 0
		for _, s := range []string{v.Value, v.ValueFile, v.ValueEnv} {
			if s != "" {
				given++
			}
		}
		switch {
		case given != 1:
			ps.add(q, 0, "give exactly one of value, value_file, value_env")
		case v.Value != "":
			v.Secret = NewSecret(v.Value)
		default:
			v.Secret = readSecretKeys(v.ValueFile, v.ValueEnv, "value_file", "value_env", q, ps, getenv)
		}
	}
}

func validateReady(r *Ready, p string, ps *problems) {
	if r == nil {
		return
	}
	if !r.Tools && r.TCP == "" && r.HTTP == nil {
		ps.add(p, 0, "give tools: true, tcp: or http:")
	}
	if r.TCP != "" {
		if _, port, err := net.SplitHostPort(strings.ReplaceAll(r.TCP, "{name}", "guest")); err != nil || port == "" {
			ps.add(p+".tcp", 0, "%q is not host:port", r.TCP)
		}
	}
	if h := r.HTTP; h != nil {
		if u, err := url.Parse(strings.ReplaceAll(h.URL, "{name}", "guest")); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			ps.add(p+".http.url", 0, "%q is not an http(s) URL", h.URL)
		}
		if h.Status != 0 && (h.Status < 100 || h.Status > 599) {
			ps.add(p+".http.status", 0, "%d is not an HTTP status", h.Status)
		}
		checkFile(h.CAFile, p+".http.ca_file", ps)
	}
}

func checkFile(path, p string, ps *problems) {
	if path == "" {
		return
	}
	if _, err := os.Stat(path); err != nil {
		ps.add(p, 0, "cannot read: %v", unwrapPathErr(err))
	}
}
