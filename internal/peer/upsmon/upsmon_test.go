package upsmon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/peer/nutd"
)

func server(t *testing.T) *nutd.Server {
	t.Helper()
	return nutd.Start(t, nutd.Config{
		UPS: []nutd.UPS{{Name: "ups1", Vars: map[string]string{
			"ups.status": "OL", "battery.charge": "100", "battery.runtime": "1800",
		}}},
		Users: []nutd.User{{Name: "mon", Password: `s3"cret`, Upsmon: "primary"}},
	})
}

// childrenOf lists the live child processes of pid.
func childrenOf(t *testing.T, pid int) []string {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		out = append(out, strings.Fields(string(b))...)
	}
	return out
}

// TestNotifiesPowerChanges drives OL → OB → OL → OB and measures the time
// from upsd serving the change to upsmon running NOTIFYCMD (POLLFREQ 1).
func TestNotifiesPowerChanges(t *testing.T) {
	t.Parallel()
	s := server(t)
	u := Start(t, Config{Addr: s.Addr(), UPS: "ups1", User: "mon", Password: `s3"cret`, Primary: true,
		PollFreq: 1, PollFreqAlert: 1})
	if kids := childrenOf(t, u.PID()); len(kids) != 0 {
		t.Errorf("upsmon -p has children %v; want one single process", kids)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(u.PID()) {
		t.Errorf("%s = %q, %v; want upsmon's pid %d", pidFile, b, err, u.PID())
	}

	var total time.Duration
	steps := []struct{ status, notify string }{{"OB DISCHRG", "ONBATT"}, {"OL CHRG", "ONLINE"}, {"OB DISCHRG", "ONBATT"}}
	for _, st := range steps {
		set := time.Now()
		s.Set(t, "ups1", map[string]string{"ups.status": st.status})
		served := s.WaitServed(t, "ups1", "ups.status", st.status, 3*time.Second)
		n := u.WaitNotification(t, st.notify, set, 5*time.Second)
		lat := n.At.Sub(served)
		total += lat
		t.Logf("%s: Set → served %.3fs, served → %s notification %.3fs (%q)",
			st.status, served.Sub(set).Seconds(), n.Type, lat.Seconds(), n.Message)
		if n.UPS != "ups1@"+s.Addr() {
			t.Errorf("UPSNAME = %q, want ups1@%s", n.UPS, s.Addr())
		}
		if !strings.Contains(n.Message, "ups1@"+s.Addr()) {
			t.Errorf("message %q does not name the UPS", n.Message)
		}
	}
	t.Logf("served → notification, POLLFREQ 1: average %.3fs over %d changes", total.Seconds()/float64(len(steps)), len(steps))
	if _, called := u.ShutdownCalled(); called {
		t.Error("SHUTDOWNCMD ran while the battery was fine")
	}
	if f := u.ForbiddenCalls(); f != nil {
		t.Errorf("forbidden commands called: %v", f)
	}
}

// TestLowBatteryRunsHarmlessShutdown drives OB+LB on a primary upsmon and
// checks the whole shutdown path ends in the recording script and nothing
// else.
func TestLowBatteryRunsHarmlessShutdown(t *testing.T) {
	t.Parallel()
	s := server(t)
	u := Start(t, Config{Addr: s.Addr(), UPS: "ups1", User: "mon", Password: `s3"cret`, Primary: true,
		PollFreq: 1, PollFreqAlert: 1, HostSync: 1, FinalDelay: -1})
	set := time.Now()
	s.Set(t, "ups1", map[string]string{"ups.status": "OB DISCHRG LB", "battery.charge": "8", "battery.runtime": "60"})
	served := s.WaitServed(t, "ups1", "ups.status", "OB DISCHRG LB", 3*time.Second)
	low := u.WaitNotification(t, "LOWBATT", set, 5*time.Second)
	shut := u.WaitNotification(t, "SHUTDOWN", set, 10*time.Second)

	var at time.Time
	var called bool
	deadline := time.Now().Add(10 * time.Second)
	for {
		if at, called = u.ShutdownCalled(); called {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("SHUTDOWNCMD not recorded within 10s of the SHUTDOWN notification")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("served OB LB → LOWBATT %.3fs, → SHUTDOWN %.3fs, → SHUTDOWNCMD %.3fs (HOSTSYNC 1, FINALDELAY 0)",
		low.At.Sub(served).Seconds(), shut.At.Sub(served).Seconds(), at.Sub(served).Seconds())
	for _, n := range u.Notifications() {
		t.Logf("  %s %-8s %s", n.At.Format("15:04:05.000"), n.Type, n.Message)
	}
	// upsmon forks every NOTIFYCMD, so the LOWBATT and SHUTDOWN scripts
	// and SHUTDOWNCMD (FINALDELAY 0) land in any order within a few ms
	// (seen: SHUTDOWNCMD 0.3 ms before the LOWBATT script wrote). What
	// must hold: the shutdown came after upsd served OB LB.
	if !at.After(served) {
		t.Errorf("SHUTDOWNCMD at %v, before upsd served OB LB at %v", at, served)
	}
	// The primary raised FSD on the server before shutting down.
	s.WaitServed(t, "ups1", "ups.status", "FSD OB DISCHRG LB", 2*time.Second)
	// upsmon exits after SHUTDOWNCMD and leaves its POWERDOWNFLAG in our
	// folder only.
	deadline = time.Now().Add(5 * time.Second)
	for !u.Exited() {
		if time.Now().After(deadline) {
			t.Fatal("upsmon still runs 5s after SHUTDOWNCMD")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(u.Dir(), "killpower")); err != nil {
		t.Errorf("POWERDOWNFLAG: %v", err)
	}
	if f := u.ForbiddenCalls(); f != nil {
		t.Errorf("forbidden commands called: %v", f)
	}
	b, err := os.ReadFile(filepath.Join(u.Dir(), "shutdowncmd.log"))
	if err != nil || strings.Count(string(b), "SHUTDOWNCMD at ") != 1 {
		t.Errorf("shutdowncmd.log = %q, %v; want exactly one call", b, err)
	}
}

func TestConfigValidation(t *testing.T) {
	err := validate(Config{Addr: "nohost", UPS: "a b", User: "", Password: "x\ny"})
	for _, want := range []string{"Addr", "UPS", "User", "Password"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	if err := validate(Config{Addr: "127.0.0.1:1", UPS: "u", User: "m", Password: "p"}); err != nil {
		t.Error(err)
	}
}

func TestParseNotifications(t *testing.T) {
	u := &Upsmon{notifyFile: filepath.Join(t.TempDir(), "n.log")}
	content := "1795240213.000000001 COMMOK ups1@127.0.0.1:3493\n" + // out of order, as forked scripts may write
		"1795240212.541743266 ONBATT ups1@127.0.0.1:3493 UPS ups1@127.0.0.1:3493 on battery\n" +
		"garbage\n"
	if err := os.WriteFile(u.notifyFile, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	got := u.Notifications()
	if len(got) != 3 {
		t.Fatalf("got %d notifications: %+v", len(got), got)
	}
	// The unparseable line has a zero At, so it sorts first.
	if got[0].Type != "?" || got[0].Message != "garbage" || !got[0].At.IsZero() {
		t.Errorf("first = %+v", got[0])
	}
	if got[1].Type != "ONBATT" || got[1].UPS != "ups1@127.0.0.1:3493" || got[1].Message != "UPS ups1@127.0.0.1:3493 on battery" ||
		!got[1].At.Equal(time.Unix(1795240212, 541743266)) {
		t.Errorf("second = %+v", got[1])
	}
	if got[2].Type != "COMMOK" || got[2].Message != "" {
		t.Errorf("third = %+v", got[2])
	}
}
