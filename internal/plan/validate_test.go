package plan

import (
	"strings"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/provider"
)

// badSpec has at least one of every problem Build reports.
func badSpec() Spec {
	inv := provider.Inventory{
		Hosts: []provider.Host{{ID: "h1", Name: "esx-1", Power: on}},
		Guests: []provider.Guest{
			guest("vm-1", "web-1", "h1", on), guest("vm-2", "app-1", "h1", on), guest("vm-3", "db-1", "h1", on),
			guest("vm-4", "shared", "h1", on), guest("vm-4", "shared-again", "h1", on), guest("vm-5", "lab", "h1", on),
			guest("vm-6", "db", "h1", on),
		},
	}
	return Spec{
		Targets: []TargetInventory{
			{Target: "vc", Inventory: inv, ShutdownHosts: true, HostShutdownTimeout: 60 * s, Maintenance: true},
			{Target: "vc"},
			{Target: ""},
			{Target: "a/b"},
			{Target: "pve", Inventory: provider.Inventory{Guests: []provider.Guest{guest("100", "shared", "", on)}}},
		},
		Groups: []Group{
			{Name: "web", Select: Selector{Names: []string{"web-*", "web-["}}, DependsOn: []string{"app"}},
			{Name: "app", Select: Selector{Names: []string{"app-*"}, Targets: []string{"vcc"}, Hosts: []string{"esx-9"}}, DependsOn: []string{"db"}},
			{Name: "db", Select: Selector{Names: []string{"db-*"}}, DependsOn: []string{"web", "dbb"}, Chain: chain(Shutdown, 60*s)},
			{Name: "web", Select: Selector{Names: []string{"x"}}},
			{Name: ""},
			{Name: "ungrouped"},
			{Name: "odd", Select: Selector{Names: []string{"lab"}}, Chain: Chain{}},
			{Name: "odder", Select: Selector{Names: []string{"lab"}}, Chain: chain(Skip, time.Duration(0), PowerOff, 10*s)},
			{Name: "late", Select: Selector{Names: []string{"web-*"}}, Chain: stdChain},
			{Name: "oddest", Select: Selector{Names: []string{"nobody"}}, Chain: Chain{{Kind: Shutdown}, {Kind: ActionKind(9), Timeout: s}}},
		},
		Guests: []GuestRule{
			{Name: "shared"},
			{Name: "web-2"},
			{Name: "web-1", DependsOn: []string{"shared"}},
			{Name: "vc/web-1", Exclude: true, Chain: stdChain},
			{Name: "lab", Exclude: true},
			{Name: ""},
			{Name: "vm-6", DependsOn: []string{"oops"}},
			{Name: "vc/vm-6", Chain: stdChain},
		},
		Hooks: []Hook{
			{Name: "stop", Before: []string{"dbb", "ungrouped"}, Timeout: 10 * s},
			{Name: "stop", Timeout: 10 * s},
			{Name: "", Timeout: 10 * s},
			{Name: "slow"},
		},
		Caps:    Caps{Global: -1, PerHost: -2},
		Self:    Self{VMUUID: "abc", HostID: "esx-7"},
		History: map[string]time.Duration{"guest:vc/vm-1": time.Second},
	}
}

func TestEveryProblemAtOnce(t *testing.T) {
	p, probs := Build(badSpec())
	if !HasErrors(probs) {
		t.Fatal("no errors")
	}
	golden(t, "bad-spec.problems", []byte(problemsText(probs)))
	// Even a bad spec gives a usable (best-effort) plan.
	checkPlan(t, p)
	checkSchedule(t, p, p.Estimate(p.Caps))
}

func TestCyclesPrintedAsPaths(t *testing.T) {
	guests := []provider.Guest{
		guest("1", "web-1", "h1", on), guest("2", "web-2", "h1", on),
		guest("3", "app-1", "h1", on), guest("4", "db-1", "h1", on), guest("5", "dc-1", "h1", on),
	}
	tiers := func(deps ...[]string) []Group {
		names := []string{"web", "app", "db", "dc"}
		var gs []Group
		for i, n := range names {
			g := Group{Name: n, Select: Selector{Names: []string{n + "-*"}}}
			if i < len(deps) {
				g.DependsOn = deps[i]
			}
			gs = append(gs, g)
		}
		return gs
	}
	for _, tc := range []struct {
		name   string
		groups []Group
		rules  []GuestRule
		want   string
	}{
		{
			name:   "groups",
			groups: tiers([]string{"app"}, []string{"db"}, []string{"web"}),
			want:   "groups[2].depends_on[0]: dependency cycle: db → web → app → db\n",
		},
		{
			name:   "group on itself",
			groups: tiers(nil, []string{"app"}),
			want:   "groups[1].depends_on[0]: dependency cycle: app → app\n",
		},
		{
			name:  "guests",
			rules: []GuestRule{{Name: "app-1", DependsOn: []string{"db-1"}}, {Name: "db-1", DependsOn: []string{"dc-1"}}, {Name: "dc-1", DependsOn: []string{"app-1"}}},
			want:  "guests[2].depends_on[0]: dependency cycle: dc-1 → app-1 → db-1 → dc-1\n",
		},
		{
			name:  "guest on itself",
			rules: []GuestRule{{Name: "dc-1", DependsOn: []string{"dc-1"}}},
			want:  "guests[0].depends_on[0]: dependency cycle: dc-1 → dc-1\n",
		},
		{
			name:   "group and guest",
			groups: tiers([]string{"db-1"}),
			rules:  []GuestRule{{Name: "db-1", DependsOn: []string{"web"}}},
			want:   "guests[0].depends_on[0]: dependency cycle: db-1 → web → db-1\n",
		},
		{
			name:   "through an empty group",
			groups: append(tiers([]string{"empty"}), Group{Name: "empty", Select: Selector{Names: []string{"zzz"}}, DependsOn: []string{"web"}}),
			want: "warning: groups[4]: group \"empty\" selects no guest\n" +
				"groups[4].depends_on[0]: dependency cycle: empty → web → empty\n",
		},
		{
			name:   "two cycles",
			groups: tiers([]string{"app"}, []string{"web", "db"}, []string{"app"}),
			want: "groups[1].depends_on[0]: dependency cycle: app → web → app\n" +
				"groups[2].depends_on[0]: dependency cycle: db → app → db\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := oneTarget(guests...)
			spec.Groups, spec.Guests = tc.groups, tc.rules
			p, probs := Build(spec)
			if got := problemsText(probs); got != tc.want {
				t.Errorf("problems:\n%s\nwant:\n%s", got, tc.want)
			}
			checkPlan(t, p) // the cycle is broken: a valid DAG remains
			checkSchedule(t, p, p.Estimate(p.Caps))
		})
	}
}

func TestSuggestions(t *testing.T) {
	for _, tc := range []struct {
		s     string
		cands []string
		want  string
	}{
		{"dbb", []string{"db", "dc", "web"}, ` (did you mean "db"?)`},
		{"wbe", []string{"db", "web"}, ` (did you mean "web"?)`},
		{"frontend", []string{"db", "web"}, ""},
		{"app-01", []string{"app-1", "app-10"}, ` (did you mean "app-1"?)`},
		{"x", nil, ""},
	} {
		if got := suggest(tc.s, tc.cands); got != tc.want {
			t.Errorf("suggest(%q) = %q, want %q", tc.s, got, tc.want)
		}
	}
}

func TestProblemOrder(t *testing.T) {
	ps := []Problem{
		{Path: "hooks[0].name"}, {Path: "groups[10].name"}, {Path: "groups[2].depends_on[0]"},
		{Path: "groups[2].chain"}, {Path: "groups[2]"}, {Path: "targets[1].target"}, {Path: "self.vm_uuid"},
		{Path: "guests[0].name"}, {Path: "default_chain"}, {Path: "groups[2].name"},
	}
	sortProblems(ps)
	var got []string
	for _, p := range ps {
		got = append(got, p.Path)
	}
	want := "targets[1].target self.vm_uuid default_chain groups[2] groups[2].name groups[2].chain groups[2].depends_on[0] groups[10].name guests[0].name hooks[0].name"
	if strings.Join(got, " ") != want {
		t.Errorf("order:\n%s\nwant:\n%s", strings.Join(got, " "), want)
	}
}

func TestParseActionKind(t *testing.T) {
	for _, k := range []ActionKind{Shutdown, Suspend, PowerOff, Skip} {
		if got, err := ParseActionKind(k.String()); err != nil || got != k {
			t.Errorf("ParseActionKind(%q) = %v, %v", k, got, err)
		}
	}
	if _, err := ParseActionKind("halt"); err == nil {
		t.Error("halt accepted")
	}
	if got := chain(Shutdown, 120*s, PowerOff, 1500*time.Millisecond, Skip, time.Duration(0)).String(); got != "shutdown 120s → poweroff 1.5s → skip" {
		t.Errorf("chain string %q", got)
	}
}
