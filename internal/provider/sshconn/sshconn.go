// Package sshconn holds what every SSH-based provider (ssh, esxissh) needs
// before it can connect: the private key, the host address with its default
// port, and the known_hosts check, which is always required (sundown never
// connects to an unverified host).
package sshconn

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
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
