// Package providertest is the conformance suite every provider.Provider, fake
// or real, must pass. A backend's test builds a Harness that starts a fresh
// fleet (a simulator, a test driver, a fake server) and calls Run.
//
// Subtests that need an optional provider capability are skipped only when
// the provider declares it lacks that capability (provider.Capable), and then
// the suite first checks that the method really answers Unsupported.
// Subtests that need a fixture the harness cannot model (a guest that ignores
// shutdown, a permission denial) are skipped with that reason.
package providertest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sundown-ups/sundown/internal/provider"
)

// Fixture names the parts of the fleet a Harness built.
type Fixture struct {
	// Running is a guest that is on, whose tools run, and that reaches off
	// after ShutdownGuest within Harness.Timeout. It runs on Host.
	Running string
	// Off is a guest that is off.
	Off string
	// NoTools is a guest that is on and whose guest agent is not running.
	NoTools string
	// Deaf is a guest that is on with tools running, accepts ShutdownGuest
	// and then stays on. "" when the backend cannot model it.
	Deaf string
	// Host is a host that is on, not in maintenance mode, and carries
	// Running.
	Host string
	// DenyPowerOff arranges that the next PowerOffGuest of the guest id
	// fails because the account lacks a privilege, and returns the name of
	// that privilege as the provider must report it in Error.Privilege.
	// Only that one call fails. nil when the backend cannot model it.
	DenyPowerOff func(t *testing.T, id string) (privilege string)
	// NoGuests says the backend has no guests at all (a plain host shut
	// down over SSH, the local machine). Running, Off and NoTools stay
	// empty; the guest subtests check that guest calls answer NotFound
	// and the inventory lists no guests, then skip.
	NoGuests bool
}

// Harness lets Run build providers.
type Harness struct {
	// New returns a new provider over a new fleet that matches the
	// returned Fixture. It registers its own cleanups with t.Cleanup; the
	// suite closes the provider.
	New func(t *testing.T) (provider.Provider, Fixture)
	// Timeout bounds a graceful guest shutdown and a host shutdown.
	// Default 30 s.
	Timeout time.Duration
}

// unknownID is an ID no backend gives out.
const unknownID = "sundown-conformance-no-such-id"

// Run runs the conformance suite as subtests of t. Each subtest builds its
// own provider and fleet; subtests do not run in parallel.
func Run(t *testing.T, h Harness) {
	if h.New == nil {
		t.Fatal("providertest: Harness.New is nil")
	}
	if h.Timeout <= 0 {
		h.Timeout = 30 * time.Second
	}
	s := &suite{h: h}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"Inventory", s.inventory},
		{"ShutdownGuest/Running", s.shutdownRunning},
		{"ShutdownGuest/AlreadyOff", s.shutdownOff},
		{"ShutdownGuest/ToolsNotRunning", s.shutdownNoTools},
		{"PowerOffGuest/Idempotent", s.powerOffIdempotent},
		{"PowerOnGuest/Idempotent", s.powerOnIdempotent},
		{"SuspendGuest", s.suspend},
		{"NotFound", s.notFound},
		{"WaitGuest/Deadline", s.waitDeadline},
		{"WaitGuest/Arguments", s.waitArguments},
		{"Maintenance", s.maintenance},
		{"ShutdownHost", s.shutdownHost},
		{"Permission", s.permission},
		{"Concurrent", s.concurrent},
		{"Close", s.close},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.fn)
	}
}

type suite struct {
	h Harness
}

// open builds a provider and closes it when the subtest ends.
func (s *suite) open(t *testing.T) (provider.Provider, Fixture) {
	t.Helper()
	p, f := s.h.New(t)
	if p == nil {
		t.Fatal("Harness.New returned a nil provider")
	}
	for name, id := range map[string]string{"Running": f.Running, "Off": f.Off, "NoTools": f.NoTools, "Host": f.Host} {
		if id == "" && (name == "Host" || !f.NoGuests) {
			t.Fatalf("Harness.New returned a Fixture without %s", name)
		}
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p, f
}

// ctx returns a context bounded by the harness timeout plus slack.
func (s *suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*s.h.Timeout)
	t.Cleanup(cancel)
	return ctx
}

func mustGuest(t *testing.T, ctx context.Context, p provider.Provider, id string) provider.Guest {
	t.Helper()
	g, err := p.Guest(ctx, id)
	if err != nil {
		t.Fatalf("Guest(%s): %v", id, err)
	}
	if g.ID != id {
		t.Fatalf("Guest(%s).ID = %q", id, g.ID)
	}
	return g
}

func wantPower(t *testing.T, ctx context.Context, p provider.Provider, id string, want provider.PowerState) {
	t.Helper()
	if got := mustGuest(t, ctx, p, id).Power; got != want {
		t.Fatalf("guest %s power = %q, want %q", id, got, want)
	}
}

func mustOK(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v (class %s)", what, err, provider.ClassOf(err))
	}
}

// wantClass checks that err is an *Error of class want with the given target.
func wantClass(t *testing.T, what string, err error, want provider.Class, target string) *provider.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got nil error, want class %s", what, want)
	}
	var e *provider.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: error %v (%T) is not a *provider.Error", what, err, err)
	}
	if e.Class != want {
		t.Fatalf("%s: class %s, want %s (error: %v)", what, e.Class, want, err)
	}
	if e.Op == "" {
		t.Errorf("%s: Error.Op is empty", what)
	}
	if target != "" && e.Target != target {
		t.Errorf("%s: Error.Target = %q, want %q", what, e.Target, target)
	}
	return e
}

func guestsOn(t *testing.T, ctx context.Context, p provider.Provider, hostID string) []string {
	t.Helper()
	inv, err := p.Inventory(ctx)
	mustOK(t, "Inventory", err)
	var ids []string
	for _, g := range inv.Guests {
		if g.HostID == hostID && g.Power != provider.PowerOff {
			ids = append(ids, g.ID)
		}
	}
	return ids
}

func findHost(inv provider.Inventory, id string) (provider.Host, bool) {
	for _, h := range inv.Hosts {
		if h.ID == id {
			return h, true
		}
	}
	return provider.Host{}, false
}

func (s *suite) inventory(t *testing.T) {
	p, f := s.open(t)
	ctx := s.ctx(t)
	inv, err := p.Inventory(ctx)
	mustOK(t, "Inventory", err)

	if !slices.IsSortedFunc(inv.Guests, func(a, b provider.Guest) int { return strings.Compare(a.ID, b.ID) }) {
		t.Errorf("guests not sorted by ID: %v", guestIDs(inv.Guests))
	}
	if !slices.IsSortedFunc(inv.Hosts, func(a, b provider.Host) int { return strings.Compare(a.ID, b.ID) }) {
		t.Errorf("hosts not sorted by ID")
	}
	hosts := map[string]bool{}
	for _, h := range inv.Hosts {
		if h.ID == "" || hosts[h.ID] {
			t.Errorf("host ID %q empty or duplicated", h.ID)
		}
		hosts[h.ID] = true
		if !h.Power.Valid() {
			t.Errorf("host %s power %q invalid", h.ID, h.Power)
		}
		if h.UUID != strings.ToLower(h.UUID) {
			t.Errorf("host %s UUID %q not lower-case", h.ID, h.UUID)
		}
	}
	guests := map[string]provider.Guest{}
	for _, g := range inv.Guests {
		if _, dup := guests[g.ID]; g.ID == "" || dup {
			t.Errorf("guest ID %q empty or duplicated", g.ID)
		}
		guests[g.ID] = g
		if !g.Power.Valid() {
			t.Errorf("guest %s power %q invalid", g.ID, g.Power)
		}
		switch g.Tools {
		case provider.ToolsRunning, provider.ToolsNotRunning, provider.ToolsNotInstalled, provider.ToolsUnknown:
		default:
			t.Errorf("guest %s tools %q invalid", g.ID, g.Tools)
		}
		if g.UUID != strings.ToLower(g.UUID) {
			t.Errorf("guest %s UUID %q not lower-case", g.ID, g.UUID)
		}
		if g.HostID != "" && !hosts[g.HostID] {
			t.Errorf("guest %s runs on host %q, which is not in the inventory", g.ID, g.HostID)
		}
	}

	check := func(role, id string, power provider.PowerState, tools ...provider.ToolsState) {
		t.Helper()
		g, ok := guests[id]
		if !ok {
			t.Errorf("%s guest %s missing from inventory", role, id)
			return
		}
		if g.Power != power {
			t.Errorf("%s guest %s power %q, want %q", role, id, g.Power, power)
		}
		if !slices.Contains(tools, g.Tools) {
			t.Errorf("%s guest %s tools %q, want one of %v", role, id, g.Tools, tools)
		}
	}
	if f.NoGuests {
		if len(inv.Guests) != 0 {
			t.Errorf("Fixture.NoGuests but the inventory lists guests %v", guestIDs(inv.Guests))
		}
		if h, ok := findHost(inv, f.Host); !ok || h.Power != provider.PowerOn || h.Maintenance {
			t.Errorf("host %s: %+v (found %v), want on and not in maintenance", f.Host, h, ok)
		}
		again, err := p.Inventory(ctx)
		mustOK(t, "second Inventory", err)
		if d := cmp.Diff(inv, again); d != "" {
			t.Errorf("Inventory not stable (-first +second):\n%s", d)
		}
		return
	}
	check("Running", f.Running, provider.PowerOn, provider.ToolsRunning)
	check("Off", f.Off, provider.PowerOff, provider.ToolsNotRunning, provider.ToolsNotInstalled, provider.ToolsUnknown)
	check("NoTools", f.NoTools, provider.PowerOn, provider.ToolsNotRunning, provider.ToolsNotInstalled)
	if f.Deaf != "" {
		check("Deaf", f.Deaf, provider.PowerOn, provider.ToolsRunning)
	}
	if h, ok := findHost(inv, f.Host); !ok {
		t.Errorf("host %s missing from inventory", f.Host)
	} else if h.Power != provider.PowerOn || h.Maintenance {
		t.Errorf("host %s: power %q maintenance %v, want on and not in maintenance", f.Host, h.Power, h.Maintenance)
	}
	if g := guests[f.Running]; g.HostID != f.Host {
		t.Errorf("Running guest %s on host %q, want %q", f.Running, g.HostID, f.Host)
	}

	// Guest agrees with Inventory, and a second Inventory is identical.
	for _, id := range []string{f.Running, f.Off, f.NoTools} {
		g := mustGuest(t, ctx, p, id)
		if d := cmp.Diff(guests[id], g); d != "" {
			t.Errorf("Guest(%s) differs from its Inventory entry (-inventory +guest):\n%s", id, d)
		}
	}
	again, err := p.Inventory(ctx)
	mustOK(t, "second Inventory", err)
	if d := cmp.Diff(inv, again); d != "" {
		t.Errorf("Inventory not stable over an unchanged fleet (-first +second):\n%s", d)
	}
}

func guestIDs(gs []provider.Guest) []string {
	ids := make([]string, len(gs))
	for i, g := range gs {
		ids[i] = g.ID
	}
	return ids
}

func (s *suite) shutdownRunning(t *testing.T) {
	p, f := s.open(t)
	ctx := s.ctx(t)
	if f.NoGuests {
		noGuests(t, ctx, p)
	}
	mustOK(t, "ShutdownGuest", p.ShutdownGuest(ctx, f.Running))
	wctx, cancel := context.WithTimeout(ctx, s.h.Timeout)
	defer cancel()
	mustOK(t, "WaitGuest off after ShutdownGuest", p.WaitGuest(wctx, f.Running, provider.PowerOff))
	wantPower(t, ctx, p, f.Running, provider.PowerOff)
	// Asking again once it is off is not an error.
	mustOK(t, "ShutdownGuest of the now-off guest", p.ShutdownGuest(ctx, f.Running))
}

func (s *suite) shutdownOff(t *testing.T) {
	p, f := s.open(t)
	ctx := s.ctx(t)
	if f.NoGuests {
		noGuests(t, ctx, p)
	}
	mustOK(t, "ShutdownGuest(Off)", p.ShutdownGuest(ctx, f.Off))
	mustOK(t, "ShutdownGuest(Off) again", p.ShutdownGuest(ctx, f.Off))
	wantPower(t, ctx, p, f.Off, provider.PowerOff)
}

func (s *suite) shutdownNoTools(t *testing.T) {
	p, f := s.open(t)
	ctx := s.ctx(t)
	if f.NoGuests {
		noGuests(t, ctx, p)
	}
	wantClass(t, "ShutdownGuest(NoTools)", p.ShutdownGuest(ctx, f.NoTools), provider.Unsupported, f.NoTools)
	wantPower(t, ctx, p, f.NoTools, provider.PowerOn)
	// The executor's escalation: a hard power off works.
	mustOK(t, "PowerOffGuest(NoTools)", p.PowerOffGuest(ctx, f.NoTools))
	wantPower(t, ctx, p, f.NoTools, provider.PowerOff)
}

func (s *suite) powerOffIdempotent(t *testing.T) {
	p, f := s.open(t)
	ctx := s.ctx(t)
	if f.NoGuests {
		noGuests(t, ctx, p)
	}
	mustOK(t, "PowerOffGuest(Running)", p.PowerOffGuest(ctx, f.Running))
	// PowerOffGuest waits: the guest is off when it returns.
	wantPower(t, ctx, p, f.Running, provider.PowerOff)
	mustOK(t, "PowerOffGuest(Running) again", p.PowerOffGuest(ctx, f.Running))
	mustOK(t, "PowerOffGuest(Off)", p.PowerOffGuest(ctx, f.Off))
	wantPower(t, ctx, p, f.Off, provider.PowerOff)
}

func (s *suite) powerOnIdempotent(t *testing.T) {
	p, f := s.open(t)
	ctx := s.ctx(t)
	if f.NoGuests {
		noGuests(t, ctx, p)
	}
	mustOK(t, "PowerOnGuest(Off)", p.PowerOnGuest(ctx, f.Off))
	wantPower(t, ctx, p, f.Off, provider.PowerOn)
	mustOK(t, "PowerOnGuest(Off) again", p.PowerOnGuest(ctx, f.Off))
	mustOK(t, "PowerOnGuest(Running)", p.PowerOnGuest(ctx, f.Running))
	wantPower(t, ctx, p, f.Running, provider.PowerOn)
}

func (s *suite) suspend(t *testing.T) {
	p, f := s.open(t)
	ctx := s.ctx(t)
	if f.NoGuests {
		noGuests(t, ctx, p)
	}
	if !provider.CapabilitiesOf(p).Suspend {
		wantClass(t, "SuspendGuest without the Suspend capability", p.SuspendGuest(ctx, f.Running), provider.Unsupported, f.Running)
		t.Skip("provider declares no Suspend capability; SuspendGuest answered Unsupported")
	}
	mustOK(t, "SuspendGuest(Running)", p.SuspendGuest(ctx, f.Running))
	wantPower(t, ctx, p, f.Running, provider.PowerSuspended)
	mustOK(t, "SuspendGuest(Running) again", p.SuspendGuest(ctx, f.Running))
	wantPower(t, ctx, p, f.Running, provider.PowerSuspended)

	// A suspended guest cannot take a graceful shutdown: escalate at once.
	wantClass(t, "ShutdownGuest of a suspended guest", p.ShutdownGuest(ctx, f.Running), provider.Unsupported, f.Running)

	mustOK(t, "PowerOnGuest of the suspended guest", p.PowerOnGuest(ctx, f.Running))
	wantPower(t, ctx, p, f.Running, provider.PowerOn)

	// Suspended → hard off works too.
	mustOK(t, "SuspendGuest(Running) once more", p.SuspendGuest(ctx, f.Running))
	mustOK(t, "PowerOffGuest of the suspended guest", p.PowerOffGuest(ctx, f.Running))
	wantPower(t, ctx, p, f.Running, provider.PowerOff)

	// An off guest stays off.
	mustOK(t, "SuspendGuest(Off)", p.SuspendGuest(ctx, f.Off))
	wantPower(t, ctx, p, f.Off, provider.PowerOff)
}

func (s *suite) notFound(t *testing.T) {
	p, _ := s.open(t)
	ctx := s.ctx(t)
	caps := provider.CapabilitiesOf(p)
	id := unknownID
	_, err := p.Guest(ctx, id)
	wantClass(t, "Guest(unknown)", err, provider.NotFound, id)
	wantClass(t, "ShutdownGuest(unknown)", p.ShutdownGuest(ctx, id), provider.NotFound, id)
	wantClass(t, "PowerOffGuest(unknown)", p.PowerOffGuest(ctx, id), provider.NotFound, id)
	wantClass(t, "PowerOnGuest(unknown)", p.PowerOnGuest(ctx, id), provider.NotFound, id)
	if caps.Suspend {
		wantClass(t, "SuspendGuest(unknown)", p.SuspendGuest(ctx, id), provider.NotFound, id)
	}
	// WaitGuest must report the unknown ID, not wait for the deadline.
	wctx, cancel := context.WithTimeout(ctx, s.h.Timeout)
	defer cancel()
	wantClass(t, "WaitGuest(unknown)", p.WaitGuest(wctx, id, provider.PowerOff), provider.NotFound, id)
	if wctx.Err() != nil {
		t.Errorf("WaitGuest(unknown) waited for its deadline instead of failing")
	}
	if caps.Maintenance {
		wantClass(t, "EnterMaintenance(unknown)", p.EnterMaintenance(ctx, id, provider.MaintenanceOptions{}), provider.NotFound, id)
		wantClass(t, "ExitMaintenance(unknown)", p.ExitMaintenance(ctx, id), provider.NotFound, id)
	}
	if caps.HostShutdown {
		wantClass(t, "ShutdownHost(unknown)", p.ShutdownHost(ctx, id, false), provider.NotFound, id)
	}
}

func (s *suite) waitDeadline(t *testing.T) {
	p, f := s.open(t)
	if f.Deaf == "" {
		t.Skip("harness cannot model a guest that ignores shutdown requests")
	}
	ctx := s.ctx(t)
	mustOK(t, "ShutdownGuest(Deaf)", p.ShutdownGuest(ctx, f.Deaf))

	const budget = 300 * time.Millisecond
	wctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	start := time.Now()
	err := p.WaitGuest(wctx, f.Deaf, provider.PowerOff)
	took := time.Since(start)
	wantClass(t, "WaitGuest(Deaf) past its deadline", err, provider.Transient, f.Deaf)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitGuest error %v does not wrap context.DeadlineExceeded", err)
	}
	if took > budget+2*time.Second {
		t.Errorf("WaitGuest returned %v after a %v deadline; want it prompt", took, budget)
	}
	wantPower(t, ctx, p, f.Deaf, provider.PowerOn)

	// What the executor does next: force it off.
	mustOK(t, "PowerOffGuest(Deaf)", p.PowerOffGuest(ctx, f.Deaf))
	wantPower(t, ctx, p, f.Deaf, provider.PowerOff)
}

func (s *suite) waitArguments(t *testing.T) {
	p, f := s.open(t)
	ctx := s.ctx(t)
	if f.NoGuests {
		noGuests(t, ctx, p)
	}
	// Already in the wanted state: returns at once.
	wctx, cancel := context.WithTimeout(ctx, s.h.Timeout)
	defer cancel()
	mustOK(t, "WaitGuest(Running, on)", p.WaitGuest(wctx, f.Running, provider.PowerOn))
	mustOK(t, "WaitGuest(Off, off)", p.WaitGuest(wctx, f.Off, provider.PowerOff))

	for _, bad := range []provider.PowerState{provider.PowerUnknown, "", "sideways"} {
		wantClass(t, "WaitGuest want="+string(bad), p.WaitGuest(wctx, f.Running, bad), provider.Permanent, f.Running)
	}

	// A context that has already ended: prompt error wrapping it.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	err := p.WaitGuest(cctx, f.Running, provider.PowerOff)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("WaitGuest with a cancelled context: %v, want it to wrap context.Canceled", err)
	}
}

// stopGuestsOn powers off every guest on host, as the executor does before
// maintenance mode or host shutdown.
func stopGuestsOn(t *testing.T, ctx context.Context, p provider.Provider, host string) {
	t.Helper()
	for _, id := range guestsOn(t, ctx, p, host) {
		mustOK(t, "PowerOffGuest("+id+")", p.PowerOffGuest(ctx, id))
	}
}

func hostState(t *testing.T, ctx context.Context, p provider.Provider, id string) provider.Host {
	t.Helper()
	inv, err := p.Inventory(ctx)
	mustOK(t, "Inventory", err)
	h, ok := findHost(inv, id)
	if !ok {
		t.Fatalf("host %s missing from inventory", id)
	}
	return h
}

func (s *suite) maintenance(t *testing.T) {
	p, f := s.open(t)
	ctx := s.ctx(t)
	if !provider.CapabilitiesOf(p).Maintenance {
		wantClass(t, "EnterMaintenance without the Maintenance capability",
			p.EnterMaintenance(ctx, f.Host, provider.MaintenanceOptions{}), provider.Unsupported, f.Host)
		t.Skip("provider declares no Maintenance capability; EnterMaintenance answered Unsupported")
	}
	stopGuestsOn(t, ctx, p, f.Host)
	opts := provider.MaintenanceOptions{Timeout: s.h.Timeout}
	mustOK(t, "EnterMaintenance", p.EnterMaintenance(ctx, f.Host, opts))
	if h := hostState(t, ctx, p, f.Host); !h.Maintenance {
		t.Fatalf("host %s not in maintenance after EnterMaintenance", f.Host)
	}
	mustOK(t, "EnterMaintenance again", p.EnterMaintenance(ctx, f.Host, opts))
	mustOK(t, "ExitMaintenance", p.ExitMaintenance(ctx, f.Host))
	if h := hostState(t, ctx, p, f.Host); h.Maintenance {
		t.Fatalf("host %s still in maintenance after ExitMaintenance", f.Host)
	}
	mustOK(t, "ExitMaintenance again", p.ExitMaintenance(ctx, f.Host))
}

func (s *suite) shutdownHost(t *testing.T) {
	p, f := s.open(t)
	ctx := s.ctx(t)
	caps := provider.CapabilitiesOf(p)
	if !caps.HostShutdown {
		wantClass(t, "ShutdownHost without the HostShutdown capability",
			p.ShutdownHost(ctx, f.Host, false), provider.Unsupported, f.Host)
		t.Skip("provider declares no HostShutdown capability; ShutdownHost answered Unsupported")
	}
	stopGuestsOn(t, ctx, p, f.Host)
	force := true
	if caps.Maintenance {
		mustOK(t, "EnterMaintenance", p.EnterMaintenance(ctx, f.Host, provider.MaintenanceOptions{}))
		force = false
	}
	mustOK(t, "ShutdownHost", p.ShutdownHost(ctx, f.Host, force))

	// The host goes down; a backend that loses contact reports it
	// unreachable instead.
	deadline := time.Now().Add(s.h.Timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		inv, err := p.Inventory(ctx)
		if provider.ClassOf(err) == provider.Unreachable {
			break
		}
		mustOK(t, "Inventory after ShutdownHost", err)
		if h, ok := findHost(inv, f.Host); !ok || h.Power != provider.PowerOn {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host %s still on %v after ShutdownHost", f.Host, s.h.Timeout)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	if err := p.ShutdownHost(ctx, f.Host, force); err != nil && provider.ClassOf(err) != provider.Unreachable {
		t.Errorf("ShutdownHost of a host that is down: %v; want nil or class unreachable", err)
	}
}

func (s *suite) permission(t *testing.T) {
	p, f := s.open(t)
	if f.DenyPowerOff == nil {
		t.Skip("harness cannot model a missing privilege")
	}
	ctx := s.ctx(t)
	priv := f.DenyPowerOff(t, f.Running)
	if priv == "" {
		t.Fatal("DenyPowerOff returned no privilege name")
	}
	e := wantClass(t, "PowerOffGuest without the privilege", p.PowerOffGuest(ctx, f.Running), provider.Permission, f.Running)
	if e.Privilege != priv {
		t.Errorf("Error.Privilege = %q, want %q", e.Privilege, priv)
	}
	if !strings.Contains(e.Error(), priv) {
		t.Errorf("error text %q does not name the privilege %q", e.Error(), priv)
	}
	wantPower(t, ctx, p, f.Running, provider.PowerOn)
	// The denial was for one call; the provider did not stay broken.
	mustOK(t, "PowerOffGuest after the denial", p.PowerOffGuest(ctx, f.Running))
	wantPower(t, ctx, p, f.Running, provider.PowerOff)
}

func (s *suite) concurrent(t *testing.T) {
	p, _ := s.open(t)
	ctx := s.ctx(t)
	inv, err := p.Inventory(ctx)
	mustOK(t, "Inventory", err)
	var wg sync.WaitGroup
	errs := make(chan error, 3*len(inv.Guests))
	for _, g := range inv.Guests {
		wg.Add(3)
		go func() {
			defer wg.Done()
			errs <- p.PowerOffGuest(ctx, g.ID)
		}()
		go func() {
			defer wg.Done()
			_, err := p.Guest(ctx, g.ID)
			errs <- err
		}()
		go func() {
			defer wg.Done()
			_, err := p.Inventory(ctx)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent call: %v", err)
		}
	}
	after, err := p.Inventory(ctx)
	mustOK(t, "Inventory", err)
	for _, g := range after.Guests {
		if g.Power != provider.PowerOff {
			t.Errorf("guest %s is %q after concurrent PowerOffGuest", g.ID, g.Power)
		}
	}
}

func (s *suite) close(t *testing.T) {
	p, f := s.open(t)
	ctx := s.ctx(t)
	mustOK(t, "Close", p.Close())
	mustOK(t, "Close again", p.Close())
	_, err := p.Inventory(ctx)
	wantClass(t, "Inventory after Close", err, provider.Permanent, "")
	wantClass(t, "PowerOffGuest after Close", p.PowerOffGuest(ctx, f.Running), provider.Permanent, f.Running)
}

// noGuests checks that a backend without guests answers NotFound for guest
// calls, then skips the subtest.
func noGuests(t *testing.T, ctx context.Context, p provider.Provider) {
	t.Helper()
	const id = "sundown-conformance-guest"
	_, err := p.Guest(ctx, id)
	wantClass(t, "Guest on a backend without guests", err, provider.NotFound, id)
	wantClass(t, "ShutdownGuest on a backend without guests", p.ShutdownGuest(ctx, id), provider.NotFound, id)
	wantClass(t, "PowerOffGuest on a backend without guests", p.PowerOffGuest(ctx, id), provider.NotFound, id)
	wantClass(t, "PowerOnGuest on a backend without guests", p.PowerOnGuest(ctx, id), provider.NotFound, id)
	wantClass(t, "WaitGuest on a backend without guests", p.WaitGuest(ctx, id, provider.PowerOff), provider.NotFound, id)
	t.Skip("Fixture.NoGuests: the backend has no guests; guest calls answered NotFound")
}
