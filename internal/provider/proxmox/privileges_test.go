package proxmox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/proxmox"
	"github.com/sundown-ups/sundown/internal/provider/proxmox/pvetest"
)

func ctx10(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// noPowerCalls fails when anything that acts reached the fake.
func noPowerCalls(t *testing.T, s *pvetest.Server) {
	t.Helper()
	for _, c := range []string{"POST /nodes/*/qemu/*/status/*", "POST /nodes/*/lxc/*/status/*", "POST /nodes/*/status", "PUT /cluster/ha/resources/*"} {
		if n := s.Calls(c); n != 0 {
			t.Errorf("%d calls %s", n, c)
		}
	}
}

func TestRequiredPrivileges(t *testing.T) {
	s := startFake(t, conformanceFleet())
	p := open(t, s)
	defer p.Close()
	got, err := p.RequiredPrivileges(ctx10(t), []string{"pve1/qemu/106", "pve2/lxc/105", "pve1/qemu/101", "pve1/qemu/106"}, []string{"pve2", "pve1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []proxmox.Grant{
		{Path: "/", Privileges: []string{"Sys.Console"}, For: []string{"pve1/qemu/106"}},
		{Path: "/nodes/pve1", Privileges: []string{"Sys.PowerMgmt"}, For: []string{"pve1"}},
		{Path: "/nodes/pve2", Privileges: []string{"Sys.PowerMgmt"}, For: []string{"pve2"}},
		{Path: "/vms/101", Privileges: []string{"VM.PowerMgmt"}, For: []string{"pve1/qemu/101"}},
		{Path: "/vms/105", Privileges: []string{"VM.PowerMgmt"}, For: []string{"pve2/lxc/105"}},
		{Path: "/vms/106", Privileges: []string{"VM.PowerMgmt"}, For: []string{"pve1/qemu/106"}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("RequiredPrivileges (-want +got):\n%s", d)
	}
	// Everything is granted by default.
	missing, err := p.MissingPrivileges(ctx10(t), got)
	if err != nil || missing != nil {
		t.Errorf("MissingPrivileges with full rights = %v, %v; want nil, nil", missing, err)
	}
	if n := s.Calls("GET /access/permissions"); n != len(want) {
		t.Errorf("%d permission queries, want one per path (%d)", n, len(want))
	}
	noPowerCalls(t, s)

	if _, err := p.RequiredPrivileges(ctx10(t), []string{"pve1/101"}, nil); provider.ClassOf(err) != provider.NotFound {
		t.Errorf("bad guest ID: %v, want NotFound", err)
	}
	if g, err := p.RequiredPrivileges(ctx10(t), nil, nil); err != nil || len(g) != 0 {
		t.Errorf("nothing to do: %v, %v", g, err)
	}
}

// A token with a restricted ACL: MissingPrivileges names exactly what the
// fake then refuses when the operations are tried.
func TestMissingPrivilegesMatchesRefusals(t *testing.T) {
	f := conformanceFleet()
	f.ACL = []pvetest.ACL{
		{Path: "/", Propagate: true, Privileges: []string{"VM.Audit", "VM.Monitor", "Sys.Audit", "VM.PowerMgmt", "Sys.PowerMgmt"}},
		// Overrides what /vms/102 inherits: audit only.
		{Path: "/vms/102", Privileges: []string{"VM.Audit"}},
		// NoAccess-like on pve2 for node power; propagates to nothing below.
		{Path: "/nodes/pve2", Privileges: []string{"Sys.Audit"}},
	}
	f.DenyPowerMgmt = []int{104}
	s := startFake(t, f)
	p := open(t, s)
	defer p.Close()

	req, err := p.RequiredPrivileges(ctx10(t),
		[]string{"pve1/qemu/101", "pve1/qemu/102", "pve1/qemu/104", "pve1/qemu/106"}, []string{"pve1", "pve2"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.MissingPrivileges(ctx10(t), req)
	if err != nil {
		t.Fatal(err)
	}
	want := []proxmox.Grant{
		{Path: "/", Privileges: []string{"Sys.Console"}, For: []string{"pve1/qemu/106"}},
		{Path: "/nodes/pve2", Privileges: []string{"Sys.PowerMgmt"}, For: []string{"pve2"}},
		{Path: "/vms/102", Privileges: []string{"VM.PowerMgmt"}, For: []string{"pve1/qemu/102"}},
		{Path: "/vms/104", Privileges: []string{"VM.PowerMgmt"}, For: []string{"pve1/qemu/104"}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("MissingPrivileges (-want +got):\n%s", d)
	}
	noPowerCalls(t, s)

	// Now act, and compare with what the check predicted.
	ctx := ctx10(t)
	refused := func(what string, err error, priv string) {
		t.Helper()
		var pe *provider.Error
		if !errors.As(err, &pe) || pe.Class != provider.Permission || pe.Privilege != priv {
			t.Errorf("%s: %v, want Permission naming %s", what, err, priv)
		}
	}
	if err := p.PowerOnGuest(ctx, "pve1/qemu/102"); err != nil {
		// 102 is off: PowerOn needs VM.PowerMgmt, which it lacks.
		refused("PowerOnGuest 102", err, "VM.PowerMgmt")
	} else {
		t.Error("PowerOnGuest 102 succeeded without VM.PowerMgmt")
	}
	refused("PowerOffGuest 104", p.PowerOffGuest(ctx, "pve1/qemu/104"), "VM.PowerMgmt")
	refused("ShutdownGuest 106 (HA)", p.ShutdownGuest(ctx, "pve1/qemu/106"), "Sys.Console")
	refused("ShutdownHost pve2", p.ShutdownHost(ctx, "pve2", true), "Sys.PowerMgmt")
	if err := p.PowerOffGuest(ctx, "pve1/qemu/101"); err != nil {
		t.Errorf("PowerOffGuest 101 with VM.PowerMgmt: %v", err)
	}
}
