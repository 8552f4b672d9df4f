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
	Name string `yaml:"name"`
	// Exactly one of these says what the target is.
	VSphere *VSphere `yaml:"vsphere"`  // vCenter or ESXi over the API
	ESXiSSH *ESXiSSH `yaml:"esxi_ssh"` // free-licence ESXi over SSH (vim-cmd, esxcli)
	Libvirt *Libvirt `yaml:"libvirt"`  // KVM/QEMU through libvirt
	Proxmox *Proxmox `yaml:"proxmox"`  // Proxmox VE over its API with a token
	SSH     *SSHHost `yaml:"ssh"`      // any host with a shutdown command (Linux, Windows, NAS)
	Local   *Local   `yaml:"local"`    // the machine sundown runs on
	// Hosts says what happens to this target's hypervisor hosts once their
	// guests are down.
	Hosts HostSteps `yaml:"hosts"`
	// Wake says how the restore powers its hosts on; hosts without an
	// entry are waited for (they boot on AC power).
	Wake []Wake `yaml:"wake"`
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

// ESXiSSH is an ESXi host driven over SSH, for free licences whose API
// refuses power operations.
type ESXiSSH struct {
	Address        string `yaml:"address"` // host:port, port 22 by default
	User           string `yaml:"user"`
	KeyFile        string `yaml:"key_file"`
	KnownHostsFile string `yaml:"known_hosts_file"` // required: no unverified hosts
	HostName       string `yaml:"host_name"`
	AutoStop       bool   `yaml:"autostop"` // run the host's autostop before power off
}

// Libvirt is a libvirt daemon: qemu:///system, qemu+ssh://host/system, …
type Libvirt struct {
	URI          string `yaml:"uri"`
	ShutdownMode string `yaml:"shutdown_mode"` // acpi (default) or agent
	HostName     string `yaml:"host_name"`
	// HostSSH shuts the hypervisor itself down over SSH once its guests
	// are down (libvirt cannot); with hosts: {shutdown: true}.
	HostSSH *SSHHost `yaml:"host_ssh"`
}

// Proxmox is a Proxmox VE node or cluster, reached with an API token.
type Proxmox struct {
	URL         string `yaml:"url"`      // https://pve:8006
	TokenID     string `yaml:"token_id"` // user@realm!tokenname
	SecretFile  string `yaml:"secret_file"`
	SecretEnv   string `yaml:"secret_env"`
	Secret      Secret `yaml:"-"`
	CAFile      string `yaml:"ca_file"`
	Fingerprint string `yaml:"fingerprint"`
	Insecure    bool   `yaml:"insecure"`
}

// SSHHost is any host shut down by one command over SSH.
type SSHHost struct {
	Address        string `yaml:"address"`
	User           string `yaml:"user"`
	KeyFile        string `yaml:"key_file"`
	KnownHostsFile string `yaml:"known_hosts_file"`
	// Command: "sudo -n systemctl poweroff" by default; Windows OpenSSH
	// "shutdown /s /t 0"; a NAS its own.
	Command  string `yaml:"command"`
	HostName string `yaml:"host_name"`
}

// Local is the machine sundown runs on.
type Local struct {
	Command  []string `yaml:"command"` // default [systemctl, poweroff]
	HostName string   `yaml:"host_name"`
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
	// Ready says when a restored guest of the group is up; its dependents
	// wait for it. Empty: once it is powered on.
	Ready *Ready `yaml:"ready"`
	// RestoreTimeout bounds powering a guest of the group on until ready
	// (default restore.guest_timeout).
	RestoreTimeout Duration `yaml:"restore_timeout"`
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
	Ready     *Ready   `yaml:"ready"` // replaces the group's
}

// Hook runs before the guests of some groups stop (or at the very start).
type Hook struct {
	Name    string    `yaml:"name"`
	Before  []string  `yaml:"before"`
	Timeout Duration  `yaml:"timeout"` // default 60s
	Exec    *ExecHook `yaml:"exec"`
	HTTP    *HTTPHook `yaml:"http"`
	SSH     *SSHHook  `yaml:"ssh"`
}

// SSHHook runs a command on another machine over SSH (known_hosts
// required), e.g. to pause a backup server's jobs.
type SSHHook struct {
	Address        string `yaml:"address"`
	User           string `yaml:"user"`
	KeyFile        string `yaml:"key_file"`
	KnownHostsFile string `yaml:"known_hosts_file"`
	Command        string `yaml:"command"`
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
		kinds := 0
		for _, set := range []bool{t.VSphere != nil, t.ESXiSSH != nil, t.Libvirt != nil, t.Proxmox != nil, t.SSH != nil, t.Local != nil} {
			if set {
				kinds++
			}
		}
		switch {
		case kinds == 0:
			ps.add(p, 0, "say what this target is: add one of vsphere:, esxi_ssh:, libvirt:, proxmox:, ssh:, local:")
			continue
		case kinds > 1:
			ps.add(p, 0, "give one kind of target per entry (vsphere, esxi_ssh, libvirt, proxmox, ssh or local)")
		}
		switch {
		case t.VSphere != nil:
			c.Targets[i].VSphere.Password = validateVSphere(t.VSphere, p+".vsphere", ps, getenv)
		case t.ESXiSSH != nil:
			validateSSHConn(t.ESXiSSH.Address, t.ESXiSSH.User, t.ESXiSSH.KeyFile, t.ESXiSSH.KnownHostsFile, p+".esxi_ssh", ps)
		case t.SSH != nil:
			validateSSHConn(t.SSH.Address, t.SSH.User, t.SSH.KeyFile, t.SSH.KnownHostsFile, p+".ssh", ps)
		case t.Libvirt != nil:
			if t.Libvirt.URI == "" {
				ps.add(p+".libvirt.uri", 0, "missing, e.g. qemu:///system or qemu+ssh://root@kvm1/system")
			}
			switch t.Libvirt.ShutdownMode {
			case "", "acpi", "agent":
			default:
				ps.add(p+".libvirt.shutdown_mode", 0, "want acpi or agent, got %q", t.Libvirt.ShutdownMode)
			}
			if h := t.Libvirt.HostSSH; h != nil {
				validateSSHConn(h.Address, h.User, h.KeyFile, h.KnownHostsFile, p+".libvirt.host_ssh", ps)
			} else if t.Hosts.Shutdown {
				ps.add(p+".hosts.shutdown", 0, "libvirt cannot shut its host down: add libvirt.host_ssh")
			}
		case t.Proxmox != nil:
			x := t.Proxmox
			if u, err := url.Parse(x.URL); x.URL == "" || err != nil || u.Scheme != "https" {
				ps.add(p+".proxmox.url", 0, "want https://HOST:8006")
			}
			if !strings.Contains(x.TokenID, "!") || !strings.Contains(x.TokenID, "@") {
				ps.add(p+".proxmox.token_id", 0, "want user@realm!tokenname, got %q", x.TokenID)
			}
			c.Targets[i].Proxmox.Secret = readSecretKeys(x.SecretFile, x.SecretEnv, "secret_file", "secret_env", p+".proxmox", ps, getenv)
			if c.Targets[i].Proxmox.Secret.IsZero() && x.SecretFile == "" && x.SecretEnv == "" {
				ps.add(p+".proxmox", 0, "give secret_file or secret_env (the API token's secret)")
			}
			if fp := strings.ReplaceAll(x.Fingerprint, ":", ""); x.Fingerprint != "" && (len(fp) != 64 || !thumbprintRE.MatchString(fp)) {
				ps.add(p+".proxmox.fingerprint", 0, "want the SHA-256 fingerprint as PVE shows it (32 hex bytes, AB:CD:…)")
			}
			if x.Insecure && (x.CAFile != "" || x.Fingerprint != "") {
				ps.add(p+".proxmox.insecure", 0, "insecure cannot be combined with ca_file or fingerprint")
			}
		case t.Local != nil:
			if len(c.Targets[i].Local.Command) == 0 {
				c.Targets[i].Local.Command = []string{"systemctl", "poweroff"}
			}
		}
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
		switch n := countSet(h.Exec != nil, h.HTTP != nil, h.SSH != nil); {
		case n == 0:
			ps.add(p, 0, "say what the hook does: add exec:, http: or ssh:")
		case n > 1:
			ps.add(p, 0, "give one of exec:, http:, ssh:")
		case h.SSH != nil:
			validateSSHConn(h.SSH.Address, h.SSH.User, h.SSH.KeyFile, h.SSH.KnownHostsFile, p+".ssh", ps)
			if strings.TrimSpace(h.SSH.Command) == "" {
				ps.add(p+".ssh.command", 0, "missing: the command to run")
			}
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

func validateSSHConn(addr, user, key, known, p string, ps *problems) {
	if addr == "" {
		ps.add(p+".address", 0, "missing: host or host:port")
	}
	if user == "" {
		ps.add(p+".user", 0, "missing")
	}
	for _, f := range []struct{ key, path string }{{"key_file", key}, {"known_hosts_file", known}} {
		switch {
		case f.path == "":
			ps.add(p+"."+f.key, 0, "missing (sundown never connects to an unverified host or without a key)")
		default:
			if _, err := os.Stat(f.path); err != nil {
				ps.add(p+"."+f.key, 0, "cannot read: %v", unwrapPathErr(err))
			}
		}
	}
}

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
