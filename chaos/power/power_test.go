package power

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/peer/nutd"
	"github.com/sundown-ups/sundown/internal/peer/upsmon"
)

// TestPowerChaos runs every power-signal fault scenario against the built
// daemon, in parallel, then checks that no captured output of any of them
// holds a secret.
func TestPowerChaos(t *testing.T) {
	nutd.Binary(t, "upsd") // skip (or fail in CI) before building anything
	nutd.Binary(t, "dummy-ups")
	s := &suite{bin: sundownBinary(t, t.TempDir()), scan: newSecretScanner(nutPassword, apiToken)}
	begin := time.Now()
	t.Run("scenario", func(t *testing.T) {
		for _, sc := range []struct {
			name string
			run  func(*testing.T, *suite)
		}{
			{"01-FlappingFasterThanDebounce", flapping},
			{"02-CommDropWhileOnBattery", commDrop},
			{"03-UPSDKilledWhileOnBattery", upsdKilled},
			{"04-DriverGoneWhileOnBattery", driverGone},
			{"05-FSDByAnotherClient", fsdByOther},
			{"06-MinSupplies", minSupplies},
			{"07-SlowLorisServer", slowLoris},
			{"08-Blackhole", blackhole},
			{"09-STARTTLSRefused", startTLSRefused},
			{"10-CertificateForAnotherHost", wrongHost},
			{"12-APIBadInput", apiBadInput},
		} {
			t.Run(sc.name, func(t *testing.T) {
				t.Parallel()
				sc.run(t, s)
			})
		}
	})
	t.Logf("scenarios took %.1fs", time.Since(begin).Seconds())
	t.Run("11-NoSecretInAnyLog", func(t *testing.T) { noSecretInAnyLog(t, s) })
	t.Run("LogLinesHaveUniqueKeys", func(t *testing.T) { uniqueLogKeys(t, s) })
}

// 1. Flapping OB/OL faster than the debounce: no shutdown. The UPS reports
// 60 s of runtime, far below the budget (5 min plan + 2 min margin), so
// the runtime rule would shut down after any on-battery spell as long as
// the debounce (4 s); the on-battery delay (6 s) would too. Spells of about
// 1.2 s must trigger neither. Then a steady OB shows the rules are live:
// shutdown one debounce after ONBATT, and FSD on upsd (primary).
func flapping(t *testing.T, s *suite) {
	const debounce, delay, flip = 4 * time.Second, 6 * time.Second, 1200 * time.Millisecond
	srv := s.startUPSD(t, nutd.Config{UPS: []nutd.UPS{{Name: "ups",
		Vars: map[string]string{"ups.status": "OL", "battery.charge": "100", "battery.runtime": "60"}}}})
	d := s.start(t, daemonSpec{name: "flapping", body: `power: {poll_interval: 500ms, debounce: 4s, on_battery_delay: 6s}
ups:
  - name: rack
    nut: {address: "` + srv.Addr() + `", ups: ups, username: mon, password_file: NUT_PW_FILE, mode: primary}
`})
	d.waitStatus(t, "OL read", 15*time.Second, commOK("rack", "OL"))

	begin := time.Now()
	for i := 0; i < 6; i++ {
		srv.Set(t, "ups", map[string]string{"ups.status": "OB DISCHRG"})
		d.hold(t, "flapping", flip)
		srv.Set(t, "ups", map[string]string{"ups.status": "OL CHRG"})
		d.hold(t, "flapping", flip)
	}
	d.hold(t, "after the flapping", 2*time.Second)
	onbatt := d.find(t, isEvent("rack", "ONBATT", begin))
	online := d.find(t, isEvent("rack", "ONLINE", begin))
	if len(onbatt) < 3 || len(online) < 3 {
		t.Fatalf("the daemon saw %d ONBATT and %d ONLINE during 6 flaps: the flapping did not reach it", len(onbatt), len(online))
	}
	var longest time.Duration
	for _, ob := range onbatt {
		for _, ol := range online {
			if ol.Time.After(ob.Time) {
				longest = max(longest, ol.Time.Sub(ob.Time))
				break
			}
		}
	}
	if longest >= debounce {
		t.Fatalf("an on-battery spell lasted %.1fs, not shorter than the debounce %s: the scenario proves nothing", longest.Seconds(), debounce)
	}
	t.Logf("flapping: %d ONBATT / %d ONLINE in %.1fs, longest spell %.1fs, no shutdown", len(onbatt), len(online),
		time.Since(begin).Seconds(), longest.Seconds())

	// Control: the same UPS on battery for good.
	steady := time.Now()
	srv.Set(t, "ups", map[string]string{"ups.status": "OB DISCHRG"})
	ob := d.waitLog(t, "ONBATT", 10*time.Second, isEvent("rack", "ONBATT", steady))
	dec := d.waitLog(t, "shutdown decision", debounce+10*time.Second, isShutdownDecision)
	within(t, "steady OB: ONBATT → shutdown", dec.Time.Sub(ob.Time), debounce-50*time.Millisecond, debounce+2*poll+slack)
	if !strings.Contains(dec.str("decision"), "runtime") {
		t.Errorf("shutdown reason %q, want the runtime rule", dec.str("decision"))
	}
	st := waitUpsc(t, srv.Addr(), "ups", "FSD", 10*time.Second)
	d.waitLog(t, "FSD set as primary", 5*time.Second, func(l logLine) bool { return l.Msg == "FSD set on the UPS as primary" })
	t.Logf("steady OB: shutdown %.2fs after ONBATT (debounce %s, on-battery delay %s): %s; upsd ups.status %q",
		dec.Time.Sub(ob.Time).Seconds(), debounce, delay, dec.str("decision"), st)
}

// 2. A 4 s comm drop while on battery (upsd stopped for 4 s, deadtime 15 s):
// no shutdown, and the daemon reads the UPS again afterwards.
func commDrop(t *testing.T, s *suite) {
	srv := s.startUPSD(t, nutd.Config{UPS: []nutd.UPS{{Name: "ups", Vars: onLine()}}})
	d := s.start(t, daemonSpec{name: "commdrop", body: `power: {poll_interval: 500ms, deadtime: 15s}
ups:
  - name: rack
    nut: {address: "` + srv.Addr() + `", ups: ups, username: mon, password_env: ` + nutPassEnv + `}
`})
	d.waitStatus(t, "OL read", 15*time.Second, commOK("rack", "OL"))
	srv.Set(t, "ups", map[string]string{"ups.status": "OB DISCHRG"})
	d.waitLog(t, "ONBATT", 10*time.Second, isEvent("rack", "ONBATT", time.Time{}))
	d.hold(t, "on battery before the drop", time.Second)

	killed := time.Now()
	srv.KillUPSD(t)
	d.hold(t, "upsd down", 4*time.Second)
	srv.StartUPSD(t)
	restarted := time.Now()
	srv.WaitReady(t, 15*time.Second)
	bad := d.waitLog(t, "COMMBAD", 5*time.Second, isEvent("rack", "COMMBAD", killed))
	ok := d.waitLog(t, "COMMOK", 15*time.Second, isEvent("rack", "COMMOK", killed))
	d.waitStatus(t, "OB read again", 10*time.Second, commOK("rack", "OB DISCHRG"))
	d.hold(t, "on battery after the drop", 3*time.Second)
	st := d.status(t)
	if k := st.Decision.Kind; k != "warn" {
		t.Errorf("decision %q after the drop, want warn (on battery)", k)
	}
	t.Logf("upsd down %.1fs; COMMBAD→COMMOK %.1fs (deadtime 15 s); no shutdown; decision now: %s",
		restarted.Sub(killed).Seconds(), ok.Time.Sub(bad.Time).Seconds(), st.Decision.Summary)
}

// 3. upsd killed while on battery: shutdown at deadtime after the last
// reading, never before it.
func upsdKilled(t *testing.T, s *suite) {
	const deadtime = 15 * time.Second
	srv := s.startUPSD(t, nutd.Config{UPS: []nutd.UPS{{Name: "ups", Vars: onLine()}}})
	d := s.start(t, daemonSpec{name: "upsdkilled", body: `power: {poll_interval: 500ms, deadtime: 15s}
ups:
  - name: rack
    nut: {address: "` + srv.Addr() + `", ups: ups, username: mon, password_env: ` + nutPassEnv + `}
`})
	d.waitStatus(t, "OL read", 15*time.Second, commOK("rack", "OL"))
	srv.Set(t, "ups", map[string]string{"ups.status": "OB DISCHRG"})
	d.waitLog(t, "ONBATT", 10*time.Second, isEvent("rack", "ONBATT", time.Time{}))
	d.hold(t, "on battery", time.Second)

	killed := time.Now()
	srv.KillUPSD(t)
	dec := d.waitLog(t, "shutdown decision", deadtime+poll+2*slack, isShutdownDecision)
	st := d.status(t)
	last := st.ups(t, "rack").LastSeen
	afterKill, afterLast := dec.Time.Sub(killed), dec.Time.Sub(last)
	within(t, "kill → shutdown decision", afterKill, deadtime-poll-100*time.Millisecond, deadtime+2*poll+slack)
	if afterLast < deadtime {
		t.Errorf("shutdown decided %.2fs after the last reading, before the deadtime %s", afterLast.Seconds(), deadtime)
	}
	for _, want := range []string{"no data for", "last seen on battery"} {
		if !strings.Contains(dec.str("decision"), want) {
			t.Errorf("shutdown reason %q lacks %q", dec.str("decision"), want)
		}
	}
	if st.Decision.Kind != "shutdown" {
		t.Errorf("API decision %q after the shutdown decision, want shutdown", st.Decision.Kind)
	}
	t.Logf("shutdown %.2fs after the kill, %.2fs after the last reading (deadtime 15 s, poll 0.5 s): %s",
		afterKill.Seconds(), afterLast.Seconds(), dec.str("decision"))
}

// 4. The driver goes away right after OB: killed (DRIVER-NOT-CONNECTED at
// once) or frozen with SIGSTOP (DATA-STALE after upsd's MAXAGE). Stale data
// is silence: shutdown at deadtime after the last good reading.
func driverGone(t *testing.T, s *suite) {
	const deadtime, maxAge = 10 * time.Second, 5 * time.Second
	for _, tc := range []struct {
		name   string
		frozen bool
	}{{"Killed", false}, {"Frozen", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := s.startUPSD(t, nutd.Config{UPS: []nutd.UPS{{Name: "ups", Vars: onLine()}}, MaxAge: int(maxAge / time.Second)})
			d := s.start(t, daemonSpec{name: "driver" + strings.ToLower(tc.name), body: `power: {poll_interval: 500ms, deadtime: 10s}
ups:
  - name: rack
    nut: {address: "` + srv.Addr() + `", ups: ups, username: mon, password_env: ` + nutPassEnv + `}
`})
			d.waitStatus(t, "OL read", 15*time.Second, commOK("rack", "OL"))
			srv.Set(t, "ups", map[string]string{"ups.status": "OB DISCHRG"})
			ob := d.waitLog(t, "ONBATT", 10*time.Second, isEvent("rack", "ONBATT", time.Time{}))

			broken := time.Now()
			if tc.frozen {
				srv.StopDriver(t, "ups")
			} else {
				srv.KillDriver(t, "ups")
			}
			lo, hi := deadtime-poll-100*time.Millisecond, deadtime+2*poll+slack
			if tc.frozen {
				// upsd serves the frozen driver's last data until MAXAGE.
				lo, hi = deadtime, maxAge+deadtime+2*poll+slack
			}
			dec := d.waitLog(t, "shutdown decision", hi+slack, isShutdownDecision)
			bad := d.waitLog(t, "COMMBAD", time.Second, isEvent("rack", "COMMBAD", broken))
			st := d.status(t)
			last := st.ups(t, "rack").LastSeen
			within(t, "driver gone → shutdown decision", dec.Time.Sub(broken), lo, hi)
			within(t, "last good reading → shutdown decision", dec.Time.Sub(last), deadtime, deadtime+poll+slack)
			if !strings.Contains(dec.str("decision"), "data stale") || !strings.Contains(dec.str("decision"), "last seen on battery") {
				t.Errorf("shutdown reason %q, want stale data with last seen on battery", dec.str("decision"))
			}
			t.Logf("OB %.1fs before the driver was %s; upsd stale after %.1fs (%s); shutdown %.2fs after the fault, %.2fs after the last good reading (deadtime 10 s, MAXAGE 5 s)",
				broken.Sub(ob.Time).Seconds(), map[bool]string{false: "killed", true: "frozen"}[tc.frozen],
				bad.Time.Sub(broken).Seconds(), bad.eventText(), dec.Time.Sub(broken).Seconds(), dec.Time.Sub(last).Seconds())
		})
	}
}

// 5. FSD set by another client: a NUT client with FSD rights, or the
// real upsmon as the UPS's primary told to shut down (upsmon -c fsd).
// sundown (secondary) shuts down promptly after upsd serves FSD.
func fsdByOther(t *testing.T, s *suite) {
	t.Run("NUTClient", func(t *testing.T) {
		t.Parallel()
		fsdBy(t, s, "fsdclient", func(t *testing.T, srv *nutd.Server) time.Time {
			c := dialNUT(t, srv.Addr())
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			for _, step := range []func() error{
				func() error { return c.Username(ctx, "other") },
				func() error { return c.Password(ctx, "other-pw") },
				func() error { return c.FSD(ctx, "ups") },
			} {
				if err := step(); err != nil {
					t.Fatalf("the other client: %v", err)
				}
			}
			return time.Now()
		})
	})
	t.Run("PrimaryUpsmon", func(t *testing.T) {
		t.Parallel()
		var mon *upsmon.Upsmon
		fsdBy(t, s, "fsdupsmon", func(t *testing.T, srv *nutd.Server) time.Time {
			// One upsmon at a time on this machine (/run/nut/upsmon.pid):
			// Start waits for the slot.
			mon = upsmon.Start(t, upsmon.Config{Addr: srv.Addr(), UPS: "ups", User: "other", Password: "other-pw",
				Primary: true, PollFreq: 1, PollFreqAlert: 1, HostSync: 5, FinalDelay: 1})
			cmd := exec.CommandContext(t.Context(), nutd.Binary(t, "upsmon"), "-c", "fsd", "-P", strconv.Itoa(mon.PID()))
			cmd.Env = append(os.Environ(), "NUT_CONFPATH="+filepath.Join(mon.Dir(), "etc"), "NUT_STATEPATH="+filepath.Join(mon.Dir(), "state"))
			at := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("upsmon -c fsd -P %d: %v: %s", mon.PID(), err, out)
			}
			return at
		})
		if calls := mon.ForbiddenCalls(); len(calls) > 0 {
			t.Errorf("upsmon reached forbidden commands: %v", calls)
		}
	})
}

// fsdBy runs one FSD scenario: set raises FSD on upsd by other means than
// sundown, which must then decide a shutdown within a poll or so.
func fsdBy(t *testing.T, s *suite, name string, set func(*testing.T, *nutd.Server) time.Time) {
	srv := s.startUPSD(t, nutd.Config{UPS: []nutd.UPS{{Name: "ups", Vars: onLine()}}})
	d := s.start(t, daemonSpec{name: name, body: `power: {poll_interval: 500ms}
ups:
  - name: rack
    nut: {address: "` + srv.Addr() + `", ups: ups, username: mon, password_file: NUT_PW_FILE, mode: secondary}
`})
	d.waitStatus(t, "OL read", 15*time.Second, commOK("rack", "OL"))
	begin := set(t, srv)
	d.noShutdown(t, "before upsd serves FSD")
	seen := srv.WaitServed(t, "ups", "ups.status", "FSD OL", 20*time.Second)
	dec := d.waitLog(t, "shutdown decision", 10*time.Second, isShutdownDecision)
	ev := d.waitLog(t, "FSD event", time.Second, isEvent("rack", "FSD", begin))
	within(t, "upsd serves FSD → shutdown decision", dec.Time.Sub(seen), -poll, poll+slack)
	if !strings.Contains(dec.str("decision"), "FSD") {
		t.Errorf("shutdown reason %q, want FSD", dec.str("decision"))
	}
	t.Logf("%s: FSD served %.2fs after the request; shutdown %.2fs after upsd served it (FSD event %.2fs; poll 0.5 s): %s",
		name, seen.Sub(begin).Seconds(), dec.Time.Sub(seen).Seconds(), ev.Time.Sub(seen).Seconds(), dec.str("decision"))
}

// 6. Two UPSes, power value 1 each, min_supplies 1: one on OB+LB is covered
// by the other (no shutdown, no FSD); both critical → shutdown and FSD on
// both (primary).
func minSupplies(t *testing.T, s *suite) {
	srv := s.startUPSD(t, nutd.Config{UPS: []nutd.UPS{{Name: "ups-a", Vars: onLine()}, {Name: "ups-b", Vars: onLine()}}})
	d := s.start(t, daemonSpec{name: "minsupplies", body: `power: {poll_interval: 500ms, min_supplies: 1}
ups:
  - name: a
    power_value: 1
    nut: {address: "` + srv.Addr() + `", ups: ups-a, username: mon, password_env: ` + nutPassEnv + `, mode: primary}
  - name: b
    power_value: 1
    nut: {address: "` + srv.Addr() + `", ups: ups-b, username: mon, password_env: ` + nutPassEnv + `, mode: primary}
`})
	d.waitStatus(t, "both OL", 15*time.Second, func(st apiStatus) bool {
		return commOK("a", "OL")(st) && commOK("b", "OL")(st)
	})
	critical := map[string]string{"ups.status": "OB LB DISCHRG", "battery.charge": "8", "battery.runtime": "90"}
	srv.Set(t, "ups-a", critical)
	d.waitLog(t, "LOWBATT on a", 10*time.Second, isEvent("a", "LOWBATT", time.Time{}))
	st := d.waitStatus(t, "a critical, covered by b", 5*time.Second, func(st apiStatus) bool {
		for _, u := range st.UPS {
			if u.Name == "a" {
				return u.Critical
			}
		}
		return false
	})
	d.hold(t, "one UPS critical", 3*time.Second)
	if !strings.Contains(st.Decision.Summary, "still covers min supplies 1") {
		t.Errorf("decision %q, want the redundancy named", st.Decision.Summary)
	}
	if got := upscStatus(t, srv.Addr(), "ups-a"); strings.Contains(got, "FSD") {
		t.Errorf("upsd shows %q on ups-a while the site is still supplied: FSD set too early", got)
	}

	set := time.Now()
	srv.Set(t, "ups-b", critical)
	dec := d.waitLog(t, "shutdown decision", 10*time.Second, isShutdownDecision)
	lb := d.waitLog(t, "LOWBATT on b", time.Second, isEvent("b", "LOWBATT", set))
	if dec.Time.Sub(lb.Time) > poll+slack {
		t.Errorf("shutdown %.2fs after b's LOWBATT, want promptly", dec.Time.Sub(lb.Time).Seconds())
	}
	if r := dec.str("decision"); !strings.Contains(r, "supply 0 < min supplies 1") {
		t.Errorf("shutdown reason %q, want supply 0 < min supplies 1", r)
	}
	d.waitLog(t, "FSD set as primary", 10*time.Second, func(l logLine) bool { return l.Msg == "FSD set on the UPS as primary" })
	fa := waitUpsc(t, srv.Addr(), "ups-a", "FSD", 10*time.Second)
	fb := waitUpsc(t, srv.Addr(), "ups-b", "FSD", 10*time.Second)
	t.Logf("a critical alone: no shutdown (%s); b critical too → shutdown %.2fs after b's LOWBATT (%.2fs after the .dev write); upsd: a %q, b %q",
		st.Decision.Summary, dec.Time.Sub(lb.Time).Seconds(), dec.Time.Sub(set).Seconds(), fa, fb)
}

// Every JSON log line must be one unambiguous object: a key written twice
// (e.g. an attribute named "msg" beside slog's message) is kept only once
// by most JSON parsers (Go's map decoding and jq keep the last), so the
// line's message or the attribute is lost for whoever reads the log.
func uniqueLogKeys(t *testing.T, s *suite) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started.Load() == 0 {
		t.Skip("no scenario ran (-run selects none)")
	}
	keys := make([]string, 0, len(s.logDups))
	for k := range s.logDups {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		t.Errorf("BUG: log lines %s carry the key twice (%s): a JSON reader keeps one of them", k, s.logDups[k])
	}
}

// 11. No secret in any log line: every daemon's output (and API audit log)
// went through the scanner at its cleanup; here the suite checks that the
// scan covered every scenario, found nothing, and can find a leak.
func noSecretInAnyLog(t *testing.T, s *suite) {
	sources, n, hits := s.scan.summary()
	for _, h := range hits {
		t.Errorf("leak: %s", h)
	}
	started := int(s.started.Load())
	if started == 0 {
		t.Skip("no scenario ran (-run selects none): nothing to scan")
	}
	daemons := 0
	for _, src := range sources {
		if strings.HasSuffix(src, "stdout/stderr") {
			daemons++
		}
	}
	if daemons < started || n == 0 {
		t.Errorf("the outputs of %d daemons (%d bytes) were scanned, %d were started", daemons, n, started)
	}
	probe := newSecretScanner(nutPassword, apiToken)
	if len(probe.scan("probe", []byte(`{"msg":"x","err":"PASSWORD `+nutPassword+`"}`+"\n"+`Authorization: Bearer `+apiToken))) != 2 {
		t.Error("the scanner misses a planted secret")
	}
	t.Logf("scanned %d outputs, %d bytes, for the NUT password and the API token: %d hits", len(sources), n, len(hits))
}
