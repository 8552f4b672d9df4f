// Package hostcmd holds what the providers share that stop one host by
// running one command, over SSH (ssh) or on this machine (local): the
// answers of a provider that has no guests and no maintenance mode
// (Guestless), the reading of a failed command's stderr for a missing
// privilege (Refusals), and a buffer that keeps the end of the command's
// output (TailBuffer).
package hostcmd

import (
	"context"
	"strings"
	"sync"

	"github.com/sundown-ups/sundown/internal/provider"
)

// Guestless answers the guest and maintenance calls of a provider whose
// only object is one host. A provider embeds it and implements Inventory,
// ShutdownHost and Close itself.
//
// Every guest call is NotFound (without any work); maintenance mode is
// Unsupported for the host and NotFound for any other ID; once Closed
// reports true, every call is Permanent ("provider closed").
type Guestless struct {
	// HostID is the one host's ID.
	HostID string
	// Closed reports whether the provider has been closed.
	Closed func() bool
	// NoGuests and NoMaintenance are the messages of the NotFound and
	// Unsupported errors ("the ssh provider has no guests").
	NoGuests      string
	NoMaintenance string
}

// Guest: the provider has no guests; every ID is NotFound.
func (g Guestless) Guest(ctx context.Context, id string) (provider.Guest, error) {
	return provider.Guest{}, g.noGuest("Guest", id)
}

// ShutdownGuest: no guests; NotFound.
func (g Guestless) ShutdownGuest(ctx context.Context, id string) error {
	return g.noGuest("ShutdownGuest", id)
}

// SuspendGuest: no guests; NotFound.
func (g Guestless) SuspendGuest(ctx context.Context, id string) error {
	return g.noGuest("SuspendGuest", id)
}

// PowerOffGuest: no guests; NotFound.
func (g Guestless) PowerOffGuest(ctx context.Context, id string) error {
	return g.noGuest("PowerOffGuest", id)
}

// PowerOnGuest: no guests; NotFound.
func (g Guestless) PowerOnGuest(ctx context.Context, id string) error {
	return g.noGuest("PowerOnGuest", id)
}

// WaitGuest: no guests; NotFound, without waiting.
func (g Guestless) WaitGuest(ctx context.Context, id string, want provider.PowerState) error {
	return g.noGuest("WaitGuest", id)
}

// EnterMaintenance: Unsupported for the host, NotFound for any other ID.
func (g Guestless) EnterMaintenance(ctx context.Context, hostID string, opts provider.MaintenanceOptions) error {
	return g.noMaintenance("EnterMaintenance", hostID)
}

// ExitMaintenance: Unsupported for the host, NotFound for any other ID.
func (g Guestless) ExitMaintenance(ctx context.Context, hostID string) error {
	return g.noMaintenance("ExitMaintenance", hostID)
}

// CheckHost is the first check of a host call such as ShutdownHost:
// Permanent once closed, NotFound for an ID other than HostID, else nil.
func (g Guestless) CheckHost(op, id string) error {
	if g.Closed() {
		return provider.NewError(op, id, provider.Permanent, "provider closed")
	}
	if id != g.HostID {
		return provider.NewError(op, id, provider.NotFound, "unknown host (this provider's host is "+g.HostID+")")
	}
	return nil
}

func (g Guestless) noGuest(op, id string) error {
	if g.Closed() {
		return provider.NewError(op, id, provider.Permanent, "provider closed")
	}
	return provider.NewError(op, id, provider.NotFound, g.NoGuests)
}

func (g Guestless) noMaintenance(op, id string) error {
	if err := g.CheckHost(op, id); err != nil {
		return err
	}
	return provider.NewError(op, id, provider.Unsupported, g.NoMaintenance)
}

// Refusals says how a shutdown command's non-zero exit is classed from its
// stderr: a refusal by sudo, or one of the Denied phrases, is a missing
// privilege (class Permission); anything else is Permanent.
type Refusals struct {
	// SudoPrivilege prefixes the command in Error.Privilege when sudo
	// refused it ("sudoers rule NOPASSWD: ").
	SudoPrivilege string
	// Denied are lower-case phrases that, anywhere in stderr, mean the
	// account lacks the right to shut the host down.
	Denied []string
	// DeniedPrivilege is Error.Privilege for a Denied phrase ("" names
	// none).
	DeniedPrivilege string
}

// Classify returns the class of a failed run of command and the privilege
// it lacked. sudo's refusal is checked first: a sudo message that also
// says "permission denied" names the sudoers rule.
func (r Refusals) Classify(stderr, command string) (provider.Class, string) {
	low := strings.ToLower(stderr)
	if SudoRefused(low) {
		return provider.Permission, r.SudoPrivilege + command
	}
	for _, d := range r.Denied {
		if strings.Contains(low, d) {
			return provider.Permission, r.DeniedPrivilege
		}
	}
	return provider.Permanent, ""
}

// SudoRefused reports whether a command's stderr shows sudo refusing to run
// it: a password is required (sudo -n), or the user may not run it.
func SudoRefused(stderr string) bool {
	low := strings.ToLower(stderr)
	return strings.Contains(low, "sudo") && (strings.Contains(low, "password is required") ||
		strings.Contains(low, "not allowed") || strings.Contains(low, "not in the sudoers") ||
		strings.Contains(low, "may not run sudo"))
}

// TailBuffer is an io.Writer that keeps the last bytes written to it,
// for the end of a command's output in an error. It is safe for concurrent
// use.
type TailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

// NewTailBuffer returns a buffer that keeps the last max bytes.
func NewTailBuffer(max int) *TailBuffer { return &TailBuffer{max: max} }

// Write keeps the end of b; it never fails.
func (t *TailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, b...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(b), nil
}

// String returns what is kept.
func (t *TailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
