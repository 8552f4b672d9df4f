// Package fake is an in-process provider.Provider over a simulated fleet of
// hosts and guests, for the executor's unit tests, its benchmarks and the
// demo. It passes the conformance suite (internal/provider/providertest).
//
// Guests change state on timers of the time package: a guest asked to shut
// down turns off GuestSpec.ShutdownDelay later, a power off or a suspend
// takes PowerOffDelay or SuspendDelay. Inside a testing/synctest bubble those
// timers run on the bubble's fake clock, so a test can assert a timeline
// ("PowerOffGuest called at exactly t=120s") without sleeping. An idle fleet
// costs no goroutine: a guest in transition holds one timer, a caller
// waiting for a state holds one channel.
//
// Faults are injected with FailNext (the next call of an operation fails with
// a given error), SetUnreachable (every call fails as unreachable) and Hang
// (calls of an operation block until their context ends). Every call is
// counted (Calls) and logged (Ops) with its time and result, and OnOp lets a
// test look at the world at the moment a call arrives. PeakInFlight reports
// how many guest calls ran at once, in total and per host.
package fake

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sundown-ups/sundown/internal/provider"
)

// Operation names, as in provider.Provider and provider.Error.Op.
const (
	OpInventory        = "Inventory"
	OpGuest            = "Guest"
	OpShutdownGuest    = "ShutdownGuest"
	OpSuspendGuest     = "SuspendGuest"
	OpPowerOffGuest    = "PowerOffGuest"
	OpPowerOnGuest     = "PowerOnGuest"
	OpWaitGuest        = "WaitGuest"
	OpEnterMaintenance = "EnterMaintenance"
	OpExitMaintenance  = "ExitMaintenance"
	OpShutdownHost     = "ShutdownHost"
)

// HostSpec describes one simulated host.
type HostSpec struct {
	ID, Name string
	// Power is the initial state; "" means on.
	Power       provider.PowerState
	Maintenance bool
	UUID        string
	// MaintenanceDelay is how long EnterMaintenance takes.
	MaintenanceDelay time.Duration
	// ShutdownDelay is how long the host takes to be off after ShutdownHost
	// accepted the request (its guests go off with it).
	ShutdownDelay time.Duration
}

// GuestSpec describes one simulated guest.
type GuestSpec struct {
	ID, Name, HostID string
	// Power is the initial state; "" means on.
	Power provider.PowerState
	// Tools is the guest agent's state while the guest is on; "" means
	// running. An off guest always reports not-running (or not-installed).
	Tools provider.ToolsState
	UUID  string
	Tags  map[string]string
	// ShutdownDelay is the time the guest OS takes to reach off after
	// ShutdownGuest; 0 means at once.
	ShutdownDelay time.Duration
	// IgnoreShutdown: ShutdownGuest is accepted and nothing happens.
	IgnoreShutdown bool
	// SuspendDelay and PowerOffDelay are how long SuspendGuest and
	// PowerOffGuest take; 0 means at once.
	SuspendDelay, PowerOffDelay time.Duration
}

// Fleet is what New simulates.
type Fleet struct {
	Hosts  []HostSpec
	Guests []GuestSpec
	// Caps are the declared capabilities; nil means provider.AllCaps. A
	// missing capability makes its operations answer Unsupported.
	Caps *provider.Caps
	// Latency is added to every call before it takes effect (a network
	// round trip); 0 means none.
	Latency time.Duration
	// MaintenanceWithGuests lets EnterMaintenance succeed while guests of
	// the host are on; by default it is refused (class Permanent), as
	// vCenter without DRS does.
	MaintenanceWithGuests bool
}

// Op is one call the provider received.
type Op struct {
	// At is when the call arrived.
	At time.Time
	// Op is the method name (OpShutdownGuest, …); ID the guest or host ID,
	// "" for Inventory.
	Op, ID string
	// Force is ShutdownHost's argument.
	Force bool
	// Err is the call's result once it returned (nil before, or on
	// success).
	Err error
}

type transition struct {
	op    string // OpShutdownGuest, OpSuspendGuest, OpPowerOffGuest
	to    provider.PowerState
	timer *time.Timer
}

type guest struct {
	spec    GuestSpec
	power   provider.PowerState
	pending *transition
	changed chan struct{} // closed on the next change; nil when nobody waits
}

type host struct {
	spec     HostSpec
	power    provider.PowerState
	maint    bool
	entering *time.Timer // maintenance in progress
	stopping *time.Timer // shutdown accepted
	changed  chan struct{}
	guests   []*guest
}

type opKey struct{ op, id string }

// Provider is the simulated backend. It is safe for concurrent use.
type Provider struct {
	caps    provider.Caps
	latency time.Duration
	maintOK bool

	mu       sync.Mutex
	guests   map[string]*guest
	hosts    map[string]*host
	guestIDs []string // sorted
	hostIDs  []string // sorted
	closed   bool
	closedCh chan struct{}

	unreachable bool
	reachCh     chan struct{} // closed and replaced when reachability changes
	fail        map[opKey][]error
	hang        map[string]bool
	calls       map[opKey]int
	ops         []Op
	onOp        func(Op)

	inflight, peak       int
	hostInflight, hostPk map[string]int
}

// New builds a provider over fleet. Guest and host IDs must be unique and
// not empty; New panics otherwise (a fleet is written by a test).
func New(fleet Fleet) *Provider {
	p := &Provider{
		caps:         provider.AllCaps,
		latency:      fleet.Latency,
		maintOK:      fleet.MaintenanceWithGuests,
		guests:       make(map[string]*guest, len(fleet.Guests)),
		hosts:        make(map[string]*host, len(fleet.Hosts)),
		closedCh:     make(chan struct{}),
		reachCh:      make(chan struct{}),
		fail:         map[opKey][]error{},
		hang:         map[string]bool{},
		calls:        map[opKey]int{},
		hostInflight: map[string]int{},
		hostPk:       map[string]int{},
	}
	if fleet.Caps != nil {
		p.caps = *fleet.Caps
	}
	for _, hs := range fleet.Hosts {
		if hs.ID == "" || p.hosts[hs.ID] != nil {
			panic(fmt.Sprintf("fake: host ID %q empty or duplicated", hs.ID))
		}
		h := &host{spec: hs, power: hs.Power, maint: hs.Maintenance}
		if h.power == "" {
			h.power = provider.PowerOn
		}
		h.spec.UUID = strings.ToLower(hs.UUID)
		p.hosts[hs.ID] = h
		p.hostIDs = append(p.hostIDs, hs.ID)
	}
	for _, gs := range fleet.Guests {
		if gs.ID == "" || p.guests[gs.ID] != nil {
			panic(fmt.Sprintf("fake: guest ID %q empty or duplicated", gs.ID))
		}
		g := &guest{spec: gs, power: gs.Power}
		if g.power == "" {
			g.power = provider.PowerOn
		}
		if g.spec.Tools == "" {
			g.spec.Tools = provider.ToolsRunning
		}
		g.spec.UUID = strings.ToLower(gs.UUID)
		g.spec.Tags = cloneTags(gs.Tags)
		if h := p.hosts[gs.HostID]; h != nil {
			h.guests = append(h.guests, g)
		}
		p.guests[gs.ID] = g
		p.guestIDs = append(p.guestIDs, gs.ID)
	}
	slices.Sort(p.hostIDs)
	slices.Sort(p.guestIDs)
	return p
}

func cloneTags(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Capabilities implements provider.Capable.
func (p *Provider) Capabilities() provider.Caps { return p.caps }

// FailNext makes the next call of op on id fail with err (id "" matches any
// ID). Calls queue up: FailNext twice fails the next two calls. A
// *provider.Error is returned as is, with Op and Target filled in when
// empty; any other error is wrapped in a Permanent *provider.Error.
func (p *Provider) FailNext(op, id string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := opKey{op, id}
	p.fail[k] = append(p.fail[k], err)
}

// SetUnreachable makes every call (but Close) fail with class Unreachable
// while on is true. Callers blocked in WaitGuest get the error at once.
func (p *Provider) SetUnreachable(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.unreachable != on {
		p.unreachable = on
		close(p.reachCh)
		p.reachCh = make(chan struct{})
	}
}

// Hang makes calls of op block until their context ends (they then fail
// with class Transient wrapping the context's error), while on is true.
func (p *Provider) Hang(op string, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hang[op] = on
}

// OnOp installs fn, called synchronously as each call arrives, after it is
// counted and before it takes effect; nil removes it. fn must not call the
// provider's fault knobs while another call waits on it.
func (p *Provider) OnOp(fn func(Op)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onOp = fn
}

// Calls returns how many calls of op on id arrived (failed ones included).
func (p *Provider) Calls(op, id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[opKey{op, id}]
}

// Ops returns a copy of the log of every call, in arrival order.
func (p *Provider) Ops() []Op {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ops)
}

// PeakInFlight returns the largest number of guest calls (Guest,
// ShutdownGuest, SuspendGuest, PowerOffGuest, PowerOnGuest, WaitGuest) that
// were in progress at once, in total and per host ID.
func (p *Provider) PeakInFlight() (total int, byHost map[string]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	byHost = make(map[string]int, len(p.hostPk))
	for k, v := range p.hostPk {
		byHost[k] = v
	}
	return p.peak, byHost
}

// call is one call in progress.
type call struct {
	p      *Provider
	op, id string
	idx    int    // in p.ops
	host   string // guest's host, for the in-flight counts
	guest  bool
}

// begin logs and counts a call, then applies the injected faults and the
// latency. A non-nil error ends the call.
func (p *Provider) begin(ctx context.Context, op, id string, force bool) (*call, error) {
	p.mu.Lock()
	c := &call{p: p, op: op, id: id, idx: len(p.ops)}
	o := Op{At: time.Now(), Op: op, ID: id, Force: force}
	p.ops = append(p.ops, o)
	p.calls[opKey{op, id}]++
	if g := p.guests[id]; g != nil && isGuestOp(op) {
		c.guest, c.host = true, g.spec.HostID
		p.inflight++
		p.peak = max(p.peak, p.inflight)
		if c.host != "" {
			p.hostInflight[c.host]++
			p.hostPk[c.host] = max(p.hostPk[c.host], p.hostInflight[c.host])
		}
	}
	hook := p.onOp
	p.mu.Unlock()
	if hook != nil {
		hook(o)
	}

	p.mu.Lock()
	closed, hang := p.closed, p.hang[op]
	var injected error
	for _, k := range []opKey{{op, id}, {op, ""}} {
		if q := p.fail[k]; len(q) > 0 {
			injected = q[0]
			if len(q) == 1 {
				delete(p.fail, k)
			} else {
				p.fail[k] = q[1:]
			}
			break
		}
	}
	unreachable := p.unreachable
	p.mu.Unlock()

	switch {
	case closed:
		return c, c.end(provider.NewError(op, id, provider.Permanent, "provider closed"))
	case hang:
		select {
		case <-ctx.Done():
			return c, c.end(ctxErr(op, id, ctx))
		case <-p.closedCh:
			return c, c.end(provider.NewError(op, id, provider.Permanent, "provider closed"))
		}
	case injected != nil:
		return c, c.end(asError(op, id, injected))
	case unreachable:
		return c, c.end(provider.NewError(op, id, provider.Unreachable, "backend unreachable (injected)"))
	case ctx.Err() != nil:
		return c, c.end(ctxErr(op, id, ctx))
	}
	if p.latency > 0 {
		t := time.NewTimer(p.latency)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return c, c.end(ctxErr(op, id, ctx))
		}
	}
	return c, nil
}

func isGuestOp(op string) bool {
	switch op {
	case OpGuest, OpShutdownGuest, OpSuspendGuest, OpPowerOffGuest, OpPowerOnGuest, OpWaitGuest:
		return true
	}
	return false
}

// end records the call's result and returns err.
func (c *call) end(err error) error {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ops[c.idx].Err = err
	if c.guest {
		p.inflight--
		if c.host != "" {
			p.hostInflight[c.host]--
		}
	}
	return err
}

func asError(op, id string, err error) error {
	var pe *provider.Error
	if errors.As(err, &pe) {
		e := *pe
		if e.Op == "" {
			e.Op = op
		}
		if e.Target == "" {
			e.Target = id
		}
		if e.Err == nil {
			e.Err = errors.New("injected failure")
		}
		return &e
	}
	return &provider.Error{Op: op, Target: id, Class: provider.Permanent, Err: err}
}

func ctxErr(op, id string, ctx context.Context) error {
	return &provider.Error{Op: op, Target: id, Class: provider.Transient, Err: ctx.Err()}
}

func notFound(op, id string) error {
	return provider.NewError(op, id, provider.NotFound, "no such object")
}

// wake tells the guest's waiters that its state changed. p.mu is held.
func (g *guest) wake() {
	if g.changed != nil {
		close(g.changed)
		g.changed = nil
	}
}

func (g *guest) waitChan() chan struct{} {
	if g.changed == nil {
		g.changed = make(chan struct{})
	}
	return g.changed
}

func (h *host) wake() {
	if h.changed != nil {
		close(h.changed)
		h.changed = nil
	}
}

func (h *host) waitChan() chan struct{} {
	if h.changed == nil {
		h.changed = make(chan struct{})
	}
	return h.changed
}

// setPower moves g to power, cancelling any transition. p.mu is held.
func (g *guest) setPower(power provider.PowerState) {
	if g.pending != nil {
		g.pending.timer.Stop()
		g.pending = nil
	}
	g.power = power
	g.wake()
}

func (g *guest) tools() provider.ToolsState {
	if g.power == provider.PowerOn {
		return g.spec.Tools
	}
	if g.spec.Tools == provider.ToolsNotInstalled {
		return provider.ToolsNotInstalled
	}
	return provider.ToolsNotRunning
}

func (g *guest) view() provider.Guest {
	return provider.Guest{
		ID: g.spec.ID, Name: g.spec.Name, HostID: g.spec.HostID, Power: g.power, Tools: g.tools(),
		UUID: g.spec.UUID, Tags: cloneTags(g.spec.Tags),
	}
}

// start begins a transition of g to `to` after d (at once when d ≤ 0),
// replacing any pending one. p.mu is held.
func (p *Provider) start(g *guest, op string, to provider.PowerState, d time.Duration) {
	if d <= 0 {
		g.setPower(to)
		return
	}
	if g.pending != nil {
		g.pending.timer.Stop()
	}
	tr := &transition{op: op, to: to}
	tr.timer = time.AfterFunc(d, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if g.pending == tr && !p.closed {
			g.pending = nil
			g.setPower(tr.to)
		}
	})
	g.pending = tr
}

// waitGuest waits until ok(g.power), ctx ends or the provider closes. With
// watchReach, a change to unreachable ends the wait too.
func (p *Provider) waitGuest(ctx context.Context, op, id string, ok func(provider.PowerState) bool, watchReach bool) error {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return provider.NewError(op, id, provider.Permanent, "provider closed")
		}
		if watchReach && p.unreachable {
			p.mu.Unlock()
			return provider.NewError(op, id, provider.Unreachable, "backend unreachable (injected)")
		}
		g := p.guests[id]
		if g == nil {
			p.mu.Unlock()
			return notFound(op, id)
		}
		if ok(g.power) {
			p.mu.Unlock()
			return nil
		}
		ch, reach := g.waitChan(), p.reachCh
		p.mu.Unlock()
		select {
		case <-ch:
		case <-reach:
		case <-p.closedCh:
		case <-ctx.Done():
			return ctxErr(op, id, ctx)
		}
	}
}

// Inventory implements provider.Provider.
func (p *Provider) Inventory(ctx context.Context) (provider.Inventory, error) {
	c, err := p.begin(ctx, OpInventory, "", false)
	if err != nil {
		return provider.Inventory{}, err
	}
	p.mu.Lock()
	inv := provider.Inventory{Hosts: make([]provider.Host, 0, len(p.hostIDs)), Guests: make([]provider.Guest, 0, len(p.guestIDs))}
	for _, id := range p.hostIDs {
		h := p.hosts[id]
		inv.Hosts = append(inv.Hosts, provider.Host{ID: id, Name: h.spec.Name, Power: h.power, Maintenance: h.maint, UUID: h.spec.UUID})
	}
	for _, id := range p.guestIDs {
		inv.Guests = append(inv.Guests, p.guests[id].view())
	}
	p.mu.Unlock()
	return inv, c.end(nil)
}

// Guest implements provider.Provider.
func (p *Provider) Guest(ctx context.Context, id string) (provider.Guest, error) {
	c, err := p.begin(ctx, OpGuest, id, false)
	if err != nil {
		return provider.Guest{}, err
	}
	p.mu.Lock()
	g := p.guests[id]
	var v provider.Guest
	if g != nil {
		v = g.view()
	}
	p.mu.Unlock()
	if g == nil {
		return provider.Guest{}, c.end(notFound(OpGuest, id))
	}
	return v, c.end(nil)
}

// ShutdownGuest implements provider.Provider: an on guest with tools running
// turns off ShutdownDelay later (never, with IgnoreShutdown).
func (p *Provider) ShutdownGuest(ctx context.Context, id string) error {
	c, err := p.begin(ctx, OpShutdownGuest, id, false)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.guests[id]
	switch {
	case g == nil:
		return c.endLocked(notFound(OpShutdownGuest, id))
	case g.power == provider.PowerOff:
		return c.endLocked(nil)
	case g.power == provider.PowerSuspended:
		return c.endLocked(provider.NewError(OpShutdownGuest, id, provider.Unsupported, "guest is suspended"))
	case g.spec.Tools != provider.ToolsRunning:
		return c.endLocked(provider.NewError(OpShutdownGuest, id, provider.Unsupported, "guest tools are not running"))
	case g.pending != nil, g.spec.IgnoreShutdown:
		// Already going down, or a guest OS that ignores the request.
		return c.endLocked(nil)
	}
	p.start(g, OpShutdownGuest, provider.PowerOff, g.spec.ShutdownDelay)
	return c.endLocked(nil)
}

// endLocked is end for callers that hold p.mu.
func (c *call) endLocked(err error) error {
	p := c.p
	p.ops[c.idx].Err = err
	if c.guest {
		p.inflight--
		if c.host != "" {
			p.hostInflight[c.host]--
		}
	}
	return err
}

// SuspendGuest implements provider.Provider: SuspendDelay, then suspended.
func (p *Provider) SuspendGuest(ctx context.Context, id string) error {
	c, err := p.begin(ctx, OpSuspendGuest, id, false)
	if err != nil {
		return err
	}
	if !p.caps.Suspend {
		return c.end(provider.NewError(OpSuspendGuest, id, provider.Unsupported, "backend cannot suspend"))
	}
	p.mu.Lock()
	g := p.guests[id]
	if g == nil {
		p.mu.Unlock()
		return c.end(notFound(OpSuspendGuest, id))
	}
	if g.power == provider.PowerOn && (g.pending == nil || g.pending.op == OpShutdownGuest) {
		p.start(g, OpSuspendGuest, provider.PowerSuspended, g.spec.SuspendDelay)
	}
	p.mu.Unlock()
	return c.end(p.waitGuest(ctx, OpSuspendGuest, id, func(s provider.PowerState) bool {
		return s == provider.PowerSuspended || s == provider.PowerOff
	}, false))
}

// PowerOffGuest implements provider.Provider: PowerOffDelay, then off.
func (p *Provider) PowerOffGuest(ctx context.Context, id string) error {
	c, err := p.begin(ctx, OpPowerOffGuest, id, false)
	if err != nil {
		return err
	}
	p.mu.Lock()
	g := p.guests[id]
	if g == nil {
		p.mu.Unlock()
		return c.end(notFound(OpPowerOffGuest, id))
	}
	if g.power != provider.PowerOff && (g.pending == nil || g.pending.op != OpPowerOffGuest) {
		p.start(g, OpPowerOffGuest, provider.PowerOff, g.spec.PowerOffDelay)
	}
	p.mu.Unlock()
	return c.end(p.waitGuest(ctx, OpPowerOffGuest, id, func(s provider.PowerState) bool { return s == provider.PowerOff }, false))
}

// PowerOnGuest implements provider.Provider: on at once (a pending
// transition is cancelled).
func (p *Provider) PowerOnGuest(ctx context.Context, id string) error {
	c, err := p.begin(ctx, OpPowerOnGuest, id, false)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.guests[id]
	if g == nil {
		return c.endLocked(notFound(OpPowerOnGuest, id))
	}
	if h := p.hosts[g.spec.HostID]; h != nil && h.power == provider.PowerOff {
		return c.endLocked(provider.NewError(OpPowerOnGuest, id, provider.Unreachable, "its host "+h.spec.Name+" is off"))
	}
	g.setPower(provider.PowerOn)
	return c.endLocked(nil)
}

// BootHost powers a host that is off on after delay, as Wake-on-LAN, IPMI
// or the BIOS's "restore on AC power" would (the test's side of a wake).
// Its guests stay off. It reports whether the host was off.
func (p *Provider) BootHost(hostID string, delay time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.hosts[hostID]
	if h == nil || h.power != provider.PowerOff {
		return false
	}
	on := func() {
		if h.power == provider.PowerOff && !p.closed {
			h.power = provider.PowerOn
			h.wake()
		}
	}
	if delay <= 0 {
		on()
		return true
	}
	time.AfterFunc(delay, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		on()
	})
	return true
}

// WaitGuest implements provider.Provider.
func (p *Provider) WaitGuest(ctx context.Context, id string, want provider.PowerState) error {
	c, err := p.begin(ctx, OpWaitGuest, id, false)
	if err != nil {
		return err
	}
	switch want {
	case provider.PowerOn, provider.PowerOff, provider.PowerSuspended:
	default:
		return c.end(provider.NewError(OpWaitGuest, id, provider.Permanent, fmt.Sprintf("cannot wait for power state %q", want)))
	}
	return c.end(p.waitGuest(ctx, OpWaitGuest, id, func(s provider.PowerState) bool { return s == want }, true))
}

// EnterMaintenance implements provider.Provider: refused while guests of the
// host are on (unless Fleet.MaintenanceWithGuests), else in maintenance
// MaintenanceDelay later.
func (p *Provider) EnterMaintenance(ctx context.Context, hostID string, opts provider.MaintenanceOptions) error {
	const op = OpEnterMaintenance
	c, err := p.begin(ctx, op, hostID, false)
	if err != nil {
		return err
	}
	if !p.caps.Maintenance {
		return c.end(provider.NewError(op, hostID, provider.Unsupported, "backend has no maintenance mode"))
	}
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	p.mu.Lock()
	h := p.hosts[hostID]
	switch {
	case h == nil:
		p.mu.Unlock()
		return c.end(notFound(op, hostID))
	case h.power != provider.PowerOn:
		p.mu.Unlock()
		return c.end(provider.NewError(op, hostID, provider.Unreachable, "host is not responding (off)"))
	case h.maint:
		p.mu.Unlock()
		return c.end(nil)
	}
	if !p.maintOK {
		n := 0
		for _, g := range h.guests {
			if g.power == provider.PowerOn {
				n++
			}
		}
		if n > 0 {
			p.mu.Unlock()
			return c.end(provider.NewError(op, hostID, provider.Permanent, fmt.Sprintf("%d guests still running on the host", n)))
		}
	}
	if h.spec.MaintenanceDelay <= 0 {
		h.maint = true
		h.wake()
		p.mu.Unlock()
		return c.end(nil)
	}
	if h.entering == nil {
		h.entering = time.AfterFunc(h.spec.MaintenanceDelay, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if h.entering != nil && !p.closed {
				h.entering = nil
				h.maint = true
				h.wake()
			}
		})
	}
	p.mu.Unlock()
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return c.end(provider.NewError(op, hostID, provider.Permanent, "provider closed"))
		}
		if h.maint {
			p.mu.Unlock()
			return c.end(nil)
		}
		ch := h.waitChan()
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.closedCh:
		case <-ctx.Done():
			return c.end(ctxErr(op, hostID, ctx))
		}
	}
}

// ExitMaintenance implements provider.Provider.
func (p *Provider) ExitMaintenance(ctx context.Context, hostID string) error {
	const op = OpExitMaintenance
	c, err := p.begin(ctx, op, hostID, false)
	if err != nil {
		return err
	}
	if !p.caps.Maintenance {
		return c.end(provider.NewError(op, hostID, provider.Unsupported, "backend has no maintenance mode"))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.hosts[hostID]
	if h == nil {
		return c.endLocked(notFound(op, hostID))
	}
	if h.entering != nil {
		h.entering.Stop()
		h.entering = nil
	}
	h.maint = false
	h.wake()
	return c.endLocked(nil)
}

// ShutdownHost implements provider.Provider: without force the host must be
// in maintenance mode (else Permanent); the host and its guests are off
// ShutdownDelay after the request.
func (p *Provider) ShutdownHost(ctx context.Context, hostID string, force bool) error {
	const op = OpShutdownHost
	c, err := p.begin(ctx, op, hostID, force)
	if err != nil {
		return err
	}
	if !p.caps.HostShutdown {
		return c.end(provider.NewError(op, hostID, provider.Unsupported, "backend cannot shut hosts down"))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.hosts[hostID]
	switch {
	case h == nil:
		return c.endLocked(notFound(op, hostID))
	case h.power == provider.PowerOff, h.stopping != nil:
		return c.endLocked(nil)
	case !force && !h.maint:
		return c.endLocked(provider.NewError(op, hostID, provider.Permanent, "host is not in maintenance mode"))
	}
	off := func() {
		h.stopping = nil
		h.power = provider.PowerOff
		for _, g := range h.guests {
			if g.power != provider.PowerOff {
				g.setPower(provider.PowerOff)
			}
		}
		h.wake()
	}
	if h.spec.ShutdownDelay <= 0 {
		off()
		return c.endLocked(nil)
	}
	h.stopping = time.AfterFunc(h.spec.ShutdownDelay, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if h.stopping != nil && !p.closed {
			off()
		}
	})
	return c.endLocked(nil)
}

// Close implements provider.Provider: it stops every timer and fails every
// waiting and later call (class Permanent). Idempotent.
func (p *Provider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	close(p.closedCh)
	for _, g := range p.guests {
		if g.pending != nil {
			g.pending.timer.Stop()
			g.pending = nil
		}
	}
	for _, h := range p.hosts {
		for _, t := range []*time.Timer{h.entering, h.stopping} {
			if t != nil {
				t.Stop()
			}
		}
		h.entering, h.stopping = nil, nil
	}
	return nil
}

var (
	_ provider.Provider = (*Provider)(nil)
	_ provider.Capable  = (*Provider)(nil)
)
