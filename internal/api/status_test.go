package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/policy"
	"github.com/sundown-ups/sundown/internal/power"
)

func TestStatusJSON(t *testing.T) {
	d := newFakeDaemon(sampleSnapshot())
	chans := []ChannelHealth{
		{Name: "mail", Down: true, LastError: "dial tcp: connection refused", LastErrorAt: t0.Add(-time.Minute), Failed: 2, Pending: 1},
		{Name: "webhook"},
	}
	s := New(d, Actions{}, Options{Channels: func() []ChannelHealth { return chans }})
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/status", nil))
	mustEqualStatus(t, rec.Code, http.StatusOK)
	if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	var got Status
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := Status{
		APIVersion: 1,
		At:         t0,
		UPS: []UPS{{
			Name: "rack", Model: "APC Smart-UPS 1500", Summary: "on battery",
			Status: []string{"OB", "DISCHRG"}, OnBattery: true,
			ChargePercent: fp(81), RuntimeSeconds: fp(1260),
			Comm: "ok", CommSince: t0.Add(-time.Hour), Reached: true,
			LastSeen: t0.Add(-200 * time.Millisecond), OnBatterySince: t0.Add(-30 * time.Second),
			Supplying: true, PowerValue: 1, Verdict: "on battery", CriticalInSeconds: fp(95),
		}, {
			Name: "spare", Summary: "not reached", Status: []string{}, Comm: "lost",
			CommError: "dial tcp 127.0.0.1:1: connection refused", Verdict: "never reached",
		}},
		Decision: Decision{
			Kind:        "warn",
			Summary:     sampleSnapshot().Decision.String(),
			Reasons:     []string{"UPS rack: on battery for 30 s (charge 81 %, runtime 1260 s)"},
			ETASeconds:  fp(95),
			ETAReason:   "UPS rack: runtime 1260 s, budget plan 300 s + margin 120 s",
			ETAIf:       "power stays out",
			Supply:      1,
			MinSupplies: 1,
		},
		Plan: &Plan{Steps: 3, MakespanSeconds: 250, LowerBoundSeconds: 180, Problems: []string{}, Built: t0.Add(-10 * time.Minute),
			Targets: []Target{{Name: "vc", Reachable: true, Guests: 2, Hosts: 1}}},
		Shutdown: &Shutdown{
			Kind: "drill", State: "running", RunID: "run-1", DryRun: true, Started: t0.Add(-20 * time.Second), EstimateSeconds: 250,
			Steps: []Step{
				{ID: 0, Key: "guest:vc/vm-1", Name: "web-1", Group: "web", Kind: "guest", State: "done", Outcome: "escalated",
					Action: "poweroff", Start: t0.Add(-20 * time.Second), End: t0.Add(-8 * time.Second), ElapsedSeconds: fp(12)},
				{ID: 1, Key: "guest:vc/vm-2", Name: "db-1", Group: "db", Kind: "guest", State: "running", Action: "shutdown",
					Start: t0.Add(-5 * time.Second), ElapsedSeconds: fp(5)},
				{ID: 2, Key: "host-off:vc/esx-1", Name: "esx-1", Kind: "host-off", State: "pending"},
			},
			Notes:  []string{"dry run: nothing is shut down"},
			Counts: map[string]int{"pending": 1, "running": 1, "done": 1, "failed": 0, "skipped": 0},
		},
		Events: []Event{
			{At: t0.Add(-30 * time.Second), UPS: "rack", Type: "ONBATT", Message: "UPS rack on battery"},
			{At: t0.Add(-time.Hour), UPS: "rack", Type: "COMMOK", Message: "communications with UPS rack established"},
		},
		Channels: chans,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}

	// The wire names are the documented contract: check them literally.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	wantKeys := map[string][]string{
		"":         {"api_version", "at", "channels", "decision", "events", "plan", "restore", "shutdown", "ups"},
		"ups":      {"charge_percent", "comm", "comm_since", "critical", "critical_in_s", "last_seen", "load_percent", "low_battery", "model", "name", "on_battery", "on_battery_since", "on_line", "power_value", "reached", "replace_battery", "runtime_s", "status", "summary", "supplying", "verdict"},
		"decision": {"eta_if", "eta_reason", "eta_s", "kind", "min_supplies", "reasons", "summary", "supply"},
		"plan":     {"built", "lower_bound_s", "makespan_s", "problems", "steps", "targets"},
		"shutdown": {"counts", "dry_run", "estimate_s", "kind", "notes", "resumed", "run_id", "started", "state", "steps"},
		"step":     {"action", "elapsed_s", "end", "group", "id", "key", "kind", "name", "outcome", "start", "state"},
		"event":    {"at", "message", "type", "ups"},
		"channel":  {"down", "failed", "last_error", "last_error_at", "name", "pending"},
	}
	objKeys := func(b []byte) []string {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		return ks
	}
	firstOf := func(b []byte) []byte {
		var a []json.RawMessage
		if err := json.Unmarshal(b, &a); err != nil || len(a) == 0 {
			t.Fatalf("not a non-empty array: %s", b)
		}
		return a[0]
	}
	var sh map[string]json.RawMessage
	_ = json.Unmarshal(raw["shutdown"], &sh)
	gotKeys := map[string][]string{
		"":         objKeys(rec.Body.Bytes()),
		"ups":      objKeys(firstOf(raw["ups"])),
		"decision": objKeys(raw["decision"]),
		"plan":     objKeys(raw["plan"]),
		"shutdown": objKeys(raw["shutdown"]),
		"step":     objKeys(firstOf(sh["steps"])),
		"event":    objKeys(firstOf(raw["events"])),
		"channel":  objKeys(firstOf(raw["channels"])),
	}
	if diff := cmp.Diff(wantKeys, gotKeys); diff != "" {
		t.Errorf("JSON keys (-want +got):\n%s", diff)
	}
	if !strings.Contains(string(raw["at"]), "2026-03-14T09:26:53Z") {
		t.Errorf("at = %s, want RFC 3339", raw["at"])
	}
}

func TestStatusOfEmptySnapshot(t *testing.T) {
	got := StatusOf(app.Snapshot{At: t0, Decision: policy.Decision{ETA: -1}}, nil)
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	// Lists are [] and unknowns null, never missing: clients need no
	// special cases.
	want := `{"api_version":1,"at":"2026-03-14T09:26:53Z","ups":[],"decision":{"kind":"none","summary":"ok","reasons":[],"eta_s":null,"supply":0,"min_supplies":0},"plan":null,"shutdown":null,"restore":null,"events":[],"channels":[]}`
	if string(b) != want {
		t.Errorf("empty status\n got %s\nwant %s", b, want)
	}
}

func TestStatusKeepsFiftyNewestEvents(t *testing.T) {
	s := sampleSnapshot()
	s.Events = nil
	for i := range 120 {
		s.Events = append(s.Events, sampleSnapshot().Events[1])
		s.Events[i].Message = "event " + string(rune('A'+i%26))
		s.Events[i].At = t0.Add(time.Duration(i) * time.Second)
	}
	got := StatusOf(s, nil)
	if len(got.Events) != MaxStatusEvents {
		t.Fatalf("%d events, want %d", len(got.Events), MaxStatusEvents)
	}
	if !got.Events[0].At.Equal(t0.Add(119*time.Second)) || !got.Events[49].At.Equal(t0.Add(70*time.Second)) {
		t.Errorf("events not the newest first: first %s, last %s", got.Events[0].At, got.Events[49].At)
	}
}

func TestUPSSummary(t *testing.T) {
	for _, tc := range []struct {
		status, comm, want string
	}{
		{"OL", "ok", "on line"},
		{"OB LB", "ok", "on battery, low battery"},
		{"FSD OL", "ok", "forced shutdown, on line"},
		{"OB", "lost", "communication lost (last seen on battery)"},
		{"OL", "stale", "data stale (last seen on line)"},
		{"OFF", "ok", "off"},
	} {
		s := sampleSnapshot()
		u := s.UPS[0]
		u.Status, u.Unknown = power.ParseStatus(tc.status)
		switch tc.comm {
		case "lost":
			u.Comm = power.CommLost
		case "stale":
			u.Comm = power.CommStale
		}
		if got := summary(u); got != tc.want {
			t.Errorf("summary(%s, %s) = %q, want %q", tc.status, tc.comm, got, tc.want)
		}
	}
}

// TestReadmeExampleDecodes keeps the documented example honest: it must
// decode strictly into Status.
func TestReadmeExampleDecodes(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "## The JSON contract")
	_, rest, ok2 := strings.Cut(rest, "```json\n")
	example, _, ok3 := strings.Cut(rest, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README.md has no JSON example under \"The JSON contract\"")
	}
	dec := json.NewDecoder(strings.NewReader(example))
	dec.DisallowUnknownFields()
	var st Status
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("README example: %v", err)
	}
	want := sampleSnapshot()
	want.UPS, want.Events = want.UPS[:1], want.Events[1:]
	got := StatusOf(want, []ChannelHealth{{Name: "mail", Down: true, LastError: "dial tcp 192.0.2.9:587: i/o timeout", LastErrorAt: t0.Add(-40 * time.Second), Failed: 2, Pending: 1}})
	if diff := cmp.Diff(got, st); diff != "" {
		t.Errorf("README example differs from what the server sends (-server +readme):\n%s", diff)
	}
}

// An unknown path is 404 whatever the method (not 405 "use GET", which
// would send a caller to an endpoint that does not exist).
func TestUnknownPathIs404ForAnyMethod(t *testing.T) {
	s := New(newFakeDaemon(sampleSnapshot()), Actions{}, Options{})
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(m, "/api/v1/shutdown", nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("%s /api/v1/shutdown: %d, want 404", m, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d, want 405", rec.Code)
	}
}
