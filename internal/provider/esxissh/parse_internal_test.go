package esxissh

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sundown-ups/sundown/internal/provider"
)

func TestParseGetAllVMs(t *testing.T) {
	row := func(id, name, file, gos, ver, ann string) string {
		return strings.TrimRight(fmt.Sprintf("%-6s   %-22s   %-33s   %-19s   %-7s   %s", id, name, file, gos, ver, ann), " ")
	}
	out := strings.Join([]string{
		"Skipping invalid VM '7'",
		row("Vmid", "Name", "File", "Guest OS", "Version", "Annotation"),
		row("1", "web 01 (prod)", "[datastore1] web 01/web 01.vmx", "ubuntu64Guest", "vmx-19", "front end"),
		"owner: ops team",
		"",
		row("2", "db [old] copy   2", "[datastore 2] db old/db old.vmx", "debian11_64Guest", "vmx-14", ""),
		row("15", "vm.vmx-like name vmx-13", "[ds] a/b.vmx", "other5xLinux64Guest", "vmx-13", ""),
		row("16", "[x] y.vmx g vmx-1", "[ds] c/c.vmx", "otherGuest", "vmx-13", "[z] q.vmx a vmx-2"),
		"",
	}, "\n")
	got, err := parseGetAllVMs(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []vmRow{
		{"1", "web 01 (prod)", "[datastore1] web 01/web 01.vmx", "ubuntu64Guest", "vmx-19", "front end\nowner: ops team"},
		{"2", "db [old] copy   2", "[datastore 2] db old/db old.vmx", "debian11_64Guest", "vmx-14", ""},
		{"15", "vm.vmx-like name vmx-13", "[ds] a/b.vmx", "other5xLinux64Guest", "vmx-13", ""},
		{"16", "[x] y.vmx g vmx-1", "[ds] c/c.vmx", "otherGuest", "vmx-13", "[z] q.vmx a vmx-2"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("rows (-want +got):\n%s", d)
	}
	// No VMs at all: only the header.
	if rows, err := parseGetAllVMs("Vmid   Name   File   Guest OS   Version   Annotation\n"); err != nil || len(rows) != 0 {
		t.Errorf("header only: %v, %v", rows, err)
	}
	for _, bad := range []string{"", "garbage", "\x00\xff", "Vmid Name\n1 x",
		"Vmid   Name   File   Guest OS   Version   Annotation\nnonsense\n",
		"Vmid   Name   File   Guest OS   Version   Annotation\n1  a  [d] a.vmx  g  vmx-1\n1  b  [d] b.vmx  g  vmx-1\n"} {
		if rows, err := parseGetAllVMs(bad); err == nil {
			t.Errorf("parseGetAllVMs(%q) = %v, want an error", bad, rows)
		}
	}
}

func TestParseSmall(t *testing.T) {
	for in, want := range map[string]provider.PowerState{
		"Retrieved runtime info\nPowered on\n":  provider.PowerOn,
		"Retrieved runtime info\nPowered off\n": provider.PowerOff,
		"Retrieved runtime info\nSuspended\n":   provider.PowerSuspended,
	} {
		if got, ok := parsePowerState(in); !ok || got != want {
			t.Errorf("parsePowerState(%q) = %q, %v", in, got, ok)
		}
	}
	for _, bad := range []string{"", "Powered on", "Retrieved runtime info\nPowered sideways", "Retrieved runtime info\nPowered on\nextra"} {
		if _, ok := parsePowerState(bad); ok {
			t.Errorf("parsePowerState(%q) accepted", bad)
		}
	}
	if _, ok := parseTools("toolsRunningStatus = \"guestToolsRunning\""); ok {
		t.Error("parseTools accepted output without the GuestInfo block")
	}
	if m, ok := parseMaintenance("Enabled\n"); !ok || !m {
		t.Error("Enabled")
	}
	if _, ok := parseMaintenance("Enabled\nDisabled\n"); ok {
		t.Error("two lines accepted")
	}
}

func TestParseHostileIsLinear(t *testing.T) {
	line := "1 " + strings.Repeat("[ ", 1<<20)
	start := time.Now()
	if _, err := parseGetAllVMs("Vmid   Name   File   Guest OS   Version   Annotation\n" + line); err == nil {
		t.Error("accepted")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v on a 2 MiB hostile line", d)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("Vmid   Name   File   Guest OS   Version   Annotation\n1  a  [d] a.vmx  g  vmx-1  x\n")
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = parseGetAllVMs(s)
		_, _ = parsePowerState(s)
		_, _ = parseTools(s)
		_, _ = parseMaintenance(s)
		_ = vimError("op", "t", "cmd", result{out: s, status: 1})
	})
}
