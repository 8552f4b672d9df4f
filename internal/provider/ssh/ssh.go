// Package ssh is the provider for a plain host that sundown shuts down by
// running one command over SSH: a Linux server (`sudo -n systemctl
// poweroff`), a Windows machine with OpenSSH (`shutdown /s /t 0`), a NAS
// appliance (`poweroff`, `/sbin/shutdown -h now`, …).
//
// The provider has no guests. Inventory lists exactly one Host and proves it
// is up by completing an SSH handshake (key exchange, host key check and
// public-key login) without opening a session, so it never runs anything.
// ShutdownHost connects, runs the configured command and returns once the
// command has exited successfully, or once the connection has dropped after
// the command started (the host is going down).
//
// The server's host key is always verified against a known_hosts file; there
// is no option to skip that check.
package ssh

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/hostcmd"
	"github.com/sundown-ups/sundown/internal/provider/sshconn"
)

// DefaultCommand is the command ShutdownHost runs when Config.Command is
// empty. It needs a sudoers rule such as
//
//	sundown ALL=(root) NOPASSWD: /usr/bin/systemctl poweroff
const DefaultCommand = "sudo -n systemctl poweroff"

// DefaultTimeout bounds one connection (dial, handshake, command) when
// Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// Config configures a Provider.
type Config struct {
	// Address is "host", "host:port", "[v6addr]:port"; the port defaults
	// to 22.
	Address string
	// User is the login name on the host.
	User string
	// KeyFile is the client's private key (OpenSSH or PEM format,
	// unencrypted, readable only by sundown's user).
	KeyFile string
	// KnownHostsFile is an OpenSSH known_hosts file that holds the host's
	// key. Required: the host key is always checked.
	KnownHostsFile string
	// Command is what ShutdownHost runs; DefaultCommand when empty. It is
	// sent as is (the server's shell parses it).
	Command string
	// HostName is the Host.ID and Host.Name in the inventory; Address when
	// empty.
	HostName string
	// Timeout bounds each connection: dial, handshake and, for
	// ShutdownHost, the command. DefaultTimeout when zero. The caller's
	// context still applies.
	Timeout time.Duration
	// Logger receives the provider's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Provider runs a shutdown command on one host over SSH. It implements
// provider.Provider and provider.Capable. It holds no connection between
// calls; each call dials anew. The guest calls (all NotFound) and the
// maintenance calls (Unsupported) come from hostcmd.Guestless.
type Provider struct {
	guestless
	ep      *sshconn.Endpoint
	command string
	id      string
	timeout time.Duration
	log     *slog.Logger

	// base is cancelled by Close; every call's context is tied to it.
	base   context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	closed bool
}

// guestless is embedded under an unexported name.
type guestless = hostcmd.Guestless

// refusals class a failed command's stderr.
var refusals = hostcmd.Refusals{
	SudoPrivilege: "sudo NOPASSWD: ",
	Denied:        []string{"access is denied", "permission denied", "must be root", "not privileged"},
}

var (
	_ provider.Provider = (*Provider)(nil)
	_ provider.Capable  = (*Provider)(nil)
)

// New checks cfg, loads the key and checks that the known_hosts file holds
// a key for the host. It does not connect: a host that is down when sundown
// starts is not a configuration error. ctx is unused today; it is there so
// that New may later probe the host.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	_ = ctx
	const op = "New"
	problems := sshconn.Problems(cfg.Address, cfg.User, cfg.KeyFile, cfg.KnownHostsFile)
	if cfg.Timeout < 0 {
		problems = append(problems, "timeout is negative")
	}
	if len(problems) > 0 {
		return nil, provider.NewError(op, cfg.Address, provider.Permanent, "invalid config: "+strings.Join(problems, "; "))
	}
	target := cfg.HostName
	if target == "" {
		target = cfg.Address
	}
	ep, err := sshconn.NewEndpoint(cfg.Address, cfg.User, cfg.KeyFile, cfg.KnownHostsFile)
	if err != nil {
		return nil, &provider.Error{Op: op, Target: target, Class: provider.Permanent, Err: err}
	}
	p := &Provider{
		ep:      ep,
		command: cfg.Command,
		id:      target,
		timeout: cfg.Timeout,
		log:     cfg.Logger,
	}
	p.guestless = guestless{HostID: target, Closed: p.isClosed,
		NoGuests: "the ssh provider has no guests", NoMaintenance: "a plain ssh host has no maintenance mode"}
	if p.command == "" {
		p.command = DefaultCommand
	}
	if p.timeout == 0 {
		p.timeout = DefaultTimeout
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.base, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// Capabilities: no guests, no maintenance mode, host shutdown only.
func (p *Provider) Capabilities() provider.Caps {
	return provider.Caps{HostShutdown: true}
}

// ID is the host's ID in the inventory.
func (p *Provider) ID() string { return p.id }

// Inventory returns the one host, on, after a successful handshake and
// login. It runs no command. An unreachable host is an error of class
// Unreachable, as the contract asks.
func (p *Provider) Inventory(ctx context.Context) (provider.Inventory, error) {
	const op = "Inventory"
	callerCtx := ctx
	ctx, done, err := p.begin(ctx, op, "")
	if err != nil {
		return provider.Inventory{}, err
	}
	defer done()
	client, err := p.connect(callerCtx, ctx, op)
	if err != nil {
		return provider.Inventory{}, err
	}
	client.Close()
	return provider.Inventory{Hosts: []provider.Host{{ID: p.id, Name: p.id, Power: provider.PowerOn}}}, nil
}

// ShutdownHost connects to the host and runs the configured command. It
// returns nil when the command exits with status 0, or when the connection
// drops (no exit status, or the command killed by SIGTERM/SIGHUP/SIGKILL/
// SIGPIPE) after the command started: the host is going down. force is
// ignored; the command decides how forceful the shutdown is. A host that is
// already down cannot be told apart from an unreachable one: the error is
// Unreachable and the caller decides. A command that does not finish within
// Timeout or ctx is cut off; the error is Transient (it may still take
// effect). A non-zero exit is Permission when sudo asked for a password or
// refused, else Permanent; the error carries the end of the command's
// stderr.
func (p *Provider) ShutdownHost(ctx context.Context, hostID string, force bool) error {
	const op = "ShutdownHost"
	if err := p.CheckHost(op, hostID); err != nil {
		return err
	}
	callerCtx := ctx
	ctx, done, err := p.begin(ctx, op, hostID)
	if err != nil {
		return err
	}
	defer done()

	client, err := p.connect(callerCtx, ctx, op)
	if err != nil {
		return err
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return p.classify(callerCtx, op, fmt.Errorf("open session: %w", err))
	}
	defer sess.Close()
	stderr := hostcmd.NewTailBuffer(1024)
	sess.Stderr = stderr
	sess.Stdout = hostcmd.NewTailBuffer(1024)

	start := time.Now()
	if err := sess.Start(p.command); err != nil {
		return p.classify(callerCtx, op, fmt.Errorf("start command: %w", err))
	}
	p.log.Info("ssh: shutdown command sent", "host", p.id, "addr", p.ep.Addr)

	waitErr := make(chan error, 1)
	go func() { waitErr <- sess.Wait() }()
	select {
	case err = <-waitErr:
	case <-ctx.Done():
		client.Close() // unblocks Wait
		<-waitErr
		if callerCtx.Err() == nil && p.isClosed() {
			return provider.NewError(op, p.id, provider.Permanent, "provider closed while the command ran (it may still take effect)")
		}
		cause := ctx.Err()
		if callerCtx.Err() != nil {
			cause = callerCtx.Err()
		}
		return &provider.Error{Op: op, Target: p.id, Class: provider.Transient,
			Err: fmt.Errorf("command did not finish within %.1fs (it may still take effect): %w", time.Since(start).Seconds(), cause)}
	}
	took := time.Since(start).Seconds()
	if err == nil {
		p.log.Info("ssh: shutdown command succeeded", "host", p.id, "seconds", took)
		return nil
	}
	switch x := sshconn.ExitOf(err); {
	case x.Dropped:
		// No exit status, EOF, connection reset: the host dropped the
		// connection after the command started. That is what a host
		// going down looks like.
		p.log.Info("ssh: connection closed after the shutdown command started; host going down", "host", p.id, "seconds", took, "detail", err.Error())
		return nil
	case x.Signal == "":
		return exitError(op, p.id, p.command, x.Status, stderr.String())
	case x.Signal == "TERM", x.Signal == "HUP", x.Signal == "KILL", x.Signal == "PIPE":
		p.log.Info("ssh: shutdown command killed by the host going down", "host", p.id, "signal", x.Signal, "seconds", took)
		return nil
	default:
		return &provider.Error{Op: op, Target: p.id, Class: provider.Permanent,
			Err: fmt.Errorf("command killed by signal %s: %s", x.Signal, strings.TrimSpace(stderr.String()))}
	}
}

// exitError classifies a non-zero exit status.
func exitError(op, target, command string, status int, stderr string) error {
	msg := strings.TrimSpace(stderr)
	class, privilege := refusals.Classify(msg, command)
	return &provider.Error{Op: op, Target: target, Class: class, Privilege: privilege,
		Err: fmt.Errorf("command exited with status %d: %s", status, msg)}
}

// begin checks that the provider is open and returns ctx bounded by Timeout
// and by Close.
func (p *Provider) begin(ctx context.Context, op, target string) (context.Context, func(), error) {
	p.mu.Lock()
	closed, base := p.closed, p.base
	p.mu.Unlock()
	if closed {
		return nil, nil, provider.NewError(op, target, provider.Permanent, "provider closed")
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, &provider.Error{Op: op, Target: p.id, Class: provider.Transient, Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	stop := context.AfterFunc(base, cancel)
	return ctx, func() { stop(); cancel() }, nil
}

// connect dials, verifies the host key and logs in. ctx (the caller's
// context bounded by Timeout and Close) bounds all of it; callerCtx tells
// the caller's own end apart from Timeout.
func (p *Provider) connect(callerCtx, ctx context.Context, op string) (*gossh.Client, error) {
	return p.ep.Dial(ctx, op, p.id, func(err error) error { return p.classify(callerCtx, op, err) })
}

// classify classifies a connection failure (see sshconn.Failure): the
// caller's context ended, Transient; after Close, Permanent; else
// Unreachable.
func (p *Provider) classify(callerCtx context.Context, op string, err error) error {
	return sshconn.Failure(callerCtx, p.isClosed(), op, p.id, err)
}

func (p *Provider) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// Close ends in-flight calls and makes every later call fail with a
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
