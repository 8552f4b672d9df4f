package provider

import (
	"errors"
	"strconv"
	"strings"
)

// Class says what a caller may do about an error.
type Class int

// Error classes. The zero value, Unclassified, is what ClassOf returns for nil
// and for errors that did not come from a provider; callers treat it like
// Permanent.
const (
	Unclassified Class = iota
	// NotFound: the guest or host ID does not exist (any more). Permanent
	// for that ID; the caller re-reads the inventory.
	NotFound
	// Permission: the account lacks a privilege; Error.Privilege names it
	// when the backend says which. Permanent until an admin changes roles.
	Permission
	// Auth: the credentials were refused (wrong password, expired token,
	// re-login failed). Permanent until the configuration changes.
	Auth
	// Unreachable: the backend could not be reached or the connection
	// dropped. May clear on its own; retrying within the caller's deadline
	// is reasonable.
	Unreachable
	// Transient: the backend is busy (a task in progress, a concurrent
	// change) or the caller's context ended. Retrying within the caller's
	// deadline is reasonable.
	Transient
	// Unsupported: the operation cannot be done on this target this way
	// (guest agent not running, backend lacks the feature, guest
	// suspended). Retrying the same call will not help; the executor
	// escalates to the next step of the chain at once.
	Unsupported
	// Permanent: anything else the backend refused, including invalid
	// configuration and untrusted certificates. Never retried.
	Permanent
)

var classNames = [...]string{
	Unclassified: "unclassified",
	NotFound:     "not-found",
	Permission:   "permission",
	Auth:         "auth",
	Unreachable:  "unreachable",
	Transient:    "transient",
	Unsupported:  "unsupported",
	Permanent:    "permanent",
}

// String returns the class name used in logs ("not-found", "permission", …).
func (c Class) String() string {
	if c >= 0 && int(c) < len(classNames) {
		return classNames[c]
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

// Retryable reports whether retrying the same call, within the caller's own
// deadline, may succeed (Unreachable and Transient).
func (c Class) Retryable() bool { return c == Unreachable || c == Transient }

// Error is the error every Provider method returns.
type Error struct {
	// Op is the Provider method that failed, e.g. "PowerOffGuest".
	Op string
	// Target is the guest or host ID (or the endpoint for session errors).
	Target string
	Class  Class
	// Privilege is the missing privilege by name (for vSphere e.g.
	// "VirtualMachine.Interact.PowerOff") when Class is Permission and the
	// backend said which; else "".
	Privilege string
	// Err is the underlying error; never nil for errors built by providers.
	Err error
}

// Error formats as "op target: class[: missing privilege P]: cause".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	if e.Target != "" {
		b.WriteByte(' ')
		b.WriteString(e.Target)
	}
	b.WriteString(": ")
	b.WriteString(e.Class.String())
	if e.Privilege != "" {
		b.WriteString(": missing privilege ")
		b.WriteString(e.Privilege)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// ClassOf returns the class of the first *Error in err's chain, or
// Unclassified when there is none (including err == nil).
func ClassOf(err error) Class {
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return Unclassified
}

// NewError builds an *Error whose cause is a plain message, for conditions a
// provider detects itself (an invalid argument, a closed provider).
func NewError(op, target string, class Class, msg string) *Error {
	return &Error{Op: op, Target: target, Class: class, Err: errors.New(msg)}
}
