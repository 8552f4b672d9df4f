package fake

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/providertest"
)

const s = time.Second

// conformanceFleet is the fixture of the conformance suite: real-time delays
// short enough for a quick run.
func conformanceFleet() Fleet {
	const d = 20 * time.Millisecond
	return Fleet{
		Hosts: []HostSpec{{ID: "host-1", Name: "esx-1", UUID: "4C4C4544-0001", MaintenanceDelay: d, ShutdownDelay: d}},
		Guests: []GuestSpec{
			{ID: "vm-1", Name: "running", HostID: "host-1", UUID: "AA-01", Tags: map[string]string{"tier": "web"}, ShutdownDelay: d, SuspendDelay: d, PowerOffDelay: d},
			{ID: "vm-2", Name: "off", HostID: "host-1", Power: provider.PowerOff},
			{ID: "vm-3", Name: "notools", HostID: "host-1", Tools: provider.ToolsNotRunning, PowerOffDelay: d},
			{ID: "vm-4", Name: "deaf", HostID: "host-1", IgnoreShutdown: true, PowerOffDelay: d},
		},
	}
}

func TestConformance(t *testing.T) {
	providertest.Run(t, providertest.Harness{
		Timeout: 5 * s,
		New: func(t *testing.T) (provider.Provider, providertest.Fixture) {
			p := New(conformanceFleet())
			return p, providertest.Fixture{
				Running: "vm-1", Off: "vm-2", NoTools: "vm-3", Deaf: "vm-4", Host: "host-1",
				DenyPowerOff: func(t *testing.T, id string) string {
					const priv = "VirtualMachine.Interact.PowerOff"
					p.FailNext(OpPowerOffGuest, id, &provider.Error{Class: provider.Permission, Privilege: priv})
					return priv
				},
			}
		},
	})
}

// TestConformanceWithoutCaps runs the suite against a backend that declares
// no optional capability: the suite checks that they answer Unsupported.
func TestConformanceWithoutCaps(t *testing.T) {
	providertest.Run(t, providertest.Harness{
		Timeout: 5 * s,
		New: func(t *testing.T) (provider.Provider, providertest.Fixture) {
			f := conformanceFleet()
			f.Caps = &provider.Caps{}
			return New(f), providertest.Fixture{Running: "vm-1", Off: "vm-2", NoTools: "vm-3", Host: "host-1"}
		},
	})
}

func TestShutdownTimeline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(Fleet{Guests: []GuestSpec{
			{ID: "vm-1", ShutdownDelay: 42 * s},
			{ID: "vm-2", IgnoreShutdown: true, PowerOffDelay: 3 * s},
		}})
		defer p.Close()
		ctx := t.Context()
		t0 := time.Now()
		if err := p.ShutdownGuest(ctx, "vm-1"); err != nil {
			t.Fatal(err)
		}
		if err := p.WaitGuest(ctx, "vm-1", provider.PowerOff); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(t0); got != 42*s {
			t.Errorf("vm-1 off after %v, want 42s", got)
		}

		if err := p.ShutdownGuest(ctx, "vm-2"); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 100*s)
		err := p.WaitGuest(wctx, "vm-2", provider.PowerOff)
		cancel()
		if provider.ClassOf(err) != provider.Transient || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitGuest on a guest ignoring shutdown: %v", err)
		}
		t1 := time.Now()
		if err := p.PowerOffGuest(ctx, "vm-2"); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(t1); got != 3*s {
			t.Errorf("PowerOffGuest took %v, want 3s", got)
		}
		if n := p.Calls(OpShutdownGuest, "vm-2"); n != 1 {
			t.Errorf("Calls(ShutdownGuest, vm-2) = %d", n)
		}
		ops := p.Ops()
		if len(ops) != 5 || ops[4].Op != OpPowerOffGuest || !ops[4].At.Equal(t1) || ops[3].Err == nil || ops[4].Err != nil {
			t.Errorf("ops log: %+v", ops)
		}
	})
}

func TestFaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(Fleet{Guests: []GuestSpec{{ID: "vm-1"}, {ID: "vm-2"}}, Latency: 50 * time.Millisecond})
		defer p.Close()
		ctx := t.Context()

		// FailNext: one call, then normal; a plain error becomes Permanent.
		p.FailNext(OpShutdownGuest, "vm-1", &provider.Error{Class: provider.Transient})
		p.FailNext(OpShutdownGuest, "", errors.New("boom"))
		err := p.ShutdownGuest(ctx, "vm-1")
		var pe *provider.Error
		if !errors.As(err, &pe) || pe.Class != provider.Transient || pe.Op != OpShutdownGuest || pe.Target != "vm-1" {
			t.Fatalf("first call: %v", err)
		}
		if err := p.ShutdownGuest(ctx, "vm-2"); provider.ClassOf(err) != provider.Permanent {
			t.Fatalf("any-ID failure: %v", err)
		}
		if err := p.ShutdownGuest(ctx, "vm-1"); err != nil {
			t.Fatalf("third call: %v", err)
		}

		// Unreachable ends a wait at once.
		done := make(chan error)
		go func() { done <- p.WaitGuest(ctx, "vm-2", provider.PowerOff) }()
		time.Sleep(10 * s)
		p.SetUnreachable(true)
		if err := <-done; provider.ClassOf(err) != provider.Unreachable {
			t.Fatalf("WaitGuest when unreachable: %v", err)
		}
		if _, err := p.Guest(ctx, "vm-2"); provider.ClassOf(err) != provider.Unreachable {
			t.Fatalf("Guest when unreachable: %v", err)
		}
		p.SetUnreachable(false)

		// Hang: blocks until the context ends.
		p.Hang(OpGuest, true)
		hctx, cancel := context.WithTimeout(ctx, 7*s)
		t0 := time.Now()
		_, err = p.Guest(hctx, "vm-1")
		cancel()
		if provider.ClassOf(err) != provider.Transient || time.Since(t0) != 7*s {
			t.Fatalf("hung Guest: %v after %v", err, time.Since(t0))
		}
		p.Hang(OpGuest, false)
		start := time.Now()
		if _, err := p.Guest(ctx, "vm-1"); err != nil || time.Since(start) != 50*time.Millisecond {
			t.Fatalf("Guest with latency: %v after %v", err, time.Since(start))
		}
	})
}

func TestHostShutdownTakesGuests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(Fleet{
			Hosts:  []HostSpec{{ID: "h1", ShutdownDelay: 5 * s, MaintenanceDelay: 2 * s}},
			Guests: []GuestSpec{{ID: "vm-1", HostID: "h1"}},
		})
		defer p.Close()
		ctx := t.Context()
		if err := p.EnterMaintenance(ctx, "h1", provider.MaintenanceOptions{}); provider.ClassOf(err) != provider.Permanent {
			t.Fatalf("maintenance with a running guest: %v", err)
		}
		if err := p.ShutdownHost(ctx, "h1", false); provider.ClassOf(err) != provider.Permanent {
			t.Fatalf("unforced shutdown outside maintenance: %v", err)
		}
		if err := p.ShutdownHost(ctx, "h1", true); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if err := p.WaitGuest(ctx, "vm-1", provider.PowerOff); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(t0); got != 5*s {
			t.Errorf("guest off %v after the host shutdown, want 5s", got)
		}
	})
}

func TestPeakInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(Fleet{Guests: []GuestSpec{
			{ID: "a", HostID: "h1", PowerOffDelay: 5 * s},
			{ID: "b", HostID: "h1", PowerOffDelay: 5 * s},
			{ID: "c", HostID: "h2", PowerOffDelay: 5 * s},
		}})
		defer p.Close()
		done := make(chan error, 3)
		for _, id := range []string{"a", "b", "c"} {
			go func() { done <- p.PowerOffGuest(t.Context(), id) }()
		}
		for range 3 {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		total, byHost := p.PeakInFlight()
		if total != 3 || byHost["h1"] != 2 || byHost["h2"] != 1 {
			t.Errorf("peak %d %v", total, byHost)
		}
	})
}

// TestIdleFleetIsCheap: 10,000 guests in transition cost timers, not
// goroutines.
func TestIdleFleetIsCheap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := Fleet{}
		for i := range 10000 {
			f.Guests = append(f.Guests, GuestSpec{ID: "vm-" + itoa(i), ShutdownDelay: time.Duration(1+i%100) * s})
		}
		p := New(f)
		defer p.Close()
		ctx := t.Context()
		for _, g := range f.Guests {
			if err := p.ShutdownGuest(ctx, g.ID); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(101 * s)
		inv, err := p.Inventory(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range inv.Guests {
			if g.Power != provider.PowerOff {
				t.Fatalf("%s still %s", g.ID, g.Power)
			}
		}
	})
}

func itoa(i int) string {
	const digits = "0123456789"
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{digits[i%10]}, b...)
	}
	return string(b)
}
