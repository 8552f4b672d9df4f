// Package metrics exposes sundown's state to Prometheus on an injected
// registry (never the global default one).
//
// Three sources feed it:
//
//   - a Collector that reads the daemon's app.Snapshot at scrape time, for
//     every gauge (UPS status as a state set, battery, load, comms, the
//     policy's decision, the plan's estimate, the shutdown's steps);
//   - an Observer fed with executor events, for the counters and the
//     histogram of step durations that a snapshot cannot rebuild;
//   - a ChannelCollector that reads the notifiers' counts at scrape time.
//
// Every label value is bounded: UPS and channel names come from the config,
// status flags, decision kinds, comm states, step kinds and outcomes from
// fixed lists. Nothing here blocks the daemon: a scrape reads one snapshot.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/policy"
	"github.com/sundown-ups/sundown/internal/power"
)

const namespace = "sundown"

// Shutdown states of the sundown_shutdown state set: "idle" before any
// shutdown, then app.ShutdownStatus.State.
var shutdownStates = []string{"idle", "running", "done"}

// Step states of sundown_shutdown_steps, as app.StepStatus.State.
var stepStates = []string{"pending", "running", "done", "failed", "skipped"}

// Decision kinds of the sundown_decision state set.
var decisionKinds = []policy.Kind{policy.None, policy.Warn, policy.Shutdown}

// Comm states of the sundown_ups_comm state set.
var commStates = []power.Comm{power.CommUnknown, power.CommOK, power.CommStale, power.CommLost}

// Collector turns the daemon's latest snapshot into gauges at scrape time.
// It implements prometheus.Collector; it is safe for concurrent scrapes as
// long as the snapshot function is (app.App.Snapshot is).
type Collector struct {
	snapshot func() app.Snapshot

	upsStatus     *prometheus.Desc
	upsUnknown    *prometheus.Desc
	charge        *prometheus.Desc
	runtime       *prometheus.Desc
	load          *prometheus.Desc
	commUp        *prometheus.Desc
	comm          *prometheus.Desc
	lastSeen      *prometheus.Desc
	critical      *prometheus.Desc
	powerValue    *prometheus.Desc
	supply        *prometheus.Desc
	minSupplies   *prometheus.Desc
	decision      *prometheus.Desc
	eta           *prometheus.Desc
	estimate      *prometheus.Desc
	planSteps     *prometheus.Desc
	shutdown      *prometheus.Desc
	shutdownSteps *prometheus.Desc
	shutdownStart *prometheus.Desc
	shutdownEnd   *prometheus.Desc
	snapshotTime  *prometheus.Desc
}

// NewCollector returns a Collector reading snapshot (e.g. (*app.App).Snapshot)
// on every scrape.
func NewCollector(snapshot func() app.Snapshot) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(namespace+"_"+name, help, labels, nil)
	}
	return &Collector{
		snapshot: snapshot,

		upsStatus:  d("ups_status", "UPS status flags as a state set: 1 for each ups.status flag the UPS last reported, 0 for the others.", "ups", "status"),
		upsUnknown: d("ups_status_unknown_flags", "Number of ups.status tokens of the last reading that sundown does not know.", "ups"),
		charge:     d("ups_battery_charge_ratio", "Battery charge as last reported (battery.charge), as a ratio from 0 to 1. Absent when the UPS does not report it.", "ups"),
		runtime:    d("ups_battery_runtime_seconds", "Battery runtime as last reported (battery.runtime). Absent when the UPS does not report it.", "ups"),
		load:       d("ups_load_ratio", "Output load as last reported (ups.load), as a ratio (1 is 100 %). Absent when the UPS does not report it.", "ups"),
		commUp:     d("ups_comm_up", "1 when the last poll of the UPS returned a good reading, else 0.", "ups"),
		comm:       d("ups_comm", "Communication with the UPS as a state set (unknown, ok, stale, lost).", "ups", "state"),
		lastSeen:   d("ups_last_seen_timestamp_seconds", "Unix time of the last good reading of the UPS. Absent before the first one.", "ups"),
		critical:   d("ups_critical", "1 when the policy judges the UPS critical (not supplying power), else 0.", "ups"),
		powerValue: d("ups_power_value", "Supplies this UPS feeds (power_value) when it supplies, else 0.", "ups"),

		supply:      d("power_supply", "Sum of the power values of the UPSes that supply power now."),
		minSupplies: d("power_min_supplies", "Configured minimum supply (min_supplies); below it the site shuts down."),
		decision:    d("decision", "The policy's current decision as a state set (none, warn, shutdown).", "decision"),
		eta:         d("decision_eta_seconds", "Predicted time until the policy decides to shut down if conditions persist; 0 when it has. Absent when none is predicted."),

		estimate:  d("shutdown_estimate_seconds", "Estimated duration (makespan) of the shutdown plan. Absent before a plan exists."),
		planSteps: d("plan_steps", "Number of steps of the current shutdown plan."),

		shutdown:      d("shutdown", "The shutdown as a state set: idle (none started), running, done.", "state"),
		shutdownSteps: d("shutdown_steps", "Steps of the running or last shutdown by state.", "state"),
		shutdownStart: d("shutdown_start_timestamp_seconds", "Unix time the running or last shutdown started. Absent before any."),
		shutdownEnd:   d("shutdown_end_timestamp_seconds", "Unix time the last shutdown ended. Absent while none has ended."),
		snapshotTime:  d("snapshot_timestamp_seconds", "Unix time of the daemon state these metrics were read from."),
	}
}

func (c *Collector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{
		c.upsStatus, c.upsUnknown, c.charge, c.runtime, c.load, c.commUp, c.comm, c.lastSeen,
		c.critical, c.powerValue, c.supply, c.minSupplies, c.decision, c.eta, c.estimate,
		c.planSteps, c.shutdown, c.shutdownSteps, c.shutdownStart, c.shutdownEnd, c.snapshotTime,
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	verdicts := map[string]policy.Verdict{}
	for _, v := range s.Decision.UPS {
		verdicts[v.Name] = v
	}
	for _, u := range s.UPS {
		for _, f := range power.AllFlags() {
			gauge(c.upsStatus, bool01(u.Status.Has(f)), u.Name, f.String())
		}
		gauge(c.upsUnknown, float64(len(u.Unknown)), u.Name)
		if u.Charge >= 0 {
			gauge(c.charge, u.Charge/100, u.Name)
		}
		if u.Runtime >= 0 {
			gauge(c.runtime, u.Runtime.Seconds(), u.Name)
		}
		if u.Load >= 0 {
			gauge(c.load, u.Load/100, u.Name)
		}
		gauge(c.commUp, bool01(u.Comm == power.CommOK), u.Name)
		for _, st := range commStates {
			gauge(c.comm, bool01(u.Comm == st), u.Name, st.String())
		}
		if !u.LastSeen.IsZero() {
			gauge(c.lastSeen, unixSeconds(u.LastSeen), u.Name)
		}
		if v, ok := verdicts[u.Name]; ok {
			gauge(c.critical, bool01(v.Critical), u.Name)
			pv := 0.0
			if v.Supplying {
				pv = float64(v.PowerValue)
			}
			gauge(c.powerValue, pv, u.Name)
		}
	}
	if len(s.Decision.UPS) > 0 {
		gauge(c.supply, float64(s.Decision.Supply))
		gauge(c.minSupplies, float64(s.Decision.MinSupplies))
	}
	for _, k := range decisionKinds {
		gauge(c.decision, bool01(s.Decision.Kind == k), k.String())
	}
	if s.Decision.ETA >= 0 {
		gauge(c.eta, s.Decision.ETA.Seconds())
	}

	switch {
	case s.Plan != nil:
		gauge(c.estimate, s.Plan.Makespan.Seconds())
		gauge(c.planSteps, float64(s.Plan.Steps))
	case s.Shutdown != nil:
		gauge(c.estimate, s.Shutdown.Estimate.Seconds())
	}

	state := "idle"
	counts := map[string]int{}
	if sh := s.Shutdown; sh != nil {
		state = sh.State
		for _, st := range sh.Steps {
			counts[st.State]++
		}
		if !sh.Started.IsZero() {
			gauge(c.shutdownStart, unixSeconds(sh.Started))
		}
		if !sh.Ended.IsZero() {
			gauge(c.shutdownEnd, unixSeconds(sh.Ended))
		}
	}
	for _, st := range shutdownStates {
		gauge(c.shutdown, bool01(state == st), st)
	}
	for _, st := range stepStates {
		gauge(c.shutdownSteps, float64(counts[st]), st)
	}
	if !s.At.IsZero() {
		gauge(c.snapshotTime, unixSeconds(s.At))
	}
}

// ChannelStat is what one notification channel has done since the daemon
// started. The notify package is adapted to it by whoever wires the daemon.
type ChannelStat struct {
	Name   string // the channel's name in the config (bounded)
	Sent   uint64 // notifications delivered
	Failed uint64 // notifications given up on
	Down   bool   // the last attempt failed
}

// ChannelCollector reports notification channels at scrape time.
type ChannelCollector struct {
	stats  func() []ChannelStat
	sent   *prometheus.Desc
	failed *prometheus.Desc
	up     *prometheus.Desc
}

// NewChannelCollector returns a collector reading stats on every scrape.
func NewChannelCollector(stats func() []ChannelStat) *ChannelCollector {
	return &ChannelCollector{
		stats:  stats,
		sent:   prometheus.NewDesc(namespace+"_notifications_sent_total", "Notifications delivered, per channel.", []string{"channel"}, nil),
		failed: prometheus.NewDesc(namespace+"_notification_failures_total", "Notifications given up on after their retries, per channel.", []string{"channel"}, nil),
		up:     prometheus.NewDesc(namespace+"_notification_channel_up", "0 when the channel's last delivery failed, else 1.", []string{"channel"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *ChannelCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.sent
	ch <- c.failed
	ch <- c.up
}

// Collect implements prometheus.Collector.
func (c *ChannelCollector) Collect(ch chan<- prometheus.Metric) {
	seen := map[string]bool{}
	for _, s := range c.stats() {
		if seen[s.Name] { // a duplicate would make the whole scrape fail
			continue
		}
		seen[s.Name] = true
		ch <- prometheus.MustNewConstMetric(c.sent, prometheus.CounterValue, float64(s.Sent), s.Name)
		ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(s.Failed), s.Name)
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, bool01(!s.Down), s.Name)
	}
}

// NewBuildInfo returns the constant sundown_build_info{version,goversion} 1.
func NewBuildInfo(version, goVersion string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace:   namespace,
		Name:        "build_info",
		Help:        "Always 1; the labels say which sundown build runs.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": goVersion},
	})
	g.Set(1)
	return g
}

// Handler serves reg's metrics in the Prometheus text (or OpenMetrics)
// format. A collector failing mid-scrape still yields the other metrics.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:          reg, // promhttp's own error counters land on reg too
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
		Timeout:           10 * time.Second,
	})
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
