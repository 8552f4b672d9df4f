// Package daemon runs a private libvirtd that serves only libvirt's
// stateless test driver ("test:///…"): its own configuration, socket folder,
// PID file and logs under a short temporary folder, and no state drivers
// (LIBVIRT_DRIVER_DIR points at an empty folder), so it needs no QEMU, no
// libvirt-qemu user and touches nothing of the machine's libvirt.
//
// It is an ordinary package (it does not import testing): the test harness
// internal/peer/libvirtd and the demo fleet
// internal/provider/libvirt/libvirtdemo both start their libvirtd here.
//
// Clients connect over the unix socket with URIs such as
// test+unix:///default?socket=<sock> (the driver's shared default host) or
// test+unix:///<abs>/node.xml?socket=<sock> (a custom inventory; every
// connection gets its own private copy of it). The default host keeps its
// state while at least one connection to it is open and resets when the
// last one closes.
//
// The daemon is a child process owned by the caller: started in its own
// process group, killed by the kernel if the starting program dies
// (PR_SET_PDEATHSIG), and stopped by its PID.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sundown-ups/sundown/internal/peer/nutd/proc"
)

// Binary is where Debian installs libvirtd.
const Binary = "/usr/sbin/libvirtd"

// InstallHint says how to get Binary.
const InstallHint = "apt-get install -y libvirt-daemon libvirt-clients"

// binary is Binary; tests point it elsewhere.
var binary = Binary

// ErrNotInstalled is returned (wrapped) by Start when Binary is missing or
// not executable.
var ErrNotInstalled = errors.New("libvirtd is not installed (" + Binary + "; " + InstallHint + ")")

// ReadyTimeout bounds the wait for the socket after the start.
const ReadyTimeout = 10 * time.Second

// stopGrace is how long Stop waits after SIGTERM before SIGKILL.
const stopGrace = 5 * time.Second

// Daemon is a running libvirtd.
type Daemon struct {
	dir  string
	sock string
	p    *proc.Proc
}

// Start starts libvirtd in a new folder under the system's temporary
// folder and waits until its socket accepts connections (at most
// ReadyTimeout, or until ctx ends). The caller must call Stop.
func Start(ctx context.Context) (*Daemon, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start libvirtd: %w", err)
	}
	bin, err := exec.LookPath(binary)
	if err != nil {
		return nil, fmt.Errorf("start libvirtd: %w", ErrNotInstalled)
	}
	// Unix socket paths must stay under 108 bytes: use a short folder.
	dir, err := os.MkdirTemp("", "lvd")
	if err != nil {
		return nil, fmt.Errorf("start libvirtd: %w", err)
	}
	d := &Daemon{dir: dir, sock: filepath.Join(dir, "run", "libvirt-sock")}
	if err := d.start(ctx, bin); err != nil {
		d.Stop()
		return nil, err
	}
	return d, nil
}

func (d *Daemon) start(ctx context.Context, bin string) error {
	if n := len(d.sock); n >= 108 {
		return fmt.Errorf("start libvirtd: socket path %s is %d bytes, the limit is 107 (set TMPDIR to a shorter folder)", d.sock, n)
	}
	for _, sub := range []string{"run", "drivers"} {
		if err := os.Mkdir(filepath.Join(d.dir, sub), 0o700); err != nil {
			return fmt.Errorf("start libvirtd: %w", err)
		}
	}
	conf := fmt.Sprintf(`unix_sock_dir = %q
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:%s"
`, filepath.Join(d.dir, "run"), filepath.Join(d.dir, "libvirtd.log"))
	confPath := filepath.Join(d.dir, "libvirtd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("start libvirtd: %w", err)
	}
	env := append(os.Environ(), "LIBVIRT_DRIVER_DIR="+filepath.Join(d.dir, "drivers"))
	p, err := proc.Start("libvirtd", bin, []string{"-f", confPath, "-p", filepath.Join(d.dir, "libvirtd.pid")},
		env, filepath.Join(d.dir, "stderr.log"))
	if err != nil {
		return err
	}
	d.p = p

	deadline := time.Now().Add(ReadyTimeout)
	for {
		if p.Exited() {
			return fmt.Errorf("libvirtd exited at start (%v): %s", p.ExitErr(), d.Logs())
		}
		if c, err := net.DialTimeout("unix", d.sock, time.Second); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("libvirtd socket %s not ready after %s: %s", d.sock, ReadyTimeout, d.Logs())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("start libvirtd: %w", ctx.Err())
		case <-p.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Logs returns what libvirtd wrote so far (its stderr and its log file),
// for error messages.
func (d *Daemon) Logs() string {
	var b strings.Builder
	for _, f := range []string{"stderr.log", "libvirtd.log"} {
		data, _ := os.ReadFile(filepath.Join(d.dir, f))
		b.Write(data)
	}
	return strings.TrimSpace(b.String())
}

// Socket is the read-write unix socket path.
func (d *Daemon) Socket() string { return d.sock }

// Dir is the daemon's private folder (a short path; node files may be
// written here). Stop removes it.
func (d *Daemon) Dir() string { return d.dir }

// PID is the daemon's process ID.
func (d *Daemon) PID() int { return d.p.PID() }

// URI is the URI of the test driver's shared default host.
func (d *Daemon) URI() string { return "test+unix:///default?socket=" + d.sock }

// NodeURI is the URI of a custom test driver inventory file (an absolute
// path, see WriteNode).
func (d *Daemon) NodeURI(nodeXML string) string {
	return "test+unix://" + nodeXML + "?socket=" + d.sock
}

// Exited reports whether the daemon has exited.
func (d *Daemon) Exited() bool { return d.p == nil || d.p.Exited() }

// Stop stops the daemon by its PID (SIGTERM, then SIGKILL after 5 s),
// waits for it and removes its folder. It is idempotent.
func (d *Daemon) Stop() error {
	var err error
	if d.p != nil {
		err = d.p.Stop(stopGrace)
	}
	if rerr := os.RemoveAll(d.dir); rerr != nil && err == nil {
		err = fmt.Errorf("stop libvirtd: %w", rerr)
	}
	return err
}

// Kill kills the daemon at once with SIGKILL by its PID, as a crash would,
// and waits for it to exit. Its folder stays until Stop.
func (d *Daemon) Kill() {
	if d.p == nil {
		return
	}
	_ = d.p.Signal(syscall.SIGKILL)
	<-d.p.Done()
}

// Domain describes one test-driver domain for WriteNode.
type Domain struct {
	Name string
	UUID string // lower-case canonical form
	Off  bool   // starts shut off (<test:runstate>5</test:runstate>)
}

// NodeXML returns a test driver inventory with the given domains.
func NodeXML(domains []Domain) (string, error) {
	var b strings.Builder
	b.WriteString("<node>\n")
	for _, d := range domains {
		x, err := d.XML()
		if err != nil {
			return "", err
		}
		b.WriteString(x)
	}
	b.WriteString("</node>\n")
	return b.String(), nil
}

// XML returns the domain's definition for the test driver, as in a node
// file or for DomainDefineXML.
func (d Domain) XML() (string, error) {
	if strings.ContainsAny(d.Name+d.UUID, "<>&'\"") {
		return "", errors.New("libvirtd: domain name or uuid needs no XML escaping")
	}
	x := fmt.Sprintf(`<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
  <name>%s</name><uuid>%s</uuid><memory>65536</memory><os><type>hvm</type></os>
`, d.Name, d.UUID)
	if d.Off {
		x += "  <test:runstate>5</test:runstate>\n"
	}
	return x + "</domain>\n", nil
}

// WriteNode writes a test driver inventory with the given domains to
// dir/node.xml and returns its absolute path.
func WriteNode(dir string, domains []Domain) (string, error) {
	x, err := NodeXML(domains)
	if err != nil {
		return "", err
	}
	p, err := filepath.Abs(filepath.Join(dir, "node.xml"))
	if err != nil {
		return "", err
	}
	return p, os.WriteFile(p, []byte(x), 0o600)
}
