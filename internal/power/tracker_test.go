package power

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// step is one input to a Tracker at t0+at, and the event types it must cause.
type step struct {
	at     time.Duration
	status string // a good reading with this ups.status ...
	alarm  string // ... and this ups.alarm
	fail   string // or a failed poll: "lost" or "stale"
	tick   bool   // or a Tick
	want   []EventType
}

const s = time.Second

func reading(d time.Duration, status, alarm string) Reading {
	r, _ := ReadingFromVars(at(d), map[string]string{
		"ups.status": status, "battery.charge": "97", "battery.runtime": "1260", "ups.load": "40", "ups.alarm": alarm,
	})
	return r
}

func run(t *testing.T, tr *Tracker, steps []step) []Event {
	t.Helper()
	var all []Event
	for i, st := range steps {
		var ev []Event
		switch {
		case st.tick:
			ev = tr.Tick(at(st.at))
		case st.fail != "":
			ev = tr.Fail(at(st.at), st.fail == "stale", errors.New("poll failed: "+st.fail))
		default:
			ev = tr.Observe(reading(st.at, st.status, st.alarm))
		}
		var got []EventType
		for _, e := range ev {
			got = append(got, e.Type)
			if e.At != at(st.at) || e.UPS != tr.State().Name || e.Message == "" {
				t.Errorf("step %d: malformed event %+v", i, e)
			}
		}
		if !slices.Equal(got, st.want) {
			t.Errorf("step %d (t=%v %s%s%v): events %v, want %v", i, st.at, st.status, st.fail, st.tick, got, st.want)
		}
		all = append(all, ev...)
	}
	return all
}

func TestTrackerTransitions(t *testing.T) {
	type E = []EventType
	tests := []struct {
		name  string
		steps []step
	}{
		{"first contact OL is silent, then OB, LB, OL", []step{
			{at: 0, status: "OL CHRG"},
			{at: 1 * s, status: "OL CHRG"},
			{at: 2 * s, status: "OB DISCHRG", want: E{EventOnBatt}},
			{at: 3 * s, status: "OB DISCHRG"},
			{at: 4 * s, status: "OB DISCHRG LB", want: E{EventLowBatt}},
			{at: 5 * s, status: "OB LB"},
			{at: 6 * s, status: "OL CHRG LB", want: E{EventOnline}},
			{at: 7 * s, status: "OL CHRG"},
		}},
		{"first contact on battery with low battery announces both", []step{
			{at: 0, status: "OB LB", want: E{EventOnBatt, EventLowBatt}},
		}},
		{"FSD while OL", []step{
			{at: 0, status: "OL"},
			{at: 1 * s, status: "FSD OL", want: E{EventFSD}},
			{at: 2 * s, status: "FSD OL"},
		}},
		{"FSD on first contact", []step{
			{at: 0, status: "FSD OB", want: E{EventOnBatt, EventFSD}},
		}},
		{"REPLBATT once while RB persists, again when it comes back", []step{
			{at: 0, status: "OL"},
			{at: 1 * s, status: "OL RB", want: E{EventReplBatt}},
			{at: 2 * s, status: "OL RB"},
			{at: 3 * s, status: "OL"},
			{at: 4 * s, status: "OL RB", want: E{EventReplBatt}},
		}},
		{"CAL and NOTCAL", []step{
			{at: 0, status: "OL"},
			{at: 1 * s, status: "OB CAL", want: E{EventOnBatt, EventCal}},
			{at: 2 * s, status: "OB CAL"},
			{at: 3 * s, status: "OL", want: E{EventOnline, EventNotCal}},
		}},
		{"OFF and NOTOFF", []step{
			{at: 0, status: "OL"},
			{at: 1 * s, status: "OFF", want: E{EventOff}},
			{at: 2 * s, status: "OFF"},
			{at: 3 * s, status: "OL", want: E{EventOnline, EventNotOff}},
		}},
		{"BYPASS and NOTBYPASS", []step{
			{at: 0, status: "OL"},
			{at: 1 * s, status: "OL BYPASS", want: E{EventBypass}},
			{at: 2 * s, status: "OL BYPASS"},
			{at: 3 * s, status: "OL", want: E{EventNotBypass}},
		}},
		{"ALARM, a new alarm text, NOTALARM", []step{
			{at: 0, status: "OL"},
			{at: 1 * s, status: "ALARM OL", alarm: "Overheat", want: E{EventAlarm}},
			{at: 2 * s, status: "ALARM OL", alarm: "Overheat"},
			{at: 3 * s, status: "ALARM OL", alarm: "Fan failure", want: E{EventAlarm}},
			{at: 4 * s, status: "OL", want: E{EventNotAlarm}},
			{at: 5 * s, status: "ALARM OL", want: E{EventAlarm}},
		}},
		{"ECO, OVER, TRIM, BOOST and their ends", []step{
			{at: 0, status: "OL"},
			{at: 1 * s, status: "OL ECO", want: E{EventEco}},
			{at: 2 * s, status: "OL OVER", want: E{EventNotEco, EventOver}},
			{at: 3 * s, status: "OL TRIM", want: E{EventNotOver, EventTrim}},
			{at: 4 * s, status: "OL BOOST", want: E{EventNotTrim, EventBoost}},
			{at: 5 * s, status: "OL", want: E{EventNotBoost}},
		}},
		{"unknown tokens: OTHER on change, NOTOTHER when gone", []step{
			{at: 0, status: "OL"},
			{at: 1 * s, status: "OL FOO", want: E{EventOther}},
			{at: 2 * s, status: "OL FOO"},
			{at: 3 * s, status: "OL BAR", want: E{EventOther}},
			{at: 4 * s, status: "OL", want: E{EventNotOther}},
		}},
		{"HB, CHRG and DISCHRG cause no event", []step{
			{at: 0, status: "OL CHRG"},
			{at: 1 * s, status: "OL HB"},
			{at: 2 * s, status: "OL DISCHRG"},
		}},
		{"OB going away without OL causes no ONLINE", []step{
			{at: 0, status: "OB", want: E{EventOnBatt}},
			{at: 1 * s, status: "BYPASS", want: E{EventBypass}},
			{at: 2 * s, status: "OL", want: E{EventOnline, EventNotBypass}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run(t, NewTracker("main", TrackerOptions{}), tt.steps)
		})
	}
}

func TestTrackerComm(t *testing.T) {
	type E = []EventType
	t.Run("COMMBAD once, COMMOK on recovery", func(t *testing.T) {
		tr := NewTracker("main", TrackerOptions{})
		run(t, tr, []step{
			{at: 0, status: "OL"},
			{at: 5 * s, fail: "lost", want: E{EventCommBad}},
			{at: 10 * s, fail: "lost"},
			{at: 15 * s, fail: "stale"},
			{at: 20 * s, fail: "lost"},
			{at: 25 * s, status: "OL", want: E{EventCommOK}},
			{at: 30 * s, fail: "stale", want: E{EventCommBad}},
			{at: 35 * s, status: "OB", want: E{EventCommOK, EventOnBatt}},
		})
	})
	t.Run("failure before first contact", func(t *testing.T) {
		tr := NewTracker("main", TrackerOptions{})
		if st := tr.State(); st.Comm != CommUnknown || st.Reached() {
			t.Fatalf("new tracker state = %+v", st)
		}
		run(t, tr, []step{
			{at: 0, fail: "lost", want: E{EventCommBad}},
			{at: 5 * s, fail: "lost"},
			{at: 10 * s, status: "OL", want: E{EventCommOK}}, // and no ONLINE: first contact
		})
	})
	t.Run("empty or unusable ups.status counts as stale data", func(t *testing.T) {
		tr := NewTracker("main", TrackerOptions{})
		run(t, tr, []step{
			{at: 0, status: "OB", want: E{EventOnBatt}},
			{at: 5 * s, status: "WAIT", want: E{EventCommBad}},
			{at: 6 * s, status: ""},
			{at: 7 * s, status: "OB", want: E{EventCommOK}},
		})
		ev := tr.Observe(Reading{At: at(8 * s), Unknown: []string{"WAIT"}})
		if len(ev) != 1 || ev[0].Message != "Communications with UPS main lost: ups.status has no known token: WAIT" {
			t.Errorf("events = %v", ev)
		}
		st := tr.State()
		if st.Comm != CommStale || st.LastSeen != at(7*s) || st.Status != NewStatus(OB) {
			t.Errorf("state = %+v", st)
		}
		tr.Observe(Reading{At: at(9 * s)})
		if st := tr.State(); st.CommErr != "ups.status is empty" {
			t.Errorf("CommErr = %q", st.CommErr)
		}
	})
}

func TestTrackerNoComm(t *testing.T) {
	type E = []EventType
	t.Run("repeated every NoCommWarn from LastSeen", func(t *testing.T) {
		tr := NewTracker("main", TrackerOptions{}) // default 300 s
		run(t, tr, []step{
			{at: 0, status: "OL"},
			{at: 1 * s, fail: "lost", want: E{EventCommBad}},
			{at: 299 * s, tick: true},
			{at: 299*s + 999*time.Millisecond, fail: "lost"},
			{at: 300 * s, tick: true, want: E{EventNoComm}},
			{at: 301 * s, fail: "lost"},
			{at: 599 * s, tick: true},
			{at: 600 * s, fail: "lost", want: E{EventNoComm}},
			{at: 899 * s, tick: true},
			{at: 900 * s, tick: true, want: E{EventNoComm}},
			{at: 950 * s, status: "OL", want: E{EventCommOK}},
			{at: 1249 * s, tick: true},
			{at: 1250 * s, tick: true, want: E{EventNoComm}}, // silence while Comm is OK counts too
		})
	})
	t.Run("never reached: counted from the first failure", func(t *testing.T) {
		tr := NewTracker("main", TrackerOptions{NoCommWarn: 60 * s})
		run(t, tr, []step{
			{at: 0, tick: true},
			{at: 10 * s, fail: "lost", want: E{EventCommBad}},
			{at: 69 * s, tick: true},
			{at: 70 * s, tick: true, want: E{EventNoComm}},
			{at: 100 * s, tick: true},
			{at: 130 * s, tick: true, want: E{EventNoComm}},
		})
	})
	t.Run("negative NoCommWarn turns NOCOMM off", func(t *testing.T) {
		tr := NewTracker("main", TrackerOptions{NoCommWarn: -1})
		run(t, tr, []step{
			{at: 0, status: "OL"},
			{at: 1 * s, fail: "lost", want: E{EventCommBad}},
			{at: 10000 * s, tick: true},
		})
	})
	t.Run("message", func(t *testing.T) {
		tr := NewTracker("main", TrackerOptions{NoCommWarn: 60 * s})
		tr.Observe(reading(0, "OL", ""))
		tr.Fail(at(1*s), true, errors.New("ERR DATA-STALE"))
		ev := tr.Tick(at(61 * s))
		if len(ev) != 1 || ev[0].Message != "UPS main is unavailable: no data for 61 s (ERR DATA-STALE)" {
			t.Errorf("events = %v", ev)
		}
	})
}

func TestTrackerRBWarn(t *testing.T) {
	type E = []EventType
	tr := NewTracker("main", TrackerOptions{RBWarn: 12 * time.Hour, NoCommWarn: -1})
	run(t, tr, []step{
		{at: 0, status: "OL RB", want: E{EventReplBatt}},
		{at: 12*time.Hour - s, tick: true},
		{at: 12 * time.Hour, tick: true, want: E{EventReplBatt}},
		{at: 13 * time.Hour, status: "OL"},
		{at: 48 * time.Hour, tick: true},
	})
}

func TestTrackerMessages(t *testing.T) {
	tr := NewTracker("main", TrackerOptions{})
	var got []string
	add := func(ev []Event) {
		for _, e := range ev {
			got = append(got, e.String())
		}
	}
	add(tr.Observe(reading(0, "OL", "")))
	add(tr.Observe(reading(1*s, "OB DISCHRG", "")))
	add(tr.Observe(reading(2*s, "OB LB ALARM OVER", "Battery\x07 low!")))
	add(tr.Fail(at(3*s), false, fmt.Errorf("read 127.0.0.1:3493: %w", errors.New("connection reset"))))
	add(tr.Observe(reading(23*s, "OL FSD CAL OFF BYPASS RB ECO TRIM BOOST X1", "")))
	add(tr.Observe(reading(24*s, "OL", "")))
	add(tr.Fail(at(25*s), true, nil))
	add(tr.Fail(at(26*s), false, nil))
	noNumbers, _ := ReadingFromVars(at(30*s), map[string]string{"ups.status": "OB OVER ALARM"})
	add(tr.Observe(noNumbers))
	want := []string{
		"ONBATT: UPS main on battery (charge 97 %, runtime 1260 s)",
		"LOWBATT: UPS main battery is low (charge 97 %, runtime 1260 s)",
		"ALARM: UPS main alarm: Battery low!",
		"OVER: UPS main is overloaded (load 40 %)",
		"COMMBAD: Communications with UPS main lost: read 127.0.0.1:3493: connection reset",
		"COMMOK: Communications with UPS main re-established after 21 s without data",
		"ONLINE: UPS main on line power",
		"FSD: UPS main: forced shutdown in progress (FSD)",
		"REPLBATT: UPS main battery needs to be replaced",
		"CAL: UPS main: calibration in progress",
		"OFF: UPS main is OFF: not supplying its load",
		"BYPASS: UPS main on bypass: no battery protection",
		"NOTALARM: UPS main alarm cleared",
		"ECO: UPS main in ECO mode",
		"NOTOVER: UPS main is no longer overloaded",
		"TRIM: UPS main is trimming high input voltage",
		"BOOST: UPS main is boosting low input voltage",
		"OTHER: UPS main reports unknown status: X1",
		"NOTCAL: UPS main: calibration finished",
		"NOTOFF: UPS main is no longer OFF",
		"NOTBYPASS: UPS main no longer on bypass",
		"NOTECO: UPS main left ECO mode",
		"NOTTRIM: UPS main stopped trimming input voltage",
		"NOTBOOST: UPS main stopped boosting input voltage",
		"NOTOTHER: UPS main no longer reports unknown status",
		"COMMBAD: Communications with UPS main lost: data stale",
		"COMMOK: Communications with UPS main re-established after 6 s without data",
		"ONBATT: UPS main on battery",
		"ALARM: UPS main has an active alarm",
		"OVER: UPS main is overloaded",
	}
	if !slices.Equal(got, want) {
		t.Errorf("messages:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if st := tr.State(); st.CommErr != "" || st.Comm != CommOK {
		t.Errorf("state after recovery = %+v", st)
	}
	tr2 := NewTracker("main", TrackerOptions{})
	tr2.Fail(at(0), false, nil)
	if ev := tr2.Observe(reading(s, "OL", "")); len(ev) != 1 || ev[0].Message != "Communications with UPS main established" {
		t.Errorf("first contact after failure = %v", ev)
	}
	tr2.Fail(at(2*s), false, errors.New("\x00\n"))
	if st := tr2.State(); st.CommErr != "unknown error" {
		t.Errorf("CommErr = %q", st.CommErr)
	}
}

func TestTrackerState(t *testing.T) {
	tr := NewTracker("main", TrackerOptions{})
	tr.Observe(reading(0, "OL", ""))
	st := tr.State()
	if st.Name != "main" || st.FirstSeen != at(0) || st.LastSeen != at(0) || st.Since != at(0) ||
		st.Comm != CommOK || st.CommSince != at(0) || !st.OnLine() || st.OnBattery() || st.LowBattery() ||
		st.Charge != 97 || st.Runtime != 1260*s || st.Load != 40 || !st.OBSince.IsZero() {
		t.Fatalf("after OL: %+v", st)
	}
	tr.Observe(reading(2*s, "OL", ""))
	if st := tr.State(); st.Since != at(0) || st.LastSeen != at(2*s) {
		t.Errorf("same status keeps Since: %+v", st)
	}
	tr.Observe(reading(10*s, "OB", ""))
	tr.Observe(reading(11*s, "OB DISCHRG", ""))
	st = tr.State()
	if st.OBSince != at(10*s) || st.Since != at(11*s) || st.OnBatteryFor(at(15*s)) != 5*s {
		t.Errorf("OB spell: %+v", st)
	}
	// Comm loss keeps the last known status, LastSeen and the OB spell.
	tr.Fail(at(12*s), false, errors.New("refused"))
	tr.Fail(at(13*s), true, errors.New("ERR DATA-STALE"))
	st = tr.State()
	if st.Comm != CommStale || st.CommErr != "ERR DATA-STALE" || st.CommSince != at(13*s) ||
		st.Status != NewStatus(OB, DISCHRG) || st.LastSeen != at(11*s) || st.OBSince != at(10*s) ||
		st.SilentFor(at(20*s)) != 9*s {
		t.Errorf("during comm loss: %+v", st)
	}
	tr.Observe(reading(14*s, "OB LB", ""))
	st = tr.State()
	if st.OBSince != at(10*s) || st.Comm != CommOK || st.CommSince != at(14*s) || !st.LowBattery() {
		t.Errorf("OB spell continues across a comm drop: %+v", st)
	}
	tr.Observe(reading(20*s, "OFF ALARM CAL RB", "x"))
	st = tr.State()
	if !st.OBSince.IsZero() || st.OffSince != at(20*s) || st.AlarmSince != at(20*s) || st.CalSince != at(20*s) ||
		!st.ReplaceBattery || !st.Has(OFF) || st.OnBatteryFor(at(30*s)) != 0 {
		t.Errorf("OFF ALARM CAL RB: %+v", st)
	}
	tr.Observe(reading(21*s, "OL", ""))
	st = tr.State()
	if !st.OffSince.IsZero() || !st.AlarmSince.IsZero() || !st.CalSince.IsZero() || st.ReplaceBattery {
		t.Errorf("cleared: %+v", st)
	}
	// State returns a copy.
	tr.Observe(reading(22*s, "OL FOO", ""))
	st = tr.State()
	st.Vars["ups.status"] = "mutated"
	st.Unknown[0] = "mutated"
	if st2 := tr.State(); st2.Vars["ups.status"] != "OL FOO" || st2.Unknown[0] != "FOO" {
		t.Errorf("State must return a copy: %+v", st2)
	}
	if (State{}).SilentFor(at(0)) != 0 {
		t.Error("SilentFor of a UPS never reached must be 0")
	}
}

func TestCommString(t *testing.T) {
	for c, want := range map[Comm]string{CommUnknown: "unknown", CommOK: "ok", CommStale: "stale", CommLost: "lost", Comm(9): "Comm(9)"} {
		if got := c.String(); got != want {
			t.Errorf("%d: %q, want %q", int(c), got, want)
		}
	}
}

func TestEventTypes(t *testing.T) {
	seen := map[EventType]bool{}
	for _, e := range EventTypes() {
		if seen[e] || e == "" || strings.ToUpper(string(e)) != string(e) {
			t.Errorf("bad or duplicate event type %q", e)
		}
		seen[e] = true
	}
	if len(seen) != 28 {
		t.Errorf("%d event types, want 28", len(seen))
	}
}

func TestStateBattery(t *testing.T) {
	tests := []struct {
		charge  float64
		runtime time.Duration
		want    string
	}{
		{97, 1260 * s, "charge 97 %, runtime 1260 s"},
		{-1, 1260*s + 900*time.Millisecond, "runtime 1260 s"},
		{42.6, -1, "charge 43 %"},
		{-1, -1, ""},
	}
	for _, tt := range tests {
		if got := (State{Charge: tt.charge, Runtime: tt.runtime}).Battery(); got != tt.want {
			t.Errorf("Battery(%v, %v) = %q, want %q", tt.charge, tt.runtime, got, tt.want)
		}
	}
}
