package hostcmd_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/hostcmd"
)

func class(t *testing.T, err error) provider.Class {
	t.Helper()
	var e *provider.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *provider.Error", err, err)
	}
	return e.Class
}

func TestGuestless(t *testing.T) {
	closed := false
	g := hostcmd.Guestless{HostID: "nas1", Closed: func() bool { return closed },
		NoGuests: "no guests here", NoMaintenance: "no maintenance here"}
	ctx := context.Background()
	guestCalls := map[string]func() error{
		"Guest":         func() error { _, err := g.Guest(ctx, "vm-1"); return err },
		"ShutdownGuest": func() error { return g.ShutdownGuest(ctx, "vm-1") },
		"SuspendGuest":  func() error { return g.SuspendGuest(ctx, "vm-1") },
		"PowerOffGuest": func() error { return g.PowerOffGuest(ctx, "vm-1") },
		"PowerOnGuest":  func() error { return g.PowerOnGuest(ctx, "vm-1") },
		"WaitGuest":     func() error { return g.WaitGuest(ctx, "vm-1", provider.PowerOff) },
	}
	for name, call := range guestCalls {
		err := call()
		if c := class(t, err); c != provider.NotFound || !strings.Contains(err.Error(), "no guests here") || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v (class %s), want NotFound naming the call", name, err, c)
		}
	}
	hostCalls := map[string]func(id string) error{
		"EnterMaintenance": func(id string) error { return g.EnterMaintenance(ctx, id, provider.MaintenanceOptions{}) },
		"ExitMaintenance":  func(id string) error { return g.ExitMaintenance(ctx, id) },
	}
	for name, call := range hostCalls {
		if err := call("nas1"); class(t, err) != provider.Unsupported || !strings.Contains(err.Error(), "no maintenance here") {
			t.Errorf("%s(host): %v, want Unsupported", name, err)
		}
		if err := call("nas2"); class(t, err) != provider.NotFound || !strings.Contains(err.Error(), "this provider's host is nas1") {
			t.Errorf("%s(other): %v, want NotFound naming the host", name, err)
		}
	}
	if err := g.CheckHost("ShutdownHost", "nas1"); err != nil {
		t.Errorf("CheckHost(host) = %v", err)
	}
	if err := g.CheckHost("ShutdownHost", "nas2"); class(t, err) != provider.NotFound {
		t.Errorf("CheckHost(other) = %v, want NotFound", err)
	}

	closed = true
	for name, call := range guestCalls {
		if err := call(); class(t, err) != provider.Permanent {
			t.Errorf("%s after Close: %v, want Permanent", name, err)
		}
	}
	for name, call := range hostCalls {
		if err := call("nas1"); class(t, err) != provider.Permanent {
			t.Errorf("%s after Close: %v, want Permanent", name, err)
		}
	}
	if err := g.CheckHost("ShutdownHost", "nas1"); class(t, err) != provider.Permanent || !strings.Contains(err.Error(), "closed") {
		t.Errorf("CheckHost after Close = %v, want Permanent", err)
	}
}

func TestRefusals(t *testing.T) {
	r := hostcmd.Refusals{
		SudoPrivilege:   "sudoers rule NOPASSWD: ",
		Denied:          []string{"permission denied", "interactive authentication required"},
		DeniedPrivilege: "polkit",
	}
	const cmd = "systemctl poweroff"
	for _, tt := range []struct {
		stderr    string
		class     provider.Class
		privilege string
	}{
		{"sudo: a password is required", provider.Permission, "sudoers rule NOPASSWD: " + cmd},
		{"Sorry, user sundown is not allowed to execute '/sbin/poweroff' as root on nas. (sudo)", provider.Permission, "sudoers rule NOPASSWD: " + cmd},
		{"sundown is not in the sudoers file.  This incident will be reported.\nsudo: …", provider.Permission, "sudoers rule NOPASSWD: " + cmd},
		{"Sorry, user sundown may not run sudo on nas.", provider.Permission, "sudoers rule NOPASSWD: " + cmd},
		{"sudo: unable to open /etc/sudoers: Permission denied", provider.Permission, "polkit"},
		{"sudo: a password is required\npoweroff: Permission denied", provider.Permission, "sudoers rule NOPASSWD: " + cmd},
		{"Failed to power off system via logind: Interactive authentication required.", provider.Permission, "polkit"},
		{"PERMISSION DENIED", provider.Permission, "polkit"},
		{"Failed to connect to bus: No such file or directory", provider.Permanent, ""},
		{"a password is required", provider.Permanent, ""}, // not sudo's
		{"", provider.Permanent, ""},
	} {
		c, p := r.Classify(tt.stderr, cmd)
		if c != tt.class || p != tt.privilege {
			t.Errorf("Classify(%q) = %s, %q; want %s, %q", tt.stderr, c, p, tt.class, tt.privilege)
		}
	}
	if c, p := (hostcmd.Refusals{}).Classify("permission denied", cmd); c != provider.Permanent || p != "" {
		t.Errorf("no Denied phrases: %s %q, want Permanent", c, p)
	}
}

func TestTailBuffer(t *testing.T) {
	b := hostcmd.NewTailBuffer(8)
	if n, err := b.Write([]byte("0123")); n != 4 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if got := b.String(); got != "0123" {
		t.Errorf("String = %q", got)
	}
	if n, err := b.Write([]byte("456789abcdef")); n != 12 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if got := b.String(); got != "89abcdef" {
		t.Errorf("String = %q, want the last 8 bytes", got)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { fmt.Fprintf(b, "%d", i) })
	}
	wg.Wait()
	if got := len(b.String()); got != 8 {
		t.Errorf("after concurrent writes: %d bytes kept, want 8", got)
	}
}
