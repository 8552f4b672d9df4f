package nuttest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Version is the VER reply.
const Version = "Network UPS Tools upsd 2.8.0 - http://www.networkupstools.org/"

// conn is one client connection. raw, rw and br belong to the serving
// goroutine (raw is also closed by close); the other fields are guarded by
// Server.mu.
type conn struct {
	id        int
	raw       net.Conn
	rw        net.Conn // raw, or the *tls.Conn after STARTTLS
	br        *bufio.Reader
	addr      string
	closeOnce sync.Once
	closing   chan struct{}
	done      chan struct{}

	username string
	password string
	hasUser  bool
	hasPass  bool
	login    *upsState
	tracking bool
	tls      bool
}

func (c *conn) close() {
	c.closeOnce.Do(func() {
		close(c.closing)
		_ = c.raw.Close()
	})
}

const (
	thenContinue = iota
	thenClose
	thenTLS
)

type result struct {
	reply string
	then  int
}

func ok(line string) result { return result{reply: line + "\n"} }

func errReply(code string) result { return result{reply: "ERR " + code + "\n"} }

func (s *Server) serve(c *conn) {
	defer func() {
		c.close()
		s.mu.Lock()
		delete(s.conns, c.id)
		c.login = nil
		s.mu.Unlock()
		close(c.done)
		s.wg.Done()
	}()
	for {
		line, err := readLine(c.br)
		if err != nil {
			return
		}
		s.mu.Lock()
		mute, hook := s.mute, s.hook
		s.mu.Unlock()
		if mute {
			continue
		}
		if hook != nil {
			if reply, handled := hook(c.id, line); handled {
				if !s.write(c, reply) {
					return
				}
				continue
			}
		}
		r := s.handle(c, line)
		if !s.write(c, r.reply) {
			return
		}
		switch r.then {
		case thenClose:
			return
		case thenTLS:
			if !s.upgrade(c) {
				return
			}
		}
	}
}

var errTooLong = errors.New("line too long")

func readLine(br *bufio.Reader) (string, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", errTooLong
		}
		return "", err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) > MaxLineLength {
		return "", errTooLong
	}
	return string(line), nil
}

// write sends reply after the configured delay, byte by byte when
// trickling. It reports false when the connection is gone.
func (s *Server) write(c *conn, reply string) bool {
	if reply == "" {
		return true
	}
	s.mu.Lock()
	delay, trickle := s.delay, s.trickle
	s.mu.Unlock()
	if delay > 0 && !s.pause(c, delay) {
		return false
	}
	if trickle <= 0 {
		_, err := io.WriteString(c.rw, reply)
		return err == nil
	}
	for i := 0; i < len(reply); i++ {
		if _, err := c.rw.Write([]byte{reply[i]}); err != nil {
			return false
		}
		if !s.pause(c, trickle) {
			return false
		}
	}
	return true
}

func (s *Server) pause(c *conn, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.closing:
		return false
	case <-s.done:
		return false
	}
}

// upgrade runs the TLS handshake after "OK STARTTLS".
func (s *Server) upgrade(c *conn) bool {
	s.mu.Lock()
	cfg := s.tlsCfg
	s.mu.Unlock()
	if cfg == nil || c.br.Buffered() > 0 {
		// Bytes sent before the handshake must not count as encrypted.
		return false
	}
	tc := tls.Server(c.raw, cfg)
	_ = c.raw.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		return false
	}
	_ = c.raw.SetDeadline(time.Time{})
	c.rw = tc
	c.br = bufio.NewReaderSize(tc, MaxLineLength+2)
	s.mu.Lock()
	c.tls = true
	s.mu.Unlock()
	return true
}

// handle answers one command line like upsd's parse_net.
func (s *Server) handle(c *conn, line string) result {
	words, parsed := splitWords(line)
	if !parsed {
		return result{} // upsd logs the parse error and answers nothing
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(words) == 0 {
		return errReply("UNKNOWN-COMMAND")
	}
	args := words[1:]
	switch cmd := strings.ToUpper(words[0]); cmd {
	case "VER", "NETVER", "PROTVER", "HELP":
		if len(args) != 0 {
			return errReply("INVALID-ARGUMENT")
		}
		switch cmd {
		case "VER":
			return ok(Version)
		case "HELP":
			return ok("Commands: HELP VER GET LIST SET INSTCMD LOGIN LOGOUT USERNAME PASSWORD STARTTLS")
		}
		return ok("1.3")
	case "STARTTLS":
		switch {
		case c.tls:
			return errReply("ALREADY-SSL-MODE")
		case s.tlsCfg == nil:
			return errReply("FEATURE-NOT-CONFIGURED")
		}
		return result{reply: "OK STARTTLS\n", then: thenTLS}
	case "GET":
		return s.get(c, args)
	case "LIST":
		return s.list(args)
	case "USERNAME":
		switch {
		case len(args) != 1:
			return errReply("INVALID-ARGUMENT")
		case c.hasUser:
			return errReply("ALREADY-SET-USERNAME")
		}
		c.username, c.hasUser = args[0], true
		return ok("OK")
	case "PASSWORD":
		switch {
		case len(args) != 1:
			return errReply("INVALID-ARGUMENT")
		case c.hasPass:
			return errReply("ALREADY-SET-PASSWORD")
		}
		c.password, c.hasPass = args[0], true
		return ok("OK")
	case "LOGOUT":
		if len(args) != 0 {
			return errReply("INVALID-ARGUMENT")
		}
		// upsd drops the login when it closes the connection right after
		// this reply; dropping it first makes NUMLOGINS exact as soon as
		// the client has read "OK Goodbye".
		c.login = nil
		return result{reply: "OK Goodbye\n", then: thenClose}
	case "LOGIN", "PRIMARY", "MASTER", "FSD", "SET", "INSTCMD":
		// Commands that need USERNAME and PASSWORD first (FLAG_USER).
		switch {
		case !c.hasUser:
			return errReply("USERNAME-REQUIRED")
		case !c.hasPass:
			return errReply("PASSWORD-REQUIRED")
		}
		switch cmd {
		case "LOGIN":
			return s.login(c, args)
		case "PRIMARY", "MASTER":
			return s.primary(c, cmd, args)
		case "FSD":
			return s.fsd(c, args)
		case "SET":
			return s.set(c, args)
		}
		return s.instcmd(c, args)
	}
	return errReply("UNKNOWN-COMMAND")
}

func (s *Server) find(name string) *upsState { return s.ups[lower(name)] }

// unavailable is upsd's ups_available: the scripted error, if any.
func unavailable(u *upsState) (result, bool) {
	if u.errCode != "" {
		return errReply(u.errCode), true
	}
	return result{}, false
}

// allowed is upsd's user_checkaction: credentials, then the action.
func (s *Server) allowed(c *conn, action string) bool {
	u := s.users[c.username]
	if u == nil || u.pass != c.password {
		return false
	}
	mon := strings.ToLower(u.perms.Upsmon)
	primary := mon == "primary" || mon == "master"
	switch action {
	case "LOGIN":
		return primary || mon == "secondary" || mon == "slave"
	case "PRIMARY":
		return primary
	case "FSD":
		return primary || hasFold(u.perms.Actions, "FSD")
	}
	return hasFold(u.perms.Actions, action)
}

func (s *Server) allowedCmd(c *conn, cmd string) bool {
	u := s.users[c.username]
	if u == nil || u.pass != c.password {
		return false
	}
	return hasFold(u.perms.InstCmds, "ALL") || hasFold(u.perms.InstCmds, cmd)
}

func hasFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(x string) bool { return strings.EqualFold(x, s) })
}

func (s *Server) login(c *conn, a []string) result {
	if len(a) != 1 {
		return errReply("INVALID-ARGUMENT")
	}
	if c.login != nil {
		return errReply("ALREADY-LOGGED-IN")
	}
	u := s.find(a[0])
	if u == nil {
		return errReply("UNKNOWN-UPS")
	}
	if !s.allowed(c, "LOGIN") {
		return errReply("ACCESS-DENIED")
	}
	c.login = u
	return ok("OK")
}

func (s *Server) primary(c *conn, cmd string, a []string) result {
	if len(a) != 1 {
		return errReply("INVALID-ARGUMENT")
	}
	if s.find(a[0]) == nil {
		return errReply("UNKNOWN-UPS")
	}
	if !s.allowed(c, "PRIMARY") {
		return errReply("ACCESS-DENIED")
	}
	return ok("OK " + cmd + "-GRANTED")
}

func (s *Server) fsd(c *conn, a []string) result {
	if len(a) != 1 {
		return errReply("INVALID-ARGUMENT")
	}
	u := s.find(a[0])
	if u == nil {
		return errReply("UNKNOWN-UPS")
	}
	if !s.allowed(c, "FSD") {
		return errReply("ACCESS-DENIED")
	}
	u.fsd = true
	return ok("OK FSD-SET")
}

func (s *Server) numLogins(u *upsState) int {
	n := 0
	for _, c := range s.conns {
		if c.login == u {
			n++
		}
	}
	return n
}

// status returns a variable's value as GET VAR and LIST VAR send it.
func status(u *upsState, v *variable) string {
	if u.fsd && strings.EqualFold(v.name, "ups.status") {
		return "FSD " + v.value
	}
	return v.value
}

func (s *Server) get(c *conn, a []string) result {
	if len(a) < 1 {
		return errReply("INVALID-ARGUMENT")
	}
	sub := strings.ToUpper(a[0])
	if sub == "TRACKING" {
		if len(a) < 2 {
			if c.tracking {
				return ok("ON")
			}
			return ok("OFF")
		}
		if !c.tracking {
			return errReply("FEATURE-NOT-CONFIGURED")
		}
		return s.trackingStatus(a[1])
	}
	if len(a) < 2 {
		return errReply("INVALID-ARGUMENT")
	}
	name := a[1]
	switch sub {
	case "NUMLOGINS":
		u := s.find(name)
		if u == nil {
			return errReply("UNKNOWN-UPS")
		}
		if r, bad := unavailable(u); bad {
			return r
		}
		return ok(fmt.Sprintf("NUMLOGINS %s %d", name, s.numLogins(u)))
	case "UPSDESC":
		u := s.find(name)
		if u == nil {
			return errReply("UNKNOWN-UPS")
		}
		if u.desc == "" {
			return ok(fmt.Sprintf("UPSDESC %s \"Unavailable\"", name))
		}
		return ok(fmt.Sprintf("UPSDESC %s \"%s\"", name, encode(u.desc)))
	}
	if len(a) < 3 {
		return errReply("INVALID-ARGUMENT")
	}
	item := a[2]
	if sub == "VAR" && len(item) >= 7 && strings.EqualFold(item[:7], "server.") {
		switch strings.ToLower(item) {
		case "server.info":
			return ok(fmt.Sprintf("VAR %s server.info \"%s\"", name, Version))
		case "server.version":
			return ok(fmt.Sprintf("VAR %s server.version \"2.8.0\"", name))
		}
		return errReply("VAR-NOT-SUPPORTED")
	}
	switch sub {
	case "VAR", "TYPE", "DESC", "CMDDESC":
	default:
		return errReply("INVALID-ARGUMENT")
	}
	u := s.find(name)
	if u == nil {
		return errReply("UNKNOWN-UPS")
	}
	if r, bad := unavailable(u); bad {
		return r
	}
	switch sub {
	case "VAR":
		v := u.vars[lower(item)]
		if v == nil {
			return errReply("VAR-NOT-SUPPORTED")
		}
		return ok(fmt.Sprintf("VAR %s %s \"%s\"", name, item, encode(status(u, v))))
	case "TYPE":
		v := u.vars[lower(item)]
		if v == nil {
			return errReply("VAR-NOT-SUPPORTED")
		}
		t := "TYPE " + name + " " + item
		if v.rw {
			t += " RW"
		}
		if len(v.enum) > 0 {
			t += " ENUM"
		}
		if len(v.ranges) > 0 {
			t += " RANGE"
		}
		if v.strMax > 0 {
			return ok(fmt.Sprintf("%s STRING:%d", t, v.strMax))
		}
		return ok(t + " NUMBER")
	case "DESC":
		return ok(fmt.Sprintf("DESC %s %s \"%s\"", name, item, describe(varDescs, item)))
	}
	return ok(fmt.Sprintf("CMDDESC %s %s \"%s\"", name, item, describe(cmdDescs, item)))
}

func describe(table map[string]string, name string) string {
	if d, ok := table[lower(name)]; ok {
		return d
	}
	return "Description unavailable"
}

// A few descriptions from NUT's cmdvartab.
var varDescs = map[string]string{
	"ups.status":      "UPS status",
	"ups.load":        "Load on UPS (percent)",
	"battery.charge":  "Battery charge (percent)",
	"battery.runtime": "Battery runtime (seconds)",
	"input.voltage":   "Input voltage (V)",
	"output.voltage":  "Output voltage (V)",
	"ups.mfr":         "UPS manufacturer",
	"ups.model":       "UPS model",
}

var cmdDescs = map[string]string{
	"load.off":           "Turn off the load immediately",
	"load.on":            "Turn on the load immediately",
	"shutdown.return":    "Turn off the load and return when power is back",
	"shutdown.stayoff":   "Turn off the load and remain off",
	"shutdown.stop":      "Stop a shutdown in progress",
	"test.battery.start": "Start a battery test",
	"test.battery.stop":  "Stop the battery test",
	"beeper.disable":     "Disable the UPS beeper",
	"beeper.enable":      "Enable the UPS beeper",
}

func (s *Server) trackingStatus(id string) result {
	t := s.tracking[strings.ToUpper(id)]
	switch {
	case t == nil:
		return errReply("UNKNOWN")
	case t.pending > 0:
		t.pending--
		return ok("PENDING")
	case t.result == "":
		return ok("SUCCESS")
	}
	return errReply(t.result)
}

// track registers a new tracking id with the given final result.
func (s *Server) track(code string) string {
	id := s.newID()
	s.tracking[strings.ToUpper(id)] = &tracked{pending: s.pending, result: code}
	return id
}

func (s *Server) list(a []string) result {
	if len(a) < 1 {
		return errReply("INVALID-ARGUMENT")
	}
	sub := strings.ToUpper(a[0])
	var b strings.Builder
	if sub == "UPS" {
		b.WriteString("BEGIN LIST UPS\n")
		for _, k := range s.upsOrder {
			u := s.ups[k]
			if u.desc == "" {
				fmt.Fprintf(&b, "UPS %s \"Description unavailable\"\n", u.name)
			} else {
				fmt.Fprintf(&b, "UPS %s \"%s\"\n", u.name, encode(u.desc))
			}
		}
		b.WriteString("END LIST UPS\n")
		return result{reply: b.String()}
	}
	if len(a) < 2 {
		return errReply("INVALID-ARGUMENT")
	}
	name := a[1]
	switch sub {
	case "VAR", "RW", "CMD", "CLIENT":
	case "ENUM", "RANGE":
		if len(a) < 3 {
			return errReply("INVALID-ARGUMENT")
		}
	default:
		return errReply("INVALID-ARGUMENT")
	}
	u := s.find(name)
	if u == nil {
		return errReply("UNKNOWN-UPS")
	}
	if sub == "CLIENT" {
		// No availability check here, as in upsd.
		ids := make([]int, 0, len(s.conns))
		for id, c := range s.conns {
			if c.login == u {
				ids = append(ids, id)
			}
		}
		slices.Sort(ids)
		fmt.Fprintf(&b, "BEGIN LIST CLIENT %s\n", name)
		for _, id := range ids {
			fmt.Fprintf(&b, "CLIENT %s %s\n", u.name, s.conns[id].addr)
		}
		fmt.Fprintf(&b, "END LIST CLIENT %s\n", name)
		return result{reply: b.String()}
	}
	if r, bad := unavailable(u); bad {
		return r
	}
	switch sub {
	case "VAR", "RW":
		keys := make([]string, 0, len(u.vars))
		for k := range u.vars {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		fmt.Fprintf(&b, "BEGIN LIST %s %s\n", sub, name)
		for _, k := range keys {
			v := u.vars[k]
			switch {
			case sub == "VAR":
				fmt.Fprintf(&b, "VAR %s %s \"%s\"\n", name, v.name, encode(status(u, v)))
			case v.rw:
				fmt.Fprintf(&b, "RW %s %s \"%s\"\n", name, v.name, encode(v.value))
			}
		}
		fmt.Fprintf(&b, "END LIST %s %s\n", sub, name)
	case "CMD":
		cmds := slices.Clone(u.cmds)
		slices.SortFunc(cmds, func(x, y string) int { return strings.Compare(lower(x), lower(y)) })
		fmt.Fprintf(&b, "BEGIN LIST CMD %s\n", name)
		for _, cmd := range cmds {
			fmt.Fprintf(&b, "CMD %s %s\n", name, cmd)
		}
		fmt.Fprintf(&b, "END LIST CMD %s\n", name)
	case "ENUM", "RANGE":
		item := a[2]
		v := u.vars[lower(item)]
		if v == nil {
			return errReply("VAR-NOT-SUPPORTED")
		}
		fmt.Fprintf(&b, "BEGIN LIST %s %s %s\n", sub, name, item)
		if sub == "ENUM" {
			for _, e := range v.enum {
				fmt.Fprintf(&b, "ENUM %s %s \"%s\"\n", name, item, encode(e))
			}
		} else {
			for _, r := range v.ranges {
				fmt.Fprintf(&b, "RANGE %s %s \"%d\" \"%d\"\n", name, item, r[0], r[1])
			}
		}
		fmt.Fprintf(&b, "END LIST %s %s %s\n", sub, name, item)
	}
	return result{reply: b.String()}
}

func (s *Server) set(c *conn, a []string) result {
	if len(a) < 2 {
		return errReply("INVALID-ARGUMENT")
	}
	switch strings.ToUpper(a[0]) {
	case "TRACKING":
		switch strings.ToUpper(a[1]) {
		case "ON":
			c.tracking = true
		case "OFF":
			c.tracking = false
		default:
			return errReply("INVALID-ARGUMENT")
		}
		return ok("OK")
	case "VAR":
		if len(a) < 4 {
			return errReply("INVALID-ARGUMENT")
		}
	default:
		return errReply("INVALID-ARGUMENT")
	}
	u := s.find(a[1])
	if u == nil {
		return errReply("UNKNOWN-UPS")
	}
	if r, bad := unavailable(u); bad {
		return r
	}
	if !s.allowed(c, "SET") {
		return errReply("ACCESS-DENIED")
	}
	v := u.vars[lower(a[2])]
	val := a[3]
	switch {
	case v == nil:
		return errReply("VAR-NOT-SUPPORTED")
	case !v.rw:
		return errReply("READONLY")
	case v.strMax > 0 && len(val) > v.strMax:
		return errReply("TOO-LONG")
	case len(v.enum) > 0 && !slices.Contains(v.enum, val):
		return errReply("INVALID-VALUE")
	case len(v.ranges) > 0 && !inRanges(v.ranges, atoi(val)):
		return errReply("INVALID-VALUE")
	}
	v.value = val
	if c.tracking {
		return ok("OK TRACKING " + s.track(""))
	}
	return ok("OK")
}

func inRanges(ranges [][2]int, n int) bool {
	for _, r := range ranges {
		if r[0] <= n && n <= r[1] {
			return true
		}
	}
	return false
}

// atoi converts like C's atoi: leading blanks, a sign, digits; 0 if none.
func atoi(s string) int {
	s = strings.TrimLeft(s, " \t")
	end := 0
	if end < len(s) && (s[end] == '-' || s[end] == '+') {
		end++
	}
	for end < len(s) && s[end] >= '0' && s[end] <= '9' && end < 18 {
		end++
	}
	n, _ := strconv.Atoi(s[:end])
	return n
}

func (s *Server) instcmd(c *conn, a []string) result {
	if len(a) < 2 {
		return errReply("INVALID-ARGUMENT")
	}
	u := s.find(a[0])
	if u == nil {
		return errReply("UNKNOWN-UPS")
	}
	if r, bad := unavailable(u); bad {
		return r
	}
	cmd := a[1]
	if !hasFold(u.cmds, cmd) {
		return errReply("CMD-NOT-SUPPORTED")
	}
	if !s.allowedCmd(c, cmd) {
		return errReply("ACCESS-DENIED")
	}
	rec := InstCmdRecord{Conn: c.id, User: c.username, UPS: u.name, Cmd: cmd, At: s.now()}
	if len(a) >= 3 {
		rec.Value, rec.HasValue = a[2], true
	}
	reply := "OK"
	if c.tracking {
		rec.TrackingID = s.track(u.results[lower(cmd)])
		reply = "OK TRACKING " + rec.TrackingID
	}
	s.instcmds = append(s.instcmds, rec)
	return ok(reply)
}
