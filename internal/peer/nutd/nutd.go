// Package nutd starts a real NUT 2.8.0 server for sundown's integration tests
// and benchmarks: one dummy-ups driver per simulated UPS plus upsd, all
// private to one test (configuration, state and logs under t.TempDir(), a
// free loopback port), optionally with STARTTLS through an NSS database made
// for the test. The test changes what the UPSes report with Set and injects
// faults by stopping, freezing or killing the daemons.
//
// Facts of NUT 2.8.0 this harness is built on (see RECIPES.md, "NUT 2.8.0"):
//
//   - The real binaries are run (/lib/nut/upsd, /lib/nut/dummy-ups) with
//     -u root (else they switch to user nut, which cannot read a temp folder)
//     and -F (foreground, no PID file), with NUT_CONFPATH and NUT_STATEPATH
//     (mode 700) pointing into the test's folder.
//   - A cold start serves ups.status "WAIT" (before that: ERR
//     DRIVER-NOT-CONNECTED) for about 3 s; Start waits until every UPS serves
//     something else.
//   - dummy-ups re-reads its .dev file when the file's mtime changes, compared
//     at whole-second resolution, checked once per pollinterval (1 s here).
//     Set therefore gives every write a strictly increasing whole-second mtime;
//     writes between two driver polls coalesce (the last one wins).
//   - FSD is a latch in upsd: only restarting upsd (KillUPSD + StartUPSD)
//     clears it.
//
// Processes are owned through package proc: stopped by PID in t.Cleanup,
// and killed by the kernel if the test binary dies.
package nutd

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/peer"
	"github.com/sundown-ups/sundown/internal/peer/nutd/proc"
)

// InstallHint is how to get the binaries this package runs.
const InstallHint = "apt-get install -y nut-server nut-client libnss3-tools " +
	"(next to apcupsd, which conflicts with nut-client: apt-get download nut-server nut-client " +
	"and dpkg-deb -x both into /opt/sundown-nut, or set " + BinDirEnv + ")"

// BinDirEnv names an environment variable holding the folder with the NUT
// 2.8.0 daemons (upsd, dummy-ups, upsmon). When it is unset, Binary looks in
// /lib/nut (the Debian package) and then /opt/sundown-nut/lib/nut (the same
// packages unpacked with dpkg-deb -x, for machines where apcupsd is
// installed: Debian's apcupsd and nut-client conflict).
const BinDirEnv = "SUNDOWN_NUT_DIR"

var binDirs = []string{"/lib/nut", "/opt/sundown-nut/lib/nut"}

// Binary returns the path of the NUT daemon name ("upsd", "dummy-ups",
// "upsmon"), or skips/fails the test through peer.NeedBinary.
func Binary(t testing.TB, name string) string {
	t.Helper()
	dirs := binDirs
	if d := os.Getenv(BinDirEnv); d != "" {
		dirs = []string{d}
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return peer.NeedBinary(t, p, InstallHint)
		}
	}
	return peer.NeedBinary(t, filepath.Join(dirs[0], name), InstallHint)
}

// UPS is one simulated UPS (one dummy-ups driver).
type UPS struct {
	Name string // upsd's name for it: letters, digits, '-', '_', '.'
	Desc string // ups.conf desc, optional
	// Vars is the initial content of the driver's .dev file, e.g.
	// "ups.status": "OL", "battery.charge": "100". ups.status defaults to
	// "OL" when absent.
	Vars map[string]string
}

// User is one upsd.users entry.
type User struct {
	Name, Password string
	Upsmon         string   // "primary", "secondary" or "" (no upsmon line)
	Actions        []string // e.g. SET, FSD
	InstCmds       []string // e.g. ALL
}

// Config describes a server.
type Config struct {
	UPS   []UPS
	Users []User
	// TLS makes upsd offer STARTTLS with a certificate signed by a CA made
	// for the test (Server.CAFile).
	TLS bool
	// CertHost is the only subject alternative name of the server
	// certificate (an IP address or a DNS name). Empty means 127.0.0.1 and
	// localhost; set e.g. "other.example" for a certificate that fails
	// hostname verification.
	CertHost string
	// MaxAge is upsd's MAXAGE in seconds (how long a silent driver's data is
	// served before ERR DATA-STALE); 0 keeps NUT's default (15).
	MaxAge int
}

// Server is a running upsd with its drivers. Its methods may be called from
// several goroutines.
type Server struct {
	dir, etc, state, logs string
	upsdBin, driverBin    string
	env                   []string
	port                  int
	caFile                string
	upsNames              []string

	mu      sync.Mutex
	upsd    *proc.Proc
	drivers map[string]*proc.Proc
	vars    map[string]map[string]string
	mtime   time.Time // mtime of the latest .dev write
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// Start starts dummy-ups for every UPS and upsd, waits (up to 10 s) until
// every UPS serves a status other than WAIT, and registers a cleanup that
// stops them all. It fails the test on any error, with the daemons' logs.
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()
	upsdBin := Binary(t, "upsd")
	driverBin := Binary(t, "dummy-ups")
	var tb tlsBins
	if cfg.TLS {
		tb.openssl = peer.NeedBinary(t, "openssl", "apt-get install -y openssl")
		tb.certutil = peer.NeedBinary(t, "certutil", "apt-get install -y libnss3-tools")
		tb.pk12util = peer.NeedBinary(t, "pk12util", "apt-get install -y libnss3-tools")
	}
	if err := validate(cfg); err != nil {
		t.Fatalf("nutd: %v", err)
	}

	dir := t.TempDir()
	// The drivers' unix sockets live in the state folder, and a socket path
	// must fit in 108 bytes: t.TempDir() can be long (it holds the test
	// name), so the state folder is a short one of its own.
	state, err := os.MkdirTemp("", "nutd")
	if err != nil {
		t.Fatalf("nutd: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(state) }) // runs after the daemons stopped
	s := &Server{
		dir: dir, etc: filepath.Join(dir, "etc"), state: state, logs: filepath.Join(dir, "logs"),
		upsdBin: upsdBin, driverBin: driverBin,
		drivers: map[string]*proc.Proc{},
		vars:    map[string]map[string]string{},
	}
	for _, d := range []string{s.etc, s.state, s.logs} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatalf("nutd: %v", err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			t.Fatalf("nutd: %v", err)
		}
	}
	for _, u := range cfg.UPS {
		if p := s.socketPath(u.Name); len(p) > 100 {
			t.Fatalf("nutd: driver socket path %s is too long for a unix socket (TMPDIR or the UPS name)", p)
		}
	}
	// Registered before the daemons' cleanup, so it runs after it.
	t.Cleanup(func() {
		if t.Failed() {
			s.logDaemonOutput(t)
		}
	})
	s.env = append(withoutNUTVars(os.Environ()),
		"NUT_CONFPATH="+s.etc, "NUT_STATEPATH="+s.state, "NUT_ALTPIDPATH="+s.state)

	var upsdExtra []string
	if cfg.TLS {
		hosts := []string{"127.0.0.1", "localhost"}
		if cfg.CertHost != "" {
			hosts = []string{cfg.CertHost}
		}
		files, err := makeTLS(filepath.Join(dir, "tls"), hosts, tb)
		if err != nil {
			t.Fatalf("nutd: %v", err)
		}
		s.caFile = files.caFile
		upsdExtra = append(upsdExtra,
			"CERTPATH "+quote(files.nssDir),
			"CERTIDENT "+quote(certNickname)+" "+quote(files.password),
			"DISABLE_WEAK_SSL true")
	}
	if cfg.MaxAge > 0 {
		upsdExtra = append(upsdExtra, "MAXAGE "+strconv.Itoa(cfg.MaxAge))
	}

	var upsConf strings.Builder
	for _, u := range cfg.UPS {
		s.upsNames = append(s.upsNames, u.Name)
		vars := map[string]string{"ups.status": "OL"}
		maps.Copy(vars, u.Vars)
		s.vars[u.Name] = vars
		if err := s.writeDev(u.Name); err != nil {
			t.Fatalf("nutd: %v", err)
		}
		fmt.Fprintf(&upsConf, "[%s]\n\tdriver = dummy-ups\n\tport = %s\n\tpollinterval = 1\n", u.Name, quote(s.devPath(u.Name)))
		if u.Desc != "" {
			fmt.Fprintf(&upsConf, "\tdesc = %s\n", quote(u.Desc))
		}
	}
	var users strings.Builder
	for _, u := range cfg.Users {
		fmt.Fprintf(&users, "[%s]\n\tpassword = %s\n", u.Name, quote(u.Password))
		if u.Upsmon != "" {
			fmt.Fprintf(&users, "\tupsmon %s\n", u.Upsmon)
		}
		if len(u.Actions) > 0 {
			fmt.Fprintf(&users, "\tactions = %s\n", strings.Join(u.Actions, " "))
		}
		if len(u.InstCmds) > 0 {
			fmt.Fprintf(&users, "\tinstcmds = %s\n", strings.Join(u.InstCmds, " "))
		}
	}
	for name, content := range map[string]string{"ups.conf": upsConf.String(), "upsd.users": users.String()} {
		if err := os.WriteFile(filepath.Join(s.etc, name), []byte(content), 0o600); err != nil {
			t.Fatalf("nutd: %v", err)
		}
	}

	t.Cleanup(func() { s.stopAll(t) })

	for _, name := range s.upsNames {
		if err := s.startDriver(name); err != nil {
			t.Fatalf("nutd: %v", err)
		}
	}
	for _, name := range s.upsNames {
		if err := s.settleDriver(name); err != nil {
			t.Fatalf("nutd: %v (daemon logs follow)", err)
		}
	}
	// The port is picked free and then handed to upsd, so another process
	// may take it in between: retry with a new port if upsd cannot listen.
	for attempt := 0; attempt < 3; attempt++ {
		s.port, err = freePort()
		if err != nil {
			t.Fatalf("nutd: %v", err)
		}
		conf := append([]string{fmt.Sprintf("LISTEN 127.0.0.1 %d", s.port)}, upsdExtra...)
		if err = os.WriteFile(filepath.Join(s.etc, "upsd.conf"), []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
			t.Fatalf("nutd: %v", err)
		}
		if err = s.startUPSD(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("nutd: %v (daemon logs follow)", err)
	}
	s.WaitReady(t, 10*time.Second)
	s.serveInitialVars(t)
	return s
}

// serveInitialVars makes sure every initial variable is served as given
// (see settleDriver for why it might not be), rewriting the .dev file once
// more if not.
func (s *Server) serveInitialVars(t testing.TB) {
	t.Helper()
	w, err := dialWire(s.Addr(), time.Second)
	if err != nil {
		t.Fatalf("nutd: %v", err)
	}
	defer w.close()
	for _, ups := range s.upsNames {
		s.mu.Lock()
		want := maps.Clone(s.vars[ups])
		s.mu.Unlock()
		var differ []string
		for k, v := range want {
			if got, err := w.getVar(ups, k, time.Second); err != nil || got != v {
				differ = append(differ, k)
			}
		}
		if len(differ) == 0 {
			continue
		}
		s.mu.Lock()
		err := s.writeDev(ups)
		s.mu.Unlock()
		if err != nil {
			t.Fatalf("nutd: %v", err)
		}
		for _, k := range differ {
			s.WaitServed(t, ups, k, want[k], 5*time.Second)
		}
	}
}

func validate(cfg Config) error {
	var errs []error
	if len(cfg.UPS) == 0 {
		errs = append(errs, errors.New("config: no UPS"))
	}
	seen := map[string]bool{}
	for i, u := range cfg.UPS {
		if !nameRE.MatchString(u.Name) {
			errs = append(errs, fmt.Errorf("config: UPS[%d]: invalid name %q", i, u.Name))
		}
		if seen[u.Name] {
			errs = append(errs, fmt.Errorf("config: UPS[%d]: duplicate name %q", i, u.Name))
		}
		seen[u.Name] = true
		if bad(u.Desc) {
			errs = append(errs, fmt.Errorf("config: UPS[%d]: desc has a line break", i))
		}
		for k, v := range u.Vars {
			if !nameRE.MatchString(k) || bad(v) {
				errs = append(errs, fmt.Errorf("config: UPS[%d]: invalid variable %q", i, k))
			}
		}
	}
	for i, u := range cfg.Users {
		if !nameRE.MatchString(u.Name) {
			errs = append(errs, fmt.Errorf("config: Users[%d]: invalid name %q", i, u.Name))
		}
		if bad(u.Password) {
			errs = append(errs, fmt.Errorf("config: Users[%d]: password has a line break", i))
		}
		if u.Upsmon != "" && u.Upsmon != "primary" && u.Upsmon != "secondary" {
			errs = append(errs, fmt.Errorf("config: Users[%d]: upsmon %q is not primary or secondary", i, u.Upsmon))
		}
		for _, a := range append(slices.Clone(u.Actions), u.InstCmds...) {
			if !nameRE.MatchString(a) {
				errs = append(errs, fmt.Errorf("config: Users[%d]: invalid action or command %q", i, a))
			}
		}
	}
	if cfg.CertHost != "" && (!cfg.TLS || strings.ContainsAny(cfg.CertHost, " ,\n")) {
		errs = append(errs, fmt.Errorf("config: CertHost %q needs TLS and a plain host", cfg.CertHost))
	}
	if cfg.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("config: MaxAge %d is negative", cfg.MaxAge))
	}
	return errors.Join(errs...)
}

func bad(s string) bool { return strings.ContainsAny(s, "\r\n\x00") }

// quote writes s as a NUT configuration string ("…" with \" and \\).
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func withoutNUTVars(env []string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, "NUT_") {
			out = append(out, e)
		}
	}
	return out
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Addr returns upsd's address, "127.0.0.1:<port>".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// CAFile returns the PEM file of the CA that signed upsd's certificate when
// Config.TLS is set, else "".
func (s *Server) CAFile() string { return s.caFile }

// Dir returns the server's folder (etc/, logs/, tls/, *.dev). The state
// folder (driver sockets) is a separate short path under $TMPDIR.
func (s *Server) Dir() string { return s.dir }

func (s *Server) devPath(ups string) string { return filepath.Join(s.dir, ups+".dev") }

// writeDev writes the .dev file of ups from s.vars with the next mtime. The
// caller holds s.mu (or is Start, before anything runs).
func (s *Server) writeDev(ups string) error {
	vars := s.vars[ups]
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s\n", k, quote(vars[k]))
	}
	// dummy-ups notices a change only if the whole-second mtime differs:
	// every write gets a later whole second than the one before, even if
	// that runs ahead of the clock.
	mtime := time.Now().Truncate(time.Second)
	if !mtime.After(s.mtime) {
		mtime = s.mtime.Add(time.Second)
	}
	tmp := s.devPath(ups) + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Chtimes(tmp, mtime, mtime); err != nil {
		return fmt.Errorf("chtimes %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, s.devPath(ups)); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	s.mtime = mtime
	return nil
}

// Set merges vars into what ups reports (its .dev file). The driver picks the
// change up at its next poll (0–1 s); several Sets between two polls
// coalesce, the last value of each variable wins. Removing a variable is not
// supported (dummy-ups keeps variables a new file lacks).
func (s *Server) Set(t testing.TB, ups string, vars map[string]string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.vars[ups]
	if !ok {
		t.Fatalf("nutd: Set: no UPS %q", ups)
	}
	for k, v := range vars {
		if !nameRE.MatchString(k) || bad(v) {
			t.Fatalf("nutd: Set %s: invalid variable %q", ups, k)
		}
		cur[k] = v
	}
	if err := s.writeDev(ups); err != nil {
		t.Fatalf("nutd: Set %s: %v", ups, err)
	}
}

// WaitServed polls GET VAR ups name every 10 ms until upsd serves want, and
// returns the time it was first seen. It fails the test after timeout.
func (s *Server) WaitServed(t testing.TB, ups, name, want string, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var w *wire
	defer func() {
		if w != nil {
			w.close()
		}
	}()
	last := "nothing"
	for {
		if w == nil {
			var err error
			if w, err = dialWire(s.Addr(), time.Second); err != nil {
				last = err.Error()
				w = nil
			}
		}
		if w != nil {
			v, err := w.getVar(ups, name, time.Second)
			seen := time.Now()
			switch {
			case err == nil && v == want:
				return seen
			case err == nil:
				last = strconv.Quote(v)
			default:
				last = err.Error()
				var ae *answerError
				if !errors.As(err, &ae) {
					w.close()
					w = nil
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("nutd: %s %s not %q within %v; last: %s", ups, name, want, timeout, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitReady waits until every UPS serves an ups.status other than WAIT (for
// example after StartUPSD or StartDriver). It fails the test after timeout or
// when a daemon exits.
func (s *Server) WaitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var w *wire
	defer func() {
		if w != nil {
			w.close()
		}
	}()
	last := map[string]string{}
	for {
		if p := s.exitedDaemon(); p != nil {
			t.Fatalf("nutd: %s (pid %d) exited while waiting for data: %v (daemon logs follow)", p.Name(), p.PID(), p.ExitErr())
		}
		if w == nil {
			var err error
			if w, err = dialWire(s.Addr(), time.Second); err != nil {
				w = nil
				last["upsd"] = err.Error()
			}
		}
		ready := w != nil
		for _, ups := range s.upsNames {
			if w == nil {
				break
			}
			v, err := w.getVar(ups, "ups.status", time.Second)
			switch {
			case err != nil:
				last[ups] = err.Error()
				ready = false
				var ae *answerError
				if !errors.As(err, &ae) {
					w.close()
					w = nil
				}
			case v == "WAIT":
				last[ups] = "WAIT"
				ready = false
			default:
				last[ups] = v
			}
		}
		if ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nutd: UPS data not served within %v: %v (daemon logs follow)", timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Server) exitedDaemon() *proc.Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.upsd != nil && s.upsd.Exited() {
		return s.upsd
	}
	for _, name := range s.upsNames {
		if p := s.drivers[name]; p != nil && p.Exited() {
			return p
		}
	}
	return nil
}

const grace = 2 * time.Second

func (s *Server) socketPath(ups string) string { return filepath.Join(s.state, "dummy-ups-"+ups) }

// startDriver starts the driver of ups (after removing a stale socket a
// killed driver may have left behind).
func (s *Server) startDriver(ups string) error {
	if err := os.Remove(s.socketPath(ups)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("start driver %s: %w", ups, err)
	}
	p, err := proc.Start("dummy-ups "+ups, s.driverBin, []string{"-a", ups, "-u", "root", "-F"},
		s.env, filepath.Join(s.logs, "dummy-ups-"+ups+".log"))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.drivers[ups] = p
	s.mu.Unlock()
	return nil
}

// settleDriver waits until the driver of ups has created its socket (about
// 1 s after it starts: it sleeps one pollinterval first) and then rewrites its
// .dev file with a new mtime.
//
// Waiting for the socket lets upsd connect on its first try: upsd retries a
// missing driver only every 2 s, so starting both at once costs a second.
// The rewrite makes the driver read the file a second time, at its next
// poll: dummy-ups 2.8.0 replaces device.mfr, device.model, ups.mfr and
// ups.model with "Dummy Manufacturer"/"Dummy UPS" after its first read.
func (s *Server) settleDriver(ups string) error {
	s.mu.Lock()
	p := s.drivers[ups]
	s.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(s.socketPath(ups)); err == nil {
			break
		}
		if p.Exited() {
			return fmt.Errorf("driver of %s exited at start: %v", ups, p.ExitErr())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("driver of %s: no socket %s after 5s", ups, s.socketPath(ups))
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writeDev(ups)
}

// startUPSD starts upsd and waits until it listens (or exits).
func (s *Server) startUPSD() error {
	p, err := proc.Start("upsd", s.upsdBin, []string{"-u", "root", "-F"}, s.env, filepath.Join(s.logs, "upsd.log"))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.upsd = p
	s.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if p.Exited() {
			return fmt.Errorf("upsd exited at start: %v", p.ExitErr())
		}
		c, err := net.DialTimeout("tcp", s.Addr(), 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			_ = p.Stop(grace)
			return fmt.Errorf("upsd not listening on %s after 5s: %w", s.Addr(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// KillUPSD stops upsd (SIGTERM): connections are refused until StartUPSD.
func (s *Server) KillUPSD(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	p := s.upsd
	s.mu.Unlock()
	if p == nil || p.Exited() {
		t.Fatalf("nutd: KillUPSD: upsd is not running")
	}
	if err := p.Stop(grace); err != nil {
		t.Fatalf("nutd: KillUPSD: %v", err)
	}
}

// StartUPSD starts upsd again on the same port and returns once it listens;
// it serves data about 1.3 s later (WaitReady). The restart clears the FSD
// latch.
func (s *Server) StartUPSD(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	p := s.upsd
	s.mu.Unlock()
	if p != nil && !p.Exited() {
		t.Fatalf("nutd: StartUPSD: upsd is running (pid %d)", p.PID())
	}
	if err := s.startUPSD(); err != nil {
		t.Fatalf("nutd: StartUPSD: %v (daemon logs follow)", err)
	}
}

func (s *Server) driver(t testing.TB, op, ups string) *proc.Proc {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.drivers[ups]
	if !ok {
		t.Fatalf("nutd: %s: no UPS %q", op, ups)
	}
	return p
}

// StopDriver freezes the driver of ups (SIGSTOP): upsd keeps serving its last
// data until MAXAGE passes, then answers ERR DATA-STALE.
func (s *Server) StopDriver(t testing.TB, ups string) {
	t.Helper()
	if err := s.driver(t, "StopDriver", ups).Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("nutd: StopDriver: %v", err)
	}
}

// ContDriver resumes a driver frozen by StopDriver (SIGCONT).
func (s *Server) ContDriver(t testing.TB, ups string) {
	t.Helper()
	if err := s.driver(t, "ContDriver", ups).Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("nutd: ContDriver: %v", err)
	}
}

// KillDriver stops the driver of ups (SIGTERM): upsd answers ERR
// DRIVER-NOT-CONNECTED for it at once.
func (s *Server) KillDriver(t testing.TB, ups string) {
	t.Helper()
	p := s.driver(t, "KillDriver", ups)
	if p.Exited() {
		t.Fatalf("nutd: KillDriver: driver of %s is not running", ups)
	}
	if err := p.Stop(grace); err != nil {
		t.Fatalf("nutd: KillDriver: %v", err)
	}
}

// StartDriver starts the driver of ups again after KillDriver and returns
// once the driver listens (about 1 s); upsd reconnects to it by itself within
// 2 s, and serves its data about 1 s later (WaitReady or WaitServed).
func (s *Server) StartDriver(t testing.TB, ups string) {
	t.Helper()
	if p := s.driver(t, "StartDriver", ups); !p.Exited() {
		t.Fatalf("nutd: StartDriver: driver of %s is running (pid %d)", ups, p.PID())
	}
	if err := s.startDriver(ups); err != nil {
		t.Fatalf("nutd: StartDriver: %v", err)
	}
	if err := s.settleDriver(ups); err != nil {
		t.Fatalf("nutd: StartDriver: %v (daemon logs follow)", err)
	}
}

func (s *Server) stopAll(t testing.TB) {
	s.mu.Lock()
	procs := []*proc.Proc{}
	if s.upsd != nil {
		procs = append(procs, s.upsd)
	}
	for _, name := range s.upsNames {
		if p := s.drivers[name]; p != nil {
			procs = append(procs, p)
		}
	}
	s.mu.Unlock()
	for _, p := range procs {
		if err := p.Stop(grace); err != nil {
			t.Errorf("nutd cleanup: %v", err)
		}
	}
}

// logDaemonOutput writes the daemons' logs (the last 8 KiB of each) to the
// test log.
func (s *Server) logDaemonOutput(t testing.TB) {
	entries, err := os.ReadDir(s.logs)
	if err != nil {
		t.Logf("nutd: daemon logs: %v", err)
		return
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(s.logs, e.Name()))
		if err != nil {
			t.Logf("nutd: %s: %v", e.Name(), err)
			continue
		}
		if len(b) > 8<<10 {
			b = append([]byte("…"), b[len(b)-8<<10:]...)
		}
		t.Logf("nutd: ---- %s ----\n%s", e.Name(), b)
	}
}
