package nuttest

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

func startServer(t *testing.T) *Server {
	t.Helper()
	s := NewServer()
	s.AddUPS("ups", `Rack "A" #1`, map[string]string{
		"ups.status":     "OL",
		"battery.charge": "100",
		"ups.id":         `say "hi" \ #`,
	})
	s.AddUPS("ups2", "", map[string]string{"ups.status": "OB"})
	s.SetRW("ups", "ups.id", 64)
	s.AddUser("mon", "pw", Perms{Upsmon: "primary"})
	s.AddUser("sec", "pw", Perms{Upsmon: "secondary"})
	s.AddUser("admin", "pw", Perms{Actions: []string{"set"}, InstCmds: []string{"load.off"}})
	s.SetIDSource(func() string { return "0F1E2D3C-4B5A-4968-8776-A5B4C3D2E1F0" })
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

type rawClient struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func rawDial(t *testing.T, s *Server) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { _ = nc.Close() })
	return &rawClient{t: t, nc: nc, br: bufio.NewReader(nc)}
}

// talk sends one line and checks the reply lines exactly.
func (r *rawClient) talk(send string, want ...string) {
	r.t.Helper()
	if _, err := r.nc.Write([]byte(send + "\n")); err != nil {
		r.t.Fatal(err)
	}
	for _, w := range want {
		got, err := r.br.ReadString('\n')
		if err != nil {
			r.t.Fatalf("%q: reading %q: %v", send, w, err)
		}
		if got != w+"\n" {
			r.t.Errorf("%q: got %q, want %q", send, strings.TrimSuffix(got, "\n"), w)
		}
	}
}

// TestConversation pins the exact replies, taken from upsd 2.8 sources and
// observed behaviour.
func TestConversation(t *testing.T) {
	s := startServer(t)
	c := rawDial(t, s)
	c.talk("NETVER", "1.3")
	c.talk("PROTVER", "1.3")
	c.talk("VER", Version)
	c.talk("VER extra", "ERR INVALID-ARGUMENT")
	c.talk("HELP", "Commands: HELP VER GET LIST SET INSTCMD LOGIN LOGOUT USERNAME PASSWORD STARTTLS")
	c.talk("", "ERR UNKNOWN-COMMAND")
	c.talk("FROB", "ERR UNKNOWN-COMMAND")
	c.talk(`GET VAR ups "a#b"`) // upsd 2.8.0 ignores an unescaped # in quotes
	c.talk("NETVER", "1.3")
	c.talk("STARTTLS", "ERR FEATURE-NOT-CONFIGURED")
	c.talk("GET VAR ups ups.status", `VAR ups ups.status "OL"`)
	c.talk("get var UPS Ups.Status", `VAR UPS Ups.Status "OL"`)
	c.talk("GET VAR ups ups.id", `VAR ups ups.id "say \"hi\" \\ \#"`)
	c.talk("GET VAR ups nosuch", "ERR VAR-NOT-SUPPORTED")
	c.talk("GET VAR nosuch ups.status", "ERR UNKNOWN-UPS")
	c.talk("GET VAR ups", "ERR INVALID-ARGUMENT")
	c.talk("GET VAR nosuch server.version", `VAR nosuch server.version "2.8.0"`)
	c.talk("GET UPSDESC ups", `UPSDESC ups "Rack \"A\" \#1"`)
	c.talk("GET UPSDESC ups2", `UPSDESC ups2 "Unavailable"`)
	c.talk("GET NUMLOGINS ups", "NUMLOGINS ups 0")
	c.talk("GET TYPE ups ups.id", "TYPE ups ups.id RW STRING:64")
	c.talk("GET TYPE ups battery.charge", "TYPE ups battery.charge NUMBER")
	c.talk("GET DESC ups ups.status", `DESC ups ups.status "UPS status"`)
	c.talk("GET DESC ups x.y", `DESC ups x.y "Description unavailable"`)
	c.talk("GET CMDDESC ups load.off", `CMDDESC ups load.off "Turn off the load immediately"`)
	c.talk("GET TRACKING", "OFF")
	c.talk("GET TRACKING 1234", "ERR FEATURE-NOT-CONFIGURED")
	c.talk("LIST UPS", "BEGIN LIST UPS", `UPS ups "Rack \"A\" \#1"`, `UPS ups2 "Description unavailable"`, "END LIST UPS")
	c.talk("LIST VAR ups", "BEGIN LIST VAR ups", `VAR ups battery.charge "100"`, `VAR ups ups.id "say \"hi\" \\ \#"`,
		`VAR ups ups.status "OL"`, "END LIST VAR ups")
	c.talk("LIST RW ups", "BEGIN LIST RW ups", `RW ups ups.id "say \"hi\" \\ \#"`, "END LIST RW ups")
	c.talk("LIST CLIENT ups", "BEGIN LIST CLIENT ups", "END LIST CLIENT ups")
	c.talk("LIST ENUM ups ups.status", "BEGIN LIST ENUM ups ups.status", "END LIST ENUM ups ups.status")
	c.talk("LIST RANGE ups nosuch", "ERR VAR-NOT-SUPPORTED")
	c.talk("LIST FOO ups", "ERR INVALID-ARGUMENT")
	c.talk("LOGIN ups", "ERR USERNAME-REQUIRED")
	c.talk("USERNAME mon", "OK")
	c.talk("USERNAME mon", "ERR ALREADY-SET-USERNAME")
	c.talk("FSD ups", "ERR PASSWORD-REQUIRED")
	c.talk("PASSWORD wrong", "OK")
	c.talk("LOGIN ups", "ERR ACCESS-DENIED")
	c.talk("PASSWORD pw", "ERR ALREADY-SET-PASSWORD")

	m := rawDial(t, s)
	m.talk("USERNAME mon", "OK")
	m.talk(`PASSWORD "pw"`, "OK")
	m.talk("LOGIN nosuch", "ERR UNKNOWN-UPS")
	m.talk("LOGIN ups", "OK")
	m.talk("LOGIN ups", "ERR ALREADY-LOGGED-IN")
	m.talk("PRIMARY ups", "OK PRIMARY-GRANTED")
	m.talk("MASTER ups", "OK MASTER-GRANTED")
	m.talk("GET NUMLOGINS ups", "NUMLOGINS ups 1")
	m.talk("LIST CLIENT ups", "BEGIN LIST CLIENT ups", "CLIENT ups 127.0.0.1", "END LIST CLIENT ups")
	m.talk("SET VAR ups ups.id x", "ERR ACCESS-DENIED")
	m.talk("INSTCMD ups load.off", "ERR ACCESS-DENIED")
	m.talk("FSD ups", "OK FSD-SET")
	m.talk("GET VAR ups ups.status", `VAR ups ups.status "FSD OL"`)
	if !s.FSDSet("ups") {
		t.Error("FSDSet false")
	}

	sec := rawDial(t, s)
	sec.talk("USERNAME sec", "OK")
	sec.talk("PASSWORD pw", "OK")
	sec.talk("PRIMARY ups", "ERR ACCESS-DENIED")
	sec.talk("LOGIN ups", "OK")
	sec.talk("GET NUMLOGINS ups", "NUMLOGINS ups 2")
	if got := s.Logins("ups"); strings.Join(got, ",") != "mon,sec" {
		t.Errorf("Logins = %q", got)
	}
	sec.talk("LOGOUT", "OK Goodbye")
	if _, err := sec.br.ReadByte(); err == nil {
		t.Error("connection still open after LOGOUT")
	}
	m.talk("GET NUMLOGINS ups", "NUMLOGINS ups 1")

	a := rawDial(t, s)
	a.talk("USERNAME admin", "OK")
	a.talk("PASSWORD pw", "OK")
	a.talk("SET VAR ups ups.id", "ERR INVALID-ARGUMENT")
	a.talk(`SET VAR ups ups.id "new \"id\""`, "OK")
	a.talk("SET VAR ups ups.status OB", "ERR READONLY")
	a.talk("SET VAR ups no.such 1", "ERR VAR-NOT-SUPPORTED")
	a.talk("SET TRACKING MAYBE", "ERR INVALID-ARGUMENT")
	a.talk("SET TRACKING ON", "OK")
	a.talk("GET TRACKING", "ON")
	a.talk("INSTCMD ups load.on", "ERR ACCESS-DENIED")
	a.talk("INSTCMD ups no.such", "ERR CMD-NOT-SUPPORTED")
	a.talk("INSTCMD ups load.off 5", "OK TRACKING 0F1E2D3C-4B5A-4968-8776-A5B4C3D2E1F0")
	a.talk("GET TRACKING 0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0", "SUCCESS")
	a.talk("GET TRACKING 00000000-0000-4000-8000-000000000000", "ERR UNKNOWN")
	if got := s.Vars("ups")["ups.id"]; got != `new "id"` {
		t.Errorf("ups.id = %q", got)
	}
	recs := s.InstCmds()
	if len(recs) != 1 || recs[0].Cmd != "load.off" || recs[0].Value != "5" || recs[0].User != "admin" || recs[0].UPS != "ups" {
		t.Errorf("InstCmds = %+v", recs)
	}

	s.SetError("ups", "DATA-STALE")
	a.talk("GET VAR ups ups.status", "ERR DATA-STALE")
	a.talk("LIST VAR ups", "ERR DATA-STALE")
	a.talk("GET UPSDESC ups", `UPSDESC ups "Rack \"A\" \#1"`)
	s.SetError("ups", "DRIVER-NOT-CONNECTED")
	a.talk("GET NUMLOGINS ups", "ERR DRIVER-NOT-CONNECTED")
	s.SetError("ups", "")
	a.talk("GET VAR ups battery.charge", `VAR ups battery.charge "100"`)
}

func TestOversizedLineClosesConnection(t *testing.T) {
	s := startServer(t)
	c := rawDial(t, s)
	c.talk("GET VAR ups ups.status", `VAR ups ups.status "OL"`)
	if _, err := c.nc.Write([]byte("GET VAR ups " + strings.Repeat("x", 2000) + "\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.br.ReadByte(); err == nil {
		t.Error("connection still open after an oversized line")
	}
	// The server keeps serving others.
	rawDial(t, s).talk("NETVER", "1.3")
}

func TestDropConnectionsKeepsListening(t *testing.T) {
	s := startServer(t)
	c := rawDial(t, s)
	c.talk("USERNAME mon", "OK")
	c.talk("PASSWORD pw", "OK")
	c.talk("LOGIN ups", "OK")
	s.DropConnections()
	if n := s.ConnCount(); n != 0 {
		t.Errorf("ConnCount after DropConnections = %d", n)
	}
	if l := s.Logins("ups"); len(l) != 0 {
		t.Errorf("logins after DropConnections: %q", l)
	}
	if _, err := c.br.ReadByte(); err == nil {
		t.Error("dropped connection still open")
	}
	rawDial(t, s).talk("GET NUMLOGINS ups", "NUMLOGINS ups 0")
}

func TestCloseWhileDelayed(t *testing.T) {
	s := startServer(t)
	s.SetReplyDelay(time.Hour)
	c := rawDial(t, s)
	if _, err := c.nc.Write([]byte("NETVER\n")); err != nil {
		t.Fatal(err)
	}
	waitConns(t, s, 1)
	done := make(chan struct{})
	go func() {
		_ = s.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked by a delayed reply")
	}
	if s.Addr() == "" {
		t.Error("Addr empty after Close")
	}
	if err := s.Start("127.0.0.1:0"); err == nil {
		t.Error("Start after Close succeeded")
	}
}

func waitConns(t *testing.T, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.ConnCount() != n {
		if time.Now().After(deadline) {
			t.Fatalf("ConnCount = %d, want %d", s.ConnCount(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSplitWords(t *testing.T) {
	cases := map[string][]string{
		"GET VAR ups x":              {"GET", "VAR", "ups", "x"},
		`SET VAR u v "a \"b\" \\ c"`: {"SET", "VAR", "u", "v", `a "b" \ c`},
		`PASSWORD "open`:             {"PASSWORD", "open"},
		"a=b # comment":              {"a", "=", "b"},
		"ctrl\x01char":               {"ctrlchar"},
		`SET VAR u v "a\#b"`:         {"SET", "VAR", "u", "v", "a#b"},
		`"" x`:                       {"", "x"},
	}
	for in, want := range cases {
		got, ok := splitWords(in)
		if !ok {
			t.Errorf("splitWords(%q) failed", in)
		}
		if strings.Join(got, "|") != strings.Join(want, "|") || len(got) != len(want) {
			t.Errorf("splitWords(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzHandle feeds arbitrary command lines to the protocol handler: it
// must never panic, and every reply must be complete lines.
func FuzzHandle(f *testing.F) {
	for _, l := range []string{
		"GET VAR ups ups.status", "LIST VAR ups", "SET VAR ups ups.id \"x\"", "INSTCMD ups load.off 1",
		"USERNAME admin", "PASSWORD pw", "LOGIN ups", "GET TRACKING x", "SET TRACKING ON", "LIST RANGE ups ups.id",
		"GET TYPE ups ups.id", "\"unterminated", "a=b", "#", "\\",
	} {
		f.Add(l, "USERNAME admin")
	}
	f.Fuzz(func(t *testing.T, line, before string) {
		s := NewServer()
		s.AddUPS("ups", "d", map[string]string{"ups.status": "OL", "ups.id": "x"})
		s.SetRW("ups", "ups.id", 10)
		s.SetEnum("ups", "ups.id", "x", "y")
		s.AddRange("ups", "ups.id", 1, 2)
		s.AddUser("admin", "pw", Perms{Upsmon: "primary", Actions: []string{"SET"}, InstCmds: []string{"ALL"}})
		c := &conn{id: 1, addr: "127.0.0.1"}
		s.conns[1] = c
		for _, l := range []string{before, "PASSWORD pw", "SET TRACKING ON", line, line} {
			r := s.handle(c, l)
			if r.reply != "" && !strings.HasSuffix(r.reply, "\n") {
				t.Fatalf("reply %q to %q is not a whole line", r.reply, l)
			}
		}
	})
}
