package cli

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/nut/nuttest"
	"github.com/sundown-ups/sundown/internal/provider/vsphere/vcsim"
)

// checkSite is a NUT server and a small vCenter for `sundown check`.
type checkSite struct {
	nut *nuttest.Server
	vc  *vcsim.Sim
	dir string
}

func newCheckSite(t *testing.T) *checkSite {
	t.Helper()
	srv := nuttest.NewServer()
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	srv.AddUser("mon", "nut-secret-pw", nuttest.Perms{Upsmon: "secondary"})
	srv.AddUPS("rack", "", map[string]string{"ups.status": "OL", "battery.charge": "100", "battery.runtime": "1260"})
	sim, err := vcsim.Start(context.Background(), vcsim.Fleet{
		VCenter: true,
		Hosts:   []vcsim.Host{{Name: "esx-1"}},
		VMs:     []vcsim.VM{{Name: "web-1"}, {Name: "db-1"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	t.Setenv("CHECK_NUT_PW", "nut-secret-pw")
	t.Setenv("CHECK_VC_PW", sim.Password())
	return &checkSite{nut: srv, vc: sim, dir: t.TempDir()}
}

// config writes a config whose NUT UPS is named ups on the server.
func (s *checkSite) config(t *testing.T, ups string) string {
	t.Helper()
	yml := "state_dir: " + s.dir + "\n" +
		"ups:\n  - name: rack\n    nut: {address: \"" + s.nut.Addr() + "\", ups: " + ups + ", username: mon, password_env: CHECK_NUT_PW}\n" +
		"targets:\n  - name: vc\n    vsphere: {url: \"" + s.vc.URL() + "\", username: \"" + s.vc.Username() + "\", password_env: CHECK_VC_PW, ca_file: \"" + s.vc.CAFile() + "\"}\n" +
		"    hosts: {shutdown: true}\n"
	path := filepath.Join(t.TempDir(), "sundown.yaml")
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (s *checkSite) check(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code, out, errs := run(t, ctx, append([]string{"check", "--journal", filepath.Join(s.dir, "journal.jsonl")}, args...)...)
	t.Logf("exit %d\n%s%s", code, out, errs)
	for _, secret := range []string{"nut-secret-pw", s.vc.Password()} {
		if strings.Contains(out+errs, secret) {
			t.Errorf("check printed a password")
		}
	}
	for _, m := range []string{"ShutdownGuest", "PowerOffVM_Task", "PowerOnVM_Task", "ShutdownHost_Task", "EnterMaintenanceMode_Task"} {
		if n := s.vc.Calls(m); n != 0 {
			t.Errorf("check called %s %d times", m, n)
		}
	}
	if got := s.nut.Logins("rack"); len(got) != 0 || s.nut.FSDSet("rack") || len(s.nut.InstCmds()) != 0 {
		t.Errorf("check left the UPS server changed: logins %v, FSD %v, instcmds %v", got, s.nut.FSDSet("rack"), s.nut.InstCmds())
	}
	return code, out, errs
}

func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

func TestCheckCommandAllOK(t *testing.T) {
	s := newCheckSite(t)
	code, out, _ := s.check(t, "-c", s.config(t, "rack"))
	if code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	wantLines(t, out,
		"ok   config ",
		"ok   ups rack: login as mon works, ups.status OL, battery.charge 100 %, battery.runtime 1260 s\n",
		"ok   target vc: vSphere login as "+s.vc.Username()+" works: 2 guests on 1 host; privileges verified: VirtualMachine.Interact.PowerOff on 2 VMs",
		"Host.Config.Maintenance on 1 host",
		"ok   plan: 2 guest steps, 1 host step",
		"battery: runtime 1260 s",
		"3 checks: 3 ok, 0 warnings, 0 failed\n",
	)
	if strings.Contains(out, "fix:") {
		t.Errorf("a fix printed although all is ok:\n%s", out)
	}
}

func TestCheckCommandFailureExits1WithFix(t *testing.T) {
	s := newCheckSite(t)
	code, out, errs := s.check(t, "-c", s.config(t, "nosuch"))
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	wantLines(t, out,
		"FAIL ups rack: LOGIN nosuch as mon failed",
		`→ fix: upsd on 127.0.0.1 has no UPS named "nosuch": it serves rack`,
		"ok   target vc:",
		"warn plan: ", // the only runtime was that UPS's
		"3 checks: 1 ok, 1 warning, 1 failed\n",
	)
	wantLines(t, errs, "1 check failed")
}

func TestCheckCommandWarningExits0(t *testing.T) {
	s := newCheckSite(t)
	s.nut.DelVar("rack", "battery.runtime")
	code, out, _ := s.check(t, "-c", s.config(t, "rack"))
	if code != 0 {
		t.Fatalf("exit %d, want 0 (warnings only)", code)
	}
	wantLines(t, out,
		"warn ups rack: login as mon works, ups.status OL, battery.charge 100 %, battery.runtime not served → fix: without battery.runtime",
		"warn plan: ", "runtime unknown",
		"3 checks: 1 ok, 2 warnings, 0 failed\n",
	)
}

// --config-only keeps the old behaviour: load and validate, reach nothing.
func TestCheckConfigOnlyContactsNothing(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("ups:\n  - name: rack\n    nut: {address: \""+ln.Addr().String()+"\", ups: ups}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := run(t, context.Background(), "check", "--config-only", "-c", path)
	if code != 0 || out != path+": ok (1 UPS)\n" {
		t.Fatalf("exit %d, %q %q", code, out, errs)
	}
	// A connection made would wait in the backlog: Accept would return it.
	if err := ln.SetDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if c, err := ln.Accept(); err == nil {
		c.Close()
		t.Error("--config-only connected to the UPS server")
	}
}

func TestCheckCommandConfigErrorExits2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("ups:\n  - name: rack\n    nut: {adress: x}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := run(t, context.Background(), "check", "-c", path)
	if code != 2 || out != "" || !strings.Contains(errs, "adress") {
		t.Fatalf("exit %d, %q %q; want 2 and the problem", code, out, errs)
	}
}
