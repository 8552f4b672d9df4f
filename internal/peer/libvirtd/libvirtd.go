// Package libvirtd starts a real libvirtd for tests: its own configuration,
// socket folder and PID file under a short temporary folder, no state
// drivers (LIBVIRT_DRIVER_DIR points at an empty folder), so only the
// stateless test driver ("test:///…") is served. Clients connect over the
// unix socket with URIs such as test+unix:///default?socket=<sock> or
// test+unix:///<abs>/node.xml?socket=<sock> for a custom inventory.
//
// The test driver keeps its state while at least one connection to a given
// URI is open and resets when the last one closes: a test keeps one
// connection open for its whole run.
package libvirtd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/peer"
)

// Binary is where Debian installs libvirtd.
const Binary = "/usr/sbin/libvirtd"

// InstallHint says how to get Binary.
const InstallHint = "apt-get install -y libvirt-daemon libvirt-clients"

// Server is a running libvirtd owned by one test.
type Server struct {
	dir     string
	sock    string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// Start starts libvirtd and waits until its socket accepts connections. It
// skips (or fails with SUNDOWN_REQUIRE_PEERS=1) when libvirtd is missing.
// The daemon is stopped by PID in t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := peer.NeedBinary(t, Binary, InstallHint)
	// Unix socket paths must stay under 108 bytes: t.TempDir() embeds the
	// test name and can be long, so use a short folder of our own.
	dir, err := os.MkdirTemp("", "lvd")
	if err != nil {
		t.Fatalf("libvirtd temp dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Server{dir: dir, sock: filepath.Join(dir, "run", "libvirt-sock"), exited: make(chan struct{})}
	for _, d := range []string{"run", "drivers"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatalf("libvirtd: %v", err)
		}
	}
	conf := fmt.Sprintf(`unix_sock_dir = %q
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:%s"
`, filepath.Join(dir, "run"), filepath.Join(dir, "libvirtd.log"))
	confPath := filepath.Join(dir, "libvirtd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatalf("libvirtd config: %v", err)
	}
	out, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		t.Fatalf("libvirtd: %v", err)
	}
	cmd := exec.Command(bin, "-f", confPath, "-p", filepath.Join(dir, "libvirtd.pid"))
	cmd.Env = append(os.Environ(), "LIBVIRT_DRIVER_DIR="+filepath.Join(dir, "drivers"))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("start libvirtd: %v", err)
	}
	s.cmd = cmd
	go func() {
		s.waitErr = cmd.Wait()
		out.Close()
		close(s.exited)
	}()
	t.Cleanup(s.Stop)

	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-s.exited:
			t.Fatalf("libvirtd exited at start (%v): %s", s.waitErr, s.logs())
		default:
		}
		if c, err := net.DialTimeout("unix", s.sock, time.Second); err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("libvirtd socket %s not ready after 10s: %s", s.sock, s.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) logs() string {
	var b strings.Builder
	for _, f := range []string{"stderr.log", "libvirtd.log"} {
		data, _ := os.ReadFile(filepath.Join(s.dir, f))
		b.Write(data)
	}
	return b.String()
}

// Socket is the read-write unix socket path.
func (s *Server) Socket() string { return s.sock }

// Dir is the server's private folder (short path; nodes may be written here).
func (s *Server) Dir() string { return s.dir }

// PID is the daemon's process ID.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// URI is the go-libvirt/virsh URI of the test driver's default inventory.
func (s *Server) URI() string { return "test+unix:///default?socket=" + s.sock }

// NodeURI is the URI of a custom test driver inventory file (absolute path).
func (s *Server) NodeURI(nodeXML string) string {
	return "test+unix://" + nodeXML + "?socket=" + s.sock
}

// Stop stops the daemon by its PID (SIGTERM, then SIGKILL after 5 s) and
// waits for it. Safe to call more than once; t.Cleanup calls it too.
func (s *Server) Stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// Kill kills the daemon at once with SIGKILL by its PID, as a crash would,
// and waits for it to exit.
func (s *Server) Kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// Domain describes one test-driver domain for WriteNode.
type Domain struct {
	Name string
	UUID string // lower-case canonical form
	Off  bool   // starts shut off (<test:runstate>5</test:runstate>)
}

// WriteNode writes a test driver inventory with the given domains to
// dir/node.xml and returns its absolute path.
func WriteNode(dir string, domains []Domain) (string, error) {
	var b strings.Builder
	b.WriteString("<node>\n")
	for _, d := range domains {
		if strings.ContainsAny(d.Name+d.UUID, "<>&'\"") {
			return "", errors.New("libvirtd: domain name or uuid needs no XML escaping")
		}
		fmt.Fprintf(&b, `<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
  <name>%s</name><uuid>%s</uuid><memory>65536</memory><os><type>hvm</type></os>
`, d.Name, d.UUID)
		if d.Off {
			b.WriteString("  <test:runstate>5</test:runstate>\n")
		}
		b.WriteString("</domain>\n")
	}
	b.WriteString("</node>\n")
	p, err := filepath.Abs(filepath.Join(dir, "node.xml"))
	if err != nil {
		return "", err
	}
	return p, os.WriteFile(p, []byte(b.String()), 0o600)
}
