// Package config defines sundown's configuration file: its schema, its
// defaults, and a strict loader. Unknown keys are errors, every problem in a
// file is reported at once with its path, durations need a unit ("90s"), and
// secrets come from files or the environment and never print (see Secret).
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration file.
type Config struct {
	// StateDir keeps the journal of shutdown runs. Default /var/lib/sundown.
	StateDir string   `yaml:"state_dir"`
	Log      Log      `yaml:"log"`
	Power    Power    `yaml:"power"`
	UPS      []UPS    `yaml:"ups"`
	Targets  []Target `yaml:"targets"`
	Shutdown Shutdown `yaml:"shutdown"`
	// Shed are the load-shedding stages, Restore the way back.
	Shed    []ShedStage `yaml:"shed"`
	Restore Restore     `yaml:"restore"`
	API     API         `yaml:"api"`
	Notify  Notify      `yaml:"notify"`
}

// Log configures sundown's own logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // text (default) or json
}

// Power holds the site-wide power policy.
type Power struct {
	// MinSupplies is the sum of power values that must stay supplied;
	// below it the site shuts down (upsmon's MINSUPPLIES). Default 1.
	MinSupplies *int `yaml:"min_supplies"`
	// PollInterval is how often each UPS is read. Default 500ms.
	PollInterval Duration `yaml:"poll_interval"`
	// Deadtime is the default silence after which a UPS last seen on
	// battery counts as critical. Default 15s.
	Deadtime Duration `yaml:"deadtime"`
	// NoCommWarn repeats the NOCOMM event while a UPS stays silent. Default 5m.
	NoCommWarn Duration `yaml:"nocomm_warn"`
	// Debounce ignores on-battery spells shorter than this for the delay
	// and runtime rules. Default 3s.
	Debounce Duration `yaml:"debounce"`
	// OnBatteryDelay shuts down after this long continuously on battery.
	// 0 (default) turns the rule off.
	OnBatteryDelay Duration `yaml:"on_battery_delay"`
	// RuntimeMargin is added to the shutdown duration for the runtime
	// budget rule. Default 2m.
	RuntimeMargin Duration `yaml:"runtime_margin"`
	// ShutdownDuration is the expected length of the whole shutdown, used
	// by the runtime budget until the plan provides an estimate. Default 5m.
	ShutdownDuration Duration `yaml:"shutdown_duration"`
}

// UPS is one monitored UPS, read over NUT or apcupsd.
type UPS struct {
	Name    string   `yaml:"name"`
	NUT     *NUT     `yaml:"nut"`
	Apcupsd *Apcupsd `yaml:"apcupsd"`
	Trigger *Trigger `yaml:"trigger"`
	// PowerValue is how many of this site's supplies the UPS feeds. Default
	// 1; 0 monitors without counting it.
	PowerValue *int `yaml:"power_value"`
	// Deadtime overrides power.deadtime for this UPS.
	Deadtime Duration `yaml:"deadtime"`
	// OffGrace: a UPS reporting OFF this long is not supplying. Default 30s.
	OffGrace Duration `yaml:"off_grace"`
	// AlarmCritical makes ALARM while on battery critical. Default true.
	AlarmCritical *bool `yaml:"alarm_critical"`
	// MinCharge (percent) and MinRuntime make a UPS on battery critical
	// below them. 0 turns them off.
	MinCharge  float64  `yaml:"min_charge"`
	MinRuntime Duration `yaml:"min_runtime"`
}

// NUT is a UPS served by a NUT upsd.
type NUT struct {
	Address string `yaml:"address"` // host:port; the port defaults to 3493
	UPS     string `yaml:"ups"`     // the UPS name on that server
	// Username and a password from PasswordFile or PasswordEnv. With them
	// sundown LOGINs and holds the login while the site draws power.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
	Password     Secret `yaml:"-"`
	// Mode is secondary (default) or primary. A primary sets FSD when the
	// site shuts down.
	Mode string  `yaml:"mode"`
	TLS  *NUTTLS `yaml:"tls"`
	// UPSCommand is the instant command a primary sends once the shutdown
	// is done and the other clients have logged out (or PrimaryWait has
	// passed), e.g. "shutdown.return" so the UPS cuts the load and powers
	// it again when mains returns. Empty: none.
	UPSCommand string `yaml:"ups_command"`
	// PrimaryWait bounds the wait for other clients to log out. Default 60s.
	PrimaryWait Duration `yaml:"primary_wait"`
}

// NUTTLS requires STARTTLS; a server that refuses it is an error.
type NUTTLS struct {
	CAFile      string `yaml:"ca_file"`
	ServerName  string `yaml:"server_name"` // defaults to the address's host
	Fingerprint string `yaml:"fingerprint"` // sha256:HEX of the server certificate
}

// Apcupsd is a UPS served by apcupsd's network information server.
type Apcupsd struct {
	Address string `yaml:"address"` // host:port; the port defaults to 3551
}

// Defaults.
const (
	DefaultPollInterval     = 500 * time.Millisecond
	DefaultDeadtime         = 15 * time.Second
	DefaultNoCommWarn       = 5 * time.Minute
	DefaultDebounce         = 3 * time.Second
	DefaultRuntimeMargin    = 2 * time.Minute
	DefaultShutdownDuration = 5 * time.Minute
	DefaultOffGrace         = 30 * time.Second
	DefaultNUTPort          = "3493"
	DefaultStateDir         = "/var/lib/sundown"
	DefaultApcupsdPort      = "3551"
)

// Load reads, checks and resolves a config file. A returned *Error lists
// every problem found.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data, os.Getenv)
}

// Parse is Load for bytes already read; getenv resolves *_env secrets.
func Parse(name string, data []byte, getenv func(string) string) (*Config, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{File: name, Problems: []Problem{{Msg: "the file is empty"}}}
		}
		return nil, &Error{File: name, Problems: []Problem{{Msg: cleanYAMLError(err)}}}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &Error{File: name, Problems: []Problem{{Line: extra.Line, Msg: "more than one YAML document; keep one"}}}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	var ps problems
	checkNode(root, reflectTypeOfConfig, "", &ps)
	var c Config
	if err := root.Decode(&c); err != nil && len(ps.list) == 0 {
		ps.add("", 0, "%s", cleanYAMLError(err))
	}
	// Go on after shape problems: the semantic checks below still find
	// what is missing or inconsistent, so one run lists everything.
	c.applyDefaults()
	c.applyShutdownDefaults()
	c.applyOperateDefaults()
	c.validate(&ps, getenv)
	c.validateShutdown(&ps, getenv)
	c.validateOperate(&ps, getenv)
	if len(ps.list) > 0 {
		return nil, &Error{File: name, Problems: ps.list}
	}
	return &c, nil
}

func (c *Config) applyDefaults() {
	p := &c.Power
	if p.MinSupplies == nil {
		p.MinSupplies = ptr(1)
	}
	setDur(&p.PollInterval, DefaultPollInterval)
	setDur(&p.Deadtime, DefaultDeadtime)
	setDur(&p.NoCommWarn, DefaultNoCommWarn)
	setDur(&p.Debounce, DefaultDebounce)
	setDur(&p.RuntimeMargin, DefaultRuntimeMargin)
	setDur(&p.ShutdownDuration, DefaultShutdownDuration)
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	for i := range c.UPS {
		u := &c.UPS[i]
		if u.PowerValue == nil {
			u.PowerValue = ptr(1)
		}
		setDur(&u.Deadtime, p.Deadtime.D())
		setDur(&u.OffGrace, DefaultOffGrace)
		if u.AlarmCritical == nil {
			u.AlarmCritical = ptr(true)
		}
		if u.NUT != nil {
			if u.NUT.Mode == "" {
				u.NUT.Mode = "secondary"
			}
			setDur(&u.NUT.PrimaryWait, 60*time.Second)
			u.NUT.Address = withPort(u.NUT.Address, DefaultNUTPort)
		}
		if u.Apcupsd != nil {
			u.Apcupsd.Address = withPort(u.Apcupsd.Address, DefaultApcupsdPort)
		}
	}
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
var fingerprintRE = regexp.MustCompile(`^sha256:([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$`)

func (c *Config) validate(ps *problems, getenv func(string) string) {
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		ps.add("log.level", 0, "want debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		ps.add("log.format", 0, "want text or json, got %q", c.Log.Format)
	}
	p := c.Power
	if p.PollInterval.D() < 50*time.Millisecond {
		ps.add("power.poll_interval", 0, "%s is too short (at least 50ms)", p.PollInterval)
	}
	if len(c.UPS) == 0 {
		ps.add("ups", 0, "no UPS configured; add at least one under ups:")
	}
	names := map[string]int{}
	total := 0
	for i, u := range c.UPS {
		path := fmt.Sprintf("ups[%d]", i)
		if u.Name == "" {
			ps.add(path+".name", 0, "missing")
		} else if !nameRE.MatchString(u.Name) {
			ps.add(path+".name", 0, "%q: use letters, digits, '.', '_' and '-' (at most 63)", u.Name)
		} else if j, dup := names[u.Name]; dup {
			ps.add(path+".name", 0, "%q is also the name of ups[%d]", u.Name, j)
		} else {
			names[u.Name] = i
		}
		switch sources := countSet(u.NUT != nil, u.Apcupsd != nil, u.Trigger != nil); {
		case sources == 0:
			ps.add(path, 0, "say where to read this UPS: add nut:, apcupsd: or trigger:")
		case sources > 1:
			ps.add(path, 0, "give one of nut:, apcupsd:, trigger:")
		}
		if *u.PowerValue < 0 {
			ps.add(path+".power_value", 0, "must not be negative")
		}
		total += *u.PowerValue
		if u.Deadtime.D() < 3*p.PollInterval.D() {
			ps.add(path+".deadtime", 0, "%s is less than 3 poll intervals (%s): a UPS on battery could count as silent between two polls", u.Deadtime, 3*p.PollInterval.D())
		}
		if u.MinCharge < 0 || u.MinCharge > 100 {
			ps.add(path+".min_charge", 0, "want a percentage from 0 to 100, got %g", u.MinCharge)
		}
		if u.NUT != nil {
			c.UPS[i].NUT.Password = validateNUT(u.NUT, path+".nut", ps, getenv)
		}
		if u.Apcupsd != nil {
			checkAddress(u.Apcupsd.Address, path+".apcupsd.address", ps)
		}
	}
	if ms := *p.MinSupplies; ms < 0 {
		ps.add("power.min_supplies", 0, "must not be negative")
	} else if len(c.UPS) > 0 && ms > total {
		ps.add("power.min_supplies", 0, "%d is more than the %d that all UPS power_values add up to: the site would shut down at once", ms, total)
	}
}

func validateNUT(n *NUT, path string, ps *problems, getenv func(string) string) Secret {
	checkAddress(n.Address, path+".address", ps)
	if n.UPS == "" {
		ps.add(path+".ups", 0, "missing: the UPS name on the server (see `upsc -l HOST`)")
	} else if strings.ContainsAny(n.UPS, " \t\"") {
		ps.add(path+".ups", 0, "%q: a NUT UPS name has no spaces or quotes", n.UPS)
	}
	switch n.Mode {
	case "primary", "secondary":
	default:
		ps.add(path+".mode", 0, "want primary or secondary, got %q", n.Mode)
	}
	secret := readSecret(n.PasswordFile, n.PasswordEnv, path, ps, getenv)
	if n.Username != "" && secret.IsZero() && n.PasswordFile == "" && n.PasswordEnv == "" {
		ps.add(path, 0, "username %q needs password_file or password_env", n.Username)
	}
	if n.Username == "" && (n.PasswordFile != "" || n.PasswordEnv != "") {
		ps.add(path+".username", 0, "missing: a password is given without a username")
	}
	if n.UPSCommand != "" && n.Mode != "primary" {
		ps.add(path+".ups_command", 0, "only a primary sends a UPS command; set mode: primary or remove it")
	}
	if n.Mode == "primary" && n.Username == "" {
		ps.add(path+".mode", 0, "primary needs username and a password (an upsd.users entry with upsmon primary)")
	}
	if t := n.TLS; t != nil {
		if t.CAFile == "" && t.Fingerprint == "" {
			ps.add(path+".tls", 0, "give ca_file or fingerprint so the server can be verified")
		}
		if t.CAFile != "" {
			if _, err := os.Stat(t.CAFile); err != nil {
				ps.add(path+".tls.ca_file", 0, "cannot read: %v", unwrapPathErr(err))
			}
		}
		if t.Fingerprint != "" && !fingerprintRE.MatchString(t.Fingerprint) {
			ps.add(path+".tls.fingerprint", 0, "want sha256: and 32 hex bytes (openssl x509 -noout -fingerprint -sha256)")
		}
	}
	return secret
}

// readSecret reads a secret from a file or an environment variable; both
// given is a problem. Problems never contain the secret.
func readSecret(file, env, path string, ps *problems, getenv func(string) string) Secret {
	return readSecretKeys(file, env, "password_file", "password_env", path, ps, getenv)
}

// readSecretKeys is readSecret for keys with other names.
func readSecretKeys(file, env, fileKey, envKey, path string, ps *problems, getenv func(string) string) Secret {
	switch {
	case file != "" && env != "":
		ps.add(path, 0, "give %s or %s, not both", fileKey, envKey)
	case file != "":
		b, err := os.ReadFile(file)
		switch {
		case err != nil:
			ps.add(path+"."+fileKey, 0, "cannot read: %v", unwrapPathErr(err))
		case strings.TrimSpace(string(b)) == "":
			ps.add(path+"."+fileKey, 0, "%s is empty", file)
		default:
			return NewSecret(strings.TrimRight(string(b), "\r\n"))
		}
	case env != "":
		if v := getenv(env); v == "" {
			ps.add(path+"."+envKey, 0, "environment variable %s is not set", env)
		} else {
			return NewSecret(v)
		}
	}
	return Secret{}
}

// unwrapPathErr drops the path from an *os.PathError: the path is already
// in the problem's location.
func unwrapPathErr(err error) error {
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return err
}

func checkAddress(addr, path string, ps *problems) {
	if addr == "" {
		ps.add(path, 0, "missing: host:port")
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		ps.add(path, 0, "%q is not host:port", addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		ps.add(path, 0, "port %q is not a number from 1 to 65535", port)
	}
}

func withPort(addr, port string) string {
	if addr == "" {
		return ""
	}
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	if strings.Count(addr, ":") > 1 && !strings.HasPrefix(addr, "[") { // bare IPv6
		return net.JoinHostPort(addr, port)
	}
	if strings.HasPrefix(addr, "[") && strings.HasSuffix(addr, "]") {
		return addr + ":" + port
	}
	if !strings.Contains(addr, ":") {
		return net.JoinHostPort(addr, port)
	}
	return addr
}

func setDur(d *Duration, def time.Duration) {
	if *d == 0 {
		*d = Duration(def)
	}
}

func ptr[T any](v T) *T { return &v }

func countSet(set ...bool) int {
	n := 0
	for _, b := range set {
		if b {
			n++
		}
	}
	return n
}
