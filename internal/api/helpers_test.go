package api

import (
	"bytes"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/plan"
	"github.com/sundown-ups/sundown/internal/policy"
	"github.com/sundown-ups/sundown/internal/power"
)

// fakeDaemon serves snapshots set by the test, with the same
// latest-only subscription semantics as app.App.
type fakeDaemon struct {
	mu     sync.Mutex
	snap   app.Snapshot
	subs   map[chan app.Snapshot]struct{}
	gone   chan struct{} // receives one value per cancelled subscription
	panics bool
}

func newFakeDaemon(s app.Snapshot) *fakeDaemon {
	return &fakeDaemon{snap: s, subs: map[chan app.Snapshot]struct{}{}, gone: make(chan struct{}, 16)}
}

func (f *fakeDaemon) Snapshot() app.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.panics {
		panic("snapshot exploded")
	}
	return f.snap
}

func (f *fakeDaemon) Subscribe() (<-chan app.Snapshot, func()) {
	ch := make(chan app.Snapshot, 1)
	f.mu.Lock()
	f.subs[ch] = struct{}{}
	ch <- f.snap
	f.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			f.mu.Lock()
			delete(f.subs, ch)
			f.mu.Unlock()
			select {
			case f.gone <- struct{}{}:
			default:
			}
		})
	}
}

func (f *fakeDaemon) set(s app.Snapshot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snap = s
	for ch := range f.subs {
		select {
		case <-ch:
		default:
		}
		ch <- s
	}
}

func (f *fakeDaemon) subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// fakeClock is a settable time source.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuffer is a writer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// flushRecorder is a ResponseWriter for handlers that stream: safe to read
// while the handler writes, and a Flusher.
type flushRecorder struct {
	mu      sync.Mutex
	h       http.Header
	code    int
	body    bytes.Buffer
	flushes int
}

func newFlushRecorder() *flushRecorder { return &flushRecorder{h: http.Header{}} }

func (r *flushRecorder) Header() http.Header { return r.h }

func (r *flushRecorder) WriteHeader(code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.code == 0 {
		r.code = code
	}
}

func (r *flushRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(p)
}

func (r *flushRecorder) Flush() {
	r.mu.Lock()
	r.flushes++
	r.mu.Unlock()
}

func (r *flushRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.body.String()
}

var t0 = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)

// sampleSnapshot is a site on battery, warned, with a plan and a
// shutdown drill half way through.
func sampleSnapshot() app.Snapshot {
	at := t0
	return app.Snapshot{
		At: at,
		UPS: []power.State{{
			Name:      "rack",
			Status:    power.NewStatus(power.OB, power.DISCHRG),
			Charge:    81,
			Runtime:   1260 * time.Second,
			Load:      -1,
			Vars:      map[string]string{"device.mfr": "APC", "device.model": "Smart-UPS 1500"},
			Comm:      power.CommOK,
			CommSince: at.Add(-time.Hour),
			FirstSeen: at.Add(-time.Hour),
			LastSeen:  at.Add(-200 * time.Millisecond),
			Since:     at.Add(-30 * time.Second),
			OBSince:   at.Add(-30 * time.Second),
		}, {
			Name:     "spare",
			Charge:   -1,
			Runtime:  -1,
			Load:     -1,
			Comm:     power.CommLost,
			CommErr:  "dial tcp 127.0.0.1:1: connection refused",
			Unknown:  nil,
			LastSeen: time.Time{},
		}},
		Decision: policy.Decision{
			Kind:        policy.Warn,
			Reasons:     []string{"UPS rack: on battery for 30 s (charge 81 %, runtime 1260 s)"},
			ETA:         95 * time.Second,
			ETAReason:   "UPS rack: runtime 1260 s, budget plan 300 s + margin 120 s",
			ETAIf:       "power stays out",
			Supply:      1,
			MinSupplies: 1,
			UPS: []policy.Verdict{
				{Name: "rack", PowerValue: 1, Supplying: true, Reason: "on battery", ETA: 95 * time.Second},
				{Name: "spare", PowerValue: 0, Reason: "never reached", ETA: -1},
			},
		},
		Events: []power.Event{
			{At: at.Add(-time.Hour), UPS: "rack", Type: power.EventCommOK, Message: "communications with UPS rack established"},
			{At: at.Add(-30 * time.Second), UPS: "rack", Type: power.EventOnBatt, Message: "UPS rack on battery"},
		},
		Plan: &app.PlanInfo{Steps: 3, Makespan: 250 * time.Second, LowerBound: 180 * time.Second, Built: at.Add(-10 * time.Minute),
			Targets: []app.TargetStatus{{Name: "vc", Reachable: true, Guests: 2, Hosts: 1}}},
		Shutdown: &app.ShutdownStatus{
			Kind: "drill", State: "running", RunID: "run-1", DryRun: true, Started: at.Add(-20 * time.Second), Estimate: 250 * time.Second,
			Steps: []app.StepStatus{
				{ID: 0, Key: "guest:vc/vm-1", Name: "web-1", Group: "web", Kind: "guest", State: "done", Outcome: plan.OutcomeEscalated,
					Action: "poweroff", Start: at.Add(-20 * time.Second), End: at.Add(-8 * time.Second)},
				{ID: 1, Key: "guest:vc/vm-2", Name: "db-1", Group: "db", Kind: "guest", State: "running", Action: "shutdown", Start: at.Add(-5 * time.Second)},
				{ID: 2, Key: "host-off:vc/esx-1", Name: "esx-1", Kind: "host-off", State: "pending"},
			},
			Notes: []string{"dry run: nothing is shut down"},
		},
	}
}

func fp(v float64) *float64 { return &v }

// discardLog returns a logger writing into buf.
func bufLog(buf *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func mustEqualStatus(t *testing.T, code, want int) {
	t.Helper()
	if code != want {
		t.Fatalf("status = %d, want %d", code, want)
	}
}
