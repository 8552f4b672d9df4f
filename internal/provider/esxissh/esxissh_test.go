package esxissh_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sundown-ups/sundown/internal/peer/sshd"
	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/esxissh"
	"github.com/sundown-ups/sundown/internal/provider/providertest"
)

var quiet = slog.New(slog.DiscardHandler)

const hostID = "esxi1"

// vm is one emulated VM (see testdata/esxi.sh for the state layout).
type vm struct {
	id, name, file, guestOS, version, annotation string
	power                                        string // on | off | suspended
	mode                                         string // normal | deaf | notools
	uuid                                         string
}

// defaultFleet: 1 Running, 2 Off, 3 NoTools, 4 Deaf, 12 off with an odd
// name (and an ID that sorts before "2" as bytes).
var defaultFleet = []vm{
	{"1", "web 01 (prod)", "[datastore1] web 01/web 01.vmx", "ubuntu64Guest", "vmx-19", "front end\nowner: ops team", "on", "normal", "564D1234-ABCD-0001-0203-040506070809"},
	{"2", "db [old] copy", "[datastore 2] db old/db old.vmx", "debian11_64Guest", "vmx-14", "", "off", "normal", ""},
	{"3", "appliance", "[datastore1] appliance/appliance.vmx", "otherLinux64Guest", "vmx-13", "", "on", "notools", ""},
	{"4", "deaf-vm", "[datastore1] deaf-vm/deaf-vm.vmx", "centos8_64Guest", "vmx-17", "ignores ACPI", "on", "deaf", ""},
	{"12", "Windows Server 2022 — DC  (spare)", "[ssd] dc/dc.vmx", "windows2019srvNext_64Guest", "vmx-20", "domain controller", "off", "normal", ""},
}

// fleet is a running emulated ESXi host behind a real sshd.
type fleet struct {
	srv   *sshd.Server
	state string
}

func startFleet(t *testing.T, vms []vm, maint bool) *fleet {
	t.Helper()
	state := t.TempDir()
	for _, d := range []string{"vms", "host", "deny", "garbage", "slow", "drop"} {
		must(t, os.MkdirAll(filepath.Join(state, d), 0o755))
	}
	m := "Disabled"
	if maint {
		m = "Enabled"
	}
	writeFile(t, filepath.Join(state, "host", "maint"), m+"\n")
	writeFile(t, filepath.Join(state, "host", "power"), "on\n")
	for _, v := range vms {
		d := filepath.Join(state, "vms", v.id)
		must(t, os.MkdirAll(d, 0o755))
		for name, val := range map[string]string{"name": v.name, "file": v.file, "guestos": v.guestOS,
			"version": v.version, "power": v.power, "mode": v.mode} {
			writeFile(t, filepath.Join(d, name), val+"\n")
		}
		ann := ""
		if v.annotation != "" {
			ann = v.annotation + "\n"
		}
		writeFile(t, filepath.Join(d, "annotation"), ann)
		if v.uuid != "" {
			writeFile(t, filepath.Join(d, "uuid"), v.uuid+"\n")
		}
	}
	script, err := filepath.Abs("testdata/esxi.sh")
	must(t, err)
	srv := sshd.Start(t, sshd.Options{Emulate: "ESXI_STATE=" + shq(state) + "; export ESXI_STATE\nexec /bin/sh " + shq(script)})
	return &fleet{srv: srv, state: state}
}

func (f *fleet) provider(t *testing.T, mod func(*esxissh.Config)) *esxissh.Provider {
	t.Helper()
	cfg := esxissh.Config{
		Address: f.srv.Addr(), User: f.srv.User(), KeyFile: f.srv.ClientKeyPath(),
		KnownHostsFile: f.srv.WriteKnownHosts(t), HostName: hostID,
		Timeout: 5 * time.Second, PollInterval: 50 * time.Millisecond, Logger: quiet,
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := esxissh.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// commandKey is the garbage/slow file name for cmd (as in esxi.sh).
func commandKey(cmd string) string {
	b := []byte(cmd)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

func (f *fleet) garbage(t *testing.T, cmd, out string) {
	t.Helper()
	writeFile(t, filepath.Join(f.state, "garbage", commandKey(cmd)), out)
}

func (f *fleet) read(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.state, rel))
	must(t, err)
	return strings.TrimSpace(string(b))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	must(t, os.WriteFile(path, []byte(s), 0o644))
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func wantClass(t *testing.T, what string, err error, want provider.Class) *provider.Error {
	t.Helper()
	var e *provider.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: error %v (%T) is not a *provider.Error", what, err, err)
	}
	if e.Class != want {
		t.Fatalf("%s: class %s, want %s (error: %v)", what, e.Class, want, err)
	}
	return e
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestConformance(t *testing.T) {
	providertest.Run(t, providertest.Harness{
		Timeout: 5 * time.Second,
		New: func(t *testing.T) (provider.Provider, providertest.Fixture) {
			f := startFleet(t, defaultFleet[:4], false)
			p := f.provider(t, nil)
			return p, providertest.Fixture{
				Running: "1", Off: "2", NoTools: "3", Deaf: "4", Host: hostID,
				DenyPowerOff: func(t *testing.T, id string) string {
					writeFile(t, filepath.Join(f.state, "deny", id), "")
					return "VirtualMachine.Interact.PowerOff"
				},
			}
		},
	})
}

func TestInventoryOddNames(t *testing.T) {
	f := startFleet(t, defaultFleet, false)
	p := f.provider(t, nil)
	inv, err := p.Inventory(ctx(t))
	must(t, err)
	g := func(id, name string, power provider.PowerState, tools provider.ToolsState, ann string) provider.Guest {
		r := provider.Guest{ID: id, Name: name, HostID: hostID, Power: power, Tools: tools}
		if id == "1" {
			r.UUID = "564d1234-abcd-0001-0203-040506070809"
		}
		if ann != "" {
			r.Tags = map[string]string{"annotation": ann}
		}
		return r
	}
	want := provider.Inventory{
		Hosts: []provider.Host{{ID: hostID, Name: hostID, Power: provider.PowerOn}},
		Guests: []provider.Guest{
			g("1", "web 01 (prod)", provider.PowerOn, provider.ToolsRunning, "front end\nowner: ops team"),
			g("12", "Windows Server 2022 — DC  (spare)", provider.PowerOff, provider.ToolsNotRunning, "domain controller"),
			g("2", "db [old] copy", provider.PowerOff, provider.ToolsNotRunning, ""),
			g("3", "appliance", provider.PowerOn, provider.ToolsNotRunning, ""),
			g("4", "deaf-vm", provider.PowerOn, provider.ToolsRunning, "ignores ACPI"),
		},
	}
	if d := cmp.Diff(want, inv); d != "" {
		t.Errorf("Inventory (-want +got):\n%s", d)
	}
	// A vmid the host does not know: ESXi's own answer maps to NotFound.
	_, err = p.Guest(ctx(t), "99")
	wantClass(t, "Guest(99)", err, provider.NotFound)
	wantClass(t, "PowerOffGuest(99)", p.PowerOffGuest(ctx(t), "99"), provider.NotFound)
}

func TestToolsNotRunningUnsupported(t *testing.T) {
	f := startFleet(t, defaultFleet, false)
	p := f.provider(t, nil)
	err := p.ShutdownGuest(ctx(t), "3")
	e := wantClass(t, "ShutdownGuest(3)", err, provider.Unsupported)
	if !strings.Contains(e.Error(), "VMware Tools is not running") {
		t.Errorf("error %q does not carry ESXi's reason", e)
	}
	cmds := f.srv.Commands()
	if last := cmds[len(cmds)-1]; last != "vim-cmd vmsvc/power.shutdown 3" {
		t.Errorf("last command %q, want the shutdown", last)
	}
	if got := f.read(t, "vms/3/power"); got != "on" {
		t.Errorf("guest 3 power %q after refused shutdown", got)
	}
}

func TestMaintenanceCommands(t *testing.T) {
	f := startFleet(t, defaultFleet[:1], false)
	p := f.provider(t, nil)
	n := len(f.srv.Commands())
	must(t, p.EnterMaintenance(ctx(t), hostID, provider.MaintenanceOptions{Timeout: 1500 * time.Millisecond}))
	if got := f.read(t, "host/maint"); got != "Enabled" {
		t.Fatalf("maintenance %q after EnterMaintenance", got)
	}
	must(t, p.EnterMaintenance(ctx(t), hostID, provider.MaintenanceOptions{}))
	must(t, p.ExitMaintenance(ctx(t), hostID))
	must(t, p.ExitMaintenance(ctx(t), hostID))
	want := []string{
		"esxcli system maintenanceMode get",
		"esxcli system maintenanceMode set --enable true --timeout 2",
		"esxcli system maintenanceMode get",
		"esxcli system maintenanceMode get",
		"esxcli system maintenanceMode get",
		"esxcli system maintenanceMode set --enable false",
		"esxcli system maintenanceMode get",
		"esxcli system maintenanceMode get",
	}
	if d := cmp.Diff(want, f.srv.Commands()[n:]); d != "" {
		t.Errorf("commands (-want +got):\n%s", d)
	}
	wantClass(t, "EnterMaintenance(other)", p.EnterMaintenance(ctx(t), "esxi2", provider.MaintenanceOptions{}), provider.NotFound)
}

func TestShutdownHost(t *testing.T) {
	for _, tc := range []struct {
		name     string
		autoStop bool
		maint    bool
		force    bool
		want     []string
	}{
		{"maintenance", false, true, false, []string{
			"esxcli system maintenanceMode get",
			`esxcli system shutdown poweroff --reason "sundown: power failure"`}},
		{"autostop", true, true, false, []string{
			"esxcli system maintenanceMode get",
			"vim-cmd hostsvc/autostartmanager/autostop",
			`esxcli system shutdown poweroff --reason "sundown: power failure"`}},
		{"force", false, false, true, []string{
			"esxcli system maintenanceMode get",
			"poweroff"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFleet(t, defaultFleet[:2], tc.maint)
			p := f.provider(t, func(c *esxissh.Config) { c.AutoStop = tc.autoStop })
			must(t, p.ShutdownHost(ctx(t), hostID, tc.force))
			if d := cmp.Diff(tc.want, f.srv.Commands()); d != "" {
				t.Errorf("commands (-want +got):\n%s", d)
			}
			if got := f.read(t, "host/power"); got != "off" {
				t.Errorf("emulated host power %q, want off", got)
			}
			// The host is gone: once its sshd has stopped listening (the
			// emulator sends it SIGTERM; it exits a moment later), the
			// next call cannot reach it.
			waitListenerGone(t, f.srv.Addr())
			_, err := p.Inventory(ctx(t))
			wantClass(t, "Inventory after power off", err, provider.Unreachable)
		})
	}
}

func TestShutdownHostNeedsMaintenance(t *testing.T) {
	f := startFleet(t, defaultFleet[:2], false)
	p := f.provider(t, func(c *esxissh.Config) { c.AutoStop = true })
	err := p.ShutdownHost(ctx(t), hostID, false)
	e := wantClass(t, "ShutdownHost without maintenance", err, provider.Permanent)
	if !strings.Contains(e.Error(), "maintenance mode") {
		t.Errorf("error %q does not say why", e)
	}
	if d := cmp.Diff([]string{"esxcli system maintenanceMode get"}, f.srv.Commands()); d != "" {
		t.Errorf("commands (-want +got):\n%s", d)
	}
	if got := f.read(t, "host/power"); got != "on" {
		t.Errorf("emulated host power %q, want on", got)
	}
}

func TestGarbageOutput(t *testing.T) {
	const junk = "Segmentation fault\n\x00\xff<html>oops</html>\n"
	for _, tc := range []struct {
		name, cmd string
		call      func(context.Context, *esxissh.Provider) error
	}{
		{"getallvms", "vim-cmd vmsvc/getallvms", func(c context.Context, p *esxissh.Provider) error { _, err := p.Inventory(c); return err }},
		{"getallvms-flood", "vim-cmd vmsvc/getallvms", func(c context.Context, p *esxissh.Provider) error { _, err := p.Inventory(c); return err }},
		{"getallvms-bad-row", "vim-cmd vmsvc/getallvms", func(c context.Context, p *esxissh.Provider) error { _, err := p.Guest(c, "1"); return err }},
		{"getstate", "vim-cmd vmsvc/power.getstate 1", func(c context.Context, p *esxissh.Provider) error { return p.PowerOffGuest(c, "1") }},
		{"getstate-wait", "vim-cmd vmsvc/power.getstate 1", func(c context.Context, p *esxissh.Provider) error { return p.WaitGuest(c, "1", provider.PowerOff) }},
		{"get.guest", "vim-cmd vmsvc/get.guest 1", func(c context.Context, p *esxissh.Provider) error { _, err := p.Guest(c, "1"); return err }},
		{"get.config", "vim-cmd vmsvc/get.config 1", func(c context.Context, p *esxissh.Provider) error { _, err := p.Inventory(c); return err }},
		{"maintenance", "esxcli system maintenanceMode get", func(c context.Context, p *esxissh.Provider) error {
			return p.EnterMaintenance(c, hostID, provider.MaintenanceOptions{})
		}},
		{"maintenance-shutdown", "esxcli system maintenanceMode get", func(c context.Context, p *esxissh.Provider) error {
			return p.ShutdownHost(c, hostID, false)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFleet(t, defaultFleet[:2], false)
			out := junk
			switch tc.name {
			case "getallvms-bad-row":
				out = "Vmid   Name   File   Guest OS   Version   Annotation\nnot a row at all\n"
			case "getallvms-flood":
				out = strings.Repeat("Vmid   Name   File   Guest OS   Version   Annotation\n", 100_000) // 5 MB
			}
			f.garbage(t, tc.cmd, out)
			p := f.provider(t, nil)
			e := wantClass(t, tc.name, tc.call(ctx(t), p), provider.Permanent)
			if !strings.Contains(e.Error(), tc.cmd) && !strings.Contains(e.Error(), "vim-cmd vmsvc/getallvms") {
				t.Errorf("error %q does not name the command %q", e, tc.cmd)
			}
			if tc.name == "getallvms-flood" && !strings.Contains(e.Error(), "printed more than") {
				t.Errorf("flood error %q does not say the output was too large", e)
			}
			if got := f.read(t, "host/power"); got != "on" {
				t.Errorf("host power %q after garbage", got)
			}
		})
	}
}

func TestReconnectAfterDrop(t *testing.T) {
	f := startFleet(t, defaultFleet[:2], false)
	p := f.provider(t, nil)
	// Warm the cached connection, then let it die during a read.
	_, err := p.Guest(ctx(t), "1")
	must(t, err)
	writeFile(t, filepath.Join(f.state, "drop", commandKey("vim-cmd vmsvc/power.getstate 1")), "")
	err = p.PowerOffGuest(ctx(t), "1")
	wantClass(t, "PowerOffGuest while the connection drops", err, provider.Unreachable)
	if got := f.read(t, "vms/1/power"); got != "on" {
		t.Fatalf("power %q: the off command must not have been sent", got)
	}
	// The next call dials again and works.
	must(t, p.PowerOffGuest(ctx(t), "1"))
	if got := f.read(t, "vms/1/power"); got != "off" {
		t.Errorf("power %q after PowerOffGuest", got)
	}
}

func TestCommandTimeout(t *testing.T) {
	f := startFleet(t, defaultFleet[:2], false)
	writeFile(t, filepath.Join(f.state, "slow", commandKey("vim-cmd vmsvc/power.getstate 1")), "3")
	p := f.provider(t, func(c *esxissh.Config) { c.Timeout = 500 * time.Millisecond })
	start := time.Now()
	err := p.PowerOffGuest(ctx(t), "1")
	wantClass(t, "PowerOffGuest with a hung host", err, provider.Transient)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %v with a 500ms command timeout", took)
	}
}

func TestChangedHostKey(t *testing.T) {
	f := startFleet(t, defaultFleet[:1], false)
	kh := f.srv.WriteKnownHosts(t)
	f.srv.RotateHostKey(t)
	p, err := esxissh.New(t.Context(), esxissh.Config{
		Address: f.srv.Addr(), User: f.srv.User(), KeyFile: f.srv.ClientKeyPath(),
		KnownHostsFile: kh, HostName: hostID, Timeout: 5 * time.Second, Logger: quiet,
	})
	must(t, err)
	defer p.Close()
	_, err = p.Inventory(ctx(t))
	e := wantClass(t, "Inventory with a changed host key", err, provider.Permanent)
	if !strings.Contains(e.Error(), "host key changed") {
		t.Errorf("error %q does not say the host key changed", e)
	}
	err = p.ShutdownHost(ctx(t), hostID, true)
	wantClass(t, "ShutdownHost with a changed host key", err, provider.Permanent)
	if cmds := f.srv.Commands(); len(cmds) != 0 {
		t.Errorf("commands ran despite the changed key: %q", cmds)
	}
}

func TestNewConfig(t *testing.T) {
	_, err := esxissh.New(t.Context(), esxissh.Config{Address: "127.0.0.1"})
	e := wantClass(t, "New with missing fields", err, provider.Permanent)
	for _, s := range []string{"user is empty", "key file is empty", "known_hosts"} {
		if !strings.Contains(e.Error(), s) {
			t.Errorf("error %q does not mention %q", e, s)
		}
	}
}

func TestInventoryBatches(t *testing.T) {
	var vms []vm
	for i := 1; i <= 40; i++ {
		id := strconv.Itoa(i)
		vms = append(vms, vm{id, "vm " + id, "[ds] vm" + id + "/vm" + id + ".vmx", "otherGuest64", "vmx-19", "", "on", "normal", ""})
	}
	f := startFleet(t, vms, false)
	p := f.provider(t, nil)
	inv, err := p.Inventory(ctx(t))
	must(t, err)
	if len(inv.Guests) != 40 {
		t.Fatalf("%d guests, want 40", len(inv.Guests))
	}
	for _, g := range inv.Guests {
		if g.Power != provider.PowerOn || g.Tools != provider.ToolsRunning || g.Name != "vm "+g.ID {
			t.Errorf("guest %+v", g)
		}
	}
	var batches int
	for _, c := range f.srv.Commands() {
		if strings.HasPrefix(c, "echo @@sundown:") {
			batches++
		}
	}
	if n := len(f.srv.Commands()); batches != 2 || n != 4 {
		t.Errorf("%d commands with %d batches, want 4 commands (maintenance, getallvms, 2 batches of ≤32 VMs)", n, batches)
	}
}

// waitListenerGone waits until nothing accepts connections on addr.
func waitListenerGone(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		_ = c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("sshd on %s still listening 5s after the host powered off", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
