package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sundown-ups/sundown/internal/plan"
	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/fake"
	"github.com/sundown-ups/sundown/internal/provider/vsphere"
	"github.com/sundown-ups/sundown/internal/provider/vsphere/vcsim"
)

// The ordered-shutdown benchmarks. Both run the site of shutdown.go (tiers
// web → app → db → dc with 40/30/20/10 % of the VMs, each VM's guest
// shutdown delay drawn uniformly with seed 1) through plan.Build,
// Plan.Estimate and plan.Execute, and compare the measured makespan with
// the lower bounds computed from the same delays and with ESXi's autostart
// manager on the same inputs.
//
//   - BenchmarkShutdownVSphere1000: 1,000 VMs on 50 hosts of govmomi's
//     vCenter simulator (internal/provider/vsphere/vcsim), driven through
//     the real vsphere provider over HTTPS on 127.0.0.1, in real time. The
//     delays are 0.5–3 s: the 20–120 s of the fake benchmark compressed
//     40×, so that the run takes about half a minute.
//   - BenchmarkShutdownFake10k: 10,000 VMs on 500 hosts of the in-process
//     fake provider, uncompressed delays of 20–120 s, in the virtual time of
//     a testing/synctest bubble. It runs in a child process of the test
//     binary (TestShutdownFake10kChild) so that the peak RSS it reports is
//     that run's own.
//
// Run them with `make bench-shutdown`, or
// `go test ./bench -run '^$' -bench Shutdown -benchtime 1x -count=1`
// (about 50 s); each writes its section of docs/BENCHMARKS.md
// (shutdown-vsphere, shutdown-fake10k) unless SUNDOWN_WRITE_DOCS=0.
// TestShutdownVSphereSmall and TestShutdownFakeSmall run the same code at a
// small scale in the ordinary tests (about a second).

const (
	shutdownSeed = 1
	// vsCompression is how much shorter the vSphere benchmark's delays are
	// than the fake benchmark's.
	vsCompression = 10
	// vsPollInterval is the vsphere provider's poll interval in the vSphere
	// benchmark: its default. WaitGuest follows the power-state watch, so
	// the poll interval only matters while the watch is down.
	vsPollInterval = 100 * time.Millisecond
	// vsPollEnv overrides vsPollInterval (a Go duration), to measure its
	// effect.
	vsPollEnv = "SUNDOWN_BENCH_VSPHERE_POLL"
	// fake10kEnv names the file the child run writes its result to; the
	// child test is skipped without it.
	fake10kEnv = "SUNDOWN_SHUTDOWN10K_OUT"
	// fake10kGlobalEnv is the child's global cap.
	fake10kGlobalEnv = "SUNDOWN_SHUTDOWN10K_GLOBAL"
)

// shutdownCaps are the caps of both benchmarks' main runs.
var shutdownCaps = plan.Caps{Global: 64, PerHost: 4}

// shutdownRun is what one run of a site measured. Durations are in
// seconds (virtual seconds for the fake).
type shutdownRun struct {
	VMs, Hosts, Steps int
	Global, PerHost   int
	// Build phase (real time): reading the inventory from the provider,
	// plan.Build, Plan.Estimate.
	InventorySec, BuildSec, EstimateSec, PlanSec float64
	// Makespan is Execute's start to end; Estimate the list schedule's
	// makespan for the same delays.
	Makespan, Estimate float64
	// LowerBound is plan.Schedule.LowerBound = max(critical path, total
	// work / Global, busiest host's work / PerHost); its parts.
	LowerBound, CriticalPath, WorkBound, HostBound float64
	// MeanDelay is the mean guest delay. CrowdedHost is how many VMs of
	// tier CrowdedTier (of CrowdedTierVMs) the most crowded host carries
	// (see crowdedHost).
	MeanDelay                   float64
	CrowdedHost, CrowdedTierVMs int
	CrowdedTier                 string
	// TierBound is tierBound: the bound that knows the tiers are barriers;
	// TierBounds its parts, per tier in stopping order.
	TierBound  float64
	TierBounds []float64
	// TierVMs counts the VMs of each tier.
	TierVMs []int
	// TierSpans and EstimateTierSpans are how long each tier took in the
	// run and in Estimate's schedule.
	TierSpans, EstimateTierSpans []float64
	// Autostart is the ESXi autostart model's makespan, AutostartHost its
	// busiest host.
	Autostart     float64
	AutostartHost string
	// PeakGlobal and PeakPerHost are the most steps seen running at once.
	PeakGlobal, PeakPerHost int
	Failed                  int
	// Off counts the VMs powered off after the run.
	Off int
	// WallSec is the real time of the run (for the fake: the bubble).
	WallSec float64
	// HWMKiB is the process's peak RSS (VmHWM) after the run.
	HWMKiB int64
	// Overhead summarizes each guest step's duration minus its guest's
	// delay (seconds).
	OverheadMedian, OverheadP95, OverheadMax float64
	// Utilization is the share of the Global × Makespan slot time that
	// guest steps used.
	Utilization float64
	// Journal says whether the run journaled (fsync per transition).
	Journal bool
	// Problems lists what went wrong (order violations, caps exceeded,
	// guests left on); empty for a good run.
	Problems []string
}

// ratio is Makespan / LowerBound.
func (r shutdownRun) ratio() float64 { return r.Makespan / r.LowerBound }

// check fills Problems from the run's report.
func (r *shutdownRun) check(s shutdownSite, p *plan.Plan, rep *plan.Report, caps plan.Caps) {
	ov := summarize(stepOverheads(s, p, rep))
	r.OverheadMedian, r.OverheadP95, r.OverheadMax = ov.Median.Seconds(), ov.P95.Seconds(), ov.Max.Seconds()
	var busy time.Duration
	for _, x := range rep.Steps {
		if x.Kind == plan.StepGuest {
			busy += x.End.Sub(x.Start)
		}
	}
	if r.Makespan > 0 {
		r.Utilization = busy.Seconds() / (float64(caps.Global) * r.Makespan)
	}
	r.Problems = append(r.Problems, orderViolations(p, rep, 10)...)
	r.Failed = len(rep.Failed())
	if r.Failed > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d steps failed, first: %s: %s", r.Failed, rep.Failed()[0].Key, rep.Failed()[0].Err))
	}
	if rep.JournalErr != "" {
		r.Problems = append(r.Problems, "journal: "+rep.JournalErr)
	}
	r.PeakGlobal, r.PeakPerHost = peakRunning(p, rep)
	r.TierSpans = seconds(tierSpans(p, func(id int) time.Duration { return rep.Steps[id].End.Sub(rep.Started) }))
	if r.PeakGlobal > caps.Global || r.PeakPerHost > caps.PerHost {
		r.Problems = append(r.Problems, fmt.Sprintf("%d steps ran at once (%d on one host), caps %d/%d",
			r.PeakGlobal, r.PeakPerHost, caps.Global, caps.PerHost))
	}
	if r.Off != r.VMs {
		r.Problems = append(r.Problems, fmt.Sprintf("%d of %d VMs off after the run", r.Off, r.VMs))
	}
	if r.Makespan < r.TierBound {
		r.Problems = append(r.Problems, fmt.Sprintf("makespan %.3f s below the lower bound %.3f s: the delays were not applied", r.Makespan, r.TierBound))
	}
}

// seconds converts durations to seconds.
func seconds(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}

// planSite reads the inventory (from the provider under test), builds the
// site's plan and schedules it, timing each part, and fills r with the
// plan's numbers, the bounds and the autostart model.
func planSite(tb testing.TB, s shutdownSite, inventory func() (provider.Inventory, error), caps plan.Caps, r *shutdownRun) *plan.Plan {
	tb.Helper()
	t0 := time.Now()
	inv, err := inventory()
	if err != nil {
		tb.Fatalf("inventory: %v", err)
	}
	t1 := time.Now()
	spec, err := shutdownSpec(s, "vc", inv, caps)
	if err != nil {
		tb.Fatal(err)
	}
	p, probs := plan.Build(spec)
	if plan.HasErrors(probs) {
		tb.Fatalf("plan: %v", probs)
	}
	t2 := time.Now()
	sc := p.Estimate(caps)
	t3 := time.Now()
	r.VMs, r.Hosts, r.Steps, r.Global, r.PerHost = len(s.VMs), len(s.Hosts), len(p.Steps), caps.Global, caps.PerHost
	r.InventorySec, r.BuildSec, r.EstimateSec, r.PlanSec = t1.Sub(t0).Seconds(), t2.Sub(t1).Seconds(), t3.Sub(t2).Seconds(), t3.Sub(t0).Seconds()
	r.Estimate, r.LowerBound = sc.Makespan.Seconds(), sc.LowerBound.Seconds()
	r.CriticalPath, r.WorkBound, r.HostBound = sc.CriticalPathLen.Seconds(), sc.WorkBound.Seconds(), sc.HostBound.Seconds()
	r.TierBound = tierBound(s, caps).Seconds()
	r.TierBounds = seconds(tierBounds(s, caps))
	r.EstimateTierSpans = seconds(tierSpans(p, func(id int) time.Duration { return sc.End[id] }))
	r.CrowdedHost, r.CrowdedTierVMs, r.CrowdedTier = crowdedHost(s, caps)
	var sum time.Duration
	r.TierVMs = make([]int, len(tierNames))
	for _, vm := range s.VMs {
		sum += vm.Delay
		r.TierVMs[vm.Tier]++
	}
	if len(s.VMs) > 0 {
		r.MeanDelay = (sum / time.Duration(len(s.VMs))).Seconds()
	}
	a, host := autostartMakespan(s, esxiStopDelay)
	r.Autostart, r.AutostartHost = a.Seconds(), host
	return p
}

// vsphereExtra is what only the vSphere run measures.
type vsphereExtra struct {
	SimStart   time.Duration
	Connect    time.Duration
	APICalls   map[string]int
	PollEvery  time.Duration
	Compressed int
	// CPU is how busy the machine was during Execute and how much of it
	// this process (simulator, provider and executor) was: the machine is
	// shared, and the simulator competes with the pollers for its cores.
	CPU cpuShare
}

// vsphereResult holds BenchmarkShutdownVSphere1000's result: the scenario
// runs once whatever b.N is.
var vsphereResult *struct {
	run shutdownRun
	x   vsphereExtra
}

// BenchmarkShutdownVSphere1000: 1,000 VMs on 50 hosts of the vCenter
// simulator, through the vsphere provider and plan.Execute, in real time
// (about two minutes with the simulator's start).
func BenchmarkShutdownVSphere1000(b *testing.B) {
	if vsphereResult == nil {
		r, x := runVSphere(b, newShutdownSite(shutdownSeed, 50, 1000, 20*time.Second/vsCompression, 120*time.Second/vsCompression), shutdownCaps, true)
		vsphereResult = &struct {
			run shutdownRun
			x   vsphereExtra
		}{r, x}
	}
	r, x := vsphereResult.run, vsphereResult.x
	b.ReportMetric(r.PlanSec, "plan_s")
	b.ReportMetric(r.Makespan, "makespan_s")
	b.ReportMetric(r.LowerBound, "lowerbound_s")
	b.ReportMetric(r.ratio(), "makespan/LB")
	b.ReportMetric(r.Makespan/r.TierBound, "makespan/tierLB")
	b.ReportMetric(r.Autostart, "autostart_s")
	b.ReportMetric(r.Estimate, "estimate_s")
	b.ReportMetric(r.OverheadMedian*1000, "step-overhead-median-ms")
	b.ReportMetric(r.OverheadP95*1000, "step-overhead-p95-ms")
	b.ReportMetric(r.Utilization, "slot-utilization")
	for _, p := range r.Problems {
		b.Error(p)
	}
	writeDocs(b, "shutdown-vsphere", vsphereDoc(r, x, shutdownMachineLine()), true)
}

// runVSphere starts the site on the simulator (a vCenter with every host in
// one cluster), connects the vsphere provider as the daemon does (CA file,
// user and password), plans and runs the shutdown.
func runVSphere(tb testing.TB, s shutdownSite, caps plan.Caps, journal bool) (shutdownRun, vsphereExtra) {
	tb.Helper()
	ctx := context.Background()
	f := vcsim.Fleet{VCenter: true}
	for _, h := range s.Hosts {
		f.Hosts = append(f.Hosts, vcsim.Host{Name: h})
	}
	for _, vm := range s.VMs {
		f.VMs = append(f.VMs, vcsim.VM{Name: vm.Name, Host: s.Hosts[vm.Host], ShutdownDelay: vm.Delay})
	}
	sim, err := vcsim.Start(ctx, f)
	if err != nil {
		tb.Fatalf("vcsim: %v", err)
	}
	tb.Cleanup(func() { sim.Close() })
	poll := vsPollInterval
	if v := os.Getenv(vsPollEnv); v != "" {
		if poll, err = time.ParseDuration(v); err != nil || poll <= 0 {
			tb.Fatalf("%s=%q: not a positive duration", vsPollEnv, v)
		}
	}
	x := vsphereExtra{SimStart: sim.StartDuration(), PollEvery: poll, Compressed: vsCompression}

	t0 := time.Now()
	prov, err := vsphere.New(ctx, vsphere.Config{
		URL: sim.URL(), Username: sim.Username(), Password: sim.Password(), CAFile: sim.CAFile(),
		PollInterval: poll, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		tb.Fatalf("vsphere: %v", err)
	}
	tb.Cleanup(func() { prov.Close() })
	x.Connect = time.Since(t0)

	r := shutdownRun{Journal: journal}
	p := planSite(tb, s, func() (provider.Inventory, error) { return prov.Inventory(ctx) }, caps, &r)
	opts := plan.ExecOptions{Caps: caps}
	if journal {
		j, err := plan.OpenJournal(filepath.Join(tb.TempDir(), "journal"))
		if err != nil {
			tb.Fatal(err)
		}
		defer j.Close()
		opts.Journal = j
	}
	methods := []string{"RetrieveProperties", "RetrievePropertiesEx", "ShutdownGuest", "PowerOffVM_Task"}
	before := map[string]int{}
	for _, m := range methods {
		before[m] = sim.Calls(m)
	}
	cpu := startCPU()
	wall := time.Now()
	rep, err := plan.Execute(ctx, p, plan.Targets{"vc": prov}, opts)
	if err != nil {
		tb.Fatalf("execute: %v", err)
	}
	r.WallSec = time.Since(wall).Seconds()
	if x.CPU, err = cpu.Stop(); err != nil {
		tb.Logf("CPU shares not measured: %v", err)
	}
	r.Makespan = rep.Ended.Sub(rep.Started).Seconds()
	x.APICalls = map[string]int{}
	for _, m := range methods {
		x.APICalls[m] = sim.Calls(m) - before[m]
	}
	for _, vm := range s.VMs {
		if sim.PowerState(vm.Name) == "poweredOff" {
			r.Off++
		}
	}
	r.check(s, p, rep, caps)
	return r, x
}

// TestShutdownVSphereSmall runs the vSphere benchmark's scenario at a small
// scale (12 VMs on 2 hosts, delays 50–150 ms, caps 4/2; about a second)
// and checks what the benchmark relies on: every VM off through the real
// provider, the order and the caps kept, the makespan at or above the
// tier-aware bound computed from the same delays.
func TestShutdownVSphereSmall(t *testing.T) {
	s := newShutdownSite(shutdownSeed, 2, 12, 50*time.Millisecond, 150*time.Millisecond)
	r, _ := runVSphere(t, s, plan.Caps{Global: 4, PerHost: 2}, true)
	for _, p := range r.Problems {
		t.Error(p)
	}
	t.Logf("makespan %.2f s, estimate %.2f s, LB %.2f s, tier LB %.2f s, autostart %.2f s, peak %d/%d",
		r.Makespan, r.Estimate, r.LowerBound, r.TierBound, r.Autostart, r.PeakGlobal, r.PeakPerHost)
}

// fakeFleet is the site as a fake fleet: hosts host-NNN, VMs vm-NNNNN, each
// guest turning off its delay after the shutdown request.
func fakeFleet(s shutdownSite) fake.Fleet {
	var f fake.Fleet
	for h, name := range s.Hosts {
		f.Hosts = append(f.Hosts, fake.HostSpec{ID: fmt.Sprintf("host-%03d", h), Name: name})
	}
	for i, vm := range s.VMs {
		f.Guests = append(f.Guests, fake.GuestSpec{ID: fmt.Sprintf("vm-%05d", i), Name: vm.Name,
			HostID: fmt.Sprintf("host-%03d", vm.Host), ShutdownDelay: vm.Delay})
	}
	return f
}

// runFake plans the site (from a fake's inventory, in real time) and runs
// it on a fresh fake in a synctest bubble, with a journal in a temp folder
// when journal is set.
func runFake(t *testing.T, s shutdownSite, caps plan.Caps, journal bool) shutdownRun {
	t.Helper()
	fleet := fakeFleet(s)
	r := shutdownRun{Journal: journal}
	f0 := fake.New(fleet)
	p := planSite(t, s, func() (provider.Inventory, error) { return f0.Inventory(t.Context()) }, caps, &r)
	f0.Close()
	dir := t.TempDir()
	var rep *plan.Report
	wall := time.Now()
	synctest.Test(t, func(t *testing.T) {
		f := fake.New(fleet)
		defer f.Close()
		opts := plan.ExecOptions{Caps: caps}
		if journal {
			j, err := plan.OpenJournal(filepath.Join(dir, "journal"))
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			opts.Journal = j
		}
		var err error
		if rep, err = plan.Execute(t.Context(), p, plan.Targets{"vc": f}, opts); err != nil {
			t.Fatal(err)
		}
		inv, err := f.Inventory(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range inv.Guests {
			if g.Power == provider.PowerOff {
				r.Off++
			}
		}
	})
	r.WallSec = time.Since(wall).Seconds()
	if rep == nil {
		t.FailNow()
	}
	r.Makespan = rep.Ended.Sub(rep.Started).Seconds()
	r.check(s, p, rep, caps)
	return r
}

// TestShutdownFakeSmall runs the fake benchmark's scenario at a small scale
// (200 VMs on 10 hosts, caps 16/4) and checks what the benchmark relies
// on: every guest off, the order and the caps kept, and the makespan
// between the tier-aware lower bound and Estimate's schedule (the fake
// takes no time of its own, so the executor should follow Estimate).
func TestShutdownFakeSmall(t *testing.T) {
	s := newShutdownSite(shutdownSeed, 10, 200, 20*time.Second, 120*time.Second)
	r := runFake(t, s, plan.Caps{Global: 16, PerHost: 4}, true)
	for _, p := range r.Problems {
		t.Error(p)
	}
	if r.Makespan > r.Estimate*1.01 {
		t.Errorf("makespan %.1f s, Estimate %.1f s: the executor did not follow the schedule", r.Makespan, r.Estimate)
	}
	if r.PeakGlobal != 16 {
		t.Errorf("peak %d steps at once, want the cap (16)", r.PeakGlobal)
	}
	t.Logf("makespan %.1f s, estimate %.1f s, LB %.1f s, tier LB %.1f s, autostart %.1f s", r.Makespan, r.Estimate, r.LowerBound, r.TierBound, r.Autostart)
}

// fake10kRuns holds BenchmarkShutdownFake10k's results: the scenario runs
// once whatever b.N is.
var fake10kRuns []shutdownRun

// BenchmarkShutdownFake10k: 10,000 VMs on 500 hosts, fake provider, virtual
// time, in a child process. It runs the site under the caps of the vSphere
// benchmark (64 global, 4 per host: the targets apply to this run) and
// once more with the global cap opened to 500 hosts × 4 = 2,000 (for the
// comparison with ESXi's autostart, which stops 500 VMs at once here).
func BenchmarkShutdownFake10k(b *testing.B) {
	if fake10kRuns == nil {
		for _, global := range []int{shutdownCaps.Global, 2000} {
			fake10kRuns = append(fake10kRuns, runFake10kChild(b, global))
		}
	}
	r := fake10kRuns[0]
	b.ReportMetric(r.PlanSec, "plan_s")
	b.ReportMetric(r.Makespan, "makespan_s")
	b.ReportMetric(r.LowerBound, "lowerbound_s")
	b.ReportMetric(r.ratio(), "makespan/LB")
	b.ReportMetric(r.Autostart, "autostart_s")
	b.ReportMetric(mb(r.HWMKiB), "peak-rss-MB")
	b.ReportMetric(fake10kRuns[1].Makespan, "makespan_global2000_s")
	for _, r := range fake10kRuns {
		for _, p := range r.Problems {
			b.Errorf("global cap %d: %s", r.Global, p)
		}
	}
	writeDocs(b, "shutdown-fake10k", fake10kDoc(fake10kRuns, shutdownMachineLine()), true)
}

// runFake10kChild runs TestShutdownFake10kChild in a child process of this
// test binary and returns its result.
func runFake10kChild(b *testing.B, global int) shutdownRun {
	b.Helper()
	out := filepath.Join(b.TempDir(), "result.json")
	cmd := exec.Command(os.Args[0], "-test.run=^TestShutdownFake10kChild$", "-test.count=1", "-test.bench=^$", "-test.v")
	cmd.Env = append(os.Environ(), fake10kEnv+"="+out, fake10kGlobalEnv+"="+strconv.Itoa(global))
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("child run (global %d): %v\n%s", global, err, msg)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		b.Fatalf("child run (global %d): %v", global, err)
	}
	var r shutdownRun
	if err := json.Unmarshal(data, &r); err != nil {
		b.Fatalf("child run (global %d): %v", global, err)
	}
	return r
}

// TestShutdownFake10kChild is BenchmarkShutdownFake10k's child run: it
// runs only when the benchmark starts it (fake10kEnv names the result
// file), so that the peak RSS it reads is the scenario's own.
func TestShutdownFake10kChild(t *testing.T) {
	out := os.Getenv(fake10kEnv)
	if out == "" {
		t.Skip("the child run of BenchmarkShutdownFake10k (set " + fake10kEnv + ")")
	}
	caps := shutdownCaps
	if v := os.Getenv(fake10kGlobalEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("%s=%q: not a positive number", fake10kGlobalEnv, v)
		}
		caps.Global = n
	}
	s := newShutdownSite(shutdownSeed, 500, 10000, 20*time.Second, 120*time.Second)
	r := runFake(t, s, caps, true)
	hwm, err := vmHWM()
	if err != nil {
		t.Fatal(err)
	}
	r.HWMKiB = hwm
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// shutdownMachineLine says when and where the shutdown benchmarks ran.
func shutdownMachineLine() string {
	osName := "unknown OS"
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				osName = strings.Trim(v, `"`)
			}
		}
	}
	return fmt.Sprintf("Measured %s on %s/%s, %d cores, %s, %s.",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), osName, runtime.Version())
}
