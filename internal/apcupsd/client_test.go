package apcupsd_test

import (
	"context"
	"encoding/binary"
	"errors"
	"maps"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sundown-ups/sundown/internal/apcupsd"
	"github.com/sundown-ups/sundown/internal/apcupsd/nistest"
)

func frame(recs ...string) []byte {
	var b []byte
	for _, r := range recs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(r)))
		b = append(b, r...)
	}
	return b
}

func TestStatusDefaultServer(t *testing.T) {
	s := startMaster(t)
	r, err := apcupsd.Status(context.Background(), s.Addr(), apcupsd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := s.Fields()
	for k, v := range want {
		want[k] = strings.TrimSpace(v)
	}
	for _, k := range []string{"APC", "DATE", "END APC"} {
		if r.Fields[k] == "" {
			t.Errorf("no %s field", k)
		}
	}
	got := maps.Clone(r.Fields)
	delete(got, "APC")
	delete(got, "DATE")
	delete(got, "END APC")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("fields (-server +client):\n%s", diff)
	}
	if time.Since(r.Date) > time.Minute {
		t.Errorf("Date %v", r.Date)
	}
	if !cmp.Equal(r.NUTStatus(), []string{"OL"}) || r.Charge != 100 || r.TimeLeft != 2838*time.Second ||
		r.Load != 18 || r.Model != "Back-UPS XS 1400U" || r.Name != "rack-ups" || r.Serial != "3B2011X12345" {
		t.Errorf("report %+v tokens %v", *r, r.NUTStatus())
	}
	v := r.Vars()
	for k, want := range map[string]string{"ups.status": "OL", "battery.charge": "100", "battery.runtime": "2838", "ups.load": "18", "device.mfr": "APC"} {
		if v[k] != want {
			t.Errorf("Vars[%s] = %q, want %q", k, v[k], want)
		}
	}
	if got := s.Commands(); !cmp.Equal(got, []string{"status"}) {
		t.Errorf("server received %q", got)
	}
}

func TestOneConnectionPerQuery(t *testing.T) {
	s := startMaster(t)
	for range 3 {
		if _, err := apcupsd.Status(context.Background(), s.Addr(), apcupsd.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Connections(); n != 3 {
		t.Errorf("%d connections for 3 queries", n)
	}
}

// TestEveryFlagThroughServer sets each STATFLAG bit on the server, once with
// STATFLAG and once with only the STATUS words apcupsd derives from it.
func TestEveryFlagThroughServer(t *testing.T) {
	s := startMaster(t)
	const bp = nistest.FlagBattPresent
	for _, tc := range []struct {
		flag      uint32
		want      []string
		wantWords []string // from STATUS alone, when it differs
	}{
		{nistest.FlagOnline | bp, []string{"OL"}, nil},
		{nistest.FlagOnBatt | bp, []string{"OB"}, nil},
		{nistest.FlagOnBatt | nistest.FlagBattLow | bp, []string{"OB", "LB"}, nil},
		{nistest.FlagOnline | nistest.FlagTrim | bp, []string{"OL", "TRIM"}, nil},
		{nistest.FlagOnline | nistest.FlagBoost | bp, []string{"OL", "BOOST"}, nil},
		{nistest.FlagOnline | nistest.FlagOverload | bp, []string{"OL", "OVER"}, nil},
		{nistest.FlagOnline | nistest.FlagReplaceBatt | bp, []string{"OL", "RB"}, nil},
		// apcupsd 3.14 leaves CAL out of STATUS.
		{nistest.FlagOnline | nistest.FlagCalibration | bp, []string{"OL", "CAL"}, []string{"OL"}},
		{nistest.FlagOnline, []string{"OL"}, nil}, // NOBATT
		{nistest.FlagOnline | nistest.FlagSlave | nistest.FlagSlaveDown | bp, []string{"OL"}, nil},
		// SHUTTING DOWN replaces the other words.
		{nistest.FlagOnBatt | nistest.FlagShutdown | bp, []string{"FSD", "OB"}, []string{"FSD"}},
		{nistest.FlagOnBatt | nistest.FlagShutLoad | bp, []string{"FSD", "OB"}, []string{"OB"}},
		{nistest.FlagOnBatt | nistest.FlagShutBTime | bp, []string{"FSD", "OB"}, []string{"OB"}},
		{nistest.FlagOnBatt | nistest.FlagShutLTime | bp, []string{"FSD", "OB"}, []string{"OB"}},
		{nistest.FlagOnBatt | nistest.FlagShutEmerg | bp, []string{"FSD", "OB"}, []string{"OB"}},
		{nistest.FlagOnline | nistest.FlagShutRemote | bp, []string{"FSD", "OL"}, []string{"OL"}},
		{nistest.FlagOnline | nistest.FlagCommLost | bp, nil, nil},
	} {
		s.Set("", tc.flag, 50, 10, 20)
		r, err := apcupsd.Status(context.Background(), s.Addr(), apcupsd.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !cmp.Equal(r.NUTStatus(), tc.want) || r.StatFlag != tc.flag {
			t.Errorf("STATFLAG %#x (STATUS %q): got %#x tokens %v, want %v", tc.flag, r.Status, r.StatFlag, r.NUTStatus(), tc.want)
		}
		if got, want := r.CommLost(), tc.flag&nistest.FlagCommLost != 0; got != want {
			t.Errorf("STATFLAG %#x: CommLost %v", tc.flag, got)
		}

		s.DeleteField("STATFLAG")
		r, err = apcupsd.Status(context.Background(), s.Addr(), apcupsd.Options{})
		if err != nil {
			t.Fatal(err)
		}
		want := tc.want
		if tc.wantWords != nil {
			want = tc.wantWords
		}
		if !cmp.Equal(r.NUTStatus(), want) || r.HasStatFlag {
			t.Errorf("STATUS %q alone: tokens %v, want %v", r.Status, r.NUTStatus(), want)
		}
	}
}

func TestFlagConstantsAgree(t *testing.T) {
	for _, p := range [][2]uint32{
		{apcupsd.FlagCalibration, nistest.FlagCalibration}, {apcupsd.FlagTrim, nistest.FlagTrim},
		{apcupsd.FlagBoost, nistest.FlagBoost}, {apcupsd.FlagOnline, nistest.FlagOnline},
		{apcupsd.FlagOnBatt, nistest.FlagOnBatt}, {apcupsd.FlagOverload, nistest.FlagOverload},
		{apcupsd.FlagBattLow, nistest.FlagBattLow}, {apcupsd.FlagReplaceBatt, nistest.FlagReplaceBatt},
		{apcupsd.FlagCommLost, nistest.FlagCommLost}, {apcupsd.FlagShutdown, nistest.FlagShutdown},
		{apcupsd.FlagSlave, nistest.FlagSlave}, {apcupsd.FlagSlaveDown, nistest.FlagSlaveDown},
		{apcupsd.FlagShutLoad, nistest.FlagShutLoad}, {apcupsd.FlagShutBTime, nistest.FlagShutBTime},
		{apcupsd.FlagShutLTime, nistest.FlagShutLTime}, {apcupsd.FlagShutEmerg, nistest.FlagShutEmerg},
		{apcupsd.FlagShutRemote, nistest.FlagShutRemote}, {apcupsd.FlagPlugged, nistest.FlagPlugged},
		{apcupsd.FlagBattPresent, nistest.FlagBattPresent},
	} {
		if p[0] != p[1] {
			t.Errorf("flag %#x != %#x", p[0], p[1])
		}
	}
}

func TestUnknownValuesThroughServer(t *testing.T) {
	s := startMaster(t)
	s.Set("ONBATT ", nistest.FlagOnBatt|nistest.FlagBattPresent, -1, -1, -1)
	r, err := apcupsd.Status(context.Background(), s.Addr(), apcupsd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Charge != -1 || r.TimeLeft >= 0 || r.Load != -1 {
		t.Errorf("charge %v timeleft %v load %v, want unknown", r.Charge, r.TimeLeft, r.Load)
	}
	if v := r.Vars(); v["battery.charge"] != "" || v["battery.runtime"] != "" || v["ups.status"] != "OB" {
		t.Errorf("Vars %v", v)
	}
}

func TestProtocolErrorsFromServer(t *testing.T) {
	s := startMaster(t)
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"garbage", []byte("HTTP/1.1 400 Bad Request\r\n\r\n")},
		{"oversized", append([]byte{0x10, 0x01}, make([]byte, 4097)...)},
		{"truncated record", frame("STATUS   : ONLINE\n")[:10]},
		{"no terminator", frame("STATUS   : ONLINE\n")},
		{"closed at once", nil},
		{"invalid command", append(frame("Invalid command\n\x00"), 0, 0)},
		{"line without separator", append(frame("STATUS   : ONLINE\n", "hello\n"), 0, 0)},
		{"header lies", append(frame("APC      : 001,005,0100\n", "STATUS   : ONLINE\n"), 0, 0)},
		{"too many records", append(frame(strings.Split(strings.Repeat("STATUS   : ONLINE\n,", 501), ",")...), 0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.SetHook(func() []byte { return tc.raw })
			_, err := apcupsd.Status(context.Background(), s.Addr(), apcupsd.Options{ReadTimeout: 2 * time.Second})
			if !errors.Is(err, apcupsd.ErrProtocol) {
				t.Fatalf("err = %v, want ErrProtocol", err)
			}
			if !strings.Contains(err.Error(), s.Addr()) {
				t.Errorf("error %q does not name the address", err)
			}
		})
	}
}

func TestMutedServerTimesOut(t *testing.T) {
	s := startMaster(t)
	s.SetMute(true)
	const rt = 200 * time.Millisecond
	start := time.Now()
	_, err := apcupsd.Status(context.Background(), s.Addr(), apcupsd.Options{ReadTimeout: rt})
	elapsed := time.Since(start)
	if !errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, apcupsd.ErrProtocol) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	if !strings.Contains(err.Error(), s.Addr()) {
		t.Errorf("error %q does not name the address", err)
	}
	if elapsed < rt || elapsed > rt+time.Second {
		t.Errorf("returned after %v, want about %v", elapsed, rt)
	}
}

func TestTrickle(t *testing.T) {
	s := startMaster(t)
	s.SetFields(map[string]string{"STATUS": "ONBATT ", "STATFLAG": "0x04000010"})
	s.SetTrickle(time.Millisecond)
	r, err := apcupsd.Status(context.Background(), s.Addr(), apcupsd.Options{})
	if err != nil {
		t.Fatalf("slow but steady server: %v", err)
	}
	if !cmp.Equal(r.NUTStatus(), []string{"OB"}) {
		t.Errorf("tokens %v", r.NUTStatus())
	}

	// ReadTimeout covers a whole record: a 25-byte record at 20 ms a byte
	// cannot arrive within 150 ms.
	s.SetTrickle(20 * time.Millisecond)
	start := time.Now()
	_, err = apcupsd.Status(context.Background(), s.Addr(), apcupsd.Options{ReadTimeout: 150 * time.Millisecond})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	if e := time.Since(start); e > time.Second {
		t.Errorf("returned after %v", e)
	}
}

func TestContextCancel(t *testing.T) {
	s := startMaster(t)

	t.Run("already cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := apcupsd.Status(ctx, s.Addr(), apcupsd.Options{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
	})

	s.SetMute(true)
	t.Run("cancelled while waiting", func(t *testing.T) {
		before := len(s.Commands())
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			_, err := apcupsd.Status(ctx, s.Addr(), apcupsd.Options{ReadTimeout: 30 * time.Second})
			done <- err
		}()
		wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer wcancel()
		if _, err := s.WaitCommands(wctx, before+1); err != nil {
			t.Fatalf("server never got the command: %v", err)
		}
		cancel()
		err := <-done
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if e := time.Since(start); e > 5*time.Second {
			t.Errorf("returned after %v", e)
		}
	})

	t.Run("context deadline before read timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := apcupsd.Status(ctx, s.Addr(), apcupsd.Options{ReadTimeout: 30 * time.Second})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want context.DeadlineExceeded", err)
		}
		if e := time.Since(start); e > 2*time.Second {
			t.Errorf("returned after %v", e)
		}
	})
}

// TestNoClientGoroutinesLeft runs queries that end every way (answer,
// cancel, deadline) and checks none of the client's goroutines remain.
func TestNoClientGoroutinesLeft(t *testing.T) {
	s := startMaster(t)
	if _, err := apcupsd.Status(context.Background(), s.Addr(), apcupsd.Options{}); err != nil {
		t.Fatal(err)
	}
	s.SetMute(true)
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, _ = apcupsd.Status(ctx, s.Addr(), apcupsd.Options{})
		cancel()
		_, _ = apcupsd.Status(context.Background(), s.Addr(), apcupsd.Options{ReadTimeout: 20 * time.Millisecond})
	}
	left := func() []string {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var gs []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "internal/apcupsd.") && !strings.Contains(g, "nistest") && !strings.Contains(g, "apcupsd_test.") {
				gs = append(gs, g)
			}
		}
		return gs
	}
	gs := left()
	for deadline := time.Now().Add(2 * time.Second); len(gs) > 0 && time.Now().Before(deadline); gs = left() {
		runtime.Gosched() // a goroutine may still be returning
	}
	if len(gs) > 0 {
		t.Errorf("client goroutines left:\n%s", strings.Join(gs, "\n\n"))
	}
}

func TestConnectionRefused(t *testing.T) {
	addr := freeAddr(t)
	_, err := apcupsd.Status(context.Background(), addr, apcupsd.Options{})
	if !errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, apcupsd.ErrProtocol) {
		t.Fatalf("err = %v, want connection refused", err)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the address", err)
	}
}

func TestEvents(t *testing.T) {
	s := startMaster(t)
	s.SetEvents([]string{"2025-01-06 08:00:00 +0000  Power failure.", "2025-01-06 08:00:06 +0000  Running on UPS batteries."})
	ev, err := apcupsd.Events(context.Background(), s.Addr(), apcupsd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"2025-01-06 08:00:00 +0000  Power failure.", "2025-01-06 08:00:06 +0000  Running on UPS batteries."}; !cmp.Equal(ev, want) {
		t.Errorf("events %q", ev)
	}
	s.SetEvents(nil)
	if _, err := apcupsd.Events(context.Background(), s.Addr(), apcupsd.Options{}); !errors.Is(err, apcupsd.ErrEventsUnavailable) {
		t.Errorf("no events file: err = %v", err)
	}
	s.SetHook(func() []byte { return append(frame("Invalid command\n\x00"), 0, 0) })
	if _, err := apcupsd.Events(context.Background(), s.Addr(), apcupsd.Options{}); !errors.Is(err, apcupsd.ErrProtocol) {
		t.Errorf("refused command: err = %v", err)
	}
}
