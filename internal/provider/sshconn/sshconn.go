// Package sshconn holds what every SSH-based provider (ssh, esxissh, and
// libvirt's host_ssh through ssh) needs to reach a host and to judge what
// came back: the private key, the host address with its default port, the
// known_hosts check, which is always required (sundown never connects to an
// unverified host), the dial and login with every failure classed the same
// way (Endpoint.Dial, Failure), and how a remote command ended (ExitOf).
package sshconn

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/sundown-ups/sundown/internal/provider"
)

// Addr returns address with port 22 when it names none.
func Addr(address string) string {
	if _, _, err := net.SplitHostPort(address); err == nil {
		return address
	}
	return net.JoinHostPort(strings.Trim(address, "[]"), "22")
}

// LoadKey reads an unencrypted private key.
func LoadKey(path string) (gossh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	s, err := gossh.ParsePrivateKey(b)
	if err != nil {
		var pm *gossh.PassphraseMissingError
		if errors.As(err, &pm) {
			return nil, fmt.Errorf("key file %s is passphrase-protected; sundown needs an unencrypted key readable only by its user", path)
		}
		return nil, fmt.Errorf("parse key file %s: %w", path, err)
	}
	return s, nil
}

// HostKeys loads the known_hosts file and returns its host key callback,
// plus the host key algorithms that match the keys known for addr (so the
// server is not asked for a key type known_hosts cannot verify, which
// would look like a changed key). A file without a key for addr is an
// error.
func HostKeys(khFile, addr string) (gossh.HostKeyCallback, []string, error) {
	check, err := knownhosts.New(khFile)
	if err != nil {
		return nil, nil, fmt.Errorf("known_hosts %s: %w", khFile, err)
	}
	// Ask the callback about a throw-away key: the KeyError lists the keys
	// the file holds for this host.
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	probe, err := gossh.NewPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	// knownhosts looks the host up by the address string; remote is only
	// consulted when that is empty.
	var ke *knownhosts.KeyError
	if err := check(addr, &net.TCPAddr{IP: net.IPv4zero}, probe); !errors.As(err, &ke) {
		return nil, nil, fmt.Errorf("known_hosts %s: unexpected answer for %s: %v", khFile, addr, err)
	}
	if len(ke.Want) == 0 {
		return nil, nil, fmt.Errorf("known_hosts %s has no key for %s (add the line from `ssh-keyscan -p PORT HOST` after checking its fingerprint)", khFile, knownhosts.Normalize(addr))
	}
	var algos []string
	for _, k := range ke.Want {
		for _, a := range algorithmsFor(k.Key.Type()) {
			if !slices.Contains(algos, a) {
				algos = append(algos, a)
			}
		}
	}
	return check, algos, nil
}

// algorithmsFor maps a key type to the signature algorithms that verify it.
func algorithmsFor(keyType string) []string {
	if keyType == gossh.KeyAlgoRSA {
		return []string{gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256, gossh.KeyAlgoRSA}
	}
	return []string{keyType}
}

// Problems lists what is missing from the connection settings of an SSH
// provider's config, in the words of its "invalid config" error. A
// provider appends its own problems (timeouts, …) after these.
func Problems(address, user, keyFile, knownHostsFile string) []string {
	var problems []string
	if address == "" {
		problems = append(problems, "address is empty")
	}
	if user == "" {
		problems = append(problems, "user is empty")
	}
	if keyFile == "" {
		problems = append(problems, "key file is empty")
	}
	if knownHostsFile == "" {
		problems = append(problems, "known_hosts file is empty (the host key is always verified)")
	}
	return problems
}

// Endpoint is one SSH server and the identity sundown logs in with. It is
// immutable once built and safe for concurrent use.
type Endpoint struct {
	Addr           string // host:port
	User           string
	KnownHostsFile string // re-read on every Dial
	Signer         gossh.Signer
}

// NewEndpoint builds an Endpoint from a provider's config: address gets port
// 22 when it names none, the key is loaded (LoadKey) and knownHostsFile
// must hold a key for the address (HostKeys). It does not connect. Errors
// are plain; the caller classes them (a configuration error is Permanent).
func NewEndpoint(address, user, keyFile, knownHostsFile string) (*Endpoint, error) {
	e := &Endpoint{Addr: Addr(address), User: user, KnownHostsFile: knownHostsFile}
	signer, err := LoadKey(keyFile)
	if err != nil {
		return nil, err
	}
	e.Signer = signer
	if _, _, err := HostKeys(knownHostsFile, e.Addr); err != nil {
		return nil, err
	}
	return e, nil
}

// Dial connects to the endpoint, verifies the host key against
// KnownHostsFile and logs in with the key; ctx bounds all of it (its
// deadline also bounds the handshake, which is not context-aware). Errors
// are *provider.Error with Op op and Target target:
//
//   - known_hosts unreadable or without a key for the host, a host key that
//     differs from the one known ("host key changed …", with the presented
//     fingerprint) or is revoked: Permanent, and nothing is sent;
//   - the key refused by the server: Auth;
//   - anything else (refused, no answer, reset, ctx ended): what fail
//     returns for it; providers pass a closure over Failure.
func (e *Endpoint) Dial(ctx context.Context, op, target string, fail func(error) error) (*gossh.Client, error) {
	check, algos, err := HostKeys(e.KnownHostsFile, e.Addr)
	if err != nil {
		return nil, &provider.Error{Op: op, Target: target, Class: provider.Permanent, Err: err}
	}
	var (
		mu        sync.Mutex
		keyErr    error
		presented gossh.PublicKey
	)
	cfg := &gossh.ClientConfig{
		User: e.User,
		Auth: []gossh.AuthMethod{gossh.PublicKeys(e.Signer)},
		HostKeyCallback: func(hostname string, remote net.Addr, key gossh.PublicKey) error {
			err := check(hostname, remote, key)
			mu.Lock()
			keyErr, presented = err, key
			mu.Unlock()
			return err
		},
		HostKeyAlgorithms: algos,
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", e.Addr)
	if err != nil {
		return nil, fail(fmt.Errorf("dial %s: %w", e.Addr, err))
	}
	// The handshake is not context-aware: a deadline plus closing the
	// connection when ctx ends bound it.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	c, chans, reqs, err := gossh.NewClientConn(conn, e.Addr, cfg)
	stop()
	if err != nil {
		conn.Close()
		mu.Lock()
		kErr, key := keyErr, presented
		mu.Unlock()
		var ke *knownhosts.KeyError
		var re *knownhosts.RevokedError
		switch {
		case errors.As(kErr, &ke) && len(ke.Want) > 0:
			return nil, &provider.Error{Op: op, Target: target, Class: provider.Permanent,
				Err: fmt.Errorf("host key changed for %s: the server presented %s %s, %s holds a different key; not connecting (if the host was reinstalled, verify the new key and update known_hosts)",
					e.Addr, key.Type(), gossh.FingerprintSHA256(key), e.KnownHostsFile)}
		case errors.As(kErr, &re):
			return nil, &provider.Error{Op: op, Target: target, Class: provider.Permanent,
				Err: fmt.Errorf("host key for %s is revoked in %s; not connecting", e.Addr, e.KnownHostsFile)}
		case kErr != nil:
			return nil, &provider.Error{Op: op, Target: target, Class: provider.Permanent,
				Err: fmt.Errorf("host key for %s not accepted: %w", e.Addr, kErr)}
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, &provider.Error{Op: op, Target: target, Class: provider.Auth,
				Err: fmt.Errorf("login as %q refused: %w", e.User, err)}
		}
		return nil, fail(fmt.Errorf("handshake with %s: %w", e.Addr, err))
	}
	_ = conn.SetDeadline(time.Time{})
	return gossh.NewClient(c, chans, reqs), nil
}

// Failure classes a connection-level failure err of op on target: when the
// caller's own context ended, Transient wrapping callerCtx.Err(); when the
// provider was closed, Permanent; else Unreachable (refused, no answer in
// time, reset, no route, dropped — a host that is off looks the same).
func Failure(callerCtx context.Context, closed bool, op, target string, err error) error {
	if cerr := callerCtx.Err(); cerr != nil {
		return &provider.Error{Op: op, Target: target, Class: provider.Transient, Err: fmt.Errorf("%w: %v", cerr, err)}
	}
	if closed {
		return &provider.Error{Op: op, Target: target, Class: provider.Permanent, Err: fmt.Errorf("provider closed: %w", err)}
	}
	return &provider.Error{Op: op, Target: target, Class: provider.Unreachable, Err: err}
}

// Exit is how a remote command ended.
type Exit struct {
	// Status is the exit status: 0 for success, -1 when there is none
	// (Dropped).
	Status int
	// Signal names the signal that killed the command ("TERM", "KILL", …,
	// without "SIG"); "" when it exited.
	Signal string
	// Dropped: the connection went away after the command started, with
	// no exit status (EOF, reset, exit-status message missing). For a
	// shutdown command that is what a host going down looks like.
	Dropped bool
}

// ExitOf reads how a command ended from the error of Session.Wait (or
// Session.Run once the command started).
func ExitOf(waitErr error) Exit {
	if waitErr == nil {
		return Exit{}
	}
	var ee *gossh.ExitError
	if errors.As(waitErr, &ee) {
		return Exit{Status: ee.ExitStatus(), Signal: ee.Signal()}
	}
	return Exit{Status: -1, Dropped: true}
}
