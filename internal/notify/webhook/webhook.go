// Package webhook is the notify channel that POSTs messages to HTTP
// endpoints: sundown's own JSON body, ntfy, Slack and Discord incoming
// webhooks, and Microsoft Teams (Adaptive Card) webhooks.
//
// The webhook URL and the extra header values are secrets: errors name the
// endpoint by scheme and host only and never include header values. A 2xx
// answer is success; 408, 429 and 5xx are retryable failures; any other
// status (including redirects, which are not followed) is permanent.
package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/notify"
)

// Formats.
const (
	FormatJSON    = "json"
	FormatNtfy    = "ntfy"
	FormatSlack   = "slack"
	FormatDiscord = "discord"
	FormatTeams   = "teams"
)

// DiscordMaxContent is Discord's limit on a message's content, in
// characters.
const DiscordMaxContent = 2000

// clientTimeout is a backstop for callers that pass a context without a
// deadline; the Notifier's per-attempt timeout is normally much shorter.
const clientTimeout = 2 * time.Minute

// Config configures one webhook channel.
type Config struct {
	// Name keys the channel's stats; default "<format> <scheme://host>".
	Name string
	// URL is the endpoint; for ntfy, the topic URL. It is a secret (Slack,
	// Discord and Teams URLs embed their token).
	URL config.Secret
	// Format is one of json (default), ntfy, slack, discord, teams.
	Format string
	// Headers are extra request headers (e.g. Authorization); their values
	// are secrets.
	Headers map[string]config.Secret
	// CAFile, if set, is a PEM bundle that replaces the system roots for
	// verifying the server.
	CAFile string
	// Client overrides the HTTP client (tests). Its redirect policy is used
	// as is.
	Client *http.Client
}

// Webhook is a notify.Channel.
type Webhook struct {
	name    string
	url     config.Secret
	target  string // scheme://host, safe to print
	format  string
	headers map[string]config.Secret
	client  *http.Client
}

// New checks c and builds the channel.
func New(c Config) (*Webhook, error) {
	format := strings.ToLower(c.Format)
	if format == "" {
		format = FormatJSON
	}
	switch format {
	case FormatJSON, FormatNtfy, FormatSlack, FormatDiscord, FormatTeams:
	default:
		return nil, fmt.Errorf("webhook format %q: want json, ntfy, slack, discord or teams", c.Format)
	}
	u, err := url.Parse(c.URL.Reveal())
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// The parse error quotes the URL: do not wrap it.
		return nil, errors.New("webhook url: want an absolute http or https URL")
	}
	target := notify.RedactURL(c.URL.Reveal())
	for k, v := range c.Headers {
		if !validHeaderName(k) {
			return nil, fmt.Errorf("webhook %s header %q: invalid name", target, k)
		}
		if strings.ContainsAny(v.Reveal(), "\r\n\x00") {
			return nil, fmt.Errorf("webhook %s header %q: value contains a line break or NUL", target, k)
		}
	}
	name := c.Name
	if name == "" {
		name = format + " " + target
	}
	client := c.Client
	if client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if c.CAFile != "" {
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				return nil, fmt.Errorf("webhook %s ca_file: %w", target, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("webhook %s ca_file %s: no PEM certificate found", target, c.CAFile)
			}
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		client = &http.Client{
			Transport: tr,
			Timeout:   clientTimeout,
			// Do not follow redirects: a redirect may carry the headers
			// elsewhere, and a webhook that moved is a config error.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &Webhook{name: name, url: c.URL, target: target, format: format, headers: c.Headers, client: client}, nil
}

// Name implements notify.Channel.
func (w *Webhook) Name() string { return w.name }

// StatusError is a non-2xx answer.
type StatusError struct {
	Code    int
	Excerpt string // start of the response body, cleaned
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("HTTP %d %s", e.Code, http.StatusText(e.Code))
	if e.Excerpt != "" {
		s += ": " + e.Excerpt
	}
	return s
}

// Retryable reports whether the status may succeed later (408, 429, 5xx).
func (e *StatusError) Retryable() bool {
	return e.Code == http.StatusRequestTimeout || e.Code == http.StatusTooManyRequests || e.Code >= 500
}

// Send implements notify.Channel: one POST.
func (w *Webhook) Send(ctx context.Context, m notify.Message) error {
	body, contentType, extra, err := Encode(w.format, m)
	if err != nil {
		return notify.Permanent(fmt.Errorf("webhook %s: %w", w.target, err))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url.Reveal(), bytes.NewReader(body))
	if err != nil {
		return notify.Permanent(fmt.Errorf("webhook %s: build request failed", w.target))
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("User-Agent", "sundown")
	for k, v := range extra {
		req.Header.Set(k, v)
	}
	for k, v := range w.headers {
		req.Header.Set(k, v.Reveal())
	}
	resp, err := w.client.Do(req)
	if err != nil {
		// *url.Error quotes the whole URL: keep only its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		err = fmt.Errorf("webhook %s POST: %w", w.target, err)
		var cve *tls.CertificateVerificationError
		if errors.As(err, &cve) {
			return notify.Permanent(err) // retrying cannot fix a certificate
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil
	}
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	se := &StatusError{Code: resp.StatusCode, Excerpt: notify.Excerpt(string(snippet), 200)}
	err = fmt.Errorf("webhook %s POST: %w", w.target, se)
	if !se.Retryable() {
		return notify.Permanent(err)
	}
	return err
}

// Encode renders m for format: the body, its content type and any extra
// headers the format needs (ntfy's Title, Priority, Tags).
func Encode(format string, m notify.Message) (body []byte, contentType string, headers map[string]string, err error) {
	const jsonType = "application/json"
	switch format {
	case FormatJSON:
		body, err = m.JSON()
		return body, jsonType, nil, err
	case FormatNtfy:
		text := m.Body
		if text == "" {
			text = m.Text()
		}
		h := map[string]string{
			"Title":    mime.BEncoding.Encode("UTF-8", oneLine(m.Subject)),
			"Priority": ntfyPriority(m.Severity),
			"Tags":     mime.BEncoding.Encode("UTF-8", strings.Join(ntfyTags(m), ",")),
		}
		if m.Subject == "" {
			delete(h, "Title")
		}
		return []byte(text), "text/plain; charset=utf-8", h, nil
	case FormatSlack:
		body, err = json.Marshal(map[string]string{"text": slackText(m)})
		return body, jsonType, nil, err
	case FormatDiscord:
		body, err = json.Marshal(discordBody{
			Content: truncateRunes(discordText(m), DiscordMaxContent),
			// Never ping @everyone or roles because a message said so.
			AllowedMentions: allowedMentions{Parse: []string{}},
		})
		return body, jsonType, nil, err
	case FormatTeams:
		body, err = json.Marshal(teamsMessage(m))
		return body, jsonType, nil, err
	}
	return nil, "", nil, fmt.Errorf("unknown format %q", format)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func ntfyPriority(sev string) string {
	switch sev {
	case notify.SeverityCritical:
		return "urgent"
	case notify.SeverityWarning:
		return "high"
	}
	return "default"
}

// ntfyTags: an emoji short code for the severity, the type, the UPS.
func ntfyTags(m notify.Message) []string {
	var tags []string
	switch m.Severity {
	case notify.SeverityCritical:
		tags = append(tags, "rotating_light")
	case notify.SeverityWarning:
		tags = append(tags, "warning")
	default:
		tags = append(tags, "information_source")
	}
	clean := func(s string) string { return strings.NewReplacer(",", "_", " ", "_").Replace(oneLine(s)) }
	if m.Type != "" {
		tags = append(tags, clean(strings.ToLower(m.Type)))
	}
	if m.UPS != "" {
		tags = append(tags, clean(m.UPS))
	}
	return tags
}

// slackText escapes &, < and > as Slack's mrkdwn requires.
func slackText(m notify.Message) string {
	esc := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")
	s := "*" + esc.Replace(oneLine(m.Text())) + "*"
	if m.Body != "" && m.Body != m.Text() {
		s += "\n" + esc.Replace(m.Body)
	}
	return s + "\n" + esc.Replace(contextLine(m))
}

func discordText(m notify.Message) string {
	s := "**" + oneLine(m.Text()) + "**"
	if m.Body != "" && m.Body != m.Text() {
		s += "\n" + m.Body
	}
	return s + "\n" + contextLine(m)
}

// contextLine is "ONBATT · ups1 · warning · 2026-01-02T03:04:05Z".
func contextLine(m notify.Message) string {
	var parts []string
	for _, p := range []string{m.Type, m.UPS, m.Severity} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if !m.At.IsZero() {
		parts = append(parts, m.At.UTC().Format(time.RFC3339))
	}
	return strings.Join(parts, " · ")
}

type discordBody struct {
	Content         string          `json:"content"`
	AllowedMentions allowedMentions `json:"allowed_mentions"`
}

type allowedMentions struct {
	Parse []string `json:"parse"`
}

// truncateRunes cuts s to at most n runes, ending in "…" when cut.
func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// teamsMessage is a message with one Adaptive Card attachment, the shape
// Teams incoming webhooks (connectors and Workflows) accept.
func teamsMessage(m notify.Message) map[string]any {
	color := "Default"
	switch m.Severity {
	case notify.SeverityCritical:
		color = "Attention"
	case notify.SeverityWarning:
		color = "Warning"
	}
	body := []any{
		map[string]any{"type": "TextBlock", "text": oneLine(m.Text()), "weight": "Bolder", "size": "Medium", "wrap": true, "color": color},
	}
	if m.Body != "" && m.Body != m.Text() {
		body = append(body, map[string]any{"type": "TextBlock", "text": m.Body, "wrap": true})
	}
	var facts []any
	for _, f := range [][2]string{{"Type", m.Type}, {"UPS", m.UPS}, {"Severity", m.Severity}} {
		if f[1] != "" {
			facts = append(facts, map[string]string{"title": f[0], "value": f[1]})
		}
	}
	if !m.At.IsZero() {
		facts = append(facts, map[string]string{"title": "Time", "value": m.At.UTC().Format(time.RFC3339)})
	}
	if len(facts) > 0 {
		body = append(body, map[string]any{"type": "FactSet", "facts": facts})
	}
	return map[string]any{
		"type": "message",
		"attachments": []any{map[string]any{
			"contentType": "application/vnd.microsoft.card.adaptive",
			"contentUrl":  nil,
			"content": map[string]any{
				"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
				"type":    "AdaptiveCard",
				"version": "1.4",
				"body":    body,
			},
		}},
	}
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("!#$%&'*+-.^_`|~", r):
		default:
			return false
		}
	}
	return true
}
