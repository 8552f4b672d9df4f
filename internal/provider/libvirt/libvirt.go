// Package libvirt is sundown's provider for libvirt hypervisors (KVM/QEMU
// and anything else libvirtd manages), spoken to over libvirt's RPC protocol
// with the pure-Go github.com/digitalocean/go-libvirt client: locally over
// the unix socket, or remotely over ssh or TLS.
//
// One provider sees one hypervisor: Inventory has one Host (the hypervisor)
// and one Guest per defined domain, whose ID is the domain UUID in lower
// case. Suspend is libvirt's managed save (the guest's memory goes to disk
// and the domain is shut off; starting it restores it). Maintenance mode and
// host shutdown are not offered: a libvirt host is shut down through the
// ssh provider.
package libvirt

import (
	"context"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/sundown-ups/sundown/internal/provider"
)

// Shutdown modes for Config.ShutdownMode.
const (
	ShutdownACPI  = "acpi"
	ShutdownAgent = "agent"
)

// Config says how to reach libvirtd.
type Config struct {
	// URI is a libvirt connection URI: qemu:///system (local unix socket),
	// qemu+ssh://user@host/system, qemu+tls://host/system, or, in tests,
	// test+unix:///default?socket=/path/to/libvirt-sock. Query parameters
	// are go-libvirt's (socket, keyfile, known_hosts, pkipath, no_verify…).
	URI string
	// ShutdownMode selects how ShutdownGuest asks the guest: "acpi" (the
	// default: an ACPI power button press) or "agent" (qemu-guest-agent).
	ShutdownMode string
	// HostName is the Host.ID and Host.Name to report; "" uses the
	// hypervisor's own host name.
	HostName string
}

// pollInterval is how often WaitGuest and the waiting methods re-read a
// domain's state.
const pollInterval = 50 * time.Millisecond

// client is the part of go-libvirt the provider uses; *golibvirt.Libvirt
// implements it. Tests wrap it to model guest behaviour the test driver
// cannot (agent state, a guest that ignores shutdown).
type client interface {
	ConnectListAllDomains(needResults int32, flags golibvirt.ConnectListAllDomainsFlags) ([]golibvirt.Domain, uint32, error)
	ConnectGetHostname() (string, error)
	ConnectGetCapabilities() (string, error)
	DomainLookupByUUID(uuid golibvirt.UUID) (golibvirt.Domain, error)
	DomainGetState(dom golibvirt.Domain, flags uint32) (int32, int32, error)
	DomainHasManagedSaveImage(dom golibvirt.Domain, flags uint32) (int32, error)
	DomainGetXMLDesc(dom golibvirt.Domain, flags golibvirt.DomainXMLFlags) (string, error)
	DomainShutdownFlags(dom golibvirt.Domain, flags golibvirt.DomainShutdownFlagValues) error
	DomainShutdown(dom golibvirt.Domain) error
	DomainManagedSave(dom golibvirt.Domain, flags uint32) error
	DomainManagedSaveRemove(dom golibvirt.Domain, flags uint32) error
	DomainDestroy(dom golibvirt.Domain) error
	DomainCreate(dom golibvirt.Domain) error
	DomainResume(dom golibvirt.Domain) error
	DomainPmWakeup(dom golibvirt.Domain, flags uint32) error
}

// Provider is a provider.Provider over one libvirt connection. It is safe
// for concurrent use. A dropped connection is re-dialled on the next call.
type Provider struct {
	cfg  Config
	uri  *url.URL
	wrap func(client) client // tests only

	mu       sync.Mutex
	lv       *golibvirt.Libvirt
	c        client
	closed   bool
	hostID   string
	hostUUID string

	wg sync.WaitGroup // calls running in their own goroutine
}

var _ provider.Provider = (*Provider)(nil)
var _ provider.Capable = (*Provider)(nil)

// New checks cfg and connects to libvirtd. Errors are *provider.Error:
// Permanent for a bad configuration, Unreachable when libvirtd cannot be
// reached, Auth/Permission when it refuses the connection.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	return newProvider(ctx, cfg, nil)
}

func newProvider(ctx context.Context, cfg Config, wrap func(client) client) (*Provider, error) {
	const op = "New"
	switch cfg.ShutdownMode {
	case "":
		cfg.ShutdownMode = ShutdownACPI
	case ShutdownACPI, ShutdownAgent:
	default:
		return nil, provider.NewError(op, "", provider.Permanent, fmt.Sprintf("libvirt: shutdown mode %q is not acpi or agent", cfg.ShutdownMode))
	}
	u, err := url.Parse(cfg.URI)
	if err != nil || cfg.URI == "" || u.Scheme == "" {
		// url errors quote the whole URI; it may carry a key path, not a
		// secret, but keep the message plain anyway.
		return nil, provider.NewError(op, "", provider.Permanent, "libvirt: URI is empty or not a libvirt URI")
	}
	transport := ""
	if _, t, found := strings.Cut(u.Scheme, "+"); found {
		transport = t
	}
	switch transport {
	case "", "unix", "tcp", "tls", "ssh", "libssh", "libssh2":
	default:
		return nil, provider.NewError(op, redact(u), provider.Permanent, fmt.Sprintf("libvirt: unsupported transport %q", transport))
	}
	p := &Provider{cfg: cfg, uri: u, wrap: wrap}
	if _, err := p.client(ctx, op, redact(u)); err != nil {
		return nil, err
	}
	return p, nil
}

// redact returns the URI without user info and query (which may name key
// files), for error targets.
func redact(u *url.URL) string {
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	return r.String()
}

// Capabilities: suspend (managed save) only; no maintenance mode, no host
// shutdown (use the ssh provider for the hypervisor host).
func (p *Provider) Capabilities() provider.Caps {
	return provider.Caps{Suspend: true}
}

// client returns the live connection, dialling when there is none or the
// previous one dropped.
func (p *Provider) client(ctx context.Context, op, target string) (client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, provider.NewError(op, target, provider.Permanent, "libvirt: provider is closed")
	}
	if p.lv != nil && p.lv.IsConnected() {
		return p.c, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, &provider.Error{Op: op, Target: target, Class: provider.Transient, Err: err}
	}
	lv, err := golibvirt.ConnectToURI(p.uri)
	if err != nil {
		cls := classify(err)
		if libvirtCode(err) == -1 && cls == provider.Permanent {
			// Not an answer from libvirtd: the dial itself failed (go-libvirt
			// does not always keep the net error in the chain).
			cls = provider.Unreachable
		}
		return nil, &provider.Error{Op: op, Target: target, Class: cls, Err: fmt.Errorf("connect %s: %w", redact(p.uri), err)}
	}
	var c client = lv
	if p.wrap != nil {
		c = p.wrap(c)
	}
	host, hostUUID, err := hostInfo(c, p.cfg.HostName)
	if err != nil {
		_ = lv.Disconnect()
		return nil, &provider.Error{Op: op, Target: target, Class: classify(err), Err: fmt.Errorf("read host %s: %w", redact(p.uri), err)}
	}
	if p.lv != nil {
		_ = p.lv.Disconnect() // already dropped; releases go-libvirt's state
	}
	p.lv, p.c, p.hostID, p.hostUUID = lv, c, host, hostUUID
	return c, nil
}

func hostInfo(c client, name string) (id, uuid string, err error) {
	if name == "" {
		if name, err = c.ConnectGetHostname(); err != nil {
			return "", "", err
		}
	}
	caps, err := c.ConnectGetCapabilities()
	if err != nil {
		return "", "", err
	}
	var doc struct {
		Host struct {
			UUID string `xml:"uuid"`
		} `xml:"host"`
	}
	if err := xml.Unmarshal([]byte(caps), &doc); err != nil {
		slog.Debug("libvirt: capabilities not parsed", "err", err)
	}
	return name, strings.ToLower(strings.TrimSpace(doc.Host.UUID)), nil
}

// call runs fn against the connection in a goroutine the provider owns, so
// that ctx can end the wait even though go-libvirt takes no context. A call
// abandoned that way may still take effect (see the Provider contract);
// Close waits for it.
func (p *Provider) call(ctx context.Context, op, target string, fn func(c client) error) error {
	if err := ctx.Err(); err != nil {
		return &provider.Error{Op: op, Target: target, Class: provider.Transient, Err: err}
	}
	c, err := p.client(ctx, op, target)
	if err != nil {
		return err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return provider.NewError(op, target, provider.Permanent, "libvirt: provider is closed")
	}
	p.wg.Add(1)
	p.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		defer p.wg.Done()
		done <- fn(c)
	}()
	select {
	case err := <-done:
		if err == nil {
			return nil
		}
		var pe *provider.Error
		if errors.As(err, &pe) {
			return err
		}
		e := &provider.Error{Op: op, Target: target, Class: classify(err), Err: err}
		if e.Class == provider.Permission {
			e.Privilege = privileges[op]
		}
		return e
	case <-ctx.Done():
		return &provider.Error{Op: op, Target: target, Class: provider.Transient, Err: ctx.Err()}
	}
}

// privileges names the polkit action (libvirt ACL permission) each
// operation needs, reported in Error.Privilege on an access denial.
var privileges = map[string]string{
	"Inventory":     "org.libvirt.api.domain.read",
	"Guest":         "org.libvirt.api.domain.read",
	"WaitGuest":     "org.libvirt.api.domain.read",
	"ShutdownGuest": "org.libvirt.api.domain.init-control",
	"PowerOffGuest": "org.libvirt.api.domain.stop",
	"PowerOnGuest":  "org.libvirt.api.domain.start",
	"SuspendGuest":  "org.libvirt.api.domain.hibernate",
}

// libvirtCode returns the libvirt error number in err's chain, or -1.
func libvirtCode(err error) golibvirt.ErrorNumber {
	var le golibvirt.Error
	if errors.As(err, &le) {
		return golibvirt.ErrorNumber(le.Code)
	}
	return -1
}

// classify maps a go-libvirt error onto a provider error class.
func classify(err error) provider.Class {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return provider.Transient
	}
	switch libvirtCode(err) {
	case -1:
	case golibvirt.ErrNoDomain:
		return provider.NotFound
	case golibvirt.ErrAccessDenied:
		return provider.Permission
	case golibvirt.ErrAuthFailed, golibvirt.ErrAuthCancelled, golibvirt.ErrAuthUnavailable:
		return provider.Auth
	case golibvirt.ErrNoSupport, golibvirt.ErrOperationUnsupported, golibvirt.ErrArgumentUnsupported,
		golibvirt.ErrAgentUnresponsive, golibvirt.ErrAgentUnsynced:
		return provider.Unsupported
	case golibvirt.ErrOperationTimeout, golibvirt.ErrResourceBusy, golibvirt.ErrOperationAborted:
		return provider.Transient
	case golibvirt.ErrRPC, golibvirt.ErrNoConnect:
		return provider.Unreachable
	default:
		return provider.Permanent
	}
	var ne net.Error
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EINVAL) || errors.As(err, &ne) {
		return provider.Unreachable
	}
	return provider.Permanent
}

// parseID turns a Guest.ID (canonical UUID text) into a libvirt UUID.
func parseID(op, id string) (golibvirt.UUID, error) {
	var u golibvirt.UUID
	ok := len(id) == 36 && id[8] == '-' && id[13] == '-' && id[18] == '-' && id[23] == '-'
	if ok {
		b, err := hex.DecodeString(strings.ReplaceAll(id, "-", ""))
		ok = err == nil && len(b) == len(u)
		if ok {
			copy(u[:], b)
		}
	}
	if !ok {
		return u, provider.NewError(op, id, provider.NotFound, "libvirt: not a domain UUID")
	}
	return u, nil
}

func formatUUID(u golibvirt.UUID) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// domState is what one read of a domain yields.
type domState struct {
	power   provider.PowerState
	state   golibvirt.DomainState
	managed bool // shut off with a managed save image
}

func readState(c client, dom golibvirt.Domain) (domState, error) {
	st, _, err := c.DomainGetState(dom, 0)
	if err != nil {
		return domState{}, err
	}
	s := domState{state: golibvirt.DomainState(st)}
	switch s.state {
	case golibvirt.DomainRunning, golibvirt.DomainBlocked, golibvirt.DomainShutdown:
		s.power = provider.PowerOn
	case golibvirt.DomainPaused, golibvirt.DomainPmsuspended:
		s.power = provider.PowerSuspended
	case golibvirt.DomainShutoff, golibvirt.DomainCrashed:
		s.power = provider.PowerOff
		n, err := c.DomainHasManagedSaveImage(dom, 0)
		if err != nil {
			return domState{}, err
		}
		if n > 0 {
			s.managed = true
			s.power = provider.PowerSuspended
		}
	default:
		s.power = provider.PowerUnknown
	}
	return s, nil
}

// agentChannel is the virtio channel qemu-guest-agent talks over.
const agentChannel = "org.qemu.guest_agent.0"

// toolsState reads the guest agent state from the live domain XML: QEMU
// marks the agent channel's target state='connected' while the agent runs.
func toolsState(c client, dom golibvirt.Domain, power provider.PowerState) (provider.ToolsState, error) {
	x, err := c.DomainGetXMLDesc(dom, 0)
	if err != nil {
		return provider.ToolsUnknown, err
	}
	var doc struct {
		Channels []struct {
			Target struct {
				Name  string `xml:"name,attr"`
				State string `xml:"state,attr"`
			} `xml:"target"`
		} `xml:"devices>channel"`
	}
	if err := xml.Unmarshal([]byte(x), &doc); err != nil {
		return provider.ToolsUnknown, nil
	}
	for _, ch := range doc.Channels {
		if ch.Target.Name != agentChannel {
			continue
		}
		switch {
		case power != provider.PowerOn:
			return provider.ToolsNotRunning, nil
		case ch.Target.State == "connected":
			return provider.ToolsRunning, nil
		case ch.Target.State == "disconnected":
			return provider.ToolsNotRunning, nil
		default:
			return provider.ToolsUnknown, nil
		}
	}
	return provider.ToolsNotInstalled, nil
}

func (p *Provider) host() (id, uuid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hostID, p.hostUUID
}

func (p *Provider) guestOf(c client, dom golibvirt.Domain) (provider.Guest, domState, error) {
	s, err := readState(c, dom)
	if err != nil {
		return provider.Guest{}, s, err
	}
	tools, err := toolsState(c, dom, s.power)
	if err != nil {
		return provider.Guest{}, s, err
	}
	hostID, _ := p.host()
	id := formatUUID(dom.UUID)
	return provider.Guest{ID: id, Name: dom.Name, HostID: hostID, Power: s.power, Tools: tools, UUID: id}, s, nil
}

// Inventory lists the hypervisor and every defined domain.
func (p *Provider) Inventory(ctx context.Context) (provider.Inventory, error) {
	var inv provider.Inventory
	err := p.call(ctx, "Inventory", "", func(c client) error {
		doms, _, err := c.ConnectListAllDomains(1, 0)
		if err != nil {
			return err
		}
		guests := make([]provider.Guest, 0, len(doms))
		for _, d := range doms {
			g, _, err := p.guestOf(c, d)
			if libvirtCode(err) == golibvirt.ErrNoDomain {
				continue // undefined while we listed
			}
			if err != nil {
				return err
			}
			guests = append(guests, g)
		}
		slices.SortFunc(guests, func(a, b provider.Guest) int { return strings.Compare(a.ID, b.ID) })
		id, uuid := p.host()
		inv = provider.Inventory{
			Hosts:  []provider.Host{{ID: id, Name: id, Power: provider.PowerOn, UUID: uuid}},
			Guests: guests,
		}
		return nil
	})
	return inv, err
}

// withDomain looks the guest up and runs fn with it.
func (p *Provider) withDomain(ctx context.Context, op, id string, fn func(c client, dom golibvirt.Domain) error) error {
	u, err := parseID(op, id)
	if err != nil {
		return err
	}
	return p.call(ctx, op, id, func(c client) error {
		dom, err := c.DomainLookupByUUID(u)
		if err != nil {
			return err
		}
		return fn(c, dom)
	})
}

// Guest returns one domain's state.
func (p *Provider) Guest(ctx context.Context, id string) (provider.Guest, error) {
	var g provider.Guest
	err := p.withDomain(ctx, "Guest", id, func(c client, dom golibvirt.Domain) error {
		var err error
		g, _, err = p.guestOf(c, dom)
		return err
	})
	return g, err
}

// ShutdownGuest asks the guest OS to shut down (ACPI power button or guest
// agent, per Config.ShutdownMode). When the driver refuses the mode flag it
// falls back to libvirt's default shutdown method. With mode agent and the
// agent known not to run, or with the guest suspended, it answers
// Unsupported.
func (p *Provider) ShutdownGuest(ctx context.Context, id string) error {
	const op = "ShutdownGuest"
	return p.withDomain(ctx, op, id, func(c client, dom golibvirt.Domain) error {
		g, _, err := p.guestOf(c, dom)
		if err != nil {
			return err
		}
		switch g.Power {
		case provider.PowerOff:
			return nil
		case provider.PowerSuspended:
			return provider.NewError(op, id, provider.Unsupported, "libvirt: guest is suspended and cannot take a shutdown request")
		case provider.PowerUnknown:
			return provider.NewError(op, id, provider.Transient, "libvirt: guest state unknown")
		}
		flags := golibvirt.DomainShutdownAcpiPowerBtn
		if p.cfg.ShutdownMode == ShutdownAgent {
			if g.Tools == provider.ToolsNotRunning || g.Tools == provider.ToolsNotInstalled {
				return provider.NewError(op, id, provider.Unsupported, "libvirt: guest agent is "+string(g.Tools))
			}
			flags = golibvirt.DomainShutdownGuestAgent
		}
		err = c.DomainShutdownFlags(dom, flags)
		switch libvirtCode(err) {
		case golibvirt.ErrInvalidArg, golibvirt.ErrNoSupport, golibvirt.ErrArgumentUnsupported, golibvirt.ErrOperationUnsupported:
			slog.Debug("libvirt: shutdown mode refused by the driver; using its default method", "guest", id, "mode", p.cfg.ShutdownMode)
			err = c.DomainShutdown(dom)
		}
		if err != nil {
			// It may have gone off between the read and the request.
			if s2, serr := readState(c, dom); serr == nil && s2.power == provider.PowerOff {
				return nil
			}
		}
		return err
	})
}

// waitFor polls until the domain reaches want.
func (p *Provider) waitFor(ctx context.Context, op, id string, want provider.PowerState) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		var got provider.PowerState
		err := p.withDomain(ctx, op, id, func(c client, dom golibvirt.Domain) error {
			s, err := readState(c, dom)
			got = s.power
			return err
		})
		if err != nil {
			return err
		}
		if got == want {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return &provider.Error{Op: op, Target: id, Class: provider.Transient,
				Err: fmt.Errorf("guest is %s, waiting for %s: %w", got, want, ctx.Err())}
		}
	}
}

// change reads the domain's state and, unless it already is want, runs act
// and waits until the domain reports want. A request libvirt refuses as
// invalid because the domain got there meanwhile counts as success.
func (p *Provider) change(ctx context.Context, op, id string, want provider.PowerState, act func(c client, dom golibvirt.Domain, s domState) error) error {
	err := p.withDomain(ctx, op, id, func(c client, dom golibvirt.Domain) error {
		s, err := readState(c, dom)
		if err != nil {
			return err
		}
		if s.power == want {
			return nil
		}
		err = act(c, dom, s)
		if err != nil && libvirtCode(err) == golibvirt.ErrOperationInvalid {
			if s2, serr := readState(c, dom); serr == nil && s2.power == want {
				return nil
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	return p.waitFor(ctx, op, id, want)
}

// SuspendGuest saves the guest's memory to disk with managed save; starting
// the domain restores it. An off or already suspended guest → nil.
func (p *Provider) SuspendGuest(ctx context.Context, id string) error {
	const op = "SuspendGuest"
	var wasOff bool
	err := p.withDomain(ctx, op, id, func(c client, dom golibvirt.Domain) error {
		s, err := readState(c, dom)
		wasOff = s.power == provider.PowerOff
		return err
	})
	if err != nil || wasOff {
		return err
	}
	return p.change(ctx, op, id, provider.PowerSuspended, func(c client, dom golibvirt.Domain, s domState) error {
		if s.power == provider.PowerOff {
			return nil // went off meanwhile: stays off
		}
		return c.DomainManagedSave(dom, 0)
	})
}

// PowerOffGuest destroys the domain (hard power off). A managed-saved
// guest has its save image discarded, which leaves it off.
func (p *Provider) PowerOffGuest(ctx context.Context, id string) error {
	return p.change(ctx, "PowerOffGuest", id, provider.PowerOff, func(c client, dom golibvirt.Domain, s domState) error {
		if s.managed {
			return c.DomainManagedSaveRemove(dom, 0)
		}
		return c.DomainDestroy(dom)
	})
}

// PowerOnGuest starts the domain (restoring a managed save), resumes a
// paused one or wakes a PM-suspended one, and waits until it runs.
func (p *Provider) PowerOnGuest(ctx context.Context, id string) error {
	return p.change(ctx, "PowerOnGuest", id, provider.PowerOn, func(c client, dom golibvirt.Domain, s domState) error {
		switch s.state {
		case golibvirt.DomainPaused:
			return c.DomainResume(dom)
		case golibvirt.DomainPmsuspended:
			return c.DomainPmWakeup(dom, 0)
		}
		return c.DomainCreate(dom)
	})
}

// WaitGuest polls the domain until it reaches want or ctx ends.
func (p *Provider) WaitGuest(ctx context.Context, id string, want provider.PowerState) error {
	const op = "WaitGuest"
	switch want {
	case provider.PowerOn, provider.PowerOff, provider.PowerSuspended:
	default:
		return provider.NewError(op, id, provider.Permanent, fmt.Sprintf("libvirt: cannot wait for power state %q", want))
	}
	return p.waitFor(ctx, op, id, want)
}

// EnterMaintenance is not offered by libvirt: Unsupported.
func (p *Provider) EnterMaintenance(ctx context.Context, hostID string, opts provider.MaintenanceOptions) error {
	return provider.NewError("EnterMaintenance", hostID, provider.Unsupported, "libvirt: no maintenance mode")
}

// ExitMaintenance is not offered by libvirt: Unsupported.
func (p *Provider) ExitMaintenance(ctx context.Context, hostID string) error {
	return provider.NewError("ExitMaintenance", hostID, provider.Unsupported, "libvirt: no maintenance mode")
}

// ShutdownHost is Unsupported: shut a libvirt host down with the ssh
// provider.
func (p *Provider) ShutdownHost(ctx context.Context, hostID string, force bool) error {
	return provider.NewError("ShutdownHost", hostID, provider.Unsupported, "libvirt: host shutdown goes through the ssh provider")
}

// Close disconnects and waits for calls still running. Idempotent.
func (p *Provider) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	lv := p.lv
	p.mu.Unlock()
	if lv != nil && lv.IsConnected() {
		if err := lv.Disconnect(); err != nil {
			slog.Debug("libvirt: disconnect", "err", err)
		}
	}
	p.wg.Wait()
	return nil
}
