package sshd

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// run connects with the server's client key, verifying the host key against
// knownHosts, and runs cmd.
func run(t *testing.T, s *Server, knownHosts, cmd string) (string, error) {
	t.Helper()
	kb, err := os.ReadFile(s.ClientKeyPath())
	if err != nil {
		t.Fatal(err)
	}
	signer, err := gossh.ParsePrivateKey(kb)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := knownhosts.New(knownHosts)
	if err != nil {
		t.Fatal(err)
	}
	c, err := gossh.Dial("tcp", s.Addr(), &gossh.ClientConfig{
		User:              s.User(),
		Auth:              []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback:   cb,
		HostKeyAlgorithms: []string{gossh.KeyAlgoED25519},
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	var out bytes.Buffer
	sess.Stdout = &out
	err = sess.Run(cmd)
	return out.String(), err
}

func TestRecordsAndEmulates(t *testing.T) {
	s := Start(t, Options{Emulate: `echo "emulated: $SSH_ORIGINAL_COMMAND"`})
	kh := s.WriteKnownHosts(t)
	if !strings.HasPrefix(s.KnownHostsLine(), "[127.0.0.1]:") {
		t.Errorf("KnownHostsLine = %q", s.KnownHostsLine())
	}
	cmds := []string{"poweroff", "sudo -n systemctl poweroff", "shutdown /s /t 0", "two\nlines"}
	for _, c := range cmds {
		out, err := run(t, s, kh, c)
		if err != nil {
			t.Fatalf("run %q: %v\n%s", c, err, s.Log())
		}
		if want := "emulated: " + c + "\n"; out != want {
			t.Errorf("output %q, want %q", out, want)
		}
	}
	if got := s.Commands(); !slices.Equal(got, cmds) {
		t.Errorf("Commands() = %q, want %q", got, cmds)
	}
}

func TestRotateHostKey(t *testing.T) {
	s := Start(t, Options{})
	kh := s.WriteKnownHosts(t)
	old := s.KnownHostsLine()
	s.RotateHostKey(t)
	if s.KnownHostsLine() == old {
		t.Fatal("KnownHostsLine unchanged after RotateHostKey")
	}
	_, err := run(t, s, kh, "poweroff")
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) || len(ke.Want) == 0 {
		t.Fatalf("connect with the old host key: %v, want a knownhosts key mismatch", err)
	}
	if got := s.Commands(); len(got) != 0 {
		t.Errorf("commands ran despite the changed host key: %q", got)
	}
	// The new line works.
	if _, err := run(t, s, s.WriteKnownHosts(t), "uptime"); err != nil {
		t.Fatalf("connect with the new host key: %v", err)
	}
	if got := s.Commands(); !slices.Equal(got, []string{"uptime"}) {
		t.Errorf("Commands() = %q", got)
	}
}
