package local_test

// No test here runs a real poweroff: every provider is built with a
// recording script from t.TempDir() as its command, and the one test that
// builds a provider with the default command points PATH at a fake
// `systemctl` and never calls ShutdownHost.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sundown-ups/sundown/internal/peer"
	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/local"
	"github.com/sundown-ups/sundown/internal/provider/providertest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// recorder is a shell script that appends each of its arguments to a file,
// one a line, then a line "--" ending the run, and then runs body.
type recorder struct {
	path   string // the script
	record string // the file it appends to
}

func newRecorder(t *testing.T, body string) recorder {
	t.Helper()
	sh := peer.NeedBinary(t, "/bin/sh", "apt-get install -y dash")
	dir := t.TempDir()
	r := recorder{path: filepath.Join(dir, "fake-poweroff"), record: filepath.Join(dir, "record")}
	script := "#!" + sh + "\n" +
		"for a in \"$@\"; do printf '%s\\n' \"$a\" >> '" + r.record + "'; done\n" +
		"echo -- >> '" + r.record + "'\n" + body + "\n"
	if err := os.WriteFile(r.path, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return r
}

// runs returns the argument lists of every run so far.
func (r recorder) runs(t *testing.T) [][]string {
	t.Helper()
	b, err := os.ReadFile(r.record)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var runs [][]string
	cur := []string{}
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if l == "--" {
			runs = append(runs, cur)
			cur = []string{}
			continue
		}
		cur = append(cur, l)
	}
	return runs
}

func newProvider(t *testing.T, cfg local.Config) *local.Provider {
	t.Helper()
	if cfg.HostName == "" {
		cfg.HostName = "box1"
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	p, err := local.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func wantClass(t *testing.T, err error, want provider.Class) *provider.Error {
	t.Helper()
	var e *provider.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *provider.Error", err, err)
	}
	if e.Class != want {
		t.Fatalf("class %s, want %s (error: %v)", e.Class, want, err)
	}
	return e
}

func hostPower(t *testing.T, p *local.Provider) provider.PowerState {
	t.Helper()
	inv, err := p.Inventory(t.Context())
	if err != nil {
		t.Fatalf("Inventory: %v", err)
	}
	if len(inv.Hosts) != 1 || len(inv.Guests) != 0 {
		t.Fatalf("Inventory = %+v, want one host and no guests", inv)
	}
	return inv.Hosts[0].Power
}

func TestConformance(t *testing.T) {
	providertest.Run(t, providertest.Harness{
		Timeout: 5 * time.Second,
		New: func(t *testing.T) (provider.Provider, providertest.Fixture) {
			r := newRecorder(t, "exit 0")
			p, err := local.New(t.Context(), local.Config{Command: []string{r.path}, HostName: "host1", Timeout: 5 * time.Second, Logger: quiet})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			return p, providertest.Fixture{Host: "host1", NoGuests: true}
		},
	})
}

func TestDefaultCommand(t *testing.T) {
	want := []string{"systemctl", "poweroff"}
	got := local.DefaultCommand()
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("DefaultCommand() (-want +got):\n%s", d)
	}
	got[0] = "changed"
	if d := cmp.Diff(want, local.DefaultCommand()); d != "" {
		t.Fatalf("DefaultCommand() shares its slice (-want +got):\n%s", d)
	}

	// An empty Config.Command resolves `systemctl` through PATH. PATH holds
	// only a fake systemctl, and ShutdownHost is never called.
	dir := t.TempDir()
	fake := filepath.Join(dir, "systemctl")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nexit 99\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	p, err := local.New(t.Context(), local.Config{HostName: "box1", Logger: quiet})
	if err != nil {
		t.Fatalf("New with the default command: %v", err)
	}
	defer p.Close()
	if d := cmp.Diff([]string{fake, "poweroff"}, p.Command()); d != "" {
		t.Errorf("Command() with an empty Config.Command (-want +got):\n%s", d)
	}

	// Without systemctl in PATH, New names it.
	t.Setenv("PATH", t.TempDir())
	_, err = local.New(t.Context(), local.Config{HostName: "box1", Logger: quiet})
	e := wantClass(t, err, provider.Permanent)
	if !strings.Contains(e.Error(), `"systemctl"`) {
		t.Errorf("error %q does not name systemctl", e)
	}
}

func TestDefaultHostName(t *testing.T) {
	r := newRecorder(t, "exit 0")
	want, err := os.Hostname()
	if err != nil {
		t.Skipf("os.Hostname: %v", err)
	}
	p, err := local.New(t.Context(), local.Config{Command: []string{r.path}, Logger: quiet})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer p.Close()
	if p.ID() != want {
		t.Errorf("ID() = %q, want os.Hostname() = %q", p.ID(), want)
	}
	inv, err := p.Inventory(t.Context())
	if err != nil {
		t.Fatalf("Inventory: %v", err)
	}
	h := inv.Hosts[0]
	if h.ID != want || h.Name != want || h.Power != provider.PowerOn || h.Maintenance {
		t.Errorf("host = %+v, want ID and Name %q, on, not in maintenance", h, want)
	}
	if h.UUID != strings.ToLower(h.UUID) {
		t.Errorf("UUID %q not lower case", h.UUID)
	}
}

func TestShutdownHostRecordsArgs(t *testing.T) {
	r := newRecorder(t, "exit 0")
	args := []string{"--when=now", "two words", "$HOME", "*", "a;b"}
	p := newProvider(t, local.Config{Command: append([]string{r.path}, args...)})
	if d := cmp.Diff(append([]string{r.path}, args...), p.Command()); d != "" {
		t.Errorf("Command() (-want +got):\n%s", d)
	}
	if got := hostPower(t, p); got != provider.PowerOn {
		t.Fatalf("host power before ShutdownHost = %q, want on", got)
	}
	if err := p.ShutdownHost(t.Context(), "box1", false); err != nil {
		t.Fatalf("ShutdownHost: %v", err)
	}
	// Arguments arrive verbatim: no shell expanded, split or globbed them.
	if d := cmp.Diff([][]string{args}, r.runs(t)); d != "" {
		t.Errorf("recorded runs (-want +got):\n%s", d)
	}
	if got := hostPower(t, p); got != provider.PowerOff {
		t.Errorf("host power after ShutdownHost = %q, want off", got)
	}
	// Idempotent: the machine is going down; the command does not run again.
	if err := p.ShutdownHost(t.Context(), "box1", true); err != nil {
		t.Fatalf("second ShutdownHost: %v", err)
	}
	if n := len(r.runs(t)); n != 1 {
		t.Errorf("command ran %d times, want 1", n)
	}
}

func TestShutdownHostConcurrentRunsOnce(t *testing.T) {
	r := newRecorder(t, "exit 0")
	p := newProvider(t, local.Config{Command: []string{r.path}})
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = p.ShutdownHost(t.Context(), "box1", false) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("ShutdownHost #%d: %v", i, err)
		}
	}
	if n := len(r.runs(t)); n != 1 {
		t.Errorf("command ran %d times, want 1", n)
	}
}

func TestShutdownHostNonZeroExit(t *testing.T) {
	r := newRecorder(t, `echo "Failed to connect to bus" >&2; echo "Failed to power off system: Boom happened" >&2; echo out; exit 3`)
	p := newProvider(t, local.Config{Command: []string{r.path, "poweroff"}})
	err := p.ShutdownHost(t.Context(), "box1", false)
	e := wantClass(t, err, provider.Permanent)
	if e.Op != "ShutdownHost" || e.Target != "box1" || e.Privilege != "" {
		t.Errorf("error fields Op=%q Target=%q Privilege=%q", e.Op, e.Target, e.Privilege)
	}
	msg := err.Error()
	for _, want := range []string{"status 3", "Failed to power off system: Boom happened", r.path + " poweroff"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, "Failed to connect to bus") {
		t.Errorf("error %q holds more than stderr's last line", msg)
	}
	if got := hostPower(t, p); got != provider.PowerOn {
		t.Errorf("host power after a failed ShutdownHost = %q, want on", got)
	}
	// A failure is not remembered as success: the next call runs again.
	wantClass(t, p.ShutdownHost(t.Context(), "box1", false), provider.Permanent)
	if n := len(r.runs(t)); n != 2 {
		t.Errorf("command ran %d times, want 2", n)
	}
}

func TestShutdownHostPermission(t *testing.T) {
	for _, tt := range []struct {
		name, stderr, privilege string
	}{
		{"logind access denied", "Failed to power off system via logind: Access denied", local.PowerOffPrivilege},
		{"polkit interactive", "Failed to set wall message, ignoring: Interactive authentication required.\nFailed to power off system via logind: Interactive authentication required.", local.PowerOffPrivilege},
		{"permission denied", "poweroff: Permission denied", local.PowerOffPrivilege},
		{"sudo password", "sudo: a password is required", "sudoers rule NOPASSWD: "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRecorder(t, "printf '%s\\n' '"+strings.ReplaceAll(tt.stderr, "\n", "' '")+"' >&2; exit 1")
			p := newProvider(t, local.Config{Command: []string{r.path}})
			err := p.ShutdownHost(t.Context(), "box1", false)
			e := wantClass(t, err, provider.Permission)
			if !strings.HasPrefix(e.Privilege, tt.privilege) {
				t.Errorf("Privilege = %q, want prefix %q", e.Privilege, tt.privilege)
			}
			if !strings.Contains(err.Error(), e.Privilege) {
				t.Errorf("error %q does not name the privilege", err)
			}
			last := tt.stderr[strings.LastIndex(tt.stderr, "\n")+1:]
			if !strings.Contains(err.Error(), last) {
				t.Errorf("error %q does not carry stderr's last line %q", err, last)
			}
		})
	}
	// The polkit action is spelled out for operators.
	if !strings.Contains(local.PowerOffPrivilege, "org.freedesktop.login1.power-off") || !strings.Contains(local.PowerOffPrivilege, "root") {
		t.Errorf("PowerOffPrivilege = %q", local.PowerOffPrivilege)
	}
}

func TestShutdownHostKilledBySignal(t *testing.T) {
	for _, sig := range []string{"TERM", "KILL"} {
		t.Run(sig, func(t *testing.T) {
			// What the command sees when the system goes down under it.
			r := newRecorder(t, "kill -"+sig+" $$; sleep 30")
			p := newProvider(t, local.Config{Command: []string{r.path}, Timeout: 20 * time.Second})
			if err := p.ShutdownHost(t.Context(), "box1", false); err != nil {
				t.Fatalf("ShutdownHost with the command killed by SIG%s: %v", sig, err)
			}
			if got := hostPower(t, p); got != provider.PowerOff {
				t.Errorf("host power = %q, want off", got)
			}
		})
	}
	t.Run("USR1", func(t *testing.T) {
		r := newRecorder(t, "echo about to die >&2; kill -USR1 $$; sleep 30")
		p := newProvider(t, local.Config{Command: []string{r.path}, Timeout: 20 * time.Second})
		err := p.ShutdownHost(t.Context(), "box1", false)
		wantClass(t, err, provider.Permanent)
		if !strings.Contains(err.Error(), "signal") || !strings.Contains(err.Error(), "about to die") {
			t.Errorf("error %q does not say which signal and what stderr said", err)
		}
		if got := hostPower(t, p); got != provider.PowerOn {
			t.Errorf("host power = %q, want on", got)
		}
	})
}

// hangingRecorder runs a child that would outlive the script and writes its
// PID to the returned file.
func hangingRecorder(t *testing.T) (recorder, string) {
	t.Helper()
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	r := newRecorder(t, "sleep 30 & echo $! > '"+pidFile+"'.tmp; mv '"+pidFile+"'.tmp '"+pidFile+"'; wait")
	return r, pidFile
}

// eventually polls cond (a real process's state) until it holds, failing
// the test after 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 5s waiting for: %s", what)
		}
		<-tick.C
	}
}

// waitGone waits (bounded) until the process in pidFile is gone or a zombie.
func waitGone(t *testing.T, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("child PID: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the command's child "+strconv.Itoa(pid)+" to die", func() bool {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return true // gone
		}
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
	})
}

func TestShutdownHostHangBoundedByTimeout(t *testing.T) {
	r, pidFile := hangingRecorder(t)
	p := newProvider(t, local.Config{Command: []string{r.path}, Timeout: 300 * time.Millisecond})
	start := time.Now()
	err := p.ShutdownHost(t.Context(), "box1", false)
	took := time.Since(start)
	wantClass(t, err, provider.Transient)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "may still take effect") {
		t.Errorf("error %q does not warn that the shutdown may still happen", err)
	}
	if took > 3*time.Second {
		t.Errorf("ShutdownHost took %v with a 300ms timeout", took)
	}
	waitGone(t, pidFile)
	if got := hostPower(t, p); got != provider.PowerOn {
		t.Errorf("host power = %q, want on", got)
	}
}

func TestShutdownHostHangBoundedByContext(t *testing.T) {
	r, pidFile := hangingRecorder(t)
	p := newProvider(t, local.Config{Command: []string{r.path}, Timeout: time.Minute})
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.ShutdownHost(ctx, "box1", false)
	took := time.Since(start)
	wantClass(t, err, provider.Transient)
	if !errors.Is(err, ctx.Err()) {
		t.Errorf("error %v does not wrap the caller's %v", err, ctx.Err())
	}
	if took > 3*time.Second {
		t.Errorf("ShutdownHost took %v with a 300ms context", took)
	}
	waitGone(t, pidFile)

	// A context that has already ended runs nothing.
	before := len(r.runs(t))
	cctx, ccancel := context.WithCancel(t.Context())
	ccancel()
	err = p.ShutdownHost(cctx, "box1", false)
	wantClass(t, err, provider.Transient)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v does not wrap context.Canceled", err)
	}
	if n := len(r.runs(t)); n != before {
		t.Errorf("command ran with a cancelled context")
	}
}

func TestCloseStopsRunningCommand(t *testing.T) {
	r, pidFile := hangingRecorder(t)
	p := newProvider(t, local.Config{Command: []string{r.path}, Timeout: time.Minute})
	done := make(chan error, 1)
	go func() { done <- p.ShutdownHost(t.Context(), "box1", false) }()
	eventually(t, "the command to start", func() bool {
		_, err := os.Stat(pidFile)
		return err == nil
	})
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		wantClass(t, err, provider.Permanent)
		if !strings.Contains(err.Error(), "closed") {
			t.Errorf("error %q does not say the provider was closed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ShutdownHost still running 5s after Close")
	}
	waitGone(t, pidFile)
	wantClass(t, p.ShutdownHost(t.Context(), "box1", false), provider.Permanent)
	if n := len(r.runs(t)); n != 1 {
		t.Errorf("command ran %d times, want 1", n)
	}
}

func TestNewRejects(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := newRecorder(t, "exit 0")
	for _, tt := range []struct {
		name string
		cfg  local.Config
		want string
	}{
		{"missing name in PATH", local.Config{Command: []string{"sundown-no-such-poweroff", "now"}}, `"sundown-no-such-poweroff"`},
		{"missing absolute path", local.Config{Command: []string{filepath.Join(dir, "nope")}}, filepath.Join(dir, "nope")},
		{"not executable", local.Config{Command: []string{notExec}}, notExec},
		{"empty program", local.Config{Command: []string{"", "poweroff"}}, "program is empty"},
		{"negative timeout", local.Config{Command: []string{r.path}, Timeout: -time.Second}, "timeout is negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.HostName, tt.cfg.Logger = "box1", quiet
			p, err := local.New(t.Context(), tt.cfg)
			if p != nil {
				t.Errorf("New returned a provider with the error")
			}
			e := wantClass(t, err, provider.Permanent)
			if !strings.Contains(e.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", e, tt.want)
			}
		})
	}
	if runs := r.runs(t); runs != nil {
		t.Errorf("New ran the command: %v", runs)
	}
}

func TestOtherCalls(t *testing.T) {
	r := newRecorder(t, "exit 0")
	p := newProvider(t, local.Config{Command: []string{r.path}})
	ctx := t.Context()
	if c := p.Capabilities(); c != (provider.Caps{HostShutdown: true}) {
		t.Errorf("Capabilities() = %+v", c)
	}
	if c := provider.CapabilitiesOf(p); c.Suspend || c.Maintenance || !c.HostShutdown {
		t.Errorf("CapabilitiesOf = %+v", c)
	}
	e := wantClass(t, p.ShutdownHost(ctx, "other", true), provider.NotFound)
	if e.Target != "other" {
		t.Errorf("Target = %q", e.Target)
	}
	wantClass(t, p.EnterMaintenance(ctx, "box1", provider.MaintenanceOptions{}), provider.Unsupported)
	wantClass(t, p.ExitMaintenance(ctx, "box1"), provider.Unsupported)
	wantClass(t, p.EnterMaintenance(ctx, "other", provider.MaintenanceOptions{}), provider.NotFound)
	_, err := p.Guest(ctx, "box1")
	wantClass(t, err, provider.NotFound)
	wantClass(t, p.SuspendGuest(ctx, "vm"), provider.NotFound)
	if runs := r.runs(t); runs != nil {
		t.Errorf("the command ran: %v", runs)
	}
	p.Close()
	wantClass(t, p.ShutdownHost(ctx, "box1", false), provider.Permanent)
	wantClass(t, p.EnterMaintenance(ctx, "box1", provider.MaintenanceOptions{}), provider.Permanent)
	_, err = p.Inventory(ctx)
	wantClass(t, err, provider.Permanent)
	if runs := r.runs(t); runs != nil {
		t.Errorf("the command ran after Close: %v", runs)
	}
}
