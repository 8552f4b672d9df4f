// Package upsmon runs the real NUT 2.8.0 upsmon as a reference client for
// sundown's parity tests and latency benchmarks: it monitors one UPS on a
// server (usually a nutd.Server), and records what upsmon decides — every
// notification (through NOTIFYCMD) and the shutdown command — in files under
// the test's folder, with timestamps.
//
// Safety: SHUTDOWNCMD is a script that only appends "SHUTDOWNCMD at <time>"
// to a file, POWERDOWNFLAG lives in the test's folder, and upsmon runs with a
// PATH whose first folder holds tripwire scripts named shutdown, poweroff,
// halt, reboot, init, telinit, systemctl and upsdrvctl that only record
// their call (ForbiddenCalls) and fail. upsmon in network-client mode calls
// nothing but SHUTDOWNCMD; the tripwires are a second line of defence.
//
// One upsmon at a time: upsmon 2.8.0 always checks and writes
// /run/nut/upsmon.pid (NUT_ALTPIDPATH and NUT_STATEPATH do not move it) and
// refuses to start while the process named there runs. Start therefore
// holds a package-level lock and an exclusive flock on
// $TMPDIR/sundown-upsmon.lock (so test binaries of different packages wait
// for each other too) from Start until the test's cleanup. Tests that use
// this package can still run in parallel with others; their upsmon part is
// serialized, waiting up to 3 minutes for the lock. A test that calls Start
// twice fails at once.
//
// upsmon is started as "upsmon -p -F": -p keeps it one privileged process
// (without it, it forks a root parent and a child that switches to user nut,
// which cannot read the test's folder), -F keeps it in the foreground. It is
// stopped by PID (its process group: NOTIFYCMD children too) in t.Cleanup.
package upsmon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/peer/nutd"
	"github.com/sundown-ups/sundown/internal/peer/nutd/proc"
)

// Config describes the one UPS upsmon monitors and its timers. For the
// timers, 0 keeps NUT's default and a negative value writes 0.
type Config struct {
	Addr     string // upsd address, host:port
	UPS      string // UPS name on that server
	User     string // upsd.users user with an "upsmon primary|secondary" line
	Password string
	Primary  bool // MONITOR … primary (else secondary)

	PollFreq       int // POLLFREQ, default 5
	PollFreqAlert  int // POLLFREQALERT (while on battery), default 5
	DeadTime       int // DEADTIME, default 15
	HostSync       int // HOSTSYNC, default 15
	FinalDelay     int // FINALDELAY (SHUTDOWN notification → SHUTDOWNCMD), default 5
	NoCommWarnTime int // NOCOMMWARNTIME, default 300
}

// Notification is one NOTIFYCMD call.
type Notification struct {
	At      time.Time // when the NOTIFYCMD script ran
	Type    string    // NOTIFYTYPE: ONLINE, ONBATT, LOWBATT, FSD, COMMOK, COMMBAD, SHUTDOWN, REPLBATT, NOCOMM, NOPARENT, CAL
	UPS     string    // UPSNAME as upsmon gives it: ups@host:port
	Message string    // the notification text
}

// NotifyTypes are the notification types upsmon 2.8.0 knows (it warns about
// OFF, BYPASS and NOTBYPASS, which came with 2.8.1).
var NotifyTypes = []string{"ONLINE", "ONBATT", "LOWBATT", "FSD", "COMMOK", "COMMBAD", "SHUTDOWN",
	"REPLBATT", "NOCOMM", "NOPARENT", "CAL"}

// tripwires are commands a shutdown path could reach through PATH.
var tripwires = []string{"shutdown", "poweroff", "halt", "reboot", "init", "telinit", "systemctl", "upsdrvctl"}

const (
	pidFile  = "/run/nut/upsmon.pid"
	lockWait = 3 * time.Minute
)

// Upsmon is a running upsmon.
type Upsmon struct {
	dir, notifyFile, shutdownFile, tripFile, logFile string
	p                                                *proc.Proc
}

// Start writes the configuration, waits for the machine-wide upsmon slot
// (see the package comment), starts upsmon and returns once it has logged in
// to the UPS (GET NUMLOGINS grew by one, up to 10 s). It fails the test on
// any error, with upsmon's output.
func Start(t testing.TB, cfg Config) *Upsmon {
	t.Helper()
	bin := nutd.Binary(t, "upsmon")
	if err := validate(cfg); err != nil {
		t.Fatalf("upsmon: %v", err)
	}
	dir := t.TempDir()
	u := &Upsmon{
		dir:          dir,
		notifyFile:   filepath.Join(dir, "notify.log"),
		shutdownFile: filepath.Join(dir, "shutdowncmd.log"),
		tripFile:     filepath.Join(dir, "forbidden.log"),
		logFile:      filepath.Join(dir, "upsmon.log"),
	}
	if err := u.writeFiles(cfg); err != nil {
		t.Fatalf("upsmon: %v", err)
	}

	release, err := acquire(t)
	if err != nil {
		t.Fatalf("upsmon: %v", err)
	}
	t.Cleanup(release) // registered first among the cleanups below: runs last
	t.Cleanup(func() {
		if t.Failed() {
			u.logOutput(t)
		}
	})
	if err := prepareRunDir(); err != nil {
		t.Fatalf("upsmon: %v", err)
	}

	before, err := numLogins(cfg.Addr, cfg.UPS)
	if err != nil {
		t.Fatalf("upsmon: before start: %v", err)
	}
	env := append(withoutVars(os.Environ(), "NUT_", "PATH="),
		"NUT_CONFPATH="+filepath.Join(dir, "etc"),
		"NUT_STATEPATH="+filepath.Join(dir, "state"),
		"PATH="+filepath.Join(dir, "tripwire")+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	p, err := proc.Start("upsmon", bin, []string{"-p", "-F"}, env, u.logFile)
	if err != nil {
		t.Fatalf("upsmon: %v", err)
	}
	u.p = p
	t.Cleanup(func() {
		if err := p.Stop(2 * time.Second); err != nil {
			t.Errorf("upsmon cleanup: %v", err)
		}
		removeOwnPidFile(p.PID())
	})

	deadline := time.Now().Add(10 * time.Second)
	for {
		if p.Exited() {
			t.Fatalf("upsmon exited at start: %v (output follows)", p.ExitErr())
		}
		n, err := numLogins(cfg.Addr, cfg.UPS)
		if err == nil && n > before {
			return u
		}
		if time.Now().After(deadline) {
			t.Fatalf("upsmon: not logged in to %s@%s after 10s (NUMLOGINS %d, %v; output follows)", cfg.UPS, cfg.Addr, n, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func validate(cfg Config) error {
	var errs []error
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		errs = append(errs, fmt.Errorf("config: Addr %q: %w", cfg.Addr, err))
	}
	for name, v := range map[string]string{"UPS": cfg.UPS, "User": cfg.User} {
		if v == "" || strings.ContainsAny(v, " \t\r\n\"\\@:") {
			errs = append(errs, fmt.Errorf("config: %s %q is empty or has a space, quote, '@' or ':'", name, v))
		}
	}
	if strings.ContainsAny(cfg.Password, "\r\n\x00") || cfg.Password == "" {
		errs = append(errs, errors.New("config: Password is empty or has a line break"))
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func (u *Upsmon) writeFiles(cfg Config) error {
	for _, d := range []string{"etc", "state", "tripwire"} {
		if err := os.MkdirAll(filepath.Join(u.dir, d), 0o700); err != nil {
			return err
		}
	}
	notify := filepath.Join(u.dir, "notify.sh")
	shutdown := filepath.Join(u.dir, "shutdowncmd.sh")
	scripts := map[string]string{
		notify: "#!/bin/sh\n# sundown upsmon harness: records one notification, nothing else.\n" +
			`printf '%s %s %s %s\n' "$(date +%s.%N)" "$NOTIFYTYPE" "$UPSNAME" "$*" >> ` + shellQuote(u.notifyFile) + "\n",
		shutdown: "#!/bin/sh\n# sundown upsmon harness: a HARMLESS SHUTDOWNCMD. It only records that it ran.\n" +
			`printf 'SHUTDOWNCMD at %s\n' "$(date +%s.%N)" >> ` + shellQuote(u.shutdownFile) + "\nexit 0\n",
	}
	for _, name := range tripwires {
		scripts[filepath.Join(u.dir, "tripwire", name)] = "#!/bin/sh\n# sundown upsmon harness: must never run; records the attempt and fails.\n" +
			`printf '%s %s\n' "$(date +%s.%N)" "$0 $*" >> ` + shellQuote(u.tripFile) + "\nexit 1\n"
	}
	for path, body := range scripts {
		if err := os.WriteFile(path, []byte(body), 0o700); err != nil {
			return err
		}
	}
	role := "secondary"
	if cfg.Primary {
		role = "primary"
	}
	lines := []string{
		fmt.Sprintf("MONITOR %s@%s 1 %s %s %s", cfg.UPS, cfg.Addr, cfg.User, quote(cfg.Password), role),
		"MINSUPPLIES 1",
		"SHUTDOWNCMD " + quote(shutdown),
		"NOTIFYCMD " + quote(notify),
		"POWERDOWNFLAG " + quote(filepath.Join(u.dir, "killpower")),
	}
	for _, typ := range NotifyTypes {
		lines = append(lines, "NOTIFYFLAG "+typ+" SYSLOG+EXEC")
	}
	for _, timer := range []struct {
		key string
		v   int
	}{
		{"POLLFREQ", cfg.PollFreq}, {"POLLFREQALERT", cfg.PollFreqAlert}, {"DEADTIME", cfg.DeadTime},
		{"HOSTSYNC", cfg.HostSync}, {"FINALDELAY", cfg.FinalDelay}, {"NOCOMMWARNTIME", cfg.NoCommWarnTime},
	} {
		switch {
		case timer.v > 0:
			lines = append(lines, timer.key+" "+strconv.Itoa(timer.v))
		case timer.v < 0:
			lines = append(lines, timer.key+" 0")
		}
	}
	return os.WriteFile(filepath.Join(u.dir, "etc", "upsmon.conf"), []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

// slot is the package-level lock (a one-place semaphore, so waiting for it
// can time out), held from Start until the cleanup of the test that started
// upsmon; holder is that test.
var (
	slot     = make(chan struct{}, 1)
	holderMu sync.Mutex
	holder   testing.TB
)

// acquire takes the machine-wide upsmon slot: the package lock, then an
// exclusive flock shared with other test binaries.
func acquire(t testing.TB) (release func(), err error) {
	holderMu.Lock()
	same := holder == t
	holderMu.Unlock()
	if same {
		return nil, errors.New("this test already runs an upsmon; only one can run at a time")
	}
	wait := time.NewTimer(lockWait)
	defer wait.Stop()
	select {
	case slot <- struct{}{}:
	default:
		t.Logf("upsmon: waiting for another test's upsmon to finish")
		select {
		case slot <- struct{}{}:
		case <-wait.C:
			return nil, fmt.Errorf("another test has held the upsmon slot for %v", lockWait)
		}
	}
	unlock := func() { <-slot }
	lockPath := filepath.Join(os.TempDir(), "sundown-upsmon.lock")
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		unlock()
		return nil, fmt.Errorf("lock %s: %w", lockPath, err)
	}
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			unlock()
			return nil, fmt.Errorf("lock %s: %w", lockPath, err)
		}
		select {
		case <-wait.C:
			f.Close()
			unlock()
			return nil, fmt.Errorf("lock %s: another test binary has held the upsmon slot for %v", lockPath, lockWait)
		default:
		}
		if !logged {
			t.Logf("upsmon: waiting for another test binary's upsmon to finish (%s)", lockPath)
			logged = true
		}
		time.Sleep(50 * time.Millisecond)
	}
	holderMu.Lock()
	holder = t
	holderMu.Unlock()
	return func() {
		holderMu.Lock()
		holder = nil
		holderMu.Unlock()
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
		unlock()
	}, nil
}

// prepareRunDir creates /run/nut and removes a stale upsmon.pid (one whose
// process is gone or is not upsmon). It refuses to go on when an upsmon this
// package did not start runs: it never touches that process.
func prepareRunDir() error {
	if err := os.MkdirAll(filepath.Dir(pidFile), 0o770); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(pidFile), err)
	}
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", pidFile, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err == nil && pid > 0 {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && filepath.Base(exe) == "upsmon" {
			return fmt.Errorf("an upsmon this harness did not start runs as pid %d (%s); stop it first", pid, pidFile)
		}
	}
	if err := os.Remove(pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale %s: %w", pidFile, err)
	}
	return nil
}

// removeOwnPidFile removes /run/nut/upsmon.pid if it still names pid (an
// upsmon killed by SIGKILL leaves it behind).
func removeOwnPidFile(pid int) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	if strings.TrimSpace(string(b)) == strconv.Itoa(pid) {
		_ = os.Remove(pidFile)
	}
}

func withoutVars(env []string, prefixes ...string) []string {
	var out []string
	for _, e := range env {
		if !slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(e, p) }) {
			out = append(out, e)
		}
	}
	return out
}

// Dir returns upsmon's folder (etc/upsmon.conf, notify.log, shutdowncmd.log,
// upsmon.log, killpower).
func (u *Upsmon) Dir() string { return u.dir }

// PID returns upsmon's process id.
func (u *Upsmon) PID() int { return u.p.PID() }

// Exited reports whether upsmon has exited (it does after running
// SHUTDOWNCMD).
func (u *Upsmon) Exited() bool { return u.p.Exited() }

// Notifications returns the notifications recorded so far, ordered by
// At. At is when the NOTIFYCMD script ran: upsmon forks it, so it trails
// upsmon's decision by a few milliseconds, and two notifications decided in
// the same poll may be stamped in either order. A line that cannot be parsed
// is returned with Type "?", zero At and the raw line as Message.
func (u *Upsmon) Notifications() []Notification {
	b, err := os.ReadFile(u.notifyFile)
	if err != nil {
		return nil
	}
	var out []Notification
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.SplitN(line, " ", 4)
		at, ok := parseStamp(f[0])
		if len(f) < 3 || !ok {
			out = append(out, Notification{Type: "?", Message: line})
			continue
		}
		n := Notification{At: at, Type: f[1], UPS: f[2]}
		if len(f) == 4 {
			n.Message = f[3]
		}
		out = append(out, n)
	}
	// Each NOTIFYCMD runs in its own forked process, so lines can land out
	// of order by a few milliseconds.
	slices.SortStableFunc(out, func(a, b Notification) int { return a.At.Compare(b.At) })
	return out
}

// parseStamp reads date +%s.%N.
func parseStamp(s string) (time.Time, bool) {
	sec, frac, ok := strings.Cut(s, ".")
	if !ok || len(frac) != 9 {
		return time.Time{}, false
	}
	si, err1 := strconv.ParseInt(sec, 10, 64)
	ni, err2 := strconv.ParseInt(frac, 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, false
	}
	return time.Unix(si, ni), true
}

// WaitNotification polls (every 10 ms) for the first notification of type
// typ recorded at or after after, and fails the test after timeout.
func (u *Upsmon) WaitNotification(t testing.TB, typ string, after time.Time, timeout time.Duration) Notification {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		all := u.Notifications()
		for _, n := range all {
			if n.Type == typ && !n.At.Before(after) {
				return n
			}
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, n := range all {
				seen = append(seen, n.At.Format("15:04:05.000")+" "+n.Type)
			}
			t.Fatalf("upsmon: no %s notification after %s within %v; recorded: %v (upsmon exited: %v)",
				typ, after.Format("15:04:05.000"), timeout, seen, u.p.Exited())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ShutdownCalled reports whether upsmon ran SHUTDOWNCMD (the recording
// script), and when.
func (u *Upsmon) ShutdownCalled() (time.Time, bool) {
	b, err := os.ReadFile(u.shutdownFile)
	if err != nil {
		return time.Time{}, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	at, ok := parseStamp(strings.TrimPrefix(line, "SHUTDOWNCMD at "))
	if !ok {
		return time.Time{}, true // ran, but the stamp is unreadable
	}
	return at, true
}

// ForbiddenCalls returns the recorded calls of the tripwire commands
// (shutdown, poweroff, upsdrvctl, …) found through PATH. It should always be
// empty.
func (u *Upsmon) ForbiddenCalls() []string {
	b, err := os.ReadFile(u.tripFile)
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

func (u *Upsmon) logOutput(t testing.TB) {
	for _, f := range []string{u.logFile, u.notifyFile, u.shutdownFile, u.tripFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if len(b) > 8<<10 {
			b = append([]byte("…"), b[len(b)-8<<10:]...)
		}
		t.Logf("upsmon: ---- %s ----\n%s", filepath.Base(f), b)
	}
}
