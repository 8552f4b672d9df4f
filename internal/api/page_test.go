package api

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/power"
)

func getPage(t *testing.T, s *Server, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}

func TestStatusPage(t *testing.T) {
	snap := sampleSnapshot()
	snap.Events = append(snap.Events, power.Event{At: t0, UPS: "rack", Type: power.EventAlarm, Message: `<script>alert("x")</script>`})
	chans := []ChannelHealth{{Name: "mail", Down: true, LastError: "535 authentication failed", Failed: 3}, {Name: "webhook"}}
	s := New(newFakeDaemon(snap), Actions{}, Options{Channels: func() []ChannelHealth { return chans }})
	rec := getPage(t, s, "/")
	mustEqualStatus(t, rec.Code, http.StatusOK)
	if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	body := rec.Body.String()
	for _, want := range []string{
		`<title>sundown — Drill (dry run) running</title>`,
		`data-ups="rack"`,
		`<span class="text">on battery</span>`,
		`APC Smart-UPS 1500`,
		`<span class="ups-charge">81 %</span>`,
		`<dd class="ups-runtime">21 min</dd>`,
		`<code class="ups-tokens">OB DISCHRG</code>`,
		`communication`, // the spare UPS is not reached
		`Shutdown in <strong>1 min 35 s</strong> if power stays out`,
		`UPS rack: on battery for 30 s`,
		`3 steps, estimated <strong>4 min 10 s</strong>`,
		`Drill (dry run) running — 1 of 3 steps ended`,
		`<li class="step st-done" data-step="guest:vc/vm-1">`,
		`<span class="step-state">done (escalated)</span>`,
		`<span class="step-state">running: shutdown</span>`,
		`<li class="step st-pending" data-step="host-off:vc/esx-1">`,
		`data-channel="mail"`,
		`</span> down</td>`,
		`535 authentication failed`,
		`&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;`,
		`<script src="/assets/app.js" defer></script>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, `<script>alert`) {
		t.Error("an event message was not escaped")
	}
	if regexp.MustCompile(`\sstyle=`).MatchString(body) {
		t.Error("inline style attribute: the CSP blocks it")
	}
	// The bars: web-1 ran from 0 to 12 s of a 250 s scale (the estimate).
	if !strings.Contains(body, `<rect class="bar" x="0" y="0" width="48" height="10">`) {
		t.Errorf("web-1's bar is not 0..48 of 1000:\n%s", regexp.MustCompile(`<rect[^>]*>`).FindAllString(body, -1))
	}
}

func TestStatusPageStates(t *testing.T) {
	snap := sampleSnapshot()
	snap.Shutdown, snap.Plan = nil, nil
	snap.UPS = snap.UPS[:1]
	snap.UPS[0].Status = power.NewStatus(power.OL)
	snap.UPS[0].OBSince = time.Time{}
	snap.Decision.Kind, snap.Decision.Reasons, snap.Decision.ETA = 0, nil, -1
	body := getPage(t, New(newFakeDaemon(snap), Actions{}, Options{}), "/").Body.String()
	for _, want := range []string{
		`<title>sundown — All power supplies OK</title>`,
		`class="overall level-ok"`,
		`<span class="text">on line</span>`,
		`No plan yet`,
		`No notification channels configured.`,
		`Nothing to report`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

func TestAssets(t *testing.T) {
	s := New(newFakeDaemon(sampleSnapshot()), Actions{}, Options{})
	for path, ct := range map[string]string{"/assets/style.css": "text/css; charset=utf-8", "/assets/app.js": "text/javascript; charset=utf-8"} {
		rec := getPage(t, s, path)
		mustEqualStatus(t, rec.Code, http.StatusOK)
		if got := rec.Header().Get("Content-Type"); got != ct {
			t.Errorf("%s: Content-Type %q, want %q", path, got, ct)
		}
		if rec.Body.Len() < 1000 {
			t.Errorf("%s: %d bytes", path, rec.Body.Len())
		}
	}
	for _, path := range []string{"/assets/", "/assets/index.html", "/assets/../web/app.js"} {
		if rec := getPage(t, s, path); rec.Code != http.StatusNotFound && rec.Code/100 != 3 {
			t.Errorf("%s: %d", path, rec.Code)
		}
	}
}

func TestFmtDur(t *testing.T) {
	for in, want := range map[float64]string{0: "0 s", 2.5: "2.5 s", 42: "42 s", 60: "1 min", 95: "1 min 35 s", 3600: "1 h 0 min", 3725: "1 h 2 min", -1: "—"} {
		if got := fmtDur(in); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", in, got, want)
		}
	}
}
