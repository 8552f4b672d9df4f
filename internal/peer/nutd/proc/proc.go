// Package proc runs the NUT daemons that a test harness starts (upsd,
// dummy-ups, upsmon) as child processes the harness owns: each one in its
// own process group, its output appended to a log file, reaped by exactly
// one goroutine, and stopped by PID (SIGTERM, then SIGKILL after a grace
// period).
//
// A child also gets SIGKILL when the test binary dies (Linux
// PR_SET_PDEATHSIG), so a test that panics or times out leaves no daemon
// behind holding a port or /run/nut/upsmon.pid. Because that signal is tied
// to the OS thread that forked the child, the goroutine that starts a child
// stays locked to its thread until the child has exited.
package proc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

// Proc is one started child process.
type Proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // result of Wait; read only after done is closed
}

// Start starts path with args and env (the whole environment of the child),
// appending its stdout and stderr to logPath. name is used in errors.
func Start(name, path string, args, env []string, logPath string) (*Proc, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &Proc{name: name, cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// The thread that forks is the child's "parent" for Pdeathsig: keep
		// it alive (locked to this goroutine) for as long as the child runs.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(p.done)
		defer out.Close()
		if err := cmd.Start(); err != nil {
			p.err = err
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
	}()
	if err := <-started; err != nil {
		<-p.done
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

// Name returns the name given to Start.
func (p *Proc) Name() string { return p.name }

// PID returns the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited (and been reaped).
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitErr returns the result of waiting for the process (nil for exit
// status 0), or nil while it runs.
func (p *Proc) ExitErr() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Signal sends sig to the process itself (not its group). Signalling a
// process that has exited is not an error.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	if err := syscall.Kill(p.PID(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s pid %d: %w", p.name, p.PID(), err)
	}
	return nil
}

// Stop sends SIGTERM (and SIGCONT, in case the process is stopped) to the
// process group, waits up to grace, then sends SIGKILL to the group and
// waits for the reap. It is idempotent.
func (p *Proc) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	pgid := p.PID() // Setpgid: the group id is the child's pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	_ = syscall.Kill(-pgid, syscall.SIGCONT)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	reap := time.NewTimer(5 * time.Second)
	defer reap.Stop()
	select {
	case <-p.done:
		return nil
	case <-reap.C:
		return fmt.Errorf("stop %s pid %d: not reaped 5s after SIGKILL", p.name, pgid)
	}
}
