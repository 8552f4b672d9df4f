package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/provider/vsphere/vcsim"
)

// Load shedding on the simulated vCenter: after 1 s on battery the lab
// group is shut down early and nothing else; mains returns before the
// full shutdown, and the restore starts the lab guests again.
func TestShedThenMainsReturns(t *testing.T) {
	srv := newNUT(t)
	sim, err := vcsim.Start(context.Background(), vcsim.Fleet{VCenter: true,
		Hosts: []vcsim.Host{{Name: "esx-01"}},
		VMs: []vcsim.VM{
			{Name: "lab-1", Host: "esx-01", ShutdownDelay: 100 * time.Millisecond},
			{Name: "lab-2", Host: "esx-01", ShutdownDelay: 100 * time.Millisecond},
			{Name: "db-1", Host: "esx-01", ShutdownDelay: 100 * time.Millisecond},
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	t.Setenv("VC_PW", sim.Password())
	c := testConfig(t, `state_dir: "`+t.TempDir()+`"
`+nutYAML(srv.Addr(), "")+`shed:
  - {name: lab-first, groups: [lab], after: 1s}
restore: {after: 1s, min_charge: 50, poll: 200ms}
targets:
  - name: vc
    vsphere: {url: "`+sim.URL()+`", username: "`+sim.Username()+`", password_env: VC_PW, ca_file: "`+sim.CAFile()+`"}
shutdown:
  default_action: ["shutdown 5s", "poweroff 5s"]
  groups:
    - {name: lab, select: {names: ["lab-*"]}}
    - {name: db, select: {names: ["db-*"]}}
`)
	r := start(t, c, true)
	r.waitFor(t, "plan", 20*time.Second, func(s app.Snapshot) bool {
		return s.Plan != nil && s.Plan.Steps > 0 && len(s.UPS) > 0 && s.UPS[0].Comm == 1
	})

	srv.SetVars("ups", map[string]string{"ups.status": "OB DISCHRG", "battery.charge": "90", "battery.runtime": "3000"})
	s := r.waitFor(t, "shed stage done", 30*time.Second, func(s app.Snapshot) bool {
		return s.Shutdown != nil && s.Shutdown.Kind == "shed" && s.Shutdown.State == "done"
	})
	if sim.PowerState("lab-1") != "poweredOff" || sim.PowerState("lab-2") != "poweredOff" {
		t.Fatalf("lab guests after the shed stage: %s, %s", sim.PowerState("lab-1"), sim.PowerState("lab-2"))
	}
	if sim.PowerState("db-1") != "poweredOn" {
		t.Fatal("the shed stage stopped db-1, which is not in it")
	}
	if s.Decision.Kind.String() == "shutdown" {
		t.Fatal("shedding turned into a full shutdown")
	}

	srv.SetVars("ups", map[string]string{"ups.status": "OL CHRG", "battery.charge": "85"})
	r.waitFor(t, "restore done", 30*time.Second, func(s app.Snapshot) bool {
		return s.Shutdown != nil && s.Shutdown.Kind == "restore" && s.Shutdown.State == "done"
	})
	for _, vm := range []string{"lab-1", "lab-2", "db-1"} {
		if st := sim.PowerState(vm); st != "poweredOn" {
			t.Errorf("%s is %s after the restore", vm, st)
		}
	}
	if n := sim.Calls("ShutdownGuest"); n != 2 {
		t.Errorf("%d ShutdownGuest calls, want the 2 lab guests", n)
	}
}

// Power returns while the shutdown runs: the shutdown still finishes (the
// latch), then the restore brings back what went down.
func TestPowerBackMidShutdownThenRestore(t *testing.T) {
	srv := newNUT(t)
	sim, err := vcsim.Start(context.Background(), vcsim.Fleet{VCenter: true,
		Hosts: []vcsim.Host{{Name: "esx-01"}},
		VMs: []vcsim.VM{
			{Name: "web-1", Host: "esx-01", ShutdownDelay: 100 * time.Millisecond},
			{Name: "db-1", Host: "esx-01", ShutdownDelay: 1500 * time.Millisecond},
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	t.Setenv("VC_PW", sim.Password())
	c := testConfig(t, `state_dir: "`+t.TempDir()+`"
`+nutYAML(srv.Addr(), "")+`restore: {after: 1s, min_charge: 0, poll: 200ms}
targets:
  - name: vc
    vsphere: {url: "`+sim.URL()+`", username: "`+sim.Username()+`", password_env: VC_PW, ca_file: "`+sim.CAFile()+`"}
shutdown:
  default_action: ["shutdown 10s", "poweroff 5s"]
  groups:
    - {name: web, select: {names: ["web-*"]}, depends_on: [db]}
    - {name: db, select: {names: ["db-*"]}}
`)
	r := start(t, c, true)
	r.waitFor(t, "plan", 20*time.Second, func(s app.Snapshot) bool {
		return s.Plan != nil && s.Plan.Steps > 0 && len(s.UPS) > 0 && s.UPS[0].Comm == 1
	})
	srv.SetStatus("ups", "OB LB")
	r.waitFor(t, "web down, db stopping", 20*time.Second, func(s app.Snapshot) bool {
		return sim.PowerState("web-1") == "poweredOff" && s.Shutdown != nil && s.Shutdown.State == "running"
	})
	srv.SetStatus("ups", "OL CHRG") // mains back in the middle
	r.waitFor(t, "shutdown done", 20*time.Second, func(s app.Snapshot) bool {
		return s.Shutdown != nil && s.Shutdown.Kind == "shutdown" && s.Shutdown.State == "done"
	})
	if st := sim.PowerState("db-1"); st != "poweredOff" {
		t.Fatalf("db-1 is %s: the shutdown did not finish after power returned", st)
	}
	r.waitFor(t, "restore done", 30*time.Second, func(s app.Snapshot) bool {
		return s.Shutdown != nil && s.Shutdown.Kind == "restore" && s.Shutdown.State == "done"
	})
	for _, vm := range []string{"web-1", "db-1"} {
		if st := sim.PowerState(vm); st != "poweredOn" {
			t.Errorf("%s is %s after the restore", vm, st)
		}
	}
}
