// Package provider is the contract between sundown's executor and the systems
// that run guests and hosts: vSphere, ESXi over SSH, libvirt, Proxmox, a plain
// SSH host, the local machine.
//
// A Provider offers primitives only: list, ask a guest to shut down, suspend,
// power off, power on, wait for a power state, enter and leave host
// maintenance mode, shut a host down. Escalation (graceful shutdown → wait →
// hard power off), deadlines, retries and ordering live once, in the executor;
// a provider never retries a permanent error, never escalates on its own and
// never waits longer than the caller's context allows.
//
// Every backend, fake or real, passes the conformance suite in
// internal/provider/providertest.
package provider

import (
	"context"
	"time"
)

// PowerState is the power state of a guest or a host as the backend reports it.
type PowerState string

// Power states. A backend maps its own states onto these; anything it cannot
// map (a host its manager has lost contact with, a guest in a transitional
// state) is PowerUnknown.
const (
	PowerOn        PowerState = "on"
	PowerOff       PowerState = "off"
	PowerSuspended PowerState = "suspended"
	PowerUnknown   PowerState = "unknown"
)

// Valid reports whether s is one of the four defined power states.
func (s PowerState) Valid() bool {
	switch s {
	case PowerOn, PowerOff, PowerSuspended, PowerUnknown:
		return true
	}
	return false
}

// ToolsState says whether the guest agent (VMware Tools, qemu-guest-agent, …)
// that carries a graceful shutdown request is running.
type ToolsState string

// Guest agent states. A guest that is off has ToolsNotRunning or
// ToolsNotInstalled.
const (
	ToolsRunning      ToolsState = "running"
	ToolsNotRunning   ToolsState = "not-running"
	ToolsNotInstalled ToolsState = "not-installed"
	ToolsUnknown      ToolsState = "unknown"
)

// Guest is a virtual machine or container as the backend reports it.
type Guest struct {
	// ID is the backend's stable identifier (a vSphere MoRef value such as
	// "vm-42", a libvirt UUID, a Proxmox "node/qemu/101"). It survives
	// renames and is what every other call takes.
	ID string
	// Name is the display name; not unique, may change.
	Name string
	// HostID is the ID of the Host that runs the guest, "" when unknown.
	HostID string
	Power  PowerState
	Tools  ToolsState
	// UUID is the SMBIOS/BIOS UUID in lower case, "" when the backend does
	// not know it. It lets sundown recognise the VM it runs in.
	UUID string
	// Tags are the backend's annotations, custom attributes or labels; nil
	// when there are none. Keys and values are the backend's own.
	Tags map[string]string
}

// Host is a hypervisor host as the backend reports it.
type Host struct {
	ID          string
	Name        string
	Power       PowerState
	Maintenance bool
	// UUID is the host's SMBIOS UUID in lower case, "" when unknown.
	UUID string
}

// Inventory is everything a provider sees. Hosts and Guests are sorted by ID
// (byte order), so two calls over an unchanged fleet compare equal.
type Inventory struct {
	Hosts  []Host
	Guests []Guest
}

// MaintenanceOptions tune EnterMaintenance.
type MaintenanceOptions struct {
	// Timeout bounds the backend's own wait for the host to reach
	// maintenance mode (for vSphere, the task timeout). Zero means the
	// backend's default of no timeout; the caller's context still applies.
	Timeout time.Duration
	// VSANMode is the vSAN decommission mode for vSphere hosts in a vSAN
	// cluster: "" (the server's default, ensureObjectAccessibility),
	// "ensureObjectAccessibility", "evacuateAllData" or "noAction". Backends
	// without vSAN ignore it.
	VSANMode string
}

// Provider is the contract every backend implements.
//
// General rules, which hold for every method:
//
//   - A Provider is safe for concurrent use by multiple goroutines.
//   - IDs are the Guest.ID and Host.ID values from Inventory. An ID the
//     backend does not know, or cannot parse, yields an *Error of class
//     NotFound whose Target is that ID.
//   - Every non-nil error is an *Error (use errors.As or ClassOf). When ctx
//     ends first, the error is class Transient and errors.Is(err, ctx.Err())
//     holds.
//   - When ctx ends during a call, a request the backend already accepted may
//     still take effect; the caller re-reads the state (Guest, Inventory)
//     rather than assume either outcome.
//   - Methods that change state are idempotent: asking for the state a guest
//     or host is already in returns nil without touching it. The caller may
//     therefore repeat any call after a crash or a lost answer.
//   - A provider never retries a Permanent, Permission, NotFound, Auth or
//     Unsupported error and never escalates (for instance from ShutdownGuest
//     to PowerOffGuest): that is the executor's job.
//   - Secrets never appear in errors or logs.
type Provider interface {
	// Inventory lists all hosts and guests the credentials can see, sorted
	// by ID. Templates and other objects that cannot be powered on are left
	// out. Read-only.
	Inventory(ctx context.Context) (Inventory, error)

	// Guest returns the current state of one guest. Read-only.
	Guest(ctx context.Context, id string) (Guest, error)

	// ShutdownGuest asks the guest operating system to shut down cleanly
	// and returns as soon as the request is accepted; it does not wait for
	// the guest to reach off (use WaitGuest). A guest that is already off →
	// nil. When the request cannot be delivered because the guest agent is
	// not running, or the guest is suspended, the error has class
	// Unsupported: the caller should escalate at once instead of waiting.
	// A guest that accepted the request may still ignore it.
	ShutdownGuest(ctx context.Context, id string) error

	// SuspendGuest suspends the guest and waits until it is suspended. A
	// guest that is already suspended or off → nil (an off guest stays off).
	SuspendGuest(ctx context.Context, id string) error

	// PowerOffGuest powers the guest off hard (no guest cooperation) and
	// waits until it is off. Works on running and suspended guests. A guest
	// that is already off → nil.
	PowerOffGuest(ctx context.Context, id string) error

	// PowerOnGuest powers the guest on (or resumes a suspended one) and
	// waits until the backend reports it on. A guest that is already on →
	// nil. It does not wait for the guest OS to boot.
	PowerOnGuest(ctx context.Context, id string) error

	// WaitGuest returns nil once the guest's power state is want, checking
	// at once and then until ctx ends; it has no timeout of its own. When
	// ctx ends first the error wraps ctx.Err() (class Transient). want must
	// be PowerOn, PowerOff or PowerSuspended, else the error is Permanent.
	WaitGuest(ctx context.Context, id string, want PowerState) error

	// EnterMaintenance puts the host in maintenance mode and waits until it
	// is in. A host already in maintenance mode → nil. The backend may
	// refuse while guests still run on the host (vCenter without DRS does);
	// the caller stops or moves them first.
	EnterMaintenance(ctx context.Context, hostID string, opts MaintenanceOptions) error

	// ExitMaintenance takes the host out of maintenance mode and waits. A
	// host not in maintenance mode → nil.
	ExitMaintenance(ctx context.Context, hostID string) error

	// ShutdownHost shuts the host down. Without force the backend may
	// require maintenance mode first and refuses otherwise (class
	// Permanent); with force running guests are killed. It returns once the
	// host has accepted the request; when the provider talks to that very
	// host, the connection dropping afterwards counts as success. A host the
	// provider can see is off → nil; a host it cannot reach → Unreachable
	// (the caller decides whether that means done).
	ShutdownHost(ctx context.Context, hostID string, force bool) error

	// Close releases the session and stops background work (keep-alive).
	// It is idempotent; after Close every other method fails with a
	// Permanent error.
	Close() error
}

// Caps lists optional operations a backend supports. A provider that lacks
// an operation still implements the method, returning an *Error of class
// Unsupported; Caps lets callers (the planner, `sundown check`, the
// conformance suite) know in advance.
type Caps struct {
	Suspend      bool // SuspendGuest
	Maintenance  bool // EnterMaintenance, ExitMaintenance
	HostShutdown bool // ShutdownHost
}

// Capable is implemented by providers that lack some operation.
type Capable interface {
	Capabilities() Caps
}

// AllCaps is what a provider that does not implement Capable supports.
var AllCaps = Caps{Suspend: true, Maintenance: true, HostShutdown: true}

// CapabilitiesOf returns p's declared capabilities, or AllCaps when p does
// not implement Capable.
func CapabilitiesOf(p Provider) Caps {
	if c, ok := p.(Capable); ok {
		return c.Capabilities()
	}
	return AllCaps
}
