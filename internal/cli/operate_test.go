package cli

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// `sundown run` serves the API; `sundown status` reads it; `sundown
// trigger` feeds the config's trigger UPS, which the policy then sees on
// battery, and with the token only.
func TestRunServesStatusAndTrigger(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	cfg := filepath.Join(dir, "sundown.yaml")
	yml := "state_dir: " + filepath.Join(dir, "state") + "\n" +
		"power: {poll_interval: 100ms, on_battery_delay: 1h}\n" +
		"ups:\n  - name: powerchute\n    trigger: {}\n" +
		"api: {listen: \"" + addr + "\", token_file: " + token + "}\n"
	if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out, errs lockedBuffer
	done := make(chan int, 1)
	go func() { done <- Main(ctx, []string{"run", "-c", cfg}, &out, &errs) }()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("run exited %d:\n%s", code, errs.String())
		}
		if strings.Contains(errs.String(), "s3cret-token") {
			t.Error("the token is in the daemon's log")
		}
	}()

	waitStatus := func(want string) string {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			code, sout, serr := run(t, context.Background(), "status", "-c", cfg)
			if strings.Contains(sout, want) {
				return sout
			}
			if time.Now().After(deadline) {
				t.Fatalf("status never showed %q: exit %d\n%s%s\ndaemon:\n%s", want, code, sout, serr, errs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	sout := waitStatus("ups powerchute")
	if !strings.Contains(sout, "ok   ups powerchute") || !strings.Contains(sout, "on line") {
		t.Errorf("status before the trigger:\n%s", sout)
	}

	code, tout, terr := run(t, context.Background(), "trigger", "-c", cfg, "--kind", "onbattery", "--reason", "PowerChute: on battery")
	if code != 0 || !strings.Contains(tout, "accepted") {
		t.Fatalf("trigger: exit %d %q %q", code, tout, terr)
	}
	sout = waitStatus("on battery")
	if !strings.Contains(sout, "decision: warn") {
		t.Errorf("status after the trigger:\n%s", sout)
	}
	code, sout, _ = run(t, context.Background(), "status", "-c", cfg)
	if code != 1 {
		t.Errorf("status exit %d while on battery, want 1:\n%s", code, sout)
	}

	// A wrong token is refused and changes nothing.
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(filepath.Join(dir, "token2"), []byte("wrong"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(strings.Replace(yml, token, filepath.Join(dir, "token2"), 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, terr := run(t, context.Background(), "trigger", "-c", bad, "--kind", "clear"); code == 0 || !strings.Contains(terr, "401") {
		t.Errorf("trigger with a wrong token: exit %d, %q", code, terr)
	}
	waitStatus("on battery")

	if code, _, terr := run(t, context.Background(), "trigger", "-c", cfg, "--kind", "clear"); code != 0 {
		t.Fatalf("trigger clear: exit %d %q", code, terr)
	}
	waitStatus("on line")
	audit, err := os.ReadFile(filepath.Join(dir, "state", "audit.jsonl"))
	if err != nil || strings.Count(string(audit), "\n") < 3 || strings.Contains(string(audit), "s3cret") {
		t.Errorf("audit log (%v):\n%s", err, audit)
	}
}

func TestRestoreWithNothingToRestore(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sundown.yaml")
	yml := "state_dir: " + dir + "\nups:\n  - name: a\n    trigger: {}\n"
	if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "journal.jsonl"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := run(t, context.Background(), "restore", "-c", cfg, "--dry-run")
	if code != 0 || !strings.Contains(out, "nothing to restore") {
		t.Errorf("exit %d, %q %q", code, out, errs)
	}
	if code, _, errs := run(t, context.Background(), "restore", "-c", cfg); code != 2 || !strings.Contains(errs, "--yes") {
		t.Errorf("restore without --yes: exit %d %q", code, errs)
	}
}
