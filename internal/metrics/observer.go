package metrics

import (
	"fmt"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/plan"
)

// StepBuckets are the upper bounds of sundown_step_duration_seconds: steps
// last from about a second (an already-off guest, a hook) to the half hour
// a host may take to enter maintenance mode.
var StepBuckets = []float64{1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1200, 1800}

// Observer records what only events can tell: how each step of a shutdown
// ended and how long it took. Its methods are cheap, never block, and are
// safe for concurrent use.
type Observer struct {
	steps    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewObserver builds an Observer and registers its metrics on reg.
func NewObserver(reg prometheus.Registerer) (*Observer, error) {
	o := &Observer{
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "plan_steps_total",
			Help:      "Shutdown steps ended, by outcome (done, already-off, escalated, failed, skipped).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "step_duration_seconds",
			Help:      "Duration of ended shutdown steps, by step kind (hook, guest, host-maint, host-off).",
			Buckets:   StepBuckets,
		}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{o.steps, o.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register step metrics: %w", err)
		}
	}
	// Zero series for every outcome, so rate() works from the first run.
	for _, out := range []plan.Outcome{plan.OutcomeDone, plan.OutcomeAlreadyOff, plan.OutcomeEscalated, plan.OutcomeFailed, plan.OutcomeSkipped} {
		o.steps.WithLabelValues(string(out))
	}
	return o, nil
}

// StepEnded records one ended step: its kind (plan.StepKind.String()), its
// outcome (plan.Outcome) and how long it ran.
func (o *Observer) StepEnded(kind, outcome string, d time.Duration) {
	o.steps.WithLabelValues(outcome).Inc()
	o.duration.WithLabelValues(kind).Observe(max(d, 0).Seconds())
}

// OnStep feeds the Observer from executor events; it fits
// app.Options.OnStep (chain it with other observers there). Group markers
// take no time and are left out of the durations, and steps a dry run
// skipped are counted but not timed.
func (o *Observer) OnStep(e plan.Event) {
	if e.Type != plan.EventStepDone && e.Type != plan.EventStepFailed {
		return
	}
	if e.Kind == plan.StepGroup {
		return
	}
	if e.DryRun || e.Outcome == plan.OutcomeSkipped {
		o.steps.WithLabelValues(string(e.Outcome)).Inc()
		return
	}
	o.StepEnded(e.Kind.String(), string(e.Outcome), e.Elapsed)
}

// Sources are what Register reads at scrape time.
type Sources struct {
	// Snapshot returns the daemon's latest view (required).
	Snapshot func() app.Snapshot
	// Channels returns the notification channels' counts (nil: no
	// notification metrics).
	Channels func() []ChannelStat
	// Version is the sundown version for sundown_build_info.
	Version string
	// Runtime adds the Go runtime and process collectors (go_*, process_*).
	Runtime bool
}

// Register registers all of sundown's metrics on reg and returns the
// Observer to feed with executor events.
func Register(reg prometheus.Registerer, src Sources) (*Observer, error) {
	if src.Snapshot == nil {
		return nil, fmt.Errorf("register metrics: no snapshot source")
	}
	cs := []prometheus.Collector{NewCollector(src.Snapshot), NewBuildInfo(src.Version, runtime.Version())}
	if src.Channels != nil {
		cs = append(cs, NewChannelCollector(src.Channels))
	}
	if src.Runtime {
		cs = append(cs, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return NewObserver(reg)
}
