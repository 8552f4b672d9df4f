package plan

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// checkChain reports the problems of a chain; it returns false when the
// chain cannot be used at all (empty, or an action that is not one).
func (b *builder) checkChain(p string, c Chain) bool {
	if len(c) == 0 {
		b.errorf(p, "empty chain")
		return false
	}
	ok := true
	for i, a := range c {
		ap := fmt.Sprintf("%s[%d]", p, i)
		if !a.Kind.Valid() {
			b.errorf(ap+".action", "unknown action %s (want shutdown, suspend, poweroff or skip)", a.Kind)
			ok = false
			continue
		}
		if a.Kind == Skip {
			if i != len(c)-1 {
				b.errorf(ap+".action", "skip must be the last action: the actions after it never run")
				ok = false
			}
			continue
		}
		if a.Timeout <= 0 {
			b.errorf(ap+".timeout", "must be positive")
			ok = false
		}
	}
	if last := c[len(c)-1].Kind; ok && last != PowerOff && last != Skip {
		b.warnf(p, "the last action is %s, not poweroff: a guest that ignores it stays on (end with poweroff, or with skip to accept that)", last)
	}
	return ok
}

// suggest returns ` (did you mean "x"?)` for the candidate closest to s, or
// "" when none is close.
func suggest(s string, cands []string) string {
	best, bestD := "", -1
	limit := max(1, min(3, len(s)/3))
	for _, c := range cands {
		if c == "" || c == s {
			continue
		}
		d := editDistance(s, c, limit)
		if d <= limit && (bestD < 0 || d < bestD || (d == bestD && c < best)) {
			best, bestD = c, d
		}
	}
	if bestD < 0 {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the optimal-string-alignment distance between a and b
// (insertions, deletions, substitutions and transpositions of adjacent
// runes), or limit+1 as soon as it is known to exceed limit.
func editDistance(a, b string, limit int) int {
	ra, rb := []rune(a), []rune(b)
	if d := len(ra) - len(rb); d > limit || -d > limit {
		return limit + 1
	}
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
			rowMin = min(rowMin, cur[j])
		}
		if rowMin > limit {
			return limit + 1
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}

// ---- problem order ----

var sectionOrder = map[string]int{
	"targets": 0, "self": 1, "caps": 2, "default_chain": 3, "groups": 4, "guests": 5, "hooks": 6,
}

var fieldOrder = map[string]int{
	"target": 0, "inventory": 1, "hosts": 2, "guests": 3, "maintenance_timeout": 4, "host_shutdown_timeout": 5,
	"vm_uuid": 0, "host_id": 1,
	"global": 0, "per_host": 1,
	"name": 0, "select": 1, "names": 2, "tags": 3, "targets": 5, "chain": 10, "action": 11, "timeout": 12,
	"exclude": 20, "depends_on": 21, "before": 22,
}

type pathTok struct {
	name  string
	index int // -1 for names
}

func tokenize(p string) []pathTok {
	var toks []pathTok
	for _, part := range strings.Split(p, ".") {
		name, rest, _ := strings.Cut(part, "[")
		if name != "" {
			toks = append(toks, pathTok{name: name, index: -1})
		}
		for rest != "" {
			num, after, _ := strings.Cut(rest, "]")
			n, err := strconv.Atoi(num)
			if err != nil {
				n = 1 << 30
			}
			toks = append(toks, pathTok{index: n})
			_, rest, _ = strings.Cut(after, "[")
		}
	}
	return toks
}

func tokCompare(x, y pathTok, first bool) int {
	if (x.index < 0) != (y.index < 0) { // a bare field ("groups[0]") sorts before its parts
		if x.index >= 0 {
			return -1
		}
		return 1
	}
	if x.index >= 0 {
		return x.index - y.index
	}
	order := fieldOrder
	if first {
		order = sectionOrder
	}
	ox, okx := order[x.name]
	oy, oky := order[y.name]
	switch {
	case okx && oky && ox != oy:
		return ox - oy
	case okx != oky:
		if okx {
			return -1
		}
		return 1
	}
	return strings.Compare(x.name, y.name)
}

// sortProblems orders problems by path in configuration order (indices
// compared as numbers); problems at the same path keep their order.
func sortProblems(ps []Problem) {
	toks := make(map[string][]pathTok, len(ps))
	for _, p := range ps {
		if _, ok := toks[p.Path]; !ok {
			toks[p.Path] = tokenize(p.Path)
		}
	}
	sort.SliceStable(ps, func(i, j int) bool {
		a, c := toks[ps[i].Path], toks[ps[j].Path]
		for k := 0; k < len(a) && k < len(c); k++ {
			if d := tokCompare(a[k], c[k], k == 0); d != 0 {
				return d < 0
			}
		}
		return len(a) < len(c)
	})
}

// ---- cycles ----

// maxCycleReports bounds the cycle problems of one spec; the remaining
// cycles are still broken.
const maxCycleReports = 20

// breakCycles finds the cycles of the dependency graph, reports each as the
// path of names it runs through, and drops one declaration of it, until the
// graph is acyclic. The declaration dropped (and reported) is the last in
// configuration order: guest rules before groups, so the best-effort plan
// loses the narrowest ordering.
func (b *builder) breakCycles() {
	if b.acyclic() {
		return
	}
	disabled := make([]bool, len(b.decls))
	reported := 0
	for round := 0; ; round++ {
		sccs := b.sccs()
		if len(sccs) == 0 {
			break
		}
		progress := false
		for _, comp := range sccs {
			e, cycle := b.cycleIn(comp)
			if e < 0 {
				continue
			}
			d := b.edges[e].decl
			disabled[d] = true
			progress = true
			if reported < maxCycleReports {
				b.errorf(b.decls[d], "dependency cycle: %s", cycle)
			} else if reported == maxCycleReports {
				b.errorf(b.decls[d], "more dependency cycles (only the first %d are listed)", maxCycleReports)
			}
			reported++
		}
		kept := b.edges[:0]
		for _, e := range b.edges {
			if e.decl < 0 || !disabled[e.decl] {
				kept = append(kept, e)
			}
		}
		b.edges = kept
		if !progress { // a cycle without a declaration: cannot happen; drop nothing more
			break
		}
	}
}

// acyclic is the fast path: Kahn's algorithm without priorities.
func (b *builder) acyclic() bool {
	succ, preds := b.adjacency()
	indeg := make([]int, len(b.nodes))
	var stack []int32
	for v := range b.nodes {
		indeg[v] = len(preds[v])
		if indeg[v] == 0 {
			stack = append(stack, int32(v))
		}
	}
	seen := 0
	for len(stack) > 0 {
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		seen++
		for _, w := range succ[v] {
			if indeg[w]--; indeg[w] == 0 {
				stack = append(stack, w)
			}
		}
	}
	return seen == len(b.nodes)
}

// sccs returns the strongly connected components that contain a cycle
// (more than one node, or a self-loop), each sorted, in order of their
// smallest node (Tarjan's algorithm, iterative).
func (b *builder) sccs() [][]int32 {
	n := len(b.nodes)
	out := make([][]int32, n) // edge indices by source
	for i, e := range b.edges {
		out[e.from] = append(out[e.from], int32(i))
	}
	index := make([]int32, n)
	low := make([]int32, n)
	onStack := make([]bool, n)
	for i := range index {
		index[i] = -1
	}
	var stack []int32
	var comps [][]int32
	next := int32(0)
	type frame struct {
		v  int32
		ei int
	}
	for root := range n {
		if index[root] >= 0 {
			continue
		}
		call := []frame{{v: int32(root)}}
		index[root], low[root] = next, next
		next++
		stack = append(stack, int32(root))
		onStack[root] = true
		for len(call) > 0 {
			f := &call[len(call)-1]
			v := f.v
			if f.ei < len(out[v]) {
				w := b.edges[out[v][f.ei]].to
				f.ei++
				if index[w] < 0 {
					index[w], low[w] = next, next
					next++
					stack = append(stack, w)
					onStack[w] = true
					call = append(call, frame{v: w})
				} else if onStack[w] {
					low[v] = min(low[v], index[w])
				}
				continue
			}
			call = call[:len(call)-1]
			if len(call) > 0 {
				u := call[len(call)-1].v
				low[u] = min(low[u], low[v])
			}
			if low[v] == index[v] {
				var comp []int32
				for {
					w := stack[len(stack)-1]
					stack = stack[:len(stack)-1]
					onStack[w] = false
					comp = append(comp, w)
					if w == v {
						break
					}
				}
				cyclic := len(comp) > 1
				if !cyclic {
					for _, ei := range out[v] {
						if b.edges[ei].to == v {
							cyclic = true
						}
					}
				}
				if cyclic {
					slices.Sort(comp)
					comps = append(comps, comp)
				}
			}
		}
	}
	sort.Slice(comps, func(i, j int) bool { return comps[i][0] < comps[j][0] })
	return comps
}

// cycleIn picks, in a cyclic component, the edge of the last declaration
// (in configuration order) and the shortest cycle through it, and renders
// that cycle, from that declaration on, with the names the configuration
// uses.
func (b *builder) cycleIn(comp []int32) (int, string) {
	in := make(map[int32]bool, len(comp))
	for _, v := range comp {
		in[v] = true
	}
	last := -1
	for i, e := range b.edges {
		if e.decl >= 0 && in[e.from] && in[e.to] {
			if last < 0 || e.decl > b.edges[last].decl {
				last = i
			}
		}
	}
	if last < 0 {
		return -1, ""
	}
	e0 := b.edges[last]
	// Shortest path e0.to → e0.from inside the component (BFS).
	out := map[int32][]int{}
	for i, e := range b.edges {
		if in[e.from] && in[e.to] {
			out[e.from] = append(out[e.from], i)
		}
	}
	via := map[int32]int{e0.to: -1}
	queue := []int32{e0.to}
	for len(queue) > 0 && !hasKey(via, e0.from) {
		v := queue[0]
		queue = queue[1:]
		for _, ei := range out[v] {
			w := b.edges[ei].to
			if !hasKey(via, w) {
				via[w] = ei
				queue = append(queue, w)
			}
		}
	}
	path := []int{last} // edges of the cycle, in order from e0
	if e0.from != e0.to {
		var back []int
		for v := e0.from; v != e0.to; {
			ei := via[v]
			back = append(back, ei)
			v = b.edges[ei].from
		}
		slices.Reverse(back)
		path = append(path, back...)
	}
	// Label each node of the cycle: a group marker by its group; a guest by
	// its own name when a declaration on the cycle names it, else by its
	// group (so group-level cycles read as groups).
	k := len(path)
	labels := make([]string, 0, k+1)
	for i := range k {
		inE, outE := b.edges[path[(i+k-1)%k]], b.edges[path[i]]
		labels = append(labels, b.nodeLabel(outE.from, inE.dstNamed || outE.srcNamed))
	}
	labels = append(labels, labels[0])
	labels = slices.Compact(labels)
	if len(labels) == 1 {
		labels = append(labels, labels[0])
	}
	return last, strings.Join(labels, " → ")
}

func hasKey[K comparable, V any](m map[K]V, k K) bool {
	_, ok := m[k]
	return ok
}

func (b *builder) nodeLabel(v int32, named bool) string {
	s := &b.nodes[v].step
	if s.Kind == StepGuest {
		if !named {
			return s.Group
		}
		if gi, ok := b.byTargetID[s.Target+"\x00"+s.GuestID]; ok {
			return b.label(gi)
		}
	}
	return s.Name
}
