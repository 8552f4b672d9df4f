package power

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// DefaultNoCommWarn is upsmon's NOCOMMWARNTIME default.
const DefaultNoCommWarn = 300 * time.Second

// TrackerOptions tune a Tracker.
type TrackerOptions struct {
	// NoCommWarn: NOCOMM is sent once there has been no good reading for
	// this long, and again every NoCommWarn while the silence lasts (like
	// upsmon's NOCOMMWARNTIME). 0 means DefaultNoCommWarn (300 s); a
	// negative value turns NOCOMM off.
	NoCommWarn time.Duration
	// RBWarn: REPLBATT is repeated this often while RB persists (upsmon's
	// RBWARNTIME is 12 h). 0 means REPLBATT is sent only when RB appears.
	RBWarn time.Duration
}

// Tracker is the pure state machine of one UPS. Feed it, in time order, every
// good reading (Observe), every failed poll (Fail) and a regular Tick; each
// returns the events the change caused, in a stable order. A Tracker reads no
// clock and starts nothing. It is not safe for concurrent use: one owner
// (the polling loop) feeds it and hands out State copies.
//
// Event rules, chosen to match upsmon:
//   - Events fire on changes only; a persisting condition is announced once.
//     NOCOMM (and REPLBATT with RBWarn) are the only reminders.
//   - The very first good reading is silent about good news: no COMMOK and
//     no ONLINE. Bad conditions present on first contact (ONBATT, LOWBATT,
//     FSD, REPLBATT, OFF, …) are announced. NOT* events need a previous
//     reading to contrast with.
//   - The first failure sends COMMBAD, also when the UPS was never reached
//     (an operator wants to know that a configured UPS cannot be read).
//     COMMOK follows when a good reading comes after a COMMBAD.
//   - A reading with no known ups.status token (empty, or only tokens such
//     as WAIT) carries no power information and counts as stale data, like
//     upsmon treating an empty status as a dead UPS.
type Tracker struct {
	opts TrackerOptions
	st   State

	commBad    bool      // COMMBAD sent and no COMMOK since
	failedAt   time.Time // first failure, the silence reference of a UPS never reached
	lastNoComm time.Time // last NOCOMM sent in the current silence
	lastRB     time.Time // last REPLBATT sent
}

// NewTracker returns the Tracker of the UPS called name, before first
// contact (Comm is CommUnknown).
func NewTracker(name string, opts TrackerOptions) *Tracker {
	if opts.NoCommWarn == 0 {
		opts.NoCommWarn = DefaultNoCommWarn
	}
	return &Tracker{
		opts: opts,
		st:   State{Name: name, Charge: Unknown, Runtime: UnknownRuntime, Load: Unknown},
	}
}

// State returns a copy of the current state.
func (t *Tracker) State() State { return t.st.clone() }

// Observe takes a good reading and returns the events it causes.
func (t *Tracker) Observe(r Reading) []Event {
	if r.Status.IsZero() {
		why := "ups.status is empty"
		if len(r.Unknown) > 0 {
			why = "ups.status has no known token: " + strings.Join(r.Unknown, " ")
		}
		return t.Fail(r.At, true, errors.New(why))
	}

	var ev []Event
	st := &t.st
	first := st.LastSeen.IsZero()

	if t.commBad {
		msg := "Communications with UPS " + st.Name + " established"
		if !st.LastSeen.IsZero() {
			msg = fmt.Sprintf("Communications with UPS %s re-established after %d s without data",
				st.Name, Seconds(max(r.At.Sub(st.LastSeen), 0)))
		}
		ev = append(ev, t.event(r.At, EventCommOK, msg))
		t.commBad = false
	}
	if st.Comm != CommOK {
		st.Comm = CommOK
		st.CommSince = r.At
	}
	st.CommErr = ""
	t.failedAt = time.Time{}
	t.lastNoComm = time.Time{}

	prev, cur := st.Status, r.Status
	prevAlarm, prevUnknown := st.Alarm, st.Unknown

	// Values first, so that messages show the new numbers.
	st.Status = cur
	st.Unknown = append([]string(nil), r.Unknown...)
	st.Charge, st.Runtime, st.Load = r.Charge, r.Runtime, r.Load
	st.Alarm = r.Alarm
	st.Vars = r.Vars
	if len(r.Vars) > 0 {
		st.Vars = make(map[string]string, len(r.Vars))
		for k, v := range r.Vars {
			st.Vars[k] = v
		}
	}
	if first {
		st.FirstSeen = r.At
	}
	st.LastSeen = r.At
	if first || cur != prev {
		st.Since = r.At
	}
	spell(&st.OBSince, cur.Has(OB), prev.Has(OB) && !first, r.At)
	spell(&st.OLSince, cur.Has(OL) && !cur.Has(OB), prev.Has(OL) && !prev.Has(OB) && !first, r.At)
	spell(&st.OffSince, cur.Has(OFF), prev.Has(OFF) && !first, r.At)
	spell(&st.AlarmSince, cur.Has(ALARM), prev.Has(ALARM) && !first, r.At)
	spell(&st.CalSince, cur.Has(CAL), prev.Has(CAL) && !first, r.At)
	st.ReplaceBattery = cur.Has(RB)

	rise := func(f Flag) bool { return cur.Has(f) && (first || !prev.Has(f)) }
	fall := func(f Flag) bool { return !first && prev.Has(f) && !cur.Has(f) }
	name := st.Name
	add := func(typ EventType, msg string) { ev = append(ev, t.event(r.At, typ, msg)) }
	withBattery := func(msg string) string {
		if b := st.Battery(); b != "" {
			return msg + " (" + b + ")"
		}
		return msg
	}

	if rise(OL) && !first {
		add(EventOnline, "UPS "+name+" on line power")
	}
	if rise(OB) {
		add(EventOnBatt, withBattery("UPS "+name+" on battery"))
	}
	if rise(LB) {
		add(EventLowBatt, withBattery("UPS "+name+" battery is low"))
	}
	if rise(FSD) {
		add(EventFSD, "UPS "+name+": forced shutdown in progress (FSD)")
	}
	if rise(RB) {
		add(EventReplBatt, "UPS "+name+" battery needs to be replaced")
		t.lastRB = r.At
	}
	pair := func(f Flag, on EventType, onMsg string, off EventType, offMsg string) {
		switch {
		case rise(f):
			add(on, "UPS "+name+onMsg)
		case fall(f):
			add(off, "UPS "+name+offMsg)
		}
	}
	pair(CAL, EventCal, ": calibration in progress", EventNotCal, ": calibration finished")
	pair(OFF, EventOff, " is OFF: not supplying its load", EventNotOff, " is no longer OFF")
	pair(BYPASS, EventBypass, " on bypass: no battery protection", EventNotBypass, " no longer on bypass")
	switch {
	case rise(ALARM), cur.Has(ALARM) && st.Alarm != prevAlarm:
		if st.Alarm != "" {
			add(EventAlarm, "UPS "+name+" alarm: "+st.Alarm)
		} else {
			add(EventAlarm, "UPS "+name+" has an active alarm")
		}
	case fall(ALARM):
		add(EventNotAlarm, "UPS "+name+" alarm cleared")
	}
	pair(ECO, EventEco, " in ECO mode", EventNotEco, " left ECO mode")
	overMsg := " is overloaded"
	if st.Load >= 0 {
		overMsg = fmt.Sprintf(" is overloaded (load %.0f %%)", st.Load)
	}
	pair(OVER, EventOver, overMsg, EventNotOver, " is no longer overloaded")
	pair(TRIM, EventTrim, " is trimming high input voltage", EventNotTrim, " stopped trimming input voltage")
	pair(BOOST, EventBoost, " is boosting low input voltage", EventNotBoost, " stopped boosting input voltage")
	switch u := strings.Join(st.Unknown, " "); {
	case u != "" && u != strings.Join(prevUnknown, " "):
		add(EventOther, "UPS "+name+" reports unknown status: "+u)
	case u == "" && len(prevUnknown) > 0 && !first:
		add(EventNotOther, "UPS "+name+" no longer reports unknown status")
	}
	return ev
}

// spell keeps the start time of a condition: set at its start, kept while
// it lasts, zeroed when it ends.
func spell(since *time.Time, now, before bool, at time.Time) {
	switch {
	case !now:
		*since = time.Time{}
	case !before || since.IsZero():
		*since = at
	}
}

// Fail records a poll that brought no usable data at time at: stale means the
// server answered without fresh data (ERR DATA-STALE, DRIVER-NOT-CONNECTED),
// otherwise there was no answer (Comm becomes CommLost). The last known
// status and LastSeen are kept. The first failure sends COMMBAD; NOCOMM
// follows as in Tick.
func (t *Tracker) Fail(at time.Time, stale bool, err error) []Event {
	var ev []Event
	st := &t.st
	comm := CommLost
	if stale {
		comm = CommStale
	}
	st.CommErr = shortErr(err, stale)
	if st.Comm != comm {
		st.Comm = comm
		st.CommSince = at
	}
	if st.LastSeen.IsZero() && t.failedAt.IsZero() {
		t.failedAt = at
	}
	if !t.commBad {
		t.commBad = true
		ev = append(ev, t.event(at, EventCommBad, "Communications with UPS "+st.Name+" lost: "+st.CommErr))
	}
	return append(ev, t.reminders(at)...)
}

// Tick lets time pass without news: it sends NOCOMM once there has been no
// good reading for NoCommWarn (counted from LastSeen, or from the first
// failure for a UPS never reached), and again every NoCommWarn after that,
// and repeats REPLBATT every RBWarn while RB persists.
func (t *Tracker) Tick(now time.Time) []Event { return t.reminders(now) }

func (t *Tracker) reminders(now time.Time) []Event {
	var ev []Event
	st := &t.st
	if w := t.opts.NoCommWarn; w > 0 {
		ref := st.LastSeen
		if ref.IsZero() {
			ref = t.failedAt
		}
		if !ref.IsZero() && now.Sub(ref) >= w && (t.lastNoComm.IsZero() || now.Sub(t.lastNoComm) >= w) {
			t.lastNoComm = now
			msg := fmt.Sprintf("UPS %s is unavailable: no data for %d s", st.Name, Seconds(now.Sub(ref)))
			if st.CommErr != "" {
				msg += " (" + st.CommErr + ")"
			}
			ev = append(ev, t.event(now, EventNoComm, msg))
		}
	}
	if w := t.opts.RBWarn; w > 0 && st.ReplaceBattery && now.Sub(t.lastRB) >= w {
		t.lastRB = now
		ev = append(ev, t.event(now, EventReplBatt, "UPS "+st.Name+" battery needs to be replaced"))
	}
	return ev
}

func (t *Tracker) event(at time.Time, typ EventType, msg string) Event {
	return Event{At: at, UPS: t.st.Name, Type: typ, Message: msg}
}

func shortErr(err error, stale bool) string {
	if err == nil {
		if stale {
			return "data stale"
		}
		return "no connection"
	}
	if s := cleanText(err.Error(), 160); s != "" {
		return s
	}
	return "unknown error"
}
