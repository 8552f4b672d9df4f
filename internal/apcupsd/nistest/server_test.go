package nistest

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func start(t *testing.T) *Server {
	t.Helper()
	s := NewServer()
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func send(t *testing.T, c net.Conn, cmd string) {
	t.Helper()
	b := binary.BigEndian.AppendUint16(nil, uint16(len(cmd)))
	if _, err := c.Write(append(b, cmd...)); err != nil {
		t.Fatal(err)
	}
}

// readAnswer reads records up to the zero-length terminator.
func readAnswer(t *testing.T, c net.Conn) []string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var recs []string
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			t.Fatalf("read: %v (after %q)", err, recs)
		}
		n := binary.BigEndian.Uint16(hdr[:])
		if n == 0 {
			return recs
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, string(b))
	}
}

func dial(t *testing.T, s *Server) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestStatusFormat checks the answer byte for byte against apcupsd 3.14's
// layout, as captured from the real daemon: "%-9s: %s\n" lines in apcupsd's
// order, unknown keys after the known ones, header counts, END APC last.
func TestStatusFormat(t *testing.T) {
	s := NewServer()
	s.SetFields(map[string]string{
		"ZZNEW":     "x",
		"STATFLAG":  "0x05000008",
		"STATUS":    "ONLINE ",
		"CUMONBATT": "0 Seconds",
		"UPSNAME":   "u",
	})
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	want := []string{
		"APC      : 001,007,0166\n",
		"DATE     : 2025-01-02 03:04:05 +0000  \n",
		"UPSNAME  : u\n",
		"STATUS   : ONLINE \n",
		"CUMONBATT: 0 Seconds\n",
		"STATFLAG : 0x05000008\n",
		"ZZNEW    : x\n",
		"END APC  : 2025-01-02 03:04:05 +0000  \n",
	}
	got := s.StatusText(now)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	n := 0
	for _, l := range got[1:] {
		n += len(l)
	}
	if n != 166 {
		t.Errorf("body is %d bytes", n)
	}
}

func TestStatusString(t *testing.T) {
	for flag, want := range map[uint32]string{
		FlagOnline | FlagBattPresent: "ONLINE ",
		FlagOnline:                   "ONLINE NOBATT ",
		FlagOnBatt | FlagBattLow | FlagBattPresent:               "ONBATT LOWBATT ",
		FlagOnline | FlagTrim | FlagBoost | FlagBattPresent:      "TRIM BOOST ONLINE ",
		FlagOnline | FlagSlave | FlagSlaveDown | FlagBattPresent: "ONLINE SLAVE SLAVEDOWN",
		FlagOnline | FlagCommLost | FlagBattPresent:              "COMMLOST ",
		FlagOnBatt | FlagShutdown | FlagCommLost:                 "SHUTTING DOWN",
	} {
		if got := StatusString(flag); got != want {
			t.Errorf("StatusString(%#x) = %q, want %q", flag, got, want)
		}
	}
}

// TestConversation follows apcupsd: several commands on one connection, an
// unknown command answered "Invalid command\n\0", a command longer than 256
// bytes drops the connection.
func TestConversation(t *testing.T) {
	s := start(t)
	s.SetEvents([]string{"e1", "e2"})
	c := dial(t, s)

	send(t, c, "status")
	st := readAnswer(t, c)
	if !strings.HasPrefix(st[0], "APC      : 001,") || !strings.HasPrefix(st[len(st)-1], "END APC  : ") {
		t.Errorf("status answer %q", st)
	}
	send(t, c, "events")
	if got := readAnswer(t, c); !cmp.Equal(got, []string{"e1\n", "e2\n"}) {
		t.Errorf("events %q", got)
	}
	send(t, c, "bogus")
	if got := readAnswer(t, c); !cmp.Equal(got, []string{"Invalid command\n\x00"}) {
		t.Errorf("bogus %q", got)
	}
	s.SetEvents(nil)
	send(t, c, "events")
	if got := readAnswer(t, c); !cmp.Equal(got, []string{"Not available\n\x00"}) {
		t.Errorf("events without file %q", got)
	}
	send(t, c, strings.Repeat("x", 300))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	// The server closes with the command unread: EOF or a reset.
	if n, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("after an overlong command: read %d, %v; want the connection closed", n, err)
	}
	if got := s.Commands(); !cmp.Equal(got, []string{"status", "events", "bogus", "events"}) {
		t.Errorf("commands %q", got)
	}
}

func TestSetAndHook(t *testing.T) {
	s := start(t)
	s.Set("", FlagOnBatt|FlagBattPresent, 42.25, 7.5, -1)
	f := s.Fields()
	for k, want := range map[string]string{"STATUS": "ONBATT ", "STATFLAG": "0x04000010", "BCHARGE": "42.2 Percent", "TIMELEFT": "7.5 Minutes"} {
		if f[k] != want {
			t.Errorf("%s = %q, want %q", k, f[k], want)
		}
	}
	if _, ok := f["LOADPCT"]; ok {
		t.Error("a negative load should remove LOADPCT")
	}

	s.SetHook(func() []byte { return []byte("raw") })
	c := dial(t, s)
	send(t, c, "status")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "raw" {
		t.Errorf("hook answer %q, %v", b, err)
	}
}

// nistestGoroutines returns the stacks of goroutines running the server's
// code.
func nistestGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var gs []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "nistest.(*Server)") {
			gs = append(gs, g)
		}
	}
	return gs
}

// settledGoroutines returns the server goroutines still there once those
// that have called wg.Done but are still returning had a moment to end (no
// sleep: a blocked goroutine stays whatever the wait).
func settledGoroutines() []string {
	gs := nistestGoroutines()
	for deadline := time.Now().Add(2 * time.Second); len(gs) > 0 && time.Now().Before(deadline); gs = nistestGoroutines() {
		runtime.Gosched()
	}
	return gs
}

// TestCloseWaitsForEverything closes a server with an idle connection, a
// muted one and a trickling one open: Close must return with none of the
// server's goroutines left.
func TestCloseWaitsForEverything(t *testing.T) {
	if gs := settledGoroutines(); len(gs) != 0 { // earlier tests' servers are closed
		t.Fatalf("server goroutines before the test:\n%s", strings.Join(gs, "\n\n"))
	}
	s := NewServer()
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	_ = dial(t, s) // idle, never sends

	s.SetMute(true)
	muted := dial(t, s)
	send(t, muted, "status")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.WaitCommands(ctx, 1); err != nil {
		t.Fatal(err)
	}
	s.SetMute(false)
	s.SetTrickle(time.Hour)
	trickling := dial(t, s)
	send(t, trickling, "status")
	if _, err := s.WaitCommands(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if gs := nistestGoroutines(); len(gs) != 4 { // accept loop + 3 connections
		t.Errorf("%d server goroutines before Close, want 4:\n%s", len(gs), strings.Join(gs, "\n\n"))
	}

	var wg sync.WaitGroup
	for _, c := range []net.Conn{muted, trickling} {
		wg.Go(func() {
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.Copy(io.Discard, c) // ends when Close closes the connection
		})
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if e := time.Since(start); e > 2*time.Second {
		t.Errorf("Close took %v", e)
	}
	if gs := settledGoroutines(); len(gs) != 0 {
		t.Errorf("%d server goroutines left after Close:\n%s", len(gs), strings.Join(gs, "\n\n"))
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Start("127.0.0.1:0"); err == nil {
		t.Error("Start after Close succeeded")
	}
}
