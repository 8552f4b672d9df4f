package plan

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/fake"
)

// shutdownSite runs the site's shutdown with a journal and returns the
// fake fleet (everything off), the plan and the journal.
func shutdownSite(t *testing.T) (*fake.Provider, *Plan, *Journal) {
	t.Helper()
	fl, mod := siteFleet()
	f := fake.New(fl)
	t.Cleanup(func() { f.Close() })
	pl := fleetPlan(t, f, mod)
	j := openJournal(t, filepath.Join(t.TempDir(), "journal"))
	t.Cleanup(func() { j.Close() })
	mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{Journal: j, Hooks: runHooksOK})
	time.Sleep(6 * s) // hosts go off 5 s after accepting
	return f, pl, j
}

// hostUp reads the fake's inventory: the host is on.
func hostUp(f *fake.Provider) func(context.Context, Step) (bool, error) {
	return func(ctx context.Context, st Step) (bool, error) {
		inv, err := f.Inventory(ctx)
		if err != nil {
			return false, err
		}
		for _, h := range inv.Hosts {
			if h.ID == st.HostID {
				return h.Power == provider.PowerOn, nil
			}
		}
		return false, errors.New("no such host")
	}
}

func TestRestorePlanReversesTheShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sp, j := shutdownSite(t)
		runs := j.Unrestored()
		if len(runs) != 1 || len(runs[0].Steps) != len(sp.Steps) {
			t.Fatalf("Unrestored: %d runs", len(runs))
		}
		run := runs[0]
		rp, err := RestorePlan(run, RestoreSpec{})
		if err != nil {
			t.Fatal(err)
		}
		idx := map[string]int{}
		for _, st := range rp.Steps {
			idx[st.Key] = st.ID
			for _, d := range st.Deps {
				if d >= st.ID {
					t.Errorf("%s depends on %d: not topological", st.Key, d)
				}
			}
		}
		restoreKey := func(k string) string {
			for from, to := range map[string]string{"guest:": "guest-on:", "host-off:": "host-on:", "host-maint:": "host-exit-maint:"} {
				if strings.HasPrefix(k, from) {
					return to + strings.TrimPrefix(k, from)
				}
			}
			return k
		}
		// Every shutdown edge a → b (b after a) is b' → a' in the restore.
		for _, b := range sp.Steps {
			for _, a := range b.Deps {
				ka, kb := restoreKey(sp.Steps[a].Key), restoreKey(b.Key)
				ia, okA := idx[ka]
				ib, okB := idx[kb]
				if !okA || !okB {
					continue // a hook
				}
				found := false
				for _, d := range rp.Steps[ia].Deps {
					found = found || d == ib
				}
				if !found {
					t.Errorf("shutdown: %s before %s; restore: %s does not wait for %s", sp.Steps[a].Key, b.Key, ka, kb)
				}
			}
		}
		for key, note := range map[string]string{
			"guest-on:vc/vm-43": "was off before the shutdown: left off",
			"guest-on:vc/vm-44": "was suspended before the shutdown: left off",
		} {
			st := rp.Steps[idx[key]]
			if !st.NoOp || st.Note != note {
				t.Errorf("%s: NoOp %v, note %q; want %q", key, st.NoOp, st.Note, note)
			}
		}
		for _, key := range []string{"host-on:vc/h1", "host-exit-maint:vc/h2", "guest-on:vc/vm-10", "guest-on:vc/vm-40"} {
			if st := rp.Steps[idx[key]]; st.NoOp {
				t.Errorf("%s is NoOp (%s), want it restored", key, st.Note)
			}
		}
		if _, ok := idx["hook:notify"]; ok {
			t.Error("hooks must not be in the restore")
		}
	})
}

func TestRestoreBringsTheSiteBackInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, _, j := shutdownSite(t)
		run := j.Unrestored()[0]
		rp, err := RestorePlan(run, RestoreSpec{Caps: Caps{Global: 6, PerHost: 2}})
		if err != nil {
			t.Fatal(err)
		}
		before := len(f.Ops())
		var mu sync.Mutex
		woken := map[string]bool{}
		hooks := RestoreHooks{
			Of:     run.ID,
			HostUp: hostUp(f),
			Wake: func(_ context.Context, st Step) (bool, error) {
				mu.Lock()
				defer mu.Unlock()
				woken[st.HostID] = true
				f.BootHost(st.HostID, 40*s) // firmware and hypervisor boot
				return true, nil
			},
			Poll: 5 * s,
		}
		t0 := time.Now()
		rep, err := Restore(t.Context(), rp, Targets{"vc": f}, hooks, ExecOptions{Journal: j})
		if err != nil {
			t.Fatal(err)
		}
		checkDeps(t, rp, rep, t0, false)
		if len(rep.Failed()) > 0 {
			t.Errorf("failed: %+v", rep.Failed())
		}
		if len(woken) != 3 {
			t.Errorf("woke %v, want the 3 hosts", woken)
		}
		inv, _ := f.Inventory(t.Context())
		for _, g := range inv.Guests {
			want := provider.PowerOn
			if g.ID == "vm-43" || g.ID == "vm-44" { // off and suspended before the outage
				want = provider.PowerOff
			}
			if g.Power != want {
				t.Errorf("guest %s (%s) is %s after the restore, want %s", g.ID, g.Name, g.Power, want)
			}
		}
		// The order of power-ons: db before app before web.
		var last = map[string]time.Time{}
		first := map[string]time.Time{}
		for _, o := range f.Ops()[before:] {
			if o.Op != fake.OpPowerOnGuest || o.Err != nil {
				continue
			}
			tier := map[byte]string{'1': "web", '2': "app", '3': "db"}[o.ID[3]]
			if _, ok := first[tier]; !ok {
				first[tier] = o.At
			}
			last[tier] = o.At
		}
		if last["db"].After(first["app"]) || last["app"].After(first["web"]) || first["db"].IsZero() || first["web"].IsZero() {
			t.Errorf("power-ons out of order: db %v–%v, app %v–%v, web %v–%v",
				first["db"].Sub(t0), last["db"].Sub(t0), first["app"].Sub(t0), last["app"].Sub(t0), first["web"].Sub(t0), last["web"].Sub(t0))
		}
		if first["db"].Sub(t0) < 40*s {
			t.Errorf("a guest was powered on %v after the start, before its host booted (40 s)", first["db"].Sub(t0))
		}
		if rs := j.Unrestored(); len(rs) != 0 {
			t.Errorf("journal: %d runs still unrestored after the restore", len(rs))
		}
		if _, pending := j.Pending(); pending {
			t.Error("the restore left a pending run")
		}
	})
}

// A guest that does not become ready fails its step with a clear note, and
// its dependents start anyway: the report says what did not come back.
func TestRestoreReadinessFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, _, j := shutdownSite(t)
		run := j.Unrestored()[0]
		rp, err := RestorePlan(run, RestoreSpec{GroupTimeout: map[string]time.Duration{"db": 60 * s}})
		if err != nil {
			t.Fatal(err)
		}
		hooks := RestoreHooks{
			Of:     run.ID,
			HostUp: hostUp(f),
			Wake: func(_ context.Context, st Step) (bool, error) {
				f.BootHost(st.HostID, 0)
				return true, nil
			},
			Ready: func(_ context.Context, st Step) error {
				if st.Name == "db-1" {
					return errors.New("tcp 10.0.0.31:5432: connection refused")
				}
				return nil
			},
			Poll: 5 * s,
		}
		rep, err := Restore(t.Context(), rp, Targets{"vc": f}, hooks, ExecOptions{Journal: j})
		if err != nil {
			t.Fatal(err)
		}
		failed := rep.Failed()
		if len(failed) != 1 || failed[0].Name != "db-1" || failed[0].Note != "powered on, not ready" ||
			!strings.Contains(failed[0].Err, "connection refused") || !strings.Contains(failed[0].Err, "not within 60s") {
			t.Fatalf("failed steps: %+v", failed)
		}
		if d := failed[0].End.Sub(failed[0].Start); d != 60*s {
			t.Errorf("readiness gave up after %v, want its 60 s", d)
		}
		if r := result(t, rep, "guest-on:vc/vm-10"); r.Outcome != OutcomeDone {
			t.Errorf("web-0 (a dependent of db-1): %s", r.Outcome)
		}
	})
}

// Hosts without a waker are waited for (they boot on AC power); a host that
// never comes back fails, and its guests fail with it, while the other
// hosts' guests come back.
func TestRestoreHostThatNeverBoots(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, _, j := shutdownSite(t)
		run := j.Unrestored()[0]
		rp, err := RestorePlan(run, RestoreSpec{HostTimeout: 5 * time.Minute, GuestTimeout: 2 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		f.BootHost("h1", 90*s)
		f.BootHost("h2", 30*s)
		hooks := RestoreHooks{Of: run.ID, HostUp: hostUp(f), Poll: 5 * s}
		rep, err := Restore(t.Context(), rp, Targets{"vc": f}, hooks, ExecOptions{Journal: j, RetryMin: 5 * s, RetryMax: 10 * s})
		if err != nil {
			t.Fatal(err)
		}
		if r := result(t, rep, "host-on:vc/h3"); r.Outcome != OutcomeFailed || r.Note != "no waker configured: waited for it to boot by itself" {
			t.Errorf("h3: %s %q %q", r.Outcome, r.Note, r.Err)
		}
		if r := result(t, rep, "host-on:vc/h1"); r.Outcome != OutcomeDone {
			t.Errorf("h1: %s %s", r.Outcome, r.Err)
		}
		if r := result(t, rep, "guest-on:vc/vm-32"); r.Outcome != OutcomeFailed || !strings.Contains(r.Err, "is off") {
			t.Errorf("db-2 on h3: %s %q", r.Outcome, r.Err)
		}
		if r := result(t, rep, "guest-on:vc/vm-30"); r.Outcome != OutcomeDone {
			t.Errorf("db-0 on h1: %s %q", r.Outcome, r.Err)
		}
	})
}

// A shed stage stopped web-0; the full shutdown then found it already off.
// The merged run still says sundown turned it off, so it comes back.
func TestMergeRunsKeepsWhatShedStopped(t *testing.T) {
	steps := []SnapStep{{Key: "guest:vc/vm-1", Kind: "guest", Name: "web-0", Group: "web"}, {Key: "guest:vc/vm-2", Kind: "guest", Name: "db-0", Group: "db"}}
	t0 := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	shed := FinishedRun{ID: "shed", Kind: RunShed, Steps: steps[:1], Outcomes: map[string]StepState{
		"guest:vc/vm-1": {Outcome: OutcomeDone, End: t0}}}
	full := FinishedRun{ID: "full", Steps: steps, Outcomes: map[string]StepState{
		"guest:vc/vm-1": {Outcome: OutcomeAlreadyOff, End: t0.Add(time.Minute)},
		"guest:vc/vm-2": {Outcome: OutcomeAlreadyOff, End: t0.Add(time.Minute)}}}
	m, ok := MergeRuns([]FinishedRun{shed, full})
	if !ok || m.ID != "full" || len(m.Steps) != 2 {
		t.Fatalf("merged: ok %v, id %s, %d steps", ok, m.ID, len(m.Steps))
	}
	rp, err := RestorePlan(m, RestoreSpec{})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range rp.Steps {
		wantNoOp := st.Name == "db-0"
		if st.NoOp != wantNoOp {
			t.Errorf("%s: NoOp %v (%s), want %v", st.Name, st.NoOp, st.Note, wantNoOp)
		}
	}
	if _, ok := MergeRuns([]FinishedRun{{ID: "old"}}); ok {
		t.Error("runs without a plan merged")
	}
}
