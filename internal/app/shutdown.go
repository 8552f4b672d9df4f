package app

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/plan"
	"github.com/sundown-ups/sundown/internal/provider/sshconn"
)

// DefaultJournal is the journal of a default install.
var DefaultJournal = filepath.Join(config.DefaultStateDir, "journal.jsonl")

// JournalPath is where a config keeps its journal.
func JournalPath(c *config.Config) string { return filepath.Join(c.StateDir, "journal.jsonl") }

// LearnedDurations reads past runs' step durations from a journal; a
// missing or unreadable journal gives none (the plan then uses timeouts).
func LearnedDurations(path string) map[string]time.Duration {
	h, err := plan.ReadHistory(path)
	if err != nil {
		return nil
	}
	return h
}

// StepStatus is one step of a running or finished shutdown.
type StepStatus struct {
	ID      int
	Key     string
	Name    string
	Group   string
	Kind    string
	State   string // pending, running, done, failed, skipped
	Outcome plan.Outcome
	Action  string // the action running or last run
	Err     string
	Start   time.Time
	End     time.Time
}

// ShutdownStatus is the shutdown as the snapshot shows it.
type ShutdownStatus struct {
	// Kind is what runs: "shutdown", "shed", "drill" or "restore".
	Kind     string
	State    string // "running", "done" or "stopped" (a restore cut short by an outage)
	RunID    string
	Resumed  bool
	DryRun   bool
	Started  time.Time
	Ended    time.Time
	Estimate time.Duration
	Steps    []StepStatus
	Notes    []string // UPS command, unreachable targets, journal errors
}

// runShutdown builds a fresh plan and executes it to its end. It never
// gives up on ctx: once started, the shutdown finishes (the latch); only
// the process dying stops it, and the journal resumes it on restart.
func (a *App) runShutdown(ctx context.Context, reason string) {
	ctx = context.WithoutCancel(ctx)
	a.log.Warn("starting the shutdown", "reason", reason)
	a.beginRun(plan.RunShutdown)
	p := a.freshPlan(ctx)
	if p == nil {
		a.log.Error("no plan could be built: nothing to shut down beyond the UPS steps")
		p = &plan.Plan{}
	}
	rest, self := splitSelf(p)
	est := p.Estimate(p.Caps)
	a.setShutdown(func(s *ShutdownStatus) {
		s.State, s.Estimate = "running", est.Makespan
		s.Steps = stepStatuses(p)
	})
	j, err := plan.OpenJournal(a.journalPath())
	if err != nil {
		a.log.Error("journal unavailable: the shutdown runs without it (no resume after a crash)", "err", err)
		a.note("journal unavailable: %v", err)
		j = nil
	}
	opts := plan.ExecOptions{Journal: j, Hooks: a.runHook, Log: a.log, OnEvent: a.onStep}
	rep, err := plan.Execute(ctx, rest, a.fleet.Targets(), opts)
	a.finishReport(rep, err)
	a.afterGuests(ctx)
	a.notifyRun(plan.RunShutdown, rep) // before the host carrying sundown goes
	if self != nil {
		rep, err = plan.Execute(ctx, self, a.fleet.Targets(), opts)
		a.finishReport(rep, err)
	}
	if j != nil {
		_ = j.Close()
	}
	a.setShutdown(func(s *ShutdownStatus) { s.State, s.Ended = "done", a.opts.Now() })
	a.log.Warn("shutdown finished")
}

func (a *App) finishReport(rep *plan.Report, err error) {
	if err != nil {
		a.log.Error("executor", "err", err)
		a.note("executor: %v", err)
	}
	if rep == nil {
		return
	}
	a.setShutdown(func(s *ShutdownStatus) {
		if s.RunID == "" {
			s.RunID, s.Resumed = rep.RunID, rep.Resumed
		}
		if rep.JournalErr != "" {
			s.Notes = append(s.Notes, "journal write failed (a restart could not resume this run): "+rep.JournalErr)
		}
	})
	for _, f := range rep.Failed() {
		a.log.Error("step failed", "step", f.Name, "key", f.Key, "err", f.Err)
	}
}

// afterGuests runs once every step but the host carrying sundown is done:
// as primary, wait (bounded) for the other NUT clients to log out, then
// send the configured UPS command. Until here every NUT LOGIN is held.
func (a *App) afterGuests(ctx context.Context) {
	for _, s := range a.sources {
		ns, ok := s.(*nutSource)
		if !ok || !ns.isPrimary() || ns.cfg.NUT.UPSCommand == "" {
			continue
		}
		n := ns.cfg.NUT
		wctx, cancel := context.WithTimeout(ctx, n.PrimaryWait.D())
		others, err := ns.waitOthersGone(wctx)
		cancel()
		switch {
		case err != nil:
			a.log.Warn("other NUT clients still logged in; sending the UPS command anyway", "ups", ns.cfg.Name, "clients", others, "waited", n.PrimaryWait.D().String())
		default:
			a.log.Info("other NUT clients logged out", "ups", ns.cfg.Name)
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = ns.instCmd(cctx, n.UPSCommand)
		cancel()
		if err != nil {
			a.log.Error("UPS command failed", "ups", ns.cfg.Name, "cmd", n.UPSCommand, "err", err)
			a.note("UPS %s: %s failed: %v", ns.cfg.Name, n.UPSCommand, err)
		} else {
			a.log.Warn("UPS command sent", "ups", ns.cfg.Name, "cmd", n.UPSCommand)
			a.note("UPS %s: %s sent", ns.cfg.Name, n.UPSCommand)
		}
	}
}

// splitSelf separates the step shutting down the host that carries
// sundown (always last) so the UPS steps can run before it.
func splitSelf(p *plan.Plan) (rest, self *plan.Plan) {
	n := len(p.Steps)
	if p.SelfHost == "" || n == 0 {
		return p, nil
	}
	last := p.Steps[n-1]
	if last.Kind != plan.StepHostShutdown || !strings.HasSuffix(last.Key, "/"+p.SelfHost) {
		return p, nil
	}
	r := *p
	r.Steps = p.Steps[:n-1]
	s := *p
	last.ID, last.Deps = 0, nil // Execute wants IDs equal to positions
	s.Steps = []plan.Step{last}
	return &r, &s
}

func (a *App) runHook(ctx context.Context, s plan.Step) error { return RunHook(a.cfg)(ctx, s) }

// RunHook returns the runner of the config's hooks: a command (no shell)
// or an HTTP call, bounded by the step's timeout (ctx).
func RunHook(c *config.Config) plan.HookFunc {
	return func(ctx context.Context, s plan.Step) error { return runHook(ctx, c, s) }
}

func runHook(ctx context.Context, c *config.Config, s plan.Step) error {
	var h *config.Hook
	for i := range c.Shutdown.Hooks {
		if c.Shutdown.Hooks[i].Name == s.Name {
			h = &c.Shutdown.Hooks[i]
		}
	}
	switch {
	case h == nil:
		return fmt.Errorf("hook %s: not in the config", s.Name)
	case h.Exec != nil:
		cmd := exec.CommandContext(ctx, h.Exec.Command[0], h.Exec.Command[1:]...)
		cmd.Env = append(cmd.Environ(), "SUNDOWN_HOOK="+h.Name)
		cmd.WaitDelay = time.Second
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("hook %s: %w: %s", h.Name, err, strings.TrimSpace(lastLine(string(out))))
		}
		return nil
	case h.HTTP != nil:
		req, err := http.NewRequestWithContext(ctx, h.HTTP.Method, h.HTTP.URL, strings.NewReader(`{"event":"shutdown","hook":"`+h.Name+`"}`))
		if err != nil {
			return fmt.Errorf("hook %s: %w", h.Name, err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := (&http.Client{Timeout: h.Timeout.D()}).Do(req)
		if err != nil {
			return fmt.Errorf("hook %s: %w", h.Name, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode >= 300 {
			return fmt.Errorf("hook %s: %s answered %s", h.Name, h.HTTP.URL, resp.Status)
		}
		return nil
	case h.SSH != nil:
		return runSSHHook(ctx, h)
	}
	return errors.New("hook " + s.Name + ": nothing to run")
}

// runSSHHook runs the hook's command over SSH: the host key must be in
// known_hosts; exit 0 is success, anything else an error with the last
// line of its output.
func runSSHHook(ctx context.Context, h *config.Hook) error {
	sh := h.SSH
	ep, err := sshconn.NewEndpoint(sh.Address, sh.User, sh.KeyFile, sh.KnownHostsFile)
	if err != nil {
		return fmt.Errorf("hook %s: %w", h.Name, err)
	}
	client, err := ep.Dial(ctx, "hook", h.Name, func(err error) error { return sshconn.Failure(ctx, false, "hook", h.Name, err) })
	if err != nil {
		return fmt.Errorf("hook %s: %w", h.Name, err)
	}
	defer client.Close()
	stop := context.AfterFunc(ctx, func() { client.Close() })
	defer stop()
	sess, err := client.NewSession()
	if err != nil {
		return fmt.Errorf("hook %s: session: %w", h.Name, err)
	}
	defer sess.Close()
	out, err := sess.CombinedOutput(sh.Command)
	if ctx.Err() != nil {
		return fmt.Errorf("hook %s: %w", h.Name, ctx.Err())
	}
	switch x := sshconn.ExitOf(err); {
	case err == nil:
		return nil
	case x.Dropped:
		return fmt.Errorf("hook %s: the connection dropped before %q ended: %w", h.Name, sh.Command, err)
	default:
		return fmt.Errorf("hook %s: %q exited %d: %s", h.Name, sh.Command, x.Status, strings.TrimSpace(lastLine(string(out))))
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func stepStatuses(p *plan.Plan) []StepStatus {
	out := make([]StepStatus, 0, len(p.Steps))
	for _, s := range p.Steps {
		out = append(out, StepStatus{ID: s.ID, Key: s.Key, Name: s.Name, Group: s.Group, Kind: s.Kind.String(), State: "pending"})
	}
	return out
}

// onStep records an executor event in the snapshot. It runs on the
// executor's event goroutine, never on the shutdown's path.
func (a *App) onStep(e plan.Event) {
	if a.opts.OnStep != nil {
		a.opts.OnStep(e)
	}
	a.setShutdown(func(s *ShutdownStatus) {
		for i := range s.Steps {
			st := &s.Steps[i]
			if st.Key != e.Key {
				continue
			}
			switch e.Type {
			case plan.EventStepStart:
				st.State, st.Start = "running", e.At
			case plan.EventActionStart:
				st.Action = e.Action.String()
			case plan.EventStepDone:
				st.State, st.Outcome, st.End = "done", e.Outcome, e.At
				if e.Outcome == plan.OutcomeSkipped {
					st.State = "skipped"
				}
			case plan.EventStepFailed:
				st.State, st.Outcome, st.Err, st.End = "failed", e.Outcome, e.Err, e.At
			}
			return
		}
	})
}

func (a *App) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	a.setShutdown(func(s *ShutdownStatus) { s.Notes = append(s.Notes, msg) })
}

// setShutdown changes the shutdown status and publishes a snapshot.
func (a *App) setShutdown(f func(*ShutdownStatus)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var s ShutdownStatus
	if a.snap.Shutdown != nil {
		s = *a.snap.Shutdown
		s.Steps = append([]StepStatus(nil), s.Steps...)
		s.Notes = append([]string(nil), s.Notes...)
	}
	f(&s)
	snap := a.snap
	snap.Shutdown = &s
	snap.At = a.opts.Now()
	a.snap = snap
	a.sendLocked()
}

func (a *App) journalPath() string {
	if a.opts.Journal != "" {
		return a.opts.Journal
	}
	return JournalPath(a.cfg)
}

// freshPlan rediscovers the fleet and plans; when nothing could be
// discovered it falls back to the last good plan.
func (a *App) freshPlan(ctx context.Context) *plan.Plan {
	if a.fleet == nil {
		return nil
	}
	a.mu.Lock()
	last := a.plan
	a.mu.Unlock()
	p, problems, errs := a.replan(ctx, 60*time.Second)
	for _, e := range errs {
		a.log.Error("target unreachable: its guests are not in this shutdown", "err", e)
		a.note("unreachable: %v", e)
	}
	for _, pr := range problems {
		a.log.Warn("plan", "problem", pr.String())
	}
	if len(p.Steps) == 0 && last != nil {
		a.mu.Lock()
		a.plan = last
		a.mu.Unlock()
		return last
	}
	return p
}

// PendingRun reports the ID of an unfinished shutdown in the journal.
// Only a full shutdown is resumed: a drill or shed stage cut short by a
// crash is left as it is (the next restore brings back what it stopped).
func PendingRun(path string) (string, bool) {
	rs, ok, err := plan.ReadPending(path)
	if err != nil || !ok || len(rs.Only) > 0 {
		return "", false
	}
	return rs.ID, true
}
