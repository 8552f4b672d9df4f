package libvirt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/sundown-ups/sundown/internal/peer/libvirtd"
	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/providertest"
)

const (
	uuidWeb    = "11111111-1111-4111-8111-111111111111" // running, agent connected
	uuidDB     = "22222222-2222-4222-8222-222222222222" // off
	uuidLegacy = "33333333-3333-4333-8333-333333333333" // running, agent disconnected
	uuidDeaf   = "44444444-4444-4444-8444-444444444444" // running, agent connected, ignores shutdown
	uuidNone   = "99999999-9999-4999-8999-999999999999" // not defined
)

func fleet() []libvirtd.Domain {
	return []libvirtd.Domain{
		{Name: "web", UUID: uuidWeb},
		{Name: "db", UUID: uuidDB, Off: true},
		{Name: "legacy", UUID: uuidLegacy},
		{Name: "deaf", UUID: uuidDeaf},
	}
}

// guestModel sits above the real go-libvirt connection and models what the
// libvirt test driver cannot: the qemu-guest-agent channel state in the
// live XML, a guest that accepts a shutdown request and ignores it, and a
// one-shot ACL denial of destroy. Every other call reaches libvirtd.
type guestModel struct {
	client
	agent map[string]string // uuid → "connected" | "disconnected"
	deaf  map[string]bool

	mu   sync.Mutex
	deny map[string]bool // uuid → next DomainDestroy is denied
}

func (m *guestModel) DomainGetXMLDesc(dom golibvirt.Domain, flags golibvirt.DomainXMLFlags) (string, error) {
	x, err := m.client.DomainGetXMLDesc(dom, flags)
	if err != nil {
		return x, err
	}
	if st, ok := m.agent[formatUUID(dom.UUID)]; ok {
		ch := "<channel type='unix'><target type='virtio' name='" + agentChannel + "' state='" + st + "'/></channel></devices>"
		x = strings.Replace(x, "</devices>", ch, 1)
	}
	return x, nil
}

func (m *guestModel) DomainShutdownFlags(dom golibvirt.Domain, flags golibvirt.DomainShutdownFlagValues) error {
	if m.deaf[formatUUID(dom.UUID)] {
		return nil
	}
	return m.client.DomainShutdownFlags(dom, flags)
}

func (m *guestModel) DomainShutdown(dom golibvirt.Domain) error {
	if m.deaf[formatUUID(dom.UUID)] {
		return nil
	}
	return m.client.DomainShutdown(dom)
}

func (m *guestModel) DomainDestroy(dom golibvirt.Domain) error {
	id := formatUUID(dom.UUID)
	m.mu.Lock()
	denied := m.deny[id]
	delete(m.deny, id)
	m.mu.Unlock()
	if denied {
		return golibvirt.Error{Code: uint32(golibvirt.ErrAccessDenied), Message: "access denied: 'domain' stop (modelled)"}
	}
	return m.client.DomainDestroy(dom)
}

// nodeURI writes the fleet into a fresh folder under the server's short
// dir and returns its URI. The test driver parses a custom node file per
// connection, so every provider gets a fresh fleet.
func nodeURI(t *testing.T, srv *libvirtd.Server, n *int) string {
	t.Helper()
	*n++
	dir := filepath.Join(srv.Dir(), fmt.Sprintf("n%d", *n))
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path, err := libvirtd.WriteNode(dir, fleet())
	if err != nil {
		t.Fatal(err)
	}
	return srv.NodeURI(path)
}

func TestConformance(t *testing.T) {
	srv := libvirtd.Start(t)
	var n int
	providertest.Run(t, providertest.Harness{
		Timeout: 5 * time.Second,
		New: func(t *testing.T) (provider.Provider, providertest.Fixture) {
			uri := nodeURI(t, srv, &n)
			m := &guestModel{
				agent: map[string]string{uuidWeb: "connected", uuidLegacy: "disconnected", uuidDeaf: "connected"},
				deaf:  map[string]bool{uuidDeaf: true},
				deny:  map[string]bool{},
			}
			p, err := newProvider(t.Context(), Config{URI: uri, ShutdownMode: ShutdownAgent, HostName: "hv1"},
				func(c client) client { m.client = c; return m })
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			return p, providertest.Fixture{
				Running: uuidWeb, Off: uuidDB, NoTools: uuidLegacy, Deaf: uuidDeaf, Host: "hv1",
				DenyPowerOff: func(t *testing.T, id string) string {
					m.mu.Lock()
					m.deny[id] = true
					m.mu.Unlock()
					return "org.libvirt.api.domain.stop"
				},
			}
		},
	})
}

// open connects the public New (no model in between) to a fresh fleet.
func open(t *testing.T, srv *libvirtd.Server, n *int, mode string) *Provider {
	t.Helper()
	p, err := New(t.Context(), Config{URI: nodeURI(t, srv, n), ShutdownMode: mode})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func wantPower(t *testing.T, p *Provider, id string, want provider.PowerState) {
	t.Helper()
	g, err := p.Guest(t.Context(), id)
	if err != nil {
		t.Fatalf("Guest(%s): %v", id, err)
	}
	if g.Power != want {
		t.Fatalf("guest %s (%s) is %s, want %s", g.Name, id, g.Power, want)
	}
}

func ok(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TestNamedDomains drives the real test driver with no model in between:
// shutdown (the driver refuses the ACPI flag, so the provider falls back to
// plain DomainShutdown), destroy, managed save and start.
func TestNamedDomains(t *testing.T) {
	srv := libvirtd.Start(t)
	var n int
	p := open(t, srv, &n, "")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	inv, err := p.Inventory(ctx)
	ok(t, "Inventory", err)
	if len(inv.Hosts) != 1 || inv.Hosts[0].ID == "" || inv.Hosts[0].Power != provider.PowerOn {
		t.Fatalf("hosts = %+v, want one hypervisor that is on", inv.Hosts)
	}
	names := map[string]provider.Guest{}
	for _, g := range inv.Guests {
		names[g.Name] = g
	}
	for name, want := range map[string]provider.PowerState{"web": provider.PowerOn, "db": provider.PowerOff, "legacy": provider.PowerOn, "deaf": provider.PowerOn} {
		g, found := names[name]
		if !found {
			t.Fatalf("domain %s missing from %+v", name, inv.Guests)
		}
		if g.Power != want || g.HostID != inv.Hosts[0].ID {
			t.Errorf("domain %s: power %s host %q, want %s on %q", name, g.Power, g.HostID, want, inv.Hosts[0].ID)
		}
		// The test driver's domains have no agent channel.
		if g.Tools != provider.ToolsNotInstalled && g.Tools != provider.ToolsNotRunning {
			t.Errorf("domain %s tools %s, want not-installed/not-running", name, g.Tools)
		}
	}
	if names["web"].ID != uuidWeb || names["web"].UUID != uuidWeb {
		t.Errorf("web ID/UUID = %q/%q, want %q", names["web"].ID, names["web"].UUID, uuidWeb)
	}

	// Shutdown (acpi mode → fallback) reaches off; again is a no-op.
	ok(t, "ShutdownGuest(web)", p.ShutdownGuest(ctx, uuidWeb))
	ok(t, "WaitGuest(web, off)", p.WaitGuest(ctx, uuidWeb, provider.PowerOff))
	ok(t, "ShutdownGuest(web) again", p.ShutdownGuest(ctx, uuidWeb))

	// Start, managed save, restore by starting.
	ok(t, "PowerOnGuest(db)", p.PowerOnGuest(ctx, uuidDB))
	wantPower(t, p, uuidDB, provider.PowerOn)
	ok(t, "SuspendGuest(db)", p.SuspendGuest(ctx, uuidDB))
	wantPower(t, p, uuidDB, provider.PowerSuspended)
	ok(t, "PowerOnGuest(db) restores the managed save", p.PowerOnGuest(ctx, uuidDB))
	wantPower(t, p, uuidDB, provider.PowerOn)

	// Destroy, twice.
	ok(t, "PowerOffGuest(legacy)", p.PowerOffGuest(ctx, uuidLegacy))
	wantPower(t, p, uuidLegacy, provider.PowerOff)
	ok(t, "PowerOffGuest(legacy) again", p.PowerOffGuest(ctx, uuidLegacy))

	// A managed-saved guest powered off loses its save image and is off.
	ok(t, "SuspendGuest(deaf)", p.SuspendGuest(ctx, uuidDeaf))
	ok(t, "PowerOffGuest(deaf, saved)", p.PowerOffGuest(ctx, uuidDeaf))
	wantPower(t, p, uuidDeaf, provider.PowerOff)
}

// TestAgentModeWithoutAgent: in agent mode a domain without an agent
// channel answers Unsupported (no model: the real driver's XML has none).
func TestAgentModeWithoutAgent(t *testing.T) {
	srv := libvirtd.Start(t)
	var n int
	p := open(t, srv, &n, ShutdownAgent)
	err := p.ShutdownGuest(t.Context(), uuidWeb)
	if provider.ClassOf(err) != provider.Unsupported {
		t.Fatalf("ShutdownGuest in agent mode without an agent: %v, want class unsupported", err)
	}
	wantPower(t, p, uuidWeb, provider.PowerOn)
}

// TestUnknownUUID: a well-formed UUID libvirtd does not know comes back as
// VIR_ERR_NO_DOMAIN, mapped to NotFound.
func TestUnknownUUID(t *testing.T) {
	srv := libvirtd.Start(t)
	var n int
	p := open(t, srv, &n, "")
	_, err := p.Guest(t.Context(), uuidNone)
	var e *provider.Error
	if !errors.As(err, &e) || e.Class != provider.NotFound || e.Target != uuidNone {
		t.Fatalf("Guest(unknown): %v, want not-found for %s", err, uuidNone)
	}
	if libvirtCode(err) != golibvirt.ErrNoDomain {
		t.Errorf("error %v does not carry VIR_ERR_NO_DOMAIN from libvirtd", err)
	}
	if c := provider.ClassOf(p.PowerOffGuest(t.Context(), uuidNone)); c != provider.NotFound {
		t.Errorf("PowerOffGuest(unknown) class %s", c)
	}
}

// TestDefaultDriver: the stock test:///default inventory over the socket.
func TestDefaultDriver(t *testing.T) {
	srv := libvirtd.Start(t)
	p, err := New(t.Context(), Config{URI: srv.URI()})
	ok(t, "New", err)
	defer p.Close()
	inv, err := p.Inventory(t.Context())
	ok(t, "Inventory", err)
	if len(inv.Guests) != 1 || inv.Guests[0].Name != "test" || inv.Guests[0].Power != provider.PowerOn {
		t.Fatalf("default inventory guests = %+v, want the one running domain \"test\"", inv.Guests)
	}
}

// TestLibvirtdKilled: once libvirtd dies, calls fail Unreachable, and a new
// provider cannot connect (Unreachable too).
func TestLibvirtdKilled(t *testing.T) {
	srv := libvirtd.Start(t)
	var n int
	p := open(t, srv, &n, "")
	uri := nodeURI(t, srv, &n)
	ok(t, "Guest before kill", func() error { _, err := p.Guest(t.Context(), uuidWeb); return err }())
	srv.Kill()

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := p.Inventory(ctx)
	if c := provider.ClassOf(err); c != provider.Unreachable {
		t.Fatalf("Inventory after libvirtd died: %v (class %s), want unreachable", err, c)
	}
	if c := provider.ClassOf(p.PowerOffGuest(ctx, uuidWeb)); c != provider.Unreachable {
		t.Errorf("PowerOffGuest after libvirtd died: class %s, want unreachable", c)
	}
	_, err = New(ctx, Config{URI: uri})
	if c := provider.ClassOf(err); c != provider.Unreachable {
		t.Errorf("New against a dead libvirtd: %v (class %s), want unreachable", err, c)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{URI: ""},
		{URI: "not a uri"},
		{URI: "qemu:///system", ShutdownMode: "reboot"},
		{URI: "qemu+ext:///system"},
	} {
		_, err := New(t.Context(), cfg)
		if c := provider.ClassOf(err); c != provider.Permanent {
			t.Errorf("New(%+v): %v (class %s), want permanent", cfg, err, c)
		}
	}
}

func TestClassify(t *testing.T) {
	le := func(code golibvirt.ErrorNumber) error {
		return golibvirt.Error{Code: uint32(code), Message: "m"}
	}
	for _, tt := range []struct {
		err  error
		want provider.Class
	}{
		{le(golibvirt.ErrNoDomain), provider.NotFound},
		{le(golibvirt.ErrAccessDenied), provider.Permission},
		{le(golibvirt.ErrAuthFailed), provider.Auth},
		{le(golibvirt.ErrAuthUnavailable), provider.Auth},
		{le(golibvirt.ErrOperationUnsupported), provider.Unsupported},
		{le(golibvirt.ErrAgentUnresponsive), provider.Unsupported},
		{le(golibvirt.ErrOperationTimeout), provider.Transient},
		{le(golibvirt.ErrOperationInvalid), provider.Permanent},
		{le(golibvirt.ErrRPC), provider.Unreachable},
		{context.DeadlineExceeded, provider.Transient},
		{errors.New("odd"), provider.Permanent},
	} {
		if got := classify(tt.err); got != tt.want {
			t.Errorf("classify(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
}

func TestParseID(t *testing.T) {
	u, err := parseID("Guest", uuidWeb)
	if err != nil || formatUUID(u) != uuidWeb {
		t.Fatalf("parseID(%s) = %v, %v", uuidWeb, formatUUID(u), err)
	}
	for _, bad := range []string{"", "web", "11111111111141118111111111111111", "zz111111-1111-4111-8111-111111111111", uuidWeb + "0"} {
		if _, err := parseID("Guest", bad); provider.ClassOf(err) != provider.NotFound {
			t.Errorf("parseID(%q): %v, want not-found", bad, err)
		}
	}
}

// hangingState blocks DomainGetState until release is closed, like a
// libvirtd that stopped answering.
type hangingState struct {
	client
	release chan struct{}
}

func (h *hangingState) DomainGetState(dom golibvirt.Domain, flags uint32) (int32, int32, error) {
	<-h.release
	return h.client.DomainGetState(dom, flags)
}

// TestContextEndsHungCall: go-libvirt takes no context, yet a call stuck in
// libvirtd returns when ctx ends (Transient, wrapping ctx.Err()), and Close
// waits for the abandoned call.
func TestContextEndsHungCall(t *testing.T) {
	srv := libvirtd.Start(t)
	var n int
	h := &hangingState{release: make(chan struct{})}
	p, err := newProvider(t.Context(), Config{URI: nodeURI(t, srv, &n)}, func(c client) client { h.client = c; return h })
	ok(t, "New", err)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = p.Guest(ctx, uuidWeb)
	if provider.ClassOf(err) != provider.Transient || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Guest with a hung libvirtd: %v, want transient wrapping DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Guest returned after %v, want about 100ms", took)
	}
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned while an abandoned call was still running")
	case <-time.After(50 * time.Millisecond):
	}
	close(h.release)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
}
