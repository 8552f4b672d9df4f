package ssh

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/hostcmd"
	"github.com/sundown-ups/sundown/internal/provider/sshconn"
)

// Verdict is the outcome of CheckCommand.
type Verdict int

const (
	// Allowed: sudo says the command may run without a password.
	Allowed Verdict = iota + 1
	// Refused: sudo would not run it (a password is required, or no
	// sudoers rule matches). CommandCheck.Sudoers has the rule to add.
	Refused
	// Unverifiable: the command cannot be checked without running it
	// (no `sudo -n`, or shell syntax around it); nothing was run.
	Unverifiable
)

func (v Verdict) String() string {
	switch v {
	case Allowed:
		return "allowed"
	case Refused:
		return "refused"
	case Unverifiable:
		return "unverifiable"
	}
	return "unknown"
}

// CommandCheck is what CheckCommand found.
type CommandCheck struct {
	Verdict Verdict
	// Command is the shutdown command as configured.
	Command string
	// Probe is what was run on the host ("sudo -n -l …"); "" when nothing
	// was.
	Probe string
	// Detail says what sudo answered, or why the command cannot be
	// verified.
	Detail string
	// Sudoers, when Refused, is the sudoers line that allows the command,
	// e.g. "sundown ALL=(root) NOPASSWD: /usr/bin/systemctl poweroff".
	Sudoers string
}

// shellSyntax matches what would make the shell do more than run one
// simple command: `sudo -n -l` in front of it would not cover the rest.
var shellSyntax = regexp.MustCompile("[;&|`$<>(){}\n\r\\\\*?\\[\\]!~#\"']")

// safeWord is a command name we may put into `command -v NAME`.
var safeWord = regexp.MustCompile(`^[A-Za-z0-9._+/-]+$`)

// sudoArgOpts are sudo's short options that take an argument.
const sudoArgOpts = "CDghprtTuU"

// parseSudo splits "sudo -n [opts] cmd args…" into the probe ("sudo -n -l
// [opts] cmd args…"), the run-as user and the command's words. ok is false
// with a reason when the command is not of that form or cannot be probed
// safely.
func parseSudo(command string) (probe, runas string, argv []string, ok bool, why string) {
	f := strings.Fields(command)
	if len(f) == 0 || (f[0] != "sudo" && !strings.HasSuffix(f[0], "/sudo")) {
		return "", "", nil, false, "it does not start with `sudo -n`, the only form sundown can ask about (with `sudo -n -l`) without running it"
	}
	if len(f) < 2 || (f[1] != "-n" && f[1] != "--non-interactive") {
		return "", "", nil, false, "the command uses sudo without -n (it would wait for a password): add -n, e.g. `sudo -n systemctl poweroff`"
	}
	if shellSyntax.MatchString(command) {
		return "", "", nil, false, "the command has shell syntax (quotes, ;, &&, |, $, …) around sudo, so `sudo -n -l` cannot cover it without running part of it"
	}
	runas = "root"
	i := 2
	for i < len(f) && strings.HasPrefix(f[i], "-") {
		opt := f[i]
		i++
		if opt == "--" {
			break
		}
		if opt == "-l" || opt == "--list" || opt == "-s" || opt == "-i" || opt == "-e" || strings.HasPrefix(opt, "--") {
			return "", "", nil, false, "the command passes sudo option " + opt + ", which sundown does not know how to check"
		}
		if len(opt) == 2 && strings.ContainsRune(sudoArgOpts, rune(opt[1])) {
			if i >= len(f) {
				return "", "", nil, false, "sudo option " + opt + " lacks its argument"
			}
			if opt == "-u" {
				runas = f[i]
			}
			i++
		}
	}
	if i >= len(f) {
		return "", "", nil, false, "the command names no program after sudo's options"
	}
	probe = f[0] + " " + f[1] + " -l " + strings.Join(f[2:], " ")
	return probe, runas, f[i:], true, ""
}

// CheckCommand checks, without running it, whether the configured shutdown
// command may run. For a command of the form `sudo -n [options] PROGRAM
// ARGS…` it runs `sudo -n -l [options] PROGRAM ARGS…` on the host: sudo
// prints the full command and exits 0 when a NOPASSWD rule allows it
// (Allowed), and exits non-zero ("a password is required", or silently
// when no rule matches) when it would refuse (Refused; Sudoers names the
// rule to add, with PROGRAM's full path looked up with `command -v` over a
// second connection when the command names it without one). `sudo -l`
// never runs the command. Anything else (a Windows `shutdown /s /t 0`, a
// NAS's `poweroff`, sudo without -n, shell syntax that `sudo -l` would not
// cover) is Unverifiable, and nothing is sent to the host.
//
// Errors are connection failures (classed as for ShutdownHost) and answers
// sundown cannot read; a refusal is not an error.
func (p *Provider) CheckCommand(ctx context.Context) (CommandCheck, error) {
	const op = "CheckCommand"
	res := CommandCheck{Command: p.command}
	probe, runas, argv, ok, why := parseSudo(p.command)
	if !ok {
		res.Verdict, res.Detail = Unverifiable, why
		return res, nil
	}
	res.Probe = probe
	out, errOut, status, err := p.run(ctx, op, probe)
	if err != nil {
		return res, err
	}
	name := path.Base(argv[0])
	if status == 0 {
		if !strings.Contains(out, name) {
			return res, provider.NewError(op, p.id, provider.Permanent,
				fmt.Sprintf("`%s` exited 0 without naming %s (it printed %q): not sudo's answer", probe, name, clip(out, 200)))
		}
		res.Verdict = Allowed
		res.Detail = "sudo allows it without a password: " + strings.TrimSpace(firstLine(out))
		return res, nil
	}
	msg := strings.TrimSpace(errOut)
	res.Verdict = Refused
	switch {
	case status == 127:
		res.Detail = fmt.Sprintf("sudo is not installed on the host, or not on the PATH (`%s` exited 127: %s)", probe, clip(msg, 300))
	case strings.Contains(msg, ": command not found"):
		res.Detail = fmt.Sprintf("sudo cannot find %s on the host (`%s` exited %d: %s)", argv[0], probe, status, clip(msg, 300))
	case msg == "":
		res.Detail = fmt.Sprintf("sudo would refuse it: no sudoers rule allows it (`%s` exited %d)", probe, status)
	default:
		res.Detail = fmt.Sprintf("sudo would refuse it (`%s` exited %d: %s)", probe, status, clip(msg, 300))
	}
	full := argv[0]
	if !strings.HasPrefix(full, "/") && safeWord.MatchString(full) {
		// sudoers needs the full path; ask the host's shell, with sudo's
		// usual secure_path in front.
		o, _, st, err := p.run(ctx, op, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v "+full)
		if l := strings.TrimSpace(firstLine(o)); err == nil && st == 0 && strings.HasPrefix(l, "/") && safeWord.MatchString(l) {
			full = l
		}
	}
	res.Sudoers = fmt.Sprintf("%s ALL=(%s) NOPASSWD: %s", p.ep.User, runas, strings.Join(append([]string{full}, argv[1:]...), " "))
	return res, nil
}

// run connects, runs one command and returns its stdout, stderr (each the
// last 4 KiB) and exit status. Connection failures are errors; a non-zero
// exit is not.
func (p *Provider) run(ctx context.Context, op, command string) (stdout, stderr string, status int, err error) {
	callerCtx := ctx
	ctx, done, err := p.begin(ctx, op, p.id)
	if err != nil {
		return "", "", 0, err
	}
	defer done()
	client, err := p.connect(callerCtx, ctx, op)
	if err != nil {
		return "", "", 0, err
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return "", "", 0, p.classify(callerCtx, op, fmt.Errorf("open session: %w", err))
	}
	defer sess.Close()
	o, e := hostcmd.NewTailBuffer(4096), hostcmd.NewTailBuffer(4096)
	sess.Stdout, sess.Stderr = o, e
	if err := sess.Start(command); err != nil {
		return "", "", 0, p.classify(callerCtx, op, fmt.Errorf("start command: %w", err))
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- sess.Wait() }()
	select {
	case err = <-waitErr:
	case <-ctx.Done():
		client.Close() // unblocks Wait
		<-waitErr
		return "", "", 0, &provider.Error{Op: op, Target: p.id, Class: provider.Transient,
			Err: fmt.Errorf("`%s` did not finish: %w", command, context.Cause(ctx))}
	}
	if err == nil {
		return o.String(), e.String(), 0, nil
	}
	x := sshconn.ExitOf(err)
	if x.Dropped || x.Signal != "" {
		return "", "", 0, &provider.Error{Op: op, Target: p.id, Class: provider.Unreachable,
			Err: fmt.Errorf("`%s` ended without an exit status: %w", command, err)}
	}
	return o.String(), e.String(), x.Status, nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

// clip shortens s to at most n bytes (on a rune boundary), marking the cut.
func clip(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
