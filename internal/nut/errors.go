package nut

import (
	"context"
	"errors"
	"strings"
)

// Error is an "ERR <code> [<extra>...]" reply from the server. An Error
// reply leaves the connection usable.
//
// errors.Is(err, ErrDataStale) and friends compare the Code only, so an
// Error with an Extra part still matches its sentinel.
type Error struct {
	Code  string // e.g. "DATA-STALE"
	Extra string // the words after the code, joined by one space; usually empty
}

func (e *Error) Error() string {
	if e.Extra == "" {
		return "ERR " + e.Code
	}
	return "ERR " + e.Code + " " + e.Extra
}

// Is reports whether target is an *Error with the same Code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t != nil && e != nil && t.Code == e.Code
}

// Sentinels for every ERR code NUT 2.8 upsd can send (server/neterr.h, and
// the status strings of GET TRACKING). Compare with errors.Is.
var (
	// ErrAccessDenied: wrong credentials or missing permission. A wrong
	// PASSWORD is only detected here, at LOGIN/PRIMARY/FSD/SET/INSTCMD.
	ErrAccessDenied = &Error{Code: "ACCESS-DENIED"}
	// ErrUnknownUPS: no such UPS on this server.
	ErrUnknownUPS = &Error{Code: "UNKNOWN-UPS"}
	// ErrVarNotSupported: the UPS has no such variable.
	ErrVarNotSupported = &Error{Code: "VAR-NOT-SUPPORTED"}
	// ErrCmdNotSupported: the UPS has no such instant command.
	ErrCmdNotSupported = &Error{Code: "CMD-NOT-SUPPORTED"}
	// ErrInvalidArgument: wrong argument count or subcommand; also the
	// GET TRACKING status of a command the driver rejected as invalid.
	ErrInvalidArgument = &Error{Code: "INVALID-ARGUMENT"}
	// ErrInstCmdFailed: upsd could not pass the command to the driver.
	ErrInstCmdFailed = &Error{Code: "INSTCMD-FAILED"}
	// ErrSetFailed: upsd could not pass the SET to the driver.
	ErrSetFailed = &Error{Code: "SET-FAILED"}
	// ErrReadOnly: the variable is not writable.
	ErrReadOnly = &Error{Code: "READONLY"}
	// ErrTooLong: the value is longer than the variable allows.
	ErrTooLong = &Error{Code: "TOO-LONG"}
	// ErrFeatureNotSupported: upsd was built without TLS support.
	ErrFeatureNotSupported = &Error{Code: "FEATURE-NOT-SUPPORTED"}
	// ErrFeatureNotConfigured: TLS (or TRACKING, for GET TRACKING) is not
	// enabled.
	ErrFeatureNotConfigured = &Error{Code: "FEATURE-NOT-CONFIGURED"}
	// ErrAlreadySSLMode: STARTTLS on a connection that already uses TLS.
	ErrAlreadySSLMode = &Error{Code: "ALREADY-SSL-MODE"}
	// ErrDriverNotConnected: upsd has no connection to the UPS driver.
	ErrDriverNotConnected = &Error{Code: "DRIVER-NOT-CONNECTED"}
	// ErrDataStale: the driver stopped sending fresh data.
	ErrDataStale = &Error{Code: "DATA-STALE"}
	// ErrAlreadyLoggedIn: a second LOGIN on one connection.
	ErrAlreadyLoggedIn = &Error{Code: "ALREADY-LOGGED-IN"}
	// ErrInvalidPassword: the PASSWORD was rejected (e.g. empty).
	ErrInvalidPassword = &Error{Code: "INVALID-PASSWORD"}
	// ErrAlreadySetPassword: a second PASSWORD on one connection.
	ErrAlreadySetPassword = &Error{Code: "ALREADY-SET-PASSWORD"}
	// ErrInvalidUsername: the USERNAME was rejected.
	ErrInvalidUsername = &Error{Code: "INVALID-USERNAME"}
	// ErrAlreadySetUsername: a second USERNAME on one connection.
	ErrAlreadySetUsername = &Error{Code: "ALREADY-SET-USERNAME"}
	// ErrUsernameRequired: the command needs USERNAME first.
	ErrUsernameRequired = &Error{Code: "USERNAME-REQUIRED"}
	// ErrPasswordRequired: the command needs PASSWORD first.
	ErrPasswordRequired = &Error{Code: "PASSWORD-REQUIRED"}
	// ErrUnknownCommand: the server does not know the command (e.g.
	// PRIMARY on upsd older than 2.8.0).
	ErrUnknownCommand = &Error{Code: "UNKNOWN-COMMAND"}
	// ErrInvalidValue: the value is not in the variable's enum or range.
	ErrInvalidValue = &Error{Code: "INVALID-VALUE"}

	// ErrTrackingUnknown is "ERR UNKNOWN" from GET TRACKING: the id is
	// unknown (expired, or never existed) or the result is not known.
	ErrTrackingUnknown = &Error{Code: "UNKNOWN"}
	// ErrTrackingFailed is "ERR FAILED" from GET TRACKING: the driver ran
	// the command or SET and it failed.
	ErrTrackingFailed = &Error{Code: "FAILED"}

	// Codes defined for the protocol before 1.5.0; kept so that very old
	// servers still produce a named error.
	ErrVarUnknown      = &Error{Code: "VAR-UNKNOWN"}
	ErrUnknownType     = &Error{Code: "UNKNOWN-TYPE"}
	ErrUnknownInstCmd  = &Error{Code: "UNKNOWN-INSTCMD"}
	ErrMissingArgument = &Error{Code: "MISSING-ARGUMENT"}
)

// knownCodes lists every sentinel above, for tests and documentation.
var knownCodes = []*Error{
	ErrAccessDenied, ErrUnknownUPS, ErrVarNotSupported, ErrCmdNotSupported,
	ErrInvalidArgument, ErrInstCmdFailed, ErrSetFailed, ErrReadOnly, ErrTooLong,
	ErrFeatureNotSupported, ErrFeatureNotConfigured, ErrAlreadySSLMode,
	ErrDriverNotConnected, ErrDataStale, ErrAlreadyLoggedIn, ErrInvalidPassword,
	ErrAlreadySetPassword, ErrInvalidUsername, ErrAlreadySetUsername,
	ErrUsernameRequired, ErrPasswordRequired, ErrUnknownCommand, ErrInvalidValue,
	ErrTrackingUnknown, ErrTrackingFailed,
	ErrVarUnknown, ErrUnknownType, ErrUnknownInstCmd, ErrMissingArgument,
}

// KnownCodes returns the ERR codes this package has a sentinel for.
func KnownCodes() []string {
	out := make([]string, len(knownCodes))
	for i, e := range knownCodes {
		out[i] = e.Code
	}
	return out
}

// sentinel is a package error that can also match a broader class.
type sentinel struct {
	msg    string
	parent error
}

func (s *sentinel) Error() string { return s.msg }

func (s *sentinel) Is(target error) bool { return s.parent != nil && target == s.parent }

var (
	// ErrTransport marks a failure of the connection itself: dial errors,
	// resets, EOF, timeouts. The connection is closed afterwards.
	ErrTransport error = &sentinel{msg: "connection failed"}
	// ErrTimeout marks a reply that did not arrive within ReadTimeout (or
	// a write that did not complete). It also matches ErrTransport.
	ErrTimeout error = &sentinel{msg: "timeout", parent: ErrTransport}
	// ErrProtocol marks a reply that breaks the protocol: malformed or
	// oversized line, unexpected reply, BEGIN/END LIST mismatch. The
	// connection is closed afterwards.
	ErrProtocol error = &sentinel{msg: "protocol error"}
	// ErrClosed is returned by every call on a closed Client (after Close,
	// Logout, or a transport or protocol error).
	ErrClosed error = &sentinel{msg: "connection closed"}
	// ErrTLS marks a failed STARTTLS: refused by the server (never a silent
	// downgrade), a bad CA file or pin, or a failed handshake or
	// certificate check.
	ErrTLS error = &sentinel{msg: "TLS failed"}
	// ErrFingerprintMismatch: the server's leaf certificate does not match
	// TLSOptions.Fingerprint. It also matches ErrTLS.
	ErrFingerprintMismatch error = &sentinel{msg: "certificate fingerprint mismatch", parent: ErrTLS}
	// ErrBadArgument: an argument cannot be sent (it contains a control
	// character such as a newline, which upsd would drop or treat as the
	// end of the command). Nothing was sent; the connection stays usable.
	ErrBadArgument error = &sentinel{msg: "argument contains a control character"}
)

// IsSilence reports whether err means "no data from the UPS right now"
// rather than a fault of the request: ERR DATA-STALE, ERR
// DRIVER-NOT-CONNECTED, transport errors (including timeouts and a context
// deadline), protocol errors and a closed connection. A monitor counts such
// errors as silence (comm loss), never as a power event.
//
// Context cancellation and TLS failures are not silence: the first is the
// caller stopping, the second a configuration or security problem that an
// operator must see.
func IsSilence(err error) bool {
	if err == nil {
		return false
	}
	return errors.Is(err, ErrDataStale) ||
		errors.Is(err, ErrDriverNotConnected) ||
		errors.Is(err, ErrTransport) ||
		errors.Is(err, ErrProtocol) ||
		errors.Is(err, ErrClosed) ||
		errors.Is(err, context.DeadlineExceeded)
}

// parseErr builds an *Error from the words of an ERR line (words[0] is
// "ERR"). It returns nil when there is no code.
func parseErr(words []string) *Error {
	if len(words) < 2 || words[1] == "" {
		return nil
	}
	return &Error{Code: words[1], Extra: strings.Join(words[2:], " ")}
}
