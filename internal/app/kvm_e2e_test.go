package app_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/peer/libvirtd"
	"github.com/sundown-ups/sundown/internal/peer/sshd"
	"github.com/sundown-ups/sundown/internal/policy"
)

// A KVM site through the daemon: guests on a real libvirtd go down in
// dependency order, then the KVM host itself over SSH (host_ssh: a real
// sshd that records the command), then a NAS behind another real sshd.
func TestDaemonLibvirtAndSSH(t *testing.T) {
	lv := libvirtd.Start(t)
	node, err := libvirtd.WriteNode(t.TempDir(), []libvirtd.Domain{
		{Name: "web-1", UUID: "6b7c6e2a-0000-4000-8000-000000000001"},
		{Name: "db-1", UUID: "6b7c6e2a-0000-4000-8000-000000000002"},
		{Name: "old", UUID: "6b7c6e2a-0000-4000-8000-000000000003", Off: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	nas := sshd.Start(t, sshd.Options{Emulate: "echo ok"})
	kvmHost := sshd.Start(t, sshd.Options{Emulate: "echo ok"})
	srv := newNUT(t)
	c := testConfig(t, `state_dir: "`+t.TempDir()+`"
power: {poll_interval: 100ms, deadtime: 2s}
ups:
  - name: rack
    nut: {address: "`+srv.Addr()+`", ups: ups}
targets:
  - name: kvm
    libvirt:
      uri: "`+lv.NodeURI(node)+`"
      host_name: kvm1
      host_ssh: {address: "`+kvmHost.Addr()+`", user: `+kvmHost.User()+`, key_file: "`+kvmHost.ClientKeyPath()+`", known_hosts_file: "`+kvmHost.WriteKnownHosts(t)+`", command: "systemctl poweroff"}
    hosts: {shutdown: true}
  - name: nas
    ssh: {address: "`+nas.Addr()+`", user: `+nas.User()+`, key_file: "`+nas.ClientKeyPath()+`", known_hosts_file: "`+nas.WriteKnownHosts(t)+`", command: "poweroff", host_name: nas}
    hosts: {shutdown: true}
shutdown:
  default_action: ["shutdown 5s", "poweroff 5s"]
  groups:
    - {name: web, select: {names: ["web-*"]}, depends_on: [db]}
    - {name: db, select: {names: ["db-*"]}}
`)
	var order []string
	r := start(t, c, true)
	r.waitFor(t, "plan", 20*time.Second, func(s app.Snapshot) bool { return s.Plan != nil && s.Plan.Steps > 0 })
	srv.SetStatus("ups", "OB LB")
	s := r.waitFor(t, "shutdown done", 30*time.Second, func(s app.Snapshot) bool {
		return s.Decision.Kind == policy.Shutdown && s.Shutdown != nil && s.Shutdown.State == "done"
	})
	for _, st := range s.Shutdown.Steps {
		if st.State == "failed" {
			t.Errorf("step %s failed: %s", st.Name, st.Err)
		}
		if st.Kind == "guest" || st.Kind == "host-off" {
			order = append(order, st.Name+"@"+st.End.Format("15:04:05.000"))
		}
	}
	web, db := stepEnd(t, s, "web-1"), stepStart(t, s, "db-1")
	if db.Before(web) {
		t.Errorf("db-1 started at %s before web-1 ended at %s", db, web)
	}
	if got := nas.Commands(); len(got) != 1 || strings.TrimSpace(got[0]) != "poweroff" {
		t.Errorf("NAS received %q, want one poweroff", got)
	}
	if got := kvmHost.Commands(); len(got) != 1 || strings.TrimSpace(got[0]) != "systemctl poweroff" {
		t.Errorf("KVM host received %q, want one systemctl poweroff", got)
	}
	if host, db := stepStart(t, s, "kvm1"), stepEnd(t, s, "db-1"); host.Before(db) {
		t.Errorf("KVM host shutdown started at %s, before its guest db-1 ended at %s", host, db)
	}
	t.Logf("steps: %v", order)
}

func stepEnd(t *testing.T, s app.Snapshot, name string) time.Time {
	t.Helper()
	for _, st := range s.Shutdown.Steps {
		if st.Name == name {
			return st.End
		}
	}
	t.Fatalf("no step %s", name)
	return time.Time{}
}

func stepStart(t *testing.T, s app.Snapshot, name string) time.Time {
	t.Helper()
	for _, st := range s.Shutdown.Steps {
		if st.Name == name {
			return st.Start
		}
	}
	t.Fatalf("no step %s", name)
	return time.Time{}
}
