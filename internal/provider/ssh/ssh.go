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
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/sundown-ups/sundown/internal/provider"
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
// calls; each call dials anew.
type Provider struct {
	addr    string // host:port
	user    string
	signer  gossh.Signer
	khFile  string
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
	var problems []string
	if cfg.Address == "" {
		problems = append(problems, "address is empty")
	}
	if cfg.User == "" {
		problems = append(problems, "user is empty")
	}
	if cfg.KeyFile == "" {
		problems = append(problems, "key file is empty")
	}
	if cfg.KnownHostsFile == "" {
		problems = append(problems, "known_hosts file is empty (the host key is always verified)")
	}
	if cfg.Timeout < 0 {
		problems = append(problems, "timeout is negative")
	}
	if len(problems) > 0 {
		return nil, provider.NewError(op, cfg.Address, provider.Permanent, "invalid config: "+strings.Join(problems, "; "))
	}
	addr := sshconn.Addr(cfg.Address)
	target := cfg.HostName
	if target == "" {
		target = cfg.Address
	}
	signer, err := sshconn.LoadKey(cfg.KeyFile)
	if err != nil {
		return nil, &provider.Error{Op: op, Target: target, Class: provider.Permanent, Err: err}
	}
	p := &Provider{
		addr:    addr,
		user:    cfg.User,
		signer:  signer,
		khFile:  cfg.KnownHostsFile,
		command: cfg.Command,
		id:      target,
		timeout: cfg.Timeout,
		log:     cfg.Logger,
	}
	if p.command == "" {
		p.command = DefaultCommand
	}
	if p.timeout == 0 {
		p.timeout = DefaultTimeout
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	if _, _, err := sshconn.HostKeys(p.khFile, p.addr); err != nil {
		return nil, &provider.Error{Op: op, Target: target, Class: provider.Permanent, Err: err}
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

// Guest: the provider has no guests; every ID is NotFound.
func (p *Provider) Guest(ctx context.Context, id string) (provider.Guest, error) {
	return provider.Guest{}, p.noGuest("Guest", id)
}

// ShutdownGuest: no guests; NotFound.
func (p *Provider) ShutdownGuest(ctx context.Context, id string) error {
	return p.noGuest("ShutdownGuest", id)
}

// SuspendGuest: no guests; NotFound.
func (p *Provider) SuspendGuest(ctx context.Context, id string) error {
	return p.noGuest("SuspendGuest", id)
}

// PowerOffGuest: no guests; NotFound.
func (p *Provider) PowerOffGuest(ctx context.Context, id string) error {
	return p.noGuest("PowerOffGuest", id)
}

// PowerOnGuest: no guests; NotFound.
func (p *Provider) PowerOnGuest(ctx context.Context, id string) error {
	return p.noGuest("PowerOnGuest", id)
}

// WaitGuest: no guests; NotFound, without waiting.
func (p *Provider) WaitGuest(ctx context.Context, id string, want provider.PowerState) error {
	return p.noGuest("WaitGuest", id)
}

// EnterMaintenance: Unsupported for the host, NotFound for any other ID.
func (p *Provider) EnterMaintenance(ctx context.Context, hostID string, opts provider.MaintenanceOptions) error {
	return p.noMaintenance("EnterMaintenance", hostID)
}

// ExitMaintenance: Unsupported for the host, NotFound for any other ID.
func (p *Provider) ExitMaintenance(ctx context.Context, hostID string) error {
	return p.noMaintenance("ExitMaintenance", hostID)
}

func (p *Provider) noGuest(op, id string) error {
	if p.isClosed() {
		return provider.NewError(op, id, provider.Permanent, "provider closed")
	}
	return provider.NewError(op, id, provider.NotFound, "the ssh provider has no guests")
}

func (p *Provider) noMaintenance(op, id string) error {
	if p.isClosed() {
		return provider.NewError(op, id, provider.Permanent, "provider closed")
	}
	if id != p.id {
		return provider.NewError(op, id, provider.NotFound, "unknown host (this provider's host is "+p.id+")")
	}
	return provider.NewError(op, id, provider.Unsupported, "a plain ssh host has no maintenance mode")
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
	if p.isClosed() {
		return provider.NewError(op, hostID, provider.Permanent, "provider closed")
	}
	if hostID != p.id {
		return provider.NewError(op, hostID, provider.NotFound, "unknown host (this provider's host is "+p.id+")")
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
	stderr := &tailBuffer{max: 1024}
	sess.Stderr = stderr
	sess.Stdout = &tailBuffer{max: 1024}

	start := time.Now()
	if err := sess.Start(p.command); err != nil {
		return p.classify(callerCtx, op, fmt.Errorf("start command: %w", err))
	}
	p.log.Info("ssh: shutdown command sent", "host", p.id, "addr", p.addr)

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
	var ee *gossh.ExitError
	if errors.As(err, &ee) {
		switch ee.Signal() {
		case "TERM", "HUP", "KILL", "PIPE":
			p.log.Info("ssh: shutdown command killed by the host going down", "host", p.id, "signal", ee.Signal(), "seconds", took)
			return nil
		case "":
			return exitError(op, p.id, p.command, ee.ExitStatus(), stderr.String())
		}
		return &provider.Error{Op: op, Target: p.id, Class: provider.Permanent,
			Err: fmt.Errorf("command killed by signal %s: %s", ee.Signal(), strings.TrimSpace(stderr.String()))}
	}
	// No exit status, EOF, connection reset: the host dropped the
	// connection after the command started. That is what a host going
	// down looks like.
	p.log.Info("ssh: connection closed after the shutdown command started; host going down", "host", p.id, "seconds", took, "detail", err.Error())
	return nil
}

// exitError classifies a non-zero exit status.
func exitError(op, target, command string, status int, stderr string) error {
	msg := strings.TrimSpace(stderr)
	e := &provider.Error{Op: op, Target: target, Class: provider.Permanent,
		Err: fmt.Errorf("command exited with status %d: %s", status, msg)}
	low := strings.ToLower(msg)
	if strings.Contains(low, "sudo") && (strings.Contains(low, "password is required") ||
		strings.Contains(low, "not allowed") || strings.Contains(low, "not in the sudoers") ||
		strings.Contains(low, "may not run sudo")) {
		e.Class = provider.Permission
		e.Privilege = "sudo NOPASSWD: " + command
	}
	if strings.Contains(low, "access is denied") || strings.Contains(low, "permission denied") ||
		strings.Contains(low, "must be root") || strings.Contains(low, "not privileged") {
		e.Class = provider.Permission
	}
	return e
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
	check, algos, err := sshconn.HostKeys(p.khFile, p.addr)
	if err != nil {
		return nil, &provider.Error{Op: op, Target: p.id, Class: provider.Permanent, Err: err}
	}
	var (
		mu        sync.Mutex
		keyErr    error
		presented gossh.PublicKey
	)
	cfg := &gossh.ClientConfig{
		User: p.user,
		Auth: []gossh.AuthMethod{gossh.PublicKeys(p.signer)},
		HostKeyCallback: func(hostname string, remote net.Addr, key gossh.PublicKey) error {
			err := check(hostname, remote, key)
			mu.Lock()
			keyErr, presented = err, key
			mu.Unlock()
			return err
		},
		HostKeyAlgorithms: algos,
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, p.classify(callerCtx, op, fmt.Errorf("dial %s: %w", p.addr, err))
	}
	// The handshake is not context-aware: a deadline plus closing the
	// connection when ctx ends bound it.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	c, chans, reqs, err := gossh.NewClientConn(conn, p.addr, cfg)
	stop()
	if err != nil {
		conn.Close()
		mu.Lock()
		kErr, key := keyErr, presented
		mu.Unlock()
		var ke *knownhosts.KeyError
		var re *knownhosts.RevokedError
		switch {
		case errors.As(kErr, &ke) && len(ke.Want) > 0:
			return nil, &provider.Error{Op: op, Target: p.id, Class: provider.Permanent,
				Err: fmt.Errorf("host key changed for %s: the server presented %s %s, %s holds a different key; not connecting (if the host was reinstalled, verify the new key and update known_hosts)",
					p.addr, key.Type(), gossh.FingerprintSHA256(key), p.khFile)}
		case errors.As(kErr, &re):
			return nil, &provider.Error{Op: op, Target: p.id, Class: provider.Permanent,
				Err: fmt.Errorf("host key for %s is revoked in %s; not connecting", p.addr, p.khFile)}
		case kErr != nil:
			return nil, &provider.Error{Op: op, Target: p.id, Class: provider.Permanent,
				Err: fmt.Errorf("host key for %s not accepted: %w", p.addr, kErr)}
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, &provider.Error{Op: op, Target: p.id, Class: provider.Auth,
				Err: fmt.Errorf("login as %q refused: %w", p.user, err)}
		}
		return nil, p.classify(callerCtx, op, fmt.Errorf("handshake with %s: %w", p.addr, err))
	}
	_ = conn.SetDeadline(time.Time{})
	return gossh.NewClient(c, chans, reqs), nil
}

// classify classifies a connection failure: when the caller's context ended
// it, Transient wrapping ctx.Err(); after Close, Permanent; else Unreachable
// (refused, no answer within Timeout, reset, no route, dropped).
func (p *Provider) classify(callerCtx context.Context, op string, err error) error {
	if cerr := callerCtx.Err(); cerr != nil {
		return &provider.Error{Op: op, Target: p.id, Class: provider.Transient, Err: fmt.Errorf("%w: %v", cerr, err)}
	}
	if p.isClosed() {
		return &provider.Error{Op: op, Target: p.id, Class: provider.Permanent, Err: fmt.Errorf("provider closed: %w", err)}
	}
	return &provider.Error{Op: op, Target: p.id, Class: provider.Unreachable, Err: err}
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

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, b...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(b), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
