// Package notify delivers notifications (email, webhooks, NUT-style
// NOTIFYCMD hooks) beside a UPS shutdown without ever blocking or delaying
// it.
//
// A Notifier owns one worker goroutine and one bounded queue per channel, so
// a dead SMTP server never delays a webhook. Notify never blocks: when a
// channel's queue is full the oldest queued message is dropped and counted.
// Each delivery attempt has a per-channel timeout; failed attempts are
// retried with capped exponential backoff and jitter unless the channel
// reports the error as permanent (see Permanent). Stats exposes, per channel,
// what was sent, what failed and whether the channel is currently down.
//
// The channels live in sub-packages: notify/email, notify/webhook and
// notify/notifycmd. They report errors that never contain secrets (SMTP
// passwords, header values, webhook URL paths and queries).
package notify

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Severity values used in Message.Severity.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Message is one notification. Type carries NUT's NOTIFYTYPE names (ONBATT,
// ONLINE, LOWBATT, FSD, COMMBAD, COMMOK, SHUTDOWN, …) or sundown's own
// (SHUTDOWN_STARTED, SHUTDOWN_DONE, STEP_FAILED, …); types are plain strings.
type Message struct {
	At       time.Time
	Type     string            // NOTIFYTYPE, e.g. "ONBATT"
	UPS      string            // may be empty for site-wide messages
	Severity string            // "info", "warning" or "critical"
	Subject  string            // one line, like upsmon's notice text
	Body     string            // free text, may span lines
	Vars     map[string]string // UPS variables, for verbose email and JSON
}

// Text is the message's one-line text: Subject, or the first line of Body
// when Subject is empty.
func (m Message) Text() string {
	if m.Subject != "" {
		return m.Subject
	}
	first, _, _ := strings.Cut(m.Body, "\n")
	return first
}

// SortedVars returns the message's variables as "name: value" lines sorted
// by name.
func (m Message) SortedVars() []string {
	names := make([]string, 0, len(m.Vars))
	for k := range m.Vars {
		names = append(names, k)
	}
	sort.Strings(names)
	out := make([]string, len(names))
	for i, k := range names {
		out[i] = k + ": " + m.Vars[k]
	}
	return out
}

// JSONBody is the stable JSON form of a Message, sent by the webhook "json"
// format and written to NOTIFYCMD hooks' standard input. Fields are never
// removed or renamed; new ones may be added.
type JSONBody struct {
	At       string            `json:"at"` // RFC 3339 in UTC, e.g. "2026-03-04T04:06:07Z"
	Type     string            `json:"type"`
	UPS      string            `json:"ups"` // "" for site-wide messages
	Severity string            `json:"severity"`
	Subject  string            `json:"subject"`
	Body     string            `json:"body"`
	Vars     map[string]string `json:"vars"` // always an object, {} when empty
}

// JSON renders m as a JSONBody.
func (m Message) JSON() ([]byte, error) {
	vars := m.Vars
	if vars == nil {
		vars = map[string]string{}
	}
	return json.Marshal(JSONBody{
		At: m.At.UTC().Format(time.RFC3339Nano), Type: m.Type, UPS: m.UPS, Severity: m.Severity,
		Subject: m.Subject, Body: m.Body, Vars: vars,
	})
}

// Channel delivers one message to one destination.
//
// Send is called from a single goroutine per channel (never concurrently for
// one Channel by the Notifier). It must return when ctx ends (the Notifier
// gives each attempt a deadline). An error wrapped with Permanent is not
// retried; any other error is. Errors must not contain secrets.
type Channel interface {
	Name() string
	Send(ctx context.Context, m Message) error
}

// PermanentError marks a delivery error that retrying cannot fix (a 4xx
// answer, rejected credentials, a missing STARTTLS the config requires).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err so the Notifier does not retry it. Permanent(nil) is
// nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err (or an error it wraps) is permanent.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// RedactURL returns raw reduced to scheme and host ("https://hooks.slack.com"),
// for errors and logs: webhook URLs often carry tokens in their path or
// query, and user info may hold a password. An unparsable URL gives
// "<invalid url>".
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "<invalid url>"
	}
	return u.Scheme + "://" + u.Host
}

// Excerpt returns s with surrounding space trimmed, control characters
// replaced by spaces and cut to at most n bytes (on a rune boundary, with
// "…" appended when cut), for error messages that quote a peer's answer.
func Excerpt(s string, n int) string {
	s = strings.TrimSpace(strings.ToValidUTF8(s, "\uFFFD"))
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
