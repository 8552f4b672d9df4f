package app

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/plan"
)

// Plan refresh periods: soon after a failure, rarely when all is well.
const (
	planRetry   = 30 * time.Second
	planRefresh = 10 * time.Minute
)

// PlanOnce connects to the targets, discovers and plans, and makes that
// plan (and its estimate) the current one. It returns the planner's
// problems and the targets that could not be reached. The daemon calls it
// before Run: a plan with errors stops startup; unreachable targets are
// only reported (Run keeps retrying them).
func (a *App) PlanOnce(ctx context.Context) ([]plan.Problem, []error) {
	if a.fleet == nil {
		return nil, nil
	}
	_, problems, errs := a.replan(ctx, 2*time.Minute)
	return problems, errs
}

// replan discovers and plans (bounded by timeout), and makes the result
// the current plan, its estimate the policy's, its summary the snapshot's.
func (a *App) replan(ctx context.Context, timeout time.Duration) (*plan.Plan, []plan.Problem, []error) {
	bctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p, problems, errs := BuildPlan(bctx, a.cfg, a.fleet, LearnedDurations(a.journalPath()))
	info := &PlanInfo{Steps: len(p.Steps), Built: a.opts.Now()}
	for _, pr := range problems {
		info.Problems = append(info.Problems, pr.String())
	}
	s := p.Estimate(p.Caps)
	info.Makespan, info.LowerBound = s.Makespan, s.LowerBound
	info.Targets = targetStatuses(a.cfg, p, errs)
	a.mu.Lock()
	states := a.snap.UPS
	a.mu.Unlock()
	if rt, ok := MinRuntime(states); ok {
		if m := s.Margin(rt, a.cfg.Power.RuntimeMargin.D()); !m.Fits {
			a.log.Warn("the plan does not fit the battery", "margin", m.String())
			info.Problems = append(info.Problems, "warning: the plan does not fit the battery: "+m.String())
		}
	}
	a.mu.Lock()
	a.plan, a.planDur = p, s.Makespan
	a.snap.Plan = info
	a.planned = len(errs) == 0
	a.mu.Unlock()
	a.log.Info("plan ready", "steps", len(p.Steps), "makespan_s", int(s.Makespan.Seconds()), "problems", len(problems))
	return p, problems, errs
}

// targetStatuses tells, per configured target, whether discovery reached
// it and what the plan has on it.
func targetStatuses(c *config.Config, p *plan.Plan, errs []error) []TargetStatus {
	out := make([]TargetStatus, len(c.Targets))
	for i, t := range c.Targets {
		ts := TargetStatus{Name: t.Name, Reachable: true}
		for _, e := range errs {
			if te, ok := errors.AsType[*TargetError](e); ok && te.Target == t.Name {
				ts.Reachable, ts.Err = false, te.Err.Error()
				break
			}
		}
		hosts := map[string]bool{}
		for _, st := range p.Steps {
			if st.Target != t.Name {
				continue
			}
			switch st.Kind {
			case plan.StepGuest:
				ts.Guests++
			case plan.StepHostMaintenance, plan.StepHostShutdown:
				hosts[st.HostID] = true
			}
		}
		ts.Hosts = len(hosts)
		out[i] = ts
	}
	return out
}

// planLoop keeps the plan and its estimate current: it rediscovers and
// replans, soon after a target was unreachable, rarely when all is well.
// An unreachable target never stops the daemon from watching the power.
func (a *App) planLoop(ctx context.Context) {
	a.mu.Lock()
	fresh := a.planned
	a.mu.Unlock()
	if fresh && !sleep(ctx, planRefresh) {
		return
	}
	for {
		problems, errs := a.PlanOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := planRefresh
		for _, e := range errs {
			a.log.Warn("target unreachable; retrying", "err", e, "in", planRetry.String())
			wait = planRetry
		}
		for _, pr := range problems {
			a.log.Warn("plan", "problem", pr.String())
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

// pendingRun reports an unfinished shutdown in the journal.
func (a *App) pendingRun() (string, bool) {
	path := a.journalPath()
	if _, err := os.Stat(path); err != nil {
		return "", false
	}
	return PendingRun(path)
}
