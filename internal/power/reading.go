package power

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Unknown is the value of Reading.Charge, Reading.Load (and, as a Duration,
// Reading.Runtime) when the UPS did not report a usable number.
const Unknown = -1

// UnknownRuntime is the Runtime of a reading without a usable battery.runtime.
const UnknownRuntime time.Duration = -1

// The NUT variables a Reading is built from.
const (
	VarStatus  = "ups.status"
	VarCharge  = "battery.charge"
	VarRuntime = "battery.runtime"
	VarLoad    = "ups.load"
	VarAlarm   = "ups.alarm"
)

// Limits beyond which a reported number is treated as garbage.
const (
	maxRuntimeSeconds = 1e7 // ~115 days: more is a driver bug
	maxLoadPercent    = 1000
	maxAlarmLen       = 256
)

// Reading is one good answer from a UPS: what it reported at At.
type Reading struct {
	At      time.Time
	Status  Status
	Unknown []string      // ups.status tokens this package does not know (e.g. WAIT), sorted
	Charge  float64       // battery.charge in percent; Unknown (-1) when not reported
	Runtime time.Duration // battery.runtime; UnknownRuntime (-1) when not reported
	Load    float64       // ups.load in percent; Unknown (-1) when not reported
	Alarm   string        // ups.alarm, cleaned of control characters; "" when none
	Vars    map[string]string
}

// ReadingFromVars builds a Reading from NUT variables (ups.status,
// battery.charge, battery.runtime in seconds, ups.load, ups.alarm). Missing
// or garbage values become unknown (-1) and are described in problems, one
// short sentence each; it never fails and never panics. Vars holds a copy of
// all the variables given. Unknown status tokens go to Reading.Unknown, not
// to problems.
func ReadingFromVars(at time.Time, vars map[string]string) (Reading, []string) {
	r := Reading{At: at, Charge: Unknown, Runtime: UnknownRuntime, Load: Unknown}
	var problems []string
	if len(vars) > 0 {
		r.Vars = make(map[string]string, len(vars))
		for k, v := range vars {
			r.Vars[k] = v
		}
	}

	if s, ok := vars[VarStatus]; !ok {
		problems = append(problems, VarStatus+" missing")
	} else {
		r.Status, r.Unknown = ParseStatus(s)
		if r.Status.IsZero() && len(r.Unknown) == 0 {
			problems = append(problems, VarStatus+" is empty")
		}
	}

	if v, p := number(vars, VarCharge, 0, 100); p != "" {
		problems = append(problems, p)
	} else {
		r.Charge = v
	}
	if v, p := number(vars, VarRuntime, 0, maxRuntimeSeconds); p != "" {
		problems = append(problems, p)
	} else {
		r.Runtime = time.Duration(v * float64(time.Second))
	}
	if v, p := number(vars, VarLoad, 0, maxLoadPercent); p != "" {
		problems = append(problems, p)
	} else {
		r.Load = v
	}
	if a, ok := vars[VarAlarm]; ok {
		r.Alarm = cleanText(a, maxAlarmLen)
	}
	return r, problems
}

// number parses vars[name] as a decimal number within [lo, hi]. It returns a
// problem sentence instead when the value is missing or unusable.
func number(vars map[string]string, name string, lo, hi float64) (float64, string) {
	s, ok := vars[name]
	if !ok {
		return Unknown, name + " missing"
	}
	t := strings.TrimSpace(s)
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return Unknown, fmt.Sprintf("%s %q is not a number", name, cleanText(s, 32))
	}
	if v < lo || v > hi {
		return Unknown, fmt.Sprintf("%s %s is out of range [%g, %g]", name, t, lo, hi)
	}
	return v, ""
}

// cleanText trims s, replaces control characters and invalid UTF-8 with
// spaces, collapses runs of spaces and cuts it to max runes (with "…").
func cleanText(s string, max int) string {
	var b strings.Builder
	n := 0
	space := false
	for _, r := range strings.TrimSpace(s) {
		if r == unicode.ReplacementChar || unicode.IsControl(r) || unicode.IsSpace(r) {
			space = true
			continue
		}
		if n >= max {
			b.WriteString("…")
			break
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
			n++
		}
		space = false
		b.WriteRune(r)
		n++
	}
	return b.String()
}
