package power

import (
	"fmt"
	"strings"
	"time"
)

// Comm is the state of communications with a UPS.
type Comm int

const (
	// CommUnknown: no good reading and no failure yet (before first contact).
	CommUnknown Comm = iota
	// CommOK: the last attempt returned a good reading.
	CommOK
	// CommStale: the server answered but had no fresh data (ERR DATA-STALE,
	// ERR DRIVER-NOT-CONNECTED, an empty ups.status, apcupsd COMMLOST).
	CommStale
	// CommLost: no answer at all (no connection, timeout, protocol error).
	CommLost
)

// String returns "unknown", "ok", "stale" or "lost".
func (c Comm) String() string {
	switch c {
	case CommUnknown:
		return "unknown"
	case CommOK:
		return "ok"
	case CommStale:
		return "stale"
	case CommLost:
		return "lost"
	}
	return fmt.Sprintf("Comm(%d)", int(c))
}

// State is the normalized snapshot of one UPS. While communications are down
// it keeps the last known values (Status, Charge, Runtime, …) and LastSeen, so
// that the policy can reason about "last seen on battery". Times are zero
// when the condition does not hold.
type State struct {
	Name string

	// Last known values, from the last good reading.
	Status  Status
	Unknown []string      // unknown ups.status tokens of the last good reading
	Charge  float64       // percent; Unknown (-1) when not reported
	Runtime time.Duration // battery.runtime as read at LastSeen; UnknownRuntime (-1) when not reported
	Load    float64       // percent; Unknown (-1) when not reported
	Alarm   string        // ups.alarm text; "" when none
	Vars    map[string]string

	Comm      Comm
	CommErr   string    // short reason when Comm is CommStale or CommLost
	CommSince time.Time // when Comm took its current value

	FirstSeen time.Time // first good reading; zero if the UPS was never reached
	LastSeen  time.Time // last good reading; zero if the UPS was never reached

	Since      time.Time // when the current Status began (first reading with this exact set)
	OBSince    time.Time // start of the current on-battery spell; zero when not OB
	OLSince    time.Time // start of the current spell on line (OL, not OB); zero otherwise
	OffSince   time.Time // start of the current OFF spell; zero when not OFF
	AlarmSince time.Time // start of the current ALARM spell; zero when no ALARM
	CalSince   time.Time // start of the current calibration; zero when not CAL

	ReplaceBattery bool // RB is set
}

// Has reports whether the last known status has flag f.
func (s State) Has(f Flag) bool { return s.Status.Has(f) }

// OnBattery reports whether the UPS was last seen on battery (OB).
func (s State) OnBattery() bool { return s.Status.Has(OB) }

// OnLine reports whether the UPS was last seen on line power (OL).
func (s State) OnLine() bool { return s.Status.Has(OL) }

// LowBattery reports whether the UPS was last seen with a low battery (LB).
func (s State) LowBattery() bool { return s.Status.Has(LB) }

// Reached reports whether the UPS ever answered with a good reading.
func (s State) Reached() bool { return !s.LastSeen.IsZero() }

// SilentFor returns how long there has been no good reading at now: zero
// for a UPS never reached, or when now is before LastSeen.
func (s State) SilentFor(now time.Time) time.Duration {
	if s.LastSeen.IsZero() {
		return 0
	}
	return max(now.Sub(s.LastSeen), 0)
}

// OnBatteryFor returns how long the current on-battery spell has lasted at
// now (zero when not on battery).
func (s State) OnBatteryFor(now time.Time) time.Duration {
	if !s.OnBattery() || s.OBSince.IsZero() {
		return 0
	}
	return max(now.Sub(s.OBSince), 0)
}

// Battery describes charge and runtime for messages, e.g. "charge 97 %,
// runtime 1260 s"; unknown values are left out, and "" when both are.
func (s State) Battery() string {
	var parts []string
	if s.Charge >= 0 {
		parts = append(parts, fmt.Sprintf("charge %.0f %%", s.Charge))
	}
	if s.Runtime >= 0 {
		parts = append(parts, fmt.Sprintf("runtime %d s", Seconds(s.Runtime)))
	}
	return strings.Join(parts, ", ")
}

// Seconds returns d in whole seconds, rounded down (towards zero), as used in
// every human message.
func Seconds(d time.Duration) int64 { return int64(d / time.Second) }

func (s State) clone() State {
	c := s
	if s.Vars != nil {
		c.Vars = make(map[string]string, len(s.Vars))
		for k, v := range s.Vars {
			c.Vars[k] = v
		}
	}
	if s.Unknown != nil {
		c.Unknown = append([]string(nil), s.Unknown...)
	}
	return c
}
