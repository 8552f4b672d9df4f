package plan

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/provider"
)

func TestMakespanEqualsLowerBoundInSimpleCases(t *testing.T) {
	many := func(hosts, perHost int) []provider.Guest {
		var gs []provider.Guest
		for h := range hosts {
			for k := range perHost {
				gs = append(gs, guest(fmt.Sprintf("g%d-%d", h, k), fmt.Sprintf("g%d-%d", h, k), fmt.Sprintf("h%d", h+1), on))
			}
		}
		return gs
	}
	for _, tc := range []struct {
		name  string
		spec  func() Spec
		caps  Caps
		want  time.Duration
		bound string // which bound is tight
	}{
		{
			name: "chain of three",
			spec: func() Spec {
				sp := oneTarget(guest("1", "a", "h1", on), guest("2", "b", "h2", on), guest("3", "c", "h1", on))
				sp.Guests = []GuestRule{{Name: "a", DependsOn: []string{"b"}}, {Name: "b", DependsOn: []string{"c"}}}
				return sp
			},
			want: 450 * s, bound: "critical path",
		},
		{
			name: "sixteen independent, global cap",
			spec: func() Spec { return oneTarget(many(2, 8)...) },
			caps: Caps{Global: 8, PerHost: 8},
			want: 300 * s, bound: "work",
		},
		{
			name: "eight on one host, per-host cap",
			spec: func() Spec { return oneTarget(many(1, 8)...) },
			caps: Caps{Global: 8, PerHost: 2},
			want: 600 * s, bound: "host",
		},
		{
			name: "critical path first",
			// a1…a3 (150 s each) are independent; b (150 s) precedes c
			// (chain of 450 s). With 2 slots, starting b at once ends at
			// 600 s = b + c; ID order (a1, a2 first) would end at 750 s.
			spec: func() Spec {
				sp := oneTarget(guest("1", "a1", "h1", on), guest("2", "a2", "h1", on), guest("3", "a3", "h1", on),
					guest("4", "b", "h2", on), guest("5", "c", "h2", on))
				sp.Guests = []GuestRule{{Name: "b", DependsOn: []string{"c"}}, {Name: "c", Chain: chain(Shutdown, 400*s, PowerOff, 50*s)}}
				return sp
			},
			caps: Caps{Global: 2, PerHost: 2},
			want: 600 * s, bound: "critical path",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, probs := Build(tc.spec())
			noErrors(t, probs)
			sc := p.Estimate(tc.caps)
			checkSchedule(t, p, sc)
			if sc.Makespan != tc.want || sc.LowerBound != tc.want {
				t.Fatalf("makespan %v lower bound %v, want both %v", sc.Makespan, sc.LowerBound, tc.want)
			}
			tight := map[string]time.Duration{"critical path": sc.CriticalPathLen, "work": sc.WorkBound, "host": sc.HostBound}[tc.bound]
			if tight != tc.want {
				t.Errorf("%s bound %v, want %v", tc.bound, tight, tc.want)
			}
		})
	}
}

func TestCapsRespected(t *testing.T) {
	p, _ := Build(demoSpec())
	for _, caps := range []Caps{{Global: 1, PerHost: 1}, {Global: 3, PerHost: 1}, {Global: 5, PerHost: 2}, {Global: 100, PerHost: 100}, {}} {
		sc := p.Estimate(caps)
		checkSchedule(t, p, sc)
		if caps.Global == 1 && sc.Makespan != sc.TotalWork {
			t.Errorf("one slot: makespan %v, total work %v", sc.Makespan, sc.TotalWork)
		}
	}
	if sc := p.Estimate(Caps{}); sc.Caps != (Caps{Global: DefaultGlobalCap, PerHost: DefaultPerHostCap}) {
		t.Errorf("default caps %+v", sc.Caps)
	}
}

func TestEstimateOnHandBuiltPlans(t *testing.T) {
	// A plan not made by Build (cycle, deps out of range, negative
	// estimate) must not make Estimate panic.
	p := &Plan{Steps: []Step{
		{ID: 0, Key: "a", Kind: StepGuest, Estimate: 5 * s, Deps: []int{1}},
		{ID: 1, Key: "b", Kind: StepGuest, Estimate: 5 * s, Deps: []int{0, 7, -1}},
		{ID: 2, Key: "c", Kind: StepHook, Estimate: -s, Deps: []int{2}},
		{ID: 3, Key: "d", Kind: StepGroup, Estimate: 9 * s, Deps: []int{2}},
	}}
	sc := p.Estimate(Caps{})
	if sc.Start[0] != -1 || sc.Start[1] != -1 || sc.End[2] != 0 || sc.End[3] != 0 || sc.Makespan != 0 {
		t.Errorf("schedule %+v", sc)
	}
	var b strings.Builder
	if err := p.Text(&b, sc, TextOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := (&Plan{}).Text(&b, Schedule{}, TextOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := p.Text(&b, Schedule{}, TextOptions{}); err != nil { // schedule of another plan
		t.Fatal(err)
	}
	if sc := (&Plan{}).Estimate(Caps{}); sc.Makespan != 0 || len(sc.CriticalPath) != 0 {
		t.Errorf("empty plan: %+v", sc)
	}
}

func TestMargin(t *testing.T) {
	sc := Schedule{Makespan: 431 * s}
	for _, tc := range []struct {
		runtime, margin time.Duration
		fits            bool
		want            string
	}{
		{1260 * s, 0, true, "runtime 1260 s − plan 431 s = margin 829 s: fits"},
		{1260 * s, 120 * s, true, "runtime 1260 s − plan 431 s = margin 829 s: fits (required 120 s)"},
		{500 * s, 120 * s, false, "runtime 500 s − plan 431 s = margin 69 s: DOES NOT FIT (required 120 s)"},
		{300 * s, 0, false, "runtime 300 s − plan 431 s = margin -131 s: DOES NOT FIT"},
		{551 * s, 120 * s, true, "runtime 551 s − plan 431 s = margin 120 s: fits (required 120 s)"},
		{0, 120 * s, false, "runtime unknown: the plan needs 431 s + margin 120 s = 551 s of battery"},
	} {
		m := sc.Margin(tc.runtime, tc.margin)
		if m.Fits != tc.fits || m.String() != tc.want {
			t.Errorf("Margin(%v, %v) = %v %q, want %v %q", tc.runtime, tc.margin, m.Fits, m, tc.fits, tc.want)
		}
	}
}

// randomSpec makes a small, messy spec: several targets, hosts that are off
// or in maintenance, guests without a host, random groups with random
// dependencies (cycles included), rules, hooks, a self VM, history.
func randomSpec(r *rand.Rand) Spec {
	prefixes := []string{"web", "app", "db", "dc", "misc"}
	var spec Spec
	var guestNames []string
	for ti := range 1 + r.IntN(3) {
		t := TargetInventory{Target: fmt.Sprintf("t%d", ti)}
		if r.IntN(2) == 0 {
			t.Maintenance, t.MaintenanceTimeout = true, time.Duration(1+r.IntN(120))*s
		}
		if r.IntN(3) > 0 {
			t.ShutdownHosts, t.HostShutdownTimeout = true, time.Duration(1+r.IntN(120))*s
		}
		nh := 1 + r.IntN(6)
		for h := range nh {
			host := provider.Host{ID: fmt.Sprintf("h%d", h), Name: fmt.Sprintf("esx-%d-%d", ti, h), Power: on}
			switch r.IntN(10) {
			case 0:
				host.Power = off
			case 1:
				host.Maintenance = true
			}
			t.Inventory.Hosts = append(t.Inventory.Hosts, host)
		}
		for g := range r.IntN(40) {
			pre := prefixes[r.IntN(len(prefixes))]
			name := fmt.Sprintf("%s-%d", pre, r.IntN(30))
			hostID := fmt.Sprintf("h%d", r.IntN(nh))
			switch r.IntN(30) {
			case 0:
				hostID = ""
			case 1:
				hostID = "ghost"
			}
			gu := guest(fmt.Sprintf("vm-%d", g), name, hostID, on, "tier", pre)
			switch r.IntN(10) {
			case 0:
				gu.Power = off
			case 1:
				gu.Power = provider.PowerSuspended
			}
			gu.UUID = fmt.Sprintf("uuid-%d-%d", ti, g)
			t.Inventory.Guests = append(t.Inventory.Guests, gu)
			guestNames = append(guestNames, name)
		}
		spec.Targets = append(spec.Targets, t)
	}
	randChain := func() Chain {
		var c Chain
		for range r.IntN(3) {
			c = append(c, Action{Kind: []ActionKind{Shutdown, Suspend}[r.IntN(2)], Timeout: time.Duration(1+r.IntN(200)) * s})
		}
		if r.IntN(5) == 0 {
			return append(c, Action{Kind: Skip})
		}
		return append(c, Action{Kind: PowerOff, Timeout: time.Duration(1+r.IntN(60)) * s})
	}
	ng := r.IntN(6)
	groupName := func() string { return prefixes[r.IntN(len(prefixes))] + "s" }
	seen := map[string]bool{}
	for range ng {
		name := groupName()
		if seen[name] {
			continue
		}
		seen[name] = true
		g := Group{Name: name}
		pre := strings.TrimSuffix(name, "s")
		if r.IntN(2) == 0 {
			g.Select.Names = []string{pre + "-*"}
		} else {
			g.Select.Tags = map[string]string{"tier": pre}
		}
		if r.IntN(4) == 0 {
			g.Select.Hosts = []string{"h0", "esx-0-1"}
		}
		if r.IntN(2) == 0 {
			g.Chain = randChain()
		}
		for range r.IntN(3) {
			if r.IntN(4) == 0 && len(guestNames) > 0 {
				g.DependsOn = append(g.DependsOn, guestNames[r.IntN(len(guestNames))])
			} else {
				g.DependsOn = append(g.DependsOn, groupName())
			}
		}
		spec.Groups = append(spec.Groups, g)
	}
	ruled := map[string]bool{}
	for range r.IntN(8) {
		if len(guestNames) == 0 {
			break
		}
		name := guestNames[r.IntN(len(guestNames))]
		if ruled[name] {
			continue
		}
		ruled[name] = true
		rule := GuestRule{Name: name, Exclude: r.IntN(5) == 0}
		if !rule.Exclude && r.IntN(2) == 0 {
			rule.Chain = randChain()
		}
		if !rule.Exclude && r.IntN(2) == 0 {
			rule.DependsOn = []string{guestNames[r.IntN(len(guestNames))]}
		}
		spec.Guests = append(spec.Guests, rule)
	}
	for h := range r.IntN(3) {
		hk := Hook{Name: fmt.Sprintf("hook-%d", h), Timeout: time.Duration(1+r.IntN(30)) * s}
		if r.IntN(2) == 0 && len(spec.Groups) > 0 {
			hk.Before = []string{spec.Groups[r.IntN(len(spec.Groups))].Name}
		}
		spec.Hooks = append(spec.Hooks, hk)
	}
	spec.DefaultChain = randChain()
	spec.Caps = Caps{Global: 1 + r.IntN(6), PerHost: 1 + r.IntN(4)}
	if r.IntN(3) == 0 {
		t := spec.Targets[r.IntN(len(spec.Targets))]
		if len(t.Inventory.Guests) > 0 {
			spec.Self.VMUUID = strings.ToUpper(t.Inventory.Guests[r.IntN(len(t.Inventory.Guests))].UUID)
		}
	}
	spec.History = map[string]time.Duration{}
	for _, t := range spec.Targets {
		for _, g := range t.Inventory.Guests {
			if r.IntN(2) == 0 {
				spec.History["guest:"+t.Target+"/"+g.ID] = time.Duration(r.IntN(150_000)) * time.Millisecond
			}
		}
		for _, h := range t.Inventory.Hosts {
			if r.IntN(2) == 0 {
				spec.History["host-off:"+t.Target+"/"+h.ID] = time.Duration(r.IntN(60_000)) * time.Millisecond
			}
		}
	}
	return spec
}

// TestRandomPlans checks, on random specs with fixed seeds, that the plan is
// a valid DAG honouring the ordering rules, that its schedule is valid under
// the caps, and that the text does not depend on input order (when no cycle
// had to be broken).
func TestRandomPlans(t *testing.T) {
	seeds := 400
	if testing.Short() {
		seeds = 60
	}
	for seed := range seeds {
		r := rand.New(rand.NewPCG(uint64(seed), 42))
		spec := randomSpec(r)
		p, probs := Build(spec)
		checkPlan(t, p)
		sc := p.Estimate(spec.Caps)
		checkSchedule(t, p, sc)
		checkOrdering(t, spec, p, probs)
		// The forward-backward passes never make the schedule worse than
		// the dispatcher's own list schedule.
		dur := make([]time.Duration, len(p.Steps))
		slotless := make([]bool, len(p.Steps))
		for i, st := range p.Steps {
			dur[i], slotless[i] = max(st.Estimate, 0), st.Kind == StepGroup
		}
		if base := simulate(p, dur, slotless, spec.Caps.WithDefaults(), nil); sc.Makespan > base.makespan {
			t.Fatalf("seed %d: Estimate's makespan %v is worse than the plain list schedule's %v", seed, sc.Makespan, base.makespan)
		}
		// Which declaration breaks a cycle depends on configuration order;
		// everything else must not.
		if !strings.Contains(problemsText(probs), "dependency cycle") {
			a := render(t, p, sc, TextOptions{Runtime: time.Hour})
			q, _ := Build(shuffleSpec(r, spec))
			b := render(t, q, q.Estimate(spec.Caps), TextOptions{Runtime: time.Hour})
			if a != b {
				t.Fatalf("seed %d: text depends on input order:\n%s\n---\n%s", seed, a, b)
			}
		}
	}
}

// checkOrdering verifies the ordering rules on a built plan: group
// dependencies (when no cycle was broken), hosts after their guests, the
// self host after everything.
func checkOrdering(t *testing.T, spec Spec, p *Plan, probs []Problem) {
	t.Helper()
	c := predClosure(p)
	cycles := strings.Contains(problemsText(probs), "dependency cycle")
	members := map[string][]int{}
	for _, st := range p.Steps {
		if st.Kind == StepGuest {
			members[st.Group] = append(members[st.Group], st.ID)
		}
	}
	if !cycles {
		for _, g := range p.Groups {
			for _, dep := range g.DependsOn {
				for _, a := range members[g.Name] {
					for _, b := range members[dep] {
						if !c.before(a, b) {
							t.Fatalf("group %s depends on %s but %s is not before %s", g.Name, dep, p.Steps[a].Key, p.Steps[b].Key)
						}
					}
				}
			}
		}
	}
	for _, st := range p.Steps {
		if st.Kind != StepHostMaintenance && st.Kind != StepHostShutdown {
			continue
		}
		for _, g := range p.Steps {
			if g.Kind == StepGuest && g.Target == st.Target && (g.HostID == st.HostID || strings.Contains(g.Note, "host unknown")) && !c.before(g.ID, st.ID) {
				t.Fatalf("%s is not before %s", g.Key, st.Key)
			}
		}
		if p.SelfHost != "" && st.Target+"/"+st.HostID == p.SelfHost {
			for _, o := range p.Steps {
				if o.Target+"/"+o.HostID != p.SelfHost || o.Kind == StepGuest {
					if o.ID != st.ID && !c.before(o.ID, st.ID) && !(o.Kind == StepHostShutdown && st.Kind == StepHostMaintenance) {
						t.Fatalf("%s is not before the self host step %s", o.Key, st.Key)
					}
				}
			}
		}
	}
	if spec.Self.VMUUID != "" {
		for _, st := range p.Steps {
			for _, ti := range spec.Targets {
				for _, g := range ti.Inventory.Guests {
					if st.Key == "guest:"+ti.Target+"/"+g.ID && strings.EqualFold(g.UUID, spec.Self.VMUUID) {
						t.Fatalf("sundown's own VM %s is in the plan", st.Key)
					}
				}
			}
		}
	}
}

// shuffleSpec returns a copy of spec with every slice whose order carries no
// meaning shuffled (all but Groups and chains).
func shuffleSpec(r *rand.Rand, spec Spec) Spec {
	sh := func(n int, swap func(i, j int)) { r.Shuffle(n, swap) }
	strs := func(s []string) []string {
		s = append([]string(nil), s...)
		sh(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
		return s
	}
	out := spec
	out.Targets = append([]TargetInventory(nil), spec.Targets...)
	for i := range out.Targets {
		inv := &out.Targets[i].Inventory
		inv.Hosts = append([]provider.Host(nil), inv.Hosts...)
		inv.Guests = append([]provider.Guest(nil), inv.Guests...)
		sh(len(inv.Hosts), func(a, b int) { inv.Hosts[a], inv.Hosts[b] = inv.Hosts[b], inv.Hosts[a] })
		sh(len(inv.Guests), func(a, b int) { inv.Guests[a], inv.Guests[b] = inv.Guests[b], inv.Guests[a] })
	}
	sh(len(out.Targets), func(a, b int) { out.Targets[a], out.Targets[b] = out.Targets[b], out.Targets[a] })
	out.Groups = append([]Group(nil), spec.Groups...)
	for i := range out.Groups {
		g := &out.Groups[i]
		g.DependsOn = strs(g.DependsOn)
		g.Select.Names, g.Select.Hosts, g.Select.Targets = strs(g.Select.Names), strs(g.Select.Hosts), strs(g.Select.Targets)
	}
	out.Guests = append([]GuestRule(nil), spec.Guests...)
	for i := range out.Guests {
		out.Guests[i].DependsOn = strs(out.Guests[i].DependsOn)
	}
	sh(len(out.Guests), func(a, b int) { out.Guests[a], out.Guests[b] = out.Guests[b], out.Guests[a] })
	out.Hooks = append([]Hook(nil), spec.Hooks...)
	for i := range out.Hooks {
		out.Hooks[i].Before = strs(out.Hooks[i].Before)
	}
	sh(len(out.Hooks), func(a, b int) { out.Hooks[a], out.Hooks[b] = out.Hooks[b], out.Hooks[a] })
	return out
}
