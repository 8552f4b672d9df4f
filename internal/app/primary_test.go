package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/nut"
	"github.com/sundown-ups/sundown/internal/nut/nuttest"
	"github.com/sundown-ups/sundown/internal/provider/vsphere/vcsim"
)

// As primary: FSD at the decision, the plan runs with the login held, then
// sundown waits for the other NUT clients to log out before it sends the
// UPS command.
func TestPrimaryWaitsForOthersThenSendsUPSCommand(t *testing.T) {
	srv := newNUT(t)
	// upsd.users: upsmon primary plus the right to send the UPS command.
	srv.AddUser("mon", "pw", nuttest.Perms{Upsmon: "primary", InstCmds: []string{"shutdown.return"}})
	sim, err := vcsim.Start(context.Background(), vcsim.Fleet{VCenter: true,
		Hosts: []vcsim.Host{{Name: "esx-01"}},
		VMs:   []vcsim.VM{{Name: "web-1", Host: "esx-01", ShutdownDelay: 300 * time.Millisecond}, {Name: "db-1", Host: "esx-01", ShutdownDelay: 300 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	t.Setenv("VC_PW", sim.Password())
	c := testConfig(t, `state_dir: "`+t.TempDir()+`"
power: {poll_interval: 100ms, deadtime: 2s}
ups:
  - name: rack
    nut: {address: "`+srv.Addr()+`", ups: ups, username: mon, password_env: NUT_PW, mode: primary, ups_command: shutdown.return, primary_wait: 20s}
targets:
  - name: vc
    vsphere: {url: "`+sim.URL()+`", username: "`+sim.Username()+`", password_env: VC_PW, ca_file: "`+sim.CAFile()+`"}
    hosts: {shutdown: true}
shutdown:
  default_action: ["shutdown 5s", "poweroff 5s"]
  groups:
    - {name: web, select: {names: ["web-*"]}, depends_on: [db]}
    - {name: db, select: {names: ["db-*"]}}
`)
	// Another machine's upsmon, logged in as secondary.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	other, err := nut.Dial(ctx, srv.Addr(), nut.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Username(ctx, "mon"); err != nil {
		t.Fatal(err)
	}
	if err := other.Password(ctx, "pw"); err != nil {
		t.Fatal(err)
	}
	if err := other.Login(ctx, "ups"); err != nil {
		t.Fatal(err)
	}

	r := start(t, c, true)
	r.waitFor(t, "plan", 20*time.Second, func(s app.Snapshot) bool { return s.Plan != nil && len(s.UPS) > 0 && s.UPS[0].Comm == 1 })
	srv.SetStatus("ups", "OB LB")
	r.waitFor(t, "guests and host done", 30*time.Second, func(s app.Snapshot) bool {
		return s.Shutdown != nil && len(sim.HostShutdowns()) == 1
	})
	if !srv.FSDSet("ups") {
		t.Fatal("primary did not set FSD")
	}
	if n := len(srv.InstCmds()); n != 0 {
		t.Fatalf("UPS command sent while another client is logged in: %+v", srv.InstCmds())
	}
	if got := srv.Logins("ups"); len(got) != 2 {
		t.Fatalf("logins during the wait = %v, want sundown's and the other's", got)
	}
	loggedOut := time.Now()
	if err := other.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	s := r.waitFor(t, "shutdown done", 20*time.Second, func(s app.Snapshot) bool { return s.Shutdown != nil && s.Shutdown.State == "done" })
	cmds := srv.InstCmds()
	if len(cmds) != 1 || cmds[0].Cmd != "shutdown.return" || cmds[0].User != "mon" {
		t.Fatalf("instant commands %+v, want one shutdown.return; notes %v", cmds, s.Shutdown.Notes)
	}
	if cmds[0].At.Before(loggedOut) {
		t.Errorf("UPS command at %s, before the other client logged out at %s", cmds[0].At, loggedOut)
	}
	for _, vm := range []string{"web-1", "db-1"} {
		if st := sim.PowerState(vm); st != "poweredOff" {
			t.Errorf("%s %s", vm, st)
		}
	}
	t.Logf("notes: %v", s.Shutdown.Notes)
}
