// Package local is the provider for the machine sundown itself runs on. Its
// one operation is to power that machine off by running a local command
// (`systemctl poweroff` by default); the plan runs that step last of all,
// after every other host.
//
// The provider has no guests and no maintenance mode. Inventory lists exactly
// one Host, this machine, which is on until a ShutdownHost call has
// succeeded. ShutdownHost runs the configured command directly (no shell)
// and returns once it exited with status 0, or once it was killed by SIGTERM
// or SIGKILL, which is what happens to it when the system goes down under
// it.
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/hostcmd"
)

// DefaultTimeout bounds one run of the shutdown command when Config.Timeout
// is zero.
const DefaultTimeout = 30 * time.Second

// PowerOffPrivilege is what Error.Privilege names when the command was
// refused for lack of privilege (and the refusal did not come from sudo).
const PowerOffPrivilege = "root or polkit action org.freedesktop.login1.power-off"

// productUUIDPath is where Linux exposes the SMBIOS system UUID (readable
// by root only on most distributions).
const productUUIDPath = "/sys/class/dmi/id/product_uuid"

// DefaultCommand returns the command ShutdownHost runs when Config.Command
// is empty: ["systemctl", "poweroff"]. It returns a new slice on each call.
func DefaultCommand() []string { return []string{"systemctl", "poweroff"} }

// Config configures a Provider.
type Config struct {
	// Command is what ShutdownHost runs: the program (a name looked up in
	// PATH when New runs, or a path) and its arguments, run directly
	// without a shell. DefaultCommand() when empty.
	Command []string
	// HostName is the Host.ID and Host.Name in the inventory;
	// os.Hostname() when empty.
	HostName string
	// Timeout bounds one run of the command; DefaultTimeout when zero. The
	// caller's context still applies.
	Timeout time.Duration
	// Logger receives the provider's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Provider powers off the local machine. It implements provider.Provider
// and provider.Capable. The guest calls (all NotFound) and the maintenance
// calls (Unsupported) come from hostcmd.Guestless.
type Provider struct {
	guestless
	path    string   // resolved program path
	args    []string // arguments after the program
	command []string // as configured (or the default), for messages
	id      string
	uuid    string
	timeout time.Duration
	log     *slog.Logger

	// run holds one token: ShutdownHost calls run the command one at a
	// time.
	run chan struct{}

	// base is cancelled by Close; every command run is tied to it.
	base   context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	closed   bool
	accepted bool // a ShutdownHost succeeded: the machine is going down
}

// guestless is embedded under an unexported name.
type guestless = hostcmd.Guestless

// refusals class a failed command's stderr.
var refusals = hostcmd.Refusals{
	SudoPrivilege:   "sudoers rule NOPASSWD: ",
	Denied:          []string{"permission denied", "access denied", "interactive authentication required"},
	DeniedPrivilege: PowerOffPrivilege,
}

var (
	_ provider.Provider = (*Provider)(nil)
	_ provider.Capable  = (*Provider)(nil)
)

// New checks cfg and resolves the command's program with exec.LookPath: a
// program that does not exist or is not executable is a Permanent error
// naming it, so the problem shows at startup and not during a power cut.
// It runs nothing. ctx is unused; it is there for symmetry with the other
// providers.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	_ = ctx
	const op = "New"
	command := cfg.Command
	if len(command) == 0 {
		command = DefaultCommand()
	}
	command = append([]string(nil), command...)
	id := cfg.HostName
	if id == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, &provider.Error{Op: op, Class: provider.Permanent, Err: fmt.Errorf("host name: %w", err)}
		}
		id = h
	}
	if cfg.Timeout < 0 {
		return nil, provider.NewError(op, id, provider.Permanent, "invalid config: timeout is negative")
	}
	if command[0] == "" {
		return nil, provider.NewError(op, id, provider.Permanent, "invalid config: command program is empty")
	}
	path, err := exec.LookPath(command[0])
	if err != nil {
		return nil, &provider.Error{Op: op, Target: id, Class: provider.Permanent,
			Err: fmt.Errorf("shutdown command %q not usable: %w", command[0], err)}
	}
	p := &Provider{
		path:    path,
		args:    command[1:],
		command: command,
		id:      id,
		uuid:    readUUID(productUUIDPath),
		timeout: cfg.Timeout,
		log:     cfg.Logger,
		run:     make(chan struct{}, 1),
	}
	p.guestless = guestless{HostID: id, Closed: p.isClosed,
		NoGuests: "the local provider has no guests", NoMaintenance: "the local machine has no maintenance mode"}
	if p.timeout == 0 {
		p.timeout = DefaultTimeout
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.run <- struct{}{}
	p.base, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// readUUID returns the SMBIOS UUID in the file at path in lower case, or ""
// when the file is unreadable or does not hold a UUID.
func readUUID(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := strings.ToLower(strings.TrimSpace(string(b)))
	if len(s) != 36 {
		return ""
	}
	for i, c := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return ""
			}
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		default:
			return ""
		}
	}
	return s
}

// Capabilities: no guests, no maintenance mode, host shutdown only.
func (p *Provider) Capabilities() provider.Caps {
	return provider.Caps{HostShutdown: true}
}

// ID is the host's ID in the inventory.
func (p *Provider) ID() string { return p.id }

// Command returns the command ShutdownHost runs: the resolved program path
// followed by its arguments. It runs nothing.
func (p *Provider) Command() []string {
	return append([]string{p.path}, p.args...)
}

// Inventory returns the one host. Its Power is on, or off once a
// ShutdownHost call has succeeded (the machine is going down). It runs
// nothing.
func (p *Provider) Inventory(ctx context.Context) (provider.Inventory, error) {
	const op = "Inventory"
	p.mu.Lock()
	closed, accepted := p.closed, p.accepted
	p.mu.Unlock()
	if closed {
		return provider.Inventory{}, provider.NewError(op, "", provider.Permanent, "provider closed")
	}
	if err := ctx.Err(); err != nil {
		return provider.Inventory{}, &provider.Error{Op: op, Target: p.id, Class: provider.Transient, Err: err}
	}
	power := provider.PowerOn
	if accepted {
		power = provider.PowerOff
	}
	return provider.Inventory{Hosts: []provider.Host{{ID: p.id, Name: p.id, Power: power, UUID: p.uuid}}}, nil
}

// ShutdownHost runs the configured command and returns nil when it exits
// with status 0 or is killed by SIGTERM or SIGKILL (the system going down
// under it). force is ignored: the command decides how forceful the
// shutdown is. After a success the host reports off and later calls return
// nil without running the command again.
//
// A command still running when Timeout or ctx ends is killed with its whole
// process group; the error is Transient and wraps the context error (the
// shutdown may still take effect). A non-zero exit is Permission when its
// stderr says "Permission denied", "Access denied" or "Interactive
// authentication required" (Privilege = PowerOffPrivilege), or when sudo
// asked for a password or refused (Privilege names the sudoers rule); any
// other failure is Permanent with the last line of stderr.
func (p *Provider) ShutdownHost(ctx context.Context, hostID string, force bool) error {
	const op = "ShutdownHost"
	if err := p.CheckHost(op, hostID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return &provider.Error{Op: op, Target: p.id, Class: provider.Transient, Err: err}
	}
	// One run at a time; a second caller waits for the first.
	select {
	case <-p.run:
	case <-ctx.Done():
		return &provider.Error{Op: op, Target: p.id, Class: provider.Transient,
			Err: fmt.Errorf("waiting for a shutdown command already running: %w", ctx.Err())}
	}
	defer func() { p.run <- struct{}{} }()

	p.mu.Lock()
	closed, accepted, base := p.closed, p.accepted, p.base
	p.mu.Unlock()
	if closed {
		return provider.NewError(op, hostID, provider.Permanent, "provider closed")
	}
	if accepted {
		return nil
	}
	err := p.runCommand(ctx, base)
	if err == nil {
		p.mu.Lock()
		p.accepted = true
		p.mu.Unlock()
	}
	return err
}

// runCommand runs the command once, bounded by ctx, Timeout and base.
func (p *Provider) runCommand(callerCtx, base context.Context) error {
	const op = "ShutdownHost"
	ctx, cancel := context.WithTimeout(callerCtx, p.timeout)
	defer cancel()
	stop := context.AfterFunc(base, cancel)
	defer stop()

	cmd := exec.CommandContext(ctx, p.path, p.args...)
	// Messages are matched in English; stdin is /dev/null so nothing can
	// prompt.
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	stderr := hostcmd.NewTailBuffer(4096)
	cmd.Stderr = stderr
	cmd.Stdout = hostcmd.NewTailBuffer(1024)
	setProcessGroup(cmd)
	// A child left holding stderr open must not hold us past the end.
	cmd.WaitDelay = 2 * time.Second

	cmdText := strings.Join(p.command, " ")
	p.log.Info("local: running shutdown command", "host", p.id, "command", cmdText)
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start).Seconds()
	if err == nil {
		p.log.Info("local: shutdown command succeeded", "host", p.id, "seconds", took)
		return nil
	}
	if ctx.Err() != nil {
		if callerCtx.Err() == nil && base.Err() != nil {
			return provider.NewError(op, p.id, provider.Permanent, "provider closed while the command ran (it may still take effect)")
		}
		cause := ctx.Err()
		if cerr := callerCtx.Err(); cerr != nil {
			cause = cerr
		}
		return &provider.Error{Op: op, Target: p.id, Class: provider.Transient,
			Err: fmt.Errorf("command %q did not finish within %.1fs (it may still take effect): %w", cmdText, took, cause)}
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return &provider.Error{Op: op, Target: p.id, Class: provider.Permanent,
			Err: fmt.Errorf("run %q: %w", cmdText, err)}
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		switch sig := ws.Signal(); sig {
		case syscall.SIGTERM, syscall.SIGKILL:
			p.log.Info("local: shutdown command killed by the system going down", "host", p.id, "signal", sig.String(), "seconds", took)
			return nil
		default:
			return &provider.Error{Op: op, Target: p.id, Class: provider.Permanent,
				Err: fmt.Errorf("command %q killed by signal %s: %s", cmdText, sig, lastLine(stderr.String()))}
		}
	}
	return exitError(op, p.id, cmdText, ee.ExitCode(), stderr.String())
}

// exitError classifies a non-zero exit status from the command's stderr.
func exitError(op, target, command string, status int, stderr string) error {
	class, privilege := refusals.Classify(stderr, command)
	return &provider.Error{Op: op, Target: target, Class: class, Privilege: privilege,
		Err: fmt.Errorf("command %q exited with status %d: %s", command, status, lastLine(stderr))}
}

// lastLine returns the last non-empty line of s, trimmed; "(no output on
// stderr)" when there is none.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return "(no output on stderr)"
}

func (p *Provider) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// Close kills a command in flight and makes every later call fail with a
// Permanent error. Idempotent.
func (p *Provider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		p.cancel()
	}
	return nil
}
