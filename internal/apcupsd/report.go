package apcupsd

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// STATFLAG bits, as in apcupsd's include/defines.h (3.14).
const (
	FlagCalibration  uint32 = 0x00000001
	FlagTrim         uint32 = 0x00000002
	FlagBoost        uint32 = 0x00000004
	FlagOnline       uint32 = 0x00000008
	FlagOnBatt       uint32 = 0x00000010
	FlagOverload     uint32 = 0x00000020
	FlagBattLow      uint32 = 0x00000040
	FlagReplaceBatt  uint32 = 0x00000080
	FlagCommLost     uint32 = 0x00000100
	FlagShutdown     uint32 = 0x00000200
	FlagSlave        uint32 = 0x00000400
	FlagSlaveDown    uint32 = 0x00000800
	FlagOnBattMsg    uint32 = 0x00020000
	FlagFastPoll     uint32 = 0x00040000
	FlagShutLoad     uint32 = 0x00080000
	FlagShutBTime    uint32 = 0x00100000
	FlagShutLTime    uint32 = 0x00200000
	FlagShutEmerg    uint32 = 0x00400000
	FlagShutRemote   uint32 = 0x00800000
	FlagPlugged      uint32 = 0x01000000
	FlagDevSetup     uint32 = 0x02000000
	FlagBattPresent  uint32 = 0x04000000
	flagShutdownBits        = FlagShutdown | FlagShutLoad | FlagShutBTime | FlagShutLTime | FlagShutEmerg | FlagShutRemote
)

// Report is one status answer.
type Report struct {
	// Fields holds every record as key → value, both trimmed of
	// surrounding blanks ("STATUS" → "ONLINE"), including the APC header
	// and END APC.
	Fields map[string]string
	// Status is the raw STATUS value, trimmed ("ONLINE", "SHUTTING DOWN").
	Status string
	// StatFlag is the STATFLAG bit mask; HasStatFlag says whether the
	// answer had a valid one.
	StatFlag    uint32
	HasStatFlag bool
	// Charge is BCHARGE in percent, -1 when unknown.
	Charge float64
	// TimeLeft is TIMELEFT, negative when unknown.
	TimeLeft time.Duration
	// Load is LOADPCT in percent, -1 when unknown.
	Load float64
	// Model (MODEL, else APCMODEL), Name (UPSNAME) and Serial (SERIALNO);
	// empty when absent.
	Model, Name, Serial string
	// Date is DATE, when apcupsd last polled its UPS; zero when absent or
	// in an unknown format.
	Date time.Time
}

// parseRecords turns the records of a status answer into a Report.
func parseRecords(recs [][]byte) (*Report, error) {
	r := &Report{Fields: make(map[string]string, len(recs)), Charge: -1, TimeLeft: -1, Load: -1}
	var (
		hdrRecs, hdrBytes int
		hasHeader         bool
		afterRecs         int
		afterBytes        int
	)
	for i, rec := range recs {
		if i > 0 && hasHeader {
			afterRecs++
			afterBytes += len(rec)
		}
		for line := range strings.Lines(string(rec)) {
			line = trimLineEnd(line)
			if line == "" {
				continue
			}
			key, val, err := splitLine(line)
			if err != nil {
				return nil, fmt.Errorf("record %d: %w", i+1, err)
			}
			if i == 0 && key == "APC" {
				hdrRecs, hdrBytes, err = parseHeader(val)
				if err != nil {
					return nil, fmt.Errorf("record 1: %w", err)
				}
				hasHeader = true
			}
			r.Fields[key] = val
		}
	}
	if hasHeader && (hdrRecs != afterRecs || hdrBytes != afterBytes) {
		return nil, fmt.Errorf("header announces %d records of %d bytes, got %d records of %d bytes: %w",
			hdrRecs, hdrBytes, afterRecs, afterBytes, ErrProtocol)
	}
	status, hasStatus := r.Fields["STATUS"]
	if sf, ok := r.Fields["STATFLAG"]; ok {
		r.StatFlag, r.HasStatFlag = parseStatFlag(sf)
	}
	if !hasStatus && !r.HasStatFlag {
		return nil, fmt.Errorf("answer has neither STATUS nor a valid STATFLAG: %w", ErrProtocol)
	}
	r.Status = status
	r.Charge = number(r.Fields["BCHARGE"])
	r.Load = number(r.Fields["LOADPCT"])
	if m := number(r.Fields["TIMELEFT"]); m >= 0 && m*float64(time.Minute) < math.MaxInt64 {
		r.TimeLeft = time.Duration(m * float64(time.Minute)).Round(time.Second)
	}
	r.Model = r.Fields["MODEL"]
	if r.Model == "" {
		r.Model = r.Fields["APCMODEL"]
	}
	r.Name = r.Fields["UPSNAME"]
	r.Serial = r.Fields["SERIALNO"]
	r.Date = parseDate(r.Fields["DATE"])
	return r, nil
}

// trimLineEnd drops what ends a record: "\n", "\r" and the NUL apcupsd
// sends after its error messages.
func trimLineEnd(s string) string {
	return strings.TrimRight(s, "\n\r\x00")
}

// checkText rejects control bytes (tab aside) inside a line.
func checkText(line string) error {
	for i := 0; i < len(line); i++ {
		if c := line[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return fmt.Errorf("control byte 0x%02x in line %s: %w", c, quote(line), ErrProtocol)
		}
	}
	return nil
}

// splitLine splits "KEY      : value" at its first ':'.
func splitLine(line string) (key, val string, err error) {
	if err := checkText(line); err != nil {
		return "", "", err
	}
	k, v, ok := strings.Cut(line, ":")
	if !ok {
		return "", "", fmt.Errorf("line without ':' separator: %s: %w", quote(line), ErrProtocol)
	}
	key = strings.TrimSpace(k)
	if key == "" {
		return "", "", fmt.Errorf("line without key: %s: %w", quote(line), ErrProtocol)
	}
	return key, strings.Trim(v, " \t"), nil
}

// quote shows a line from the network in an error, shortened.
func quote(s string) string {
	const max = 80
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// parseHeader reads the APC record's "001,059,1257": format revision,
// records that follow, bytes that follow.
func parseHeader(v string) (recs, bytes int, err error) {
	parts := strings.Split(v, ",")
	if len(parts) != 3 {
		return 0, 0, fmt.Errorf("APC header %s is not rev,records,bytes: %w", quote(v), ErrProtocol)
	}
	var n [3]int
	for i, p := range parts {
		x, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || x < 0 {
			return 0, 0, fmt.Errorf("APC header %s is not rev,records,bytes: %w", quote(v), ErrProtocol)
		}
		n[i] = x
	}
	return n[1], n[2], nil
}

// parseStatFlag reads "0x05000008" (older versions add " Status Flag").
func parseStatFlag(v string) (uint32, bool) {
	f, _, _ := strings.Cut(v, " ")
	f = strings.TrimPrefix(strings.TrimPrefix(f, "0x"), "0X")
	if f == "" {
		return 0, false
	}
	x, err := strconv.ParseUint(f, 16, 32)
	if err != nil {
		return 0, false
	}
	return uint32(x), true
}

// number reads the leading number of "47.3 Minutes"; -1 when absent or not
// a finite, non-negative number.
func number(v string) float64 {
	f, _, _ := strings.Cut(strings.TrimSpace(v), " ")
	x, err := strconv.ParseFloat(f, 64)
	if err != nil || x < 0 || math.IsInf(x, 0) || math.IsNaN(x) {
		return -1
	}
	return x
}

// parseDate reads apcupsd's DATE: "2026-11-21 05:49:14 +0000" (3.14) or
// "Sat Nov 21 05:49:14 UTC 2026" (older).
func parseDate(v string) time.Time {
	for _, layout := range []string{"2006-01-02 15:04:05 -0700", "Mon Jan 02 15:04:05 MST 2006", time.UnixDate} {
		if t, err := time.Parse(layout, v); err == nil {
			return t
		}
	}
	return time.Time{}
}

// CommLost reports whether apcupsd has lost contact with its UPS: the other
// values are then stale, and the caller should treat the UPS as silent.
func (r *Report) CommLost() bool {
	if r.HasStatFlag && r.StatFlag&FlagCommLost != 0 {
		return true
	}
	return strings.Contains(" "+r.Status+" ", " COMMLOST ")
}

// tokenBits is the STATFLAG → NUT token table, in output order after FSD.
var tokenBits = []struct {
	bit   uint32
	token string
}{
	{FlagOnline, "OL"},
	{FlagOnBatt, "OB"},
	{FlagBattLow, "LB"},
	{FlagReplaceBatt, "RB"},
	{FlagOverload, "OVER"},
	{FlagCalibration, "CAL"},
	{FlagTrim, "TRIM"},
	{FlagBoost, "BOOST"},
}

// statusWords maps STATUS words to the bit they stand for.
var statusWords = map[string]uint32{
	"CAL":         FlagCalibration,
	"TRIM":        FlagTrim,
	"BOOST":       FlagBoost,
	"ONLINE":      FlagOnline,
	"ONBATT":      FlagOnBatt,
	"OVERLOAD":    FlagOverload,
	"LOWBATT":     FlagBattLow,
	"REPLACEBATT": FlagReplaceBatt,
	"COMMLOST":    FlagCommLost,
	"SLAVE":       FlagSlave,
	"SLAVEDOWN":   FlagSlaveDown,
}

// flags returns STATFLAG, or the bits the STATUS words stand for.
func (r *Report) flags() uint32 {
	if r.HasStatFlag {
		return r.StatFlag
	}
	s := " " + strings.Join(strings.Fields(r.Status), " ") + " "
	var f uint32
	if strings.Contains(s, " SHUTTING DOWN ") {
		f |= FlagShutdown
		s = strings.ReplaceAll(s, " SHUTTING DOWN ", " ")
	}
	for _, w := range strings.Fields(s) {
		f |= statusWords[w]
	}
	return f
}

// NUTStatus returns the ups.status tokens NUT would show: FSD first when
// apcupsd is shutting its machine down, then OL, OB, LB, RB, OVER, CAL, TRIM,
// BOOST as set. It returns nil when CommLost (the state is unknown).
func (r *Report) NUTStatus() []string {
	if r.CommLost() {
		return nil
	}
	f := r.flags()
	var toks []string
	if f&flagShutdownBits != 0 {
		toks = append(toks, "FSD")
	}
	for _, tb := range tokenBits {
		if f&tb.bit != 0 {
			toks = append(toks, tb.token)
		}
	}
	return toks
}

// varFields maps NUT variables to the apcupsd field whose leading number
// they take.
var varFields = []struct{ name, field string }{
	{"input.voltage", "LINEV"},
	{"input.frequency", "LINEFREQ"},
	{"output.voltage", "OUTPUTV"},
	{"battery.voltage", "BATTV"},
	{"battery.voltage.nominal", "NOMBATTV"},
	{"ups.temperature", "ITEMP"},
	{"ups.realpower.nominal", "NOMPOWER"},
}

// Vars returns the report as NUT variables: device.mfr and ups.mfr ("APC"),
// device.model, ups.model, device.serial, ups.serial, ups.id (UPSNAME),
// ups.firmware and, unless CommLost, ups.status (NUTStatus joined by
// spaces), battery.charge and ups.load (percent), battery.runtime (whole
// seconds), input.voltage, input.frequency, output.voltage, battery.voltage,
// battery.voltage.nominal, ups.temperature and ups.realpower.nominal. A
// variable whose value is unknown is left out.
func (r *Report) Vars() map[string]string {
	v := map[string]string{"device.mfr": "APC", "ups.mfr": "APC"}
	set := func(name, val string) {
		if val != "" {
			v[name] = val
		}
	}
	set("device.model", r.Model)
	set("ups.model", r.Model)
	set("device.serial", r.Serial)
	set("ups.serial", r.Serial)
	set("ups.id", r.Name)
	set("ups.firmware", r.Fields["FIRMWARE"])
	if r.CommLost() {
		return v
	}
	set("ups.status", strings.Join(r.NUTStatus(), " "))
	fmtNum := func(x float64) string {
		if x < 0 {
			return ""
		}
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	set("battery.charge", fmtNum(r.Charge))
	set("ups.load", fmtNum(r.Load))
	if r.TimeLeft >= 0 {
		set("battery.runtime", strconv.FormatInt(int64(r.TimeLeft/time.Second), 10))
	}
	for _, vf := range varFields {
		set(vf.name, fmtNum(number(r.Fields[vf.field])))
	}
	return v
}
