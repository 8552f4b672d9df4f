package plan

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sundown-ups/sundown/internal/provider"
)

// RestoreSpec tunes RestorePlan.
type RestoreSpec struct {
	Caps Caps
	// HostTimeout bounds waking a host until its hypervisor answers
	// (default 15 min: a server's firmware can take minutes);
	// MaintenanceTimeout bounds leaving maintenance mode (default 5 min);
	// GuestTimeout bounds powering a guest on until it is ready (default
	// 10 min).
	HostTimeout, MaintenanceTimeout, GuestTimeout time.Duration
	// GroupTimeout overrides GuestTimeout for the guests of a group (a
	// group with a slow readiness check).
	GroupTimeout map[string]time.Duration
	// History holds learned durations by restore step key.
	History map[string]time.Duration
	// Only restricts the restore to these groups' guests (hosts are woken
	// whenever a guest needs them); empty means everything.
	Only []string
}

// Restore defaults.
const (
	DefaultRestoreHostTimeout  = 15 * time.Minute
	DefaultRestoreMaintTimeout = 5 * time.Minute
	DefaultRestoreGuestTimeout = 10 * time.Minute
)

// RestorePlan reverses the plan of a finished run (its journal snapshot):
// every edge "A stops before B" becomes "B' starts before A'", so hosts
// come back first (the host that carried sundown first of all), then leave
// maintenance mode, then the guests start in the reverse order of their
// shutdown (with systemd's meaning of depends_on: what a group depends on
// starts before it). Group markers stay; hooks are dropped (they were
// sources of the shutdown, so sinks here, and order nothing).
//
// Only what the run turned off comes back: a guest whose step ended done or
// escalated (or failed: it may be half down), a host it shut down, a
// maintenance mode it entered. Steps for the rest stay in the plan, so the
// order through them holds, as NoOp steps with a Note saying why ("was
// already off before the shutdown: left off").
func RestorePlan(run FinishedRun, spec RestoreSpec) (*Plan, error) {
	if len(run.Steps) == 0 {
		return nil, fmt.Errorf("restore: run %s has no plan in the journal (written by an older sundown?)", run.ID)
	}
	spec.HostTimeout = orDefault(spec.HostTimeout, DefaultRestoreHostTimeout)
	spec.MaintenanceTimeout = orDefault(spec.MaintenanceTimeout, DefaultRestoreMaintTimeout)
	spec.GuestTimeout = orDefault(spec.GuestTimeout, DefaultRestoreGuestTimeout)
	only := map[string]bool{}
	for _, g := range spec.Only {
		only[g] = true
	}

	snap := run.Steps
	n := len(snap)
	keep := make([]bool, n) // hooks are dropped
	kinds := make([]StepKind, n)
	for i, s := range snap {
		k, ok := parseStepKind(s.Kind)
		if !ok {
			return nil, fmt.Errorf("restore: run %s: step %s has unknown kind %q", run.ID, s.Key, s.Kind)
		}
		for _, d := range s.Deps {
			if d < 0 || d >= i {
				return nil, fmt.Errorf("restore: run %s: step %s depends on %d: not a step before it", run.ID, s.Key, d)
			}
		}
		kinds[i], keep[i] = k, k != StepHook
	}
	// Restore IDs: the shutdown's topological order reversed, hooks left
	// out. Dependencies reverse: j depended on i → i' depends on j'.
	newID := make([]int, n)
	id := 0
	for i := n - 1; i >= 0; i-- {
		newID[i] = -1
		if keep[i] {
			newID[i] = id
			id++
		}
	}
	p := &Plan{Steps: make([]Step, id), Caps: spec.Caps.WithDefaults()}
	for i := n - 1; i >= 0; i-- {
		if !keep[i] {
			continue
		}
		s := snap[i]
		st := Step{ID: newID[i], Name: s.Name, Group: s.Group, Target: s.Target, HostID: s.HostID, HostName: s.HostName, GuestID: s.GuestID}
		ended, ok := run.Outcomes[s.Key]
		wasOff := ok && turnedOff(ended.Outcome)
		rest := strings.TrimPrefix(s.Key, s.Kind+":")
		switch kinds[i] {
		case StepGroup:
			st.Kind = StepGroup
			st.Key = s.Key
		case StepGuest:
			st.Kind, st.Key = StepGuestStart, StepGuestStart.String()+":"+rest
			st.Timeout = spec.GuestTimeout
			if t, ok := spec.GroupTimeout[s.Group]; ok && t > 0 {
				st.Timeout = t
			}
			switch {
			case len(only) > 0 && !only[s.Group]:
				st.NoOp, st.Note = true, "not in this restore"
			case !ok:
				st.NoOp, st.Note = true, "not reached by the shutdown: left as it is"
			case ended.Outcome == OutcomeAlreadyOff:
				st.NoOp, st.Note = true, "was off before the shutdown: left off"
			case strings.Contains(s.Note, "suspended"):
				st.NoOp, st.Note = true, "was suspended before the shutdown: left off"
			case !wasOff:
				st.NoOp, st.Note = true, "the shutdown left it as it was ("+string(ended.Outcome)+")"
			case ended.Action == Suspend.String():
				st.Note = "resumes from suspend"
			}
		case StepHostShutdown:
			st.Kind, st.Key = StepHostWake, StepHostWake.String()+":"+rest
			st.Timeout = spec.HostTimeout
			if !wasOff {
				st.NoOp, st.Note = true, "the shutdown did not turn it off"
			}
		case StepHostMaintenance:
			st.Kind, st.Key = StepHostExitMaintenance, StepHostExitMaintenance.String()+":"+rest
			st.Timeout = spec.MaintenanceTimeout
			if !ok || ended.Outcome != OutcomeDone {
				st.NoOp, st.Note = true, "the shutdown did not enter maintenance mode"
			}
		}
		st.Estimate = st.Timeout
		if h, ok := spec.History[st.Key]; ok && h < st.Timeout {
			st.Estimate, st.Learned = h, true
		}
		if st.NoOp {
			st.Estimate = 0
		}
		p.Steps[st.ID] = st
	}
	// Reversed edges, ascending and deduplicated.
	for j := range snap {
		if !keep[j] {
			continue
		}
		for _, i := range snap[j].Deps {
			if keep[i] {
				p.Steps[newID[i]].Deps = append(p.Steps[newID[i]].Deps, newID[j])
			}
		}
	}
	for i := range p.Steps {
		d := p.Steps[i].Deps
		sortInts(d)
		p.Steps[i].Deps = dedupSorted(d)
	}
	// A restore of part of the site wakes only the hosts its guests need.
	if len(only) > 0 {
		need := map[string]bool{}
		for _, st := range p.Steps {
			if st.Kind == StepGuestStart && !st.NoOp {
				need[st.Target+"/"+st.HostID] = true
			}
		}
		for i := range p.Steps {
			st := &p.Steps[i]
			if (st.Kind == StepHostWake || st.Kind == StepHostExitMaintenance) && !st.NoOp && !need[st.Target+"/"+st.HostID] {
				st.NoOp, st.Note, st.Estimate = true, "no guest of this restore runs on it", 0
			}
		}
	}
	// Groups, for drills and the timeline.
	seen := map[string]int{}
	for _, st := range p.Steps {
		if st.Kind == StepGroup {
			seen[st.Name] = len(p.Groups)
			p.Groups = append(p.Groups, GroupInfo{Name: st.Name, Step: st.ID})
		}
	}
	for _, st := range p.Steps {
		if st.Kind == StepGuestStart {
			if g, ok := seen[st.Group]; ok {
				p.Groups[g].Guests++
			}
		}
	}
	return p, nil
}

var restoreVerb = map[StepKind]string{StepHostWake: "wake the host", StepHostExitMaintenance: "exit maintenance mode", StepGuestStart: "power on"}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func parseStepKind(s string) (StepKind, bool) {
	for k := StepHook; int(k) < len(stepKindNames); k++ {
		if stepKindNames[k] == s {
			return k, true
		}
	}
	return 0, false
}

func sortInts(a []int) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

func dedupSorted(a []int) []int {
	out := a[:0]
	for i, v := range a {
		if i == 0 || v != a[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// RestoreHooks connect a restore to what only the daemon knows: how to
// wake a host, how to tell it is up, and when a guest is ready.
type RestoreHooks struct {
	// Of is the run being undone (journal "of").
	Of string
	// Wake powers the host of a host-on step on (Wake-on-LAN, IPMI). It
	// returns false when no waker is configured for the host: the step then
	// waits for the host to boot by itself (BIOS "restore on AC power", or
	// the UPS power-cycling the load). Nil means no wakers at all.
	Wake func(ctx context.Context, s Step) (bool, error)
	// HostUp reports whether the host's hypervisor answers and shows the
	// host on. Required.
	HostUp func(ctx context.Context, s Step) (bool, error)
	// Ready checks a started guest (guest tools, a TCP port, an HTTP URL);
	// nil error means ready. Nil means a guest is ready once it is on.
	Ready func(ctx context.Context, s Step) error
	// Provider returns the provider of a target, connecting when needed
	// (the hosts were down); nil means ExecOptions' Targets only.
	Provider func(ctx context.Context, target string) (provider.Provider, error)
	// Poll is the pause between checks of HostUp and Ready (default 2 s).
	Poll time.Duration
}

// Restore runs a restore plan (RestorePlan) with the executor: the same
// caps, dispatcher, journal (the run is recorded with kind "restore" and
// the run it undoes), events and latch as a shutdown. Steps:
//
//   - host-on: when HostUp already says on → "already-on"; else Wake (when
//     a waker is configured), then HostUp every Poll until the timeout.
//   - host-exit-maint: ExitMaintenance, retried within the timeout.
//   - guest-on: Guest (on → "already-on"), PowerOnGuest, WaitGuest(on), then
//     Ready every Poll until the timeout. Dependents start when it ends,
//     ready or not: a guest that did not come back never holds the others
//     back; it is failed in the Report, which says what did not come back.
func Restore(ctx context.Context, p *Plan, targets Targets, hooks RestoreHooks, opts ExecOptions) (*Report, error) {
	if hooks.HostUp == nil {
		return nil, errors.New("restore: no HostUp check")
	}
	if hooks.Poll <= 0 {
		hooks.Poll = 2 * time.Second
	}
	opts.Kind = RunRestore
	opts.restore = &hooks
	opts.Only = nil
	return Execute(ctx, p, targets, opts)
}

// provider resolves a step's provider for a restore: the Targets map, else
// the hook (retried until the deadline: the target's host may still boot).
func (r *stepRun) restoreProvider(deadline time.Time) (provider.Provider, error) {
	if p := r.e.targets[r.st.Target]; p != nil {
		return p, nil
	}
	h := r.e.opts.restore
	if h.Provider == nil {
		return nil, fmt.Errorf("no provider for target %q", r.st.Target)
	}
	var prov provider.Provider
	err := r.retry(deadline, "connect", func(ctx context.Context) error {
		var err error
		prov, err = h.Provider(ctx, r.st.Target)
		return err
	})
	return prov, err
}

// pollUntil calls check every Poll until it reports true, fails with an
// error that is not retryable, or the deadline passes.
func (r *stepRun) pollUntil(deadline time.Time, what string, check func(context.Context) (bool, error)) error {
	e := r.e
	var last error
	for {
		ctx, cancel := context.WithDeadline(e.workCtx, deadline)
		ok, err := check(ctx)
		cancel()
		if e.stopped() {
			r.aborted = true
			return errStopped
		}
		if ok && err == nil {
			return nil
		}
		if err != nil {
			last = err
		}
		left := time.Until(deadline)
		if left <= 0 {
			if last == nil {
				last = context.DeadlineExceeded
			}
			return fmt.Errorf("%s: not within %s: %w", what, shortSeconds(r.st.Timeout), last)
		}
		if !e.sleep(min(e.opts.restore.Poll, left)) {
			r.aborted = true
			return errStopped
		}
	}
}

func (r *stepRun) hostOn() {
	st, e, h := r.st, r.e, r.e.opts.restore
	deadline := r.start.Add(st.Timeout)
	up := func(ctx context.Context) (bool, error) { return h.HostUp(ctx, *st) }
	ctx, cancel := context.WithDeadline(e.workCtx, deadline)
	on, _ := up(ctx)
	cancel()
	if on {
		r.set(OutcomeAlreadyOn, ActionUnset, "already on", nil)
		return
	}
	e.journal(&record{Type: recActionStart, Key: st.Key, Action: "wake"})
	e.emit(r.event(EventActionStart))
	note := "no waker configured: waited for it to boot by itself"
	if h.Wake != nil {
		var woke bool
		err := r.retry(deadline, "wake", func(ctx context.Context) error {
			var err error
			woke, err = h.Wake(ctx, *st)
			return err
		})
		if r.aborted {
			return
		}
		switch {
		case err != nil:
			r.addErr("wake", err)
			note = "waking failed: waited for it to boot by itself"
		case woke:
			note = ""
		}
	}
	err := r.pollUntil(deadline, "host up", up)
	if r.aborted {
		return
	}
	if err != nil {
		e.journal(&record{Type: recActionEnd, Key: st.Key, Action: "wake", Outcome: OutcomeFailed, Err: err.Error()})
		r.fail("host up", ActionUnset, err)
		if note != "" {
			r.res.Note = note
		}
		return
	}
	e.journal(&record{Type: recActionEnd, Key: st.Key, Action: "wake", Outcome: OutcomeDone})
	r.set(OutcomeDone, ActionUnset, note, nil)
}

func (r *stepRun) exitMaintenance() {
	st, e := r.st, r.e
	deadline := r.start.Add(st.Timeout)
	prov, err := r.restoreProvider(deadline)
	if r.aborted {
		return
	}
	if err == nil {
		e.journal(&record{Type: recActionStart, Key: st.Key, Action: "exit-maintenance"})
		e.emit(r.event(EventActionStart))
		err = r.retry(deadline, "ExitMaintenance", func(ctx context.Context) error { return prov.ExitMaintenance(ctx, st.HostID) })
		if r.aborted {
			return
		}
	}
	if err != nil {
		e.journal(&record{Type: recActionEnd, Key: st.Key, Action: "exit-maintenance", Outcome: OutcomeFailed, Err: err.Error()})
		r.fail("exit maintenance", ActionUnset, err)
		return
	}
	e.journal(&record{Type: recActionEnd, Key: st.Key, Action: "exit-maintenance", Outcome: OutcomeDone})
	r.set(OutcomeDone, ActionUnset, "", nil)
}

func (r *stepRun) guestOn() {
	st, e, h := r.st, r.e, r.e.opts.restore
	deadline := r.start.Add(st.Timeout)
	prov, err := r.restoreProvider(deadline)
	if r.aborted {
		return
	}
	if err != nil {
		r.fail("connect", ActionUnset, err)
		return
	}
	var g provider.Guest
	err = r.retry(deadline, "Guest", func(ctx context.Context) error {
		var err error
		g, err = prov.Guest(ctx, st.GuestID)
		return err
	})
	if r.aborted {
		return
	}
	if err != nil {
		r.fail("read state", ActionUnset, err)
		return
	}
	outcome, note := OutcomeDone, ""
	if g.Power == provider.PowerOn {
		outcome, note = OutcomeAlreadyOn, "already on"
	} else {
		e.journal(&record{Type: recActionStart, Key: st.Key, Action: "poweron"})
		e.emit(r.event(EventActionStart))
		err = r.retry(deadline, "PowerOnGuest", func(ctx context.Context) error { return prov.PowerOnGuest(ctx, st.GuestID) })
		if err == nil {
			err = r.retry(deadline, "WaitGuest", func(ctx context.Context) error {
				return prov.WaitGuest(ctx, st.GuestID, provider.PowerOn)
			})
		}
		if r.aborted {
			return
		}
		if err != nil {
			e.journal(&record{Type: recActionEnd, Key: st.Key, Action: "poweron", Outcome: OutcomeFailed, Err: err.Error()})
			r.fail("power on", ActionUnset, err)
			return
		}
		e.journal(&record{Type: recActionEnd, Key: st.Key, Action: "poweron", Outcome: OutcomeDone})
	}
	if h.Ready != nil {
		err := r.pollUntil(deadline, "ready", func(ctx context.Context) (bool, error) {
			err := h.Ready(ctx, *st)
			return err == nil, err
		})
		if r.aborted {
			return
		}
		if err != nil {
			r.fail("readiness", ActionUnset, err)
			r.res.Note = "powered on, not ready"
			return
		}
	}
	r.set(outcome, ActionUnset, note, nil)
}
