package plan

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/fake"
)

func mustExecute(t *testing.T, ctx context.Context, p *Plan, targets Targets, opts ExecOptions) *Report {
	t.Helper()
	rep, err := Execute(ctx, p, targets, opts)
	if err != nil {
		t.Fatalf("Execute: %v", err)
	}
	return rep
}

// A guest that ignores shutdown, chain shutdown 120s → poweroff 30s ⇒
// PowerOffGuest at exactly t=120s; a cooperative guest is done when it is
// off, and never powered off.
func TestExecEscalatesAtDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := fake.New(fake.Fleet{Guests: []fake.GuestSpec{
			{ID: "vm-1", Name: "deaf", IgnoreShutdown: true, PowerOffDelay: 4 * s},
			{ID: "vm-2", Name: "ok", ShutdownDelay: 40 * s},
		}})
		defer f.Close()
		pl := fleetPlan(t, f, nil)
		t0 := time.Now()
		rep := mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{})

		po := opsOf(f, fake.OpPowerOffGuest, "vm-1")
		if len(po) != 1 || po[0].At.Sub(t0) != 120*s {
			t.Fatalf("PowerOffGuest(vm-1) calls %+v, want one at t=120s", po)
		}
		if sg := opsOf(f, fake.OpShutdownGuest, "vm-1"); len(sg) != 1 || !sg[0].At.Equal(t0) {
			t.Errorf("ShutdownGuest(vm-1) calls %+v, want one at t=0", sg)
		}
		r := result(t, rep, "guest:vc/vm-1")
		if r.Outcome != OutcomeEscalated || r.FinalAction != PowerOff || r.End.Sub(t0) != 124*s {
			t.Errorf("vm-1: %s via %s ending at %v, want escalated via poweroff at 124s", r.Outcome, r.FinalAction, r.End.Sub(t0))
		}
		if !strings.Contains(r.Err, "not off within 120s") {
			t.Errorf("vm-1 error %q does not say why it escalated", r.Err)
		}
		r = result(t, rep, "guest:vc/vm-2")
		if r.Outcome != OutcomeDone || r.FinalAction != Shutdown || r.End.Sub(t0) != 40*s || r.Err != "" {
			t.Errorf("vm-2: %+v, want done via shutdown at 40s", r)
		}
		if n := f.Calls(fake.OpPowerOffGuest, "vm-2"); n != 0 {
			t.Errorf("vm-2 powered off %d times", n)
		}
		if len(rep.Failed()) != 0 || rep.Stopped || rep.Resumed {
			t.Errorf("report: %+v", rep)
		}
	})
}

// Unsupported (tools not running) escalates at t=0; a permission error
// escalates at once, is not retried, and the report names the privilege.
func TestExecEscalatesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := fake.New(fake.Fleet{Guests: []fake.GuestSpec{
			{ID: "vm-1", Name: "notools", Tools: provider.ToolsNotRunning, PowerOffDelay: 2 * s},
			{ID: "vm-2", Name: "denied-shutdown", PowerOffDelay: 2 * s},
			{ID: "vm-3", Name: "denied-all", Tools: provider.ToolsNotRunning},
		}})
		defer f.Close()
		const guestPriv, offPriv = "VirtualMachine.Interact.GuestControl", "VirtualMachine.Interact.PowerOff"
		f.FailNext(fake.OpShutdownGuest, "vm-2", &provider.Error{Class: provider.Permission, Privilege: guestPriv})
		f.FailNext(fake.OpPowerOffGuest, "vm-3", &provider.Error{Class: provider.Permission, Privilege: offPriv})
		pl := fleetPlan(t, f, nil)
		t0 := time.Now()
		rep := mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{})

		for _, id := range []string{"vm-1", "vm-2", "vm-3"} {
			if n := f.Calls(fake.OpShutdownGuest, id); n != 1 {
				t.Errorf("ShutdownGuest(%s) called %d times, want 1", id, n)
			}
			po := opsOf(f, fake.OpPowerOffGuest, id)
			if len(po) != 1 || !po[0].At.Equal(t0) {
				t.Errorf("PowerOffGuest(%s): %+v, want one call at t=0", id, po)
			}
		}
		r1 := result(t, rep, "guest:vc/vm-1")
		if r1.Outcome != OutcomeEscalated || r1.FinalAction != PowerOff || r1.End.Sub(t0) != 2*s || !strings.Contains(r1.Err, "unsupported") {
			t.Errorf("vm-1: %+v", r1)
		}
		r2 := result(t, rep, "guest:vc/vm-2")
		if r2.Outcome != OutcomeEscalated || !strings.Contains(r2.Err, guestPriv) {
			t.Errorf("vm-2: %+v, want escalated with an error naming %s", r2, guestPriv)
		}
		failed := rep.Failed()
		if len(failed) != 1 || failed[0].Key != "guest:vc/vm-3" || !strings.Contains(failed[0].Err, offPriv) || !failed[0].End.Equal(t0) {
			t.Fatalf("failed steps %+v, want vm-3 at t=0 naming %s", failed, offPriv)
		}
		if len(failed[0].Errors) != 2 || !strings.HasPrefix(failed[0].Errors[0], "shutdown: ") || !strings.HasPrefix(failed[0].Errors[1], "poweroff: ") {
			t.Errorf("vm-3 error trail %q", failed[0].Errors)
		}
	})
}

// Transient and unreachable errors are retried with backoff (1 s, 2 s, …).
func TestExecRetriesTransient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := fake.New(fake.Fleet{Guests: []fake.GuestSpec{
			{ID: "vm-1", ShutdownDelay: 10 * s},
			{ID: "vm-2", ShutdownDelay: 5 * s},
		}})
		defer f.Close()
		f.FailNext(fake.OpShutdownGuest, "vm-1", &provider.Error{Class: provider.Transient})
		f.FailNext(fake.OpShutdownGuest, "vm-1", &provider.Error{Class: provider.Transient})
		f.FailNext(fake.OpWaitGuest, "vm-2", &provider.Error{Class: provider.Unreachable})
		pl := fleetPlan(t, f, nil)
		t0 := time.Now()
		rep := mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{})

		var at []time.Duration
		for _, o := range opsOf(f, fake.OpShutdownGuest, "vm-1") {
			at = append(at, o.At.Sub(t0))
		}
		if want := []time.Duration{0, 1 * s, 3 * s}; !slices.Equal(at, want) {
			t.Errorf("ShutdownGuest(vm-1) at %v, want %v", at, want)
		}
		if r := result(t, rep, "guest:vc/vm-1"); r.Outcome != OutcomeDone || r.End.Sub(t0) != 13*s {
			t.Errorf("vm-1: %s at %v, want done at 13s", r.Outcome, r.End.Sub(t0))
		}
		w := opsOf(f, fake.OpWaitGuest, "vm-2")
		if len(w) != 2 || w[1].At.Sub(t0) != 1*s {
			t.Errorf("WaitGuest(vm-2): %+v, want a retry at 1s", w)
		}
		if r := result(t, rep, "guest:vc/vm-2"); r.Outcome != OutcomeDone || r.End.Sub(t0) != 5*s {
			t.Errorf("vm-2: %s at %v, want done at 5s", r.Outcome, r.End.Sub(t0))
		}
		if f.Calls(fake.OpPowerOffGuest, "vm-1")+f.Calls(fake.OpPowerOffGuest, "vm-2") != 0 {
			t.Error("a retried guest was powered off")
		}
	})
}

// Retries never go past an action's deadline: with the provider
// unreachable throughout, chain shutdown 10s → poweroff 5s fails at t=15s
// and no call is made after it.
func TestExecRetryWithinDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := fake.New(fake.Fleet{Guests: []fake.GuestSpec{{ID: "vm-1"}}})
		defer f.Close()
		pl := fleetPlan(t, f, func(sp *Spec) { sp.DefaultChain = chain(Shutdown, 10*s, PowerOff, 5*s) })
		f.SetUnreachable(true)
		t0 := time.Now()
		rep := mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{})

		var guestAt, offAt []time.Duration
		for _, o := range f.Ops() {
			switch o.Op {
			case fake.OpGuest:
				guestAt = append(guestAt, o.At.Sub(t0))
			case fake.OpPowerOffGuest:
				offAt = append(offAt, o.At.Sub(t0))
			case fake.OpShutdownGuest:
				t.Errorf("ShutdownGuest called at %v after its window was used up", o.At.Sub(t0))
			}
		}
		if want := []time.Duration{0, 1 * s, 3 * s, 7 * s}; !slices.Equal(guestAt, want) {
			t.Errorf("Guest at %v, want %v", guestAt, want)
		}
		if want := []time.Duration{10 * s, 11 * s, 13 * s}; !slices.Equal(offAt, want) {
			t.Errorf("PowerOffGuest at %v, want %v", offAt, want)
		}
		r := result(t, rep, "guest:vc/vm-1")
		if r.Outcome != OutcomeFailed || r.End.Sub(t0) != 15*s || !strings.Contains(r.Err, "unreachable") {
			t.Errorf("vm-1: %+v, want failed at 15s with the unreachable error", r)
		}
	})
}

// A guest off when its step starts is "already-off" (even when the plan
// thought it on); a guest the provider no longer knows is gone: also
// "already-off". Neither gets a state-changing call.
func TestExecAlreadyOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := fake.New(fake.Fleet{Guests: []fake.GuestSpec{
			{ID: "vm-1", Power: provider.PowerOff},
			{ID: "vm-2"},
		}})
		defer f.Close()
		pl := fleetPlan(t, f, func(sp *Spec) {
			inv := &sp.Targets[0].Inventory
			inv.Guests = append(inv.Guests, provider.Guest{ID: "vm-3", Name: "gone", Power: provider.PowerOn, Tools: provider.ToolsRunning})
		})
		// vm-2 goes off between planning and running.
		if err := f.PowerOffGuest(t.Context(), "vm-2"); err != nil {
			t.Fatal(err)
		}
		before := len(f.Ops())
		rep := mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{})
		for _, o := range f.Ops()[before:] {
			if slices.Contains(stateChanging, o.Op) {
				t.Errorf("state-changing call %s(%s)", o.Op, o.ID)
			}
		}
		for id, note := range map[string]string{"vm-1": "already off", "vm-2": "already off", "vm-3": "gone: "} {
			r := result(t, rep, "guest:vc/"+id)
			if r.Outcome != OutcomeAlreadyOff || !strings.HasPrefix(r.Note, note) {
				t.Errorf("%s: %s (%q), want already-off (%q…)", id, r.Outcome, r.Note, note)
			}
		}
	})
}

// demoFleet is the plan tests' demo site (web → app → db → dc, hooks,
// sundown's VM on host-3) as a fake fleet with varied delays.
func demoFleet() (fake.Fleet, Spec) {
	spec := demoSpec()
	spec.History = nil
	n := 0
	f := fleetOf(spec.Targets[0].Inventory, func(g provider.Guest, gs *fake.GuestSpec) {
		n++
		gs.ShutdownDelay = time.Duration(5+(n*37)%90) * s
		gs.PowerOffDelay, gs.SuspendDelay = 2*s, 3*s
		if g.Name == "print" {
			gs.IgnoreShutdown = true
		}
		if g.Name == "lab" {
			gs.Tools = provider.ToolsNotRunning
		}
	})
	for i := range f.Hosts {
		f.Hosts[i].MaintenanceDelay, f.Hosts[i].ShutdownDelay = 4*s, 10*s
	}
	return f, spec
}

func runHooksOK(ctx context.Context, st Step) error {
	t := time.NewTimer(3 * s)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Steps start exactly when their last dependency ends (caps out of the way),
// whatever the dependency's outcome, and every guest and host ends off.
func TestExecOrderFollowsDeps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl, spec := demoFleet()
		f := fake.New(fl)
		defer f.Close()
		// The dc group's first guest fails outright: its dependents go on.
		f.FailNext(fake.OpShutdownGuest, "vm-401", &provider.Error{Class: provider.Permanent})
		f.FailNext(fake.OpPowerOffGuest, "vm-401", &provider.Error{Class: provider.Permanent})
		spec.Caps = Caps{Global: 100, PerHost: 100}
		pl := fleetPlan(t, f, func(sp *Spec) { *sp = spec })
		t0 := time.Now()
		rep := mustExecute(t, t.Context(), pl, Targets{"vcenter": f}, ExecOptions{Hooks: runHooksOK})
		checkDeps(t, pl, rep, t0, true)
		// vm-401 fails, so its host refuses maintenance mode; the host is
		// then shut down forced.
		var failed []string
		for _, r := range rep.Failed() {
			failed = append(failed, r.Key)
		}
		if want := []string{"guest:vcenter/vm-401", "host-maint:vcenter/host-1"}; !slices.Equal(failed, want) {
			t.Errorf("failed: %v, want %v", failed, want)
		}
		if ops := opsOf(f, fake.OpShutdownHost, "host-1"); len(ops) != 1 || !ops[0].Force {
			t.Errorf("ShutdownHost(host-1): %+v, want one forced call", ops)
		}
		time.Sleep(11 * s) // hosts take 10 s to go off after accepting
		inv, err := f.Inventory(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range inv.Hosts {
			if h.Power != provider.PowerOff {
				t.Errorf("host %s is %s", h.ID, h.Power)
			}
		}
		// The host with sundown's VM is shut down last, forced (no
		// maintenance step), after every other step.
		last := result(t, rep, "host-off:vcenter/host-3")
		for _, r := range rep.Steps {
			if r.Key != last.Key && r.End.After(last.Start) {
				t.Errorf("%s ended at %v, after the self host's shutdown started at %v", r.Key, r.End.Sub(t0), last.Start.Sub(t0))
			}
		}
		if ops := opsOf(f, fake.OpShutdownHost, "host-3"); len(ops) != 1 || !ops[0].Force {
			t.Errorf("ShutdownHost(host-3): %+v, want one forced call", ops)
		}
		if ops := opsOf(f, fake.OpShutdownHost, "host-2"); len(ops) != 1 || ops[0].Force {
			t.Errorf("ShutdownHost(host-2): %+v, want one unforced call after maintenance", ops)
		}
	})
}

// Never more than Global steps at once, never more than PerHost guest steps
// of one host; both caps are reached. Measured from the report's intervals
// and, independently, by the fake's count of calls in flight.
func TestExecCaps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fl fake.Fleet
		for i := range 14 {
			h := []string{"h1", "h1", "h1", "h2", "h2", "h3", "h4"}[i%7]
			fl.Guests = append(fl.Guests, fake.GuestSpec{ID: fmt.Sprintf("vm-%02d", i), HostID: h, ShutdownDelay: time.Duration(10+i%4*7) * s})
		}
		for _, h := range []string{"h1", "h2", "h3", "h4"} {
			fl.Hosts = append(fl.Hosts, fake.HostSpec{ID: h})
		}
		f := fake.New(fl)
		defer f.Close()
		pl := fleetPlan(t, f, nil)
		rep := mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{Caps: Caps{Global: 5, PerHost: 2}})
		if got := peak(rep, func(StepResult) bool { return true }); got != 5 {
			t.Errorf("peak running steps %d, want the global cap 5", got)
		}
		for _, h := range []string{"h1", "h2", "h3", "h4"} {
			got := peak(rep, func(r StepResult) bool { return pl.Steps[r.Step].HostID == h })
			if got > 2 || (h == "h1" || h == "h2") && got != 2 {
				t.Errorf("host %s: peak %d guest steps, want at most (and for h1, h2 exactly) 2", h, got)
			}
		}
		total, byHost := f.PeakInFlight()
		if total != 5 {
			t.Errorf("fake: peak %d calls in flight, want 5", total)
		}
		for h, n := range byHost {
			if n > 2 {
				t.Errorf("fake: host %s had %d calls in flight", h, n)
			}
		}
		if len(rep.Failed()) != 0 {
			t.Errorf("failed: %+v", rep.Failed())
		}
	})
}

// Hooks run before their groups; a failing hook, one that hangs until its
// timeout, and one that ignores its timeout altogether never hold the
// shutdown back past their deadlines.
func TestExecHooks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := fake.New(fake.Fleet{Guests: []fake.GuestSpec{
			{ID: "vm-1", Name: "web-1", ShutdownDelay: 5 * s},
			{ID: "vm-2", Name: "web-2", ShutdownDelay: 7 * s},
			{ID: "vm-3", Name: "db-1", ShutdownDelay: 9 * s},
		}})
		defer f.Close()
		pl := fleetPlan(t, f, func(sp *Spec) {
			sp.Groups = []Group{
				{Name: "web", Select: Selector{Names: []string{"web-*"}}, DependsOn: []string{"db"}},
				{Name: "db", Select: Selector{Names: []string{"db-*"}}},
			}
			sp.Hooks = []Hook{
				{Name: "notify", Timeout: 10 * s},
				{Name: "fail", Before: []string{"db"}, Timeout: 10 * s},
				{Name: "hang", Before: []string{"web"}, Timeout: 30 * s},
				{Name: "deaf", Before: []string{"db"}, Timeout: 20 * s},
			}
		})
		release := make(chan struct{})
		ran := map[string]time.Time{}
		var mu sync.Mutex
		hooks := func(ctx context.Context, st Step) error {
			mu.Lock()
			ran[st.Name] = time.Now()
			mu.Unlock()
			switch st.Name {
			case "notify":
				return runHooksOK(ctx, st)
			case "fail":
				return errors.New("backup server said no")
			case "hang":
				<-ctx.Done()
				return ctx.Err()
			case "deaf":
				<-release // ignores ctx
				return nil
			}
			return fmt.Errorf("unexpected hook %s", st.Name)
		}
		t0 := time.Now()
		rep := mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{Hooks: hooks})
		close(release)

		checkDeps(t, pl, rep, t0, true)
		want := map[string]struct {
			o   Outcome
			end time.Duration
			err string
		}{
			"hook:notify": {OutcomeDone, 3 * s, ""},
			"hook:fail":   {OutcomeFailed, 0, "backup server said no"},
			"hook:hang":   {OutcomeFailed, 30 * s, "did not return within 30s"},
			"hook:deaf":   {OutcomeFailed, 20 * s, "did not return within 20s"},
		}
		for key, w := range want {
			r := result(t, rep, key)
			if r.Outcome != w.o || r.End.Sub(t0) != w.end || !strings.Contains(r.Err, w.err) {
				t.Errorf("%s: %s at %v (%q), want %s at %v (%q)", key, r.Outcome, r.End.Sub(t0), r.Err, w.o, w.end, w.err)
			}
		}
		// Hooks run side by side from t=0; web waits for its hook (hang,
		// 30 s), db for web (30 + 7 s) and its hooks.
		for id, start := range map[string]time.Duration{"vm-1": 30 * s, "vm-2": 30 * s, "vm-3": 37 * s} {
			if r := result(t, rep, "guest:vc/"+id); r.Start.Sub(t0) != start || r.Outcome != OutcomeDone {
				t.Errorf("%s: %s, started at %v, want done, started at %v", id, r.Outcome, r.Start.Sub(t0), start)
			}
		}
		if !slices.Equal(rep.StrayHooks, []string{"deaf"}) {
			t.Errorf("stray hooks %v, want [deaf]", rep.StrayHooks)
		}
		mu.Lock()
		if len(ran) != 4 {
			t.Errorf("hooks run: %v", ran)
		}
		mu.Unlock()

		// Without a hook runner, hooks are skipped and nothing waits.
		for _, id := range []string{"vm-1", "vm-2", "vm-3"} {
			if err := f.PowerOnGuest(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		}
		t1 := time.Now()
		rep = mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{})
		if r := result(t, rep, "hook:hang"); r.Outcome != OutcomeSkipped {
			t.Errorf("hook without runner: %+v", r)
		}
		if r := result(t, rep, "guest:vc/vm-1"); !r.Start.Equal(t1) {
			t.Errorf("vm-1 started at %v without hooks, want 0", r.Start.Sub(t1))
		}
	})
}

// timeline is what a run did, for comparing runs.
type timeline struct {
	Steps []StepResult
	Ops   []opLine
}

type opLine struct {
	At     time.Time
	Op, ID string
	Force  bool
	Err    string
}

func opLines(ops []fake.Op) []opLine {
	out := make([]opLine, len(ops))
	for i, o := range ops {
		out[i] = opLine{At: o.At, Op: o.Op, ID: o.ID, Force: o.Force}
		if o.Err != nil {
			out[i].Err = o.Err.Error()
		}
	}
	// Calls at the same instant from different steps interleave in any
	// order; each guest's own calls keep theirs.
	slices.SortStableFunc(out, func(a, b opLine) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

func siteRun(t *testing.T, opts ExecOptions, cancelAt time.Duration) (timeline, *Report) {
	fl, mod := siteFleet()
	f := fake.New(fl)
	defer f.Close()
	pl := fleetPlan(t, f, mod)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if cancelAt > 0 {
		time.AfterFunc(cancelAt, cancel)
	}
	if opts.Hooks == nil {
		opts.Hooks = runHooksOK
	}
	rep := mustExecute(t, ctx, pl, Targets{"vc": f}, opts)
	ops := opLines(f.Ops())
	if opts.OnEvent != nil {
		// Execute waits at most eventGrace for a stuck observer.
		if d := time.Since(rep.Ended); d > eventGrace {
			t.Errorf("Execute returned %v after the run ended", d)
		}
	} else if !time.Now().Equal(rep.Ended) {
		t.Errorf("Execute returned %v after the run ended", time.Since(rep.Ended))
	}
	time.Sleep(6 * s) // hosts take 5 s to go off after accepting
	inv, err := f.Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range inv.Guests {
		if g.Power != provider.PowerOff {
			t.Errorf("guest %s is %s after the run", g.ID, g.Power)
		}
	}
	for _, h := range inv.Hosts {
		if h.Power != provider.PowerOff {
			t.Errorf("host %s is %s after the run", h.ID, h.Power)
		}
	}
	return timeline{Steps: rep.Steps, Ops: ops}, rep
}

// An OnEvent that blocks for ever delays nothing: the timeline is the same
// as with a fast observer, and the events that did not fit are counted.
func TestExecSlowObserver(t *testing.T) {
	var fast, slow timeline
	var fastEvents []Event
	synctest.Test(t, func(t *testing.T) {
		var l eventLog
		tl, rep := siteRun(t, ExecOptions{OnEvent: l.add}, 0)
		fast, fastEvents = tl, l.all()
		if rep.Dropped != 0 {
			t.Errorf("fast observer: %d events dropped", rep.Dropped)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		block := make(chan struct{})
		tl, rep := siteRun(t, ExecOptions{EventBuffer: 4, OnEvent: func(Event) { <-block }}, 0)
		slow = tl
		close(block)
		// The observer got one event and holds it; 4 sit in the queue.
		if want := len(fastEvents) - 1; rep.Dropped != want {
			t.Errorf("slow observer: %d events dropped, want %d", rep.Dropped, want)
		}
	})
	if d := cmp.Diff(fast, slow); d != "" {
		t.Errorf("a blocked observer changed the timeline (-fast +slow):\n%s", d)
	}
	// The fast observer saw the whole story.
	types := map[EventType]int{}
	for _, e := range fastEvents {
		types[e.Type]++
	}
	if types[EventRunStart] != 1 || types[EventRunDone] != 1 || types[EventEscalate] == 0 || types[EventStepStart] == 0 ||
		types[EventStepDone] == 0 || types[EventActionStart] == 0 {
		t.Errorf("event counts %v", types)
	}
	if fastEvents[len(fastEvents)-1].Type != EventRunDone {
		t.Errorf("last event %v", fastEvents[len(fastEvents)-1])
	}
}

// The latch: cancelling ctx mid-run does not stop the shutdown; the run is
// the same as an uncancelled one.
func TestExecLatch(t *testing.T) {
	var whole, cancelled timeline
	synctest.Test(t, func(t *testing.T) { whole, _ = siteRun(t, ExecOptions{}, 0) })
	synctest.Test(t, func(t *testing.T) {
		var rep *Report
		cancelled, rep = siteRun(t, ExecOptions{}, 25*s)
		if rep.Stopped || len(rep.Failed()) != 0 {
			t.Errorf("report after a cancelled ctx: stopped %v, failed %+v", rep.Stopped, rep.Failed())
		}
	})
	if d := cmp.Diff(whole, cancelled); d != "" {
		t.Errorf("cancelling ctx changed the run (-whole +cancelled):\n%s", d)
	}
}

// DryRun: reads only, every step done at once with the outcome it would
// have, events marked, journal untouched.
func TestExecDryRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl, mod := siteFleet()
		f := fake.New(fl)
		defer f.Close()
		pl := fleetPlan(t, f, mod)
		j, err := OpenJournal(t.TempDir() + "/journal")
		if err != nil {
			t.Fatal(err)
		}
		defer j.Close()
		var l eventLog
		hooked := false
		t0 := time.Now()
		rep := mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{
			DryRun: true, Journal: j, OnEvent: l.add, Hooks: func(context.Context, Step) error { hooked = true; return nil },
		})
		for _, o := range f.Ops() {
			if o.Op != fake.OpGuest && o.Op != fake.OpInventory {
				t.Errorf("dry run called %s(%s)", o.Op, o.ID)
			}
		}
		if hooked {
			t.Error("dry run ran a hook")
		}
		if !rep.DryRun || !rep.Ended.Equal(t0) {
			t.Errorf("dry run: DryRun %v, took %v", rep.DryRun, rep.Ended.Sub(t0))
		}
		want := map[string]struct {
			o    Outcome
			a    ActionKind
			note string
		}{
			"guest:vc/vm-10":    {OutcomeDone, Shutdown, "would shutdown: shutdown 90s → poweroff 30s"},
			"guest:vc/vm-42":    {OutcomeDone, PowerOff, "would poweroff at once (guest tools not running)"},
			"guest:vc/vm-43":    {OutcomeAlreadyOff, ActionUnset, "already off"},
			"guest:vc/vm-44":    {OutcomeDone, PowerOff, "would poweroff at once (suspended)"},
			"host-maint:vc/h1":  {OutcomeDone, ActionUnset, "would enter maintenance mode"},
			"host-off:vc/h1":    {OutcomeDone, ActionUnset, "would shut the host down"},
			"hook:stop-backups": {OutcomeDone, ActionUnset, "would run the hook"},
		}
		for key, w := range want {
			r := result(t, rep, key)
			if r.Outcome != w.o || r.FinalAction != w.a || !strings.HasPrefix(r.Note, w.note) {
				t.Errorf("%s: %s %s %q, want %s %s %q", key, r.Outcome, r.FinalAction, r.Note, w.o, w.a, w.note)
			}
		}
		evs := l.all()
		if len(evs) == 0 {
			t.Fatal("no events")
		}
		for _, e := range evs {
			if !e.DryRun {
				t.Errorf("event not marked DryRun: %+v", e)
			}
		}
		if recs := readJournal(t, j.Path()); len(recs) != 0 {
			t.Errorf("dry run wrote %d journal records", len(recs))
		}
	})
}

// Only: a drill runs the named groups' guests (and the hooks before them or
// at the start), nothing else.
func TestExecOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl, mod := siteFleet()
		f := fake.New(fl)
		defer f.Close()
		pl := fleetPlan(t, f, mod)
		if _, err := Execute(t.Context(), pl, Targets{"vc": f}, ExecOptions{Only: []string{"nope"}}); err == nil ||
			!strings.Contains(err.Error(), `"nope"`) {
			t.Fatalf("unknown drill group: %v", err)
		}
		var hooks []string
		rep := mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{Only: []string{"web"},
			Hooks: func(_ context.Context, st Step) error { hooks = append(hooks, st.Name); return nil }})
		if !slices.Equal(hooks, []string{"notify"}) {
			t.Errorf("hooks run: %v, want [notify]", hooks)
		}
		inv, err := f.Inventory(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		touched := map[string]bool{}
		for _, o := range f.Ops() {
			if o.Op != fake.OpInventory {
				touched[o.ID] = true
			}
		}
		for _, g := range inv.Guests {
			web := strings.HasPrefix(g.Name, "web-")
			if web != touched[g.ID] {
				t.Errorf("guest %s (%s): touched %v", g.ID, g.Name, touched[g.ID])
			}
			if r := result(t, rep, "guest:vc/"+g.ID); !web && (r.Outcome != OutcomeSkipped || r.Note != "not in the drill") {
				t.Errorf("guest %s outside the drill: %+v", g.Name, r)
			}
			if web && g.Power != provider.PowerOff {
				t.Errorf("drilled guest %s is %s", g.Name, g.Power)
			}
			if g.Name == "app-0" && g.Power != provider.PowerOn {
				t.Errorf("app-0 is %s after a drill of web", g.Power)
			}
		}
		for _, h := range inv.Hosts {
			if h.Power != provider.PowerOn || h.Maintenance || touched[h.ID] {
				t.Errorf("host %s touched by a drill", h.ID)
			}
		}
	})
}

// Host maintenance that fails is recorded, and the host shutdown still runs,
// forced; a host that reached maintenance is shut down unforced.
func TestExecHostMaintenance(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := fake.New(fake.Fleet{
			Hosts:  []fake.HostSpec{{ID: "h1", MaintenanceDelay: 2 * s}, {ID: "h2", MaintenanceDelay: 2 * s}},
			Guests: []fake.GuestSpec{{ID: "vm-1", HostID: "h1", ShutdownDelay: 3 * s}, {ID: "vm-2", HostID: "h2", ShutdownDelay: 3 * s}},
		})
		defer f.Close()
		f.FailNext(fake.OpEnterMaintenance, "h2", &provider.Error{Class: provider.Permission, Privilege: "Host.Config.Maintenance"})
		pl := fleetPlan(t, f, func(sp *Spec) {
			sp.Targets[0].Maintenance, sp.Targets[0].ShutdownHosts = true, true
			sp.Targets[0].MaintenanceTimeout, sp.Targets[0].HostShutdownTimeout = 60*s, 60*s
		})
		t0 := time.Now()
		rep := mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{})
		if r := result(t, rep, "host-maint:vc/h2"); r.Outcome != OutcomeFailed || !strings.Contains(r.Err, "Host.Config.Maintenance") {
			t.Errorf("h2 maintenance: %+v", r)
		}
		if r := result(t, rep, "host-maint:vc/h1"); r.Outcome != OutcomeDone || r.End.Sub(t0) != 5*s {
			t.Errorf("h1 maintenance: %s at %v", r.Outcome, r.End.Sub(t0))
		}
		for h, force := range map[string]bool{"h1": false, "h2": true} {
			ops := opsOf(f, fake.OpShutdownHost, h)
			if len(ops) != 1 || ops[0].Force != force {
				t.Errorf("ShutdownHost(%s): %+v, want one call with force=%v", h, ops, force)
			}
			if r := result(t, rep, "host-off:vc/"+h); r.Outcome != OutcomeDone {
				t.Errorf("host %s shutdown: %+v", h, r)
			}
		}
		if r := result(t, rep, "host-off:vc/h2"); r.Note != "forced: maintenance mode not reached" {
			t.Errorf("h2 note %q", r.Note)
		}
	})
}

// A guest with a Suspend chain ends suspended; one already suspended is
// already done.
func TestExecSuspend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := fake.New(fake.Fleet{Guests: []fake.GuestSpec{
			{ID: "vm-1", Name: "a", SuspendDelay: 6 * s},
			{ID: "vm-2", Name: "b", Power: provider.PowerSuspended},
		}})
		defer f.Close()
		pl := fleetPlan(t, f, func(sp *Spec) { sp.DefaultChain = chain(Suspend, 60*s, PowerOff, 30*s) })
		t0 := time.Now()
		rep := mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{})
		if r := result(t, rep, "guest:vc/vm-1"); r.Outcome != OutcomeDone || r.FinalAction != Suspend || r.End.Sub(t0) != 6*s {
			t.Errorf("vm-1: %+v", r)
		}
		if r := result(t, rep, "guest:vc/vm-2"); r.Outcome != OutcomeAlreadyOff || r.Note != "already suspended" {
			t.Errorf("vm-2: %+v", r)
		}
		if g, _ := f.Guest(t.Context(), "vm-1"); g.Power != provider.PowerSuspended {
			t.Errorf("vm-1 is %s", g.Power)
		}
	})
}

// Malformed plans and a missing provider.
func TestExecBadInput(t *testing.T) {
	if _, err := Execute(context.Background(), nil, nil, ExecOptions{}); err == nil {
		t.Error("nil plan accepted")
	}
	bad := &Plan{Steps: []Step{{ID: 0, Key: "a", Kind: StepGroup, Deps: []int{0}}}}
	if _, err := Execute(context.Background(), bad, nil, ExecOptions{}); err == nil {
		t.Error("self-dependency accepted")
	}
	synctest.Test(t, func(t *testing.T) {
		f := fake.New(fake.Fleet{Guests: []fake.GuestSpec{{ID: "vm-1"}}})
		defer f.Close()
		pl := fleetPlan(t, f, nil)
		var logs syncBuffer
		rep := mustExecute(t, t.Context(), pl, Targets{}, ExecOptions{Log: slog.New(slog.NewTextHandler(&logs, nil))})
		if r := result(t, rep, "guest:vc/vm-1"); r.Outcome != OutcomeFailed || !strings.Contains(r.Err, `no provider for target "vc"`) {
			t.Errorf("missing provider: %+v", r)
		}
		if !strings.Contains(logs.String(), "step failed") {
			t.Errorf("logs:\n%s", logs.String())
		}
	})
}

// A provider call that hangs is bounded by its action's deadline: a hung
// ShutdownGuest escalates at exactly t=120s, and a hung PowerOffGuest fails
// the step at 150 s.
func TestExecHungProvider(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := fake.New(fake.Fleet{Guests: []fake.GuestSpec{{ID: "vm-1", PowerOffDelay: 3 * s}}})
		defer f.Close()
		pl := fleetPlan(t, f, nil)
		f.Hang(fake.OpShutdownGuest, true)
		t0 := time.Now()
		rep := mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{})
		po := opsOf(f, fake.OpPowerOffGuest, "vm-1")
		if len(po) != 1 || po[0].At.Sub(t0) != 120*s {
			t.Fatalf("PowerOffGuest: %+v, want one call at 120s", po)
		}
		if r := result(t, rep, "guest:vc/vm-1"); r.Outcome != OutcomeEscalated || r.End.Sub(t0) != 123*s {
			t.Errorf("vm-1: %s at %v", r.Outcome, r.End.Sub(t0))
		}

		if err := f.PowerOnGuest(t.Context(), "vm-1"); err != nil {
			t.Fatal(err)
		}
		f.Hang(fake.OpPowerOffGuest, true)
		t1 := time.Now()
		rep = mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{})
		if r := result(t, rep, "guest:vc/vm-1"); r.Outcome != OutcomeFailed || r.End.Sub(t1) != 150*s ||
			!strings.Contains(r.Err, "not off within 30s") {
			t.Errorf("vm-1 with PowerOffGuest hung: %s at %v (%s)", r.Outcome, r.End.Sub(t1), r.Err)
		}
	})
}
