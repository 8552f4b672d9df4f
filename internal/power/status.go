// Package power turns raw UPS readings into one normalized state per UPS and
// emits typed events named like NUT's upsmon notify types (ONLINE, ONBATT,
// LOWBATT, COMMBAD, NOCOMM, …), so operators recognise them.
//
// Everything here is pure: a Tracker is a state machine fed with explicit
// times (Observe, Fail, Tick). It starts no goroutine, reads no clock and
// touches no network; whoever polls the UPS feeds it, and the policy package
// decides from the State it exposes. Nothing here panics on bad input.
package power

import (
	"sort"
	"strconv"
	"strings"
)

// Flag is one token of NUT's ups.status variable.
type Flag uint32

// The ups.status tokens of NUT 2.8 (docs/new-drivers.txt, "Status data"),
// in the canonical order used by Status.String. ALARM is set by drivers
// together with ups.alarm; ECO is the 2.8 "high efficiency" inverter mode.
const (
	ALARM   Flag = 1 << iota // an alarm is active, details in ups.alarm
	FSD                      // forced shutdown: the primary (or the UPS) says shut down now
	OL                       // on line (mains) power
	OB                       // on battery
	LB                       // low battery
	HB                       // high battery
	RB                       // the battery needs to be replaced
	CHRG                     // the battery is charging
	DISCHRG                  // the battery is discharging
	BYPASS                   // on bypass: mains feeds the load, no battery protection
	CAL                      // runtime calibration in progress (usually on battery)
	OFF                      // the UPS is off: not supplying its load
	OVER                     // overloaded
	TRIM                     // trimming (bucking) high input voltage
	BOOST                    // boosting low input voltage
	ECO                      // ECO / high-efficiency mode

	flagEnd
)

var flagNames = [...]string{
	"ALARM", "FSD", "OL", "OB", "LB", "HB", "RB", "CHRG", "DISCHRG",
	"BYPASS", "CAL", "OFF", "OVER", "TRIM", "BOOST", "ECO",
}

// AllFlags returns every known flag in canonical order (for metrics state
// sets: one series per token).
func AllFlags() []Flag {
	out := make([]Flag, 0, len(flagNames))
	for f := Flag(1); f < flagEnd; f <<= 1 {
		out = append(out, f)
	}
	return out
}

// String returns the NUT token of a single flag, or "Flag(0x…)" for a value
// that is not exactly one known flag.
func (f Flag) String() string {
	for i, n := range flagNames {
		if f == Flag(1)<<i {
			return n
		}
	}
	return "Flag(0x" + strconv.FormatUint(uint64(f), 16) + ")"
}

// ParseFlag returns the flag for a ups.status token (case-insensitive, as
// upsmon compares them).
func ParseFlag(token string) (Flag, bool) {
	for i, n := range flagNames {
		if strings.EqualFold(token, n) {
			return Flag(1) << i, true
		}
	}
	return 0, false
}

// Status is a set of flags: the parsed ups.status. The zero value is the
// empty set.
type Status uint32

// NewStatus returns the set of the given flags.
func NewStatus(flags ...Flag) Status {
	var s Status
	for _, f := range flags {
		s |= Status(f)
	}
	return s
}

// ParseStatus parses a ups.status value such as "OB DISCHRG LB". Tokens are
// separated by white space and compared case-insensitively. Tokens this
// package does not know are returned, upper-cased, sorted and without
// duplicates, in unknown (nil when there are none); they never make the
// parse fail.
func ParseStatus(s string) (st Status, unknown []string) {
	seen := map[string]bool{}
	for _, tok := range strings.Fields(s) {
		if f, ok := ParseFlag(tok); ok {
			st |= Status(f)
			continue
		}
		u := strings.ToUpper(tok)
		if !seen[u] {
			seen[u] = true
			unknown = append(unknown, u)
		}
	}
	sort.Strings(unknown)
	return st, unknown
}

// Has reports whether every flag in f is set.
func (s Status) Has(f Flag) bool { return f != 0 && Status(f)&s == Status(f) }

// With returns s with the given flags added.
func (s Status) With(flags ...Flag) Status { return s | NewStatus(flags...) }

// Without returns s with the given flags removed.
func (s Status) Without(flags ...Flag) Status { return s &^ NewStatus(flags...) }

// IsZero reports whether no flag is set.
func (s Status) IsZero() bool { return s == 0 }

// Flags returns the flags of s in canonical order.
func (s Status) Flags() []Flag {
	var out []Flag
	for f := Flag(1); f < flagEnd; f <<= 1 {
		if s.Has(f) {
			out = append(out, f)
		}
	}
	return out
}

// Tokens returns the NUT tokens of s in canonical order.
func (s Status) Tokens() []string {
	var out []string
	for _, f := range s.Flags() {
		out = append(out, f.String())
	}
	return out
}

// String returns the tokens in canonical order separated by spaces, e.g.
// "OB LB" or "FSD OL"; the empty set prints as "".
func (s Status) String() string { return strings.Join(s.Tokens(), " ") }
