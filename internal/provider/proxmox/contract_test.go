package proxmox_test

// The contract test pins the fake's wire format, endpoint by endpoint, to
// what PVE 8 documents and sends (api-viewer schema of /api2/json, and
// answers seen from pveproxy): {"data": …} around every answer, errors as
// {"data":null,"message":"…\n"} (plus "errors" for parameter checks) with
// the PVE status codes, UPIDs in the real colon-separated hex format, and
// task status objects with status running|stopped and exitstatus. The
// provider's behaviour against the fake is only as good as this file.

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/provider/proxmox/pvetest"
)

// upidRe is the UPID grammar of PVE::Tools::upid_decode:
// UPID:$node:$pid(8 hex):$pstart(8-9 hex):$starttime(8 hex):$type:$id:$user:
var upidRe = regexp.MustCompile(`^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-F]{8}):([0-9A-F]{8,9}):([0-9A-F]{8}):([^:\s]+):([^:\s]*):([^:\s]+):$`)

type rawClient struct {
	hc   *http.Client
	base string
	auth string
}

type answer struct {
	code   int
	status string // the reason phrase of the status line
	raw    map[string]json.RawMessage
	data   any
	msg    string
	errs   map[string]string
}

func newRaw(t *testing.T, s *pvetest.Server) *rawClient {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CAPEM()) {
		t.Fatal("bad CA PEM")
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(hc.CloseIdleConnections)
	return &rawClient{hc: hc, base: s.URL() + "/api2/json", auth: "PVEAPIToken=" + tokenID + "=" + secret}
}

func (c *rawClient) call(t *testing.T, method, path string, form url.Values, auth string, want int) answer {
	t.Helper()
	var body *bytes.Reader
	u := c.base + path
	if method == http.MethodGet {
		if len(form) > 0 {
			u += "?" + form.Encode()
		}
		body = bytes.NewReader(nil)
	} else {
		body = bytes.NewReader([]byte(form.Encode()))
	}
	req, err := http.NewRequestWithContext(t.Context(), method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if method != http.MethodGet {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	var a answer
	a.code = resp.StatusCode
	_, a.status, _ = strings.Cut(resp.Status, " ")
	if err := json.NewDecoder(resp.Body).Decode(&a.raw); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %v", method, path, err)
	}
	d, ok := a.raw["data"]
	if !ok {
		t.Fatalf("%s %s: answer has no \"data\" member: %v", method, path, a.raw)
	}
	_ = json.Unmarshal(d, &a.data)
	if m, ok := a.raw["message"]; ok {
		_ = json.Unmarshal(m, &a.msg)
	}
	if e, ok := a.raw["errors"]; ok {
		_ = json.Unmarshal(e, &a.errs)
	}
	if a.code != want {
		t.Fatalf("%s %s: HTTP %d (%s), want %d", method, path, a.code, a.msg, want)
	}
	if a.code >= 400 {
		if a.data != nil {
			t.Errorf("%s %s: error answer with data %v, want null", method, path, a.data)
		}
		if !strings.HasSuffix(a.msg, "\n") {
			t.Errorf("%s %s: error message %q not newline-terminated as PVE sends it", method, path, a.msg)
		}
		if a.status != strings.TrimSuffix(a.msg, "\n") {
			t.Errorf("%s %s: status line reason %q, want the message %q", method, path, a.status, a.msg)
		}
	}
	return a
}

func (c *rawClient) get(t *testing.T, path string, form url.Values, want int) answer {
	t.Helper()
	return c.call(t, http.MethodGet, path, form, c.auth, want)
}

func (c *rawClient) post(t *testing.T, path string, form url.Values, want int) answer {
	t.Helper()
	return c.call(t, http.MethodPost, path, form, c.auth, want)
}

// waitTask polls a task until it stops and returns its final status object.
func (c *rawClient) waitTask(t *testing.T, node, upid string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := c.get(t, "/nodes/"+node+"/tasks/"+url.PathEscape(upid)+"/status", nil, 200).data.(map[string]any)
		if st["status"] == "stopped" {
			return st
		}
		if st["status"] != "running" {
			t.Fatalf("task status %v, want running or stopped", st["status"])
		}
		if _, ok := st["exitstatus"]; ok {
			t.Fatalf("running task has an exitstatus: %v", st)
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s still running", upid)
		}
		time.Sleep(10 * time.Millisecond) // polling a peer with a deadline
	}
}

func wantKeys(t *testing.T, what string, m map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Errorf("%s: missing field %q in %v", what, k, m)
		}
	}
}

func TestDocumentedUPIDExampleParses(t *testing.T) {
	// Examples of UPIDs as PVE prints them (task log, api-viewer).
	for _, u := range []string{
		"UPID:pve1:00003A4F:0019C68B:5E1F8E7B:qmstart:100:root@pam:",
		"UPID:node2:0001E2C4:01B3C0D1:6612A1F0:qmshutdown:101:sundown@pve!sundown:",
		"UPID:pve:000C5A1B:00B7E3E6:65B3C0A5:vzstop:105:root@pam:",
	} {
		if !upidRe.MatchString(u) {
			t.Errorf("grammar rejects documented UPID %s", u)
		}
	}
}

func TestFakeWireContract(t *testing.T) {
	s := startFake(t, conformanceFleet())
	c := newRaw(t, s)

	// Authentication.
	a := c.call(t, http.MethodGet, "/version", nil, "", 401)
	if a.msg == "" {
		t.Error("401 without a message")
	}
	c.call(t, http.MethodGet, "/version", nil, "PVEAPIToken="+tokenID+"=wrong", 401)
	c.call(t, http.MethodGet, "/version", nil, "PVEAuthCookie=x", 401)

	// /version
	v := c.get(t, "/version", nil, 200).data.(map[string]any)
	wantKeys(t, "/version", v, "version", "release", "repoid")

	// /nodes
	nodes := c.get(t, "/nodes", nil, 200).data.([]any)
	if len(nodes) != 2 {
		t.Fatalf("/nodes: %v", nodes)
	}
	n0 := nodes[0].(map[string]any)
	wantKeys(t, "/nodes[0]", n0, "node", "status", "type", "id")
	if n0["type"] != "node" || n0["id"] != "node/pve1" || n0["status"] != "online" {
		t.Errorf("/nodes[0] = %v", n0)
	}

	// /cluster/resources?type=vm
	res := c.get(t, "/cluster/resources", url.Values{"type": {"vm"}}, 200).data.([]any)
	r0 := res[0].(map[string]any)
	wantKeys(t, "/cluster/resources[0]", r0, "id", "type", "node", "vmid", "name", "status", "template")
	if r0["id"] != "qemu/101" || r0["vmid"] != float64(101) || r0["status"] != "running" {
		t.Errorf("/cluster/resources[0] = %v", r0)
	}
	for _, e := range res {
		if m := e.(map[string]any); m["vmid"] == float64(106) && m["hastate"] != "started" {
			t.Errorf("HA guest resource without hastate: %v", m)
		}
	}

	// /access/permissions (PVE::API2::AccessControl "permissions"): a map
	// of ACL path → {privilege: propagate flag}; with path=, that one
	// path only, inheritance applied by the server.
	perms := c.get(t, "/access/permissions", nil, 200).data.(map[string]any)
	for _, p := range []string{"/", "/vms", "/nodes"} {
		m, ok := perms[p].(map[string]any)
		if !ok || m["VM.PowerMgmt"] != float64(1) || m["Sys.PowerMgmt"] != float64(1) || m["Sys.Console"] != float64(1) {
			t.Errorf("/access/permissions[%q] = %v, want every privilege, propagated", p, perms[p])
		}
	}
	one := c.get(t, "/access/permissions", url.Values{"path": {"/vms/101"}}, 200).data.(map[string]any)
	if m, ok := one["/vms/101"].(map[string]any); len(one) != 1 || !ok || m["VM.PowerMgmt"] != float64(1) {
		t.Errorf("/access/permissions?path=/vms/101 = %v", one)
	}
	if a := c.get(t, "/access/permissions", url.Values{"vmid": {"101"}}, 400); a.errs["vmid"] == "" {
		t.Errorf("unknown parameter: errors %v", a.errs)
	}

	// /nodes/{n}/qemu and /nodes/{n}/lxc
	if l := c.get(t, "/nodes/pve1/qemu", nil, 200).data.([]any); len(l) != 5 {
		t.Errorf("/nodes/pve1/qemu: %d entries", len(l))
	}
	if l := c.get(t, "/nodes/pve2/lxc", nil, 200).data.([]any); len(l) != 1 {
		t.Errorf("/nodes/pve2/lxc: %d entries", len(l))
	}

	// status/current
	cur := c.get(t, "/nodes/pve1/qemu/101/status/current", nil, 200).data.(map[string]any)
	wantKeys(t, "qemu status/current", cur, "vmid", "name", "status", "qmpstatus", "ha", "agent")
	if cur["status"] != "running" || cur["qmpstatus"] != "running" {
		t.Errorf("status/current = %v", cur)
	}
	ha := c.get(t, "/nodes/pve1/qemu/106/status/current", nil, 200).data.(map[string]any)["ha"].(map[string]any)
	if ha["managed"] != float64(1) || ha["state"] != "started" {
		t.Errorf("HA guest status/current ha = %v", ha)
	}
	ct := c.get(t, "/nodes/pve2/lxc/105/status/current", nil, 200).data.(map[string]any)
	if ct["type"] != "lxc" || ct["status"] != "running" {
		t.Errorf("lxc status/current = %v", ct)
	}

	// Unknown guest / wrong node: 500 "Configuration file … does not exist".
	a = c.get(t, "/nodes/pve1/qemu/999/status/current", nil, 500)
	if a.msg != "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist\n" {
		t.Errorf("unknown VM message %q", a.msg)
	}
	a = c.get(t, "/nodes/pve2/qemu/101/status/current", nil, 500)
	if !strings.Contains(a.msg, "does not exist") {
		t.Errorf("VM on the wrong node: %q", a.msg)
	}
	a = c.get(t, "/nodes/nosuch/qemu", nil, 500)
	if !strings.Contains(a.msg, "hostname lookup 'nosuch' failed") {
		t.Errorf("unknown node: %q", a.msg)
	}

	// Agent ping.
	c.post(t, "/nodes/pve1/qemu/101/agent/ping", nil, 200)
	if a := c.post(t, "/nodes/pve1/qemu/103/agent/ping", nil, 500); a.msg != "QEMU guest agent is not running\n" {
		t.Errorf("agent down: %q", a.msg)
	}

	// Parameter verification: 400 with an "errors" object.
	a = c.post(t, "/nodes/pve1/qemu/101/status/shutdown", url.Values{"forceStop": {"maybe"}}, 400)
	if a.msg != "Parameter verification failed.\n" || a.errs["forceStop"] == "" {
		t.Errorf("bad parameter: msg %q errors %v", a.msg, a.errs)
	}

	// Shutdown: a UPID at once, the task runs over time and ends OK.
	up := c.post(t, "/nodes/pve1/qemu/101/status/shutdown", url.Values{"timeout": {"60"}, "forceStop": {"0"}}, 200).data.(string)
	m := upidRe.FindStringSubmatch(up)
	if m == nil {
		t.Fatalf("shutdown UPID %q does not match the UPID grammar", up)
	}
	if m[1] != "pve1" || m[6] != "qmshutdown" || m[7] != "101" || m[8] != tokenID {
		t.Errorf("UPID fields %q", m[1:])
	}
	st := c.get(t, "/nodes/pve1/tasks/"+url.PathEscape(up)+"/status", nil, 200).data.(map[string]any)
	if st["status"] != "running" {
		t.Errorf("shutdown task right after the request: %v, want running", st)
	}
	st = c.waitTask(t, "pve1", up)
	wantKeys(t, "task status", st, "upid", "node", "pid", "pstart", "starttime", "type", "id", "user", "status", "exitstatus")
	if st["exitstatus"] != "OK" || st["upid"] != up || st["type"] != "qmshutdown" || st["user"] != "sundown@pve" || st["tokenid"] != "sundown" {
		t.Errorf("finished shutdown task: %v", st)
	}
	if cur := c.get(t, "/nodes/pve1/qemu/101/status/current", nil, 200).data.(map[string]any); cur["status"] != "stopped" {
		t.Errorf("after shutdown: %v", cur)
	}

	// Shutting down / stopping a stopped guest is an error (HTTP 500).
	if a := c.post(t, "/nodes/pve1/qemu/101/status/shutdown", nil, 500); a.msg != "VM 101 not running\n" {
		t.Errorf("shutdown of a stopped VM: %q", a.msg)
	}
	c.post(t, "/nodes/pve1/qemu/102/status/stop", nil, 500)

	// Start, then start again.
	up = c.post(t, "/nodes/pve1/qemu/101/status/start", nil, 200).data.(string)
	if st := c.waitTask(t, "pve1", up); st["exitstatus"] != "OK" || st["type"] != "qmstart" {
		t.Errorf("start task %v", st)
	}
	if a := c.post(t, "/nodes/pve1/qemu/101/status/start", nil, 500); !strings.Contains(a.msg, "already running") {
		t.Errorf("start of a running VM: %q", a.msg)
	}

	// Suspend / resume: qmpstatus paused while status stays running.
	up = c.post(t, "/nodes/pve1/qemu/101/status/suspend", nil, 200).data.(string)
	c.waitTask(t, "pve1", up)
	cur = c.get(t, "/nodes/pve1/qemu/101/status/current", nil, 200).data.(map[string]any)
	if cur["status"] != "running" || cur["qmpstatus"] != "paused" {
		t.Errorf("after suspend: %v", cur)
	}
	up = c.post(t, "/nodes/pve1/qemu/101/status/resume", nil, 200).data.(string)
	c.waitTask(t, "pve1", up)

	// A shutdown that outlasts its timeout fails unless forceStop.
	up = c.post(t, "/nodes/pve1/qemu/104/status/shutdown", url.Values{"timeout": {"1"}}, 200).data.(string)
	if st := c.waitTask(t, "pve1", up); st["exitstatus"] != "VM quit/powerdown failed - got timeout" {
		t.Errorf("deaf guest shutdown task exitstatus %q", st["exitstatus"])
	}
	if cur := c.get(t, "/nodes/pve1/qemu/104/status/current", nil, 200).data.(map[string]any); cur["status"] != "running" {
		t.Errorf("deaf guest after failed shutdown: %v", cur)
	}
	up = c.post(t, "/nodes/pve1/qemu/104/status/shutdown", url.Values{"timeout": {"1"}, "forceStop": {"1"}}, 200).data.(string)
	if st := c.waitTask(t, "pve1", up); st["exitstatus"] != "OK" {
		t.Errorf("forced shutdown task %v", st)
	}

	// A shutdown through a dead agent fails in the task.
	up = c.post(t, "/nodes/pve1/qemu/103/status/shutdown", nil, 200).data.(string)
	if st := c.waitTask(t, "pve1", up); st["exitstatus"] == "OK" {
		t.Errorf("shutdown with the agent down succeeded")
	}

	// Stop overruling a pending shutdown task.
	c.post(t, "/nodes/pve2/lxc/105/status/start", nil, 500) // running
	upS := c.post(t, "/nodes/pve1/qemu/106/status/shutdown", url.Values{"timeout": {"60"}}, 200).data.(string)
	upStop := c.post(t, "/nodes/pve1/qemu/106/status/stop", url.Values{"overrule-shutdown": {"1"}}, 200).data.(string)
	if st := c.waitTask(t, "pve1", upStop); st["exitstatus"] != "OK" || st["type"] != "qmstop" {
		t.Errorf("overruling stop %v", st)
	}
	if st := c.waitTask(t, "pve1", upS); st["exitstatus"] == "OK" {
		t.Errorf("overruled shutdown task ended OK")
	}

	// Permission denial.
	s.DenyNext(101)
	a = c.post(t, "/nodes/pve1/qemu/101/status/stop", nil, 403)
	if a.msg != "Permission check failed (/vms/101, VM.PowerMgmt)\n" || a.status != "Permission check failed (/vms/101, VM.PowerMgmt)" {
		t.Errorf("403 message %q, status line %q", a.msg, a.status)
	}

	// HA resources.
	list := c.get(t, "/cluster/ha/resources", nil, 200).data.([]any)
	if len(list) != 1 || list[0].(map[string]any)["sid"] != "vm:106" {
		t.Errorf("/cluster/ha/resources = %v", list)
	}
	if a := c.call(t, http.MethodPut, "/cluster/ha/resources/vm:106", url.Values{"state": {"stopped"}}, c.auth, 200); a.data != nil {
		t.Errorf("HA PUT data %v, want null", a.data)
	}
	if r := c.get(t, "/cluster/ha/resources/vm:106", nil, 200).data.(map[string]any); r["state"] != "stopped" {
		t.Errorf("HA resource after PUT %v", r)
	}
	c.get(t, "/cluster/ha/resources/vm:101", nil, 500)

	// Node shutdown: data null, the node goes offline, its API answers 595.
	if a := c.post(t, "/nodes/pve2/status", url.Values{"command": {"shutdown"}}, 200); a.data != nil {
		t.Errorf("node shutdown data %v", a.data)
	}
	c.post(t, "/nodes/pve2/status", url.Values{"command": {"halt"}}, 400)
	waitFake(t, s, 105, 5*time.Second, func(g pvetest.GuestState) bool { return g.Status == "stopped" })
	c.get(t, "/nodes/pve2/lxc/105/status/current", nil, 595)

	if n := s.Calls("POST /nodes/*/qemu/*/status/shutdown"); n < 5 {
		t.Errorf("Calls(shutdown) = %d", n)
	}
}

// TestFakeBareErrors: with BareErrors the body is exactly {"data":null}
// and the message is only in the status line.
func TestFakeBareErrors(t *testing.T) {
	f := conformanceFleet()
	f.BareErrors = true
	s := startFake(t, f)
	c := newRaw(t, s)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, c.base+"/nodes/pve1/qemu/999/status/current", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", c.auth)
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 500 || resp.Status != "500 Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist" ||
		strings.TrimSpace(body.String()) != `{"data":null}` {
		t.Fatalf("bare error: %q %q", resp.Status, body.String())
	}
}

// TestFakePermissions pins how the fake evaluates a token's ACL, the way
// PVE does: propagation from ancestors, the deepest applying path
// replacing what is inherited, NoAccess, and that what GET
// /access/permissions reports is exactly what the endpoints enforce.
func TestFakePermissions(t *testing.T) {
	f := conformanceFleet()
	f.ACL = []pvetest.ACL{
		{Path: "/", Propagate: true, Privileges: []string{"VM.Audit"}},
		{Path: "/nodes", Propagate: true, Privileges: []string{"Sys.Audit"}},
		{Path: "/vms", Propagate: true, Privileges: []string{"VM.Audit", "VM.PowerMgmt"}},
		{Path: "/vms/102", Privileges: []string{"VM.Audit"}}, // replaces what /vms gives
		{Path: "/vms/104", Privileges: nil},                  // NoAccess
		{Path: "/nodes/pve1", Privileges: []string{"Sys.Audit", "Sys.PowerMgmt"}},
	}
	s := startFake(t, f)
	c := newRaw(t, s)
	privs := func(path string) map[string]any {
		t.Helper()
		ans := c.get(t, "/access/permissions", url.Values{"path": {path}}, 200).data.(map[string]any)
		m, ok := ans[path].(map[string]any)
		if len(ans) != 1 || !ok {
			t.Fatalf("/access/permissions?path=%s = %v, want one entry for the path", path, ans)
		}
		return m
	}
	for _, tc := range []struct {
		path string
		want map[string]any
	}{
		{"/", map[string]any{"VM.Audit": float64(1)}},
		{"/access", map[string]any{"VM.Audit": float64(1)}},
		{"/vms/101", map[string]any{"VM.Audit": float64(1), "VM.PowerMgmt": float64(1)}},
		{"/vms/102", map[string]any{"VM.Audit": float64(0)}},
		{"/vms/104", map[string]any{}},
		{"/nodes/pve1", map[string]any{"Sys.Audit": float64(0), "Sys.PowerMgmt": float64(0)}},
		{"/nodes/pve2", map[string]any{"Sys.Audit": float64(1)}},
	} {
		got := privs(tc.path)
		if len(got) != len(tc.want) {
			t.Errorf("%s: %v, want %v", tc.path, got, tc.want)
			continue
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("%s: %v, want %v", tc.path, got, tc.want)
			}
		}
	}
	// Without path: top-level and ACL paths, those with nothing left out.
	all := c.get(t, "/access/permissions", nil, 200).data.(map[string]any)
	for _, p := range []string{"/", "/nodes", "/vms", "/vms/102", "/nodes/pve1"} {
		if _, ok := all[p]; !ok {
			t.Errorf("/access/permissions lacks %s: %v", p, all)
		}
	}
	if _, ok := all["/vms/104"]; ok {
		t.Errorf("/access/permissions lists the NoAccess path: %v", all)
	}
	c.get(t, "/access/permissions", url.Values{"userid": {tokenID}}, 200)
	if a := c.get(t, "/access/permissions", url.Values{"userid": {"root@pam"}}, 403); a.msg != "Permission check failed (/access, Sys.Audit)\n" {
		t.Errorf("other user's permissions: %q", a.msg)
	}

	// Enforcement matches the report.
	if a := c.post(t, "/nodes/pve1/qemu/102/status/stop", nil, 403); a.msg != "Permission check failed (/vms/102, VM.PowerMgmt)\n" {
		t.Errorf("stop without VM.PowerMgmt: %q", a.msg)
	}
	if a := c.get(t, "/nodes/pve1/qemu/104/status/current", nil, 403); a.msg != "Permission check failed (/vms/104, VM.Audit)\n" {
		t.Errorf("status without VM.Audit: %q", a.msg)
	}
	if a := c.post(t, "/nodes/pve1/qemu/101/agent/ping", nil, 403); a.msg != "Permission check failed (/vms/101, VM.Monitor)\n" {
		t.Errorf("agent ping without VM.Monitor: %q", a.msg)
	}
	if a := c.call(t, http.MethodPut, "/cluster/ha/resources/vm:106", url.Values{"state": {"stopped"}}, c.auth, 403); a.msg != "Permission check failed (/, Sys.Console)\n" {
		t.Errorf("HA change without Sys.Console: %q", a.msg)
	}
	if a := c.post(t, "/nodes/pve2/status", url.Values{"command": {"shutdown"}}, 403); a.msg != "Permission check failed (/nodes/pve2, Sys.PowerMgmt)\n" {
		t.Errorf("node shutdown without Sys.PowerMgmt: %q", a.msg)
	}
	for _, e := range c.get(t, "/cluster/resources", url.Values{"type": {"vm"}}, 200).data.([]any) {
		if e.(map[string]any)["vmid"] == float64(104) {
			t.Error("/cluster/resources lists a guest the token may not audit")
		}
	}
	up := c.post(t, "/nodes/pve1/qemu/101/status/stop", nil, 200).data.(string)
	if st := c.waitTask(t, "pve1", up); st["exitstatus"] != "OK" {
		t.Errorf("stop with VM.PowerMgmt: %v", st)
	}
	if len(s.NodeShutdowns()) != 0 {
		t.Error("a refused node shutdown was carried out")
	}
	if _, err := pvetest.NewServer(pvetest.Fleet{Nodes: []pvetest.Node{{Name: "n"}}, ACL: []pvetest.ACL{{Path: "vms/"}}}); err == nil {
		t.Error("an unnormalized ACL path was accepted")
	}
}
