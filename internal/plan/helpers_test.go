package plan

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sundown-ups/sundown/internal/provider"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

const s = time.Second

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	file := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("read golden (run go test -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got):\n%s", file, diff)
	}
}

func chain(a ...any) Chain {
	var c Chain
	for i := 0; i < len(a); i += 2 {
		c = append(c, Action{Kind: a[i].(ActionKind), Timeout: a[i+1].(time.Duration)})
	}
	return c
}

var stdChain = chain(Shutdown, 120*s, PowerOff, 30*s)

func guest(id, name, host string, p provider.PowerState, tags ...string) provider.Guest {
	g := provider.Guest{ID: id, Name: name, HostID: host, Power: p, Tools: provider.ToolsRunning}
	for i := 0; i+1 < len(tags); i += 2 {
		if g.Tags == nil {
			g.Tags = map[string]string{}
		}
		g.Tags[tags[i]] = tags[i+1]
	}
	return g
}

const on, off = provider.PowerOn, provider.PowerOff

// demoSpec is the shape of `sundown demo`: one vCenter with three hosts,
// 20 guests in four tiers web → app → db → dc, sundown's own VM on host 3.
func demoSpec() Spec {
	hosts := []provider.Host{
		{ID: "host-1", Name: "esx-01", Power: on},
		{ID: "host-2", Name: "esx-02", Power: on},
		{ID: "host-3", Name: "esx-03", Power: on},
	}
	guests := []provider.Guest{
		guest("vm-101", "web-1", "host-1", on, "tier", "web"),
		guest("vm-102", "web-2", "host-1", on, "tier", "web"),
		guest("vm-103", "web-3", "host-2", on, "tier", "web"),
		guest("vm-104", "web-4", "host-2", off, "tier", "web"),
		guest("vm-105", "web-5", "host-3", on, "tier", "web"),
		guest("vm-201", "app-1", "host-1", on),
		guest("vm-202", "app-2", "host-2", on),
		guest("vm-203", "app-3", "host-2", on),
		guest("vm-204", "app-4", "host-3", on),
		guest("vm-301", "db-1", "host-1", on, "role", "database"),
		guest("vm-302", "db-2", "host-2", on, "role", "database"),
		guest("vm-303", "db-3", "host-3", on, "role", "database"),
		guest("vm-401", "dc-1", "host-1", on),
		guest("vm-402", "dc-2", "host-3", on),
		guest("vm-501", "monitor", "host-2", on),
		guest("vm-502", "backup", "host-2", off),
		guest("vm-503", "print", "host-1", on),
		guest("vm-504", "lab", "host-3", on),
		guest("vm-505", "wiki", "host-1", provider.PowerSuspended),
		guest("vm-900", "sundown", "host-3", on),
	}
	guests[len(guests)-1].UUID = "4210aa00-1111-2222-3333-444455556666"
	return Spec{
		Targets: []TargetInventory{{
			Target:              "vcenter",
			Inventory:           provider.Inventory{Hosts: hosts, Guests: guests},
			Maintenance:         true,
			ShutdownHosts:       true,
			MaintenanceTimeout:  120 * s,
			HostShutdownTimeout: 60 * s,
		}},
		Groups: []Group{
			{Name: "web", Select: Selector{Tags: map[string]string{"tier": "web"}}, DependsOn: []string{"app"}},
			{Name: "app", Select: Selector{Names: []string{"app-*"}}, DependsOn: []string{"db"}},
			{Name: "db", Select: Selector{Tags: map[string]string{"role": "*"}}, DependsOn: []string{"dc"}},
			{Name: "dc", Select: Selector{Names: []string{"dc-*"}}, Chain: chain(Shutdown, 300*s, PowerOff, 60*s)},
		},
		Guests: []GuestRule{
			{Name: "db-3", Chain: chain(Suspend, 90*s, PowerOff, 30*s)},
			{Name: "monitor", DependsOn: []string{"dc"}},
		},
		Hooks: []Hook{
			{Name: "notify", Kind: "http", Timeout: 10 * s},
			{Name: "stop-backups", Kind: "exec", Before: []string{"db"}, Timeout: 30 * s},
		},
		DefaultChain: stdChain,
		Caps:         Caps{Global: 8, PerHost: 4},
		Self:         Self{VMUUID: "4210AA00-1111-2222-3333-444455556666"},
		History: map[string]time.Duration{
			"guest:vcenter/vm-101":      40 * s,
			"guest:vcenter/vm-301":      75 * s,
			"host-off:vcenter/host-1":   20 * s,
			"guest:vcenter/vm-does-not": 5 * s,
		},
	}
}

func render(t *testing.T, p *Plan, sc Schedule, opts TextOptions) string {
	t.Helper()
	var buf bytes.Buffer
	if err := p.Text(&buf, sc, opts); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func problemsText(ps []Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	return b.String()
}
