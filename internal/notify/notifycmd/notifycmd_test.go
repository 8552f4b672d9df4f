package notifycmd

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/notify"
)

var testMsg = notify.Message{
	At:       time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC),
	Type:     "ONBATT",
	UPS:      "rack-a@127.0.0.1",
	Severity: notify.SeverityWarning,
	Subject:  `UPS rack-a on battery; $(touch /tmp/pwned) "quoted"`,
	Body:     "line one\nline two",
	Vars:     map[string]string{"ups.status": "OB"},
}

func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustNew(t *testing.T, c Config) *Cmd {
	t.Helper()
	cmd, err := New(c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return cmd
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestUpsmonCompatibleRun(t *testing.T) {
	dir := t.TempDir()
	// Like an upsmon NOTIFYCMD script: reads $NOTIFYTYPE, $UPSNAME and $1.
	script := writeScript(t, dir, "notify.sh", `
out="$(dirname "$0")"
printf '%s' "$1" > "$out/arg1"
printf '%s' "$#" > "$out/argc"
printf 'NOTIFYTYPE=%s\nUPSNAME=%s\nSUNDOWN_SEVERITY=%s\nSUNDOWN_AT=%s\nTOKEN=%s\n' \
  "$NOTIFYTYPE" "$UPSNAME" "$SUNDOWN_SEVERITY" "$SUNDOWN_AT" "$TOKEN" > "$out/env"
printf '%s' "$SUNDOWN_BODY" > "$out/body"
pwd > "$out/pwd"
cat > "$out/stdin"
`)
	c := mustNew(t, Config{Command: []string{script}, Env: map[string]config.Secret{"TOKEN": config.NewSecret("s3cret")}})
	if c.Name() != "exec notify.sh" {
		t.Errorf("Name = %q", c.Name())
	}
	if err := c.Send(context.Background(), testMsg); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if got := readFile(t, filepath.Join(dir, "arg1")); got != testMsg.Subject {
		t.Errorf("$1 = %q, want the subject verbatim (no shell)", got)
	}
	if got := readFile(t, filepath.Join(dir, "argc")); got != "1" {
		t.Errorf("$# = %s, want 1", got)
	}
	wantEnv := "NOTIFYTYPE=ONBATT\nUPSNAME=rack-a@127.0.0.1\nSUNDOWN_SEVERITY=warning\nSUNDOWN_AT=2026-03-04T05:06:07Z\nTOKEN=s3cret\n"
	if diff := cmp.Diff(wantEnv, readFile(t, filepath.Join(dir, "env"))); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	if got := readFile(t, filepath.Join(dir, "body")); got != testMsg.Body {
		t.Errorf("SUNDOWN_BODY = %q", got)
	}
	if got := strings.TrimSpace(readFile(t, filepath.Join(dir, "pwd"))); got != "/" {
		t.Errorf("working dir = %q, want /", got)
	}
	var body notify.JSONBody
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dir, "stdin"))), &body); err != nil {
		t.Fatalf("stdin JSON: %v", err)
	}
	if body.Type != "ONBATT" || body.Vars["ups.status"] != "OB" || body.At != "2026-03-04T05:06:07Z" {
		t.Errorf("stdin JSON = %+v", body)
	}
	if _, err := os.Stat("/tmp/pwned"); err == nil {
		t.Error("/tmp/pwned exists: the message reached a shell")
	}
}

func TestExtraArgsComeBeforeMessage(t *testing.T) {
	dir := t.TempDir()
	script := writeScript(t, dir, "args.sh", `printf '%s|' "$@" > "$(dirname "$0")/args"`)
	c := mustNew(t, Config{Name: "pager", Command: []string{script, "--to", "ops"}})
	if err := c.Send(context.Background(), notify.Message{Type: "ONLINE", Body: "power back\nmore"}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "args")); got != "--to|ops|power back|" {
		t.Errorf("args = %q", got)
	}
}

func TestNonZeroExit(t *testing.T) {
	dir := t.TempDir()
	script := writeScript(t, dir, "fail.sh", "echo 'smtp relay refused us' >&2\nexit 3\n")
	c := mustNew(t, Config{Command: []string{script}, Env: map[string]config.Secret{"PW": config.NewSecret("hunter2")}})
	err := c.Send(context.Background(), testMsg)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 3 || ee.Stderr != "smtp relay refused us" {
		t.Fatalf("err = %v, want exit code 3 with stderr", err)
	}
	if notify.IsPermanent(err) {
		t.Error("a non-zero exit should be retryable")
	}
	if want := "notify exec exec fail.sh: exit code 3: smtp relay refused us"; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Error("secret in error")
	}
}

// procGone reports whether pid no longer runs (absent or a zombie).
func procGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

func TestTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	// The script starts a grandchild and both hang.
	script := writeScript(t, dir, "hang.sh", `
out="$(dirname "$0")"
sleep 300 &
echo $! > "$out/child.tmp" && mv "$out/child.tmp" "$out/child"
echo $$ > "$out/self.tmp" && mv "$out/self.tmp" "$out/self"
wait
`)
	c := mustNew(t, Config{Command: []string{script}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Send(ctx, testMsg) }()

	// Wait until both processes are running, then end the attempt.
	deadline := time.Now().Add(10 * time.Second)
	var pids []int
	for len(pids) < 2 {
		pids = pids[:0]
		for _, f := range []string{"self", "child"} {
			if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					pids = append(pids, pid)
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("script did not start")
		}
		time.Sleep(5 * time.Millisecond) // real-process poll
	}
	cancel()
	err := <-done
	if err == nil || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "killed after") {
		t.Fatalf("err = %v", err)
	}
	for _, pid := range pids {
		for !procGone(pid) {
			if time.Now().After(deadline) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("pid %d survived the timeout", pid)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func TestNotifierTimeoutAndStats(t *testing.T) {
	dir := t.TempDir()
	script := writeScript(t, dir, "slow.sh", "exec sleep 300\n")
	c := mustNew(t, Config{Name: "hook", Command: []string{script}})
	n, err := notify.New([]notify.Route{{Channel: c, Timeout: 200 * time.Millisecond}}, notify.Options{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { _ = n.Run(ctx); close(ran) }()
	defer func() { cancel(); <-ran }()
	n.Notify(testMsg)
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := n.Stats()[0]
		if s.GaveUp == 1 {
			if !s.Down || !strings.Contains(s.LastError, "timed out after 200ms") {
				t.Errorf("stats: %+v", s)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no timeout recorded: %+v", s)
		}
		time.Sleep(5 * time.Millisecond) // real-process poll
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("empty command accepted")
	}
	if _, err := New(Config{Command: []string{"/nonexistent/notify.sh"}}); err == nil {
		t.Error("missing command accepted")
	}
	if _, err := New(Config{Command: []string{"/bin/true"}, Env: map[string]config.Secret{"A=B": {}}}); err == nil {
		t.Error("bad env name accepted")
	}
	c := mustNew(t, Config{Command: []string{"true"}})
	if c.path == "true" || !filepath.IsAbs(c.path) {
		t.Errorf("path not resolved: %q", c.path)
	}
}
