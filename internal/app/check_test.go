package app_test

import (
	"context"
	"crypto/tls"
	"net"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sundown-ups/sundown/internal/apcupsd/nistest"
	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/nut/nuttest"
	"github.com/sundown-ups/sundown/internal/peer/sshd"
	"github.com/sundown-ups/sundown/internal/provider/proxmox/pvetest"
	"github.com/sundown-ups/sundown/internal/provider/ssh/sshtest"
	"github.com/sundown-ups/sundown/internal/provider/vsphere/vcsim"
)

// wire records every command line a nuttest server receives.
type wire struct {
	mu    sync.Mutex
	lines []string
}

func record(srv *nuttest.Server) *wire {
	w := &wire{}
	srv.SetHook(func(_ int, line string) (string, bool) {
		w.mu.Lock()
		w.lines = append(w.lines, line)
		w.mu.Unlock()
		return "", false
	})
	return w
}

func (w *wire) sent(prefix string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range w.lines {
		if strings.HasPrefix(strings.ToUpper(l), prefix) {
			return true
		}
	}
	return false
}

// harmless fails the test when the check sent anything that acts, or left
// a LOGIN behind.
func harmless(t *testing.T, srv *nuttest.Server, w *wire) {
	t.Helper()
	for _, verb := range []string{"FSD", "INSTCMD", "SET "} {
		if w.sent(verb) {
			t.Errorf("the check sent %s: %q", verb, w.lines)
		}
	}
	if srv.FSDSet("ups") || len(srv.InstCmds()) > 0 {
		t.Error("the check changed the UPS server's state")
	}
	if got := srv.Logins("ups"); len(got) != 0 {
		t.Errorf("LOGINs left behind: %v", got)
	}
	if w.sent("LOGIN") && !w.sent("LOGOUT") {
		t.Errorf("logged in without LOGOUT: %q", w.lines)
	}
}

func check(t *testing.T, yml string, timeout time.Duration) []app.CheckResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res := app.Check(ctx, testConfig(t, yml), nil, app.CheckOptions{Timeout: timeout})
	for _, r := range res {
		t.Logf("%s %s: ok=%v warn=%v: %s → fix: %s", r.Kind, r.Name, r.OK, r.Warn, r.What, r.Fix)
	}
	return res
}

func wantResult(t *testing.T, r app.CheckResult, ok, warn bool, what, fix []string) {
	t.Helper()
	if r.OK != ok || r.Warn != warn {
		t.Errorf("%s %s: ok=%v warn=%v, want ok=%v warn=%v (%s → %s)", r.Kind, r.Name, r.OK, r.Warn, ok, warn, r.What, r.Fix)
	}
	for _, s := range what {
		if !strings.Contains(r.What, s) {
			t.Errorf("%s %s: What %q lacks %q", r.Kind, r.Name, r.What, s)
		}
	}
	for _, s := range fix {
		if !strings.Contains(r.Fix, s) {
			t.Errorf("%s %s: Fix %q lacks %q", r.Kind, r.Name, r.Fix, s)
		}
	}
	if !ok && r.Fix == "" {
		t.Errorf("%s %s failed without a fix", r.Kind, r.Name)
	}
}

func upsYAML(addr, nut string) string {
	return "ups:\n  - name: rack\n    nut: {address: \"" + addr + "\", " + nut + "}\n"
}

func TestCheckNUTPrimaryAllGood(t *testing.T) {
	srv := newNUT(t)
	w := record(srv)
	res := check(t, upsYAML(srv.Addr(), "ups: ups, username: mon, password_env: NUT_PW, mode: primary, ups_command: shutdown.return"), 5*time.Second)
	if len(res) != 2 || res[0].Kind != "ups" || res[0].Name != "rack" || res[1].Kind != "plan" {
		t.Fatalf("results %+v, want the UPS then the plan", res)
	}
	wantResult(t, res[0], true, false, []string{"login as mon works", "PRIMARY granted", "ups.status OL",
		"battery.charge 100 %", "battery.runtime 3000 s", "ups_command shutdown.return offered"}, nil)
	wantResult(t, res[1], true, false, []string{"no targets"}, nil)
	harmless(t, srv, w)
	for _, verb := range []string{"LOGIN", "PRIMARY", "LIST CMD", "LOGOUT"} {
		if !w.sent(verb) {
			t.Errorf("the check did not send %s: %q", verb, w.lines)
		}
	}
}

func TestCheckNUTFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		arrange func(*nuttest.Server)
		nut     string
		what    []string
		fix     []string
	}{
		{
			name: "wrong password",
			nut:  "ups: ups, username: mon, password_env: NUT_WRONG_PW",
			what: []string{"LOGIN ups as mon failed", "ACCESS-DENIED"},
			fix:  []string{"upsd refused user mon", "$NUT_WRONG_PW", "upsd.users", "upsmon secondary"},
		},
		{
			name: "unknown UPS with login",
			nut:  "ups: myups, username: mon, password_env: NUT_PW",
			what: []string{"UNKNOWN-UPS"},
			fix:  []string{`no UPS named "myups": it serves ups`, "upsc -l 127.0.0.1"},
		},
		{
			name: "unknown UPS without login",
			nut:  "ups: myups",
			what: []string{"GET VAR myups failed"},
			fix:  []string{`no UPS named "myups": it serves ups`},
		},
		{
			name:    "primary refused",
			arrange: func(s *nuttest.Server) { s.AddUser("sec", "pw", nuttest.Perms{Upsmon: "secondary"}) },
			nut:     "ups: ups, username: sec, password_env: NUT_PW, mode: primary",
			what:    []string{"PRIMARY ups as sec failed", "ACCESS-DENIED"},
			fix:     []string{"add `upsmon primary` for user sec in upsd.users", "or set mode: secondary"},
		},
		{
			name:    "UPS command not offered",
			arrange: func(s *nuttest.Server) { s.SetCmds("ups", "beeper.disable", "test.battery.start") },
			nut:     "ups: ups, username: mon, password_env: NUT_PW, mode: primary, ups_command: shutdown.return",
			what:    []string{"ups_command shutdown.return is NOT offered"},
			fix:     []string{"beeper.disable, test.battery.start", "upscmd -l ups@127.0.0.1"},
		},
		{
			name:    "stale data",
			arrange: func(s *nuttest.Server) { s.SetError("ups", "DATA-STALE") },
			nut:     "ups: ups, username: mon, password_env: NUT_PW",
			what:    []string{"DATA-STALE"},
			fix:     []string{"the driver of ups sends no fresh data"},
		},
		{
			name:    "driver not connected",
			arrange: func(s *nuttest.Server) { s.SetError("ups", "DRIVER-NOT-CONNECTED") },
			nut:     "ups: ups",
			what:    []string{"DRIVER-NOT-CONNECTED"},
			fix:     []string{"upsdrvctl start ups"},
		},
		{
			name: "TLS not configured on the server",
			nut:  "ups: ups, tls: {fingerprint: \"sha256:" + strings.Repeat("00", 32) + "\"}",
			what: []string{"FEATURE-NOT-CONFIGURED"},
			fix:  []string{"upsd on 127.0.0.1 has no TLS configured"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NUT_WRONG_PW", "not-the-password")
			srv := newNUT(t)
			if tc.arrange != nil {
				tc.arrange(srv)
			}
			w := record(srv)
			res := check(t, upsYAML(srv.Addr(), tc.nut), 5*time.Second)
			wantResult(t, res[0], false, false, tc.what, tc.fix)
			if strings.Contains(res[0].What+res[0].Fix, "not-the-password") {
				t.Error("the password appears in the result")
			}
			harmless(t, srv, w)
		})
	}
}

func TestCheckNUTMissingRuntimeWarns(t *testing.T) {
	srv := newNUT(t)
	srv.DelVar("ups", "battery.runtime")
	w := record(srv)
	res := check(t, upsYAML(srv.Addr(), "ups: ups, username: mon, password_env: NUT_PW"), 5*time.Second)
	wantResult(t, res[0], true, true, []string{"ups.status OL", "battery.runtime not served"},
		[]string{"runtime budget", "on_battery_delay"})
	// Nothing else knows the runtime: the plan's fit is unknown too.
	if !strings.Contains(res[1].What, "no targets") {
		t.Errorf("plan: %+v", res[1])
	}
	harmless(t, srv, w)
}

func TestCheckNUTUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	res := check(t, upsYAML(addr, "ups: ups"), 5*time.Second)
	wantResult(t, res[0], false, false, []string{"connect to " + addr + " failed"}, []string{"nothing listens at " + addr})
}

// Checks run concurrently, each bounded by the timeout; results stay in
// config order.
func TestCheckTimeoutsAndOrder(t *testing.T) {
	var yml strings.Builder
	yml.WriteString("ups:\n")
	for i, name := range []string{"mute-a", "good", "mute-b", "mute-c"} {
		srv := newNUT(t)
		if i != 1 {
			srv.SetMute(true)
		}
		yml.WriteString("  - {name: " + name + ", nut: {address: \"" + srv.Addr() + "\", ups: ups}}\n")
	}
	start := time.Now()
	res := check(t, yml.String(), 500*time.Millisecond)
	took := time.Since(start)
	if len(res) != 5 {
		t.Fatalf("%d results, want 4 UPS + plan", len(res))
	}
	for i, name := range []string{"mute-a", "good", "mute-b", "mute-c"} {
		if res[i].Name != name {
			t.Errorf("result %d is %q, want %q (config order)", i, res[i].Name, name)
		}
		if name == "good" {
			wantResult(t, res[i], true, false, []string{"ups.status OL"}, nil)
		} else {
			wantResult(t, res[i], false, false, []string{"no answer within 0.5 s"}, []string{"no answer from 127.0.0.1:"})
		}
	}
	// Three silent servers at 0.5 s each: concurrent checks end together.
	if took > 1400*time.Millisecond {
		t.Errorf("Check took %s: the checks did not run concurrently or overran their timeout", took)
	}
}

func TestCheckNUTSTARTTLS(t *testing.T) {
	k, err := vcsim.NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	other, err := vcsim.NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca, otherCA := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "other.pem")
	if err := os.WriteFile(ca, k.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(otherCA, other.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := newNUT(t)
	srv.EnableTLS(k.Server)
	for _, tc := range []struct {
		name, tls string
		ok        bool
		fix       string
	}{
		{"good CA", `{ca_file: "` + ca + `"}`, true, ""},
		{"pinned", `{fingerprint: "sha256:` + k.Thumbprint() + `"}`, true, ""},
		{"other CA", `{ca_file: "` + otherCA + `"}`, false, "not signed by a CA in nut.tls.ca_file"},
		{"wrong name", `{ca_file: "` + ca + `", server_name: nut.example}`, false, "set nut.tls.server_name"},
		{"wrong pin", `{fingerprint: "sha256:` + other.Thumbprint() + `"}`, false, "does not match nut.tls.fingerprint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := record(srv)
			res := check(t, upsYAML(srv.Addr(), "ups: ups, username: mon, password_env: NUT_PW, tls: "+tc.tls), 5*time.Second)
			if tc.ok {
				wantResult(t, res[0], true, false, []string{"STARTTLS verified", "login as mon works"}, nil)
			} else {
				wantResult(t, res[0], false, false, nil, []string{tc.fix})
				if w.sent("USERNAME") || w.sent("PASSWORD") {
					t.Error("credentials sent over a connection whose TLS failed")
				}
			}
			harmless(t, srv, w)
		})
	}
}

// Against the real upsd: a good primary check and one refused PRIMARY
// leave NUMLOGINS at 0; a wrong password, a refused PRIMARY and a dead
// driver are named.
func TestCheckRealUPSD(t *testing.T) {
	srv := realUPSD(t, false)
	t.Setenv("NUT_OTHER_PW", "pw2")
	// dummy-ups offers load.off only (never sent: the check only lists).
	good := upsYAML(srv.Addr(), "ups: ups, username: mon, password_env: NUT_PW, mode: primary, ups_command: load.off")
	res := check(t, good, 10*time.Second)
	wantResult(t, res[0], true, false, []string{"login as mon works", "PRIMARY granted", "ups.status OL", "battery.runtime 3000 s",
		"ups_command load.off offered"}, nil)
	if n := numLogins(t, srv.Addr()); n != 0 {
		t.Errorf("NUMLOGINS = %d after the check, want 0", n)
	}
	res = check(t, upsYAML(srv.Addr(), "ups: ups, username: mon, password_env: NUT_PW, mode: primary, ups_command: shutdown.return"), 10*time.Second)
	wantResult(t, res[0], false, false, []string{"ups_command shutdown.return is NOT offered"}, []string{"(load.off;"})
	if n := numLogins(t, srv.Addr()); n != 0 {
		t.Errorf("NUMLOGINS = %d after the check, want 0", n)
	}
	res = check(t, upsYAML(srv.Addr(), "ups: ups, username: other, password_env: NUT_PW, mode: primary"), 10*time.Second)
	wantResult(t, res[0], false, false, []string{"LOGIN ups as other failed", "ACCESS-DENIED"}, []string{"upsd refused user other"})
	res = check(t, upsYAML(srv.Addr(), "ups: ups, username: other, password_env: NUT_OTHER_PW, mode: primary"), 10*time.Second)
	wantResult(t, res[0], false, false, []string{"PRIMARY ups as other failed"}, []string{"add `upsmon primary` for user other"})
	// The LOGIN before the refused PRIMARY was released too.
	if n := numLogins(t, srv.Addr()); n != 0 {
		t.Errorf("NUMLOGINS = %d after the failed check, want 0", n)
	}
	// (With the driver gone upsd answers NUMLOGINS with an error too.)
	srv.KillDriver(t, "ups")
	res = check(t, good, 10*time.Second)
	wantResult(t, res[0], false, false, []string{"DRIVER-NOT-CONNECTED"}, []string{"upsdrvctl start ups"})
}

func TestCheckApcupsdAndTrigger(t *testing.T) {
	nis := nistest.NewServer()
	if err := nis.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nis.Close() })
	nis.Set("ONLINE", nistest.FlagOnline|nistest.FlagBattPresent, 100, 21, 20)
	res := check(t, "ups:\n  - {name: apc, apcupsd: {address: \""+nis.Addr()+"\"}}\n  - {name: card, trigger: {}}\n", 5*time.Second)
	wantResult(t, res[0], true, false, []string{"apcupsd status read", "ups.status OL", "battery.runtime 1260 s"}, nil)
	wantResult(t, res[1], true, false, []string{"sundown trigger"}, nil)
	if cmds := nis.Commands(); len(cmds) != 1 || cmds[0] != "status" {
		t.Errorf("apcupsd got %q, want one status read", cmds)
	}
}

// ---- targets ----

func smallVCenter(t *testing.T) *vcsim.Sim {
	t.Helper()
	sim, err := vcsim.Start(t.Context(), vcsim.Fleet{
		VCenter: true,
		Hosts:   []vcsim.Host{{Name: "esx-1"}, {Name: "esx-2"}},
		VMs:     []vcsim.VM{{Name: "web-1", Host: "esx-1"}, {Name: "db-1", Host: "esx-2"}, {Name: "old-1", Host: "esx-2", PoweredOff: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	t.Setenv("VC_PW", sim.Password())
	t.Setenv("VC_WRONG_PW", "hunter2-wrong")
	return sim
}

func vsphereYAML(sim *vcsim.Sim, pwEnv string) string {
	return "targets:\n  - name: vc\n    vsphere: {url: \"" + sim.URL() + "\", username: \"" + sim.Username() +
		"\", password_env: " + pwEnv + ", ca_file: \"" + sim.CAFile() + "\"}\n    hosts: {maintenance: true, shutdown: true}\n"
}

// noPowerCalls fails the test when anything but reading reached vSphere.
func noPowerCalls(t *testing.T, sim *vcsim.Sim) {
	t.Helper()
	for _, m := range []string{"ShutdownGuest", "PowerOffVM_Task", "PowerOnVM_Task", "SuspendVM_Task",
		"EnterMaintenanceMode_Task", "ExitMaintenanceMode_Task", "ShutdownHost_Task"} {
		if n := sim.Calls(m); n != 0 {
			t.Errorf("the check called %s %d times", m, n)
		}
	}
}

func TestCheckVSphereGood(t *testing.T) {
	srv := newNUT(t)
	sim := smallVCenter(t)
	w := record(srv)
	res := check(t, upsYAML(srv.Addr(), "ups: ups, username: mon, password_env: NUT_PW")+vsphereYAML(sim, "VC_PW"), 20*time.Second)
	if len(res) != 3 || res[1].Kind != "target" || res[1].Name != "vc" {
		t.Fatalf("results %+v, want ups, target vc, plan", res)
	}
	wantResult(t, res[0], true, false, nil, nil)
	wantResult(t, res[1], true, false, []string{"vSphere login as " + sim.Username() + " works", "3 guests on 2 hosts",
		"privileges verified: VirtualMachine.Interact.PowerOff on 3 VMs, VirtualMachine.Interact.PowerOn on 3 VMs, Host.Config.Maintenance on 2 hosts"}, nil)
	wantResult(t, res[2], true, false, []string{"3 guest steps, 4 host steps", "battery: runtime 3000 s", "fits"}, nil)
	if sim.Calls("HasPrivilegeOnEntities") == 0 {
		t.Error("privileges were not asked of vSphere")
	}
	noPowerCalls(t, sim)
	harmless(t, srv, w)
}

func TestCheckVSphereWrongPassword(t *testing.T) {
	srv := newNUT(t)
	sim := smallVCenter(t)
	res := check(t, upsYAML(srv.Addr(), "ups: ups")+vsphereYAML(sim, "VC_WRONG_PW"), 20*time.Second)
	wantResult(t, res[1], false, false, []string{"connect", "auth"}, []string{"the login as " + sim.Username() + " was refused", "$VC_WRONG_PW"})
	wantResult(t, res[2], true, true, []string{"vc could not be read"}, nil)
	for _, r := range res {
		if strings.Contains(r.What+r.Fix, "hunter2-wrong") {
			t.Errorf("the password appears in %+v", r)
		}
	}
	noPowerCalls(t, sim)
}

// A server that refuses to say which privileges the account has: the
// target works, the privileges are flagged as unverified.
func TestCheckVSpherePrivilegesUnverifiable(t *testing.T) {
	srv := newNUT(t)
	sim := smallVCenter(t)
	sim.AddFaultRule(&simulator.FaultInjectionRule{
		MethodName: "HasPrivilegeOnEntities", ObjectType: "*", ObjectName: "*", Probability: 1,
		FaultType: simulator.FaultTypeCustom, Fault: &types.NoPermission{PrivilegeId: "System.View"}, Enabled: true,
	})
	res := check(t, upsYAML(srv.Addr(), "ups: ups")+vsphereYAML(sim, "VC_PW"), 20*time.Second)
	wantResult(t, res[1], true, true, []string{"the privileges could not be verified", "System.View"},
		[]string{"verify by hand", "VirtualMachine.Interact.PowerOff"})
	noPowerCalls(t, sim)
}

// The plan does not fit a battery that holds 60 s.
func TestCheckPlanDoesNotFit(t *testing.T) {
	srv := newNUT(t)
	srv.SetVar("ups", "battery.runtime", "60")
	sim := smallVCenter(t)
	res := check(t, upsYAML(srv.Addr(), "ups: ups")+vsphereYAML(sim, "VC_PW"), 20*time.Second)
	wantResult(t, res[2], false, false, []string{"battery: runtime 60 s", "DOES NOT FIT"}, []string{"runtime_margin", "shorten the action timeouts"})
}

func TestCheckProxmox(t *testing.T) {
	pve, err := pvetest.NewServer(pvetest.Fleet{
		Nodes:  []pvetest.Node{{Name: "pve1"}},
		Guests: []pvetest.Guest{{Node: "pve1", VMID: 101, Name: "app", Running: true}},
		Token:  "sundown@pve!check=right-secret",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pve.Close)
	srv := newNUT(t)
	yml := func(env string) string {
		return upsYAML(srv.Addr(), "ups: ups") + "targets:\n  - name: pve\n    proxmox: {url: \"" + pve.URL() +
			"\", token_id: \"sundown@pve!check\", secret_env: " + env + ", ca_file: \"" + pve.CAFile() + "\"}\n"
	}
	t.Setenv("PVE_GOOD", "right-secret")
	t.Setenv("PVE_BAD", "wrong-secret")
	res := check(t, yml("PVE_BAD"), 10*time.Second)
	wantResult(t, res[1], false, false, []string{"connect"}, []string{"the API token sundown@pve!check was refused", "$PVE_BAD"})
	if strings.Contains(res[1].What+res[1].Fix, "wrong-secret") {
		t.Error("the secret appears in the result")
	}
	res = check(t, yml("PVE_GOOD"), 10*time.Second)
	wantResult(t, res[1], true, false, []string{"Proxmox API token sundown@pve!check accepted", "1 guest on 1 host",
		"privileges verified: VM.PowerMgmt on 1 guest"}, nil)
	if pve.Calls("GET /access/permissions") == 0 {
		t.Error("the token's privileges were not asked")
	}
	for _, call := range []string{"POST /nodes/*/qemu/*/status/*", "POST /nodes/*/lxc/*/status/*", "POST /nodes/*/status"} {
		if n := pve.Calls(call); n != 0 {
			t.Errorf("the check sent %d %s", n, call)
		}
	}
	if pve.Calls("GET /version") == 0 {
		t.Error("the fake was not asked anything")
	}
}

// ---- missing vSphere privileges, end to end ----

// The simulator stores roles and permissions but its
// HasPrivilegeOnEntities grants everything to everyone. permModel fills
// that gap (as in internal/provider/vsphere's privileges test): it
// evaluates the simulator's own roles and permissions the way vCenter does
// (the permission on the entity, else the nearest ancestor's that
// propagates) for the calling session. It is a model of vCenter's rule.
type permModel struct {
	*simulator.AuthorizationManager
}

func (m *permModel) HasPrivilegeOnEntities(ctx *simulator.Context, req *types.HasPrivilegeOnEntities) soap.HasFault {
	body := &methods.HasPrivilegeOnEntitiesBody{Res: &types.HasPrivilegeOnEntitiesResponse{}}
	for _, e := range req.Entity {
		granted := m.granted(ctx, e, ctx.Session.UserName)
		ep := types.EntityPrivilege{Entity: e}
		for _, id := range req.PrivId {
			ep.PrivAvailability = append(ep.PrivAvailability, types.PrivilegeAvailability{PrivId: id, IsGranted: granted[id]})
		}
		body.Res.Returnval = append(body.Res.Returnval, ep)
	}
	return body
}

func (m *permModel) granted(ctx *simulator.Context, ref types.ManagedObjectReference, user string) map[string]bool {
	for first := true; ; first = false {
		obj, ok := ctx.Map.Get(ref).(mo.Entity)
		if !ok {
			return nil
		}
		perms, _ := m.RetrieveEntityPermissions(ctx, &types.RetrieveEntityPermissions{Entity: ref}).(*methods.RetrieveEntityPermissionsBody)
		for _, p := range perms.Res.Returnval {
			if p.Principal == user && (first || p.Propagate) {
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
		if obj.Entity().Parent == nil {
			return nil
		}
		ref = *obj.Entity().Parent
	}
}

// A service account whose role has power on/off only, with NoAccess on
// one VM: the check fails and names every missing privilege and where.
func TestCheckVSphereMissingPrivileges(t *testing.T) {
	const user = "svc-sundown@vsphere.local"
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
	m.Machine = 1
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Remove)
	var mu sync.Mutex
	calls := map[string]int{}
	m.Map().Handler = func(ctx *simulator.Context, meth *simulator.Method) (mo.Reference, types.BaseMethodFault) {
		mu.Lock()
		calls[meth.Name]++
		mu.Unlock()
		real, ok := ctx.Map.Get(meth.This).(*simulator.AuthorizationManager)
		if meth.Name != "HasPrivilegeOnEntities" || !ok || ctx.Session == nil {
			return nil, nil
		}
		w := &permModel{AuthorizationManager: real}
		ctx.Session.Put(w) // the simulator prefers the session's object
		return w, nil
	}
	m.Service.TLS = &tls.Config{Certificates: []tls.Certificate{k.Server}, MinVersion: tls.VersionTLS12}
	srv := m.Service.NewServer()
	t.Cleanup(srv.Close)
	url := "https://" + srv.URL.Host + "/sdk"

	// Arrange roles and permissions through the API (the simulator does
	// not check who does it).
	ctx := t.Context()
	c, err := govmomi.NewClient(ctx, &neturl.URL{Scheme: "https", Host: srv.URL.Host, Path: "/sdk", User: neturl.UserPassword("arranger", "pw")}, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Logout(context.Background()) })
	am := object.NewAuthorizationManager(c.Client)
	if _, err := am.AddRole(ctx, "sundown-power", []string{"VirtualMachine.Interact.PowerOff", "VirtualMachine.Interact.PowerOn"}); err != nil {
		t.Fatal(err)
	}
	roles, err := am.RoleList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := am.SetEntityPermissions(ctx, c.ServiceContent.RootFolder, []types.Permission{
		{Principal: user, RoleId: roles.ByName("sundown-power").RoleId, Propagate: true}}); err != nil {
		t.Fatal(err)
	}
	vms, err := find.NewFinder(c.Client).VirtualMachineList(ctx, "*")
	if err != nil || len(vms) < 2 {
		t.Fatalf("VMs of the model: %v %v", vms, err)
	}
	denied := vms[0]
	if err := am.SetEntityPermissions(ctx, denied.Reference(), []types.Permission{
		{Principal: user, RoleId: roles.ByName("NoAccess").RoleId}}); err != nil {
		t.Fatal(err)
	}
	deniedName, err := denied.ObjectName(ctx)
	if err != nil {
		t.Fatal(err)
	}

	nutSrv := newNUT(t)
	t.Setenv("SVC_PW", "whatever")
	res := check(t, upsYAML(nutSrv.Addr(), "ups: ups")+"targets:\n  - name: vc\n    vsphere: {url: \""+url+"\", username: \""+user+
		"\", password_env: SVC_PW, ca_file: \""+caFile+"\"}\n    hosts: {maintenance: true, shutdown: true}\n", 20*time.Second)
	wantResult(t, res[1], false, false,
		[]string{"MISSING privileges: VirtualMachine.Interact.PowerOff on 1 VM (" + deniedName + "), VirtualMachine.Interact.PowerOn on 1 VM (" + deniedName + "), Host.Config.Maintenance on "},
		[]string{"grant the role of " + user + " the privileges VirtualMachine.Interact.PowerOff, VirtualMachine.Interact.PowerOn on the VMs and Host.Config.Maintenance on the hosts"})
	mu.Lock()
	defer mu.Unlock()
	if calls["HasPrivilegeOnEntities"] == 0 {
		t.Error("privileges were not asked")
	}
	for name, n := range calls {
		if strings.Contains(name, "Power") || strings.Contains(name, "Shutdown") || strings.Contains(name, "Maintenance") || strings.Contains(name, "Suspend") {
			t.Errorf("the check called %s %d times", name, n)
		}
	}
}

// ---- missing Proxmox privileges, end to end ----

// pveActs lists the requests to the fake that change something.
func pveActs(pve *pvetest.Server) map[string]int {
	out := map[string]int{}
	for _, c := range []string{"POST /nodes/*/qemu/*/status/*", "POST /nodes/*/lxc/*/status/*", "POST /nodes/*/status",
		"PUT /cluster/ha/resources/*", "POST /cluster/ha/*", "DELETE *", "PUT /access/*", "POST /access/*"} {
		if n := pve.Calls(c); n > 0 {
			out[c] = n
		}
	}
	return out
}

// A token that lacks VM.PowerMgmt on one VM, Sys.PowerMgmt on the node and
// Sys.Console (for the HA guest): the check fails, names each privilege
// and path, and gives the pveum commands; nothing is changed.
func TestCheckProxmoxMissingPrivileges(t *testing.T) {
	pve, err := pvetest.NewServer(pvetest.Fleet{
		Nodes: []pvetest.Node{{Name: "pve1"}},
		Guests: []pvetest.Guest{
			{Node: "pve1", VMID: 101, Name: "app", Running: true},
			{Node: "pve1", VMID: 102, Name: "db", Running: true},
			{Node: "pve1", VMID: 103, Name: "dc", Running: true, HA: true},
		},
		Token: "sundown@pve!check=right-secret",
		ACL: []pvetest.ACL{
			{Path: "/", Propagate: true, Privileges: []string{"VM.Audit", "VM.Monitor", "Sys.Audit", "VM.PowerMgmt"}},
			{Path: "/vms/102", Privileges: []string{"VM.Audit", "VM.Monitor"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pve.Close)
	srv := newNUT(t)
	t.Setenv("PVE_GOOD", "right-secret")
	res := check(t, upsYAML(srv.Addr(), "ups: ups")+"targets:\n  - name: pve\n    proxmox: {url: \""+pve.URL()+
		"\", token_id: \"sundown@pve!check\", secret_env: PVE_GOOD, ca_file: \""+pve.CAFile()+"\"}\n    hosts: {shutdown: true}\n", 10*time.Second)
	wantResult(t, res[1], false, false,
		[]string{"3 guests on 1 host", "MISSING privileges: Sys.Console on / (to set the HA state of dc), Sys.PowerMgmt on /nodes/pve1 (pve1), VM.PowerMgmt on /vms/102 (db)"},
		[]string{"pveum acl modify /vms/102 --tokens 'sundown@pve!check' --roles PVEVMUser",
			"pveum acl modify / --tokens 'sundown@pve!check' --roles Sundown",
			"pveum acl modify /nodes/pve1 --tokens 'sundown@pve!check' --roles Sundown",
			`pveum role add Sundown --privs "Sys.PowerMgmt Sys.Console"`})
	if strings.Contains(res[1].What, "/vms/101") {
		t.Errorf("a granted path is reported missing: %s", res[1].What)
	}
	if n := pve.Calls("GET /access/permissions"); n != 5 {
		t.Errorf("%d permission queries, want 5 (/, /nodes/pve1, /vms/101..103)", n)
	}
	if acts := pveActs(pve); len(acts) > 0 {
		t.Errorf("the check changed something: %v", acts)
	}
	for _, id := range []int{101, 102, 103} {
		if g, _ := pve.State(id); g.Status != "running" || (id == 103 && g.HAState != "started") {
			t.Errorf("guest %d after the check: %+v", id, g)
		}
	}
}

// ---- SSH shutdown commands, end to end ----

// Three hosts over SSH, each sshd answering `sudo -n -l` like sudo: one
// whose sudoers lacks the rule, one that has it, and a Windows host whose
// command cannot be checked. Nothing but `sudo -n -l` (and a `command -v`
// lookup) is ever sent.
func TestCheckSSHShutdownCommand(t *testing.T) {
	refused := sshd.Start(t, sshd.Options{Emulate: sshtest.Sudo()})
	allowed := sshd.Start(t, sshd.Options{Emulate: sshtest.Sudo("root /usr/bin/systemctl poweroff")})
	windows := sshd.Start(t, sshd.Options{Emulate: sshtest.Sudo()})
	target := func(name string, s *sshd.Server, command string) string {
		y := "  - name: " + name + "\n    ssh: {address: \"" + s.Addr() + "\", user: " + s.User() + ", key_file: \"" + s.ClientKeyPath() +
			"\", known_hosts_file: \"" + s.WriteKnownHosts(t) + "\", host_name: " + name
		if command != "" {
			y += ", command: \"" + command + "\""
		}
		return y + "}\n    hosts: {shutdown: true}\n"
	}
	srv := newNUT(t)
	res := check(t, upsYAML(srv.Addr(), "ups: ups")+"targets:\n"+target("nas", refused, "")+target("web", allowed, "")+
		target("win", windows, "shutdown /s /t 0"), 10*time.Second)
	if len(res) != 5 {
		t.Fatalf("%d results, want ups, 3 targets, plan", len(res))
	}
	wantResult(t, res[1], false, false,
		[]string{"shutdown command `sudo -n systemctl poweroff` REFUSED", "sudo: a password is required"},
		[]string{"on " + refused.Addr() + " add the sudoers rule `" + refused.User() + " ALL=(root) NOPASSWD: /usr/bin/systemctl poweroff`"})
	wantResult(t, res[2], true, false,
		[]string{"shutdown command `sudo -n systemctl poweroff` allowed (`sudo -n -l systemctl poweroff`: /usr/bin/systemctl poweroff)"}, nil)
	wantResult(t, res[3], true, true,
		[]string{"shutdown command `shutdown /s /t 0` cannot be verified without running it"}, []string{"try it by hand"})

	for _, s := range []*sshd.Server{refused, allowed, windows} {
		for _, c := range s.Commands() {
			if !strings.HasPrefix(c, "sudo -n -l ") && !strings.Contains(c, " command -v ") {
				t.Errorf("the check sent %q to %s", c, s.Addr())
			}
		}
	}
	if got := allowed.Commands(); len(got) != 1 {
		t.Errorf("allowed host got %q, want one sudo -n -l", got)
	}
	if got := windows.Commands(); len(got) != 0 {
		t.Errorf("the Windows host was sent %q; its command must not even be probed", got)
	}
}
