package app_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/peer/ipmisim"
	"github.com/sundown-ups/sundown/internal/provider/vsphere/vcsim"
)

// The restore wakes a host through its BMC: the config's ipmi: entry, the
// wake package and a real OpenIPMI ipmi_sim. When the chassis power goes
// on, the test boots the simulated ESXi host, as the real one would boot.
func TestRestoreWakesHostByIPMI(t *testing.T) {
	bmc := ipmisim.Start(t, true) // on until the shutdown
	srv := newNUT(t)
	sim, err := vcsim.Start(context.Background(), vcsim.Fleet{VCenter: true,
		Hosts: []vcsim.Host{{Name: "esx-01"}},
		VMs:   []vcsim.VM{{Name: "db-1", Host: "esx-01", ShutdownDelay: 100 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	t.Setenv("VC_PW", sim.Password())
	pass := filepath.Join(t.TempDir(), "bmc.pass")
	if err := os.WriteFile(pass, []byte(ipmisim.OperatorPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := testConfig(t, `state_dir: "`+t.TempDir()+`"
`+nutYAML(srv.Addr(), "")+`restore: {after: 1s, min_charge: 0, poll: 200ms}
targets:
  - name: vc
    vsphere: {url: "`+sim.URL()+`", username: "`+sim.Username()+`", password_env: VC_PW, ca_file: "`+sim.CAFile()+`"}
    hosts: {shutdown: true}
    wake:
      - {host: esx-01, ipmi: {host: 127.0.0.1, port: `+fmt.Sprint(bmc.Port)+`, user: `+ipmisim.Operator+`, password_file: "`+pass+`"}}
`)
	r := start(t, c, true)
	r.waitFor(t, "plan", 20*time.Second, func(s app.Snapshot) bool {
		return s.Plan != nil && s.Plan.Steps > 0 && len(s.UPS) > 0 && s.UPS[0].Comm == 1
	})
	srv.SetStatus("ups", "OB LB")
	r.waitFor(t, "shutdown done", 30*time.Second, func(s app.Snapshot) bool {
		return s.Shutdown != nil && s.Shutdown.Kind == "shutdown" && s.Shutdown.State == "done"
	})
	// The host is off now: so is its chassis.
	bmc.SetPower(t, false)
	// The BMC powers the chassis on; the host boots a moment later.
	bootCtx, stopBoot := context.WithTimeout(t.Context(), 30*time.Second)
	defer stopBoot()
	booted := make(chan struct{})
	go func() {
		defer close(booted)
		if bmc.WaitPowerOn(bootCtx) == nil {
			_ = sim.BootHost("esx-01")
		}
	}()
	srv.SetStatus("ups", "OL CHRG")
	r.waitFor(t, "restore done", 40*time.Second, func(s app.Snapshot) bool {
		return s.Shutdown != nil && s.Shutdown.Kind == "restore" && s.Shutdown.State == "done"
	})
	<-booted
	if got := bmc.Record(t); len(got) == 0 || got[len(got)-1] != "set power 1" {
		t.Errorf("chassis commands %q, want a power on", got)
	}
	if st := sim.PowerState("db-1"); st != "poweredOn" {
		t.Errorf("db-1 is %s after the restore", st)
	}
}
