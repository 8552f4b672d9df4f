package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sundown-ups/sundown/internal/plan"
	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/fake"
)

// The restore benchmark: the shutdown site of the other benchmarks, shut
// down (guests, maintenance, hosts) and brought back by plan.Restore, in
// the virtual time of a synctest bubble. Every host takes restoreHostBoot
// from the wake to a hypervisor that answers; every guest takes a boot
// time drawn uniformly from restoreBootLo–restoreBootHi from power-on to
// ready (its readiness check passes), polled every restorePoll as the
// daemon does.
const (
	restoreHostBoot = 3 * time.Minute
	restoreBootLo   = 20 * time.Second
	restoreBootHi   = 90 * time.Second
	restorePoll     = 2 * time.Second
	// esxiStartDelay is ESXi's autostart default: it starts the next VM
	// when the guest's tools report (here: when ready) or after 120 s.
	esxiStartDelay = 120 * time.Second
)

// restoreRun is what one restore measured (seconds of virtual time).
type restoreRun struct {
	VMs, Hosts, Steps int
	Global, PerHost   int
	ShutdownSec       float64
	Makespan          float64 // restore: start → every guest ready
	Estimate          float64 // Estimate's schedule of the restore plan with the true durations
	LowerBound        float64
	CriticalPath      float64
	WorkBound         float64
	HostBound         float64
	Autostart         float64 // the ESXi autostart model
	TierSpans         []float64
	On                int // guests on at the end
	Problems          []string
	WallSec           float64
}

// bootDelays draws each VM's boot-to-ready time with its own generator, so
// the shutdown delays of the site are unchanged.
func bootDelays(s shutdownSite, seed uint64) []time.Duration {
	r := rand.New(rand.NewPCG(seed, 0xb007))
	span := int64((restoreBootHi - restoreBootLo) / time.Millisecond)
	out := make([]time.Duration, len(s.VMs))
	for i := range s.VMs {
		out[i] = restoreBootLo + time.Duration(r.Int64N(span+1))*time.Millisecond
	}
	return out
}

// autostartRestore is ESXi's autostart manager bringing the site back: all
// hosts boot at once; each starts its VMs one at a time in its start order,
// going on when the guest is ready or after esxiStartDelay, whichever comes
// first. It cannot order VMs across hosts (db on one host before web on
// another), which sundown does.
func autostartRestore(s shutdownSite, boot []time.Duration) time.Duration {
	host := make([]time.Duration, len(s.Hosts))
	last := make([]time.Duration, len(s.Hosts))
	for i, vm := range s.VMs {
		host[vm.Host] += min(boot[i], esxiStartDelay)
		last[vm.Host] = boot[i] - min(boot[i], esxiStartDelay)
	}
	var worst time.Duration
	for h := range host {
		worst = max(worst, restoreHostBoot+host[h]+last[h])
	}
	return worst
}

func runRestore(t *testing.T, s shutdownSite, caps plan.Caps) restoreRun {
	fleet := fakeFleet(s)
	for i := range fleet.Hosts {
		fleet.Hosts[i].ShutdownDelay = 30 * time.Second
	}
	fleet.MaintenanceWithGuests = false
	boot := bootDelays(s, shutdownSeed)
	byName := map[string]time.Duration{}
	for i, vm := range s.VMs {
		byName[vm.Name] = boot[i]
	}
	r := restoreRun{VMs: len(s.VMs), Hosts: len(s.Hosts), Global: caps.Global, PerHost: caps.PerHost}
	dir := t.TempDir()
	wall := time.Now()
	synctest.Test(t, func(t *testing.T) {
		f := fake.New(fleet)
		defer f.Close()
		inv, err := f.Inventory(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		spec, err := shutdownSpec(s, "vc", inv, caps)
		if err != nil {
			t.Fatal(err)
		}
		spec.Targets[0].Maintenance, spec.Targets[0].ShutdownHosts = true, true
		spec.Targets[0].MaintenanceTimeout, spec.Targets[0].HostShutdownTimeout = 5*time.Minute, 5*time.Minute
		sp, probs := plan.Build(spec)
		if plan.HasErrors(probs) {
			t.Fatalf("plan: %v", probs)
		}
		j, err := plan.OpenJournal(filepath.Join(dir, "journal"))
		if err != nil {
			t.Fatal(err)
		}
		defer j.Close()
		rep, err := plan.Execute(t.Context(), sp, plan.Targets{"vc": f}, plan.ExecOptions{Caps: caps, Journal: j})
		if err != nil {
			t.Fatal(err)
		}
		r.ShutdownSec = rep.Ended.Sub(rep.Started).Seconds()
		time.Sleep(time.Minute) // the hosts go off; the outage
		runs := j.Unrestored()
		run, ok := plan.MergeRuns(runs)
		if !ok {
			t.Fatal("no run to restore")
		}
		// The restore plan with the true durations as History: Estimate's
		// schedule and lower bound then use exactly what the fleet does.
		hist := map[string]time.Duration{}
		for _, st := range sp.Steps {
			switch st.Kind {
			case plan.StepGuest:
				hist["guest-on:"+strings.TrimPrefix(st.Key, "guest:")] = byName[st.Name]
			case plan.StepHostShutdown:
				hist["host-on:"+strings.TrimPrefix(st.Key, "host-off:")] = restoreHostBoot
			case plan.StepHostMaintenance:
				hist["host-exit-maint:"+strings.TrimPrefix(st.Key, "host-maint:")] = 0 // the fake leaves at once
			}
		}
		rp, err := plan.RestorePlan(run, plan.RestoreSpec{Caps: caps, History: hist})
		if err != nil {
			t.Fatal(err)
		}
		r.Steps = len(rp.Steps)
		est := rp.Estimate(caps)
		r.Estimate, r.LowerBound = est.Makespan.Seconds(), est.LowerBound.Seconds()
		r.CriticalPath, r.WorkBound, r.HostBound = est.CriticalPathLen.Seconds(), est.WorkBound.Seconds(), est.HostBound.Seconds()

		var mu sync.Mutex
		onAt := map[string]time.Time{}
		f.OnOp(func(o fake.Op) {
			if o.Op == fake.OpPowerOnGuest && o.Err == nil {
				mu.Lock()
				if _, ok := onAt[o.ID]; !ok {
					onAt[o.ID] = o.At
				}
				mu.Unlock()
			}
		})
		hooks := plan.RestoreHooks{
			Of:   run.ID,
			Poll: restorePoll,
			Wake: func(_ context.Context, st plan.Step) (bool, error) {
				f.BootHost(st.HostID, restoreHostBoot)
				return true, nil
			},
			HostUp: func(ctx context.Context, st plan.Step) (bool, error) {
				inv, err := f.Inventory(ctx)
				if err != nil {
					return false, err
				}
				for _, h := range inv.Hosts {
					if h.ID == st.HostID {
						return h.Power == provider.PowerOn, nil
					}
				}
				return false, fmt.Errorf("no host %s", st.HostID)
			},
			Ready: func(_ context.Context, st plan.Step) error {
				mu.Lock()
				at, ok := onAt[st.GuestID]
				mu.Unlock()
				if !ok {
					return fmt.Errorf("not powered on")
				}
				if left := byName[st.Name] - time.Since(at); left > 0 {
					return fmt.Errorf("still booting (%v left)", left)
				}
				return nil
			},
		}
		rrep, err := plan.Restore(t.Context(), rp, plan.Targets{"vc": f}, hooks, plan.ExecOptions{Caps: caps, Journal: j})
		if err != nil {
			t.Fatal(err)
		}
		r.Makespan = rrep.Ended.Sub(rrep.Started).Seconds()
		for _, fl := range rrep.Failed() {
			r.Problems = append(r.Problems, fmt.Sprintf("%s failed: %s", fl.Name, fl.Err))
		}
		inv, err = f.Inventory(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range inv.Guests {
			if g.Power == provider.PowerOn {
				r.On++
			}
		}
		if r.On != len(s.VMs) {
			r.Problems = append(r.Problems, fmt.Sprintf("%d of %d guests on after the restore", r.On, len(s.VMs)))
		}
		// The tiers come back in reverse, dc, db, app, web: when each
		// tier's last guest is ready, from the start of the restore.
		tierReady := map[string]time.Time{}
		for i, st := range rp.Steps {
			if st.Kind == plan.StepGuestStart && rrep.Steps[i].End.After(tierReady[st.Group]) {
				tierReady[st.Group] = rrep.Steps[i].End
			}
		}
		for t := len(tierNames) - 1; t >= 0; t-- {
			r.TierSpans = append(r.TierSpans, tierReady[tierNames[t]].Sub(rrep.Started).Seconds())
		}
		if d := checkRestoreOrder(rp, rrep); d != "" {
			r.Problems = append(r.Problems, d)
		}
		if len(j.Unrestored()) != 0 {
			r.Problems = append(r.Problems, "the journal still lists unrestored runs")
		}
	})
	r.Autostart = autostartRestore(s, boot).Seconds()
	r.WallSec = time.Since(wall).Seconds()
	return r
}

// checkRestoreOrder reports the first step that started before one of its
// dependencies ended.
func checkRestoreOrder(p *plan.Plan, rep *plan.Report) string {
	for i, st := range p.Steps {
		for _, d := range st.Deps {
			if rep.Steps[i].Start.Before(rep.Steps[d].End) {
				return fmt.Sprintf("%s started before %s ended", st.Key, p.Steps[d].Key)
			}
		}
	}
	return ""
}

// TestRestoreSmall runs the restore benchmark's scenario at a small scale
// and checks what the benchmark relies on.
func TestRestoreSmall(t *testing.T) {
	r := runRestore(t, newShutdownSite(shutdownSeed, 5, 60, 20*time.Second, 120*time.Second), plan.Caps{Global: 8, PerHost: 4})
	for _, p := range r.Problems {
		t.Error(p)
	}
	if r.Makespan < r.LowerBound || r.Makespan > r.Estimate*1.2 {
		t.Errorf("restore makespan %.0f s outside [lower bound %.0f s, Estimate %.0f s × 1.2]", r.Makespan, r.LowerBound, r.Estimate)
	}
	if r.Makespan < restoreHostBoot.Seconds() {
		t.Errorf("restore took %.0f s, less than a host's boot", r.Makespan)
	}
	t.Logf("restore %.0f s (estimate %.0f s, LB %.0f s, autostart %.0f s)", r.Makespan, r.Estimate, r.LowerBound, r.Autostart)
}

// restoreChildEnv names the file the child run of BenchmarkRestore1000
// writes its result to; the child test is skipped without it.
const restoreChildEnv = "SUNDOWN_RESTORE1000_OUT"

// BenchmarkRestore1000: 1,000 VMs on 50 hosts, caps 64 / 4, virtual time,
// in a child process (synctest needs a *testing.T).
func BenchmarkRestore1000(b *testing.B) {
	out := filepath.Join(b.TempDir(), "result.json")
	cmd := exec.Command(os.Args[0], "-test.run=^TestRestore1000Child$", "-test.count=1", "-test.bench=^$", "-test.v")
	cmd.Env = append(os.Environ(), restoreChildEnv+"="+out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("child run: %v\n%s", err, msg)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		b.Fatal(err)
	}
	var r restoreRun
	if err := json.Unmarshal(data, &r); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(r.Makespan, "restore_s")
	b.ReportMetric(r.LowerBound, "lowerbound_s")
	b.ReportMetric(r.Makespan/r.LowerBound, "restore/LB")
	b.ReportMetric(r.Autostart, "autostart_s")
	for _, p := range r.Problems {
		b.Error(p)
	}
	writeDocs(b, "restore", restoreDoc(r, shutdownMachineLine()), true)
}

// TestRestore1000Child is BenchmarkRestore1000's child run.
func TestRestore1000Child(t *testing.T) {
	out := os.Getenv(restoreChildEnv)
	if out == "" {
		t.Skip("the child run of BenchmarkRestore1000 (set " + restoreChildEnv + ")")
	}
	r := runRestore(t, newShutdownSite(shutdownSeed, 50, 1000, 20*time.Second, 120*time.Second), shutdownCaps)
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func restoreDoc(r restoreRun, machine string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `### Restore of 1,000 VMs on 50 hosts after a shutdown

`+"`BenchmarkRestore1000`"+`. %s

**Scenario.** The site of the shutdown benchmarks (VM *i* on host *i* mod
%d, tiers web → app → db → dc, seed %d), on the fake provider in the virtual
time of a `+"`testing/synctest`"+` bubble, journaled. It is shut down
(guests, maintenance mode, hosts), then brought back by `+"`plan.Restore`"+`
from the journal: every host is woken and takes **%s** until its hypervisor
answers; every guest takes a boot time drawn **uniformly from %s–%s** from
power-on until its readiness check passes, polled every %s as the daemon
does. Caps %d global / %d per host. The restore plan's History holds the
true durations, so Estimate's schedule and the lower bound use exactly
what the fleet does.

| measure | value |
|---|---|
| shutdown (for reference) | %s |
| **time to full restore** (first wake → last guest ready) | **%s** (%s) |
| Estimate's schedule of the restore | %s |
| lower bound = max(critical path %s, work / %d slots %s, busiest host / %d %s) | %s |
| restore / lower bound | %.3f |
| every guest of the tier ready, from the start (dc, db, app, web) | %s |
| ESXi autostart model (below) | %s: %s |
| guests on after the restore | %s of %s |
| problems | %s |
| wall time of the whole run (Go %s, %d cores) | %.1f s |

**ESXi autostart model.** All hosts boot at once (%s); each starts its
VMs one at a time, going on when the guest is ready or after ESXi's
default start delay of 120 s, whichever comes first. It needs no
orchestrator, but it cannot start db on one host before web on another:
its web servers come up before their databases. sundown keeps the order
across hosts and, with 64 slots instead of one per host, is still faster.
`, machine, r.Hosts, shutdownSeed, hm(restoreHostBoot.Seconds()), secs(restoreBootLo.Seconds()), secs(restoreBootHi.Seconds()),
		ms(restorePoll), r.Global, r.PerHost,
		secs(r.ShutdownSec), secs(r.Makespan), hm(r.Makespan), secs(r.Estimate),
		secs(r.CriticalPath), r.Global, secs(r.WorkBound), r.PerHost, secs(r.HostBound), secs(r.LowerBound),
		r.Makespan/r.LowerBound, tierList(r.TierSpans), secs(r.Autostart), faster(r.Makespan, r.Autostart),
		thousands(r.On), thousands(r.VMs), problemsList(r.Problems), runtime.Version(), runtime.NumCPU(), r.WallSec,
		hm(restoreHostBoot.Seconds()))
	return b.String()
}

func tierList(spans []float64) string {
	var parts []string
	for _, s := range spans {
		parts = append(parts, secs(s))
	}
	return strings.Join(parts, ", ")
}

func problemsList(ps []string) string {
	if len(ps) == 0 {
		return "none: every guest on and ready, no step before its dependencies"
	}
	return "**" + strings.Join(ps, "; ") + "**"
}
