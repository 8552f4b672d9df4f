package plan

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/fake"
)

func openJournal(t *testing.T, path string) *Journal {
	t.Helper()
	j, err := OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestJournalTornLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "journal.jsonl")
	j := openJournal(t, path)
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	for _, r := range []record{
		{T: t0, Run: "r1", Type: recRunStart, Keys: []string{"guest:vc/a", "guest:vc/b", "guest:vc/c"}},
		{T: t0, Run: "r1", Type: recStepStart, Key: "guest:vc/a"},
		{T: t0.Add(3 * s), Run: "r1", Type: recStepEnd, Key: "guest:vc/a", Outcome: OutcomeDone, Action: "shutdown", Elapsed: 3},
		{T: t0, Run: "r1", Type: recStepStart, Key: "guest:vc/b"},
		{T: t0, Run: "r1", Type: recActionStart, Key: "guest:vc/b", Action: "poweroff", Index: 1},
	} {
		if err := j.append(&r); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("journal mode: %v %v", fi.Mode(), err)
	}
	// A line that does not parse in the middle, a step-start, and a line
	// torn by a crash at the end.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "{not json}\n")
	fmt.Fprintf(f, `{"t":"2026-03-01T10:00:01Z","run":"r1","type":"step-start","key":"guest:vc/c"}`+"\n")
	complete, _ := f.Seek(0, 2)
	fmt.Fprintf(f, `{"t":"2026-03-01T10:00:02Z","run":"r1","type":"action-st`)
	f.Close()

	j = openJournal(t, path)
	defer j.Close()
	if fi, _ := os.Stat(path); fi.Size() != complete {
		t.Errorf("size after open %d, want %d (torn line cut)", fi.Size(), complete)
	}
	if j.Skipped() != 1 {
		t.Errorf("skipped %d lines, want 1", j.Skipped())
	}
	rs, ok := j.Pending()
	if !ok {
		t.Fatal("no pending run")
	}
	want := RunState{
		ID: "r1", Started: t0, Keys: []string{"guest:vc/a", "guest:vc/b", "guest:vc/c"},
		Ended: map[string]StepState{"guest:vc/a": {Key: "guest:vc/a", Outcome: OutcomeDone, Action: "shutdown", Start: t0, End: t0.Add(3 * s)}},
		InFlight: map[string]StepState{
			"guest:vc/b": {Key: "guest:vc/b", Action: "poweroff", Index: 1, Start: t0},
			"guest:vc/c": {Key: "guest:vc/c", Start: t0.Add(time.Second)},
		},
	}
	if d := cmp.Diff(want, rs); d != "" {
		t.Errorf("pending run (-want +got):\n%s", d)
	}
	// Appending after the repair gives a clean file.
	if err := j.append(&record{T: t0, Run: "r1", Type: recRunDone}); err != nil {
		t.Fatal(err)
	}
	if _, ok := j.Pending(); ok {
		t.Error("run still pending after run-done")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(data), "\n") || strings.Count(string(data), "action-st") != 1 {
		t.Errorf("journal after the repair:\n%s", data)
	}
}

func TestJournalAbandonAndHistory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j := openJournal(t, path)
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	// Six runs of one key: 10 … 60 s; then one escalated (ignored) and one
	// resumed (ignored).
	for i := 1; i <= 8; i++ {
		run := fmt.Sprintf("r%d", i)
		outcome, resumed := OutcomeDone, false
		if i == 7 {
			outcome = OutcomeEscalated
		}
		if i == 8 {
			resumed = true
		}
		for _, r := range []record{
			{T: t0, Run: run, Type: recRunStart, Keys: []string{"guest:vc/a"}},
			{T: t0, Run: run, Type: recStepStart, Key: "guest:vc/a"},
			{T: t0, Run: run, Type: recStepEnd, Key: "guest:vc/a", Outcome: outcome, Elapsed: float64(10 * i), Resumed: resumed},
			{T: t0, Run: run, Type: recRunDone},
		} {
			if err := j.append(&r); err != nil {
				t.Fatal(err)
			}
		}
	}
	if h := j.History(); h["guest:vc/a"] != 40*s || len(h) != 1 {
		t.Errorf("history %v, want the median of 20…60 s = 40s", h)
	}
	// A pending run, abandoned.
	if err := j.append(&record{T: t0, Run: "r9", Type: recRunStart, Keys: []string{"guest:vc/a"}}); err != nil {
		t.Fatal(err)
	}
	if rs, ok := j.Pending(); !ok || rs.ID != "r9" {
		t.Fatalf("pending %v %v", rs.ID, ok)
	}
	if err := j.Abandon("power restored"); err != nil {
		t.Fatal(err)
	}
	j.Close()
	j = openJournal(t, path)
	defer j.Close()
	if _, ok := j.Pending(); ok {
		t.Error("abandoned run still pending after reopening")
	}
	if h := j.History(); h["guest:vc/a"] != 40*s {
		t.Errorf("history after reopening %v", h)
	}
	recs := readJournal(t, path)
	if last := recs[len(recs)-1]; last.Type != recRunDone || last.Note != "abandoned: power restored" {
		t.Errorf("last record %+v", last)
	}
	// An even count: the mean of the middle two.
	j2 := newJournal("", nopFile{})
	for i, d := range []float64{10, 30, 20, 50} {
		run := fmt.Sprint(i)
		j2.apply(&record{Run: run, Type: recRunStart})
		j2.apply(&record{Run: run, Type: recStepEnd, Key: "k", Outcome: OutcomeDone, Elapsed: d})
	}
	if h := j2.History(); h["k"] != 25*s {
		t.Errorf("median of 10, 20, 30, 50 = %v, want 25s", h["k"])
	}
}

type nopFile struct{}

func (nopFile) Write(p []byte) (int, error) { return len(p), nil }
func (nopFile) Sync() error                 { return nil }
func (nopFile) Truncate(int64) error        { return nil }
func (nopFile) Close() error                { return nil }

// opAction maps a state-changing call to the journal action that must be
// announced before it, and the step key it belongs to.
func opAction(o fake.Op) (key, action string) {
	switch o.Op {
	case fake.OpShutdownGuest:
		return "guest:vc/" + o.ID, "shutdown"
	case fake.OpPowerOffGuest:
		return "guest:vc/" + o.ID, "poweroff"
	case fake.OpSuspendGuest:
		return "guest:vc/" + o.ID, "suspend"
	case fake.OpEnterMaintenance:
		return "host-maint:vc/" + o.ID, "maintenance"
	case fake.OpShutdownHost:
		return "host-off:vc/" + o.ID, "host-shutdown"
	case fake.OpGuest:
		return "guest:vc/" + o.ID, ""
	}
	return "", ""
}

// lastFor returns the last record of key in recs.
func lastFor(recs []record, key string) (record, bool) {
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Key == key {
			return recs[i], true
		}
	}
	return record{}, false
}

// Journal first, then act: when a call reaches the provider (or a hook
// runs), the file already holds the step's start and the action's start.
func TestJournalWrittenBeforeActions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl, mod := siteFleet()
		f := fake.New(fl)
		defer f.Close()
		pl := fleetPlan(t, f, mod)
		path := filepath.Join(t.TempDir(), "journal")
		j := openJournal(t, path)
		defer j.Close()
		var checked atomic.Int64
		f.OnOp(func(o fake.Op) {
			key, action := opAction(o)
			if key == "" {
				return
			}
			recs := readJournal(t, path)
			last, ok := lastFor(recs, key)
			switch {
			case !ok:
				t.Errorf("%s(%s) called before any journal record of %s", o.Op, o.ID, key)
			case action == "" && last.Type != recStepStart:
				t.Errorf("%s(%s): last record of %s is %s, want step-start", o.Op, o.ID, key, last.Type)
			case action != "" && (last.Type != recActionStart || last.Action != action):
				t.Errorf("%s(%s): last record of %s is %s %q, want action-start %q", o.Op, o.ID, key, last.Type, last.Action, action)
			case o.Op == fake.OpShutdownHost && last.Force != o.Force:
				t.Errorf("ShutdownHost(%s) force=%v, journal says %v", o.ID, o.Force, last.Force)
			}
			checked.Add(1)
		})
		hooks := func(ctx context.Context, st Step) error {
			if last, ok := lastFor(readJournal(t, path), st.Key); !ok || last.Type != recActionStart || last.Action != "hook" {
				t.Errorf("hook %s runs; last journal record %+v", st.Name, last)
			}
			return runHooksOK(ctx, st)
		}
		rep := mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{Journal: j, Hooks: hooks})
		f.OnOp(nil)
		if n := checked.Load(); n < 40 {
			t.Errorf("only %d calls checked", n)
		}
		recs := readJournal(t, path)
		if first := recs[0]; first.Type != recRunStart || first.Run != rep.RunID || len(first.Keys) != len(pl.Steps) {
			t.Errorf("first record %+v", first)
		}
		if last := recs[len(recs)-1]; last.Type != recRunDone {
			t.Errorf("last record %+v", last)
		}
		// Every step but the group markers has a start and an end.
		for _, st := range pl.Steps {
			if st.Kind == StepGroup {
				continue
			}
			var starts, ends int
			for _, r := range recs {
				if r.Key == st.Key {
					switch r.Type {
					case recStepStart:
						starts++
					case recStepEnd:
						ends++
						if r.Outcome != rep.Steps[st.ID].Outcome {
							t.Errorf("%s: journal outcome %s, report %s", st.Key, r.Outcome, rep.Steps[st.ID].Outcome)
						}
					}
				}
			}
			if starts != 1 || ends != 1 {
				t.Errorf("%s: %d step-start and %d step-end records", st.Key, starts, ends)
			}
		}
		if _, ok := j.Pending(); ok {
			t.Error("finished run pending")
		}
		if rep.JournalErr != "" {
			t.Error(rep.JournalErr)
		}
	})
}

// A crash (StopOnCancel) at many points, a restart 2 s later, and a resume
// from the journal: every guest and host ends off, nothing is done twice,
// nothing that ended is touched again.
func TestExecResumeAfterCrash(t *testing.T) {
	// The uninterrupted run (siteFleet) lasts 254 s: hooks 0–3 s, web
	// guests from 3 s, the deaf web guest powered off at 98–99 s, app from
	// 99 s, the deaf app guest powered off at 209–210 s, db from 210 s,
	// maintenance and host shutdowns 215–254 s.
	points := []time.Duration{
		0, 1 * s, 3 * s, 5 * s, 30 * s, 98*s + 500*time.Millisecond, 99 * s, 150 * s,
		209*s + 500*time.Millisecond, 211 * s, 216 * s, 232 * s, 252 * s, 254 * s,
	}
	for _, crashAt := range points {
		t.Run(crashAt.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { crashAndResume(t, crashAt) })
		})
	}
}

func crashAndResume(t *testing.T, crashAt time.Duration) {
	fl, mod := siteFleet()
	f := fake.New(fl)
	defer f.Close()
	path := filepath.Join(t.TempDir(), "journal")
	targets := Targets{"vc": f}

	// Run 1, killed at crashAt.
	j := openJournal(t, path)
	pl := fleetPlan(t, f, mod)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(crashAt, cancel)
	t0 := time.Now()
	rep1, err := Execute(ctx, pl, targets, ExecOptions{Journal: j, Hooks: runHooksOK, StopOnCancel: true})
	cancel()
	finished := err == nil
	if !finished && (!rep1.Stopped || !errors.Is(err, context.Canceled)) {
		t.Fatalf("run 1: %v (stopped %v)", err, rep1.Stopped)
	}
	if finished && time.Since(t0) < crashAt {
		t.Fatalf("run 1 finished at %v, before the crash at %v", time.Since(t0), crashAt)
	}
	j.Close()

	// The restart.
	time.Sleep(2 * s)
	j = openJournal(t, path)
	defer j.Close()
	pend, pending := j.Pending()
	switch {
	case finished && pending:
		t.Fatal("a finished run is pending")
	case !finished && !pending && len(readJournal(t, path)) != 0:
		t.Fatal("a stopped run that wrote records is not pending")
	}
	resumeAt := time.Now()
	pl = fleetPlan(t, f, mod) // a fresh inventory, as a restarted daemon would
	rep2, err := Execute(t.Context(), pl, targets, ExecOptions{Journal: j, Hooks: runHooksOK})
	if err != nil {
		t.Fatal(err)
	}
	if pending {
		if !rep2.Resumed || rep2.RunID != pend.ID || rep2.RunID != rep1.RunID && rep1.RunID != "" {
			t.Errorf("run 2: resumed %v, run %s, want run %s resumed", rep2.Resumed, rep2.RunID, pend.ID)
		}
	}
	if fl := rep2.Failed(); len(fl) != 0 {
		t.Errorf("failed after the resume: %+v", fl)
	}
	for _, r := range rep2.Steps {
		if r.Outcome == "" {
			t.Errorf("%s has no outcome after the resume", r.Key)
		}
	}
	if _, ok := j.Pending(); ok {
		t.Error("run still pending after the resume")
	}

	time.Sleep(6 * s)
	inv, err := f.Inventory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range inv.Guests {
		if g.Power != provider.PowerOff {
			t.Errorf("guest %s is %s", g.ID, g.Power)
		}
	}
	for _, h := range inv.Hosts {
		if h.Power != provider.PowerOff {
			t.Errorf("host %s is %s", h.ID, h.Power)
		}
	}

	// Nothing done twice across both runs.
	count := map[[2]string]int{}
	for _, o := range f.Ops() {
		switch o.Op {
		case fake.OpShutdownGuest, fake.OpPowerOffGuest, fake.OpSuspendGuest, fake.OpShutdownHost:
			count[[2]string{o.Op, o.ID}]++
		}
	}
	for k, n := range count {
		if n > 1 {
			t.Errorf("%s(%s) called %d times", k[0], k[1], n)
		}
	}
	// Steps that had ended were not touched again.
	for key := range pend.Ended {
		i, ok := pl.Lookup(key)
		if !ok {
			continue
		}
		st := pl.Steps[i]
		for _, o := range f.Ops() {
			if o.At.Before(resumeAt) || o.Op == fake.OpInventory {
				continue
			}
			hit := false
			switch st.Kind {
			case StepGuest:
				hit = o.ID == st.GuestID
			case StepHostMaintenance:
				hit = o.Op == fake.OpEnterMaintenance && o.ID == st.HostID
			case StepHostShutdown:
				hit = o.Op == fake.OpShutdownHost && o.ID == st.HostID
			}
			if hit {
				t.Errorf("%s ended before the crash, but %s(%s) was called after the restart", key, o.Op, o.ID)
			}
		}
		if r := rep2.Steps[i]; !r.Resumed || r.Note != "ended before the restart" {
			t.Errorf("%s: %+v", key, r)
		}
	}
	t.Logf("crash at %v: %d steps had ended, %d in flight", crashAt, len(pend.Ended), len(pend.InFlight))
}

// A resumed run reports the steps the new plan lacks, and runs the new
// ones.
func TestExecResumeMissingSteps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := fake.New(fake.Fleet{Guests: []fake.GuestSpec{{ID: "vm-1", ShutdownDelay: 5 * s}, {ID: "vm-2"}}})
		defer f.Close()
		path := filepath.Join(t.TempDir(), "journal")
		j := openJournal(t, path)
		defer j.Close()
		t0 := time.Now()
		for _, r := range []record{
			{T: t0, Run: "old", Type: recRunStart, Keys: []string{"guest:vc/vm-1", "guest:vc/vm-old", "group:ungrouped"}},
			{T: t0, Run: "old", Type: recStepStart, Key: "guest:vc/vm-1"},
			{T: t0, Run: "old", Type: recActionStart, Key: "guest:vc/vm-1", Action: "shutdown"},
			{T: t0, Run: "old", Type: recActionSent, Key: "guest:vc/vm-1", Action: "shutdown"},
		} {
			if err := j.append(&r); err != nil {
				t.Fatal(err)
			}
		}
		// The shutdown request was accepted before the crash.
		if err := f.ShutdownGuest(t.Context(), "vm-1"); err != nil {
			t.Fatal(err)
		}
		pl := fleetPlan(t, f, nil)
		rep := mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{Journal: j})
		if rep.RunID != "old" || !rep.Resumed || !slices.Equal(rep.Missing, []string{"guest:vc/vm-old"}) {
			t.Errorf("run %s resumed %v missing %v", rep.RunID, rep.Resumed, rep.Missing)
		}
		if n := f.Calls(fake.OpShutdownGuest, "vm-1"); n != 1 {
			t.Errorf("the accepted shutdown was sent again (%d calls)", n)
		}
		if r := result(t, rep, "guest:vc/vm-1"); r.Outcome != OutcomeDone || r.End.Sub(t0) != 5*s || !r.Resumed {
			t.Errorf("vm-1: %+v, want done at 5s (waited, not asked again)", r)
		}
		if r := result(t, rep, "guest:vc/vm-2"); r.Outcome != OutcomeDone || r.Resumed {
			t.Errorf("vm-2 (new in the plan): %+v", r)
		}
	})
}

// An accepted shutdown request survives any number of restarts: a resume
// that is itself killed before the guest is off must not leave a journal
// that makes the next resume ask again (found by the chaos suite).
func TestExecResumeTwiceDoesNotAskAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := fake.New(fake.Fleet{Guests: []fake.GuestSpec{{ID: "vm-1", ShutdownDelay: 30 * s}}})
		defer f.Close()
		j := openJournal(t, filepath.Join(t.TempDir(), "journal"))
		defer j.Close()
		pl := fleetPlan(t, f, nil)
		// First life: the request is accepted, then the process dies.
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(5*s, cancel)
		if _, err := Execute(ctx, pl, Targets{"vc": f}, ExecOptions{Journal: j, StopOnCancel: true}); err == nil {
			t.Fatal("the first life was not stopped")
		}
		// Second life: resumed, killed again while waiting.
		ctx, cancel = context.WithCancel(t.Context())
		time.AfterFunc(5*s, cancel)
		rep, _ := Execute(ctx, pl, Targets{"vc": f}, ExecOptions{Journal: j, StopOnCancel: true})
		if rep == nil || !rep.Resumed {
			t.Fatal("the second life did not resume")
		}
		// Third life: runs to the end.
		rep = mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{Journal: j})
		if !rep.Resumed {
			t.Error("the third life did not resume")
		}
		if n := f.Calls(fake.OpShutdownGuest, "vm-1"); n != 1 {
			t.Errorf("ShutdownGuest sent %d times over three lives, want once", n)
		}
		if r := result(t, rep, "guest:vc/vm-1"); r.Outcome != OutcomeDone {
			t.Errorf("vm-1: %+v", r)
		}
	})
}

// A drill's pending run is not resumed by a real shutdown (and the other way
// round).
func TestExecResumeOnlySameKind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl, mod := siteFleet()
		f := fake.New(fl)
		defer f.Close()
		j := openJournal(t, filepath.Join(t.TempDir(), "journal"))
		defer j.Close()
		pl := fleetPlan(t, f, mod)
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(10*s, cancel)
		drill, _ := Execute(ctx, pl, Targets{"vc": f}, ExecOptions{Journal: j, Only: []string{"web"}, StopOnCancel: true})
		rep := mustExecute(t, t.Context(), pl, Targets{"vc": f}, ExecOptions{Journal: j})
		if rep.Resumed || rep.RunID == drill.RunID {
			t.Errorf("a real shutdown resumed the drill %s", drill.RunID)
		}
		if rs, ok := j.Pending(); !ok || rs.ID != drill.RunID || !slices.Equal(rs.Only, []string{"web"}) {
			t.Errorf("the drill's run should still be pending: %v %v", rs.ID, ok)
		}
	})
}

// fullDisk lets limit bytes through, then fails writes with ENOSPC.
type fullDisk struct {
	f     *os.File
	limit int
}

func (d *fullDisk) Write(p []byte) (int, error) {
	if len(p) > d.limit {
		n, _ := d.f.Write(p[:d.limit])
		d.limit = 0
		return n, syscall.ENOSPC
	}
	d.limit -= len(p)
	return d.f.Write(p)
}
func (d *fullDisk) Sync() error               { return d.f.Sync() }
func (d *fullDisk) Truncate(size int64) error { return d.f.Truncate(size) }
func (d *fullDisk) Close() error              { return d.f.Close() }

// A full disk: the journal error is logged once, loudly, reported, and the
// shutdown runs exactly as without a journal.
func TestExecJournalDiskFull(t *testing.T) {
	var plain timeline
	synctest.Test(t, func(t *testing.T) { plain, _ = siteRun(t, ExecOptions{}, 0) })
	// Room for the run-start record (with the plan) and a few more.
	const diskLimit = 8000
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "journal")
		j := openJournal(t, path)
		j.f = &fullDisk{f: j.f.(*os.File), limit: diskLimit}
		defer j.Close()
		var logs syncBuffer
		tl, rep := siteRun(t, ExecOptions{Journal: j, Log: slog.New(slog.NewTextHandler(&logs, nil))}, 0)
		if !strings.Contains(rep.JournalErr, "no space left on device") {
			t.Errorf("JournalErr %q", rep.JournalErr)
		}
		if n := strings.Count(logs.String(), "JOURNAL WRITE FAILED"); n != 1 {
			t.Errorf("journal failure logged %d times:\n%s", n, logs.String())
		}
		if d := cmp.Diff(plain, tl); d != "" {
			t.Errorf("the full disk changed the shutdown (-plain +full):\n%s", d)
		}
		// What was written is whole: the partial line was taken back.
		j2 := openJournal(t, path)
		defer j2.Close()
		if fi, _ := os.Stat(path); fi.Size() > diskLimit || j2.Skipped() != 0 {
			t.Errorf("journal after the failure: %d bytes, %d bad lines", fi.Size(), j2.Skipped())
		}
		if _, ok := j2.Pending(); !ok {
			t.Error("the cut-off run should read as pending")
		}
	})
}

// A failing fsync counts as a failed write.
func TestJournalSyncError(t *testing.T) {
	j := newJournal("x", syncFails{})
	err := j.append(&record{Run: "r", Type: recRunStart})
	if err == nil || !strings.Contains(err.Error(), "input/output error") {
		t.Fatalf("append: %v", err)
	}
	if err2 := j.append(&record{Run: "r", Type: recRunDone}); err2 == nil || err2.Error() != err.Error() {
		t.Errorf("second append: %v (the error should stick)", err2)
	}
}

type syncFails struct{ nopFile }

func (syncFails) Sync() error { return syscall.EIO }

// History learned from real runs feeds the plan's estimate.
func TestJournalHistoryFromRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		j := openJournal(t, filepath.Join(t.TempDir(), "journal"))
		defer j.Close()
		run := func(delay time.Duration, deaf bool) {
			f := fake.New(fake.Fleet{Guests: []fake.GuestSpec{{ID: "vm-1", ShutdownDelay: delay, IgnoreShutdown: deaf}}})
			defer f.Close()
			mustExecute(t, t.Context(), fleetPlan(t, f, nil), Targets{"vc": f}, ExecOptions{Journal: j})
		}
		for _, d := range []time.Duration{90, 12, 14, 11, 60, 13} {
			run(d*s, false)
		}
		run(0, true) // escalated: not learned
		h := j.History()
		if h["guest:vc/vm-1"] != 13*s {
			t.Errorf("history %v, want the median of 12, 14, 11, 60, 13 = 13s", h)
		}
		f := fake.New(fake.Fleet{Guests: []fake.GuestSpec{{ID: "vm-1"}}})
		defer f.Close()
		pl := fleetPlan(t, f, func(sp *Spec) { sp.History = h })
		if st := pl.Steps[0]; st.Estimate != 13*s || !st.Learned {
			t.Errorf("planned estimate %v learned %v", st.Estimate, st.Learned)
		}
	})
}

// The daemon runs the self host's shutdown as a second Execute on the same
// journal. A crash during that second run is resumed by it, not by the
// first plan (which shares no step with it).
func TestExecResumeMatchesSteps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := fake.New(fake.Fleet{
			Hosts:  []fake.HostSpec{{ID: "h1"}, {ID: "h2", ShutdownDelay: 5 * s}},
			Guests: []fake.GuestSpec{{ID: "vm-1", HostID: "h1", ShutdownDelay: 5 * s}},
		})
		defer f.Close()
		path := filepath.Join(t.TempDir(), "journal")
		j := openJournal(t, path)
		pl := fleetPlan(t, f, func(sp *Spec) {
			sp.Targets[0].ShutdownHosts, sp.Targets[0].HostShutdownTimeout = true, 60*s
		})
		// rest: everything but host-off h2; self: host-off h2 alone.
		hi, _ := pl.Lookup("host-off:vc/h2")
		rest := &Plan{Groups: pl.Groups, Caps: pl.Caps}
		for _, st := range pl.Steps {
			if st.ID != hi {
				st.Deps = slices.DeleteFunc(slices.Clone(st.Deps), func(d int) bool { return d == hi })
				rest.Steps = append(rest.Steps, st)
			}
		}
		self := &Plan{Steps: []Step{pl.Steps[hi]}, Caps: pl.Caps}
		self.Steps[0].ID, self.Steps[0].Deps = 0, nil
		if hi != len(pl.Steps)-1 {
			t.Fatalf("host-off:vc/h2 is not the last step")
		}
		first := mustExecute(t, t.Context(), rest, Targets{"vc": f}, ExecOptions{Journal: j})
		// The self run dies before its step ends (hung call, then killed).
		f.Hang(fake.OpShutdownHost, true)
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(3*s, cancel)
		second, err := Execute(ctx, self, Targets{"vc": f}, ExecOptions{Journal: j, StopOnCancel: true})
		if err == nil {
			t.Fatal("the self run was not stopped")
		}
		f.Hang(fake.OpShutdownHost, false)
		j.Close()

		if h, err := ReadHistory(path); err != nil || h["guest:vc/vm-1"] != 5*s {
			t.Errorf("ReadHistory: %v %v", h, err)
		}
		if rs, ok, err := ReadPending(path); err != nil || !ok || rs.ID != second.RunID {
			t.Fatalf("ReadPending: %v %v %v", rs.ID, ok, err)
		}
		j = openJournal(t, path)
		defer j.Close()
		again := mustExecute(t, t.Context(), rest, Targets{"vc": f}, ExecOptions{Journal: j})
		if again.Resumed || again.RunID == first.RunID || again.RunID == second.RunID {
			t.Errorf("the rest plan resumed run %s (resumed %v)", again.RunID, again.Resumed)
		}
		last := mustExecute(t, t.Context(), self, Targets{"vc": f}, ExecOptions{Journal: j})
		if !last.Resumed || last.RunID != second.RunID || last.Steps[0].Outcome != OutcomeDone {
			t.Errorf("self run: resumed %v run %s outcome %s, want run %s resumed and done", last.Resumed, last.RunID, last.Steps[0].Outcome, second.RunID)
		}
		if _, ok := j.Pending(); ok {
			t.Error("a run is still pending")
		}
	})
}
