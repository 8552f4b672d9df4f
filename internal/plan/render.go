package plan

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// TextOptions tune Text and View.
type TextOptions struct {
	// Runtime is the battery runtime (live or configured); 0 = unknown.
	Runtime time.Duration
	// Margin is the margin required on top of the plan.
	Margin time.Duration
}

// Text writes the plan as a readable timeline: the hooks, each group's steps
// with their start–end offsets and slot, the host steps, the host carrying
// sundown, the excluded guests with their reasons, then the critical path,
// makespan, lower bound and battery margin. The output depends only on the
// plan, the schedule and opts.
func (p *Plan) Text(w io.Writer, s Schedule, opts TextOptions) error {
	bw := bufio.NewWriter(w)
	r := renderer{p: p, s: s}

	var hooks, guests, offGuests, groups, hosts int
	for _, st := range p.Steps {
		switch st.Kind {
		case StepHook:
			hooks++
		case StepGuest:
			guests++
			if st.Note == "already off" || strings.HasPrefix(st.Note, "already off;") {
				offGuests++
			}
		case StepGroup:
			groups++
		case StepHostMaintenance, StepHostShutdown:
			hosts++
		}
	}
	fmt.Fprintf(bw, "plan: %d steps: %s, %s (%d already off), %s, %s\n", len(p.Steps),
		count(hooks, "hook"), count(guests, "guest"), offGuests, count(groups, "group"), count(hosts, "host step"))
	fmt.Fprintf(bw, "caps: %s at once, %s per host\n", count(s.Caps.Global, "step"), count(s.Caps.PerHost, "guest step"))

	byGroup := map[string][]int{}
	var hookRows, hostRows, selfRows []int
	for i, st := range p.Steps {
		switch {
		case st.Kind == StepHook:
			hookRows = append(hookRows, i)
		case st.Kind == StepGuest || st.Kind == StepGroup:
			byGroup[st.Group] = append(byGroup[st.Group], i)
		case p.SelfHost != "" && st.Target+"/"+st.HostID == p.SelfHost:
			selfRows = append(selfRows, i)
		default:
			hostRows = append(hostRows, i)
		}
	}
	if len(hookRows) > 0 {
		r.section("hooks", hookRows)
	}
	for _, g := range p.Groups {
		var parts []string
		parts = append(parts, count(g.Guests, "guest"), "chain "+g.Chain.String())
		if len(g.After) > 0 {
			parts = append(parts, "stops after "+strings.Join(g.After, ", "))
		}
		if len(g.DependsOn) > 0 {
			parts = append(parts, "stops before "+strings.Join(g.DependsOn, ", "))
		}
		r.section("group "+g.Name+": "+strings.Join(parts, "; "), byGroup[g.Name])
	}
	if len(hostRows) > 0 {
		r.section("hosts", hostRows)
	}
	if len(selfRows) > 0 {
		r.section("host carrying sundown (last)", selfRows)
	}
	r.write(bw)

	if len(p.Excluded) > 0 {
		fmt.Fprintf(bw, "\nexcluded\n")
		for _, e := range p.Excluded {
			kind, _, _ := strings.Cut(e.Key, ":")
			what := e.Target + "/" + e.ID + " " + e.Name
			if kind != "guest" {
				what = kind + " " + e.Target + "/" + e.ID
			}
			if e.HostName != "" && kind == "guest" {
				what += " on " + e.HostName
			} else if e.HostName != "" {
				what += " (" + e.HostName + ")"
			}
			fmt.Fprintf(bw, "  %s: %s\n", what, e.Reason)
		}
	}

	fmt.Fprintf(bw, "\n")
	var cp []string
	for _, id := range s.CriticalPath {
		if id >= 0 && id < len(p.Steps) && p.Steps[id].Kind != StepGroup {
			cp = append(cp, fmt.Sprintf("#%d %s", id, stepTitle(&p.Steps[id])))
		}
	}
	fmt.Fprintf(bw, "critical path %s s: %s\n", seconds(s.CriticalPathLen), strings.Join(cp, " → "))
	fmt.Fprintf(bw, "makespan %s s; lower bound %s s = max(critical path %s s, all work %s s / %s = %s s",
		seconds(s.Makespan), seconds(s.LowerBound), seconds(s.CriticalPathLen), seconds(s.TotalWork), count(s.Caps.Global, "slot"), seconds(s.WorkBound))
	if s.BusiestHost != "" {
		fmt.Fprintf(bw, ", busiest host %s %s s / %s = %s s", s.BusiestHost, seconds(s.HostWork), count(s.Caps.PerHost, "slot"), seconds(s.HostBound))
	}
	fmt.Fprintf(bw, ")\n")
	fmt.Fprintf(bw, "battery: %s\n", s.Margin(opts.Runtime, opts.Margin))
	return bw.Flush()
}

func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// stepTitle names a step in one short phrase.
func stepTitle(st *Step) string {
	switch st.Kind {
	case StepHook:
		return "hook " + st.Name
	case StepGroup:
		return st.Name + " stopped"
	case StepHostMaintenance, StepHostShutdown:
		name := st.HostName
		if name == "" {
			name = st.HostID
		}
		return st.Kind.String() + " " + name
	}
	return st.Name
}

type renderer struct {
	p    *Plan
	s    Schedule
	rows []textRow
}

// textRow is a section heading (head != "") or a step line.
type textRow struct {
	head  string
	cells [6]string // start, end, lane, #id, title, detail
}

func (r *renderer) at(v []time.Duration, id int) (time.Duration, bool) {
	if id < len(v) && v[id] >= 0 {
		return v[id], true
	}
	return 0, false
}

func (r *renderer) section(head string, ids []int) {
	r.rows = append(r.rows, textRow{head: head})
	ids = append([]int(nil), ids...)
	start := func(id int) time.Duration {
		if t, ok := r.at(r.s.Start, id); ok {
			return t
		}
		return 1<<63 - 1
	}
	sort.SliceStable(ids, func(i, j int) bool {
		a, b := start(ids[i]), start(ids[j])
		return a < b || (a == b && ids[i] < ids[j])
	})
	if len(ids) == 0 {
		r.rows = append(r.rows, textRow{cells: [6]string{4: "(nothing)"}})
	}
	for _, id := range ids {
		st := &r.p.Steps[id]
		var row textRow
		st0, ok0 := r.at(r.s.Start, id)
		en, ok1 := r.at(r.s.End, id)
		if ok0 && ok1 {
			row.cells[0], row.cells[1] = seconds(st0), seconds(en)
		} else {
			row.cells[0], row.cells[1] = "-", "-"
		}
		if id < len(r.s.Lane) && r.s.Lane[id] >= 0 {
			row.cells[2] = fmt.Sprintf("lane %d", r.s.Lane[id])
		}
		row.cells[3] = fmt.Sprintf("#%d", id)
		row.cells[4] = stepTitle(st)
		row.cells[5] = r.detail(st)
		r.rows = append(r.rows, row)
	}
}

func (r *renderer) detail(st *Step) string {
	var parts []string
	switch st.Kind {
	case StepHook:
		kind := st.HookKind
		if kind == "" {
			kind = "hook"
		}
		if len(st.Before) == 0 {
			parts = append(parts, kind+", at the start")
		} else {
			parts = append(parts, kind+", before "+strings.Join(st.Before, ", "))
		}
	case StepGuest:
		where := st.Target + "/" + st.GuestID
		if st.HostName != "" {
			where += " on " + st.HostName
		} else if st.HostID != "" {
			where += " on " + st.HostID
		}
		parts = append(parts, where)
		for _, g := range r.p.Groups {
			if g.Name == st.Group && !g.Chain.Equal(st.Chain) {
				parts = append(parts, "chain "+st.Chain.String())
			}
		}
		if len(st.DependsOn) > 0 {
			parts = append(parts, "stops before "+strings.Join(st.DependsOn, ", "))
		}
	case StepGroup:
		return ""
	case StepHostMaintenance, StepHostShutdown:
		parts = append(parts, st.Target+"/"+st.HostID)
	}
	if st.Learned {
		parts = append(parts, "expected "+seconds(st.Estimate)+" s (learned), worst "+seconds(st.Timeout)+" s")
	}
	if st.Note != "" {
		parts = append(parts, st.Note)
	}
	return strings.Join(parts, "; ")
}

// write prints the rows with columns aligned across all sections.
func (r *renderer) write(w io.Writer) {
	var width [6]int
	for _, row := range r.rows {
		if row.head != "" {
			continue
		}
		for c, cell := range row.cells {
			width[c] = max(width[c], utf8.RuneCountInString(cell))
		}
	}
	pad := func(s string, n int, right bool) string {
		fill := strings.Repeat(" ", max(0, n-utf8.RuneCountInString(s)))
		if right {
			return fill + s
		}
		return s + fill
	}
	for _, row := range r.rows {
		if row.head != "" {
			fmt.Fprintf(w, "\n%s\n", row.head)
			continue
		}
		c := row.cells
		var line string
		if c[0] == "" && c[3] == "" {
			line = "  " + c[4]
		} else {
			line = "  " + pad(c[0], width[0], true) + "–" + pad(c[1], width[1], true) + " s  " +
				pad(c[2], width[2], false) + "  " + pad(c[3], width[3], true) + "  " + pad(c[4], width[4], false) + "  " + c[5]
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
}

// View is the JSON form of a plan with its schedule (`sundown plan --json`).
// Durations are in seconds.
type View struct {
	Steps           []StepView      `json:"steps"`
	Groups          []GroupView     `json:"groups"`
	Excluded        []ExclusionView `json:"excluded"`
	SelfHost        string          `json:"self_host,omitempty"`
	Caps            CapsView        `json:"caps"`
	Makespan        float64         `json:"makespan_s"`
	LowerBound      float64         `json:"lower_bound_s"`
	CriticalPathLen float64         `json:"critical_path_s"`
	CriticalPath    []string        `json:"critical_path"`
	TotalWork       float64         `json:"total_work_s"`
	WorkBound       float64         `json:"work_bound_s"`
	HostBound       float64         `json:"host_bound_s"`
	HostWork        float64         `json:"host_work_s"`
	BusiestHost     string          `json:"busiest_host,omitempty"`
	Battery         BatteryView     `json:"battery"`
}

// StepView is one step in View.
type StepView struct {
	ID        int          `json:"id"`
	Key       string       `json:"key"`
	Kind      string       `json:"kind"`
	Target    string       `json:"target,omitempty"`
	HostID    string       `json:"host_id,omitempty"`
	HostName  string       `json:"host_name,omitempty"`
	GuestID   string       `json:"guest_id,omitempty"`
	Name      string       `json:"name"`
	Group     string       `json:"group,omitempty"`
	Chain     []ActionView `json:"chain,omitempty"`
	HookKind  string       `json:"hook_kind,omitempty"`
	Before    []string     `json:"before,omitempty"`
	DependsOn []string     `json:"depends_on,omitempty"`
	Deps      []int        `json:"deps"`
	Timeout   float64      `json:"timeout_s"`
	Estimate  float64      `json:"estimate_s"`
	Learned   bool         `json:"learned,omitempty"`
	Note      string       `json:"note,omitempty"`
	Start     float64      `json:"start_s"`
	End       float64      `json:"end_s"`
	Lane      int          `json:"lane"`
}

// ActionView is one action of a chain.
type ActionView struct {
	Action  string  `json:"action"`
	Timeout float64 `json:"timeout_s,omitempty"`
}

// GroupView is one group in View.
type GroupView struct {
	Name      string       `json:"name"`
	Chain     []ActionView `json:"chain"`
	DependsOn []string     `json:"depends_on"`
	After     []string     `json:"after"`
	Step      int          `json:"step"`
	Guests    int          `json:"guests"`
	Implicit  bool         `json:"implicit,omitempty"`
}

// ExclusionView is one exclusion in View.
type ExclusionView struct {
	Key      string `json:"key"`
	Target   string `json:"target"`
	ID       string `json:"id"`
	Name     string `json:"name"`
	HostName string `json:"host_name,omitempty"`
	Reason   string `json:"reason"`
}

// CapsView is Caps in View.
type CapsView struct {
	Global  int `json:"global"`
	PerHost int `json:"per_host"`
}

// BatteryView is a BatteryMargin in View.
type BatteryView struct {
	Known    bool    `json:"known"`
	Runtime  float64 `json:"runtime_s"`
	Plan     float64 `json:"plan_s"`
	Required float64 `json:"required_s"`
	Spare    float64 `json:"spare_s"`
	Fits     bool    `json:"fits"`
	Text     string  `json:"text"`
}

func secs(d time.Duration) float64 { return d.Seconds() }

func chainView(c Chain) []ActionView {
	out := make([]ActionView, 0, len(c))
	for _, a := range c {
		av := ActionView{Action: a.Kind.String()}
		if a.Kind != Skip {
			av.Timeout = secs(a.Timeout)
		}
		out = append(out, av)
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// View returns the JSON-tagged form of the plan and its schedule.
func (p *Plan) View(s Schedule, opts TextOptions) View {
	v := View{
		Steps:           make([]StepView, 0, len(p.Steps)),
		Groups:          make([]GroupView, 0, len(p.Groups)),
		Excluded:        make([]ExclusionView, 0, len(p.Excluded)),
		SelfHost:        p.SelfHost,
		Caps:            CapsView{Global: s.Caps.Global, PerHost: s.Caps.PerHost},
		Makespan:        secs(s.Makespan),
		LowerBound:      secs(s.LowerBound),
		CriticalPathLen: secs(s.CriticalPathLen),
		CriticalPath:    []string{},
		TotalWork:       secs(s.TotalWork),
		WorkBound:       secs(s.WorkBound),
		HostBound:       secs(s.HostBound),
		HostWork:        secs(s.HostWork),
		BusiestHost:     s.BusiestHost,
	}
	for i, st := range p.Steps {
		sv := StepView{
			ID: st.ID, Key: st.Key, Kind: st.Kind.String(), Target: st.Target, HostID: st.HostID,
			HostName: st.HostName, GuestID: st.GuestID, Name: st.Name, Group: st.Group, HookKind: st.HookKind,
			Before: st.Before, DependsOn: st.DependsOn, Deps: st.Deps, Timeout: secs(st.Timeout),
			Estimate: secs(st.Estimate), Learned: st.Learned, Note: st.Note, Start: -1, End: -1, Lane: -1,
		}
		if sv.Deps == nil {
			sv.Deps = []int{}
		}
		if st.Kind == StepGuest {
			sv.Chain = chainView(st.Chain)
		}
		if i < len(s.Start) && s.Start[i] >= 0 {
			sv.Start, sv.End = secs(s.Start[i]), secs(s.End[i])
		}
		if i < len(s.Lane) {
			sv.Lane = s.Lane[i]
		}
		v.Steps = append(v.Steps, sv)
	}
	for _, g := range p.Groups {
		v.Groups = append(v.Groups, GroupView{
			Name: g.Name, Chain: chainView(g.Chain), DependsOn: nonNil(g.DependsOn), After: nonNil(g.After),
			Step: g.Step, Guests: g.Guests, Implicit: g.Implicit,
		})
	}
	for _, e := range p.Excluded {
		v.Excluded = append(v.Excluded, ExclusionView(e))
	}
	for _, id := range s.CriticalPath {
		if id >= 0 && id < len(p.Steps) {
			v.CriticalPath = append(v.CriticalPath, p.Steps[id].Key)
		}
	}
	m := s.Margin(opts.Runtime, opts.Margin)
	v.Battery = BatteryView{Known: m.Known, Runtime: secs(m.Runtime), Plan: secs(m.Plan), Required: secs(m.Required),
		Spare: secs(m.Spare), Fits: m.Fits, Text: m.String()}
	return v
}

// JSON writes View(s, opts) as indented JSON.
func (p *Plan) JSON(w io.Writer, s Schedule, opts TextOptions) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(p.View(s, opts)); err != nil {
		return fmt.Errorf("encode plan: %w", err)
	}
	return nil
}
