package bench

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/nut"
	"github.com/sundown-ups/sundown/internal/peer/nutd"
	"github.com/sundown-ups/sundown/internal/peer/upsmon"
	"github.com/sundown-ups/sundown/internal/policy"
	"github.com/sundown-ups/sundown/internal/power"
)

// Timers of the parity runs. upsmon gets short ones so that a run takes
// seconds; sundown gets the same deadtime and its default poll.
const (
	parityDeadtime = 6 * time.Second
	parityPoll     = 500 * time.Millisecond
	parityUPS      = "ups1"
	monUser        = "mon" // upsmon primary (LOGIN, PRIMARY, FSD)
	monPass        = "monpass"
	secUser        = "sec" // upsmon secondary
	secPass        = "secpass"
)

// parityYAML is sundown's config for the parity runs: deadtime 6 s, poll
// 500 ms (the default), runtime budget plan 5 m + margin 2 m (defaults),
// debounce 3 s (default). sundown reads without a login, so upsmon as
// primary never waits for it (HOSTSYNC) and each decides on its own.
const parityYAML = `power:
  poll_interval: 500ms
  deadtime: 6s
  shutdown_duration: 5m
ups:
  - name: ups1
    nut:
      address: %s
      ups: ups1
`

// parityScenario is one row of the parity table.
type parityScenario struct {
	id, title string
	primary   bool // upsmon's role
	// run drives the scenario and observes until it is over; it sets
	// h.t0 (and h.t0What), the reference of the times in the table.
	run         func(h *parityRun)
	wantSundown bool
	// wantUpsmon is upsmon's outcome where NUT's documented behaviour is
	// certain; nil records it only.
	wantUpsmon *bool
	// check asserts more (timings, reasons) once the outcome is known.
	check func(h *parityRun)
	// note explains a disagreement that is expected.
	note string
}

// parityRun is one scenario running against its own upsd.
type parityRun struct {
	t      *testing.T
	s      *nutd.Server
	u      *upsmon.Upsmon
	sd     *inProcess
	t0     time.Time
	t0What string
	notes  []string
}

// parityResult is what one scenario showed.
type parityResult struct {
	sc          parityScenario
	ran         bool
	failed      bool
	t0What      string
	upsmonShut  bool
	upsmonAt    time.Duration
	upsmonWhat  string
	sundownShut bool
	sundownAt   time.Duration
	sundownWhat string
	notes       []string
}

func ptrBool(b bool) *bool { return &b }

func (h *parityRun) rel(at time.Time) time.Duration { return at.Sub(h.t0) }

func (h *parityRun) notef(format string, a ...any) {
	h.notes = append(h.notes, fmt.Sprintf(format, a...))
}

// set changes ups1 and returns when upsd first serves the new status.
func (h *parityRun) set(vars map[string]string) time.Time {
	h.t.Helper()
	mark := time.Now()
	h.s.Set(h.t, parityUPS, vars)
	served := h.s.WaitServed(h.t, parityUPS, "ups.status", vars["ups.status"], 5*time.Second)
	h.t.Logf("%s served %.3fs after Set", vars["ups.status"], served.Sub(mark).Seconds())
	return served
}

// waitBoth waits until sundown emitted typ and upsmon notified typ, both at
// or after after.
func (h *parityRun) waitBoth(typ string, after time.Time, timeout time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, sdOK := h.sd.firstEvent(power.EventType(typ), after)
		_, umOK := h.upsmonNotified(typ, after)
		if sdOK && umOK {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s within %v: sundown %v, upsmon %v", typ, timeout, sdOK, umOK)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *parityRun) upsmonNotified(typ string, after time.Time) (upsmon.Notification, bool) {
	for _, n := range h.u.Notifications() {
		if n.Type == typ && !n.At.Before(after) {
			return n, true
		}
	}
	return upsmon.Notification{}, false
}

// sundownDecision returns sundown's decision now (Shutdown is latched, with
// the moment it was first decided).
func (h *parityRun) sundownDecision() policy.Decision { return h.sd.App.Snapshot().Decision }

// upsmonShutdown reports whether upsmon decided to shut down, and when: the
// SHUTDOWNCMD run (the recording script), else the SHUTDOWN notification.
func (h *parityRun) upsmonShutdown() (time.Time, string, bool) {
	if at, ok := h.u.ShutdownCalled(); ok {
		return at, "SHUTDOWNCMD", true
	}
	if n, ok := h.upsmonNotified("SHUTDOWN", time.Time{}); ok {
		return n.At, "SHUTDOWN notification", true
	}
	return time.Time{}, "", false
}

func (h *parityRun) bothShut() bool {
	_, _, um := h.upsmonShutdown()
	return um && h.sundownDecision().Kind == policy.Shutdown
}

// observe waits until until, or until stop reports true (then a little
// longer, so that a late second decision is still seen).
func (h *parityRun) observe(until time.Time, stop func() bool) {
	for time.Now().Before(until) {
		if stop != nil && stop() {
			time.Sleep(300 * time.Millisecond)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sleepUntil pauses the scenario until at (a real peer's timeline: the
// wait is the scenario, not a way to let something settle).
func sleepUntil(at time.Time) {
	if d := time.Until(at); d > 0 {
		time.Sleep(d)
	}
}

// lastSeen returns when sundown last read ups1.
func (h *parityRun) lastSeen() time.Time { return h.sd.App.Snapshot().UPS[0].LastSeen }

func onBattery(runtime string) map[string]string {
	return map[string]string{"ups.status": "OB DISCHRG", "battery.charge": "80", "battery.runtime": runtime}
}

func parityScenarios() []parityScenario {
	return []parityScenario{
		{
			id: "1-lowbatt", title: "OL → OB → OB LB", primary: true,
			wantSundown: true, wantUpsmon: ptrBool(true),
			run: func(h *parityRun) {
				ob := h.set(onBattery("600"))
				h.waitBoth("ONBATT", ob.Add(-time.Second), 10*time.Second)
				h.t0 = h.set(map[string]string{"ups.status": "OB DISCHRG LB", "battery.charge": "10", "battery.runtime": "600"})
				h.t0What = "OB LB served"
				h.observe(h.t0.Add(10*time.Second), h.bothShut)
			},
			check: func(h *parityRun) {
				d := h.sundownDecision()
				if !strings.Contains(strings.Join(d.Reasons, "; "), "low battery (LB)") {
					h.t.Errorf("sundown shut down for %q, want the LB rule", d.Reasons)
				}
				um, _, _ := h.upsmonShutdown()
				if gap := d.At.Sub(um).Abs(); gap > 1500*time.Millisecond {
					h.t.Errorf("sundown and upsmon decided %.2fs apart, want within ~1 s (1.5 s allowed)", gap.Seconds())
				}
			},
		},
		{
			id: "2-short-outage", title: "OB for 10 s (runtime 3000 s), then OL", primary: true,
			wantSundown: false, wantUpsmon: ptrBool(false),
			run: func(h *parityRun) {
				h.t0 = h.set(onBattery("3000"))
				h.t0What = "OB served"
				h.waitBoth("ONBATT", h.t0.Add(-time.Second), 10*time.Second)
				sleepUntil(h.t0.Add(10 * time.Second))
				ol := h.set(map[string]string{"ups.status": "OL CHRG", "battery.charge": "75", "battery.runtime": "3000"})
				h.waitBoth("ONLINE", ol.Add(-time.Second), 10*time.Second)
				h.observe(time.Now().Add(time.Second), nil)
			},
		},
		{
			id: "3-upsd-blip", title: "OB, upsd killed for 4 s, then restarted", primary: true,
			wantSundown: false, // upsmon: recorded only
			run: func(h *parityRun) {
				ob := h.set(onBattery("3000"))
				h.waitBoth("ONBATT", ob.Add(-time.Second), 10*time.Second)
				h.s.KillUPSD(h.t)
				h.t0, h.t0What = time.Now(), "upsd killed"
				before := h.lastSeen()
				sleepUntil(h.t0.Add(4 * time.Second))
				h.s.StartUPSD(h.t)
				h.notef("upsd restarted at %+.2f s", h.rel(time.Now()).Seconds())
				h.s.WaitReady(h.t, 10*time.Second)
				h.notef("upsd served data again at %+.2f s (it answers ups.status WAIT until its driver's data arrive)", h.rel(time.Now()).Seconds())
				h.observe(h.t0.Add(14*time.Second), nil)
				if at, ok := h.sd.logged("UPS reachable again", h.t0); ok {
					h.notef("sundown connected to upsd again at %+.2f s (its reconnect backoff)", h.rel(at).Seconds())
				}
				if ok, at := h.readAgain(); ok {
					h.notef("sundown read ups1 again at %+.2f s: %.2f s without data since its last reading (deadtime %d s)",
						h.rel(at).Seconds(), at.Sub(before).Seconds(), int(parityDeadtime.Seconds()))
				} else {
					h.notef("sundown had not read ups1 again by %+.0f s", h.rel(time.Now()).Seconds())
				}
			},
		},
		{
			id: "4-upsd-dead", title: "OB, upsd killed and left dead", primary: true,
			wantSundown: true, wantUpsmon: ptrBool(true),
			run: func(h *parityRun) {
				ob := h.set(onBattery("3000"))
				h.waitBoth("ONBATT", ob.Add(-time.Second), 10*time.Second)
				h.s.KillUPSD(h.t)
				h.t0, h.t0What = time.Now(), "upsd killed"
				h.observe(h.t0.Add(20*time.Second), h.bothShut)
			},
			check: func(h *parityRun) {
				d := h.sundownDecision()
				silent := d.At.Sub(h.sd.App.Snapshot().UPS[0].LastSeen)
				h.notef("sundown decided %.2f s after its last reading (deadtime %d s, poll %.1f s)",
					silent.Seconds(), int(parityDeadtime.Seconds()), parityPoll.Seconds())
				if silent < parityDeadtime || silent > parityDeadtime+parityPoll {
					h.t.Errorf("sundown decided %.3fs after its last reading, want deadtime %v to deadtime + one poll (%v)",
						silent.Seconds(), parityDeadtime, parityDeadtime+parityPoll)
				}
			},
		},
		{
			id: "5-fsd", title: "FSD set by another primary while OL", primary: false,
			wantSundown: true, wantUpsmon: ptrBool(true),
			run: func(h *parityRun) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				c, err := nut.Dial(ctx, h.s.Addr(), nut.Options{})
				if err != nil {
					h.t.Fatalf("FSD client: %v", err)
				}
				defer c.Close()
				for _, step := range []func() error{
					func() error { return c.Username(ctx, monUser) },
					func() error { return c.Password(ctx, monPass) },
					func() error { return c.Login(ctx, parityUPS) },
					func() error { return c.Primary(ctx, parityUPS) },
				} {
					if err := step(); err != nil {
						h.t.Fatalf("FSD client: %v", err)
					}
				}
				if err := c.FSD(ctx, parityUPS); err != nil {
					h.t.Fatalf("FSD: %v", err)
				}
				h.t0, h.t0What = time.Now(), "FSD set"
				h.observe(h.t0.Add(10*time.Second), h.bothShut)
				_ = c.Logout(ctx)
			},
		},
		{
			id: "6-comm-lost-ol", title: "upsd killed while OL, for 15 s", primary: true,
			wantSundown: false, wantUpsmon: ptrBool(false),
			run: func(h *parityRun) {
				h.s.KillUPSD(h.t)
				h.t0, h.t0What = time.Now(), "upsd killed"
				h.observe(h.t0.Add(15*time.Second), nil)
			},
		},
		{
			id: "7-runtime-budget", title: "OB with battery.runtime 200 s < plan 300 s + margin 120 s", primary: true,
			wantSundown: true, // upsmon: recorded only (it has no runtime rule)
			note:        "sundown's extra rule: upsmon has no runtime budget",
			run: func(h *parityRun) {
				h.t0 = h.set(onBattery("200"))
				h.t0What = "OB served"
				h.observe(h.t0.Add(8*time.Second), nil)
			},
			check: func(h *parityRun) {
				d := h.sundownDecision()
				// The runtime is projected (200 s read, minus the seconds since
				// that reading), so the reason reads "runtime 199 s < …".
				if !strings.Contains(strings.Join(d.Reasons, "; "), " s < plan 300 s") {
					h.t.Errorf("sundown shut down for %q, want the runtime budget", d.Reasons)
				}
				// The budget waits for the 3 s debounce from sundown's
				// first OB reading (≤ one poll after it was served).
				if at := h.rel(d.At); at < 3*time.Second || at > 3*time.Second+parityPoll+500*time.Millisecond {
					h.t.Errorf("runtime-budget shutdown at %+.2fs, want 3 s (debounce) to 3 s + one poll + 0.5 s", at.Seconds())
				}
			},
		},
	}
}

// readAgain reports whether sundown read ups1 after h.t0, and when.
func (h *parityRun) readAgain() (bool, time.Time) {
	st := h.sd.App.Snapshot().UPS[0]
	if st.Comm == power.CommOK && st.LastSeen.After(h.t0) {
		// COMMOK carries the moment of the first good reading.
		if e, ok := h.sd.firstEvent(power.EventCommOK, h.t0); ok {
			return true, e.At
		}
		return true, st.LastSeen
	}
	return false, time.Time{}
}

// TestDecisionParity feeds the same scenarios to the real upsmon and to
// sundown's daemon core, both watching one real upsd, and compares who
// decides to shut down and when. Every scenario gets a fresh upsd (FSD is a
// latch). Scenarios run one after the other (only one upsmon can run); the
// next one's upsd starts while the current one runs.
func TestDecisionParity(t *testing.T) {
	scenarios := parityScenarios()
	results := make([]parityResult, len(scenarios))
	start := time.Now()
	t.Run("scenario", func(t *testing.T) {
		for i, sc := range scenarios {
			t.Run(sc.id, func(t *testing.T) {
				t.Parallel()
				runParity(t, sc, &results[i])
			})
		}
	})
	table := parityTable(results)
	t.Logf("decision parity (%.0f s):\n%s", time.Since(start).Seconds(), table)
	var b strings.Builder
	b.WriteString("## Decision parity with upsmon\n\n")
	b.WriteString("Each scenario runs against its own real upsd 2.8.0 + dummy-ups, watched at the same time by the real\n")
	b.WriteString("upsmon 2.8.0 (POLLFREQ 1, POLLFREQALERT 1, DEADTIME 6, HOSTSYNC 1, FINALDELAY 0; primary unless the row\n")
	b.WriteString("says secondary; a recording SHUTDOWNCMD) and by sundown's daemon core in-process (`internal/app`: deadtime\n")
	b.WriteString("6 s, poll 500 ms, debounce 3 s, runtime budget = shutdown_duration 5 m + margin 2 m; it reads without a\n")
	b.WriteString("login and does not act, so neither side's decision is caused by the other's). upsmon's decision is the\n")
	b.WriteString("moment its SHUTDOWNCMD ran; sundown's is the first Decision of kind shutdown. Times are from the row's t=0.\n")
	b.WriteString("The test (`TestDecisionParity`) asserts sundown's outcome in every row and upsmon's where NUT's documented\n")
	b.WriteString("behaviour is certain (rows 1, 2, 4, 5, 6).\n\n")
	b.WriteString(table)
	for _, r := range results {
		if r.sc.id == "3-upsd-blip" && r.ran && r.sundownShut {
			b.WriteString(blipDiagnosis)
		}
	}
	fmt.Fprintf(&b, "\n%s\n", machineLine(t))
	writeDocs(t, "parity", b.String(), false)
}

// blipDiagnosis explains row 3 when sundown shut down there (a sundown
// defect while it lasts: the test fails).
const blipDiagnosis = `
**Row 3 is a sundown defect (the test fails on it).** A 4 s upsd outage while on battery becomes more than
the 6 s deadtime of silence for sundown, for two reasons visible in the row: (1) after the connection drops,
sundown reconnects with a backoff of 0.25 s doubling (20 % jitter) up to 15 s, so its attempts fall at about
0.25, 0.75, 1.75, 3.75 and then 7–8 s after the drop: upsd is back after 4 s, but the next attempt comes only
after the deadtime has passed; (2) a restarted upsd answers ` + "`ups.status` `WAIT`" + ` for about 2 s until its
driver's data arrive, and sundown counts that as silence, while upsmon counts a reconnected upsd as
communication OK (COMMOK at +5 s) and keeps the last status. Fixing (1) alone (e.g. reconnecting at least
once per poll interval, or capping the backoff well below the deadtime, while a UPS was last seen on battery)
brings the silence to about 6 s, still at the deadtime because of (2).
`

// runParity runs one scenario and records what it showed in res (also when
// the scenario stops midway with t.Fatal); it fails the test when an
// asserted outcome is not met.
func runParity(t *testing.T, sc parityScenario, res *parityResult) {
	*res = parityResult{sc: sc, failed: true}
	s := nutd.Start(t, nutd.Config{
		UPS: []nutd.UPS{{Name: parityUPS, Vars: map[string]string{
			"ups.status": "OL", "battery.charge": "100", "battery.runtime": "3000",
		}}},
		Users: []nutd.User{
			{Name: monUser, Password: monPass, Upsmon: "primary"},
			{Name: secUser, Password: secPass, Upsmon: "secondary"},
		},
	})
	ucfg := upsmon.Config{Addr: s.Addr(), UPS: parityUPS, User: secUser, Password: secPass, Primary: sc.primary,
		PollFreq: 1, PollFreqAlert: 1, DeadTime: int(parityDeadtime.Seconds()), HostSync: 1, FinalDelay: -1}
	if sc.primary {
		ucfg.User, ucfg.Password = monUser, monPass
	}
	u := upsmon.Start(t, ucfg) // waits for the machine-wide upsmon slot
	sd := startApp(t, parseConfig(t, fmt.Sprintf(parityYAML, s.Addr()), nil), false)
	sd.waitReached(t, 10*time.Second)
	h := &parityRun{t: t, s: s, u: u, sd: sd}

	defer func() {
		// Record whatever happened, also when the scenario failed midway.
		res.ran = true
		res.failed = t.Failed()
		res.t0What = h.t0What
		if h.t0.IsZero() {
			h.t0 = time.Now()
		}
		if at, how, ok := h.upsmonShutdown(); ok {
			res.upsmonShut, res.upsmonAt, res.upsmonWhat = true, h.rel(at), how
		}
		var seen []string
		for _, n := range u.Notifications() {
			seen = append(seen, fmt.Sprintf("%s %+.2fs", n.Type, h.rel(n.At).Seconds()))
		}
		if !res.upsmonShut {
			res.upsmonWhat = "notified " + orNone(seen)
		}
		d := h.sundownDecision()
		if d.Kind == policy.Shutdown {
			res.sundownShut, res.sundownAt = true, h.rel(d.At)
			res.sundownWhat = strings.Join(d.Reasons, "; ")
		} else {
			res.sundownWhat = "last decision: " + d.String()
		}
		var evs []string
		for _, e := range sd.Events() {
			evs = append(evs, fmt.Sprintf("%s %+.2fs", e.Type, h.rel(e.Seen).Seconds()))
		}
		res.notes = h.notes
		t.Logf("t=0: %s", h.t0What)
		t.Logf("upsmon (%s): shutdown %v %s; notifications: %s", role(sc.primary), res.upsmonShut, fmtAt(res.upsmonShut, res.upsmonAt), orNone(seen))
		t.Logf("sundown: shutdown %v %s; events: %s; decision: %s", res.sundownShut, fmtAt(res.sundownShut, res.sundownAt), orNone(evs), d.String())
		for _, n := range h.notes {
			t.Logf("note: %s", n)
		}
		if f := u.ForbiddenCalls(); f != nil {
			t.Errorf("upsmon called forbidden commands: %v", f)
			res.failed = true
		}
		if res.failed {
			t.Logf("sundown log:\n%s", sd.Log())
		}
	}()

	sc.run(h)
	sd.Stop() // freeze sundown's view at the end of the observation
	_, _, umShut := h.upsmonShutdown()
	sdShut := h.sundownDecision().Kind == policy.Shutdown
	if sdShut != sc.wantSundown {
		t.Errorf("sundown shut down: %v, want %v (decision: %s)", sdShut, sc.wantSundown, h.sundownDecision())
	}
	if sc.wantUpsmon != nil && umShut != *sc.wantUpsmon {
		t.Errorf("upsmon shut down: %v, want %v (NUT's documented behaviour)", umShut, *sc.wantUpsmon)
	}
	if sc.check != nil && sdShut == sc.wantSundown && (sc.wantUpsmon == nil || umShut == *sc.wantUpsmon) {
		sc.check(h)
	}
}

func role(primary bool) string {
	if primary {
		return "primary"
	}
	return "secondary"
}

func orNone(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	return strings.Join(xs, ", ")
}

func fmtAt(ok bool, at time.Duration) string {
	if !ok {
		return ""
	}
	return fmt.Sprintf("at %+.2f s", at.Seconds())
}

// parityTable renders the results as a Markdown table.
func parityTable(results []parityResult) string {
	var b strings.Builder
	b.WriteString("| # | scenario (t=0) | upsmon decision | sundown decision | agree? |\n")
	b.WriteString("|---|---|---|---|---|\n")
	for i, r := range results {
		sc := parityScenarios()[i]
		if !r.ran {
			fmt.Fprintf(&b, "| %d | %s | not run | not run | — |\n", i+1, sc.title)
			continue
		}
		title := sc.title
		if r.t0What != "" {
			title += " (t=0: " + r.t0What + ")"
		}
		if !sc.primary {
			title += "; upsmon secondary"
		}
		um := "no shutdown (" + r.upsmonWhat + ")"
		if r.upsmonShut {
			um = fmt.Sprintf("**shutdown** at %+.2f s (%s)", r.upsmonAt.Seconds(), r.upsmonWhat)
		}
		sd := "no shutdown (" + r.sundownWhat + ")"
		if r.sundownShut {
			sd = fmt.Sprintf("**shutdown** at %+.2f s: %s", r.sundownAt.Seconds(), r.sundownWhat)
		}
		agree := "yes"
		if r.upsmonShut != r.sundownShut {
			agree = "no"
			if sc.note != "" {
				agree += " — " + sc.note
			}
		}
		if r.failed {
			agree += " — **test FAILED**"
		}
		extra := ""
		if len(r.notes) > 0 {
			extra = "<br>" + strings.Join(r.notes, "<br>")
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s%s | %s |\n", i+1, cell(title), cell(um), cell(sd), extra, agree)
	}
	return b.String()
}

// cell makes s safe inside a Markdown table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
