package proc

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStopTerminates(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "out.log")
	p, err := Start("sleeper", "/bin/sh", []string{"-c", "echo hello; exec sleep 30"}, os.Environ(), log)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(log)
		if strings.Contains(string(b), "hello") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log %q lacks the child's output", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p.Exited() {
		t.Fatal("exited early")
	}
	begin := time.Now()
	if err := p.Stop(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("SIGTERM stop took %v", d)
	}
	if !p.Exited() || p.ExitErr() == nil {
		t.Errorf("Exited=%v ExitErr=%v, want exited by a signal", p.Exited(), p.ExitErr())
	}
	if err := p.Stop(time.Second); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestStopEscalatesAndReachesGroup(t *testing.T) {
	dir := t.TempDir()
	// The shell ignores SIGTERM and keeps a grandchild: SIGKILL to the group
	// must take both.
	marker := filepath.Join(dir, "child.pid")
	script := "trap '' TERM; sleep 30 & echo $! > " + marker + "; wait; while :; do sleep 1; done"
	p, err := Start("stubborn", "/bin/sh", []string{"-c", script}, os.Environ(), filepath.Join(dir, "out.log"))
	if err != nil {
		t.Fatal(err)
	}
	var child int
	deadline := time.Now().Add(5 * time.Second)
	for child == 0 && time.Now().Before(deadline) {
		b, _ := os.ReadFile(marker)
		child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		time.Sleep(10 * time.Millisecond)
	}
	if child == 0 {
		t.Fatal("grandchild pid not written")
	}
	begin := time.Now()
	if err := p.Stop(300 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d < 300*time.Millisecond {
		t.Errorf("stopped after %v although SIGTERM is ignored", d)
	}
	// The grandchild was reparented; it must be gone (or a zombie about to be
	// reaped by init) shortly.
	deadline = time.Now().Add(2 * time.Second)
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(child) + "/stat")
		if err != nil || strings.Contains(string(b), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(child, syscall.SIGKILL)
			t.Fatalf("grandchild %d survived the group SIGKILL", child)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStartMissingBinary(t *testing.T) {
	_, err := Start("nothing", "/nonexistent/binary", nil, nil, filepath.Join(t.TempDir(), "x.log"))
	if err == nil {
		t.Fatal("want an error")
	}
}
