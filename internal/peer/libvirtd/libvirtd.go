// Package libvirtd starts a real libvirtd for tests, through
// internal/peer/libvirtd/daemon: its own configuration, socket folder and
// PID file under a short temporary folder, no state drivers
// (LIBVIRT_DRIVER_DIR points at an empty folder), so only the stateless test
// driver ("test:///…") is served. Clients connect over the unix socket with
// URIs such as test+unix:///default?socket=<sock> or
// test+unix:///<abs>/node.xml?socket=<sock> for a custom inventory.
//
// The test driver keeps its state while at least one connection to a given
// URI is open and resets when the last one closes: a test keeps one
// connection open for its whole run.
package libvirtd

import (
	"context"
	"testing"

	"github.com/sundown-ups/sundown/internal/peer"
	"github.com/sundown-ups/sundown/internal/peer/libvirtd/daemon"
)

// Binary is where Debian installs libvirtd.
const Binary = daemon.Binary

// InstallHint says how to get Binary.
const InstallHint = daemon.InstallHint

// Server is a running libvirtd owned by one test. Socket, Dir, PID, URI,
// NodeURI, Kill and Logs come from daemon.Daemon.
type Server struct {
	*daemon.Daemon
}

// Start starts libvirtd and waits until its socket accepts connections. It
// skips (or fails with SUNDOWN_REQUIRE_PEERS=1) when libvirtd is missing.
// The daemon is stopped by PID, and its folder removed, in t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	peer.NeedBinary(t, Binary, InstallHint)
	d, err := daemon.Start(context.Background())
	if err != nil {
		t.Fatalf("libvirtd: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("libvirtd: %v", err)
		}
	})
	return &Server{Daemon: d}
}

// Stop stops the daemon by its PID (SIGTERM, then SIGKILL after 5 s),
// waits for it and removes its folder. Safe to call more than once;
// t.Cleanup calls it too.
func (s *Server) Stop() { _ = s.Daemon.Stop() }

// Domain describes one test-driver domain for WriteNode.
type Domain = daemon.Domain

// WriteNode writes a test driver inventory with the given domains to
// dir/node.xml and returns its absolute path.
func WriteNode(dir string, domains []Domain) (string, error) {
	return daemon.WriteNode(dir, domains)
}
