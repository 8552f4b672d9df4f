package apcupsd_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sundown-ups/sundown/internal/apcupsd"
	"github.com/sundown-ups/sundown/internal/apcupsd/nistest"
	"github.com/sundown-ups/sundown/internal/peer"
)

// realApcupsd is a real apcupsd started by a test as a network slave
// (UPSTYPE net) of a nistest server: it reads the nistest status over NIS,
// runs its own shutdown logic on it, and serves the result on its own NIS
// port, where both apcaccess and this package read it.
type realApcupsd struct {
	dir     string
	nisAddr string
	access  string // apcaccess binary
}

// apcupsdBinary finds a binary of Debian's apcupsd package. apcupsd
// conflicts with nut-client, which the NUT tests need, so CI unpacks the
// package without installing it (dpkg-deb -x) into /opt/sundown-apcupsd;
// $SUNDOWN_APCUPSD_DIR overrides that folder.
func apcupsdBinary(t *testing.T, name string) string {
	t.Helper()
	dirs := []string{"/sbin", "/opt/sundown-apcupsd/sbin"}
	if d := os.Getenv("SUNDOWN_APCUPSD_DIR"); d != "" {
		dirs = []string{filepath.Join(d, "sbin")}
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return peer.NeedBinary(t, filepath.Join(dirs[len(dirs)-1], name),
		"apt-get download apcupsd && dpkg-deb -x apcupsd_*.deb /opt/sundown-apcupsd (it conflicts with nut-client)")
}

func startRealApcupsd(t *testing.T, masterAddr string) *realApcupsd {
	t.Helper()
	bin := apcupsdBinary(t, "apcupsd")
	access := apcupsdBinary(t, "apcaccess")
	dir := t.TempDir()

	// A harmless apccontrol: it records the event and does nothing else
	// (the real one would run shutdown on doshutdown).
	script := "#!/bin/sh\necho \"$1\" >> " + filepath.Join(dir, "apccontrol.log") + "\nexit 0\n"
	if err := os.WriteFile(filepath.Join(dir, "apccontrol"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	nisAddr := freeAddr(t)
	_, port, _ := net.SplitHostPort(nisAddr)
	conf := fmt.Sprintf(`## apcupsd.conf v1.1 ##
UPSNAME slave
UPSCABLE ether
UPSTYPE net
DEVICE %s
POLLTIME 1
LOCKFILE %[2]s
SCRIPTDIR %[2]s
PWRFAILDIR %[2]s
NOLOGINDIR %[2]s
ONBATTERYDELAY 0
BATTERYLEVEL 5
MINUTES 3
TIMEOUT 0
ANNOY 300
ANNOYDELAY 60
NOLOGON disable
KILLDELAY 0
NETSERVER on
NISIP 127.0.0.1
NISPORT %s
EVENTSFILE %[2]s/apcupsd.events
EVENTSFILEMAX 10
UPSCLASS standalone
UPSMODE disable
STATTIME 0
STATFILE %[2]s/apcupsd.status
LOGSTATS off
DATATIME 0
`, masterAddr, dir, port)
	confPath := filepath.Join(dir, "apcupsd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(dir, "apcupsd.out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-b", "-f", confPath, "-P", filepath.Join(dir, "apcupsd.pid"))
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start apcupsd: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		_ = out.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "apcupsd.out"))
			ev, _ := os.ReadFile(filepath.Join(dir, "apcupsd.events"))
			t.Logf("apcupsd output:\n%s\nevents:\n%s", b, ev)
		}
	})
	return &realApcupsd{dir: dir, nisAddr: nisAddr, access: access}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// waitReport polls the real apcupsd until ok accepts its report, for at
// most 30 s.
func (a *realApcupsd) waitReport(t *testing.T, what string, ok func(*apcupsd.Report) bool) *apcupsd.Report {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last *apcupsd.Report
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := apcupsd.Status(ctx, a.nisAddr, apcupsd.Options{ReadTimeout: 3 * time.Second})
		cancel()
		if err == nil && ok(r) {
			return r
		}
		last, lastErr = r, err
		time.Sleep(200 * time.Millisecond) // polling a real peer
	}
	if last != nil {
		t.Fatalf("apcupsd never reported %s; last STATUS %q STATFLAG %#x tokens %v", what, last.Status, last.StatFlag, last.NUTStatus())
	}
	t.Fatalf("apcupsd never reported %s; last error %v", what, lastErr)
	return nil
}

// apcaccess runs the real client and returns its fields.
func (a *realApcupsd) apcaccess(t *testing.T) map[string]string {
	t.Helper()
	out, err := exec.Command(a.access, "-h", a.nisAddr, "status").Output()
	if err != nil {
		t.Fatalf("apcaccess: %v", err)
	}
	f := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			t.Fatalf("apcaccess line without ':': %q", sc.Text())
		}
		f[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return f
}

// compareWithApcaccess checks that apcaccess and Status see the same fields,
// apart from the clock-driven ones that may change between the two queries.
func (a *realApcupsd) compareWithApcaccess(t *testing.T) {
	t.Helper()
	for range 3 { // the slave may update between the two queries
		theirs := a.apcaccess(t)
		r, err := apcupsd.Status(context.Background(), a.nisAddr, apcupsd.Options{})
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		ours := r.Fields
		for _, m := range []map[string]string{theirs, ours} {
			for _, k := range []string{"DATE", "END APC", "TONBATT", "CUMONBATT", "XONBATT", "XOFFBATT", "APC", "MASTERUPD"} {
				delete(m, k)
			}
		}
		diff := cmp.Diff(theirs, ours)
		if diff == "" {
			return
		}
		t.Logf("apcaccess vs Status (-apcaccess +ours):\n%s", diff)
		time.Sleep(time.Second) // polling a real peer
	}
	t.Fatal("apcaccess and Status disagree")
}

// waitApccontrol waits up to 10 s for apcupsd to run apccontrol with event
// (it runs the script a little after it updates its status).
func (a *realApcupsd) waitApccontrol(t *testing.T, event string) {
	t.Helper()
	var calls []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		b, err := os.ReadFile(filepath.Join(a.dir, "apccontrol.log"))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		calls = strings.Fields(string(b))
		if slices.Contains(calls, event) {
			return
		}
		time.Sleep(100 * time.Millisecond) // polling a real peer
	}
	t.Errorf("apccontrol calls %v: no %s", calls, event)
}

func startMaster(t *testing.T) *nistest.Server {
	t.Helper()
	s := nistest.NewServer()
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func hasTokens(r *apcupsd.Report, want ...string) bool {
	got := r.NUTStatus()
	for _, w := range want {
		if !slices.Contains(got, w) {
			return false
		}
	}
	return true
}

// TestRealApcupsdOutage drives a real apcupsd (as net slave of nistest)
// through on line, on battery and low battery; apcupsd's own shutdown
// decision must show as FSD, and apcaccess must agree with Status.
func TestRealApcupsdOutage(t *testing.T) {
	t.Parallel()
	master := startMaster(t)
	master.Set("", nistest.FlagOnline|nistest.FlagBattPresent, 100, 47.3, 18)
	a := startRealApcupsd(t, master.Addr())

	r := a.waitReport(t, "OL with the master's charge", func(r *apcupsd.Report) bool {
		return hasTokens(r, "OL") && r.Charge == 100
	})
	if r.StatFlag&apcupsd.FlagSlave == 0 {
		t.Errorf("STATFLAG %#x: the slave bit is not set", r.StatFlag)
	}
	if got, want := r.TimeLeft, 2838*time.Second; got != want {
		t.Errorf("TimeLeft %v, want %v", got, want)
	}
	if r.Load != 18 || r.CommLost() || slices.Contains(r.NUTStatus(), "FSD") {
		t.Errorf("load %v commlost %v tokens %v", r.Load, r.CommLost(), r.NUTStatus())
	}
	a.compareWithApcaccess(t)

	master.Set("", nistest.FlagOnBatt|nistest.FlagBattPresent, 80, 20, 18)
	r = a.waitReport(t, "OB", func(r *apcupsd.Report) bool { return hasTokens(r, "OB") })
	if slices.Contains(r.NUTStatus(), "OL") || slices.Contains(r.NUTStatus(), "FSD") {
		t.Errorf("on battery: tokens %v", r.NUTStatus())
	}
	if r.Charge != 80 || r.Vars()["battery.runtime"] != "1200" {
		t.Errorf("on battery: charge %v vars %v", r.Charge, r.Vars())
	}
	a.compareWithApcaccess(t)
	ev, err := apcupsd.Events(context.Background(), a.nisAddr, apcupsd.Options{})
	if err != nil {
		t.Fatalf("Events: %v", err)
	}
	if !slices.ContainsFunc(ev, func(l string) bool { return strings.HasSuffix(l, "Power failure.") }) {
		t.Errorf("events %q: no power failure", ev)
	}

	// Charge 3 % is below the slave's BATTERYLEVEL 5: apcupsd decides to
	// shut its machine down.
	master.Set("", nistest.FlagOnBatt|nistest.FlagBattLow|nistest.FlagBattPresent, 3, 1, 18)
	r = a.waitReport(t, "FSD", func(r *apcupsd.Report) bool { return hasTokens(r, "FSD") })
	t.Logf("after low battery: STATUS %q STATFLAG %#x tokens %v", r.Status, r.StatFlag, r.NUTStatus())
	if !hasTokens(r, "OB", "LB") {
		t.Errorf("shutting down: tokens %v, want OB and LB kept", r.NUTStatus())
	}
	if r.StatFlag&(apcupsd.FlagShutLoad|apcupsd.FlagShutLTime) == 0 {
		t.Errorf("STATFLAG %#x: no shut_load or shut_ltime bit", r.StatFlag)
	}
	// Then apcupsd runs apccontrol doshutdown and says so in STATUS.
	r = a.waitReport(t, "SHUTTING DOWN", func(r *apcupsd.Report) bool { return r.Status == "SHUTTING DOWN" })
	t.Logf("shutting down: STATUS %q STATFLAG %#x tokens %v", r.Status, r.StatFlag, r.NUTStatus())
	if r.StatFlag&apcupsd.FlagShutdown == 0 || !hasTokens(r, "FSD", "OB", "LB") {
		t.Errorf("shutting down: STATFLAG %#x tokens %v, want the shutdown bit and FSD OB LB", r.StatFlag, r.NUTStatus())
	}
	a.waitApccontrol(t, "doshutdown")
	a.compareWithApcaccess(t)
}

// TestRealApcupsdCommLost stops the master under a real apcupsd slave: the
// slave reports COMMLOST, which Status returns as a report with CommLost.
func TestRealApcupsdCommLost(t *testing.T) {
	t.Parallel()
	master := startMaster(t)
	master.Set("", nistest.FlagOnline|nistest.FlagBattPresent, 100, 47.3, 18)
	a := startRealApcupsd(t, master.Addr())
	a.waitReport(t, "OL", func(r *apcupsd.Report) bool { return hasTokens(r, "OL") })

	_ = master.Close()
	r := a.waitReport(t, "comm lost", func(r *apcupsd.Report) bool { return r.CommLost() })
	t.Logf("comm lost: STATUS %q STATFLAG %#x", r.Status, r.StatFlag)
	if r.NUTStatus() != nil {
		t.Errorf("tokens %v while comm lost, want none", r.NUTStatus())
	}
	if _, ok := r.Vars()["ups.status"]; ok {
		t.Errorf("Vars has ups.status while comm lost: %v", r.Vars())
	}
	if got := a.apcaccess(t)["STATUS"]; got != "COMMLOST" {
		t.Errorf("apcaccess STATUS %q, want COMMLOST", got)
	}
	a.waitApccontrol(t, "commfailure")
}
