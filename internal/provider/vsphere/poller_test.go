package vsphere_test

import (
	"context"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/sundown-ups/sundown/internal/provider"
)

// powerOffByAdmin powers a VM off through another session, as vCenter
// would see a guest that shut itself down.
func (s *sim) powerOffByAdmin(id string) {
	s.t.Helper()
	c := s.admin()
	vm := object.NewVirtualMachine(c, types.ManagedObjectReference{Type: "VirtualMachine", Value: id})
	task, err := vm.PowerOff(s.t.Context())
	if err != nil {
		s.t.Fatal(err)
	}
	if err := task.Wait(s.t.Context()); err != nil {
		s.t.Fatal(err)
	}
}

// Guests waited for at the same time are read in one call per poll
// interval, not one call each.
func TestWaitGuestBatchesReads(t *testing.T) {
	s := startSim(t, simOptions{})
	cfg := s.config()
	const interval = 100 * time.Millisecond
	cfg.PollInterval = interval
	p := s.open(cfg)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	names := []string{"web-1", "hung-1", "appliance-1", "app-1"}
	done := make(chan error, len(names))
	for _, n := range names {
		go func() { done <- p.WaitGuest(ctx, s.vc.VMID(n), provider.PowerOff) }()
	}
	// Let every waiter make its first, direct read, then count the calls
	// of one second of waiting.
	<-time.After(3 * interval)
	c0 := s.vc.Calls("RetrieveProperties") + s.vc.Calls("RetrievePropertiesEx")
	<-time.After(time.Second)
	calls := s.vc.Calls("RetrieveProperties") + s.vc.Calls("RetrievePropertiesEx") - c0
	if most := int(time.Second/interval) + 2; calls > most {
		t.Errorf("%d reads in 1 s of 4 guests waiting with a %v poll interval; want at most %d (one per round)", calls, interval, most)
	}
	if calls == 0 {
		t.Error("no reads at all while 4 guests were waited for")
	}
	select {
	case err := <-done:
		t.Fatalf("a WaitGuest returned before its guest went off: %v", err)
	default:
	}
	for _, n := range names {
		s.powerOffByAdmin(s.vc.VMID(n))
	}
	for range names {
		if err := <-done; err != nil {
			t.Errorf("WaitGuest: %v", err)
		}
	}
}

// A lost session fails a round; the poller logs in again through do and
// the waits still see the guests go off.
func TestWaitGuestAcrossSessionLoss(t *testing.T) {
	s := startSim(t, simOptions{})
	cfg := s.config()
	cfg.PollInterval = 50 * time.Millisecond
	p := s.open(cfg)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	id := s.vc.VMID("web-1")
	done := make(chan error, 1)
	go func() { done <- p.WaitGuest(ctx, id, provider.PowerOff) }()
	<-time.After(200 * time.Millisecond)
	s.terminateProviderSessions()
	s.powerOffByAdmin(id)
	if err := <-done; err != nil {
		t.Fatalf("WaitGuest across a session loss: %v", err)
	}
	if got := s.providerSessions(); len(got) != 1 {
		t.Errorf("provider holds %d sessions, want 1", len(got))
	}
}
