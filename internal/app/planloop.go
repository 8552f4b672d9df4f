package app

import (
	"context"
	"os"
	"time"
)

// Plan refresh periods: soon after a failure, rarely when all is well.
const (
	planRetry   = 30 * time.Second
	planRefresh = 10 * time.Minute
)

// planLoop keeps the plan and its estimate current: it connects to the
// targets, discovers, plans, and publishes the estimate the runtime budget
// uses. An unreachable target is logged and retried; it never stops the
// daemon from watching the power.
func (a *App) planLoop(ctx context.Context) {
	for {
		wait := planRefresh
		bctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		p, problems, errs := BuildPlan(bctx, a.cfg, a.fleet, LearnedDurations(a.journalPath()))
		cancel()
		if ctx.Err() != nil {
			return
		}
		for _, e := range errs {
			a.log.Warn("target unreachable; retrying", "err", e, "in", planRetry.String())
			wait = planRetry
		}
		info := &PlanInfo{Steps: len(p.Steps), Built: a.opts.Now()}
		for _, pr := range problems {
			info.Problems = append(info.Problems, pr.String())
		}
		s := p.Estimate(p.Caps)
		info.Makespan, info.LowerBound = s.Makespan, s.LowerBound
		a.mu.Lock()
		a.plan, a.planDur = p, s.Makespan
		a.snap.Plan = info
		a.mu.Unlock()
		a.log.Info("plan ready", "steps", len(p.Steps), "makespan_s", int(s.Makespan.Seconds()), "problems", len(problems))
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
