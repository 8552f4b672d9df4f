package sshconn_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/sundown-ups/sundown/internal/peer/sshd"
	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/sshconn"
)

// The tests that connect talk to a real /usr/sbin/sshd started by
// internal/peer/sshd on 127.0.0.1; its ForceCommand only records the
// command and runs the emulation script.

func wantClass(t *testing.T, what string, err error, want provider.Class) *provider.Error {
	t.Helper()
	var e *provider.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: error %v (%T), want a *provider.Error of class %s", what, err, err, want)
	}
	if e.Class != want {
		t.Fatalf("%s: class %s, want %s (error: %v)", what, e.Class, want, err)
	}
	return e
}

// unreachable is the fail function of the tests: it marks what Dial hands
// over to the caller's classification.
func unreachable(err error) error {
	return &provider.Error{Op: "dial", Target: "h", Class: provider.Unreachable, Err: err}
}

func endpoint(t *testing.T, srv *sshd.Server) *sshconn.Endpoint {
	t.Helper()
	ep, err := sshconn.NewEndpoint(srv.Addr(), srv.User(), srv.ClientKeyPath(), srv.WriteKnownHosts(t))
	if err != nil {
		t.Fatalf("NewEndpoint: %v", err)
	}
	return ep
}

// writeKey writes a new unencrypted ed25519 key (or one protected by
// passphrase) and returns its path.
func writeKey(t *testing.T, passphrase string) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var blk *pem.Block
	if passphrase == "" {
		blk, err = gossh.MarshalPrivateKey(priv, "")
	} else {
		blk, err = gossh.MarshalPrivateKeyWithPassphrase(priv, "", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func run(t *testing.T, c *gossh.Client, cmd string) error {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatalf("open session: %v", err)
	}
	defer sess.Close()
	return sess.Run(cmd)
}

func TestDialAndExitOf(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{Emulate: `case "$SSH_ORIGINAL_COMMAND" in
ok) echo fine ;;
fail) echo "no such thing" >&2; exit 3 ;;
term) kill -TERM $$ ;;
drop) kill -9 $PPID ;;
esac`})
	ep := endpoint(t, srv)
	if want := srv.Addr(); ep.Addr != want || ep.User != srv.User() || ep.Signer == nil {
		t.Fatalf("endpoint %+v, want address %s", ep, want)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, tt := range []struct {
		cmd  string
		want sshconn.Exit
	}{
		{"ok", sshconn.Exit{}},
		{"fail", sshconn.Exit{Status: 3}},
		{"term", sshconn.Exit{Signal: "TERM"}},
		{"drop", sshconn.Exit{Status: -1, Dropped: true}},
	} {
		c, err := ep.Dial(ctx, "dial", "h", unreachable)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		got := sshconn.ExitOf(run(t, c, tt.cmd))
		c.Close()
		if tt.want.Signal != "" {
			got.Status = 0 // the status of a killed command is not defined
		}
		if got != tt.want {
			t.Errorf("%s: ExitOf = %+v, want %+v", tt.cmd, got, tt.want)
		}
	}
	if got := strings.Join(srv.Commands(), ","); got != "ok,fail,term,drop" {
		t.Errorf("server ran %q", got)
	}
}

func TestDialFailures(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	t.Run("key refused", func(t *testing.T) {
		ep := endpoint(t, srv)
		other, err := sshconn.LoadKey(writeKey(t, ""))
		if err != nil {
			t.Fatal(err)
		}
		ep.Signer = other
		_, err = ep.Dial(ctx, "dial", "h", unreachable)
		e := wantClass(t, "Dial with a key the server does not know", err, provider.Auth)
		if e.Op != "dial" || e.Target != "h" || !strings.Contains(err.Error(), "refused") {
			t.Errorf("error %q (op %q, target %q)", err, e.Op, e.Target)
		}
	})

	t.Run("host key changed", func(t *testing.T) {
		ep := endpoint(t, srv)
		srv.RotateHostKey(t)
		_, err := ep.Dial(ctx, "dial", "h", unreachable)
		wantClass(t, "Dial after the host key changed", err, provider.Permanent)
		if !strings.Contains(err.Error(), "host key changed") || !strings.Contains(err.Error(), "SHA256:") {
			t.Errorf("error %q should say the key changed and show the presented fingerprint", err)
		}
	})

	t.Run("revoked", func(t *testing.T) {
		ep := endpoint(t, srv)
		line := srv.KnownHostsLine()
		fields := strings.Fields(line) // [host]:port type key
		revoked := "@revoked * " + strings.Join(fields[1:], " ") + "\n" + line + "\n"
		if err := os.WriteFile(ep.KnownHostsFile, []byte(revoked), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := ep.Dial(ctx, "dial", "h", unreachable)
		wantClass(t, "Dial to a revoked key", err, provider.Permanent)
		if !strings.Contains(err.Error(), "revoked") {
			t.Errorf("error %q should say the key is revoked", err)
		}
	})

	t.Run("nothing listening", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		kh := filepath.Join(t.TempDir(), "known_hosts")
		line := srv.KnownHostsLine()
		line = "[127.0.0.1]:" + addr[strings.LastIndex(addr, ":")+1:] + line[strings.Index(line, " "):]
		if err := os.WriteFile(kh, []byte(line+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		ep, err := sshconn.NewEndpoint(addr, srv.User(), srv.ClientKeyPath(), kh)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ep.Dial(ctx, "dial", "h", unreachable)
		wantClass(t, "Dial to a closed port", err, provider.Unreachable)
		if !strings.Contains(err.Error(), "dial "+addr) {
			t.Errorf("error %q should name the dial", err)
		}
	})
}

func TestNewEndpointRefuses(t *testing.T) {
	dir := t.TempDir()
	kh := filepath.Join(dir, "known_hosts")
	sshPub, err := gossh.NewSignerFromKey(ed25519.NewKeyFromSeed(make([]byte, 32)))
	if err != nil {
		t.Fatal(err)
	}
	line := "[other.example]:22 " + strings.TrimSpace(string(gossh.MarshalAuthorizedKey(sshPub.PublicKey())))
	if err := os.WriteFile(kh, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key := writeKey(t, "")
	for _, tt := range []struct {
		name, addr, key, kh, want string
	}{
		{"host not in known_hosts", "nas.example", key, kh, "has no key for nas.example "},
		{"no known_hosts", "other.example", key, filepath.Join(dir, "missing"), "known_hosts"},
		{"passphrase key", "other.example", writeKey(t, "secret"), kh, "passphrase-protected"},
		{"no key file", "other.example", filepath.Join(dir, "nokey"), kh, "read key file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sshconn.NewEndpoint(tt.addr, "u", tt.key, tt.kh)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewEndpoint = %v, want an error with %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q shows the passphrase", err)
			}
		})
	}
	ep, err := sshconn.NewEndpoint("other.example", "u", key, kh)
	if err != nil || ep.Addr != "other.example:22" {
		t.Fatalf("NewEndpoint = %+v, %v; want address other.example:22", ep, err)
	}
}

func TestProblems(t *testing.T) {
	if p := sshconn.Problems("h", "u", "k", "kh"); len(p) != 0 {
		t.Errorf("complete settings: %q", p)
	}
	got := strings.Join(sshconn.Problems("", "", "", ""), "; ")
	want := "address is empty; user is empty; key file is empty; known_hosts file is empty (the host key is always verified)"
	if got != want {
		t.Errorf("Problems = %q, want %q", got, want)
	}
}

func TestFailure(t *testing.T) {
	cause := errors.New("dial 10.0.0.1:22: connection refused")
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tt := range []struct {
		name   string
		ctx    context.Context
		closed bool
		want   provider.Class
	}{
		{"caller's context ended", ended, false, provider.Transient},
		{"caller's context ended after Close", ended, true, provider.Transient},
		{"provider closed", context.Background(), true, provider.Permanent},
		{"host not answering", context.Background(), false, provider.Unreachable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := sshconn.Failure(tt.ctx, tt.closed, "ShutdownHost", "nas1", cause)
			e := wantClass(t, tt.name, err, tt.want)
			if e.Op != "ShutdownHost" || e.Target != "nas1" || !strings.Contains(err.Error(), cause.Error()) {
				t.Errorf("error %q (op %q, target %q)", err, e.Op, e.Target)
			}
			if tt.want == provider.Transient && !errors.Is(err, context.Canceled) {
				t.Errorf("error %q does not wrap the context's error", err)
			}
			if tt.want == provider.Unreachable && !errors.Is(err, cause) {
				t.Errorf("error %q does not wrap the cause", err)
			}
		})
	}
}
