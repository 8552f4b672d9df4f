// Package plan turns an inventory (guests and hosts, as providers report
// them) and the operator's ordering rules into sundown's shutdown plan: a
// DAG of steps with stable keys, validated, in a deterministic order, with an
// estimate of how long it takes under the executor's concurrency caps.
//
// This part of the package is pure: no network, no goroutines, no clock.
// Build(spec) returns the plan and every problem of the spec at once;
// Plan.Estimate list-schedules the DAG under the caps (makespan, critical
// path, lower bound); Schedule.Margin compares the makespan with the battery
// runtime; Plan.Text and Plan.View render the timeline for `sundown plan`.
// The executor (which runs the steps) builds on the Plan and Step types.
//
// # Ordering
//
//   - DependsOn has systemd's meaning for stopping: if A depends on B, A
//     stops before B (and, on the way back up, B starts before A). A group's
//     dependency applies to every guest of both sides; a dependency on an
//     empty group still orders through it (web → app → db with app empty
//     still stops web before db).
//   - A guest belongs to the first group, in Spec order, whose selector
//     matches it; the others go to the implicit group "ungrouped".
//   - Every group has a zero-length step "group:NAME" ("all of NAME is
//     stopped"); dependencies between groups go through it, so the DAG stays
//     linear in size (web → app with 5,000 guests each is 10,000 edges, not
//     25 million). The executor treats it as done when its dependencies are.
//   - All guests of a host stop before that host's steps: maintenance enter
//     (when the target asks for it), then host shutdown (when it asks for
//     it). Guests whose host is unknown stop before every host step of their
//     target.
//   - The host carrying sundown (Self) shuts down after every other step.
//     sundown's own VM is left out of the guest phase; when it runs on that
//     host, the host's maintenance step is left out too (maintenance mode
//     would wait for the VM that is running the shutdown).
//   - A hook runs before the first guest of the groups it names, or at the
//     very start when it names none.
//
// # Determinism
//
// Build sorts everything by stable keys: the same Spec gives an identical
// Plan whatever the order of the targets, inventories, guest rules, hooks,
// selector lists and dependency lists (only the order of Groups has meaning:
// first match wins). Step IDs follow a topological order, so every entry of
// Step.Deps is smaller than the step's ID.
package plan

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sundown-ups/sundown/internal/provider"
)

// ActionKind is one thing the executor can do to a guest.
type ActionKind int

// Actions. The zero value is invalid, so an Action the configuration forgot
// to fill in is reported instead of silently meaning "shutdown".
const (
	ActionUnset ActionKind = iota
	// Shutdown asks the guest operating system to shut down (guest tools /
	// ACPI) and waits up to the timeout for the guest to be off.
	Shutdown
	// Suspend suspends the guest (its memory is saved); done when suspended.
	Suspend
	// PowerOff powers the guest off hard.
	PowerOff
	// Skip leaves the guest as it is. As the only action it means "do not
	// touch this guest"; at the end of a chain, "give up without forcing".
	Skip
)

var actionNames = [...]string{ActionUnset: "unset", Shutdown: "shutdown", Suspend: "suspend", PowerOff: "poweroff", Skip: "skip"}

// String returns the configuration name of the action ("shutdown",
// "suspend", "poweroff", "skip").
func (k ActionKind) String() string {
	if k >= 0 && int(k) < len(actionNames) {
		return actionNames[k]
	}
	return "action(" + strconv.Itoa(int(k)) + ")"
}

// Valid reports whether k is one of Shutdown, Suspend, PowerOff, Skip.
func (k ActionKind) Valid() bool { return k >= Shutdown && k <= Skip }

// ParseActionKind maps a configuration word to an ActionKind.
func ParseActionKind(s string) (ActionKind, error) {
	for k := Shutdown; k <= Skip; k++ {
		if s == actionNames[k] {
			return k, nil
		}
	}
	return ActionUnset, fmt.Errorf("unknown action %q (want shutdown, suspend, poweroff or skip)", s)
}

// Action is one link of a Chain.
type Action struct {
	Kind ActionKind
	// Timeout is how long the executor waits for the action to take effect
	// before it escalates to the next action of the chain. Ignored for Skip.
	Timeout time.Duration
}

// Chain is an escalation: run the first action; if the guest is not off
// (or suspended, for Suspend) within its timeout, run the next one.
type Chain []Action

// Worst is the chain's worst case: the sum of its timeouts (Skip counts 0).
func (c Chain) Worst() time.Duration {
	var d time.Duration
	for _, a := range c {
		if a.Kind != Skip && a.Timeout > 0 {
			d += a.Timeout
		}
	}
	return d
}

// String renders the chain as "shutdown 120s → poweroff 30s".
func (c Chain) String() string {
	if len(c) == 0 {
		return "(empty)"
	}
	var b strings.Builder
	for i, a := range c {
		if i > 0 {
			b.WriteString(" → ")
		}
		b.WriteString(a.Kind.String())
		if a.Kind != Skip {
			b.WriteByte(' ')
			b.WriteString(shortSeconds(a.Timeout))
		}
	}
	return b.String()
}

// Equal reports whether c and d are the same chain.
func (c Chain) Equal(d Chain) bool {
	if len(c) != len(d) {
		return false
	}
	for i := range c {
		if c[i] != d[i] {
			return false
		}
	}
	return true
}

// Selector picks guests. Every non-empty field must match (and); within a
// field any entry may match (or). An empty Selector selects every guest.
type Selector struct {
	// Names are path.Match patterns on the guest's name.
	Names []string
	// Tags must all be present with these values; the value "*" only
	// requires the key.
	Tags map[string]string
	// Hosts are host names or host IDs (exact) of the guest's host.
	Hosts []string
	// Targets are target names.
	Targets []string
}

// Group is a set of guests stopped alike.
type Group struct {
	Name   string
	Select Selector
	// Chain for the group's guests; nil means Spec.DefaultChain.
	Chain Chain
	// DependsOn lists group or guest names this group stops before
	// (systemd meaning).
	DependsOn []string
}

// GuestRule adjusts one guest.
type GuestRule struct {
	// Name is the guest's name (unique across targets), "target/name", or
	// the guest ID ("vm-42" or "target/vm-42").
	Name string
	// Chain replaces the group's chain when non-nil.
	Chain Chain
	// DependsOn adds group or guest names this guest stops before, on top of
	// its group's dependencies (a rule cannot loosen its group's order).
	DependsOn []string
	// Exclude leaves the guest out of the plan.
	Exclude bool
}

// Hook is an action outside the inventory (stop a backup job, notify a
// monitoring system) that must run before some guests stop.
type Hook struct {
	Name string
	// Before names the groups whose first guest waits for the hook; empty
	// means at the very start, before every guest and host step.
	Before []string
	// Kind is opaque to the plan (exec, ssh, http); it is shown in the
	// timeline.
	Kind    string
	Timeout time.Duration
}

// TargetInventory is one configured target and what it reported.
type TargetInventory struct {
	Target    string
	Inventory provider.Inventory
	// Maintenance: enter maintenance mode before shutting a host down.
	Maintenance bool
	// ShutdownHosts: shut the target's hosts down after their guests.
	ShutdownHosts       bool
	MaintenanceTimeout  time.Duration
	HostShutdownTimeout time.Duration
}

// Self says where sundown itself runs.
type Self struct {
	// VMUUID is the SMBIOS UUID of sundown's own VM (compared without
	// regard to case); "" when sundown does not run in a guest.
	VMUUID string
	// HostID and Target name the host carrying sundown, which shuts down
	// last. When HostID is "" and the VM is found, its host is used.
	HostID, Target string
}

// Caps bound the executor's concurrency.
type Caps struct {
	// Global is the most steps running at once (default 8).
	Global int
	// PerHost is the most guest steps running at once on one host
	// (default 4).
	PerHost int
}

// Default caps, used for zero fields.
const (
	DefaultGlobalCap  = 8
	DefaultPerHostCap = 4
)

// WithDefaults fills zero (or negative) fields with the defaults.
func (c Caps) WithDefaults() Caps {
	if c.Global <= 0 {
		c.Global = DefaultGlobalCap
	}
	if c.PerHost <= 0 {
		c.PerHost = DefaultPerHostCap
	}
	return c
}

// Spec is everything Build needs.
type Spec struct {
	Targets      []TargetInventory
	Groups       []Group
	Guests       []GuestRule
	Hooks        []Hook
	DefaultChain Chain
	Caps         Caps
	Self         Self
	// History holds learned expected durations by step key from past runs;
	// optional. An entry replaces the step's worst case as its estimate
	// (never above the worst case: the executor enforces the timeouts).
	History map[string]time.Duration
}

// StepKind says what a step does.
type StepKind int

// Step kinds.
const (
	// StepHook runs a hook.
	StepHook StepKind = iota + 1
	// StepGuest runs a guest's chain.
	StepGuest
	// StepGroup is a zero-length marker: every guest of the group is
	// stopped. It needs no executor slot.
	StepGroup
	// StepHostMaintenance puts a host in maintenance mode.
	StepHostMaintenance
	// StepHostShutdown shuts a host down.
	StepHostShutdown

	// The restore's kinds (RestorePlan): each undoes one kind above.

	// StepHostWake powers a host on (Wake-on-LAN, IPMI, or waiting for it
	// to boot by itself) and waits until its hypervisor answers.
	StepHostWake
	// StepHostExitMaintenance takes a host out of maintenance mode.
	StepHostExitMaintenance
	// StepGuestStart powers a guest on and waits until it is ready.
	StepGuestStart
)

var stepKindNames = [...]string{StepHook: "hook", StepGuest: "guest", StepGroup: "group", StepHostMaintenance: "host-maint",
	StepHostShutdown: "host-off", StepHostWake: "host-on", StepHostExitMaintenance: "host-exit-maint", StepGuestStart: "guest-on"}

// String returns "hook", "guest", "group", "host-maint", "host-off",
// "host-on", "host-exit-maint" or "guest-on"; it is also the prefix of the
// step's Key.
func (k StepKind) String() string {
	if k > 0 && int(k) < len(stepKindNames) {
		return stepKindNames[k]
	}
	return "step(" + strconv.Itoa(int(k)) + ")"
}

// Step is one node of the plan.
type Step struct {
	// ID is the step's index in Plan.Steps.
	ID int
	// Key is stable across runs and inventories: "hook:NAME",
	// "guest:TARGET/GUESTID", "group:NAME", "host-maint:TARGET/HOSTID",
	// "host-off:TARGET/HOSTID". The journal and History use it.
	Key  string
	Kind StepKind
	// Target, HostID and HostName locate guest and host steps; HostID is
	// "" for a guest whose host the provider did not report.
	Target, HostID, HostName string
	// GuestID is the provider's guest ID (guest steps).
	GuestID string
	// Name is the guest's, hook's, group's or host's name.
	Name string
	// Group is the guest's group (guest and group steps).
	Group string
	// Chain is what the executor runs for a guest step.
	Chain Chain
	// HookKind is the hook's Kind (hook steps).
	HookKind string
	// DependsOn is what the guest's GuestRule added (for display).
	DependsOn []string
	// Before lists the groups a hook runs before; empty means at the start.
	Before []string
	// Deps are the IDs of the steps that must be finished before this one
	// starts, ascending; each is smaller than ID.
	Deps []int
	// Timeout is the step's worst case, which the executor enforces: the
	// chain's total for a guest, the configured timeout for hooks and host
	// steps, 0 for a group marker.
	Timeout time.Duration
	// Estimate is the expected duration: History[Key] when known (Learned),
	// else Timeout; 0 for a step that looks done already (see Note).
	Estimate time.Duration
	Learned  bool
	// Note explains a special case: "already off", "already in maintenance",
	// "already suspended", "suspended", "skip: left as it is", "carries
	// sundown: last", "host unknown"; in a restore, why a step has nothing
	// to do.
	Note string
	// NoOp marks a restore step with nothing to do (the shutdown did not
	// turn this off; see Note): it completes at once, like a group marker.
	NoOp bool
}

// GroupInfo describes one group as planned.
type GroupInfo struct {
	Name  string
	Chain Chain
	// DependsOn lists what the group stops before, as declared (valid
	// references only); After lists the groups and guests that declared a
	// dependency on this group (they stop first).
	DependsOn, After []string
	// Step is the ID of the group's "group:NAME" marker step.
	Step int
	// Guests counts the group's planned guests.
	Guests int
	// Implicit is true for "ungrouped".
	Implicit bool
}

// Exclusion is a guest, or a host step, deliberately left out of the plan.
type Exclusion struct {
	Key      string
	Target   string
	ID       string
	Name     string
	HostName string
	Reason   string
}

// Plan is the validated, ordered set of steps.
type Plan struct {
	// Steps in topological order; Steps[i].ID == i.
	Steps []Step
	// Groups in Spec order, then "ungrouped" when it is used.
	Groups   []GroupInfo
	Excluded []Exclusion
	// Caps are Spec.Caps with defaults filled in.
	Caps Caps
	// SelfHost is "TARGET/HOSTID" of the host carrying sundown, "" when
	// unknown.
	SelfHost string

	keys map[string]int
}

// Lookup returns the ID of the step with the given key.
func (p *Plan) Lookup(key string) (int, bool) {
	if p.keys == nil {
		p.keys = make(map[string]int, len(p.Steps))
		for i, s := range p.Steps {
			p.keys[s.Key] = i
		}
	}
	id, ok := p.keys[key]
	return id, ok
}

// HasGroup reports whether the plan has a group of that name.
func (p *Plan) HasGroup(name string) bool {
	return slices.ContainsFunc(p.Groups, func(g GroupInfo) bool { return g.Name == name })
}

// Problem is one thing wrong (or suspicious, when Warning) with a Spec.
type Problem struct {
	// Path locates the problem in the configuration, e.g.
	// "groups[2].depends_on[0]".
	Path    string
	Msg     string
	Warning bool
}

// String formats as "PATH: MSG", prefixed "warning: " for warnings.
func (p Problem) String() string {
	s := p.Msg
	if p.Path != "" {
		s = p.Path + ": " + s
	}
	if p.Warning {
		s = "warning: " + s
	}
	return s
}

// HasErrors reports whether any problem is not a warning.
func HasErrors(ps []Problem) bool {
	for _, p := range ps {
		if !p.Warning {
			return true
		}
	}
	return false
}

// shortSeconds renders d as "120s" or "1.5s" (chains).
func shortSeconds(d time.Duration) string { return seconds(d) + "s" }

// seconds renders d in seconds: whole seconds as "120", otherwise one
// decimal ("1.5"), rounded half away from zero.
func seconds(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10)
	}
	tenths := (d + sign(d)*50*time.Millisecond) / (100 * time.Millisecond)
	neg := ""
	if tenths < 0 {
		neg, tenths = "-", -tenths
	}
	return neg + strconv.FormatInt(int64(tenths/10), 10) + "." + strconv.FormatInt(int64(tenths%10), 10)
}

func sign(d time.Duration) time.Duration {
	if d < 0 {
		return -1
	}
	return 1
}
