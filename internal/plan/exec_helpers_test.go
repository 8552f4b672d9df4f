package plan

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/fake"
)

// fleetPlan builds the plan of a fake fleet as target "vc" (all guests
// ungrouped, standard chain) and lets mod adjust the spec first.
func fleetPlan(t testing.TB, p *fake.Provider, mod func(*Spec)) *Plan {
	t.Helper()
	inv, err := p.Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{Targets: []TargetInventory{{Target: "vc", Inventory: inv}}, DefaultChain: stdChain}
	if mod != nil {
		mod(&spec)
	}
	pl, probs := Build(spec)
	if HasErrors(probs) {
		t.Fatalf("plan problems:\n%s", problemsText(probs))
	}
	return pl
}

// fleetOf makes a fake fleet of an inventory; guest delays come from fn.
func fleetOf(inv provider.Inventory, fn func(g provider.Guest, gs *fake.GuestSpec)) fake.Fleet {
	var f fake.Fleet
	for _, h := range inv.Hosts {
		f.Hosts = append(f.Hosts, fake.HostSpec{ID: h.ID, Name: h.Name, Power: h.Power, Maintenance: h.Maintenance, UUID: h.UUID})
	}
	for _, g := range inv.Guests {
		gs := fake.GuestSpec{ID: g.ID, Name: g.Name, HostID: g.HostID, Power: g.Power, Tools: g.Tools, UUID: g.UUID, Tags: g.Tags}
		if fn != nil {
			fn(g, &gs)
		}
		f.Guests = append(f.Guests, gs)
	}
	return f
}

// result returns the report's entry for key.
func result(t *testing.T, rep *Report, key string) StepResult {
	t.Helper()
	for _, r := range rep.Steps {
		if r.Key == key {
			return r
		}
	}
	t.Fatalf("no step %s in the report", key)
	return StepResult{}
}

// opsOf filters the fake's log.
func opsOf(p *fake.Provider, op, id string) []fake.Op {
	var out []fake.Op
	for _, o := range p.Ops() {
		if (op == "" || o.Op == op) && (id == "" || o.ID == id) {
			out = append(out, o)
		}
	}
	return out
}

// stateChanging are the provider calls that change something.
var stateChanging = []string{fake.OpShutdownGuest, fake.OpSuspendGuest, fake.OpPowerOffGuest, fake.OpPowerOnGuest,
	fake.OpEnterMaintenance, fake.OpExitMaintenance, fake.OpShutdownHost}

// checkDeps asserts that no step started before all its dependencies ended,
// and, when exact, that each started exactly when the last one ended
// (caps large enough not to delay anything).
func checkDeps(t *testing.T, p *Plan, rep *Report, t0 time.Time, exact bool) {
	t.Helper()
	for i, st := range p.Steps {
		r := rep.Steps[i]
		if r.Outcome == "" {
			t.Errorf("%s: no outcome", st.Key)
			continue
		}
		ready := t0
		for _, d := range st.Deps {
			if e := rep.Steps[d].End; e.After(ready) {
				ready = e
			}
			if r.Start.Before(rep.Steps[d].End) {
				t.Errorf("%s started at %v, before its dependency %s ended at %v", st.Key, r.Start.Sub(t0), p.Steps[d].Key, rep.Steps[d].End.Sub(t0))
			}
		}
		if exact && !r.Start.Equal(ready) {
			t.Errorf("%s started at %v, its dependencies ended at %v", st.Key, r.Start.Sub(t0), ready.Sub(t0))
		}
	}
}

// peak returns the largest number of steps (matching keep) running at once,
// from the report's intervals; zero-length steps are left out.
func peak(rep *Report, keep func(StepResult) bool) int {
	type edge struct {
		at time.Time
		d  int
	}
	var es []edge
	for _, r := range rep.Steps {
		if r.Kind == StepGroup || !r.End.After(r.Start) || !keep(r) {
			continue
		}
		es = append(es, edge{r.Start, +1}, edge{r.End, -1})
	}
	sort.Slice(es, func(i, j int) bool {
		if !es[i].at.Equal(es[j].at) {
			return es[i].at.Before(es[j].at)
		}
		return es[i].d < es[j].d // ends first
	})
	n, m := 0, 0
	for _, e := range es {
		n += e.d
		m = max(m, n)
	}
	return m
}

// readJournal parses a journal file.
func readJournal(t testing.TB, path string) []record {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []record
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("journal line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// syncBuffer is a bytes.Buffer safe for concurrent writers (a log sink).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// eventLog collects events from OnEvent.
type eventLog struct {
	mu  sync.Mutex
	evs []Event
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, e)
}

func (l *eventLog) all() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evs)
}

// siteFleet is a small site for timelines: 3 hosts, 3 tiers (web → app →
// db), guests with shutdown delays from 5 to 60 s, two that ignore shutdown,
// one without tools, one off, one suspended; maintenance (3 s) and host
// shutdown (5 s) on every host; a hook at the start and one before db.
func siteFleet() (fake.Fleet, func(*Spec)) {
	f := fake.Fleet{}
	for _, h := range []string{"h1", "h2", "h3"} {
		f.Hosts = append(f.Hosts, fake.HostSpec{ID: h, Name: "esx-" + h, MaintenanceDelay: 3 * s, ShutdownDelay: 5 * s})
	}
	add := func(id, name, host string, mod func(*fake.GuestSpec)) {
		g := fake.GuestSpec{ID: id, Name: name, HostID: host, ShutdownDelay: 10 * s, PowerOffDelay: time.Second, SuspendDelay: 2 * s}
		if mod != nil {
			mod(&g)
		}
		f.Guests = append(f.Guests, g)
	}
	delays := []time.Duration{5 * s, 12 * s, 20 * s, 33 * s, 41 * s, 60 * s}
	for i := range 6 {
		add("vm-1"+itoa(i), "web-"+itoa(i), []string{"h1", "h2", "h3"}[i%3], func(g *fake.GuestSpec) { g.ShutdownDelay = delays[i] })
		add("vm-2"+itoa(i), "app-"+itoa(i), []string{"h1", "h2", "h3"}[(i+1)%3], func(g *fake.GuestSpec) { g.ShutdownDelay = delays[5-i] })
	}
	for i := range 3 {
		add("vm-3"+itoa(i), "db-"+itoa(i), []string{"h1", "h2", "h3"}[i], func(g *fake.GuestSpec) { g.ShutdownDelay = delays[2*i] })
	}
	add("vm-40", "web-deaf", "h1", func(g *fake.GuestSpec) { g.IgnoreShutdown = true })
	add("vm-41", "app-deaf", "h2", func(g *fake.GuestSpec) { g.IgnoreShutdown = true })
	add("vm-42", "web-notools", "h3", func(g *fake.GuestSpec) { g.Tools = provider.ToolsNotRunning })
	add("vm-43", "app-off", "h1", func(g *fake.GuestSpec) { g.Power = provider.PowerOff })
	add("vm-44", "db-suspended", "h2", func(g *fake.GuestSpec) { g.Power = provider.PowerSuspended })
	mod := func(sp *Spec) {
		sp.Targets[0].Maintenance, sp.Targets[0].ShutdownHosts = true, true
		sp.Targets[0].MaintenanceTimeout, sp.Targets[0].HostShutdownTimeout = 60*s, 30*s
		sp.DefaultChain = chain(Shutdown, 90*s, PowerOff, 30*s)
		sp.Groups = []Group{
			{Name: "web", Select: Selector{Names: []string{"web-*"}}, DependsOn: []string{"app"}},
			{Name: "app", Select: Selector{Names: []string{"app-*"}}, DependsOn: []string{"db"}},
			{Name: "db", Select: Selector{Names: []string{"db-*"}}},
		}
		sp.Hooks = []Hook{{Name: "notify", Timeout: 10 * s}, {Name: "stop-backups", Before: []string{"db"}, Timeout: 20 * s}}
		sp.Caps = Caps{Global: 6, PerHost: 2}
	}
	return f, mod
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}
