package policy

import (
	"strings"
	"testing"
	"time"
)

const never = time.Duration(-1)

// TestTimelines runs whole outages through power.Tracker and Decide with
// injected time. Each case reads "X at t=… ⇒ shutdown at t=…".
func TestTimelines(t *testing.T) {
	tests := []struct {
		name  string
		sim   sim
		want  time.Duration // first Shutdown, or never
		check func(t *testing.T, r result)
	}{
		{
			name: "OB+LB at t=10s ⇒ shutdown at t=10s",
			sim: sim{cfg: oneUPS(Config{}), end: 30 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(ol())},
				phase{10 * s, always(st("OB LB", 3000))},
			)}}},
			want: 10 * s,
			check: func(t *testing.T, r result) {
				if got := r.first.String(); got != "shutdown: UPS main: on battery with low battery (LB)" {
					t.Errorf("String = %q", got)
				}
			},
		},
		{
			name: "FSD while OL at t=5s ⇒ shutdown at t=5s",
			sim: sim{cfg: oneUPS(Config{}), end: 20 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(ol())},
				phase{5 * s, always(st("FSD OL", 3000))},
			)}}},
			want: 5 * s,
			check: func(t *testing.T, r result) {
				if got := r.first.String(); got != "shutdown: UPS main: forced shutdown (FSD) is set" {
					t.Errorf("String = %q", got)
				}
			},
		},
		{
			// The upsmon 2.8.1 regression: a UPS on battery whose comm
			// dropped briefly was declared dead at once, before DEADTIME.
			name: "OB, comm lost for 4 s (t=10s..13s), Deadtime 15s ⇒ no shutdown",
			sim: sim{cfg: oneUPS(Config{}), plan: 300 * s, end: 120 * s, ups: []upsFeed{{"main", phases(
				phase{0, draining("OB DISCHRG", 3000)},
				phase{10 * s, always(lost())},
				phase{14 * s, draining("OB DISCHRG", 2986)},
			)}}},
			want: never,
			check: func(t *testing.T, r result) {
				d := r.at(10 * s) // last seen at 9 s: 14 s of deadtime left
				if d.Kind != Warn || d.ETA != 14*s || d.ETAIf != "it stays silent" ||
					d.ETAReason != "UPS main: silent for 1 s, last seen on battery, deadtime 15 s" {
					t.Errorf("at 10 s: %v (ETA %v)", d, d.ETA)
				}
				if d := r.at(13 * s); d.ETA != 11*s {
					t.Errorf("at 13 s: ETA %v, want 11 s", d.ETA)
				}
				if d := r.at(14 * s); d.Kind != Warn || d.ETA != 2986*s-420*s {
					t.Errorf("at 14 s, back: %v (ETA %v)", d, d.ETA)
				}
			},
		},
		{
			name: "OB, comm lost from t=10s (last seen t=9.9s), Deadtime 15s ⇒ shutdown at t=24.9s, not a tick earlier",
			sim: sim{cfg: oneUPS(Config{}), step: 100 * time.Millisecond, end: 40 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(ob(3000))},
				phase{10 * s, always(lost())},
			)}}},
			want: 24*s + 900*time.Millisecond,
			check: func(t *testing.T, r result) {
				want := "shutdown: UPS main: no data for 15 s (comm lost: dial tcp 127.0.0.1:3493: connection refused), deadtime 15 s, last seen on battery"
				if got := r.first.String(); got != want {
					t.Errorf("String = %q\nwant       %q", got, want)
				}
				if d := r.at(24*s + 800*time.Millisecond); d.Kind != Warn || d.ETA != 100*time.Millisecond {
					t.Errorf("a tick before: %v (ETA %v)", d, d.ETA)
				}
			},
		},
		{
			name: "OL, comm lost from t=10s for an hour ⇒ warn only",
			sim: sim{cfg: oneUPS(Config{}), step: 10 * s, end: 3610 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(ol())},
				phase{10 * s, always(lost())},
			)}}},
			want: never,
			check: func(t *testing.T, r result) {
				d := r.at(3610 * s)
				want := "warn: UPS main: no data for 3610 s (comm lost: dial tcp 127.0.0.1:3493: connection refused); last seen on line power, still counted as supplying"
				if d.Kind != Warn || d.ETA != -1 || d.String() != want || d.Supply != 1 || !d.UPS[0].Supplying {
					t.Errorf("after an hour: %q (ETA %v)\nwant %q", d, d.ETA, want)
				}
			},
		},
		{
			name: "OB, DATA-STALE from t=10s (last seen t=9s) ⇒ shutdown at t=24s",
			sim: sim{cfg: oneUPS(Config{}), end: 40 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(ob(3000))},
				phase{10 * s, always(stale())},
			)}}},
			want: 24 * s,
			check: func(t *testing.T, r result) {
				if got := r.first.Reasons[0]; !strings.Contains(got, "data stale: ERR DATA-STALE") {
					t.Errorf("reason %q", got)
				}
			},
		},
		{
			name: "OB/OL flapping every 2 s for 10 min, OnBatteryDelay 30s ⇒ never",
			sim: sim{cfg: oneUPS(Config{OnBatteryDelay: 30 * s}), end: 600 * s, ups: []upsFeed{{"main", func(t time.Duration) obs {
				if (t/(2*s))%2 == 1 {
					return ob(2000)
				}
				return ol()
			}}}},
			want: never,
		},
		{
			name: "OB/OL flapping every 2 s for 10 min, OnBatteryDelay 30s, no debounce ⇒ never",
			sim: sim{cfg: oneUPS(Config{OnBatteryDelay: 30 * s, Debounce: -1}), step: 500 * time.Millisecond, end: 600 * s, ups: []upsFeed{{"main", func(t time.Duration) obs {
				if (t/(2*s))%2 == 1 {
					return ob(2000)
				}
				return ol()
			}}}},
			want: never,
		},
		{
			name: "OB from t=5s, OnBatteryDelay 30s ⇒ shutdown at t=35s",
			sim: sim{cfg: oneUPS(Config{OnBatteryDelay: 30 * s}), end: 60 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(ol())},
				phase{5 * s, always(ob(3000))},
			)}}},
			want: 35 * s,
			check: func(t *testing.T, r result) {
				for tt := 5 * s; tt < 35*s; tt += s {
					if d := r.at(tt); d.Kind != Warn || d.ETA != 35*s-tt {
						t.Errorf("t=%v: %v, ETA %v, want %v", tt, d.Kind, d.ETA, 35*s-tt)
					}
				}
				if got := r.first.String(); got != "shutdown: UPS main: on battery for 30 s (on-battery delay 30 s)" {
					t.Errorf("String = %q", got)
				}
			},
		},
		{
			name: "OB from t=5s, OL at t=34s (t0+29s), OnBatteryDelay 30s ⇒ cancelled, never",
			sim: sim{cfg: oneUPS(Config{OnBatteryDelay: 30 * s}), end: 120 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(ol())},
				phase{5 * s, always(ob(3000))},
				phase{34 * s, always(ol())},
				phase{60 * s, always(ob(3000))}, // a new spell starts its own 30 s
			)}}},
			want: 90 * s,
			check: func(t *testing.T, r result) {
				if d := r.at(34 * s); d.Kind != None || d.ETA != -1 || d.String() != "ok" {
					t.Errorf("back on mains: %v (ETA %v)", d, d.ETA)
				}
			},
		},
		{
			name: "runtime 500 s falling 1 s/s from t=0, plan 300s + margin 120s ⇒ ETA 80 s, shutdown at the first reading below 420 s (t=81s)",
			sim: sim{cfg: oneUPS(Config{}), plan: 300 * s, end: 100 * s, ups: []upsFeed{{"main", phases(
				phase{0, draining("OB DISCHRG", 500)},
			)}}},
			want: 81 * s,
			check: func(t *testing.T, r result) {
				for tt := time.Duration(0); tt <= 80*s; tt += s {
					if d := r.at(tt); d.Kind != Warn || tt+d.ETA != 80*s {
						t.Errorf("t=%v: %v, predicted shutdown at %v, want 80 s", tt, d.Kind, tt+d.ETA)
					}
				}
				want := "warn, shutdown in 80 s if power stays out: UPS main: runtime 500 s, budget plan 300 s (from config) + margin 120 s; UPS main: on battery for 0 s (charge 97 %, runtime 500 s)"
				if got := r.at(0).String(); got != want {
					t.Errorf("t=0: %q\nwant %q", got, want)
				}
				if got := r.first.String(); got != "shutdown: UPS main: runtime 419 s < plan 300 s (from config) + margin 120 s" {
					t.Errorf("String = %q", got)
				}
			},
		},
		{
			name: "OB blip of 1 s at t=10s with runtime 100 s ⇒ no shutdown (debounce 3 s)",
			sim: sim{cfg: oneUPS(Config{}), plan: 300 * s, end: 30 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(ol())},
				phase{10 * s, always(ob(100))},
				phase{11 * s, always(ol())},
			)}}},
			want: never,
			check: func(t *testing.T, r result) {
				d := r.at(10 * s)
				if d.Kind != Warn || d.ETA != 3*s || !strings.Contains(d.ETAReason, "once on battery for 3 s (debounce)") {
					t.Errorf("during the blip: %v (ETA %v)", d, d.ETA)
				}
			},
		},
		{
			name: "OB at t=10s with runtime 100 s, staying ⇒ shutdown at t=13s, after the debounce",
			sim: sim{cfg: oneUPS(Config{}), plan: 300 * s, end: 30 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(ol())},
				phase{10 * s, always(ob(100))},
			)}}},
			want: 13 * s,
		},
		{
			name: "OB+LB blip of 1 s at t=10s ⇒ shutdown at t=10s (LB is not debounced)",
			sim: sim{cfg: oneUPS(Config{}), end: 30 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(ol())},
				phase{10 * s, always(st("OB LB", 100))},
				phase{11 * s, always(ol())},
			)}}},
			want: 10 * s,
		},
		{
			name: "two UPSes (power value 1 each), MinSupplies 2: a OB+LB at t=10s ⇒ shutdown at t=10s",
			sim: sim{cfg: Config{UPS: []UPSRule{NewUPSRule("a"), NewUPSRule("b")}, MinSupplies: 2}, end: 30 * s, ups: []upsFeed{
				{"a", phases(phase{0, always(ol())}, phase{10 * s, always(st("OB LB", 100))})},
				{"b", phases(phase{0, always(ol())})},
			}},
			want: 10 * s,
			check: func(t *testing.T, r result) {
				if got := r.first.String(); got != "shutdown: UPS a: on battery with low battery (LB); supply 1 < min supplies 2" {
					t.Errorf("String = %q", got)
				}
				if v := r.first.UPS; !v[0].Critical || v[0].Supplying || v[1].Critical || !v[1].Supplying {
					t.Errorf("verdicts %+v", v)
				}
			},
		},
		{
			name: "two UPSes, MinSupplies 1: a OB+LB at t=10s ⇒ warn; b OB+LB at t=20s ⇒ shutdown at t=20s",
			sim: sim{cfg: Config{UPS: []UPSRule{NewUPSRule("a"), NewUPSRule("b")}}, end: 30 * s, ups: []upsFeed{
				{"a", phases(phase{0, always(ol())}, phase{10 * s, always(st("OB LB", 3000))})},
				{"b", phases(phase{0, always(ol())}, phase{20 * s, always(st("OB LB", 3000))})},
			}},
			want: 20 * s,
			check: func(t *testing.T, r result) {
				d := r.at(10 * s)
				want := "warn: UPS a: on battery with low battery (LB); supply 1 still covers min supplies 1"
				if d.Kind != Warn || d.String() != want || d.Supply != 1 {
					t.Errorf("one down: %q\nwant %q", d, want)
				}
				if got := r.first.String(); got != "shutdown: UPS a: on battery with low battery (LB); UPS b: on battery with low battery (LB); supply 0 < min supplies 1" {
					t.Errorf("String = %q", got)
				}
			},
		},
		{
			name: "two UPSes on battery, MinSupplies 1: ETA is when the second runs short",
			sim: sim{cfg: Config{UPS: []UPSRule{NewUPSRule("a"), NewUPSRule("b")}}, plan: 300 * s, end: 400 * s, ups: []upsFeed{
				{"a", phases(phase{0, draining("OB", 600)})}, // short at 180 s
				{"b", phases(phase{0, draining("OB", 800)})}, // short at 380 s
			}},
			want: 381 * s,
			check: func(t *testing.T, r result) {
				d := r.at(0)
				if d.ETA != 380*s || !strings.HasPrefix(d.ETAReason, "UPS b: runtime 800 s") {
					t.Errorf("t=0: ETA %v (%s)", d.ETA, d.ETAReason)
				}
				if d := r.at(200 * s); d.Kind != Warn || d.ETA != 180*s || !d.UPS[0].Critical {
					t.Errorf("t=200s: %v ETA %v", d, d.ETA)
				}
			},
		},
		{
			name: "OFF from t=10s, OffGrace 30s ⇒ shutdown at t=40s",
			sim: sim{cfg: oneUPS(Config{}), end: 60 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(ol())},
				phase{10 * s, always(st("OFF", 3000))},
			)}}},
			want: 40 * s,
			check: func(t *testing.T, r result) {
				if d := r.at(25 * s); d.Kind != Warn || d.ETA != 15*s || d.ETAIf != "it stays OFF" {
					t.Errorf("t=25s: %v ETA %v", d, d.ETA)
				}
				if got := r.first.String(); got != "shutdown: UPS main: OFF for 30 s (grace 30 s): not supplying power" {
					t.Errorf("String = %q", got)
				}
			},
		},
		{
			name: "OFF for 5 s during a calibration start ⇒ never",
			sim: sim{cfg: oneUPS(Config{}), end: 120 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(ol())},
				phase{10 * s, always(st("OFF", 3000))},
				phase{15 * s, draining("OB CAL", 1000)},
				phase{100 * s, always(ol())},
			)}}},
			want: never,
		},
		{
			name: "OFF with OffGrace disabled ⇒ never",
			sim: sim{cfg: Config{UPS: []UPSRule{{Name: "main", PowerValue: 1, OffGrace: -1}}}, end: 120 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(ol())},
				phase{10 * s, always(st("OFF", 3000))},
			)}}},
			want: never,
		},
		{
			name: "latch: OB+LB at t=10s ⇒ shutdown; mains back at t=11s ⇒ still shutdown, same At",
			sim: sim{cfg: oneUPS(Config{}), end: 60 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(ol())},
				phase{10 * s, always(st("OB LB", 100))},
				phase{11 * s, always(ol())},
			)}}},
			want: 10 * s,
			check: func(t *testing.T, r result) {
				last := r.at(60 * s)
				if last.Kind != Shutdown || !last.At.Equal(at(10*s)) || !equalDecision(last, r.first) {
					t.Errorf("after mains returned: %v at %v", last, last.At.Sub(t0))
				}
			},
		},
		{
			name: "calibration: OB CAL with runtime draining to 0 and LB ⇒ never (battery rules suspended)",
			sim: sim{cfg: oneUPS(Config{OnBatteryDelay: 10 * s}), plan: 300 * s, end: 200 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(ol())},
				phase{10 * s, draining("OB CAL", 150)},
				phase{150 * s, always(st("OB CAL LB", 10))},
				phase{170 * s, always(ol())},
			)}}},
			want: never,
		},
		{
			name: "calibrating, then silent past deadtime ⇒ shutdown (upsmon parity)",
			sim: sim{cfg: oneUPS(Config{}), end: 60 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(st("OB CAL", 1000))},
				phase{10 * s, always(lost())},
			)}}},
			want: 24 * s,
		},
		{
			name: "on bypass, then silent past deadtime ⇒ shutdown (upsmon parity)",
			sim: sim{cfg: oneUPS(Config{}), end: 60 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(st("OL BYPASS", 1000))},
				phase{10 * s, always(lost())},
			)}}},
			want: 24 * s,
		},
		{
			name: "ALARM while OB with AlarmCritical ⇒ shutdown at once",
			sim: sim{cfg: Config{UPS: []UPSRule{{Name: "main", PowerValue: 1, AlarmCritical: true}}}, end: 30 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(ol())},
				phase{5 * s, always(obs{status: "OB ALARM", runtime: 3000, charge: 97, alarm: "Battery fault"})},
			)}}},
			want: 5 * s,
			check: func(t *testing.T, r result) {
				if got := r.first.String(); got != "shutdown: UPS main: alarm while on battery: Battery fault" {
					t.Errorf("String = %q", got)
				}
			},
		},
		{
			name: "ALARM while OB without AlarmCritical ⇒ warn only",
			sim: sim{cfg: oneUPS(Config{}), end: 30 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(ol())},
				phase{5 * s, always(obs{status: "OB ALARM", runtime: 3000, charge: 97, alarm: "Battery fault"})},
			)}}},
			want: never,
		},
		{
			name: "ALARM while OL with AlarmCritical, then silent past deadtime ⇒ shutdown",
			sim: sim{cfg: Config{UPS: []UPSRule{{Name: "main", PowerValue: 1, AlarmCritical: true}}}, end: 60 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(obs{status: "OL ALARM", runtime: 3000, charge: 97, alarm: "Overheat"})},
				phase{10 * s, always(lost())},
			)}}},
			want: 24 * s,
		},
		{
			name: "MinCharge 40 %: OB with charge 30 % at t=10s ⇒ shutdown at t=13s",
			sim: sim{cfg: Config{UPS: []UPSRule{{Name: "main", PowerValue: 1, MinCharge: 40}}}, end: 30 * s, ups: []upsFeed{{"main", phases(
				phase{0, always(ol())},
				phase{10 * s, always(obs{status: "OB", runtime: 3000, charge: 30})},
			)}}},
			want: 13 * s,
			check: func(t *testing.T, r result) {
				if got := r.first.String(); got != "shutdown: UPS main: charge 30 % < minimum 40 %" {
					t.Errorf("String = %q", got)
				}
			},
		},
		{
			name: "MinRuntime 600 s: OB with runtime 700 s falling ⇒ shutdown at t=101s",
			sim: sim{cfg: Config{UPS: []UPSRule{{Name: "main", PowerValue: 1, MinRuntime: 600 * s}}}, end: 120 * s, ups: []upsFeed{{"main", phases(
				phase{0, draining("OB", 700)},
			)}}},
			want: 101 * s,
			check: func(t *testing.T, r result) {
				if d := r.at(0); d.ETA != 100*s || d.ETAReason != "UPS main: runtime 700 s, minimum 600 s" {
					t.Errorf("t=0: ETA %v %q", d.ETA, d.ETAReason)
				}
				if got := r.first.String(); got != "shutdown: UPS main: runtime 599 s < minimum 600 s" {
					t.Errorf("String = %q", got)
				}
			},
		},
		{
			name: "a UPS never reached ⇒ warn for an hour, never a shutdown",
			sim:  sim{cfg: oneUPS(Config{}), step: 60 * s, end: 3600 * s, ups: []upsFeed{{"main", phases(phase{0, always(lost())})}}},
			want: never,
			check: func(t *testing.T, r result) {
				want := "warn: UPS main: never reached (lost: dial tcp 127.0.0.1:3493: connection refused); counted as supplying until it answers"
				if got := r.at(3600 * s).String(); got != want {
					t.Errorf("String = %q\nwant %q", got, want)
				}
			},
		},
		{
			name: "monitored-only UPS (power value 0) OB+LB ⇒ warn, never a shutdown",
			sim: sim{cfg: Config{UPS: []UPSRule{NewUPSRule("main"), {Name: "lab", PowerValue: 0}}}, end: 30 * s, ups: []upsFeed{
				{"main", phases(phase{0, always(ol())})},
				{"lab", phases(phase{0, always(ol())}, phase{10 * s, always(st("OB LB", 10))})},
			}},
			want: never,
			check: func(t *testing.T, r result) {
				d := r.at(10 * s)
				if d.Kind != Warn || d.Reasons[0] != "UPS lab (monitored only): on battery with low battery (LB)" {
					t.Errorf("%q", d)
				}
				if v := d.UPS[1]; !v.Critical || v.Supplying || v.PowerValue != 0 {
					t.Errorf("verdict %+v", v)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.sim.run(t)
			if r.shutdownAt != tt.want {
				last := r.points[len(r.points)-1].d
				t.Fatalf("shutdown at %v, want %v (first: %v; last: %v)", r.shutdownAt, tt.want, r.first, last)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}
