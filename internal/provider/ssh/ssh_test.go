package ssh_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/peer/sshd"
	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/ssh"
)

// All tests below talk to a real /usr/sbin/sshd started by internal/peer/sshd
// on 127.0.0.1; its ForceCommand only records the command and runs the
// emulation script, so nothing on this machine is ever powered off.

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// open starts sshd with emulate and a provider for it (closed at the end).
func open(t *testing.T, emulate string, mod func(*ssh.Config)) (*ssh.Provider, *sshd.Server) {
	t.Helper()
	srv := sshd.Start(t, sshd.Options{Emulate: emulate})
	cfg := ssh.Config{
		Address:        srv.Addr(),
		User:           srv.User(),
		KeyFile:        srv.ClientKeyPath(),
		KnownHostsFile: srv.WriteKnownHosts(t),
		HostName:       "nas1",
		Timeout:        5 * time.Second,
		Logger:         quiet,
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := ssh.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p, srv
}

func wantClass(t *testing.T, what string, err error, want provider.Class) *provider.Error {
	t.Helper()
	var e *provider.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: error %v (%T), want a *provider.Error of class %s", what, err, err, want)
	}
	if e.Class != want {
		t.Fatalf("%s: class %s, want %s (error: %v)", what, e.Class, want, err)
	}
	if e.Op == "" {
		t.Errorf("%s: empty Op", what)
	}
	return e
}

func wantCommands(t *testing.T, srv *sshd.Server, want ...string) {
	t.Helper()
	if got := srv.Commands(); !slices.Equal(got, want) {
		t.Errorf("server recorded %q, want %q", got, want)
	}
}

// TestContract checks the parts of the provider contract (and of
// providertest) that apply to a provider without guests: inventory, unknown
// IDs, capabilities, host shutdown followed by the host going away, Close,
// concurrency.
func TestContract(t *testing.T) {
	// The emulated host stops its sshd listener when told to power off,
	// as a real host does.
	p, srv := open(t, `case "$SSH_ORIGINAL_COMMAND" in
*poweroff*) kill -TERM "$(cat "$SSHD_PIDFILE")" ;;
esac`, nil)
	ctx := t.Context()

	if got := provider.CapabilitiesOf(p); got != (provider.Caps{HostShutdown: true}) {
		t.Errorf("Capabilities = %+v", got)
	}
	inv, err := p.Inventory(ctx)
	if err != nil {
		t.Fatalf("Inventory: %v", err)
	}
	want := provider.Inventory{Hosts: []provider.Host{{ID: "nas1", Name: "nas1", Power: provider.PowerOn}}}
	if !equalInv(inv, want) {
		t.Fatalf("Inventory = %+v, want %+v", inv, want)
	}
	wantCommands(t, srv) // Inventory runs nothing.

	const unknown = "sundown-conformance-no-such-id"
	_, err = p.Guest(ctx, unknown)
	for what, err := range map[string]error{
		"Guest":            err,
		"ShutdownGuest":    p.ShutdownGuest(ctx, unknown),
		"SuspendGuest":     p.SuspendGuest(ctx, unknown),
		"PowerOffGuest":    p.PowerOffGuest(ctx, unknown),
		"PowerOnGuest":     p.PowerOnGuest(ctx, unknown),
		"WaitGuest":        p.WaitGuest(ctx, unknown, provider.PowerOff),
		"EnterMaintenance": p.EnterMaintenance(ctx, unknown, provider.MaintenanceOptions{}),
		"ExitMaintenance":  p.ExitMaintenance(ctx, unknown),
		"ShutdownHost":     p.ShutdownHost(ctx, unknown, true),
	} {
		if e := wantClass(t, what+"(unknown)", err, provider.NotFound); e.Target != unknown {
			t.Errorf("%s(unknown): Target %q", what, e.Target)
		}
	}
	wantClass(t, "EnterMaintenance(host)", p.EnterMaintenance(ctx, "nas1", provider.MaintenanceOptions{}), provider.Unsupported)
	wantClass(t, "ExitMaintenance(host)", p.ExitMaintenance(ctx, "nas1"), provider.Unsupported)
	wantCommands(t, srv)

	// Concurrent inventories share nothing.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			_, err := p.Inventory(ctx)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Inventory: %v", err)
		}
	}

	if err := p.ShutdownHost(ctx, "nas1", false); err != nil {
		t.Fatalf("ShutdownHost: %v\n%s", err, srv.Log())
	}
	wantCommands(t, srv, ssh.DefaultCommand)
	// The host is gone: Inventory and a repeated ShutdownHost say Unreachable.
	_, err = p.Inventory(ctx)
	wantClass(t, "Inventory after ShutdownHost", err, provider.Unreachable)
	wantClass(t, "ShutdownHost of a host that is down", p.ShutdownHost(ctx, "nas1", false), provider.Unreachable)

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err = p.Inventory(ctx)
	wantClass(t, "Inventory after Close", err, provider.Permanent)
	wantClass(t, "ShutdownHost after Close", p.ShutdownHost(ctx, "nas1", false), provider.Permanent)
	wantClass(t, "PowerOffGuest after Close", p.PowerOffGuest(ctx, "x"), provider.Permanent)
}

func equalInv(a, b provider.Inventory) bool {
	return slices.Equal(a.Hosts, b.Hosts) && len(a.Guests) == 0 && len(b.Guests) == 0
}

func TestShutdownRunsConfiguredCommand(t *testing.T) {
	for _, tc := range []struct{ name, command, want string }{
		{"linux default", "", "sudo -n systemctl poweroff"},
		{"windows", "shutdown /s /t 0", "shutdown /s /t 0"},
		{"nas", "/sbin/poweroff", "/sbin/poweroff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, srv := open(t, `echo "going down"`, func(c *ssh.Config) { c.Command = tc.command })
			if err := p.ShutdownHost(t.Context(), "nas1", false); err != nil {
				t.Fatalf("ShutdownHost: %v", err)
			}
			wantCommands(t, srv, tc.want)
		})
	}
}

// The host dropping the connection after the command started is success.
func TestShutdownConnectionDropIsSuccess(t *testing.T) {
	for _, tc := range []struct{ name, emulate string }{
		{"sshd killed", `kill -9 $PPID`},
		{"command killed by SIGTERM", `kill -TERM $$`},
		{"exit without output", `exit 0`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, srv := open(t, tc.emulate, nil)
			if err := p.ShutdownHost(t.Context(), "nas1", true); err != nil {
				t.Fatalf("ShutdownHost: %v", err)
			}
			wantCommands(t, srv, ssh.DefaultCommand)
		})
	}
}

// A command that never returns is cut off by ctx, and by Config.Timeout.
func TestShutdownHangingCommand(t *testing.T) {
	// Waits until its sshd session process goes away (the client hung up).
	const hang = `while kill -0 $PPID 2>/dev/null; do sleep 0.1; done`

	t.Run("ctx", func(t *testing.T) {
		p, srv := open(t, hang, nil)
		ctx, cancel := context.WithTimeout(t.Context(), 700*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := p.ShutdownHost(ctx, "nas1", false)
		took := time.Since(start)
		wantClass(t, "ShutdownHost(hang)", err, provider.Transient)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
		}
		if took > 3*time.Second {
			t.Errorf("ShutdownHost took %v with a 700ms context", took)
		}
		wantCommands(t, srv, ssh.DefaultCommand)
	})
	t.Run("Timeout", func(t *testing.T) {
		p, _ := open(t, hang, func(c *ssh.Config) { c.Timeout = 700 * time.Millisecond })
		start := time.Now()
		err := p.ShutdownHost(t.Context(), "nas1", false)
		wantClass(t, "ShutdownHost(hang)", err, provider.Transient)
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("ShutdownHost took %v with a 700ms Timeout", took)
		}
	})
	t.Run("Close", func(t *testing.T) {
		p, srv := open(t, hang, nil)
		errc := make(chan error, 1)
		go func() { errc <- p.ShutdownHost(t.Context(), "nas1", false) }()
		// Close once the command runs on the server.
		for poll := time.Now().Add(3 * time.Second); len(srv.Commands()) == 0; {
			if time.Now().After(poll) {
				t.Fatal("command not started within 3s")
			}
			runtime.Gosched()
		}
		deadline := time.After(3 * time.Second)
		p.Close()
		select {
		case err := <-errc:
			wantClass(t, "ShutdownHost interrupted by Close", err, provider.Permanent)
		case <-deadline:
			t.Fatal("ShutdownHost still running 3s after Close")
		}
	})
}

func TestShutdownNonZeroExit(t *testing.T) {
	t.Run("sudo wants a password", func(t *testing.T) {
		p, _ := open(t, `echo "sudo: a password is required" >&2; exit 1`, nil)
		e := wantClass(t, "ShutdownHost", p.ShutdownHost(t.Context(), "nas1", false), provider.Permission)
		if !strings.Contains(e.Error(), "password is required") || e.Privilege == "" {
			t.Errorf("error %q (privilege %q) should carry sudo's message and the privilege", e, e.Privilege)
		}
	})
	t.Run("other failure", func(t *testing.T) {
		p, _ := open(t, `echo "Failed to connect to bus" >&2; exit 3`, nil)
		e := wantClass(t, "ShutdownHost", p.ShutdownHost(t.Context(), "nas1", false), provider.Permanent)
		if !strings.Contains(e.Error(), "status 3") || !strings.Contains(e.Error(), "Failed to connect to bus") {
			t.Errorf("error %q should carry the status and stderr", e)
		}
	})
}

func TestWrongKeyIsAuth(t *testing.T) {
	other := sshd.Start(t, sshd.Options{}) // its client key is not authorized on srv
	p, srv := open(t, "", func(c *ssh.Config) { c.KeyFile = other.ClientKeyPath() })
	wantClass(t, "ShutdownHost with a wrong key", p.ShutdownHost(t.Context(), "nas1", false), provider.Auth)
	_, err := p.Inventory(t.Context())
	wantClass(t, "Inventory with a wrong key", err, provider.Auth)
	wantCommands(t, srv)
}

func TestChangedHostKeyIsRefused(t *testing.T) {
	p, srv := open(t, "", nil)
	if _, err := p.Inventory(t.Context()); err != nil {
		t.Fatalf("Inventory before the key change: %v", err)
	}
	before := len(srv.Log())
	srv.RotateHostKey(t)
	e := wantClass(t, "ShutdownHost after a host key change", p.ShutdownHost(t.Context(), "nas1", false), provider.Permanent)
	if !strings.Contains(e.Error(), "host key changed") {
		t.Errorf("error %q does not say the host key changed", e)
	}
	_, err := p.Inventory(t.Context())
	wantClass(t, "Inventory after a host key change", err, provider.Permanent)
	wantCommands(t, srv) // nothing ran
	// No login was even attempted.
	if after := srv.Log()[before:]; strings.Contains(after, "Accepted publickey") {
		t.Errorf("sshd log shows a login after the host key changed:\n%s", after)
	}
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	kh := filepath.Join(t.TempDir(), "known_hosts")
	srv := sshd.Start(t, sshd.Options{})
	// A known_hosts line for the closed port, with a real server's key.
	_, key, _ := strings.Cut(srv.KnownHostsLine(), " ")
	host, port, _ := net.SplitHostPort(addr)
	if err := os.WriteFile(kh, []byte("["+host+"]:"+port+" "+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := ssh.New(t.Context(), ssh.Config{Address: addr, User: "root", KeyFile: srv.ClientKeyPath(),
		KnownHostsFile: kh, Timeout: 2 * time.Second, Logger: quiet})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer p.Close()
	wantClass(t, "ShutdownHost(closed port)", p.ShutdownHost(t.Context(), addr, false), provider.Unreachable)
	_, err = p.Inventory(t.Context())
	wantClass(t, "Inventory(closed port)", err, provider.Unreachable)
	_, err = p.CheckCommand(t.Context())
	wantClass(t, "CheckCommand(closed port)", err, provider.Unreachable)

	// The caller's context ending first is Transient and wraps ctx.Err().
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err = p.ShutdownHost(ctx, addr, false)
	wantClass(t, "ShutdownHost(cancelled ctx)", err, provider.Transient)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("%v does not wrap context.Canceled", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	kh := srv.WriteKnownHosts(t)
	empty := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ok := ssh.Config{Address: srv.Addr(), User: "root", KeyFile: srv.ClientKeyPath(), KnownHostsFile: kh}
	for _, tc := range []struct {
		name string
		mod  func(*ssh.Config)
		want string
	}{
		{"no known_hosts", func(c *ssh.Config) { c.KnownHostsFile = "" }, "known_hosts file is empty"},
		{"host not in known_hosts", func(c *ssh.Config) { c.KnownHostsFile = empty }, "has no key for"},
		{"no address", func(c *ssh.Config) { c.Address = "" }, "address is empty"},
		{"no user", func(c *ssh.Config) { c.User = "" }, "user is empty"},
		{"missing key", func(c *ssh.Config) { c.KeyFile = "/nonexistent/key" }, "read key file"},
		{"not a key", func(c *ssh.Config) { c.KeyFile = kh }, "parse key file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mod(&cfg)
			p, err := ssh.New(t.Context(), cfg)
			if err == nil {
				p.Close()
				t.Fatal("New accepted the config")
			}
			wantClass(t, "New", err, provider.Permanent)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
	p, err := ssh.New(t.Context(), ok)
	if err != nil {
		t.Fatalf("New(valid): %v", err)
	}
	p.Close()
}
