package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/policy"
	"github.com/sundown-ups/sundown/internal/power"
)

// view prints snapshots for a person. On a terminal it redraws one screen;
// elsewhere (a pipe, a log file, CI) it prints one line per change.
type view struct {
	w        io.Writer
	title    string
	live     bool
	printed  int // events already printed in line mode
	lastKind policy.Kind
	lastLine time.Time
	started  bool
}

func newView(w io.Writer, title string) *view {
	return &view{w: w, title: title, live: isTerminal(w), lastKind: -1}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (v *view) show(s app.Snapshot) {
	if v.live {
		v.redraw(s)
		return
	}
	v.lines(s)
}

func (v *view) redraw(s app.Snapshot) {
	var b strings.Builder
	b.WriteString("\x1b[H\x1b[2J")
	fmt.Fprintf(&b, "%s  %s\n\n", v.title, s.At.Format("15:04:05"))
	writeUPSTable(&b, s.UPS, s.At)
	fmt.Fprintf(&b, "\n%s\n", decisionLine(s.Decision))
	for _, r := range s.Decision.Reasons {
		fmt.Fprintf(&b, "  - %s\n", r)
	}
	b.WriteString("\nRecent events:\n")
	evs := s.Events
	if len(evs) > 10 {
		evs = evs[len(evs)-10:]
	}
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s  %-8s %s\n", e.At.Format("15:04:05.0"), e.Type, e.Message)
	}
	_, _ = io.WriteString(v.w, b.String())
}

// lines prints new events, every change of decision, and while anything is
// not OK a status line at most every 5 s.
func (v *view) lines(s app.Snapshot) {
	if v.printed > len(s.Events) {
		v.printed = 0
	}
	for _, e := range s.Events[v.printed:] {
		fmt.Fprintf(v.w, "%s  %-8s %s\n", e.At.Format("15:04:05.0"), e.Type, e.Message)
	}
	v.printed = len(s.Events)
	changed := s.Decision.Kind != v.lastKind
	periodic := s.Decision.Kind == policy.Warn && s.At.Sub(v.lastLine) >= 5*time.Second
	if changed || periodic || !v.started {
		v.started = true
		v.lastKind = s.Decision.Kind
		v.lastLine = s.At
		fmt.Fprintf(v.w, "%s  %s\n", s.At.Format("15:04:05.0"), decisionLine(s.Decision))
		for _, u := range s.UPS {
			fmt.Fprintf(v.w, "            %s\n", upsLine(u, s.At))
		}
	}
}

func decisionLine(d policy.Decision) string {
	return "Decision: " + d.String()
}

func writeUPSTable(w io.Writer, ups []power.State, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "UPS\tSTATUS\tCHARGE\tRUNTIME\tLOAD\tCOMM\tLAST SEEN")
	for _, u := range ups {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", u.Name, statusText(u), pct(u.Charge), secs(u.Runtime), pct(u.Load), u.Comm, ago(u.LastSeen, now))
	}
	_ = tw.Flush()
}

func upsLine(u power.State, now time.Time) string {
	return fmt.Sprintf("%s: %s, charge %s, runtime %s, load %s, comm %s (seen %s)", u.Name, statusText(u), pct(u.Charge), secs(u.Runtime), pct(u.Load), u.Comm, ago(u.LastSeen, now))
}

func statusText(u power.State) string {
	s := u.Status.String()
	if s == "" {
		return "?"
	}
	return s
}

func pct(v float64) string {
	if v < 0 {
		return "?"
	}
	return fmt.Sprintf("%.0f %%", v)
}

func secs(d time.Duration) string {
	if d < 0 {
		return "?"
	}
	return fmt.Sprintf("%d s", int(d.Round(time.Second)/time.Second))
}

func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t).Round(100 * time.Millisecond)
	if d < time.Second {
		return "just now"
	}
	return d.String() + " ago"
}
