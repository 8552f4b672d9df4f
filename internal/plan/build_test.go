package plan

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sundown-ups/sundown/internal/provider"
)

// oneTarget is a small spec: hosts h1, h2 on target "t", the given guests,
// no host steps, the standard chain.
func oneTarget(guests ...provider.Guest) Spec {
	return Spec{
		Targets: []TargetInventory{{Target: "t", Inventory: provider.Inventory{
			Hosts:  []provider.Host{{ID: "h1", Name: "esx-1", Power: on}, {ID: "h2", Name: "esx-2", Power: on}},
			Guests: guests,
		}}},
		DefaultChain: stdChain,
	}
}

func TestDemoPlan(t *testing.T) {
	p, probs := Build(demoSpec())
	if len(probs) != 0 {
		t.Fatalf("problems:\n%s", problemsText(probs))
	}
	checkPlan(t, p)
	c := predClosure(p)
	id := func(k string) int { return mustID(t, p, k) }

	// web → app → db → dc, by groups: every web guest before every app guest, …
	tiers := [][]string{
		{"vm-101", "vm-102", "vm-103", "vm-104", "vm-105"},
		{"vm-201", "vm-202", "vm-203", "vm-204"},
		{"vm-301", "vm-302", "vm-303"},
		{"vm-401", "vm-402"},
	}
	for k := 0; k+1 < len(tiers); k++ {
		for _, a := range tiers[k] {
			for _, b := range tiers[k+1] {
				if !c.before(id("guest:vcenter/"+a), id("guest:vcenter/"+b)) {
					t.Errorf("%s should stop before %s", a, b)
				}
			}
		}
	}
	// … and not the other way round.
	if c.before(id("guest:vcenter/vm-401"), id("guest:vcenter/vm-101")) {
		t.Error("dc-1 ordered before web-1")
	}
	// Guest rule: monitor stops before the dc group.
	for _, dc := range tiers[3] {
		if !c.before(id("guest:vcenter/vm-501"), id("guest:vcenter/"+dc)) {
			t.Errorf("monitor should stop before %s", dc)
		}
	}
	// Hooks: notify before everything, stop-backups before the db guests only.
	for i, st := range p.Steps {
		if st.Kind != StepHook && !c.before(id("hook:notify"), i) {
			t.Errorf("hook notify should precede %s", st.Key)
		}
	}
	for _, db := range tiers[2] {
		if !c.before(id("hook:stop-backups"), id("guest:vcenter/"+db)) {
			t.Errorf("stop-backups should precede %s", db)
		}
	}
	if c.before(id("hook:stop-backups"), id("guest:vcenter/vm-101")) {
		t.Error("stop-backups should not hold back the web tier")
	}
	// Hosts: every guest of a host before its maintenance, maintenance before shutdown.
	for _, st := range p.Steps {
		if st.Kind != StepGuest {
			continue
		}
		hs := "vcenter/" + st.HostID
		first := "host-maint:" + hs
		if st.HostID == "host-3" {
			first = "host-off:" + hs
		}
		if !c.before(st.ID, id(first)) {
			t.Errorf("%s should stop before %s", st.Key, first)
		}
	}
	if !c.before(id("host-maint:vcenter/host-1"), id("host-off:vcenter/host-1")) {
		t.Error("maintenance should precede host shutdown")
	}
	// The host carrying sundown goes last, after every other step; its
	// maintenance is left out (sundown's VM runs there); sundown's VM is
	// excluded from the guest phase.
	last := id("host-off:vcenter/host-3")
	if last != len(p.Steps)-1 || c.count(last) != len(p.Steps)-1 {
		t.Errorf("host-off host-3 is step %d with %d predecessors; want the last, after all %d others", last, c.count(last), len(p.Steps)-1)
	}
	if _, ok := p.Lookup("host-maint:vcenter/host-3"); ok {
		t.Error("maintenance of the host carrying sundown's VM should be left out")
	}
	if _, ok := p.Lookup("guest:vcenter/vm-900"); ok {
		t.Error("sundown's own VM is in the guest phase")
	}
	want := []Exclusion{
		{Key: "guest:vcenter/vm-900", Target: "vcenter", ID: "vm-900", Name: "sundown", HostName: "esx-03", Reason: "sundown's own VM"},
		{Key: "host-maint:vcenter/host-3", Target: "vcenter", ID: "host-3", Name: "esx-03", HostName: "esx-03", Reason: "sundown's own VM runs on this host: maintenance mode would wait for it"},
	}
	if diff := cmp.Diff(want, p.Excluded); diff != "" {
		t.Errorf("excluded (-want +got):\n%s", diff)
	}
	if p.SelfHost != "vcenter/host-3" {
		t.Errorf("SelfHost = %q", p.SelfHost)
	}
	// Rule chain override, off and suspended guests.
	if st := p.Steps[id("guest:vcenter/vm-303")]; !st.Chain.Equal(chain(Suspend, 90*s, PowerOff, 30*s)) || st.Timeout != 120*s {
		t.Errorf("db-3: chain %v timeout %v", st.Chain, st.Timeout)
	}
	if st := p.Steps[id("guest:vcenter/vm-401")]; !st.Chain.Equal(chain(Shutdown, 300*s, PowerOff, 60*s)) {
		t.Errorf("dc-1 chain %v", st.Chain)
	}
	if st := p.Steps[id("guest:vcenter/vm-104")]; st.Estimate != 0 || st.Note != "already off" || st.Timeout != 150*s {
		t.Errorf("off guest: %+v", st)
	}
}

func TestSystemdMeaning(t *testing.T) {
	// "a depends on b": a stops before b.
	spec := oneTarget(guest("1", "a", "h1", on), guest("2", "b", "h1", on))
	spec.Guests = []GuestRule{{Name: "a", DependsOn: []string{"b"}}}
	p, probs := Build(spec)
	noErrors(t, probs)
	a, b := mustID(t, p, "guest:t/1"), mustID(t, p, "guest:t/2")
	if !slices.Contains(p.Steps[b].Deps, a) || len(p.Steps[a].Deps) != 0 {
		t.Fatalf("a deps %v, b deps %v: want b to wait for a", p.Steps[a].Deps, p.Steps[b].Deps)
	}
	sc := p.Estimate(Caps{})
	checkSchedule(t, p, sc)
	if sc.End[a] > sc.Start[b] || sc.Makespan != 300*s {
		t.Fatalf("a [%v,%v) b [%v,%v) makespan %v", sc.Start[a], sc.End[a], sc.Start[b], sc.End[b], sc.Makespan)
	}
}

func TestGroupAndGuestDeps(t *testing.T) {
	spec := oneTarget(
		guest("1", "web-1", "h1", on), guest("2", "web-2", "h2", on),
		guest("3", "app-1", "h1", on), guest("4", "app-2", "h2", on),
		guest("5", "db-1", "h1", on), guest("6", "cache", "h2", on),
		guest("7", "log", "h1", on), guest("8", "mail", "h2", on),
	)
	spec.Groups = []Group{
		{Name: "web", Select: Selector{Names: []string{"web-*"}}, DependsOn: []string{"app"}},
		{Name: "app", Select: Selector{Names: []string{"app-*"}}, DependsOn: []string{"db-1"}}, // group → guest
		{Name: "db", Select: Selector{Names: []string{"db-*"}}},
		{Name: "empty", Select: Selector{Names: []string{"nothing-*"}}, DependsOn: []string{"db"}},
	}
	spec.Guests = []GuestRule{
		{Name: "cache", DependsOn: []string{"web"}},  // guest → group
		{Name: "log", DependsOn: []string{"mail"}},   // guest → guest
		{Name: "mail", DependsOn: []string{"empty"}}, // through an empty group: mail → empty → db
	}
	p, probs := Build(spec)
	if len(probs) != 1 || probs[0].String() != `warning: groups[3]: group "empty" selects no guest` {
		t.Fatalf("problems:\n%s", problemsText(probs))
	}
	checkPlan(t, p)
	c := predClosure(p)
	g := func(id string) int { return mustID(t, p, "guest:t/"+id) }
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"1", "3", true}, {"2", "4", true}, {"1", "4", true}, // web → app
		{"3", "5", true}, {"4", "5", true}, // app → db-1
		{"6", "1", true}, {"6", "2", true}, {"6", "3", true}, // cache → web (→ app, transitively)
		{"7", "8", true}, {"8", "5", true}, {"7", "5", true}, // log → mail → (empty) → db
		{"3", "1", false}, {"5", "3", false}, {"1", "6", false}, {"8", "7", false},
	} {
		if got := c.before(g(tc.a), g(tc.b)); got != tc.want {
			t.Errorf("%s before %s = %v, want %v", p.Steps[g(tc.a)].Name, p.Steps[g(tc.b)].Name, got, tc.want)
		}
	}
	// A group dependency costs |A|+|B| edges, not |A|·|B|: app-1 waits for
	// the web group's marker, not for each web guest.
	if deps := keys(p, p.Steps[g("3")].Deps); !slices.Equal(deps, []string{"group:web"}) {
		t.Errorf("app-1 deps = %v", deps)
	}
	var info GroupInfo
	for _, gi := range p.Groups {
		if gi.Name == "web" {
			info = gi
		}
	}
	if !slices.Equal(info.After, []string{"cache"}) || !slices.Equal(info.DependsOn, []string{"app"}) || info.Guests != 2 {
		t.Errorf("web group info %+v", info)
	}
}

func TestFirstMatchMembership(t *testing.T) {
	spec := oneTarget(
		guest("1", "web-db", "h1", on, "role", "db"),
		guest("2", "web-1", "h2", on),
		guest("3", "other", "h1", on, "role", "db"),
		guest("4", "stray", "h1", on),
		guest("5", "pinned", "h2", on, "env", "prod"),
	)
	spec.Groups = []Group{
		{Name: "web", Select: Selector{Names: []string{"web-*"}}},
		{Name: "db", Select: Selector{Tags: map[string]string{"role": "db"}}},
		{Name: "prod-on-2", Select: Selector{Tags: map[string]string{"env": "*"}, Hosts: []string{"esx-2"}, Targets: []string{"t"}}},
	}
	group := func(p *Plan, id string) string { return p.Steps[mustID(t, p, "guest:t/"+id)].Group }
	p, probs := Build(spec)
	noErrors(t, probs)
	for id, want := range map[string]string{"1": "web", "2": "web", "3": "db", "4": "ungrouped", "5": "prod-on-2"} {
		if got := group(p, id); got != want {
			t.Errorf("guest %s in %q, want %q", id, got, want)
		}
	}
	// Swap the first two groups: web-db now goes to db.
	spec.Groups[0], spec.Groups[1] = spec.Groups[1], spec.Groups[0]
	p, _ = Build(spec)
	if got := group(p, "1"); got != "db" {
		t.Errorf("after swapping, web-db in %q", got)
	}
	// Host by ID works too; a host that does not match excludes.
	spec.Groups[2].Select.Hosts = []string{"h1"}
	p, _ = Build(spec)
	if got := group(p, "5"); got != "ungrouped" {
		t.Errorf("pinned on h2 with selector host h1: in %q", got)
	}
}

func TestGuestRules(t *testing.T) {
	spec := Spec{
		Targets: []TargetInventory{
			{Target: "a", ShutdownHosts: true, HostShutdownTimeout: 60 * s, Inventory: provider.Inventory{
				Hosts:  []provider.Host{{ID: "h1", Name: "esx-1", Power: on}},
				Guests: []provider.Guest{guest("vm-1", "dup", "h1", on), guest("vm-2", "solo", "h1", on), guest("vm-3", "gone", "h1", on)},
			}},
			{Target: "b", Inventory: provider.Inventory{
				Guests: []provider.Guest{guest("100", "dup", "", on), guest("101", "twin", "", on), guest("102", "twin", "", on)},
			}},
		},
		DefaultChain: stdChain,
		Guests: []GuestRule{
			{Name: "a/dup", Chain: chain(PowerOff, 10*s)},                       // target/name
			{Name: "b/102", Chain: chain(Suspend, 5*s, Skip, time.Duration(0))}, // target/ID (names are not unique in b)
			{Name: "vm-2", DependsOn: []string{"b/dup"}},                        // bare ID
			{Name: "gone", Exclude: true},
		},
	}
	p, probs := Build(spec)
	got := problemsText(probs)
	if got != "warning: guests[3].exclude: guest gone is excluded but its host esx-1 shuts down: it goes down with the host, without a clean shutdown\n" {
		t.Fatalf("problems:\n%s", got)
	}
	checkPlan(t, p)
	st := func(k string) Step { return p.Steps[mustID(t, p, k)] }
	if c := st("guest:a/vm-1").Chain; !c.Equal(chain(PowerOff, 10*s)) {
		t.Errorf("a/dup chain %v", c)
	}
	if c := st("guest:b/100").Chain; !c.Equal(stdChain) {
		t.Errorf("b/dup chain %v", c)
	}
	if s102 := st("guest:b/102"); !s102.Chain.Equal(chain(Suspend, 5*s, Skip, time.Duration(0))) || s102.Timeout != 5*s {
		t.Errorf("b/102: %+v", s102)
	}
	if !predClosure(p).before(mustID(t, p, "guest:a/vm-2"), mustID(t, p, "guest:b/100")) {
		t.Error("vm-2 should stop before b/dup")
	}
	if _, ok := p.Lookup("guest:a/vm-3"); ok || len(p.Excluded) != 1 || p.Excluded[0].Reason != "excluded by a guest rule" {
		t.Errorf("excluded: %+v", p.Excluded)
	}
	// Guests of target b have no host: they appear with a note.
	if n := st("guest:b/101").Note; n != "host unknown" {
		t.Errorf("note %q", n)
	}
}

func TestSelfHostLastWithoutVM(t *testing.T) {
	// sundown runs on the host itself (bare metal, e.g. a Proxmox node):
	// that host's maintenance is kept, and both its steps come last.
	spec := oneTarget(guest("1", "a", "h1", on), guest("2", "b", "h2", on))
	spec.Targets[0].Maintenance, spec.Targets[0].MaintenanceTimeout = true, 30*s
	spec.Targets[0].ShutdownHosts, spec.Targets[0].HostShutdownTimeout = true, 60*s
	spec.Self = Self{HostID: "esx-1"} // by name
	p, probs := Build(spec)
	noErrors(t, probs)
	checkPlan(t, p)
	c := predClosure(p)
	m, o := mustID(t, p, "host-maint:t/h1"), mustID(t, p, "host-off:t/h1")
	if o != len(p.Steps)-1 || m != len(p.Steps)-2 || c.count(m) != len(p.Steps)-2 {
		t.Fatalf("self host steps %d, %d of %d; maint has %d predecessors", m, o, len(p.Steps), c.count(m))
	}
	if p.Steps[o].Note != "carries sundown: last" || p.SelfHost != "t/h1" {
		t.Errorf("note %q self %q", p.Steps[o].Note, p.SelfHost)
	}
	sc := p.Estimate(p.Caps)
	checkSchedule(t, p, sc)
	// b on h2 (150 s), h2 maint+off (90 s), then h1 maint+off (90 s).
	if sc.Start[m] != 240*s || sc.Makespan != 330*s {
		t.Errorf("self maint at %v, makespan %v", sc.Start[m], sc.Makespan)
	}
}

func TestUnknownHostGuestsBeforeEveryHost(t *testing.T) {
	spec := oneTarget(guest("1", "a", "h1", on), guest("2", "lost", "", on), guest("3", "moved", "h9", on))
	spec.Targets[0].ShutdownHosts, spec.Targets[0].HostShutdownTimeout = true, 60*s
	p, probs := Build(spec)
	noErrors(t, probs)
	c := predClosure(p)
	for _, g := range []string{"guest:t/2", "guest:t/3"} {
		for _, h := range []string{"host-off:t/h1", "host-off:t/h2"} {
			if !c.before(mustID(t, p, g), mustID(t, p, h)) {
				t.Errorf("%s should stop before %s", g, h)
			}
		}
	}
	if c.before(mustID(t, p, "guest:t/1"), mustID(t, p, "host-off:t/h2")) {
		t.Error("a guest of h1 holds back h2")
	}
}

func TestAlreadyDone(t *testing.T) {
	spec := oneTarget(
		guest("1", "off", "h1", off),
		guest("2", "susp", "h1", provider.PowerSuspended),
		guest("3", "susp2", "h1", provider.PowerSuspended),
		guest("4", "keep", "h2", on),
	)
	spec.Targets[0].Inventory.Hosts[1].Power = off
	spec.Targets[0].Inventory.Hosts[0].Maintenance = true
	spec.Targets[0].Maintenance, spec.Targets[0].MaintenanceTimeout = true, 30*s
	spec.Targets[0].ShutdownHosts, spec.Targets[0].HostShutdownTimeout = true, 60*s
	spec.Guests = []GuestRule{
		{Name: "susp", Chain: chain(Suspend, 60*s, PowerOff, 30*s)},
		{Name: "keep", Chain: chain(Skip, time.Duration(0))},
	}
	p, probs := Build(spec)
	noErrors(t, probs)
	for k, want := range map[string]struct {
		est  time.Duration
		note string
	}{
		"guest:t/1":       {0, "already off"},
		"guest:t/2":       {0, "already suspended"},
		"guest:t/3":       {150 * s, "suspended"},
		"guest:t/4":       {0, "skip: left as it is"},
		"host-maint:t/h1": {0, "already in maintenance"},
		"host-off:t/h1":   {60 * s, ""},
		"host-maint:t/h2": {0, "already off"},
		"host-off:t/h2":   {0, "already off"},
	} {
		st := p.Steps[mustID(t, p, k)]
		if st.Estimate != want.est || st.Note != want.note {
			t.Errorf("%s: estimate %v note %q, want %v %q", k, st.Estimate, st.Note, want.est, want.note)
		}
	}
	sc := p.Estimate(p.Caps)
	checkSchedule(t, p, sc)
	off := mustID(t, p, "guest:t/1")
	if sc.Start[off] != 0 || sc.End[off] != 0 {
		t.Errorf("off guest at [%v,%v)", sc.Start[off], sc.End[off])
	}
	if sc.Makespan != 210*s {
		t.Errorf("makespan %v, want 150 s + 60 s", sc.Makespan)
	}
}

func TestHistory(t *testing.T) {
	spec := oneTarget(guest("1", "a", "h1", on), guest("2", "b", "h1", on), guest("3", "c", "h1", on), guest("4", "d", "h1", off))
	spec.Hooks = []Hook{{Name: "x", Timeout: 20 * s}}
	spec.History = map[string]time.Duration{
		"guest:t/1": 12500 * time.Millisecond, // learned
		"guest:t/2": 400 * s,                  // above the worst case: capped
		"guest:t/3": -5 * s,                   // nonsense: ignored
		"guest:t/4": 50 * s,                   // off: stays 0
		"hook:x":    2 * s,
	}
	p, _ := Build(spec)
	for k, want := range map[string]struct {
		est     time.Duration
		learned bool
	}{
		"guest:t/1": {12500 * time.Millisecond, true},
		"guest:t/2": {150 * s, true},
		"guest:t/3": {150 * s, false},
		"guest:t/4": {0, false},
		"hook:x":    {2 * s, true},
	} {
		st := p.Steps[mustID(t, p, k)]
		if st.Estimate != want.est || st.Learned != want.learned {
			t.Errorf("%s: estimate %v learned %v, want %v %v", k, st.Estimate, st.Learned, want.est, want.learned)
		}
	}
	sc := p.Estimate(p.Caps)
	checkSchedule(t, p, sc)
	if sc.Makespan != 152*s {
		t.Errorf("makespan %v", sc.Makespan)
	}
	var b strings.Builder
	if err := p.Text(&b, sc, TextOptions{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "expected 12.5 s (learned), worst 150 s") {
		t.Errorf("text lacks the learned estimate:\n%s", b.String())
	}
}

func TestSelfVMNotFound(t *testing.T) {
	spec := oneTarget(guest("1", "a", "h1", on))
	spec.Self = Self{VMUUID: "nope"}
	p, probs := Build(spec)
	if got := problemsText(probs); got != "warning: self.vm_uuid: no guest has UUID \"nope\": sundown's own VM is not recognised and may be stopped before the plan ends\n" {
		t.Fatalf("problems:\n%s", got)
	}
	if len(p.Excluded) != 0 || p.SelfHost != "" {
		t.Errorf("excluded %v self host %q", p.Excluded, p.SelfHost)
	}
}

func TestSelfResolution(t *testing.T) {
	base := func() Spec {
		sp := oneTarget(guest("1", "a", "h1", on), guest("2", "me", "h2", on), guest("3", "lost-me", "", on))
		sp.Targets[0].Inventory.Guests[1].UUID = "u-2"
		sp.Targets[0].Inventory.Guests[2].UUID = "u-3"
		sp.Targets[0].ShutdownHosts, sp.Targets[0].HostShutdownTimeout = true, 60*s
		return sp
	}
	for _, tc := range []struct {
		name     string
		self     Self
		selfHost string
		problems string
	}{
		{"vm gives the host", Self{VMUUID: "U-2"}, "t/h2", ""},
		{"host by ID", Self{HostID: "h1", Target: "t"}, "t/h1", ""},
		{"vm wins over a stale host", Self{VMUUID: "u-2", HostID: "h1"}, "t/h2",
			"warning: self.host_id: sundown's own VM runs on host esx-2, not esx-1: esx-2 is shut down last\n"},
		{"vm host unknown", Self{VMUUID: "u-3"}, "",
			"warning: self.host_id: the host of sundown's own VM is unknown (target t reports \"\"): set self.host_id, or that host may shut down before the plan ends\n"},
		{"vm host unknown, host given", Self{VMUUID: "u-3", HostID: "esx-2"}, "t/h2", ""},
		{"unknown target", Self{HostID: "h1", Target: "tt"}, "",
			"warning: self.target: unknown target \"tt\" (did you mean \"t\"?): the host carrying sundown is not shut down last\n"},
		{"unknown host", Self{HostID: "h7"}, "",
			"warning: self.host_id: unknown host \"h7\": the host carrying sundown is not shut down last\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp := base()
			sp.Self = tc.self
			p, probs := Build(sp)
			if got := problemsText(probs); got != tc.problems {
				t.Errorf("problems:\n%s\nwant:\n%s", got, tc.problems)
			}
			if p.SelfHost != tc.selfHost {
				t.Errorf("SelfHost %q, want %q", p.SelfHost, tc.selfHost)
			}
			if tc.selfHost != "" {
				c := predClosure(p)
				last := mustID(t, p, "host-off:"+tc.selfHost)
				if c.count(last) != len(p.Steps)-1 {
					t.Errorf("self host step has %d predecessors of %d", c.count(last), len(p.Steps)-1)
				}
			}
			checkSchedule(t, p, p.Estimate(Caps{}))
		})
	}
}
