package plan

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/fake"
)

// execSite is the executor benchmark's site, fixed by seed: hosts × perHost
// guests on one target "vc", every host with maintenance (timeout 120 s) and
// shutdown (60 s); tiers web → app → db → dc drawn with probabilities
// 40 / 30 / 20 / 10 %; chain shutdown 120s → poweroff 30s (dc: shutdown
// 300s → poweroff 60s); a hook at the start that takes 2 s.
//
// The delays (the distribution the benchmark states):
//   - 5 % of the guests are already off;
//   - 1 % have no guest tools: powered off at once;
//   - 4 % ignore the shutdown request: powered off at the deadline;
//   - the other 90 % shut down after a delay drawn uniformly from 10–120 s
//     (dc: 30–300 s);
//   - a power off takes 1–5 s (uniform), entering maintenance 5–20 s; a
//     host shutdown is accepted at once.
//
// The returned spec's History holds each step's exact expected duration
// under that model, so Estimate schedules the same durations the fake
// produces.
func execSite(seed uint64, hosts, perHost int) (fake.Fleet, Spec) {
	r := rand.New(rand.NewPCG(seed, 2))
	var f fake.Fleet
	var inv provider.Inventory
	hist := map[string]time.Duration{}
	tiers := []string{"web", "app", "db", "dc"}
	uniform := func(lo, hi int) time.Duration { return time.Duration(lo+r.IntN(hi-lo+1)) * s }
	for h := range hosts {
		hostID := fmt.Sprintf("host-%04d", h)
		maint := uniform(5, 20)
		f.Hosts = append(f.Hosts, fake.HostSpec{ID: hostID, Name: "esx-" + hostID[5:], MaintenanceDelay: maint})
		inv.Hosts = append(inv.Hosts, provider.Host{ID: hostID, Name: "esx-" + hostID[5:], Power: provider.PowerOn})
		hist["host-maint:vc/"+hostID] = maint
		hist["host-off:vc/"+hostID] = 0
		for k := range perHost {
			n := h*perHost + k
			x, tier := r.IntN(10), 0
			switch {
			case x >= 9:
				tier = 3
			case x >= 7:
				tier = 2
			case x >= 4:
				tier = 1
			}
			first := 120 * s
			lo, hi := 10, 120
			if tier == 3 {
				first, lo, hi = 300*s, 30, 300
			}
			g := fake.GuestSpec{ID: fmt.Sprintf("vm-%05d", n), Name: fmt.Sprintf("%s-%05d", tiers[tier], n), HostID: hostID,
				PowerOffDelay: uniform(1, 5), ShutdownDelay: uniform(lo, hi)}
			key := "guest:vc/" + g.ID
			switch y := r.IntN(100); {
			case y < 5:
				g.Power = provider.PowerOff
				hist[key] = 0
			case y < 6:
				g.Tools = provider.ToolsNotRunning
				hist[key] = g.PowerOffDelay
			case y < 10:
				g.IgnoreShutdown = true
				hist[key] = first + g.PowerOffDelay
			default:
				hist[key] = g.ShutdownDelay
			}
			f.Guests = append(f.Guests, g)
			pg := provider.Guest{ID: g.ID, Name: g.Name, HostID: hostID, Power: provider.PowerOn, Tools: provider.ToolsRunning}
			if g.Power == provider.PowerOff {
				pg.Power, pg.Tools = provider.PowerOff, provider.ToolsNotRunning
			}
			if g.Tools != "" {
				pg.Tools = g.Tools
			}
			inv.Guests = append(inv.Guests, pg)
		}
	}
	hist["hook:notify"] = 2 * s
	spec := Spec{
		Targets: []TargetInventory{{
			Target: "vc", Inventory: inv, Maintenance: true, ShutdownHosts: true,
			MaintenanceTimeout: 120 * s, HostShutdownTimeout: 60 * s,
		}},
		Groups: []Group{
			{Name: "web", Select: Selector{Names: []string{"web-*"}}, DependsOn: []string{"app"}},
			{Name: "app", Select: Selector{Names: []string{"app-*"}}, DependsOn: []string{"db"}},
			{Name: "db", Select: Selector{Names: []string{"db-*"}}, DependsOn: []string{"dc"}},
			{Name: "dc", Select: Selector{Names: []string{"dc-*"}}, Chain: chain(Shutdown, 300*s, PowerOff, 60*s)},
		},
		Hooks:        []Hook{{Name: "notify", Timeout: 30 * s}},
		DefaultChain: stdChain,
		History:      hist,
	}
	return f, spec
}

// exec10kResult is what one 10k run measured.
type exec10kResult struct {
	Steps      int
	Makespan   float64 // seconds of virtual time, Execute start to end
	Estimate   float64 // Estimate's makespan for the same durations
	LowerBound float64
	WallSec    float64 // real time of the bubble (fake setup + Execute)
	Failed     int
	Global     int
	Journal    bool
	// JournalBytes is the journal's size after the run.
	JournalBytes int64
}

// runExec10k runs the 10k site in a synctest bubble.
func runExec10k(t *testing.T, global int, journal bool) exec10kResult {
	fl, spec := execSite(1, 500, 20)
	spec.Caps = Caps{Global: global, PerHost: 4}
	pl, probs := Build(spec)
	if HasErrors(probs) {
		t.Fatalf("plan problems:\n%s", problemsText(probs))
	}
	sc := pl.Estimate(spec.Caps)
	res := exec10kResult{Steps: len(pl.Steps), Estimate: sc.Makespan.Seconds(), LowerBound: sc.LowerBound.Seconds(), Global: global, Journal: journal}
	var rep *Report
	var off, total int
	dir := t.TempDir()
	wall := time.Now()
	synctest.Test(t, func(t *testing.T) {
		f := fake.New(fl)
		defer f.Close()
		opts := ExecOptions{Hooks: func(ctx context.Context, _ Step) error {
			time.Sleep(2 * s)
			return nil
		}}
		if journal {
			j, err := OpenJournal(filepath.Join(dir, "journal"))
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			opts.Journal = j
		}
		var err error
		rep, err = Execute(t.Context(), pl, Targets{"vc": f}, opts)
		if err != nil {
			t.Fatal(err)
		}
		inv, err := f.Inventory(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range inv.Guests {
			total++
			if g.Power == provider.PowerOff {
				off++
			}
		}
		if n, byHost := f.PeakInFlight(); n > global {
			t.Errorf("%d guest calls in flight, global cap %d", n, global)
		} else {
			for h, n := range byHost {
				if n > 4 {
					t.Errorf("host %s: %d guest calls in flight", h, n)
				}
			}
		}
	})
	res.WallSec = time.Since(wall).Seconds()
	if fi, err := os.Stat(filepath.Join(dir, "journal")); err == nil {
		res.JournalBytes = fi.Size()
	}
	if rep == nil {
		t.FailNow()
	}
	res.Makespan = rep.Ended.Sub(rep.Started).Seconds()
	res.Failed = len(rep.Failed())
	if off != total {
		t.Errorf("%d of %d guests off after the run", off, total)
	}
	if res.Failed != 0 || rep.JournalErr != "" {
		t.Errorf("%d failed steps, journal error %q", res.Failed, rep.JournalErr)
	}
	if p := peak(rep, func(StepResult) bool { return true }); p > global {
		t.Errorf("%d steps ran at once, cap %d", p, global)
	}
	checkDeps(t, pl, rep, rep.Started, false)
	if res.Makespan < res.LowerBound {
		t.Errorf("makespan %.0f s below the lower bound %.0f s", res.Makespan, res.LowerBound)
	}
	return res
}

// TestExecute10k runs 10,000 guests on 500 hosts through the executor on
// the fake, in virtual time, and checks the result at scale. The benchmark
// runs it in a child process (SUNDOWN_EXEC10K_OUT names the file for its
// numbers).
func TestExecute10k(t *testing.T) {
	out := os.Getenv("SUNDOWN_EXEC10K_OUT")
	if testing.Short() && out == "" {
		t.Skip("10,000 guests")
	}
	global, journal := 64, true
	if v := os.Getenv("SUNDOWN_EXEC10K_GLOBAL"); v != "" {
		global, _ = strconv.Atoi(v)
	}
	if os.Getenv("SUNDOWN_EXEC10K_JOURNAL") == "0" {
		journal = false
	}
	res := runExec10k(t, global, journal)
	t.Logf("%d steps, global cap %d, journal %v: makespan %.0f s, estimate %.0f s, lower bound %.0f s (makespan/LB %.3f), wall %.2f s, journal %d bytes",
		res.Steps, global, journal, res.Makespan, res.Estimate, res.LowerBound, res.Makespan/res.LowerBound, res.WallSec, res.JournalBytes)
	if out != "" {
		data, _ := json.Marshal(res)
		if err := os.WriteFile(out, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkExecute10k runs the execSite (10,000 guests, 500 hosts) through
// Execute on the fake provider, in a synctest bubble: virtual time, so a
// shutdown of ~40 virtual minutes takes seconds. testing/synctest has no
// benchmark form, so each iteration runs TestExecute10k in a child process
// of this test binary and reports its numbers: makespan (virtual seconds),
// Estimate's makespan and lower bound for the same durations, their ratio,
// and the wall time of the bubble.
func BenchmarkExecute10k(b *testing.B) {
	for _, c := range []struct {
		global  int
		journal bool
	}{{64, true}, {64, false}, {256, true}} {
		b.Run(fmt.Sprintf("global=%d,per_host=4,journal=%v", c.global, c.journal), func(b *testing.B) {
			var res exec10kResult
			for b.Loop() {
				out := filepath.Join(b.TempDir(), "result.json")
				cmd := exec.Command(os.Args[0], "-test.run=^TestExecute10k$", "-test.count=1", "-test.bench=^$")
				cmd.Env = append(os.Environ(), "SUNDOWN_EXEC10K_OUT="+out,
					"SUNDOWN_EXEC10K_GLOBAL="+strconv.Itoa(c.global), "SUNDOWN_EXEC10K_JOURNAL="+map[bool]string{true: "1", false: "0"}[c.journal])
				if msg, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("child run: %v\n%s", err, msg)
				}
				data, err := os.ReadFile(out)
				if err != nil {
					b.Fatal(err)
				}
				if err := json.Unmarshal(data, &res); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(res.Steps), "steps")
			b.ReportMetric(res.Makespan, "makespan_s")
			b.ReportMetric(res.Estimate, "estimate_s")
			b.ReportMetric(res.LowerBound, "lowerbound_s")
			b.ReportMetric(res.Makespan/res.LowerBound, "makespan/LB")
			b.ReportMetric(res.WallSec, "wall_s")
		})
	}
}
