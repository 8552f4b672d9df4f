// Package nuttest is a scriptable, in-process NUT server that speaks the NUT
// network protocol 1.3 the way upsd of NUT 2.8 does. Tests use it to drive
// package nut and everything above it; `sundown demo` uses it as the
// simulated UPS server, so this package must not import "testing".
//
// The replies follow upsd's sources and observed behaviour: "OK
// PRIMARY-GRANTED", "OK MASTER-GRANTED", "OK FSD-SET", "OK Goodbye" (then
// the connection closes), BEGIN/END LIST framing, values escaped like
// pconf_encode, a wrong PASSWORD accepted and refused only at LOGIN
// (ACCESS-DENIED), ALREADY-LOGGED-IN, FEATURE-NOT-CONFIGURED for STARTTLS
// without a certificate, NETVER "1.3", NUMLOGINS and LIST CLIENT counting
// LOGINs, FSD as a latch shown as "FSD <status>", SET TRACKING and GET
// TRACKING with UUID ids. Names of UPSes, variables and commands compare
// case-insensitively, as in upsd.
//
// Beyond a real upsd it can be scripted (AddUPS, SetVar, SetStatus,
// SetError for DATA-STALE / DRIVER-NOT-CONNECTED, users and permissions,
// instant command results) and made to misbehave (SetReplyDelay, SetTrickle,
// SetMute, SetHook for raw replies, DropConnections). Lines longer than 1024
// bytes close the connection. Nothing a client sends can make it panic.
//
// Not modelled: upsd's 60-second idle disconnect, ATTACH/DETACH, the
// per-UPS access control of old versions, and real drivers (a SET VAR
// takes effect at once; instant commands only record and report).
package nuttest

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// MaxLineLength is the longest command line accepted, without its line
// ending; a longer line closes the connection.
const MaxLineLength = 1024

// Perms are the rights of a user, as in upsd.users.
type Perms struct {
	// Upsmon is "primary", "secondary" or "" (the "upsmon" line). Both
	// allow LOGIN; primary also allows PRIMARY/MASTER and FSD.
	Upsmon string
	// Actions are upsd.users actions: "SET", "FSD".
	Actions []string
	// InstCmds are the instant commands allowed, or "ALL".
	InstCmds []string
}

// InstCmdRecord is an instant command the server accepted.
type InstCmdRecord struct {
	Conn       int    // connection id, as passed to the hook
	User       string // USERNAME of the connection
	UPS        string // the UPS's configured name
	Cmd        string // as sent
	Value      string // the optional parameter
	HasValue   bool
	TrackingID string // "" without TRACKING
	At         time.Time
}

type user struct {
	pass  string
	perms Perms
}

type variable struct {
	name   string // as first set
	value  string
	rw     bool
	strMax int // > 0: a STRING of at most strMax bytes
	enum   []string
	ranges [][2]int
}

type upsState struct {
	name    string
	desc    string
	vars    map[string]*variable // by lower-case name
	cmds    []string
	results map[string]string // instant command result code by lower-case name; "" success
	errCode string            // answered by every "available" check when set
	fsd     bool
}

type tracked struct {
	pending int
	result  string // "" success, else an ERR code
}

// Server is an in-process NUT server. Its methods are safe for concurrent
// use, also while clients are connected.
type Server struct {
	mu       sync.Mutex
	ln       net.Listener
	closed   bool
	done     chan struct{}
	wg       sync.WaitGroup
	upsOrder []string
	ups      map[string]*upsState // by lower-case name
	users    map[string]*user
	conns    map[int]*conn
	nextConn int
	tlsCfg   *tls.Config

	delay    time.Duration
	trickle  time.Duration
	mute     bool
	hook     func(conn int, line string) (reply string, handled bool)
	pending  int
	instcmds []InstCmdRecord
	tracking map[string]*tracked // by upper-case id
	now      func() time.Time
	newID    func() string
}

// DefaultCmds are the instant commands a UPS added with AddUPS has until
// SetCmds changes them.
var DefaultCmds = []string{
	"beeper.disable", "beeper.enable", "load.off", "load.on",
	"shutdown.return", "shutdown.stayoff", "shutdown.stop",
	"test.battery.start", "test.battery.stop",
}

// NewServer returns a server with no UPS and no user. Call Start or Listen.
func NewServer() *Server {
	return &Server{
		done:     make(chan struct{}),
		ups:      map[string]*upsState{},
		users:    map[string]*user{},
		conns:    map[int]*conn{},
		tracking: map[string]*tracked{},
		now:      time.Now,
		newID:    newUUID,
	}
}

// newUUID returns a random version 4 UUID in upper case, like upsd's
// nut_uuid_v4.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves in the background.
func (s *Server) Start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("nuttest: listen %s: %w", addr, err)
	}
	return s.Listen(ln)
}

// Listen serves on ln in the background. The server owns ln from now on.
func (s *Server) Listen(ln net.Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = ln.Close()
		return fmt.Errorf("nuttest: server closed")
	}
	if s.ln != nil {
		_ = ln.Close()
		return fmt.Errorf("nuttest: already listening on %s", s.ln.Addr())
	}
	s.ln = ln
	s.wg.Add(1)
	go s.accept(ln)
	return nil
}

// Addr returns the listening address ("127.0.0.1:port"), or "" before
// Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Close stops listening, closes every connection and waits until all of
// the server's goroutines have ended. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	var err error
	if !s.closed {
		s.closed = true
		close(s.done)
		if s.ln != nil {
			err = s.ln.Close()
		}
		for _, c := range s.conns {
			c.close()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// DropConnections closes every client connection, as a crashed or
// restarted upsd would, and keeps listening. It returns when the
// connections are gone (their LOGINs no longer count).
func (s *Server) DropConnections() {
	s.mu.Lock()
	var done []chan struct{}
	for _, c := range s.conns {
		c.close()
		done = append(done, c.done)
	}
	s.mu.Unlock()
	for _, d := range done {
		<-d
	}
}

// ConnCount returns the number of open client connections.
func (s *Server) ConnCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) accept(ln net.Listener) {
	defer s.wg.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.isClosed() {
				return
			}
			// A passing failure (e.g. out of file descriptors): retry soon.
			t := time.NewTimer(10 * time.Millisecond)
			select {
			case <-s.done:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = nc.Close()
			return
		}
		s.nextConn++
		c := &conn{
			id:      s.nextConn,
			raw:     nc,
			rw:      nc,
			br:      bufio.NewReaderSize(nc, MaxLineLength+2),
			addr:    hostOf(nc.RemoteAddr()),
			closing: make(chan struct{}),
			done:    make(chan struct{}),
		}
		s.conns[c.id] = c
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(c)
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}

// --- scripting ---

func lower(s string) string { return strings.ToLower(s) }

// upsLocked returns the UPS, creating it when missing. s.mu is held.
func (s *Server) upsLocked(name string) *upsState {
	u := s.ups[lower(name)]
	if u == nil {
		u = &upsState{
			name:    name,
			vars:    map[string]*variable{},
			cmds:    slices.Clone(DefaultCmds),
			results: map[string]string{},
		}
		s.ups[lower(name)] = u
		s.upsOrder = append(s.upsOrder, lower(name))
	}
	return u
}

func (u *upsState) setVar(name, value string) {
	v := u.vars[lower(name)]
	if v == nil {
		v = &variable{name: name}
		u.vars[lower(name)] = v
	}
	v.value = clean(value)
}

// AddUPS adds a UPS (or replaces the description and variables of an
// existing one). desc "" means none, as when ups.conf has no desc=.
// Scripting methods create a UPS they do not know yet. Values and
// descriptions keep only printable ASCII, as upsd's parser would leave
// them.
func (s *Server) AddUPS(name, desc string, vars map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.upsLocked(name)
	u.desc = clean(desc)
	u.vars = map[string]*variable{}
	for k, v := range vars {
		u.setVar(k, v)
	}
}

// SetVar sets one variable, as the driver would publish it.
func (s *Server) SetVar(ups, name, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.upsLocked(ups).setVar(name, value)
}

// SetVars sets several variables at once (atomically for readers).
func (s *Server) SetVars(ups string, vars map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.upsLocked(ups)
	for k, v := range vars {
		u.setVar(k, v)
	}
}

// SetStatus sets ups.status (e.g. "OL", "OB LB").
func (s *Server) SetStatus(ups, status string) { s.SetVar(ups, "ups.status", status) }

// DelVar removes a variable.
func (s *Server) DelVar(ups, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.upsLocked(ups).vars, lower(name))
}

// Vars returns a copy of the variables of ups as stored (ups.status
// without the "FSD" that GET VAR adds), nil for an unknown UPS.
func (s *Server) Vars(ups string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.ups[lower(ups)]
	if u == nil {
		return nil
	}
	out := make(map[string]string, len(u.vars))
	for _, v := range u.vars {
		out[v.name] = v.value
	}
	return out
}

// SetRW makes a variable writable with SET VAR (creating it empty when
// missing). maxLen > 0 makes it a STRING of at most maxLen bytes (SET VAR
// with a longer value answers TOO-LONG); 0 a NUMBER.
func (s *Server) SetRW(ups, name string, maxLen int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.upsLocked(ups)
	v := u.vars[lower(name)]
	if v == nil {
		u.setVar(name, "")
		v = u.vars[lower(name)]
	}
	v.rw = true
	v.strMax = max(maxLen, 0)
}

// SetEnum restricts a variable to the given values (LIST ENUM; SET VAR of
// another value answers INVALID-VALUE).
func (s *Server) SetEnum(ups, name string, values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.upsLocked(ups)
	if u.vars[lower(name)] == nil {
		u.setVar(name, "")
	}
	v := u.vars[lower(name)]
	v.enum = v.enum[:0]
	for _, e := range values {
		v.enum = append(v.enum, clean(e))
	}
}

// AddRange adds an allowed interval to a variable (LIST RANGE; SET VAR
// outside every interval answers INVALID-VALUE).
func (s *Server) AddRange(ups, name string, lo, hi int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.upsLocked(ups)
	if u.vars[lower(name)] == nil {
		u.setVar(name, "")
	}
	v := u.vars[lower(name)]
	v.ranges = append(v.ranges, [2]int{lo, hi})
}

// SetCmds replaces the instant commands of ups (DefaultCmds until then).
func (s *Server) SetCmds(ups string, cmds ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.upsLocked(ups).cmds = slices.Clone(cmds)
}

// SetInstCmdResult sets what the driver reports for an instant command
// through TRACKING: "" for SUCCESS, or an ERR code such as "FAILED",
// "INVALID-ARGUMENT" or "UNKNOWN".
func (s *Server) SetInstCmdResult(ups, cmd, code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.upsLocked(ups).results[lower(cmd)] = code
}

// SetTrackingPending makes GET TRACKING answer PENDING for the first n
// queries of each new tracking id.
func (s *Server) SetTrackingPending(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = max(n, 0)
}

// SetError makes every command that needs fresh data from ups (GET VAR,
// TYPE, DESC, CMDDESC, NUMLOGINS, LIST VAR, RW, CMD, ENUM, RANGE, SET VAR,
// INSTCMD) answer "ERR <code>", e.g. "DATA-STALE" or
// "DRIVER-NOT-CONNECTED". "" clears it.
func (s *Server) SetError(ups, code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.upsLocked(ups).errCode = code
}

// AddUser adds (or replaces) a user of upsd.users.
func (s *Server) AddUser(name, pass string, perms Perms) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[name] = &user{pass: pass, perms: Perms{
		Upsmon:   perms.Upsmon,
		Actions:  slices.Clone(perms.Actions),
		InstCmds: slices.Clone(perms.InstCmds),
	}}
}

// EnableTLS makes STARTTLS available with this certificate.
func (s *Server) EnableTLS(cert tls.Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

// FSDSet reports whether the FSD flag of ups is set.
func (s *Server) FSDSet(ups string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.ups[lower(ups)]
	return u != nil && u.fsd
}

// ResetFSD clears the FSD latch of ups, as restarting upsd would.
func (s *Server) ResetFSD(ups string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.ups[lower(ups)]; u != nil {
		u.fsd = false
	}
}

// Logins returns the USERNAMEs of the connections logged in to ups, in
// connection order (one entry per LOGIN).
func (s *Server) Logins(ups string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.ups[lower(ups)]
	if u == nil {
		return nil
	}
	var ids []int
	for id, c := range s.conns {
		if c.login == u {
			ids = append(ids, id)
		}
	}
	sort.Ints(ids)
	out := []string{}
	for _, id := range ids {
		out = append(out, s.conns[id].username)
	}
	return out
}

// InstCmds returns the instant commands accepted so far, oldest first.
func (s *Server) InstCmds() []InstCmdRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.instcmds)
}

// SetReplyDelay delays every reply by d.
func (s *Server) SetReplyDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// SetTrickle writes replies one byte at a time, waiting perByte after each
// byte (a slow-loris server). 0 turns it off.
func (s *Server) SetTrickle(perByte time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trickle = perByte
}

// SetMute makes the server read commands but never answer or act on them.
func (s *Server) SetMute(mute bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mute = mute
}

// SetHook installs a function that sees every command line first (conn is
// the connection id, line has no line ending). When it returns handled, the
// server writes reply verbatim (include the "\n"; "" writes nothing) and
// skips its own handling. It runs on the connection's goroutine without
// the server's lock, so it may call the server's methods. nil removes it.
func (s *Server) SetHook(hook func(conn int, line string) (reply string, handled bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = hook
}

// SetClock sets the clock used for InstCmdRecord.At.
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// SetIDSource sets the generator of TRACKING ids (random UUIDs by default).
func (s *Server) SetIDSource(newID func() string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.newID = newID
}
