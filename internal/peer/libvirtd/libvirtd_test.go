package libvirtd

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestStartServesTestDriver(t *testing.T) {
	s := Start(t)
	if n := len(s.Socket()); n >= 108 {
		t.Fatalf("socket path %d bytes, want < 108: %s", n, s.Socket())
	}
	if err := syscall.Kill(s.PID(), 0); err != nil {
		t.Fatalf("libvirtd PID %d not alive: %v", s.PID(), err)
	}
	node, err := WriteNode(s.Dir(), []Domain{
		{Name: "alpha", UUID: "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"},
		{Name: "beta", UUID: "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb", Off: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(node) {
		t.Fatalf("WriteNode path %q not absolute", node)
	}
	// Cross-check with the reference client when it is installed.
	if virsh, err := exec.LookPath("virsh"); err == nil {
		out, err := exec.Command(virsh, "-c", s.NodeURI(node), "list", "--all", "--name").CombinedOutput()
		if err != nil {
			t.Fatalf("virsh list: %v: %s", err, out)
		}
		if got := strings.Fields(string(out)); strings.Join(got, ",") != "alpha,beta" {
			t.Errorf("virsh list --all --name = %q, want alpha, beta", got)
		}
		out, err = exec.Command(virsh, "-c", s.NodeURI(node), "domstate", "beta").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "shut off" {
			t.Errorf("virsh domstate beta = %q (%v), want shut off", out, err)
		}
	}

	s.Stop()
	if _, err := net.Dial("unix", s.Socket()); err == nil {
		t.Fatal("socket still accepts connections after Stop")
	}
	s.Stop() // idempotent
}

func TestWriteNodeRejectsMarkup(t *testing.T) {
	dir := t.TempDir()
	if _, err := WriteNode(dir, []Domain{{Name: "<x>", UUID: "u"}}); err == nil {
		t.Fatal("WriteNode accepted a name with markup")
	}
	if _, err := os.Stat(filepath.Join(dir, "node.xml")); err == nil {
		t.Fatal("unexpected node.xml")
	}
}
