package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sundown-ups/sundown/internal/config"
)

const testToken = "s3cr3t-t0ken-value-9f8e7d"

// harness is a Server with recording actions, an audit buffer, a log
// buffer and a settable clock.
type harness struct {
	srv   *Server
	clk   *fakeClock
	audit *syncBuffer
	log   *syncBuffer

	mu       sync.Mutex
	triggers []TriggerRequest
	drills   []DrillRequest
	acks     []AckRequest
	err      error // returned by every action
}

func newHarness(t *testing.T, token string, mod func(*Actions, *Options)) *harness {
	t.Helper()
	h := &harness{clk: &fakeClock{t: t0}, audit: &syncBuffer{}, log: &syncBuffer{}}
	a := Actions{
		Trigger: func(_ context.Context, r TriggerRequest) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.triggers = append(h.triggers, r)
			return h.err
		},
		Drill: func(_ context.Context, r DrillRequest) (string, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.drills = append(h.drills, r)
			return "drill-42", h.err
		},
		Ack: func(_ context.Context, r AckRequest) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.acks = append(h.acks, r)
			return h.err
		},
	}
	o := Options{Token: config.NewSecret(token), AuditLog: h.audit, Now: h.clk.now, Log: bufLog(h.log)}
	if mod != nil {
		mod(&a, &o)
	}
	h.srv = New(newFakeDaemon(sampleSnapshot()), a, o)
	return h
}

type call struct {
	method, path, body, auth, remote, ctype string
}

func (h *harness) do(c call) *httptest.ResponseRecorder {
	if c.method == "" {
		c.method = http.MethodPost
	}
	req := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	if c.ctype != "" {
		req.Header.Set("Content-Type", c.ctype)
	}
	if c.remote != "" {
		req.RemoteAddr = c.remote
	}
	rec := httptest.NewRecorder()
	h.srv.ServeHTTP(rec, req)
	return rec
}

func errorOf(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("error answer Content-Type = %q, want JSON", ct)
	}
	var eb struct {
		Error string `json:"error"`
	}
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil || eb.Error == "" {
		t.Fatalf("answer is not {\"error\": \"…\"}: %v", err)
	}
	return eb.Error
}

func (h *harness) auditLines(t *testing.T) []auditLine {
	t.Helper()
	var out []auditLine
	for _, l := range strings.Split(strings.TrimSpace(h.audit.String()), "\n") {
		if l == "" {
			continue
		}
		var a auditLine
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&a); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		out = append(out, a)
	}
	return out
}

const bearerOK = "Bearer " + testToken

func TestAuth(t *testing.T) {
	body := `{"kind":"onbattery","reason":"PowerChute says so","source":"powerchute"}`
	for _, tc := range []struct {
		name, token, auth string
		code              int
		msg               string
	}{
		{"no token configured", "", bearerOK, http.StatusForbidden, "api.token_file"},
		{"no header", testToken, "", http.StatusUnauthorized, "missing bearer token"},
		{"other scheme", testToken, "Basic " + testToken, http.StatusUnauthorized, "missing bearer token"},
		{"wrong token", testToken, "Bearer nope", http.StatusUnauthorized, "wrong bearer token"},
		{"token prefix", testToken, "Bearer " + testToken[:10], http.StatusUnauthorized, "wrong bearer token"},
		{"right token", testToken, bearerOK, http.StatusAccepted, ""},
		{"scheme case-insensitive", testToken, "bearer " + testToken, http.StatusAccepted, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.token, nil)
			rec := h.do(call{path: "/api/v1/trigger", body: body, auth: tc.auth})
			mustEqualStatus(t, rec.Code, tc.code)
			if tc.msg != "" {
				if msg := errorOf(t, rec); !strings.Contains(msg, tc.msg) {
					t.Errorf("error %q does not mention %q", msg, tc.msg)
				}
				if len(h.triggers) != 0 {
					t.Errorf("action ran on a refused call")
				}
				if tc.code == http.StatusUnauthorized && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("401 without WWW-Authenticate: Bearer")
				}
				return
			}
			want := []TriggerRequest{{Kind: "onbattery", Reason: "PowerChute says so", Source: "powerchute"}}
			if diff := cmp.Diff(want, h.triggers); diff != "" {
				t.Errorf("trigger (-want +got):\n%s", diff)
			}
			if got := rec.Body.String(); got != "{\"ok\":true}\n" {
				t.Errorf("body %q", got)
			}
		})
	}
}

func TestActionsEndToEndOfHandler(t *testing.T) {
	h := newHarness(t, testToken, nil)
	rec := h.do(call{path: "/api/v1/drill", body: `{"only":["web","db"],"dry_run":true}`, auth: bearerOK, ctype: "application/json; charset=utf-8"})
	mustEqualStatus(t, rec.Code, http.StatusAccepted)
	if got := rec.Body.String(); got != "{\"ok\":true,\"run_id\":\"drill-42\"}\n" {
		t.Errorf("drill answer %q", got)
	}
	rec = h.do(call{path: "/api/v1/ack", body: `{"id":"ONBATT","note":"seen"}`, auth: bearerOK, remote: "192.0.2.7:5555"})
	mustEqualStatus(t, rec.Code, http.StatusOK)
	rec = h.do(call{path: "/api/v1/trigger", body: `{"kind":"clear"}`, auth: bearerOK, remote: "192.0.2.8:5555"})
	mustEqualStatus(t, rec.Code, http.StatusAccepted)
	if diff := cmp.Diff([]DrillRequest{{Only: []string{"web", "db"}, DryRun: true}}, h.drills); diff != "" {
		t.Errorf("drill (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]AckRequest{{ID: "ONBATT", Note: "seen", By: "api 192.0.2.7"}}, h.acks); diff != "" {
		t.Errorf("ack (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]TriggerRequest{{Kind: "clear", Source: "api 192.0.2.8"}}, h.triggers); diff != "" {
		t.Errorf("trigger (-want +got):\n%s", diff)
	}
}

func TestNotImplemented(t *testing.T) {
	h := newHarness(t, testToken, func(a *Actions, _ *Options) { *a = Actions{} })
	for _, p := range []string{"/api/v1/trigger", "/api/v1/drill", "/api/v1/ack"} {
		rec := h.do(call{path: p, body: `{}`, auth: bearerOK, remote: "10.0.0." + fmt.Sprint(len(p)) + ":1"})
		mustEqualStatus(t, rec.Code, http.StatusNotImplemented)
		if msg := errorOf(t, rec); !strings.Contains(msg, p) {
			t.Errorf("%s: message %q", p, msg)
		}
	}
}

func TestActionErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{fmt.Errorf("drill: %w: group nope unknown", ErrInvalid), http.StatusBadRequest},
		{fmt.Errorf("drill: %w: a shutdown is running", ErrConflict), http.StatusConflict},
		{errors.New("journal: disk full"), http.StatusInternalServerError},
	} {
		h := newHarness(t, testToken, nil)
		h.err = tc.err
		rec := h.do(call{path: "/api/v1/drill", body: `{"dry_run":true}`, auth: bearerOK})
		mustEqualStatus(t, rec.Code, tc.code)
		if msg := errorOf(t, rec); msg != tc.err.Error() {
			t.Errorf("message %q, want %q", msg, tc.err)
		}
		lines := h.auditLines(t)
		if len(lines) != 1 || lines[0].Status != tc.code || lines[0].Reason != tc.err.Error() {
			t.Errorf("audit %+v", lines)
		}
	}
}

func TestStrictJSON(t *testing.T) {
	for _, tc := range []struct {
		name, path, body, ctype string
		code                    int
		msg                     string
	}{
		{"unknown field", "/api/v1/trigger", `{"kind":"shutdown","force":true}`, "", 400, `unknown field "force"`},
		{"wrong type", "/api/v1/drill", `{"dry_run":"yes"}`, "", 400, `field "dry_run" must be a boolean`},
		{"array for object", "/api/v1/trigger", `["shutdown"]`, "", 400, "want a JSON object"},
		{"trailing data", "/api/v1/trigger", `{"kind":"shutdown"} {"kind":"clear"}`, "", 400, "data after the JSON object"},
		{"syntax", "/api/v1/trigger", `{"kind":`, "", 400, "unexpected end"},
		{"garbage", "/api/v1/ack", `kind=shutdown`, "", 400, "syntax error"},
		{"empty", "/api/v1/ack", ``, "", 400, "empty body"},
		{"bad kind", "/api/v1/trigger", `{"kind":"panic"}`, "", 400, `kind must be one of onbattery, shutdown, clear, got "panic"`},
		{"long reason", "/api/v1/trigger", `{"kind":"shutdown","reason":"` + strings.Repeat("x", 600) + `"}`, "", 400, "at most 500 bytes"},
		{"empty group", "/api/v1/drill", `{"only":[""]}`, "", 400, "not a group name"},
		{"form content type", "/api/v1/trigger", `{"kind":"shutdown"}`, "application/x-www-form-urlencoded", 415, "Content-Type must be application/json"},
		{"too large", "/api/v1/trigger", `{"kind":"shutdown","reason":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, "", 413, "body larger than 16384 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, testToken, nil)
			rec := h.do(call{path: tc.path, body: tc.body, auth: bearerOK, ctype: tc.ctype})
			mustEqualStatus(t, rec.Code, tc.code)
			if msg := errorOf(t, rec); !strings.Contains(msg, tc.msg) {
				t.Errorf("message %q does not contain %q", msg, tc.msg)
			}
			if n := len(h.triggers) + len(h.drills) + len(h.acks); n != 0 {
				t.Errorf("%d actions ran on a malformed call", n)
			}
			if l := h.auditLines(t); len(l) != 1 || l[0].Outcome != "refused" || l[0].Status != tc.code {
				t.Errorf("audit %+v", l)
			}
		})
	}
}

func TestMethodNotAllowed(t *testing.T) {
	h := newHarness(t, testToken, nil)
	for _, tc := range []struct{ method, path, allow string }{
		{http.MethodGet, "/api/v1/trigger", "POST"},
		{http.MethodPut, "/api/v1/drill", "POST"},
		{http.MethodDelete, "/api/v1/ack", "POST"},
		{http.MethodPost, "/api/v1/status", "GET, HEAD"},
		{http.MethodPost, "/api/v1/events", "GET, HEAD"},
		{http.MethodPost, "/", "GET, HEAD"},
		{http.MethodPatch, "/metrics", "GET, HEAD"},
	} {
		rec := h.do(call{method: tc.method, path: tc.path, auth: bearerOK})
		mustEqualStatus(t, rec.Code, http.StatusMethodNotAllowed)
		if got := rec.Header().Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, got, tc.allow)
		}
		if msg := errorOf(t, rec); !strings.Contains(msg, tc.method) {
			t.Errorf("%s %s: message %q", tc.method, tc.path, msg)
		}
	}
}

func TestNotFound(t *testing.T) {
	h := newHarness(t, "", nil)
	for _, p := range []string{"/api/v2/status", "/nope", "/assets/secret.txt", "/metrics"} {
		rec := h.do(call{method: http.MethodGet, path: p})
		mustEqualStatus(t, rec.Code, http.StatusNotFound)
		_ = errorOf(t, rec)
	}
}

func TestMetricsMounted(t *testing.T) {
	h := newHarness(t, "", func(_ *Actions, o *Options) {
		o.Metrics = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "sundown_up 1\n")
		})
	})
	rec := h.do(call{method: http.MethodGet, path: "/metrics"})
	mustEqualStatus(t, rec.Code, http.StatusOK)
	if rec.Body.String() != "sundown_up 1\n" {
		t.Errorf("metrics body %q", rec.Body)
	}
}

func TestRateLimit(t *testing.T) {
	h := newHarness(t, testToken, nil) // default 6/min, burst 3
	post := func(remote, auth string) *httptest.ResponseRecorder {
		return h.do(call{path: "/api/v1/trigger", body: `{"kind":"onbattery"}`, auth: auth, remote: remote})
	}
	for i := range 3 {
		mustEqualStatus(t, post("192.0.2.1:1000", bearerOK).Code, http.StatusAccepted)
		_ = i
	}
	rec := post("192.0.2.1:1001", bearerOK) // another port, same client
	mustEqualStatus(t, rec.Code, http.StatusTooManyRequests)
	if got := rec.Header().Get("Retry-After"); got != "10" {
		t.Errorf("Retry-After = %q, want 10 (6 per minute)", got)
	}
	if msg := errorOf(t, rec); !strings.Contains(msg, "retry in 10 s") {
		t.Errorf("message %q", msg)
	}
	// Another client is not affected.
	mustEqualStatus(t, post("192.0.2.2:1000", bearerOK).Code, http.StatusAccepted)
	// Wrong tokens cost too: guessing is rate limited.
	h.clk.add(4 * time.Second)
	rec = post("192.0.2.1:1000", bearerOK)
	if got := rec.Header().Get("Retry-After"); rec.Code != http.StatusTooManyRequests || got != "6" {
		t.Errorf("after 4 s: %d Retry-After %q, want 429 and 6", rec.Code, got)
	}
	h.clk.add(6 * time.Second)
	mustEqualStatus(t, post("192.0.2.1:1000", "Bearer wrong").Code, http.StatusUnauthorized)
	mustEqualStatus(t, post("192.0.2.1:1000", bearerOK).Code, http.StatusTooManyRequests)
	h.clk.add(30 * time.Second) // three tokens back, at most burst
	for range 3 {
		mustEqualStatus(t, post("192.0.2.1:1000", bearerOK).Code, http.StatusAccepted)
	}
	mustEqualStatus(t, post("192.0.2.1:1000", bearerOK).Code, http.StatusTooManyRequests)
	if n := len(h.triggers); n != 7 {
		t.Errorf("%d triggers ran, want 7", n)
	}
}

func TestLimiterBoundsMemory(t *testing.T) {
	l := newLimiter(6, 3)
	for i := range 5000 {
		l.allow(fmt.Sprintf("10.0.%d.%d", i/256, i%256), t0.Add(time.Duration(i)*time.Millisecond))
	}
	if n := len(l.buckets); n > maxBuckets {
		t.Errorf("%d buckets, want at most %d", n, maxBuckets)
	}
}

func TestAuditLog(t *testing.T) {
	h := newHarness(t, testToken, nil)
	h.do(call{path: "/api/v1/trigger", body: `{"kind":"shutdown","reason":"test"}`, auth: bearerOK, remote: "127.0.0.1:4000"})
	h.clk.add(time.Second)
	h.do(call{path: "/api/v1/trigger", body: `{"kind":"shutdown"}`, auth: "Bearer " + testToken + "x", remote: "127.0.0.1:4001"})
	h.do(call{path: "/api/v1/drill", body: `{"dry_run":true,"only":["web"]}`, auth: bearerOK, remote: "[::1]:4002"})
	h.do(call{method: http.MethodGet, path: "/api/v1/ack", remote: "127.0.0.1:4003"})
	want := []auditLine{
		{Time: t0, Remote: "127.0.0.1", Method: "POST", Path: "/api/v1/trigger", Outcome: "accepted", Status: 202, Detail: "kind=shutdown"},
		{Time: t0.Add(time.Second), Remote: "127.0.0.1", Method: "POST", Path: "/api/v1/trigger", Outcome: "refused", Status: 401, Reason: "wrong bearer token"},
		{Time: t0.Add(time.Second), Remote: "::1", Method: "POST", Path: "/api/v1/drill", Outcome: "accepted", Status: 202, Detail: "dry_run=true only=web run=drill-42"},
		{Time: t0.Add(time.Second), Remote: "127.0.0.1", Method: "GET", Path: "/api/v1/ack", Outcome: "refused", Status: 405, Reason: "method GET not allowed; use POST"},
	}
	if diff := cmp.Diff(want, h.auditLines(t)); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}
}

// TestTokenNeverLogged sends every kind of call, right and wrong, and
// looks for the token (and the wrong tokens) in the audit log and the
// server's log.
func TestTokenNeverLogged(t *testing.T) {
	h := newHarness(t, testToken, nil)
	h.srv.opt.AuditLog = nil // audit lines go to the server's log too
	h2 := newHarness(t, testToken, nil)
	wrong := "Bearer " + testToken + "-wrong"
	for _, hh := range []*harness{h, h2} {
		for _, p := range []string{"/api/v1/trigger", "/api/v1/drill", "/api/v1/ack"} {
			for _, auth := range []string{bearerOK, wrong, "Basic " + testToken} {
				for _, body := range []string{`{"kind":"shutdown"}`, `{"x":1}`, `{`} {
					hh.clk.add(time.Minute)
					hh.do(call{path: p, body: body, auth: auth})
				}
			}
		}
		hh.failOnce()
	}
	for name, text := range map[string]string{"audit": h2.audit.String(), "log": h.log.String() + h2.log.String()} {
		if text == "" {
			t.Errorf("%s is empty: nothing was checked", name)
		}
		if strings.Contains(text, testToken) || strings.Contains(text, testToken[:12]) {
			t.Errorf("the token appears in the %s:\n%s", name, text)
		}
	}
}

// failOnce makes the actions fail once more, so error paths are logged too.
func (h *harness) failOnce() {
	h.err = errors.New("boom")
	h.clk.add(time.Minute)
	h.do(call{path: "/api/v1/trigger", body: `{"kind":"shutdown"}`, auth: bearerOK})
}

func TestPanicRecovered(t *testing.T) {
	h := newHarness(t, "", nil)
	d := newFakeDaemon(sampleSnapshot())
	d.panics = true
	h.srv.d = d
	for _, p := range []string{"/api/v1/status", "/"} {
		rec := h.do(call{method: http.MethodGet, path: p})
		mustEqualStatus(t, rec.Code, http.StatusInternalServerError)
		if msg := errorOf(t, rec); !strings.Contains(msg, "internal error") {
			t.Errorf("message %q", msg)
		}
	}
	if !strings.Contains(h.log.String(), "snapshot exploded") {
		t.Errorf("the panic was not logged:\n%s", h.log)
	}
}
