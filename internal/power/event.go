package power

import "time"

// EventType names an event exactly like upsmon's notify types (upsmon.conf(5)
// NOTIFYFLAG / NOTIFYMSG), so NOTIFYCMD-style scripts and operators recognise
// them.
type EventType string

// Notify types of NUT 2.8 upsmon. ECO/NOTECO, ALARM/NOTALARM and
// OTHER/NOTOTHER arrived in NUT 2.8.3.
const (
	EventOnline    EventType = "ONLINE"    // UPS back on line power (not sent on first contact, like upsmon)
	EventOnBatt    EventType = "ONBATT"    // UPS on battery
	EventLowBatt   EventType = "LOWBATT"   // UPS battery is low (LB)
	EventFSD       EventType = "FSD"       // forced shutdown flag set
	EventCommOK    EventType = "COMMOK"    // communications re-established after COMMBAD
	EventCommBad   EventType = "COMMBAD"   // communications lost
	EventShutdown  EventType = "SHUTDOWN"  // system shutdown in progress (sent by the daemon, never by a Tracker)
	EventReplBatt  EventType = "REPLBATT"  // battery needs to be replaced (RB)
	EventNoComm    EventType = "NOCOMM"    // UPS unavailable for NoCommWarn, repeated
	EventNoParent  EventType = "NOPARENT"  // upsmon's parent process died (never sent by a Tracker; kept for parity)
	EventCal       EventType = "CAL"       // calibration started
	EventNotCal    EventType = "NOTCAL"    // calibration ended
	EventOff       EventType = "OFF"       // UPS is OFF (not supplying its load)
	EventNotOff    EventType = "NOTOFF"    // UPS no longer OFF
	EventBypass    EventType = "BYPASS"    // UPS on bypass
	EventNotBypass EventType = "NOTBYPASS" // UPS no longer on bypass
	EventAlarm     EventType = "ALARM"     // alarm raised (or its text changed)
	EventNotAlarm  EventType = "NOTALARM"  // alarm cleared
	EventEco       EventType = "ECO"       // ECO mode entered
	EventNotEco    EventType = "NOTECO"    // ECO mode left
	EventOther     EventType = "OTHER"     // ups.status carries tokens this package does not know
	EventNotOther  EventType = "NOTOTHER"  // no unknown tokens any more
)

// Notify types that upsmon does not have, named in the same style for the
// remaining ups.status flags (sundown extensions).
const (
	EventOver     EventType = "OVER"     // UPS overloaded
	EventNotOver  EventType = "NOTOVER"  // UPS no longer overloaded
	EventTrim     EventType = "TRIM"     // trimming high input voltage
	EventNotTrim  EventType = "NOTTRIM"  // no longer trimming
	EventBoost    EventType = "BOOST"    // boosting low input voltage
	EventNotBoost EventType = "NOTBOOST" // no longer boosting
)

// EventTypes returns every event type, upsmon's first, then the extensions.
func EventTypes() []EventType {
	return []EventType{
		EventOnline, EventOnBatt, EventLowBatt, EventFSD, EventCommOK, EventCommBad,
		EventShutdown, EventReplBatt, EventNoComm, EventNoParent, EventCal, EventNotCal,
		EventOff, EventNotOff, EventBypass, EventNotBypass, EventAlarm, EventNotAlarm,
		EventEco, EventNotEco, EventOther, EventNotOther,
		EventOver, EventNotOver, EventTrim, EventNotTrim, EventBoost, EventNotBoost,
	}
}

// Event is one change of a UPS, e.g. {ONBATT, "UPS main on battery (charge
// 97 %, runtime 1260 s)"}.
type Event struct {
	At      time.Time
	UPS     string
	Type    EventType
	Message string
}

// String returns "TYPE: message".
func (e Event) String() string { return string(e.Type) + ": " + e.Message }
