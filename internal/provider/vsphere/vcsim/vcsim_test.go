package vcsim_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/vsphere"
	"github.com/sundown-ups/sundown/internal/provider/vsphere/vcsim"
)

// None of these tests run in parallel: TestNoGoroutinesAfterClose counts
// the process's goroutines and TestQuietStdLog swaps the log package's
// output.

const fastDelay = 1 * time.Second

// smallFleet is 3 hosts and 20 VMs: on, off, without tools, ignoring
// shutdown, with notes and a BIOS UUID.
func smallFleet() vcsim.Fleet {
	f := vcsim.Fleet{VCenter: true, Hosts: []vcsim.Host{{Name: "esx-a.lab"}, {Name: "esx-b.lab"}, {Name: "esx-c.lab"}}}
	for i := range 20 {
		vm := vcsim.VM{Name: fmt.Sprintf("app-%02d", i), Host: f.Hosts[i%3].Name, ShutdownDelay: fastDelay}
		switch i {
		case 1:
			vm.Name, vm.PoweredOff = "old-backup", true
		case 2:
			vm.Name, vm.NoTools = "appliance", true
		case 3:
			vm.Name, vm.IgnoreShutdown, vm.ShutdownDelay = "hung-guest", true, 100*time.Millisecond
		case 4:
			vm.Name, vm.NoTools, vm.PoweredOff = "appliance-off", true, true
		case 5:
			vm.Name, vm.Annotation, vm.UUID = "db-1", "database; stop last", "4223a1b2-0000-4000-8000-00000000db01"
		}
		f.VMs = append(f.VMs, vm)
	}
	return f
}

func start(t *testing.T, f vcsim.Fleet) *vcsim.Sim {
	t.Helper()
	s, err := vcsim.Start(t.Context(), f)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func connect(t *testing.T, s *vcsim.Sim) *vsphere.Provider {
	t.Helper()
	p, err := vsphere.New(t.Context(), vsphere.Config{
		URL:          s.URL(),
		Username:     s.Username(),
		Password:     s.Password(),
		CAFile:       s.CAFile(),
		PollInterval: 20 * time.Millisecond,
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("vsphere.New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// row is what the provider reports of a guest, by names.
type row struct {
	Host  string
	Power provider.PowerState
	Tools provider.ToolsState
	UUID  string
	Notes string
}

func wantRows(f vcsim.Fleet) map[string]row {
	want := map[string]row{}
	for _, vm := range f.VMs {
		r := row{Host: vm.Host, Power: provider.PowerOn, Tools: provider.ToolsRunning, UUID: vm.UUID, Notes: vm.Annotation}
		if vm.PoweredOff {
			r.Power, r.Tools = provider.PowerOff, provider.ToolsNotRunning
		}
		if vm.NoTools {
			r.Tools = provider.ToolsNotInstalled
		}
		want[vm.Name] = r
	}
	return want
}

func gotRows(t *testing.T, inv provider.Inventory, uuids bool) map[string]row {
	t.Helper()
	hosts := map[string]string{}
	for _, h := range inv.Hosts {
		hosts[h.ID] = h.Name
	}
	got := map[string]row{}
	for _, g := range inv.Guests {
		if _, dup := got[g.Name]; dup {
			t.Errorf("guest name %s listed twice", g.Name)
		}
		r := row{Host: hosts[g.HostID], Power: g.Power, Tools: g.Tools, Notes: g.Tags[vsphere.AnnotationTag]}
		if uuids {
			r.UUID = g.UUID
		}
		got[g.Name] = r
	}
	return got
}

func TestFleetInventory(t *testing.T) {
	f := smallFleet()
	s := start(t, f)
	p := connect(t, s)
	inv, err := p.Inventory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var hostNames []string
	for _, h := range inv.Hosts {
		hostNames = append(hostNames, h.Name)
		if h.Power != provider.PowerOn || h.Maintenance {
			t.Errorf("host %s: power %s, maintenance %v; want on, not in maintenance", h.Name, h.Power, h.Maintenance)
		}
		if h.ID != s.HostID(h.Name) {
			t.Errorf("host %s: ID %s, Sim says %s", h.Name, h.ID, s.HostID(h.Name))
		}
	}
	slices.Sort(hostNames)
	if want := []string{"esx-a.lab", "esx-b.lab", "esx-c.lab"}; !slices.Equal(hostNames, want) {
		t.Errorf("hosts %v, want %v", hostNames, want)
	}

	// UUIDs: only the declared one is predictable.
	got := gotRows(t, inv, false)
	want := wantRows(f)
	for name, r := range want {
		r.UUID = ""
		want[name] = r
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("inventory (-declared +listed):\n%s", diff)
	}
	for _, g := range inv.Guests {
		if g.ID != s.VMID(g.Name) {
			t.Errorf("guest %s: ID %s, Sim says %s", g.Name, g.ID, s.VMID(g.Name))
		}
		if g.UUID == "" {
			t.Errorf("guest %s has no UUID", g.Name)
		}
		if g.Name == "db-1" && g.UUID != "4223a1b2-0000-4000-8000-00000000db01" {
			t.Errorf("db-1 UUID %s, want the declared one", g.UUID)
		}
	}
	// The VMs got increasing IDs in the declared order.
	if a, b := s.VMID("app-00"), s.VMID("app-19"); len(a) == 0 || len(b) == 0 || idNum(t, a) >= idNum(t, b) {
		t.Errorf("app-00 is %s and app-19 is %s: want increasing IDs", a, b)
	}
	if s.PowerState("old-backup") != "poweredOff" || s.PowerState("app-00") != "poweredOn" || s.PowerState("nope") != "" {
		t.Errorf("PowerState: old-backup %q, app-00 %q, nope %q", s.PowerState("old-backup"), s.PowerState("app-00"), s.PowerState("nope"))
	}
	if s.Calls("RetrievePropertiesEx") == 0 {
		t.Error("no RetrievePropertiesEx call counted")
	}
}

func idNum(t *testing.T, id string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscanf(id, "vm-%d", &n); err != nil {
		t.Fatalf("VM ID %q: %v", id, err)
	}
	return n
}

func TestStandaloneESXi(t *testing.T) {
	f := vcsim.Fleet{
		Hosts:    []vcsim.Host{{Name: "esx1.home.arpa"}},
		VMs:      []vcsim.VM{{Name: "nas"}, {Name: "pihole", NoTools: true}, {Name: "lab", PoweredOff: true}},
		Username: "root", Password: "esx-secret",
	}
	s := start(t, f)
	p := connect(t, s)
	inv, err := p.Inventory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Hosts) != 1 || inv.Hosts[0].Name != "esx1.home.arpa" {
		t.Fatalf("hosts %+v, want esx1.home.arpa alone", inv.Hosts)
	}
	for i := range f.VMs {
		f.VMs[i].Host = "esx1.home.arpa"
	}
	if diff := cmp.Diff(wantRows(f), gotRows(t, inv, false)); diff != "" {
		t.Errorf("inventory (-declared +listed):\n%s", diff)
	}
	// The standalone host needs maintenance mode before a normal shutdown.
	if err := p.EnterMaintenance(t.Context(), s.HostID("esx1.home.arpa"), provider.MaintenanceOptions{}); err != nil {
		t.Fatal(err)
	}
	if !s.InMaintenance("esx1.home.arpa") {
		t.Error("host not in maintenance mode")
	}
	if err := p.ShutdownHost(t.Context(), s.HostID("esx1.home.arpa"), false); err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, "host down", func() bool { return s.HostPowerState("esx1.home.arpa") == "poweredOff" })
	if got := s.HostShutdowns(); !slices.Equal(got, []string{"esx1.home.arpa"}) {
		t.Errorf("HostShutdowns = %v", got)
	}
}

func TestGuestShutdownDelay(t *testing.T) {
	s := start(t, smallFleet())
	p := connect(t, s)
	ctx := t.Context()
	id := s.VMID("app-00")
	begin := time.Now()
	if err := p.ShutdownGuest(ctx, id); err != nil {
		t.Fatal(err)
	}
	if g, err := p.Guest(ctx, id); err != nil || g.Power != provider.PowerOn {
		t.Fatalf("right after ShutdownGuest: %+v, %v; want still on", g, err)
	}
	// A second request does not restart the countdown.
	if err := p.ShutdownGuest(ctx, id); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := p.WaitGuest(wctx, id, provider.PowerOff); err != nil {
		t.Fatalf("WaitGuest: %v", err)
	}
	took := time.Since(begin)
	t.Logf("guest off %v after ShutdownGuest (delay %v)", took.Round(time.Millisecond), fastDelay)
	if took < fastDelay-50*time.Millisecond || took > fastDelay+time.Second {
		t.Errorf("guest off after %v, want about %v", took, fastDelay)
	}
	g, err := p.Guest(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if g.Tools != provider.ToolsNotRunning {
		t.Errorf("tools %s after shutdown, want %s", g.Tools, provider.ToolsNotRunning)
	}
	if n := s.Calls("ShutdownGuest"); n != 2 {
		t.Errorf("Calls(ShutdownGuest) = %d, want 2", n)
	}
	// Power on again: tools run again.
	if err := p.PowerOnGuest(ctx, id); err != nil {
		t.Fatal(err)
	}
	if g, err := p.Guest(ctx, id); err != nil || g.Tools != provider.ToolsRunning {
		t.Errorf("after power on: %+v, %v; want tools running", g, err)
	}
	// Already off: the provider's idempotence meets the simulator's
	// InvalidPowerState.
	if err := p.ShutdownGuest(ctx, s.VMID("old-backup")); err != nil {
		t.Errorf("ShutdownGuest of an off guest: %v", err)
	}
}

// CallsFor counts per method and per VM or host, refused calls included.
func TestCallsFor(t *testing.T) {
	s := start(t, smallFleet())
	p := connect(t, s)
	ctx := t.Context()
	for range 2 {
		if err := p.ShutdownGuest(ctx, s.VMID("app-00")); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.ShutdownGuest(ctx, s.VMID("old-backup")); err != nil { // off: refused, then fine
		t.Fatal(err)
	}
	if err := p.PowerOffGuest(ctx, s.VMID("hung-guest")); err != nil {
		t.Fatal(err)
	}
	if err := p.ShutdownHost(ctx, s.HostID("esx-b.lab"), true); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method, name string
		want         int
	}{
		{"ShutdownGuest", "app-00", 2},
		{"ShutdownGuest", "old-backup", 1},
		{"ShutdownGuest", "app-06", 0},
		{"PowerOffVM_Task", "hung-guest", 1},
		{"PowerOffVM_Task", "app-00", 0},
		{"ShutdownHost_Task", "esx-b.lab", 1},
		{"ShutdownHost_Task", "esx-a.lab", 0},
		{"ShutdownGuest", "no-such-vm", 0},
	} {
		if got := s.CallsFor(c.method, c.name); got != c.want {
			t.Errorf("CallsFor(%s, %s) = %d, want %d", c.method, c.name, got, c.want)
		}
	}
	if got := s.Calls("ShutdownGuest"); got != 3 {
		t.Errorf("Calls(ShutdownGuest) = %d, want 3 (the per-VM counts add up)", got)
	}
}

func TestShutdownForgottenAfterReboot(t *testing.T) {
	f := vcsim.Fleet{Hosts: []vcsim.Host{{Name: "esx"}}, VMs: []vcsim.VM{{Name: "vm", ShutdownDelay: 400 * time.Millisecond}}}
	s := start(t, f)
	p := connect(t, s)
	ctx := t.Context()
	id := s.VMID("vm")
	if err := p.ShutdownGuest(ctx, id); err != nil {
		t.Fatal(err)
	}
	// Hard power cycle before the guest finishes: the new boot is not
	// shut down by the old request.
	if err := p.PowerOffGuest(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := p.PowerOnGuest(ctx, id); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	err := p.WaitGuest(wctx, id, provider.PowerOff)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitGuest = %v, want the deadline: the rebooted guest must stay on", err)
	}
}

func TestIgnoreShutdown(t *testing.T) {
	s := start(t, smallFleet())
	p := connect(t, s)
	ctx := t.Context()
	id := s.VMID("hung-guest") // declared delay 100 ms, never applied
	if err := p.ShutdownGuest(ctx, id); err != nil {
		t.Fatalf("ShutdownGuest: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 800*time.Millisecond)
	defer cancel()
	err := p.WaitGuest(wctx, id, provider.PowerOff)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitGuest = %v, want the deadline: the guest ignores shutdown", err)
	}
	if st := s.PowerState("hung-guest"); st != "poweredOn" {
		t.Errorf("hung-guest is %s, want poweredOn", st)
	}
	// A hard power-off still works.
	if err := p.PowerOffGuest(ctx, id); err != nil {
		t.Fatal(err)
	}
	if st := s.PowerState("hung-guest"); st != "poweredOff" {
		t.Errorf("after PowerOffGuest hung-guest is %s", st)
	}
}

func TestNoTools(t *testing.T) {
	s := start(t, smallFleet())
	p := connect(t, s)
	ctx := t.Context()
	err := p.ShutdownGuest(ctx, s.VMID("appliance"))
	if c := provider.ClassOf(err); c != provider.Unsupported {
		t.Fatalf("ShutdownGuest without tools: %v (class %s), want unsupported", err, c)
	}
	if !strings.Contains(err.Error(), "ToolsUnavailable") {
		t.Errorf("error %q does not name ToolsUnavailable", err)
	}
	if st := s.PowerState("appliance"); st != "poweredOn" {
		t.Errorf("appliance is %s, want poweredOn", st)
	}
	// Off without tools: nothing to do.
	if err := p.ShutdownGuest(ctx, s.VMID("appliance-off")); err != nil {
		t.Errorf("ShutdownGuest of an off guest without tools: %v", err)
	}
}

func TestHostShutdown(t *testing.T) {
	s := start(t, smallFleet())
	p := connect(t, s)
	ctx := t.Context()
	a, b := s.HostID("esx-a.lab"), s.HostID("esx-b.lab")

	// Without maintenance mode and without force: refused, nothing recorded.
	err := p.ShutdownHost(ctx, a, false)
	if c := provider.ClassOf(err); c != provider.Permanent {
		t.Fatalf("ShutdownHost outside maintenance: %v (class %s), want permanent", err, c)
	}
	if got := s.HostShutdowns(); len(got) != 0 {
		t.Fatalf("HostShutdowns = %v after a refusal", got)
	}

	if err := p.EnterMaintenance(ctx, a, provider.MaintenanceOptions{Timeout: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if !s.InMaintenance("esx-a.lab") || s.InMaintenance("esx-b.lab") {
		t.Fatalf("maintenance: a %v, b %v; want only a", s.InMaintenance("esx-a.lab"), s.InMaintenance("esx-b.lab"))
	}
	if reqs := s.MaintenanceRequests(); len(reqs) != 1 || reqs[0].This.Value != a || reqs[0].Timeout != 30 {
		t.Errorf("MaintenanceRequests = %+v, want one for %s with timeout 30", reqs, a)
	}
	if err := p.ShutdownHost(ctx, a, false); err != nil {
		t.Fatalf("ShutdownHost in maintenance: %v", err)
	}
	// b goes down by force, with its VMs still on.
	if err := p.ShutdownHost(ctx, b, true); err != nil {
		t.Fatalf("forced ShutdownHost: %v", err)
	}
	if got, want := s.HostShutdowns(), []string{"esx-a.lab", "esx-b.lab"}; !slices.Equal(got, want) {
		t.Errorf("HostShutdowns = %v, want %v", got, want)
	}
	inv, err := p.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range inv.Hosts {
		want := provider.PowerOff
		if h.ID != a && h.ID != b {
			want = provider.PowerOn
		}
		if h.Power != want {
			t.Errorf("host %s is %s, want %s", h.Name, h.Power, want)
		}
	}
	hostOf := map[string]string{}
	for _, h := range inv.Hosts {
		hostOf[h.ID] = h.Name
	}
	for _, g := range inv.Guests {
		down := g.HostID == a || g.HostID == b
		if down && g.Power != provider.PowerOff {
			t.Errorf("guest %s on the downed host %s is %s", g.Name, hostOf[g.HostID], g.Power)
		}
	}
	// Idempotent: already off.
	if err := p.ShutdownHost(ctx, b, true); err != nil {
		t.Errorf("second ShutdownHost: %v", err)
	}
	if n := s.Calls("ShutdownHost_Task"); n != 3 {
		t.Errorf("Calls(ShutdownHost_Task) = %d, want 3 (refused, a, b)", n)
	}

	// A VM cannot start on a host that is down; it can once the host is
	// back.
	vm := s.VMID("app-07") // on esx-b.lab
	if vm == "" {
		t.Fatal("no VM app-07")
	}
	err = p.PowerOnGuest(ctx, vm)
	if c := provider.ClassOf(err); c != provider.Permanent || !strings.Contains(err.Error(), "InvalidHostState") {
		t.Fatalf("PowerOnGuest on a downed host: %v (class %s), want a permanent InvalidHostState", err, c)
	}
	if err := s.BootHost("esx-b.lab"); err != nil {
		t.Fatal(err)
	}
	if st := s.HostPowerState("esx-b.lab"); st != "poweredOn" {
		t.Fatalf("after BootHost: %s", st)
	}
	if err := p.PowerOnGuest(ctx, vm); err != nil {
		t.Fatalf("PowerOnGuest after BootHost: %v", err)
	}
	if err := s.BootHost("no-such-host"); err == nil {
		t.Error("BootHost of an unknown host succeeded")
	}
}

func TestThumbprint(t *testing.T) {
	s := start(t, vcsim.Fleet{Hosts: []vcsim.Host{{Name: "esx"}}})
	p, err := vsphere.New(t.Context(), vsphere.Config{
		URL: s.URL(), Username: s.Username(), Password: s.Password(),
		Thumbprint: s.Thumbprint(), Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("connect with the thumbprint: %v", err)
	}
	defer p.Close()
	inv, err := p.Inventory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Guests) != 0 || len(inv.Hosts) != 1 {
		t.Errorf("inventory %+v, want one host and no guests", inv)
	}
	_, err = vsphere.New(t.Context(), vsphere.Config{
		URL: s.URL(), Username: s.Username(), Password: "wrong", CAFile: s.CAFile(), Logger: slog.New(slog.DiscardHandler),
	})
	if c := provider.ClassOf(err); c != provider.Auth {
		t.Errorf("wrong password: %v (class %s), want auth", err, c)
	}
}

func TestMethodDelay(t *testing.T) {
	f := vcsim.Fleet{
		Hosts:       []vcsim.Host{{Name: "esx"}},
		VMs:         []vcsim.VM{{Name: "vm"}},
		MethodDelay: map[string]time.Duration{"PowerOffVM_Task": 300 * time.Millisecond},
	}
	s := start(t, f)
	p := connect(t, s)
	begin := time.Now()
	if err := p.PowerOffGuest(t.Context(), s.VMID("vm")); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took < 300*time.Millisecond {
		t.Errorf("PowerOffGuest took %v, want at least the 300ms delay", took)
	}
}

func TestInvalidFleet(t *testing.T) {
	f := vcsim.Fleet{
		Hosts: []vcsim.Host{{Name: "a"}, {Name: "a"}, {Name: ""}},
		VMs: []vcsim.VM{
			{Name: "x", Host: "a"}, {Name: "x", Host: "a"}, {Name: "y", Host: "zz"},
			{Name: "a/b", Host: "a"}, {Name: "", Host: "a"}, {Name: "neg", Host: "a", ShutdownDelay: -time.Second},
		},
	}
	_, err := vcsim.Start(t.Context(), f)
	if err == nil {
		t.Fatal("Start succeeded")
	}
	for _, want := range []string{
		"standalone ESXi fleet has exactly one host, not 3", `hosts[1]: duplicate name "a"`, "hosts[2]: empty name",
		`vms[1]: duplicate name "x"`, `vms[2] (y): unknown host "zz"`, `vms[3]: name "a/b"`, "vms[4]: empty name",
		"vms[5] (neg): negative shutdown delay",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if _, err := vcsim.Start(t.Context(), vcsim.Fleet{VCenter: true}); err == nil || !strings.Contains(err.Error(), "no hosts") {
		t.Errorf("empty fleet: %v", err)
	}
	if f.VMs[0].ShutdownDelay != 0 {
		t.Error("Start wrote defaults into the caller's VMs")
	}
}

func TestStartCanceled(t *testing.T) {
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := vcsim.Start(ctx, smallFleet())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Start with a canceled context: %v", err)
	}
	settles(t, before)
}

func TestNoGoroutinesAfterClose(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := vcsim.Start(t.Context(), smallFleet())
	if err != nil {
		t.Fatal(err)
	}
	ca := s.CAFile()
	p, err := vsphere.New(t.Context(), vsphere.Config{
		URL: s.URL(), Username: s.Username(), Password: s.Password(), CAFile: ca, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Leave guest shutdowns pending: Close cancels them.
	for _, name := range []string{"app-00", "app-06", "db-1"} {
		if err := p.ShutdownGuest(t.Context(), s.VMID(name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Stat(ca); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("CA file after Close: %v, want it removed", err)
	}
	settles(t, before)
}

// settles waits until the goroutine count is back to before.
func settles(t *testing.T, before int) {
	t.Helper()
	var now int
	poll(t, 5*time.Second, "goroutines to settle", func() bool {
		now = runtime.NumGoroutine()
		return now <= before
	})
	if now > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines, %d before:\n%s", now, before, buf[:runtime.Stack(buf, true)])
	}
}

// poll checks cond every 10 ms until it holds or timeout passes.
func poll(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func TestQuietStdLog(t *testing.T) {
	var buf bytes.Buffer
	prev := log.Writer()
	log.SetOutput(&buf)
	t.Cleanup(func() { log.SetOutput(prev) })

	// A method on an object that does not exist: the simulator logs
	// "managed object not found".
	unknownVM := func(p *vsphere.Provider) {
		t.Helper()
		if err := p.ShutdownGuest(t.Context(), "vm-999999"); provider.ClassOf(err) != provider.NotFound {
			t.Fatalf("ShutdownGuest of an unknown VM: %v", err)
		}
	}

	// By default a Sim is quiet while it runs and restores the output on
	// Close.
	s, err := vcsim.Start(t.Context(), vcsim.Fleet{Hosts: []vcsim.Host{{Name: "esx"}}})
	if err != nil {
		t.Fatal(err)
	}
	unknownVM(connect(t, s))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Errorf("a default Sim logged %q", buf.String())
	}
	if log.Writer() != &buf {
		t.Fatalf("after Close the log output is %v, want the test's buffer back", log.Writer())
	}

	// KeepStdLog: the caller decides, with QuietStdLog (calls nest).
	s = start(t, vcsim.Fleet{Hosts: []vcsim.Host{{Name: "esx"}}, KeepStdLog: true})
	p := connect(t, s)
	restore := vcsim.QuietStdLog()
	inner := vcsim.QuietStdLog()
	unknownVM(p)
	inner()
	inner() // a second call of the same restore does nothing
	unknownVM(p)
	if buf.Len() != 0 {
		t.Errorf("logged while quiet: %q", buf.String())
	}
	restore()
	unknownVM(p)
	if !strings.Contains(buf.String(), "managed object not found") {
		t.Errorf("after restore the simulator's log is %q, want its message back", buf.String())
	}
}

// TestConcurrentSims runs three Sims at once, as end-to-end tests with a
// vCenter and an ESXi host do (govmomi's builder writes package globals:
// Start must serialize that part; -race checks).
func TestConcurrentSims(t *testing.T) {
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := smallFleet()
			if i == 1 { // a standalone ESXi host
				f.VCenter, f.Hosts = false, f.Hosts[:1]
				for j := range f.VMs {
					f.VMs[j].Host = f.Hosts[0].Name
				}
			}
			s, err := vcsim.Start(t.Context(), f)
			if err != nil {
				t.Errorf("Start: %v", err)
				return
			}
			defer s.Close()
			p, err := vsphere.New(t.Context(), vsphere.Config{
				URL: s.URL(), Username: s.Username(), Password: s.Password(), CAFile: s.CAFile(),
				Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Errorf("vsphere.New: %v", err)
				return
			}
			defer p.Close()
			if inv, err := p.Inventory(t.Context()); err != nil || len(inv.Guests) != len(f.VMs) {
				t.Errorf("Inventory: %d guests, %v; want %d", len(inv.Guests), err, len(f.VMs))
			}
			if err := p.PowerOffGuest(t.Context(), s.VMID("app-00")); err != nil {
				t.Errorf("PowerOffGuest: %v", err)
			}
		}()
	}
	wg.Wait()
}

// TestLargeFleet starts 1,000 VMs on 50 hosts and lists them.
func TestLargeFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 VMs: skipped with -short")
	}
	f := largeFleet(50, 1000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := start(t, f)
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("started %d VMs on %d hosts in %v; heap in use grew by %d MB", len(f.VMs), len(f.Hosts),
		s.StartDuration().Round(time.Millisecond), (int64(after.HeapInuse)-int64(before.HeapInuse))>>20)
	if s.StartDuration() > 60*time.Second {
		t.Errorf("start took %v, want under 60 s", s.StartDuration())
	}
	p := connect(t, s)
	begin := time.Now()
	inv, err := p.Inventory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("inventory of %d guests in %v", len(inv.Guests), time.Since(begin).Round(time.Millisecond))
	if diff := cmp.Diff(wantRows(f), gotRows(t, inv, false)); diff != "" {
		t.Errorf("inventory (-declared +listed):\n%s", diff)
	}
}

func largeFleet(hosts, vms int) vcsim.Fleet {
	f := vcsim.Fleet{VCenter: true}
	for i := range hosts {
		f.Hosts = append(f.Hosts, vcsim.Host{Name: fmt.Sprintf("esx-%02d.dc.example", i)})
	}
	for i := range vms {
		f.VMs = append(f.VMs, vcsim.VM{
			Name:       fmt.Sprintf("vm-%04d", i),
			Host:       f.Hosts[i%hosts].Name,
			PoweredOff: i%10 == 9,
			NoTools:    i%7 == 3,
		})
	}
	return f
}

// BenchmarkStart1000 measures Start and Close of 1,000 VMs on 50 hosts.
func BenchmarkStart1000(b *testing.B) {
	f := largeFleet(50, 1000)
	for b.Loop() {
		s, err := vcsim.Start(b.Context(), f)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
