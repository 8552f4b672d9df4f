package vsphere_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/vsphere"
	"github.com/sundown-ups/sundown/internal/provider/vsphere/vcsim"
)

// everything asks every privilege sundown can need on every VM and host of
// inv.
func everything(inv provider.Inventory) []vsphere.Need {
	var vms, hosts []string
	for _, g := range inv.Guests {
		vms = append(vms, g.ID)
	}
	for _, h := range inv.Hosts {
		hosts = append(hosts, h.ID)
	}
	return []vsphere.Need{
		{Privilege: vsphere.PrivPowerOff, VMs: vms},
		{Privilege: vsphere.PrivSuspend, VMs: vms},
		{Privilege: vsphere.PrivPowerOn, VMs: vms},
		{Privilege: vsphere.PrivMaintenance, Hosts: hosts},
	}
}

func TestOpPrivilegeMatchesREADME(t *testing.T) {
	for op, want := range map[string]string{
		"ShutdownGuest": vsphere.PrivPowerOff, "PowerOffGuest": vsphere.PrivPowerOff,
		"PowerOnGuest": vsphere.PrivPowerOn, "SuspendGuest": vsphere.PrivSuspend,
		"EnterMaintenance": vsphere.PrivMaintenance, "ExitMaintenance": vsphere.PrivMaintenance,
		"ShutdownHost": vsphere.PrivMaintenance,
	} {
		if got, ok := vsphere.OpPrivilege(op); !ok || got != want {
			t.Errorf("OpPrivilege(%s) = %q, %v; want %q", op, got, ok, want)
		}
	}
	for _, op := range []string{"Inventory", "Guest", "WaitGuest", "nonsense"} {
		if got, ok := vsphere.OpPrivilege(op); ok {
			t.Errorf("OpPrivilege(%s) = %q, want none", op, got)
		}
	}
}

// Against the plain simulator (whose AuthorizationManager grants every
// privilege to everyone): nothing is missing, the answer came from
// HasPrivilegeOnEntities, and nothing was changed.
func TestMissingPrivilegesAllGranted(t *testing.T) {
	s := startSim(t, simOptions{})
	p := s.open(s.config())
	inv, err := p.Inventory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.MissingPrivileges(t.Context(), everything(inv))
	if err != nil {
		t.Fatal(err)
	}
	if got != nil {
		t.Errorf("missing %+v, want none", got)
	}
	if n := s.count("HasPrivilegeOnEntities"); n != 2 {
		t.Errorf("%d HasPrivilegeOnEntities calls, want 2 (one for the VMs, one for the hosts)", n)
	}
	for _, m := range []string{"ShutdownGuest", "PowerOffVM_Task", "PowerOnVM_Task", "SuspendVM_Task", "EnterMaintenanceMode_Task", "ShutdownHost_Task"} {
		if n := s.count(m); n != 0 {
			t.Errorf("%s called %d times by a read-only check", m, n)
		}
	}
	// Nothing asked: no call at all.
	before := s.count("HasPrivilegeOnEntities")
	if got, err := p.MissingPrivileges(t.Context(), nil); err != nil || got != nil {
		t.Errorf("no needs: %v, %v", got, err)
	}
	if s.count("HasPrivilegeOnEntities") != before {
		t.Error("asked the server although nothing was needed")
	}
}

// A server that refuses the question itself gives a classed error.
func TestMissingPrivilegesRefused(t *testing.T) {
	s := startSim(t, simOptions{esx: true})
	p := s.open(s.config())
	s.vc.AddFaultRule(&simulator.FaultInjectionRule{
		MethodName: "HasPrivilegeOnEntities", ObjectType: "*", ObjectName: "*", Probability: 1,
		FaultType: simulator.FaultTypeCustom, Fault: &types.NoPermission{PrivilegeId: "System.View"},
		Enabled: true,
	})
	_, err := p.MissingPrivileges(t.Context(), []vsphere.Need{{Privilege: vsphere.PrivPowerOff, VMs: []string{s.fix.Running}}})
	var pe *provider.Error
	if !errors.As(err, &pe) || pe.Class != provider.Permission || pe.Privilege != "System.View" {
		t.Fatalf("err = %v, want a Permission error naming System.View", err)
	}
}

// The simulator keeps roles and permissions (AddAuthorizationRole,
// SetEntityPermissions work) but its HasPrivilegeOnEntities answers "granted"
// to everyone. authzManager fills that gap for this test: it evaluates the
// simulator's own roles and permissions the way vCenter does (the
// permission on the entity itself, else the nearest ancestor's that
// propagates; a user without one has nothing), and checks that the session
// asked about is the caller's. It is a model of vCenter's rule, not vCenter.
type authzManager struct {
	*simulator.AuthorizationManager
}

func (m *authzManager) HasPrivilegeOnEntities(ctx *simulator.Context, req *types.HasPrivilegeOnEntities) soap.HasFault {
	body := &methods.HasPrivilegeOnEntitiesBody{}
	if ctx.Session == nil || req.SessionId != ctx.Session.Key {
		body.Fault_ = simulator.Fault("session is not the caller's", &types.InvalidArgument{InvalidProperty: "sessionId"})
		return body
	}
	res := &types.HasPrivilegeOnEntitiesResponse{}
	for _, e := range req.Entity {
		granted := m.effective(ctx, e, ctx.Session.UserName)
		ep := types.EntityPrivilege{Entity: e}
		for _, id := range req.PrivId {
			ep.PrivAvailability = append(ep.PrivAvailability, types.PrivilegeAvailability{PrivId: id, IsGranted: granted[id]})
		}
		res.Returnval = append(res.Returnval, ep)
	}
	body.Res = res
	return body
}

func (m *authzManager) effective(ctx *simulator.Context, ref types.ManagedObjectReference, user string) map[string]bool {
	for first := true; ; first = false {
		obj, ok := ctx.Map.Get(ref).(mo.Entity)
		if !ok {
			return nil // unknown entity: nothing granted
		}
		for _, p := range m.permissions(ctx, ref) {
			if p.Principal == user && !p.Group && (first || p.Propagate) {
				out := map[string]bool{}
				for _, r := range m.RoleList {
					if r.RoleId == p.RoleId {
						for _, id := range r.Privilege {
							out[id] = true
						}
					}
				}
				return out
			}
		}
		parent := obj.Entity().Parent
		if parent == nil {
			return nil
		}
		ref = *parent
	}
}

func (m *authzManager) permissions(ctx *simulator.Context, ref types.ManagedObjectReference) []types.Permission {
	body, ok := m.RetrieveEntityPermissions(ctx, &types.RetrieveEntityPermissions{Entity: ref}).(*methods.RetrieveEntityPermissionsBody)
	if !ok || body.Res == nil {
		return nil
	}
	return body.Res.Returnval
}

// startAuthzSim serves a default vCenter model (one datacenter, a cluster
// of three hosts, one standalone host, VMs on each) over TLS, accepting any
// user name and password, with authzManager answering
// HasPrivilegeOnEntities. It returns the URL and the CA file.
func startAuthzSim(t *testing.T) (string, string) {
	t.Helper()
	t.Cleanup(vcsim.QuietStdLog())
	k, err := vcsim.NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, k.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	m := simulator.VPX()
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Remove)
	m.Map().Handler = func(ctx *simulator.Context, meth *simulator.Method) (mo.Reference, types.BaseMethodFault) {
		if meth.Name != "HasPrivilegeOnEntities" {
			return nil, nil
		}
		real, ok := ctx.Map.Get(meth.This).(*simulator.AuthorizationManager)
		if !ok {
			return nil, nil
		}
		w := &authzManager{AuthorizationManager: real}
		if ctx.Session != nil {
			// The simulator prefers the session's object to the hook's.
			ctx.Session.Put(w)
		}
		return w, nil
	}
	m.Service.TLS = &tls.Config{Certificates: []tls.Certificate{k.Server}, MinVersion: tls.VersionTLS12}
	srv := m.Service.NewServer()
	t.Cleanup(srv.Close)
	return "https://" + srv.URL.Host + "/sdk", caFile
}

// adminClient logs in for arranging roles and permissions (the simulator
// does not check who changes them).
func adminClient(t *testing.T, rawURL, caFile string) *vim25.Client {
	t.Helper()
	ctx := t.Context()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	sc := soap.NewClient(u, false)
	if err := sc.SetRootCAs(caFile); err != nil {
		t.Fatal(err)
	}
	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	if err := session.NewManager(c).Login(ctx, url.UserPassword("arranger@vsphere.local", "pw")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = session.NewManager(c).Logout(context.Background()) })
	return c
}

// A role with power on/off only, granted on the root folder: suspend and
// host maintenance are missing everywhere; one VM where the user has
// NoAccess lacks everything; an unknown VM is reported too; a user with
// Admin lacks nothing.
func TestMissingPrivilegesLimitedRole(t *testing.T) {
	const limited, full = "limited@vsphere.local", "full@vsphere.local"
	rawURL, caFile := startAuthzSim(t)
	ctx := t.Context()
	c := adminClient(t, rawURL, caFile)
	am := object.NewAuthorizationManager(c)
	if _, err := am.AddRole(ctx, "sundown-power", []string{vsphere.PrivPowerOff, vsphere.PrivPowerOn}); err != nil {
		t.Fatal(err)
	}
	roles, err := am.RoleList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	role := roles.ByName("sundown-power")
	noAccess := roles.ByName("NoAccess")
	admin := roles.ByName("Admin")
	if role == nil || noAccess == nil || admin == nil {
		t.Fatal("roles missing in the simulator")
	}
	root := c.ServiceContent.RootFolder
	if err := am.SetEntityPermissions(ctx, root, []types.Permission{
		{Principal: limited, RoleId: role.RoleId, Propagate: true},
		{Principal: full, RoleId: admin.RoleId, Propagate: true},
	}); err != nil {
		t.Fatal(err)
	}

	open := func(user string) *vsphere.Provider {
		p, err := vsphere.New(ctx, vsphere.Config{URL: rawURL, Username: user, Password: "pw", CAFile: caFile, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		return p
	}
	p := open(limited)
	inv, err := p.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Guests) < 2 || len(inv.Hosts) < 2 {
		t.Fatalf("model too small: %d VMs, %d hosts", len(inv.Guests), len(inv.Hosts))
	}
	denied := inv.Guests[1].ID
	if err := am.SetEntityPermissions(ctx, types.ManagedObjectReference{Type: "VirtualMachine", Value: denied},
		[]types.Permission{{Principal: limited, RoleId: noAccess.RoleId}}); err != nil {
		t.Fatal(err)
	}

	needs := everything(inv)
	needs[0].VMs = append(needs[0].VMs, "vm-does-not-exist")
	got, err := p.MissingPrivileges(ctx, needs)
	if err != nil {
		t.Fatal(err)
	}
	var allVMs, hosts []string
	for _, g := range inv.Guests {
		allVMs = append(allVMs, g.ID)
	}
	for _, h := range inv.Hosts {
		hosts = append(hosts, h.ID)
	}
	want := []vsphere.Need{
		{Privilege: vsphere.PrivPowerOff, VMs: sorted(denied, "vm-does-not-exist")},
		{Privilege: vsphere.PrivSuspend, VMs: sorted(allVMs...)},
		{Privilege: vsphere.PrivPowerOn, VMs: []string{denied}},
		{Privilege: vsphere.PrivMaintenance, Hosts: sorted(hosts...)},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("missing privileges (-want +got):\n%s", d)
	}

	if got, err := open(full).MissingPrivileges(ctx, everything(inv)); err != nil || got != nil {
		t.Errorf("admin: missing %+v, err %v; want none", got, err)
	}
}

func sorted(ids ...string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}
