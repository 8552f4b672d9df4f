package proxmox

import (
	"testing"

	"github.com/sundown-ups/sundown/internal/provider"
)

func TestClassify(t *testing.T) {
	for _, tt := range []struct {
		status int
		msg    string
		class  provider.Class
		priv   string
	}{
		{401, "authentication failure", provider.Auth, ""},
		{401, "No ticket", provider.Auth, ""},
		{403, "Permission check failed (/vms/101, VM.PowerMgmt)", provider.Permission, "VM.PowerMgmt"},
		{403, "Permission check failed (/nodes/pve1, Sys.PowerMgmt)", provider.Permission, "Sys.PowerMgmt"},
		{403, "Permission check failed (/, Sys.Console)", provider.Permission, "Sys.Console"},
		{403, "Permission check failed", provider.Permission, ""},
		{500, "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist", provider.NotFound, ""},
		{500, "hostname lookup 'x' failed - failed to get address info for: x: Name or service not known", provider.NotFound, ""},
		{595, "No route to host", provider.Unreachable, ""},
		{596, "Connection timed out", provider.Unreachable, ""},
		{500, "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout", provider.Transient, ""},
		{501, "Method 'POST /x' not implemented", provider.Unsupported, ""},
		{500, "VM quit/powerdown failed - got timeout", provider.Permanent, ""},
		{400, "Parameter verification failed.", provider.Permanent, ""},
	} {
		e := classify("Op", "pve1/qemu/101", &apiError{Status: tt.status, Message: tt.msg})
		if e.Class != tt.class || e.Privilege != tt.priv {
			t.Errorf("%d %q: class %s privilege %q, want %s %q", tt.status, tt.msg, e.Class, e.Privilege, tt.class, tt.priv)
		}
	}
}

func TestUPIDNode(t *testing.T) {
	for upid, want := range map[string]string{
		"UPID:pve1:00003A4F:0019C68B:5E1F8E7B:qmstart:100:root@pam:":  "pve1",
		"UPID:n-2:0001E2C4:01B3C0D1:6612A1F0:qmshutdown:101:a@pve!t:": "n-2",
		"UPID::1:2:3:x:y:z:": "",
		"pve1:1":             "",
		"":                   "",
	} {
		got, ok := upidNode(upid)
		if got != want || ok != (want != "") {
			t.Errorf("upidNode(%q) = %q, %v; want %q", upid, got, ok, want)
		}
	}
}
