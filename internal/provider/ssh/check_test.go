package ssh_test

import (
	"strings"
	"testing"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/ssh"
	"github.com/sundown-ups/sundown/internal/provider/ssh/sshtest"
)

const lookupSystemctl = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v systemctl"

// onlyProbes fails when the host was sent anything but `sudo -n -l …` and
// the `command -v` lookup: CheckCommand must never run the command.
func onlyProbes(t *testing.T, cmds []string) {
	t.Helper()
	for _, c := range cmds {
		if !strings.HasPrefix(c, "sudo -n -l ") && !strings.Contains(c, " command -v ") {
			t.Errorf("CheckCommand sent %q", c)
		}
	}
}

func TestCheckCommandSudo(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rules   []string
		command string
		want    ssh.Verdict
		detail  string
		sudoers string // "" → none; USER is replaced by the login user
		sent    []string
	}{
		{name: "allowed", rules: []string{"root /usr/bin/systemctl poweroff"},
			want: ssh.Allowed, detail: "sudo allows it without a password: /usr/bin/systemctl poweroff",
			sent: []string{"sudo -n -l systemctl poweroff"}},
		{name: "password required", rules: nil,
			want: ssh.Refused, detail: "sudo: a password is required",
			sudoers: "USER ALL=(root) NOPASSWD: /usr/bin/systemctl poweroff",
			sent:    []string{"sudo -n -l systemctl poweroff", lookupSystemctl}},
		{name: "other rule only", rules: []string{"root /usr/sbin/poweroff"},
			want: ssh.Refused, detail: "no sudoers rule allows it",
			sudoers: "USER ALL=(root) NOPASSWD: /usr/bin/systemctl poweroff",
			sent:    []string{"sudo -n -l systemctl poweroff", lookupSystemctl}},
		{name: "run as and full path", rules: []string{"admin /sbin/shutdown -h now"}, command: "sudo -n -u admin /sbin/shutdown -h now",
			want: ssh.Allowed, detail: "/sbin/shutdown -h now",
			sent: []string{"sudo -n -l -u admin /sbin/shutdown -h now"}},
		{name: "run as refused", rules: []string{"root /sbin/shutdown -h now"}, command: "sudo -n -u admin /sbin/shutdown -h now",
			want: ssh.Refused, sudoers: "USER ALL=(admin) NOPASSWD: /sbin/shutdown -h now",
			sent: []string{"sudo -n -l -u admin /sbin/shutdown -h now"}},
		{name: "unknown program", rules: []string{"root /usr/bin/systemctl poweroff"}, command: "sudo -n nosuchtool off",
			want: ssh.Refused, detail: "sudo cannot find nosuchtool",
			sudoers: "USER ALL=(root) NOPASSWD: nosuchtool off",
			sent:    []string{"sudo -n -l nosuchtool off", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v nosuchtool"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, srv := open(t, sshtest.Sudo(tc.rules...), func(c *ssh.Config) { c.Command = tc.command })
			got, err := p.CheckCommand(t.Context())
			if err != nil {
				t.Fatalf("CheckCommand: %v", err)
			}
			t.Logf("%+v", got)
			if got.Verdict != tc.want {
				t.Errorf("verdict %s, want %s (%+v)", got.Verdict, tc.want, got)
			}
			if !strings.Contains(got.Detail, tc.detail) {
				t.Errorf("detail %q lacks %q", got.Detail, tc.detail)
			}
			if want := strings.ReplaceAll(tc.sudoers, "USER", srv.User()); got.Sudoers != want {
				t.Errorf("sudoers %q, want %q", got.Sudoers, want)
			}
			if got.Probe != tc.sent[0] {
				t.Errorf("probe %q, want %q", got.Probe, tc.sent[0])
			}
			wantCommands(t, srv, tc.sent...)
			onlyProbes(t, srv.Commands())
		})
	}
}

// Commands that sudo -l cannot vouch for are never sent, not even a probe.
func TestCheckCommandUnverifiable(t *testing.T) {
	for _, tc := range []struct{ command, why string }{
		{"shutdown /s /t 0", "does not start with `sudo -n`"},
		{"poweroff", "does not start with `sudo -n`"},
		{"sudo systemctl poweroff", "without -n"},
		{"sudo -n true && poweroff", "shell syntax"},
		{"sudo -n systemctl poweroff; reboot", "shell syntax"},
		{"sudo -n sh -c 'poweroff'", "shell syntax"},
		{"sudo -n $(echo poweroff)", "shell syntax"},
		{"sudo -n -s poweroff", "option -s"},
		{"sudo -n -u", "lacks its argument"},
	} {
		t.Run(tc.command, func(t *testing.T) {
			p, srv := open(t, sshtest.Sudo("root /usr/bin/systemctl poweroff"), func(c *ssh.Config) { c.Command = tc.command })
			got, err := p.CheckCommand(t.Context())
			if err != nil {
				t.Fatalf("CheckCommand: %v", err)
			}
			if got.Verdict != ssh.Unverifiable || got.Probe != "" || !strings.Contains(got.Detail, tc.why) {
				t.Errorf("%+v, want unverifiable because %q, no probe", got, tc.why)
			}
			wantCommands(t, srv)
		})
	}
}

func TestCheckCommandErrors(t *testing.T) {
	// A host that answers sudo -l with something else than sudo would.
	p, srv := open(t, "echo hello", nil)
	if _, err := p.CheckCommand(t.Context()); err == nil {
		t.Error("an answer without the command was taken for sudo's")
	}
	wantCommands(t, srv, "sudo -n -l systemctl poweroff")

	// A host that is down: see TestUnreachable.

	// After Close.
	p, srv = open(t, sshtest.Sudo(), nil)
	p.Close()
	_, err := p.CheckCommand(t.Context())
	wantClass(t, "closed", err, provider.Permanent)
	wantCommands(t, srv)
}
