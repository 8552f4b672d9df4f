package plan

import (
	"fmt"
	"math/bits"
	"sort"
	"testing"
	"time"
)

// preds returns, for each step, the set of steps that must finish before it
// (transitively), as bitsets. Deps are smaller than IDs, so one pass works.
type closure [][]uint64

func predClosure(p *Plan) closure {
	n := len(p.Steps)
	w := (n + 63) / 64
	c := make(closure, n)
	for i, st := range p.Steps {
		c[i] = make([]uint64, w)
		for _, d := range st.Deps {
			c[i][d/64] |= 1 << (d % 64)
			for k := range w {
				c[i][k] |= c[d][k]
			}
		}
	}
	return c
}

// before reports whether step a must finish before step b starts.
func (c closure) before(a, b int) bool { return c[b][a/64]&(1<<(a%64)) != 0 }

func (c closure) count(b int) int {
	n := 0
	for _, x := range c[b] {
		n += bits.OnesCount64(x)
	}
	return n
}

// checkPlan verifies the structural invariants of a built plan.
func checkPlan(t *testing.T, p *Plan) {
	t.Helper()
	keys := map[string]bool{}
	for i, st := range p.Steps {
		if st.ID != i {
			t.Fatalf("step %d has ID %d", i, st.ID)
		}
		if keys[st.Key] {
			t.Fatalf("duplicate key %q", st.Key)
		}
		keys[st.Key] = true
		if id, ok := p.Lookup(st.Key); !ok || id != i {
			t.Fatalf("Lookup(%q) = %d, %v", st.Key, id, ok)
		}
		for j, d := range st.Deps {
			if d < 0 || d >= i || (j > 0 && st.Deps[j-1] >= d) {
				t.Fatalf("step %d (%s): bad deps %v", i, st.Key, st.Deps)
			}
		}
		if st.Estimate < 0 || st.Estimate > st.Timeout {
			t.Fatalf("step %s: estimate %v outside [0, timeout %v]", st.Key, st.Estimate, st.Timeout)
		}
	}
}

// checkSchedule verifies a schedule against its plan without trusting the
// scheduler: durations, dependencies, caps (by a sweep, and by lanes), work
// conservation, the bounds and the critical path.
func checkSchedule(t *testing.T, p *Plan, sc Schedule) {
	t.Helper()
	caps := sc.Caps
	n := len(p.Steps)
	if len(sc.Start) != n || len(sc.End) != n || len(sc.Lane) != n {
		t.Fatalf("schedule sized %d/%d/%d for %d steps", len(sc.Start), len(sc.End), len(sc.Lane), n)
	}
	dur := func(i int) time.Duration {
		if p.Steps[i].Kind == StepGroup {
			return 0
		}
		return p.Steps[i].Estimate
	}
	hostOf := func(i int) string {
		st := p.Steps[i]
		if st.Kind != StepGuest || st.HostID == "" {
			return ""
		}
		return st.Target + "/" + st.HostID
	}
	var makespan time.Duration
	for i, st := range p.Steps {
		if sc.Start[i] < 0 {
			t.Fatalf("step %s not scheduled", st.Key)
		}
		if sc.End[i]-sc.Start[i] != dur(i) {
			t.Fatalf("step %s lasts %v, estimate %v", st.Key, sc.End[i]-sc.Start[i], dur(i))
		}
		for _, d := range st.Deps {
			if sc.End[d] > sc.Start[i] {
				t.Fatalf("step %s starts at %v before its dependency %s ends at %v", st.Key, sc.Start[i], p.Steps[d].Key, sc.End[d])
			}
		}
		if (st.Kind == StepGroup) != (sc.Lane[i] < 0) || sc.Lane[i] >= caps.Global {
			t.Fatalf("step %s: lane %d", st.Key, sc.Lane[i])
		}
		makespan = max(makespan, sc.End[i])
	}
	if sc.Makespan != makespan {
		t.Fatalf("makespan %v, last end %v", sc.Makespan, makespan)
	}
	// Lanes never overlap.
	byLane := map[int][]int{}
	for i := range p.Steps {
		if sc.Lane[i] >= 0 {
			byLane[sc.Lane[i]] = append(byLane[sc.Lane[i]], i)
		}
	}
	for lane, ids := range byLane {
		sort.Slice(ids, func(a, b int) bool {
			x, y := ids[a], ids[b]
			return sc.Start[x] < sc.Start[y] || (sc.Start[x] == sc.Start[y] && sc.End[x] < sc.End[y])
		})
		for k := 1; k < len(ids); k++ {
			if sc.Start[ids[k]] < sc.End[ids[k-1]] {
				t.Fatalf("lane %d: %s [%v,%v) overlaps %s [%v,%v)", lane, p.Steps[ids[k-1]].Key, sc.Start[ids[k-1]], sc.End[ids[k-1]],
					p.Steps[ids[k]].Key, sc.Start[ids[k]], sc.End[ids[k]])
			}
		}
	}
	// Sweep: how many steps of positive length run at t, globally and on a host.
	active := func(tm time.Duration, host string) int {
		c := 0
		for i := range p.Steps {
			if sc.Start[i] <= tm && tm < sc.End[i] && p.Steps[i].Kind != StepGroup && (host == "" || hostOf(i) == host) {
				c++
			}
		}
		return c
	}
	if n <= 3000 {
		for i := range p.Steps {
			tm := sc.Start[i]
			if g := active(tm, ""); g > caps.Global {
				t.Fatalf("%d steps run at %v (cap %d)", g, tm, caps.Global)
			}
			if h := hostOf(i); h != "" {
				if c := active(tm, h); c > caps.PerHost {
					t.Fatalf("%d guest steps run on %s at %v (cap %d)", c, h, tm, caps.PerHost)
				}
			}
			// Work conservation: a step that waited after it was ready
			// waited for a full executor or a full host, at every instant.
			var ready time.Duration
			for _, d := range p.Steps[i].Deps {
				ready = max(ready, sc.End[d])
			}
			if p.Steps[i].Kind == StepGroup {
				if sc.Start[i] != ready {
					t.Fatalf("group marker %s at %v, ready at %v", p.Steps[i].Key, sc.Start[i], ready)
				}
				continue
			}
			points := []time.Duration{ready}
			for j := range p.Steps {
				if sc.End[j] > ready && sc.End[j] < sc.Start[i] {
					points = append(points, sc.End[j])
				}
			}
			for _, pt := range points {
				if pt >= sc.Start[i] {
					continue
				}
				full := active(pt, "") >= caps.Global
				if h := hostOf(i); h != "" && active(pt, h) >= caps.PerHost {
					full = true
				}
				if !full {
					t.Fatalf("step %s ready at %v idles at %v (start %v) with free slots", p.Steps[i].Key, ready, pt, sc.Start[i])
				}
			}
		}
	}
	// Bounds.
	bl := make([]time.Duration, n)
	var cpl, total time.Duration
	succ := make([][]int, n)
	for i, st := range p.Steps {
		for _, d := range st.Deps {
			succ[d] = append(succ[d], i)
		}
	}
	hostWork := map[string]time.Duration{}
	for i := n - 1; i >= 0; i-- {
		var m time.Duration
		for _, w := range succ[i] {
			m = max(m, bl[w])
		}
		bl[i] = dur(i) + m
		cpl = max(cpl, bl[i])
		total += dur(i)
		if h := hostOf(i); h != "" {
			hostWork[h] += dur(i)
		}
	}
	if sc.CriticalPathLen != cpl || sc.TotalWork != total {
		t.Fatalf("critical path %v / total %v, want %v / %v", sc.CriticalPathLen, sc.TotalWork, cpl, total)
	}
	var hb time.Duration
	for _, w := range hostWork {
		hb = max(hb, ceilDiv(w, caps.PerHost))
	}
	lb := max(cpl, ceilDiv(total, caps.Global), hb)
	if sc.LowerBound != lb {
		t.Fatalf("lower bound %v, want %v", sc.LowerBound, lb)
	}
	if sc.Makespan < sc.LowerBound {
		t.Fatalf("makespan %v below lower bound %v", sc.Makespan, sc.LowerBound)
	}
	var sum time.Duration
	for k, id := range sc.CriticalPath {
		sum += dur(id)
		if k > 0 && !contains(p.Steps[id].Deps, sc.CriticalPath[k-1]) {
			t.Fatalf("critical path %v: %d does not depend on %d", sc.CriticalPath, id, sc.CriticalPath[k-1])
		}
	}
	if n > 0 && sum != cpl {
		t.Fatalf("critical path %v sums to %v, want %v", sc.CriticalPath, sum, cpl)
	}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func mustID(t *testing.T, p *Plan, key string) int {
	t.Helper()
	id, ok := p.Lookup(key)
	if !ok {
		t.Fatalf("no step %q", key)
	}
	return id
}

func keys(p *Plan, ids []int) []string {
	var out []string
	for _, id := range ids {
		out = append(out, p.Steps[id].Key)
	}
	return out
}

func noErrors(t *testing.T, probs []Problem) {
	t.Helper()
	if HasErrors(probs) {
		t.Fatalf("unexpected problems:\n%s", problemsText(probs))
	}
}

var _ = fmt.Sprint
