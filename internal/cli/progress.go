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
}

func newProgress(w io.Writer) *progress { return &progress{w: w} }

func (p *progress) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
}

func (p *progress) event(e plan.Event) {
	line := progressLine(e)
	if line == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		fmt.Fprintf(p.w, "%s  %s\n", e.At.Format("15:04:05.0"), line)
	}
}

func progressLine(e plan.Event) string {
	name := e.Name
	if e.Group != "" && e.Kind == plan.StepGuest {
		name = fmt.Sprintf("%s (%s)", e.Name, e.Group)
	}
	dry := ""
	if e.DryRun {
		dry = " [dry run]"
	}
	switch e.Type {
	case plan.EventRunStart:
		if e.Resumed {
			return "shutdown resumed from the journal" + dry
		}
		return "shutdown started" + dry
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
			return fmt.Sprintf("group %s stopped", e.Name)
		}
		return fmt.Sprintf("  %-28s %s after %s%s", name, e.Outcome, e.Elapsed.Round(100*time.Millisecond), dry)
	case plan.EventStepFailed:
		return fmt.Sprintf("  %-28s FAILED after %s: %s%s", name, e.Elapsed.Round(100*time.Millisecond), firstClause(e.Err), dry)
	case plan.EventRunDone:
		return "shutdown finished" + dry
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
