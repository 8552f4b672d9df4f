package power

import (
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func TestReadingFromVarsGood(t *testing.T) {
	vars := map[string]string{
		"ups.status":      "OB DISCHRG",
		"battery.charge":  "97",
		"battery.runtime": "1260.00",
		"ups.load":        " 23.5 ",
		"ups.alarm":       "  Replace battery!  ",
		"ups.model":       "Smart-UPS 1500",
	}
	r, problems := ReadingFromVars(at(0), vars)
	if problems != nil {
		t.Fatalf("problems = %q", problems)
	}
	if r.At != at(0) || r.Status != NewStatus(OB, DISCHRG) || r.Charge != 97 || r.Runtime != 1260*time.Second ||
		r.Load != 23.5 || r.Alarm != "Replace battery!" || r.Unknown != nil {
		t.Errorf("reading = %+v", r)
	}
	if r.Vars["ups.model"] != "Smart-UPS 1500" {
		t.Errorf("Vars = %v", r.Vars)
	}
	vars["ups.model"] = "changed"
	if r.Vars["ups.model"] != "Smart-UPS 1500" {
		t.Error("Vars must be a copy")
	}
}

func TestReadingFromVarsMissing(t *testing.T) {
	r, problems := ReadingFromVars(at(0), nil)
	want := []string{"ups.status missing", "battery.charge missing", "battery.runtime missing", "ups.load missing"}
	if !slices.Equal(problems, want) {
		t.Errorf("problems = %q, want %q", problems, want)
	}
	if r.Charge != Unknown || r.Runtime != UnknownRuntime || r.Load != Unknown || !r.Status.IsZero() || r.Vars != nil {
		t.Errorf("reading = %+v", r)
	}
}

func TestReadingFromVarsGarbage(t *testing.T) {
	tests := []struct {
		name, key, value, problem string
	}{
		{"text", "battery.charge", "abc", `battery.charge "abc" is not a number`},
		{"empty", "battery.charge", "", `battery.charge "" is not a number`},
		{"nan", "battery.charge", "NaN", `battery.charge "NaN" is not a number`},
		{"inf", "battery.runtime", "+Inf", `battery.runtime "+Inf" is not a number`},
		{"negative charge", "battery.charge", "-5", "battery.charge -5 is out of range [0, 100]"},
		{"charge above 100", "battery.charge", "101", "battery.charge 101 is out of range [0, 100]"},
		{"negative runtime", "battery.runtime", "-1", "battery.runtime -1 is out of range [0, 1e+07]"},
		{"huge runtime", "battery.runtime", "1e99", "battery.runtime 1e99 is out of range [0, 1e+07]"},
		{"huge load", "ups.load", "5000", "ups.load 5000 is out of range [0, 1000]"},
		{"control chars", "ups.load", "1\x00\n2", `ups.load "1 2" is not a number`},
		{"status empty", "ups.status", "  ", "ups.status is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars := map[string]string{"ups.status": "OL", "battery.charge": "50", "battery.runtime": "600", "ups.load": "10"}
			vars[tt.key] = tt.value
			r, problems := ReadingFromVars(at(0), vars)
			if !slices.Equal(problems, []string{tt.problem}) {
				t.Fatalf("problems = %q, want %q", problems, tt.problem)
			}
			switch tt.key {
			case "battery.charge":
				if r.Charge != Unknown {
					t.Errorf("Charge = %v, want unknown", r.Charge)
				}
			case "battery.runtime":
				if r.Runtime != UnknownRuntime {
					t.Errorf("Runtime = %v, want unknown", r.Runtime)
				}
			case "ups.load":
				if r.Load != Unknown {
					t.Errorf("Load = %v, want unknown", r.Load)
				}
			}
		})
	}
}

func TestReadingUnknownTokens(t *testing.T) {
	r, problems := ReadingFromVars(at(0), map[string]string{"ups.status": "WAIT", "battery.charge": "1", "battery.runtime": "1", "ups.load": "1"})
	if problems != nil {
		t.Errorf("unknown tokens are not problems: %q", problems)
	}
	if !r.Status.IsZero() || !slices.Equal(r.Unknown, []string{"WAIT"}) {
		t.Errorf("reading = %+v", r)
	}
}

func TestCleanText(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"  a  b\t\nc ", 10, "a b c"},
		{"x\x00\x1b[31my", 10, "x [31my"},
		{"bad \xff utf8", 10, "bad utf8"},
		{strings.Repeat("é", 10), 4, strings.Repeat("é", 4) + "…"},
		{"abcd", 4, "abcd"},
		{"", 4, ""},
	}
	for _, tt := range tests {
		if got := cleanText(tt.in, tt.max); got != tt.want {
			t.Errorf("cleanText(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}
