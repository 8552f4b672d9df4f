package bench

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sundown-ups/sundown/internal/plan"
	"github.com/sundown-ups/sundown/internal/provider"
)

// The ordered-shutdown benchmarks (BenchmarkShutdownVSphere1000,
// BenchmarkShutdownFake10k) share one site model, built here: a fleet of
// VMs spread evenly over hosts, four tiers stopped in order by groups, and
// one guest-shutdown delay per VM drawn from a stated distribution with a
// fixed seed. The same delays drive the simulated guests, feed the plan's
// History (so Estimate's lower bound is computed from exactly what the
// guests will do) and feed the ESXi autostart model used for comparison.

// tierNames are the site's groups, in stopping order: web stops first,
// then app, then db, then dc (web depends on app, app on db, db on dc).
var tierNames = [...]string{"web", "app", "db", "dc"}

// tierShares are the tiers' shares of the VMs, in percent.
var tierShares = [...]int{40, 30, 20, 10}

// siteVM is one VM of a shutdownSite.
type siteVM struct {
	// Name is "TIER-NNNNN"; the groups select by it.
	Name string
	// Host is the index of the VM's host in shutdownSite.Hosts.
	Host int
	// Tier indexes tierNames.
	Tier int
	// Delay is how long the guest OS takes from the shutdown request to
	// powered off.
	Delay time.Duration
}

// shutdownSite is the benchmarks' fleet.
type shutdownSite struct {
	Hosts []string
	VMs   []siteVM
	// Lo and Hi bound the delays (uniform, millisecond resolution).
	Lo, Hi time.Duration
}

// newShutdownSite makes vms VMs on hosts hosts: VM i runs on host i mod
// hosts (so every host carries vms/hosts VMs); the tiers get exactly
// 40/30/20/10 % of the VMs (rounded down, the rest to web), assigned in a
// random order fixed by seed; each VM's delay is drawn uniformly from
// [lo, hi] at millisecond resolution with the same generator.
func newShutdownSite(seed uint64, hosts, vms int, lo, hi time.Duration) shutdownSite {
	r := rand.New(rand.NewPCG(seed, 0x5d))
	s := shutdownSite{Lo: lo, Hi: hi}
	for h := range hosts {
		s.Hosts = append(s.Hosts, fmt.Sprintf("esx-%03d", h))
	}
	tiers := make([]int, 0, vms)
	for t := len(tierShares) - 1; t >= 1; t-- {
		for range vms * tierShares[t] / 100 {
			tiers = append(tiers, t)
		}
	}
	for len(tiers) < vms {
		tiers = append(tiers, 0)
	}
	r.Shuffle(len(tiers), func(i, j int) { tiers[i], tiers[j] = tiers[j], tiers[i] })
	spanMS := int64((hi - lo) / time.Millisecond)
	for i := range vms {
		d := lo
		if spanMS > 0 {
			d += time.Duration(r.Int64N(spanMS+1)) * time.Millisecond
		}
		s.VMs = append(s.VMs, siteVM{
			Name:  fmt.Sprintf("%s-%05d", tierNames[tiers[i]], i),
			Host:  i % max(hosts, 1),
			Tier:  tiers[i],
			Delay: d,
		})
	}
	return s
}

// siteChain is every VM's escalation: shutdown, 120 s → power off, 30 s.
// No guest of the site needs the power off; the timeouts only bound the
// estimates (History is never above them).
var siteChain = plan.Chain{{Kind: plan.Shutdown, Timeout: 120 * time.Second}, {Kind: plan.PowerOff, Timeout: 30 * time.Second}}

// shutdownSpec is the plan spec of the site as target reported it in inv:
// the four groups selected by name (web → app → db → dc), siteChain, the
// caps, and History holding each guest's delay under its step key
// ("guest:TARGET/ID"), so that Estimate schedules exactly the durations
// the guests will take. Host steps are not planned (maintenance and host
// shutdown off): the benchmarks measure the guest phase. It fails when a
// VM of the site is not in inv.
func shutdownSpec(s shutdownSite, target string, inv provider.Inventory, caps plan.Caps) (plan.Spec, error) {
	ids := make(map[string]string, len(inv.Guests))
	for _, g := range inv.Guests {
		ids[g.Name] = g.ID
	}
	hist := make(map[string]time.Duration, len(s.VMs))
	var missing []error
	for _, vm := range s.VMs {
		id, ok := ids[vm.Name]
		if !ok {
			missing = append(missing, fmt.Errorf("VM %s is not in the inventory", vm.Name))
			continue
		}
		hist["guest:"+target+"/"+id] = vm.Delay
	}
	if err := errors.Join(missing...); err != nil {
		return plan.Spec{}, fmt.Errorf("shutdown spec of target %s: %w", target, err)
	}
	var groups []plan.Group
	for t, name := range tierNames {
		g := plan.Group{Name: name, Select: plan.Selector{Names: []string{name + "-*"}}}
		if t+1 < len(tierNames) {
			g.DependsOn = []string{tierNames[t+1]}
		}
		groups = append(groups, g)
	}
	return plan.Spec{
		Targets:      []plan.TargetInventory{{Target: target, Inventory: inv}},
		Groups:       groups,
		DefaultChain: siteChain,
		Caps:         caps,
		History:      hist,
	}, nil
}

// esxiStopDelay is ESXi's default per-VM stop delay of its autostart
// manager: how long it waits for a guest to shut down before it goes on to
// the next VM.
const esxiStopDelay = 120 * time.Second

// autostartMakespan is the comparison model, ESXi's own autostart manager
// shutting the same site down: every host on its own (hosts in parallel,
// no order between hosts), one VM at a time on each host in its stop order,
// each stop waiting for the guest up to stopDelay. A host's time is thus
// the sum over its VMs of min(delay, stopDelay); the makespan is the
// busiest host's time. It knows nothing of the tiers: ESXi cannot stop web
// on one host before db on another.
func autostartMakespan(s shutdownSite, stopDelay time.Duration) (makespan time.Duration, busiest string) {
	per := make([]time.Duration, len(s.Hosts))
	for _, vm := range s.VMs {
		per[vm.Host] += min(vm.Delay, stopDelay)
	}
	for h, d := range per {
		if d > makespan || busiest == "" {
			makespan, busiest = d, s.Hosts[h]
		}
	}
	return makespan, busiest
}

// orderViolations checks a run against its plan: every step has an
// outcome, and none started before one of its dependencies ended. It
// returns one line per violation (at most limit, then a count).
func orderViolations(p *plan.Plan, rep *plan.Report, limit int) []string {
	var out []string
	n := 0
	add := func(format string, args ...any) {
		n++
		if len(out) < limit {
			out = append(out, fmt.Sprintf(format, args...))
		}
	}
	if len(rep.Steps) != len(p.Steps) {
		return []string{fmt.Sprintf("report has %d steps, plan %d", len(rep.Steps), len(p.Steps))}
	}
	for i, st := range p.Steps {
		r := rep.Steps[i]
		if r.Outcome == "" {
			add("%s: no outcome", st.Key)
			continue
		}
		for _, d := range st.Deps {
			if r.Start.Before(rep.Steps[d].End) {
				add("%s started %v before its dependency %s ended", st.Key, rep.Steps[d].End.Sub(r.Start), p.Steps[d].Key)
			}
		}
	}
	if n > len(out) {
		out = append(out, fmt.Sprintf("… and %d more", n-len(out)))
	}
	return out
}

// peakRunning returns the most steps (other than group markers and
// zero-length ones) running at once in a run, in total and on the busiest
// host (guest steps, by Target and HostID).
func peakRunning(p *plan.Plan, rep *plan.Report) (total, perHost int) {
	type edge struct {
		at time.Time
		d  int
	}
	var all []edge
	byHost := map[string][]edge{}
	for i, r := range rep.Steps {
		if r.Kind == plan.StepGroup || !r.End.After(r.Start) {
			continue
		}
		e := []edge{{r.Start, +1}, {r.End, -1}}
		all = append(all, e...)
		if st := p.Steps[i]; st.Kind == plan.StepGuest && st.HostID != "" {
			k := st.Target + "/" + st.HostID
			byHost[k] = append(byHost[k], e...)
		}
	}
	sweep := func(es []edge) int {
		slices.SortFunc(es, func(a, b edge) int {
			if c := a.at.Compare(b.at); c != 0 {
				return c
			}
			return a.d - b.d // an end before a start at the same instant
		})
		n, m := 0, 0
		for _, e := range es {
			n += e.d
			m = max(m, n)
		}
		return m
	}
	total = sweep(all)
	for _, es := range byHost {
		perHost = max(perHost, sweep(es))
	}
	return total, perHost
}

// vmHWM returns the peak resident set size (VmHWM) of the current process
// in KiB, from /proc/self/status.
func vmHWM() (int64, error) {
	st, err := sampleProc(os.Getpid())
	if err != nil {
		return 0, err
	}
	return st.HWM, nil
}

// tierBounds returns, for each tier in stopping order, a lower bound on
// the time any schedule of the site under caps needs for that tier. The
// tiers are strict barriers (no guest of a tier starts before every guest
// of the tier before it is off), so a schedule is a sequence of one
// independent schedule per tier. A tier's bound is the largest of: its
// longest delay; its total work / Global; its busiest host's work /
// PerHost; and, when it has more guests than Global (or a host more than
// PerHost), the sum of the Global-th and (Global+1)-th longest delays (two
// of the Global+1 longest must share a slot).
func tierBounds(s shutdownSite, caps plan.Caps) []time.Duration {
	caps = caps.WithDefaults()
	out := make([]time.Duration, len(tierNames))
	for t := range tierNames {
		var all []time.Duration
		byHost := map[int][]time.Duration{}
		for _, vm := range s.VMs {
			if vm.Tier == t {
				all = append(all, vm.Delay)
				byHost[vm.Host] = append(byHost[vm.Host], vm.Delay)
			}
		}
		b := slotBound(all, caps.Global)
		for _, ds := range byHost {
			b = max(b, slotBound(ds, caps.PerHost))
		}
		out[t] = b
	}
	return out
}

// tierBound is the sum of tierBounds: a lower bound on the makespan of the
// guest phase, tighter than plan.Schedule.LowerBound, which ignores the
// barriers between tiers.
func tierBound(s shutdownSite, caps plan.Caps) time.Duration {
	var total time.Duration
	for _, b := range tierBounds(s, caps) {
		total += b
	}
	return total
}

// tierSpans returns how long each tier took in a run or a schedule: from
// the end of the tier before (the start, for the first) to the end of the
// tier's group marker ("group:NAME"), given each step's end as an offset
// from the start. A tier whose marker is not in the plan gets 0.
func tierSpans(p *plan.Plan, end func(id int) time.Duration) []time.Duration {
	out := make([]time.Duration, len(tierNames))
	var prev time.Duration
	for t, name := range tierNames {
		id, ok := p.Lookup("group:" + name)
		if !ok {
			continue
		}
		e := end(id)
		out[t] = e - prev
		prev = e
	}
	return out
}

// slotBound is a lower bound on the time k slots need for jobs ds: the
// longest job, the total / k (rounded up), and when there are more than k
// jobs the sum of the k-th and (k+1)-th longest.
func slotBound(ds []time.Duration, k int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.SortFunc(s, func(a, b time.Duration) int { return cmp.Compare(b, a) }) // longest first
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	b := max(s[0], (sum+time.Duration(k)-1)/time.Duration(k))
	if len(s) > k {
		b = max(b, s[k-1]+s[k])
	}
	return b
}

// crowdedHost finds the host most crowded within a tier: the largest ratio
// of the host's work in the tier / PerHost to the tier's work / Global, that
// is the host whose per-host cap limits its tier most. It returns how many
// VMs of the tier that host carries, the tier's size and its name.
func crowdedHost(s shutdownSite, caps plan.Caps) (n, tierVMs int, tier string) {
	caps = caps.WithDefaults()
	var worst float64
	for t, name := range tierNames {
		var work time.Duration
		hostWork := make([]time.Duration, len(s.Hosts))
		hostN := make([]int, len(s.Hosts))
		size := 0
		for _, vm := range s.VMs {
			if vm.Tier == t && vm.Host >= 0 && vm.Host < len(s.Hosts) {
				work += vm.Delay
				hostWork[vm.Host] += vm.Delay
				hostN[vm.Host]++
				size++
			}
		}
		if work <= 0 {
			continue
		}
		for h, w := range hostWork {
			if x := (w.Seconds() / float64(caps.PerHost)) / (work.Seconds() / float64(caps.Global)); x > worst {
				worst, n, tierVMs, tier = x, hostN[h], size, name
			}
		}
	}
	return n, tierVMs, tier
}

// stepOverheads returns, for each guest step of a run, how much longer it
// took than its guest's delay: the provider calls around the wait (state
// read, shutdown request, polls) and the poll interval's granularity.
func stepOverheads(s shutdownSite, p *plan.Plan, rep *plan.Report) []time.Duration {
	delay := make(map[string]time.Duration, len(s.VMs))
	for _, vm := range s.VMs {
		delay[vm.Name] = vm.Delay
	}
	var out []time.Duration
	for i, st := range p.Steps {
		d, ok := delay[st.Name]
		if st.Kind != plan.StepGuest || !ok || i >= len(rep.Steps) {
			continue
		}
		out = append(out, rep.Steps[i].End.Sub(rep.Steps[i].Start)-d)
	}
	return out
}

// machineTicks returns the machine's total and idle (idle + iowait) CPU
// time in clock ticks, summed over all CPUs, from the content of
// /proc/stat (its first line, "cpu  user nice system idle iowait irq
// softirq steal …"). Guest time is already counted in user and nice.
func machineTicks(stat []byte) (total, idle int64, err error) {
	line, _, _ := strings.Cut(string(stat), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: first line %q is not the cpu summary", line)
	}
	n := min(len(f), 9) // user … steal; guest and guest_nice are inside user and nice
	for i := 1; i < n; i++ {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil || v < 0 {
			return 0, 0, fmt.Errorf("/proc/stat: field %d %q is not a tick count", i, f[i])
		}
		total += v
		if i == 4 || i == 5 { // idle, iowait
			idle += v
		}
	}
	return total, idle, nil
}

// cpuShare is how busy the machine's CPUs were over an interval, and how
// much of that this process was.
type cpuShare struct {
	// Busy and Own are shares of all CPUs' time (0–1).
	Busy, Own float64
}

// cpuMeter measures a cpuShare between its start and Stop.
type cpuMeter struct {
	total, idle, own int64
	err              error
}

// startCPU reads the machine's and this process's CPU ticks.
func startCPU() *cpuMeter {
	m := &cpuMeter{}
	m.total, m.idle, m.own, m.err = readTicks()
	return m
}

// Stop returns the shares since startCPU.
func (m *cpuMeter) Stop() (cpuShare, error) {
	total, idle, own, err := readTicks()
	if err = errors.Join(m.err, err); err != nil {
		return cpuShare{}, err
	}
	dt := total - m.total
	if dt <= 0 {
		return cpuShare{}, errors.New("cpu meter: no time passed")
	}
	return cpuShare{Busy: float64(dt-(idle-m.idle)) / float64(dt), Own: float64(own-m.own) / float64(dt)}, nil
}

func readTicks() (total, idle, own int64, err error) {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0, fmt.Errorf("cpu meter: %w", err)
	}
	if total, idle, err = machineTicks(stat); err != nil {
		return 0, 0, 0, fmt.Errorf("cpu meter: %w", err)
	}
	self, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, 0, 0, fmt.Errorf("cpu meter: %w", err)
	}
	if own, err = cpuTicks(self); err != nil {
		return 0, 0, 0, fmt.Errorf("cpu meter: %w", err)
	}
	return total, idle, own, nil
}
