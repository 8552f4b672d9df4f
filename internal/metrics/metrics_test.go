package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/plan"
	"github.com/sundown-ups/sundown/internal/policy"
	"github.com/sundown-ups/sundown/internal/power"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// outage is a snapshot in the middle of a shutdown: "rack" on battery and
// low, "aux" lost, the plan half run.
func outage() app.Snapshot {
	return app.Snapshot{
		At: t0.Add(90 * time.Second),
		UPS: []power.State{
			{
				Name: "rack", Status: power.NewStatus(power.OB, power.LB, power.DISCHRG),
				Unknown: []string{"XYZ"}, Charge: 18, Runtime: 240 * time.Second, Load: 42.5,
				Comm: power.CommOK, LastSeen: t0.Add(89 * time.Second),
			},
			{
				Name: "aux", Status: power.NewStatus(power.OL), Charge: -1, Runtime: -1, Load: -1,
				Comm: power.CommLost, LastSeen: t0.Add(-time.Minute),
			},
		},
		Decision: policy.Decision{
			Kind: policy.Shutdown, At: t0.Add(30 * time.Second), ETA: 0, Supply: 1, MinSupplies: 2,
			UPS: []policy.Verdict{
				{Name: "rack", PowerValue: 1, Critical: true, ETA: 0},
				{Name: "aux", PowerValue: 1, Supplying: true, ETA: -1},
			},
		},
		Plan: &app.PlanInfo{Steps: 7, Makespan: 425 * time.Second},
		Shutdown: &app.ShutdownStatus{
			State: "running", Started: t0.Add(30 * time.Second), Estimate: 430 * time.Second,
			Steps: []app.StepStatus{
				{State: "done"}, {State: "done"}, {State: "failed"}, {State: "running"},
				{State: "pending"}, {State: "pending"}, {State: "skipped"},
			},
		},
	}
}

func newRegistry(t *testing.T, snap func() app.Snapshot, ch func() []ChannelStat) (*prometheus.Registry, *Observer) {
	t.Helper()
	reg := prometheus.NewRegistry()
	o, err := Register(reg, Sources{Snapshot: snap, Channels: ch, Version: "v1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	return reg, o
}

func TestSnapshotGauges(t *testing.T) {
	reg, _ := newRegistry(t, outage, nil)
	want := `
# HELP sundown_ups_battery_charge_ratio Battery charge as last reported (battery.charge), as a ratio from 0 to 1. Absent when the UPS does not report it.
# TYPE sundown_ups_battery_charge_ratio gauge
sundown_ups_battery_charge_ratio{ups="rack"} 0.18
# HELP sundown_ups_battery_runtime_seconds Battery runtime as last reported (battery.runtime). Absent when the UPS does not report it.
# TYPE sundown_ups_battery_runtime_seconds gauge
sundown_ups_battery_runtime_seconds{ups="rack"} 240
# HELP sundown_ups_load_ratio Output load as last reported (ups.load), as a ratio (1 is 100 %). Absent when the UPS does not report it.
# TYPE sundown_ups_load_ratio gauge
sundown_ups_load_ratio{ups="rack"} 0.425
# HELP sundown_ups_comm_up 1 when the last poll of the UPS returned a good reading, else 0.
# TYPE sundown_ups_comm_up gauge
sundown_ups_comm_up{ups="aux"} 0
sundown_ups_comm_up{ups="rack"} 1
# HELP sundown_ups_comm Communication with the UPS as a state set (unknown, ok, stale, lost).
# TYPE sundown_ups_comm gauge
sundown_ups_comm{state="lost",ups="aux"} 1
sundown_ups_comm{state="ok",ups="aux"} 0
sundown_ups_comm{state="stale",ups="aux"} 0
sundown_ups_comm{state="unknown",ups="aux"} 0
sundown_ups_comm{state="lost",ups="rack"} 0
sundown_ups_comm{state="ok",ups="rack"} 1
sundown_ups_comm{state="stale",ups="rack"} 0
sundown_ups_comm{state="unknown",ups="rack"} 0
# HELP sundown_ups_last_seen_timestamp_seconds Unix time of the last good reading of the UPS. Absent before the first one.
# TYPE sundown_ups_last_seen_timestamp_seconds gauge
sundown_ups_last_seen_timestamp_seconds{ups="aux"} 1.77236634e+09
sundown_ups_last_seen_timestamp_seconds{ups="rack"} 1.772366489e+09
# HELP sundown_ups_critical 1 when the policy judges the UPS critical (not supplying power), else 0.
# TYPE sundown_ups_critical gauge
sundown_ups_critical{ups="aux"} 0
sundown_ups_critical{ups="rack"} 1
# HELP sundown_ups_power_value Supplies this UPS feeds (power_value) when it supplies, else 0.
# TYPE sundown_ups_power_value gauge
sundown_ups_power_value{ups="aux"} 1
sundown_ups_power_value{ups="rack"} 0
# HELP sundown_ups_status_unknown_flags Number of ups.status tokens of the last reading that sundown does not know.
# TYPE sundown_ups_status_unknown_flags gauge
sundown_ups_status_unknown_flags{ups="aux"} 0
sundown_ups_status_unknown_flags{ups="rack"} 1
# HELP sundown_power_supply Sum of the power values of the UPSes that supply power now.
# TYPE sundown_power_supply gauge
sundown_power_supply 1
# HELP sundown_power_min_supplies Configured minimum supply (min_supplies); below it the site shuts down.
# TYPE sundown_power_min_supplies gauge
sundown_power_min_supplies 2
# HELP sundown_decision The policy's current decision as a state set (none, warn, shutdown).
# TYPE sundown_decision gauge
sundown_decision{decision="none"} 0
sundown_decision{decision="shutdown"} 1
sundown_decision{decision="warn"} 0
# HELP sundown_decision_eta_seconds Predicted time until the policy decides to shut down if conditions persist; 0 when it has. Absent when none is predicted.
# TYPE sundown_decision_eta_seconds gauge
sundown_decision_eta_seconds 0
# HELP sundown_shutdown_estimate_seconds Estimated duration (makespan) of the shutdown plan. Absent before a plan exists.
# TYPE sundown_shutdown_estimate_seconds gauge
sundown_shutdown_estimate_seconds 425
# HELP sundown_plan_steps Number of steps of the current shutdown plan.
# TYPE sundown_plan_steps gauge
sundown_plan_steps 7
# HELP sundown_shutdown The shutdown as a state set: idle (none started), running, done.
# TYPE sundown_shutdown gauge
sundown_shutdown{state="done"} 0
sundown_shutdown{state="idle"} 0
sundown_shutdown{state="running"} 1
# HELP sundown_shutdown_steps Steps of the running or last shutdown by state.
# TYPE sundown_shutdown_steps gauge
sundown_shutdown_steps{state="done"} 2
sundown_shutdown_steps{state="failed"} 1
sundown_shutdown_steps{state="pending"} 2
sundown_shutdown_steps{state="running"} 1
sundown_shutdown_steps{state="skipped"} 1
# HELP sundown_shutdown_start_timestamp_seconds Unix time the running or last shutdown started. Absent before any.
# TYPE sundown_shutdown_start_timestamp_seconds gauge
sundown_shutdown_start_timestamp_seconds 1.77236643e+09
# HELP sundown_build_info Always 1; the labels say which sundown build runs.
# TYPE sundown_build_info gauge
sundown_build_info{goversion="` + goVersion() + `",version="v1.2.3"} 1
`
	names := []string{
		"sundown_ups_battery_charge_ratio", "sundown_ups_battery_runtime_seconds", "sundown_ups_load_ratio",
		"sundown_ups_comm_up", "sundown_ups_comm", "sundown_ups_last_seen_timestamp_seconds",
		"sundown_ups_critical", "sundown_ups_power_value", "sundown_ups_status_unknown_flags",
		"sundown_power_supply", "sundown_power_min_supplies", "sundown_decision", "sundown_decision_eta_seconds",
		"sundown_shutdown_estimate_seconds", "sundown_plan_steps", "sundown_shutdown", "sundown_shutdown_steps",
		"sundown_shutdown_start_timestamp_seconds", "sundown_shutdown_end_timestamp_seconds", "sundown_build_info",
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
}

func TestStatusStateSet(t *testing.T) {
	snap := outage()
	reg, _ := newRegistry(t, func() app.Snapshot { return snap }, nil)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	perUPS := map[string]struct {
		sum    float64
		series int
		on     []string
	}{}
	for _, mf := range mfs {
		if mf.GetName() != "sundown_ups_status" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ups, status string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "ups":
					ups = l.GetValue()
				case "status":
					status = l.GetValue()
				}
			}
			e := perUPS[ups]
			v := m.GetGauge().GetValue()
			e.sum += v
			e.series++
			if v == 1 {
				e.on = append(e.on, status)
			}
			perUPS[ups] = e
		}
	}
	for _, u := range snap.UPS {
		got := perUPS[u.Name]
		if want := len(u.Status.Flags()); got.sum != float64(want) {
			t.Errorf("%s: state set sums to %v, want %d (the flags present)", u.Name, got.sum, want)
		}
		if got.series != len(power.AllFlags()) {
			t.Errorf("%s: %d series, want one per known flag (%d)", u.Name, got.series, len(power.AllFlags()))
		}
		wantOn := u.Status.Tokens()
		sort.Strings(got.on)
		sort.Strings(wantOn)
		if !slices.Equal(got.on, wantOn) {
			t.Errorf("%s: flags set %q, want %q", u.Name, got.on, wantOn)
		}
	}
}

func TestIdleSnapshotLeavesUnknownsOut(t *testing.T) {
	snap := app.Snapshot{
		UPS:      []power.State{{Name: "new", Charge: -1, Runtime: -1, Load: -1}},
		Decision: policy.Decision{ETA: -1},
	}
	reg, _ := newRegistry(t, func() app.Snapshot { return snap }, nil)
	for _, name := range []string{
		"sundown_ups_battery_charge_ratio", "sundown_ups_battery_runtime_seconds", "sundown_ups_load_ratio",
		"sundown_ups_last_seen_timestamp_seconds", "sundown_decision_eta_seconds", "sundown_shutdown_estimate_seconds",
		"sundown_shutdown_start_timestamp_seconds", "sundown_snapshot_timestamp_seconds", "sundown_power_supply",
	} {
		n, err := testutil.GatherAndCount(reg, name)
		if err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s: %d series for an unknown value, want none", name, n)
		}
	}
	want := `
# HELP sundown_shutdown The shutdown as a state set: idle (none started), running, done.
# TYPE sundown_shutdown gauge
sundown_shutdown{state="done"} 0
sundown_shutdown{state="idle"} 1
sundown_shutdown{state="running"} 0
# HELP sundown_ups_comm Communication with the UPS as a state set (unknown, ok, stale, lost).
# TYPE sundown_ups_comm gauge
sundown_ups_comm{state="lost",ups="new"} 0
sundown_ups_comm{state="ok",ups="new"} 0
sundown_ups_comm{state="stale",ups="new"} 0
sundown_ups_comm{state="unknown",ups="new"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "sundown_shutdown", "sundown_ups_comm"); err != nil {
		t.Error(err)
	}
}

func TestObserver(t *testing.T) {
	reg, o := newRegistry(t, func() app.Snapshot { return app.Snapshot{} }, nil)
	o.StepEnded("guest", "done", 3*time.Second)
	o.StepEnded("guest", "escalated", 150*time.Second)
	o.OnStep(plan.Event{Type: plan.EventStepDone, Kind: plan.StepHostShutdown, Outcome: plan.OutcomeDone, Elapsed: 40 * time.Second})
	o.OnStep(plan.Event{Type: plan.EventStepFailed, Kind: plan.StepHook, Outcome: plan.OutcomeFailed, Elapsed: 1500 * time.Millisecond})
	o.OnStep(plan.Event{Type: plan.EventStepDone, Kind: plan.StepGroup, Outcome: plan.OutcomeDone})                      // marker: ignored
	o.OnStep(plan.Event{Type: plan.EventStepDone, Kind: plan.StepGuest, Outcome: plan.OutcomeSkipped, DryRun: true})     // counted, not timed
	o.OnStep(plan.Event{Type: plan.EventStepStart, Kind: plan.StepGuest, Outcome: plan.OutcomeDone, Elapsed: time.Hour}) // not an end
	want := `
# HELP sundown_plan_steps_total Shutdown steps ended, by outcome (done, already-off, escalated, failed, skipped).
# TYPE sundown_plan_steps_total counter
sundown_plan_steps_total{outcome="already-off"} 0
sundown_plan_steps_total{outcome="done"} 2
sundown_plan_steps_total{outcome="escalated"} 1
sundown_plan_steps_total{outcome="failed"} 1
sundown_plan_steps_total{outcome="skipped"} 1
# HELP sundown_step_duration_seconds Duration of ended shutdown steps, by step kind (hook, guest, host-maint, host-off).
# TYPE sundown_step_duration_seconds histogram
sundown_step_duration_seconds_bucket{kind="guest",le="1"} 0
sundown_step_duration_seconds_bucket{kind="guest",le="2"} 0
sundown_step_duration_seconds_bucket{kind="guest",le="5"} 1
sundown_step_duration_seconds_bucket{kind="guest",le="10"} 1
sundown_step_duration_seconds_bucket{kind="guest",le="20"} 1
sundown_step_duration_seconds_bucket{kind="guest",le="30"} 1
sundown_step_duration_seconds_bucket{kind="guest",le="60"} 1
sundown_step_duration_seconds_bucket{kind="guest",le="120"} 1
sundown_step_duration_seconds_bucket{kind="guest",le="300"} 2
sundown_step_duration_seconds_bucket{kind="guest",le="600"} 2
sundown_step_duration_seconds_bucket{kind="guest",le="900"} 2
sundown_step_duration_seconds_bucket{kind="guest",le="1200"} 2
sundown_step_duration_seconds_bucket{kind="guest",le="1800"} 2
sundown_step_duration_seconds_bucket{kind="guest",le="+Inf"} 2
sundown_step_duration_seconds_sum{kind="guest"} 153
sundown_step_duration_seconds_count{kind="guest"} 2
sundown_step_duration_seconds_bucket{kind="hook",le="1"} 0
sundown_step_duration_seconds_bucket{kind="hook",le="2"} 1
sundown_step_duration_seconds_bucket{kind="hook",le="5"} 1
sundown_step_duration_seconds_bucket{kind="hook",le="10"} 1
sundown_step_duration_seconds_bucket{kind="hook",le="20"} 1
sundown_step_duration_seconds_bucket{kind="hook",le="30"} 1
sundown_step_duration_seconds_bucket{kind="hook",le="60"} 1
sundown_step_duration_seconds_bucket{kind="hook",le="120"} 1
sundown_step_duration_seconds_bucket{kind="hook",le="300"} 1
sundown_step_duration_seconds_bucket{kind="hook",le="600"} 1
sundown_step_duration_seconds_bucket{kind="hook",le="900"} 1
sundown_step_duration_seconds_bucket{kind="hook",le="1200"} 1
sundown_step_duration_seconds_bucket{kind="hook",le="1800"} 1
sundown_step_duration_seconds_bucket{kind="hook",le="+Inf"} 1
sundown_step_duration_seconds_sum{kind="hook"} 1.5
sundown_step_duration_seconds_count{kind="hook"} 1
sundown_step_duration_seconds_bucket{kind="host-off",le="1"} 0
sundown_step_duration_seconds_bucket{kind="host-off",le="2"} 0
sundown_step_duration_seconds_bucket{kind="host-off",le="5"} 0
sundown_step_duration_seconds_bucket{kind="host-off",le="10"} 0
sundown_step_duration_seconds_bucket{kind="host-off",le="20"} 0
sundown_step_duration_seconds_bucket{kind="host-off",le="30"} 0
sundown_step_duration_seconds_bucket{kind="host-off",le="60"} 1
sundown_step_duration_seconds_bucket{kind="host-off",le="120"} 1
sundown_step_duration_seconds_bucket{kind="host-off",le="300"} 1
sundown_step_duration_seconds_bucket{kind="host-off",le="600"} 1
sundown_step_duration_seconds_bucket{kind="host-off",le="900"} 1
sundown_step_duration_seconds_bucket{kind="host-off",le="1200"} 1
sundown_step_duration_seconds_bucket{kind="host-off",le="1800"} 1
sundown_step_duration_seconds_bucket{kind="host-off",le="+Inf"} 1
sundown_step_duration_seconds_sum{kind="host-off"} 40
sundown_step_duration_seconds_count{kind="host-off"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "sundown_plan_steps_total", "sundown_step_duration_seconds"); err != nil {
		t.Error(err)
	}
}

func TestChannels(t *testing.T) {
	stats := []ChannelStat{
		{Name: "mail", Sent: 12, Failed: 3, Down: true},
		{Name: "hook", Sent: 7},
		{Name: "mail", Sent: 99}, // duplicate: dropped, the scrape still works
	}
	reg, _ := newRegistry(t, func() app.Snapshot { return app.Snapshot{} }, func() []ChannelStat { return stats })
	want := `
# HELP sundown_notification_channel_up 0 when the channel's last delivery failed, else 1.
# TYPE sundown_notification_channel_up gauge
sundown_notification_channel_up{channel="hook"} 1
sundown_notification_channel_up{channel="mail"} 0
# HELP sundown_notification_failures_total Notifications given up on after their retries, per channel.
# TYPE sundown_notification_failures_total counter
sundown_notification_failures_total{channel="hook"} 0
sundown_notification_failures_total{channel="mail"} 3
# HELP sundown_notifications_sent_total Notifications delivered, per channel.
# TYPE sundown_notifications_sent_total counter
sundown_notifications_sent_total{channel="hook"} 7
sundown_notifications_sent_total{channel="mail"} 12
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"sundown_notification_channel_up", "sundown_notification_failures_total", "sundown_notifications_sent_total"); err != nil {
		t.Error(err)
	}
}

// TestPromlint lints everything a busy daemon exposes, runtime collectors
// included, through the HTTP handler as Prometheus would scrape it.
func TestPromlint(t *testing.T) {
	reg := prometheus.NewRegistry()
	o, err := Register(reg, Sources{
		Snapshot: outage,
		Channels: func() []ChannelStat { return []ChannelStat{{Name: "mail", Sent: 1}} },
		Version:  "v1.2.3",
		Runtime:  true,
	})
	if err != nil {
		t.Fatal(err)
	}
	o.StepEnded("guest", "done", time.Second)
	srv := httptest.NewServer(Handler(reg))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %v %s", err, resp.Status)
	}
	problems, err := promlint.New(strings.NewReader(string(body))).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, name := range []string{"sundown_ups_status{", "sundown_step_duration_seconds_bucket{", "sundown_notifications_sent_total{", "go_goroutines ", "process_"} {
		if !strings.Contains(string(body), name) {
			t.Errorf("scrape lacks %s", name)
		}
	}
}

func TestRegisterTwiceFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := Register(reg, Sources{Snapshot: outage}); err != nil {
		t.Fatal(err)
	}
	if _, err := Register(reg, Sources{Snapshot: outage}); err == nil {
		t.Error("second Register on the same registry: want an error, got none")
	}
	if _, err := Register(prometheus.NewRegistry(), Sources{}); err == nil {
		t.Error("Register without a snapshot source: want an error")
	}
}

// TestConcurrentScrapes runs scrapes while the observer is fed (run with -race).
func TestConcurrentScrapes(t *testing.T) {
	var mu sync.Mutex
	snap := outage()
	reg, o := newRegistry(t, func() app.Snapshot { mu.Lock(); defer mu.Unlock(); return snap }, nil)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				if i%2 == 0 {
					o.StepEnded("guest", "done", time.Duration(j)*time.Second)
					// Like app.publish: a new snapshot, never an edit of a published one.
					next := outage()
					next.UPS[0].Charge = float64(j)
					mu.Lock()
					snap = next
					mu.Unlock()
				} else if _, err := reg.Gather(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := testutil.ToFloat64(o.steps.WithLabelValues("done")); got != 100 {
		t.Errorf("done steps = %v, want 100", got)
	}
}
