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
	"github.com/sundown-ups/sundown/internal/policy"
	"github.com/sundown-ups/sundown/internal/power"
)

// Snapshot is the daemon's view at one moment.
type Snapshot struct {
	At       time.Time
	UPS      []power.State // in config order
	Decision policy.Decision
	Events   []power.Event // the most recent events, oldest first (bounded)
}

// Options tune an App beyond its config.
type Options struct {
	// Act lets the app act on a shutdown decision (set FSD in primary
	// mode). A passive watcher leaves it false.
	Act bool
	// OnEvent, if set, is called for every power event from the app's
	// loop. It must not block.
	OnEvent func(power.Event)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// App is the running daemon core.
type App struct {
	cfg     *config.Config
	log     *slog.Logger
	opts    Options
	pcfg    policy.Config
	sources []source

	mu       sync.Mutex
	snap     Snapshot
	subs     map[chan Snapshot]struct{}
	trackers []*power.Tracker
}

const maxEvents = 200

// New builds an App from a loaded config.
func New(cfg *config.Config, log *slog.Logger, opts Options) (*App, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	a := &App{cfg: cfg, log: log, opts: opts, pcfg: PolicyConfig(cfg), subs: map[chan Snapshot]struct{}{}}
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

// Run watches every UPS until ctx ends. It returns after every goroutine it
// started has ended (NUT logins are released with LOGOUT on the way out).
func (a *App) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	updates := make(chan update, 64)
	var wg sync.WaitGroup
	for i, s := range a.sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(ctx, func(u update) {
				u.idx = i
				select {
				case updates <- u:
				case <-ctx.Done():
				}
			})
		}()
	}
	defer wg.Wait()

	tick := time.NewTicker(a.tickInterval())
	defer tick.Stop()
	var prev policy.Decision
	prev.ETA = -1
	fsdDone := false
	for {
		var events []power.Event
		select {
		case <-ctx.Done():
			return nil
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
		if d.Kind == policy.Shutdown && a.opts.Act && !fsdDone {
			fsdDone = true
			a.setFSD(ctx)
		}
	}
}

func (a *App) tickInterval() time.Duration {
	return min(a.cfg.Power.PollInterval.D(), 250*time.Millisecond)
}

func (a *App) policyInput(now time.Time) policy.Input {
	in := policy.Input{Now: now, PlanDuration: a.cfg.Power.ShutdownDuration.D(), PlanSource: "config"}
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
	for ch := range a.subs {
		select {
		case <-ch:
		default:
		}
		ch <- a.snap
	}
}

func (a *App) snapshotLocked(now time.Time, d policy.Decision) Snapshot {
	s := Snapshot{At: now, Decision: d, Events: a.snap.Events}
	for _, tr := range a.trackers {
		s.UPS = append(s.UPS, tr.State())
	}
	return s
}
