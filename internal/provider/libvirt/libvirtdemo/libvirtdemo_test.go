package libvirtdemo_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sundown-ups/sundown/internal/peer"
	"github.com/sundown-ups/sundown/internal/peer/libvirtd/daemon"
	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/libvirt"
	"github.com/sundown-ups/sundown/internal/provider/libvirt/libvirtdemo"
)

func start(t *testing.T, domains []libvirtdemo.Domain) *libvirtdemo.Site {
	t.Helper()
	peer.NeedBinary(t, daemon.Binary, daemon.InstallHint)
	s, err := libvirtdemo.Start(t.Context(), domains)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func open(t *testing.T, s *libvirtdemo.Site) *libvirt.Provider {
	t.Helper()
	p, err := libvirt.New(t.Context(), libvirt.Config{URI: s.URI(), HostName: libvirtdemo.HostName})
	if err != nil {
		t.Fatalf("libvirt.New(%s): %v", s.URI(), err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

type row struct{ ID, Name, Host, Power string }

func inventory(t *testing.T, p *libvirt.Provider) ([]row, []provider.Host) {
	t.Helper()
	inv, err := p.Inventory(t.Context())
	if err != nil {
		t.Fatalf("Inventory: %v", err)
	}
	var rows []row
	for _, g := range inv.Guests {
		rows = append(rows, row{g.ID, g.Name, g.HostID, string(g.Power)})
	}
	slices.SortFunc(rows, func(a, b row) int { return strings.Compare(a.Name, b.Name) })
	return rows, inv.Hosts
}

// TestSiteThroughProvider starts the default site, reads it with the
// libvirt provider exactly as the demo's libvirt target will, shuts a
// guest down, and checks that the state survives the provider (the site
// holds the test driver's state), then closes the site.
func TestSiteThroughProvider(t *testing.T) {
	s := start(t, nil)
	p := open(t, s)
	rows, hosts := inventory(t, p)
	var want []row
	for _, d := range libvirtdemo.DefaultDomains() {
		power := "off"
		if d.Running {
			power = "on"
		}
		want = append(want, row{d.UUID, d.Name, libvirtdemo.HostName, power})
	}
	slices.SortFunc(want, func(a, b row) int { return strings.Compare(a.Name, b.Name) })
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("guests (-want +got):\n%s", diff)
	}
	if len(hosts) != 1 || hosts[0].ID != libvirtdemo.HostName || hosts[0].Power != provider.PowerOn {
		t.Errorf("hosts = %+v, want one host %s, on", hosts, libvirtdemo.HostName)
	}
	for _, r := range rows {
		if r.Name == "test" {
			t.Errorf("the test driver's own domain is still there: %+v", r)
		}
	}

	web := libvirtdemo.DefaultDomains()[0]
	if err := p.ShutdownGuest(t.Context(), web.UUID); err != nil {
		t.Fatalf("ShutdownGuest(%s): %v", web.Name, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := p.WaitGuest(ctx, web.UUID, provider.PowerOff); err != nil {
		t.Fatalf("WaitGuest(%s, off): %v", web.Name, err)
	}
	p.Close()

	// A new provider (the demo's next connection) sees the same site.
	p2 := open(t, s)
	g, err := p2.Guest(t.Context(), web.UUID)
	if err != nil || g.Power != provider.PowerOff {
		t.Fatalf("Guest(%s) after reconnecting = %+v, %v; want off", web.Name, g, err)
	}
	running, err := s.Running()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"kvm-app-1", "kvm-db-1", "kvm-web-2"}; !slices.Equal(running, want) {
		t.Errorf("Running() = %q, want %q", running, want)
	}
	if err := p2.PowerOnGuest(t.Context(), web.UUID); err != nil {
		t.Fatalf("PowerOnGuest(%s): %v", web.Name, err)
	}
	p2.Close()

	pid, sock := s.PID(), s.Socket()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("libvirtd (PID %d) still there after Close: %v", pid, err)
	}
	if _, err := net.Dial("unix", sock); err == nil {
		t.Error("socket still accepts connections after Close")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestCustomDomains(t *testing.T) {
	s := start(t, []libvirtdemo.Domain{
		{Name: "kvm-dns-1", UUID: "0a0b0c0d-0000-4000-8000-000000000001", Running: true},
		{Name: "kvm-old-1", UUID: "0a0b0c0d-0000-4000-8000-000000000002"},
	})
	rows, _ := inventory(t, open(t, s))
	want := []row{
		{"0a0b0c0d-0000-4000-8000-000000000001", "kvm-dns-1", libvirtdemo.HostName, "on"},
		{"0a0b0c0d-0000-4000-8000-000000000002", "kvm-old-1", libvirtdemo.HostName, "off"},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("guests (-want +got):\n%s", diff)
	}
}

func TestStartRefusesANameGivenTwice(t *testing.T) {
	peer.NeedBinary(t, daemon.Binary, daemon.InstallHint)
	s, err := libvirtdemo.Start(t.Context(), []libvirtdemo.Domain{
		{Name: "twice", UUID: "0a0b0c0d-0000-4000-8000-000000000001"},
		{Name: "twice", UUID: "0a0b0c0d-0000-4000-8000-000000000002"},
	})
	if err == nil {
		s.Close()
		t.Fatal("Start accepted a name given twice")
	}
	if !strings.Contains(err.Error(), `"twice"`) {
		t.Errorf("error %q does not name the domain", err)
	}
}

func TestStartWithEndedContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s, err := libvirtdemo.Start(ctx, nil)
	if !errors.Is(err, context.Canceled) || s != nil {
		t.Fatalf("Start = %v, %v; want context.Canceled", s, err)
	}
}
