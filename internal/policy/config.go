// Package policy decides whether the site must shut down, as a pure function
// of the UPS states, the configuration, the time and the shutdown plan's
// estimated duration: Decide(cfg, input, previous) → Decision. The decision
// explains itself with human sentences (numbers in whole seconds, every UPS
// named) and predicts when a shutdown would come if nothing changes.
//
// # Rules
//
// The rules follow upsmon's is_ups_critical and recalc, then go beyond.
// Each configured UPS is judged critical (not supplying power) when:
//
//   - FSD is set (by the primary, or by a smart UPS);
//   - it is on battery with low battery (OB+LB), unless it is calibrating
//     (CAL), as upsmon does;
//   - it reports OFF for OffGrace (upsmon's OFFDURATION);
//   - it is on battery with ALARM and the rule's AlarmCritical is set;
//   - it is on battery, the spell has lasted Debounce, battery.runtime is
//     known and below the runtime budget: PlanDuration + RuntimeMargin. The
//     runtime read at LastSeen is projected down one second per second since
//     then (the battery keeps draining while we do not hear from it);
//   - it is on battery (past Debounce) with charge below MinCharge or
//     runtime below MinRuntime, when those are set;
//   - it has been on battery continuously for OnBatteryDelay (when set); mains
//     returning before that cancels the timer;
//   - it has been silent for Deadtime since LastSeen (no good reading: lost
//     connection, ERR DATA-STALE, ERR DRIVER-NOT-CONNECTED, or no reading at
//     all) while last seen on battery, OFF, on bypass, calibrating, or with
//     an alarm when AlarmCritical (upsmon's list, plus the alarm). A comm
//     drop shorter than Deadtime never shuts down by itself (upsmon 2.8.1
//     declared such a UPS dead at the first failed poll); the rules above
//     keep applying to the last known status meanwhile.
//
// While calibrating (CAL) the battery rules (LB, runtime budget, MinCharge,
// MinRuntime, OnBatteryDelay) are suspended: a calibration drains the battery
// on purpose and must not shut the site down. FSD, OFF and silence still
// count.
//
// Rules that fire "after" a time fire at that instant: OnBatteryDelay 30 s
// after OB at t0 means a shutdown decided at t0+30s, not a tick earlier.
// (upsmon compares with ">" on whole seconds; the difference is below its
// polling resolution.)
//
// Comm loss while last seen on line power is a warning only: the UPS still
// counts as supplying, however long the silence (upsmon does the same). A UPS
// never reached (no good reading yet) counts as supplying with a warning:
// sundown does not shut a site down because it started while a NUT server was
// unreachable; the warning says so.
//
// The supply is the sum of the PowerValue of the UPSes that are not critical.
// Shutdown is decided when the supply is below MinSupplies. A critical UPS
// while the supply still covers MinSupplies (redundancy), a UPS on battery,
// comm loss, RB, BYPASS, OVER, ALARM and CAL are warnings.
//
// # The latch
//
// Once Decide has returned Shutdown, passing that decision back as prev
// returns it unchanged, whatever the input: a shutdown is never undone.
//
// # ETA
//
// Decision.ETA predicts when the supply would drop below MinSupplies if the
// present conditions persist: runtime falls one second per second, delay,
// grace, debounce and deadtime timers keep running, nothing else changes. It
// is -1 when no rule would ever fire (for instance, all UPSes on line power).
package policy

import (
	"fmt"
	"time"
)

// Defaults, matching upsmon where upsmon has the setting.
const (
	DefaultPowerValue    = 1                 // upsmon MONITOR power value
	DefaultDeadtime      = 15 * time.Second  // upsmon DEADTIME
	DefaultOffGrace      = 30 * time.Second  // upsmon OFFDURATION
	DefaultMinSupplies   = 1                 // upsmon MINSUPPLIES
	DefaultDebounce      = 3 * time.Second   // on-battery spells shorter than this are ignored by the timed rules
	DefaultRuntimeMargin = 120 * time.Second // margin on top of the plan duration
)

// UPSRule is the policy for one UPS.
type UPSRule struct {
	// Name matches power.State.Name.
	Name string
	// PowerValue is how many of this site's power supplies the UPS feeds
	// (upsmon's power value). 0 means monitored only: the UPS is watched
	// and reported but never counts towards the supply. Because 0 is
	// meaningful, WithDefaults does not touch it: the config package sets
	// DefaultPowerValue (1) when the key is absent, and NewUPSRule does too.
	PowerValue int
	// Deadtime: a UPS silent this long since its last good reading, and last
	// seen on battery (or OFF, BYPASS, CAL, alarm-critical), is critical.
	// Silence is a failed poll (Comm not OK) or, as a safety net against a
	// stuck poll loop, no reading for Deadtime even though Comm still says
	// OK; so Deadtime must be well above the poll interval (upsmon advises
	// 3 × POLLFREQ). 0 means DefaultDeadtime (15 s); a negative value means
	// at once (then only failed polls count as silence).
	Deadtime time.Duration
	// OffGrace: a UPS reporting OFF this long is not supplying (upsmon's
	// OFFDURATION). 0 means DefaultOffGrace (30 s); a negative value turns
	// the rule off (OFF never makes the UPS critical on its own).
	OffGrace time.Duration
	// AlarmCritical makes ALARM while on battery critical, and silence
	// after an ALARM count like silence after OB. Off by default.
	AlarmCritical bool
	// MinCharge: on battery with battery.charge below this percentage is
	// critical. 0 turns the rule off.
	MinCharge float64
	// MinRuntime: on battery with battery.runtime below this is critical.
	// 0 turns the rule off.
	MinRuntime time.Duration
}

// NewUPSRule returns the rule for the UPS name with every default:
// PowerValue 1, Deadtime 15 s, OffGrace 30 s, no alarm, charge or runtime
// floor.
func NewUPSRule(name string) UPSRule {
	return UPSRule{Name: name, PowerValue: DefaultPowerValue}.WithDefaults()
}

// WithDefaults returns r with zero durations replaced by their defaults and
// negative Deadtime replaced by 0 (at once). PowerValue is kept as is.
func (r UPSRule) WithDefaults() UPSRule {
	switch {
	case r.Deadtime == 0:
		r.Deadtime = DefaultDeadtime
	case r.Deadtime < 0:
		r.Deadtime = 0
	}
	if r.OffGrace == 0 {
		r.OffGrace = DefaultOffGrace
	}
	return r
}

// Config is the site-wide policy.
type Config struct {
	// UPS lists the UPSes that matter, in the order reasons are given.
	// States of UPSes not listed here are ignored.
	UPS []UPSRule
	// MinSupplies: shut down when the supply (sum of PowerValue of the
	// UPSes not critical) is below this. 0 means DefaultMinSupplies (1).
	MinSupplies int
	// OnBatteryDelay: a UPS continuously on battery this long is critical
	// (a site that prefers to shut down early). 0 turns the rule off.
	// Mains returning before the delay ends cancels it.
	OnBatteryDelay time.Duration
	// Debounce: an on-battery spell shorter than this is ignored by the
	// timed and battery-level rules (runtime budget, MinCharge, MinRuntime,
	// OnBatteryDelay), so a flicker of the mains never shuts anything down.
	// OB+LB and FSD are not debounced. 0 means DefaultDebounce (3 s); a
	// negative value means no debounce.
	Debounce time.Duration
	// RuntimeMargin is added to the plan's estimated duration to form the
	// runtime budget: on battery with runtime below PlanDuration +
	// RuntimeMargin is critical. 0 means DefaultRuntimeMargin (120 s); a
	// negative value means no margin.
	RuntimeMargin time.Duration
}

// Defaults returns the site-wide defaults with no UPS.
func Defaults() Config { return Config{}.WithDefaults() }

// WithDefaults returns a copy of c with defaults applied to it and to every
// UPS rule (see each field).
func (c Config) WithDefaults() Config {
	if c.MinSupplies <= 0 {
		c.MinSupplies = DefaultMinSupplies
	}
	switch {
	case c.Debounce == 0:
		c.Debounce = DefaultDebounce
	case c.Debounce < 0:
		c.Debounce = 0
	}
	switch {
	case c.RuntimeMargin == 0:
		c.RuntimeMargin = DefaultRuntimeMargin
	case c.RuntimeMargin < 0:
		c.RuntimeMargin = 0
	}
	if c.OnBatteryDelay < 0 {
		c.OnBatteryDelay = 0
	}
	rules := make([]UPSRule, len(c.UPS))
	for i, r := range c.UPS {
		rules[i] = r.WithDefaults()
	}
	c.UPS = rules
	return c
}

// Check lists every problem that makes c unusable or dangerous, one sentence
// each (nil when fine). The config package turns them into startup errors.
// Decide copes with a config that fails Check (see Decide) but a daemon
// should not start with one.
func (c Config) Check() []string {
	var p []string
	d := c.WithDefaults()
	if len(c.UPS) == 0 {
		p = append(p, "no UPS configured")
	}
	seen := map[string]bool{}
	total := 0
	for i, r := range c.UPS {
		label := fmt.Sprintf("UPS #%d %q", i+1, r.Name)
		if r.Name == "" {
			p = append(p, fmt.Sprintf("UPS #%d has no name", i+1))
		} else if seen[r.Name] {
			p = append(p, label+" is listed twice")
		}
		seen[r.Name] = true
		if r.PowerValue < 0 {
			p = append(p, fmt.Sprintf("%s: power value %d is negative", label, r.PowerValue))
		} else {
			total += r.PowerValue
		}
		if r.MinCharge < 0 || r.MinCharge > 100 {
			p = append(p, fmt.Sprintf("%s: minimum charge %g %% is outside 0–100", label, r.MinCharge))
		}
		if r.MinRuntime < 0 {
			p = append(p, fmt.Sprintf("%s: minimum runtime %v is negative", label, r.MinRuntime))
		}
	}
	if c.MinSupplies < 0 {
		p = append(p, fmt.Sprintf("min supplies %d is negative", c.MinSupplies))
	}
	if len(c.UPS) > 0 && total < d.MinSupplies {
		p = append(p, fmt.Sprintf("total power value %d is below min supplies %d: the site could never be considered powered", total, d.MinSupplies))
	}
	if c.OnBatteryDelay < 0 {
		p = append(p, fmt.Sprintf("on-battery delay %v is negative", c.OnBatteryDelay))
	}
	return p
}
