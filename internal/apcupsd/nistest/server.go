// Package nistest is an in-process apcupsd Network Information Server for
// tests and the demo. It answers "status" and "events" byte for byte the way
// apcupsd 3.14 does (2-byte big-endian length framing, an APC header with the
// record and byte counts, "KEY      : value" lines, END APC, a zero-length
// terminator), serves several commands per connection like apcupsd, and has
// fault knobs: mute, trickle, and raw bytes instead of an answer.
package nistest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// STATFLAG bits used by Set and StatusString (apcupsd's include/defines.h).
const (
	FlagCalibration uint32 = 0x00000001
	FlagTrim        uint32 = 0x00000002
	FlagBoost       uint32 = 0x00000004
	FlagOnline      uint32 = 0x00000008
	FlagOnBatt      uint32 = 0x00000010
	FlagOverload    uint32 = 0x00000020
	FlagBattLow     uint32 = 0x00000040
	FlagReplaceBatt uint32 = 0x00000080
	FlagCommLost    uint32 = 0x00000100
	FlagShutdown    uint32 = 0x00000200
	FlagSlave       uint32 = 0x00000400
	FlagSlaveDown   uint32 = 0x00000800
	FlagShutLoad    uint32 = 0x00080000
	FlagShutBTime   uint32 = 0x00100000
	FlagShutLTime   uint32 = 0x00200000
	FlagShutEmerg   uint32 = 0x00400000
	FlagShutRemote  uint32 = 0x00800000
	FlagPlugged     uint32 = 0x01000000
	FlagBattPresent uint32 = 0x04000000
)

// DateLayout is how apcupsd 3.14 writes DATE, STARTTIME and END APC (it
// follows the value with two spaces).
const DateLayout = "2006-01-02 15:04:05 -0700"

// maxCommand is apcupsd's command buffer (MAXSTRING): a longer command makes
// it drop the connection.
const maxCommand = 256

// order is the order apcupsd writes its status fields in. Fields not listed
// are written after these, sorted, before END APC.
var order = []string{
	"DATE", "HOSTNAME", "VERSION", "UPSNAME", "CABLE", "DRIVER", "UPSMODE", "STARTTIME",
	"MASTERUPD", "MASTER", "SHARE", "MODEL", "STATUS", "LINEV", "LOADPCT", "LOADAPNT",
	"BCHARGE", "TIMELEFT", "MBATTCHG", "MINTIMEL", "MAXTIME", "MAXLINEV", "MINLINEV",
	"OUTPUTV", "SENSE", "DWAKE", "DSHUTD", "DLOWBATT", "LOTRANS", "HITRANS", "RETPCT",
	"ITEMP", "ALARMDEL", "BATTV", "LINEFREQ", "OUTCURNT", "LASTXFER", "NUMXFERS",
	"XONBATT", "TONBATT", "CUMONBATT", "XOFFBATT", "LASTSTEST", "SELFTEST", "STESTI",
	"STATFLAG", "DIPSW", "REG1", "REG2", "REG3", "MANDATE", "SERIALNO", "BATTDATE",
	"NOMOUTV", "NOMINV", "NOMBATTV", "NOMPOWER", "NOMAPNT", "HUMIDITY", "AMBTEMP",
	"EXTBATTS", "BADBATTS", "FIRMWARE", "APCMODEL",
}

// DefaultFields is the status a new Server serves: a Back-UPS on USB, on
// line, fully charged. DATE and END APC are added at answer time.
func DefaultFields() map[string]string {
	return map[string]string{
		"HOSTNAME":  "nistest",
		"VERSION":   "3.14.14 (31 May 2016) debian",
		"UPSNAME":   "rack-ups",
		"CABLE":     "USB Cable",
		"DRIVER":    "USB UPS Driver",
		"UPSMODE":   "Stand Alone",
		"STARTTIME": "2025-01-06 08:00:00 +0000  ",
		"MODEL":     "Back-UPS XS 1400U",
		"STATUS":    "ONLINE ",
		"LINEV":     "231.0 Volts",
		"LOADPCT":   "18.0 Percent",
		"BCHARGE":   "100.0 Percent",
		"TIMELEFT":  "47.3 Minutes",
		"MBATTCHG":  "5 Percent",
		"MINTIMEL":  "3 Minutes",
		"MAXTIME":   "0 Seconds",
		"SENSE":     "Medium",
		"LOTRANS":   "155.0 Volts",
		"HITRANS":   "280.0 Volts",
		"ALARMDEL":  "No alarm",
		"BATTV":     "27.2 Volts",
		"LASTXFER":  "Low line voltage",
		"NUMXFERS":  "0",
		"TONBATT":   "0 Seconds",
		"CUMONBATT": "0 Seconds",
		"XOFFBATT":  "N/A",
		"SELFTEST":  "NO",
		"STATFLAG":  "0x05000008",
		"SERIALNO":  "3B2011X12345",
		"BATTDATE":  "2024-06-02",
		"NOMINV":    "230 Volts",
		"NOMBATTV":  "24.0 Volts",
		"NOMPOWER":  "700 Watts",
		"FIRMWARE":  "926.T2 .I USB FW:T2",
	}
}

// StatusString builds the STATUS value apcupsd derives from flag: the words
// TRIM BOOST ONLINE ONBATT OVERLOAD LOWBATT REPLACEBATT NOBATT SLAVE
// SLAVEDOWN, each followed by a space, replaced by "COMMLOST " or
// "SHUTTING DOWN" when those bits are set.
func StatusString(flag uint32) string {
	var b strings.Builder
	for _, w := range []struct {
		bit  uint32
		word string
	}{
		{FlagTrim, "TRIM "}, {FlagBoost, "BOOST "}, {FlagOnline, "ONLINE "},
		{FlagOnBatt, "ONBATT "}, {FlagOverload, "OVERLOAD "}, {FlagBattLow, "LOWBATT "},
		{FlagReplaceBatt, "REPLACEBATT "},
	} {
		if flag&w.bit != 0 {
			b.WriteString(w.word)
		}
	}
	if flag&FlagBattPresent == 0 {
		b.WriteString("NOBATT ")
	}
	if flag&FlagSlave != 0 {
		b.WriteString("SLAVE ")
	}
	if flag&FlagSlaveDown != 0 {
		b.WriteString("SLAVEDOWN")
	}
	s := b.String()
	if flag&FlagCommLost != 0 {
		s = "COMMLOST "
	}
	if flag&FlagShutdown != 0 {
		s = "SHUTTING DOWN"
	}
	return s
}

// Server is an in-process NIS server. Its methods are safe for concurrent
// use; setters take effect on the next command answered.
type Server struct {
	mu       sync.Mutex
	fields   map[string]string
	events   []string
	mute     bool
	trickle  time.Duration
	hook     func() []byte
	commands []string
	seen     chan struct{} // closed and replaced on each command
	accepted int
	conns    map[net.Conn]struct{}
	ln       net.Listener
	closed   bool

	done chan struct{}
	wg   sync.WaitGroup
}

// NewServer returns a server serving DefaultFields. Start it with Start.
func NewServer() *Server {
	return &Server{
		fields: DefaultFields(),
		events: []string{"2025-01-06 08:00:00 +0000  apcupsd 3.14.14 (31 May 2016) debian startup succeeded"},
		conns:  make(map[net.Conn]struct{}),
		seen:   make(chan struct{}),
		done:   make(chan struct{}),
	}
}

// Start listens on addr (use "127.0.0.1:0") and serves until Close.
func (s *Server) Start(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("nistest: server closed")
	}
	if s.ln != nil {
		return errors.New("nistest: server already started")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("nistest listen %s: %w", addr, err)
	}
	s.ln = ln
	s.wg.Add(1)
	go s.acceptLoop(ln)
	return nil
}

// Addr is the address the server listens on ("" before Start).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Close stops listening, closes every connection and waits for all of the
// server's goroutines to end. It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	close(s.done)
	var err error
	if s.ln != nil {
		err = s.ln.Close()
	}
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// SetFields replaces every status field (keys without padding, values as
// apcupsd writes them, e.g. "STATUS": "ONLINE "). The APC header is always
// computed; DATE and END APC are added with the current time unless given.
func (s *Server) SetFields(f map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fields = maps.Clone(f)
	if s.fields == nil {
		s.fields = map[string]string{}
	}
}

// SetField sets one field; an empty key is ignored.
func (s *Server) SetField(key, value string) {
	if key == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fields[key] = value
}

// DeleteField removes one field.
func (s *Server) DeleteField(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.fields, key)
}

// Fields returns a copy of the current fields.
func (s *Server) Fields() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.fields)
}

// Set sets STATUS (StatusString(statflag) when status is ""), STATFLAG,
// BCHARGE (percent), TIMELEFT (minutes) and LOADPCT (percent) as apcupsd
// formats them. A negative charge, timeleftMinutes or load removes that
// field, as when a UPS does not report it.
func (s *Server) Set(status string, statflag uint32, charge, timeleftMinutes, load float64) {
	if status == "" {
		status = StatusString(statflag)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fields["STATUS"] = status
	s.fields["STATFLAG"] = fmt.Sprintf("0x%08X", statflag)
	setNum := func(key string, v float64, unit string) {
		if v < 0 {
			delete(s.fields, key)
			return
		}
		s.fields[key] = fmt.Sprintf("%.1f %s", v, unit)
	}
	setNum("BCHARGE", charge, "Percent")
	setNum("TIMELEFT", timeleftMinutes, "Minutes")
	setNum("LOADPCT", load, "Percent")
}

// SetEvents sets the lines the "events" command returns; nil makes it
// answer "Not available", as apcupsd does without an events file.
func (s *Server) SetEvents(lines []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = slices.Clone(lines)
}

// SetMute makes the server read commands but never answer (until unmuted
// for the next connection, or Close).
func (s *Server) SetMute(mute bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mute = mute
}

// SetTrickle makes the server write its answers one byte at a time, waiting
// d before each byte; 0 writes answers at once.
func (s *Server) SetTrickle(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trickle = d
}

// SetHook makes the server answer any command with the bytes hook returns,
// written as they are (no framing added), then close the connection; nil
// restores proper answers.
func (s *Server) SetHook(hook func() []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = hook
}

// Commands returns the commands received so far, in order.
func (s *Server) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.commands)
}

// WaitCommands blocks until at least n commands have been received, then
// returns them; it gives up with ctx's error or when the server closes.
func (s *Server) WaitCommands(ctx context.Context, n int) ([]string, error) {
	for {
		s.mu.Lock()
		cmds, seen := slices.Clone(s.commands), s.seen
		s.mu.Unlock()
		if len(cmds) >= n {
			return cmds, nil
		}
		select {
		case <-seen:
		case <-ctx.Done():
			return cmds, ctx.Err()
		case <-s.done:
			return cmds, net.ErrClosed
		}
	}
}

// Connections returns how many connections the server has accepted.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

func (s *Server) acceptLoop(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed by Close; a test server needs no retry
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.accepted++
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(c)
	}
}

func (s *Server) serve(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		_ = c.Close()
	}()
	for {
		cmd, err := readMessage(c)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.commands = append(s.commands, cmd)
		close(s.seen)
		s.seen = make(chan struct{})
		mute, trickle, hook := s.mute, s.trickle, s.hook
		s.mu.Unlock()

		if mute {
			_, _ = io.Copy(io.Discard, c) // until the client or Close ends it
			return
		}
		if hook != nil {
			_ = s.write(c, hook(), trickle)
			return
		}
		if err := s.write(c, s.answer(cmd), trickle); err != nil {
			return
		}
	}
}

// readMessage reads one length-prefixed command.
func readMessage(r io.Reader) (string, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "", err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n > maxCommand {
		return "", errors.New("command too long")
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", err
	}
	return string(buf), nil
}

// answer builds the framed reply to cmd, matching commands by prefix as
// apcupsd does.
func (s *Server) answer(cmd string) []byte {
	switch {
	case strings.HasPrefix(cmd, "status"):
		return frameAll(s.statusLines(time.Now()))
	case strings.HasPrefix(cmd, "events"):
		s.mu.Lock()
		ev := slices.Clone(s.events)
		s.mu.Unlock()
		if ev == nil {
			return frameAll([]string{"Not available\n\x00"})
		}
		lines := make([]string, len(ev))
		for i, e := range ev {
			lines[i] = e + "\n"
		}
		return frameAll(lines)
	default:
		return frameAll([]string{"Invalid command\n\x00"})
	}
}

// StatusText returns the status answer's lines as apcupsd's NIS would send
// them at now, one record per line, APC header first.
func (s *Server) StatusText(now time.Time) []string {
	return s.statusLines(now)
}

func (s *Server) statusLines(now time.Time) []string {
	s.mu.Lock()
	f := maps.Clone(s.fields)
	s.mu.Unlock()
	stamp := now.Format(DateLayout) + "  "
	if _, ok := f["DATE"]; !ok {
		f["DATE"] = stamp
	}
	end, ok := f["END APC"]
	if !ok {
		end = stamp
	}
	delete(f, "END APC")
	delete(f, "APC")

	var lines []string
	add := func(k string) {
		lines = append(lines, fmt.Sprintf("%-9s: %s\n", k, f[k]))
		delete(f, k)
	}
	for _, k := range order {
		if _, ok := f[k]; ok {
			add(k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(f)) {
		add(k)
	}
	lines = append(lines, fmt.Sprintf("%-9s: %s\n", "END APC", end))
	n := 0
	for _, l := range lines {
		n += len(l)
	}
	hdr := fmt.Sprintf("APC      : %03d,%03d,%04d\n", 1, len(lines), n)
	return append([]string{hdr}, lines...)
}

// frameAll frames each record and adds the zero-length terminator.
func frameAll(recs []string) []byte {
	var b []byte
	for _, r := range recs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(r)))
		b = append(b, r...)
	}
	return append(b, 0, 0)
}

// write sends b, at once or one byte per trickle interval; it gives up when
// the server closes.
func (s *Server) write(c net.Conn, b []byte, trickle time.Duration) error {
	if trickle <= 0 {
		_, err := c.Write(b)
		return err
	}
	t := time.NewTimer(trickle)
	defer t.Stop()
	for i := range b {
		select {
		case <-s.done:
			return net.ErrClosed
		case <-t.C:
		}
		if _, err := c.Write(b[i : i+1]); err != nil {
			return err
		}
		t.Reset(trickle)
	}
	return nil
}
