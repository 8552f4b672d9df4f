package policy

import (
	"fmt"
	"time"

	"github.com/sundown-ups/sundown/internal/power"
)

// RestoreRule says when a restore may start after a shutdown (or a shed
// stage): every UPS that feeds the site (power value > 0) has been on line
// power, not on battery, for After, with at least MinCharge percent of
// battery, so that a second outage could still be survived.
type RestoreRule struct {
	After     time.Duration
	MinCharge float64 // percent; 0 = no condition
}

// RestoreReady applies rule to the states (matched to cfg's UPS rules by
// name for their power values) at now. It returns whether the restore may
// start and, either way, why (the first condition not met, or a summary).
func RestoreReady(cfg Config, rule RestoreRule, states []power.State, now time.Time) (bool, string) {
	feeding := 0
	for _, s := range states {
		if monitorOnly(cfg, s.Name) {
			continue
		}
		feeding++
		switch {
		case !s.Reached():
			return false, fmt.Sprintf("UPS %s: not reached yet", s.Name)
		case s.Comm != power.CommOK:
			return false, fmt.Sprintf("UPS %s: %s", s.Name, commDesc(s))
		case s.OLSince.IsZero():
			return false, fmt.Sprintf("UPS %s: not on line power (%s)", s.Name, s.Status)
		case now.Sub(s.OLSince) < rule.After:
			return false, fmt.Sprintf("UPS %s: on line power for %d s of %d s", s.Name, secs(now.Sub(s.OLSince)), secs(rule.After))
		case rule.MinCharge > 0 && s.Charge >= 0 && s.Charge < rule.MinCharge:
			return false, fmt.Sprintf("UPS %s: battery charge %.0f %% below %.0f %%", s.Name, s.Charge, rule.MinCharge)
		}
	}
	if feeding == 0 {
		return false, "no UPS feeds the site"
	}
	return true, fmt.Sprintf("every UPS on line power for %d s or more", secs(rule.After))
}

// ShedRule is a load-shedding stage: shut some groups down early, to
// stretch the runtime for the rest, once the site has been on battery for
// After, or a UPS on battery is below BelowCharge percent or BelowRuntime
// of runtime. A zero condition is off; a stage fires on the first that
// holds.
type ShedRule struct {
	Name         string
	After        time.Duration
	BelowCharge  float64
	BelowRuntime time.Duration
}

// ShedDue returns whether stage rule is due at now, and why. The on-battery
// time counts only spells longer than cfg.Debounce, as the shutdown rules
// do, so flapping power sheds nothing.
func ShedDue(cfg Config, rule ShedRule, states []power.State, now time.Time) (bool, string) {
	cfg = cfg.WithDefaults()
	for _, s := range states {
		if monitorOnly(cfg, s.Name) || !s.OnBattery() || s.OBSince.IsZero() {
			continue
		}
		ob := now.Sub(s.OBSince)
		if ob < cfg.Debounce {
			continue
		}
		switch {
		case rule.After > 0 && ob >= rule.After:
			return true, fmt.Sprintf("UPS %s on battery for %d s (stage after %d s)", s.Name, secs(ob), secs(rule.After))
		case rule.BelowCharge > 0 && s.Charge >= 0 && s.Charge < rule.BelowCharge:
			return true, fmt.Sprintf("UPS %s on battery with charge %.0f %% < %.0f %%", s.Name, s.Charge, rule.BelowCharge)
		case rule.BelowRuntime > 0 && s.Runtime >= 0 && s.Runtime < rule.BelowRuntime:
			return true, fmt.Sprintf("UPS %s on battery with runtime %d s < %d s", s.Name, secs(s.Runtime), secs(rule.BelowRuntime))
		}
	}
	return false, ""
}

// monitorOnly reports whether the UPS's rule gives it power value 0 (it is
// watched but feeds nothing). A UPS without a rule feeds the site.
func monitorOnly(cfg Config, name string) bool {
	for _, r := range cfg.UPS {
		if r.Name == name {
			return r.PowerValue == 0
		}
	}
	return false
}
