package policy

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/power"
)

// state builds a power.State seen at lastSeen (comm OK unless changed).
func state(name, status string, lastSeen time.Time, runtime time.Duration) power.State {
	stt, _ := power.ParseStatus(status)
	s := power.State{
		Name: name, Status: stt, Charge: 97, Runtime: runtime, Load: 30,
		Comm: power.CommOK, FirstSeen: lastSeen, LastSeen: lastSeen, Since: lastSeen, CommSince: lastSeen,
	}
	if stt.Has(power.OB) {
		s.OBSince = lastSeen
	}
	if stt.Has(power.OFF) {
		s.OffSince = lastSeen
	}
	return s
}

func decide(cfg Config, now time.Time, states ...power.State) Decision {
	return Decide(cfg, Input{Now: now, States: states, PlanDuration: 300 * s}, Decision{ETA: -1})
}

func TestLatch(t *testing.T) {
	cfg := oneUPS(Config{})
	prev := decide(cfg, at(10*s), state("main", "OB LB", at(0), 100*s))
	if prev.Kind != Shutdown || !prev.At.Equal(at(10*s)) || prev.ETA != 0 {
		t.Fatalf("prev = %v", prev)
	}
	for _, in := range []Input{
		{Now: at(11 * s), States: []power.State{state("main", "OL", at(11*s), 3000*s)}},
		{Now: at(3600 * s)},
		{},
	} {
		if d := Decide(cfg, in, prev); !reflect.DeepEqual(d, prev) {
			t.Errorf("latch broken: %v", d)
		}
		if d := Decide(Config{}, in, prev); !reflect.DeepEqual(d, prev) {
			t.Errorf("latch broken with another config: %v", d)
		}
	}
}

func TestDeadtimeBoundary(t *testing.T) {
	cfg := oneUPS(Config{})
	s0 := state("main", "OB", at(0), 3000*s)
	s0.Comm, s0.CommErr = power.CommLost, "EOF"
	if d := decide(cfg, at(15*s-1), s0); d.Kind != Warn || d.ETA != 1 {
		t.Errorf("1 ns before deadtime: %v (ETA %v)", d, d.ETA)
	}
	if d := decide(cfg, at(15*s), s0); d.Kind != Shutdown {
		t.Errorf("at deadtime: %v", d)
	}
	// Deadtime < 0 means at once.
	cfg.UPS[0].Deadtime = -1
	if d := decide(cfg, at(0), s0); d.Kind != Shutdown {
		t.Errorf("negative deadtime: %v", d)
	}
	// ... but with comm OK, Deadtime 0 does not make every reading stale.
	if d := decide(cfg, at(5*s), state("main", "OB", at(0), 3000*s)); d.Kind != Warn {
		t.Errorf("negative deadtime, comm OK: %v", d)
	}
}

func TestSilentWhileCommOK(t *testing.T) {
	// The poll loop stopped feeding the tracker: Comm still says OK but the
	// last reading is older than Deadtime. That is silence too.
	cfg := oneUPS(Config{})
	d := decide(cfg, at(15*s), state("main", "OB", at(0), 3000*s))
	if d.Kind != Shutdown || d.Reasons[0] != "UPS main: no data for 15 s (no reading), deadtime 15 s, last seen on battery" {
		t.Errorf("OB: %v", d)
	}
	d = decide(cfg, at(15*s), state("main", "OL", at(0), 3000*s))
	if d.Kind != Warn || d.Reasons[0] != "UPS main: no data for 15 s (no reading); last seen on line power, still counted as supplying" {
		t.Errorf("OL: %v", d)
	}
}

func TestRuntimeBudgetMessages(t *testing.T) {
	cfg := oneUPS(Config{})
	// The example of the brief: no plan source given.
	s0 := state("main", "OB", at(10*s), 280*s)
	s0.OBSince = at(0)
	d := Decide(cfg, Input{Now: at(10 * s), PlanDuration: 300 * s, States: []power.State{s0}}, Decision{})
	if got := d.String(); got != "shutdown: UPS main: runtime 280 s < plan 300 s + margin 120 s" {
		t.Errorf("String = %q", got)
	}
	// Runtime read 10 s ago is projected down.
	s1 := state("main", "OB", at(10*s), 425*s)
	s1.OBSince = at(0)
	d = Decide(cfg, Input{Now: at(20 * s), PlanDuration: 300 * s, PlanSource: "plan estimate", States: []power.State{s1}}, Decision{})
	if got := d.String(); got != "shutdown: UPS main: runtime 415 s (projected from 425 s read 10 s ago) < plan 300 s (from plan estimate) + margin 120 s" {
		t.Errorf("String = %q", got)
	}
	// No margin: 280 s < plan 300 s + 0 s.
	cfg.RuntimeMargin = -1
	if d := decide(cfg, at(10*s), s0); d.String() != "shutdown: UPS main: runtime 280 s < plan 300 s + margin 0 s" {
		t.Errorf("no margin: %v", d)
	}
	// Unknown runtime: the budget cannot be checked, say so.
	d = decide(oneUPS(Config{}), at(10*s), state("main", "OB", at(10*s), -1))
	if d.Kind != Warn || !slices.Contains(d.Reasons, "UPS main: battery.runtime unknown: the runtime budget cannot be checked") {
		t.Errorf("unknown runtime: %q", d.Reasons)
	}
}

func TestMinRuntimeDebounce(t *testing.T) {
	cfg := Config{UPS: []UPSRule{{Name: "main", PowerValue: 1, MinRuntime: 600 * s}}}
	s0 := state("main", "OB", at(10*s), 500*s) // just went on battery: debounce runs
	d := decide(cfg, at(11*s), s0)
	if d.Kind != Warn || d.ETA != 2*s {
		t.Errorf("during debounce: %v (ETA %v)", d, d.ETA)
	}
	if d := decide(cfg, at(13*s), s0); d.Kind != Shutdown {
		t.Errorf("after debounce: %v", d)
	}
}

func TestNeverReached(t *testing.T) {
	cfg := oneUPS(Config{})
	d := decide(cfg, at(0))
	if d.Kind != Warn || d.String() != "warn: UPS main: never reached (no answer yet); counted as supplying until it answers" {
		t.Errorf("missing state: %q", d)
	}
	st := power.State{Name: "main", Comm: power.CommStale, CommErr: "ERR DATA-STALE", Charge: -1, Runtime: -1}
	d = decide(cfg, at(3600*s), st)
	if d.Kind != Warn || d.Reasons[0] != "UPS main: never reached (stale: ERR DATA-STALE); counted as supplying until it answers" || !d.UPS[0].Supplying {
		t.Errorf("stale: %v", d)
	}
}

func TestWarnings(t *testing.T) {
	cfg := oneUPS(Config{})
	st := state("main", "OL RB OVER BYPASS ALARM CAL", at(0), 3000*s)
	st.Alarm = "Fan failure"
	d := decide(cfg, at(1*s), st)
	want := []string{
		"UPS main: battery needs to be replaced (RB)",
		"UPS main: alarm: Fan failure",
		"UPS main: on bypass: no battery protection",
		"UPS main: calibrating (CAL)",
		"UPS main: overloaded",
	}
	if d.Kind != Warn || !slices.Equal(d.Reasons, want) || d.ETA != -1 {
		t.Errorf("reasons %q, want %q", d.Reasons, want)
	}
	if got := d.String(); got != "warn: "+strings.Join(want, "; ") {
		t.Errorf("String = %q", got)
	}
	st = state("main", "OL ALARM", at(0), 3000*s)
	if d := decide(cfg, at(1*s), st); d.Reasons[0] != "UPS main: alarm: ALARM (no ups.alarm text)" {
		t.Errorf("alarm without text: %q", d.Reasons)
	}
	st = state("main", "OB CAL LB", at(0), 10*s)
	if d := decide(cfg, at(1*s), st); d.Kind != Warn || d.Reasons[0] != "UPS main: calibrating on battery and reports LB; not critical while calibrating (as upsmon)" {
		t.Errorf("OB CAL LB: %v", d)
	}
	st = state("main", "OFF", at(0), 3000*s)
	cfg.UPS[0].OffGrace = -1
	if d := decide(cfg, at(100*s), st); d.Kind != Warn || d.Reasons[0] != "UPS main: reports OFF (the OFF rule is disabled)" {
		t.Errorf("OFF disabled: %v", d)
	}
}

func TestVerdictReasons(t *testing.T) {
	cfg := Config{UPS: []UPSRule{NewUPSRule("a"), NewUPSRule("b"), NewUPSRule("c"), NewUPSRule("d")}}
	c := state("c", "", at(0), -1)
	c.Charge = -1
	d := decide(cfg, at(5*s), state("a", "OL CHRG", at(5*s), 3000*s), state("b", "OB", at(0), 3000*s), c, state("d", "OB LB", at(0), 3000*s))
	want := []Verdict{
		{Name: "a", PowerValue: 1, Supplying: true, Reason: "on line power (charge 97 %, runtime 3000 s)", ETA: -1},
		{Name: "b", PowerValue: 1, Supplying: true, Reason: "on battery for 5 s (charge 97 %, runtime 3000 s)", ETA: 2575 * s}, // 3000 s read 5 s ago, minus the 420 s budget
		{Name: "c", PowerValue: 1, Supplying: true, Reason: "status unknown", ETA: -1},
		{Name: "d", PowerValue: 1, Critical: true, Reason: "on battery with low battery (LB)", ETA: 0},
	}
	if !reflect.DeepEqual(d.UPS, want) {
		t.Errorf("verdicts\n%+v\nwant\n%+v", d.UPS, want)
	}
	if d.Supply != 3 || d.MinSupplies != 1 || d.Kind != Warn {
		t.Errorf("decision %v supply %d/%d", d, d.Supply, d.MinSupplies)
	}
	st := state("e", "OFF", at(0), -1)
	st.Charge = -1
	if got := describe(st); got != "status OFF" {
		t.Errorf("describe = %q", got)
	}
}

func TestStatesMatching(t *testing.T) {
	cfg := oneUPS(Config{})
	// The first state of a name wins; unconfigured UPSes are ignored.
	d := decide(cfg, at(1*s), state("main", "OL", at(1*s), 3000*s), state("main", "OB LB", at(1*s), 1*s), state("other", "OB LB", at(1*s), 1*s))
	if d.Kind != None || len(d.UPS) != 1 || d.String() != "ok" {
		t.Errorf("decision %v", d)
	}
}

func TestUnsatisfiableConfig(t *testing.T) {
	reason := "configuration error: total power value 0 is below min supplies 1; shutting down only when a powering UPS is critical"
	d := decide(Config{}, at(0))
	if d.Kind != Warn || !slices.Equal(d.Reasons, []string{reason}) {
		t.Errorf("no UPS: %v", d)
	}
	d = decide(Config{UPS: []UPSRule{{Name: "lab"}}}, at(10*s), state("lab", "OB LB", at(0), 10*s))
	if d.Kind != Warn || d.Reasons[len(d.Reasons)-1] != reason {
		t.Errorf("monitored only: %v", d)
	}
	cfg := Config{UPS: []UPSRule{NewUPSRule("main")}, MinSupplies: 2}
	d = decide(cfg, at(0), state("main", "OB", at(0), 3000*s))
	if d.Kind != Warn || d.ETA != 2580*s || !strings.Contains(d.String(), "total power value 1 is below min supplies 2") {
		t.Errorf("OB: %v (ETA %v)", d, d.ETA)
	}
	d = decide(cfg, at(0), state("main", "OB LB", at(0), 3000*s))
	if d.Kind != Shutdown || d.String() != "shutdown: UPS main: on battery with low battery (LB); supply 0 < min supplies 2; configuration error: total power value 1 is below min supplies 2; shutting down only when a powering UPS is critical" {
		t.Errorf("OB LB: %v", d)
	}
}

func TestDefaults(t *testing.T) {
	d := Defaults()
	if d.MinSupplies != 1 || d.Debounce != 3*s || d.RuntimeMargin != 120*s || d.OnBatteryDelay != 0 || len(d.UPS) != 0 {
		t.Errorf("Defaults = %+v", d)
	}
	if r := NewUPSRule("main"); r != (UPSRule{Name: "main", PowerValue: 1, Deadtime: 15 * s, OffGrace: 30 * s}) {
		t.Errorf("NewUPSRule = %+v", r)
	}
	in := Config{UPS: []UPSRule{{Name: "a", Deadtime: -1, OffGrace: -1}}, MinSupplies: -3, Debounce: -1, RuntimeMargin: -1, OnBatteryDelay: -5}
	got := in.WithDefaults()
	want := Config{UPS: []UPSRule{{Name: "a", Deadtime: 0, OffGrace: -1}}, MinSupplies: 1}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("WithDefaults = %+v, want %+v", got, want)
	}
	if in.UPS[0].Deadtime != -1 {
		t.Error("WithDefaults must not modify its receiver's rules")
	}
}

func TestCheck(t *testing.T) {
	if p := (Config{UPS: []UPSRule{NewUPSRule("a"), NewUPSRule("b")}, MinSupplies: 2}).Check(); p != nil {
		t.Errorf("good config: %q", p)
	}
	if p := (Config{}).Check(); !slices.Equal(p, []string{"no UPS configured"}) {
		t.Errorf("empty config: %q", p)
	}
	bad := Config{
		UPS: []UPSRule{
			{Name: "a", PowerValue: 1, MinCharge: 120, MinRuntime: -1},
			{Name: "a", PowerValue: -1},
			{PowerValue: 1, MinCharge: -1},
		},
		MinSupplies:    -1,
		OnBatteryDelay: -1,
	}
	want := []string{
		`UPS #1 "a": minimum charge 120 % is outside 0–100`,
		`UPS #1 "a": minimum runtime -1ns is negative`,
		`UPS #2 "a" is listed twice`,
		`UPS #2 "a": power value -1 is negative`,
		`UPS #3 has no name`,
		`UPS #3 "": minimum charge -1 % is outside 0–100`,
		"min supplies -1 is negative",
		"on-battery delay -1ns is negative",
	}
	if p := bad.Check(); !slices.Equal(p, want) {
		t.Errorf("Check =\n%s\nwant\n%s", strings.Join(p, "\n"), strings.Join(want, "\n"))
	}
	if p := (Config{UPS: []UPSRule{{Name: "lab"}}}).Check(); !slices.Equal(p, []string{"total power value 0 is below min supplies 1: the site could never be considered powered"}) {
		t.Errorf("monitored only: %q", p)
	}
}

func TestStrings(t *testing.T) {
	for k, want := range map[Kind]string{None: "none", Warn: "warn", Shutdown: "shutdown", Kind(7): "Kind(7)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d) = %q, want %q", int(k), got, want)
		}
	}
	tests := []struct {
		d    Decision
		want string
	}{
		{Decision{ETA: -1}, "ok"},
		{Decision{Kind: Warn, ETA: 5 * s}, "warn, shutdown in 5 s"},
		{Decision{Kind: Warn, ETA: 5 * s, Reasons: []string{"r"}}, "warn, shutdown in 5 s: r"},
		{Decision{Kind: Warn, ETA: 5 * s, ETAIf: "c", ETAReason: "e", Reasons: []string{"r1", "r2"}}, "warn, shutdown in 5 s if c: e; r1; r2"},
		{Decision{Kind: Shutdown, Reasons: []string{"a", "b"}}, "shutdown: a; b"},
	}
	for _, tt := range tests {
		if got := tt.d.String(); got != tt.want {
			t.Errorf("String = %q, want %q", got, tt.want)
		}
	}
}

func TestDecideIsPure(t *testing.T) {
	cfg := Config{UPS: []UPSRule{{Name: "main", PowerValue: 1}}}
	st := state("main", "OB", at(0), 1000*s)
	in := Input{Now: at(5 * s), States: []power.State{st}, PlanDuration: 300 * s}
	a := Decide(cfg, in, Decision{})
	b := Decide(cfg, in, Decision{Kind: Warn, ETA: 3})
	if !reflect.DeepEqual(a, b) || cfg.UPS[0].Deadtime != 0 {
		t.Errorf("not pure: %v vs %v", a, b)
	}
}

func TestOffThenSilent(t *testing.T) {
	cfg := oneUPS(Config{})
	st := state("main", "OFF", at(0), 3000*s)
	st.Comm, st.CommErr = power.CommLost, "EOF"
	if d := decide(cfg, at(14*s), st); d.Kind != Warn || d.ETA != 1*s {
		t.Errorf("OFF, silent 14 s: %v (ETA %v)", d, d.ETA)
	}
	d := decide(cfg, at(15*s), st)
	if d.Kind != Shutdown || d.Reasons[0] != "UPS main: no data for 15 s (comm lost: EOF), deadtime 15 s, last seen OFF" {
		t.Errorf("OFF, silent 15 s: %v", d)
	}
	// An OFF state without its start time counts the spell as just begun.
	st = state("main", "OFF", at(0), 3000*s)
	st.OffSince = time.Time{}
	if d := decide(cfg, at(1*s), st); d.Kind != Warn || d.ETA != 30*s {
		t.Errorf("OFF without OffSince: %v (ETA %v)", d, d.ETA)
	}
}
