package app

import (
	"context"
	"errors"

	"github.com/sundown-ups/sundown/internal/provider"
)

// hostOverSSH gives a guest-only backend (libvirt) a host shutdown through
// a second provider (ssh) that reaches the same machine. Keeping both in
// one target keeps the plan's order: that host's guests first, then it.
type hostOverSSH struct {
	provider.Provider
	host interface {
		provider.Provider
		ID() string
	}
}

// ShutdownHost shuts the hypervisor down through the SSH provider.
func (h hostOverSSH) ShutdownHost(ctx context.Context, _ string, force bool) error {
	return h.host.ShutdownHost(ctx, h.host.ID(), force)
}

// Capabilities are the guest backend's plus host shutdown.
func (h hostOverSSH) Capabilities() provider.Caps {
	c := provider.CapabilitiesOf(h.Provider)
	c.HostShutdown = true
	return c
}

// Close closes both providers.
func (h hostOverSSH) Close() error {
	return errors.Join(h.Provider.Close(), h.host.Close())
}
