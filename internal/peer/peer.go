// Package peer decides what a test does when a real peer (upsd, sshd,
// libvirtd, ipmi_sim, chromium, …) is missing on this machine.
//
// Tests that need a real peer call Need or NeedBinary first. On a developer
// machine a missing peer makes the test skip with the reason; in CI, where
// SUNDOWN_REQUIRE_PEERS=1, it makes the test fail, so a peer test can never
// pass by not running.
package peer

import (
	"os"
	"os/exec"
	"testing"
)

// RequireEnv is the environment variable that turns peer skips into failures.
const RequireEnv = "SUNDOWN_REQUIRE_PEERS"

// Required reports whether missing peers are failures (CI) rather than skips.
func Required() bool {
	v := os.Getenv(RequireEnv)
	return v != "" && v != "0" && v != "false"
}

// Missing skips the test with reason, or fails it when peers are required.
func Missing(t testing.TB, reason string) {
	t.Helper()
	if Required() {
		t.Fatalf("required peer missing (%s=1): %s", RequireEnv, reason)
	}
	t.Skipf("peer missing: %s (set %s=1 to make this a failure)", reason, RequireEnv)
}

// NeedBinary returns the path of an executable the test needs (an absolute
// path or a name looked up in PATH), or calls Missing with installHint.
func NeedBinary(t testing.TB, path, installHint string) string {
	t.Helper()
	if p, err := exec.LookPath(path); err == nil {
		return p
	}
	Missing(t, path+" not found; install with: "+installHint)
	return ""
}
