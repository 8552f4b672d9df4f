// Package pvetest is an in-process fake of the Proxmox VE HTTP API
// (/api2/json) for sundown's proxmox provider tests and demo: HTTPS on
// 127.0.0.1 with its own CA, API-token authentication, every answer wrapped
// in {"data": …}, errors as PVE sends them, power actions as worker tasks
// with real-format UPIDs that run over time, guests that take a while to
// shut down or ignore the request, a guest agent that may be down, the
// token's ACL (enforced on the endpoints below and reported by GET
// /access/permissions) and VM.PowerMgmt denials, node shutdown and a
// minimal HA stack that restarts HA-managed guests whose requested state is
// still "started".
//
// It models only the endpoints sundown uses; see the proxmox provider's
// README for the list and the known differences from a real PVE 8.
package pvetest

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Node is a cluster node.
type Node struct {
	Name string
}

// Guest is a VM ("qemu") or container ("lxc") in the fake fleet.
type Guest struct {
	Node    string
	VMID    int
	Name    string
	Type    string // "qemu" (default) or "lxc"
	Running bool
	// ShutdownDelay is how long the guest OS takes to shut down after a
	// shutdown request (default 100 ms).
	ShutdownDelay time.Duration
	// IgnoreShutdown: the guest accepts the shutdown request and stays on;
	// the shutdown task fails at its timeout unless forceStop.
	IgnoreShutdown bool
	// AgentDown (qemu only): the QEMU guest agent is enabled in the config
	// but does not answer; a shutdown through it fails.
	AgentDown bool
	// HA: the guest is an HA resource "vm:<vmid>"/"ct:<vmid>" with requested
	// state "started"; the HA stack restarts it after a stop.
	HA bool
}

// Fleet is the cluster a Server serves.
type Fleet struct {
	Nodes  []Node
	Guests []Guest
	// Token is the full API token "user@realm!tokenid=SECRET" the server
	// accepts (default "sundown@pve!sundown=secret").
	Token string
	// DenyPowerMgmt lists VMIDs on which the token lacks VM.PowerMgmt.
	DenyPowerMgmt []int
	// DenyMonitor lists VMIDs on which the token lacks VM.Monitor, which
	// the guest agent ping needs.
	DenyMonitor []int
	// TaskDelay is how long a stop/start/suspend/resume task runs
	// (default 30 ms).
	TaskDelay time.Duration
	// HARestartDelay is how long the HA stack takes to restart a stopped
	// guest whose HA state is "started" (default 100 ms).
	HARestartDelay time.Duration
	// NodeShutdownDelay is how long a node takes to go offline after a
	// shutdown command (default 100 ms).
	NodeShutdownDelay time.Duration
	// ACL, when not nil, is what the token may do, path by path (see
	// ACL): the fake enforces it on the endpoints below and answers GET
	// /access/permissions from it. Nil grants every privilege on "/" with
	// propagation (Administrator), as before ACLs were modelled.
	// DenyPowerMgmt and DenyMonitor apply on top of it.
	//
	// Enforced: VM.Audit (status/current; guests without it are left out
	// of /cluster/resources), VM.PowerMgmt (guest status/* actions),
	// VM.Monitor (agent ping) on /vms/{vmid}; Sys.PowerMgmt (node
	// shutdown) on /nodes/{node}; Sys.Console on / (HA resource changes).
	ACL []ACL
	// BareErrors leaves the "message" member out of error bodies
	// ({"data":null} only), as some PVE versions and endpoints answer; the
	// message is then only in the HTTP status line.
	BareErrors bool
}

// ACL is one access-control entry of the fake's token: Privileges on Path
// ("/", "/vms", "/vms/101", "/nodes/pve1", …) and, when Propagate, on every
// path below it. As PVE evaluates ACLs (PVE::AccessControl::roles), the
// entries of the deepest path on the way from "/" to the checked path
// that apply there (all entries on the path itself, propagating ones on
// its ancestors) replace whatever came from above; an entry with no
// privileges is NoAccess. The entries stand for the token's effective
// ACL, i.e. a privilege-separated token's ACL already intersected with
// its user's (the fake has no users).
type ACL struct {
	Path       string
	Privileges []string
	Propagate  bool
}

// AllPrivileges are the privileges of PVE 8's Administrator role, which
// the token holds everywhere when Fleet.ACL is nil.
var AllPrivileges = []string{
	"Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate", "Datastore.Audit",
	"Group.Allocate", "Mapping.Audit", "Mapping.Modify", "Mapping.Use", "Permissions.Modify",
	"Pool.Allocate", "Pool.Audit", "Realm.Allocate", "Realm.AllocateUser",
	"SDN.Allocate", "SDN.Audit", "SDN.Use",
	"Sys.AccessNetwork", "Sys.Audit", "Sys.Console", "Sys.Incoming", "Sys.Modify", "Sys.PowerMgmt", "Sys.Syslog",
	"User.Modify", "VM.Allocate", "VM.Audit", "VM.Backup", "VM.Clone",
	"VM.Config.CDROM", "VM.Config.CPU", "VM.Config.Cloudinit", "VM.Config.Disk", "VM.Config.HWType",
	"VM.Config.Memory", "VM.Config.Network", "VM.Config.Options", "VM.Console", "VM.Migrate",
	"VM.Monitor", "VM.PowerMgmt", "VM.Snapshot", "VM.Snapshot.Rollback",
}

// GuestState is a guest's state as the fake holds it.
type GuestState struct {
	Node      string
	Status    string // "running" or "stopped"
	QMPStatus string // "running", "paused" or "stopped"
	HAState   string // "" when not HA-managed, else "started" or "stopped"
	Starts    int    // times the guest was started (HA restarts included)
}

type guest struct {
	Guest
	status, qmp string
	haState     string
	lock        *task // a running shutdown task
	starts      int
}

type task struct {
	upid, node, typ, id, user string
	pid, pstart               int
	start                     int64
	done                      bool
	exit                      string
}

type event struct {
	at  time.Time
	seq int
	fn  func(at time.Time)
}

// Server is a running fake. Close stops it.
type Server struct {
	fleet   Fleet
	pki     *pki
	ln      net.Listener
	srv     *http.Server
	dir     string
	url     string
	user    string // "user@realm!tokenid"
	done    chan struct{}
	wg      sync.WaitGroup
	closeMu sync.Once

	mu        sync.Mutex
	nodes     map[string]string // name → "online"/"offline"
	guests    map[int]*guest
	tasks     map[string]*task
	events    []event
	seq       int
	pid       int
	calls     []string
	denyNext  map[int]bool
	deny      map[int]bool
	shutdowns []string
}

// NewServer starts a fake serving f on https://127.0.0.1:<random port>.
func NewServer(f Fleet) (*Server, error) {
	if f.Token == "" {
		f.Token = "sundown@pve!sundown=secret"
	}
	user, _, ok := strings.Cut(f.Token, "=")
	if !ok || !strings.Contains(user, "@") || !strings.Contains(user, "!") {
		return nil, errors.New("pvetest: Token must look like user@realm!tokenid=SECRET")
	}
	if f.TaskDelay <= 0 {
		f.TaskDelay = 30 * time.Millisecond
	}
	if f.HARestartDelay <= 0 {
		f.HARestartDelay = 100 * time.Millisecond
	}
	if f.NodeShutdownDelay <= 0 {
		f.NodeShutdownDelay = 100 * time.Millisecond
	}
	s := &Server{fleet: f, user: user, done: make(chan struct{}),
		nodes: map[string]string{}, guests: map[int]*guest{}, tasks: map[string]*task{},
		denyNext: map[int]bool{}, deny: map[int]bool{}, pid: 4000}
	for _, n := range f.Nodes {
		if n.Name == "" || strings.ContainsAny(n.Name, "/:") {
			return nil, fmt.Errorf("pvetest: bad node name %q", n.Name)
		}
		s.nodes[n.Name] = "online"
	}
	for _, g := range f.Guests {
		if _, ok := s.nodes[g.Node]; !ok {
			return nil, fmt.Errorf("pvetest: guest %d on unknown node %q", g.VMID, g.Node)
		}
		if g.VMID < 100 || s.guests[g.VMID] != nil {
			return nil, fmt.Errorf("pvetest: VMID %d invalid or duplicated", g.VMID)
		}
		if g.Type == "" {
			g.Type = "qemu"
		}
		if g.Type != "qemu" && g.Type != "lxc" {
			return nil, fmt.Errorf("pvetest: guest %d type %q", g.VMID, g.Type)
		}
		if g.ShutdownDelay <= 0 {
			g.ShutdownDelay = 100 * time.Millisecond
		}
		st := &guest{Guest: g, status: "stopped", qmp: "stopped"}
		if g.Running {
			st.status, st.qmp = "running", "running"
		}
		if g.HA {
			st.haState = "started"
		}
		s.guests[g.VMID] = st
	}
	for _, id := range f.DenyPowerMgmt {
		s.deny[id] = true
	}
	for i, a := range f.ACL {
		if normPath(a.Path) != a.Path {
			return nil, fmt.Errorf("pvetest: ACL[%d]: path %q is not a normalized ACL path (want e.g. /vms/101)", i, a.Path)
		}
	}
	var err error
	if s.pki, err = newPKI(); err != nil {
		return nil, fmt.Errorf("pvetest: %w", err)
	}
	if s.dir, err = os.MkdirTemp("", "pvetest-"); err != nil {
		return nil, fmt.Errorf("pvetest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "ca.pem"), s.pki.caPEM, 0o600); err != nil {
		os.RemoveAll(s.dir)
		return nil, fmt.Errorf("pvetest: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(s.dir)
		return nil, fmt.Errorf("pvetest: %w", err)
	}
	s.ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{s.pki.cert}, MinVersion: tls.VersionTLS12})
	s.url = "https://" + ln.Addr().String()
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)} // TLS handshake failures are expected in tests
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.srv.Serve(s.ln)
	}()
	return s, nil
}

// URL is the server's base URL, "https://127.0.0.1:PORT" (the API is under
// /api2/json).
func (s *Server) URL() string { return s.url }

// CAFile is a PEM file with the CA that signed the server's certificate.
func (s *Server) CAFile() string { return filepath.Join(s.dir, "ca.pem") }

// CAPEM is the CA certificate in PEM.
func (s *Server) CAPEM() []byte { return slices.Clone(s.pki.caPEM) }

// Fingerprint is the SHA-256 fingerprint of the server certificate as PVE
// shows it ("AB:CD:…").
func (s *Server) Fingerprint() string { return fingerprint(s.pki.leaf.Raw) }

// Close stops the server and removes its files. Idempotent.
func (s *Server) Close() {
	s.closeMu.Do(func() {
		close(s.done)
		_ = s.srv.Close()
		s.wg.Wait()
		os.RemoveAll(s.dir)
	})
}

// Calls counts the requests whose "METHOD /path" (path without the
// /api2/json prefix) matches pattern in the sense of path.Match, e.g.
// "POST /nodes/*/qemu/101/status/shutdown".
func (s *Server) Calls(pattern string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.calls {
		if ok, _ := path.Match(pattern, c); ok {
			n++
		}
	}
	return n
}

// State returns the state of guest vmid after applying everything due.
func (s *Server) State(vmid int) (GuestState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(time.Now())
	g := s.guests[vmid]
	if g == nil {
		return GuestState{}, false
	}
	return GuestState{Node: g.Node, Status: g.status, QMPStatus: g.qmp, HAState: g.haState, Starts: g.starts}, true
}

// NodeShutdowns lists the nodes that received a shutdown command, in order.
func (s *Server) NodeShutdowns() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.shutdowns)
}

// BootNode brings a node that was shut down back online, as Wake-on-LAN or
// IPMI would when power returns: its guests stay stopped (the fake has no
// start-at-boot), except HA-managed guests whose requested state is still
// "started", which the HA stack starts. A node that is online (even one
// still going down) is left alone.
func (s *Server) BootNode(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.advance(now)
	st, ok := s.nodes[name]
	if !ok {
		return fmt.Errorf("pvetest: boot node %q: no such node", name)
	}
	if st == "online" {
		return nil
	}
	s.nodes[name] = "online"
	for _, g := range s.guests {
		if g.Node == name && g.haState == "started" && g.status == "stopped" {
			s.haRestart(g, now)
		}
	}
	return nil
}

// DenyNext makes the next power-management request on vmid fail with 403
// Permission check failed (/vms/<vmid>, VM.PowerMgmt).
func (s *Server) DenyNext(vmid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denyNext[vmid] = true
}

// at schedules fn at time t; called with s.mu held.
func (s *Server) at(t time.Time, fn func(at time.Time)) {
	s.seq++
	s.events = append(s.events, event{at: t, seq: s.seq, fn: fn})
}

// advance runs every event due at or before now, in time order; events may
// schedule further events. Called with s.mu held.
func (s *Server) advance(now time.Time) {
	for {
		sort.Slice(s.events, func(i, j int) bool {
			if !s.events[i].at.Equal(s.events[j].at) {
				return s.events[i].at.Before(s.events[j].at)
			}
			return s.events[i].seq < s.events[j].seq
		})
		if len(s.events) == 0 || s.events[0].at.After(now) {
			return
		}
		ev := s.events[0]
		s.events = s.events[1:]
		ev.fn(ev.at)
	}
}

// apiError is an error answer: HTTP status plus the PVE message.
type apiError struct {
	code   int
	msg    string
	errors map[string]string
}

func (e *apiError) Error() string { return e.msg }

func errf(code int, format string, args ...any) *apiError {
	return &apiError{code: code, msg: fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.Header().Set("Server", "pve-api-daemon/3.0")
	w.Header().Set("Cache-Control", "max-age=0")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

// fail writes an error the way pveproxy does for API calls: the status
// line carries the message as its reason phrase ("HTTP/1.1 403 Permission
// check failed (/vms/101, VM.PowerMgmt)"), the body is {"data":null} plus
// the message (newline-terminated, as PVE's die messages are; left out
// with Fleet.BareErrors) and, for parameter errors, an "errors" object.
// net/http cannot set a reason phrase, so the answer is written on the
// hijacked connection, which is then closed.
func (s *Server) fail(w http.ResponseWriter, e *apiError) {
	body := map[string]any{"data": nil}
	if !s.fleet.BareErrors {
		body["message"] = e.msg + "\n"
	}
	if e.errors != nil {
		body["errors"] = e.errors
	}
	raw, err := json.Marshal(body)
	if err != nil {
		raw = []byte(`{"data":null}`)
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeJSON(w, e.code, body)
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		writeJSON(w, e.code, body)
		return
	}
	defer conn.Close()
	reason := strings.NewReplacer("\r", " ", "\n", " ").Replace(e.msg)
	fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\nServer: pve-api-daemon/3.0\r\nContent-Type: application/json;charset=UTF-8\r\n"+
		"Cache-Control: max-age=0\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", e.code, reason, len(raw), raw)
	_ = buf.Flush()
}

const prefix = "/api2/json"

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.done:
		http.Error(w, "closed", http.StatusServiceUnavailable)
		return
	default:
	}
	p, ok := strings.CutPrefix(r.URL.Path, prefix)
	if !ok {
		s.fail(w, errf(http.StatusNotImplemented, "Method '%s %s' not implemented", r.Method, r.URL.Path))
		return
	}
	if p == "" {
		p = "/"
	}
	if err := r.ParseForm(); err != nil {
		s.fail(w, &apiError{code: 400, msg: "Parameter verification failed.", errors: map[string]string{"body": "unable to parse"}})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, r.Method+" "+p)
	auth := r.Header.Get("Authorization")
	tok, isToken := strings.CutPrefix(auth, "PVEAPIToken=")
	if auth == "" {
		s.fail(w, errf(http.StatusUnauthorized, "No ticket"))
		return
	}
	if !isToken || tok != s.fleet.Token {
		s.fail(w, errf(http.StatusUnauthorized, "authentication failure"))
		return
	}
	s.advance(time.Now())
	data, err := s.route(r, strings.Split(strings.Trim(p, "/"), "/"))
	if err != nil {
		var ae *apiError
		if !errors.As(err, &ae) {
			ae = errf(500, "%s", err.Error())
		}
		s.fail(w, ae)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": data})
}

func notImpl(r *http.Request) error {
	return errf(http.StatusNotImplemented, "Method '%s %s' not implemented", r.Method, r.URL.Path)
}

func (s *Server) route(r *http.Request, seg []string) (any, error) {
	get, post := r.Method == http.MethodGet, r.Method == http.MethodPost
	switch {
	case len(seg) == 1 && seg[0] == "version" && get:
		return map[string]any{"version": "8.2.4", "release": "8.2", "repoid": "faa83925c9641325"}, nil
	case len(seg) == 1 && seg[0] == "nodes" && get:
		return s.listNodes(), nil
	case len(seg) == 2 && seg[0] == "cluster" && seg[1] == "resources" && get:
		return s.resources(r.Form.Get("type")), nil
	case len(seg) == 2 && seg[0] == "access" && seg[1] == "permissions" && get:
		return s.permissions(r)
	case len(seg) >= 3 && seg[0] == "cluster" && seg[1] == "ha" && seg[2] == "resources":
		return s.ha(r, seg[3:])
	case len(seg) >= 2 && seg[0] == "nodes":
		return s.nodeRoute(r, seg[1], seg[2:], get, post)
	}
	return nil, notImpl(r)
}

func (s *Server) listNodes() []map[string]any {
	names := make([]string, 0, len(s.nodes))
	for n := range s.nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	out := []map[string]any{}
	for _, n := range names {
		e := map[string]any{"node": n, "status": s.nodes[n], "type": "node", "id": "node/" + n,
			"ssl_fingerprint": fingerprint(s.pki.leaf.Raw), "level": ""}
		if s.nodes[n] == "online" {
			e["uptime"] = 12345
			e["maxcpu"] = 8
			e["cpu"] = 0.02
			e["maxmem"] = 34359738368
			e["mem"] = 4294967296
		}
		out = append(out, e)
	}
	return out
}

func (s *Server) sortedGuests() []*guest {
	gs := make([]*guest, 0, len(s.guests))
	for _, g := range s.guests {
		gs = append(gs, g)
	}
	sort.Slice(gs, func(i, j int) bool { return gs[i].VMID < gs[j].VMID })
	return gs
}

func (s *Server) resources(typ string) []map[string]any {
	out := []map[string]any{}
	if typ == "" || typ == "node" {
		for _, n := range s.listNodes() {
			out = append(out, n)
		}
	}
	if typ == "" || typ == "vm" {
		for _, g := range s.sortedGuests() {
			if !s.allowed(vmPath(g.VMID), "VM.Audit") {
				continue // PVE lists only the guests the token may audit
			}
			status := g.status
			if s.nodes[g.Node] != "online" {
				status = "unknown"
			}
			e := map[string]any{"id": fmt.Sprintf("%s/%d", g.Type, g.VMID), "type": g.Type, "node": g.Node,
				"vmid": g.VMID, "name": g.Name, "status": status, "template": 0}
			if g.haState != "" {
				e["hastate"] = g.haState
			}
			out = append(out, e)
		}
	}
	return out
}

func (s *Server) ha(r *http.Request, seg []string) (any, error) {
	switch {
	case len(seg) == 0 && r.Method == http.MethodGet:
		out := []map[string]any{}
		for _, g := range s.sortedGuests() {
			if g.haState != "" {
				out = append(out, s.haEntry(g))
			}
		}
		return out, nil
	case len(seg) == 1:
		g := s.haGuest(seg[0])
		if g == nil {
			return nil, errf(500, "no such resource '%s'", seg[0])
		}
		switch r.Method {
		case http.MethodGet:
			return s.haEntry(g), nil
		case http.MethodPut:
			// Modifying HA resources needs Sys.Console on /.
			if !s.allowed("/", "Sys.Console") {
				return nil, errf(403, "Permission check failed (/, Sys.Console)")
			}
			st := r.Form.Get("state")
			switch st {
			case "":
				return nil, nil
			case "started", "stopped", "disabled", "ignored":
			default:
				return nil, &apiError{code: 400, msg: "Parameter verification failed.",
					errors: map[string]string{"state": "value '" + st + "' does not have a value in the enumeration 'started, stopped, enabled, disabled, ignored'"}}
			}
			g.haState = st
			if st == "started" && g.status == "stopped" {
				s.haRestart(g, time.Now())
			}
			return nil, nil
		}
	}
	return nil, notImpl(r)
}

func (s *Server) haGuest(sid string) *guest {
	kind, id, ok := strings.Cut(sid, ":")
	if !ok {
		return nil
	}
	vmid, err := strconv.Atoi(id)
	if err != nil {
		return nil
	}
	g := s.guests[vmid]
	if g == nil || g.haState == "" {
		return nil
	}
	if (kind == "vm" && g.Type != "qemu") || (kind == "ct" && g.Type != "lxc") {
		return nil
	}
	return g
}

func (s *Server) haEntry(g *guest) map[string]any {
	kind := "vm"
	if g.Type == "lxc" {
		kind = "ct"
	}
	sid := fmt.Sprintf("%s:%d", kind, g.VMID)
	return map[string]any{"sid": sid, "type": kind, "state": g.haState, "max_restart": 1, "max_relocate": 1, "digest": "0123456789abcdef0123456789abcdef01234567"}
}

// haRestart has the HA stack start g after HARestartDelay if its requested
// state is still "started" and it is still stopped on an online node.
func (s *Server) haRestart(g *guest, from time.Time) {
	s.at(from.Add(s.fleet.HARestartDelay), func(time.Time) {
		if g.haState == "started" && g.status == "stopped" && s.nodes[g.Node] == "online" {
			g.status, g.qmp = "running", "running"
			g.starts++
		}
	})
}

// stopped marks g stopped at time t and lets the HA stack react.
func (s *Server) stopped(g *guest, t time.Time) {
	g.status, g.qmp = "stopped", "stopped"
	if g.haState == "started" {
		s.haRestart(g, t)
	}
}

func (s *Server) nodeRoute(r *http.Request, node string, seg []string, get, post bool) (any, error) {
	st, ok := s.nodes[node]
	if !ok {
		return nil, errf(500, "hostname lookup '%s' failed - failed to get address info for: %s: Name or service not known", node, node)
	}
	if st != "online" {
		return nil, errf(595, "No route to host")
	}
	switch {
	case len(seg) == 1 && seg[0] == "status" && post:
		if !s.allowed("/nodes/"+node, "Sys.PowerMgmt") {
			return nil, errf(403, "Permission check failed (/nodes/%s, Sys.PowerMgmt)", node)
		}
		cmd := r.Form.Get("command")
		if cmd != "shutdown" && cmd != "reboot" {
			return nil, &apiError{code: 400, msg: "Parameter verification failed.",
				errors: map[string]string{"command": "value '" + cmd + "' does not have a value in the enumeration 'reboot, shutdown'"}}
		}
		s.shutdowns = append(s.shutdowns, node)
		if cmd == "shutdown" {
			s.at(time.Now().Add(s.fleet.NodeShutdownDelay), func(at time.Time) {
				s.nodes[node] = "offline"
				for _, g := range s.guests {
					if g.Node == node {
						g.status, g.qmp, g.lock = "stopped", "stopped", nil
					}
				}
			})
		}
		return nil, nil
	case len(seg) == 3 && seg[0] == "tasks" && seg[2] == "status" && get:
		t := s.tasks[seg[1]]
		if t == nil || t.node != node {
			return nil, errf(500, "no such task")
		}
		m := map[string]any{"upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
			"starttime": t.start, "type": t.typ, "id": t.id, "user": t.user, "status": "running"}
		if u, tok, ok := strings.Cut(t.user, "!"); ok {
			m["user"], m["tokenid"] = u, tok
		}
		if t.done {
			m["status"], m["exitstatus"] = "stopped", t.exit
		}
		return m, nil
	case len(seg) == 1 && (seg[0] == "qemu" || seg[0] == "lxc") && get:
		out := []map[string]any{}
		for _, g := range s.sortedGuests() {
			if g.Node == node && g.Type == seg[0] {
				out = append(out, map[string]any{"vmid": g.VMID, "name": g.Name, "status": g.status})
			}
		}
		return out, nil
	case len(seg) >= 2 && (seg[0] == "qemu" || seg[0] == "lxc"):
		return s.guestRoute(r, node, seg[0], seg[1], seg[2:], get, post)
	}
	return nil, notImpl(r)
}

func confPath(node, typ, id string) string {
	if typ == "qemu" {
		return fmt.Sprintf("nodes/%s/qemu-server/%s.conf", node, id)
	}
	return fmt.Sprintf("nodes/%s/lxc/%s.conf", node, id)
}

func (s *Server) guestRoute(r *http.Request, node, typ, id string, seg []string, get, post bool) (any, error) {
	vmid, err := strconv.Atoi(id)
	if err != nil || vmid < 100 {
		return nil, &apiError{code: 400, msg: "Parameter verification failed.",
			errors: map[string]string{"vmid": "invalid format - value does not look like a valid VM ID"}}
	}
	g := s.guests[vmid]
	if g == nil || g.Node != node || g.Type != typ {
		return nil, errf(500, "Configuration file '%s' does not exist", confPath(node, typ, id))
	}
	kind := "VM"
	if typ == "lxc" {
		kind = "CT"
	}
	switch {
	case len(seg) == 2 && seg[0] == "status" && seg[1] == "current" && get:
		if !s.allowed(vmPath(vmid), "VM.Audit") {
			return nil, errf(403, "Permission check failed (/vms/%d, VM.Audit)", vmid)
		}
		m := map[string]any{"vmid": g.VMID, "name": g.Name, "status": g.status, "uptime": 0}
		if g.status == "running" {
			m["uptime"] = 100
			m["pid"] = 10000 + g.VMID
		}
		if typ == "qemu" {
			m["qmpstatus"] = g.qmp
			m["agent"] = 1
		} else {
			m["type"] = "lxc"
		}
		if g.haState != "" {
			m["ha"] = map[string]any{"managed": 1, "state": g.haState}
		} else {
			m["ha"] = map[string]any{"managed": 0}
		}
		return m, nil
	case len(seg) == 2 && seg[0] == "agent" && seg[1] == "ping" && post && typ == "qemu":
		if !s.allowed(vmPath(vmid), "VM.Monitor") {
			return nil, errf(403, "Permission check failed (/vms/%d, VM.Monitor)", vmid)
		}
		if g.status != "running" {
			return nil, errf(500, "VM %d is not running", vmid)
		}
		if g.AgentDown {
			return nil, errf(500, "QEMU guest agent is not running")
		}
		return map[string]any{}, nil
	case len(seg) == 2 && seg[0] == "status" && post:
		if s.denyNext[vmid] || !s.allowed(vmPath(vmid), "VM.PowerMgmt") {
			delete(s.denyNext, vmid)
			return nil, errf(403, "Permission check failed (/vms/%d, VM.PowerMgmt)", vmid)
		}
		return s.action(r, g, kind, seg[1])
	}
	return nil, notImpl(r)
}

func (s *Server) newTask(g *guest, typ string) *task {
	now := time.Now()
	s.pid++
	t := &task{node: g.Node, typ: typ, id: strconv.Itoa(g.VMID), user: s.user, pid: s.pid,
		pstart: int(now.UnixMilli()/10) & 0x7fffffff, start: now.Unix()}
	t.upid = fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%s:%s:%s:", t.node, t.pid, t.pstart, t.start, t.typ, t.id, t.user)
	s.tasks[t.upid] = t
	return t
}

func (t *task) finish(exit string) {
	if !t.done {
		t.done, t.exit = true, exit
	}
}

func boolParam(r *http.Request, name string) (bool, error) {
	switch v := r.Form.Get(name); v {
	case "", "0", "false":
		return false, nil
	case "1", "true":
		return true, nil
	default:
		return false, &apiError{code: 400, msg: "Parameter verification failed.",
			errors: map[string]string{name: "type check ('boolean') failed - got '" + v + "'"}}
	}
}

func (s *Server) action(r *http.Request, g *guest, kind, verb string) (any, error) {
	prefix := "qm"
	if g.Type == "lxc" {
		prefix = "vz"
	}
	now := time.Now()
	lockErr := fmt.Sprintf("can't lock file '/var/lock/%s/lock-%d.conf' - got timeout",
		map[string]string{"qemu": "qemu-server", "lxc": "lxc"}[g.Type], g.VMID)
	switch verb {
	case "shutdown":
		timeout := 600
		if v := r.Form.Get("timeout"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return nil, &apiError{code: 400, msg: "Parameter verification failed.",
					errors: map[string]string{"timeout": "type check ('integer') failed - got '" + v + "'"}}
			}
			timeout = n
		}
		force, err := boolParam(r, "forceStop")
		if err != nil {
			return nil, err
		}
		if g.status != "running" {
			return nil, errf(500, "%s %d not running", kind, g.VMID)
		}
		t := s.newTask(g, prefix+"shutdown")
		if g.lock != nil {
			s.at(now.Add(s.fleet.TaskDelay), func(time.Time) { t.finish(lockErr) })
			return t.upid, nil
		}
		g.lock = t
		limit := now.Add(time.Duration(timeout) * time.Second)
		switch {
		case g.Type == "qemu" && g.AgentDown:
			s.at(now.Add(s.fleet.TaskDelay), func(time.Time) {
				g.lock = nil
				t.finish("QEMU guest agent is not running")
			})
		case g.IgnoreShutdown || g.qmp == "paused" || g.ShutdownDelay > time.Duration(timeout)*time.Second:
			s.at(limit, func(at time.Time) {
				if t.done {
					return
				}
				g.lock = nil
				if force {
					s.stopped(g, at)
					t.finish("OK")
					return
				}
				t.finish(fmt.Sprintf("%s quit/powerdown failed - got timeout", kind))
			})
		default:
			s.at(now.Add(g.ShutdownDelay), func(at time.Time) {
				if t.done {
					return
				}
				g.lock = nil
				s.stopped(g, at)
				t.finish("OK")
			})
		}
		return t.upid, nil
	case "stop":
		overrule, err := boolParam(r, "overrule-shutdown")
		if err != nil {
			return nil, err
		}
		if g.status != "running" {
			return nil, errf(500, "%s %d not running", kind, g.VMID)
		}
		t := s.newTask(g, prefix+"stop")
		if g.lock != nil {
			if !overrule {
				s.at(now.Add(s.fleet.TaskDelay), func(time.Time) { t.finish(lockErr) })
				return t.upid, nil
			}
			g.lock.finish("interrupted by signal")
			g.lock = nil
		}
		s.at(now.Add(s.fleet.TaskDelay), func(at time.Time) {
			if g.status == "running" {
				s.stopped(g, at)
			}
			t.finish("OK")
		})
		return t.upid, nil
	case "start":
		if g.status == "running" {
			return nil, errf(500, "%s %d already running", kind, g.VMID)
		}
		t := s.newTask(g, prefix+"start")
		s.at(now.Add(s.fleet.TaskDelay), func(time.Time) {
			if g.status != "running" {
				g.status, g.qmp = "running", "running"
				g.starts++
			}
			t.finish("OK")
		})
		return t.upid, nil
	case "suspend", "resume":
		if g.Type != "qemu" {
			return nil, errf(http.StatusNotImplemented, "Method 'POST %s' not implemented", r.URL.Path)
		}
		if todisk, err := boolParam(r, "todisk"); err != nil {
			return nil, err
		} else if todisk {
			return nil, errf(500, "pvetest: suspend to disk is not modelled")
		}
		if g.status != "running" {
			return nil, errf(500, "%s %d not running", kind, g.VMID)
		}
		t := s.newTask(g, "qm"+verb)
		s.at(now.Add(s.fleet.TaskDelay), func(time.Time) {
			if g.status == "running" {
				if verb == "suspend" {
					g.qmp = "paused"
				} else {
					g.qmp = "running"
				}
			}
			t.finish("OK")
		})
		return t.upid, nil
	}
	return nil, notImpl(r)
}
