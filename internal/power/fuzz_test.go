package power

import (
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
)

func FuzzParseStatus(f *testing.F) {
	for _, s := range []string{"OL", "OB LB", "FSD OL", "", " ", "WAIT", "ol\tob\nlb", "OL foo FOO", "\xff\x00OB", "ALARM OB DISCHRG LB RB ECO"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		st, unknown := ParseStatus(in)
		// The canonical form parses back to the same set.
		again, u2 := ParseStatus(st.String())
		if again != st || u2 != nil {
			t.Fatalf("%q: canonical %q parses to %v %q", in, st.String(), again, u2)
		}
		if !slices.IsSorted(unknown) {
			t.Fatalf("unknown not sorted: %q", unknown)
		}
		for i, u := range unknown {
			if u == "" || strings.IndexFunc(u, unicode.IsSpace) >= 0 || u != strings.ToUpper(u) {
				t.Fatalf("bad unknown token %q", u)
			}
			if i > 0 && unknown[i-1] == u {
				t.Fatalf("duplicate unknown token %q", u)
			}
			if _, ok := ParseFlag(u); ok {
				t.Fatalf("known token %q reported unknown", u)
			}
		}
	})
}

func FuzzReadingFromVars(f *testing.F) {
	f.Add("OB LB", "97", "1260", "40", "", true)
	f.Add("", "", "", "", "", false)
	f.Add("WAIT", "abc", "-1", "NaN", "\x00\xff", true)
	f.Add("OL", "1e308", "1e-320", "+Inf", strings.Repeat("x", 1000), false)
	f.Fuzz(func(t *testing.T, status, charge, runtime, load, alarm string, withStatus bool) {
		vars := map[string]string{"battery.charge": charge, "battery.runtime": runtime, "ups.load": load, "ups.alarm": alarm}
		if withStatus {
			vars["ups.status"] = status
		}
		r, _ := ReadingFromVars(t0, vars)
		if r.Charge != Unknown && (r.Charge < 0 || r.Charge > 100) {
			t.Fatalf("charge %v", r.Charge)
		}
		if r.Runtime != UnknownRuntime && r.Runtime < 0 {
			t.Fatalf("runtime %v", r.Runtime)
		}
		if r.Load != Unknown && (r.Load < 0 || r.Load > maxLoadPercent) {
			t.Fatalf("load %v", r.Load)
		}
		if strings.IndexFunc(r.Alarm, unicode.IsControl) >= 0 {
			t.Fatalf("alarm keeps control characters: %q", r.Alarm)
		}
		// Whatever the reading, a tracker takes it without panicking.
		tr := NewTracker("fuzz", TrackerOptions{})
		tr.Observe(r)
		tr.Fail(t0.Add(time.Second), true, nil)
		r.At = t0.Add(2 * time.Second)
		tr.Observe(r)
		tr.Tick(t0.Add(time.Hour))
		_ = tr.State().Battery()
	})
}
