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
}

// PlanInfo summarizes the plan the daemon would run now.
type PlanInfo struct {
	Steps      int
	Makespan   time.Duration
	LowerBound time.Duration
	Problems   []string
	Built      time.Time
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

	fleet *Fleet

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
		default:
			return nil, fmt.Errorf("ups %s: no source", u.Name)
		}
	}
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
// shutdown when the policy decides it. It returns after every goroutine it
// started has ended.
//
// SIGTERM (ctx ending) during a shutdown does not abandon it: Run keeps the
// shutdown going, and the NUT logins held, until the plan has run to its
// end, then returns. A SIGKILL stops it for real; the journal makes the
// next start resume the same run at once, whatever the power state.
func (a *App) Run(ctx context.Context) error {
	// Sources live until Run returns, not until ctx ends: the NUT LOGIN
	// must be held while a shutdown runs.
	var wg sync.WaitGroup
	if a.fleet != nil {
		defer a.fleet.Close() // after every goroutine using it has ended
	}
	defer wg.Wait()
	srcCtx, stopSources := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSources() // runs first: ends the sources and the plan loop
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
	if a.fleet != nil {
		if a.opts.Act || a.opts.Plan {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a.planLoop(srcCtx)
			}()
		}
	}

	tick := time.NewTicker(a.tickInterval())
	defer tick.Stop()
	var prev policy.Decision
	prev.ETA = -1
	shutdownDone := make(chan struct{})
	started, finished := false, false
	startShutdown := func(reason string) {
		if started || !a.opts.Act {
			return
		}
		started = true
		a.setFSD(srcCtx)
		if a.fleet == nil {
			close(shutdownDone) // no targets: FSD was the whole shutdown
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(shutdownDone)
			a.runShutdown(srcCtx, reason)
		}()
	}
	if a.opts.Act && a.fleet != nil {
		if id, ok := a.pendingRun(); ok {
			prev = policy.Decision{Kind: policy.Shutdown, At: a.opts.Now(), ETA: 0,
				Reasons: []string{"resuming the shutdown recorded in the journal (run " + id + "): a started shutdown always finishes"}}
			a.log.Warn("resuming an unfinished shutdown from the journal", "run", id)
			a.publish(a.opts.Now(), prev, nil)
			startShutdown(prev.Reasons[0])
		}
	}
	ctxDone := ctx.Done()
	for {
		var events []power.Event
		select {
		case <-ctxDone:
			if !started || finished {
				return nil
			}
			a.log.Warn("stop requested during a shutdown: finishing the shutdown first")
			ctxDone = nil
			continue
		case <-shutdownDone:
			shutdownDone, finished = nil, true
			if ctx.Err() != nil {
				return nil
			}
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
		for _, e := range events {
			a.log.Info("power event", "ups", e.UPS, "event", string(e.Type), "msg", e.Message)
			if a.opts.OnEvent != nil {
				a.opts.OnEvent(e)
			}
		}
		d := policy.Decide(a.pcfg, a.policyInput(now), prev)
		if d.Kind != prev.Kind {
			a.log.Info("decision", "decision", d.String())
		}
		prev = d
		a.publish(now, d, events)
		if d.Kind == policy.Shutdown {
			startShutdown(d.String())
		}
	}
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
	s := Snapshot{At: now, Decision: d, Events: a.snap.Events, Plan: a.snap.Plan, Shutdown: a.snap.Shutdown}
	for _, tr := range a.trackers {
		s.UPS = append(s.UPS, tr.State())
	}
	return s
}

// Config returns the config the app runs with.
func (a *App) Config() *config.Config { return a.cfg }
