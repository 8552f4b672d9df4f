package plan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Journal is the executor's append-only record of a shutdown: one JSON
// object per line, each written and fsynced before the action it announces,
// so that a sundown restarted in the middle of a shutdown knows what it had
// done (Pending) and carries on with the same run instead of starting over.
// It also remembers how long steps took (History), which the planner uses as
// estimates.
//
// A record looks like
//
//	{"t":"2026-03-01T10:00:00.123456789Z","run":"20260301T100000Z-8f3a","type":"step-start","key":"guest:vc/vm-42"}
//
// with "type" one of run-start (with "keys", the plan's step keys, "only"
// for a drill, "kind" — "" for a shutdown, "shed" for a load-shedding
// stage, "drill", or "restore" with "of", the run it undoes — and, for the
// runs a restore may undo, "steps", the plan itself: what a restore needs
// when the inventory is gone with the hosts), run-resume (a restarted sundown continues the run;
// "keys" replaces the run's keys), step-start, action-start ("action" and
// "index" in the guest's chain, or "maintenance", "host-shutdown" with
// "force", "hook"), action-sent (a graceful shutdown request was accepted:
// after a restart it is not sent again), action-end ("outcome" escalate,
// done, failed or already-off, "err"), step-end ("outcome", "action", "err", "elapsed"
// seconds, "resumed"), run-done (also written by Abandon, with "note").
//
// The file is never rewritten, only appended to (it grows by about 150 bytes
// per record, four or five records per guest and run). A line torn by a
// crash at the end of the file is dropped when the journal is opened, and
// the file is truncated to its last complete line; any other line that does
// not parse is skipped and counted (Skipped).
//
// A Journal is safe for concurrent use. Concurrent appends share fsyncs
// (group commit): each append returns once its own record is on disk.
type Journal struct {
	path string

	mu         sync.Mutex // guards the fields below and the file offset
	f          journalFile
	size       int64
	seq        int64 // records written
	err        error // sticky write error: nothing is written after it
	closed     bool
	runs       map[string]*runState // runs without run-done
	order      []string             // run IDs in order of run-start
	unrestored []*FinishedRun       // finished runs since the last full restore, oldest first
	hist       map[string][]time.Duration
	skipped    int

	syncMu sync.Mutex // serialises fsyncs
	synced int64      // guarded by syncMu: records known to be on disk
}

// journalFile is what the Journal needs from its file; tests replace it to
// simulate a full disk.
type journalFile interface {
	io.Writer
	Sync() error
	Truncate(size int64) error
	Close() error
}

// historyDepth is how many successful durations History keeps per key.
const historyDepth = 5

// Journal record types.
const (
	recRunStart    = "run-start"
	recRunResume   = "run-resume"
	recStepStart   = "step-start"
	recActionStart = "action-start"
	recActionSent  = "action-sent"
	recActionEnd   = "action-end"
	recStepEnd     = "step-end"
	recRunDone     = "run-done"
)

// record is one line of the journal.
type record struct {
	T       time.Time  `json:"t"`
	Run     string     `json:"run"`
	Type    string     `json:"type"`
	Key     string     `json:"key,omitempty"`
	Keys    []string   `json:"keys,omitempty"`
	Only    []string   `json:"only,omitempty"`
	Action  string     `json:"action,omitempty"`
	Index   int        `json:"index,omitempty"`
	Force   bool       `json:"force,omitempty"`
	Outcome Outcome    `json:"outcome,omitempty"`
	Err     string     `json:"err,omitempty"`
	Elapsed float64    `json:"elapsed,omitempty"` // seconds
	Resumed bool       `json:"resumed,omitempty"`
	Note    string     `json:"note,omitempty"`
	RunKind string     `json:"kind,omitempty"`
	Of      string     `json:"of,omitempty"`
	Steps   []SnapStep `json:"steps,omitempty"`
}

// Run kinds, as the journal records them.
const (
	RunShutdown = ""        // the shutdown of the site
	RunShed     = "shed"    // a load-shedding stage
	RunDrill    = "drill"   // a rehearsal on some groups
	RunRestore  = "restore" // bringing back what a run turned off
)

// SnapStep is one step of a shutdown plan as the journal keeps it, so that
// a restore can reverse the plan after sundown restarted.
type SnapStep struct {
	Key      string `json:"key"`
	Kind     string `json:"kind"`
	Name     string `json:"name,omitempty"`
	Group    string `json:"group,omitempty"`
	Target   string `json:"target,omitempty"`
	HostID   string `json:"host,omitempty"`
	HostName string `json:"host_name,omitempty"`
	GuestID  string `json:"guest,omitempty"`
	Deps     []int  `json:"deps,omitempty"`
	Note     string `json:"note,omitempty"`
}

// Snapshot returns the plan's steps in the journal's form.
func (p *Plan) Snapshot() []SnapStep {
	out := make([]SnapStep, len(p.Steps))
	for i, st := range p.Steps {
		out[i] = SnapStep{Key: st.Key, Kind: st.Kind.String(), Name: st.Name, Group: st.Group, Target: st.Target,
			HostID: st.HostID, HostName: st.HostName, GuestID: st.GuestID, Deps: st.Deps, Note: st.Note}
	}
	return out
}

// FinishedRun is a run that ended (run-done), as the journal knows it.
type FinishedRun struct {
	ID      string
	Kind    string // RunShutdown, RunShed or RunDrill
	Only    []string
	Started time.Time
	Ended   time.Time
	// Steps is the plan the run executed (nil for a run written by an
	// older sundown); Outcomes the steps that ended, by key.
	Steps    []SnapStep
	Outcomes map[string]StepState
}

// StepState is what the journal knows of one step of a run.
type StepState struct {
	Key string
	// Outcome is set for a step that ended; "" while it runs.
	Outcome Outcome
	// Action is the last action started: a guest action's name
	// ("shutdown", "poweroff", …), "maintenance", "host-shutdown" or
	// "hook"; "" when none was. Index is its position in the guest's chain.
	Action string
	Index  int
	// Sent: the last action's request was accepted (a graceful shutdown
	// asked for); resuming waits for it instead of asking again.
	Sent bool
	// Err is the step's (or, while it runs, the last action's) error.
	Err string
	// Start is when the step (last) started, End when it ended.
	Start, End time.Time
}

// RunState is a run that has no run-done record: sundown stopped in its
// middle.
type RunState struct {
	ID      string
	Started time.Time
	// Keys are the step keys of the run's plan (of the last resume).
	Keys []string
	// Only are the groups of a drill; empty for a real shutdown.
	Only []string
	// Ended are the steps that ended, by key; InFlight those that started
	// and did not end.
	Ended    map[string]StepState
	InFlight map[string]StepState
}

type runState struct {
	id       string
	started  time.Time
	keys     []string
	only     []string
	kind     string
	of       string
	steps    []SnapStep
	ended    map[string]StepState
	inflight map[string]StepState
}

// OpenJournal opens (creating it, and its folder, when needed) the journal
// at path with mode 0600 and reads what it holds. A torn last line is
// dropped and the file truncated to its last complete line.
func OpenJournal(path string) (*Journal, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read journal %s: %w", path, err)
	}
	j := newJournal(path, f)
	good := j.load(data)
	if good < int64(len(data)) {
		// A crash tore the last line: cut it so the next record starts on
		// a line of its own.
		if err := f.Truncate(good); err != nil {
			f.Close()
			return nil, fmt.Errorf("truncate torn journal %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("sync journal %s: %w", path, err)
		}
	}
	j.size = good
	if errors.Is(statErr, os.ErrNotExist) {
		// Make the new file's directory entry durable too.
		if d, err := os.Open(filepath.Dir(path)); err == nil {
			d.Sync()
			d.Close()
		}
	}
	return j, nil
}

// ReadHistory reads the journal at path without opening it for writing
// (nothing is created or repaired) and returns its History.
func ReadHistory(path string) (map[string]time.Duration, error) {
	j, err := ReadJournal(path)
	if err != nil {
		return nil, err
	}
	return j.History(), nil
}

// ReadPending reads the journal at path without opening it for writing and
// returns its Pending run.
func ReadPending(path string) (RunState, bool, error) {
	j, err := ReadJournal(path)
	if err != nil {
		return RunState{}, false, err
	}
	rs, ok := j.Pending()
	return rs, ok, nil
}

// ReadJournal reads the journal at path without opening it for writing
// (nothing is created or repaired): a snapshot to query (Pending, History,
// Unrestored); appends to it fail.
func ReadJournal(path string) (*Journal, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read journal %s: %w", path, err)
	}
	j := newJournal(path, nil)
	j.closed = true
	j.load(data)
	return j, nil
}

func newJournal(path string, f journalFile) *Journal {
	return &Journal{path: path, f: f, runs: map[string]*runState{}, hist: map[string][]time.Duration{}}
}

// load applies the records in data and returns the length of its complete
// lines.
func (j *Journal) load(data []byte) int64 {
	var off int64
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break // torn last line
		}
		line := data[:i]
		data = data[i+1:]
		off += int64(i + 1)
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var r record
		if err := json.Unmarshal(line, &r); err != nil || r.Type == "" || r.Run == "" {
			j.skipped++
			continue
		}
		j.apply(&r)
	}
	return off
}

// Path returns the journal's file name.
func (j *Journal) Path() string { return j.path }

// Skipped returns how many lines (other than a torn last one) did not parse
// when the journal was opened.
func (j *Journal) Skipped() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.skipped
}

// apply updates the in-memory state with r. j.mu is held (or j is not
// shared yet).
func (j *Journal) apply(r *record) {
	if r.Type == recRunStart {
		if _, dup := j.runs[r.Run]; !dup {
			j.order = append(j.order, r.Run)
		}
		j.runs[r.Run] = &runState{id: r.Run, started: r.T, keys: r.Keys, only: r.Only, kind: r.RunKind, of: r.Of,
			steps: r.Steps, ended: map[string]StepState{}, inflight: map[string]StepState{}}
		return
	}
	run := j.runs[r.Run]
	if run == nil {
		return // a record of a run that is done, or whose start is lost
	}
	switch r.Type {
	case recRunResume:
		run.keys = r.Keys
	case recStepStart:
		st, ok := run.inflight[r.Key]
		if !ok || !r.Resumed {
			st = StepState{Key: r.Key}
		}
		st.Start = r.T
		run.inflight[r.Key] = st
	case recActionStart:
		st := run.inflight[r.Key]
		st.Key, st.Action, st.Index, st.Sent, st.Err = r.Key, r.Action, r.Index, false, ""
		run.inflight[r.Key] = st
	case recActionSent:
		if st, ok := run.inflight[r.Key]; ok {
			st.Sent = true
			run.inflight[r.Key] = st
		}
	case recActionEnd:
		if st, ok := run.inflight[r.Key]; ok {
			st.Err = r.Err
			run.inflight[r.Key] = st
		}
	case recStepEnd:
		st := run.inflight[r.Key]
		delete(run.inflight, r.Key)
		st.Key, st.Outcome, st.Action, st.Err, st.End = r.Key, r.Outcome, r.Action, r.Err, r.T
		run.ended[r.Key] = st
		if r.Outcome == OutcomeDone && !r.Resumed && r.Elapsed >= 0 {
			h := append(j.hist[r.Key], time.Duration(r.Elapsed*float64(time.Second)))
			if len(h) > historyDepth {
				h = h[len(h)-historyDepth:]
			}
			j.hist[r.Key] = h
		}
	case recRunDone:
		switch {
		case strings.HasPrefix(r.Note, "abandoned"):
		case run.kind == RunRestore:
			if len(run.only) == 0 {
				j.unrestored = nil // everything is back
			}
		default:
			j.unrestored = append(j.unrestored, &FinishedRun{ID: run.id, Kind: run.kind, Only: run.only, Started: run.started,
				Ended: r.T, Steps: run.steps, Outcomes: run.ended})
			if len(j.unrestored) > maxUnrestored {
				j.unrestored = j.unrestored[len(j.unrestored)-maxUnrestored:]
			}
		}
		delete(j.runs, r.Run)
		if i := slices.Index(j.order, r.Run); i >= 0 {
			j.order = slices.Delete(j.order, i, i+1)
		}
	}
}

// Pending returns the last run that has no run-done record, if any: a
// shutdown (or shed stage, or drill) sundown did not finish (it crashed or
// was killed). An unfinished restore is not pending: a restore is planned
// afresh from the run it undoes, and powering on twice is harmless.
func (j *Journal) Pending() (RunState, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	var r *runState
	for i := len(j.order) - 1; i >= 0 && r == nil; i-- {
		if c := j.runs[j.order[i]]; c.kind != RunRestore {
			r = c
		}
	}
	if r == nil {
		return RunState{}, false
	}
	rs := RunState{
		ID: r.id, Started: r.started, Keys: slices.Clone(r.keys), Only: slices.Clone(r.only),
		Ended: make(map[string]StepState, len(r.ended)), InFlight: make(map[string]StepState, len(r.inflight)),
	}
	for k, v := range r.ended {
		rs.Ended[k] = v
	}
	for k, v := range r.inflight {
		rs.InFlight[k] = v
	}
	return rs, true
}

// maxUnrestored bounds how many finished runs the journal remembers for
// the next restore.
const maxUnrestored = 16

// Unrestored returns the runs (shutdowns, shed stages, drills) that ended
// since the last restore of everything ended, oldest first (abandoned runs
// do not count): what the next restore brings back.
func (j *Journal) Unrestored() []FinishedRun {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]FinishedRun, len(j.unrestored))
	for i, r := range j.unrestored {
		f := *r
		f.Only = slices.Clone(f.Only)
		f.Steps = slices.Clone(f.Steps)
		f.Outcomes = make(map[string]StepState, len(r.Outcomes))
		for k, v := range r.Outcomes {
			f.Outcomes[k] = v
		}
		out[i] = f
	}
	return out
}

// MergeRuns folds finished runs into one for RestorePlan: the plan of the
// newest run that has one (the widest, usually the full shutdown), and per
// step the outcome that says sundown turned it off, if any run did (a shed
// stage stops a guest that the full shutdown then finds already off: it
// must come back). ok is false when no run has a plan.
func MergeRuns(runs []FinishedRun) (FinishedRun, bool) {
	var m FinishedRun
	for i := len(runs) - 1; i >= 0; i-- {
		if len(runs[i].Steps) > 0 {
			m = runs[i]
			break
		}
	}
	if m.Steps == nil {
		return FinishedRun{}, false
	}
	m.Outcomes = map[string]StepState{}
	for _, r := range runs {
		for k, st := range r.Outcomes {
			prev, seen := m.Outcomes[k]
			if !seen || (!turnedOff(prev.Outcome) && turnedOff(st.Outcome)) || (turnedOff(st.Outcome) && st.End.After(prev.End)) {
				m.Outcomes[k] = st
			}
		}
	}
	return m, true
}

func turnedOff(o Outcome) bool {
	return o == OutcomeDone || o == OutcomeEscalated || o == OutcomeFailed
}

// History returns learned durations by step key, for Spec.History: the
// median of the last five durations of steps that ended "done" (the first
// action worked; escalations, resumed steps, dry runs are left out). With an
// even count the median is the mean of the two middle values.
func (j *Journal) History() map[string]time.Duration {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make(map[string]time.Duration, len(j.hist))
	for k, ds := range j.hist {
		s := slices.Clone(ds)
		slices.Sort(s)
		n := len(s)
		if n%2 == 1 {
			out[k] = s[n/2]
		} else {
			out[k] = (s[n/2-1] + s[n/2]) / 2
		}
	}
	return out
}

// Abandon closes the pending run, if any, with a run-done record carrying
// note: sundown will not resume it. The daemon calls it when a pending run
// is stale (power came back and the site was restored), so that the next
// shutdown starts afresh instead of skipping guests that stopped last time.
func (j *Journal) Abandon(note string) error {
	rs, ok := j.Pending()
	if !ok {
		return nil
	}
	return j.append(&record{T: time.Now(), Run: rs.ID, Type: recRunDone, Note: "abandoned: " + note})
}

// Close closes the file. Appends after Close fail.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed || j.f == nil {
		return nil
	}
	j.closed = true
	if err := j.f.Close(); err != nil {
		return fmt.Errorf("close journal %s: %w", j.path, err)
	}
	return nil
}

// errJournalClosed is returned by appends after Close.
var errJournalClosed = errors.New("journal closed")

// append writes r and returns once it is on disk. After a write or sync
// error nothing more is written (a half-written line would sit in the middle
// of the file) and every append returns that error.
func (j *Journal) append(r *record) error {
	line, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("journal %s: encode record: %w", j.path, err)
	}
	line = append(line, '\n')

	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return fmt.Errorf("journal %s: %w", j.path, errJournalClosed)
	}
	if j.err != nil {
		err := j.err
		j.mu.Unlock()
		return err
	}
	n, err := j.f.Write(line)
	if err != nil {
		if n > 0 {
			// Best effort: take the partial line back.
			j.f.Truncate(j.size)
		}
		j.err = fmt.Errorf("write journal %s: %w", j.path, err)
		err = j.err
		j.mu.Unlock()
		return err
	}
	j.size += int64(n)
	j.seq++
	seq := j.seq
	j.apply(r)
	j.mu.Unlock()

	// Group commit: whoever holds syncMu syncs everything written so far.
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	if j.synced >= seq {
		return nil
	}
	j.mu.Lock()
	upTo, f := j.seq, j.f
	closed := j.closed
	j.mu.Unlock()
	if closed {
		return fmt.Errorf("journal %s: %w", j.path, errJournalClosed)
	}
	if err := f.Sync(); err != nil {
		j.mu.Lock()
		if j.err == nil {
			j.err = fmt.Errorf("sync journal %s: %w", j.path, err)
		}
		err = j.err
		j.mu.Unlock()
		return err
	}
	j.synced = upTo
	return nil
}
