package importer

import (
	"bytes"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// draft is what an input says, in sundown's terms, before it is rendered.
type draft struct {
	power    []setting // keys of power:, in output order
	ups      []upsDraft
	perUPS   []setting // keys every UPS gets (off_grace, alarm_critical)
	primary  []setting // keys every primary's nut: gets (primary_wait)
	trailer  []string  // comment lines after the config (commented examples)
	warnings []Warning
}

// setting is one key with the value and where it came from.
type setting struct {
	key     string
	value   *yaml.Node
	comment string // e.g. "DEADTIME 15 (line 12)"
}

// upsDraft is one UPS to monitor.
type upsDraft struct {
	line        int
	origin      string // comment: where it came from, without any secret
	nutName     string // the UPS name on the server
	host, port  string
	powerValue  int
	username    string
	hasPassword bool
	primary     bool

	name         string // sundown's name, set by nameUPSes
	passwordFile string // set by Import
}

func (d *draft) warn(line int, directive, format string, args ...any) {
	d.warnings = append(d.warnings, Warning{Line: line, Directive: directive, Msg: fmt.Sprintf(format, args...)})
}

func set(list *[]setting, key string, v *yaml.Node, comment string) {
	for i := range *list {
		if (*list)[i].key == key {
			(*list)[i] = setting{key, v, comment}
			return
		}
	}
	*list = append(*list, setting{key, v, comment})
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
var badNameChar = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// nameUPSes gives every UPS a unique sundown name: its NUT name, or the
// NUT name and the server's host when two servers serve the same name.
func (d *draft) nameUPSes() {
	count := map[string]int{}
	for _, u := range d.ups {
		count[u.nutName]++
	}
	used := map[string]bool{}
	for i := range d.ups {
		u := &d.ups[i]
		base := u.nutName
		if count[u.nutName] > 1 {
			base = u.nutName + "-" + u.host
		}
		base = strings.Trim(badNameChar.ReplaceAllString(base, "-"), "-._")
		if base == "" {
			base = "ups"
		}
		if len(base) > 50 {
			base = strings.TrimRight(base[:50], "-._")
		}
		name := base
		for n := 2; used[name] || !nameRE.MatchString(name); n++ {
			name = base + "-" + strconv.Itoa(n)
		}
		used[name] = true
		u.name = name
	}
}

// parseSystem splits upsmon's "upsname[@hostname[:port]]".
func parseSystem(s string) (ups, host, port string, err error) {
	ups, hostport, found := strings.Cut(s, "@")
	if ups == "" {
		return "", "", "", fmt.Errorf("%q has no UPS name (want upsname@host[:port])", s)
	}
	if strings.ContainsAny(ups, " \t\"") {
		return "", "", "", fmt.Errorf("UPS name %q has spaces or quotes", ups)
	}
	if !found {
		return ups, "localhost", "3493", nil
	}
	host, port = hostport, "3493"
	switch {
	case strings.HasPrefix(hostport, "["):
		end := strings.Index(hostport, "]")
		if end < 0 {
			return "", "", "", fmt.Errorf("%q: unclosed [ in the host", s)
		}
		host = hostport[1:end]
		if rest := hostport[end+1:]; rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return "", "", "", fmt.Errorf("%q: want [ipv6]:port", s)
			}
			port = rest[1:]
		}
	case strings.Count(hostport, ":") == 1:
		host, port, _ = strings.Cut(hostport, ":")
	}
	if host == "" {
		return "", "", "", fmt.Errorf("%q has an empty host", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", "", fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, port)
	}
	return ups, host, port, nil
}

// scalar nodes
func strNode(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}
func intNode(i int) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(i)}
}
func boolNode(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(b)}
}

// durNode writes whole seconds the way people do: "90s", "5m", "0s".
func durNode(d time.Duration) *yaml.Node {
	sec := int64(d / time.Second)
	if sec != 0 && sec%60 == 0 {
		return strNode(strconv.FormatInt(sec/60, 10) + "m")
	}
	return strNode(strconv.FormatInt(sec, 10) + "s")
}

func mapNode() *yaml.Node { return &yaml.Node{Kind: yaml.MappingNode} }

func put(m *yaml.Node, key string, v *yaml.Node, comment string) {
	k := strNode(key)
	k.Tag = ""
	k.HeadComment = comment
	m.Content = append(m.Content, k, v)
}

func putSettings(m *yaml.Node, list []setting) {
	for _, s := range list {
		put(m, s.key, s.value, s.comment)
	}
}

// render writes the draft as a commented sundown config.
func (d *draft) render(f Format, source string) ([]byte, error) {
	root := mapNode()
	if len(d.power) > 0 {
		p := mapNode()
		putSettings(p, d.power)
		put(root, "power", p, "")
	}
	list := &yaml.Node{Kind: yaml.SequenceNode}
	for _, u := range d.ups {
		m := mapNode()
		m.HeadComment = u.origin
		put(m, "name", strNode(u.name), "")
		put(m, "power_value", intNode(u.powerValue), "")
		for _, s := range d.perUPS {
			put(m, s.key, s.value, s.comment)
		}
		n := mapNode()
		put(n, "address", strNode(net.JoinHostPort(u.host, u.port)), "")
		put(n, "ups", strNode(u.nutName), "")
		if u.username != "" {
			put(n, "username", strNode(u.username), "")
		}
		if u.passwordFile != "" {
			put(n, "password_file", strNode(u.passwordFile),
				"The password was not copied. Put it in this file, alone on one line:\n  install -m 600 /dev/null "+u.passwordFile+" && editor "+u.passwordFile)
		}
		mode := "secondary"
		if u.primary {
			mode = "primary"
		}
		put(n, "mode", strNode(mode), "")
		if u.primary {
			putSettings(n, d.primary)
		}
		put(m, "nut", n, "")
		list.Content = append(list.Content, m)
	}
	put(root, "ups", list, "")

	var buf bytes.Buffer
	from := "an upsmon.conf"
	if f == ESXi {
		from = "NutClient-ESXi UserVars"
	}
	if source != "" {
		from += " (" + source + ")"
	}
	fmt.Fprintf(&buf, "# sundown config imported from %s by `sundown import`.\n", from)
	buf.WriteString("# Review it, create the password files it names, then run: sundown check -c FILE\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	if len(d.warnings) > 0 {
		buf.WriteString("\n# Not imported (sundown import listed these on stderr too):\n")
		for _, w := range d.warnings {
			buf.WriteString("#   " + oneLine(w.String()) + "\n")
		}
	}
	for _, l := range d.trailer {
		if l == "" {
			buf.WriteString("#\n")
			continue
		}
		buf.WriteString("# " + l + "\n")
	}
	return buf.Bytes(), nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
