package libvirtdemo

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/sundown-ups/sundown/internal/peer/libvirtd/daemon"
)

// Without libvirtd, Start fails with an error the demo recognises with
// errors.Is(err, ErrNoLibvirtd) and can print as its one-line note.
func TestStartWithoutLibvirtd(t *testing.T) {
	old := startDaemon
	startDaemon = func(context.Context) (*daemon.Daemon, error) {
		return nil, fmt.Errorf("start libvirtd: %w", daemon.ErrNotInstalled)
	}
	t.Cleanup(func() { startDaemon = old })
	s, err := Start(context.Background(), nil)
	if s != nil || !errors.Is(err, ErrNoLibvirtd) {
		t.Fatalf("Start = %v, %v; want an error wrapping ErrNoLibvirtd", s, err)
	}
	if want := "libvirt demo site: start libvirtd: libvirtd is not installed (/usr/sbin/libvirtd; apt-get install -y libvirt-daemon libvirt-clients)"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}
