package policy

import (
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/power"
)

// FuzzDecide feeds arbitrary states and settings: Decide must not panic, and
// its invariants must hold.
func FuzzDecide(f *testing.F) {
	f.Add("OB LB", int64(300), int64(10), int64(2), uint8(1), int64(0), int64(30), 1, 1, false)
	f.Add("OL", int64(-1), int64(0), int64(0), uint8(3), int64(-5), int64(0), 0, 0, true)
	f.Add("OB CAL OFF ALARM FSD", int64(1<<40), int64(-7), int64(1<<50), uint8(2), int64(1<<62), int64(-1), -3, 5, true)
	f.Fuzz(func(t *testing.T, status string, runtimeS, ageS, obForS int64, comm uint8, deadtimeS, delayS int64, pv, minSupplies int, alarmCrit bool) {
		now := t0.Add(time.Hour)
		st, unknown := power.ParseStatus(status)
		seen := now.Add(-time.Duration(ageS) * time.Second)
		s := power.State{
			Name: "a", Status: st, Unknown: unknown, Charge: float64(runtimeS % 101), Runtime: time.Duration(runtimeS) * time.Second,
			Load: -1, Comm: power.Comm(comm % 5), LastSeen: seen, FirstSeen: seen,
			OBSince: now.Add(-time.Duration(obForS) * time.Second), OffSince: seen, AlarmSince: seen,
		}
		if comm%7 == 6 {
			s.LastSeen = time.Time{}
		}
		cfg := Config{
			UPS: []UPSRule{
				{Name: "a", PowerValue: pv, Deadtime: time.Duration(deadtimeS) * time.Second, AlarmCritical: alarmCrit, MinCharge: 50, MinRuntime: time.Minute},
				NewUPSRule("b"),
			},
			MinSupplies:    minSupplies,
			OnBatteryDelay: time.Duration(delayS) * time.Second,
		}
		in := Input{Now: now, States: []power.State{s}, PlanDuration: time.Duration(runtimeS) * time.Millisecond, PlanSource: status}
		d := Decide(cfg, in, Decision{})
		switch {
		case d.Kind == Shutdown && (d.ETA != 0 || !d.At.Equal(now) || len(d.Reasons) == 0):
			t.Fatalf("bad shutdown decision %#v", d)
		case d.Kind != Shutdown && (d.ETA < -1 || !d.At.IsZero()):
			t.Fatalf("bad decision %#v", d)
		case d.Kind == Warn && len(d.Reasons) == 0:
			t.Fatalf("warn without reasons %#v", d)
		case len(d.UPS) != 2:
			t.Fatalf("verdicts %#v", d.UPS)
		}
		if d.String() == "" {
			t.Fatal("empty String")
		}
		if d.Kind == Shutdown {
			if again := Decide(Config{}, Input{}, d); !equalDecision(again, d) {
				t.Fatal("latch broken")
			}
		}
	})
}
