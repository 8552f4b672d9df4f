package api

import (
	"strings"
	"time"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/policy"
	"github.com/sundown-ups/sundown/internal/power"
)

// APIVersion is the version of the JSON contract served under /api/v1.
const APIVersion = 1

// MaxStatusEvents bounds the events a Status carries.
const MaxStatusEvents = 50

// Status is the JSON body of GET /api/v1/status and of every "status"
// event of GET /api/v1/events. Times are RFC 3339 (UTC offsets kept as the
// daemon produced them); optional times are left out when unknown;
// durations are seconds (float); a number that is not known is null.
type Status struct {
	APIVersion int             `json:"api_version"`
	At         time.Time       `json:"at"`
	UPS        []UPS           `json:"ups"`
	Decision   Decision        `json:"decision"`
	Plan       *Plan           `json:"plan"`     // null before the first plan, or without targets
	Shutdown   *Shutdown       `json:"shutdown"` // null until a shutdown or drill ran
	Restore    *Restore        `json:"restore"`  // null unless something that went down has not come back
	Events     []Event         `json:"events"`   // newest first, at most MaxStatusEvents
	Channels   []ChannelHealth `json:"channels"` // notification channels; [] without any
}

// UPS is one monitored UPS.
type UPS struct {
	Name string `json:"name"`
	// Model is device.mfr and device.model (or ups.model) when reported.
	Model string `json:"model,omitempty"`
	// Summary is a short phrase: "on line", "on battery", "on battery, low
	// battery", "forced shutdown", "off", "not reached", "communication
	// lost (last seen on battery)", …
	Summary string `json:"summary"`
	// Status holds the ups.status tokens of the last good reading, known
	// ones in canonical order (ALARM FSD OL OB LB …), unknown ones after.
	Status         []string `json:"status"`
	OnLine         bool     `json:"on_line"`
	OnBattery      bool     `json:"on_battery"`
	LowBattery     bool     `json:"low_battery"`
	ChargePercent  *float64 `json:"charge_percent"`
	RuntimeSeconds *float64 `json:"runtime_s"`
	LoadPercent    *float64 `json:"load_percent"`
	Alarm          string   `json:"alarm,omitempty"`
	ReplaceBattery bool     `json:"replace_battery"`
	// Comm is "unknown", "ok", "stale" or "lost".
	Comm      string    `json:"comm"`
	CommError string    `json:"comm_error,omitempty"`
	CommSince time.Time `json:"comm_since,omitzero"`
	// Reached: the UPS answered with a good reading at least once.
	Reached           bool      `json:"reached"`
	LastSeen          time.Time `json:"last_seen,omitzero"`
	OnBatterySince    time.Time `json:"on_battery_since,omitzero"`
	Critical          bool      `json:"critical"`
	Supplying         bool      `json:"supplying"`
	PowerValue        int       `json:"power_value"`
	Verdict           string    `json:"verdict,omitempty"`
	CriticalInSeconds *float64  `json:"critical_in_s"` // null: no rule would fire
}

// Decision is the policy's current decision.
type Decision struct {
	// Kind is "none", "warn" or "shutdown".
	Kind string `json:"kind"`
	// Summary is the decision on one line, as the daemon logs it.
	Summary string    `json:"summary"`
	At      time.Time `json:"at,omitzero"` // when shutdown was decided
	Reasons []string  `json:"reasons"`
	// ETASeconds is the predicted time until a shutdown if conditions
	// persist (0 for a shutdown), null when none is predicted.
	ETASeconds  *float64 `json:"eta_s"`
	ETAReason   string   `json:"eta_reason,omitempty"`
	ETAIf       string   `json:"eta_if,omitempty"`
	Supply      int      `json:"supply"`
	MinSupplies int      `json:"min_supplies"`
}

// Plan summarizes the plan the daemon would run now.
type Plan struct {
	Steps             int       `json:"steps"`
	MakespanSeconds   float64   `json:"makespan_s"`
	LowerBoundSeconds float64   `json:"lower_bound_s"`
	Problems          []string  `json:"problems"`
	Built             time.Time `json:"built,omitzero"`
	// Targets says whether the last discovery reached each target.
	Targets []Target `json:"targets"`
}

// Restore is a restore that is due.
type Restore struct {
	// Auto: the daemon starts it by itself once Waiting is empty.
	Auto bool `json:"auto"`
	// Waiting is the condition not met yet, "" when it can run (or runs).
	Waiting string `json:"waiting,omitempty"`
}

// Target is one configured target as the last discovery saw it.
type Target struct {
	Name      string `json:"name"`
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	Guests    int    `json:"guests"`
	Hosts     int    `json:"hosts"`
}

// Shutdown is a running or finished shutdown, shed stage, drill or
// restore.
type Shutdown struct {
	// Kind is "shutdown", "shed", "drill" or "restore".
	Kind string `json:"kind"`
	// State is "planning", "running", "done" or "stopped".
	State           string    `json:"state"`
	RunID           string    `json:"run_id"`
	Resumed         bool      `json:"resumed"`
	DryRun          bool      `json:"dry_run"`
	Started         time.Time `json:"started,omitzero"`
	Ended           time.Time `json:"ended,omitzero"`
	EstimateSeconds float64   `json:"estimate_s"`
	Steps           []Step    `json:"steps"`
	Notes           []string  `json:"notes"`
	// Counts of steps by state: pending, running, done, failed, skipped.
	Counts map[string]int `json:"counts"`
}

// Step is one step of a shutdown.
type Step struct {
	ID    int    `json:"id"`
	Key   string `json:"key"`
	Name  string `json:"name"`
	Group string `json:"group,omitempty"`
	Kind  string `json:"kind"`
	// State is "pending", "running", "done", "failed" or "skipped".
	State string `json:"state"`
	// Outcome is "", "done", "already-off", "escalated", "failed" or
	// "skipped".
	Outcome string    `json:"outcome,omitempty"`
	Action  string    `json:"action,omitempty"`
	Error   string    `json:"error,omitempty"`
	Start   time.Time `json:"start,omitzero"`
	End     time.Time `json:"end,omitzero"`
	// ElapsedSeconds is End-Start, or At-Start while running; null before
	// the step started.
	ElapsedSeconds *float64 `json:"elapsed_s"`
}

// Event is one power event.
type Event struct {
	At      time.Time `json:"at"`
	UPS     string    `json:"ups"`
	Type    string    `json:"type"` // NUT notify type: ONBATT, ONLINE, LOWBATT, COMMBAD, …
	Message string    `json:"message"`
}

// ChannelHealth is the health of one notification channel (e-mail,
// webhook, …). The daemon adapts its notifiers to it.
type ChannelHealth struct {
	Name        string    `json:"name"`
	Down        bool      `json:"down"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	Failed      int       `json:"failed"`  // notifications given up on
	Pending     int       `json:"pending"` // notifications queued or being retried
}

// StatusOf builds the public view of a snapshot and the notification
// channels' health.
func StatusOf(s app.Snapshot, channels []ChannelHealth) Status {
	st := Status{
		APIVersion: APIVersion,
		At:         s.At,
		UPS:        []UPS{},
		Decision:   decisionOf(s.Decision),
		Events:     []Event{},
		Channels:   []ChannelHealth{},
	}
	verdicts := map[string]policy.Verdict{}
	for _, v := range s.Decision.UPS {
		verdicts[v.Name] = v
	}
	for _, u := range s.UPS {
		st.UPS = append(st.UPS, upsOf(u, verdicts[u.Name], s.At))
	}
	if s.Plan != nil {
		p := s.Plan
		st.Plan = &Plan{
			Steps:             p.Steps,
			MakespanSeconds:   p.Makespan.Seconds(),
			LowerBoundSeconds: p.LowerBound.Seconds(),
			Problems:          orEmpty(p.Problems),
			Built:             p.Built,
			Targets:           []Target{},
		}
		for _, t := range p.Targets {
			st.Plan.Targets = append(st.Plan.Targets, Target{Name: t.Name, Reachable: t.Reachable, Error: t.Err, Guests: t.Guests, Hosts: t.Hosts})
		}
	}
	if s.Shutdown != nil {
		st.Shutdown = shutdownOf(s.Shutdown, s.At)
	}
	if r := s.Restore; r != nil {
		st.Restore = &Restore{Auto: r.Auto, Waiting: r.Waiting}
	}
	evs := s.Events
	if len(evs) > MaxStatusEvents {
		evs = evs[len(evs)-MaxStatusEvents:]
	}
	for i := len(evs) - 1; i >= 0; i-- {
		e := evs[i]
		st.Events = append(st.Events, Event{At: e.At, UPS: e.UPS, Type: string(e.Type), Message: e.Message})
	}
	st.Channels = append(st.Channels, channels...)
	return st
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return append([]string(nil), s...)
}

func seconds(d time.Duration) *float64 {
	v := d.Seconds()
	return &v
}

func percent(v float64) *float64 {
	if v < 0 {
		return nil
	}
	return &v
}

func decisionOf(d policy.Decision) Decision {
	out := Decision{
		Kind:        d.Kind.String(),
		Summary:     d.String(),
		At:          d.At,
		Reasons:     orEmpty(d.Reasons),
		Supply:      d.Supply,
		MinSupplies: d.MinSupplies,
	}
	if d.ETA >= 0 {
		out.ETASeconds = seconds(d.ETA)
		out.ETAReason, out.ETAIf = d.ETAReason, d.ETAIf
	}
	return out
}

func upsOf(u power.State, v policy.Verdict, now time.Time) UPS {
	out := UPS{
		Name:           u.Name,
		Model:          model(u.Vars),
		Summary:        summary(u),
		Status:         append(u.Status.Tokens(), u.Unknown...),
		OnLine:         u.OnLine(),
		OnBattery:      u.OnBattery(),
		LowBattery:     u.LowBattery(),
		ChargePercent:  percent(u.Charge),
		LoadPercent:    percent(u.Load),
		Alarm:          u.Alarm,
		ReplaceBattery: u.ReplaceBattery,
		Comm:           u.Comm.String(),
		CommError:      u.CommErr,
		CommSince:      u.CommSince,
		Reached:        u.Reached(),
		LastSeen:       u.LastSeen,
		OnBatterySince: u.OBSince,
		Critical:       v.Critical,
		Supplying:      v.Supplying,
		PowerValue:     v.PowerValue,
		Verdict:        v.Reason,
	}
	if out.Status == nil {
		out.Status = []string{}
	}
	if u.Runtime >= 0 {
		out.RuntimeSeconds = seconds(u.Runtime)
	}
	if v.Name != "" && v.ETA >= 0 {
		out.CriticalInSeconds = seconds(v.ETA)
	}
	if !u.OnBattery() {
		out.OnBatterySince = time.Time{}
	}
	return out
}

func model(vars map[string]string) string {
	m := vars["device.model"]
	if m == "" {
		m = vars["ups.model"]
	}
	mfr := vars["device.mfr"]
	if mfr == "" {
		mfr = vars["ups.mfr"]
	}
	return strings.TrimSpace(mfr + " " + m)
}

// summary says in a few words what the UPS is doing.
func summary(u power.State) string {
	if !u.Reached() {
		switch u.Comm {
		case power.CommUnknown:
			return "not reached yet"
		default:
			return "not reached"
		}
	}
	var parts []string
	switch {
	case u.Has(power.FSD):
		parts = append(parts, "forced shutdown")
	}
	switch {
	case u.Has(power.OFF):
		parts = append(parts, "off")
	case u.OnBattery():
		parts = append(parts, "on battery")
	case u.Has(power.BYPASS):
		parts = append(parts, "on bypass")
	case u.OnLine():
		parts = append(parts, "on line")
	}
	if u.LowBattery() {
		parts = append(parts, "low battery")
	}
	if u.Has(power.ALARM) {
		parts = append(parts, "alarm")
	}
	if len(parts) == 0 {
		parts = append(parts, "status "+strings.Join(append(u.Status.Tokens(), u.Unknown...), " "))
	}
	s := strings.Join(parts, ", ")
	switch u.Comm {
	case power.CommStale:
		return "data stale (last seen " + s + ")"
	case power.CommLost:
		return "communication lost (last seen " + s + ")"
	}
	return s
}

func shutdownOf(s *app.ShutdownStatus, now time.Time) *Shutdown {
	out := &Shutdown{
		Kind:            s.Kind,
		State:           s.State,
		RunID:           s.RunID,
		Resumed:         s.Resumed,
		DryRun:          s.DryRun,
		Started:         s.Started,
		Ended:           s.Ended,
		EstimateSeconds: s.Estimate.Seconds(),
		Steps:           []Step{},
		Notes:           orEmpty(s.Notes),
		Counts:          map[string]int{"pending": 0, "running": 0, "done": 0, "failed": 0, "skipped": 0},
	}
	for _, st := range s.Steps {
		v := Step{
			ID: st.ID, Key: st.Key, Name: st.Name, Group: st.Group, Kind: st.Kind,
			State: st.State, Outcome: string(st.Outcome), Action: st.Action, Error: st.Err,
			Start: st.Start, End: st.End,
		}
		switch {
		case st.Start.IsZero():
		case !st.End.IsZero():
			v.ElapsedSeconds = seconds(max(st.End.Sub(st.Start), 0))
		default:
			v.ElapsedSeconds = seconds(max(now.Sub(st.Start), 0))
		}
		out.Counts[st.State]++
		out.Steps = append(out.Steps, v)
	}
	return out
}
