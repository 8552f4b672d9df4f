package bench

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sundown-ups/sundown/internal/plan"
	"github.com/sundown-ups/sundown/internal/provider"
)

const sec = time.Second

// siteInventory is the site as a provider would report it: hosts h-N, VMs
// g-N, every VM on.
func siteInventory(s shutdownSite) provider.Inventory {
	var inv provider.Inventory
	for h, name := range s.Hosts {
		inv.Hosts = append(inv.Hosts, provider.Host{ID: fmt.Sprintf("h-%d", h), Name: name, Power: provider.PowerOn})
	}
	for i, vm := range s.VMs {
		inv.Guests = append(inv.Guests, provider.Guest{ID: fmt.Sprintf("g-%d", i), Name: vm.Name,
			HostID: fmt.Sprintf("h-%d", vm.Host), Power: provider.PowerOn, Tools: provider.ToolsRunning})
	}
	return inv
}

func TestNewShutdownSite(t *testing.T) {
	lo, hi := 500*time.Millisecond, 3*sec
	s := newShutdownSite(1, 50, 1000, lo, hi)
	if len(s.Hosts) != 50 || len(s.VMs) != 1000 {
		t.Fatalf("%d hosts, %d VMs; want 50, 1000", len(s.Hosts), len(s.VMs))
	}
	tiers := make([]int, len(tierNames))
	perHost := map[int]int{}
	names := map[string]bool{}
	for _, vm := range s.VMs {
		tiers[vm.Tier]++
		perHost[vm.Host]++
		if vm.Delay < lo || vm.Delay > hi || vm.Delay%time.Millisecond != 0 {
			t.Errorf("%s: delay %v outside [%v, %v] or finer than a millisecond", vm.Name, vm.Delay, lo, hi)
		}
		if !strings.HasPrefix(vm.Name, tierNames[vm.Tier]+"-") || names[vm.Name] {
			t.Errorf("name %q: wrong tier prefix or duplicate", vm.Name)
		}
		names[vm.Name] = true
	}
	if diff := cmp.Diff([]int{400, 300, 200, 100}, tiers); diff != "" {
		t.Errorf("VMs per tier (-want +got):\n%s", diff)
	}
	for h, n := range perHost {
		if n != 20 {
			t.Errorf("host %d carries %d VMs, want 20", h, n)
		}
	}
	if diff := cmp.Diff(s, newShutdownSite(1, 50, 1000, lo, hi)); diff != "" {
		t.Errorf("same seed, different site (-first +second):\n%s", diff)
	}
	if cmp.Equal(s.VMs, newShutdownSite(2, 50, 1000, lo, hi).VMs) {
		t.Error("seeds 1 and 2 gave the same site")
	}
	// Rounding: 10 VMs give 1 dc, 2 db, 3 app and the remaining 4 web.
	small := newShutdownSite(1, 2, 10, sec, sec)
	tiers = make([]int, len(tierNames))
	for _, vm := range small.VMs {
		tiers[vm.Tier]++
	}
	if diff := cmp.Diff([]int{4, 3, 2, 1}, tiers); diff != "" {
		t.Errorf("10 VMs per tier (-want +got):\n%s", diff)
	}
}

func TestAutostartMakespan(t *testing.T) {
	s := shutdownSite{Hosts: []string{"a", "b"}, VMs: []siteVM{
		{Name: "web-1", Host: 0, Delay: 50 * sec},
		{Name: "db-2", Host: 0, Tier: 2, Delay: 300 * sec}, // waits 120 s only
		{Name: "web-3", Host: 1, Delay: 100 * sec},
		{Name: "dc-4", Host: 1, Tier: 3, Delay: 60 * sec},
	}}
	got, host := autostartMakespan(s, 120*sec)
	if got != 170*sec || host != "a" {
		t.Errorf("autostart = %v on %q, want 170s on a (50 s + min(300 s, 120 s))", got, host)
	}
	got, host = autostartMakespan(s, 10*time.Minute)
	if got != 350*sec || host != "a" {
		t.Errorf("with a 10 min stop delay = %v on %q, want 350s on a", got, host)
	}
}

func TestMachineTicks(t *testing.T) {
	stat := []byte("cpu  100 5 50 1000 20 3 2 1 7 0\ncpu0 50 2 25 500 10 1 1 0 3 0\nintr 1\n")
	total, idle, err := machineTicks(stat)
	if err != nil || total != 1181 || idle != 1020 {
		t.Errorf("machineTicks = %d, %d, %v; want 1181 (user … steal), 1020 (idle + iowait)", total, idle, err)
	}
	for _, bad := range []string{"", "cpu0 1 2 3 4\n", "cpu  1 2 x 4 5\n", "cpu  1 2\n"} {
		if _, _, err := machineTicks([]byte(bad)); err == nil {
			t.Errorf("machineTicks(%q): no error", bad)
		}
	}
	m := startCPU()
	for i := 0; i < 3e7; i++ { // burn a little CPU so that time passes
		_ = i * i
	}
	if sh, err := m.Stop(); err != nil {
		t.Logf("cpu meter on this machine: %v", err)
	} else if sh.Busy < 0 || sh.Busy > 1 || sh.Own < 0 || sh.Own > 1.01 {
		t.Errorf("cpu shares %+v outside [0, 1]", sh)
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 10004: "10,004", 1234567: "1,234,567", -1500: "-1,500"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestCrowdedHost(t *testing.T) {
	// web: 4 VMs of 1 s, 3 on host a; app: 2 VMs of 10 s, one per host.
	// Caps 4 / 1: host a needs 3 s for web where the tier's work / 4 is
	// 1 s (ratio 3); app's hosts need 10 s of its 5 s (ratio 2).
	s := shutdownSite{Hosts: []string{"a", "b"}, VMs: []siteVM{
		{Host: 0, Delay: sec}, {Host: 0, Delay: sec}, {Host: 0, Delay: sec}, {Host: 1, Delay: sec},
		{Host: 0, Tier: 1, Delay: 10 * sec}, {Host: 1, Tier: 1, Delay: 10 * sec},
	}}
	n, size, tier := crowdedHost(s, plan.Caps{Global: 4, PerHost: 1})
	if n != 3 || size != 4 || tier != "web" {
		t.Errorf("crowdedHost = %d of %d %s, want 3 of 4 web", n, size, tier)
	}
}

func TestSlotBound(t *testing.T) {
	for _, c := range []struct {
		ds   []time.Duration
		k    int
		want time.Duration
	}{
		{nil, 4, 0},
		{[]time.Duration{3 * sec, sec, sec}, 2, 3 * sec},                                 // the longest job
		{[]time.Duration{2 * sec, 2 * sec, 2 * sec}, 2, 4 * sec},                         // two of the three share a slot
		{[]time.Duration{sec, sec, sec, sec, sec, sec}, 4, 2 * sec},                      // pair bound 2 s > work 1.5 s
		{[]time.Duration{sec, sec, sec, sec, sec, sec}, 6, sec},                          // one each
		{[]time.Duration{5 * sec, 4 * sec, 3 * sec}, 1, 12 * sec},                        // one slot: the sum
		{[]time.Duration{sec, sec, sec, sec, sec, sec, sec}, 2, 3500 * time.Millisecond}, // work / slots: a bound (the optimum is 4 s)
	} {
		if got := slotBound(c.ds, c.k); got != c.want {
			t.Errorf("slotBound(%v, %d) = %v, want %v", c.ds, c.k, got, c.want)
		}
	}
}

// TestTierBounds checks the tier-aware bound against what it bounds: it is
// never below plan's own lower bound (which ignores the barriers), and no
// schedule — here Estimate's — beats it, overall or in any tier.
func TestTierBounds(t *testing.T) {
	for seed := range uint64(6) {
		s := newShutdownSite(seed, 5, 60, sec, 30*sec)
		caps := plan.Caps{Global: 6, PerHost: 2}
		spec, err := shutdownSpec(s, "vc", siteInventory(s), caps)
		if err != nil {
			t.Fatal(err)
		}
		p, probs := plan.Build(spec)
		if plan.HasErrors(probs) {
			t.Fatalf("plan: %v", probs)
		}
		sc := p.Estimate(caps)
		tb := tierBound(s, caps)
		if tb < sc.LowerBound || tb > sc.Makespan {
			t.Errorf("seed %d: tier bound %v outside [plan lower bound %v, Estimate %v]", seed, tb, sc.LowerBound, sc.Makespan)
		}
		spans := tierSpans(p, func(id int) time.Duration { return sc.End[id] })
		var total time.Duration
		for i, b := range tierBounds(s, caps) {
			total += spans[i]
			if spans[i] < b {
				t.Errorf("seed %d: tier %s took %v in Estimate's schedule, below its bound %v", seed, tierNames[i], spans[i], b)
			}
		}
		if total != sc.Makespan {
			t.Errorf("seed %d: tier spans add up to %v, Estimate's makespan is %v", seed, total, sc.Makespan)
		}
	}
}

func TestShutdownSpec(t *testing.T) {
	s := newShutdownSite(1, 2, 8, sec, 9*sec)
	inv := siteInventory(s)
	spec, err := shutdownSpec(s, "vc", inv, shutdownCaps)
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.History) != 8 {
		t.Errorf("History has %d entries, want 8", len(spec.History))
	}
	for i, vm := range s.VMs {
		if got := spec.History[fmt.Sprintf("guest:vc/g-%d", i)]; got != vm.Delay {
			t.Errorf("History of %s = %v, want its delay %v", vm.Name, got, vm.Delay)
		}
	}
	p, probs := plan.Build(spec)
	if plan.HasErrors(probs) {
		t.Fatalf("plan: %v", probs)
	}
	// web → app → db → dc: each group marker depends (through its guests)
	// on the one before it.
	for i := 1; i < len(tierNames); i++ {
		prev, _ := p.Lookup("group:" + tierNames[i-1])
		for _, st := range p.Steps {
			if st.Kind == plan.StepGuest && st.Group == tierNames[i] && !containsInt(st.Deps, prev) {
				t.Errorf("%s (%s) does not wait for group:%s", st.Key, st.Group, tierNames[i-1])
			}
		}
	}

	inv.Guests = inv.Guests[1:]
	if _, err := shutdownSpec(s, "vc", inv, shutdownCaps); err == nil || !strings.Contains(err.Error(), s.VMs[0].Name) {
		t.Errorf("a VM missing from the inventory: err = %v, want it named", err)
	}
}

func containsInt(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// TestOrderViolationsAndPeaks checks the run checks on a hand-made report
// of a two-tier site on one host: web-0 [0 s, 2 s], app-1 [1 s, 3 s].
func TestOrderViolationsAndPeaks(t *testing.T) {
	s := shutdownSite{Hosts: []string{"esx"}, VMs: []siteVM{{Name: "web-0", Delay: 2 * sec}, {Name: "app-1", Tier: 1, Delay: 2 * sec}}}
	spec, err := shutdownSpec(s, "vc", siteInventory(s), shutdownCaps)
	if err != nil {
		t.Fatal(err)
	}
	p, probs := plan.Build(spec)
	if plan.HasErrors(probs) {
		t.Fatalf("plan: %v", probs)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	rep := &plan.Report{Started: t0, Steps: make([]plan.StepResult, len(p.Steps))}
	for i, st := range p.Steps {
		r := plan.StepResult{Step: i, Key: st.Key, Kind: st.Kind, Outcome: plan.OutcomeDone}
		switch st.Name {
		case "web-0":
			r.Start, r.End = at(0), at(2*sec)
		case "app-1":
			r.Start, r.End = at(sec), at(3*sec)
		case "web":
			r.Start, r.End = at(2*sec), at(2*sec)
		default:
			r.Start, r.End = at(3*sec), at(3*sec)
		}
		rep.Steps[i] = r
	}
	v := orderViolations(p, rep, 10)
	if len(v) != 1 || !strings.Contains(v[0], "guest:vc/g-1") || !strings.Contains(v[0], "group:web") {
		t.Errorf("violations = %q, want app-1 (g-1) started before group:web ended", v)
	}
	if total, perHost := peakRunning(p, rep); total != 2 || perHost != 2 {
		t.Errorf("peaks = %d, %d; want 2, 2", total, perHost)
	}
	// In order: no violation, one at a time.
	for i := range rep.Steps {
		if rep.Steps[i].Key == "guest:vc/g-1" {
			rep.Steps[i].Start = at(2 * sec)
		}
	}
	if v := orderViolations(p, rep, 10); len(v) != 0 {
		t.Errorf("violations = %q, want none", v)
	}
	if total, perHost := peakRunning(p, rep); total != 1 || perHost != 1 {
		t.Errorf("peaks = %d, %d; want 1, 1 (an end and a start at the same instant do not overlap)", total, perHost)
	}
	if d := tierSpans(p, func(id int) time.Duration { return rep.Steps[id].End.Sub(t0) }); d[0] != 2*sec || d[1] != sec {
		t.Errorf("tier spans = %v, want web 2s, app 1s", d)
	}
	rep.Steps[0].Outcome = ""
	if v := orderViolations(p, rep, 10); len(v) != 1 || !strings.Contains(v[0], "no outcome") {
		t.Errorf("violations = %q, want one step without outcome", v)
	}
}

// TestShutdownDocs checks that the docs sections say whether the targets
// were met, and explain a miss.
func TestShutdownDocs(t *testing.T) {
	r := shutdownRun{VMs: 1000, Hosts: 50, Steps: 1004, Global: 64, PerHost: 4, Makespan: 30, Estimate: 29.6,
		LowerBound: 27.1, TierBound: 27.6, TierVMs: []int{400, 300, 200, 100}, TierBounds: []float64{10, 8, 6, 3.6}, TierSpans: []float64{11, 9, 6.5, 3.5},
		EstimateTierSpans: []float64{11, 8.6, 6.4, 3.6}, Autostart: 40.7, AutostartHost: "esx-036", MeanDelay: 1.75,
		OverheadMedian: 0.05, Off: 1000}
	x := vsphereExtra{PollEvery: 50 * time.Millisecond, Compressed: 40, APICalls: map[string]int{"ShutdownGuest": 1000}}
	doc := vsphereDoc(r, x, "Measured now.")
	for _, want := range []string{"**MISSED**", "Why the target is missed", "sundown 1.36× faster", "ShutdownGuest 1,000", "| all | 1,000 |"} {
		if !strings.Contains(doc, want) {
			t.Errorf("vSphere doc lacks %q:\n%s", want, doc)
		}
	}
	r.Makespan = 28
	if doc := vsphereDoc(r, x, ""); strings.Contains(doc, "MISSED") || strings.Contains(doc, "Why the target") {
		t.Errorf("target met, yet the doc says missed:\n%s", doc)
	}

	f := shutdownRun{VMs: 10000, Hosts: 500, Global: 64, PerHost: 4, Makespan: 11042, LowerBound: 11007, TierBound: 11007,
		Autostart: 1800, HWMKiB: 60000}
	g := f
	g.Global, g.Makespan, g.LowerBound, g.TierBound = 2000, 990, 480, 916
	doc = fake10kDoc([]shutdownRun{f, g}, "")
	for _, want := range []string{"caps 64 / 4", "caps 2,000 / 4", "11,042 s", "**1.003**: met", "6.13× slower", "1.82× faster", "**61 MB**: met"} {
		if !strings.Contains(doc, want) {
			t.Errorf("fake doc lacks %q:\n%s", want, doc)
		}
	}
	f.HWMKiB = 300000
	if doc := fake10kDoc([]shutdownRun{f, g}, ""); !strings.Contains(doc, "**Target missed**") {
		t.Errorf("peak RSS 307 MB, yet no miss reported:\n%s", doc)
	}
}
