package site

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/api"
	"github.com/sundown-ups/sundown/internal/peer"
	"github.com/sundown-ups/sundown/internal/peer/nutd"
	"github.com/sundown-ups/sundown/internal/provider/vsphere/vcsim"
)

// chaosSeed is the seed of the random kill points: SUNDOWN_CHAOS_SEED, or
// the clock. The test logs it so that a failure can be replayed.
func chaosSeed(t *testing.T) uint64 {
	t.Helper()
	if v := os.Getenv("SUNDOWN_CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SUNDOWN_CHAOS_SEED=%q: %v", v, err)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

// killFleet is 3 hosts and 15 guests in three dependent groups (web → app
// → db), one to three seconds each to shut down, and app-hung, which
// ignores its shutdown: about 15 s of work under the caps below.
func killFleet() vcsim.Fleet {
	f := vcsim.Fleet{VCenter: true, Hosts: []vcsim.Host{{Name: "esx-1"}, {Name: "esx-2"}, {Name: "esx-3"}}}
	i := 0
	for _, g := range []string{"web", "app", "db"} {
		for n := 1; n <= 5; n++ {
			vm := vcsim.VM{Name: fmt.Sprintf("%s-%d", g, n), Host: f.Hosts[i%3].Name,
				ShutdownDelay: time.Duration(1000+500*(i%5)) * time.Millisecond}
			if g == "app" && n == 5 {
				vm.Name, vm.IgnoreShutdown = "app-hung", true
			}
			f.VMs = append(f.VMs, vm)
			i++
		}
	}
	return f
}

const killShutdown = `shutdown:
  default_action: ["shutdown 20s", "poweroff 10s"]
  caps: {global: 3, per_host: 2}
  groups:
    - {name: web, select: {names: ["web-*"]}, depends_on: [app]}
    - {name: app, select: {names: ["app-*"]}, depends_on: [db]}
    - {name: db, select: {names: ["db-*"]}}
  guests:
    - {name: app-hung, action: ["shutdown 3s", "poweroff 10s"]}
`

// window counts, per step key, the kills that landed inside an action's
// at-least-once window, where the journal cannot tell whether the request
// reached the hypervisor: the action was journaled as started and the
// process died before its end. For a graceful shutdown the window closes
// for good once the request was accepted (action-sent): from then on the
// journal knows it was sent, and a restart must never send it again.
// Only inside a window may a request be repeated.
type window map[string]map[string]int // key → action → kills

func (w window) add(rs []rec) []string {
	type last struct{ typ, action string }
	state := map[string]last{}
	ended := map[string]bool{}
	accepted := map[string]bool{}
	for _, r := range rs {
		switch r.Type {
		case "action-start", "action-end":
			state[r.Key] = last{r.Type, r.Action}
		case "action-sent":
			state[r.Key] = last{r.Type, r.Action}
			accepted[r.Key] = true
		case "step-end":
			ended[r.Key] = true
		}
	}
	var open []string
	for key, l := range state {
		if ended[key] || l.typ != "action-start" || (l.action == "shutdown" && accepted[key]) {
			continue
		}
		if w[key] == nil {
			w[key] = map[string]int{}
		}
		w[key][l.action]++
		open = append(open, key+" "+l.action)
	}
	slices.Sort(open)
	return open
}

// Scenario 7: sundown is killed with SIGKILL at ten random points of one
// shutdown. Every restart must resume the journal's run; in the end every
// guest is off, asked once (no guest shut down twice, none skipped), every
// host down once.
func TestProcessSIGKILLTenTimes(t *testing.T) {
	nutd.Binary(t, "upsd")
	seed := chaosSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	const kills = 10
	delays := make([]time.Duration, kills)
	for i := range delays {
		delays[i] = 100*time.Millisecond + time.Duration(rng.Int64N(int64(1100*time.Millisecond)))
	}
	var ms []string
	for _, d := range delays {
		ms = append(ms, strconv.Itoa(int(d.Milliseconds())))
	}
	t.Logf("seed %d (replay with SUNDOWN_CHAOS_SEED=%d): kill points, ms after each daemon's run-start/run-resume record: %s",
		seed, seed, strings.Join(ms, " "))

	nutPass := newSecret("nutpw")
	ups := nutd.Start(t, nutd.Config{
		UPS:   []nutd.UPS{{Name: "ups", Vars: map[string]string{"ups.status": "OL", "battery.charge": "100", "battery.runtime": "3000"}}},
		Users: []nutd.User{{Name: "mon", Password: nutPass, Upsmon: "primary"}},
	})
	fleet := killFleet()
	s := newSite(t, siteConfig{
		Fleet:    fleet,
		VCHosts:  "{maintenance: true, maintenance_timeout: 30s, shutdown: true, shutdown_timeout: 30s}",
		Shutdown: killShutdown,
		UPS: "ups:\n  - name: rack\n    nut: {address: " + strconv.Quote(ups.Addr()) +
			", ups: ups, username: mon, password_env: " + envNUTPassword + ", mode: secondary}\n",
		Env:     []string{envNUTPassword + "=" + nutPass},
		Secrets: map[string]string{"NUT password": nutPass},
	})

	begin := time.Now()
	d := s.startDaemon("life-1")
	d.waitLog("plan ready", 30*time.Second)
	ups.Set(t, "ups", map[string]string{"ups.status": "OB LB", "battery.charge": "9", "battery.runtime": "180"})
	d.wait("run-start in the journal", 30*time.Second, func() bool { return count(s.journal(), "run-start", "") > 0 })

	w := window{}
	for i := range kills {
		if i > 0 {
			d = s.startDaemon(fmt.Sprintf("life-%d", i+1))
			d.wait(fmt.Sprintf("run-resume number %d in the journal", i), 30*time.Second, func() bool {
				return count(s.journal(), "run-resume", "") >= i
			})
		}
		time.Sleep(delays[i])
		d.kill()
		rs := s.journal()
		if count(rs, "run-done", "") > 0 {
			t.Fatalf("the run ended before kill %d: the plan is too short for %d kills (harness problem, not sundown's)", i+1, kills)
		}
		ended := 0
		for _, r := range rs {
			if r.Type == "step-end" {
				ended++
			}
		}
		open := w.add(rs)
		t.Logf("kill %d at +%dms: %d steps ended so far; in an action's window: %v", i+1, delays[i].Milliseconds(), ended, open)
		if i == 0 {
			// Mains returns while sundown is down: only the journal can
			// make the next start go on.
			ups.Set(t, "ups", map[string]string{"ups.status": "OL", "battery.charge": "100", "battery.runtime": "3000"})
			ups.WaitServed(t, "ups", "ups.status", "OL", 10*time.Second)
		}
	}
	final := s.startDaemon("final")
	restarted := time.Now()
	rs := final.waitRunDone(90 * time.Second)
	final.waitLog("shutdown finished", 10*time.Second)
	t.Logf("the final daemon finished the run %.1fs after its start; %d kills; test %.1fs",
		time.Since(restarted).Seconds(), kills, time.Since(begin).Seconds())

	// The journal: one run, resumed by every restart, each step ended once.
	if a, b, c := count(rs, "run-start", ""), count(rs, "run-resume", ""), count(rs, "run-done", ""); a != 1 || b != kills || c != 1 {
		t.Errorf("journal: %d run-start, %d run-resume, %d run-done; want 1, %d, 1", a, b, c, kills)
	}
	runID := rs[0].Run
	var keys []string
	for _, r := range rs {
		if r.Run != runID {
			t.Errorf("a record of another run %s: %+v", r.Run, r)
		}
		if r.Type == "run-start" {
			keys = r.Keys
		}
	}
	for _, key := range keys {
		if strings.HasPrefix(key, "group:") {
			continue
		}
		n := count(rs, "step-end", key)
		if n != 1 {
			t.Errorf("%s ended %d times in the journal, want once", key, n)
			continue
		}
		end, _ := find(rs, "step-end", key)
		if end.Outcome == "failed" || end.Outcome == "skipped" {
			t.Errorf("%s ended %q (%s)", key, end.Outcome, end.Err)
		}
	}
	for i := 2; i <= kills; i++ {
		s.requireResumed(t, fmt.Sprintf("life-%d", i))
	}
	s.requireResumed(t, "final")

	// The hypervisor's side: what both processes really did.
	for _, vm := range fleet.VMs {
		key := s.guestKey(vm.Name)
		if st := s.sim.PowerState(vm.Name); st != "poweredOff" {
			t.Errorf("%s is %s after the run", vm.Name, st)
		}
		allowed := 1 + w[key]["shutdown"]
		n := s.sim.CallsFor("ShutdownGuest", vm.Name)
		switch {
		case n == 0:
			t.Errorf("%s was never asked to shut down (skipped)", vm.Name)
		case n > allowed:
			t.Errorf("BUG: %s (%s) was asked to shut down %d times, but only %d kill(s) landed between its action-start and its first action-sent: a request the journal had recorded as accepted was sent again after a restart (seed %d)",
				vm.Name, key, n, w[key]["shutdown"], seed)
		case n > 1:
			t.Logf("%s: %d ShutdownGuest calls, allowed: %d kill(s) landed between action-start and action-sent", vm.Name, n, w[key]["shutdown"])
		}
		wantOff := 0
		if vm.IgnoreShutdown {
			wantOff = 1
		}
		if n := s.sim.CallsFor("PowerOffVM_Task", vm.Name); n < wantOff || n > wantOff+w[key]["poweroff"] {
			t.Errorf("PowerOffVM_Task on %s: %d calls, want %d (kills in its window: %d)", vm.Name, n, wantOff, w[key]["poweroff"])
		}
	}
	got := s.sim.HostShutdowns()
	slices.Sort(got)
	if !slices.Equal(got, []string{"esx-1", "esx-2", "esx-3"}) {
		t.Errorf("host shutdowns %v, want each host once", got)
	}
	for _, h := range fleet.Hosts {
		if n, extra := s.sim.CallsFor("EnterMaintenanceMode_Task", h.Name), w[s.maintKey(h.Name)]["maintenance"]; n < 1 || n > 1+extra {
			t.Errorf("EnterMaintenanceMode_Task on %s: %d calls, want 1 (kills in its window: %d)", h.Name, n, extra)
		}
		if n, extra := s.sim.CallsFor("ShutdownHost_Task", h.Name), w[s.hostOffKey(h.Name)]["host-shutdown"]; n < 1 || n > 1+extra {
			t.Errorf("ShutdownHost_Task on %s: %d calls, want 1 (kills in its window: %d)", h.Name, n, extra)
		}
	}
	final.terminate(15 * time.Second)
	if t.Failed() {
		t.Logf("--- journal:\n%s", journalTimeline(rs))
	}
}

// journalTimeline renders records one a line, with seconds since the first.
func journalTimeline(rs []rec) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "%7.3f %-12s %-24s %-13s %s", r.T.Sub(rs[0].T).Seconds(), r.Type, r.Key, r.Action, r.Outcome)
		if r.Resumed {
			b.WriteString(" (resumed)")
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// requireResumed checks that a daemon's log says it resumed the run.
func (s *site) requireResumed(t *testing.T, name string) {
	t.Helper()
	for _, d := range s.daemons {
		if d.name == name && !strings.Contains(d.output(), "resuming an unfinished shutdown from the journal") {
			t.Errorf("the %s daemon did not resume the journal's run", name)
		}
	}
}

// Scenario 8: the journal's file system is full. sundown must say so
// loudly in its log and still run the shutdown to its end.
func TestProcessJournalDiskFull(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", state, "tmpfs", 0, "size=64k,mode=0700"); err != nil {
		peer.Missing(t, "mount a 64 KiB tmpfs for the journal (needs root): "+err.Error())
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(state, 0); err != nil {
			t.Errorf("unmount %s: %v", state, err)
		}
	})
	filled := fill(t, filepath.Join(state, "filler"))
	t.Logf("tmpfs at %s filled with %d bytes", state, filled)

	s := newSite(t, siteConfig{
		Fleet: oneHost(vcsim.VM{Name: "v-1", ShutdownDelay: quick}, vcsim.VM{Name: "v-2", ShutdownDelay: quick},
			vcsim.VM{Name: "hung", IgnoreShutdown: true}),
		StateDir: state,
		Shutdown: `shutdown:
  default_action: ["shutdown 10s", "poweroff 5s"]
  guests:
    - {name: hung, action: ["shutdown 1s", "poweroff 5s"]}
`,
	})
	d := s.startDaemon("daemon")
	d.waitLog("plan ready", 30*time.Second)
	d.trigger("shutdown")
	d.waitLog("shutdown finished", 40*time.Second)

	out := d.output()
	if !logHas(out, "JOURNAL WRITE FAILED", "no space left on device") {
		t.Error(`the log has no "JOURNAL WRITE FAILED … no space left on device" line`)
	}
	for line := range strings.SplitSeq(out, "\n") {
		if strings.Contains(line, "JOURNAL") || strings.Contains(line, "journal") {
			t.Logf("log: %s", line)
		}
	}
	if fi, err := os.Stat(s.journ); err == nil && fi.Size() > 0 {
		t.Errorf("the journal holds %d bytes: the disk was not full (harness problem)", fi.Size())
	}
	for _, vm := range []string{"v-1", "v-2", "hung"} {
		if st := s.sim.PowerState(vm); st != "poweredOff" {
			t.Errorf("%s is %s: the shutdown must go on without its journal", vm, st)
		}
		if n := s.sim.CallsFor("ShutdownGuest", vm); n != 1 {
			t.Errorf("ShutdownGuest on %s: %d calls, want 1", vm, n)
		}
	}
	if n := s.sim.CallsFor("PowerOffVM_Task", "hung"); n != 1 {
		t.Errorf("PowerOffVM_Task on hung: %d calls, want 1 (escalation without a journal)", n)
	}
	if got := s.sim.HostShutdowns(); !slices.Equal(got, []string{"esx-1"}) {
		t.Errorf("host shutdowns %v, want [esx-1]", got)
	}
	st := d.status()
	if st.Shutdown == nil || st.Shutdown.State != "done" {
		t.Errorf("status shutdown %+v, want state done", st.Shutdown)
	} else {
		t.Logf("status shutdown.notes: %q", st.Shutdown.Notes)
	}
	d.terminate(10 * time.Second)
}

// fill writes path until the file system is full and returns the bytes
// written.
func fill(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	n := 0
	for {
		k, err := f.Write(buf)
		n += k
		if errors.Is(err, syscall.ENOSPC) {
			return n
		}
		if err != nil {
			t.Fatalf("fill %s: %v", path, err)
		}
		if n > 16<<20 {
			t.Fatalf("fill %s: 16 MiB written and not full: not the small tmpfs", path)
		}
	}
}

// notifyFleet: 6 guests of 1–2 s on one host, 2 at a time: a makespan of
// about 4–5 s.
func notifyFleet() vcsim.Fleet {
	var vms []vcsim.VM
	for i := range 6 {
		vms = append(vms, vcsim.VM{Name: fmt.Sprintf("v-%d", i+1), ShutdownDelay: time.Duration(1000+200*i) * time.Millisecond})
	}
	return oneHost(vms...)
}

const notifyShutdown = `shutdown:
  default_action: ["shutdown 10s", "poweroff 5s"]
  caps: {global: 2, per_host: 2}
`

// notifyRun runs one shutdown on a fresh site and returns the daemon, the
// trigger → run-start delay and the makespan (run-start → run-done).
func notifyRun(t *testing.T, c siteConfig, name string) (*site, *daemon, time.Duration, time.Duration) {
	t.Helper()
	s := newSite(t, c)
	d := s.startDaemon(name)
	d.waitLog("plan ready", 30*time.Second)
	trig := time.Now()
	d.trigger("shutdown")
	rs := d.waitRunDone(60 * time.Second)
	start, _ := find(rs, "run-start", "")
	var done rec
	for _, r := range rs {
		if r.Type == "run-done" {
			done = r
		}
	}
	for _, vm := range c.Fleet.VMs {
		if st := s.sim.PowerState(vm.Name); st != "poweredOff" {
			t.Errorf("%s: %s is %s", name, vm.Name, st)
		}
	}
	return s, d, start.T.Sub(trig), done.T.Sub(start.T)
}

// Scenario 9: every notification receiver is down: the SMTP relay's port
// is closed, one webhook answers 500, one never answers, one has no
// server. The shutdown must take as long as without notifications, the
// notifications be retried and given up (the status shows the channels
// down), and the daemon exit promptly.
func TestProcessNotifyReceiversDown(t *testing.T) {
	_, _, baseLead, baseSpan := notifyRun(t, siteConfig{Fleet: notifyFleet(), Shutdown: notifyShutdown}, "baseline")
	t.Logf("baseline: trigger→run-start %.2fs, makespan %.2fs", baseLead.Seconds(), baseSpan.Seconds())

	smtpPass := newSecret("smtppw")
	passFile := filepath.Join(t.TempDir(), "smtp.pass")
	if err := os.WriteFile(passFile, []byte(smtpPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	failing, hanging := newReceiver(t, "500"), newReceiver(t, "hang")
	const settings = "  timeout: 1s\n  retries: 2\n  backoff: 200ms\n  max_backoff: 400ms\n  flush_timeout: 2s\n"
	c := siteConfig{Fleet: notifyFleet(), Shutdown: notifyShutdown}
	c.addChannel("{name: mail, email: {from: sundown@chaos.test, to: [ops@chaos.test], relay: \"127.0.0.1:"+
		strconv.Itoa(closedPort(t))+"\", tls: none, username: sundown, password_file: "+strconv.Quote(passFile)+"}}", settings)
	c.addSecretValue("SMTP password", smtpPass)
	c.addWebhook("hook-500", failing, settings)
	c.addWebhook("hook-hang", hanging, settings)
	c.addWebhookURL("hook-refused", "http://127.0.0.1:"+strconv.Itoa(closedPort(t)), settings)
	_, d, lead, span := notifyRun(t, c, "receivers-down")
	t.Logf("receivers down: trigger→run-start %.2fs, makespan %.2fs", lead.Seconds(), span.Seconds())

	tol := max(750*time.Millisecond, baseSpan/10)
	if diff := span - baseSpan; diff > tol || diff < -tol {
		t.Errorf("makespan %.2fs with the receivers down, %.2fs without notifications: differs by more than %.2fs",
			span.Seconds(), baseSpan.Seconds(), tol.Seconds())
	}
	if lead > baseLead+500*time.Millisecond {
		t.Errorf("the shutdown started %.2fs after the trigger, %.2fs without notifications: notifications delayed it",
			lead.Seconds(), baseLead.Seconds())
	}

	// The channels are reported down, with notifications given up.
	var st api.Status
	want := []string{"mail", "hook-500", "hook-hang", "hook-refused"}
	deadline := time.Now().Add(40 * time.Second)
	for {
		st = d.status()
		bad := 0
		for _, name := range want {
			ch, ok := channel(st, name)
			if !ok || !ch.Down || ch.Failed == 0 {
				bad++
			}
		}
		if bad == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("channels after 40s: %+v; want each of %v down with failed > 0", st.Channels, want)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, ch := range st.Channels {
		t.Logf("channel %s: down %v, failed %d, pending %d, last error %q", ch.Name, ch.Down, ch.Failed, ch.Pending, ch.LastError)
	}
	for _, r := range []*receiver{failing, hanging} {
		t.Logf("receiver %s: %d requests, the same body up to %d times", r.mode, r.hits(), r.maxRepeats())
		if r.maxRepeats() < 2 {
			t.Errorf("receiver %s never got a notification twice: not retried", r.mode)
		}
	}
	took := d.terminate(15 * time.Second)
	t.Logf("SIGTERM → exit %.2fs (flush_timeout 2s)", took.Seconds())
	if took > 6*time.Second {
		t.Errorf("the daemon took %.2fs to exit with the receivers down (flush_timeout 2s)", took.Seconds())
	}
}

// channel finds a notification channel in the status.
func channel(st api.Status, name string) (api.ChannelHealth, bool) {
	for _, c := range st.Channels {
		if c.Name == name {
			return c, true
		}
	}
	return api.ChannelHealth{}, false
}
