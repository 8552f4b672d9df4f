package app_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/internal/app"
	"github.com/sundown-ups/sundown/internal/plan"
	"github.com/sundown-ups/sundown/internal/provider/vsphere/vcsim"
)

// wolNIC stands for the network cards of powered-off hosts: a UDP
// listener on loopback that boots a simulated host when a Wake-on-LAN
// magic packet with its MAC arrives.
type wolNIC struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  []string // host names, in the order their packets came
}

func startWOLNIC(t *testing.T, sim *vcsim.Sim, macs map[string]string) *wolNIC {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	n := &wolNIC{conn: conn}
	done := make(chan struct{})
	t.Cleanup(func() { conn.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 512)
		for {
			k, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			for host, mac := range macs {
				hw, _ := net.ParseMAC(mac)
				want := append(bytes.Repeat([]byte{0xff}, 6), bytes.Repeat(hw, 16)...)
				if bytes.Equal(buf[:k], want) {
					n.mu.Lock()
					n.got = append(n.got, host)
					n.mu.Unlock()
					_ = sim.BootHost(host)
				}
			}
		}
	}()
	return n
}

func (n *wolNIC) port() int { return n.conn.LocalAddr().(*net.UDPAddr).Port }

func (n *wolNIC) woken() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.got...)
}

// The whole cycle on the simulated vCenter: an outage shuts the site down
// (guests in order, hosts last); mains returns, and after restore.after
// the restore wakes the hosts by Wake-on-LAN and starts the guests in the
// reverse order: db, then app, then web. The one that was off before the
// outage stays off.
func TestOutageShutdownThenRestore(t *testing.T) {
	srv := newNUT(t)
	sim, err := vcsim.Start(context.Background(), vcsim.Fleet{VCenter: true,
		Hosts: []vcsim.Host{{Name: "esx-01"}, {Name: "esx-02"}},
		VMs: []vcsim.VM{
			{Name: "web-1", Host: "esx-01", ShutdownDelay: 200 * time.Millisecond},
			{Name: "web-2", Host: "esx-02", ShutdownDelay: 200 * time.Millisecond},
			{Name: "app-1", Host: "esx-01", ShutdownDelay: 200 * time.Millisecond},
			{Name: "app-2", Host: "esx-02", ShutdownDelay: 200 * time.Millisecond},
			{Name: "db-1", Host: "esx-02", ShutdownDelay: 200 * time.Millisecond},
			{Name: "old-1", Host: "esx-01", PoweredOff: true},
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	macs := map[string]string{"esx-01": "00:50:56:00:00:01", "esx-02": "00:50:56:00:00:02"}
	nic := startWOLNIC(t, sim, macs)
	t.Setenv("VC_PW", sim.Password())
	journal := t.TempDir()
	c := testConfig(t, `state_dir: "`+journal+`"
`+nutYAML(srv.Addr(), "")+`restore: {after: 2s, min_charge: 50, poll: 200ms}
targets:
  - name: vc
    vsphere: {url: "`+sim.URL()+`", username: "`+sim.Username()+`", password_env: VC_PW, ca_file: "`+sim.CAFile()+`"}
    hosts: {maintenance: true, shutdown: true}
    wake:
      - {host: esx-01, wol: {mac: "`+macs["esx-01"]+`", broadcast: 127.0.0.1, port: `+fmt.Sprint(nic.port())+`, repeat: 2, interval: 100ms}}
      - {host: esx-02, wol: {mac: "`+macs["esx-02"]+`", broadcast: 127.0.0.1, port: `+fmt.Sprint(nic.port())+`, repeat: 2, interval: 100ms}}
shutdown:
  default_action: ["shutdown 5s", "poweroff 5s"]
  groups:
    - {name: web, select: {names: ["web-*"]}, depends_on: [app]}
    - {name: app, select: {names: ["app-*"]}, depends_on: [db]}
    - {name: db, select: {names: ["db-*"]}}
`)
	r := start(t, c, true)
	r.waitFor(t, "plan", 20*time.Second, func(s app.Snapshot) bool {
		return s.Plan != nil && s.Plan.Steps > 0 && len(s.UPS) > 0 && s.UPS[0].Comm == 1
	})

	// The outage.
	srv.SetVars("ups", map[string]string{"ups.status": "OB LB", "battery.charge": "20"})
	r.waitFor(t, "shutdown done", 60*time.Second, func(s app.Snapshot) bool {
		return s.Shutdown != nil && s.Shutdown.Kind == "shutdown" && s.Shutdown.State == "done"
	})
	if got := sim.HostShutdowns(); len(got) != 2 {
		t.Fatalf("hosts shut down: %v", got)
	}
	for _, vm := range []string{"web-1", "web-2", "app-1", "app-2", "db-1", "old-1"} {
		if st := sim.PowerState(vm); st != "poweredOff" {
			t.Fatalf("%s is %s after the shutdown", vm, st)
		}
	}
	if len(nic.woken()) != 0 {
		t.Fatal("a host was woken during the outage")
	}

	// Mains returns, the battery is low at first: no restore yet.
	srv.SetVars("ups", map[string]string{"ups.status": "OL CHRG", "battery.charge": "30"})
	// The charge is the reason shown only once restore.after has passed
	// (RestoreReady checks the time on line first): from then on, only the
	// charge holds the restore back.
	r.waitFor(t, "the restore shown as waiting for the charge", 10*time.Second, func(s app.Snapshot) bool {
		return s.Restore != nil && s.Restore.Auto && strings.Contains(s.Restore.Waiting, "battery charge 30 % below 50 %")
	})
	if len(nic.woken()) != 0 {
		t.Fatal("restore started with the battery below restore.min_charge")
	}
	srv.SetVars("ups", map[string]string{"ups.status": "OL CHRG", "battery.charge": "80"})
	s := r.waitFor(t, "restore done", 60*time.Second, func(s app.Snapshot) bool {
		return s.Shutdown != nil && s.Shutdown.Kind == "restore" && s.Shutdown.State == "done"
	})
	if w := nic.woken(); len(w) < 2 {
		t.Errorf("woken by Wake-on-LAN: %v, want both hosts", w)
	}
	for _, vm := range []string{"web-1", "web-2", "app-1", "app-2", "db-1"} {
		if st := sim.PowerState(vm); st != "poweredOn" {
			t.Errorf("%s is %s after the restore", vm, st)
		}
	}
	if st := sim.PowerState("old-1"); st != "poweredOff" {
		t.Errorf("old-1 (off before the outage) is %s after the restore", st)
	}
	// The order of the power-ons: each guest after its own host is up and
	// out of maintenance; every db before any app, every app before any
	// web.
	vmHost := map[string]string{"web-1": "esx-01", "web-2": "esx-02", "app-1": "esx-01", "app-2": "esx-02", "db-1": "esx-02"}
	hostReady := map[string]time.Time{}
	span := map[string][2]time.Time{}
	for _, st := range s.Shutdown.Steps {
		if st.Outcome != plan.OutcomeDone {
			continue
		}
		switch st.Kind {
		case "host-on", "host-exit-maint":
			if st.End.After(hostReady[st.Name]) {
				hostReady[st.Name] = st.End
			}
		case "guest-on":
			sp, ok := span[st.Group]
			if !ok || st.Start.Before(sp[0]) {
				sp[0] = st.Start
			}
			if st.End.After(sp[1]) {
				sp[1] = st.End
			}
			span[st.Group] = sp
		}
	}
	for _, st := range s.Shutdown.Steps {
		if st.Kind != "guest-on" || st.Outcome != plan.OutcomeDone {
			continue
		}
		if h := hostReady[vmHost[st.Name]]; h.IsZero() || st.Start.Before(h) {
			t.Errorf("%s started at %s, its host %s was ready at %s", st.Name, st.Start.Format("15:04:05.000"), vmHost[st.Name], h.Format("15:04:05.000"))
		}
	}
	for _, pair := range [][2]string{{"db", "app"}, {"app", "web"}} {
		a, b := span[pair[0]], span[pair[1]]
		if a[1].IsZero() || b[0].IsZero() || a[1].After(b[0]) {
			t.Errorf("%s ended %v, %s started %v: want %s first", pair[0], a[1].Format("15:04:05.000"), pair[1], b[0].Format("15:04:05.000"), pair[0])
		}
	}
	if sim.InMaintenance("esx-01") || sim.InMaintenance("esx-02") {
		t.Error("a host is still in maintenance mode after the restore")
	}
	r.waitFor(t, "no restore due any more", 5*time.Second, func(s app.Snapshot) bool { return s.Restore == nil })
	var runs []plan.FinishedRun
	j, err := plan.ReadJournal(app.JournalPath(c))
	if err == nil {
		runs = j.Unrestored()
	}
	if err != nil || len(runs) != 0 {
		t.Errorf("journal after the restore: %d unrestored runs (%v)", len(runs), err)
	}
}
