package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/peer/nutd"
	"github.com/sundown-ups/sundown/internal/peer/nutd/proc"
)

// The upsmon harness (internal/peer/upsmon) monitors one UPS. The idle
// benchmark needs upsmon watching 8, so this file starts that upsmon itself,
// following the harness's safety rules to the letter:
//
//   - SHUTDOWNCMD is a script that only records its call; NOTIFYCMD only
//     records; POWERDOWNFLAG lives in the test's folder; PATH starts with
//     tripwire scripts (shutdown, poweroff, …) that record and fail.
//   - It holds the same machine-wide lock as the harness (an exclusive flock
//     on $TMPDIR/sundown-upsmon.lock), because upsmon always writes
//     /run/nut/upsmon.pid and refuses to start while another runs.
//   - It refuses to start when an upsmon it did not start runs, removes only
//     a stale pid file, and removes the pid file afterwards only if it still
//     names its own upsmon.
//   - upsmon runs as "upsmon -p -F" through package proc, and is stopped by
//     PID (its process group) in the cleanup.

const (
	upsmonPidFile  = "/run/nut/upsmon.pid"
	upsmonLockWait = 3 * time.Minute
)

var upsmonTripwires = []string{"shutdown", "poweroff", "halt", "reboot", "init", "telinit", "systemctl", "upsdrvctl"}

// multiUpsmon is a running upsmon that monitors several UPSes.
type multiUpsmon struct {
	dir string
	p   *proc.Proc
}

// startMultiUpsmon starts upsmon (secondary, NUT's default timers) on every
// UPS in upses at addr, and returns once it has logged in to all of them.
func startMultiUpsmon(tb testing.TB, addr string, upses []string, user, pass string) *multiUpsmon {
	tb.Helper()
	bin := nutd.Binary(tb, "upsmon")
	dir := tb.TempDir()
	m := &multiUpsmon{dir: dir}
	if err := m.writeFiles(addr, upses, user, pass); err != nil {
		tb.Fatalf("upsmon: %v", err)
	}
	release, err := lockUpsmonSlot(tb)
	if err != nil {
		tb.Fatalf("upsmon: %v", err)
	}
	tb.Cleanup(release) // registered first: runs last
	if err := prepareUpsmonRunDir(); err != nil {
		tb.Fatalf("upsmon: %v", err)
	}
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "NUT_") && !strings.HasPrefix(e, "PATH=") {
			env = append(env, e)
		}
	}
	env = append(env, "NUT_CONFPATH="+filepath.Join(dir, "etc"), "NUT_STATEPATH="+filepath.Join(dir, "state"),
		"PATH="+filepath.Join(dir, "tripwire")+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	p, err := proc.Start("upsmon", bin, []string{"-p", "-F"}, env, filepath.Join(dir, "upsmon.log"))
	if err != nil {
		tb.Fatalf("upsmon: %v", err)
	}
	m.p = p
	tb.Cleanup(func() {
		if err := p.Stop(2 * time.Second); err != nil {
			tb.Errorf("upsmon cleanup: %v", err)
		}
		if b, err := os.ReadFile(upsmonPidFile); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(p.PID()) {
			_ = os.Remove(upsmonPidFile)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "forbidden.log")); err == nil {
			tb.Errorf("upsmon called forbidden commands: %s", b)
		}
		if _, err := os.Stat(filepath.Join(dir, "shutdowncmd.log")); err == nil {
			tb.Errorf("upsmon ran its (recording) SHUTDOWNCMD while every UPS was on line power")
		}
	})
	return m
}

// PID returns upsmon's process id.
func (m *multiUpsmon) PID() int { return m.p.PID() }

// Exited reports whether upsmon has exited.
func (m *multiUpsmon) Exited() bool { return m.p.Exited() }

// Log returns upsmon's output.
func (m *multiUpsmon) Log() string {
	b, _ := os.ReadFile(filepath.Join(m.dir, "upsmon.log"))
	return string(b)
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func nutQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func (m *multiUpsmon) writeFiles(addr string, upses []string, user, pass string) error {
	for _, d := range []string{"etc", "state", "tripwire"} {
		if err := os.MkdirAll(filepath.Join(m.dir, d), 0o700); err != nil {
			return err
		}
	}
	notify := filepath.Join(m.dir, "notify.sh")
	shutdown := filepath.Join(m.dir, "shutdowncmd.sh")
	scripts := map[string]string{
		notify: "#!/bin/sh\n# sundown bench: records one notification, nothing else.\n" +
			`printf '%s %s %s\n' "$(date +%s.%N)" "$NOTIFYTYPE" "$UPSNAME" >> ` + shQuote(filepath.Join(m.dir, "notify.log")) + "\n",
		shutdown: "#!/bin/sh\n# sundown bench: a HARMLESS SHUTDOWNCMD. It only records that it ran.\n" +
			`printf 'SHUTDOWNCMD at %s\n' "$(date +%s.%N)" >> ` + shQuote(filepath.Join(m.dir, "shutdowncmd.log")) + "\nexit 0\n",
	}
	for _, name := range upsmonTripwires {
		scripts[filepath.Join(m.dir, "tripwire", name)] = "#!/bin/sh\n# sundown bench: must never run; records the attempt and fails.\n" +
			`printf '%s %s\n' "$(date +%s.%N)" "$0 $*" >> ` + shQuote(filepath.Join(m.dir, "forbidden.log")) + "\nexit 1\n"
	}
	for path, body := range scripts {
		if err := os.WriteFile(path, []byte(body), 0o700); err != nil {
			return err
		}
	}
	var lines []string
	for _, u := range upses {
		lines = append(lines, fmt.Sprintf("MONITOR %s@%s 1 %s %s secondary", u, addr, user, nutQuote(pass)))
	}
	lines = append(lines,
		"MINSUPPLIES 1",
		"SHUTDOWNCMD "+nutQuote(shutdown),
		"NOTIFYCMD "+nutQuote(notify),
		"POWERDOWNFLAG "+nutQuote(filepath.Join(m.dir, "killpower")))
	for _, typ := range []string{"ONLINE", "ONBATT", "LOWBATT", "FSD", "COMMOK", "COMMBAD", "SHUTDOWN", "REPLBATT", "NOCOMM", "NOPARENT", "CAL"} {
		lines = append(lines, "NOTIFYFLAG "+typ+" SYSLOG+EXEC")
	}
	return os.WriteFile(filepath.Join(m.dir, "etc", "upsmon.conf"), []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

// lockUpsmonSlot takes the exclusive flock the upsmon harness uses (it
// serializes every upsmon this project's tests start, across test binaries
// and, through separate open files, within this one).
func lockUpsmonSlot(tb testing.TB) (func(), error) {
	path := filepath.Join(os.TempDir(), "sundown-upsmon.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	deadline := time.Now().Add(upsmonLockWait)
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("lock %s (another test's upsmon for %v?): %w", path, upsmonLockWait, err)
		}
		if !logged {
			tb.Logf("upsmon: waiting for another upsmon to finish (%s)", path)
			logged = true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// prepareUpsmonRunDir creates /run/nut and removes a stale upsmon.pid; it
// refuses to go on while an upsmon this process did not start runs.
func prepareUpsmonRunDir() error {
	if err := os.MkdirAll(filepath.Dir(upsmonPidFile), 0o770); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(upsmonPidFile), err)
	}
	b, err := os.ReadFile(upsmonPidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", upsmonPidFile, err)
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && filepath.Base(exe) == "upsmon" {
			return fmt.Errorf("an upsmon this benchmark did not start runs as pid %d (%s); stop it first", pid, upsmonPidFile)
		}
	}
	if err := os.Remove(upsmonPidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale %s: %w", upsmonPidFile, err)
	}
	return nil
}
