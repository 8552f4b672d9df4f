package app_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/peer/sshd"
	"github.com/sundown-ups/sundown/internal/plan"
)

// SSH hooks against a real OpenSSH sshd whose ForceCommand records the
// command and answers like the emulated host: success, a failing command
// with its message, and a changed host key refused before anything runs.
func TestSSHHook(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{Emulate: `case "$SSH_ORIGINAL_COMMAND" in
  pause-backups) echo paused ;;
  *) echo "unknown job: $SSH_ORIGINAL_COMMAND" >&2; exit 4 ;;
esac`})
	known := srv.WriteKnownHosts(t)
	conn := `address: "` + srv.Addr() + `", user: ` + srv.User() + `, key_file: ` + srv.ClientKeyPath() + `, known_hosts_file: ` + known
	c := testConfig(t, `ups:
  - name: rack
    nut: {address: 127.0.0.1, ups: u}
shutdown:
  hooks:
    - {name: backups, ssh: {`+conn+`, command: pause-backups}}
    - {name: typo, ssh: {`+conn+`, command: pause-backupz}}
`)
	run := app.RunHook(c)
	hook := func(name string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return run(ctx, plan.Step{Name: name, Kind: plan.StepHook})
	}
	if err := hook("backups"); err != nil {
		t.Fatalf("ssh hook: %v\n%s", err, srv.Log())
	}
	if err := hook("typo"); err == nil || !strings.Contains(err.Error(), "exited 4") || !strings.Contains(err.Error(), "unknown job") {
		t.Errorf("failing ssh hook: %v, want its exit status and message", err)
	}
	if got := srv.Commands(); len(got) != 2 || got[0] != "pause-backups" {
		t.Errorf("sshd ran %q", got)
	}
	srv.RotateHostKey(t)
	if err := hook("backups"); err == nil || !strings.Contains(err.Error(), "host key changed") {
		t.Errorf("changed host key: %v", err)
	}
	if got := srv.Commands(); len(got) != 2 {
		t.Errorf("a command ran on a host with a changed key: %q", got)
	}
}
