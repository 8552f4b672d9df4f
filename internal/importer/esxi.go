package importer

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// uservar is one advanced setting read from the dump. The value of
// NutPassword is never kept.
type uservar struct {
	name  string // without /UserVars/, e.g. NutUpsName
	value string
	line  int
}

var (
	// esxcli system settings advanced list [-d] [-o /UserVars/NutUpsName]
	pathRE  = regexp.MustCompile(`^\s*Path:\s*(\S+)\s*$`)
	fieldRE = regexp.MustCompile(`^\s*(Type|Int Value|String Value):\s?(.*)$`)
	// esxcfg-advcfg -g /UserVars/NutUpsName
	valueOfRE = regexp.MustCompile(`^\s*Value of (\S+) is ?(.*)$`)
	// hand-made dumps: /UserVars/NutUser = monuser, UserVars.NutUser: monuser
	assignRE = regexp.MustCompile(`^\s*(/UserVars/\S+?|UserVars\.\S+?)\s*[=:]\s*(.*)$`)
)

// readUserVars collects the advanced settings of a dump, in input order.
// Settings outside /UserVars are counted, not returned.
func readUserVars(data []byte) (vars []uservar, others int, bad []int, err error) {
	ls, bad, err := lines(data)
	if err != nil {
		return nil, 0, nil, err
	}
	type block struct {
		path              string
		line              int
		typ               string
		intVal, strVal    string
		intLine, strLine  int
		hasInt, hasString bool
	}
	var cur *block
	flush := func() {
		if cur == nil {
			return
		}
		name, ok := userVarName(cur.path)
		switch {
		case !ok:
			others++
		default:
			v, line := cur.strVal, cur.strLine
			isInt := strings.HasPrefix(cur.typ, "int") || cur.typ == "" && cur.hasInt && (!cur.hasString || v == "")
			if isInt {
				v, line = cur.intVal, cur.intLine
			}
			if line == 0 {
				line = cur.line
			}
			vars = append(vars, uservar{name: name, value: v, line: line})
		}
		cur = nil
	}
	for i, l := range ls {
		n := i + 1
		if m := pathRE.FindStringSubmatch(l); m != nil {
			flush()
			cur = &block{path: m[1], line: n}
			continue
		}
		if cur != nil {
			if m := fieldRE.FindStringSubmatch(l); m != nil {
				switch m[1] {
				case "Type":
					cur.typ = strings.ToLower(strings.TrimSpace(m[2]))
				case "Int Value":
					cur.intVal, cur.intLine, cur.hasInt = strings.TrimSpace(m[2]), n, true
				case "String Value":
					cur.strVal, cur.strLine, cur.hasString = strings.TrimSpace(m[2]), n, true
				}
			}
			continue
		}
		if m := valueOfRE.FindStringSubmatch(l); m != nil {
			name, ok := userVarName(m[1])
			if !ok {
				others++
				continue
			}
			vars = append(vars, uservar{name: name, value: strings.TrimSpace(m[2]), line: n})
			continue
		}
		if m := assignRE.FindStringSubmatch(l); m != nil {
			name, _ := userVarName(m[1])
			vars = append(vars, uservar{name: name, value: unquote(strings.TrimSpace(m[2])), line: n})
		}
	}
	flush()
	// Forget the password at once: only that it was given matters.
	for i := range vars {
		if strings.EqualFold(vars[i].name, "NutPassword") {
			vars[i].value = ""
		}
	}
	return vars, others, bad, nil
}

// userVarName returns "NutUser" for /UserVars/NutUser, UserVars.NutUser or
// a bare NutUser (esxcfg-advcfg -g prints the bare name).
func userVarName(p string) (string, bool) {
	switch {
	case strings.HasPrefix(p, "/UserVars/"):
		return strings.TrimPrefix(p, "/UserVars/"), true
	case strings.HasPrefix(p, "UserVars."):
		return strings.TrimPrefix(p, "UserVars."), true
	case strings.HasPrefix(p, "Nut") && !strings.Contains(p, "/"):
		return p, true
	}
	return "", false
}

func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '\'' && s[len(s)-1] == '\'') {
		return s[1 : len(s)-1]
	}
	return s
}

// NutClient-ESXi's installer defaults (upsmon-install), which
// `esxcli ... list -d` leaves out.
const (
	defaultNutUser    = "upsuser"
	defaultNutUpsName = "upsname@nutserver"
)

// fromESXi reads NutClient-ESXi's UserVars.
func fromESXi(data []byte) (*draft, error) {
	vars, others, bad, err := readUserVars(data)
	if err != nil {
		return nil, err
	}
	d := &draft{}
	for _, n := range bad {
		d.warn(n, "", badLineMsg)
	}
	byName := map[string]uservar{}
	for _, v := range vars {
		byName[strings.ToLower(v.name)] = v // the last one wins, as in a re-run dump
	}
	get := func(name string) (uservar, bool) {
		v, ok := byName[strings.ToLower(name)]
		return v, ok
	}
	intVar := func(v uservar) (int, bool) {
		i, err := strconv.Atoi(v.value)
		if err != nil || i < 0 {
			d.warn(v.line, v.name, "%q is not a whole number >= 0; not imported", v.value)
			return 0, false
		}
		return i, true
	}

	user := defaultNutUser
	if v, ok := get("NutUser"); ok && v.value != "" {
		user = v.value
	} else {
		d.warn(0, "NutUser", "not in the input: using NutClient's default %q", defaultNutUser)
	}
	if _, ok := get("NutPassword"); !ok {
		d.warn(0, "NutPassword", "not in the input (NutClient's default then applies); the password file is still expected")
	}
	names, ok := get("NutUpsName")
	switch {
	case !ok:
		d.warn(0, "NutUpsName", "not in the input: no UPS to import")
	case names.value == "" || names.value == defaultNutUpsName:
		d.warn(names.line, "NutUpsName", "still NutClient's placeholder %q; no UPS to import", names.value)
	default:
		for _, sys := range strings.Fields(names.value) {
			ups, host, port, err := parseSystem(sys)
			if err != nil {
				d.warn(names.line, "NutUpsName", "%v; not imported", err)
				continue
			}
			d.ups = append(d.ups, upsDraft{
				line: names.line, nutName: ups, host: host, port: port, powerValue: 1,
				username: user, hasPassword: true,
				origin: fmt.Sprintf("NutUpsName %s (line %d), NutUser %s; the password (NutPassword) is not copied here", sys, names.line, user),
			})
		}
	}
	if v, ok := get("NutMinSupplies"); ok {
		if i, ok := intVar(v); ok {
			set(&d.power, "min_supplies", intNode(i), fmt.Sprintf("NutMinSupplies %d (line %d)", i, v.line))
		}
	}
	if v, ok := get("NutOnBatteryDelay"); ok {
		if i, ok := intVar(v); ok {
			c := fmt.Sprintf("NutOnBatteryDelay %d (line %d)", i, v.line)
			if i == 0 {
				c += ": 0 waits for low battery (or another critical rule), as NutClient did"
			}
			set(&d.power, "on_battery_delay", durNode(time.Duration(i)*time.Second), c)
		}
	}
	mail := false
	if v, ok := get("NutSendMail"); ok {
		mail = v.value == "1"
	}
	for _, v := range vars {
		switch strings.ToLower(v.name) {
		case "nutupsname", "nutuser", "nutpassword", "nutminsupplies", "nutonbatterydelay":
		case "nutfinaldelay":
			d.warn(v.line, v.name, "not supported: sundown shuts the ESXi host down as the last step of its plan, with no extra delay after low battery")
		case "nutsendmail":
			if mail {
				d.warn(v.line, v.name, "1: not imported: configure sundown's email notifications instead")
			} else {
				d.warn(v.line, v.name, "0: no mail was sent; nothing to import")
			}
		case "nutmailto":
			d.warn(v.line, v.name, "not imported: send sundown's email notifications to %s", v.value)
		default:
			if strings.HasPrefix(strings.ToLower(v.name), "nut") {
				d.warn(v.line, v.name, "unknown NutClient setting; not imported")
			} else {
				others++
			}
		}
	}
	if others > 0 {
		d.warn(0, "", "%d advanced settings that are not NutClient's were ignored", others)
	}
	d.trailer = append(d.trailer, "",
		"NutClient ran on the ESXi host and shut that host and its VMs down. sundown runs",
		"elsewhere (a small VM or machine) and drives the host remotely: add it as a target,",
		"over the API (vsphere:) or, for a free-licence host, over SSH, e.g.:",
		"targets:",
		"  - name: esxi",
		"    esxi_ssh:",
		"      address: ESXI-HOST:22",
		"      user: root",
		"      key_file: /etc/sundown/esxi_ed25519",
		"      known_hosts_file: /etc/sundown/known_hosts",
		"    hosts:",
		"      shutdown: true")
	return d, nil
}
