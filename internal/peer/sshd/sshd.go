// Package sshd starts a real OpenSSH server (/usr/sbin/sshd) on loopback for
// tests of SSH-based providers.
//
// The server never runs what the client asks for: every session runs a
// ForceCommand wrapper that first records $SSH_ORIGINAL_COMMAND and then runs
// the test's Emulate script, which answers like the emulated system (a Linux
// host, a Windows OpenSSH server, a NAS). A test that sends "poweroff" can
// therefore never power off the machine the tests run on.
//
// Everything (host key, client key, authorized_keys, config, logs) lives in
// t.TempDir(); the server is stopped by its PID when the test ends.
package sshd

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/sundown-ups/sundown/internal/peer"
)

// Binary is the OpenSSH server the harness runs.
const Binary = "/usr/sbin/sshd"

// Options configure Start.
type Options struct {
	// Emulate is the body of a /bin/sh script that answers each session
	// after the command has been recorded. It sees the client's command in
	// $SSH_ORIGINAL_COMMAND and the listener's pid file in $SSHD_PIDFILE
	// (so a script can emulate a host going down by stopping the
	// listener). Its stdout, stderr and exit status go to the client.
	// Because the wrapper execs /bin/sh, $PPID is the per-connection sshd
	// process: `kill -9 $PPID` drops the connection. "" means "exit 0".
	Emulate string
}

// Server is a running sshd.
type Server struct {
	dir      string
	port     int
	user     string
	conf     string
	logFile  string
	pidFile  string
	cmdLog   string
	pidLog   string
	script   string
	hostKey  string
	clientKy string

	mu      sync.Mutex
	cmd     *exec.Cmd
	waitErr chan error
	hostPub gossh.PublicKey
}

// Start starts sshd on 127.0.0.1 on a free port and stops it when t ends.
// It skips (or, with SUNDOWN_REQUIRE_PEERS=1, fails) the test when sshd is
// not installed.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	peer.NeedBinary(t, Binary, "apt-get install -y openssh-server")
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		peer.Missing(t, "cannot create /run/sshd (privilege separation directory): "+err.Error())
	}
	dir := t.TempDir()
	s := &Server{
		dir:      dir,
		conf:     filepath.Join(dir, "sshd_config"),
		logFile:  filepath.Join(dir, "sshd.log"),
		pidFile:  filepath.Join(dir, "sshd.pid"),
		cmdLog:   filepath.Join(dir, "commands.log"),
		pidLog:   filepath.Join(dir, "sessions.pid"),
		script:   filepath.Join(dir, "force.sh"),
		hostKey:  filepath.Join(dir, "host_ed25519"),
		clientKy: filepath.Join(dir, "client_ed25519"),
	}
	me, err := user.Current()
	if err != nil {
		t.Fatalf("sshd: current user: %v", err)
	}
	s.user = me.Username

	if err := s.writeHostKey(); err != nil {
		t.Fatalf("sshd: host key: %v", err)
	}
	clientPub, err := writeKey(s.clientKy)
	if err != nil {
		t.Fatalf("sshd: client key: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), gossh.MarshalAuthorizedKey(clientPub), 0o600); err != nil {
		t.Fatal(err)
	}
	emulate := o.Emulate
	if strings.TrimSpace(emulate) == "" {
		emulate = "exit 0"
	}
	// The wrapper records the command (NUL-terminated, so commands with
	// newlines survive) and its own PID (so Stop can end sessions that
	// are still running), then runs the emulation.
	script := "#!/bin/sh\n" +
		"printf '%s\\0' \"$SSH_ORIGINAL_COMMAND\" >> " + shq(s.cmdLog) + "\n" +
		"echo $$ >> " + shq(s.pidLog) + "\n" +
		"SSHD_PIDFILE=" + shq(s.pidFile) + "; export SSHD_PIDFILE\n" +
		emulate + "\n"
	if err := os.WriteFile(s.script, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	s.port = freePort(t)
	conf := fmt.Sprintf(`ListenAddress 127.0.0.1:%d
HostKey %s
PidFile %s
AuthorizedKeysFile %s
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PermitTTY no
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitUserEnvironment no
LogLevel VERBOSE
ForceCommand exec /bin/sh %s
`, s.port, s.hostKey, s.pidFile, filepath.Join(dir, "authorized_keys"), s.script)
	if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.start(); err != nil {
		t.Fatalf("sshd: %v\n%s", err, s.Log())
	}
	t.Cleanup(s.stop)
	return s
}

// Addr returns "127.0.0.1:PORT".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// User is the account the client logs in as.
func (s *Server) User() string { return s.user }

// ClientKeyPath is the private key (OpenSSH format, unencrypted) whose public
// half is in authorized_keys.
func (s *Server) ClientKeyPath() string { return s.clientKy }

// Dir is the server's temporary directory.
func (s *Server) Dir() string { return s.dir }

// KnownHostsLine is the known_hosts line for the current host key:
// "[127.0.0.1]:PORT ssh-ed25519 AAAA…".
func (s *Server) KnownHostsLine() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("[127.0.0.1]:%d %s", s.port, strings.TrimSpace(string(gossh.MarshalAuthorizedKey(s.hostPub))))
}

// WriteKnownHosts writes a known_hosts file with KnownHostsLine into a new
// temporary directory and returns its path.
func (s *Server) WriteKnownHosts(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(p, []byte(s.KnownHostsLine()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Commands returns the commands clients asked for, in order.
func (s *Server) Commands() []string {
	b, err := os.ReadFile(s.cmdLog)
	if err != nil || len(b) == 0 {
		return nil
	}
	parts := strings.Split(string(b), "\x00")
	return parts[:len(parts)-1] // every record ends with NUL
}

// Log returns sshd's log so far (for failure messages).
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logFile)
	return string(b)
}

// RotateHostKey gives the server a new host key and restarts it on the same
// port, so clients holding the old KnownHostsLine see a changed host key.
func (s *Server) RotateHostKey(t testing.TB) {
	t.Helper()
	s.stop()
	if err := s.writeHostKey(); err != nil {
		t.Fatalf("sshd: host key: %v", err)
	}
	if err := s.start(); err != nil {
		t.Fatalf("sshd restart: %v\n%s", err, s.Log())
	}
}

func (s *Server) writeHostKey() error {
	pub, err := writeKey(s.hostKey)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.hostPub = pub
	s.mu.Unlock()
	return nil
}

// writeKey writes a new ed25519 private key in OpenSSH format to path (0600)
// and returns its public key.
func writeKey(path string) (gossh.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := gossh.MarshalPrivateKey(priv, "sundown-test")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	return gossh.NewPublicKey(pub)
}

// start runs sshd in the foreground (-D) and waits until it accepts
// connections.
func (s *Server) start() error {
	cmd := exec.Command(Binary, "-D", "-f", s.conf, "-E", s.logFile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", Binary, err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	s.mu.Lock()
	s.cmd, s.waitErr = cmd, waitErr
	s.mu.Unlock()

	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-waitErr:
			waitErr <- err // let stop see it too
			return fmt.Errorf("sshd exited before listening: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sshd not listening on %s after 10s", s.Addr())
		}
	}
}

// stop ends the listener by its PID, then any session wrapper still running.
// Idempotent.
func (s *Server) stop() {
	s.mu.Lock()
	cmd, waitErr := s.cmd, s.waitErr
	s.cmd, s.waitErr = nil, nil
	s.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-waitErr:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-waitErr
		}
	}
	s.killSessions()
}

// killSessions kills the session wrappers this server started that are
// still alive, checking each PID's command line first so a reused PID is
// never touched.
func (s *Server) killSessions() {
	b, err := os.ReadFile(s.pidLog)
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 {
			continue
		}
		cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cl, []byte(s.script)) {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			continue
		}
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("sshd: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// shq quotes s for /bin/sh.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
