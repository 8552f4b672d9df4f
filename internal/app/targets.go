package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sundown-ups/sundown/internal/config"
	"github.com/sundown-ups/sundown/internal/plan"
	"github.com/sundown-ups/sundown/internal/provider"
	"github.com/sundown-ups/sundown/internal/provider/esxissh"
	"github.com/sundown-ups/sundown/internal/provider/libvirt"
	"github.com/sundown-ups/sundown/internal/provider/local"
	"github.com/sundown-ups/sundown/internal/provider/proxmox"
	"github.com/sundown-ups/sundown/internal/provider/ssh"
	"github.com/sundown-ups/sundown/internal/provider/vsphere"
)

// NewProvider builds the provider of one configured target. It is the one
// place that knows every backend (explicit registration: no init()
// self-registration, no blank imports).
func NewProvider(ctx context.Context, t config.Target, log *slog.Logger) (provider.Provider, error) {
	switch {
	case t.VSphere != nil:
		v := t.VSphere
		return vsphere.New(ctx, vsphere.Config{
			URL: v.URL, Username: v.Username, Password: v.Password.Reveal(),
			CAFile: v.CAFile, Thumbprint: v.Thumbprint, Insecure: v.Insecure,
			Logger: log.With("target", t.Name),
		})
	case t.Libvirt != nil:
		v := t.Libvirt
		p, err := libvirt.New(ctx, libvirt.Config{URI: v.URI, ShutdownMode: v.ShutdownMode, HostName: v.HostName})
		if err != nil || v.HostSSH == nil {
			return p, err
		}
		h, err := newSSH(ctx, t.Name, *v.HostSSH, log)
		if err != nil {
			_ = p.Close()
			return nil, err
		}
		return hostOverSSH{Provider: p, host: h}, nil
	case t.Proxmox != nil:
		v := t.Proxmox
		return proxmox.New(ctx, proxmox.Config{
			URL: v.URL, TokenID: v.TokenID, Secret: v.Secret.Reveal(), CAFile: v.CAFile,
			Fingerprint: v.Fingerprint, Insecure: v.Insecure, Logger: log.With("target", t.Name),
		})
	case t.ESXiSSH != nil:
		v := t.ESXiSSH
		return esxissh.New(ctx, esxissh.Config{
			Address: v.Address, User: v.User, KeyFile: v.KeyFile, KnownHostsFile: v.KnownHostsFile,
			HostName: v.HostName, AutoStop: v.AutoStop, Logger: log.With("target", t.Name),
		})
	case t.Local != nil:
		return local.New(ctx, local.Config{Command: t.Local.Command, HostName: t.Local.HostName, Logger: log.With("target", t.Name)})
	case t.SSH != nil:
		return newSSH(ctx, t.Name, *t.SSH, log)
	}
	return nil, fmt.Errorf("target %s: this kind of target is not wired into sundown yet", t.Name)
}

func newSSH(ctx context.Context, target string, v config.SSHHost, log *slog.Logger) (*ssh.Provider, error) {
	return ssh.New(ctx, ssh.Config{
		Address: v.Address, User: v.User, KeyFile: v.KeyFile, KnownHostsFile: v.KnownHostsFile,
		Command: v.Command, HostName: v.HostName, Logger: log.With("target", target),
	})
}

// TargetError is a target that could not be reached or read; it prints as
// "target NAME: cause".
type TargetError struct {
	Target string
	Err    error
}

func (e *TargetError) Error() string { return "target " + e.Target + ": " + e.Err.Error() }
func (e *TargetError) Unwrap() error { return e.Err }

// Fleet holds the providers of every configured target. A target that
// cannot be reached is reported and tried again on the next call; it never
// stops sundown from watching the power.
type Fleet struct {
	targets []config.Target
	log     *slog.Logger
	dial    func(context.Context, config.Target, *slog.Logger) (provider.Provider, error)

	mu    sync.Mutex
	provs map[string]provider.Provider
}

// NewFleet prepares (but does not connect) the configured targets.
func NewFleet(c *config.Config, log *slog.Logger) *Fleet {
	return &Fleet{targets: c.Targets, log: log, dial: NewProvider, provs: map[string]provider.Provider{}}
}

// Connect connects every target not yet connected, each bounded by
// timeout, and returns the errors of those that failed. Concurrent calls
// may both dial a target; the first connection is kept, the other closed.
func (f *Fleet) Connect(ctx context.Context, timeout time.Duration) []error {
	var errs []error
	for _, t := range f.targets {
		if _, err := f.connect(ctx, t, timeout); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// connect returns t's provider, dialing it (bounded by timeout) when it is
// not connected yet. Errors name the target.
func (f *Fleet) connect(ctx context.Context, t config.Target, timeout time.Duration) (provider.Provider, error) {
	f.mu.Lock()
	p, ok := f.provs[t.Name]
	f.mu.Unlock()
	if ok {
		return p, nil
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	p, err := f.dial(cctx, t, f.log)
	cancel()
	if err != nil {
		return nil, &TargetError{Target: t.Name, Err: err}
	}
	f.mu.Lock()
	prev, dup := f.provs[t.Name]
	if !dup {
		f.provs[t.Name] = p
	}
	f.mu.Unlock()
	if dup {
		// Another caller (the plan loop and a resumed shutdown start
		// together) connected it meanwhile: keep one session.
		_ = p.Close()
		return prev, nil
	}
	return p, nil
}

// Targets returns the connected providers by target name.
func (f *Fleet) Targets() plan.Targets {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(plan.Targets, len(f.provs))
	for k, v := range f.provs {
		out[k] = v
	}
	return out
}

// Inventories reads every connected target's inventory; targets not
// connected are left out (Connect reports them).
func (f *Fleet) Inventories(ctx context.Context, timeout time.Duration) ([]plan.TargetInventory, []error) {
	var invs []plan.TargetInventory
	var errs []error
	provs := f.Targets()
	for _, t := range f.targets {
		p, ok := provs[t.Name]
		if !ok {
			continue
		}
		ictx, cancel := context.WithTimeout(ctx, timeout)
		inv, err := p.Inventory(ictx)
		cancel()
		if err != nil {
			errs = append(errs, &TargetError{Target: t.Name, Err: fmt.Errorf("inventory: %w", err)})
			continue
		}
		invs = append(invs, TargetInventory(t, plan.TargetInventory{Inventory: inv}))
	}
	return invs, errs
}

// Close closes every provider.
func (f *Fleet) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for name, p := range f.provs {
		if err := p.Close(); err != nil {
			errs = append(errs, fmt.Errorf("target %s: close: %w", name, err))
		}
		delete(f.provs, name)
	}
	return errors.Join(errs...)
}

// BuildPlan connects, discovers and plans. Problems are the planner's
// (errors and warnings); errs are targets that could not be reached or
// read (their guests are missing from the plan).
func BuildPlan(ctx context.Context, c *config.Config, f *Fleet, history map[string]time.Duration) (*plan.Plan, []plan.Problem, []error) {
	errs := f.Connect(ctx, 30*time.Second)
	invs, ierrs := f.Inventories(ctx, 60*time.Second)
	errs = append(errs, ierrs...)
	p, problems := plan.Build(Spec(c, invs, history))
	return p, problems, errs
}
