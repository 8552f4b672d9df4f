package site

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	gossh "golang.org/x/crypto/ssh"

	"github.com/sundown-ups/sundown/internal/api"
	"github.com/sundown-ups/sundown/internal/peer/sshd"
	"github.com/sundown-ups/sundown/internal/provider/vsphere/vcsim"
)

// oneHost is a vCenter with host esx-1 and the given VMs on it.
func oneHost(vms ...vcsim.VM) vcsim.Fleet {
	for i := range vms {
		vms[i].Host = "esx-1"
	}
	return vcsim.Fleet{VCenter: true, Hosts: []vcsim.Host{{Name: "esx-1"}}, VMs: vms}
}

const quick = 500 * time.Millisecond // a guest that shuts down quickly

// Scenario 1: a guest ignores its shutdown request. The chain "shutdown 3s
// → poweroff 5s" must power it off exactly 3 s after its step started.
func TestTargetGuestIgnoresShutdown(t *testing.T) {
	s := newSite(t, siteConfig{
		Fleet: oneHost(vcsim.VM{Name: "hung", IgnoreShutdown: true}, vcsim.VM{Name: "ok-1", ShutdownDelay: quick}),
		Shutdown: `shutdown:
  default_action: ["shutdown 10s", "poweroff 5s"]
  guests:
    - {name: hung, action: ["shutdown 3s", "poweroff 5s"]}
`,
	})
	d := s.startDaemon("daemon")
	d.waitLog("plan ready", 30*time.Second)
	powerOffAt := s.firstCall("PowerOffVM_Task", "hung")
	d.trigger("shutdown")
	rs := d.waitRunDone(40 * time.Second)
	off := powerOffAt()

	key := s.guestKey("hung")
	start, ok := find(rs, "step-start", key)
	if !ok {
		t.Fatalf("no step-start for the hung guest (%s) in the journal", key)
	}
	if off.IsZero() {
		t.Fatal("PowerOffVM_Task never reached the simulator for the hung guest")
	}
	after := off.Sub(start.T)
	t.Logf("hung guest: step started %s, PowerOffVM_Task seen %.3fs later (deadline 3s)", start.T.Format(time.StampMilli), after.Seconds())
	// The journal's time is taken just after the step's clock starts; the
	// watch polls every 5 ms.
	if after < 2950*time.Millisecond || after > 3500*time.Millisecond {
		t.Errorf("PowerOff came %.3fs after the step started, want 3s (−0.05s, +0.5s)", after.Seconds())
	}
	if end, ok := find(rs, "step-end", key); !ok || end.Outcome != "escalated" || end.Action != "poweroff" {
		t.Errorf("hung guest step-end %+v, want outcome escalated, action poweroff", end)
	}
	if st := s.sim.PowerState("hung"); st != "poweredOff" {
		t.Errorf("hung guest is %s, want poweredOff", st)
	}
	for vm, want := range map[string][2]int{"hung": {1, 1}, "ok-1": {1, 0}} {
		if n := s.sim.CallsFor("ShutdownGuest", vm); n != want[0] {
			t.Errorf("ShutdownGuest on %s: %d calls, want %d", vm, n, want[0])
		}
		if n := s.sim.CallsFor("PowerOffVM_Task", vm); n != want[1] {
			t.Errorf("PowerOffVM_Task on %s: %d calls, want %d", vm, n, want[1])
		}
	}
	if end, _ := find(rs, "step-end", s.guestKey("ok-1")); end.Outcome != "done" {
		t.Errorf("ok-1 ended %q (%s), want done", end.Outcome, end.Err)
	}
	if got := s.sim.HostShutdowns(); !slices.Equal(got, []string{"esx-1"}) {
		t.Errorf("host shutdowns %v, want [esx-1]", got)
	}
}

// Scenario 2: hypervisor tasks hang. PowerOffVM_Task and
// EnterMaintenanceMode_Task answer only after 6 s; the steps must fail at
// their own deadlines, the plan go on (the host shutdowns forced), and the
// final report list what was not done.
func TestTargetHypervisorTaskHangs(t *testing.T) {
	report := newReceiver(t, "ok")
	c := siteConfig{
		Fleet: vcsim.Fleet{VCenter: true, Hosts: []vcsim.Host{{Name: "esx-1"}, {Name: "esx-2"}},
			VMs: []vcsim.VM{
				{Name: "stuck", Host: "esx-1", IgnoreShutdown: true},
				{Name: "a-1", Host: "esx-1", ShutdownDelay: quick},
				{Name: "b-1", Host: "esx-2", ShutdownDelay: quick},
			},
			MethodDelay: map[string]time.Duration{"PowerOffVM_Task": 6 * time.Second, "EnterMaintenanceMode_Task": 6 * time.Second},
		},
		VCHosts: "{maintenance: true, maintenance_timeout: 2s, shutdown: true, shutdown_timeout: 10s}",
		Shutdown: `shutdown:
  default_action: ["shutdown 10s", "poweroff 5s"]
  guests:
    - {name: stuck, action: ["shutdown 1s", "poweroff 2s"]}
`,
	}
	c.addWebhook("report", report, "")
	s := newSite(t, c)
	d := s.startDaemon("daemon")
	d.waitLog("plan ready", 30*time.Second)
	d.trigger("shutdown")
	rs := d.waitRunDone(60 * time.Second)
	d.waitLog("shutdown finished", 10*time.Second)

	elapsed := func(key string) (rec, time.Duration) {
		st, ok1 := find(rs, "step-start", key)
		end, ok2 := find(rs, "step-end", key)
		if !ok1 || !ok2 {
			t.Errorf("%s: step-start %v, step-end %v in the journal", key, ok1, ok2)
			return end, 0
		}
		return end, end.T.Sub(st.T)
	}
	end, took := elapsed(s.guestKey("stuck"))
	t.Logf("stuck guest: %s after %.2fs: %s", end.Outcome, took.Seconds(), end.Err)
	if end.Outcome != "failed" {
		t.Errorf("stuck guest ended %q, want failed (its PowerOff hangs past the deadline)", end.Outcome)
	}
	if took < 2900*time.Millisecond || took > 3800*time.Millisecond {
		t.Errorf("stuck guest step took %.2fs, want its deadline 1s+2s = 3s (+0.8s)", took.Seconds())
	}
	for _, h := range []string{"esx-1", "esx-2"} {
		end, took := elapsed(s.maintKey(h))
		t.Logf("%s maintenance: %s after %.2fs: %s", h, end.Outcome, took.Seconds(), end.Err)
		if end.Outcome != "failed" {
			t.Errorf("%s maintenance ended %q, want failed (the task hangs)", h, end.Outcome)
		}
		if took < 1900*time.Millisecond || took > 2800*time.Millisecond {
			t.Errorf("%s maintenance step took %.2fs, want its 2s deadline (+0.8s)", h, took.Seconds())
		}
		off, _ := elapsed(s.hostOffKey(h))
		if off.Outcome != "done" || !strings.Contains(off.Note, "forced") {
			t.Errorf("%s shutdown ended %q note %q, want done, forced", h, off.Outcome, off.Note)
		}
	}
	for _, vm := range []string{"a-1", "b-1"} {
		if end, _ := find(rs, "step-end", s.guestKey(vm)); end.Outcome != "done" {
			t.Errorf("%s ended %q (%s), want done: the hung tasks must not hold other guests", vm, end.Outcome, end.Err)
		}
	}
	got := s.sim.HostShutdowns()
	slices.Sort(got)
	if !slices.Equal(got, []string{"esx-1", "esx-2"}) {
		t.Errorf("host shutdowns %v, want both hosts", got)
	}

	// The daemon's status and its final report say what was not done.
	st := d.status()
	for _, key := range []string{s.guestKey("stuck"), s.maintKey("esx-1"), s.maintKey("esx-2")} {
		if step, ok := statusStep(st, key); !ok || step.State != "failed" || step.Error == "" {
			t.Errorf("status step %s: %+v, want failed with an error", key, step)
		}
	}
	done := waitNotice(t, report, "SHUTDOWN_DONE", 15*time.Second)
	t.Logf("final report: %s\n%s", done.Subject, done.Body)
	for _, want := range []string{"stuck", "esx-1", "esx-2", "3 failed"} {
		if !strings.Contains(done.Subject+"\n"+done.Body, want) {
			t.Errorf("the final report does not mention %q", want)
		}
	}
}

// waitNotice waits for a notification of type typ at r.
func waitNotice(t *testing.T, r *receiver, typ string, timeout time.Duration) notice {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, n := range r.notices(t) {
			if n.Type == typ {
				return n
			}
		}
		if time.Now().After(deadline) {
			var types []string
			for _, n := range r.notices(t) {
				types = append(types, n.Type)
			}
			t.Fatalf("no %s notification within %s (got %v)", typ, timeout, types)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Scenario 3: the vSphere session expires while sundown idles (vCenter
// restarted, idle timeout): the shutdown must log in again and proceed.
func TestTargetSessionExpiresWhileIdle(t *testing.T) {
	s := newSite(t, siteConfig{
		Fleet: oneHost(vcsim.VM{Name: "v-1", ShutdownDelay: quick}, vcsim.VM{Name: "v-2", ShutdownDelay: quick},
			vcsim.VM{Name: "v-3", ShutdownDelay: quick}),
	})
	d := s.startDaemon("daemon")
	d.waitLog("plan ready", 30*time.Second)
	n := terminateSundownSessions(t, s)
	loginsBefore := s.sim.Calls("Login")
	t.Logf("terminated %d sundown session(s) after the plan", n)
	d.trigger("shutdown")
	rs := d.waitRunDone(40 * time.Second)
	d.waitLog("shutdown finished", 10*time.Second)

	if !strings.Contains(d.output(), "vsphere: session re-established") {
		t.Error(`the daemon did not log "vsphere: session re-established"`)
	}
	if got := s.sim.Calls("Login") - loginsBefore; got < 1 {
		t.Errorf("%d logins after the sessions were terminated, want at least 1", got)
	}
	for _, vm := range []string{"v-1", "v-2", "v-3"} {
		if end, _ := find(rs, "step-end", s.guestKey(vm)); end.Outcome != "done" {
			t.Errorf("%s ended %q (%s), want done", vm, end.Outcome, end.Err)
		}
		if st := s.sim.PowerState(vm); st != "poweredOff" {
			t.Errorf("%s is %s", vm, st)
		}
		if n := s.sim.CallsFor("ShutdownGuest", vm); n != 1 {
			t.Errorf("ShutdownGuest on %s: %d calls, want 1", vm, n)
		}
	}
	if got := s.sim.HostShutdowns(); !slices.Equal(got, []string{"esx-1"}) {
		t.Errorf("host shutdowns %v, want [esx-1]", got)
	}
}

// terminateSundownSessions ends every session the daemon opened (user
// agent "sundown"), as a vCenter restart or an idle timeout would, through
// an administrator's client of this test.
func terminateSundownSessions(t *testing.T, s *site) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	u, err := url.Parse(s.sim.URL())
	if err != nil {
		t.Fatal(err)
	}
	sc := soap.NewClient(u, false)
	if err := sc.SetRootCAs(s.sim.CAFile()); err != nil {
		t.Fatal(err)
	}
	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	sm := session.NewManager(c)
	if err := sm.Login(ctx, url.UserPassword(s.sim.Username(), s.sim.Password())); err != nil {
		t.Fatalf("admin login: %v", err)
	}
	defer sm.Logout(context.Background())
	var m mo.SessionManager
	if err := property.DefaultCollector(c).RetrieveOne(ctx, *c.ServiceContent.SessionManager, []string{"sessionList"}, &m); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, us := range m.SessionList {
		if us.UserAgent == "sundown" {
			ids = append(ids, us.Key)
		}
	}
	if len(ids) == 0 {
		t.Fatal("no sundown session to terminate")
	}
	if err := sm.TerminateSession(ctx, ids); err != nil {
		t.Fatalf("terminate sessions: %v", err)
	}
	return len(ids)
}

const powerOffPrivilege = "VirtualMachine.Interact.PowerOff"

// Scenario 4: a privilege is missing for one guest. Its step fails at
// once with an error that names the privilege; the other guests proceed.
func TestTargetPermissionMissing(t *testing.T) {
	s := newSite(t, siteConfig{
		Fleet: oneHost(vcsim.VM{Name: "denied"}, vcsim.VM{Name: "ok-1", ShutdownDelay: quick},
			vcsim.VM{Name: "ok-2", ShutdownDelay: quick}),
		VCPasswordFile: true,
	})
	ref := types.ManagedObjectReference{Type: "VirtualMachine", Value: s.sim.VMID("denied")}
	for _, m := range []string{"ShutdownGuest", "PowerOffVM_Task"} {
		s.sim.AddFaultRule(&simulator.FaultInjectionRule{
			MethodName: m, ObjectType: "VirtualMachine", ObjectName: "denied", Probability: 1,
			FaultType: simulator.FaultTypeCustom, Fault: &types.NoPermission{Object: &ref, PrivilegeId: powerOffPrivilege},
			Enabled: true,
		})
	}
	d := s.startDaemon("daemon")
	d.waitLog("plan ready", 30*time.Second)
	d.trigger("shutdown")
	rs := d.waitRunDone(40 * time.Second)
	d.waitLog("shutdown finished", 10*time.Second)

	key := s.guestKey("denied")
	start, _ := find(rs, "step-start", key)
	end, ok := find(rs, "step-end", key)
	if !ok {
		t.Fatalf("no step-end for the denied guest")
	}
	t.Logf("denied guest: %s after %.2fs: %s", end.Outcome, end.T.Sub(start.T).Seconds(), end.Err)
	if end.Outcome != "failed" {
		t.Errorf("denied guest ended %q, want failed", end.Outcome)
	}
	if !strings.Contains(end.Err, "missing privilege "+powerOffPrivilege) {
		t.Errorf("the denied guest's error does not name the privilege %s: %q", powerOffPrivilege, end.Err)
	}
	if took := end.T.Sub(start.T); took > 2*time.Second {
		t.Errorf("the denied guest took %.2fs: a permission error must not be retried until the deadline", took.Seconds())
	}
	for _, m := range []string{"ShutdownGuest", "PowerOffVM_Task"} {
		if n := s.sim.CallsFor(m, "denied"); n != 1 {
			t.Errorf("%s on the denied guest: %d calls, want 1 (no retry of a permission error)", m, n)
		}
	}
	if step, ok := statusStep(d.status(), key); !ok || !strings.Contains(step.Error, powerOffPrivilege) {
		t.Errorf("status step of the denied guest %+v: want its error to name %s", step, powerOffPrivilege)
	}
	if !logHas(d.output(), "step failed", powerOffPrivilege) {
		t.Errorf("no log line says the step failed for want of %s", powerOffPrivilege)
	}
	for _, vm := range []string{"ok-1", "ok-2"} {
		if end, _ := find(rs, "step-end", s.guestKey(vm)); end.Outcome != "done" {
			t.Errorf("%s ended %q (%s), want done", vm, end.Outcome, end.Err)
		}
	}
	if got := s.sim.HostShutdowns(); !slices.Equal(got, []string{"esx-1"}) {
		t.Errorf("host shutdowns %v, want [esx-1]", got)
	}
}

// logHas reports whether one line of out holds every part.
func logHas(out string, parts ...string) bool {
	for line := range strings.SplitSeq(out, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// Scenario 5: an SSH host's key changed between the plan and the
// shutdown. sundown must refuse it (nothing run there), say so, and shut
// the other targets down.
func TestTargetSSHHostKeyChanged(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{Emulate: "exit 0"})
	kh := srv.WriteKnownHosts(t)
	report := newReceiver(t, "ok")
	c := siteConfig{
		Fleet: oneHost(vcsim.VM{Name: "v-1", ShutdownDelay: quick}, vcsim.VM{Name: "v-2", ShutdownDelay: quick}),
		ExtraTargets: "  - name: nas\n" +
			"    ssh: {address: " + strconv.Quote(srv.Addr()) + ", user: " + strconv.Quote(srv.User()) +
			", key_file: " + strconv.Quote(srv.ClientKeyPath()) + ", known_hosts_file: " + strconv.Quote(kh) +
			", command: poweroff, host_name: nas}\n" +
			"    hosts: {shutdown: true, shutdown_timeout: 5s}\n",
	}
	c.addWebhook("report", report, "")
	s := newSite(t, c)
	d := s.startDaemon("daemon")
	d.waitLog("plan ready", 30*time.Second)
	if tg, ok := target(d.status(), "nas"); !ok || !tg.Reachable {
		t.Fatalf("before the key change the nas target is %+v, want reachable", tg)
	}
	before := len(srv.Commands())
	srv.RotateHostKey(t)
	d.trigger("shutdown")
	d.waitRunDone(40 * time.Second)
	d.waitLog("shutdown finished", 10*time.Second)

	if cmds := srv.Commands(); len(cmds) != before {
		t.Errorf("commands were run on the host whose key changed: %q", cmds[before:])
	}
	st := d.status()
	var where []string
	for _, step := range st.Shutdown.Steps {
		if strings.Contains(step.Key, "nas") {
			where = append(where, fmt.Sprintf("step %s %s: %s", step.Key, step.State, step.Error))
			if step.State != "failed" || !strings.Contains(step.Error, "host key changed") {
				t.Errorf("nas step %s is %s (%q), want failed with a host-key error", step.Key, step.State, step.Error)
			}
		}
	}
	for _, n := range st.Shutdown.Notes {
		if strings.Contains(n, "nas") {
			where = append(where, "note: "+n)
		}
	}
	t.Logf("what the status says of nas: %q", where)
	if !slices.ContainsFunc(where, func(w string) bool { return strings.Contains(w, "host key changed") }) {
		t.Errorf("the status says nothing of nas's changed host key (steps and notes: %q)", where)
	}
	for _, vm := range []string{"v-1", "v-2"} {
		if st := s.sim.PowerState(vm); st != "poweredOff" {
			t.Errorf("%s is %s: the other targets must proceed", vm, st)
		}
	}
	if got := s.sim.HostShutdowns(); !slices.Equal(got, []string{"esx-1"}) {
		t.Errorf("host shutdowns %v, want [esx-1]", got)
	}
	done := waitNotice(t, report, "SHUTDOWN_DONE", 15*time.Second)
	t.Logf("final report: %s\n%s", done.Subject, done.Body)
	if !strings.Contains(done.Body, "nas") {
		t.Errorf("BUG: the final report (SHUTDOWN_DONE) does not say that nas was not shut down (host key changed): %q / %q",
			done.Subject, done.Body)
	}
}

// target finds a configured target in the status's plan.
func target(st api.Status, name string) (api.Target, bool) {
	if st.Plan == nil {
		return api.Target{}, false
	}
	for _, tg := range st.Plan.Targets {
		if tg.Name == name {
			return tg, true
		}
	}
	return api.Target{}, false
}

// Scenario 6: targets unreachable for the whole event (an SSH host and a
// libvirt host on closed loopback ports) next to a working vCenter. The
// others proceed; the status and the final report say what was not done.
func TestTargetUnreachableWholeEvent(t *testing.T) {
	dir := t.TempDir()
	sshPort, lvPort := closedPort(t), closedPort(t)
	key, kh := deadSSHFiles(t, dir, sshPort)
	report := newReceiver(t, "ok")
	c := siteConfig{
		Fleet: oneHost(vcsim.VM{Name: "v-1", ShutdownDelay: quick}, vcsim.VM{Name: "v-2", ShutdownDelay: quick}),
		ExtraTargets: "  - name: dead-ssh\n" +
			"    ssh: {address: \"127.0.0.1:" + strconv.Itoa(sshPort) + "\", user: root, key_file: " + strconv.Quote(key) +
			", known_hosts_file: " + strconv.Quote(kh) + ", command: poweroff, host_name: dead-ssh}\n" +
			"    hosts: {shutdown: true, shutdown_timeout: 5s}\n" +
			"  - name: dead-kvm\n" +
			"    libvirt: {uri: \"qemu+tcp://127.0.0.1:" + strconv.Itoa(lvPort) + "/system\"}\n",
	}
	c.addWebhook("report", report, "")
	s := newSite(t, c)
	d := s.startDaemon("daemon")
	d.waitLog("plan ready", 30*time.Second)
	st := d.status()
	for _, name := range []string{"dead-ssh", "dead-kvm"} {
		if tg, ok := target(st, name); !ok || tg.Reachable || tg.Error == "" {
			t.Errorf("before the outage, status plan.targets %s = %+v, want unreachable with an error", name, tg)
		}
	}
	if tg, ok := target(st, "vc"); !ok || !tg.Reachable || tg.Guests != 2 {
		t.Errorf("status plan.targets vc = %+v, want reachable with 2 guests", tg)
	}
	d.trigger("shutdown")
	d.waitRunDone(40 * time.Second)
	d.waitLog("shutdown finished", 10*time.Second)

	st = d.status()
	for _, name := range []string{"dead-ssh", "dead-kvm"} {
		if tg, _ := target(st, name); tg.Reachable {
			t.Errorf("after the shutdown, status plan.targets %s = %+v, want unreachable", name, tg)
		}
		if !slices.ContainsFunc(st.Shutdown.Notes, func(n string) bool { return strings.Contains(n, "unreachable") && strings.Contains(n, name) }) {
			t.Errorf("status shutdown.notes %q do not say %s was unreachable", st.Shutdown.Notes, name)
		}
	}
	t.Logf("status: targets %+v; notes %q", st.Plan.Targets, st.Shutdown.Notes)
	for _, vm := range []string{"v-1", "v-2"} {
		if ps := s.sim.PowerState(vm); ps != "poweredOff" {
			t.Errorf("%s is %s: the reachable target must proceed", vm, ps)
		}
	}
	if got := s.sim.HostShutdowns(); !slices.Equal(got, []string{"esx-1"}) {
		t.Errorf("host shutdowns %v, want [esx-1]", got)
	}
	done := waitNotice(t, report, "SHUTDOWN_DONE", 15*time.Second)
	t.Logf("final report: %s\n%s", done.Subject, done.Body)
	for _, name := range []string{"dead-ssh", "dead-kvm"} {
		if !strings.Contains(done.Body, name) {
			t.Errorf("BUG: the final report (SHUTDOWN_DONE) does not say that target %s was not shut down (unreachable): %q / %q",
				name, done.Subject, done.Body)
		}
	}
}

// deadSSHFiles writes a client key and a known_hosts line for a host that
// does not exist, so that the config is valid and the dial is refused.
func deadSSHFiles(t *testing.T, dir string, port int) (keyFile, knownHosts string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile = filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	hostPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := gossh.NewPublicKey(hostPub)
	if err != nil {
		t.Fatal(err)
	}
	knownHosts = filepath.Join(dir, "known_hosts")
	line := fmt.Sprintf("[127.0.0.1]:%d %s", port, gossh.MarshalAuthorizedKey(pk))
	if err := os.WriteFile(knownHosts, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return keyFile, knownHosts
}
