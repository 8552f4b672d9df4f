// Package sshtest holds emulation scripts for internal/peer/sshd that answer
// the way a Linux host does, for tests of the ssh provider and of `sundown
// check`. The scripts never run what they are sent: anything they do not
// emulate is refused with exit status 99 (and the harness has recorded it,
// so a test can see it was sent).
package sshtest

import (
	"strings"
)

// RefusedStatus is the exit status of an emulated host for a command it
// does not emulate.
const RefusedStatus = 99

// Sudo returns an sshd.Options.Emulate script for a Linux host whose sudo
// has the given NOPASSWD rules for the login user, each "RUNAS COMMAND"
// with COMMAND's full path ("root /usr/bin/systemctl poweroff"). It answers,
// as sudo 1.9 does (observed on Debian 12):
//
//   - `sudo -n -l [-u USER] PROGRAM ARGS…`: a rule matches → the full
//     command on stdout, exit 0; no rule at all → "sudo: a password is
//     required" on stderr, exit 1; rules, but none matches → exit 1, no
//     output; PROGRAM unknown → "sudo: PROGRAM: command not found", exit 1.
//   - `PATH=… command -v NAME`: the full path of systemctl, poweroff,
//     shutdown, halt or reboot (under /usr/bin or /usr/sbin), else exit 1.
//
// Everything else, including the shutdown command itself, is refused with
// RefusedStatus.
func Sudo(rules ...string) string {
	return `set -f
rules=` + shq(strings.Join(rules, "\n")) + `
paths='systemctl /usr/bin/systemctl
poweroff /usr/sbin/poweroff
shutdown /usr/sbin/shutdown
halt /usr/sbin/halt
reboot /usr/sbin/reboot'
lookup() {
	printf '%s\n' "$paths" | while read -r n p; do
		if [ "$n" = "$1" ]; then echo "$p"; break; fi
	done
}
set -- $SSH_ORIGINAL_COMMAND
case "$1" in
PATH=*)
	if [ "$2" = command ] && [ "$3" = -v ] && [ $# -eq 4 ]; then
		p=$(lookup "$4")
		if [ -n "$p" ]; then echo "$p"; exit 0; fi
		exit 1
	fi ;;
sudo|/usr/bin/sudo)
	if [ "$2" = -n ] && [ "$3" = -l ]; then
		shift 3
		runas=root
		if [ "$1" = -u ]; then runas=$2; shift 2; fi
		prog=$1; shift
		case "$prog" in
		/*) full=$prog ;;
		*) full=$(lookup "$prog") ;;
		esac
		if [ -z "$full" ]; then echo "sudo: $prog: command not found" >&2; exit 1; fi
		line=$full
		if [ $# -gt 0 ]; then line="$full $*"; fi
		if [ -z "$rules" ]; then echo "sudo: a password is required" >&2; exit 1; fi
		if printf '%s\n' "$rules" | grep -qxF "$runas $line"; then echo "$line"; exit 0; fi
		exit 1
	fi ;;
esac
echo "sshtest: not emulated, not run: $SSH_ORIGINAL_COMMAND" >&2
exit 99
`
}

// shq quotes s for /bin/sh.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
