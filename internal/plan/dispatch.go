package plan

import "time"

// dispatcher is the list scheduler shared by Estimate (in simulated time)
// and the executor (in real time), so that the estimate and the run make
// the same choices.
//
// A step becomes ready when all its dependencies are done. Instant steps
// (group markers; in the executor also steps ended before a restart or
// outside a drill) complete at once without a slot. The others wait for a
// slot: next hands out the ready step with the highest priority, keeping at
// most perHost guest steps per host running; the caller enforces the global
// cap by how often it calls next.
//
// Priority is the step's bottom level (its estimate plus the longest path
// after it, HLFET), raised for the guests of a congested host: a host whose
// queued and running guest work (by estimate) needs W / perHost to drain,
// with R still to come after its first queued guest, gets at least
// R + W / perHost. Without that,
// a host holding many guests of one tier starts them late behind its
// per-host cap while other hosts' short guests take the free slots, and
// the whole tier waits for that host.
type dispatcher struct {
	n       int
	succOff []int32
	succ    []int32
	indeg   []int32 // dependencies not yet done
	instant []bool
	dur     []time.Duration
	bl      []time.Duration // bottom level
	topo    []int32         // a topological order (shorter than n with a cycle)

	perHost  int
	host     []int32 // host index of a guest step with a host, else -1
	hostKeys []string
	hostQ    []*heapOf[int32]
	hostRun  []int
	hostVer  []uint32
	hostWork []time.Duration // estimate sum of the host's queued and running steps

	global *heapOf[dcand]
	work   []int32 // released but not yet queued

	// rank, when set, replaces the priority: higher first (see ranks).
	rank []time.Duration
}

type dcand struct {
	v, host int32
	ver     uint32
	key     time.Duration
}

// newDispatcher prepares the schedule of p: dur[i] is step i's expected
// duration (ignored for instant steps, which last 0). Dependencies that are
// not step IDs are ignored, so a hand-built plan cannot make it panic.
func newDispatcher(p *Plan, dur []time.Duration, instant []bool, perHost int) *dispatcher {
	n := len(p.Steps)
	d := &dispatcher{
		n: n, instant: instant, perHost: perHost,
		indeg: make([]int32, n), succOff: make([]int32, n+1),
		dur: make([]time.Duration, n), bl: make([]time.Duration, n), host: make([]int32, n),
	}
	valid := func(i, dep int) bool { return dep >= 0 && dep < n && dep != i }
	for i := range p.Steps {
		if !instant[i] {
			d.dur[i] = max(dur[i], 0)
		}
		for _, dep := range p.Steps[i].Deps {
			if valid(i, dep) {
				d.succOff[dep+1]++
				d.indeg[i]++
			}
		}
	}
	for i := range n {
		d.succOff[i+1] += d.succOff[i]
	}
	d.succ = make([]int32, d.succOff[n])
	fill := make([]int32, n)
	copy(fill, d.succOff[:n])
	for i := range p.Steps {
		for _, dep := range p.Steps[i].Deps {
			if valid(i, dep) {
				d.succ[fill[dep]] = int32(i)
				fill[dep]++
			}
		}
	}

	// Topological order (Kahn), then bottom levels in reverse.
	left := make([]int32, n)
	copy(left, d.indeg)
	d.topo = make([]int32, 0, n)
	for v := range n {
		if left[v] == 0 {
			d.topo = append(d.topo, int32(v))
		}
	}
	for i := 0; i < len(d.topo); i++ {
		for _, w := range d.succOf(d.topo[i]) {
			if left[w]--; left[w] == 0 {
				d.topo = append(d.topo, w)
			}
		}
	}
	for i := len(d.topo) - 1; i >= 0; i-- {
		v := d.topo[i]
		var m time.Duration
		for _, w := range d.succOf(v) {
			m = max(m, d.bl[w])
		}
		d.bl[v] = d.dur[v] + m
	}

	hostIdx := map[string]int32{}
	for i := range p.Steps {
		d.host[i] = -1
		st := &p.Steps[i]
		if (st.Kind != StepGuest && st.Kind != StepGuestStart) || st.HostID == "" || instant[i] {
			continue
		}
		k := st.Target + "/" + st.HostID
		h, ok := hostIdx[k]
		if !ok {
			h = int32(len(d.hostKeys))
			hostIdx[k] = h
			d.hostKeys = append(d.hostKeys, k)
		}
		d.host[i] = h
	}
	nh := len(d.hostKeys)
	d.hostQ = make([]*heapOf[int32], nh)
	for h := range d.hostQ {
		d.hostQ[h] = &heapOf[int32]{less: d.prio}
	}
	d.hostRun = make([]int, nh)
	d.hostVer = make([]uint32, nh)
	d.hostWork = make([]time.Duration, nh)
	d.global = &heapOf[dcand]{less: func(x, y dcand) bool {
		return x.key > y.key || (x.key == y.key && x.v < y.v)
	}}
	return d
}

func (d *dispatcher) succOf(v int32) []int32 { return d.succ[d.succOff[v]:d.succOff[v+1]] }

func (d *dispatcher) prio(x, y int32) bool {
	a, b := d.bl, d.bl
	if d.rank != nil {
		a, b = d.rank, d.rank
	}
	return a[x] > b[y] || (a[x] == b[y] && x < y)
}

// key is v's priority in the global queue (higher first).
func (d *dispatcher) key(v int32) time.Duration {
	if d.rank != nil {
		return d.rank[v]
	}
	return d.bl[v]
}

// start queues the steps without dependencies; onInstant sees every
// instant step as it completes (now and later).
func (d *dispatcher) start(onInstant func(v int32)) {
	for v := d.n - 1; v >= 0; v-- {
		if d.indeg[v] == 0 {
			d.work = append(d.work, int32(v))
		}
	}
	d.release(onInstant)
}

// offer puts host h's best queued step up for a slot if the host has one
// free, replacing any earlier offer of h (by version).
func (d *dispatcher) offer(h int32) {
	if d.hostRun[h] >= d.perHost || d.hostQ[h].len() == 0 {
		return
	}
	d.hostVer[h]++
	top := d.hostQ[h].top()
	key := d.key(top)
	if d.perHost > 0 && d.rank == nil {
		rest := d.bl[top] - d.dur[top]
		key = max(key, rest+ceilDiv(d.hostWork[h], d.perHost))
	}
	d.global.push(dcand{v: top, host: h, ver: d.hostVer[h], key: key})
}

// release queues the steps whose dependencies are all done, completing
// instant ones (and releasing their successors) on the way.
func (d *dispatcher) release(onInstant func(v int32)) {
	for len(d.work) > 0 {
		v := d.work[len(d.work)-1]
		d.work = d.work[:len(d.work)-1]
		switch h := d.host[v]; {
		case d.instant[v]:
			if onInstant != nil {
				onInstant(v)
			}
			d.releaseSuccessors(v)
		case h >= 0:
			d.hostQ[h].push(v)
			d.hostWork[h] += d.dur[v]
			d.offer(h)
		default:
			d.global.push(dcand{v: v, host: -1, key: d.key(v)})
		}
	}
}

func (d *dispatcher) releaseSuccessors(v int32) {
	for _, w := range d.succOf(v) {
		if d.indeg[w]--; d.indeg[w] == 0 {
			d.work = append(d.work, w)
		}
	}
}

// next returns the ready step to start now, if any, and counts it against
// its host's cap.
func (d *dispatcher) next() (int32, bool) {
	for d.global.len() > 0 {
		c := d.global.pop()
		if c.host < 0 {
			return c.v, true
		}
		if c.ver != d.hostVer[c.host] {
			continue // superseded by a later offer of the same host
		}
		v := d.hostQ[c.host].pop()
		d.hostRun[c.host]++
		d.offer(c.host)
		return v, true
	}
	return 0, false
}

// done records that step v (handed out by next) ended: it frees its host
// slot and marks its successors' dependency done. Call release after a
// batch of done calls, so that steps ending together compete by priority.
func (d *dispatcher) done(v int32) {
	if h := d.host[v]; h >= 0 {
		d.hostRun[h]--
		d.hostWork[h] -= d.dur[v]
		d.offer(h)
	}
	d.releaseSuccessors(v)
}
