package policy

import (
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/power"
)

// The harness: every UPS is a function of time saying what it reports; the
// simulation polls each UPS every step (feeding a real power.Tracker), then
// asks Decide, exactly as the daemon's loop does, with injected time only.

var t0 = time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

const s = time.Second

// obs is what one UPS reports at one poll.
type obs struct {
	status  string
	runtime float64 // seconds; negative: not reported
	charge  float64 // percent; negative: not reported
	alarm   string
	fail    string // "lost" or "stale": the poll failed
}

func ol() obs                { return obs{status: "OL CHRG", runtime: 3000, charge: 100} }
func ob(runtime float64) obs { return obs{status: "OB DISCHRG", runtime: runtime, charge: 97} }
func st(status string, runtime float64) obs {
	return obs{status: status, runtime: runtime, charge: 97}
}
func lost() obs  { return obs{fail: "lost"} }
func stale() obs { return obs{fail: "stale"} }

// feed says what a UPS reports at time t since t0.
type feed func(t time.Duration) obs

// phases builds a feed from (start, obs-maker) pairs: from each start on, the
// maker is asked with the time elapsed since that start.
type phase struct {
	from time.Duration
	obs  func(since time.Duration) obs
}

func phases(ps ...phase) feed {
	return func(t time.Duration) obs {
		cur := ps[0]
		for _, p := range ps {
			if t >= p.from {
				cur = p
			}
		}
		return cur.obs(t - cur.from)
	}
}

func always(o obs) func(time.Duration) obs { return func(time.Duration) obs { return o } }

// draining reports status with a runtime that falls one second per second.
func draining(status string, runtime0 float64) func(time.Duration) obs {
	return func(since time.Duration) obs { return st(status, runtime0-since.Seconds()) }
}

type upsFeed struct {
	name string
	feed feed
}

type sim struct {
	cfg  Config
	plan time.Duration
	ups  []upsFeed
	step time.Duration // poll and decide period
	end  time.Duration // last poll time (inclusive)
}

type point struct {
	t time.Duration
	d Decision
}

type result struct {
	shutdownAt time.Duration // -1 when never
	first      Decision      // the first Shutdown decision
	points     []point       // every decision
}

func (r result) at(t time.Duration) Decision {
	for _, p := range r.points {
		if p.t == t {
			return p.d
		}
	}
	panic(fmt.Sprintf("no decision at %v", t))
}

func (sm sim) run(t *testing.T) result {
	t.Helper()
	if sm.step == 0 {
		sm.step = s
	}
	trackers := make([]*power.Tracker, len(sm.ups))
	for i, u := range sm.ups {
		trackers[i] = power.NewTracker(u.name, power.TrackerOptions{})
	}
	res := result{shutdownAt: -1}
	prev := Decision{ETA: -1}
	for tt := time.Duration(0); tt <= sm.end; tt += sm.step {
		now := at(tt)
		in := Input{Now: now, PlanDuration: sm.plan, PlanSource: "config"}
		for i, u := range sm.ups {
			o := u.feed(tt)
			tr := trackers[i]
			switch o.fail {
			case "lost":
				tr.Fail(now, false, errors.New("dial tcp 127.0.0.1:3493: connection refused"))
			case "stale":
				tr.Fail(now, true, errors.New("ERR DATA-STALE"))
			default:
				vars := map[string]string{"ups.status": o.status}
				if o.runtime >= 0 {
					vars["battery.runtime"] = strconv.FormatFloat(o.runtime, 'f', -1, 64)
				}
				if o.charge >= 0 {
					vars["battery.charge"] = strconv.FormatFloat(o.charge, 'f', -1, 64)
				}
				if o.alarm != "" {
					vars["ups.alarm"] = o.alarm
				}
				r, _ := power.ReadingFromVars(now, vars)
				tr.Observe(r)
			}
			tr.Tick(now)
			in.States = append(in.States, tr.State())
		}
		d := Decide(sm.cfg, in, prev)
		if prev.Kind == Shutdown && !equalDecision(d, prev) {
			t.Fatalf("t=%v: the latch broke: %v after %v", tt, d, prev)
		}
		if d.Kind == Shutdown && res.shutdownAt < 0 {
			res.shutdownAt, res.first = tt, d
			if !d.At.Equal(now) {
				t.Errorf("t=%v: Shutdown.At = %v, want now", tt, d.At.Sub(t0))
			}
		}
		res.points = append(res.points, point{tt, d})
		prev = d
	}
	return res
}

func equalDecision(a, b Decision) bool { return fmt.Sprintf("%#v", a) == fmt.Sprintf("%#v", b) }

func oneUPS(cfg Config) Config {
	if cfg.UPS == nil {
		cfg.UPS = []UPSRule{NewUPSRule("main")}
	}
	return cfg
}
