package plan

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/provider"
)

// bigSpec is the benchmark's site, fixed by seed:
//
//   - one target, hosts × perHost guests (500 × 20 = 10,000), every host
//     with maintenance (120 s) and shutdown (60 s);
//   - four tiers by group, web → app → db → dc, drawn per guest with
//     probabilities 40 / 30 / 20 / 10 %; chain shutdown 120s → poweroff 30s
//     (dc: shutdown 300s → poweroff 60s);
//   - 2 % of the guests get a rule depending on 1–3 guests of the same tier
//     with a higher index (a random DAG inside each tier);
//   - 5 % of the guests are already off; 85 % have a learned duration drawn
//     uniformly from 10–120 s (dc: 30–300 s); the rest use their worst case;
//   - a hook at the start (30 s); sundown's VM on the last host.
func bigSpec(seed uint64, hosts, perHost int) Spec {
	r := rand.New(rand.NewPCG(seed, 1))
	tiers := []string{"web", "app", "db", "dc"}
	var inv provider.Inventory
	hist := map[string]time.Duration{}
	byTier := make([][]string, len(tiers))
	for h := range hosts {
		hostID := fmt.Sprintf("host-%04d", h)
		inv.Hosts = append(inv.Hosts, provider.Host{ID: hostID, Name: fmt.Sprintf("esx-%04d", h), Power: on})
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
			name := fmt.Sprintf("%s-%05d", tiers[tier], n)
			g := guest(fmt.Sprintf("vm-%05d", n), name, hostID, on)
			if r.IntN(20) == 0 {
				g.Power = off
			}
			if r.IntN(100) < 85 {
				lo, hi := 10, 120
				if tier == 3 {
					lo, hi = 30, 300
				}
				hist["guest:vc/"+g.ID] = time.Duration(lo+r.IntN(hi-lo+1)) * s
			}
			inv.Guests = append(inv.Guests, g)
			byTier[tier] = append(byTier[tier], name)
		}
	}
	inv.Guests[len(inv.Guests)-1].UUID = "self-uuid"
	var rules []GuestRule
	for _, names := range byTier {
		for i, name := range names {
			if r.IntN(50) != 0 || i+1 >= len(names) {
				continue
			}
			rule := GuestRule{Name: name}
			for range 1 + r.IntN(3) {
				rule.DependsOn = append(rule.DependsOn, names[i+1+r.IntN(len(names)-i-1)])
			}
			rules = append(rules, rule)
		}
	}
	return Spec{
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
		Guests:       rules,
		Hooks:        []Hook{{Name: "notify", Timeout: 30 * s}},
		DefaultChain: stdChain,
		Self:         Self{VMUUID: "self-uuid"},
		History:      hist,
	}
}

func TestBigPlan(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 guests")
	}
	spec := bigSpec(1, 500, 20)
	start := time.Now()
	p, probs := Build(spec)
	sc := p.Estimate(Caps{Global: 64, PerHost: 4})
	elapsed := time.Since(start)
	noErrors(t, probs)
	checkPlan(t, p)
	checkSchedule(t, p, sc)
	t.Logf("%d steps, build+estimate %v, makespan %v, lower bound %v (ratio %.3f)", len(p.Steps), elapsed, sc.Makespan, sc.LowerBound,
		float64(sc.Makespan)/float64(sc.LowerBound))
}

// BenchmarkBuildAndEstimate10k builds and schedules the bigSpec site (10,000
// guests on 500 hosts) under three global caps, and reports the makespan and
// its ratio to the lower bound.
func BenchmarkBuildAndEstimate10k(b *testing.B) {
	spec := bigSpec(1, 500, 20)
	for _, global := range []int{8, 64, 256} {
		b.Run(fmt.Sprintf("global=%d,per_host=4", global), func(b *testing.B) {
			var sc Schedule
			var steps int
			for b.Loop() {
				p, _ := Build(spec)
				sc = p.Estimate(Caps{Global: global, PerHost: 4})
				steps = len(p.Steps)
			}
			b.ReportMetric(float64(steps), "steps")
			b.ReportMetric(sc.Makespan.Seconds(), "makespan_s")
			b.ReportMetric(sc.LowerBound.Seconds(), "lowerbound_s")
			b.ReportMetric(float64(sc.Makespan)/float64(sc.LowerBound), "makespan/LB")
		})
	}
}

// BenchmarkEstimate10k schedules only (the plan is built once).
func BenchmarkEstimate10k(b *testing.B) {
	p, _ := Build(bigSpec(1, 500, 20))
	for b.Loop() {
		p.Estimate(Caps{Global: 64, PerHost: 4})
	}
}
