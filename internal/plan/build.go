package plan

import (
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sundown-ups/sundown/internal/provider"
)

// UngroupedName is the implicit group of guests that no group selects.
const UngroupedName = "ungrouped"

// fallbackChain is what a guest gets in a best-effort plan when its chain,
// and the default chain, are unusable.
var fallbackChain = Chain{{Kind: Shutdown, Timeout: 120 * time.Second}, {Kind: PowerOff, Timeout: 30 * time.Second}}

// Build validates spec and builds its plan. It reports every problem at once,
// each with its path in the configuration, in configuration order.
//
// Build always returns a plan. When the problems include errors (not only
// warnings) the plan is a best effort: unknown references are ignored, a
// dependency that closes a cycle is dropped, an unusable chain is replaced
// by the default chain (or shutdown 120s → poweroff 30s). Configuration
// checks must refuse such a spec; an executor facing an inventory that
// changed since the check may still prefer the best effort to doing nothing.
func Build(spec Spec) (*Plan, []Problem) {
	b := &builder{spec: spec, selfGuests: map[int32]bool{}}
	b.loadTargets()
	b.loadSelf()
	b.checkCaps()
	b.loadGroups()
	b.loadRules()
	b.assign()
	b.makeNodes()
	b.declEdges()
	b.hostEdges()
	b.breakCycles()
	b.hookEdges()
	b.selfEdges()
	p := b.finish()
	sortProblems(b.probs)
	return p, b.probs
}

type builder struct {
	spec  Spec
	probs []Problem

	targets      []*tgt // valid targets, sorted by name
	targetByName map[string]*tgt

	guests       []*gst // guests of valid targets, sorted by (target, ID)
	byName       map[string][]int32
	byTargetName map[string][]int32 // target + "\x00" + name
	byID         map[string][]int32
	byTargetID   map[string]int32 // target + "\x00" + ID

	groups      []*grp // valid spec groups in order, then ungrouped
	groupByName map[string]int
	ungrouped   *grp
	defaultUsed []string // who relies on DefaultChain (for the message)

	rules []rule // by spec index

	excluded []Exclusion

	selfGuests map[int32]bool
	selfHost   *hst
	selfVMHost *hst // host of sundown's VM, when known

	hooks []hookNode

	nodes []node
	edges []edge
	decls []string // decl index → path
}

type tgt struct {
	idx          int // index in spec.Targets
	name         string
	ti           *TargetInventory
	hosts        []*hst // sorted by ID
	hostByID     map[string]*hst
	hostsByName  map[string][]*hst
	strayGuests  []int32 // included guests whose host is not among hosts
	hostsStopped bool    // some host step exists
}

type hst struct {
	t      *tgt
	h      provider.Host
	guests []int32 // included guests
	first  int32   // first host step node, -1 when none
	maint  int32
	off    int32
}

type gst struct {
	t       *tgt
	g       provider.Guest
	host    *hst // nil when the host is unknown
	group   int  // index in b.groups, -1 when excluded
	rule    int  // index in spec.Guests, -1 when none
	exclude string
	node    int32
}

type grp struct {
	name     string
	path     string // "groups[i]", "" for ungrouped
	specIdx  int
	chain    Chain
	deps     []string
	after    []string
	members  []int32
	barrier  int32
	implicit bool
}

type rule struct {
	guest int32 // -1 when unresolved or duplicate
	chain Chain
}

type hookNode struct {
	specIdx int
	node    int32
	groups  []int
}

// node is a step before IDs are assigned.
type node struct {
	step Step
	// rank key: phase, group index, sub-kind, then strings.
	phase, grp, sub int
	s1, s2, s3      string
}

// edge orders from before to. decl is the index of the declaration that
// produced it (-1 for structural edges); srcNamed/dstNamed say whether the
// declaration named the guest at that end (for printing cycles).
type edge struct {
	from, to           int32
	decl               int32
	srcNamed, dstNamed bool
}

func (b *builder) errorf(path, format string, args ...any) {
	b.probs = append(b.probs, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (b *builder) warnf(path, format string, args ...any) {
	b.probs = append(b.probs, Problem{Path: path, Msg: fmt.Sprintf(format, args...), Warning: true})
}

// ---- targets and inventory ----

func (b *builder) loadTargets() {
	b.targetByName = map[string]*tgt{}
	for i := range b.spec.Targets {
		ti := &b.spec.Targets[i]
		p := fmt.Sprintf("targets[%d]", i)
		switch {
		case ti.Target == "":
			b.errorf(p+".target", "empty target name")
			continue
		case strings.Contains(ti.Target, "/"):
			b.errorf(p+".target", "target name %q must not contain \"/\"", ti.Target)
			continue
		}
		if prev, dup := b.targetByName[ti.Target]; dup {
			b.errorf(p+".target", "duplicate target name %q (also targets[%d])", ti.Target, prev.idx)
			continue
		}
		if ti.Maintenance && ti.MaintenanceTimeout <= 0 {
			b.errorf(p+".maintenance_timeout", "must be positive when maintenance is on")
		}
		if ti.ShutdownHosts && ti.HostShutdownTimeout <= 0 {
			b.errorf(p+".host_shutdown_timeout", "must be positive when shutdown_hosts is on")
		}
		t := &tgt{idx: i, name: ti.Target, ti: ti, hostByID: map[string]*hst{}, hostsByName: map[string][]*hst{}}
		b.targetByName[t.name] = t
		b.targets = append(b.targets, t)
	}
	sort.Slice(b.targets, func(i, j int) bool { return b.targets[i].name < b.targets[j].name })

	b.byName = map[string][]int32{}
	b.byTargetName = map[string][]int32{}
	b.byID = map[string][]int32{}
	b.byTargetID = map[string]int32{}
	for _, t := range b.targets {
		p := fmt.Sprintf("targets[%d].inventory", t.idx)
		hosts := slices.Clone(t.ti.Inventory.Hosts)
		sort.SliceStable(hosts, func(i, j int) bool { return hosts[i].ID < hosts[j].ID })
		for _, h := range hosts {
			if h.ID == "" {
				b.errorf(p+".hosts", "host %q has an empty ID", h.Name)
				continue
			}
			if _, dup := t.hostByID[h.ID]; dup {
				b.errorf(p+".hosts", "duplicate host ID %q", h.ID)
				continue
			}
			hs := &hst{t: t, h: h, first: -1, maint: -1, off: -1}
			t.hosts = append(t.hosts, hs)
			t.hostByID[h.ID] = hs
			t.hostsByName[h.Name] = append(t.hostsByName[h.Name], hs)
		}
		guests := slices.Clone(t.ti.Inventory.Guests)
		sort.SliceStable(guests, func(i, j int) bool { return guests[i].ID < guests[j].ID })
		for _, g := range guests {
			if g.ID == "" {
				b.errorf(p+".guests", "guest %q has an empty ID", g.Name)
				continue
			}
			if _, dup := b.byTargetID[t.name+"\x00"+g.ID]; dup {
				b.errorf(p+".guests", "duplicate guest ID %q", g.ID)
				continue
			}
			i := int32(len(b.guests))
			b.guests = append(b.guests, &gst{t: t, g: g, host: t.hostByID[g.HostID], group: -1, rule: -1, node: -1})
			b.byName[g.Name] = append(b.byName[g.Name], i)
			b.byTargetName[t.name+"\x00"+g.Name] = append(b.byTargetName[t.name+"\x00"+g.Name], i)
			b.byID[g.ID] = append(b.byID[g.ID], i)
			b.byTargetID[t.name+"\x00"+g.ID] = i
		}
	}
}

// label is how plan output and messages name guest i: its name when unique
// across targets, else "target/name", else "target/ID".
func (b *builder) label(i int32) string {
	g := b.guests[i]
	if len(b.byName[g.g.Name]) == 1 && g.g.Name != "" {
		return g.g.Name
	}
	if len(b.byTargetName[g.t.name+"\x00"+g.g.Name]) == 1 && g.g.Name != "" {
		return g.t.name + "/" + g.g.Name
	}
	return g.t.name + "/" + g.g.ID
}

// findGuest resolves a guest reference: "name", "target/name", "ID" or
// "target/ID". It returns the guest, or -1 and whether the reference was
// ambiguous (with a message) rather than unknown.
func (b *builder) findGuest(ref string) (int32, string) {
	if t, rest, ok := strings.Cut(ref, "/"); ok {
		if _, known := b.targetByName[t]; known {
			switch c := b.byTargetName[t+"\x00"+rest]; {
			case len(c) == 1:
				return c[0], ""
			case len(c) > 1:
				return -1, b.ambiguous(ref, c)
			}
			if i, ok := b.byTargetID[t+"\x00"+rest]; ok {
				return i, ""
			}
		}
	}
	if c := b.byName[ref]; len(c) == 1 {
		return c[0], ""
	} else if len(c) > 1 {
		return -1, b.ambiguous(ref, c)
	}
	if c := b.byID[ref]; len(c) == 1 {
		return c[0], ""
	} else if len(c) > 1 {
		return -1, b.ambiguous(ref, c)
	}
	return -1, ""
}

func (b *builder) ambiguous(ref string, c []int32) string {
	var alts []string
	for _, i := range c {
		g := b.guests[i]
		if len(b.byTargetName[g.t.name+"\x00"+g.g.Name]) == 1 && !strings.Contains(ref, "/") {
			alts = append(alts, fmt.Sprintf("%q", g.t.name+"/"+g.g.Name))
		} else {
			alts = append(alts, fmt.Sprintf("%q", g.t.name+"/"+g.g.ID))
		}
	}
	return fmt.Sprintf("guest name %q is ambiguous: %d guests match; write one of %s", ref, len(c), strings.Join(alts, ", "))
}

// guestNames lists every distinct guest name, sorted (suggestion candidates).
func (b *builder) guestNames() []string {
	names := make([]string, 0, len(b.byName))
	for n := range b.byName {
		if n != "" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// ---- self ----

func (b *builder) loadSelf() {
	s := b.spec.Self
	if uuid := strings.TrimSpace(s.VMUUID); uuid != "" {
		var found []int32
		for i, g := range b.guests {
			if g.g.UUID != "" && strings.EqualFold(g.g.UUID, uuid) {
				found = append(found, int32(i))
			}
		}
		switch len(found) {
		case 0:
			b.warnf("self.vm_uuid", "no guest has UUID %q: sundown's own VM is not recognised and may be stopped before the plan ends", s.VMUUID)
		case 1:
		default:
			var ls []string
			for _, i := range found {
				ls = append(ls, b.label(i))
			}
			b.warnf("self.vm_uuid", "%d guests have UUID %q (%s): all are left out of the guest phase", len(found), s.VMUUID, strings.Join(ls, ", "))
		}
		for _, i := range found {
			b.selfGuests[i] = true
			b.guests[i].exclude = "sundown's own VM"
		}
		if len(found) > 0 {
			b.selfVMHost = b.guests[found[0]].host
		}
	}
	var named *hst
	if s.HostID != "" || s.Target != "" {
		var cands []*tgt
		if s.Target != "" {
			t, ok := b.targetByName[s.Target]
			if !ok {
				b.warnf("self.target", "unknown target %q%s: the host carrying sundown is not shut down last", s.Target, suggest(s.Target, b.targetNames()))
			} else {
				cands = []*tgt{t}
			}
		} else {
			cands = b.targets
		}
		if s.HostID != "" && (s.Target == "" || len(cands) > 0) {
			var hits []*hst
			for _, t := range cands {
				if h, ok := t.hostByID[s.HostID]; ok {
					hits = append(hits, h)
				} else {
					hits = append(hits, t.hostsByName[s.HostID]...)
				}
			}
			switch {
			case len(hits) == 0:
				b.warnf("self.host_id", "unknown host %q: the host carrying sundown is not shut down last", s.HostID)
			case len(hits) > 1:
				b.warnf("self.host_id", "host %q is ambiguous (%d hosts match; set self.target): using %s/%s", s.HostID, len(hits), hits[0].t.name, hits[0].h.ID)
				named = hits[0]
			default:
				named = hits[0]
			}
		}
	}
	switch {
	case named != nil && b.selfVMHost != nil && named != b.selfVMHost:
		b.warnf("self.host_id", "sundown's own VM runs on host %s, not %s: %s is shut down last", hostLabel(b.selfVMHost), hostLabel(named), hostLabel(b.selfVMHost))
		b.selfHost = b.selfVMHost
	case named != nil:
		b.selfHost = named
	default:
		b.selfHost = b.selfVMHost
	}
	if b.selfHost == nil && s.HostID == "" {
		for i, g := range b.guests {
			if b.selfGuests[int32(i)] && g.host == nil && g.t.ti.ShutdownHosts {
				b.warnf("self.host_id", "the host of sundown's own VM is unknown (target %s reports %q): set self.host_id, or that host may shut down before the plan ends", g.t.name, g.g.HostID)
				break
			}
		}
	}
}

func hostLabel(h *hst) string {
	if h.h.Name != "" {
		return h.h.Name
	}
	return h.t.name + "/" + h.h.ID
}

func (b *builder) targetNames() []string {
	var ns []string
	for _, t := range b.targets {
		ns = append(ns, t.name)
	}
	return ns
}

func (b *builder) checkCaps() {
	if b.spec.Caps.Global < 0 {
		b.errorf("caps.global", "must not be negative")
	}
	if b.spec.Caps.PerHost < 0 {
		b.errorf("caps.per_host", "must not be negative")
	}
}

// ---- groups, rules, membership ----

func (b *builder) loadGroups() {
	b.groupByName = map[string]int{}
	for i := range b.spec.Groups {
		sg := &b.spec.Groups[i]
		p := fmt.Sprintf("groups[%d]", i)
		switch {
		case sg.Name == "":
			b.errorf(p+".name", "empty group name")
			continue
		case sg.Name == UngroupedName:
			b.errorf(p+".name", "%q is reserved for the guests no group selects", UngroupedName)
			continue
		}
		if prev, dup := b.groupByName[sg.Name]; dup {
			b.errorf(p+".name", "duplicate group name %q (also %s)", sg.Name, b.groups[prev].path)
			continue
		}
		g := &grp{name: sg.Name, path: p, specIdx: i, barrier: -1}
		if sg.Chain == nil {
			b.defaultUsed = append(b.defaultUsed, p)
		} else if b.checkChain(p+".chain", sg.Chain) {
			g.chain = sg.Chain
		}
		b.checkSelector(p+".select", &sg.Select)
		b.groupByName[sg.Name] = len(b.groups)
		b.groups = append(b.groups, g)
	}
	b.ungrouped = &grp{name: UngroupedName, specIdx: -1, barrier: -1, implicit: true}
}

func (b *builder) checkSelector(p string, s *Selector) {
	for j, pat := range s.Names {
		if _, err := path.Match(pat, ""); err != nil {
			b.errorf(fmt.Sprintf("%s.names[%d]", p, j), "bad pattern %q: %v", pat, err)
		}
	}
	for k := range s.Tags {
		if k == "" {
			b.errorf(p+".tags", "empty tag key")
		}
	}
	for j, t := range s.Targets {
		if _, ok := b.targetByName[t]; !ok {
			b.errorf(fmt.Sprintf("%s.targets[%d]", p, j), "unknown target %q%s", t, suggest(t, b.targetNames()))
		}
	}
	for j, h := range s.Hosts {
		known := false
		for _, t := range b.targets {
			if _, ok := t.hostByID[h]; ok || len(t.hostsByName[h]) > 0 {
				known = true
				break
			}
		}
		if !known {
			var names []string
			for _, t := range b.targets {
				for _, hs := range t.hosts {
					names = append(names, hs.h.Name, hs.h.ID)
				}
			}
			b.warnf(fmt.Sprintf("%s.hosts[%d]", p, j), "no host is named %q%s", h, suggest(h, names))
		}
	}
}

func (b *builder) matches(s *Selector, g *gst) bool {
	if len(s.Names) > 0 && !slices.ContainsFunc(s.Names, func(p string) bool {
		ok, err := path.Match(p, g.g.Name)
		return err == nil && ok
	}) {
		return false
	}
	for k, v := range s.Tags {
		gv, ok := g.g.Tags[k]
		if !ok || (v != "*" && gv != v) {
			return false
		}
	}
	if len(s.Hosts) > 0 && !slices.ContainsFunc(s.Hosts, func(h string) bool {
		return (g.g.HostID != "" && h == g.g.HostID) || (g.host != nil && g.host.h.Name == h)
	}) {
		return false
	}
	if len(s.Targets) > 0 && !slices.Contains(s.Targets, g.t.name) {
		return false
	}
	return true
}

func (b *builder) loadRules() {
	b.rules = make([]rule, len(b.spec.Guests))
	owner := map[int32]int{}
	for i := range b.spec.Guests {
		r := &b.spec.Guests[i]
		p := fmt.Sprintf("guests[%d]", i)
		b.rules[i].guest = -1
		if r.Chain != nil && !r.Exclude && b.checkChain(p+".chain", r.Chain) {
			b.rules[i].chain = r.Chain
		}
		if r.Exclude && (r.Chain != nil || len(r.DependsOn) > 0) {
			b.warnf(p+".exclude", "the guest is excluded: its chain and depends_on are ignored")
		}
		if r.Name == "" {
			b.errorf(p+".name", "empty guest name")
			continue
		}
		gi, amb := b.findGuest(r.Name)
		if gi < 0 {
			if amb != "" {
				b.errorf(p+".name", "%s", amb)
			} else {
				b.errorf(p+".name", "unknown guest %q%s", r.Name, suggest(r.Name, b.guestNames()))
			}
			continue
		}
		if prev, dup := owner[gi]; dup {
			b.errorf(p+".name", "guest %s already has a rule (guests[%d])", b.label(gi), prev)
			continue
		}
		owner[gi] = i
		g := b.guests[gi]
		if b.selfGuests[gi] {
			b.warnf(p+".name", "guest %s is sundown's own VM, always left out of the guest phase: rule ignored", b.label(gi))
			continue
		}
		b.rules[i].guest = gi
		g.rule = i
		if r.Exclude {
			g.exclude = "excluded by a guest rule"
		}
	}
}

func (b *builder) assign() {
	for i, g := range b.guests {
		if g.exclude != "" {
			continue
		}
		gi := int32(i)
		g.group = len(b.groups) // ungrouped
		for k, gr := range b.groups {
			if b.matches(&b.spec.Groups[gr.specIdx].Select, g) {
				g.group = k
				break
			}
		}
		if g.group == len(b.groups) {
			b.ungrouped.members = append(b.ungrouped.members, gi)
		} else {
			b.groups[g.group].members = append(b.groups[g.group].members, gi)
		}
	}
	// Groups that select nothing: say whether an earlier group took them.
	for k, gr := range b.groups {
		if len(gr.members) > 0 {
			continue
		}
		taken := -1
		for _, g := range b.guests {
			if g.group >= 0 && g.group < k && b.matches(&b.spec.Groups[gr.specIdx].Select, g) {
				taken = g.group
				break
			}
		}
		if taken >= 0 {
			b.warnf(gr.path, "every guest that group %q selects belongs to an earlier group (e.g. %q)", gr.name, b.groups[taken].name)
		} else {
			b.warnf(gr.path, "group %q selects no guest", gr.name)
		}
	}
	if len(b.ungrouped.members) > 0 || b.ungroupedNamed() {
		b.defaultUsed = append(b.defaultUsed, "ungrouped")
		b.groups = append(b.groups, b.ungrouped)
	}
	// The default chain, when someone relies on it.
	def := fallbackChain
	if len(b.defaultUsed) > 0 {
		if b.spec.DefaultChain == nil || len(b.spec.DefaultChain) == 0 {
			b.errorf("default_chain", "empty chain (needed by %s)", strings.Join(b.defaultUsed, ", "))
		} else if b.checkChain("default_chain", b.spec.DefaultChain) {
			def = b.spec.DefaultChain
		}
	} else if len(b.spec.DefaultChain) > 0 && b.checkChain("default_chain", b.spec.DefaultChain) {
		def = b.spec.DefaultChain
	}
	for _, gr := range b.groups {
		if gr.chain == nil {
			gr.chain = def
		}
	}
}

func (b *builder) ungroupedNamed() bool {
	for _, g := range b.spec.Groups {
		if slices.Contains(g.DependsOn, UngroupedName) {
			return true
		}
	}
	for _, r := range b.spec.Guests {
		if slices.Contains(r.DependsOn, UngroupedName) {
			return true
		}
	}
	for _, h := range b.spec.Hooks {
		if slices.Contains(h.Before, UngroupedName) {
			return true
		}
	}
	return false
}

// ---- nodes ----

func (b *builder) addNode(n node) int32 {
	b.nodes = append(b.nodes, n)
	return int32(len(b.nodes) - 1)
}

func (b *builder) estimate(key string, worst time.Duration) (time.Duration, bool) {
	if d, ok := b.spec.History[key]; ok && d >= 0 {
		return min(d, worst), true
	}
	return worst, false
}

func (b *builder) makeNodes() {
	// Hooks, by name.
	hookIdx := make([]int, 0, len(b.spec.Hooks))
	seen := map[string]int{}
	for i := range b.spec.Hooks {
		h := &b.spec.Hooks[i]
		p := fmt.Sprintf("hooks[%d]", i)
		if h.Name == "" {
			b.errorf(p+".name", "empty hook name")
			continue
		}
		if prev, dup := seen[h.Name]; dup {
			b.errorf(p+".name", "duplicate hook name %q (also hooks[%d])", h.Name, prev)
			continue
		}
		seen[h.Name] = i
		if h.Timeout <= 0 {
			b.errorf(p+".timeout", "must be positive")
		}
		hookIdx = append(hookIdx, i)
	}
	sort.Slice(hookIdx, func(i, j int) bool { return b.spec.Hooks[hookIdx[i]].Name < b.spec.Hooks[hookIdx[j]].Name })
	for _, i := range hookIdx {
		h := &b.spec.Hooks[i]
		p := fmt.Sprintf("hooks[%d]", i)
		hn := hookNode{specIdx: i}
		var before []string
		for j, g := range h.Before {
			k, ok := b.groupByName[g]
			if g == UngroupedName {
				k, ok = len(b.groups)-1, true // ungroupedNamed put it last
			}
			if !ok {
				b.errorf(fmt.Sprintf("%s.before[%d]", p, j), "unknown group %q%s", g, suggest(g, b.groupNames()))
				continue
			}
			hn.groups = append(hn.groups, k)
		}
		slices.Sort(hn.groups)
		hn.groups = slices.Compact(hn.groups)
		for _, k := range hn.groups {
			before = append(before, b.groups[k].name)
		}
		key := "hook:" + h.Name
		worst := max(h.Timeout, 0)
		est, learned := b.estimate(key, worst)
		hn.node = b.addNode(node{phase: 0, s1: h.Name, step: Step{
			Key: key, Kind: StepHook, Name: h.Name, HookKind: h.Kind, Before: before, Timeout: worst, Estimate: est, Learned: learned,
		}})
		b.hooks = append(b.hooks, hn)
	}

	// Guests.
	for i, g := range b.guests {
		if g.group < 0 {
			continue
		}
		gr := b.groups[g.group]
		chain := gr.chain
		if g.rule >= 0 {
			if c := b.rules[g.rule].chain; c != nil {
				chain = c
			}
		}
		key := "guest:" + g.t.name + "/" + g.g.ID
		worst := chain.Worst()
		var notes []string
		est, learned := time.Duration(0), false
		switch {
		case g.g.Power == provider.PowerOff:
			notes = append(notes, "already off")
		case len(chain) > 0 && chain[0].Kind == Skip:
			notes = append(notes, "skip: left as it is")
		case g.g.Power == provider.PowerSuspended && len(chain) > 0 && chain[0].Kind == Suspend:
			notes = append(notes, "already suspended")
		default:
			if g.g.Power == provider.PowerSuspended {
				notes = append(notes, "suspended")
			}
			est, learned = b.estimate(key, worst)
		}
		hostID, hostName := g.g.HostID, ""
		if g.host != nil {
			hostName = g.host.h.Name
			g.host.guests = append(g.host.guests, int32(i))
		} else {
			notes = append(notes, "host unknown")
			g.t.strayGuests = append(g.t.strayGuests, int32(i))
		}
		g.node = b.addNode(node{phase: 1, grp: g.group, sub: 0, s1: g.t.name, s2: g.g.Name, s3: g.g.ID, step: Step{
			Key: key, Kind: StepGuest, Target: g.t.name, HostID: hostID, HostName: hostName, GuestID: g.g.ID,
			Name: g.g.Name, Group: gr.name, Chain: chain, Timeout: worst, Estimate: est,
			Learned: learned, Note: strings.Join(notes, "; "),
		}})
	}

	// Group markers.
	for k, gr := range b.groups {
		gr.barrier = b.addNode(node{phase: 1, grp: k, sub: 1, step: Step{
			Key: "group:" + gr.name, Kind: StepGroup, Name: gr.name, Group: gr.name,
		}})
	}

	// Hosts.
	for _, t := range b.targets {
		for _, h := range t.hosts {
			self := h == b.selfHost
			phase := 2
			if self {
				phase = 3
			}
			var notes []string
			if self {
				notes = append(notes, "carries sundown: last")
			}
			mk := func(kind StepKind, sub int, timeout time.Duration, done string) int32 {
				key := kind.String() + ":" + t.name + "/" + h.h.ID
				worst := max(timeout, 0)
				est, learned := time.Duration(0), false
				ns := notes
				if done != "" {
					ns = append([]string{done}, notes...)
				} else {
					est, learned = b.estimate(key, worst)
				}
				return b.addNode(node{phase: phase, sub: sub, s1: t.name, s2: h.h.Name, s3: h.h.ID, step: Step{
					Key: key, Kind: kind, Target: t.name, HostID: h.h.ID, HostName: h.h.Name, Name: h.h.Name,
					Timeout: worst, Estimate: est, Learned: learned, Note: strings.Join(ns, "; "),
				}})
			}
			off := h.h.Power == provider.PowerOff
			if t.ti.Maintenance {
				if self && b.selfVMHost == h {
					b.excludeHost("host-maint", h, "sundown's own VM runs on this host: maintenance mode would wait for it")
				} else {
					done := ""
					if off {
						done = "already off"
					} else if h.h.Maintenance {
						done = "already in maintenance"
					}
					h.maint = mk(StepHostMaintenance, 0, t.ti.MaintenanceTimeout, done)
				}
			}
			if t.ti.ShutdownHosts {
				done := ""
				if off {
					done = "already off"
				}
				h.off = mk(StepHostShutdown, 1, t.ti.HostShutdownTimeout, done)
			}
			h.first = h.maint
			if h.first < 0 {
				h.first = h.off
			}
			if h.first >= 0 {
				t.hostsStopped = true
			}
		}
	}

	// Exclusions of guests.
	for i, g := range b.guests {
		if g.exclude == "" {
			continue
		}
		hostName := ""
		if g.host != nil {
			hostName = g.host.h.Name
		}
		b.excluded = append(b.excluded, Exclusion{
			Key: "guest:" + g.t.name + "/" + g.g.ID, Target: g.t.name, ID: g.g.ID, Name: g.g.Name,
			HostName: hostName, Reason: g.exclude,
		})
		if g.rule >= 0 && !b.selfGuests[int32(i)] {
			switch {
			case g.host != nil && g.host.off >= 0:
				b.warnf(fmt.Sprintf("guests[%d].exclude", g.rule), "guest %s is excluded but its host %s shuts down: it goes down with the host, without a clean shutdown", b.label(int32(i)), hostLabel(g.host))
			case g.host == nil && g.t.ti.ShutdownHosts && len(g.t.hosts) > 0:
				b.warnf(fmt.Sprintf("guests[%d].exclude", g.rule), "guest %s is excluded but target %s shuts its hosts down: it may go down with its host, without a clean shutdown", b.label(int32(i)), g.t.name)
			}
		}
	}
}

func (b *builder) excludeHost(kind string, h *hst, reason string) {
	b.excluded = append(b.excluded, Exclusion{
		Key: kind + ":" + h.t.name + "/" + h.h.ID, Target: h.t.name, ID: h.h.ID, Name: h.h.Name, HostName: h.h.Name, Reason: reason,
	})
}

func (b *builder) groupNames() []string {
	var ns []string
	for _, g := range b.groups {
		ns = append(ns, g.name)
	}
	if !slices.Contains(ns, UngroupedName) {
		ns = append(ns, UngroupedName)
	}
	return ns
}

// ---- edges ----

func (b *builder) addEdge(from, to, decl int32, srcNamed, dstNamed bool) {
	if from < 0 || to < 0 {
		return
	}
	b.edges = append(b.edges, edge{from: from, to: to, decl: decl, srcNamed: srcNamed, dstNamed: dstNamed})
}

func (b *builder) newDecl(path string) int32 {
	b.decls = append(b.decls, path)
	return int32(len(b.decls) - 1)
}

// resolveDep resolves a depends_on entry to a group (index) or a guest.
func (b *builder) resolveDep(p, ref string) (group int, guest int32, ok bool) {
	if ref == UngroupedName {
		return len(b.groups) - 1, -1, true // ungroupedNamed put it last
	}
	if k, isGroup := b.groupByName[ref]; isGroup {
		if c := b.byName[ref]; len(c) > 0 {
			var alts []string
			for _, i := range c {
				alts = append(alts, fmt.Sprintf("%q", b.guests[i].t.name+"/"+ref))
			}
			b.warnf(p, "%q names a group and a guest: using the group (write %s for the guest)", ref, strings.Join(slices.Compact(alts), " or "))
		}
		return k, -1, true
	}
	gi, amb := b.findGuest(ref)
	if gi < 0 {
		if amb != "" {
			b.errorf(p, "%s", amb)
		} else {
			b.errorf(p, "unknown group or guest %q%s", ref, suggest(ref, append(b.groupNames(), b.guestNames()...)))
		}
		return -1, -1, false
	}
	return -1, gi, true
}

func (b *builder) declEdges() {
	for _, gr := range b.groups {
		for _, g := range gr.members {
			b.addEdge(b.guests[g].node, gr.barrier, -1, false, false)
		}
	}
	for _, gr := range b.groups {
		if gr.implicit {
			continue
		}
		for j, ref := range b.spec.Groups[gr.specIdx].DependsOn {
			p := fmt.Sprintf("%s.depends_on[%d]", gr.path, j)
			k, gi, ok := b.resolveDep(p, ref)
			if !ok {
				continue
			}
			gr.deps = append(gr.deps, ref)
			d := b.newDecl(p)
			if k >= 0 {
				h := b.groups[k]
				h.after = appendUnique(h.after, gr.name)
				for _, m := range h.members {
					b.addEdge(gr.barrier, b.guests[m].node, d, false, false)
				}
				if len(h.members) == 0 {
					b.addEdge(gr.barrier, h.barrier, d, false, false)
				}
				continue
			}
			b.addEdge(gr.barrier, b.guests[gi].node, d, false, true) // an excluded guest has no node: no edge
		}
	}
	for i := range b.spec.Guests {
		x := b.rules[i].guest
		r := &b.spec.Guests[i]
		if r.Exclude && x >= 0 {
			continue
		}
		for j, ref := range r.DependsOn {
			p := fmt.Sprintf("guests[%d].depends_on[%d]", i, j)
			k, gi, ok := b.resolveDep(p, ref)
			if !ok || x < 0 {
				continue
			}
			xn := b.guests[x].node
			b.nodes[xn].step.DependsOn = appendUnique(b.nodes[xn].step.DependsOn, ref)
			d := b.newDecl(p)
			if k >= 0 {
				h := b.groups[k]
				h.after = appendUnique(h.after, b.label(x))
				n := 0
				for _, m := range h.members {
					if m != x {
						b.addEdge(xn, b.guests[m].node, d, true, false)
						n++
					}
				}
				if n == 0 {
					b.addEdge(xn, h.barrier, d, true, false)
				}
				continue
			}
			b.addEdge(xn, b.guests[gi].node, d, true, true)
		}
	}
}

func appendUnique(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

func (b *builder) hostEdges() {
	for _, t := range b.targets {
		for _, h := range t.hosts {
			if h.first < 0 {
				continue
			}
			for _, g := range h.guests {
				b.addEdge(b.guests[g].node, h.first, -1, false, false)
			}
			for _, g := range t.strayGuests {
				b.addEdge(b.guests[g].node, h.first, -1, false, false)
			}
			if h.maint >= 0 && h.off >= 0 {
				b.addEdge(h.maint, h.off, -1, false, false)
			}
		}
	}
}

func (b *builder) hookEdges() {
	hasPred := make([]bool, len(b.nodes))
	for _, e := range b.edges {
		hasPred[e.to] = true
	}
	isHook := make([]bool, len(b.nodes))
	for _, h := range b.hooks {
		isHook[h.node] = true
	}
	for _, h := range b.hooks {
		if len(b.spec.Hooks[h.specIdx].Before) == 0 {
			for n := range b.nodes {
				if !hasPred[n] && !isHook[n] {
					b.addEdge(h.node, int32(n), -1, false, false)
				}
			}
			continue
		}
		for _, k := range h.groups {
			gr := b.groups[k]
			for _, m := range gr.members {
				b.addEdge(h.node, b.guests[m].node, -1, false, false)
			}
			if len(gr.members) == 0 {
				b.addEdge(h.node, gr.barrier, -1, false, false)
			}
		}
	}
}

func (b *builder) selfEdges() {
	h := b.selfHost
	if h == nil || h.first < 0 {
		return
	}
	isSelf := func(n int32) bool { return n == h.maint || n == h.off }
	hasSucc := make([]bool, len(b.nodes))
	for _, e := range b.edges {
		if !isSelf(e.to) {
			hasSucc[e.from] = true
		}
	}
	for n := range b.nodes {
		if !hasSucc[n] && !isSelf(int32(n)) {
			b.addEdge(int32(n), h.first, -1, false, false)
		}
	}
}

// ---- ordering ----

func (b *builder) rankLess(x, y *node) bool {
	if x.phase != y.phase {
		return x.phase < y.phase
	}
	if x.grp != y.grp {
		return x.grp < y.grp
	}
	if x.phase == 1 && x.sub != y.sub {
		return x.sub < y.sub
	}
	if x.s1 != y.s1 {
		return x.s1 < y.s1
	}
	if x.s2 != y.s2 {
		return x.s2 < y.s2
	}
	if x.s3 != y.s3 {
		return x.s3 < y.s3
	}
	return x.sub < y.sub
}

func (b *builder) finish() *Plan {
	n := len(b.nodes)
	// Rank every node once; Kahn's algorithm then takes the ready node of
	// lowest rank, so IDs are a topological order that reads naturally.
	byRank := make([]int32, n)
	for i := range byRank {
		byRank[i] = int32(i)
	}
	sort.Slice(byRank, func(i, j int) bool { return b.rankLess(&b.nodes[byRank[i]], &b.nodes[byRank[j]]) })
	rank := make([]int32, n)
	for r, v := range byRank {
		rank[v] = int32(r)
	}
	succ, preds := b.adjacency()
	indeg := make([]int, n)
	for v := range n {
		indeg[v] = len(preds[v])
	}
	ready := &heapOf[int32]{less: func(x, y int32) bool { return rank[x] < rank[y] }}
	for v := range n {
		if indeg[v] == 0 {
			ready.push(int32(v))
		}
	}
	order := make([]int32, 0, n)
	for ready.len() > 0 {
		v := ready.pop()
		order = append(order, v)
		for _, w := range succ[v] {
			if indeg[w]--; indeg[w] == 0 {
				ready.push(w)
			}
		}
	}
	if len(order) < n { // cannot happen after breakCycles; never panic
		placed := make([]bool, n)
		for _, v := range order {
			placed[v] = true
		}
		for _, v := range byRank {
			if !placed[v] {
				order = append(order, v)
			}
		}
	}
	id := make([]int, n)
	for i, v := range order {
		id[v] = i
	}

	p := &Plan{Steps: make([]Step, n), Caps: b.spec.Caps.WithDefaults(), Excluded: b.excluded}
	for i, v := range order {
		s := b.nodes[v].step
		s.ID = i
		slices.Sort(s.DependsOn)
		deps := make([]int, 0, len(preds[v]))
		for _, u := range preds[v] {
			if d := id[u]; d < i {
				deps = append(deps, d)
			}
		}
		slices.Sort(deps)
		s.Deps = slices.Compact(deps)
		p.Steps[i] = s
	}
	for _, gr := range b.groups {
		slices.Sort(gr.deps)
		slices.Sort(gr.after)
		gi := GroupInfo{
			Name: gr.name, Chain: gr.chain, DependsOn: slices.Compact(gr.deps), After: gr.after,
			Step: id[gr.barrier], Guests: len(gr.members), Implicit: gr.implicit,
		}
		p.Groups = append(p.Groups, gi)
	}
	sort.Slice(p.Excluded, func(i, j int) bool { return p.Excluded[i].Key < p.Excluded[j].Key })
	if b.selfHost != nil {
		p.SelfHost = b.selfHost.t.name + "/" + b.selfHost.h.ID
	}
	return p
}

// adjacency returns successor and predecessor lists over the current edges.
func (b *builder) adjacency() (succ, preds [][]int32) {
	n := len(b.nodes)
	succ = make([][]int32, n)
	preds = make([][]int32, n)
	for _, e := range b.edges {
		succ[e.from] = append(succ[e.from], e.to)
		preds[e.to] = append(preds[e.to], e.from)
	}
	return succ, preds
}
