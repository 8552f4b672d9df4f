// Package wake powers hypervisor hosts back on when sundown restores a site
// after a power outage: Wake-on-LAN magic packets and IPMI chassis power
// control over RMCP+ (lanplus).
//
// Both methods sit behind Waker, the small contract the restore uses:
// Wake asks the machine to power on and Awake reports whether it is on. The
// package never decides when to wake anything; it only carries the request
// out and classifies failures (see Kind) so the caller can tell a wrong
// password, which retrying cannot fix, from a BMC that is not reachable yet.
package wake

import (
	"context"
	"errors"
	"strings"
)

// Waker wakes one machine.
//
// Wake is idempotent: waking a machine that is already on succeeds and does
// nothing harmful (IPMI checks the chassis first; a WOL packet is ignored by
// a running machine). Wake returns once the request was delivered, not when
// the machine has booted; poll Awake, or better a readiness probe on a
// service the machine runs, for that.
//
// Awake reports whether the machine is on. An error means "could not tell"
// (the BMC did not answer, the password was refused), never "off".
type Waker interface {
	Wake(ctx context.Context) error
	Awake(ctx context.Context) (bool, error)
}

// Kind classifies a wake failure by what the caller may do about it.
type Kind int

// Kinds of failure. KindOther is the zero value.
const (
	// KindOther: anything not classified below (a BMC that refused the
	// command, a malformed reply, a canceled context). Not retried blindly.
	KindOther Kind = iota
	// KindAuth: the BMC refused the user name or password. Permanent until
	// the configuration changes; never retried.
	KindAuth
	// KindPermission: the credentials are valid but the user's privilege
	// is too low for the command (chassis control needs operator).
	// Permanent until an admin changes the user.
	KindPermission
	// KindUnreachable: nothing answered in time, the port was closed, or
	// the name did not resolve. A BMC on a switch that is still booting
	// looks like this: retrying within the caller's deadline is reasonable.
	KindUnreachable
)

var kindNames = [...]string{
	KindOther:       "error",
	KindAuth:        "authentication failed",
	KindPermission:  "insufficient privilege",
	KindUnreachable: "unreachable",
}

// String returns the kind as it appears in error messages.
func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "error"
}

// Retryable reports whether retrying the same call may succeed.
func (k Kind) Retryable() bool { return k == KindUnreachable }

// Sentinels for errors.Is: errors.Is(err, wake.ErrAuth) is true for every
// *Error of KindAuth, and so on.
var (
	ErrAuth        = errors.New("authentication failed")
	ErrPermission  = errors.New("insufficient privilege")
	ErrUnreachable = errors.New("unreachable")
)

// Error is the error returned by IPMI operations (and by WOL sends).
// It formats as "op target: kind: cause".
type Error struct {
	Op     string // e.g. "ipmi power-on"
	Target string // host:port of the BMC, or the WOL destination
	Kind   Kind
	Err    error // underlying cause; never contains a password
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	if e.Target != "" {
		b.WriteByte(' ')
		b.WriteString(e.Target)
	}
	b.WriteString(": ")
	if e.Kind != KindOther {
		b.WriteString(e.Kind.String())
		b.WriteString(": ")
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is matches the sentinel of the error's kind.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrAuth:
		return e.Kind == KindAuth
	case ErrPermission:
		return e.Kind == KindPermission
	case ErrUnreachable:
		return e.Kind == KindUnreachable
	}
	return false
}

// KindOf returns the kind of the first *Error in err's chain, or KindOther.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindOther
}
