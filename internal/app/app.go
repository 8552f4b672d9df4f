// Package app wires sundown together: one source per UPS (NUT or apcupsd)
// feeds a power.Tracker, the policy decides on every change and every tick,
// and the result is published as a Snapshot to whoever watches (the watch
// view, later the executor, the API and the status page). The whole daemon
// runs in-process, so tests start it on loopback with a temp dir.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/notify"
	"github.com/sundown-ups/sundown/internal/plan"
	"github.com/sundown-ups/sundown/internal/policy"
	"github.com/sundown-ups/sundown/internal/power"
	"github.com/sundown-ups/sundown/internal/provider"
)

// Snapshot is the daemon's view at one moment.
type Snapshot struct {
	At       time.Time
	UPS      []power.State // in config order
	Decision policy.Decision
	Events   []power.Event // the most recent events, oldest first (bounded)
	// Plan is the current shutdown plan and its estimate (nil without
	// targets or before the first discovery).
	Plan *PlanInfo
	// Shutdown is the shutdown in progress or done (nil before).
	Shutdown *ShutdownStatus
	// Restore says whether a restore is due and what it waits for (nil
	// when nothing is to be restored).
	Restore *RestoreStatus
}

// RestoreStatus is a restore that is due: what went down has not come
// back yet.
type RestoreStatus struct {
	// Auto: the daemon starts it by itself (restore.auto); otherwise it
	// waits for `sundown restore`.
	Auto bool
	// Waiting is the condition not met yet ("UPS rack: on line power for
	// 40 s of 300 s"); "" once it runs.
	Waiting string
}

// PlanInfo summarizes the plan the daemon would run now.
type PlanInfo struct {
	Steps      int
	Makespan   time.Duration
	LowerBound time.Duration
	Problems   []string
	Built      time.Time
	// Targets says, per configured target, whether the last discovery
	// reached it.
	Targets []TargetStatus
}

// TargetStatus is one target as the last discovery saw it.
type TargetStatus struct {
	Name      string
	Reachable bool
	Err       string // why not
	Guests    int    // guest steps planned on it
	Hosts     int    // hosts with a step
}

// Options tune an App beyond its config.
type Options struct {
	// Act lets the app act on a shutdown decision: set FSD in primary
	// mode and run the shutdown plan. A passive watcher leaves it false.
	Act bool
	// Plan makes a passive watcher discover the targets and keep the plan
	// estimate current (the runtime budget then uses it).
	Plan bool
	// OnEvent, if set, is called for every power event from the app's
	// loop. It must not block.
	OnEvent func(power.Event)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Journal overrides the journal path (default: state_dir/journal.jsonl).
	Journal string
	// OnStep, if set, sees every executor event. It may be slow: the
	// executor never waits for it.
	OnStep func(plan.Event)
	// Dial overrides how targets are connected (tests, the demo).
	Dial func(context.Context, config.Target, *slog.Logger) (provider.Provider, error)
}

// App is the running daemon core.
type App struct {
	cfg     *config.Config
	log     *slog.Logger
	opts    Options
	pcfg    policy.Config
	sources []source

	fleet    *Fleet
	notifier *notify.Notifier
	bg       sync.WaitGroup // drills started through Drill

	mu       sync.Mutex
	snap     Snapshot
	subs     map[chan Snapshot]struct{}
	trackers []*power.Tracker
	plan     *plan.Plan
	planDur  time.Duration // the plan's estimated makespan (0: none yet)
	planned  bool          // PlanOnce reached every target
}

const maxEvents = 200

// New builds an App from a loaded config.
func New(cfg *config.Config, log *slog.Logger, opts Options) (*App, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	a := &App{cfg: cfg, log: log, opts: opts, pcfg: PolicyConfig(cfg), subs: map[chan Snapshot]struct{}{}}
	if len(cfg.Targets) > 0 {
		a.fleet = NewFleet(cfg, log)
		if opts.Dial != nil {
			a.fleet.dial = opts.Dial
		}
	}
	for _, u := range cfg.UPS {
		a.trackers = append(a.trackers, power.NewTracker(u.Name, power.TrackerOptions{NoCommWarn: cfg.Power.NoCommWarn.D()}))
		switch {
		case u.NUT != nil:
			a.sources = append(a.sources, newNUTSource(u, cfg.Power.PollInterval.D(), log.With("ups", u.Name)))
		case u.Apcupsd != nil:
			a.sources = append(a.sources, newApcupsdSource(u, cfg.Power.PollInterval.D()))
		case u.Trigger != nil:
			a.sources = append(a.sources, newTriggerSource(u, cfg.Power.PollInterval.D()))
		default:
			return nil, fmt.Errorf("ups %s: no source", u.Name)
		}
	}
	n, err := NewNotifier(cfg, log)
	if err != nil {
		return nil, err
	}
	a.notifier = n
	a.snap = a.snapshotLocked(opts.Now(), policy.Decision{ETA: -1})
	return a, nil
}

// PolicyConfig maps the config file onto the policy's rules.
func PolicyConfig(c *config.Config) policy.Config {
	pc := policy.Config{
		MinSupplies:    *c.Power.MinSupplies,
		OnBatteryDelay: c.Power.OnBatteryDelay.D(),
		Debounce:       c.Power.Debounce.D(),
		RuntimeMargin:  c.Power.RuntimeMargin.D(),
	}
	for _, u := range c.UPS {
		pc.UPS = append(pc.UPS, policy.UPSRule{
			Name:          u.Name,
			PowerValue:    *u.PowerValue,
			Deadtime:      u.Deadtime.D(),
			OffGrace:      u.OffGrace.D(),
			AlarmCritical: *u.AlarmCritical,
			MinCharge:     u.MinCharge,
			MinRuntime:    u.MinRuntime.D(),
		})
	}
	return pc
}

// Subscribe returns a channel that always holds the latest snapshot (older
// ones are dropped, so a slow watcher never slows the daemon) and a cancel.
func (a *App) Subscribe() (<-chan Snapshot, func()) {
	ch := make(chan Snapshot, 1)
	a.mu.Lock()
	a.subs[ch] = struct{}{}
	ch <- a.snap
	a.mu.Unlock()
	return ch, func() {
		a.mu.Lock()
		delete(a.subs, ch)
		a.mu.Unlock()
	}
}

// Snapshot returns the latest view.
func (a *App) Snapshot() Snapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.snap
}

// Run watches every UPS until ctx ends, and (with Options.Act) runs the
// shutdown when the policy decides it, the load-shedding stages when they
// are due, and the restore when power has been back long enough. It
// returns after every goroutine it started has ended.
//
// SIGTERM (ctx ending) during a shutdown does not abandon it: Run keeps the
// shutdown going, and the NUT logins held, until the plan has run to its
// end, then returns. A SIGKILL stops it for real; the journal makes the
// next start resume the same run at once, whatever the power state. A
// restore is not latched: SIGTERM or a new outage stops it (the next
// restore brings back what it did not).
func (a *App) Run(ctx context.Context) error {
	// Sources live until Run returns, not until ctx ends: the NUT LOGIN
	// must be held while a shutdown runs.
	var wg sync.WaitGroup
	if a.fleet != nil {
		defer a.fleet.Close() // after every goroutine using it has ended
	}
	defer a.bg.Wait()
	defer wg.Wait()
	srcCtx, stopSources := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSources() // runs first: ends the sources, the plan loop and the notifier
	updates := make(chan update, 64)
	for i, s := range a.sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(srcCtx, func(u update) {
				u.idx = i
				select {
				case updates <- u:
				case <-srcCtx.Done():
				}
			})
		}()
	}
	if a.notifier != nil {
		wg.Go(func() { a.runNotifier(srcCtx) })
	}
	if a.fleet != nil {
		if a.opts.Act || a.opts.Plan {
			wg.Go(func() { a.planLoop(srcCtx) })
		}
	}

	tick := time.NewTicker(a.tickInterval())
	defer tick.Stop()
	var prev policy.Decision
	prev.ETA = -1
	acting := a.opts.Act && a.fleet != nil

	// The shutdown, latched once started.
	shutdownDone := make(chan struct{})
	started, finished := false, false
	// The restore: one at a time, stopped by an outage or SIGTERM.
	var restoreDone chan struct{}
	var stopRestore context.CancelFunc
	needRestore := acting && a.restoreDue()
	// The load-shedding stages: each runs once per outage.
	shedDone := make([]bool, len(a.cfg.Shed))
	shedEnded := make(chan struct{}, len(a.cfg.Shed))
	shedRunning := 0

	startShutdown := func(reason string) {
		if started || !a.opts.Act {
			return
		}
		started = true
		a.notify(notify.Message{Type: string(power.EventShutdown), Severity: notify.SeverityCritical,
			Subject: "shutdown started", Body: reason})
		a.setFSD(srcCtx)
		if a.fleet == nil {
			close(shutdownDone) // no targets: FSD was the whole shutdown
			return
		}
		done, stop := restoreDone, stopRestore
		if stop != nil {
			a.log.Warn("power failed during the restore: stopping it to shut down")
			stop()
		}
		wg.Go(func() {
			defer close(shutdownDone)
			if done != nil {
				<-done // the restore stops at once: its provider calls are abandoned
			}
			a.runShutdown(srcCtx, reason)
		})
	}
	if acting {
		if id, ok := a.pendingRun(); ok {
			prev = policy.Decision{Kind: policy.Shutdown, At: a.opts.Now(), ETA: 0,
				Reasons: []string{"resuming the shutdown recorded in the journal (run " + id + "): a started shutdown always finishes"}}
			a.log.Warn("resuming an unfinished shutdown from the journal", "run", id)
			a.publish(a.opts.Now(), prev, nil)
			startShutdown(prev.Reasons[0])
		}
	}
	rule := policy.RestoreRule{After: a.cfg.Restore.After.D(), MinCharge: *a.cfg.Restore.MinCharge}
	ctxDone := ctx.Done()
	for {
		var events []power.Event
		select {
		case <-ctxDone:
			if stopRestore != nil {
				stopRestore()
			}
			if !started || finished {
				return nil
			}
			a.log.Warn("stop requested during a shutdown: finishing the shutdown first")
			ctxDone = nil
			continue
		case <-shutdownDone:
			shutdownDone, finished = nil, true
			needRestore = acting && a.restoreDue()
			if ctx.Err() != nil {
				return nil
			}
			continue
		case <-restoreDone:
			restoreDone, stopRestore = nil, nil
			needRestore = a.restoreDue()
			if !needRestore && !started {
				// Everything is back: the next outage is a new one.
				clear(shedDone)
			}
			if !needRestore && finished {
				a.log.Info("the site is restored: watching for the next outage")
				started, finished, shutdownDone = false, false, make(chan struct{})
				prev = policy.Decision{ETA: -1}
				clear(shedDone)
			}
			continue
		case <-shedEnded:
			shedRunning--
			needRestore = a.restoreDue()
			continue
		case u := <-updates:
			tr := a.trackers[u.idx]
			if u.err != nil {
				events = tr.Fail(u.at, u.stale, u.err)
			} else {
				r, problems := power.ReadingFromVars(u.at, u.vars)
				for _, p := range problems {
					a.log.Debug("ups variable ignored", "ups", tr.State().Name, "problem", p)
				}
				events = tr.Observe(r)
			}
		case <-tick.C:
			now := a.opts.Now()
			for _, tr := range a.trackers {
				events = append(events, tr.Tick(now)...)
			}
		}
		now := a.opts.Now()
		in := a.policyInput(now)
		for _, e := range events {
			a.log.Info("power event", "ups", e.UPS, "event", string(e.Type), "message", e.Message)
			if a.opts.OnEvent != nil {
				a.opts.OnEvent(e)
			}
			for i := range in.States {
				if in.States[i].Name == e.UPS {
					a.notifyEvent(e, &in.States[i])
				}
			}
		}
		d := policy.Decide(a.pcfg, in, prev)
		if d.Kind != prev.Kind {
			a.log.Info("decision", "decision", d.String())
		}
		prev = d
		a.publish(now, d, events)
		if d.Kind == policy.Shutdown {
			startShutdown(d.String())
		}
		if !acting || ctx.Err() != nil || (started && !finished) {
			continue
		}
		for i, st := range a.cfg.Shed {
			if shedDone[i] || started {
				continue
			}
			due, why := policy.ShedDue(a.pcfg, policy.ShedRule{Name: st.Name, After: st.After.D(),
				BelowCharge: st.BelowCharge, BelowRuntime: st.BelowRuntime.D()}, in.States, now)
			if !due {
				continue
			}
			shedDone[i] = true
			shedRunning++
			wg.Go(func() {
				defer func() { shedEnded <- struct{}{} }()
				a.runShed(srcCtx, st, why)
			})
		}
		due, auto := needRestore && restoreDone == nil, *a.cfg.Restore.Auto
		var ready bool
		var why string
		if due {
			ready, why = policy.RestoreReady(a.pcfg, rule, in.States, now)
		}
		a.showRestore(due, auto, ready, why)
		if due && ready && auto && shedRunning == 0 {
			rctx, cancel := context.WithCancel(srcCtx)
			done := make(chan struct{})
			restoreDone, stopRestore = done, cancel
			wg.Go(func() {
				defer close(done)
				defer cancel()
				a.runRestore(rctx, why)
			})
		}
	}
}

// showRestore keeps the snapshot's restore status current: due or not,
// and what it waits for (why, when not ready).
func (a *App) showRestore(due, auto, ready bool, why string) {
	var rs *RestoreStatus
	if due {
		rs = &RestoreStatus{Auto: auto}
		if !ready {
			rs.Waiting = why
		}
		if !auto {
			rs.Waiting = "restore.auto is off: run sundown restore"
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if (rs == nil) == (a.snap.Restore == nil) && (rs == nil || *rs == *a.snap.Restore) {
		return
	}
	a.snap.Restore = rs
	a.sendLocked()
}

// restoreDue reports whether the journal holds a shutdown or shed stage
// that no restore has undone yet (drills are restored by hand only).
func (a *App) restoreDue() bool {
	if a.fleet == nil {
		return false
	}
	j, err := plan.ReadJournal(a.journalPath())
	if err != nil {
		return false
	}
	for _, r := range j.Unrestored() {
		if r.Kind == plan.RunShutdown || r.Kind == plan.RunShed {
			return true
		}
	}
	return false
}

func (a *App) tickInterval() time.Duration {
	return min(a.cfg.Power.PollInterval.D(), 250*time.Millisecond)
}

func (a *App) policyInput(now time.Time) policy.Input {
	in := policy.Input{Now: now, PlanDuration: a.cfg.Power.ShutdownDuration.D(), PlanSource: "config"}
	a.mu.Lock()
	if a.planDur > 0 {
		in.PlanDuration, in.PlanSource = a.planDur, "plan estimate"
	}
	a.mu.Unlock()
	for _, tr := range a.trackers {
		in.States = append(in.States, tr.State())
	}
	return in
}

// setFSD raises FSD on every UPS this site is the NUT primary of, so that
// the other clients shut down too. It runs beside the loop, bounded.
func (a *App) setFSD(ctx context.Context) {
	for _, s := range a.sources {
		p, ok := s.(primary)
		if !ok || !p.isPrimary() {
			continue
		}
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := p.fsd(fctx); err != nil {
			a.log.Error("set FSD failed", "err", err)
		} else {
			a.log.Info("FSD set on the UPS as primary")
		}
		cancel()
	}
}

func (a *App) publish(now time.Time, d policy.Decision, events []power.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	evs := append(a.snap.Events, events...)
	if len(evs) > maxEvents {
		evs = append([]power.Event(nil), evs[len(evs)-maxEvents:]...)
	}
	a.snap = a.snapshotLocked(now, d)
	a.snap.Events = evs
	a.sendLocked()
}

// sendLocked hands the current snapshot to every subscriber, replacing
// any snapshot it has not taken yet.
func (a *App) sendLocked() {
	for ch := range a.subs {
		select {
		case <-ch:
		default:
		}
		ch <- a.snap
	}
}

func (a *App) snapshotLocked(now time.Time, d policy.Decision) Snapshot {
	s := Snapshot{At: now, Decision: d, Events: a.snap.Events, Plan: a.snap.Plan, Shutdown: a.snap.Shutdown, Restore: a.snap.Restore}
	for _, tr := range a.trackers {
		s.UPS = append(s.UPS, tr.State())
	}
	return s
}

// Config returns the config the app runs with.
func (a *App) Config() *config.Config { return a.cfg }
