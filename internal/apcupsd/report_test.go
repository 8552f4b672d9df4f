package apcupsd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// streamReader feeds readRecords from bytes, without deadlines.
type streamReader struct{ *bytes.Reader }

func (streamReader) setDeadline(time.Duration) error { return nil }

// frameRecords frames each record and adds the terminator.
func frameRecords(recs ...string) []byte {
	var b []byte
	for _, r := range recs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(r)))
		b = append(b, r...)
	}
	return append(b, 0, 0)
}

// decode runs the whole client-side decoding on a byte stream.
func decode(stream []byte, opts Options) (*Report, error) {
	recs, err := readRecords(streamReader{bytes.NewReader(stream)}, opts.withDefaults())
	if err != nil {
		return nil, err
	}
	return parseRecords(recs)
}

// fileRecords reads a testdata dump as apcupsd sends it: one record per line.
func fileRecords(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return splitRecords(string(b))
}

func splitRecords(s string) []string {
	recs := strings.SplitAfter(s, "\n")
	if recs[len(recs)-1] == "" {
		recs = recs[:len(recs)-1]
	}
	return recs
}

func TestParseFullDump(t *testing.T) {
	recs := fileRecords(t, "testdata/status-full.txt")
	r, err := decode(frameRecords(recs...), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Fields) != 47 {
		t.Errorf("%d fields, want 47 (46 + APC header)", len(r.Fields))
	}
	for k, want := range map[string]string{
		"APC":       "001,046,1139",
		"STATUS":    "ONLINE",
		"STARTTIME": "2025-03-01 09:30:12 +0100",
		"CUMONBATT": "21 Seconds",
		"FIRMWARE":  "UPS 09.3 / ID=18",
		"END APC":   "2025-03-14 02:17:47 +0100",
		"STESTI":    "14 days",
	} {
		if got := r.Fields[k]; got != want {
			t.Errorf("Fields[%q] = %q, want %q", k, got, want)
		}
	}
	wantDate := time.Date(2025, 3, 14, 2, 17, 45, 0, time.FixedZone("", 3600))
	if r.Status != "ONLINE" || r.StatFlag != 0x05000008 || !r.HasStatFlag || r.Charge != 97 ||
		r.TimeLeft != 2310*time.Second || r.Load != 23.4 || r.Model != "Smart-UPS 1500" ||
		r.Name != "smart1500" || r.Serial != "AS1945123456" || !r.Date.Equal(wantDate) {
		t.Errorf("report %+v", *r)
	}
	if got := r.NUTStatus(); !cmp.Equal(got, []string{"OL"}) {
		t.Errorf("NUTStatus %v", got)
	}
	want := map[string]string{
		"device.mfr": "APC", "ups.mfr": "APC",
		"device.model": "Smart-UPS 1500", "ups.model": "Smart-UPS 1500",
		"device.serial": "AS1945123456", "ups.serial": "AS1945123456",
		"ups.id": "smart1500", "ups.firmware": "UPS 09.3 / ID=18",
		"ups.status": "OL", "battery.charge": "97", "ups.load": "23.4", "battery.runtime": "2310",
		"input.voltage": "229.6", "input.frequency": "50", "output.voltage": "229.6",
		"battery.voltage": "27.3", "battery.voltage.nominal": "24", "ups.temperature": "27.9",
		"ups.realpower.nominal": "1000",
	}
	if diff := cmp.Diff(want, r.Vars()); diff != "" {
		t.Errorf("Vars (-want +got):\n%s", diff)
	}
}

// TestParseOlderFormats covers what apcupsd before 3.14 sent: STATFLAG with
// a " Status Flag" suffix, LOADPCT with "Load Capacity", the old date, and
// no APC header check when there is no header.
func TestParseOlderFormats(t *testing.T) {
	r, err := decode(frameRecords(
		"DATE     : Sat Mar 14 02:17:45 CET 2009\n",
		"MODEL    : SMART-UPS 1000\n",
		"STATUS   : ONBATT \n",
		"LOADPCT  :  31.0 Percent Load Capacity\n",
		"BCHARGE  : 055.0 Percent\n",
		"TIMELEFT :  12.0 Minutes\n",
		"STATFLAG : 0x07000010 Status Flag\n",
	), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.StatFlag != 0x07000010 || r.Load != 31 || r.Charge != 55 || r.TimeLeft != 12*time.Minute || r.Date.IsZero() {
		t.Errorf("report %+v", *r)
	}
	if got := r.NUTStatus(); !cmp.Equal(got, []string{"OB"}) {
		t.Errorf("NUTStatus %v", got)
	}
}

func TestUnknownValues(t *testing.T) {
	r, err := decode(frameRecords("STATUS   : ONLINE\n", "BCHARGE  : N/A\n", "LOADPCT  : -3 Percent\n", "X-VENDOR : whatever : with colons\n"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Charge != -1 || r.Load != -1 || r.TimeLeft >= 0 || r.HasStatFlag {
		t.Errorf("report %+v", *r)
	}
	if r.Fields["X-VENDOR"] != "whatever : with colons" {
		t.Errorf("unknown key: %q", r.Fields["X-VENDOR"])
	}
	v := r.Vars()
	for _, k := range []string{"battery.charge", "ups.load", "battery.runtime", "ups.model"} {
		if _, ok := v[k]; ok {
			t.Errorf("Vars has %s for an unknown value: %v", k, v)
		}
	}
	if v["ups.status"] != "OL" {
		t.Errorf("ups.status %q", v["ups.status"])
	}
}

func TestStatFlagMapping(t *testing.T) {
	for _, tc := range []struct {
		name string
		flag uint32
		want []string
	}{
		{"nothing", 0, nil},
		{"calibration", FlagCalibration | FlagOnline, []string{"OL", "CAL"}},
		{"trim", FlagTrim | FlagOnline, []string{"OL", "TRIM"}},
		{"boost", FlagBoost | FlagOnline, []string{"OL", "BOOST"}},
		{"online", FlagOnline, []string{"OL"}},
		{"on battery", FlagOnBatt, []string{"OB"}},
		{"overload", FlagOverload | FlagOnline, []string{"OL", "OVER"}},
		{"low battery", FlagOnBatt | FlagBattLow, []string{"OB", "LB"}},
		{"replace battery", FlagOnline | FlagReplaceBatt, []string{"OL", "RB"}},
		{"shutdown", FlagOnBatt | FlagShutdown, []string{"FSD", "OB"}},
		{"shut_load", FlagOnBatt | FlagShutLoad, []string{"FSD", "OB"}},
		{"shut_btime", FlagOnBatt | FlagShutBTime, []string{"FSD", "OB"}},
		{"shut_ltime", FlagOnBatt | FlagShutLTime, []string{"FSD", "OB"}},
		{"shut_emerg", FlagOnBatt | FlagShutEmerg, []string{"FSD", "OB"}},
		{"shut_remote", FlagOnline | FlagShutRemote, []string{"FSD", "OL"}},
		{"informational bits", FlagOnline | FlagSlave | FlagSlaveDown | FlagOnBattMsg | FlagFastPoll |
			FlagPlugged | FlagDevSetup | FlagBattPresent, []string{"OL"}},
		{"everything but comm lost", 0xffffffff &^ FlagCommLost,
			[]string{"FSD", "OL", "OB", "LB", "RB", "OVER", "CAL", "TRIM", "BOOST"}},
		{"comm lost", FlagOnline | FlagCommLost, nil},
		{"comm lost while shutting down", FlagOnBatt | FlagShutdown | FlagCommLost, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// STATUS disagrees on purpose: STATFLAG wins.
			r := &Report{StatFlag: tc.flag, HasStatFlag: true, Status: "ONBATT LOWBATT"}
			if got := r.NUTStatus(); !cmp.Equal(got, tc.want) {
				t.Errorf("NUTStatus() = %v, want %v", got, tc.want)
			}
			if got, want := r.CommLost(), tc.flag&FlagCommLost != 0; got != want {
				t.Errorf("CommLost() = %v, want %v", got, want)
			}
		})
	}
}

func TestStatusWordMapping(t *testing.T) {
	for _, tc := range []struct {
		status   string
		want     []string
		commLost bool
	}{
		{"ONLINE", []string{"OL"}, false},
		{"ONBATT", []string{"OB"}, false},
		{"ONBATT LOWBATT", []string{"OB", "LB"}, false},
		{"CAL ONLINE", []string{"OL", "CAL"}, false},
		{"TRIM ONLINE", []string{"OL", "TRIM"}, false},
		{"BOOST ONLINE", []string{"OL", "BOOST"}, false},
		{"ONLINE OVERLOAD", []string{"OL", "OVER"}, false},
		{"ONLINE REPLACEBATT", []string{"OL", "RB"}, false},
		{"ONLINE NOBATT", []string{"OL"}, false},
		{"ONLINE SLAVE", []string{"OL"}, false},
		{"ONLINE SLAVE SLAVEDOWN", []string{"OL"}, false},
		{"SHUTTING DOWN", []string{"FSD"}, false},
		{"  SHUTTING   DOWN ", []string{"FSD"}, false},
		{"COMMLOST", nil, true},
		{"SOMETHING NEW", nil, false},
		{"", nil, false},
	} {
		r := &Report{Status: tc.status}
		if got := r.NUTStatus(); !cmp.Equal(got, tc.want) {
			t.Errorf("STATUS %q: NUTStatus() = %v, want %v", tc.status, got, tc.want)
		}
		if got := r.CommLost(); got != tc.commLost {
			t.Errorf("STATUS %q: CommLost() = %v", tc.status, got)
		}
	}
	// An unreadable STATFLAG falls back to the words too.
	r, err := decode(frameRecords("STATUS   : ONBATT LOWBATT \n", "STATFLAG : garbage\n"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.HasStatFlag || !cmp.Equal(r.NUTStatus(), []string{"OB", "LB"}) {
		t.Errorf("HasStatFlag %v NUTStatus %v", r.HasStatFlag, r.NUTStatus())
	}
}

func TestCommLostVars(t *testing.T) {
	r, err := decode(frameRecords(
		"MODEL    : Back-UPS 700\n", "SERIALNO : X1\n", "STATUS   : COMMLOST \n",
		"BCHARGE  : 100.0 Percent\n", "STATFLAG : 0x05000108\n",
	), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"device.mfr": "APC", "ups.mfr": "APC", "device.model": "Back-UPS 700", "ups.model": "Back-UPS 700",
		"device.serial": "X1", "ups.serial": "X1",
	}
	if diff := cmp.Diff(want, r.Vars()); diff != "" {
		t.Errorf("Vars (-want +got):\n%s", diff)
	}
	if !r.CommLost() || r.NUTStatus() != nil {
		t.Errorf("CommLost %v NUTStatus %v", r.CommLost(), r.NUTStatus())
	}
}

func TestFramingErrors(t *testing.T) {
	long := strings.Repeat("x", MaxRecordLen+1)
	valid := frameRecords("STATUS   : ONLINE\n")
	for _, tc := range []struct {
		name   string
		stream []byte
		opts   Options
	}{
		{"oversized record", frameRecords("STATUS   : ONLINE\n", long), Options{}},
		{"length 0xffff", []byte{0xff, 0xff, 'a'}, Options{}},
		{"truncated record", []byte{0, 20, 'S', 'T', 'A'}, Options{}},
		{"truncated length", []byte{0}, Options{}},
		{"no terminator", valid[:len(valid)-2], Options{}},
		{"empty stream", nil, Options{}},
		{"too many records", frameRecords("STATUS   : ONLINE\n", "A : 1\n", "B : 2\n", "C : 3\n"), Options{MaxRecords: 3}},
		{"line without separator", frameRecords("STATUS   : ONLINE\n", "garbage\n"), Options{}},
		{"invalid command answer", frameRecords("Invalid command\n\x00"), Options{}},
		{"not running answer", frameRecords("Apcupsd not running\n\x00"), Options{}},
		{"empty key", frameRecords(" : ONLINE\n"), Options{}},
		{"control byte", frameRecords("STATUS   : ON\x01LINE\n"), Options{}},
		{"NUL inside", frameRecords("STATUS   : ON\x00LINE\n"), Options{}},
		{"no status", frameRecords("MODEL    : Back-UPS\n"), Options{}},
		{"empty answer", frameRecords(), Options{}},
		{"header counts too many", frameRecords("APC      : 001,002,0018\n", "STATUS   : ONLINE\n"), Options{}},
		{"header bytes wrong", frameRecords("APC      : 001,001,0019\n", "STATUS   : ONLINE\n"), Options{}},
		{"header malformed", frameRecords("APC      : 001,001\n", "STATUS   : ONLINE\n"), Options{}},
		{"header negative", frameRecords("APC      : 001,-01,0018\n", "STATUS   : ONLINE\n"), Options{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := decode(tc.stream, tc.opts)
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("decode = %+v, %v; want ErrProtocol", r, err)
			}
		})
	}
	// The header's counts, when right, are accepted; MaxRecords is inclusive.
	if _, err := decode(frameRecords("APC      : 001,001,0018\n", "STATUS   : ONLINE\n"), Options{MaxRecords: 2}); err != nil {
		t.Errorf("valid header: %v", err)
	}
	if _, err := decode(frameRecords("STATUS   : ONLINE\n", strings.Repeat("x", MaxRecordLen-5)+" : 1\n"), Options{}); err != nil {
		t.Errorf("record of MaxRecordLen bytes: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	b, err := os.ReadFile("testdata/status-full.txt")
	if err != nil {
		f.Fatal(err)
	}
	full := splitRecords(string(b))
	f.Add(frameRecords(full...))
	f.Add(frameRecords("STATUS   : COMMLOST \n", "STATFLAG : 0x05000108\n"))
	f.Add(frameRecords("STATUS   : SHUTTING DOWN\n", "TIMELEFT : 1e300 Minutes\n"))
	f.Add(frameRecords("APC      : 001,001,0018\n", "STATUS   : ONLINE\n"))
	f.Add(frameRecords("Invalid command\n\x00"))
	f.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, stream []byte) {
		r, err := decode(stream, Options{MaxRecords: 100})
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v does not match ErrProtocol", err)
			}
			return
		}
		if r.Charge != -1 && r.Charge < 0 || r.Load != -1 && r.Load < 0 {
			t.Fatalf("charge %v load %v", r.Charge, r.Load)
		}
		toks := r.NUTStatus()
		if r.CommLost() && toks != nil {
			t.Fatalf("tokens %v while comm lost", toks)
		}
		v := r.Vars()
		if v["device.mfr"] != "APC" {
			t.Fatalf("Vars %v", v)
		}
		if _, ok := v["ups.status"]; ok == r.CommLost() && len(toks) > 0 {
			t.Fatalf("ups.status presence %v with comm lost %v", ok, r.CommLost())
		}
	})
}
