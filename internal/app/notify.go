package app

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/notify"
	"github.com/sundown-ups/sundown/internal/notify/email"
	"github.com/sundown-ups/sundown/internal/notify/notifycmd"
	"github.com/sundown-ups/sundown/internal/notify/webhook"
	"github.com/sundown-ups/sundown/internal/plan"
	"github.com/sundown-ups/sundown/internal/power"
)

// Notification types sundown adds to NUT's (power.EventType): a channel's
// types: list may name them.
const (
	NotifyShutdownDone = "SHUTDOWN_DONE" // the shutdown ran to its end (NUT's SHUTDOWN announces its start)
	NotifyStepFailed   = "STEP_FAILED"   // a step of a shutdown, shed stage or restore failed
	NotifyShed         = "SHED"          // a load-shedding stage started
	NotifyRestore      = "RESTORE"       // a restore started
	NotifyRestoreDone  = "RESTORE_DONE"  // a restore ended (with what did not come back)
	NotifyTrigger      = "TRIGGER"       // an external trigger was received
	NotifyAck          = "ACK"           // an operator acknowledged
)

// NewNotifier builds the notifier of the config's channels; nil when there
// are none.
func NewNotifier(c *config.Config, log *slog.Logger) (*notify.Notifier, error) {
	n := c.Notify
	if len(n.Channels) == 0 {
		return nil, nil
	}
	var routes []notify.Route
	for _, ch := range n.Channels {
		var (
			c   notify.Channel
			err error
		)
		switch {
		case ch.Email != nil:
			e := ch.Email
			c, err = email.New(email.Config{Name: ch.Name, From: e.From, To: e.To, Relay: e.Relay, TLS: e.TLS,
				Username: e.Username, Password: e.Password, Auth: e.Auth, CAFile: e.CAFile, HELO: e.HELO,
				SubjectPrefix: e.SubjectPrefix, Verbose: e.Verbose})
		case ch.Webhook != nil:
			w := ch.Webhook
			c, err = webhook.New(webhook.Config{Name: ch.Name, URL: w.Secret, Format: w.Format,
				Headers: secretMap(w.Headers), CAFile: w.CAFile})
		case ch.Exec != nil:
			c, err = notifycmd.New(notifycmd.Config{Name: ch.Name, Command: ch.Exec.Command, Env: secretMap(ch.Exec.Env)})
		}
		if err != nil {
			return nil, fmt.Errorf("notify channel %s: %w", ch.Name, err)
		}
		routes = append(routes, notify.Route{Channel: c, Types: ch.Types, Timeout: ch.Timeout.D()})
	}
	o := notify.Options{QueueSize: n.QueueSize, Timeout: n.Timeout.D(), Backoff: n.Backoff.D(),
		MaxBackoff: n.MaxBackoff.D(), FlushTimeout: n.FlushTimeout.D(), Log: log.With("part", "notify")}
	if n.Retries != nil {
		o.Retries = *n.Retries
		if o.Retries == 0 {
			o.Retries = -1 // "retries: 0" means none; the package's 0 means its default
		}
	}
	return notify.New(routes, o)
}

func secretMap(vs []config.SecretValue) map[string]config.Secret {
	if len(vs) == 0 {
		return nil
	}
	m := make(map[string]config.Secret, len(vs))
	for _, v := range vs {
		m[v.Name] = v.Secret
	}
	return m
}

// NotifyStats returns the notification channels' stats (nil without any).
func (a *App) NotifyStats() []notify.ChannelStats {
	if a.notifier == nil {
		return nil
	}
	return a.notifier.Stats()
}

// notify queues a message; it never blocks.
func (a *App) notify(m notify.Message) {
	if a.notifier == nil {
		return
	}
	if m.At.IsZero() {
		m.At = a.opts.Now()
	}
	a.notifier.Notify(m)
}

// severity of NUT's event types.
var eventSeverity = map[power.EventType]string{
	power.EventOnBatt: notify.SeverityWarning, power.EventLowBatt: notify.SeverityCritical, power.EventFSD: notify.SeverityCritical,
	power.EventCommBad: notify.SeverityWarning, power.EventNoComm: notify.SeverityWarning, power.EventShutdown: notify.SeverityCritical,
	power.EventReplBatt: notify.SeverityWarning, power.EventOff: notify.SeverityCritical, power.EventAlarm: notify.SeverityWarning,
	power.EventOver: notify.SeverityWarning, power.EventBypass: notify.SeverityWarning,
}

// notifyEvent turns a power event into a message with the UPS's variables.
func (a *App) notifyEvent(e power.Event, st *power.State) {
	sev := eventSeverity[e.Type]
	if sev == "" {
		sev = notify.SeverityInfo
	}
	m := notify.Message{At: e.At, Type: string(e.Type), UPS: e.UPS, Severity: sev,
		Subject: fmt.Sprintf("UPS %s: %s", e.UPS, strings.ToLower(string(e.Type))), Body: e.Message}
	if st != nil {
		m.Vars = st.Vars
	}
	a.notify(m)
}

// notifyRun announces the end of a run: its summary, what failed, and
// what it could not even try (targets unreachable when it was planned,
// from the run's notes).
func (a *App) notifyRun(kind string, rep *plan.Report) {
	if rep == nil {
		return
	}
	var done, failed int
	var lines []string
	for _, s := range rep.Steps {
		switch s.Outcome {
		case plan.OutcomeFailed:
			failed++
			lines = append(lines, fmt.Sprintf("- %s (%s): %s", s.Name, s.Key, s.Err))
		case "":
		default:
			done++
		}
	}
	var notes []string
	unreached := 0
	if sh := a.Snapshot().Shutdown; sh != nil {
		for _, n := range sh.Notes {
			if strings.HasPrefix(n, "unreachable: ") {
				unreached++
				lines = append(lines, "- not reached: "+strings.TrimPrefix(n, "unreachable: "))
			} else {
				notes = append(notes, "- "+n)
			}
		}
	}
	typ, sev, what := NotifyShutdownDone, notify.SeverityInfo, "shutdown"
	switch kind {
	case plan.RunRestore:
		typ, what = NotifyRestoreDone, "restore"
	case plan.RunShed:
		what = "shed stage"
	case plan.RunDrill:
		what = "drill"
	}
	if failed > 0 || unreached > 0 {
		sev = notify.SeverityWarning
	}
	body := fmt.Sprintf("The %s (run %s) ended after %s: %d steps ended, %d failed.", what, rep.RunID,
		rep.Ended.Sub(rep.Started).Round(1e9), done, failed)
	if unreached > 0 {
		body += fmt.Sprintf(" %d target(s) could not be reached: their guests and hosts were not touched.", unreached)
	}
	if len(lines) > 0 {
		verb := "was not done"
		if kind == plan.RunRestore {
			verb = "did not come back"
		}
		body += "\n\nWhat " + verb + ":\n" + strings.Join(lines, "\n")
	}
	if len(notes) > 0 {
		body += "\n\nNotes:\n" + strings.Join(notes, "\n")
	}
	subject := fmt.Sprintf("%s done: %d failed", what, failed)
	if unreached > 0 {
		subject += fmt.Sprintf(", %d target(s) not reached", unreached)
	}
	a.notify(notify.Message{Type: typ, Severity: sev, Subject: subject, Body: body})
}

// notifyStep announces a failed step as it happens.
func (a *App) notifyStep(e plan.Event) {
	if e.Type != plan.EventStepFailed || e.DryRun {
		return
	}
	a.notify(notify.Message{At: e.At, Type: NotifyStepFailed, Severity: notify.SeverityWarning,
		Subject: "step failed: " + e.Name, Body: fmt.Sprintf("%s (%s) failed: %s", e.Name, e.Key, e.Err)})
}

// runNotifier runs the notifier until ctx ends (then flushes, bounded).
func (a *App) runNotifier(ctx context.Context) {
	if a.notifier != nil {
		_ = a.notifier.Run(ctx)
	}
}
