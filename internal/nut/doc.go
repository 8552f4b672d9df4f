// Package nut is a client for the NUT (Network UPS Tools) network protocol,
// version 1.3 as served by upsd of NUT 2.8 (docs/net-protocol.txt in the NUT
// sources). sundown uses it to watch UPSes and, as a upsmon replacement, to
// hold a LOGIN, claim PRIMARY, set FSD and send the final UPS command.
//
// # What is supported
//
//   - Connection: Dial with a dial timeout and the caller's context; a
//     per-command deadline (ReadTimeout) on every write and read, so a
//     server that never answers or trickles bytes cannot hang a caller;
//     context cancellation interrupts a blocked read. Line length and LIST
//     size are bounded (MaxLineLength, MaxListItems).
//   - STARTTLS before anything else, verifying the certificate chain
//     against a CA file and the server name (IP addresses against IP SANs),
//     or pinning the leaf certificate's SHA-256 fingerprint. A refusal
//     (ERR FEATURE-NOT-CONFIGURED, ERR ALREADY-SSL-MODE, anything but "OK
//     STARTTLS") is an error: never a silent downgrade.
//   - Authentication and upsmon duties: USERNAME, PASSWORD, LOGIN, PRIMARY
//     with fallback to MASTER (accepting "OK", "OK PRIMARY-GRANTED", "OK
//     MASTER-GRANTED"), FSD ("OK FSD-SET"), GET NUMLOGINS, LOGOUT ("OK
//     Goodbye").
//   - Reading: GET VAR, GetVars (several GET VAR pipelined in one write,
//     the polling hot path), GET UPSDESC/TYPE/DESC/CMDDESC, LIST
//     UPS/VAR/RW/CMD/CLIENT/ENUM/RANGE with BEGIN/END checking, VER, NETVER,
//     HELP.
//   - Writing: SET VAR and INSTCMD (with an optional parameter), both with
//     TRACKING: SET TRACKING ON once per connection, then GET TRACKING
//     polled until SUCCESS or an ERR; servers without tracking get a plain
//     INSTCMD whose OK counts as done.
//   - Words are quoted and escaped both ways with NUT's parseconf rules
//     (SplitLine, Quote); arguments with control characters are refused
//     before anything is sent (ErrBadArgument), so a value cannot inject a
//     second command.
//   - Errors: every ERR reply is an *Error whose Code matches a sentinel
//     (ErrDataStale, ErrAccessDenied, …, and the GET TRACKING results
//     ErrTrackingFailed and ErrTrackingUnknown) with errors.Is; unknown codes
//     are still an *Error. An ERR reply leaves the connection usable. A
//     protocol error (ErrProtocol) or transport error (ErrTransport,
//     ErrTimeout) closes it, and later calls return ErrClosed. IsSilence
//     tells "no data" (stale, driver gone, connection lost) from request
//     faults. Passwords never appear in errors.
//   - Backoff for reconnect loops.
//
// Not supported: the pre-1.5 commands removed from the protocol, ATTACH and
// DETACH (newer than 2.8), and GET TRACKING without an id (the activation
// status). upsd drops clients that stay silent for 60 seconds; a monitor
// that polls more often never meets this.
//
// # Use
//
//	c, err := nut.Dial(ctx, "127.0.0.1:3493", nut.Options{
//		TLS: &nut.TLSOptions{CAFile: "/etc/sundown/nut-ca.pem"},
//	})
//	if err != nil { ... }
//	defer c.Close()
//	if err := c.Username(ctx, user); err != nil { ... }
//	if err := c.Password(ctx, pass); err != nil { ... }
//	if err := c.Login(ctx, "ups"); err != nil { ... }
//	vars, err := c.GetVars(ctx, "ups", "ups.status", "battery.charge", "battery.runtime")
//	switch {
//	case nut.IsSilence(err): // no data: count towards comm loss
//	case err != nil: // a request fault, e.g. nut.ErrUnknownUPS
//	}
//
// Package nuttest has an in-process server that speaks the same protocol,
// for tests and the demo.
package nut
