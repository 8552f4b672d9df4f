package cli

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/sundown-ups/sundown/internal/plan"
)

// progress prints executor events as one line each, for people.
type progress struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
	// run, if set, names the run that is starting ("shutdown", "restore",
	// "drill", …); it is asked at each run start. Nil means "shutdown".
	// It is called without the progress's lock held.
	run  func() string
	what string // the current run's name
}

func newProgress(w io.Writer) *progress { return &progress{w: w} }

func (p *progress) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
}

func (p *progress) event(e plan.Event) {
	what := ""
	if e.Type == plan.EventRunStart && p.run != nil {
		what = p.run()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if e.Type == plan.EventRunStart {
		p.what = what
	}
	line := progressLine(e, p.what)
	if line == "" {
		return
	}
	if !p.closed {
		fmt.Fprintf(p.w, "%s  %s\n", e.At.Format("15:04:05.0"), line)
	}
}

// progressLine is the line for e, an event of a run named what ("" means
// "shutdown"); "" when e deserves none.
func progressLine(e plan.Event, what string) string {
	if what == "" {
		what = "shutdown"
	}
	name := e.Name
	if e.Group != "" && (e.Kind == plan.StepGuest || e.Kind == plan.StepGuestStart) {
		name = fmt.Sprintf("%s (%s)", e.Name, e.Group)
	}
	dry := ""
	if e.DryRun {
		dry = " [dry run]"
	}
	switch e.Type {
	case plan.EventRunStart:
		if e.Resumed {
			return what + " resumed from the journal" + dry
		}
		return what + " started" + dry
	case plan.EventActionStart:
		if e.Kind == plan.StepGroup {
			return ""
		}
		return fmt.Sprintf("  %-28s %s%s", name, actionText(e), dry)
	case plan.EventEscalate:
		return fmt.Sprintf("  %-28s escalates: %s%s", name, firstClause(e.Err), dry)
	case plan.EventActionFailed:
		return "" // the escalate or step-failed line that follows says it
	case plan.EventStepDone:
		if e.Kind == plan.StepGroup {
			if what == "restore" {
				// In a restore a group's marker ends once what the
				// group depends on is back: its guests start now.
				return fmt.Sprintf("group %s starts", e.Name)
			}
			return fmt.Sprintf("group %s stopped", e.Name)
		}
		return fmt.Sprintf("  %-28s %s after %s%s", name, e.Outcome, e.Elapsed.Round(100*time.Millisecond), dry)
	case plan.EventStepFailed:
		return fmt.Sprintf("  %-28s FAILED after %s: %s%s", name, e.Elapsed.Round(100*time.Millisecond), firstClause(e.Err), dry)
	case plan.EventRunDone:
		return what + " finished" + dry
	}
	return ""
}

func actionText(e plan.Event) string {
	switch e.Kind {
	case plan.StepHook:
		return "hook running"
	case plan.StepHostMaintenance:
		return "entering maintenance mode"
	case plan.StepHostShutdown:
		return "host shutting down"
	case plan.StepHostWake:
		return "waking the host"
	case plan.StepHostExitMaintenance:
		return "leaving maintenance mode"
	case plan.StepGuestStart:
		return "powering on"
	}
	return e.Action.String()
}

// firstClause keeps the leading sentence of a wrapped error ("guest x not
// off within 6s"), which is what a person needs in a progress line; the
// whole error is in the log and the report.
func firstClause(err string) string {
	if i := strings.Index(err, ": "); i > 0 {
		return err[:i]
	}
	return err
}
