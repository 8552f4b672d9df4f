package plan

import (
	"time"
)

// Schedule is a plan list-scheduled under caps: when each step is expected
// to start and end, relative to the start of the shutdown.
//
// Slices are indexed by step ID. A step that can never run (only possible in
// a hand-built Plan with a cycle) has Start and End -1.
type Schedule struct {
	Caps Caps
	// Start and End offsets of each step.
	Start, End []time.Duration
	// Lane is the executor slot (0 … Caps.Global-1) a step occupies; -1 for
	// group markers, which need no slot.
	Lane []int
	// Makespan is when the last step ends.
	Makespan time.Duration
	// CriticalPath is the longest chain of dependent steps by estimate
	// (step IDs, first to last), ignoring the caps; CriticalPathLen its
	// length.
	CriticalPath    []int
	CriticalPathLen time.Duration
	// TotalWork is the sum of all estimates.
	TotalWork time.Duration
	// WorkBound is TotalWork / Caps.Global, rounded up.
	WorkBound time.Duration
	// HostBound is the busiest host's guest work (HostWork) /
	// Caps.PerHost, rounded up; BusiestHost is that host ("TARGET/HOSTID").
	HostBound   time.Duration
	HostWork    time.Duration
	BusiestHost string
	// LowerBound is max(CriticalPathLen, WorkBound, HostBound): no schedule
	// under these caps can end sooner, so Makespan ≥ LowerBound.
	LowerBound time.Duration
}

// Estimate list-schedules the plan under caps (zero fields take the
// defaults): every step lasts its Estimate; at each moment the free slots go
// to the ready steps with the highest priority, ties to the lower ID. The
// priorities start as the longest remaining path to the end (critical path
// first, HLFET, raised for congested hosts: see dispatcher) and are then
// improved by forward-backward passes (see ranks); the executor uses the
// same priorities. At most caps.Global steps run at
// once, and at most caps.PerHost guest steps per host; hook and host steps
// count against the global cap only, group markers against none. A step
// with a zero estimate still takes a slot for an instant (the executor
// checks the live state), so it waits for a free slot like any other.
//
// It runs in O((V+E) log V) time for V steps and E dependencies: seven list
// schedules, about 50-100 ms for 10,000 steps on one core.
func (p *Plan) Estimate(caps Caps) Schedule {
	caps = caps.WithDefaults()
	n := len(p.Steps)
	s := Schedule{
		Caps:  caps,
		Start: make([]time.Duration, n),
		End:   make([]time.Duration, n),
		Lane:  make([]int, n),
	}
	if n == 0 {
		return s
	}

	dur := make([]time.Duration, n)
	slotless := make([]bool, n)
	for i := range p.Steps {
		st := &p.Steps[i]
		slotless[i] = st.Kind == StepGroup
		dur[i] = max(st.Estimate, 0)
	}
	d := newDispatcher(p, dur, slotless, caps.PerHost)
	for i := range n {
		s.TotalWork += d.dur[i]
	}

	// Critical path: from the step with the longest bottom level, follow
	// the successor with the longest one.
	bl := d.bl
	best := int32(-1)
	for _, v := range d.topo {
		if best < 0 || bl[v] > bl[best] || (bl[v] == bl[best] && v < best) {
			best = v
		}
	}
	if best >= 0 {
		s.CriticalPathLen = bl[best]
	}
	for v := best; v >= 0; {
		s.CriticalPath = append(s.CriticalPath, int(v))
		next := int32(-1)
		for _, w := range d.succOf(v) {
			if next < 0 || bl[w] > bl[next] || (bl[w] == bl[next] && w < next) {
				next = w
			}
		}
		v = next
	}

	// The per-host bound.
	hostWork := make([]time.Duration, len(d.hostKeys))
	for i := range n {
		if h := d.host[i]; h >= 0 {
			hostWork[h] += d.dur[i]
		}
	}
	s.WorkBound = ceilDiv(s.TotalWork, caps.Global)
	for h, w := range hostWork {
		if b := ceilDiv(w, caps.PerHost); b > s.HostBound || (b == s.HostBound && s.BusiestHost == "") {
			s.HostBound, s.HostWork, s.BusiestHost = b, w, d.hostKeys[h]
		}
	}
	s.LowerBound = max(s.CriticalPathLen, s.WorkBound, s.HostBound)

	// The simulation, with the priorities the executor will use.
	_, sim := p.ranks(dur, slotless, caps)
	s.Start, s.End, s.Lane = sim.start, sim.end, sim.lane
	for i := range n {
		s.Makespan = max(s.Makespan, s.End[i])
	}
	return s
}

// simulation is one list schedule: each step's start, end and lane (-1
// for steps that take no slot; start and end -1 for steps never run).
type simulation struct {
	start, end []time.Duration
	lane       []int
	makespan   time.Duration
}

// simulate list-schedules p under caps with the dispatcher: rank nil means
// its own priority (bottom level, raised for congested hosts), else rank.
func simulate(p *Plan, dur []time.Duration, slotless []bool, caps Caps, rank []time.Duration) simulation {
	n := len(p.Steps)
	d := newDispatcher(p, dur, slotless, caps.PerHost)
	d.rank = rank
	s := simulation{start: make([]time.Duration, n), end: make([]time.Duration, n), lane: make([]int, n)}
	for i := range n {
		s.start[i], s.end[i], s.lane[i] = -1, -1, -1
	}
	lanes := &heapOf[int]{less: func(x, y int) bool { return x < y }}
	for l := range min(caps.Global, n) {
		lanes.push(l)
	}
	running := &heapOf[int32]{less: func(x, y int32) bool {
		return s.end[x] < s.end[y] || (s.end[x] == s.end[y] && x < y)
	}}
	var now time.Duration
	instant := func(v int32) { s.start[v], s.end[v] = now, now }
	d.start(instant)
	for {
		for lanes.len() > 0 {
			v, ok := d.next()
			if !ok {
				break
			}
			s.lane[v] = lanes.pop()
			s.start[v], s.end[v] = now, now+d.dur[v]
			running.push(v)
		}
		if running.len() == 0 {
			break
		}
		now = s.end[running.top()]
		for running.len() > 0 && s.end[running.top()] == now {
			v := running.pop()
			lanes.push(s.lane[v])
			d.done(v)
		}
		d.release(instant)
	}
	for i := range n {
		s.makespan = max(s.makespan, s.end[i])
	}
	return s
}

// fbiPasses is how many backward-forward passes ranks tries.
const fbiPasses = 3

// ranks returns the priorities of the plan's steps for the dispatcher (nil:
// its own) and the schedule they give. It starts from the dispatcher's list
// schedule and improves it by forward-backward passes (the "justification"
// of Valls, Ballestín and Quintanilla, 2005): schedule the reversed DAG
// with the latest-finishing steps first, then forward again with the steps
// that the backward pass put first in time (latest there) first; keep the
// best. Each pass is a list schedule under the same caps, so any result is
// feasible; with durations as estimated the executor reproduces it, with
// other durations it degrades to a list schedule in that order.
func (p *Plan) ranks(dur []time.Duration, slotless []bool, caps Caps) ([]time.Duration, simulation) {
	best := simulate(p, dur, slotless, caps, nil)
	var bestRank []time.Duration
	rev := p.reversed()
	fwd := best
	for range fbiPasses {
		rank := simulate(rev, dur, slotless, caps, fwd.end).end
		fwd = simulate(p, dur, slotless, caps, rank)
		if fwd.makespan < best.makespan {
			best, bestRank = fwd, rank
		}
	}
	return bestRank, best
}

// reversed is p with every dependency turned around (same steps, kinds,
// hosts), for the backward passes of ranks.
func (p *Plan) reversed() *Plan {
	r := &Plan{Steps: make([]Step, len(p.Steps)), Caps: p.Caps}
	for i, st := range p.Steps {
		r.Steps[i] = Step{ID: i, Kind: st.Kind, Target: st.Target, HostID: st.HostID}
	}
	for i, st := range p.Steps {
		for _, d := range st.Deps {
			if d >= 0 && d < len(p.Steps) && d != i {
				r.Steps[d].Deps = append(r.Steps[d].Deps, i)
			}
		}
	}
	return r
}

func ceilDiv(d time.Duration, k int) time.Duration {
	if k <= 0 || d <= 0 {
		return max(d, 0)
	}
	q := d / time.Duration(k)
	if q*time.Duration(k) < d {
		q++
	}
	return q
}

// BatteryMargin compares a plan's makespan with the battery runtime.
type BatteryMargin struct {
	// Runtime is the battery runtime; 0 when unknown (Known false).
	Runtime time.Duration
	Known   bool
	// Plan is the schedule's makespan.
	Plan time.Duration
	// Required is the margin the operator wants on top of the plan.
	Required time.Duration
	// Spare is Runtime − Plan (negative when the plan is longer).
	Spare time.Duration
	// Fits: Plan + Required ≤ Runtime (false when the runtime is unknown).
	Fits bool
}

// Margin compares the makespan with the battery runtime (0 = unknown) and
// the margin the operator requires on top of the plan.
func (s Schedule) Margin(runtime, margin time.Duration) BatteryMargin {
	m := BatteryMargin{Runtime: max(runtime, 0), Known: runtime > 0, Plan: s.Makespan, Required: max(margin, 0)}
	if m.Known {
		m.Spare = m.Runtime - m.Plan
		m.Fits = m.Plan+m.Required <= m.Runtime
	}
	return m
}

// String renders the margin as "runtime 1260 s − plan 431 s = margin 829 s:
// fits", with the required margin in parentheses when there is one.
func (m BatteryMargin) String() string {
	req := ""
	if m.Required > 0 {
		req = " (required " + seconds(m.Required) + " s)"
	}
	if !m.Known {
		return "runtime unknown: the plan needs " + seconds(m.Plan) + " s + margin " + seconds(m.Required) +
			" s = " + seconds(m.Plan+m.Required) + " s of battery"
	}
	verdict := "fits"
	if !m.Fits {
		verdict = "DOES NOT FIT"
	}
	return "runtime " + seconds(m.Runtime) + " s − plan " + seconds(m.Plan) + " s = margin " + seconds(m.Spare) +
		" s: " + verdict + req
}

// heapOf is a binary min-heap ordered by less.
type heapOf[T any] struct {
	items []T
	less  func(x, y T) bool
}

func (h *heapOf[T]) len() int { return len(h.items) }

func (h *heapOf[T]) top() T { return h.items[0] }

func (h *heapOf[T]) push(x T) {
	h.items = append(h.items, x)
	i := len(h.items) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !h.less(h.items[i], h.items[parent]) {
			break
		}
		h.items[i], h.items[parent] = h.items[parent], h.items[i]
		i = parent
	}
}

func (h *heapOf[T]) pop() T {
	top := h.items[0]
	last := len(h.items) - 1
	h.items[0] = h.items[last]
	h.items = h.items[:last]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < last && h.less(h.items[l], h.items[m]) {
			m = l
		}
		if r < last && h.less(h.items[r], h.items[m]) {
			m = r
		}
		if m == i {
			break
		}
		h.items[i], h.items[m] = h.items[m], h.items[i]
		i = m
	}
	return top
}
