package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/sundown-ups/sundown/internal/peer"
)

func TestStartStop(t *testing.T) {
	peer.NeedBinary(t, Binary, InstallHint)
	d, err := Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop() })
	pid := d.PID()
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("libvirtd PID %d not alive: %v", pid, err)
	}
	if !strings.HasPrefix(d.URI(), "test+unix:///default?socket=/") || !strings.HasSuffix(d.URI(), d.Socket()) {
		t.Errorf("URI %q", d.URI())
	}
	if err := d.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !d.Exited() {
		t.Error("Exited() = false after Stop")
	}
	if _, err := net.Dial("unix", d.Socket()); err == nil {
		t.Error("socket still accepts connections after Stop")
	}
	if _, err := os.Stat(d.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("folder %s still there after Stop: %v", d.Dir(), err)
	}
	if err := d.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestKillKeepsFolder(t *testing.T) {
	peer.NeedBinary(t, Binary, InstallHint)
	d, err := Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop() })
	d.Kill()
	if !d.Exited() {
		t.Fatal("Exited() = false after Kill")
	}
	if _, err := os.Stat(d.Dir()); err != nil {
		t.Errorf("folder gone after Kill: %v", err)
	}
}

func TestNotInstalled(t *testing.T) {
	old := binary
	binary = "/nonexistent/sbin/libvirtd"
	t.Cleanup(func() { binary = old })
	d, err := Start(context.Background())
	if !errors.Is(err, ErrNotInstalled) || d != nil {
		t.Fatalf("Start = %v, %v; want ErrNotInstalled", d, err)
	}
	if !strings.Contains(err.Error(), "apt-get install") {
		t.Errorf("error %q does not say how to install", err)
	}
}

func TestStartHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, err := Start(ctx)
	if !errors.Is(err, context.Canceled) || d != nil {
		t.Fatalf("Start with a cancelled context = %v, %v; want context.Canceled", d, err)
	}
}

func TestNodeXML(t *testing.T) {
	x, err := NodeXML([]Domain{{Name: "a", UUID: "u1"}, {Name: "b", UUID: "u2", Off: true}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(x, "<domain ") != 2 || strings.Count(x, "<test:runstate>5</test:runstate>") != 1 ||
		!strings.HasPrefix(x, "<node>\n") || !strings.HasSuffix(x, "</node>\n") {
		t.Errorf("NodeXML:\n%s", x)
	}
	if _, err := NodeXML([]Domain{{Name: "a&b", UUID: "u"}}); err == nil {
		t.Error("a name that needs escaping was accepted")
	}
}
