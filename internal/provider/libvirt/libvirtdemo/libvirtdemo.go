// Package libvirtdemo runs a small simulated KVM site for `sundown demo`: a
// private libvirtd (internal/peer/libvirtd/daemon) that serves only
// libvirt's test driver, with one hypervisor holding a few named domains,
// reached by the libvirt provider over a unix socket. Nothing of the
// machine's own libvirt is touched.
//
// The domains live on the test driver's shared default host
// (test+unix:///default?socket=…), which keeps its state only while some
// connection to it is open: the Site holds one connection from Start to
// Close, so a guest shut down through one provider stays off for the next
// one (the plan loop, the shutdown, the restore).
//
// The test driver completes every shutdown at once; a slow or deaf guest
// cannot be modelled here.
//
// It is an ordinary package (it does not import testing).
package libvirtdemo

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/sundown-ups/sundown/internal/peer/libvirtd/daemon"
)

// ErrNoLibvirtd is returned (wrapped) by Start when libvirtd is not
// installed; the demo then leaves the libvirt site out.
var ErrNoLibvirtd = daemon.ErrNotInstalled

// startDaemon is daemon.Start; tests replace it.
var startDaemon = daemon.Start

// HostName is the hypervisor's name in the demo: give it as the libvirt
// target's host_name (the test driver would report this machine's own
// host name).
const HostName = "kvm-01"

// Domain is one guest of the site.
type Domain struct {
	Name    string
	UUID    string // lower-case canonical form; the provider's Guest.ID
	Running bool   // started by Start; else defined and shut off
}

// DefaultDomains returns the demo site: web, app and database guests
// running, a build machine shut off.
func DefaultDomains() []Domain {
	return []Domain{
		{Name: "kvm-web-1", UUID: "5d0c2a91-7e3b-4f1a-9c3e-000000000001", Running: true},
		{Name: "kvm-web-2", UUID: "5d0c2a91-7e3b-4f1a-9c3e-000000000002", Running: true},
		{Name: "kvm-app-1", UUID: "5d0c2a91-7e3b-4f1a-9c3e-000000000003", Running: true},
		{Name: "kvm-db-1", UUID: "5d0c2a91-7e3b-4f1a-9c3e-000000000004", Running: true},
		{Name: "kvm-build-1", UUID: "5d0c2a91-7e3b-4f1a-9c3e-000000000005"},
	}
}

// Site is a running demo site. Close stops it.
type Site struct {
	d    *daemon.Daemon
	conn *golibvirt.Libvirt

	once     sync.Once
	closeErr error
}

// Start starts libvirtd and defines domains (DefaultDomains when nil) on
// the test driver's default host, replacing the driver's own "test"
// domain, and starts those marked Running. It returns an error wrapping
// ErrNoLibvirtd when libvirtd is not installed, and stops everything it
// started on any error or when ctx ends first.
func Start(ctx context.Context, domains []Domain) (*Site, error) {
	if domains == nil {
		domains = DefaultDomains()
	}
	d, err := startDaemon(ctx)
	if err != nil {
		return nil, fmt.Errorf("libvirt demo site: %w", err)
	}
	s := &Site{d: d}
	// go-libvirt takes no context: populate runs in a goroutine this
	// function waits for; stopping libvirtd makes its calls fail when ctx
	// ends first.
	done := make(chan error, 1)
	go func() { done <- s.populate(domains) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = d.Stop()
		<-done
		err = ctx.Err()
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("libvirt demo site: %w", err)
	}
	return s, nil
}

// populate connects, removes the driver's own domains and defines ours.
func (s *Site) populate(domains []Domain) error {
	u, err := url.Parse(s.d.URI())
	if err != nil {
		return err
	}
	conn, err := golibvirt.ConnectToURI(u)
	if err != nil {
		return fmt.Errorf("connect %s: %w", s.d.URI(), err)
	}
	s.conn = conn
	existing, _, err := conn.ConnectListAllDomains(1, 0)
	if err != nil {
		return fmt.Errorf("list domains: %w", err)
	}
	for _, dom := range existing {
		if state, _, err := conn.DomainGetState(dom, 0); err == nil && state != int32(golibvirt.DomainShutoff) {
			if err := conn.DomainDestroy(dom); err != nil {
				return fmt.Errorf("destroy %s: %w", dom.Name, err)
			}
		}
		if err := conn.DomainUndefine(dom); err != nil {
			return fmt.Errorf("undefine %s: %w", dom.Name, err)
		}
	}
	seen := map[string]bool{}
	for _, dm := range domains {
		if dm.Name == "" || seen[dm.Name] {
			return fmt.Errorf("domain name %q is empty or given twice", dm.Name)
		}
		seen[dm.Name] = true
		x, err := daemon.Domain{Name: dm.Name, UUID: dm.UUID}.XML()
		if err != nil {
			return err
		}
		dom, err := conn.DomainDefineXML(x)
		if err != nil {
			return fmt.Errorf("define %s: %w", dm.Name, err)
		}
		if dm.Running {
			if err := conn.DomainCreate(dom); err != nil {
				return fmt.Errorf("start %s: %w", dm.Name, err)
			}
		}
	}
	return nil
}

// URI is the libvirt URI of the site, for the libvirt target's uri (and
// the libvirt provider's Config.URI).
func (s *Site) URI() string { return s.d.URI() }

// Socket is libvirtd's unix socket.
func (s *Site) Socket() string { return s.d.Socket() }

// PID is libvirtd's process ID.
func (s *Site) PID() int { return s.d.PID() }

// Running returns the names of the domains that are running now, sorted.
func (s *Site) Running() ([]string, error) {
	doms, _, err := s.conn.ConnectListAllDomains(1, golibvirt.ConnectListDomainsActive)
	if err != nil {
		return nil, fmt.Errorf("libvirt demo site: list domains: %w", err)
	}
	var names []string
	for _, d := range doms {
		names = append(names, d.Name)
	}
	slices.Sort(names)
	return names, nil
}

// Close closes the site's connection (the test driver forgets its state),
// stops libvirtd by its PID and removes its folder. It is idempotent.
func (s *Site) Close() error {
	s.once.Do(func() {
		var errs []error
		if s.conn != nil && s.conn.IsConnected() {
			if err := s.conn.Disconnect(); err != nil {
				errs = append(errs, fmt.Errorf("disconnect: %w", err))
			}
		}
		if err := s.d.Stop(); err != nil {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("libvirt demo site: %w", err)
		}
	})
	return s.closeErr
}
