// Package proxmox is sundown's provider for Proxmox VE: it lists nodes and
// guests (QEMU VMs and LXC containers) through the PVE HTTP API with an API
// token, shuts guests down, suspends, stops and starts them following each
// worker task's UPID, keeps HA-managed guests from being restarted by the HA
// stack, and shuts nodes down. It speaks plain net/http with a CA-verified
// (or fingerprint-pinned) TLS client. See README.md for the privileges it
// needs and how its tests reach the fake server in ./pvetest.
package proxmox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sundown-ups/sundown/internal/provider"
)

// Config configures a Provider.
type Config struct {
	// URL is the API endpoint, "https://pve1.example:8006" (the /api2/json
	// suffix is added when missing).
	URL string
	// TokenID is "user@realm!tokenname"; Secret is the token's UUID secret.
	TokenID string
	Secret  string
	// CAFile is a PEM bundle that verifies the server certificate; empty
	// means the system roots.
	CAFile string
	// Fingerprint pins the server certificate by its SHA-256 fingerprint
	// ("AB:CD:…" as PVE shows it) instead of verifying a chain.
	Fingerprint string
	// Insecure disables certificate verification. Logged as a warning at
	// New; never the default.
	Insecure bool
	// Node, when set, limits the provider to that node's guests and host.
	Node string
	// ShutdownTimeout is the "timeout" passed with a guest shutdown request
	// (default 10 min). forceStop is always 0: escalation is the
	// executor's job.
	ShutdownTimeout time.Duration
	// PollInterval is how often task status and guest state are polled
	// (default 500 ms).
	PollInterval time.Duration
	// RequestTimeout bounds one HTTP request (default 30 s).
	RequestTimeout time.Duration
	// Logger receives state changes; default slog.Default().
	Logger *slog.Logger
}

// Provider implements provider.Provider for Proxmox VE.
type Provider struct {
	cfg    Config
	base   string
	auth   string
	hc     *http.Client
	log    *slog.Logger
	closed atomic.Bool
}

var _ provider.Provider = (*Provider)(nil)
var _ provider.Capable = (*Provider)(nil)

// New checks cfg, builds the client and verifies the token with GET /version.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	const op = "New"
	if cfg.URL == "" || cfg.TokenID == "" || cfg.Secret == "" {
		return nil, provider.NewError(op, cfg.URL, provider.Permanent, "url, token id and secret are required")
	}
	if !strings.Contains(cfg.TokenID, "@") || !strings.Contains(cfg.TokenID, "!") {
		return nil, provider.NewError(op, cfg.URL, provider.Permanent, "token id must look like user@realm!tokenname")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, provider.NewError(op, cfg.URL, provider.Permanent, "url must be https://host[:port]")
	}
	base := strings.TrimSuffix(u.Scheme+"://"+u.Host+strings.TrimSuffix(u.Path, "/"), "/api2/json") + "/api2/json"
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Minute
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 500 * time.Millisecond
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	tc, err := newTLSConfig(cfg)
	if err != nil {
		return nil, &provider.Error{Op: op, Target: base, Class: provider.Permanent, Err: err}
	}
	if cfg.Insecure && cfg.Fingerprint == "" {
		log.Warn("proxmox: TLS certificate verification is DISABLED (insecure: true)", "url", base)
	}
	p := &Provider{cfg: cfg, base: base, hc: newHTTPClient(tc, cfg.RequestTimeout), log: log,
		auth: "PVEAPIToken=" + cfg.TokenID + "=" + cfg.Secret}
	var v struct {
		Version string `json:"version"`
	}
	if err := p.do(ctx, op, base, http.MethodGet, "/version", nil, &v); err != nil {
		p.hc.CloseIdleConnections()
		return nil, err
	}
	log.Debug("proxmox: connected", "url", base, "version", v.Version)
	return p, nil
}

// Capabilities: suspend (QEMU only, to RAM), host shutdown; no maintenance
// mode (PVE has no API call for node maintenance).
func (p *Provider) Capabilities() provider.Caps {
	return provider.Caps{Suspend: true, Maintenance: false, HostShutdown: true}
}

// Close drops idle connections; afterwards every call fails Permanent.
func (p *Provider) Close() error {
	if p.closed.CompareAndSwap(false, true) {
		p.hc.CloseIdleConnections()
	}
	return nil
}

// ref is a parsed guest ID "node/type/vmid".
type ref struct {
	node, typ string
	vmid      int
}

func (r ref) id() string { return fmt.Sprintf("%s/%s/%d", r.node, r.typ, r.vmid) }
func (r ref) path() string {
	return fmt.Sprintf("/nodes/%s/%s/%d", url.PathEscape(r.node), r.typ, r.vmid)
}

func (p *Provider) parse(op, id string) (ref, error) {
	parts := strings.Split(id, "/")
	if len(parts) == 3 && parts[0] != "" && (parts[1] == "qemu" || parts[1] == "lxc") {
		if n, err := strconv.Atoi(parts[2]); err == nil && n >= 100 && strconv.Itoa(n) == parts[2] {
			if p.cfg.Node == "" || p.cfg.Node == parts[0] {
				return ref{parts[0], parts[1], n}, nil
			}
		}
	}
	if p.closed.Load() {
		return ref{}, provider.NewError(op, id, provider.Permanent, "provider is closed")
	}
	return ref{}, provider.NewError(op, id, provider.NotFound, "not a proxmox guest id (node/qemu|lxc/vmid)")
}

// status is …/status/current.
type status struct {
	VMID      int    `json:"vmid"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	QMPStatus string `json:"qmpstatus"`
	Lock      string `json:"lock"`
	Agent     any    `json:"agent"`
	HA        struct {
		Managed int    `json:"managed"`
		State   string `json:"state"`
	} `json:"ha"`
}

func (s status) agentEnabled() bool {
	switch v := s.Agent.(type) {
	case float64:
		return v != 0
	case string:
		return v != "" && v != "0"
	case bool:
		return v
	}
	return false
}

func (s status) power(typ string) provider.PowerState {
	switch s.Status {
	case "running":
		if typ == "qemu" && (s.QMPStatus == "paused" || s.QMPStatus == "suspended") {
			return provider.PowerSuspended
		}
		return provider.PowerOn
	case "stopped":
		if s.Lock == "suspended" {
			return provider.PowerSuspended // hibernated to disk
		}
		return provider.PowerOff
	}
	return provider.PowerUnknown
}

func (p *Provider) current(ctx context.Context, op string, r ref) (status, error) {
	var st status
	err := p.do(ctx, op, r.id(), http.MethodGet, r.path()+"/status/current", nil, &st)
	return st, err
}

// agentUp pings the QEMU guest agent.
func (p *Provider) agentUp(ctx context.Context, op string, r ref) (bool, error) {
	err := p.do(ctx, op, r.id(), http.MethodPost, r.path()+"/agent/ping", nil, nil)
	if err == nil {
		return true, nil
	}
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusInternalServerError &&
		(strings.Contains(ae.Message, "agent") || strings.Contains(ae.Message, "not running")) {
		return false, nil
	}
	return false, err
}

func (p *Provider) guest(ctx context.Context, op string, r ref) (provider.Guest, status, error) {
	st, err := p.current(ctx, op, r)
	if err != nil {
		return provider.Guest{}, st, err
	}
	g := provider.Guest{ID: r.id(), Name: st.Name, HostID: r.node, Power: st.power(r.typ), Tools: provider.ToolsUnknown}
	switch {
	case r.typ == "lxc":
		// A container's init takes the shutdown request; no agent needed.
		g.Tools = provider.ToolsNotRunning
		if g.Power == provider.PowerOn {
			g.Tools = provider.ToolsRunning
		}
	case !st.agentEnabled():
		g.Tools = provider.ToolsNotInstalled
	case g.Power != provider.PowerOn:
		g.Tools = provider.ToolsNotRunning
	default:
		up, err := p.agentUp(ctx, op, r)
		switch {
		case provider.ClassOf(err) == provider.Permission:
			// The token may not query the agent (VM.Monitor on PVE 8):
			// say so rather than fail the whole inventory.
			g.Tools = provider.ToolsUnknown
		case err != nil:
			return provider.Guest{}, st, err
		case up:
			g.Tools = provider.ToolsRunning
		default:
			g.Tools = provider.ToolsNotRunning
		}
	}
	return g, st, nil
}

// Guest returns one guest's state.
func (p *Provider) Guest(ctx context.Context, id string) (provider.Guest, error) {
	r, err := p.parse("Guest", id)
	if err != nil {
		return provider.Guest{}, err
	}
	g, _, err := p.guest(ctx, "Guest", r)
	return g, err
}

// Inventory lists nodes and guests (templates left out).
func (p *Provider) Inventory(ctx context.Context) (provider.Inventory, error) {
	const op = "Inventory"
	var nodes []struct {
		Node   string `json:"node"`
		Status string `json:"status"`
	}
	if err := p.do(ctx, op, "", http.MethodGet, "/nodes", nil, &nodes); err != nil {
		return provider.Inventory{}, err
	}
	var inv provider.Inventory
	online := map[string]bool{}
	for _, n := range nodes {
		if p.cfg.Node != "" && n.Node != p.cfg.Node {
			continue
		}
		h := provider.Host{ID: n.Node, Name: n.Node, Power: provider.PowerUnknown}
		switch n.Status {
		case "online":
			h.Power = provider.PowerOn
			online[n.Node] = true
		case "offline":
			// PVE cannot tell "off" from "lost": offline is all it knows.
			h.Power = provider.PowerUnknown
		}
		inv.Hosts = append(inv.Hosts, h)
	}
	var res []struct {
		Type     string `json:"type"`
		Node     string `json:"node"`
		VMID     int    `json:"vmid"`
		Name     string `json:"name"`
		Status   string `json:"status"`
		Template int    `json:"template"`
	}
	if err := p.do(ctx, op, "", http.MethodGet, "/cluster/resources", url.Values{"type": {"vm"}}, &res); err != nil {
		return provider.Inventory{}, err
	}
	for _, e := range res {
		if e.Template != 0 || (e.Type != "qemu" && e.Type != "lxc") {
			continue
		}
		if p.cfg.Node != "" && e.Node != p.cfg.Node {
			continue
		}
		r := ref{e.Node, e.Type, e.VMID}
		if !online[e.Node] {
			inv.Guests = append(inv.Guests, provider.Guest{ID: r.id(), Name: e.Name, HostID: e.Node,
				Power: provider.PowerUnknown, Tools: provider.ToolsUnknown})
			continue
		}
		g, _, err := p.guest(ctx, op, r)
		if provider.ClassOf(err) == provider.NotFound {
			continue // gone (migrated, deleted) between the two calls
		}
		if err != nil {
			return provider.Inventory{}, err
		}
		inv.Guests = append(inv.Guests, g)
	}
	slices.SortFunc(inv.Hosts, func(a, b provider.Host) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(inv.Guests, func(a, b provider.Guest) int { return strings.Compare(a.ID, b.ID) })
	return inv, nil
}
