package policy

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/sundown-ups/sundown/internal/power"
)

// Input is what Decide looks at besides the configuration.
type Input struct {
	Now    time.Time
	States []power.State // one per UPS, matched to the rules by Name
	// PlanDuration is the estimated duration of the shutdown plan, the
	// first term of the runtime budget. 0 (or negative) counts as 0.
	PlanDuration time.Duration
	// PlanSource says where PlanDuration comes from ("config", "plan
	// estimate"); it is named in reasons when not empty.
	PlanSource string
}

// Kind is the outcome of a decision.
type Kind int

const (
	// None: every UPS supplies, nothing to report.
	None Kind = iota
	// Warn: something is wrong (on battery, comm lost, a critical UPS covered
	// by redundancy, …) but the supply is still enough.
	Warn
	// Shutdown: the supply is below MinSupplies; start the shutdown. Latched.
	Shutdown
)

// String returns "none", "warn" or "shutdown".
func (k Kind) String() string {
	switch k {
	case None:
		return "none"
	case Warn:
		return "warn"
	case Shutdown:
		return "shutdown"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Verdict is the judgement on one UPS.
type Verdict struct {
	Name       string
	PowerValue int
	// Critical: the UPS is judged not to supply power (see the package
	// rules). A monitored-only UPS (PowerValue 0) can be critical too.
	Critical bool
	// Supplying: the UPS counts towards the supply (not critical and
	// PowerValue > 0).
	Supplying bool
	// Reason explains the verdict: the critical rules that fired, else the
	// warnings, else the plain state ("on line power").
	Reason string
	// ETA is the time until this UPS would turn critical if conditions
	// persist: 0 when critical, -1 when no rule would fire.
	ETA time.Duration
}

// Decision is the outcome of Decide.
type Decision struct {
	Kind Kind
	// At is when Shutdown was first decided; zero unless Kind is Shutdown.
	At time.Time
	// Reasons are human sentences naming the UPS, numbers in whole seconds.
	// For Shutdown: the critical UPSes' reasons (and the supply count when
	// there are several UPSes). For Warn: what is wrong. Empty for None.
	Reasons []string
	// ETA >= 0 is the predicted time until Shutdown if conditions persist;
	// 0 for Shutdown; -1 when none is predicted.
	ETA time.Duration
	// ETAReason explains the ETA, e.g. "UPS main: runtime 515 s, budget
	// plan 300 s + margin 120 s"; ETAIf is the condition, e.g. "power stays
	// out". Both empty when ETA is -1 or Kind is Shutdown.
	ETAReason string
	ETAIf     string
	// Supply is the sum of the PowerValue of the supplying UPSes, and
	// MinSupplies the configured minimum (after defaults).
	Supply      int
	MinSupplies int
	// UPS holds one verdict per configured UPS, in config order.
	UPS []Verdict
}

// String summarises the decision on one line, e.g.
//
//	shutdown: UPS main: runtime 280 s < plan 300 s + margin 120 s
//	warn, shutdown in 95 s if power stays out: UPS main: runtime 515 s, budget plan 300 s + margin 120 s; UPS main: on battery for 5 s (charge 97 %, runtime 515 s)
//	ok
func (d Decision) String() string {
	var b strings.Builder
	switch d.Kind {
	case None:
		b.WriteString("ok")
	default:
		b.WriteString(d.Kind.String())
	}
	sep := ": "
	if d.Kind != Shutdown && d.ETA >= 0 {
		fmt.Fprintf(&b, ", shutdown in %d s", power.Seconds(d.ETA))
		if d.ETAIf != "" {
			b.WriteString(" if " + d.ETAIf)
		}
		if d.ETAReason != "" {
			b.WriteString(": " + d.ETAReason)
			sep = "; "
		}
	}
	if len(d.Reasons) > 0 {
		b.WriteString(sep + strings.Join(d.Reasons, "; "))
	}
	return b.String()
}

// Decide returns the decision for the input. It is pure: same arguments,
// same result; it reads no clock.
//
// If prev.Kind is Shutdown, prev is returned unchanged (the latch).
//
// If the configuration cannot be satisfied (its total power value is below
// MinSupplies, e.g. no UPS or every UPS monitored only; Check reports it),
// Decide does not shut down merely because of that: it warns about the
// configuration, and decides Shutdown only when a UPS with a power value is
// critical.
func Decide(cfg Config, in Input, prev Decision) Decision {
	if prev.Kind == Shutdown {
		return prev
	}
	cfg = cfg.WithDefaults()
	states := make(map[string]power.State, len(in.States))
	for _, s := range in.States {
		if _, dup := states[s.Name]; !dup {
			states[s.Name] = s
		}
	}

	d := Decision{Kind: None, ETA: -1, MinSupplies: cfg.MinSupplies}
	evals := make([]eval, len(cfg.UPS))
	total := 0
	for i, r := range cfg.UPS {
		s, ok := states[r.Name]
		if !ok {
			s = power.State{Name: r.Name, Charge: power.Unknown, Runtime: power.UnknownRuntime, Load: power.Unknown}
		}
		e := evaluate(cfg, r, s, in)
		evals[i] = e
		pv := max(r.PowerValue, 0)
		total += pv
		v := Verdict{Name: r.Name, PowerValue: r.PowerValue, Critical: e.critical(), ETA: e.eta}
		v.Supplying = !v.Critical && pv > 0
		switch {
		case v.Critical:
			v.Reason = strings.Join(e.crit, "; ")
			v.ETA = 0
		case len(e.warn) > 0:
			v.Reason = strings.Join(e.warn, "; ")
		default:
			v.Reason = e.fine
		}
		if v.Supplying {
			d.Supply += pv
		}
		d.UPS = append(d.UPS, v)
	}
	unsatisfiable := total < cfg.MinSupplies

	// Shutdown?
	critWithPower := false
	for i, e := range evals {
		if e.critical() && cfg.UPS[i].PowerValue > 0 {
			critWithPower = true
		}
	}
	shutdown := d.Supply < cfg.MinSupplies
	if unsatisfiable {
		shutdown = critWithPower
	}
	if shutdown {
		d.Kind, d.At, d.ETA = Shutdown, in.Now, 0
		for i, e := range evals {
			if e.critical() && cfg.UPS[i].PowerValue > 0 {
				d.Reasons = append(d.Reasons, prefixed(cfg.UPS[i].Name, e.crit)...)
			}
		}
		if len(cfg.UPS) > 1 || cfg.MinSupplies > 1 {
			d.Reasons = append(d.Reasons, fmt.Sprintf("supply %d < min supplies %d", d.Supply, cfg.MinSupplies))
		}
		if unsatisfiable {
			d.Reasons = append(d.Reasons, configReason(total, cfg.MinSupplies))
		}
		return d
	}

	// Warn or None: critical UPSes covered by redundancy first, then warnings.
	covered := false
	for i, e := range evals {
		if !e.critical() {
			continue
		}
		name := cfg.UPS[i].Name
		if cfg.UPS[i].PowerValue <= 0 {
			d.Reasons = append(d.Reasons, prefixed(name+" (monitored only)", e.crit)...)
			continue
		}
		d.Reasons = append(d.Reasons, prefixed(name, e.crit)...)
		covered = true
	}
	if covered && !unsatisfiable {
		d.Reasons = append(d.Reasons, fmt.Sprintf("supply %d still covers min supplies %d", d.Supply, cfg.MinSupplies))
	}
	for i, e := range evals {
		d.Reasons = append(d.Reasons, prefixed(cfg.UPS[i].Name, e.warn)...)
	}
	if unsatisfiable {
		d.Reasons = append(d.Reasons, configReason(total, cfg.MinSupplies))
	}
	if len(d.Reasons) > 0 {
		d.Kind = Warn
	}

	// ETA: replay the per-UPS ETAs in time order until the supply falls short.
	type drop struct {
		at     time.Duration
		pv     int
		why, c string
	}
	var drops []drop
	for i, e := range evals {
		pv := cfg.UPS[i].PowerValue
		if e.critical() || pv <= 0 || e.eta < 0 {
			continue
		}
		drops = append(drops, drop{e.eta, pv, "UPS " + cfg.UPS[i].Name + ": " + e.etaWhy, e.etaIf})
	}
	sort.SliceStable(drops, func(a, b int) bool { return drops[a].at < drops[b].at })
	supply := d.Supply
	for _, x := range drops {
		supply -= x.pv
		if supply < cfg.MinSupplies || unsatisfiable {
			d.ETA, d.ETAReason, d.ETAIf = x.at, x.why, x.c
			break
		}
	}
	return d
}

func configReason(total, min int) string {
	return fmt.Sprintf("configuration error: total power value %d is below min supplies %d; shutting down only when a powering UPS is critical", total, min)
}

func prefixed(name string, texts []string) []string {
	out := make([]string, len(texts))
	for i, t := range texts {
		out[i] = "UPS " + name + ": " + t
	}
	return out
}

// eval is the judgement on one UPS before it is weighed with the others.
type eval struct {
	crit   []string      // critical rules that fired (not supplying)
	warn   []string      // warnings
	fine   string        // the plain state when neither
	eta    time.Duration // time until the first critical rule would fire; -1 none
	etaWhy string        // what that rule looks at
	etaIf  string        // the condition under which it fires
}

func (e *eval) critical() bool { return len(e.crit) > 0 }

func (e *eval) critf(format string, a ...any) { e.crit = append(e.crit, fmt.Sprintf(format, a...)) }
func (e *eval) warnf(format string, a ...any) { e.warn = append(e.warn, fmt.Sprintf(format, a...)) }

// due records that a rule would fire after d (if conditions persist), keeping
// the earliest.
func (e *eval) due(d time.Duration, cond, format string, a ...any) {
	d = max(d, 0)
	if e.eta < 0 || d < e.eta {
		e.eta, e.etaIf, e.etaWhy = d, cond, fmt.Sprintf(format, a...)
	}
}

func secs(d time.Duration) int64 { return power.Seconds(d) }

// evaluate applies the rules of the package comment to one UPS.
func evaluate(cfg Config, r UPSRule, s power.State, in Input) eval {
	e := eval{eta: -1}
	now := in.Now
	if !s.Reached() {
		what := "no answer yet"
		if s.Comm == power.CommStale || s.Comm == power.CommLost {
			what = s.Comm.String() + ": " + s.CommErr
		}
		e.warnf("never reached (%s); counted as supplying until it answers", what)
		return e
	}

	st := s.Status
	ob, cal := st.Has(power.OB), st.Has(power.CAL)
	silentFor := s.SilentFor(now)
	silent := s.Comm != power.CommOK || (r.Deadtime > 0 && silentFor >= r.Deadtime)

	if st.Has(power.FSD) {
		e.critf("forced shutdown (FSD) is set")
	}

	if st.Has(power.OFF) {
		offFor := since(now, s.OffSince)
		switch {
		case r.OffGrace < 0:
			e.warnf("reports OFF (the OFF rule is disabled)")
		case offFor >= r.OffGrace:
			e.critf("OFF for %d s (grace %d s): not supplying power", secs(offFor), secs(r.OffGrace))
		default:
			e.warnf("OFF for %d s; not supplying after %d s", secs(offFor), secs(r.OffGrace))
			e.due(r.OffGrace-offFor, "it stays OFF", "OFF for %d s, grace %d s", secs(offFor), secs(r.OffGrace))
		}
	}

	if ob && cal {
		if st.Has(power.LB) {
			e.warnf("calibrating on battery and reports LB; not critical while calibrating (as upsmon)")
		} else {
			e.warnf("calibrating on battery (CAL); battery rules suspended")
		}
	}
	if ob && !cal {
		batteryRules(&e, cfg, r, s, in, silentFor)
	}

	if silent {
		var last []string
		if ob {
			last = append(last, "on battery")
		}
		if st.Has(power.OFF) && r.OffGrace >= 0 {
			last = append(last, "OFF")
		}
		if st.Has(power.BYPASS) {
			last = append(last, "on bypass")
		}
		if cal {
			last = append(last, "calibrating")
		}
		if st.Has(power.ALARM) && r.AlarmCritical {
			last = append(last, "with an alarm")
		}
		comm := commDesc(s)
		switch {
		case len(last) == 0:
			e.warnf("no data for %d s (%s); last seen on line power, still counted as supplying", secs(silentFor), comm)
		case silentFor >= r.Deadtime:
			e.critf("no data for %d s (%s), deadtime %d s, last seen %s", secs(silentFor), comm, secs(r.Deadtime), strings.Join(last, ", "))
		default:
			e.warnf("no data for %d s (%s); last seen %s, not supplying after deadtime %d s", secs(silentFor), comm, strings.Join(last, ", "), secs(r.Deadtime))
			e.due(r.Deadtime-silentFor, "it stays silent", "silent for %d s, last seen %s, deadtime %d s", secs(silentFor), strings.Join(last, ", "), secs(r.Deadtime))
		}
	}

	if st.Has(power.RB) {
		e.warnf("battery needs to be replaced (RB)")
	}
	if st.Has(power.ALARM) && !(ob && r.AlarmCritical) {
		e.warnf("alarm: %s", alarmText(s))
	}
	if st.Has(power.BYPASS) {
		e.warnf("on bypass: no battery protection")
	}
	if cal && !ob {
		e.warnf("calibrating (CAL)")
	}
	if st.Has(power.OVER) {
		e.warnf("overloaded")
	}
	e.fine = describe(s)
	return e
}

// batteryRules applies the on-battery rules (not during calibration).
func batteryRules(e *eval, cfg Config, r UPSRule, s power.State, in Input, silentFor time.Duration) {
	st := s.Status
	const out = "power stays out"
	if st.Has(power.LB) {
		e.critf("on battery with low battery (LB)")
	}
	if r.AlarmCritical && st.Has(power.ALARM) {
		e.critf("alarm while on battery: %s", alarmText(s))
	}

	obFor := s.OnBatteryFor(in.Now)
	wait := max(cfg.Debounce-obFor, 0) // debounce still to run
	debounceNote := ""
	if wait > 0 {
		debounceNote = fmt.Sprintf(", once on battery for %d s (debounce)", secs(cfg.Debounce))
	}

	if s.Runtime >= 0 {
		rt := max(s.Runtime-silentFor, 0)
		rtDesc := fmt.Sprintf("runtime %d s", secs(rt))
		if silentFor >= time.Second {
			rtDesc += fmt.Sprintf(" (projected from %d s read %d s ago)", secs(s.Runtime), secs(silentFor))
		}
		plan := max(in.PlanDuration, 0)
		budget := plan + cfg.RuntimeMargin
		src := ""
		if in.PlanSource != "" {
			src = " (from " + in.PlanSource + ")"
		}
		budgetDesc := fmt.Sprintf("plan %d s%s + margin %d s", secs(plan), src, secs(cfg.RuntimeMargin))
		switch {
		case rt < budget && wait == 0:
			e.critf("%s < %s", rtDesc, budgetDesc)
		case rt < budget:
			e.due(wait, out, "%s < %s%s", rtDesc, budgetDesc, debounceNote)
		default:
			e.due(max(rt-budget, wait), out, "%s, budget %s", rtDesc, budgetDesc)
		}
		if r.MinRuntime > 0 {
			switch {
			case rt < r.MinRuntime && wait == 0:
				e.critf("%s < minimum %d s", rtDesc, secs(r.MinRuntime))
			case rt < r.MinRuntime:
				e.due(wait, out, "%s < minimum %d s%s", rtDesc, secs(r.MinRuntime), debounceNote)
			default:
				e.due(max(rt-r.MinRuntime, wait), out, "%s, minimum %d s", rtDesc, secs(r.MinRuntime))
			}
		}
	} else {
		e.warnf("battery.runtime unknown: the runtime budget cannot be checked")
	}

	if r.MinCharge > 0 && s.Charge >= 0 && s.Charge < r.MinCharge {
		if wait == 0 {
			e.critf("charge %.0f %% < minimum %.0f %%", s.Charge, r.MinCharge)
		} else {
			e.due(wait, out, "charge %.0f %% < minimum %.0f %%%s", s.Charge, r.MinCharge, debounceNote)
		}
	}

	if d := cfg.OnBatteryDelay; d > 0 {
		if left := max(d-obFor, wait); left == 0 {
			e.critf("on battery for %d s (on-battery delay %d s)", secs(obFor), secs(d))
		} else {
			e.due(left, out, "on battery for %d s, on-battery delay %d s", secs(obFor), secs(d))
		}
	}

	if !e.critical() {
		msg := fmt.Sprintf("on battery for %d s", secs(obFor))
		if b := s.Battery(); b != "" {
			msg += " (" + b + ")"
		}
		e.warnf("%s", msg)
	}
}

func since(now, t time.Time) time.Duration {
	if t.IsZero() {
		return 0
	}
	return max(now.Sub(t), 0)
}

func commDesc(s power.State) string {
	switch s.Comm {
	case power.CommOK:
		return "no reading"
	case power.CommStale:
		return "data stale: " + s.CommErr
	default:
		return "comm lost: " + s.CommErr
	}
}

func alarmText(s power.State) string {
	if s.Alarm != "" {
		return s.Alarm
	}
	return "ALARM (no ups.alarm text)"
}

func describe(s power.State) string {
	var what string
	switch {
	case s.Has(power.OL):
		what = "on line power"
	case s.Status.IsZero():
		what = "status unknown"
	default:
		what = "status " + s.Status.String()
	}
	if b := s.Battery(); b != "" {
		what += " (" + b + ")"
	}
	return what
}
