package vsphere

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"syscall"
	"testing"

	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sundown-ups/sundown/internal/provider"
)

func soapFault(f types.BaseMethodFault) error {
	return soap.WrapSoapFault(&soap.Fault{Code: "ServerFaultCode", Detail: struct {
		Fault types.AnyType `xml:",any,typeattr"`
	}{Fault: f}})
}

func taskFault(f types.BaseMethodFault) error {
	return task.Error{LocalizedMethodFault: &types.LocalizedMethodFault{Fault: f, LocalizedMessage: "failed"}}
}

func TestClassOf(t *testing.T) {
	vm := types.ManagedObjectReference{Type: "VirtualMachine", Value: "vm-1"}
	tests := []struct {
		name string
		err  error
		want provider.Class
		priv string
	}{
		{"NotAuthenticated is auth, not permission", soapFault(&types.NotAuthenticated{NoPermission: types.NoPermission{PrivilegeId: "System.View"}}), provider.Auth, ""},
		{"InvalidLogin", soapFault(&types.InvalidLogin{}), provider.Auth, ""},
		{"NoPermission names the privilege", soapFault(&types.NoPermission{Object: &vm, PrivilegeId: "VirtualMachine.Interact.PowerOff"}), provider.Permission, "VirtualMachine.Interact.PowerOff"},
		{"NoPermission in a task", taskFault(&types.NoPermission{PrivilegeId: "Host.Config.Maintenance"}), provider.Permission, "Host.Config.Maintenance"},
		{"vSphere 8 missingPrivileges", soapFault(&types.NoPermission{MissingPrivileges: []types.NoPermissionEntityPrivileges{
			{Entity: vm, PrivilegeIds: []string{"VirtualMachine.Interact.PowerOff", "System.Read"}}}}), provider.Permission, "VirtualMachine.Interact.PowerOff,System.Read"},
		{"ManagedObjectNotFound", soapFault(&types.ManagedObjectNotFound{Obj: vm}), provider.NotFound, ""},
		{"ToolsUnavailable", soapFault(&types.ToolsUnavailable{}), provider.Unsupported, ""},
		{"NotSupported in a task", taskFault(&types.NotSupported{}), provider.Unsupported, ""},
		{"TaskInProgress", soapFault(&types.TaskInProgress{}), provider.Transient, ""},
		{"Timedout task", taskFault(&types.Timedout{}), provider.Transient, ""},
		{"HostNotConnected", taskFault(&types.HostNotConnected{}), provider.Unreachable, ""},
		{"InvalidPowerState", taskFault(&types.InvalidPowerState{}), provider.Permanent, ""},
		{"wrapped by fmt", fmt.Errorf("x: %w", soapFault(&types.ToolsUnavailable{})), provider.Unsupported, ""},
		{"connection refused", &url.Error{Op: "Post", URL: "https://h/sdk", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}, provider.Unreachable, ""},
		{"EOF", &url.Error{Op: "Post", URL: "https://h/sdk", Err: io.EOF}, provider.Unreachable, ""},
		{"unknown CA", &url.Error{Op: "Post", URL: "https://h/sdk", Err: x509.UnknownAuthorityError{}}, provider.Permanent, ""},
		{"pin mismatch", &url.Error{Op: "Post", URL: "https://h/sdk", Err: errPinMismatch}, provider.Permanent, ""},
		{"deadline", fmt.Errorf("post: %w", context.DeadlineExceeded), provider.Transient, ""},
		{"anything else", errors.New("odd"), provider.Permanent, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := classify(context.Background(), "Op", "vm-1", tt.err)
			var e *provider.Error
			if !errors.As(err, &e) {
				t.Fatalf("classify returned %T", err)
			}
			if e.Class != tt.want || e.Privilege != tt.priv {
				t.Errorf("class %s privilege %q, want %s %q", e.Class, e.Privilege, tt.want, tt.priv)
			}
			if !errors.Is(err, tt.err) {
				t.Error("classified error does not wrap the original")
			}
		})
	}
}

func TestClassifyEndedContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := classify(ctx, "PowerOffGuest", "vm-1", errors.New("net/http: request canceled"))
	if provider.ClassOf(err) != provider.Transient || !errors.Is(err, context.Canceled) {
		t.Errorf("got %v (class %s), want transient wrapping context.Canceled", err, provider.ClassOf(err))
	}
	// A provider error passes through unchanged.
	pe := provider.NewError("Guest", "vm-1", provider.NotFound, "gone")
	if got := classify(context.Background(), "Other", "x", pe); got != error(pe) {
		t.Errorf("classify re-wrapped a *provider.Error: %v", got)
	}
}

func TestParseThumbprint(t *testing.T) {
	good := []string{
		"AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01",
		"abcdef0123456789abcdef0123456789abcdef01",
		"ab cd ef 01 23 45 67 89 ab cd ef 01 23 45 67 89 ab cd ef 01 23 45 67 89 ab cd ef 01 23 45 67 89",
	}
	for _, s := range good {
		if _, err := parseThumbprint(s); err != nil {
			t.Errorf("parseThumbprint(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "AB:CD", "zz" + good[1][2:], good[1] + "00"} {
		if _, err := parseThumbprint(s); err == nil {
			t.Errorf("parseThumbprint(%q) accepted", s)
		}
	}
}

func TestStateMapping(t *testing.T) {
	hosts := []struct {
		power, conn string
		want        provider.PowerState
	}{
		{"poweredOn", "connected", provider.PowerOn},
		{"poweredOff", "connected", provider.PowerOff},
		{"poweredOff", "notResponding", provider.PowerOff},
		{"poweredOn", "notResponding", provider.PowerUnknown},
		{"unknown", "disconnected", provider.PowerUnknown},
		{"standBy", "connected", provider.PowerOff},
		{"", "", provider.PowerUnknown},
	}
	for _, h := range hosts {
		if got := hostPower(h.power, h.conn); got != h.want {
			t.Errorf("hostPower(%q, %q) = %s, want %s", h.power, h.conn, got, h.want)
		}
	}
	tools := []struct {
		running, status string
		want            provider.ToolsState
	}{
		{"guestToolsRunning", "toolsOk", provider.ToolsRunning},
		{"guestToolsExecutingScripts", "toolsOk", provider.ToolsRunning},
		{"guestToolsNotRunning", "toolsNotRunning", provider.ToolsNotRunning},
		{"guestToolsNotRunning", "toolsNotInstalled", provider.ToolsNotInstalled},
		{"", "", provider.ToolsUnknown},
	}
	for _, c := range tools {
		if got := toolsState(c.running, c.status); got != c.want {
			t.Errorf("toolsState(%q, %q) = %s, want %s", c.running, c.status, got, c.want)
		}
	}
}

func TestDecodeIgnoresOddValues(t *testing.T) {
	// Unexpected types from the server must not panic and leave fields unknown.
	oc := types.ObjectContent{
		Obj: types.ManagedObjectReference{Type: "VirtualMachine", Value: "vm-9"},
		PropSet: []types.DynamicProperty{
			{Name: "name", Val: 42},
			{Name: "runtime.powerState", Val: nil},
			{Name: "runtime.host", Val: "host-1"},
			{Name: "config.template", Val: "yes"},
			{Name: "customValue", Val: []int{1}},
			{Name: "config.uuid", Val: "ABCDEF00-0000-0000-0000-000000000001"},
		},
	}
	vm := decodeVM(oc)
	if vm.guest.ID != "vm-9" || vm.guest.Power != provider.PowerUnknown || vm.guest.HostID != "" || vm.template || vm.guest.Tags != nil {
		t.Errorf("decodeVM = %+v", vm)
	}
	if vm.guest.UUID != "abcdef00-0000-0000-0000-000000000001" {
		t.Errorf("UUID %q not lower-cased", vm.guest.UUID)
	}
}
