package importer

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// fromUpsmon reads NUT's upsmon.conf (upsmon.conf(5) of NUT 2.8).
func fromUpsmon(data []byte) (*draft, error) {
	ls, bad, err := lines(data)
	if err != nil {
		return nil, err
	}
	d := &draft{}
	for _, n := range bad {
		d.warn(n, "", badLineMsg)
	}
	var (
		hostsync        *setting
		hostsyncLine    int
		shutdownCmd     string
		shutdownCmdLine int
		tlsWanted       bool
	)
	for i, raw := range ls {
		n := i + 1
		f, err := splitFields(raw)
		if err != nil {
			d.warn(n, "", "%v; line skipped", err)
			continue
		}
		if len(f) == 0 {
			continue
		}
		dir := strings.ToUpper(f[0])
		args := f[1:]
		num := func() (int, bool) {
			if len(args) != 1 {
				d.warn(n, dir, "want one number, got %d values; not imported", len(args))
				return 0, false
			}
			v, err := strconv.Atoi(args[0])
			if err != nil {
				d.warn(n, dir, "%q is not a whole number; not imported", args[0])
				return 0, false
			}
			return v, true
		}
		secs := func(key string) {
			if v, ok := num(); ok {
				if v < 0 {
					d.warn(n, dir, "negative; not imported")
					return
				}
				set(&d.power, key, durNode(time.Duration(v)*time.Second), fmt.Sprintf("%s %d (line %d)", dir, v, n))
			}
		}
		switch dir {
		case "MONITOR":
			d.monitor(n, args)
		case "MINSUPPLIES":
			if v, ok := num(); ok {
				set(&d.power, "min_supplies", intNode(v), fmt.Sprintf("MINSUPPLIES %d (line %d)", v, n))
			}
		case "DEADTIME":
			secs("deadtime")
		case "NOCOMMWARNTIME":
			secs("nocomm_warn")
		case "HOSTSYNC":
			if v, ok := num(); ok && v > 0 {
				hostsync = &setting{"primary_wait", durNode(time.Duration(v) * time.Second), fmt.Sprintf("HOSTSYNC %d (line %d): how long a primary waits for the secondaries to log out", v, n)}
				hostsyncLine = n
			}
		case "POLLFREQ", "POLLFREQALERT":
			if _, ok := num(); ok {
				d.warn(n, dir, "not carried over: sundown polls every 500ms by default (power.poll_interval)")
			}
		case "OFFDURATION":
			if v, ok := num(); ok {
				switch {
				case v > 0:
					set(&d.perUPS, "off_grace", durNode(time.Duration(v)*time.Second), fmt.Sprintf("OFFDURATION %d (line %d)", v, n))
				case v == 0:
					d.warn(n, dir, "0 (OFF counts at once) is not expressible; sundown's smallest off_grace is 1s; not imported")
				default:
					d.warn(n, dir, "negative (never treat OFF as a power loss) is not supported: sundown treats a UPS OFF for off_grace (default 30s) as not supplying")
				}
			}
		case "ALARMCRITICAL":
			if v, ok := num(); ok {
				set(&d.perUPS, "alarm_critical", boolNode(v != 0), fmt.Sprintf("ALARMCRITICAL %d (line %d)", v, n))
			}
		case "FINALDELAY":
			d.warn(n, dir, "not supported: sundown shuts its own host down last, once the plan is done, with no extra delay")
		case "SHUTDOWNCMD":
			if len(args) != 1 {
				d.warn(n, dir, "want one (quoted) command; not imported")
				continue
			}
			shutdownCmd, shutdownCmdLine = args[0], n
			d.warn(n, dir, "not imported as an active target: the commented `targets:` example at the end of the YAML does what it did")
		case "NOTIFYCMD", "NOTIFYFLAG", "NOTIFYMSG":
			d.warn(n, dir, "not imported: configure sundown's own notifications (exec, email, webhook) instead")
		case "POWERDOWNFLAG":
			d.warn(n, dir, "not supported: as NUT primary, set nut.ups_command (e.g. shutdown.return) so the UPS cuts the load after the shutdown")
		case "RUN_AS_USER":
			d.warn(n, dir, "not supported: the systemd unit decides which user sundown runs as")
		case "CERTVERIFY", "FORCESSL":
			if v, ok := num(); ok && v != 0 {
				tlsWanted = true
				d.warn(n, dir, "not imported: sundown verifies upsd with a PEM CA file or a certificate fingerprint; add nut.tls (ca_file or fingerprint) to each UPS, see the example at the end")
			} else if ok {
				d.warn(n, dir, "0: without nut.tls sundown talks to upsd in plain text, as upsmon did")
			}
		case "CERTPATH", "CERTIDENT", "CERTHOST":
			tlsWanted = tlsWanted || dir == "CERTHOST"
			d.warn(n, dir, "not imported: sundown reads no NSS or OpenSSL certificate store; export the CA as PEM for nut.tls.ca_file")
		case "RBWARNTIME", "OBLBDURATION", "OVERDURATION", "SHUTDOWNEXIT", "DEBUG_MIN", "POLLFAIL_LOG_THROTTLE_MAX":
			d.warn(n, dir, "not supported by sundown; not imported")
		default:
			d.warn(n, dir, "unknown directive; not imported")
		}
	}
	hasPrimary := false
	for _, u := range d.ups {
		hasPrimary = hasPrimary || u.primary
	}
	if hostsync != nil {
		if hasPrimary {
			d.primary = append(d.primary, *hostsync)
		} else {
			d.warn(hostsyncLine, "HOSTSYNC", "only a primary waits for the other clients; no MONITOR line is primary, so not imported")
		}
	}
	if shutdownCmd != "" {
		d.trailer = append(d.trailer, "",
			fmt.Sprintf("upsmon ran SHUTDOWNCMD (line %d) to power this machine off. To have sundown do", shutdownCmdLine),
			"the same as the last step of its plan, add this target (then review `sundown plan`):",
			"targets:",
			"  - name: this-host",
			"    local:",
			"      command: "+flowList(commandArgv(shutdownCmd)),
			"    hosts:",
			"      shutdown: true")
	}
	if tlsWanted {
		d.trailer = append(d.trailer, "",
			"upsmon verified upsd's certificate. Give each UPS's nut: a tls: block, e.g.:",
			"    tls:",
			"      ca_file: /etc/sundown/nut-ca.pem        # the CA that signed upsd's certificate, PEM",
			"      # fingerprint: sha256:AB:CD:...           # or pin upsd's certificate instead")
	}
	return d, nil
}

// monitor reads "MONITOR system powervalue username password type" (and
// the pre-2.0 form without a username).
func (d *draft) monitor(n int, args []string) {
	var user string
	var typ string
	switch len(args) {
	case 5:
		user, typ = args[2], args[4]
	case 4:
		typ = args[3]
		d.warn(n, "MONITOR", "old form without a username: sundown will watch without logging in (add username and password_file to hold a login)")
	default:
		d.warn(n, "MONITOR", "want: MONITOR ups@host[:port] powervalue username password primary|secondary (%d values found); not imported", len(args))
		return
	}
	ups, host, port, err := parseSystem(args[0])
	if err != nil {
		d.warn(n, "MONITOR", "%v; not imported", err)
		return
	}
	pv, err := strconv.Atoi(args[1])
	if err != nil || pv < 0 {
		d.warn(n, "MONITOR", "power value %q is not a whole number >= 0; not imported", args[1])
		return
	}
	u := upsDraft{line: n, nutName: ups, host: host, port: port, powerValue: pv, username: user, hasPassword: user != ""}
	switch strings.ToLower(typ) {
	case "primary", "master":
		u.primary = true
		if user == "" {
			d.warn(n, "MONITOR", "primary without a username cannot log in; imported as secondary")
			u.primary = false
		}
	case "secondary", "slave":
	default:
		d.warn(n, "MONITOR", "type %q is neither primary nor secondary; imported as secondary", typ)
	}
	u.origin = fmt.Sprintf("MONITOR %s (line %d); its password is not copied here", args[0], n)
	d.ups = append(d.ups, u)
}

var errUnclosedQuote = errors.New("unclosed quote")

// splitFields splits a line like NUT's parseconf: white space separates
// fields, "double quotes" group them, a backslash escapes the next
// character, and # outside quotes starts a comment.
func splitFields(line string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inField, inQuote, esc := false, false, false
	for _, r := range line {
		switch {
		case esc:
			cur.WriteRune(r)
			esc, inField = false, true
		case r == '\\':
			esc, inField = true, true
		case inQuote:
			if r == '"' {
				inQuote = false
			} else {
				cur.WriteRune(r)
			}
		case r == '"':
			inQuote, inField = true, true
		case r == '#':
			if inField {
				out = append(out, cur.String())
			}
			return out, nil
		case r == ' ' || r == '\t':
			if inField {
				out = append(out, cur.String())
				cur.Reset()
				inField = false
			}
		default:
			cur.WriteRune(r)
			inField = true
		}
	}
	if inQuote {
		return nil, errUnclosedQuote
	}
	if inField {
		out = append(out, cur.String())
	}
	return out, nil
}

// commandArgv turns upsmon's shell command into an argv: split on white
// space when it uses no shell syntax, else run through /bin/sh -c.
func commandArgv(cmd string) []string {
	if strings.ContainsAny(cmd, "|&;<>()$`\\\"'*?[]{}~") {
		return []string{"/bin/sh", "-c", cmd}
	}
	return strings.Fields(cmd)
}

// flowList renders a YAML flow sequence of quoted strings.
func flowList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
