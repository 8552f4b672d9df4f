package pvetest

import (
	"crypto/sha256"
	"fmt"
	"strings"
)

// fingerprint formats the SHA-256 of der as PVE shows certificate
// fingerprints: upper-case hex pairs joined by colons.
func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}
