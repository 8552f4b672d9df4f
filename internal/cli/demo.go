package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/nut/nuttest"
	"github.com/sundown-ups/sundown/internal/policy"
	"github.com/sundown-ups/sundown/internal/provider/libvirt/libvirtdemo"
	"github.com/sundown-ups/sundown/internal/provider/proxmox/pvetest"
	"github.com/sundown-ups/sundown/internal/provider/vsphere/vcsim"
	"github.com/sundown-ups/sundown/internal/wake"
)

func newDemo(stdout, stderr io.Writer) *cobra.Command {
	var speed float64
	var verbose bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Watch a whole simulated power outage, the ordered shutdown and the restore, in under a minute",
		Long: `demo runs a whole outage in this process, with nothing to set up and nothing
on this machine touched: a simulated UPS on an in-process NUT server; a
simulated vCenter (govmomi's simulator) with 20 VMs on 3 hosts, where web
depends on app, app on db, db on the domain controllers, and sundown itself
runs in a VM on esx-03; a simulated Proxmox VE node with 5 guests; and, when
libvirtd is installed, a KVM host with 5 guests on a private libvirtd that
serves only libvirt's test driver (without libvirtd the KVM host is left out).

Mains fails; the battery drains (SPEED times faster than real); when the
runtime left falls below the plan's estimated duration plus the margin,
sundown decides, sets FSD as the UPS's primary and runs the plan live: web,
then app, then db, then dc, guest shutdown first and power off for a guest
that ignores it, then maintenance mode and host shutdown, esx-03 last.

Then mains returns and the battery recharges. Once power has held for
restore.after with the battery at restore.min_charge, sundown restores the
site by itself: it wakes the hosts with real Wake-on-LAN magic packets (sent
over loopback to a listener that plays the hosts' network cards), takes them
out of maintenance mode and starts the guests in the reverse order: db, app,
web. What was off before the outage stays off.

Time is compressed: a guest takes 1-4 s to shut down instead of minutes, a
host boots in 1 s, and the restore waits seconds where a real site waits
minutes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.DiscardHandler)
			if verbose {
				log = newLogger(stderr, config.Log{Level: "debug"})
			}
			return runDemo(cmd.Context(), stdout, log, demoOptions{speed: speed})
		},
	}
	cmd.Flags().Float64Var(&speed, "speed", 10, "how many times faster than real the battery drains and recharges")
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

// demoPVE is a Proxmox VE node next to the vCenter: VMs, a container, an
// HA-managed guest (which the HA stack would restart if sundown did not
// set its HA state to stopped first) and a VM that is off before the
// outage and must stay off after the restore.
func demoPVE() pvetest.Fleet {
	return pvetest.Fleet{
		Nodes: []pvetest.Node{{Name: "pve-1"}},
		Guests: []pvetest.Guest{
			{Node: "pve-1", VMID: 101, Name: "git", Running: true, ShutdownDelay: 1500 * time.Millisecond},
			{Node: "pve-1", VMID: 102, Name: "ci-runner", Running: true, ShutdownDelay: 2 * time.Second},
			{Node: "pve-1", VMID: 103, Name: "grafana", Running: true, ShutdownDelay: time.Second, HA: true},
			{Node: "pve-1", VMID: 104, Name: "win-test"},
			{Node: "pve-1", VMID: 201, Name: "dns", Type: "lxc", Running: true, ShutdownDelay: 500 * time.Millisecond},
		},
	}
}

const demoSelfUUID = "4237a5d6-0f6e-4c5e-9d1e-5d0000000001"

// demoMACs are the MAC addresses of the hosts' network cards, for
// Wake-on-LAN (VMware's and Proxmox's OUIs).
var demoMACs = map[string]string{
	"esx-01": "00:50:56:00:00:01",
	"esx-02": "00:50:56:00:00:02",
	"esx-03": "00:50:56:00:00:03",
	"pve-1":  "bc:24:11:00:00:01",
}

// demoExtra is what the demo adds to the vCenter of demoConfig: the other
// fleets (nil: left out), the UDP port where the hosts' NICs listen for
// Wake-on-LAN (0: no wake), and restore.after (0: no restore section).
type demoExtra struct {
	pve          *pvetest.Server
	kvm          *libvirtdemo.Site
	wolPort      int
	restoreAfter time.Duration
}

// demoRestoreMinCharge is restore.min_charge in the demo's config.
const demoRestoreMinCharge = 50

// demoConfig is the config an admin would write for that site, with the
// timeouts compressed like the simulated guests.
func demoConfig(nutAddr string, sim *vcsim.Sim, stateDir string, extra ...demoExtra) (*config.Config, error) {
	var x demoExtra
	if len(extra) > 0 {
		x = extra[0]
	}
	wakes := func(hosts ...string) string {
		if x.wolPort == 0 {
			return ""
		}
		s := "    wake:\n"
		for _, h := range hosts {
			s += fmt.Sprintf("      - {host: %s, wol: {mac: %q, broadcast: 127.0.0.1, port: %d, repeat: 2, interval: 100ms}}\n", h, demoMACs[h], x.wolPort)
		}
		return s
	}
	more := ""
	if x.pve != nil {
		more += `  - name: proxmox
    proxmox: {url: "` + x.pve.URL() + `", token_id: "sundown@pve!sundown", secret_env: DEMO_PVE_SECRET, ca_file: ` + strconv.Quote(x.pve.CAFile()) + `}
    hosts: {shutdown: true, shutdown_timeout: 10s}
` + wakes("pve-1")
	}
	if x.kvm != nil {
		// The KVM host itself is not shut down (libvirt cannot; a real
		// site would add host_ssh): only its guests are.
		more += `  - name: kvm
    libvirt: {uri: ` + strconv.Quote(x.kvm.URI()) + `, host_name: ` + libvirtdemo.HostName + `}
`
	}
	restore := ""
	if x.restoreAfter > 0 {
		restore = fmt.Sprintf("restore: {after: %s, min_charge: %d, poll: 250ms, host_timeout: 30s, maintenance_timeout: 10s, guest_timeout: 30s}\n",
			x.restoreAfter, demoRestoreMinCharge)
	}
	yml := `state_dir: ` + strconv.Quote(stateDir) + `
power:
  poll_interval: 250ms
  debounce: 2s
  runtime_margin: 20s
ups:
  - name: rack
    nut: {address: "` + nutAddr + `", ups: rack, username: sundown, password_env: DEMO_NUT_PW, mode: primary}
` + restore + `targets:
  - name: vcenter
    vsphere: {url: "` + sim.URL() + `", username: "` + sim.Username() + `", password_env: DEMO_VC_PW, ca_file: ` + strconv.Quote(sim.CAFile()) + `}
    hosts: {maintenance: true, maintenance_timeout: 10s, shutdown: true, shutdown_timeout: 10s}
` + wakes("esx-01", "esx-02", "esx-03") + more + `shutdown:
  default_action: ["shutdown 6s", "poweroff 5s"]
  caps: {global: 6, per_host: 3}
  groups:
    - {name: web, select: {names: ["web-*", "kvm-web-*"]}, depends_on: [app]}
    - {name: app, select: {names: ["app-*", "kvm-app-*"]}, depends_on: [db]}
    - {name: db,  select: {names: ["db-*", "kvm-db-*"]}, depends_on: [dc], action: ["shutdown 8s", "poweroff 5s"]}
    - {name: dc,  select: {names: ["dc-*"]}}
  guests:
    - {name: lab-scratch, action: [poweroff]}
  self: {vm_uuid: "` + demoSelfUUID + `", host: esx-03, target: vcenter}
`
	env := map[string]string{"DEMO_NUT_PW": demoPassword, "DEMO_VC_PW": sim.Password(), "DEMO_PVE_SECRET": "secret"}
	return config.Parse("demo.yaml", []byte(yml), func(k string) string { return env[k] })
}

// demoSite is the simulated site: the UPS, the fleets and the hosts'
// network cards.
type demoSite struct {
	nut  *nuttest.Server
	sim  *vcsim.Sim
	pve  *pvetest.Server
	kvm  *libvirtdemo.Site // nil: libvirtd is not available
	nics *demoNICs
	// selfOn is when esx-03's VM autostart started sundown's own VM
	// (zero: not yet).
	selfMu sync.Mutex
	selfOn time.Time
}

// demoGuest names one guest of the site: its fleet ("vCenter", "Proxmox",
// "KVM") and its name.
type demoGuest struct{ Fleet, Name string }

// demoFleets is the order fleets are reported in.
var demoFleets = []string{"vCenter", "Proxmox", "KVM"}

// powerStates reads every guest's power state (true: on) from the
// simulators.
func (d *demoSite) powerStates() (map[demoGuest]bool, error) {
	m := map[demoGuest]bool{}
	for _, vm := range demoFleet().VMs {
		m[demoGuest{"vCenter", vm.Name}] = d.sim.PowerState(vm.Name) == "poweredOn"
	}
	for _, g := range demoPVE().Guests {
		st, ok := d.pve.State(g.VMID)
		if !ok {
			return nil, fmt.Errorf("demo: Proxmox guest %d (%s) is gone", g.VMID, g.Name)
		}
		m[demoGuest{"Proxmox", g.Name}] = st.Status == "running"
	}
	if d.kvm != nil {
		running, err := d.kvm.Running()
		if err != nil {
			return nil, err
		}
		for _, dom := range libvirtdemo.DefaultDomains() {
			m[demoGuest{"KVM", dom.Name}] = slices.Contains(running, dom.Name)
		}
	}
	return m, nil
}

// demoRestoreAfter is restore.after for a speed: 30 s of real time
// compressed like the battery, in whole seconds, at least 1 s.
func demoRestoreAfter(speed float64) time.Duration {
	return max(time.Second, (time.Duration(float64(30*time.Second) / speed)).Round(time.Second))
}

// demoBootTime is how long a simulated host takes from its Wake-on-LAN
// packet until its hypervisor answers (a real server: minutes), and
// demoPowerOnTime how long vCenter takes to power a VM on.
const (
	demoBootTime    = time.Second
	demoPowerOnTime = 500 * time.Millisecond
)

// demoOptions tune runDemo.
type demoOptions struct {
	// speed is how many times faster than real the battery drains.
	speed float64
	// inspect, if set, sees the site after the story has ended, before it
	// is torn down (tests).
	inspect func(*demoSite)
	// startKVM starts the KVM host; nil means libvirtdemo.Start (tests
	// replace it to play a machine without libvirtd).
	startKVM func(context.Context, []libvirtdemo.Domain) (*libvirtdemo.Site, error)
}

// runDemo plays the outage and the restore.
func runDemo(ctx context.Context, w io.Writer, log *slog.Logger, o demoOptions) error {
	speed := o.speed
	if o.startKVM == nil {
		o.startKVM = libvirtdemo.Start
	}
	if speed <= 0 {
		return &exitError{code: 2, err: errors.New("--speed must be more than 0")}
	}
	out := &lockedWriter{w: w} // the script, the view, the progress and the NICs all print
	site := &demoSite{nut: nuttest.NewServer()}
	srv := site.nut
	if err := srv.Start("127.0.0.1:0"); err != nil {
		return fmt.Errorf("demo: start simulated NUT server: %w", err)
	}
	defer srv.Close()
	srv.AddUser("sundown", demoPassword, nuttest.Perms{Upsmon: "primary"})
	srv.AddUPS("rack", "demo UPS", map[string]string{
		"ups.status": "OL CHRG", "battery.charge": "100", "battery.runtime": "300",
		"ups.load": "38", "device.mfr": "Simulated", "device.model": "Smart-UPS 1500 (demo)",
	})
	fmt.Fprintln(out, "sundown demo: starting a simulated UPS, a simulated vCenter (20 VMs on 3 hosts), a Proxmox VE node (5 guests) and a KVM host on libvirtd (5 guests) ...")
	fleet := demoFleet()
	// Guests take a moment to power on, so the restore's order shows.
	fleet.MethodDelay = map[string]time.Duration{"PowerOnVM_Task": demoPowerOnTime}
	sim, err := vcsim.Start(ctx, fleet)
	if err != nil {
		return fmt.Errorf("demo: start simulated vCenter: %w", err)
	}
	defer sim.Close()
	site.sim = sim
	pve, err := pvetest.NewServer(demoPVE())
	if err != nil {
		return fmt.Errorf("demo: start simulated Proxmox VE: %w", err)
	}
	defer pve.Close()
	site.pve = pve
	kvm, err := o.startKVM(ctx, nil)
	switch {
	case errors.Is(err, libvirtdemo.ErrNoLibvirtd):
		fmt.Fprintf(out, "The KVM host is left out: %v. The demo goes on without it.\n", libvirtdemo.ErrNoLibvirtd)
	case err != nil:
		// The demo is the README's first command: a libvirtd that does
		// not start on this machine must not stop it.
		fmt.Fprintf(out, "The KVM host is left out: libvirtd did not start (%v). The demo goes on without it.\n", err)
	default:
		defer kvm.Close()
		site.kvm = kvm
	}
	state, err := os.MkdirTemp("", "sundown-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	nics, err := listenNICs(out)
	if err != nil {
		return fmt.Errorf("demo: hosts' network cards: %w", err)
	}
	defer nics.close()
	site.nics = nics
	after := demoRestoreAfter(speed)
	c, err := demoConfig(srv.Addr(), sim, state, demoExtra{pve: pve, kvm: site.kvm, wolPort: nics.port(), restoreAfter: after})
	if err != nil {
		return fmt.Errorf("demo config: %w", err)
	}
	nics.start(demoNICList(site, c, log))
	pv := newProgress(out)
	a, err := app.New(c, log, app.Options{Act: true, OnStep: pv.event})
	if err != nil {
		return err
	}
	pv.run = func() string {
		if s := a.Snapshot().Shutdown; s != nil {
			return s.Kind
		}
		return ""
	}
	fmt.Fprintf(out, "NUT server %s, vCenter %s, Proxmox VE %s", srv.Addr(), sim.URL(), pve.URL())
	if site.kvm != nil {
		fmt.Fprintf(out, ", libvirtd (test driver, PID %d) %s", site.kvm.PID(), site.kvm.Socket())
	}
	fmt.Fprintf(out, ".\nThe hosts' network cards listen for Wake-on-LAN on udp 127.0.0.1:%d.\n", nics.port())
	fmt.Fprintf(out, "Policy: shut down when battery runtime < the plan's estimated duration + margin %s;\n", c.Power.RuntimeMargin)
	fmt.Fprintf(out, "        restore once mains has been back %s with the battery at %d %% or more.\n", after, demoRestoreMinCharge)
	fmt.Fprintf(out, "Time is compressed: the battery drains and recharges %gx faster than real; guests shut down in 1-4 s,\n", speed)
	fmt.Fprintf(out, "hosts boot in %s, vCenter powers a VM on in %s, and restore.after is %s where a real site waits minutes.\n\n",
		demoBootTime, demoPowerOnTime, after)

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
		scriptErr = demoScript(ctx, out, site, a, speed)
	}()
	err = watchApp(ctx, a, v)
	wg.Wait()
	pv.close()
	nics.close() // before inspect: no host boots behind its back
	if o.inspect != nil {
		o.inspect(site)
	}
	if scriptErr != nil {
		return scriptErr
	}
	return err
}

// demoNICList is the site's hosts as their network cards see them: a
// magic packet boots the host in its simulator. esx-03's VM autostart
// then starts sundown's own VM, as ESXi would (the restore leaves the VM
// sundown runs in to its host).
func demoNICList(site *demoSite, c *config.Config, log *slog.Logger) []demoNIC {
	var list []demoNIC
	for _, h := range []string{"esx-01", "esx-02", "esx-03"} {
		list = append(list, demoNIC{host: h, mac: demoMACs[h], boot: func(ctx context.Context) (string, error) {
			if err := site.sim.BootHost(h); err != nil {
				return "", err
			}
			if h != "esx-03" {
				return "", nil
			}
			if err := demoAutostart(ctx, site, c, log); err != nil {
				return "", fmt.Errorf("autostart of sundown's own VM: %w", err)
			}
			return "; its VM autostart starts sundown's own VM", nil
		}})
	}
	list = append(list, demoNIC{host: "pve-1", mac: demoMACs["pve-1"], boot: func(context.Context) (string, error) {
		return "", site.pve.BootNode("pve-1")
	}})
	return list
}

// demoAutostart powers sundown's own VM on, as esx-03's VM autostart
// would once the host is up.
func demoAutostart(ctx context.Context, site *demoSite, c *config.Config, log *slog.Logger) error {
	for _, t := range c.Targets {
		if t.Name != "vcenter" {
			continue
		}
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		p, err := app.NewProvider(ctx, t, log)
		if err != nil {
			return err
		}
		defer p.Close()
		if err := p.PowerOnGuest(ctx, site.sim.VMID("sundown")); err != nil {
			return err
		}
		site.selfMu.Lock()
		site.selfOn = time.Now()
		site.selfMu.Unlock()
		return nil
	}
	return errors.New("no vcenter target")
}

// demoScript drives the simulated UPS: mains fails, the battery drains
// until sundown decides, the shutdown runs; mains returns, the battery
// recharges, and the daemon's restore brings the site back.
func demoScript(ctx context.Context, out io.Writer, site *demoSite, a *app.App, speed float64) error {
	srv, sim, pve := site.nut, site.sim, site.pve
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
	before, err := site.powerStates()
	if err != nil {
		return err
	}
	if !sleep(ctx, time.Second) {
		return nil
	}

	// The outage.
	fmt.Fprintln(out, "\n>>> The mains power fails.")
	t0 := time.Now()
	srv.SetVars("rack", map[string]string{"ups.status": "OB DISCHRG"})
	runtime, charge := 300.0, 100.0
	const tick = 250 * time.Millisecond
	setBattery := func() {
		srv.SetVars("rack", map[string]string{"battery.runtime": strconv.Itoa(int(runtime)), "battery.charge": strconv.Itoa(int(charge))})
	}
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
		setBattery()
	}
	tDecided := time.Now()
	fmt.Fprintln(out, "\n>>> sundown decided: FSD set on the UPS as its primary; the plan runs now.")
	if err := waitFor("the shutdown", 3*time.Minute, func(s app.Snapshot) bool {
		return s.Shutdown != nil && s.Shutdown.Kind == "shutdown" && s.Shutdown.State == "done"
	}); err != nil {
		return err
	}
	tDown := time.Now()
	s := a.Snapshot().Shutdown
	down, err := site.powerStates()
	if err != nil {
		return err
	}
	var parts []string
	for _, f := range demoFleets {
		ran, off := 0, 0
		for g, on := range before {
			if g.Fleet == f && on {
				ran++
				if !down[g] {
					off++
				}
			}
		}
		if ran > 0 {
			parts = append(parts, fmt.Sprintf("%s %d of %d running guests off", f, off, ran))
		}
	}
	fmt.Fprintf(out, "\n>>> Shutdown finished in %s (estimated %s): %s; hosts shut down: %s; %d step(s) failed.\n",
		tDown.Sub(tDecided).Round(100*time.Millisecond), s.Estimate.Round(time.Second), strings.Join(parts, ", "),
		strings.Join(append(sim.HostShutdowns(), pve.NodeShutdowns()...), ", "), failedSteps(s))
	fmt.Fprintln(out, "    In real life the UPS now cuts the load; sundown's own VM went down with esx-03, last.")
	if site.kvm != nil {
		fmt.Fprintf(out, "    The KVM host %s stays up (libvirt cannot shut a host down; a real site adds host_ssh).\n", libvirtdemo.HostName)
	}
	if !sleep(ctx, time.Second) {
		return nil
	}

	// Mains returns: the restore.
	cfg := a.Config()
	rule := policy.RestoreRule{After: cfg.Restore.After.D(), MinCharge: *cfg.Restore.MinCharge}
	fmt.Fprintf(out, "\n>>> Mains power returns. The UPS restarts (its FSD flag clears) and recharges its battery, %gx faster than real.\n", speed)
	fmt.Fprintf(out, "    sundown's restore policy waits until mains has been back %s with the battery at %.0f %% or more (time-compressed).\n",
		rule.After, rule.MinCharge)
	tBack := time.Now()
	srv.ResetFSD("rack")
	srv.SetVars("rack", map[string]string{"ups.status": "OL CHRG"})
	pcfg := app.PolicyConfig(cfg)
	// The battery recharges 0.4 %/s at speed 1 (a full charge in about 4
	// minutes: faster than a real UPS, like everything here).
	recharge := func() {
		charge = min(100, charge+speed*tick.Seconds()*0.4)
		runtime = charge * 3
		setBattery()
	}
	restoring := func(s app.Snapshot) bool { return s.Shutdown != nil && s.Shutdown.Kind == "restore" }
	var lastSaid time.Time
	// The restore is due after restore.after and the recharge, plus slack.
	limit := rule.After + time.Duration(max(0, rule.MinCharge-charge)/(speed*0.4)*float64(time.Second)) + 30*time.Second
	deadline = time.Now().Add(limit)
	for !restoring(a.Snapshot()) {
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: no restore within %s of mains returning: %s", limit.Round(time.Second), a.Snapshot().Decision)
		}
		if !sleep(ctx, tick) {
			return nil
		}
		recharge()
		// Say why the daemon's restore policy still waits (the same pure
		// function, evaluated here only to narrate).
		snap, now := a.Snapshot(), time.Now()
		if ok, why := policy.RestoreReady(pcfg, rule, snap.UPS, now); !ok && now.Sub(lastSaid) >= time.Second && !restoring(snap) {
			lastSaid = now
			fmt.Fprintf(out, "%s  restore waits: %s\n", now.Format("15:04:05.0"), why)
		}
	}
	tRestore := time.Now()
	u := a.Snapshot().UPS[0]
	fmt.Fprintf(out, "\n>>> Mains has been back %s and the battery is at %.0f %%: sundown started the restore by itself.\n",
		tRestore.Sub(tBack).Round(100*time.Millisecond), u.Charge)
	deadline = time.Now().Add(2 * time.Minute)
	for {
		if snap := a.Snapshot(); restoring(snap) && (snap.Shutdown.State == "done" || snap.Shutdown.State == "stopped") {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: the restore did not finish within 2 minutes")
		}
		if !sleep(ctx, tick) {
			return nil
		}
		recharge()
	}
	// The restore ends with its last guest on; esx-03's autostart may
	// still be starting sundown's own VM.
	if err := waitFor("the autostart of sundown's own VM", 20*time.Second, func(app.Snapshot) bool {
		site.selfMu.Lock()
		defer site.selfMu.Unlock()
		return !site.selfOn.IsZero()
	}); err != nil {
		return err
	}
	tUp := time.Now()
	r := a.Snapshot().Shutdown
	return demoRestoreSummary(out, site, before, r, demoTimes{t0, tDecided, tDown, tBack, tRestore, tUp})
}

// demoTimes are the moments of the story.
type demoTimes struct{ fail, decided, down, back, restore, up time.Time }

// demoRestoreSummary compares every guest's power state with the one it
// had before the outage, prints the result and the timeline, and fails
// unless everything that was on is on again and what was off stayed off.
func demoRestoreSummary(out io.Writer, site *demoSite, before map[demoGuest]bool, r *app.ShutdownStatus, t demoTimes) error {
	now, err := site.powerStates()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n>>> The site is back. The restore ran %s, %d step(s) failed.\n",
		r.Ended.Sub(r.Started).Round(100*time.Millisecond), failedSteps(r))
	var wrong []string
	for _, f := range demoFleets {
		ran, on := 0, 0
		var leftOff []string
		for _, g := range sortedGuests(before) {
			if g.Fleet != f {
				continue
			}
			switch {
			case before[g] && now[g]:
				ran++
				on++
			case before[g]:
				ran++
				wrong = append(wrong, fmt.Sprintf("%s %s was on before the outage and is off", f, g.Name))
			case now[g]:
				wrong = append(wrong, fmt.Sprintf("%s %s was off before the outage and is on", f, g.Name))
			default:
				leftOff = append(leftOff, g.Name)
			}
		}
		if ran == 0 && len(leftOff) == 0 {
			continue
		}
		line := fmt.Sprintf("    %-8s %d of %d guests that ran before the outage run again", f+":", on, ran)
		if len(leftOff) > 0 {
			line += "; off before, still off: " + strings.Join(leftOff, ", ")
		}
		fmt.Fprintln(out, line)
	}
	fmt.Fprintf(out, "    Hosts woken by Wake-on-LAN: %s; sundown's own VM came back with esx-03's VM autostart.\n", strings.Join(site.nics.woken(), ", "))
	at := func(x time.Time) string { return x.Sub(t.fail).Round(100 * time.Millisecond).String() }
	fmt.Fprintf(out, "\nTimeline: mains failed at 0s; sundown decided at %s; site down at %s; mains back at %s; restore started at %s; site back at %s.\n",
		at(t.decided), at(t.down), at(t.back), at(t.restore), at(t.up))
	fmt.Fprintf(out, "Time to shutdown: %s from the decision. Time to full restore: %s from mains returning (%s of it waiting for the power to hold and the battery to charge).\n",
		t.down.Sub(t.decided).Round(100*time.Millisecond), t.up.Sub(t.back).Round(100*time.Millisecond), t.restore.Sub(t.back).Round(100*time.Millisecond))
	if len(wrong) > 0 || failedSteps(r) > 0 {
		for _, w := range wrong {
			fmt.Fprintf(out, "    NOT RESTORED: %s\n", w)
		}
		return fmt.Errorf("demo: the site did not come back as it was: %d guest(s) differ, %d restore step(s) failed", len(wrong), failedSteps(r))
	}
	fmt.Fprintln(out, "\nEverything that was on is on again; what was off before stays off. Demo finished.")
	return nil
}

func sortedGuests(m map[demoGuest]bool) []demoGuest {
	gs := make([]demoGuest, 0, len(m))
	for g := range m {
		gs = append(gs, g)
	}
	slices.SortFunc(gs, func(a, b demoGuest) int {
		if c := strings.Compare(a.Fleet, b.Fleet); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return gs
}

func failedSteps(s *app.ShutdownStatus) int {
	n := 0
	for _, st := range s.Steps {
		if st.State == "failed" {
			n++
		}
	}
	return n
}

// demoNIC is one host's network card: a magic packet with mac boots the
// host. boot returns a note for the "is up" line.
type demoNIC struct {
	host, mac string
	boot      func(ctx context.Context) (string, error)
}

// demoNICs plays the network cards of the site's hosts while they are
// off: one UDP socket on loopback where the restore's Wake-on-LAN magic
// packets arrive (the config's wake entries broadcast to it). A packet
// carrying a host's MAC boots that host demoBootTime later.
type demoNICs struct {
	conn   *net.UDPConn
	out    io.Writer
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the reader and the boots
	once   sync.Once

	mu     sync.Mutex
	nics   []demoNIC
	magic  [][]byte
	booted map[string]bool
	order  []string // hosts, in the order their first packet came
}

func listenNICs(out io.Writer) (*demoNICs, error) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &demoNICs{conn: conn, out: out, ctx: ctx, cancel: cancel, booted: map[string]bool{}}, nil
}

func (n *demoNICs) port() int { return n.conn.LocalAddr().(*net.UDPAddr).Port }

// start begins listening for the hosts of nics.
func (n *demoNICs) start(nics []demoNIC) {
	n.mu.Lock()
	for _, nic := range nics {
		hw, err := wake.ParseMAC(nic.mac)
		if err != nil {
			continue // demoMACs are valid
		}
		pkt, err := wake.MagicPacket(hw, nil)
		if err != nil {
			continue
		}
		n.nics = append(n.nics, nic)
		n.magic = append(n.magic, pkt)
	}
	n.mu.Unlock()
	n.wg.Go(n.read)
}

func (n *demoNICs) read() {
	buf := make([]byte, 512)
	for {
		k, _, err := n.conn.ReadFromUDP(buf)
		if err != nil {
			return // closed
		}
		n.mu.Lock()
		for i, pkt := range n.magic {
			nic := n.nics[i]
			if !bytes.Equal(buf[:k], pkt) || n.booted[nic.host] {
				continue
			}
			n.booted[nic.host] = true
			n.order = append(n.order, nic.host)
			fmt.Fprintf(n.out, "%s  WOL      magic packet for %s (%s) reached its network card: the host powers on\n",
				time.Now().Format("15:04:05.0"), nic.host, nic.mac)
			n.wg.Go(func() { n.boot(nic) })
		}
		n.mu.Unlock()
	}
}

func (n *demoNICs) boot(nic demoNIC) {
	if !sleep(n.ctx, demoBootTime) {
		return
	}
	note, err := nic.boot(n.ctx)
	if err != nil {
		fmt.Fprintf(n.out, "%s  BOOT     %s: %v\n", time.Now().Format("15:04:05.0"), nic.host, err)
		return
	}
	fmt.Fprintf(n.out, "%s  BOOT     %s is up%s\n", time.Now().Format("15:04:05.0"), nic.host, note)
}

// woken lists the hosts a magic packet woke, in order.
func (n *demoNICs) woken() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.order)
}

// close stops listening and waits for the boots under way (cut short).
func (n *demoNICs) close() {
	n.once.Do(func() {
		n.cancel()
		_ = n.conn.Close()
		n.wg.Wait()
	})
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
