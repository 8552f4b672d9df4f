package app

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/sundown-ups/sundown/internal/notify"
	"github.com/sundown-ups/sundown/internal/plan"
	"github.com/sundown-ups/sundown/internal/power"
)

// ErrBusy: a shutdown, shed stage, drill or restore is running.
var ErrBusy = errors.New("a shutdown, drill or restore is running")

// ErrNoTargets: the config has no targets to drill.
var ErrNoTargets = errors.New("no targets configured")

// Drill starts a drill in the background (see `sundown drill`): the whole
// plan simulated (dryRun), or the groups in only shut down for real and
// journaled, so that `sundown restore` brings them back. It refuses while
// another run is in progress. The drill shows in the snapshot like a
// shutdown.
func (a *App) Drill(ctx context.Context, only []string, dryRun bool) error {
	if a.fleet == nil {
		return ErrNoTargets
	}
	if !dryRun && len(only) == 0 {
		return errors.New("a real drill names its groups (only); or ask for a dry run")
	}
	a.mu.Lock()
	if s := a.snap.Shutdown; s != nil && (s.State == "running" || s.State == "planning") {
		a.mu.Unlock()
		return ErrBusy
	}
	p := a.plan
	a.mu.Unlock()
	if p == nil {
		return errors.New("no plan yet: the targets have not been discovered")
	}
	for _, g := range only {
		if !p.HasGroup(g) {
			return fmt.Errorf("no group %q in the plan", g)
		}
	}
	a.beginRun(plan.RunDrill)
	a.log.Warn("drill requested", "only", only, "dry_run", dryRun)
	a.bg.Go(func() {
		ctx := context.WithoutCancel(ctx)
		var hooks plan.HookFunc
		if !dryRun {
			hooks = a.runHook
		}
		a.execRun(ctx, plan.RunDrill, a.freshPlan(ctx), plan.ExecOptions{Only: only, DryRun: dryRun, Hooks: hooks}, nil)
	})
	return nil
}

// Ack records an operator's acknowledgement as an event (shown on the
// page, logged, notified to channels that ask for ACK).
func (a *App) Ack(what, note, by string) {
	msg := strings.TrimSpace(fmt.Sprintf("%s acknowledged %s %s", by, orAll(what), note))
	a.log.Info("acknowledged", "what", what, "by", by, "note", note)
	a.mu.Lock()
	e := power.Event{At: a.opts.Now(), Type: NotifyAck, Message: msg}
	evs := append(a.snap.Events, e)
	if len(evs) > maxEvents {
		evs = append([]power.Event(nil), evs[len(evs)-maxEvents:]...)
	}
	a.snap.Events = evs
	a.snap.At = e.At
	a.sendLocked()
	a.mu.Unlock()
	a.notify(notify.Message{Type: NotifyAck, Severity: notify.SeverityInfo, Subject: "acknowledged", Body: msg})
}

func orAll(what string) string {
	if what == "" {
		return "everything"
	}
	return what
}
