package provider_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/sundown-ups/sundown/internal/provider"
)

func TestErrorFormatAndUnwrap(t *testing.T) {
	cause := errors.New("ServerFaultCode: NoPermission")
	e := &provider.Error{Op: "PowerOffGuest", Target: "vm-42", Class: provider.Permission,
		Privilege: "VirtualMachine.Interact.PowerOff", Err: cause}
	want := "PowerOffGuest vm-42: permission: missing privilege VirtualMachine.Interact.PowerOff: ServerFaultCode: NoPermission"
	if got := e.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	wrapped := fmt.Errorf("step stop-db: %w", e)
	if !errors.Is(wrapped, cause) {
		t.Error("errors.Is does not reach the cause through *Error")
	}
	if c := provider.ClassOf(wrapped); c != provider.Permission {
		t.Errorf("ClassOf(wrapped) = %s, want permission", c)
	}
	if got := (&provider.Error{Op: "Inventory", Class: provider.Unreachable, Err: cause}).Error(); got != "Inventory: unreachable: ServerFaultCode: NoPermission" {
		t.Errorf("Error() without target = %q", got)
	}
}

func TestClassOf(t *testing.T) {
	if c := provider.ClassOf(nil); c != provider.Unclassified {
		t.Errorf("ClassOf(nil) = %s", c)
	}
	if c := provider.ClassOf(context.Canceled); c != provider.Unclassified {
		t.Errorf("ClassOf(plain error) = %s", c)
	}
	e := provider.NewError("WaitGuest", "vm-1", provider.Permanent, "bad state")
	if c := provider.ClassOf(e); c != provider.Permanent || e.Error() != "WaitGuest vm-1: permanent: bad state" {
		t.Errorf("NewError: class %s, text %q", c, e.Error())
	}
}

func TestClassNames(t *testing.T) {
	want := map[provider.Class]string{
		provider.Unclassified: "unclassified", provider.NotFound: "not-found", provider.Permission: "permission",
		provider.Auth: "auth", provider.Unreachable: "unreachable", provider.Transient: "transient",
		provider.Unsupported: "unsupported", provider.Permanent: "permanent", provider.Class(99): "class(99)",
	}
	for c, name := range want {
		if c.String() != name {
			t.Errorf("Class(%d).String() = %q, want %q", int(c), c.String(), name)
		}
	}
	for c := range want {
		if got, want := c.Retryable(), c == provider.Unreachable || c == provider.Transient; got != want {
			t.Errorf("%s.Retryable() = %v", c, got)
		}
	}
}

func TestPowerStateValid(t *testing.T) {
	for _, s := range []provider.PowerState{provider.PowerOn, provider.PowerOff, provider.PowerSuspended, provider.PowerUnknown} {
		if !s.Valid() {
			t.Errorf("%q not valid", s)
		}
	}
	for _, s := range []provider.PowerState{"", "poweredOn", "ON"} {
		if s.Valid() {
			t.Errorf("%q valid", s)
		}
	}
}

type limited struct{ provider.Provider }

func (limited) Capabilities() provider.Caps { return provider.Caps{Suspend: true} }

func TestCapabilitiesOf(t *testing.T) {
	if got := provider.CapabilitiesOf(limited{}); got != (provider.Caps{Suspend: true}) {
		t.Errorf("declared caps = %+v", got)
	}
	var plain struct{ provider.Provider }
	if got := provider.CapabilitiesOf(plain); got != provider.AllCaps {
		t.Errorf("undeclared caps = %+v, want all", got)
	}
}
