// Package notifycmd is the notify channel that runs a command the way NUT's
// upsmon runs its NOTIFYCMD, so existing notification scripts keep working.
//
// upsmon runs `NOTIFYCMD "<message>"` through the shell with NOTIFYTYPE and
// UPSNAME in the environment. This channel runs the configured argv directly
// (no shell, so nothing in a message can inject a command) with the message
// text appended as the last argument — $1 for a plain script, exactly as
// under upsmon — and the same two variables, plus SUNDOWN_* extras and the
// message as JSON (notify.JSONBody) on standard input.
//
// The command runs in its own process group; when the attempt's context
// ends the whole group is killed. A non-zero exit is a (retryable) failure
// that names the exit code and quotes the start of stderr; a command that
// cannot be started is a permanent failure.
package notifycmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/notify"
)

// stderrLimit bounds the stderr kept for an error message.
const stderrLimit = 4096

// waitDelay bounds how long Wait waits for the command's output pipes after
// the process exited or was killed (a grandchild that left the group may
// hold them).
const waitDelay = 2 * time.Second

// Config configures one command channel.
type Config struct {
	// Name keys the channel's stats; default "exec <command base name>".
	Name string
	// Command is the argv; Command[0] is an absolute path or a name looked
	// up in PATH when New runs. The message text is appended as the last
	// argument.
	Command []string
	// Env adds variables to the environment sundown runs with; values are
	// secrets (tokens for the script).
	Env map[string]config.Secret
	// Dir is the working directory (default "/").
	Dir string
}

// Cmd is a notify.Channel.
type Cmd struct {
	name string
	path string
	args []string
	env  map[string]config.Secret
	dir  string
}

// New checks c and builds the channel.
func New(c Config) (*Cmd, error) {
	if len(c.Command) == 0 || c.Command[0] == "" {
		return nil, errors.New("notify exec: command is empty")
	}
	path, err := exec.LookPath(c.Command[0])
	if err != nil {
		return nil, fmt.Errorf("notify exec command %s: %w", c.Command[0], err)
	}
	for k := range c.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, fmt.Errorf("notify exec env %q: invalid name", k)
		}
	}
	dir := c.Dir
	if dir == "" {
		dir = "/"
	}
	name := c.Name
	if name == "" {
		name = "exec " + filepath.Base(path)
	}
	return &Cmd{name: name, path: path, args: c.Command[1:], env: c.Env, dir: dir}, nil
}

// Name implements notify.Channel.
func (c *Cmd) Name() string { return c.name }

// ExitError is a run that ended with a non-zero exit code.
type ExitError struct {
	Code   int
	Stderr string // excerpt
}

func (e *ExitError) Error() string {
	s := fmt.Sprintf("exit code %d", e.Code)
	if e.Stderr != "" {
		s += ": " + e.Stderr
	}
	return s
}

// Environ returns the variables the command gets on top of sundown's own
// environment: upsmon's NOTIFYTYPE and UPSNAME, then SUNDOWN_SEVERITY,
// SUNDOWN_SUBJECT, SUNDOWN_BODY and SUNDOWN_AT (RFC 3339).
func Environ(m notify.Message) []string {
	return []string{
		"NOTIFYTYPE=" + m.Type,
		"UPSNAME=" + m.UPS,
		"SUNDOWN_SEVERITY=" + m.Severity,
		"SUNDOWN_SUBJECT=" + m.Subject,
		"SUNDOWN_BODY=" + m.Body,
		"SUNDOWN_AT=" + m.At.UTC().Format(time.RFC3339),
	}
}

// Send implements notify.Channel: one run of the command.
func (c *Cmd) Send(ctx context.Context, m notify.Message) error {
	stdin, err := m.JSON()
	if err != nil {
		return notify.Permanent(fmt.Errorf("notify exec %s: %w", c.name, err))
	}
	args := append(append([]string(nil), c.args...), m.Text())
	cmd := exec.CommandContext(ctx, c.path, args...)
	cmd.Dir = c.dir
	cmd.Stdin = bytes.NewReader(stdin)
	stderr := &capped{limit: stderrLimit}
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// Kill the whole group: the script and whatever it started.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = waitDelay
	env := os.Environ()
	env = append(env, Environ(m)...)
	keys := make([]string, 0, len(c.env))
	for k := range c.env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+c.env[k].Reveal())
	}
	cmd.Env = env // later entries win over sundown's own

	start := time.Now()
	err = cmd.Run()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("notify exec %s: killed after %.1fs: %w", c.name, time.Since(start).Seconds(), ctx.Err())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code := ee.ExitCode() // -1 when killed by a signal
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fmt.Errorf("notify exec %s: killed by signal %v: %s", c.name, ws.Signal(),
				notify.Excerpt(stderr.String(), 200))
		}
		return fmt.Errorf("notify exec %s: %w", c.name, &ExitError{Code: code, Stderr: notify.Excerpt(stderr.String(), 200)})
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		return nil // the command succeeded; a detached child kept stderr open
	}
	// Not started (missing, not executable): retrying will not help.
	return notify.Permanent(fmt.Errorf("notify exec %s: %w", c.name, err))
}

// capped keeps the first limit bytes written to it and discards the rest.
type capped struct {
	buf   bytes.Buffer
	limit int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.limit - c.buf.Len(); room > 0 {
		if len(p) < room {
			room = len(p)
		}
		c.buf.Write(p[:room])
	}
	return len(p), nil
}

func (c *capped) String() string { return c.buf.String() }
