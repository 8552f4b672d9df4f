package plan

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sundown-ups/sundown/internal/provider"
)

// Targets maps Step.Target to the provider that serves it.
type Targets map[string]provider.Provider

// HookFunc runs a hook step. ctx ends at the step's Timeout; a hook that
// ignores it is abandoned at the deadline (see Execute).
type HookFunc func(ctx context.Context, s Step) error

// ExecOptions tune Execute. The zero value runs the plan for real, without a
// journal, hooks or events.
type ExecOptions struct {
	// Caps bound concurrency; the zero value means the plan's Caps (zero
	// fields of either take the defaults).
	Caps Caps
	// Journal records every transition before it happens; nil runs
	// without. When it holds a pending run (see Journal.Pending) of the same
	// kind (same Only), Execute resumes that run.
	Journal *Journal
	// Hooks runs hook steps; nil records them as skipped.
	Hooks HookFunc
	// Log receives one line per meaningful change; nil discards.
	Log *slog.Logger
	// OnEvent receives the run's events. It may be slow or block: Execute
	// never waits on it. Events go through a bounded queue (EventBuffer)
	// drained by a goroutine Execute owns; when the queue is full an event
	// is dropped and counted (Report.Dropped).
	OnEvent func(Event)
	// EventBuffer is the queue's size; 0 means 1024.
	EventBuffer int
	// DryRun simulates: the only provider calls are reads (Guest,
	// Inventory), every step completes at once with the outcome it would
	// have ("would shut down", "already off"), events are marked DryRun, and
	// the journal is neither read nor written.
	DryRun bool
	// Only makes a drill: only the guest steps of these groups run (and the
	// hooks that run before them or at the start); every other step is
	// "skipped" at once. Unknown group names are an error.
	Only []string
	// RetryMin and RetryMax bound the backoff (doubling, no jitter) between
	// retries of Transient and Unreachable errors; retries never go past
	// the action's deadline. Defaults 1 s and 10 s.
	RetryMin, RetryMax time.Duration
	// StopOnCancel makes a cancelled ctx stop the run as if the process had
	// died at that moment: no new step starts, running steps abandon their
	// provider calls, nothing more is written to the journal (no step-end,
	// no run-done). For tests and crash drills; the daemon leaves it false.
	StopOnCancel bool
	// Kind is the run's kind in the journal: RunShutdown (default),
	// RunShed; RunDrill is implied by Only.
	Kind string

	restore *RestoreHooks // set by Restore
}

// EventType names an Event.
type EventType string

// Event types.
const (
	EventRunStart     EventType = "run-start"
	EventStepStart    EventType = "step-start"
	EventActionStart  EventType = "action-start"
	EventActionFailed EventType = "action-failed"
	EventEscalate     EventType = "escalate"
	EventStepDone     EventType = "step-done"
	EventStepFailed   EventType = "step-failed"
	EventRunDone      EventType = "run-done"
)

// Outcome is how a step ended.
type Outcome string

// Outcomes.
const (
	// OutcomeDone: the step's first action worked (a guest is off, or
	// suspended by a Suspend action; a host step or hook succeeded).
	OutcomeDone Outcome = "done"
	// OutcomeAlreadyOff: the guest was off (or gone, or already suspended
	// for a Suspend chain) when the step re-read its state.
	OutcomeAlreadyOff Outcome = "already-off"
	// OutcomeEscalated: a later action of the chain worked.
	OutcomeEscalated Outcome = "escalated"
	// OutcomeFailed: the chain is exhausted, or a host step or hook failed.
	OutcomeFailed Outcome = "failed"
	// OutcomeSkipped: left as it is (Skip, no hook runner, not in a drill).
	OutcomeSkipped Outcome = "skipped"
	// OutcomeAlreadyOn: a restore found the guest or host on.
	OutcomeAlreadyOn Outcome = "already-on"
)

// Event is one thing that happened during a run, for observers (logs, the
// API, the status page). Step is -1 for run events.
type Event struct {
	At      time.Time
	Type    EventType
	Step    int
	Key     string
	Name    string
	Group   string
	Kind    StepKind
	Action  ActionKind
	Outcome Outcome
	Err     string
	// Elapsed is the time since the step started (since the run started
	// for run events).
	Elapsed time.Duration
	DryRun  bool
	// Resumed marks events of a resumed run's start and of steps continued
	// from the run that sundown did not finish.
	Resumed bool
}

// StepResult is how one step went.
type StepResult struct {
	Step    int
	Key     string
	Name    string
	Kind    StepKind
	Outcome Outcome
	// FinalAction is the guest action that took effect (or was the last
	// tried, for a failed step); ActionUnset for other steps and for guests
	// that were already off.
	FinalAction ActionKind
	// Err is the error that decided a failed step (the last one), or what
	// made a step escalate; "" when none.
	Err string
	// Errors lists every error the step met, in order, each prefixed with
	// what was being done ("shutdown: …").
	Errors []string
	// Note explains ("already off", "gone: …", "forced: maintenance mode not
	// reached", "would shut down: …", "ended before the restart").
	Note string
	// Resumed: the step had started in the run sundown did not finish.
	Resumed    bool
	Start, End time.Time
}

// Report is the result of Execute.
type Report struct {
	// RunID identifies the run in the journal; a resumed run keeps its ID.
	RunID   string
	Resumed bool
	DryRun  bool
	// Started and Ended bound this Execute call (not the original run, when
	// resumed).
	Started, Ended time.Time
	// Steps has one entry per plan step, by step ID.
	Steps []StepResult
	// Dropped counts events that OnEvent did not get (queue full, or still
	// queued when Execute stopped waiting for it).
	Dropped int
	// JournalErr is the first journal error ("" when none); the shutdown
	// went on without a journal after it.
	JournalErr string
	// Missing lists the steps of the resumed run that the plan no longer
	// has (by key); they were not touched.
	Missing []string
	// Stopped: ctx stopped the run (StopOnCancel); the steps that had not
	// ended have no Outcome.
	Stopped bool
	// StrayHooks names hooks that ignored their deadline and were still
	// running when Execute returned.
	StrayHooks []string
}

// Failed returns the steps whose outcome is "failed".
func (r *Report) Failed() []StepResult {
	var out []StepResult
	for _, s := range r.Steps {
		if s.Outcome == OutcomeFailed {
			out = append(out, s)
		}
	}
	return out
}

// Timings of Execute's bounded waits at the end of a run.
const (
	// eventGrace is how long Execute waits for OnEvent to take the last
	// events before it returns anyway.
	eventGrace = 2 * time.Second
	// hookGrace is how long Execute waits for hooks that overran their
	// deadline before it returns anyway (they are reported).
	hookGrace = 2 * time.Second
	// defaultHookTimeout bounds a hook step without a timeout.
	defaultHookTimeout = time.Minute
	// dryReadTimeout bounds a dry run's state read.
	dryReadTimeout = 30 * time.Second
)

// errStopped ends a step abandoned by StopOnCancel.
var errStopped = errors.New("run stopped")

// Execute runs the plan's steps against the targets and reports how each
// ended.
//
// Order and concurrency: a step starts when all its Deps ended, whatever
// their outcome (a guest that failed never holds the shutdown back). Group
// markers, and steps that need nothing done (not in a drill, ended before a
// restart), complete at once and take no slot. At most Caps.Global steps run
// at once and at most Caps.PerHost guest steps of one host (by Target and
// HostID). Among ready steps, the one with the longest remaining path of
// estimates goes first (as in Estimate), ties to the lower ID.
//
// Guest steps re-read the guest (off → "already-off"; not found → gone,
// "already-off") and run the chain: Shutdown asks the guest OS and waits for
// off until the action's Timeout (Unsupported — no tools, suspended —
// escalates at once); Suspend and PowerOff are bounded by their Timeout.
// The first action's deadline counts from the step's start, a later one's
// from its own start, so a guest that ignores "shutdown 120s → poweroff 30s"
// is powered off exactly 120 s after its step started. Transient and
// Unreachable errors are retried with backoff within the deadline;
// Permanent, Permission, Auth and unclassified errors escalate at once. A
// host maintenance step that fails is recorded and the host shutdown runs
// anyway, with force; a refused unforced host shutdown is retried with force
// within its deadline. Hooks get a context bounded by their Timeout; one
// that ignores it is abandoned at the deadline (its dependents go on) and
// awaited at the end for 2 s at most.
//
// The latch: once Execute has started, cancelling ctx does not stop it; it
// runs to the end (provider calls use context.WithoutCancel(ctx)) unless
// opts.StopOnCancel, which simulates the process dying. Execute returns an
// error only when it cannot start (nil or malformed plan, unknown group in
// Only) or was stopped; failed steps are in the Report.
//
// Journal: every transition is appended and fsynced before what it
// announces. A journal error is logged once, loudly, recorded in
// Report.JournalErr, and the shutdown goes on without the journal. When the
// journal holds a pending run of the same kind (same Only) that shares at
// least one step (other than group markers) with p, Execute resumes it (same
// RunID, Report.Resumed): steps that ended are not touched again; steps
// that started and did not end re-read the live state (off → "done") and
// continue from their recorded action, whose deadline restarts from the
// resume, and a graceful shutdown already accepted is not sent again; steps
// that never started run normally. Pending steps the plan no longer has are
// listed in Report.Missing; new steps run.
func Execute(ctx context.Context, p *Plan, targets Targets, opts ExecOptions) (*Report, error) {
	if p == nil {
		return nil, errors.New("execute: nil plan")
	}
	for i := range p.Steps {
		if p.Steps[i].ID != i {
			return nil, fmt.Errorf("execute: step %d (%s) has ID %d", i, p.Steps[i].Key, p.Steps[i].ID)
		}
		for _, d := range p.Steps[i].Deps {
			if d < 0 || d >= i {
				return nil, fmt.Errorf("execute: step %d (%s) depends on %d: dependencies must come first", i, p.Steps[i].Key, d)
			}
		}
	}
	only := map[string]bool{}
	for _, g := range opts.Only {
		if !p.HasGroup(g) {
			return nil, fmt.Errorf("execute: drill of unknown group %q", g)
		}
		only[g] = true
	}

	e := &executor{p: p, targets: targets, opts: opts, only: only, dry: opts.DryRun, name: "shutdown"}
	if opts.restore != nil {
		e.name = "restore"
	}
	if e.opts.Kind == RunShutdown && len(only) > 0 {
		e.opts.Kind = RunDrill
	}
	e.caps = opts.Caps
	if e.caps == (Caps{}) {
		e.caps = p.Caps
	}
	e.caps = e.caps.WithDefaults()
	e.log = opts.Log
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.retryMin, e.retryMax = opts.RetryMin, opts.RetryMax
	if e.retryMin <= 0 {
		e.retryMin = time.Second
	}
	if e.retryMax <= 0 {
		e.retryMax = 10 * time.Second
	}
	e.retryMax = max(e.retryMax, e.retryMin)
	e.workCtx = context.WithoutCancel(ctx)
	if opts.StopOnCancel {
		e.workCtx, e.stopCtx = ctx, ctx
	}
	e.keyIdx = make(map[string]int, len(p.Steps))
	for i := range p.Steps {
		e.keyIdx[p.Steps[i].Key] = i
	}
	if opts.OnEvent != nil {
		e.events = newEventQueue(opts.OnEvent, opts.EventBuffer)
	}
	return e.run()
}

type executor struct {
	name     string // "shutdown" or "restore", for logs
	p        *Plan
	targets  Targets
	opts     ExecOptions
	only     map[string]bool
	dry      bool
	caps     Caps
	log      *slog.Logger
	workCtx  context.Context // provider calls, hooks, backoff waits
	stopCtx  context.Context // non-nil with StopOnCancel
	retryMin time.Duration
	retryMax time.Duration
	keyIdx   map[string]int
	events   *eventQueue

	runID   string
	start   time.Time
	resumed bool
	ended   map[string]StepState // steps that ended before the restart
	resume  map[string]StepState // steps in flight at the restart
	missing []string             // keys of the resumed run not in the plan
	results []StepResult

	jmu  sync.Mutex
	jerr string

	hookWG    sync.WaitGroup
	hookMu    sync.Mutex
	hooksLive map[int]string
}

// stopped reports whether StopOnCancel's ctx ended.
func (e *executor) stopped() bool { return e.stopCtx != nil && e.stopCtx.Err() != nil }

// journal appends r unless there is no journal, this is a dry run, or the
// run is stopped (a dead process writes nothing).
func (e *executor) journal(r *record) {
	j := e.opts.Journal
	if j == nil || e.dry || e.stopped() {
		return
	}
	r.T, r.Run = time.Now(), e.runID
	if err := j.append(r); err != nil {
		e.jmu.Lock()
		first := e.jerr == ""
		if first {
			e.jerr = err.Error()
		}
		e.jmu.Unlock()
		if first {
			e.log.Error("JOURNAL WRITE FAILED: the shutdown goes on, but a restart could not resume it",
				"journal", j.Path(), "err", err)
		}
	}
}

func (e *executor) emit(ev Event) {
	if e.events == nil {
		return
	}
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	ev.DryRun = e.dry
	e.events.send(ev)
}

func newRunID(now time.Time) string {
	var b [4]byte
	rand.Read(b[:])
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// inScope reports whether a drill (Only) runs step i.
func (e *executor) inScope(i int) bool {
	if len(e.only) == 0 {
		return true
	}
	st := &e.p.Steps[i]
	switch st.Kind {
	case StepGuest:
		return e.only[st.Group]
	case StepHook:
		if len(st.Before) == 0 {
			return true
		}
		return slices.ContainsFunc(st.Before, func(g string) bool { return e.only[g] })
	}
	return false
}

// prepare decides between a new run and resuming a pending one.
func (e *executor) prepare() {
	e.start = time.Now()
	e.results = make([]StepResult, len(e.p.Steps))
	for i := range e.p.Steps {
		st := &e.p.Steps[i]
		e.results[i] = StepResult{Step: i, Key: st.Key, Name: st.Name, Kind: st.Kind}
	}
	keys := make([]string, len(e.p.Steps))
	for i := range e.p.Steps {
		keys[i] = e.p.Steps[i].Key
	}
	var only []string
	for g := range e.only {
		only = append(only, g)
	}
	slices.Sort(only)

	if j := e.opts.Journal; j != nil && !e.dry && e.opts.restore == nil {
		if rs, ok := j.Pending(); ok {
			pend := slices.Clone(rs.Only)
			slices.Sort(pend)
			shared := slices.ContainsFunc(rs.Keys, func(k string) bool {
				i, ok := e.keyIdx[k]
				return ok && e.p.Steps[i].Kind != StepGroup
			})
			if slices.Equal(pend, only) && shared {
				e.runID, e.resumed = rs.ID, true
				e.ended, e.resume = rs.Ended, rs.InFlight
				var missing []string
				for _, k := range rs.Keys {
					if _, ok := e.keyIdx[k]; !ok {
						missing = append(missing, k)
					}
				}
				e.missing = missing
				e.log.Warn(e.name+": resuming the run sundown did not finish", "run", rs.ID,
					"started", rs.Started, "ended_steps", len(rs.Ended), "in_flight", len(rs.InFlight), "missing", len(missing))
				for _, k := range missing {
					e.log.Warn(e.name+": a step of the resumed run is not in the plan any more", "run", rs.ID, "key", k)
				}
				e.journal(&record{Type: recRunResume, Keys: keys, Only: only})
				return
			}
			e.log.Warn(e.name+": a pending run of another kind, or of other steps, is left as it is", "run", rs.ID, "only", rs.Only)
		}
	}
	e.runID = newRunID(e.start)
	start := &record{Type: recRunStart, Keys: keys, Only: only, RunKind: e.opts.Kind}
	if h := e.opts.restore; h != nil {
		start.Of = h.Of
	} else {
		start.Steps = e.p.Snapshot()
	}
	e.journal(start)
}

type stepDone struct {
	id      int
	res     StepResult
	aborted bool
}

func (e *executor) run() (*Report, error) {
	e.prepare()
	p := e.p
	n := len(p.Steps)
	e.log.Info(e.name+": run started", "run", e.runID, "steps", n, "resumed", e.resumed, "dry_run", e.dry,
		"only", e.opts.Only, "global_cap", e.caps.Global, "per_host_cap", e.caps.PerHost)
	e.emit(Event{Type: EventRunStart, Step: -1, Resumed: e.resumed})

	// The same list scheduler as Estimate's, so the run makes the choices
	// the estimate assumed.
	instant := make([]bool, n)
	dur := make([]time.Duration, n)
	for i := range p.Steps {
		_, ended := e.ended[p.Steps[i].Key]
		instant[i] = p.Steps[i].Kind == StepGroup || p.Steps[i].NoOp || ended || !e.inScope(i)
		dur[i] = p.Steps[i].Estimate
	}
	d := newDispatcher(p, dur, instant, e.caps.PerHost)
	// Estimate's priorities (computed on the whole plan, as Estimate does),
	// so that with durations as estimated the run follows its schedule.
	slotless := make([]bool, n)
	for i := range p.Steps {
		slotless[i] = p.Steps[i].Kind == StepGroup
	}
	d.rank, _ = p.ranks(dur, slotless, e.caps)
	onInstant := func(v int32) { e.finishInstant(int(v)) }
	d.start(onInstant)

	results := make(chan stepDone, e.caps.Global)
	var stopCh <-chan struct{}
	if e.stopCtx != nil {
		stopCh = e.stopCtx.Done()
	}
	running, stopping := 0, false
	var workers sync.WaitGroup
	for {
		for !stopping && !e.stopped() && running < e.caps.Global {
			v, ok := d.next()
			if !ok {
				break
			}
			running++
			workers.Go(func() {
				res, aborted := e.runStep(int(v))
				results <- stepDone{id: int(v), res: res, aborted: aborted}
			})
		}
		if running == 0 {
			break
		}
		select {
		case r := <-results:
			// Take every result already there before starting more, so
			// that steps ending together compete for the freed slots by
			// priority.
			for {
				running--
				if !r.aborted {
					e.results[r.id] = r.res
					d.done(int32(r.id))
				}
				var more bool
				select {
				case r, more = <-results:
				default:
				}
				if !more {
					break
				}
			}
			d.release(onInstant)
		case <-stopCh:
			stopping, stopCh = true, nil
			e.log.Warn(e.name+": stopped by its context (StopOnCancel): abandoning the run", "run", e.runID, "running", running)
		}
	}
	workers.Wait()
	stopping = stopping || e.stopped()

	rep := &Report{RunID: e.runID, Resumed: e.resumed, DryRun: e.dry, Started: e.start, Steps: e.results,
		Missing: e.missing, Stopped: stopping}
	if !stopping {
		e.journal(&record{Type: recRunDone})
	}
	rep.Ended = time.Now()
	var nFailed, nDone int
	for _, r := range e.results {
		switch r.Outcome {
		case OutcomeFailed:
			nFailed++
		case "":
		default:
			nDone++
		}
	}
	if !stopping {
		e.emit(Event{Type: EventRunDone, Step: -1, Elapsed: rep.Ended.Sub(e.start), Resumed: e.resumed})
		e.log.Info(e.name+": run done", "run", e.runID, "seconds", rep.Ended.Sub(e.start).Seconds(),
			"steps", n, "failed", nFailed, "dry_run", e.dry)
	}
	rep.StrayHooks = e.waitHooks()
	if e.events != nil {
		rep.Dropped = e.events.close(eventGrace)
	}
	e.jmu.Lock()
	rep.JournalErr = e.jerr
	e.jmu.Unlock()
	if stopping {
		return rep, fmt.Errorf("execute: run %s stopped before its end: %w", e.runID, context.Cause(e.stopCtx))
	}
	return rep, nil
}

// finishInstant completes a step that needs no slot.
func (e *executor) finishInstant(i int) {
	st := &e.p.Steps[i]
	now := time.Now()
	r := &e.results[i]
	r.Start, r.End = now, now
	if prev, ok := e.ended[st.Key]; ok && st.Kind != StepGroup {
		r.Outcome, r.Err, r.Start, r.End, r.Resumed = prev.Outcome, prev.Err, prev.Start, prev.End, true
		r.Note = "ended before the restart"
		if k, err := ParseActionKind(prev.Action); err == nil {
			r.FinalAction = k
		}
		return
	}
	switch {
	case st.Kind == StepGroup:
		r.Outcome = OutcomeDone
		e.emit(Event{Type: EventStepDone, Step: i, Key: st.Key, Name: st.Name, Group: st.Group, Kind: st.Kind, Outcome: OutcomeDone})
	case st.NoOp:
		r.Outcome, r.Note = OutcomeSkipped, st.Note
	default:
		r.Outcome, r.Note = OutcomeSkipped, "not in the drill"
	}
}

// waitHooks waits a little for hooks that overran their deadline and
// returns the names of those still running.
func (e *executor) waitHooks() []string {
	done := make(chan struct{})
	go func() {
		e.hookWG.Wait()
		close(done)
	}()
	t := time.NewTimer(hookGrace)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
	}
	e.hookMu.Lock()
	defer e.hookMu.Unlock()
	var names []string
	for _, n := range e.hooksLive {
		names = append(names, n)
	}
	slices.Sort(names)
	e.log.Error(e.name+": hooks ignored their deadline and still run", "hooks", names)
	return names
}

// stepRun is one step being run by a worker.
type stepRun struct {
	e       *executor
	st      *Step
	id      int
	start   time.Time
	res     StepResult
	rs      *StepState // where the step was when sundown stopped
	aborted bool
}

func (r *stepRun) event(t EventType) Event {
	return Event{Type: t, Step: r.id, Key: r.st.Key, Name: r.st.Name, Group: r.st.Group, Kind: r.st.Kind,
		Elapsed: time.Since(r.start), Resumed: r.rs != nil}
}

// set records the step's outcome.
func (r *stepRun) set(o Outcome, final ActionKind, note string, err error) {
	r.res.Outcome, r.res.FinalAction = o, final
	if note != "" {
		r.res.Note = note
	}
	if err != nil {
		r.res.Err = err.Error()
	}
}

// fail records a failed step whose error is also listed in Errors.
func (r *stepRun) fail(what string, final ActionKind, err error) {
	r.addErr(what, err)
	r.set(OutcomeFailed, final, "", err)
}

func (r *stepRun) addErr(what string, err error) {
	r.res.Errors = append(r.res.Errors, what+": "+err.Error())
}

func (e *executor) runStep(id int) (StepResult, bool) {
	st := &e.p.Steps[id]
	r := &stepRun{e: e, st: st, id: id, start: time.Now()}
	if rs, ok := e.resume[st.Key]; ok {
		r.rs = &rs
	}
	r.res = StepResult{Step: id, Key: st.Key, Name: st.Name, Kind: st.Kind, Start: r.start, Resumed: r.rs != nil}
	e.journal(&record{Type: recStepStart, Key: st.Key, Resumed: r.rs != nil})
	e.emit(r.event(EventStepStart))
	e.log.Debug(e.name+": step started", "run", e.runID, "key", st.Key, "resumed", r.rs != nil)

	prov := e.targets[st.Target]
	switch {
	case e.opts.restore != nil && e.dry:
		r.set(OutcomeDone, ActionUnset, "would "+restoreVerb[st.Kind], nil)
	case st.Kind == StepHostWake:
		r.hostOn()
	case st.Kind == StepHostExitMaintenance:
		r.exitMaintenance()
	case st.Kind == StepGuestStart:
		r.guestOn()
	case st.Kind == StepHook:
		r.hook()
	case prov == nil:
		r.fail("provider", ActionUnset, fmt.Errorf("no provider for target %q", st.Target))
	case e.dry:
		r.dryRun(prov)
	case st.Kind == StepGuest:
		r.guest(prov)
	case st.Kind == StepHostMaintenance:
		r.maintenance(prov)
	case st.Kind == StepHostShutdown:
		r.hostShutdown(prov)
	default:
		r.fail("step", ActionUnset, fmt.Errorf("unknown step kind %v", st.Kind))
	}
	if r.aborted || e.stopped() {
		return r.res, true
	}
	r.res.End = time.Now()
	elapsed := r.res.End.Sub(r.start)
	rec := &record{Type: recStepEnd, Key: st.Key, Outcome: r.res.Outcome, Err: r.res.Err,
		Elapsed: elapsed.Seconds(), Resumed: r.rs != nil, Note: r.res.Note}
	if r.res.FinalAction != ActionUnset {
		rec.Action = r.res.FinalAction.String()
	}
	e.journal(rec)
	ev := r.event(EventStepDone)
	if r.res.Outcome == OutcomeFailed {
		ev.Type = EventStepFailed
	}
	ev.Outcome, ev.Action, ev.Err = r.res.Outcome, r.res.FinalAction, r.res.Err
	e.emit(ev)
	attrs := []any{"run", e.runID, "key", st.Key, "name", st.Name, "outcome", r.res.Outcome, "seconds", elapsed.Seconds()}
	if r.res.FinalAction != ActionUnset {
		attrs = append(attrs, "action", r.res.FinalAction.String())
	}
	if r.res.Note != "" {
		attrs = append(attrs, "note", r.res.Note)
	}
	if r.res.Err != "" {
		attrs = append(attrs, "err", r.res.Err)
	}
	if r.res.Outcome == OutcomeFailed {
		e.log.Error(e.name+": step failed", attrs...)
	} else {
		e.log.Info(e.name+": step done", attrs...)
	}
	return r.res, false
}

// sleep waits d, or until the run is stopped (false).
func (e *executor) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-e.workCtx.Done():
		return false
	}
}

// retry calls op until it succeeds, fails with an error that is not
// Transient or Unreachable, or the deadline comes; each call's context ends
// at the deadline. Backoff doubles from RetryMin to RetryMax; when the next
// wait would pass the deadline, retry waits for the deadline and returns the
// last error.
func (r *stepRun) retry(deadline time.Time, what string, op func(context.Context) error) error {
	e := r.e
	wait := e.retryMin
	for {
		ctx, cancel := context.WithDeadline(e.workCtx, deadline)
		err := op(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if e.stopped() {
			r.aborted = true
			return errStopped
		}
		if !provider.ClassOf(err).Retryable() {
			return err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return err
		}
		ev := r.event(EventActionFailed)
		ev.Err = err.Error()
		e.emit(ev)
		level := slog.LevelDebug
		if wait == e.retryMin {
			level = slog.LevelWarn // the first retry of this call
		}
		e.log.Log(context.Background(), level, e.name+": retrying", "run", e.runID, "key", r.st.Key, "op", what, "err", err,
			"retry_in_seconds", min(wait, left).Seconds())
		if wait >= left {
			if !e.sleep(left) {
				r.aborted = true
				return errStopped
			}
			return err
		}
		if !e.sleep(wait) {
			r.aborted = true
			return errStopped
		}
		wait = min(2*wait, e.retryMax)
	}
}

// resumeAt returns where a resumed guest step continues: the chain index of
// its recorded action, and whether that action's request was accepted.
func (r *stepRun) resumeAt() (int, bool) {
	chain := r.st.Chain
	if r.rs == nil || r.rs.Action == "" {
		return 0, false
	}
	k, err := ParseActionKind(r.rs.Action)
	if err != nil {
		return 0, false
	}
	if i := r.rs.Index; i >= 0 && i < len(chain) && chain[i].Kind == k {
		return i, r.rs.Sent
	}
	if i := slices.IndexFunc(chain, func(a Action) bool { return a.Kind == k }); i >= 0 {
		return i, r.rs.Sent
	}
	return 0, false
}

func (r *stepRun) guest(prov provider.Provider) {
	st, e := r.st, r.e
	chain := st.Chain
	if len(chain) == 0 {
		r.fail("chain", ActionUnset, errors.New("empty chain"))
		return
	}
	if chain[0].Kind == Skip {
		r.set(OutcomeSkipped, Skip, "left as it is", nil)
		return
	}
	first, sent := r.resumeAt()
	id := st.GuestID
	deadline := r.start.Add(chain[first].Timeout)

	var g provider.Guest
	var lastErr error
	err := r.retry(deadline, "Guest", func(ctx context.Context) error {
		var err error
		g, err = prov.Guest(ctx, id)
		return err
	})
	switch {
	case r.aborted:
		return
	case err == nil && (g.Power == provider.PowerOff || g.Power == provider.PowerSuspended && chain[first].Kind == Suspend):
		what := "off"
		if g.Power == provider.PowerSuspended {
			what = "suspended"
		}
		if r.rs != nil && r.rs.Action != "" {
			r.set(OutcomeDone, chain[first].Kind, what+" when re-checked after the restart", nil)
		} else {
			r.set(OutcomeAlreadyOff, ActionUnset, "already "+what, nil)
		}
		return
	case provider.ClassOf(err) == provider.NotFound:
		r.set(OutcomeAlreadyOff, ActionUnset, "gone: "+err.Error(), nil)
		return
	case err != nil:
		// Go on: the chain's calls may still work.
		r.addErr("read state", err)
		lastErr = err
	}

	for i := first; i < len(chain); i++ {
		a := chain[i]
		if a.Kind == Skip {
			note := "gave up without forcing"
			r.set(OutcomeSkipped, Skip, note, lastErr)
			return
		}
		if i > first {
			deadline = time.Now().Add(a.Timeout)
		}
		e.journal(&record{Type: recActionStart, Key: st.Key, Action: a.Kind.String(), Index: i})
		ev := r.event(EventActionStart)
		ev.Action = a.Kind
		e.emit(ev)
		var err error
		if time.Now().Before(deadline) {
			err = r.act(prov, a, deadline, sent && i == first)
		} else {
			// Reading the state used up this action's time (the provider
			// kept failing): go on to the next action.
			err = fmt.Errorf("no time left for %s: %w", a.Kind, cmpErr(lastErr, context.DeadlineExceeded))
		}
		if r.aborted {
			return
		}
		if err == nil {
			e.journal(&record{Type: recActionEnd, Key: st.Key, Action: a.Kind.String(), Index: i, Outcome: OutcomeDone})
			o := OutcomeDone
			if i > 0 {
				o = OutcomeEscalated
			}
			r.set(o, a.Kind, "", lastErr)
			return
		}
		if provider.ClassOf(err) == provider.NotFound {
			e.journal(&record{Type: recActionEnd, Key: st.Key, Action: a.Kind.String(), Index: i, Outcome: OutcomeAlreadyOff, Err: err.Error()})
			r.set(OutcomeAlreadyOff, ActionUnset, "gone: "+err.Error(), nil)
			return
		}
		lastErr = err
		r.addErr(a.Kind.String(), err)
		last := i == len(chain)-1
		o := Outcome("escalate")
		if last {
			o = OutcomeFailed
		}
		e.journal(&record{Type: recActionEnd, Key: st.Key, Action: a.Kind.String(), Index: i, Outcome: o, Err: err.Error()})
		ev = r.event(EventActionFailed)
		ev.Action, ev.Err = a.Kind, err.Error()
		e.emit(ev)
		if !last {
			ev.Type = EventEscalate
			ev.Action = chain[i+1].Kind
			e.emit(ev)
			e.log.Warn(e.name+": escalating", "run", e.runID, "key", st.Key, "name", st.Name,
				"from", a.Kind.String(), "to", chain[i+1].Kind.String(), "err", err)
		}
	}
	r.set(OutcomeFailed, chain[len(chain)-1].Kind, "", lastErr)
}

// act runs one guest action until it takes effect or its deadline.
func (r *stepRun) act(prov provider.Provider, a Action, deadline time.Time, sent bool) error {
	id := r.st.GuestID
	var err error
	switch a.Kind {
	case Shutdown:
		if !sent {
			err = r.retry(deadline, "ShutdownGuest", func(ctx context.Context) error { return prov.ShutdownGuest(ctx, id) })
			if err != nil {
				return err
			}
		}
		// Recorded again when resuming an accepted request: the
		// action-start just written cleared it, and a third start must
		// not ask the guest a second time.
		r.e.journal(&record{Type: recActionSent, Key: r.st.Key, Action: a.Kind.String()})
		err = r.retry(deadline, "WaitGuest", func(ctx context.Context) error { return prov.WaitGuest(ctx, id, provider.PowerOff) })
	case Suspend:
		err = r.retry(deadline, "SuspendGuest", func(ctx context.Context) error { return prov.SuspendGuest(ctx, id) })
	case PowerOff:
		err = r.retry(deadline, "PowerOffGuest", func(ctx context.Context) error { return prov.PowerOffGuest(ctx, id) })
	default:
		return fmt.Errorf("guest %s: unknown action %v", r.st.Name, a.Kind)
	}
	if err != nil && errors.Is(err, context.DeadlineExceeded) && !time.Now().Before(deadline) {
		return fmt.Errorf("guest %s not %s within %s: %w", r.st.Name, actionGoal(a.Kind), shortSeconds(a.Timeout), err)
	}
	return err
}

// cmpErr returns err, or def when err is nil.
func cmpErr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

func actionGoal(k ActionKind) string {
	if k == Suspend {
		return "suspended"
	}
	return "off"
}

// hostIsOff reads the inventory for a host step whose plan says the host was
// off: it is skipped when it still is.
func (r *stepRun) hostIsOff(prov provider.Provider) bool {
	if !strings.HasPrefix(r.st.Note, "already off") {
		return false
	}
	ctx, cancel := context.WithTimeout(r.e.workCtx, dryReadTimeout)
	defer cancel()
	inv, err := prov.Inventory(ctx)
	if err != nil {
		return provider.ClassOf(err) == provider.Unreachable
	}
	for _, h := range inv.Hosts {
		if h.ID == r.st.HostID {
			return h.Power == provider.PowerOff
		}
	}
	return false
}

func (r *stepRun) maintenance(prov provider.Provider) {
	st, e := r.st, r.e
	if r.hostIsOff(prov) {
		r.set(OutcomeAlreadyOff, ActionUnset, "already off", nil)
		return
	}
	deadline := r.start.Add(st.Timeout)
	e.journal(&record{Type: recActionStart, Key: st.Key, Action: "maintenance"})
	e.emit(r.event(EventActionStart))
	err := r.retry(deadline, "EnterMaintenance", func(ctx context.Context) error {
		return prov.EnterMaintenance(ctx, st.HostID, provider.MaintenanceOptions{Timeout: time.Until(deadline)})
	})
	if r.aborted {
		return
	}
	if err != nil {
		e.journal(&record{Type: recActionEnd, Key: st.Key, Action: "maintenance", Outcome: OutcomeFailed, Err: err.Error()})
		r.fail("maintenance", ActionUnset, err)
		r.res.Note = "the host shutdown will be forced"
		return
	}
	e.journal(&record{Type: recActionEnd, Key: st.Key, Action: "maintenance", Outcome: OutcomeDone})
	r.set(OutcomeDone, ActionUnset, "", nil)
}

// maintReached reports whether the host of st reached maintenance mode in
// this run (or before the restart).
func (e *executor) maintReached(st *Step) bool {
	i, ok := e.keyIdx[StepHostMaintenance.String()+":"+st.Target+"/"+st.HostID]
	if !ok {
		return false
	}
	// The maintenance step is a dependency: it ended before this step
	// started, and its result was stored before (happens-before via the
	// worker's start).
	o := e.results[i].Outcome
	return o == OutcomeDone || o == OutcomeAlreadyOff
}

func (r *stepRun) hostShutdown(prov provider.Provider) {
	st, e := r.st, r.e
	if r.hostIsOff(prov) {
		r.set(OutcomeAlreadyOff, ActionUnset, "already off", nil)
		return
	}
	deadline := r.start.Add(st.Timeout)
	force := !e.maintReached(st)
	requested := r.rs != nil && r.rs.Action == "host-shutdown"
	var err error
	for {
		e.journal(&record{Type: recActionStart, Key: st.Key, Action: "host-shutdown", Force: force})
		e.emit(r.event(EventActionStart))
		err = r.retry(deadline, "ShutdownHost", func(ctx context.Context) error { return prov.ShutdownHost(ctx, st.HostID, force) })
		if r.aborted {
			return
		}
		if err != nil && !force && provider.ClassOf(err) == provider.Permanent && time.Now().Before(deadline) {
			r.addErr("host shutdown", err)
			e.log.Warn(e.name+": host refused an unforced shutdown, forcing", "run", e.runID, "key", st.Key, "err", err)
			force = true
			continue
		}
		break
	}
	switch {
	case err == nil:
		e.journal(&record{Type: recActionEnd, Key: st.Key, Action: "host-shutdown", Outcome: OutcomeDone})
		note := ""
		if force {
			note = "forced: maintenance mode not reached"
		}
		r.set(OutcomeDone, ActionUnset, note, nil)
	case requested && provider.ClassOf(err) == provider.Unreachable:
		// The request went out before the restart; the host is gone.
		e.journal(&record{Type: recActionEnd, Key: st.Key, Action: "host-shutdown", Outcome: OutcomeDone, Err: err.Error()})
		r.set(OutcomeDone, ActionUnset, "unreachable after the shutdown request (before the restart)", nil)
	default:
		e.journal(&record{Type: recActionEnd, Key: st.Key, Action: "host-shutdown", Outcome: OutcomeFailed, Err: err.Error()})
		r.fail("host shutdown", ActionUnset, err)
	}
}

func (r *stepRun) hook() {
	st, e := r.st, r.e
	if e.dry {
		r.set(OutcomeDone, ActionUnset, "would run the hook", nil)
		return
	}
	if e.opts.Hooks == nil {
		r.set(OutcomeSkipped, ActionUnset, "no hook runner", nil)
		return
	}
	timeout := st.Timeout
	if timeout <= 0 {
		timeout = defaultHookTimeout
	}
	e.journal(&record{Type: recActionStart, Key: st.Key, Action: "hook"})
	e.emit(r.event(EventActionStart))
	ctx, cancel := context.WithTimeout(e.workCtx, timeout)
	defer cancel()
	done := make(chan error, 1)
	e.hookMu.Lock()
	if e.hooksLive == nil {
		e.hooksLive = map[int]string{}
	}
	e.hooksLive[r.id] = st.Name
	e.hookMu.Unlock()
	step := *st
	e.hookWG.Go(func() {
		defer func() {
			if v := recover(); v != nil {
				done <- fmt.Errorf("hook panicked: %v", v)
			}
			e.hookMu.Lock()
			delete(e.hooksLive, r.id)
			e.hookMu.Unlock()
		}()
		done <- e.opts.Hooks(ctx, step)
	})
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		if e.stopped() {
			r.aborted = true
			return
		}
		err = fmt.Errorf("hook %s did not return within %s: %w", st.Name, shortSeconds(timeout), ctx.Err())
	}
	if e.stopped() {
		r.aborted = true
		return
	}
	if err != nil {
		e.journal(&record{Type: recActionEnd, Key: st.Key, Action: "hook", Outcome: OutcomeFailed, Err: err.Error()})
		r.fail("hook", ActionUnset, err)
		return
	}
	e.journal(&record{Type: recActionEnd, Key: st.Key, Action: "hook", Outcome: OutcomeDone})
	r.set(OutcomeDone, ActionUnset, "", nil)
}

// dryRun predicts a step's outcome, with reads only.
func (r *stepRun) dryRun(prov provider.Provider) {
	st := r.st
	switch st.Kind {
	case StepHostMaintenance:
		r.set(OutcomeDone, ActionUnset, "would enter maintenance mode", nil)
		return
	case StepHostShutdown:
		r.set(OutcomeDone, ActionUnset, "would shut the host down", nil)
		return
	case StepGuest:
	default:
		r.set(OutcomeSkipped, ActionUnset, "nothing to simulate", nil)
		return
	}
	chain := st.Chain
	if len(chain) == 0 {
		r.fail("chain", ActionUnset, errors.New("empty chain"))
		return
	}
	if chain[0].Kind == Skip {
		r.set(OutcomeSkipped, Skip, "would leave it as it is", nil)
		return
	}
	ctx, cancel := context.WithTimeout(r.e.workCtx, dryReadTimeout)
	defer cancel()
	g, err := prov.Guest(ctx, st.GuestID)
	switch {
	case provider.ClassOf(err) == provider.NotFound:
		r.set(OutcomeAlreadyOff, ActionUnset, "gone: "+err.Error(), nil)
		return
	case err != nil:
		r.fail("read state", ActionUnset, err)
		return
	case g.Power == provider.PowerOff:
		r.set(OutcomeAlreadyOff, ActionUnset, "already off", nil)
		return
	case g.Power == provider.PowerSuspended && chain[0].Kind == Suspend:
		r.set(OutcomeAlreadyOff, ActionUnset, "already suspended", nil)
		return
	}
	if chain[0].Kind == Shutdown && (g.Power == provider.PowerSuspended || g.Tools != provider.ToolsRunning) {
		why := "guest tools not running"
		if g.Power == provider.PowerSuspended {
			why = "suspended"
		}
		if len(chain) > 1 && chain[1].Kind != Skip {
			r.set(OutcomeDone, chain[1].Kind, fmt.Sprintf("would %s at once (%s): %s", chain[1].Kind, why, chain), nil)
		} else {
			r.set(OutcomeFailed, Shutdown, fmt.Sprintf("would fail (%s): %s", why, chain), errors.New(why))
		}
		return
	}
	r.set(OutcomeDone, chain[0].Kind, fmt.Sprintf("would %s: %s", chain[0].Kind, chain), nil)
}

// eventQueue hands events to OnEvent through a bounded queue, dropping
// (and counting) what does not fit.
type eventQueue struct {
	fn      func(Event)
	ch      chan Event
	dropped atomic.Int64
	quit    atomic.Bool
	done    chan struct{}
}

func newEventQueue(fn func(Event), size int) *eventQueue {
	if size <= 0 {
		size = 1024
	}
	q := &eventQueue{fn: fn, ch: make(chan Event, size), done: make(chan struct{})}
	go q.drain()
	return q
}

func (q *eventQueue) send(ev Event) {
	select {
	case q.ch <- ev:
	default:
		q.dropped.Add(1)
	}
}

func (q *eventQueue) drain() {
	defer close(q.done)
	for ev := range q.ch {
		if q.quit.Load() {
			continue
		}
		q.deliver(ev)
	}
}

func (q *eventQueue) deliver(ev Event) {
	defer func() { recover() }() // an observer's panic must not end the shutdown
	q.fn(ev)
}

// close stops the queue and waits up to grace for the observer to take the
// rest. It returns the number of events the observer did not get.
func (q *eventQueue) close(grace time.Duration) int {
	close(q.ch)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-q.done:
		return int(q.dropped.Load())
	case <-t.C:
		q.quit.Store(true)
		return int(q.dropped.Load()) + len(q.ch)
	}
}
