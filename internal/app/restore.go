package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/notify"
	"github.com/sundown-ups/sundown/internal/plan"
	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/ready"
	"github.com/sundown-ups/sundown/internal/wake"
)

// ErrNothingToRestore: the journal has no run since the last restore.
var ErrNothingToRestore = errors.New("nothing to restore: no shutdown, shed stage or drill since the last restore")

// PlanRestore plans the restore of every run the journal at path holds
// since the last full restore (see plan.MergeRuns), for the groups in only
// (empty: all). It returns the plan and the ID of the newest run it undoes.
func PlanRestore(c *config.Config, journalPath string, only []string) (*plan.Plan, string, error) {
	j, err := plan.ReadJournal(journalPath)
	if err != nil {
		return nil, "", err
	}
	runs := j.Unrestored()
	if len(runs) == 0 {
		return nil, "", ErrNothingToRestore
	}
	run, ok := plan.MergeRuns(runs)
	if !ok {
		return nil, "", fmt.Errorf("restore: the journal's runs have no plan (written by an older sundown)")
	}
	r := c.Restore
	spec := plan.RestoreSpec{
		Caps:        plan.Caps{Global: c.Shutdown.Caps.Global, PerHost: c.Shutdown.Caps.PerHost},
		HostTimeout: r.HostTimeout.D(), MaintenanceTimeout: r.MaintenanceTimeout.D(), GuestTimeout: r.GuestTimeout.D(),
		GroupTimeout: map[string]time.Duration{},
		History:      j.History(),
		Only:         only,
	}
	for _, g := range c.Shutdown.Groups {
		if g.RestoreTimeout > 0 {
			spec.GroupTimeout[g.Name] = g.RestoreTimeout.D()
		}
	}
	p, err := plan.RestorePlan(run, spec)
	return p, run.ID, err
}

// NewRestoreHooks connects a restore to the config and the fleet: wakers
// from targets[].wake, host checks through the targets' inventories,
// readiness from the groups' and guests' ready:.
func NewRestoreHooks(c *config.Config, f *Fleet, log *slog.Logger, of string) plan.RestoreHooks {
	return plan.RestoreHooks{
		Of:       of,
		Poll:     c.Restore.Poll.D(),
		Provider: f.Provider,
		HostUp: func(ctx context.Context, st plan.Step) (bool, error) {
			p, err := f.Provider(ctx, st.Target)
			if err != nil {
				return false, err
			}
			inv, err := p.Inventory(ctx)
			if err != nil {
				return false, err
			}
			for _, h := range inv.Hosts {
				if h.ID == st.HostID {
					return h.Power == provider.PowerOn, nil
				}
			}
			return false, fmt.Errorf("host %s not in target %s's inventory", st.HostName, st.Target)
		},
		Wake: func(ctx context.Context, st plan.Step) (bool, error) {
			w, err := waker(c, st)
			if w == nil || err != nil {
				return false, err
			}
			log.Info("restore: waking host", "host", st.HostName, "target", st.Target, "by", fmt.Sprint(w))
			return true, w.Wake(ctx)
		},
		Ready: func(ctx context.Context, st plan.Step) error {
			r := readyOf(c, st)
			if r == nil {
				return nil
			}
			if r.Tools {
				p, err := f.Provider(ctx, st.Target)
				if err != nil {
					return err
				}
				g, err := p.Guest(ctx, st.GuestID)
				if err != nil {
					return err
				}
				if g.Tools != provider.ToolsRunning {
					return fmt.Errorf("guest tools %s", g.Tools)
				}
			}
			expand := func(s string) string { return strings.ReplaceAll(s, "{name}", st.Name) }
			if r.TCP != "" {
				pr, err := ready.TCP(expand(r.TCP))
				if err != nil {
					return err
				}
				if err := pr.Check(ctx); err != nil {
					return err
				}
			}
			if h := r.HTTP; h != nil {
				pr, err := ready.NewHTTP(ready.HTTPConfig{URL: expand(h.URL), Status: h.Status, Contains: h.Contains, CAFile: h.CAFile})
				if err != nil {
					return err
				}
				return pr.Check(ctx)
			}
			return nil
		},
	}
}

// waker returns the waker configured for a host-on step's host, nil when
// none is.
func waker(c *config.Config, st plan.Step) (wake.Waker, error) {
	for _, t := range c.Targets {
		if t.Name != st.Target {
			continue
		}
		for _, w := range t.Wake {
			if w.Host != "" && w.Host != st.HostName && w.Host != st.HostID {
				continue
			}
			if o := w.WOL; o != nil {
				return wake.NewWOL(wake.WOLConfig{MAC: o.MAC, SecureOn: o.SecureOn, Broadcast: o.Broadcast, Port: o.Port,
					Repeat: o.Repeat, Interval: o.Interval.D()})
			}
			if m := w.IPMI; m != nil {
				return wake.NewIPMI(wake.IPMIConfig{Host: m.Host, Port: m.Port, User: m.User, Password: m.Password,
					Privilege: m.Privilege, Timeout: m.Timeout.D(), CipherSuite: m.CipherSuite})
			}
		}
	}
	return nil, nil
}

// readyOf returns the readiness check of a guest-on step: its guest rule's,
// else its group's.
func readyOf(c *config.Config, st plan.Step) *config.Ready {
	for _, g := range c.Shutdown.Guests {
		if g.Ready != nil && (g.Name == st.Name || g.Name == st.Target+"/"+st.Name || g.Name == st.GuestID ||
			g.Name == st.Target+"/"+st.GuestID) {
			return g.Ready
		}
	}
	for _, g := range c.Shutdown.Groups {
		if g.Name == st.Group {
			return g.Ready
		}
	}
	return nil
}

// Provider returns the provider of a target, connecting it (and only it)
// when needed, bounded by ctx's deadline or 30 s.
func (f *Fleet) Provider(ctx context.Context, target string) (provider.Provider, error) {
	for _, t := range f.targets {
		if t.Name == target {
			timeout := 30 * time.Second
			if d, ok := ctx.Deadline(); ok {
				timeout = max(time.Until(d), 0)
			}
			return f.connect(ctx, t, timeout)
		}
	}
	return nil, fmt.Errorf("no target %q", target)
}

// run kinds the snapshot shows.
var runWhat = map[string]string{plan.RunShutdown: "shutdown", plan.RunShed: "shed", plan.RunDrill: "drill", plan.RunRestore: "restore"}

// execRun executes p as a run of kind (with the journal, the snapshot's
// progress, notifications) and returns its report. For a restore, hooks is
// set; stop cancels a restore (it is not latched), a shutdown ignores it.
func (a *App) execRun(ctx context.Context, kind string, p *plan.Plan, opts plan.ExecOptions, hooks *plan.RestoreHooks) *plan.Report {
	est := p.Estimate(p.Caps)
	a.setShutdown(func(s *ShutdownStatus) {
		s.State, s.Estimate, s.DryRun, s.Steps = "running", est.Makespan, opts.DryRun, stepStatuses(p)
	})
	j, err := plan.OpenJournal(a.journalPath())
	if err != nil {
		a.log.Error("journal unavailable: the run goes on without it", "err", err)
		a.note("journal unavailable: %v", err)
		j = nil
	} else {
		defer j.Close()
	}
	opts.Journal, opts.Log, opts.OnEvent, opts.Kind = j, a.log, a.onStep, kind
	var rep *plan.Report
	if hooks != nil {
		rep, err = plan.Restore(ctx, p, a.fleet.Targets(), *hooks, opts)
	} else {
		rep, err = plan.Execute(ctx, p, a.fleet.Targets(), opts)
	}
	a.finishReport(rep, err)
	state := "done"
	if rep != nil && rep.Stopped {
		state = "stopped"
	}
	a.setShutdown(func(s *ShutdownStatus) { s.State, s.Ended = state, a.opts.Now() })
	if !opts.DryRun {
		a.notifyRun(kind, rep)
	}
	return rep
}

// beginRun shows a new run of kind in the snapshot, before its plan is
// built (the notes of the planning stay with it).
func (a *App) beginRun(kind string) {
	a.setShutdown(func(s *ShutdownStatus) {
		*s = ShutdownStatus{Kind: runWhat[kind], State: "planning", Started: a.opts.Now()}
	})
}

// runRestore plans and runs the restore of what the journal says went
// down. ctx cancels it: a restore is not latched, a new outage stops it.
func (a *App) runRestore(ctx context.Context, reason string) {
	a.beginRun(plan.RunRestore)
	p, of, err := PlanRestore(a.cfg, a.journalPath(), nil)
	if err != nil {
		a.log.Error("restore: cannot plan", "err", err)
		a.note("cannot plan the restore: %v", err)
		a.setShutdown(func(s *ShutdownStatus) { s.State, s.Ended = "done", a.opts.Now() })
		return
	}
	a.log.Warn("starting the restore", "reason", reason, "undoing", of, "steps", len(p.Steps))
	a.notify(notify.Message{Type: NotifyRestore, Severity: notify.SeverityInfo, Subject: "restore started", Body: reason})
	hooks := NewRestoreHooks(a.cfg, a.fleet, a.log, of)
	a.execRun(ctx, plan.RunRestore, p, plan.ExecOptions{StopOnCancel: true}, &hooks)
	a.log.Warn("restore finished")
}

// runShed runs a load-shedding stage: the shutdown of its groups only.
func (a *App) runShed(ctx context.Context, st config.ShedStage, reason string) {
	ctx = context.WithoutCancel(ctx)
	a.log.Warn("load shedding", "stage", st.Name, "groups", st.Groups, "reason", reason)
	a.notify(notify.Message{Type: NotifyShed, Severity: notify.SeverityWarning, Subject: "shedding " + st.Name,
		Body: fmt.Sprintf("Stage %s shuts down %s early: %s.", st.Name, strings.Join(st.Groups, ", "), reason)})
	a.beginRun(plan.RunShed)
	p := a.freshPlan(ctx)
	if p == nil {
		return
	}
	var only []string
	for _, g := range st.Groups {
		if p.HasGroup(g) {
			only = append(only, g)
		}
	}
	if len(only) == 0 {
		a.log.Warn("load shedding: none of the stage's groups has guests", "stage", st.Name)
		return
	}
	a.execRun(ctx, plan.RunShed, p, plan.ExecOptions{Only: only, Hooks: a.runHook}, nil)
}
