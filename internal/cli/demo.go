package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/nut/nuttest"
	"github.com/sundown-ups/sundown/internal/policy"
	"github.com/sundown-ups/sundown/internal/provider/proxmox/pvetest"
	"github.com/sundown-ups/sundown/internal/provider/vsphere/vcsim"
)

func newDemo(stdout, stderr io.Writer) *cobra.Command {
	var speed float64
	var verbose bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Watch a whole simulated power outage and the ordered shutdown, in under a minute",
		Long: `demo runs a whole outage in this process, with nothing to set up and nothing
on this machine touched: a simulated UPS on an in-process NUT server, and a
simulated vCenter (govmomi's simulator) with 20 VMs on 3 hosts, where web
depends on app, app on db, db on the domain controllers, and sundown itself
runs in a VM on esx-03.

Mains fails; the battery drains (SPEED times faster than real); when the
runtime left falls below the plan's estimated duration plus the margin,
sundown decides, sets FSD as the UPS's primary and runs the plan live: web,
then app, then db, then dc, guest shutdown first and power off for a guest
that ignores it, then maintenance mode and host shutdown, esx-03 last.
Time is compressed: a guest takes 1-4 s to shut down instead of minutes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.DiscardHandler)
			if verbose {
				log = newLogger(stderr, config.Log{Level: "debug"})
			}
			return runDemo(cmd.Context(), stdout, log, speed)
		},
	}
	cmd.Flags().Float64Var(&speed, "speed", 10, "how many times faster than real the battery drains")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "log sundown's internals to stderr")
	return cmd
}

const demoPassword = "demo-secret"

// demoFleet is the simulated site: web -> app -> db -> dc, a VM without
// tools, a VM that ignores shutdown, and sundown's own VM on esx-03.
func demoFleet() vcsim.Fleet {
	r := rand.New(rand.NewPCG(7, 7))
	delay := func() time.Duration { return time.Duration(1000+r.IntN(3000)) * time.Millisecond }
	f := vcsim.Fleet{VCenter: true, Hosts: []vcsim.Host{{Name: "esx-01"}, {Name: "esx-02"}, {Name: "esx-03"}}}
	hosts := []string{"esx-01", "esx-02", "esx-03"}
	add := func(name string, i int, mod func(*vcsim.VM)) {
		vm := vcsim.VM{Name: name, Host: hosts[i%3], ShutdownDelay: delay()}
		if mod != nil {
			mod(&vm)
		}
		f.VMs = append(f.VMs, vm)
	}
	for i := range 6 {
		add(fmt.Sprintf("web-%d", i+1), i, nil)
	}
	for i := range 4 {
		add(fmt.Sprintf("app-%d", i+1), i+1, nil)
	}
	for i := range 3 {
		add(fmt.Sprintf("db-%d", i+1), i+2, nil)
	}
	for i := range 2 {
		add(fmt.Sprintf("dc-%d", i+1), i, func(vm *vcsim.VM) { vm.Annotation = "domain controller" })
	}
	add("monitor", 0, nil)
	add("print", 1, nil)
	add("lab-scratch", 2, func(vm *vcsim.VM) { vm.NoTools = true })
	add("legacy-erp", 1, func(vm *vcsim.VM) { vm.IgnoreShutdown = true })
	add("sundown", 2, func(vm *vcsim.VM) { vm.UUID = demoSelfUUID })
	return f
}

// demoPVE is a Proxmox VE node next to the vCenter: VMs, a container and
// an HA-managed guest (which the HA stack would restart if sundown did not
// set its HA state to stopped first).
func demoPVE() pvetest.Fleet {
	return pvetest.Fleet{
		Nodes: []pvetest.Node{{Name: "pve-1"}},
		Guests: []pvetest.Guest{
			{Node: "pve-1", VMID: 101, Name: "git", Running: true, ShutdownDelay: 1500 * time.Millisecond},
			{Node: "pve-1", VMID: 102, Name: "ci-runner", Running: true, ShutdownDelay: 2 * time.Second},
			{Node: "pve-1", VMID: 103, Name: "grafana", Running: true, ShutdownDelay: time.Second, HA: true},
			{Node: "pve-1", VMID: 201, Name: "dns", Type: "lxc", Running: true, ShutdownDelay: 500 * time.Millisecond},
		},
	}
}

const demoSelfUUID = "4237a5d6-0f6e-4c5e-9d1e-5d0000000001"

// demoConfig is the config an admin would write for that site, with the
// timeouts compressed like the simulated guests.
func demoConfig(nutAddr string, sim *vcsim.Sim, stateDir string, pve ...*pvetest.Server) (*config.Config, error) {
	pveTarget := ""
	if len(pve) > 0 {
		pveTarget = `  - name: proxmox
    proxmox: {url: "` + pve[0].URL() + `", token_id: "sundown@pve!sundown", secret_env: DEMO_PVE_SECRET, ca_file: ` + strconv.Quote(pve[0].CAFile()) + `}
    hosts: {shutdown: true, shutdown_timeout: 10s}
`
	}
	yml := `state_dir: ` + strconv.Quote(stateDir) + `
power:
  poll_interval: 250ms
  debounce: 2s
  runtime_margin: 20s
ups:
  - name: rack
    nut: {address: "` + nutAddr + `", ups: rack, username: sundown, password_env: DEMO_NUT_PW, mode: primary}
targets:
  - name: vcenter
    vsphere: {url: "` + sim.URL() + `", username: "` + sim.Username() + `", password_env: DEMO_VC_PW, ca_file: ` + strconv.Quote(sim.CAFile()) + `}
    hosts: {maintenance: true, maintenance_timeout: 10s, shutdown: true, shutdown_timeout: 10s}
` + pveTarget + `shutdown:
  default_action: ["shutdown 6s", "poweroff 5s"]
  caps: {global: 6, per_host: 3}
  groups:
    - {name: web, select: {names: ["web-*"]}, depends_on: [app]}
    - {name: app, select: {names: ["app-*"]}, depends_on: [db]}
    - {name: db,  select: {names: ["db-*"]}, depends_on: [dc], action: ["shutdown 8s", "poweroff 5s"]}
    - {name: dc,  select: {names: ["dc-*"]}}
  guests:
    - {name: lab-scratch, action: [poweroff]}
  self: {vm_uuid: "` + demoSelfUUID + `", host: esx-03, target: vcenter}
`
	env := map[string]string{"DEMO_NUT_PW": demoPassword, "DEMO_VC_PW": sim.Password(), "DEMO_PVE_SECRET": "secret"}
	return config.Parse("demo.yaml", []byte(yml), func(k string) string { return env[k] })
}

// runDemo plays the outage.
func runDemo(ctx context.Context, w io.Writer, log *slog.Logger, speed float64) error {
	out := &lockedWriter{w: w} // the script, the view and the progress all print
	srv := nuttest.NewServer()
	if err := srv.Start("127.0.0.1:0"); err != nil {
		return fmt.Errorf("demo: start simulated NUT server: %w", err)
	}
	defer srv.Close()
	srv.AddUser("sundown", demoPassword, nuttest.Perms{Upsmon: "primary"})
	srv.AddUPS("rack", "demo UPS", map[string]string{
		"ups.status": "OL CHRG", "battery.charge": "100", "battery.runtime": "300",
		"ups.load": "38", "device.mfr": "Simulated", "device.model": "Smart-UPS 1500 (demo)",
	})
	fmt.Fprintln(out, "sundown demo: starting a simulated UPS, a simulated vCenter (20 VMs on 3 hosts) and a Proxmox VE node (4 guests) ...")
	sim, err := vcsim.Start(ctx, demoFleet())
	if err != nil {
		return fmt.Errorf("demo: start simulated vCenter: %w", err)
	}
	defer sim.Close()
	pve, err := pvetest.NewServer(demoPVE())
	if err != nil {
		return fmt.Errorf("demo: start simulated Proxmox VE: %w", err)
	}
	defer pve.Close()
	state, err := os.MkdirTemp("", "sundown-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	c, err := demoConfig(srv.Addr(), sim, state, pve)
	if err != nil {
		return fmt.Errorf("demo config: %w", err)
	}
	pv := newProgress(out)
	a, err := app.New(c, log, app.Options{Act: true, OnStep: pv.event})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "NUT server %s, vCenter %s, Proxmox VE %s.\n", srv.Addr(), sim.URL(), pve.URL())
	fmt.Fprintf(out, "Policy: shut down when battery runtime < the plan's estimated duration + margin %s.\n", c.Power.RuntimeMargin)
	fmt.Fprintf(out, "Time is compressed: the battery drains %gx faster than real; guests shut down in 1-4 s.\n\n", speed)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Line mode (out is not a terminal): the story scrolls with its narration.
	v := newView(out, "sundown demo")
	var wg sync.WaitGroup
	var scriptErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cancel()
		scriptErr = demoScript(ctx, out, srv, sim, pve, a, speed)
	}()
	err = watchApp(ctx, a, v)
	wg.Wait()
	pv.close()
	if scriptErr != nil {
		return scriptErr
	}
	return err
}

// demoScript drives the simulated UPS: mains fails, the battery drains
// until sundown decides, the shutdown runs, then mains returns.
func demoScript(ctx context.Context, out io.Writer, srv *nuttest.Server, sim *vcsim.Sim, pve *pvetest.Server, a *app.App, speed float64) error {
	waitFor := func(what string, limit time.Duration, cond func(app.Snapshot) bool) error {
		deadline := time.Now().Add(limit)
		for !cond(a.Snapshot()) {
			if time.Now().After(deadline) {
				return fmt.Errorf("demo: %s did not happen within %s: %s", what, limit, a.Snapshot().Decision)
			}
			if !sleep(ctx, 100*time.Millisecond) {
				return ctx.Err()
			}
		}
		return nil
	}
	if err := waitFor("planning", 30*time.Second, func(s app.Snapshot) bool { return s.Plan != nil && len(s.UPS) > 0 && s.UPS[0].LastSeen.Unix() > 0 }); err != nil {
		return err
	}
	p := a.Snapshot().Plan
	fmt.Fprintf(out, "\nPlan ready: %d steps, estimated %s (lower bound %s). Budget: runtime must stay above %s.\n",
		p.Steps, p.Makespan.Round(time.Second), p.LowerBound.Round(time.Second), (p.Makespan + a.Config().Power.RuntimeMargin.D()).Round(time.Second))
	if !sleep(ctx, time.Second) {
		return nil
	}
	fmt.Fprintln(out, "\n>>> The mains power fails.")
	srv.SetVars("rack", map[string]string{"ups.status": "OB DISCHRG"})
	runtime, charge := 300.0, 100.0
	const tick = 250 * time.Millisecond
	deadline := time.Now().Add(2 * time.Minute)
	for a.Snapshot().Decision.Kind != policy.Shutdown {
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: no shutdown decision within 2 minutes: %s", a.Snapshot().Decision)
		}
		if !sleep(ctx, tick) {
			return nil
		}
		runtime = max(0, runtime-speed*tick.Seconds())
		charge = max(0, charge-speed*tick.Seconds()*100/300)
		srv.SetVars("rack", map[string]string{"battery.runtime": strconv.Itoa(int(runtime)), "battery.charge": strconv.Itoa(int(charge))})
	}
	fmt.Fprintln(out, "\n>>> sundown decided: FSD set on the UPS as its primary; the plan runs now.")
	start := time.Now()
	if err := waitFor("the shutdown", 3*time.Minute, func(s app.Snapshot) bool { return s.Shutdown != nil && s.Shutdown.State == "done" }); err != nil {
		return err
	}
	took := time.Since(start)
	off := 0
	vms, guests := demoFleet().VMs, demoPVE().Guests
	for _, vm := range vms {
		if sim.PowerState(vm.Name) == "poweredOff" {
			off++
		}
	}
	s := a.Snapshot().Shutdown
	failed := 0
	for _, st := range s.Steps {
		if st.State == "failed" {
			failed++
		}
	}
	pveOff := 0
	for _, g := range guests {
		if st, ok := pve.State(g.VMID); ok && st.Status == "stopped" {
			pveOff++
		}
	}
	fmt.Fprintf(out, "\n>>> Shutdown finished in %s (estimated %s): vCenter %d of %d VMs off, Proxmox %d of %d guests off, hosts shut down: %v %v, %d step(s) failed.\n",
		took.Round(100*time.Millisecond), s.Estimate.Round(time.Second), off, len(vms), pveOff, len(guests),
		sim.HostShutdowns(), pve.NodeShutdowns(), failed)
	fmt.Fprintln(out, "    In real life the UPS now cuts the load; sundown's own VM went down with esx-03, last.")
	fmt.Fprintln(out, "\n>>> Mains power returns. The decision stays latched: a started shutdown always finishes.")
	srv.SetVars("rack", map[string]string{"ups.status": "OL CHRG"})
	if !sleep(ctx, 1500*time.Millisecond) {
		return nil
	}
	if d := a.Snapshot().Decision; d.Kind != policy.Shutdown {
		return fmt.Errorf("demo: the latch did not hold: %s", d)
	}
	fmt.Fprintln(out, "\nDemo finished. Bringing the site back (restore) is the next step on sundown's roadmap.")
	return nil
}

// lockedWriter serializes writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
