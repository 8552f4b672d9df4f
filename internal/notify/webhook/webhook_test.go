package webhook

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/notify"
)

var testMsg = notify.Message{
	At:       time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("CET", 3600)),
	Type:     "ONBATT",
	UPS:      "rack-a",
	Severity: notify.SeverityWarning,
	Subject:  "UPS rack-a on battery",
	Body:     "Mains lost <at> the rack & the UPS\nruntime 12 min",
	Vars:     map[string]string{"battery.charge": "97", "ups.status": "OB"},
}

// request is what a test receiver saw.
type request struct {
	Method string
	Header http.Header
	Body   string
}

// receiver is an httptest server that records requests and answers with
// the next status from statuses (the last one repeats).
type receiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	reqs     []request
	statuses []int
	answer   string
}

func newReceiver(t *testing.T, statuses ...int) *receiver {
	t.Helper()
	r := &receiver{statuses: statuses}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs = append(r.reqs, request{Method: req.Method, Header: req.Header.Clone(), Body: string(b)})
		code := http.StatusOK
		if len(r.statuses) > 0 {
			code = r.statuses[0]
			if len(r.statuses) > 1 {
				r.statuses = r.statuses[1:]
			}
		}
		answer := r.answer
		r.mu.Unlock()
		w.WriteHeader(code)
		_, _ = io.WriteString(w, answer)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.reqs...)
}

func mustNew(t *testing.T, c Config) *Webhook {
	t.Helper()
	w, err := New(c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return w
}

func sendOne(t *testing.T, format string, m notify.Message) request {
	t.Helper()
	r := newReceiver(t, http.StatusOK)
	w := mustNew(t, Config{URL: config.NewSecret(r.srv.URL + "/hook/TOKEN"), Format: format})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Send(ctx, m); err != nil {
		t.Fatalf("Send: %v", err)
	}
	reqs := r.requests()
	if len(reqs) != 1 || reqs[0].Method != http.MethodPost {
		t.Fatalf("requests: %+v", reqs)
	}
	return reqs[0]
}

func decode(t *testing.T, s string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, s)
	}
	return v
}

func TestJSONFormat(t *testing.T) {
	req := sendOne(t, FormatJSON, testMsg)
	if ct := req.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	want := map[string]any{
		"at": "2026-03-04T04:06:07Z", "type": "ONBATT", "ups": "rack-a", "severity": "warning",
		"subject": "UPS rack-a on battery", "body": testMsg.Body,
		"vars": map[string]any{"battery.charge": "97", "ups.status": "OB"},
	}
	if diff := cmp.Diff(want, decode(t, req.Body)); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}
	// vars is an object even when the message has none.
	req = sendOne(t, FormatJSON, notify.Message{Type: "SHUTDOWN_DONE"})
	if got := decode(t, req.Body)["vars"]; !cmp.Equal(got, map[string]any{}) {
		t.Errorf("empty vars = %#v, want {}", got)
	}
}

func TestNtfyFormat(t *testing.T) {
	req := sendOne(t, FormatNtfy, testMsg)
	got := map[string]string{
		"Content-Type": req.Header.Get("Content-Type"), "Title": req.Header.Get("Title"),
		"Priority": req.Header.Get("Priority"), "Tags": req.Header.Get("Tags"), "body": req.Body,
	}
	want := map[string]string{
		"Content-Type": "text/plain; charset=utf-8", "Title": "UPS rack-a on battery",
		"Priority": "high", "Tags": "warning,onbatt,rack-a", "body": testMsg.Body,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ntfy request (-want +got):\n%s", diff)
	}
	// Non-ASCII titles travel RFC 2047-encoded, which ntfy decodes.
	m := testMsg
	m.Subject, m.Severity = "Panne de courant ⚡", notify.SeverityCritical
	req = sendOne(t, FormatNtfy, m)
	if h := req.Header.Get("Title"); !strings.HasPrefix(h, "=?UTF-8?b?") {
		t.Errorf("Title = %q, want RFC 2047 encoded", h)
	}
	if p := req.Header.Get("Priority"); p != "urgent" {
		t.Errorf("Priority = %q, want urgent", p)
	}
}

func TestSlackFormat(t *testing.T) {
	req := sendOne(t, FormatSlack, testMsg)
	want := map[string]any{"text": "*UPS rack-a on battery*\nMains lost &lt;at&gt; the rack &amp; the UPS\nruntime 12 min\n" +
		"ONBATT · rack-a · warning · 2026-03-04T04:06:07Z"}
	if diff := cmp.Diff(want, decode(t, req.Body)); diff != "" {
		t.Errorf("slack body (-want +got):\n%s", diff)
	}
}

func TestDiscordFormat(t *testing.T) {
	req := sendOne(t, FormatDiscord, testMsg)
	want := map[string]any{
		"content":          "**UPS rack-a on battery**\n" + testMsg.Body + "\nONBATT · rack-a · warning · 2026-03-04T04:06:07Z",
		"allowed_mentions": map[string]any{"parse": []any{}},
	}
	if diff := cmp.Diff(want, decode(t, req.Body)); diff != "" {
		t.Errorf("discord body (-want +got):\n%s", diff)
	}
	long := testMsg
	long.Body = strings.Repeat("é", 5000)
	content := decode(t, sendOne(t, FormatDiscord, long).Body)["content"].(string)
	if n := utf8.RuneCountInString(content); n != DiscordMaxContent || !strings.HasSuffix(content, "…") {
		t.Errorf("long content: %d runes, suffix %q", n, content[len(content)-6:])
	}
}

func TestTeamsFormat(t *testing.T) {
	req := sendOne(t, FormatTeams, testMsg)
	got := decode(t, req.Body)
	want := map[string]any{
		"type": "message",
		"attachments": []any{map[string]any{
			"contentType": "application/vnd.microsoft.card.adaptive",
			"contentUrl":  nil,
			"content": map[string]any{
				"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
				"type":    "AdaptiveCard",
				"version": "1.4",
				"body": []any{
					map[string]any{"type": "TextBlock", "text": "UPS rack-a on battery", "weight": "Bolder",
						"size": "Medium", "wrap": true, "color": "Warning"},
					map[string]any{"type": "TextBlock", "text": testMsg.Body, "wrap": true},
					map[string]any{"type": "FactSet", "facts": []any{
						map[string]any{"title": "Type", "value": "ONBATT"},
						map[string]any{"title": "UPS", "value": "rack-a"},
						map[string]any{"title": "Severity", "value": "warning"},
						map[string]any{"title": "Time", "value": "2026-03-04T04:06:07Z"},
					}},
				},
			},
		}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("teams body (-want +got):\n%s", diff)
	}
}

func TestExtraHeadersAndNoSecretsInErrors(t *testing.T) {
	r := newReceiver(t, http.StatusUnauthorized)
	r.answer = "bad token\n\x1b[31mnope"
	w := mustNew(t, Config{
		Name: "ops", URL: config.NewSecret(r.srv.URL + "/services/T0/B0/PATHTOKEN?key=QUERYTOKEN"),
		Headers: map[string]config.Secret{"Authorization": config.NewSecret("Bearer HEADERTOKEN")},
	})
	err := w.Send(context.Background(), testMsg)
	if err == nil {
		t.Fatal("Send succeeded on 401")
	}
	if got := r.requests()[0].Header.Get("Authorization"); got != "Bearer HEADERTOKEN" {
		t.Errorf("Authorization = %q", got)
	}
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 401 || !notify.IsPermanent(err) {
		t.Errorf("err = %v (%T), want permanent 401 StatusError", err, err)
	}
	want := "webhook " + r.srv.URL + " POST: HTTP 401 Unauthorized: bad token  [31mnope"
	if err.Error() != want {
		t.Errorf("err = %q\nwant  %q", err, want)
	}
	for _, secret := range []string{"PATHTOKEN", "QUERYTOKEN", "HEADERTOKEN"} {
		if strings.Contains(err.Error(), secret) || strings.Contains(w.Name(), secret) {
			t.Errorf("secret %s leaked: %q / %q", secret, err, w.Name())
		}
	}

	// A transport error quotes the URL in net/http: it must be scrubbed.
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	w = mustNew(t, Config{URL: config.NewSecret(dead.URL + "/services/T0/B0/PATHTOKEN?key=QUERYTOKEN")})
	err = w.Send(context.Background(), testMsg)
	if err == nil || notify.IsPermanent(err) {
		t.Fatalf("send to closed server: %v, want a retryable error", err)
	}
	if strings.Contains(err.Error(), "TOKEN") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("transport error = %q", err)
	}
}

func TestStatusClasses(t *testing.T) {
	for code, retry := range map[int]bool{400: false, 404: false, 410: false, 302: false,
		408: true, 429: true, 500: true, 502: true, 503: true} {
		r := newReceiver(t, code)
		w := mustNew(t, Config{URL: config.NewSecret(r.srv.URL)})
		err := w.Send(context.Background(), testMsg)
		if err == nil || notify.IsPermanent(err) == retry {
			t.Errorf("HTTP %d: err = %v, permanent = %v, want permanent = %v", code, err, notify.IsPermanent(err), !retry)
		}
	}
	for _, code := range []int{200, 201, 202, 204} {
		r := newReceiver(t, code)
		w := mustNew(t, Config{URL: config.NewSecret(r.srv.URL)})
		if err := w.Send(context.Background(), testMsg); err != nil {
			t.Errorf("HTTP %d: %v", code, err)
		}
	}
}

// runNotifier runs a Notifier with routes until the test ends.
func runNotifier(t *testing.T, routes []notify.Route, o notify.Options) *notify.Notifier {
	t.Helper()
	n, err := notify.New(routes, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = n.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return n
}

// waitStats polls until cond holds for the named channel's stats.
func waitStats(t *testing.T, n *notify.Notifier, name string, cond func(notify.ChannelStats) bool) notify.ChannelStats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, s := range n.Stats() {
			if s.Name == name && cond(s) {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s stats; have %+v", name, n.Stats())
		}
		time.Sleep(5 * time.Millisecond) // real-peer poll
	}
}

func TestNotifierRetries500ThenDelivers(t *testing.T) {
	r := newReceiver(t, 500, 503, 200)
	w := mustNew(t, Config{Name: "hook", URL: config.NewSecret(r.srv.URL)})
	n := runNotifier(t, []notify.Route{{Channel: w}}, notify.Options{Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	n.Notify(testMsg)
	s := waitStats(t, n, "hook", func(s notify.ChannelStats) bool { return s.Sent == 1 })
	if s.Failed != 2 || s.Down || !strings.Contains(s.LastError, "HTTP 503") {
		t.Errorf("stats: %+v", s)
	}
	reqs := r.requests()
	if len(reqs) != 3 || reqs[0].Body != reqs[2].Body {
		t.Errorf("%d requests; bodies equal: %v", len(reqs), len(reqs) == 3 && reqs[0].Body == reqs[2].Body)
	}
}

func TestNotifier400IsPermanent(t *testing.T) {
	r := newReceiver(t, 400)
	r.answer = `{"error":"invalid payload"}`
	w := mustNew(t, Config{Name: "hook", URL: config.NewSecret(r.srv.URL + "/T/B/PATHTOKEN"),
		Headers: map[string]config.Secret{"Authorization": config.NewSecret("Bearer HEADERTOKEN")}})
	var logs lockedBuffer
	n := runNotifier(t, []notify.Route{{Channel: w}}, notify.Options{Retries: 5, Backoff: time.Millisecond,
		Log: slog.New(slog.NewTextHandler(&logs, nil))})
	n.Notify(testMsg)
	s := waitStats(t, n, "hook", func(s notify.ChannelStats) bool { return s.GaveUp == 1 })
	if s.Failed != 1 || !s.Down || !strings.Contains(s.LastError, `HTTP 400 Bad Request: {"error":"invalid payload"}`) {
		t.Errorf("stats: %+v", s)
	}
	out := logs.String()
	if !strings.Contains(out, "notify channel down") || !strings.Contains(out, "notification given up") ||
		strings.Contains(out, "TOKEN") {
		t.Errorf("logs:\n%s", out)
	}
	if got := len(r.requests()); got != 1 {
		t.Errorf("%d requests, want 1 (no retry)", got)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// hangingReceiver accepts requests and never answers until the request's
// context ends or the test is over; entered gets one value per request.
func hangingReceiver(t *testing.T) (srv *httptest.Server, entered chan struct{}) {
	t.Helper()
	entered = make(chan struct{}, 100)
	release := make(chan struct{})
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		entered <- struct{}{}
		select {
		case <-req.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	return srv, entered
}

func TestHangingReceiverTimesOutAndDoesNotDelayOthers(t *testing.T) {
	hang, entered := hangingReceiver(t)
	live := newReceiver(t, 200)
	slow := mustNew(t, Config{Name: "slow", URL: config.NewSecret(hang.URL + "/x")})
	fast := mustNew(t, Config{Name: "fast", URL: config.NewSecret(live.srv.URL), Format: FormatSlack})
	n := runNotifier(t, []notify.Route{
		{Channel: slow, Timeout: 300 * time.Millisecond},
		{Channel: fast},
	}, notify.Options{Timeout: time.Hour, Retries: -1})

	n.Notify(testMsg)
	<-entered // the slow receiver holds the first request open
	second := testMsg
	second.Subject = "second"
	n.Notify(second)
	// Both messages reach the live receiver while the slow one is stuck on
	// the first: the slow channel has not delivered anything yet.
	waitStats(t, n, "fast", func(s notify.ChannelStats) bool { return s.Sent == 2 })
	if s := waitStats(t, n, "slow", func(notify.ChannelStats) bool { return true }); s.Sent != 0 {
		t.Errorf("slow channel delivered: %+v", s)
	}
	// The slow channel's attempts end by its own timeout.
	s := waitStats(t, n, "slow", func(s notify.ChannelStats) bool { return s.GaveUp == 2 })
	if !strings.Contains(s.LastError, "timed out after 300ms") || !s.Down {
		t.Errorf("slow stats: %+v", s)
	}
}

func TestCAFile(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	w := mustNew(t, Config{URL: config.NewSecret(srv.URL), CAFile: caFile})
	if err := w.Send(context.Background(), testMsg); err != nil {
		t.Errorf("with CA file: %v", err)
	}
	w = mustNew(t, Config{URL: config.NewSecret(srv.URL)})
	err := w.Send(context.Background(), testMsg)
	if err == nil || !notify.IsPermanent(err) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without CA file: %v, want a permanent certificate error", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for name, c := range map[string]Config{
		"format":       {URL: config.NewSecret("https://x.example/h"), Format: "irc"},
		"scheme":       {URL: config.NewSecret("ftp://x.example/SECRET")},
		"relative":     {URL: config.NewSecret("/SECRET")},
		"header name":  {URL: config.NewSecret("https://x.example/h"), Headers: map[string]config.Secret{"Bad Name": config.NewSecret("v")}},
		"header value": {URL: config.NewSecret("https://x.example/h"), Headers: map[string]config.Secret{"X-A": config.NewSecret("SECRET\r\nX-B: y")}},
		"ca file":      {URL: config.NewSecret("https://x.example/h"), CAFile: "/nonexistent/ca.pem"},
	} {
		_, err := New(c)
		if err == nil {
			t.Errorf("%s: New succeeded", name)
			continue
		}
		if strings.Contains(err.Error(), "SECRET") {
			t.Errorf("%s: error leaks a secret: %v", name, err)
		}
	}
	w := mustNew(t, Config{URL: config.NewSecret("https://hooks.slack.com/services/T/B/SECRET"), Format: "Slack"})
	if w.Name() != "slack https://hooks.slack.com" {
		t.Errorf("default name = %q", w.Name())
	}
}
