package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/nut/nuttest"
	"github.com/sundown-ups/sundown/internal/provider/vsphere/vcsim"
)

// planFixture writes the demo's config for a simulated site and returns
// its path and the simulator.
func planFixture(t *testing.T) (string, *vcsim.Sim) {
	t.Helper()
	srv := nuttest.NewServer()
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	srv.AddUPS("rack", "", map[string]string{"ups.status": "OL", "battery.runtime": "1260", "battery.charge": "100"})
	sim, err := vcsim.Start(context.Background(), demoFleet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	c, err := demoConfig(srv.Addr(), sim, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Write the same config as a file, with the secrets in the environment.
	yml := "state_dir: " + c.StateDir + "\n" +
		"ups:\n  - name: rack\n    nut: {address: \"" + srv.Addr() + "\", ups: rack}\n" +
		"targets:\n  - name: vcenter\n    vsphere: {url: \"" + sim.URL() + "\", username: \"" + sim.Username() + "\", password_env: PLAN_VC_PW, ca_file: \"" + sim.CAFile() + "\"}\n" +
		"    hosts: {maintenance: true, shutdown: true}\n" +
		"shutdown:\n  groups:\n    - {name: web, select: {names: [\"web-*\"]}, depends_on: [app]}\n    - {name: app, select: {names: [\"app-*\"]}}\n" +
		"  self: {vm_uuid: \"" + demoSelfUUID + "\", host: esx-03}\n"
	path := filepath.Join(t.TempDir(), "sundown.yaml")
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PLAN_VC_PW", sim.Password())
	return path, sim
}

func TestPlanCommand(t *testing.T) {
	path, sim := planFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code, out, errs := run(t, ctx, "plan", "-c", path)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{
		"group web: 6 guests", "stops before app", "excluded", "sundown's own VM",
		"host carrying sundown (last)", "critical path", "makespan", "lower bound",
		"battery: runtime 1260 s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out+errs, sim.Password()) {
		t.Error("plan printed the vCenter password")
	}
	if n := sim.Calls("ShutdownGuest") + sim.Calls("PowerOffVM_Task"); n != 0 {
		t.Errorf("plan changed something: %d power calls", n)
	}
	code, out, _ = run(t, ctx, "plan", "-c", path, "--json")
	if code != 0 || !strings.HasPrefix(strings.TrimSpace(out), "{") || !strings.Contains(out, `"critical_path"`) {
		t.Errorf("--json: exit %d, output %.300s", code, out)
	}
}

func TestDrillDryRunChangesNothing(t *testing.T) {
	path, sim := planFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code, out, errs := run(t, ctx, "drill", "-c", path, "--dry-run")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	if !strings.Contains(out, "drill (dry run)") || !strings.Contains(out, "[dry run]") {
		t.Errorf("output:\n%s", out)
	}
	for _, vm := range demoFleet().VMs {
		if st := sim.PowerState(vm.Name); st != "poweredOn" {
			t.Errorf("dry run left %s %s", vm.Name, st)
		}
	}
	if len(sim.HostShutdowns()) != 0 {
		t.Errorf("dry run shut hosts down: %v", sim.HostShutdowns())
	}
}

func TestDrillOnlyGroupForReal(t *testing.T) {
	path, sim := planFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if code, _, errs := run(t, ctx, "drill", "-c", path, "--only", "web"); code != 2 || !strings.Contains(errs, "--yes") {
		t.Fatalf("a real drill without --yes: exit %d %q", code, errs)
	}
	code, out, errs := run(t, ctx, "drill", "-c", path, "--only", "web", "--yes")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	for _, vm := range demoFleet().VMs {
		want := "poweredOn"
		if strings.HasPrefix(vm.Name, "web-") {
			want = "poweredOff"
		}
		if st := sim.PowerState(vm.Name); st != want {
			t.Errorf("after drill --only web: %s is %s, want %s", vm.Name, st, want)
		}
	}
	if len(sim.HostShutdowns()) != 0 {
		t.Errorf("drill shut hosts down: %v", sim.HostShutdowns())
	}
}
