package policy

import (
	"strconv"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/power"
)

// track feeds a tracker readings of "STATUS charge runtime" at offsets and
// returns the state after each.
func track(t *testing.T, name string, steps []struct {
	at     time.Duration
	status string
	charge float64
}) []power.State {
	t.Helper()
	tr := power.NewTracker(name, power.TrackerOptions{})
	var out []power.State
	for _, st := range steps {
		r, problems := power.ReadingFromVars(at(st.at), map[string]string{
			"ups.status": st.status, "battery.charge": ftoa(st.charge), "battery.runtime": "1200", "ups.load": "20",
		})
		if len(problems) > 0 {
			t.Fatalf("reading: %v", problems)
		}
		tr.Observe(r)
		out = append(out, tr.State())
	}
	return out
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func TestRestoreReady(t *testing.T) {
	cfg := oneUPS(Config{})
	rule := RestoreRule{After: 300 * s, MinCharge: 50}
	states := track(t, "main", []struct {
		at     time.Duration
		status string
		charge float64
	}{
		{0, "OB DISCHRG", 40},
		{100 * s, "OL CHRG", 41}, // mains back
		{350 * s, "OL CHRG", 45}, // 250 s on line
		{450 * s, "OL CHRG", 49}, // long enough, charge too low
		{500 * s, "OL CHRG", 60},
	})
	cases := []struct {
		state power.State
		now   time.Duration
		ok    bool
		why   string
	}{
		{states[0], 0, false, "UPS main: not on line power (OB DISCHRG)"},
		{states[1], 100 * s, false, "UPS main: on line power for 0 s of 300 s"},
		{states[2], 350 * s, false, "UPS main: on line power for 250 s of 300 s"},
		{states[3], 450 * s, false, "UPS main: battery charge 49 % below 50 %"},
		{states[4], 500 * s, true, "every UPS on line power for 300 s or more"},
	}
	for i, c := range cases {
		ok, why := RestoreReady(cfg, rule, []power.State{c.state}, at(c.now))
		if ok != c.ok || why != c.why {
			t.Errorf("step %d: %v %q, want %v %q", i, ok, why, c.ok, c.why)
		}
	}
	// A UPS that went silent is not "on line".
	silent := states[4]
	silent.Comm = power.CommLost
	if ok, _ := RestoreReady(cfg, rule, []power.State{silent}, at(600*s)); ok {
		t.Error("restore allowed with the UPS unreachable")
	}
	// A monitored-only UPS (power value 0) does not hold the restore back.
	cfg2 := cfg
	cfg2.UPS = append(cfg2.UPS, UPSRule{Name: "lab", PowerValue: 0})
	lab := state("lab", "OB", at(0), 100*s)
	if ok, why := RestoreReady(cfg2, rule, []power.State{states[4], lab}, at(500*s)); !ok {
		t.Errorf("a power-value-0 UPS on battery held the restore back: %s", why)
	}
}

func TestShedDue(t *testing.T) {
	cfg := oneUPS(Config{Debounce: 3 * s})
	ob := state("main", "OB DISCHRG", at(0), 1500*s)
	ob.Charge = 80
	for _, c := range []struct {
		rule ShedRule
		now  time.Duration
		ok   bool
		why  string
	}{
		{ShedRule{After: 60 * s}, 2 * s, false, ""}, // inside the debounce
		{ShedRule{After: 60 * s}, 59 * s, false, ""},
		{ShedRule{After: 60 * s}, 60 * s, true, "UPS main on battery for 60 s (stage after 60 s)"},
		{ShedRule{BelowCharge: 90}, 5 * s, true, "UPS main on battery with charge 80 % < 90 %"},
		{ShedRule{BelowCharge: 50}, 5 * s, false, ""},
		{ShedRule{BelowRuntime: 30 * time.Minute}, 5 * s, true, "UPS main on battery with runtime 1500 s < 1800 s"},
		{ShedRule{BelowCharge: 90}, 1 * s, false, ""}, // a blip sheds nothing
	} {
		ok, why := ShedDue(cfg, c.rule, []power.State{ob}, at(c.now))
		if ok != c.ok || why != c.why {
			t.Errorf("%+v at %v: %v %q, want %v %q", c.rule, c.now, ok, why, c.ok, c.why)
		}
	}
	ol := state("main", "OL", at(0), 1500*s)
	if ok, _ := ShedDue(cfg, ShedRule{After: 1}, []power.State{ol}, at(100*s)); ok {
		t.Error("shed on line power")
	}
}
