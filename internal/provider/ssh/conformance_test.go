package ssh_test

import (
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/peer/sshd"
	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/providertest"
	"github.com/sundown-ups/sundown/internal/provider/ssh"
)

func TestConformance(t *testing.T) {
	providertest.Run(t, providertest.Harness{
		Timeout: 5 * time.Second,
		New: func(t *testing.T) (provider.Provider, providertest.Fixture) {
			srv := sshd.Start(t, sshd.Options{Emulate: `case "$SSH_ORIGINAL_COMMAND" in
*poweroff*) kill -TERM "$(cat "$SSHD_PIDFILE")" ;;
esac`})
			p, err := ssh.New(t.Context(), ssh.Config{
				Address: srv.Addr(), User: srv.User(), KeyFile: srv.ClientKeyPath(),
				KnownHostsFile: srv.WriteKnownHosts(t), HostName: "host1", Timeout: 5 * time.Second, Logger: quiet,
			})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			return p, providertest.Fixture{Host: "host1", NoGuests: true}
		},
	})
}
