package config

import (
	"fmt"
	"net/url"
	"os"
	"path"
	"regexp"
	"strings"
	"time"
)

// Target is a system sundown shuts guests and hosts down on.
type Target struct {
	Name    string   `yaml:"name"`
	VSphere *VSphere `yaml:"vsphere"`
	// Hosts says what happens to this target's hypervisor hosts once their
	// guests are down.
	Hosts HostSteps `yaml:"hosts"`
}

// VSphere is a vCenter Server or a standalone ESXi host, driven by its API.
type VSphere struct {
	URL          string `yaml:"url"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
	Password     Secret `yaml:"-"`
	// CAFile or Thumbprint verify the server; Insecure skips verification
	// (explicit, logged at every connect).
	CAFile     string `yaml:"ca_file"`
	Thumbprint string `yaml:"thumbprint"`
	Insecure   bool   `yaml:"insecure"`
}

// HostSteps are the host phase of a target.
type HostSteps struct {
	// Maintenance enters maintenance mode before the host shuts down.
	Maintenance        bool     `yaml:"maintenance"`
	MaintenanceTimeout Duration `yaml:"maintenance_timeout"` // default 5m
	// Shutdown shuts the host down after its guests (and maintenance).
	Shutdown        bool     `yaml:"shutdown"`
	ShutdownTimeout Duration `yaml:"shutdown_timeout"` // default 5m
}

// Shutdown is the plan: which guests stop how, in what order.
type Shutdown struct {
	// DefaultAction is the action chain of guests no group or guest entry
	// gives one: ["shutdown 120s", "poweroff 60s"] by default.
	DefaultAction []string    `yaml:"default_action"`
	Caps          Caps        `yaml:"caps"`
	Groups        []Group     `yaml:"groups"`
	Guests        []GuestRule `yaml:"guests"`
	Hooks         []Hook      `yaml:"hooks"`
	Self          Self        `yaml:"self"`
}

// Caps bound how many steps run at once.
type Caps struct {
	Global  int `yaml:"global"`   // default 8
	PerHost int `yaml:"per_host"` // default 4
}

// Group chooses guests by selector; a guest belongs to the first group that
// matches it.
type Group struct {
	Name   string   `yaml:"name"`
	Select Selector `yaml:"select"`
	// Action is the chain, e.g. ["shutdown 120s", "poweroff"]; empty means
	// shutdown.default_action.
	Action []string `yaml:"action"`
	// DependsOn names groups or guests this group needs: with systemd's
	// meaning, this group stops before them (and starts after them).
	DependsOn []string `yaml:"depends_on"`
}

// Selector matches guests; every given criterion must hold.
type Selector struct {
	Names   []string          `yaml:"names"` // globs on the guest name
	Tags    map[string]string `yaml:"tags"`  // value "*" = the tag is present
	Hosts   []string          `yaml:"hosts"`
	Targets []string          `yaml:"targets"`
}

// GuestRule overrides the action or dependencies of one guest, or excludes it.
type GuestRule struct {
	Name      string   `yaml:"name"`
	Action    []string `yaml:"action"`
	DependsOn []string `yaml:"depends_on"`
	Exclude   bool     `yaml:"exclude"`
}

// Hook runs before the guests of some groups stop (or at the very start).
type Hook struct {
	Name    string    `yaml:"name"`
	Before  []string  `yaml:"before"`
	Timeout Duration  `yaml:"timeout"` // default 60s
	Exec    *ExecHook `yaml:"exec"`
	HTTP    *HTTPHook `yaml:"http"`
}

// ExecHook runs a local command (no shell).
type ExecHook struct {
	Command []string `yaml:"command"`
}

// HTTPHook calls a URL.
type HTTPHook struct {
	URL    string `yaml:"url"`
	Method string `yaml:"method"` // default POST
}

// Self tells sundown where it runs, so that it shuts itself down last.
type Self struct {
	// VMUUID is the SMBIOS UUID of the VM sundown runs in, excluded from the
	// guest phase; "auto" reads /sys/class/dmi/id/product_uuid.
	VMUUID string `yaml:"vm_uuid"`
	// Host and Target name the hypervisor host carrying sundown: it shuts
	// down last of all.
	Host   string `yaml:"host"`
	Target string `yaml:"target"`
}

// ActionKinds are the steps of an action chain.
var ActionKinds = []string{"shutdown", "suspend", "poweroff", "skip"}

// DefaultActionTimeouts apply when an action names no timeout.
var DefaultActionTimeouts = map[string]time.Duration{
	"shutdown": 120 * time.Second,
	"suspend":  300 * time.Second,
	"poweroff": 60 * time.Second,
	"skip":     0,
}

// DefaultAction is the chain of guests nobody configured.
var DefaultAction = []string{"shutdown 120s", "poweroff 60s"}

// Action is one parsed step of an action chain.
type Action struct {
	Kind    string
	Timeout time.Duration
}

// ParseAction parses "shutdown 120s", "poweroff", "skip".
func ParseAction(s string) (Action, error) {
	f := strings.Fields(s)
	if len(f) == 0 || len(f) > 2 {
		return Action{}, fmt.Errorf("%q: want KIND [TIMEOUT], e.g. \"shutdown 120s\"", s)
	}
	kind := strings.ToLower(f[0])
	def, ok := DefaultActionTimeouts[kind]
	if !ok {
		return Action{}, fmt.Errorf("%q: unknown action %q (want %s)", s, f[0], strings.Join(ActionKinds, ", "))
	}
	a := Action{Kind: kind, Timeout: def}
	if len(f) == 2 {
		if kind == "skip" {
			return Action{}, fmt.Errorf("%q: skip takes no timeout", s)
		}
		d, err := ParseDuration(f[1])
		if err != nil {
			return Action{}, fmt.Errorf("%q: %v", s, err)
		}
		if d <= 0 {
			return Action{}, fmt.Errorf("%q: the timeout must be positive", s)
		}
		a.Timeout = d
	}
	return a, nil
}

// ParseChain parses an action chain; nil input gives nil.
func ParseChain(ss []string) ([]Action, error) {
	var out []Action
	for i, s := range ss {
		a, err := ParseAction(s)
		if err != nil {
			return nil, err
		}
		if a.Kind == "skip" && len(ss) > 1 {
			return nil, fmt.Errorf("skip must be the only action (item %d)", i)
		}
		out = append(out, a)
	}
	return out, nil
}

func (c *Config) applyShutdownDefaults() {
	s := &c.Shutdown
	if len(s.DefaultAction) == 0 {
		s.DefaultAction = append([]string(nil), DefaultAction...)
	}
	if s.Caps.Global == 0 {
		s.Caps.Global = 8
	}
	if s.Caps.PerHost == 0 {
		s.Caps.PerHost = 4
	}
	for i := range s.Hooks {
		setDur(&s.Hooks[i].Timeout, 60*time.Second)
		if h := s.Hooks[i].HTTP; h != nil && h.Method == "" {
			h.Method = "POST"
		}
	}
	for i := range c.Targets {
		h := &c.Targets[i].Hosts
		setDur(&h.MaintenanceTimeout, 5*time.Minute)
		setDur(&h.ShutdownTimeout, 5*time.Minute)
	}
}

func (c *Config) validateShutdown(ps *problems, getenv func(string) string) {
	targets := map[string]int{}
	for i, t := range c.Targets {
		p := fmt.Sprintf("targets[%d]", i)
		switch {
		case t.Name == "":
			ps.add(p+".name", 0, "missing")
		case !nameRE.MatchString(t.Name):
			ps.add(p+".name", 0, "%q: use letters, digits, '.', '_' and '-' (at most 63)", t.Name)
		default:
			if j, dup := targets[t.Name]; dup {
				ps.add(p+".name", 0, "%q is also the name of targets[%d]", t.Name, j)
			} else {
				targets[t.Name] = i
			}
		}
		if t.VSphere == nil {
			ps.add(p, 0, "say what this target is: add vsphere:")
			continue
		}
		c.Targets[i].VSphere.Password = validateVSphere(t.VSphere, p+".vsphere", ps, getenv)
	}
	s := c.Shutdown
	checkChain(s.DefaultAction, "shutdown.default_action", ps)
	if s.Caps.Global < 0 {
		ps.add("shutdown.caps.global", 0, "must be positive")
	}
	if s.Caps.PerHost < 0 {
		ps.add("shutdown.caps.per_host", 0, "must be positive")
	}
	for i, g := range s.Groups {
		p := fmt.Sprintf("shutdown.groups[%d]", i)
		if g.Name == "" {
			ps.add(p+".name", 0, "missing")
		}
		checkChain(g.Action, p+".action", ps)
		for j, n := range g.Select.Names {
			if _, err := path.Match(n, ""); err != nil {
				ps.add(fmt.Sprintf("%s.select.names[%d]", p, j), 0, "bad glob %q", n)
			}
		}
		for j, tn := range g.Select.Targets {
			if _, ok := targets[tn]; !ok {
				ps.add(fmt.Sprintf("%s.select.targets[%d]", p, j), 0, "unknown target %q", tn)
			}
		}
	}
	for i, g := range s.Guests {
		p := fmt.Sprintf("shutdown.guests[%d]", i)
		if g.Name == "" {
			ps.add(p+".name", 0, "missing")
		}
		checkChain(g.Action, p+".action", ps)
		if g.Exclude && (len(g.Action) > 0 || len(g.DependsOn) > 0) {
			ps.add(p, 0, "an excluded guest takes no action or depends_on")
		}
	}
	for i, h := range s.Hooks {
		p := fmt.Sprintf("shutdown.hooks[%d]", i)
		if h.Name == "" {
			ps.add(p+".name", 0, "missing")
		}
		switch {
		case h.Exec == nil && h.HTTP == nil:
			ps.add(p, 0, "say what the hook does: add exec: or http:")
		case h.Exec != nil && h.HTTP != nil:
			ps.add(p, 0, "give exec: or http:, not both")
		case h.Exec != nil && len(h.Exec.Command) == 0:
			ps.add(p+".exec.command", 0, "missing: the program and its arguments, as a list")
		case h.HTTP != nil:
			if u, err := url.Parse(h.HTTP.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				ps.add(p+".http.url", 0, "%q is not an http(s) URL", h.HTTP.URL)
			}
		}
	}
	if s.Self.Target != "" {
		if _, ok := targets[s.Self.Target]; !ok {
			ps.add("shutdown.self.target", 0, "unknown target %q", s.Self.Target)
		}
	}
	if s.Self.Host != "" && s.Self.Target == "" && len(c.Targets) > 1 {
		ps.add("shutdown.self.target", 0, "missing: say which target carries host %q", s.Self.Host)
	}
}

var thumbprintRE = regexp.MustCompile(`^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$`)

func checkChain(chain []string, p string, ps *problems) {
	if _, err := ParseChain(chain); err != nil {
		ps.add(p, 0, "%v", err)
	}
}

func validateVSphere(v *VSphere, p string, ps *problems, getenv func(string) string) Secret {
	if v.URL == "" {
		ps.add(p+".url", 0, "missing: the vCenter or ESXi address, e.g. https://vcenter.lan/sdk")
	} else if u, err := url.Parse(v.URL); err != nil {
		ps.add(p+".url", 0, "not a URL")
	} else if u.User != nil {
		ps.add(p+".url", 0, "must not contain credentials: use username and password_file")
	}
	if tp := strings.ReplaceAll(v.Thumbprint, ":", ""); v.Thumbprint != "" && !thumbprintRE.MatchString(tp) {
		ps.add(p+".thumbprint", 0, "want the SHA-1 (40 hex digits) or SHA-256 (64) fingerprint of the server certificate")
	}
	if v.Username == "" {
		ps.add(p+".username", 0, "missing")
	}
	secret := readSecret(v.PasswordFile, v.PasswordEnv, p, ps, getenv)
	if secret.IsZero() && v.PasswordFile == "" && v.PasswordEnv == "" {
		ps.add(p, 0, "give password_file or password_env")
	}
	if v.Insecure && (v.CAFile != "" || v.Thumbprint != "") {
		ps.add(p+".insecure", 0, "insecure cannot be combined with ca_file or thumbprint")
	}
	if v.CAFile != "" {
		if _, err := os.Stat(v.CAFile); err != nil {
			ps.add(p+".ca_file", 0, "cannot read: %v", unwrapPathErr(err))
		}
	}
	return secret
}
